//! The ledger core: owns the log writer and the derived state, decides what is accepted.
//!
//! Data flow of a write:
//! 1. a caller hands a [`Submission`] to [`Ledger::submit`]; it waits in a bounded queue;
//! 2. the writer thread (one OS thread; blocking I/O never runs on async workers) takes every
//!    waiting submission up to the batch limits and validates each by folding it onto the
//!    current state — the [`StateStore`] plus an overlay of what earlier submissions of the
//!    same batch changed — so racing requests are decided in one order;
//! 3. accepted submissions become one log record each; the batch is written with one write
//!    and one fdatasync ([`LogWriter::append`]);
//! 4. the written batch goes to the applier thread, which applies it to the store and only
//!    then answers every caller: a reader that sees the answer sees the write
//!    (read-your-writes). Meanwhile the writer validates and writes the next batch — it sees
//!    the batches not yet applied through their overlays, newest first, before the store —
//!    so the store's apply costs no fdatasync time and the fdatasync no apply time.
//!
//! If the log fails, the writer is poisoned: the batch and everything after it fails, and a
//! restart recovers from the disk. HTTP and CLI both go through this type.
//!
//! Modules: `store` (the [`StateStore`] seam), `writer` (validation, overlays, group commit),
//! `applier` (applying written batches and answering callers), `read` (history and as-of
//! reads: the log records an index names, folded), `error`, and [`memory`] (the in-memory
//! store). This file keeps the [`Ledger`] handle.

mod applier;
mod cluster;
mod error;
pub mod memory;
mod read;
mod store;
mod writer;

pub use applier::WRITE_BACK_IDLE;
pub use cluster::ClusterLink;
pub use error::{LedgerError, Poison, StoreError};
pub use read::{AsOf, HistoryIndex, HistoryRecord, RecordLocation};
pub use store::{CommittedEntry, IdempotentResult, StateStore};
pub use writer::GENERATED_UID_PREFIX;

use crate::cluster::{ClusterRecord, ReplicaError, ReplicaHead};
use crate::event::codec;
use crate::event::*;
use crate::limits::*;
use crate::log::reader::{LogReader, OwnedRecord, ReadMark};
use crate::log::{LogConfig, LogError, LogWriter, ScanSummary, Storage};
use applier::{Applier, APPLY_QUEUE_BATCHES};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot, watch};
use writer::{Request, Work, WriterState};

/// The answer to an accepted submission.
#[derive(Clone, Debug, PartialEq)]
pub struct Committed {
    pub position: Position,
    pub recorded_at: Micros,
    /// The action after each command, in command order.
    pub actions: Vec<Action>,
    /// True when this is the stored first answer of an idempotent repeat (nothing written).
    pub replayed: bool,
}

#[derive(Clone, Debug)]
pub struct LedgerConfig {
    /// `<data-dir>/log`.
    pub log_dir: PathBuf,
    pub segment_bytes: u64,
    pub commit_batch_records_max: usize,
    pub commit_batch_bytes_max: usize,
    pub append_queue_max: usize,
}

impl LedgerConfig {
    pub fn new(log_dir: impl Into<PathBuf>) -> LedgerConfig {
        LedgerConfig {
            log_dir: log_dir.into(),
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            commit_batch_records_max: COMMIT_BATCH_RECORDS_MAX,
            commit_batch_bytes_max: COMMIT_BATCH_BYTES_MAX,
            append_queue_max: APPEND_QUEUE_MAX,
        }
    }
}

/// Counters of the writer, for `/metrics` and benchmarks.
#[derive(Default, Debug)]
pub struct LedgerStats {
    /// Records appended (accepted submissions).
    pub records: AtomicU64,
    /// Commit batches, each one write + one fdatasync.
    pub fsyncs: AtomicU64,
    /// Total time in write + fdatasync, microseconds.
    pub fsync_micros: AtomicU64,
    /// Slowest write + fdatasync, microseconds.
    pub fsync_micros_max: AtomicU64,
    /// Submissions refused by validation.
    pub rejected: AtomicU64,
    /// Cluster mode: batches committed in (or attempted on) the cluster log.
    pub cluster_commits: AtomicU64,
    /// Cluster mode: total time of those commits, microseconds.
    pub cluster_commit_micros: AtomicU64,
    /// Cluster mode: records copied from the cluster log (written by other leaders, or whose
    /// commit this node never heard confirmed).
    pub records_replicated: AtomicU64,
    /// Whether a storage failure poisoned the writer (it refuses every write from now on).
    pub poisoned: std::sync::atomic::AtomicBool,
}

