//! [`ClusterLog`]: one connection to the cluster log, with the lease, the fenced append and
//! the reads.
//!
//! **The fenced append** is one statement, so one round trip and one implicit transaction
//! (committed with `synchronous_commit = on` before it answers):
//!
//! ```sql
//! WITH lease AS (SELECT 1 FROM ledger_lease
//!                 WHERE id = 1 AND epoch = $epoch AND holder = $me AND expires_at > now()),
//!      h AS (UPDATE ledger_head SET position = $new_position, digest = $new_digest
//!             WHERE id = 1 AND epoch = $epoch AND position = $expected AND digest = $prev
//!               AND EXISTS (SELECT 1 FROM lease)
//!            RETURNING position),
//!      ins AS (INSERT INTO ledger_log ... SELECT ... FROM unnest($records...)
//!               WHERE EXISTS (SELECT 1 FROM h) RETURNING 1)
//! SELECT count(h), count(ins), pg_notify('ledger_log', h.position)
//! ```
//!
//! The head row lock serialises appends and is held until commit, so positions are gapless
//! and follow commit order (a reader tailing `position > last` never skips one). Under READ
//! COMMITTED an UPDATE that waited for the row lock re-checks its WHERE clause against the
//! row as committed by the other transaction, so if a new leader took the lease meanwhile
//! (which sets `ledger_head.epoch` in the same statement) the old leader's update matches
//! nothing, its INSERT inserts nothing, and it is told why ([`ClusterError::Deposed`] and
//! friends). The lease check on PostgreSQL's clock makes a leader that paused past its lease
//! append nothing even when no other node has taken over yet.

use super::schema;
use super::ClusterError;
use crate::limits::{
    CLUSTER_CONNECT_TIMEOUT_MS, CLUSTER_KEEPALIVE_IDLE_SECS, CLUSTER_LEASE_TTL_MS_DEFAULT,
    CLUSTER_LEASE_TTL_MS_MAX, CLUSTER_LEASE_TTL_MS_MIN, CLUSTER_READ_RECORDS_MAX,
    COMMIT_BATCH_RECORDS_MAX, RECORD_PAYLOAD_BYTES_MAX,
};
use crate::log::format::{record_digest, Digest, RecordMeta};
use crate::log::writer::NewRecord;
use chrono::{DateTime, Utc};
use std::str::FromStr;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::{Client, Config, Connection, NoTls, Row, Socket, Statement};

/// The channel a commit notifies, with the new head position as payload.
pub const NOTIFY_CHANNEL: &str = "ledger_log";

/// Who this node is and how it connects.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// `postgres://…` (or a libpq key=value string).
    pub url: String,
    /// This node's id, as the lease records its holder.
    pub node_id: String,
    /// The URL other nodes reach this node at (recorded in the lease for forwarding).
    pub advertise_url: String,
    pub lease_ttl: Duration,
    pub connect_timeout: Duration,
}

impl ClusterOptions {
    pub fn new(url: impl Into<String>, node_id: impl Into<String>) -> ClusterOptions {
        ClusterOptions {
            url: url.into(),
            node_id: node_id.into(),
            advertise_url: String::new(),
            lease_ttl: Duration::from_millis(CLUSTER_LEASE_TTL_MS_DEFAULT),
            connect_timeout: Duration::from_millis(CLUSTER_CONNECT_TIMEOUT_MS),
        }
    }
}

/// The head of the log: the last position, its chain digest, and the epoch of the leader
/// that may append after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub position: u64,
    pub digest: Digest,
    pub epoch: u64,
}

/// A lease this node holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub epoch: u64,
    pub holder: String,
    pub expires_at: DateTime<Utc>,
    /// A local deadline no later than the lease's end: the request's send time plus the time
    /// PostgreSQL said was left. Stop acting as leader past it unless renewed.
    pub valid_until: Instant,
}

