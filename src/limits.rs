//! Named limits. Every input the ledger accepts is bounded by one of these, and the error
//! that reports a breach names the limit, its value and what was seen (see
//! [`crate::event::fold::Rejection::Limit`]). README.md lists them for users.
//!
//! This is the one place a limit's value is written: other modules refer to these. A limit
//! that the configuration can change ([`crate::config::KEYS`]) has its default here, and the
//! bounds the configuration accepts for it (`_MIN`, `_CEILING`) are here too, so a setting
//! the code would refuse or choke on is refused when the configuration is read.

// ---- One command: what an action may hold ----

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

// ---- The log and its writer ----

/// Largest encoded log record payload, in bytes. Also the bincode decode limit, so a corrupt
/// length prefix can never make the decoder allocate more than this.
pub const RECORD_PAYLOAD_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Default size at which the writer starts a new segment (at the next batch boundary);
/// the `segment_bytes` key.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
/// Smallest `segment_bytes` the configuration accepts.
pub const SEGMENT_BYTES_MIN: u64 = 4096;
/// Most records the writer puts in one write + fdatasync.
pub const COMMIT_BATCH_RECORDS_MAX: usize = 4096;
/// Most bytes the writer puts in one write + fdatasync (a batch always holds at least one
/// record, whatever its size).
pub const COMMIT_BATCH_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Smallest `commit_batch_bytes_max` the configuration accepts.
pub const COMMIT_BATCH_BYTES_MIN: usize = 4096;
/// Most submissions waiting for the writer; senders wait (back-pressure) beyond it.
pub const APPEND_QUEUE_MAX: usize = 16 * 1024;
/// Largest `append_queue_max` the configuration accepts: the most a bounded queue can hold.
pub const APPEND_QUEUE_CEILING: usize = tokio::sync::Semaphore::MAX_PERMITS;

// ---- Lists and pages ----

/// Largest page of a list (`limit`, and every dialect's page size): the projection refuses
/// a larger one. Also the default and the ceiling of the `list_limit_max` key.
pub const LIST_LIMIT_MAX: usize = 1000;
/// Page size of the native list when the request names none.
pub const LIST_LIMIT_DEFAULT: usize = 50;
/// Most ids in one batch get (`id=` repeated).
pub const LIST_IDS_MAX: usize = 1000;
/// Most buckets of one `/api/v1/histogram` answer (a day of minutes, 83 days of hours, five
/// years of days): more is a 400 naming this limit.
pub const HISTOGRAM_BUCKETS_MAX: usize = 2000;
/// Buckets of a `/api/v1/histogram` answer when the request names no `from`: it starts
/// this many intervals before `to`.
pub const HISTOGRAM_BUCKETS_DEFAULT: usize = 60;
/// Most index keys, or action snapshots, one `/api/v1/histogram` answer reads while
/// counting: past it the answer says `"complete": false` and counts what it read (the
/// newest actions of the range first).
pub const HISTOGRAM_SCAN_MAX: u64 = 100_000;
/// Most records in one `/api/v1/log` page.
pub const LOG_PAGE_MAX: usize = 1000;
/// Records in one `/api/v1/log` page when the request names no `limit`.
pub const LOG_PAGE_DEFAULT: usize = 100;
/// DigitalOcean: `per_page` when the request names none (as DigitalOcean's API).
pub const DO_PER_PAGE_DEFAULT: u64 = 20;
/// DigitalOcean: largest accepted `per_page` (as DigitalOcean's API).
pub const DO_PER_PAGE_MAX: u64 = 200;
/// ECS: `length` when the request names none. Its maximum is the `list_limit_max` key.
pub const ECS_LENGTH_DEFAULT: usize = 50;
/// Nova: its `[api] max_limit` (1000, never above [`LIST_LIMIT_MAX`]). A larger `limit` is
/// clamped to it, not refused, and a list without `limit` returns at most this many actions
/// (also below microversion 2.58, where Nova itself would return them all).
pub const NOVA_LIMIT_MAX: usize = if LIST_LIMIT_MAX < 1000 {
    LIST_LIMIT_MAX
} else {
    1000
};

// ---- HTTP ----
// The `_MAX`/`_MS` values a configuration key can change are that key's default.

