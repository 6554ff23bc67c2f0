//! Projection benchmark (issue 3, "Speed"): query latency at growing sizes, rebuild time
//! against a plain read of the same log, and resident memory while serving queries.
//!
//! For each size N (actions):
//! 1. **Generate** (benches/common/workload.rs) a log of N actions directly with `LogWriter` and
//!    [`codec::encode_entry`] in batches of 4096 records (not N submissions): each action is
//!    one create record, then a `started` record 20 records later and, for 90% of them, a
//!    terminal record ~200 records later — about 2.9 records per action. Ten tenants;
//!    N/100 resources (each resource belongs to one tenant and gets ~100 actions spread over
//!    the whole id range, the worst case for the resource index); 4 types, 5 users.
//! 2. **Plain read**: every record read, CRC-checked and decoded ([`LogReader::for_each`] +
//!    [`codec::decode_entry`]) — the floor any rebuild must pay. Also the checking scan
//!    ([`log::verify`]: CRC + SHA-256 chain + decode), which is what [`projection::rebuild`]
//!    reads the log with.
//! 3. **Rebuild** the projection from that log with [`projection::rebuild`]; the ratio
//!    rebuild / plain read is the figure of merit (target ≤ 4×).
//! 4. **Serve**: a fresh child process (so its memory is only what serving costs) opens
//!    the projection with the default 64 MiB cache and measures, over `QUERY_BENCH_OPS`
//!    random operations each: list the 50 newest of a resource (tenant + resource filter,
//!    total from a counter), get one action by id, list the 50 newest of a tenant, and list
//!    the 50 newest *running* actions of a tenant (status index). It reports p50/p99/max and
//!    VmRSS / VmHWM from `/proc/self/status` after the run.
//!
//! Environment:
//! - `QUERY_BENCH_SIZES=10000,100000,1000000` (default) — sizes to run;
//! - `QUERY_BENCH_OPS=20000` — measured operations per query kind (after 10% warm-up);
//! - `QUERY_BENCH_REUSE=1` — keep and reuse generated logs and projections between runs
//!   (skips generation, and rebuild if a projection of that size exists).
//!
//! Run with `cargo bench --bench query`. `cargo test` never builds or runs it.

mod common;
#[path = "common/workload.rs"]
mod workload;

use action_ledger::event::codec;
use action_ledger::event::*;
use action_ledger::log::reader::LogReader;
use action_ledger::log::{self, FsStorage};
use action_ledger::projection::{self, ActionQuery, Projection, ProjectionConfig};
use common::{dir_bytes, env_or, percentile};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use workload::{generate, resources, status_kb, tenant_of, TENANTS};

const PAGE: usize = 50;
/// Guards against a typo turning the benchmark into a day-long run.
const SIZE_MAX: u64 = 10_000_000;