/// The ledger. Cheap to share behind an `Arc`; all writes funnel into one writer thread.
pub struct Ledger {
    tx: Mutex<Option<mpsc::Sender<Work>>>,
    /// The local log's head, as the writer last appended.
    head: watch::Receiver<ReplicaHead>,
    /// Whether a cluster log is the log of record.
    clustered: bool,
    store: Arc<dyn StateStore>,
    reader: LogReader,
    /// Last committed (durable and applied) position, published after each batch.
    committed: watch::Receiver<u64>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    recovery: ScanSummary,
    stats: Arc<LedgerStats>,
}

/// Records applied during catch-up are handed to the store in chunks of this many.
const CATCH_UP_CHUNK: usize = 1024;

impl Ledger {
    /// Recovers the log, brings `store` up to date with it, and starts the writer thread.
    pub fn open(
        storage: Arc<dyn Storage>,
        config: LedgerConfig,
        store: Arc<dyn StateStore>,
    ) -> Result<Ledger, LedgerError> {
        Ledger::open_with(storage, config, store, None)
    }

    /// [`Ledger::open`] in cluster mode: the writer commits each batch in the cluster log
    /// before the local log, and takes batches other leaders committed through
    /// [`Ledger::replicate`]. The local log must already be a prefix of the cluster log
    /// (the caller checks that, see [`crate::cluster::Replica`]).
    pub fn open_clustered(
        storage: Arc<dyn Storage>,
        config: LedgerConfig,
        store: Arc<dyn StateStore>,
        link: ClusterLink,
    ) -> Result<Ledger, LedgerError> {
        Ledger::open_with(storage, config, store, Some(link))
    }