/// Largest request body, in bytes (the `body_bytes_max` key); a larger one is answered 413.
pub const BODY_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Smallest `body_bytes_max` the configuration accepts.
pub const BODY_BYTES_MIN: usize = 1024;
/// Most bytes of an oversized request body read (and discarded) after its 413 is answered,
/// so a client that writes its whole body before reading gets the 413 rather than a reset.
/// A longer body is cut off there (the connection closes).
pub const BODY_DRAIN_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Longest time an oversized request body is drained after its 413 is answered (see
/// [`BODY_DRAIN_BYTES_MAX`]); the connection closes then.
pub const BODY_DRAIN_TIMEOUT_MS: u64 = 10_000;
/// Longest accepted `Idempotency-Key`, in bytes.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 256;
/// Longest wait a request may ask for, in milliseconds (the `wait_ms_max` key).
pub const WAIT_MS_MAX: u64 = 60_000;
/// How long a wait lasts when the request names no `timeout_ms` (never above the
/// configured `wait_ms_max`), in milliseconds.
pub const WAIT_MS_DEFAULT: u64 = 30_000;
/// Most simultaneous watch streams (the `watchers_max` key).
pub const WATCHERS_MAX: usize = 1024;
/// Interval of a watch stream's keep-alive comments, in milliseconds. It also bounds how long
/// a watch stream whose client left unnoticed keeps its place under [`WATCHERS_MAX`].
pub const WATCH_KEEPALIVE_MS: u64 = 15_000;
/// Most log records a watch stream reads at once (while catching up, it reads page by page).
pub const WATCH_READ_RECORDS_MAX: usize = 256;
/// Most events buffered per watch stream, waiting for its client to read them.
pub const WATCH_BUFFER_EVENTS_MAX: usize = 512;
/// How long a watch stream waits for its client to make room in its buffer (see
/// [`WATCH_BUFFER_EVENTS_MAX`]), in milliseconds; a client that does not is dropped (and can
/// resume with `Last-Event-ID`).
pub const WATCH_SEND_TIMEOUT_MS: u64 = 10_000;
/// Most actions whose identity (uid, tenant, type, resource) a watch stream remembers, to
/// filter and describe the events it sends; past it, its memory starts over.
pub const WATCH_IDENTITIES_MAX: usize = 10_000;
/// Most simultaneous connections per listener (the `connections_max` key); connections
/// beyond it are answered 503 and closed.
pub const CONNECTIONS_MAX: usize = 4096;
/// Most threads of the read pool (`read_threads`; `http::reads`).
pub const READ_THREADS_MAX: usize = 1024;
/// Largest `connections_max` the configuration accepts: the most a semaphore can count.
pub const CONNECTIONS_CEILING: usize = tokio::sync::Semaphore::MAX_PERMITS;
/// Most 503 answers to connections beyond [`CONNECTIONS_MAX`] being written at once; the
/// connections beyond it are closed unanswered.
pub const REFUSALS_IN_FLIGHT_MAX: usize = 256;
/// How long a refused connection's unread request is drained before closing (so the client
/// reads the 503 rather than a reset), in milliseconds...
pub const REFUSAL_LINGER_MS: u64 = 500;
/// ...and at most how many of its bytes.
pub const REFUSAL_DRAIN_BYTES_MAX: usize = 64 * 1024;
/// Time limit of every request except wait and watch, in milliseconds (the
/// `request_timeout_ms` key).
pub const REQUEST_TIMEOUT_MS: u64 = 30_000;
/// How long shutdown waits for in-flight requests, in milliseconds (the `drain_timeout_ms`
/// key).
pub const DRAIN_TIMEOUT_MS: u64 = 10_000;
/// How long a client may take to send a request's headers, and how long an idle keep-alive
/// connection stays open, in milliseconds: a client trickling headers is disconnected.
pub const HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// Largest request head (request line and headers together), in bytes; larger → 431.
pub const HEADER_BYTES_MAX: usize = 64 * 1024;
/// Most header fields in one request; more → 431.
pub const HEADERS_MAX: usize = 100;
/// Longest `X-Request-Id` accepted from a client, in bytes. A longer one, an empty one, or
/// one with a character outside printable ASCII is replaced by a generated id (the request
/// is served, not refused).
pub const REQUEST_ID_BYTES_MAX: usize = 128;

// ---- The web console (`/console`, src/http/console) ----

/// Lifetime of the console's sign-in cookie, in seconds (8 hours: a working day). The
/// cookie carries the token itself; the token's own expiry and revocation still apply on
/// every request, whichever comes first.
pub const CONSOLE_COOKIE_MAX_AGE_S: u64 = 8 * 3600;
/// Actions on one page of the console's lists (the list and resource pages).
pub const CONSOLE_PAGE_ROWS: usize = 50;
/// Records of an action's history on one page of its console page.
pub const CONSOLE_HISTORY_PAGE_RECORDS: usize = 100;
/// Earlier cursors a list page's URL keeps for its "newer" link (`back`); past it the
/// oldest are dropped, and "newer" from there leads back to the newest page.
pub const CONSOLE_PAGE_TRAIL_MAX: usize = 20;
/// Rows one export (`/console/actions/export`) writes at most; the last line (JSON lines)
/// or a trailing comment row (CSV) says when the export was cut there.
pub const CONSOLE_EXPORT_ROWS_MAX: usize = 100_000;
/// Rows an export reads from the projection per page (one indexed query each).
pub const CONSOLE_EXPORT_PAGE_ROWS: usize = 500;
/// Longest `next` (the console URL to return to after signing in), in bytes.
pub const CONSOLE_NEXT_BYTES_MAX: usize = 2048;
/// How long browsers may keep the console's CSS and JS, in seconds: their URLs carry a
/// hash of their content, so a new build is a new URL.
pub const CONSOLE_ASSET_MAX_AGE_S: u64 = 365 * 24 * 3600;

// ---- TLS (src/http/tls.rs) ----

/// How long a client has to complete the TLS handshake after connecting, in milliseconds;
/// a client that does not is disconnected (the request head then has
/// [`HEADER_READ_TIMEOUT_MS`] of its own).
pub const TLS_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// How often the TLS certificate, key and client CA files are checked for a change (then
/// reloaded), in milliseconds. SIGHUP reloads at once.
pub const TLS_RELOAD_POLL_MS: u64 = 5_000;
/// Largest PEM file (certificate chain, key, client CA) read, in bytes.
pub const TLS_PEM_BYTES_MAX: usize = 1024 * 1024;
/// Most concurrent requests (streams) on one HTTP/2 connection; the client is told so in
/// its SETTINGS. (`connections_max` counts connections, whatever their protocol.)
pub const H2_STREAMS_MAX: u32 = 128;
/// Interval of the HTTP/2 PING that checks an idle connection's peer is still there, in
/// milliseconds; a peer that does not answer within [`H2_KEEPALIVE_TIMEOUT_MS`] is
/// disconnected.
pub const H2_KEEPALIVE_INTERVAL_MS: u64 = 30_000;
/// How long the answer to that PING may take, in milliseconds.
pub const H2_KEEPALIVE_TIMEOUT_MS: u64 = 20_000;

// ---- Tokens ----

/// Longest token secret a request may present, in bytes; a longer one is unknown (401).
pub const TOKEN_SECRET_BYTES_MAX: usize = 512;
/// Longest token name, in bytes.
pub const TOKEN_NAME_BYTES_MAX: usize = 64;
/// Most tokens in one data directory (or one cluster).
pub const TOKENS_MAX: usize = 10_000;
/// Longest `--ttl` / furthest `expires_at` of a token, in seconds (ten years).
pub const TOKEN_TTL_SECS_MAX: i64 = 10 * 366 * 24 * 3600;
/// Resolution of a token's `last_used_at`, in seconds: a use is noted in memory at most
/// this often per token, and stored (token file or cluster table) at most this often.
pub const TOKEN_LAST_USED_RESOLUTION_SECS: i64 = 60;
/// Cluster mode: how often a node re-reads the token table even without a notification.
pub const CLUSTER_TOKENS_POLL_MS: u64 = 1_000;
/// Cluster mode: a node whose token table is older than this (PostgreSQL unreachable) answers
/// 503 `tokens_unavailable` instead of trusting it, so a token revoked on another node works
/// nowhere after this bound.
pub const CLUSTER_TOKENS_STALE_MS: u64 = 5_000;
/// Cluster mode: a node that has not heard from PostgreSQL (a replica read, a notification,
/// a lease acquisition or renewal) for longer than this answers `/readyz` 503
/// `cluster_log_unreachable`, so a load balancer stops sending it traffic; it keeps serving
/// reads from its replica. Healthy, a node hears from PostgreSQL at least every
/// [`CLUSTER_POLL_INTERVAL_MS`] (the replica's poll), so this is six missed polls — no flapping
/// on one slow read — and it is shorter than [`CLUSTER_TOKENS_STALE_MS`], so a load balancer
/// checking every second or two has drained the node before its token table goes stale and
/// it starts refusing authentication.
pub const CLUSTER_LOG_STALE_MS: u64 = 3_000;

// ---- The projection's memory ----

/// What the caches hold together, in bytes (the `cache_bytes` key): split by
/// [`CACHE_SHARES`] into [`CacheBudget`]. The default is the sum of the four defaults below.
pub const CACHE_BYTES_DEFAULT: u64 = 116 * 1024 * 1024;
/// Smallest `cache_bytes` the configuration accepts (sled's share is then above
/// [`SLED_CACHE_BYTES_MIN`]).
pub const CACHE_BYTES_MIN: u64 = 2 * 1024 * 1024;
/// Parts of `cache_bytes`, in [`CacheBudget`] order: sled's page cache, the projection's
/// memos, the rendered-JSON memo, the applier's memo of written values.
pub const CACHE_SHARES: [u64; 4] = [16, 8, 4, 1];

/// The memory budget of each cache, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheBudget {
    pub sled: u64,
    pub memo: usize,
    pub render: usize,
    pub written: usize,
}

