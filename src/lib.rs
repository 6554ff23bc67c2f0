//! action-ledger: a persistent, event-sourced ledger of long-running cloud actions.
//!
//! Control planes report each action's lifecycle (created, started, progress, Nova-style
//! sub-events, completed, failed, cancelled). The ledger validates each report against the
//! action's state, appends it to a checksummed, hash-chained log (the single source of
//! truth), acknowledges only after fdatasync, and folds the log into action snapshots.
//!
//! # Layout
//! - [`event`]: commands, log entries and action snapshots; the versioned codec; the fold
//!   (the lifecycle rules). Pure, no I/O.
//! - [`log`]: segments, record framing, the storage seam, recovery/verify scanner, the
//!   writer (one write + one fdatasync per batch) and the reader.
//! - [`ledger`]: the core that owns the log writer thread and the derived state; group
//!   commit; decides what is accepted. HTTP and CLI both go through it.
//! - [`projection`]: the log folded into action snapshots and indexes in sled (the
//!   persistent [`ledger::StateStore`]); queries with keyset cursors; rebuild, verify,
//!   history and as-of reads.
//! - [`cluster`]: cluster mode's log of record in PostgreSQL: schema, lease, the fenced
//!   append and reads (docs/cluster.md).
//! - [`tokens`]: API tokens (only hashes stored), roles and principals.
//! - [`http`]: the axum server — native API, auth, errors, metrics, OpenAPI, start-up and
//!   graceful shutdown.
//! - [`json`]: the JSON form of actions, log operations and times, shared by the native
//!   API and the CLI.
//! - [`limits`]: every named limit.
//! - [`datadir`]: the data directory's lock (one process changes it at a time).
//! - [`config`]: `serve`'s layered configuration; [`cli`]: the command line.
//! - `telemetry` (cargo feature `otlp`): OpenTelemetry export of the request spans.
//!
//! ARCHITECTURE.md has the data flow and invariants; docs/format.md the bytes on disk.

pub mod cli;
pub mod cluster;
pub mod config;
pub mod datadir;
pub mod event;
pub mod http;
pub mod json;
pub mod ledger;
pub mod limits;
pub mod log;
pub mod projection;
#[cfg(feature = "otlp")]
pub mod telemetry;
pub mod tokens;

/// The allocator the `action-ledger` binary installs (`src/main.rs`) and so do the
/// benchmarks that host a server or projection in their own process (`benches/common`): one
/// choice, named once. jemalloc rather than the C library's: the write path allocates on the
/// ledger's threads and frees on the HTTP workers, where glibc's malloc spent ~20% of the
/// server's CPU per durable event (docs/performance.md, "HTTP (`http`)").
pub use tikv_jemallocator::Jemalloc as Allocator;

/// Lowercase hex of `bytes` (digests, token hashes and secrets).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
