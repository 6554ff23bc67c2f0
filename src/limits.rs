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
/// Most bytes of an oversized request body read (and discarded) after its 413 is answered,
/// so a client that writes its whole body before reading gets the 413 rather than a reset.
/// A longer body is cut off there (the connection closes).
pub const BODY_DRAIN_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Longest time an oversized request body is drained after its 413 is answered (see
/// [`BODY_DRAIN_BYTES_MAX`]); the connection closes then.
pub const BODY_DRAIN_TIMEOUT_MS: u64 = 10_000;
