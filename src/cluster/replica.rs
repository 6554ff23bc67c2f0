//! [`Replica`]: a node's verified local copy of the cluster log.
//!
//! A follower tails PostgreSQL and appends what it reads to a local embedded log through the
//! ordinary [`LogWriter`] (same segment format, one write and one fdatasync per batch), so
//! its local log holds the same positions and chain digests as the cluster log and
//! `verify`, history and replay work on it unchanged.
//!
//! - **Waking up**: a dedicated connection `LISTEN`s on [`NOTIFY_CHANNEL`]; a notification
//!   only wakes the loop, which then reads after its local head. Every
//!   [`CLUSTER_POLL_INTERVAL_MS`] it reads anyway, so a lost notification (or a broken
//!   listening connection, re-created at the next poll) delays a record, never loses it.
//! - **Checking**: every record read must be the next position after the local head and
//!   continue the chain (digest recomputed from the previous one), and batches must be whole
//!   (batch offsets 0, 1, 2, …). Anything else stops the replica with a typed error naming the
//!   position ([`ClusterError::ChainBroken`], [`ReplicaError::Diverged`]); nothing is skipped
//!   and nothing after the break is appended.
//! - **Whole batches**: a batch is appended locally as one writer batch, exactly as the
//!   leader committed it (the batch offset is part of each digest). A read that stops inside
//!   a batch (a page of [`CLUSTER_READ_RECORDS_MAX`]) keeps the partial batch and reads on.
//! - **Resuming**: opening an existing local log recovers it as the embedded node does, then
//!   checks that its head record is the cluster log's record at that position (same digest)
//!   and ends a batch; then it continues after it.

use super::store::connect_raw;
use super::{ClusterError, ClusterLog, ClusterOptions, ClusterRecord, Role, NOTIFY_CHANNEL};
use crate::ledger::Ledger;
use crate::limits::{CLUSTER_POLL_INTERVAL_MS, CLUSTER_READ_RECORDS_MAX};
use crate::log::format::Digest;
use crate::log::writer::{Appended, NewRecord};
use crate::log::{LogConfig, LogError, LogWriter, Storage};
use futures_util::StreamExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{watch, Mutex, Notify};
use tokio::task::JoinHandle;

/// Why a replica stopped.
#[derive(Debug, Error)]
pub enum ReplicaError {
    /// The cluster log: a broken chain or gap ([`ClusterError::ChainBroken`] names the
    /// position), or PostgreSQL being unreachable (only `catch_up` returns those; `run`
    /// reconnects).
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The local log and the cluster log disagree at `position` (a local log of another
    /// cluster, or a cluster log that lost commits the local log holds).
    #[error("the local replica and the cluster log disagree at position {position}: {reason}")]
    Diverged { position: u64, reason: String },
    /// The local log could not be opened or written.
    #[error("local replica log: {0}")]
    Log(#[from] LogError),
    /// The node's ledger refuses writes after an earlier failure (or is closed).
    #[error("the local ledger refuses replicated batches: {0}")]
    Poisoned(String),
}

impl ReplicaError {
    /// The position named by a chain or divergence error.
    pub fn position(&self) -> Option<u64> {
        match self {
            ReplicaError::Cluster(ClusterError::ChainBroken { position, .. })
            | ReplicaError::Diverged { position, .. } => Some(*position),
            _ => None,
        }
    }

    /// True for errors that reconnecting may cure (PostgreSQL unreachable, a statement
    /// failing with the connection): everything else stops the replica.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ReplicaError::Cluster(
                ClusterError::Postgres { .. }
                    | ClusterError::Connect { .. }
                    | ClusterError::ConnectTimeout { .. }
            )
        )
    }
}

/// Where the local replica is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaHead {
    pub position: u64,
    pub digest: Digest,
}

/// How a replica tails.
#[derive(Clone, Debug)]
pub struct ReplicaOptions {
    /// The local log (`<data-dir>/log`).
    pub log: LogConfig,
    /// Read this often even without a notification.
    pub poll_interval: Duration,
    /// Whether to LISTEN at all (off: polling only, as on databases without LISTEN/NOTIFY).
    pub listen: bool,
    /// Records per read, at most [`CLUSTER_READ_RECORDS_MAX`].
    pub read_limit: usize,
}

impl ReplicaOptions {
    pub fn new(log: LogConfig) -> ReplicaOptions {
        ReplicaOptions {
            log,
            poll_interval: Duration::from_millis(CLUSTER_POLL_INTERVAL_MS),
            listen: true,
            read_limit: CLUSTER_READ_RECORDS_MAX,
        }
    }
}