/// The lease as stored, whoever holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    pub epoch: u64,
    pub holder: Option<String>,
    pub advertise_url: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Whether it had not expired, on PostgreSQL's clock, when read.
    pub valid: bool,
}

/// What [`ClusterLog::acquire_lease`] achieved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Acquire {
    /// This node is the leader of a new epoch; the head is where it must continue from.
    Acquired { lease: Lease, head: Head },
    /// Another node holds an unexpired lease.
    HeldBy(LeaseInfo),
}

/// Where an appended record landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub position: u64,
    pub digest: Digest,
}

/// A record as the cluster log holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterRecord {
    pub position: u64,
    pub epoch: u64,
    pub batch_offset: u32,
    pub kind: u8,
    pub schema: u16,
    pub payload: Vec<u8>,
    pub digest: Digest,
    pub recorded_at: DateTime<Utc>,
}

impl ClusterRecord {
    /// The record as the local log writer takes it.
    pub fn as_new(&self) -> NewRecord<'_> {
        NewRecord {
            kind: self.kind,
            schema: self.schema,
            payload: &self.payload,
        }
    }

    pub fn meta(&self) -> RecordMeta {
        RecordMeta {
            position: self.position,
            batch_offset: self.batch_offset,
            kind: self.kind,
            schema: self.schema,
        }
    }
}

/// Checks that `records` continue the chain after (`position`, `digest`): positions
/// contiguous, every digest recomputed and equal. Returns the last digest.
pub fn check_chain(
    position: u64,
    digest: Digest,
    records: &[ClusterRecord],
) -> Result<Digest, ClusterError> {
    let mut prev = digest;
    let mut at = position;
    for r in records {
        if r.position != at + 1 {
            return Err(ClusterError::ChainBroken {
                position: r.position,
                reason: format!("expected position {}", at + 1),
            });
        }
        let computed = record_digest(&prev, r.meta(), &r.payload);
        if computed != r.digest {
            return Err(ClusterError::ChainBroken {
                position: r.position,
                reason: "stored digest differs from the recomputed chain digest".into(),
            });
        }
        prev = computed;
        at = r.position;
    }
    Ok(prev)
}

const APPEND_SQL: &str = r#"
WITH lease AS (
    SELECT 1 FROM ledger_lease
     WHERE id = 1 AND epoch = $1 AND holder = $2 AND expires_at > now()
), h AS (
    UPDATE ledger_head SET position = $5, digest = $6, updated_at = now()
     WHERE id = 1 AND epoch = $1 AND position = $3 AND digest = $4
       AND EXISTS (SELECT 1 FROM lease)
    RETURNING position
), ins AS (
    INSERT INTO ledger_log
        (position, epoch, batch_offset, kind, schema_version, payload, digest, recorded_at)
    SELECT r.position, $1, r.batch_offset, r.kind, r.schema_version, r.payload, r.digest, now()
      FROM unnest($7::bigint[], $8::integer[], $9::smallint[], $10::integer[], $11::bytea[],
                  $12::bytea[]) AS r(position, batch_offset, kind, schema_version, payload, digest)
     WHERE EXISTS (SELECT 1 FROM h)
    RETURNING 1
)
SELECT (SELECT count(*) FROM h),
       (SELECT count(*) FROM ins),
       (SELECT count(*) FROM (SELECT pg_notify('ledger_log', position::text) FROM h) n)
"#;

const READ_SQL: &str = "SELECT position, epoch, batch_offset, kind, schema_version, payload, \
     digest, recorded_at FROM ledger_log WHERE position > $1 ORDER BY position LIMIT $2";

const ACQUIRE_SQL: &str = r#"
WITH l AS (
    UPDATE ledger_lease
       SET epoch = epoch + 1, holder = $1, advertise_url = $2, acquired_at = now(),
           expires_at = now() + $3::float8 * interval '1 millisecond'
     WHERE id = 1 AND (expires_at <= now() OR holder = $1)
    RETURNING epoch, expires_at
), h AS (
    UPDATE ledger_head SET epoch = l.epoch, updated_at = now() FROM l
     WHERE ledger_head.id = 1
    RETURNING ledger_head.position, ledger_head.digest
)
SELECT l.epoch, l.expires_at,
       extract(epoch FROM l.expires_at - now())::float8 * 1000 AS remaining_ms,
       h.position, h.digest
  FROM l, h