    fn open_with(
        storage: Arc<dyn Storage>,
        config: LedgerConfig,
        store: Arc<dyn StateStore>,
        link: Option<ClusterLink>,
    ) -> Result<Ledger, LedgerError> {
        let applied = store.applied_position();
        let mut pending: Vec<CommittedEntry> = Vec::new();
        let mut store_error: Option<StoreError> = None;
        let log_config = LogConfig {
            dir: config.log_dir.clone(),
            segment_bytes: config.segment_bytes,
        };
        let (writer, summary) = LogWriter::open(storage.clone(), log_config, &mut |rec| {
            if rec.meta.position <= applied {
                return Ok(());
            }
            let entry = codec::decode_entry(rec.meta.kind, rec.meta.schema, rec.payload)
                .map_err(|e| e.to_string())?;
            pending.push(CommittedEntry {
                position: rec.meta.position,
                segment: rec.segment,
                offset: rec.offset,
                entry,
            });
            if pending.len() >= CATCH_UP_CHUNK {
                if let Err(e) = store.apply(&pending) {
                    store_error = Some(e);
                    return Err("state store failed during catch-up".into());
                }
                pending.clear();
            }
            Ok(())
        })
        .map_err(|e| match store_error.take() {
            Some(se) => LedgerError::Store(se),
            None => LedgerError::Log(e),
        })?;
        store.apply(&pending)?;
        if store.applied_position() > summary.last_position {
            return Err(LedgerError::Store(StoreError::Damaged(format!(
                "the projection has applied position {} but the log ends at {}; rebuild it",
                store.applied_position(),
                summary.last_position
            ))));
        }

        let next_id = store.max_action_id()? + 1;
        let (tx, rx) = mpsc::channel(config.append_queue_max.max(1));
        let (committed_tx, committed_rx) = watch::channel(summary.last_position);
        let stats = Arc::new(LedgerStats::default());
        let applier = Applier {
            store: store.clone(),
            committed: committed_tx,
            applied: Arc::new(AtomicU64::new(summary.last_position)),
            failure: Arc::new(Mutex::new(None)),
        };
        let (applied, failure) = (applier.applied.clone(), applier.failure.clone());
        let (head_tx, head) = watch::channel(ReplicaHead {
            position: writer.next_position() - 1,
            digest: writer.last_digest(),
        });
        let clustered = link.is_some();
        let (apply_tx, apply_rx) = std::sync::mpsc::sync_channel(APPLY_QUEUE_BATCHES);
        let applier = std::thread::Builder::new()
            .name("ledger-applier".into())
            .spawn(move || applier.run(apply_rx))
            .map_err(|e| LogError::io(&config.log_dir, e).during("start the applier thread for"))?;
        let state = WriterState {
            stats: stats.clone(),
            log: writer,
            store: store.clone(),
            next_id,
            last_recorded_at: 0,
            config: config.clone(),
            in_flight: VecDeque::new(),
            applied,
            store_failure: failure,
            poisoned: None,
            apply_tx,
            applier,
            cluster: link.map(cluster::ClusterAppender::new),
            replicated_upto: 0,
            head: head_tx,
        };
        let handle = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || state.run(rx))
            .map_err(|e| LogError::io(&config.log_dir, e).during("start the writer thread for"))?;
        Ok(Ledger {
            tx: Mutex::new(Some(tx)),
            head,
            clustered,
            store,
            reader: LogReader::new(storage, config.log_dir.clone()),
            committed: committed_rx,
            writer: Mutex::new(Some(handle)),
            recovery: summary,
            stats,
        })
    }

    /// Validates and durably records a submission; returns once it is in the log (fdatasync
    /// returned) and applied to the store.
    pub async fn submit(&self, submission: Submission) -> Result<Committed, LedgerError> {
        let tx = self.sender()?;
        let (reply, rx) = oneshot::channel();
        tx.send(Work::Submit(Request { submission, reply }))
            .await
            .map_err(|_| LedgerError::Closed)?;
        rx.await.map_err(|_| LedgerError::Closed)?
    }

    /// [`Self::submit`] for synchronous callers (CLI, tests). Must not be called from an
    /// async worker thread.
    pub fn submit_blocking(&self, submission: Submission) -> Result<Committed, LedgerError> {
        let tx = self.sender()?;
        let (reply, rx) = oneshot::channel();
        tx.blocking_send(Work::Submit(Request { submission, reply }))
            .map_err(|_| LedgerError::Closed)?;
        rx.blocking_recv().map_err(|_| LedgerError::Closed)?
    }

    /// Cluster mode: appends whole batches the cluster log committed (checked by the
    /// caller to continue the chain) to the local log and applies them; records the local
    /// log already holds are skipped. Returns the local head once they are durable locally.
    pub async fn replicate(
        &self,
        records: Vec<ClusterRecord>,
    ) -> Result<ReplicaHead, ReplicaError> {
        let tx = self
            .sender()
            .map_err(|e| ReplicaError::Poisoned(e.to_string()))?;
        let (reply, rx) = oneshot::channel();
        let closed = || ReplicaError::Poisoned(LedgerError::Closed.to_string());
        tx.send(Work::Replicate { records, reply })
            .await
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    /// The local log's head: its last position and chain digest (durable, perhaps not yet
    /// applied).
    pub fn log_head(&self) -> ReplicaHead {
        *self.head.borrow()
    }

    /// Whether this ledger runs in cluster mode.
    pub fn is_clustered(&self) -> bool {
        self.clustered
    }

    fn sender(&self) -> Result<mpsc::Sender<Work>, LedgerError> {
        self.tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(LedgerError::Closed)
    }

    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    pub fn reader(&self) -> &LogReader {
        &self.reader
    }

    /// The last position that is durable and applied.
    pub fn committed_position(&self) -> u64 {
        *self.committed.borrow()
    }

    /// A receiver that changes whenever a batch commits (for wait and watch).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.committed.clone()
    }

    /// Writer counters (appends, fsyncs, fsync time, refusals).
    pub fn stats(&self) -> &LedgerStats {
        &self.stats
    }

    /// What recovery found when the ledger opened (torn tail, segments, head digest).
    pub fn recovery(&self) -> &ScanSummary {
        &self.recovery
    }

    /// Reads committed records with `after < position <= upto`.
    pub fn read_records(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(OwnedRecord, Entry)>, LedgerError> {
        self.read_records_from(None, after, limit).map(|(r, _)| r)
    }

    /// [`Ledger::read_records`] for a follower: starts at `mark` (from the previous call,
    /// when its position is `after`) instead of the start of its segment, and returns the
    /// mark to pass next time. See [`LogReader::for_each_from`].
    pub fn read_records_from(
        &self,
        mark: Option<ReadMark>,
        after: u64,
        limit: usize,
    ) -> Result<(Records, Option<ReadMark>), LedgerError> {
        let upto = self.committed_position();
        let mut out = Vec::new();
        let mut bad = None;
        let mark = self.reader.for_each_from(mark, after, upto, &mut |rec| {
            match codec::decode_entry(rec.kind, rec.schema, &rec.payload) {
                Ok(entry) => out.push((rec, entry)),
                Err(e) => {
                    bad = Some((rec.position, e.to_string()));
                    return false;
                }
            }
            out.len() < limit
        })?;
        if let Some((position, reason)) = bad {
            return Err(LedgerError::BadRecord { position, reason });
        }
        Ok((out, mark))
    }

    /// Stops accepting submissions, lets the writer finish everything already queued (each
    /// answered after its fsync), and waits for the writer thread to exit.
    pub fn close(&self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        self.close();
    }
}

/// Records read from the log with their decoded entries, in log order.
pub type Records = Vec<(OwnedRecord, Entry)>;