/// A dedicated connection that `LISTEN`s on one channel and hands each notification's
/// payload to a callback. Dropping it ends the session.
pub(crate) struct Listener {
    // Kept alive: dropping the client would end the LISTEN session.
    _client: tokio_postgres::Client,
    task: JoinHandle<()>,
}

impl Listener {
    pub(crate) async fn start(
        options: &ClusterOptions,
        channel: &'static str,
        mut on: impl FnMut(&str) + Send + 'static,
    ) -> Result<Listener, ClusterError> {
        let (client, mut connection) = connect_raw(options).await?;
        let task = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(Ok(message)) = messages.next().await {
                if let tokio_postgres::AsyncMessage::Notification(n) = message {
                    on(n.payload());
                }
            }
        });
        client
            .batch_execute(&format!("LISTEN {channel}"))
            .await
            .map_err(ClusterError::pg("LISTEN"))?;
        Ok(Listener {
            _client: client,
            task,
        })
    }

    /// Whether the session has ended (the connection broke): start a new one.
    pub(crate) fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where a replica appends what it copies.
enum Sink {
    /// A log of its own. Behind an async mutex moved into the blocking append, so a
    /// cancelled `run` leaves an append in progress to finish before anything else touches
    /// the log.
    Log(Arc<Mutex<LogWriter>>),
    /// A node's ledger, whose writer thread appends and applies (cluster mode's `serve`).
    Ledger(Arc<Ledger>),
}

/// What a running replica has seen, for `/readyz` and `/metrics`.
#[derive(Debug, Default)]
pub struct ReplicaStats {
    /// The highest cluster log position this node knows was committed (read, or named by a
    /// notification).
    pub seen_head: AtomicU64,
    /// For the last copied batch: from its commit in PostgreSQL (`recorded_at`, the
    /// database's clock) to its local append, in microseconds.
    pub lag_micros: AtomicU64,
    /// When the node last heard from PostgreSQL (this replica's reads and notifications, and
    /// the node's leadership task, which shares it).
    pub contact: Arc<super::Contact>,
}

/// A follower's local replica of the cluster log.
pub struct Replica {
    options: ClusterOptions,
    replica: ReplicaOptions,
    sink: Sink,
    cluster: Option<ClusterLog>,
    listener: Option<Listener>,
    wake: Arc<Notify>,
    applied: watch::Sender<ReplicaHead>,
    stats: Arc<ReplicaStats>,
    /// While this says leader, notifications do not wake the loop (the leader's own
    /// commits): it only polls, for batches whose commit its writer never heard confirmed.
    role: Option<watch::Receiver<Role>>,
}

impl Replica {
    /// Opens (recovering it, or creating it empty) the local log, connects to the cluster
    /// log, and checks that the local head is the cluster log's record at that position and
    /// ends a batch.
    pub async fn open(
        options: ClusterOptions,
        replica: ReplicaOptions,
        storage: Arc<dyn Storage>,
    ) -> Result<Replica, ReplicaError> {
        let config = replica.log.clone();
        let (writer, _) =
            tokio::task::spawn_blocking(move || LogWriter::open(storage, config, &mut |_| Ok(())))
                .await
                .expect("opening the local log panicked")?;
        let head = ReplicaHead {
            position: writer.next_position() - 1,
            digest: writer.last_digest(),
        };
        let cluster = ClusterLog::connect(options).await?;
        Replica::start(
            cluster,
            replica,
            Sink::Log(Arc::new(Mutex::new(writer))),
            head,
        )
        .await
    }

    /// A replica that copies into `ledger` (opened with [`Ledger::open_clustered`]) over the
    /// connection `cluster`: checks that the ledger's local log is the cluster log's prefix,
    /// ending on a batch.
    pub async fn for_ledger(
        cluster: ClusterLog,
        replica: ReplicaOptions,
        ledger: Arc<Ledger>,
    ) -> Result<Replica, ReplicaError> {
        let head = ledger.log_head();
        Replica::start(cluster, replica, Sink::Ledger(ledger), head).await
    }

    async fn start(
        cluster: ClusterLog,
        replica: ReplicaOptions,
        sink: Sink,
        head: ReplicaHead,
    ) -> Result<Replica, ReplicaError> {
        let options = cluster.options().clone();
        check_resume(&cluster, head).await?;
        let (applied, _) = watch::channel(head);
        let stats = Arc::new(ReplicaStats::default());
        stats.seen_head.store(head.position, Ordering::Relaxed);
        Ok(Replica {
            options,
            replica,
            sink,
            cluster: Some(cluster),
            listener: None,
            wake: Arc::new(Notify::new()),
            applied,
            stats,
            role: None,
        })
    }