"#;

const RENEW_SQL: &str = r#"
UPDATE ledger_lease SET expires_at = now() + $3::float8 * interval '1 millisecond'
 WHERE id = 1 AND epoch = $1 AND holder = $2 AND expires_at > now()
RETURNING expires_at, extract(epoch FROM expires_at - now())::float8 * 1000
"#;

const RELEASE_SQL: &str = "UPDATE ledger_lease SET expires_at = now() \
     WHERE id = 1 AND epoch = $1 AND holder = $2 AND expires_at > now()";

const LEASE_SQL: &str = "SELECT epoch, holder, advertise_url, \
     CASE WHEN isfinite(expires_at) THEN expires_at END, expires_at > now() \
     FROM ledger_lease WHERE id = 1";

const HEAD_SQL: &str = "SELECT position, digest, epoch FROM ledger_head WHERE id = 1";

/// One connection to the cluster log.
pub struct ClusterLog {
    client: Client,
    options: ClusterOptions,
    append: Statement,
    read: Statement,
    connection: tokio::task::JoinHandle<()>,
    /// Set to true when the connection task ends.
    closed: watch::Receiver<bool>,
}

impl Drop for ClusterLog {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

fn to_i64(v: u64, what: &str) -> Result<i64, ClusterError> {
    i64::try_from(v).map_err(|_| ClusterError::Limit(format!("{what} {v} exceeds i64::MAX")))
}

fn to_u64(v: i64, what: &str) -> Result<u64, ClusterError> {
    u64::try_from(v)
        .map_err(|_| ClusterError::SchemaInvalid(format!("negative {what} {v} in the cluster log")))
}

fn to_digest(b: &[u8]) -> Result<Digest, ClusterError> {
    b.try_into()
        .map_err(|_| ClusterError::SchemaInvalid(format!("a digest of {} bytes, not 32", b.len())))
}

/// `host:port/database` of a parsed config, for messages (never the password).
fn describe(config: &Config) -> String {
    let host = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .collect::<Vec<_>>()
        .join(",");
    let port = config
        .get_ports()
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let port = if port.is_empty() { "5432".into() } else { port };
    format!(
        "{host}:{port}/{}",
        config.get_dbname().unwrap_or("(default)")
    )
}

/// Parses a cluster log URL (`postgres://…` or a libpq key=value string), which must name
/// a host. The error never repeats the URL (it may hold a password).
pub fn parse_url(url: &str) -> Result<Config, ClusterError> {
    let config = Config::from_str(url).map_err(|e| ClusterError::BadUrl(e.to_string()))?;
    if config.get_hosts().is_empty() {
        return Err(ClusterError::BadUrl(
            "no host (expected postgres://user@host:port/database)".into(),
        ));
    }
    Ok(config)
}

/// A raw connection of this node to the cluster log, configured as every cluster
/// connection is (bounded connect, TCP keepalives, application name): the caller drives the
/// [`Connection`]. The listener uses it to receive notifications.
pub async fn connect_raw(
    options: &ClusterOptions,
) -> Result<(Client, Connection<Socket, NoTlsStream>), ClusterError> {
    let lease_ms = options.lease_ttl.as_millis();
    if lease_ms < CLUSTER_LEASE_TTL_MS_MIN as u128 || lease_ms > CLUSTER_LEASE_TTL_MS_MAX as u128 {
        return Err(ClusterError::Limit(format!(
            "lease time {lease_ms} ms is outside CLUSTER_LEASE_TTL_MS_MIN..=MAX \
             ({CLUSTER_LEASE_TTL_MS_MIN}..={CLUSTER_LEASE_TTL_MS_MAX})"
        )));
    }
    let mut config = parse_url(&options.url)?;
    if config.get_application_name().is_none() {
        config.application_name(format!("action-ledger {}", options.node_id));
    }
    config
        .connect_timeout(options.connect_timeout)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(CLUSTER_KEEPALIVE_IDLE_SECS))
        .keepalives_interval(Duration::from_secs(CLUSTER_KEEPALIVE_IDLE_SECS))
        .keepalives_retries(3);
    let target = describe(&config);
    match tokio::time::timeout(options.connect_timeout, config.connect(NoTls)).await {
        Err(_) => Err(ClusterError::ConnectTimeout {
            target,
            timeout_ms: options.connect_timeout.as_millis() as u64,
        }),
        Ok(Err(source)) => Err(ClusterError::Connect { target, source }),
        Ok(Ok(pair)) => Ok(pair),
    }
}