impl CacheBudget {
    /// `total` split by [`CACHE_SHARES`] (what rounding leaves goes to sled).
    pub fn split(total: u64) -> CacheBudget {
        let parts: u64 = CACHE_SHARES.iter().sum();
        let share = |i: usize| total / parts * CACHE_SHARES[i];
        let (memo, render, written) = (share(1), share(2), share(3));
        CacheBudget {
            sled: total - memo - render - written,
            memo: memo as usize,
            render: render as usize,
            written: written as usize,
        }
    }

    pub fn total(&self) -> u64 {
        self.sled + (self.memo + self.render + self.written) as u64
    }
}

/// sled's page cache, in bytes (the `sled_cache_bytes` key). sled 0.34 defaults to 1 GiB,
/// which would blow the memory budget of a small server; a soft target, not a hard cap.
pub const SLED_CACHE_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
/// Smallest `sled_cache_bytes` the configuration accepts.
pub const SLED_CACHE_BYTES_MIN: u64 = 1024 * 1024;
/// Bytes of decoded snapshots the projection's memos keep (the `memo_bytes` key; 0 turns
/// them off).
pub const MEMO_BYTES_DEFAULT: usize = 32 * 1024 * 1024;

// ---- Cluster mode (the log of record in PostgreSQL) ----

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
/// Longest a leader waits for PostgreSQL to answer a batch's commit, in milliseconds. Past
/// it the batch's outcome is unknown (its callers are told to retry with their
/// `Idempotency-Key`) and the connection is dropped.
pub const CLUSTER_APPEND_TIMEOUT_MS: u64 = 5_000;
/// Longest `node_id` of a cluster node, in bytes.
pub const NODE_ID_BYTES_MAX: usize = 128;
/// Longest a read with `min_position` waits for this node to apply that position, in
/// milliseconds; then it is answered 503 `position_not_reached`.
pub const MIN_POSITION_WAIT_MS: u64 = 10_000;