    /// Makes the loop poll only while `role` says this node leads (see [`Replica::run`]).
    pub fn follow_role(&mut self, role: watch::Receiver<Role>) {
        self.role = Some(role);
    }

    /// Counters of this replica.
    pub fn stats(&self) -> Arc<ReplicaStats> {
        self.stats.clone()
    }

    /// Wakes the loop now (a node that just became leader catches up at once).
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    async fn local_head(&self) -> ReplicaHead {
        match &self.sink {
            Sink::Log(writer) => {
                let w = writer.lock().await;
                ReplicaHead {
                    position: w.next_position() - 1,
                    digest: w.last_digest(),
                }
            }
            Sink::Ledger(ledger) => ledger.log_head(),
        }
    }

    /// The local head.
    pub fn head(&self) -> ReplicaHead {
        *self.applied.borrow()
    }

    /// The local head, as it moves.
    pub fn subscribe(&self) -> watch::Receiver<ReplicaHead> {
        self.applied.subscribe()
    }

    /// Reads and appends everything committed in the cluster log after the local head.
    /// Returns how many records were appended.
    pub async fn catch_up(&mut self) -> Result<u64, ReplicaError> {
        if self.cluster.as_ref().is_none_or(|c| c.is_closed()) {
            self.cluster = None;
            self.cluster = Some(ClusterLog::connect(self.options.clone()).await?);
        }
        let cluster = self.cluster.as_ref().expect("connected");
        let limit = self.replica.read_limit.clamp(1, CLUSTER_READ_RECORDS_MAX);
        let mut head = self.local_head().await;
        let mut total = 0u64;
        // Read and checked, not yet appended: the start of a batch whose end is unread.
        let mut pending: Vec<ClusterRecord> = Vec::new();
        let mut fetched = head;
        loop {
            let records = cluster.read_after(fetched.position, limit).await?;
            self.stats.contact.touch();
            let full = records.len() == limit;
            // Checks the chain (nothing when nothing was read).
            let digest = super::check_chain(fetched.position, fetched.digest, &records)?;
            for r in &records {
                let continues = r.batch_offset == 0
                    || pending
                        .last()
                        .is_some_and(|p| r.batch_offset == p.batch_offset + 1);
                if !continues {
                    return Err(ClusterError::ChainBroken {
                        position: r.position,
                        reason: format!(
                            "batch offset {} does not continue a batch",
                            r.batch_offset
                        ),
                    }
                    .into());
                }
                pending.push(r.clone());
            }
            if let Some(last) = records.last() {
                fetched = ReplicaHead {
                    position: last.position,
                    digest,
                };
                self.stats
                    .seen_head
                    .fetch_max(last.position, Ordering::Relaxed);
            }
            // A batch commits whole, so a read that was not cut short by the limit ends on a
            // batch boundary; otherwise hold back the last (maybe partial) batch.
            let cut = if full {
                pending
                    .iter()
                    .rposition(|r| r.batch_offset == 0)
                    .unwrap_or(0)
            } else {
                pending.len()
            };
            if cut > 0 {
                let batches: Vec<ClusterRecord> = pending.drain(..cut).collect();
                let before = head.position;
                head = self.append(batches).await?;
                total += head.position - before;
            }
            if !full {
                break;
            }
        }
        Ok(total)
    }

    /// Appends whole batches to the local log ([`append_copied`]) and publishes the new
    /// head.
    async fn append(&self, records: Vec<ClusterRecord>) -> Result<ReplicaHead, ReplicaError> {
        let committed = records.last().map(|r| r.recorded_at);
        let head = match &self.sink {
            Sink::Log(writer) => append_to_log(writer, records).await?,
            Sink::Ledger(ledger) => ledger.replicate(records).await?,
        };
        if let Some(at) = committed {
            let lag = (chrono::Utc::now() - at)
                .num_microseconds()
                .unwrap_or(0)
                .max(0);
            self.stats.lag_micros.store(lag as u64, Ordering::Relaxed);
        }
        self.applied.send_replace(head);
        Ok(head)
    }