impl ClusterLog {
    /// Connects (bounded by `connect_timeout`), turns `synchronous_commit` on for this
    /// session, and creates or checks the schema. Must run inside a Tokio runtime: the
    /// connection's I/O runs on a spawned task.
    pub async fn connect(options: ClusterOptions) -> Result<ClusterLog, ClusterError> {
        let (mut client, connection) = connect_raw(&options).await?;
        let (closed_tx, closed) = watch::channel(false);
        let connection = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "cluster log connection closed");
            }
            let _ = closed_tx.send(true);
        });
        client
            .batch_execute("SET synchronous_commit TO on")
            .await
            .map_err(ClusterError::pg("set synchronous_commit"))?;
        schema::ensure(&mut client).await?;
        let append = client
            .prepare(APPEND_SQL)
            .await
            .map_err(ClusterError::pg("prepare the append"))?;
        let read = client
            .prepare(READ_SQL)
            .await
            .map_err(ClusterError::pg("prepare the read"))?;
        Ok(ClusterLog {
            client,
            options,
            append,
            read,
            connection,
            closed,
        })
    }

    /// Resolves once this connection has ended (the server closed it, the network failed,
    /// or it was dropped). A node uses it to react at once, not at its next statement.
    pub async fn closed(&self) {
        let mut rx = self.closed.clone();
        // An error means the connection task is gone: closed too.
        let _ = rx.wait_for(|closed| *closed).await;
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        *self.closed.borrow() || self.client.is_closed()
    }

    pub fn options(&self) -> &ClusterOptions {
        &self.options
    }

    /// The head as committed now.
    pub async fn head(&self) -> Result<Head, ClusterError> {
        let row = self
            .client
            .query_one(HEAD_SQL, &[])
            .await
            .map_err(ClusterError::pg("read the head"))?;
        Ok(Head {
            position: to_u64(row.get(0), "head position")?,
            digest: to_digest(row.get(1))?,
            epoch: to_u64(row.get(2), "head epoch")?,
        })
    }

    /// The lease as stored now.
    pub async fn lease(&self) -> Result<LeaseInfo, ClusterError> {
        let row = self
            .client
            .query_one(LEASE_SQL, &[])
            .await
            .map_err(ClusterError::pg("read the lease"))?;
        Ok(LeaseInfo {
            epoch: to_u64(row.get(0), "lease epoch")?,
            holder: row.get(1),
            advertise_url: row.get(2),
            // NULL while never held (stored as `-infinity`).
            expires_at: row.get(3),
            valid: row.get(4),
        })
    }

    /// Takes the lease if it has expired (or this node's id already holds it, as after a
    /// restart): a new epoch, one more than any before, set on the lease and on the head in
    /// one statement. Returns the head the new leader continues from.
    pub async fn acquire_lease(&self) -> Result<Acquire, ClusterError> {
        let sent = Instant::now();
        let ttl_ms = self.options.lease_ttl.as_secs_f64() * 1000.0;
        let row = self
            .client
            .query_opt(
                ACQUIRE_SQL,
                &[&self.options.node_id, &self.options.advertise_url, &ttl_ms],
            )
            .await
            .map_err(ClusterError::pg("acquire the lease"))?;
        let Some(row) = row else {
            return Ok(Acquire::HeldBy(self.lease().await?));
        };
        let epoch = to_u64(row.get(0), "lease epoch")?;
        let lease = Lease {
            epoch,
            holder: self.options.node_id.clone(),
            expires_at: row.get(1),
            valid_until: sent + remaining(row.get(2)),
        };
        let head = Head {
            position: to_u64(row.get(3), "head position")?,
            digest: to_digest(row.get(4))?,
            epoch,
        };
        Ok(Acquire::Acquired { lease, head })
    }

    /// Extends a lease this node still holds. A lease that already expired cannot be
    /// renewed ([`ClusterError::LeaseExpired`]: acquire a new epoch instead), nor one another
    /// node took ([`ClusterError::Deposed`]).
    pub async fn renew_lease(&self, lease: &Lease) -> Result<Lease, ClusterError> {
        let sent = Instant::now();
        let ttl_ms = self.options.lease_ttl.as_secs_f64() * 1000.0;
        let epoch = to_i64(lease.epoch, "epoch")?;
        let row = self
            .client
            .query_opt(RENEW_SQL, &[&epoch, &self.options.node_id, &ttl_ms])
            .await
            .map_err(ClusterError::pg("renew the lease"))?;
        match row {
            Some(row) => Ok(Lease {
                epoch: lease.epoch,
                holder: lease.holder.clone(),
                expires_at: row.get(0),
                valid_until: sent + remaining(row.get(1)),
            }),
            None => Err(self.why_not(lease.epoch, None).await),
        }
    }

    /// Appends `records` as one batch after `expected` (the head this leader continues
    /// from), fenced by `lease`: one statement, one transaction, committed durably before it
    /// returns. Positions and digests are the ones the embedded log writer would give the
    /// same batch after the same head. On any refusal nothing is appended.
    pub async fn append(
        &self,
        lease: &Lease,
        expected: &Head,
        records: &[NewRecord<'_>],
    ) -> Result<Vec<Appended>, ClusterError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        if records.len() > COMMIT_BATCH_RECORDS_MAX {
            return Err(ClusterError::Limit(format!(
                "batch of {} records exceeds COMMIT_BATCH_RECORDS_MAX ({COMMIT_BATCH_RECORDS_MAX})",
                records.len()
            )));
        }
        let n = records.len();
        let mut positions = Vec::with_capacity(n);
        let mut offsets = Vec::with_capacity(n);
        let mut kinds = Vec::with_capacity(n);
        let mut schemas = Vec::with_capacity(n);
        let mut payloads = Vec::with_capacity(n);
        let mut out = Vec::with_capacity(n);
        let mut digest = expected.digest;
        for (i, r) in records.iter().enumerate() {
            if r.payload.len() > RECORD_PAYLOAD_BYTES_MAX {
                return Err(ClusterError::Limit(format!(
                    "record payload of {} bytes exceeds RECORD_PAYLOAD_BYTES_MAX ({RECORD_PAYLOAD_BYTES_MAX})",
                    r.payload.len()
                )));
            }
            let meta = RecordMeta {
                position: expected.position + 1 + i as u64,
                batch_offset: i as u32,
                kind: r.kind,
                schema: r.schema,
            };
            digest = record_digest(&digest, meta, r.payload);
            positions.push(to_i64(meta.position, "position")?);
            offsets.push(i as i32);
            kinds.push(i16::from(r.kind));
            schemas.push(i32::from(r.schema));
            payloads.push(r.payload);
            out.push(Appended {
                position: meta.position,
                digest,
            });
        }
        let digests: Vec<&[u8]> = out.iter().map(|a| &a.digest[..]).collect();
        let epoch = to_i64(lease.epoch, "epoch")?;
        let expected_position = to_i64(expected.position, "position")?;
        let new_position = *positions.last().expect("non-empty batch");
        let row = self
            .client
            .query_one(
                &self.append,
                &[
                    &epoch,
                    &self.options.node_id,
                    &expected_position,
                    &&expected.digest[..],
                    &new_position,
                    &&digest[..],
                    &positions,
                    &offsets,
                    &kinds,
                    &schemas,
                    &payloads,
                    &digests,
                ],
            )
            .await
            .map_err(ClusterError::pg("append a batch"))?;
        let updated: i64 = row.get(0);
        let inserted: i64 = row.get(1);
        if updated == 1 && inserted == n as i64 {
            return Ok(out);
        }
        if updated == 0 {
            return Err(self.why_not(lease.epoch, Some(expected.position)).await);
        }
        Err(ClusterError::SchemaInvalid(format!(
            "append updated the head but inserted {inserted} of {n} records"
        )))
    }

    /// Why an append or renewal by `epoch` was refused, from a fresh look at the lease and
    /// the head.
    async fn why_not(&self, epoch: u64, expected_position: Option<u64>) -> ClusterError {
        let (lease, head) = match tokio::try_join!(self.lease(), self.head()) {
            Ok(pair) => pair,
            Err(e) => return e,
        };
        let current_epoch = lease.epoch.max(head.epoch);
        if current_epoch != epoch {
            return ClusterError::Deposed {
                epoch,
                current_epoch,
            };
        }
        if !lease.valid || lease.holder.as_deref() != Some(self.options.node_id.as_str()) {
            return ClusterError::LeaseExpired { epoch };
        }
        ClusterError::HeadMoved {
            expected_position: expected_position.unwrap_or(head.position),
            head_position: head.position,
        }
    }

    /// Gives up a lease this node holds (it expires now), so another node can take over at
    /// once instead of after the lease time. Nothing happens if the lease is no longer ours.
    pub async fn release_lease(&self, lease: &Lease) -> Result<(), ClusterError> {
        let epoch = to_i64(lease.epoch, "epoch")?;
        self.client
            .execute(RELEASE_SQL, &[&epoch, &self.options.node_id])
            .await
            .map_err(ClusterError::pg("release the lease"))?;
        Ok(())
    }

    /// Up to `limit` (at most [`CLUSTER_READ_RECORDS_MAX`]) committed records after
    /// `position`, in order. Only committed rows are visible and positions commit in order,
    /// so reading again after the last one returned never skips a record.
    pub async fn read_after(
        &self,
        position: u64,
        limit: usize,
    ) -> Result<Vec<ClusterRecord>, ClusterError> {
        let limit = limit.clamp(1, CLUSTER_READ_RECORDS_MAX) as i64;
        let rows = self
            .client
            .query(&self.read, &[&to_i64(position, "position")?, &limit])
            .await
            .map_err(ClusterError::pg("read records"))?;
        rows.iter().map(record_of).collect()
    }

    /// The underlying client, for tools and tests that inspect the tables.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

fn remaining(ms: f64) -> Duration {
    Duration::from_secs_f64((ms / 1000.0).max(0.0))
}

fn record_of(row: &Row) -> Result<ClusterRecord, ClusterError> {
    let kind: i16 = row.get(3);
    let schema: i32 = row.get(4);
    let offset: i32 = row.get(2);
    Ok(ClusterRecord {
        position: to_u64(row.get(0), "position")?,
        epoch: to_u64(row.get(1), "epoch")?,
        batch_offset: u32::try_from(offset)
            .map_err(|_| ClusterError::SchemaInvalid(format!("batch offset {offset}")))?,
        kind: u8::try_from(kind)
            .map_err(|_| ClusterError::SchemaInvalid(format!("record kind {kind}")))?,
        schema: u16::try_from(schema)
            .map_err(|_| ClusterError::SchemaInvalid(format!("record schema {schema}")))?,
        payload: row.get(5),
        digest: to_digest(row.get(6))?,
        recorded_at: row.get(7),
    })
}
