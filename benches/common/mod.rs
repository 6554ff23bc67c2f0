//! What the benchmark binaries share (each includes it with `mod common;`).

/// The binary's allocator ([`action_ledger::Allocator`]), so that a server or projection
/// hosted in a benchmark's own process costs what it costs in production.
#[global_allocator]
static GLOBAL: action_ledger::Allocator = action_ledger::Allocator;

/// The value of environment variable `name`, or `default` when it is unset; a value that
/// does not parse stops the benchmark, naming it.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} does not parse")),
        Err(_) => default,
    }
}

/// The nearest-rank percentile `q` (0.0..=1.0) of `sorted` (ascending): the smallest sample
/// with at least `q` of the samples at or below it, i.e. the `ceil(q * n)`-th (at least the
/// first); the default value (0, `Duration::ZERO`) when there are no samples. Every
/// benchmark's p50/p99/p999 comes from here, whatever the unit of its samples.
#[allow(dead_code)] // sled_floor reports no percentiles
pub fn percentile<T: Copy + Default>(sorted: &[T], q: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// A multi-threaded Tokio runtime of `threads` workers named `name`: a server's or the
/// client's own, so each side's threads can be told apart (and counted) by name.
#[allow(dead_code)] // only the HTTP benches host servers
pub fn runtime(threads: usize, name: &str) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// `d` in milliseconds with two decimals, as the reports print latencies.
#[allow(dead_code)] // only the HTTP benches print durations this way
pub fn ms(d: std::time::Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// Bytes of the files under `dir`, recursively.
#[allow(dead_code)] // the query benches and the soak report disk
pub fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            total += if p.is_dir() {
                dir_bytes(&p)
            } else {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            };
        }
    }
    total
}