// ---- The remote CLI (`action-ledger actions|tokens`, src/cli/remote) ----

/// Default time limit of one request of the remote CLI (`--timeout`), in milliseconds. A
/// wait request gets its wait on top; a watch stream has none (see below).
pub const REMOTE_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// How long `actions watch` lets a stream stay silent (no event, no keep-alive comment)
/// before it drops the connection and resumes with `Last-Event-ID`, in milliseconds.
pub const REMOTE_WATCH_IDLE_MS: u64 = 60_000;
/// Consecutive failed reconnections after which `actions watch` gives up (exit 2).
pub const REMOTE_WATCH_RECONNECTS_MAX: u32 = 5;
/// Pause before the first reconnection of a dropped watch stream, in milliseconds; it
/// doubles with every failed attempt.
pub const REMOTE_WATCH_RECONNECT_DELAY_MS: u64 = 500;
/// Largest server-sent event (all of its lines) `actions watch` accepts, in bytes.
pub const REMOTE_SSE_EVENT_BYTES_MAX: usize = 8 * RECORD_PAYLOAD_BYTES_MAX;
/// Largest `--body` file the remote CLI reads, in bytes (the server's `BODY_BYTES_MAX`).
pub const REMOTE_BODY_BYTES_MAX: usize = BODY_BYTES_MAX;

// ---- OpenTelemetry export (feature `otlp`, `otlp_endpoint`, src/telemetry.rs) ----

/// Longest one export of a batch of spans to the collector may take, in milliseconds; then
/// that batch is dropped (a warning says so).
pub const OTLP_EXPORT_TIMEOUT_MS: u64 = 5_000;
/// Longest the graceful stop waits for the last spans to reach the collector, in
/// milliseconds.
pub const OTLP_SHUTDOWN_TIMEOUT_MS: u64 = 10_000;
/// Spans waiting for export at most; past it new spans are dropped, never a request delayed.
pub const OTLP_QUEUE_SPANS_MAX: usize = 2_048;
/// Shortest time between two warnings about failed exports, in milliseconds (the failures
/// in between are counted in the next warning).
pub const OTLP_WARN_INTERVAL_MS: u64 = 60_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cache_budget_is_the_four_defaults() {
        let b = CacheBudget::split(CACHE_BYTES_DEFAULT);
        assert_eq!(b.sled, SLED_CACHE_BYTES_DEFAULT);
        assert_eq!(b.memo, MEMO_BYTES_DEFAULT);
        assert_eq!(b.render, crate::http::render::RENDER_CACHE_BYTES);
        assert_eq!(b.written, crate::projection::WRITTEN_MEMO_BYTES);
        assert_eq!(b.total(), CACHE_BYTES_DEFAULT);
        for total in [CACHE_BYTES_MIN, 300 << 20, (1 << 30) + 7] {
            let b = CacheBudget::split(total);
            assert_eq!(b.total(), total, "the parts add up to the total");
            assert!(b.sled >= SLED_CACHE_BYTES_MIN);
        }
    }
}