    /// Tails the cluster log for good: LISTEN (when enabled) plus a read every poll interval,
    /// reconnecting after connection failures. Returns only on an error that reconnecting
    /// cannot cure (a broken chain, a divergence, a local log failure). Cancelling it is
    /// safe; call [`Replica::close`] afterwards to wait for an append in progress.
    pub async fn run(&mut self) -> Result<(), ReplicaError> {
        loop {
            if self.replica.listen && self.listener.as_ref().is_none_or(Listener::is_finished) {
                self.listener = None;
                match listen(&self.options, self.wake.clone(), self.stats.clone()).await {
                    Ok(l) => self.listener = Some(l),
                    Err(e) => tracing::warn!(error = %e, "replica: LISTEN failed; polling"),
                }
            }
            match self.catch_up().await {
                Ok(_) => {}
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, "replica: reading the cluster log failed");
                    self.cluster = None;
                }
                Err(e) => {
                    tracing::error!(error = %e, "replica stopped");
                    return Err(e);
                }
            }
            let leads = self
                .role
                .as_ref()
                .is_some_and(|r| matches!(*r.borrow(), Role::Leader { .. }));
            let role_changed = async {
                match self.role.as_mut() {
                    Some(r) => {
                        let _ = r.changed().await;
                    }
                    None => std::future::pending().await,
                }
            };
            // A node that just became leader reads at once: it must not lead from behind.
            tokio::select! {
                _ = self.wake.notified(), if !leads => {}
                _ = tokio::time::sleep(self.replica.poll_interval) => {}
                _ = role_changed => {}
            }
        }
    }

    /// Waits for an append in progress (of a cancelled `run`) and closes the local log.
    pub async fn close(self) {
        if let Sink::Log(writer) = &self.sink {
            let _ = writer.lock().await;
        }
    }
}

/// The dedicated LISTEN connection: every notification wakes the replica (its payload is
/// the new head position).
async fn listen(
    options: &ClusterOptions,
    wake: Arc<Notify>,
    stats: Arc<ReplicaStats>,
) -> Result<Listener, ClusterError> {
    Listener::start(options, NOTIFY_CHANNEL, move |payload| {
        stats.contact.touch();
        if let Ok(head) = payload.parse::<u64>() {
            stats.seen_head.fetch_max(head, Ordering::Relaxed);
        }
        wake.notify_one();
    })
    .await
}

/// Checks that a local log's head is the cluster log's record at that position and ends a
/// batch, so appending what follows continues the same log.
async fn check_resume(cluster: &ClusterLog, head: ReplicaHead) -> Result<(), ReplicaError> {
    if head.position == 0 {
        return Ok(());
    }
    let records = cluster.read_after(head.position - 1, 2).await?;
    let Some(at) = records.first().filter(|r| r.position == head.position) else {
        return Err(ReplicaError::Diverged {
            position: head.position,
            reason: "the local log holds a record the cluster log does not have".into(),
        });
    };
    if at.digest != head.digest {
        return Err(ReplicaError::Diverged {
            position: head.position,
            reason: "the local record's chain digest differs from the cluster log's".into(),
        });
    }
    if let Some(next) = records.get(1) {
        if next.batch_offset != 0 {
            return Err(ReplicaError::Diverged {
                position: head.position,
                reason: "the local log ends inside a batch (a torn tail); remove the local log \
                         to copy it afresh"
                    .into(),
            });
        }
    }
    Ok(())
}

/// Appends `records` (whole batches, continuing `log`'s head) to `log`, each batch with
/// the batch offsets it was committed with, with one write and one fdatasync (one per
/// segment crossed: [`LogWriter::append_batches`]). Checks that every record got the cluster
/// log's position and digest; a mismatch poisons `log` ([`ReplicaError::Diverged`]).
pub(crate) fn append_copied(
    log: &mut LogWriter,
    records: &[ClusterRecord],
) -> Result<Vec<Appended>, ReplicaError> {
    let new: Vec<NewRecord<'_>> = records.iter().map(ClusterRecord::as_new).collect();
    let mut batches = Vec::new();
    let mut rest = &new[..];
    for batch in records.chunk_by(|_, next| next.batch_offset != 0) {
        let (head, tail) = rest.split_at(batch.len());
        batches.push(head);
        rest = tail;
    }
    let appended = log.append_batches(&batches)?;
    if let Some((r, _)) = records
        .iter()
        .zip(&appended)
        .find(|(r, a)| (r.position, r.digest) != (a.position, a.digest))
    {
        log.poison_diverged(r.position);
        return Err(ReplicaError::Diverged {
            position: r.position,
            reason: "the local log wrote it with another digest".into(),
        });
    }
    Ok(appended)
}

/// Appends whole batches to a replica's own log ([`append_copied`]).
async fn append_to_log(
    writer: &Arc<Mutex<LogWriter>>,
    records: Vec<ClusterRecord>,
) -> Result<ReplicaHead, ReplicaError> {
    let mut guard = writer.clone().lock_owned().await;
    tokio::task::spawn_blocking(move || {
        append_copied(&mut guard, &records)?;
        Ok(ReplicaHead {
            position: guard.next_position() - 1,
            digest: guard.last_digest(),
        })
    })
    .await
    .expect("the replica's local append panicked")
}