fn us(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

/// The serving half, run in a child process: opens the projection and times queries.
fn serve(dir: &Path, n: u64) {
    let ops: usize = env_or("QUERY_BENCH_OPS", 20_000);
    let p = Projection::open(dir, ProjectionConfig::default()).expect("open projection");
    assert!(p.open_report().reset.is_none(), "the projection was reset");
    println!(
        "serve n={n} | memory after opening the projection: VmRSS {} MB",
        status_kb("VmRSS:") / 1024
    );
    let mut rng = SmallRng::seed_from_u64(7);
    let res = resources(n);
    type Op<'a> = Box<dyn FnMut(&mut SmallRng) -> usize + 'a>;
    let kinds: Vec<(&str, Op<'_>)> = vec![
        (
            "list 50 newest of a resource",
            Box::new(|rng: &mut SmallRng| {
                let r = rng.random_range(0..res);
                let q = ActionQuery {
                    tenant: Some(tenant_of(r)),
                    resource: Some(ResourceRef {
                        resource_type: "droplet".into(),
                        id: r.to_string(),
                    }),
                    limit: PAGE,
                    ..Default::default()
                };
                p.list(&q).expect("list").actions.len()
            }),
        ),
        (
            "get one action by id",
            Box::new(|rng: &mut SmallRng| {
                let id = rng.random_range(1..=n);
                usize::from(p.get(id).expect("get").is_some())
            }),
        ),
        (
            "list 50 newest of a tenant",
            Box::new(|rng: &mut SmallRng| {
                let q = ActionQuery {
                    tenant: Some(format!("tenant-{}", rng.random_range(0..TENANTS))),
                    limit: PAGE,
                    ..Default::default()
                };
                p.list(&q).expect("list").actions.len()
            }),
        ),
        (
            "list 50 newest running of a tenant",
            Box::new(|rng: &mut SmallRng| {
                let q = ActionQuery {
                    tenant: Some(format!("tenant-{}", rng.random_range(0..TENANTS))),
                    statuses: vec![Status::Running],
                    limit: PAGE,
                    ..Default::default()
                };
                p.list(&q).expect("list").actions.len()
            }),
        ),
    ];
    for (name, mut f) in kinds {
        for _ in 0..ops / 10 {
            f(&mut rng);
        }
        let mut lat = Vec::with_capacity(ops);
        let mut returned = 0usize;
        for _ in 0..ops {
            let t = Instant::now();
            returned += f(&mut rng);
            lat.push(t.elapsed());
        }
        lat.sort_unstable();
        println!(
            "serve n={n} | {name:<36} | p50 {:>8} us | p99 {:>8} us | max {:>9} us | mean rows {:.1}",
            us(percentile(&lat, 0.50)),
            us(percentile(&lat, 0.99)),
            us(*lat.last().expect("ops > 0")),
            returned as f64 / ops as f64
        );
    }
    println!(
        "serve n={n} | memory after serving: VmRSS {} MB, VmHWM {} MB (sled cache_capacity {} MB)",
        status_kb("VmRSS:") / 1024,
        status_kb("VmHWM:") / 1024,
        ProjectionConfig::default().cache_capacity_bytes >> 20
    );
}

fn run_size(base: &Path, n: u64, reuse: bool) {
    let dir = base.join(format!("n{n}"));
    let log_dir = dir.join("log");
    let proj_dir = dir.join("projection");
    let stamp = dir.join("generated");
    if !(reuse && stamp.exists()) {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("bench dir");
        let t = Instant::now();
        let records = generate(&log_dir, n);
        println!(
            "n={n}: generated {records} records ({} MB of log) in {:.1} s",
            dir_bytes(&log_dir) >> 20,
            t.elapsed().as_secs_f64()
        );
        std::fs::write(&stamp, records.to_string()).expect("stamp");
    }

    // Plain read + CRC + decode, twice (the first warms the page cache, as a rebuild right
    // after would find it).
    let storage = Arc::new(FsStorage);
    let reader = LogReader::new(storage.clone(), log_dir.clone());
    let mut plain = Duration::MAX;
    let mut records = 0u64;
    for _ in 0..2 {
        let t = Instant::now();
        records = 0;
        let mut ops = 0usize;
        reader
            .for_each(0, u64::MAX, &mut |rec| {
                let e = codec::decode_entry(rec.kind, rec.schema, &rec.payload).expect("decode");
                ops += e.ops.len();
                records += 1;
                true
            })
            .expect("read log");
        plain = plain.min(t.elapsed());
        assert!(ops > 0);
    }
    let t = Instant::now();
    log::verify(&FsStorage, &log_dir, &mut |rec| {
        codec::decode_entry(rec.meta.kind, rec.meta.schema, rec.payload)
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .expect("verify");
    let checked = t.elapsed();
    println!(
        "n={n}: plain read+CRC+decode of {records} records: {:.2} s ({:.0} records/s); checking scan (CRC+SHA-256 chain+decode): {:.2} s",
        plain.as_secs_f64(),
        records as f64 / plain.as_secs_f64(),
        checked.as_secs_f64()
    );

    let rebuilt_stamp = dir.join("rebuilt");
    if !(reuse && rebuilt_stamp.exists()) {
        let hwm_before = status_kb("VmHWM:");
        let t = Instant::now();
        let mut last_report = Instant::now();
        let (p, summary) = projection::rebuild(
            &FsStorage,
            &log_dir,
            &proj_dir,
            &ProjectionConfig::default(),
            &mut |r| {
                if last_report.elapsed() > Duration::from_secs(10) {
                    eprintln!(
                        "  rebuild n={n}: {} records, {}/{} MB",
                        r.records_done,
                        r.bytes_done >> 20,
                        r.bytes_total >> 20
                    );
                    last_report = Instant::now();
                }
            },
        )
        .expect("rebuild");
        let rebuild = t.elapsed();
        let disk = p.size_on_disk().unwrap_or(0);
        drop(p);
        println!(
            "n={n}: rebuild {:.2} s ({:.0} records/s, {} actions) = {:.1}x the plain read, {:.1}x the checking scan; sled {} MB on disk; process VmHWM {} -> {} MB",
            rebuild.as_secs_f64(),
            summary.records as f64 / rebuild.as_secs_f64(),
            summary.actions,
            rebuild.as_secs_f64() / plain.as_secs_f64(),
            rebuild.as_secs_f64() / checked.as_secs_f64(),
            disk >> 20,
            hwm_before / 1024,
            status_kb("VmHWM:") / 1024
        );
        std::fs::write(&rebuilt_stamp, b"").expect("stamp");
    }

    let status = std::process::Command::new(std::env::current_exe().expect("own path"))
        .env("QUERY_BENCH_SERVE_DIR", &proj_dir)
        .env("QUERY_BENCH_SERVE_N", n.to_string())
        .status()
        .expect("spawn the serving child");
    assert!(status.success(), "serving child failed");
    if !reuse {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn main() {
    if let Ok(dir) = std::env::var("QUERY_BENCH_SERVE_DIR") {
        let n: u64 = env_or("QUERY_BENCH_SERVE_N", 0);
        serve(Path::new(&dir), n);
        return;
    }
    let sizes = workload::sizes("QUERY_BENCH_SIZES", "10000,100000,1000000");
    let reuse = std::env::var_os("QUERY_BENCH_REUSE").is_some();
    let base: PathBuf = Path::new(env!("CARGO_TARGET_TMPDIR")).join("query-bench");
    std::fs::create_dir_all(&base).expect("bench dir");
    for n in sizes {
        assert!(
            (1..=SIZE_MAX).contains(&n),
            "size {n} outside 1..={SIZE_MAX}"
        );
        run_size(&base, n, reuse);
    }
}
