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
