//! Named limits. Every input the ledger accepts is bounded by one of these, and the error
//! that reports a breach names the limit, its value and what was seen (see
//! [`crate::event::fold::Rejection::Limit`]). README.md lists them for users.

/// Longest accepted `uid`, in bytes.
pub const UID_BYTES_MAX: usize = 128;
/// Longest accepted short identifier (`type`, `tenant`, `user`, resource type/id, node,
/// region, sub-event name, host, label key, error code, shard id, op name), in bytes.
pub const NAME_BYTES_MAX: usize = 256;
/// Longest accepted free text (`description`, `message`, `state`, label value, traceback,
/// details, snapshot JSON), in bytes.
pub const TEXT_BYTES_MAX: usize = 16 * 1024;
/// Most labels on one action.
pub const LABELS_MAX: usize = 64;
/// Most related resources on one action.
pub const RELATED_MAX: usize = 64;
/// Most sub-events (`event_started`) on one action.
pub const SUB_EVENTS_MAX: usize = 1024;
/// Most shards in one action's `pending_ops`.
pub const PENDING_OPS_MAX: usize = 1024;
/// Most commands in one submission (one `POST /api/v1/batch`).
pub const BATCH_COMMANDS_MAX: usize = 1000;
/// Largest encoded log record payload, in bytes. Also the bincode decode limit, so a corrupt
/// length prefix can never make the decoder allocate more than this.
pub const RECORD_PAYLOAD_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Default size at which the writer starts a new segment (at the next batch boundary).
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
/// Most records the writer puts in one write + fdatasync.
pub const COMMIT_BATCH_RECORDS_MAX: usize = 4096;
/// Most bytes the writer puts in one write + fdatasync (a batch always holds at least one
/// record, whatever its size).
pub const COMMIT_BATCH_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Most submissions waiting for the writer; senders wait (back-pressure) beyond it.
pub const APPEND_QUEUE_MAX: usize = 16 * 1024;
/// Longest a connection to the cluster log (PostgreSQL) may take before start-up reports it
/// unreachable, in milliseconds.
pub const CLUSTER_CONNECT_TIMEOUT_MS: u64 = 5_000;
/// TCP keepalive idle time on cluster log connections, in seconds: a half-open connection to
/// PostgreSQL is noticed within about this plus a few probes, not the kernel's two hours.
pub const CLUSTER_KEEPALIVE_IDLE_SECS: u64 = 5;
/// Default lease time of the cluster leader, in milliseconds (PostgreSQL's clock). A dead
/// leader is replaced within about this long.
pub const CLUSTER_LEASE_TTL_MS_DEFAULT: u64 = 2_000;
/// Shortest and longest accepted lease time, in milliseconds.
pub const CLUSTER_LEASE_TTL_MS_MIN: u64 = 100;
pub const CLUSTER_LEASE_TTL_MS_MAX: u64 = 600_000;
/// Most records one read of the cluster log returns (catch-up reads page by this).
pub const CLUSTER_READ_RECORDS_MAX: usize = 4096;
/// The leader stops acting as leader this share of its lease time before the lease ends as
/// measured on its own monotonic clock (from the start of its last successful renewal), so
/// clock-rate differences and a late timer cannot let it append after another node could
/// take over.
pub const CLUSTER_LEASE_LOCAL_MARGIN_PERCENT: u32 = 10;
/// How often a follower reads the cluster log even when no notification arrived (the
/// fallback for a lost NOTIFY or a broken LISTEN connection), in milliseconds.
pub const CLUSTER_POLL_INTERVAL_MS: u64 = 500;
