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

mod error;
pub mod memory;

pub use error::{LedgerError, Poison, StoreError};

use crate::event::codec;
use crate::event::fold::{self, Rejection};
use crate::event::*;
use crate::limits::*;
use crate::log::reader::{LogReader, OwnedRecord, ReadMark};
use crate::log::writer::NewRecord;
use crate::log::{LogConfig, LogError, LogWriter, ScanSummary, Storage};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot, watch};

/// A committed log entry with where it lives, as the store applies it.
#[derive(Clone, Debug)]
pub struct CommittedEntry {
    pub position: Position,
    pub segment: u64,
    pub offset: u64,
    pub entry: Entry,
}

/// The first answer to an idempotent submission, kept so a repeat can return it.
#[derive(Clone, Debug, PartialEq)]
pub struct IdempotentResult {
    pub request_digest: [u8; 32],
    pub position: Position,
    pub recorded_at: Micros,
    pub actions: Vec<Action>,
}

/// What the writer needs from the derived state, and what keeps it current. Implemented by
/// the sled projection and by [`memory::MemoryStore`].
///
/// `apply` must be idempotent per position: entries at or below [`Self::applied_position`]
/// are skipped, so catch-up can always restart from the checkpoint.
pub trait StateStore: Send + Sync + 'static {
    fn action(&self, id: ActionId) -> Result<Option<Action>, StoreError>;
    fn id_for_uid(&self, uid: &str) -> Result<Option<ActionId>, StoreError>;
    /// The unfinished exclusive action holding `resource` for `tenant`, if any.
    fn exclusive_holder(
        &self,
        tenant: &str,
        resource: &ResourceRef,
    ) -> Result<Option<ActionId>, StoreError>;
    fn idempotent_result(
        &self,
        tenant: &str,
        key: &str,
    ) -> Result<Option<IdempotentResult>, StoreError>;
    /// Highest action id created so far (0 when none).
    fn max_action_id(&self) -> Result<ActionId, StoreError>;
    /// Position of the last applied log record (0 when none).
    fn applied_position(&self) -> u64;
    fn apply(&self, entries: &[CommittedEntry]) -> Result<(), StoreError>;
    /// Whether `apply` left writes for [`Self::write_back`] (a store that writes everything
    /// before `apply` returns never does). Every read of the store sees them either way.
    fn unwritten(&self) -> bool {
        false
    }
    /// Writes out what `apply` left; the applier calls it once no batch has come for
    /// [`WRITE_BACK_IDLE`], and when it stops.
    fn write_back(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Why the store can take no more batches, once it cannot (checked before each batch:
    /// the writer then refuses every command, as after a failed `apply`).
    fn failure(&self) -> Option<StoreError> {
        None
    }
}

/// How long the applier waits for the next batch before it asks the store to write out
/// what `apply` left (see [`StateStore::write_back`]).
pub const WRITE_BACK_IDLE: std::time::Duration = std::time::Duration::from_millis(5);

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
}

struct Request {
    submission: Submission,
    reply: oneshot::Sender<Result<Committed, LedgerError>>,
}

/// The ledger. Cheap to share behind an `Arc`; all writes funnel into one writer thread.
pub struct Ledger {
    tx: Mutex<Option<mpsc::Sender<Request>>>,
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
/// Written batches waiting for the applier; the writer waits (back-pressure) beyond it.
const APPLY_QUEUE_BATCHES: usize = 2;

impl Ledger {
    /// Recovers the log, brings `store` up to date with it, and starts the writer thread.
    pub fn open(
        storage: Arc<dyn Storage>,
        config: LedgerConfig,
        store: Arc<dyn StateStore>,
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
        };
        let handle = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || state.run(rx))
            .map_err(|e| LogError::io(&config.log_dir, e).during("start the writer thread for"))?;
        Ok(Ledger {
            tx: Mutex::new(Some(tx)),
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
        tx.send(Request { submission, reply })
            .await
            .map_err(|_| LedgerError::Closed)?;
        rx.await.map_err(|_| LedgerError::Closed)?
    }

    /// [`Self::submit`] for synchronous callers (CLI, tests). Must not be called from an
    /// async worker thread.
    pub fn submit_blocking(&self, submission: Submission) -> Result<Committed, LedgerError> {
        let tx = self.sender()?;
        let (reply, rx) = oneshot::channel();
        tx.blocking_send(Request { submission, reply })
            .map_err(|_| LedgerError::Closed)?;
        rx.blocking_recv().map_err(|_| LedgerError::Closed)?
    }

    fn sender(&self) -> Result<mpsc::Sender<Request>, LedgerError> {
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

/// What the writer thread owns.
struct WriterState {
    stats: Arc<LedgerStats>,
    log: LogWriter,
    store: Arc<dyn StateStore>,
    next_id: ActionId,
    /// `recorded_at` never goes backwards along the log, so time and position order agree.
    last_recorded_at: Micros,
    config: LedgerConfig,
    /// Batches written (durable) but perhaps not yet applied to the store, oldest first.
    /// Dropped once the applier has applied them, never before: a lookup that misses every
    /// overlay finds the store already current.
    in_flight: VecDeque<InFlight>,
    /// The last position the applier has applied.
    applied: Arc<AtomicU64>,
    /// Set by the applier when the store failed; the writer then refuses everything.
    store_failure: Arc<Mutex<Option<StoreError>>>,
    /// The first failure of the log or the store; from then on every submission is refused.
    poisoned: Option<Poison>,
    apply_tx: std::sync::mpsc::SyncSender<Job>,
    applier: std::thread::JoinHandle<()>,
}

struct InFlight {
    last_position: Position,
    overlay: Overlay,
}

/// A caller and the answer it gets once its batch is applied.
type Reply = (oneshot::Sender<Result<Committed, LedgerError>>, Committed);

/// A written batch on its way to the applier, with everyone to answer after it is applied.
struct Job {
    entries: Vec<CommittedEntry>,
    answers: Vec<Reply>,
}

/// What the applier thread owns: it applies written batches to the store in log order and
/// answers their callers.
struct Applier {
    store: Arc<dyn StateStore>,
    committed: watch::Sender<u64>,
    applied: Arc<AtomicU64>,
    failure: Arc<Mutex<Option<StoreError>>>,
}

impl Applier {
    fn run(self, rx: std::sync::mpsc::Receiver<Job>) {
        let mut failed = false;
        loop {
            let next = if !failed && self.store.unwritten() {
                match rx.recv_timeout(WRITE_BACK_IDLE) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        if let Err(e) = self.store.write_back() {
                            self.fail(e);
                            failed = true;
                        }
                        continue;
                    }
                    next => next.ok(),
                }
            } else {
                rx.recv().ok()
            };
            let Some(mut job) = next else { break };
            // Batches that queued up while the last one was applied go to the store together:
            // one sled batch (and one sealed sled buffer) instead of one each. The queue holds
            // at most `APPLY_QUEUE_BATCHES`, so this never waits for more.
            while let Ok(next) = rx.try_recv() {
                job.entries.extend(next.entries);
                job.answers.extend(next.answers);
            }
            if let Some(last) = job.entries.last().map(|e| e.position) {
                if !failed {
                    match self.store.apply(&job.entries) {
                        Ok(()) => self.applied.store(last, Ordering::Release),
                        Err(e) => {
                            // Durable but not applied: answer the truth (it is recorded), and
                            // refuse further writes until a restart catches the projection up
                            // from the log. Later batches are not applied either: the store
                            // must never skip a position.
                            self.fail(e);
                            failed = true;
                        }
                    }
                }
                let _ = self.committed.send(last);
            }
            for (reply, answer) in job.answers {
                let _ = reply.send(Ok(answer));
            }
        }
        // The writer has stopped: what the store still holds goes out now.
        if !failed {
            if let Err(e) = self.store.write_back() {
                self.fail(e);
            }
        }
    }

    /// Records that the store could not take a batch (or write one out): the ledger refuses
    /// further writes until a restart catches the store up from the log.
    fn fail(&self, e: StoreError) {
        tracing::error!(error = %e, "projection apply failed; refusing further writes");
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(e);
    }
}

/// What earlier submissions of the batch being built changed; consulted before the store.
#[derive(Default)]
struct Overlay {
    actions: HashMap<ActionId, Action>,
    uids: HashMap<String, ActionId>,
    /// (tenant, resource) → holder; `None` = released within this batch.
    exclusive: HashMap<(String, ResourceRef), Option<ActionId>>,
    idempotent: HashMap<(String, String), IdempotentResult>,
    /// Submissions accepted into the batch so far.
    accepted: u64,
}

/// An accepted submission waiting for its fsync.
struct Pending {
    reply: oneshot::Sender<Result<Committed, LedgerError>>,
    entry: Entry,
    payload: Vec<u8>,
    actions: Vec<Action>,
}

enum Outcome {
    Accepted(Pending),
    /// An idempotent repeat of a submission not yet applied (in the batch being built or a
    /// written one): its answer goes out after the batch being built is applied, so it never
    /// precedes the original's (acknowledged means durable and visible).
    Deferred(Reply),
    Answered,
}

impl WriterState {
    fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        while let Some(first) = rx.blocking_recv() {
            self.catch_up_with_applier();
            let mut overlay = Overlay::default();
            let mut accepted: Vec<Pending> = Vec::new();
            let mut deferred = Vec::new();
            let mut bytes = 0usize;
            let mut next = Some(first);
            // Group commit: take everything already waiting, up to the batch limits.
            while let Some(req) = next.take() {
                match self.admit(req, &mut overlay) {
                    Outcome::Accepted(p) => {
                        bytes += p.payload.len();
                        accepted.push(p);
                    }
                    Outcome::Deferred(reply) => deferred.push(reply),
                    Outcome::Answered => {}
                }
                if accepted.len() >= self.config.commit_batch_records_max
                    || bytes >= self.config.commit_batch_bytes_max
                {
                    break;
                }
                next = rx.try_recv().ok();
            }
            self.commit(accepted, overlay, deferred);
        }
        tracing::debug!("ledger writer stopped: queue closed and drained");
        drop(self.apply_tx);
        if self.applier.join().is_err() {
            tracing::error!("the ledger applier thread panicked");
        }
    }

    /// Drops the overlays of batches the applier has applied, and takes over a store failure
    /// it reported. Called before each batch.
    fn catch_up_with_applier(&mut self) {
        let applied = self.applied.load(Ordering::Acquire);
        while self
            .in_flight
            .front()
            .is_some_and(|b| b.last_position <= applied)
        {
            self.in_flight.pop_front();
        }
        let failure = self
            .store_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(e) = failure.or_else(|| self.store.failure()) {
            self.poisoned.get_or_insert(Poison::Store(e));
        }
    }

    /// The first answer of `f` from this submission's scratch, the batch being built, then
    /// the written batches not yet applied, newest first; `None` means "ask the store".
    fn seen<'a, T>(
        &'a self,
        scratch: &'a Overlay,
        overlay: &'a Overlay,
        f: impl Fn(&'a Overlay) -> Option<T>,
    ) -> Option<T> {
        f(scratch)
            .or_else(|| f(overlay))
            .or_else(|| self.in_flight.iter().rev().find_map(|b| f(&b.overlay)))
    }

    fn now(&mut self) -> Micros {
        let now = chrono::Utc::now().timestamp_micros();
        self.last_recorded_at = now.max(self.last_recorded_at);
        self.last_recorded_at
    }

    /// Validates one submission against store + overlay. Refusals are answered at once;
    /// they depend only on state that is already committed or will be committed before any
    /// later batch.
    fn admit(&mut self, req: Request, overlay: &mut Overlay) -> Outcome {
        let Request { submission, reply } = req;
        if let Some(cause) = &self.poisoned {
            let _ = reply.send(Err(LedgerError::Poisoned(cause.clone())));
            return Outcome::Answered;
        }
        match self.validate(&submission, overlay) {
            Ok(Validated::Replay { result, in_batch }) => {
                let answer = Committed {
                    position: result.position,
                    recorded_at: result.recorded_at,
                    actions: result.actions,
                    replayed: true,
                };
                if in_batch {
                    return Outcome::Deferred((reply, answer));
                }
                let _ = reply.send(Ok(answer));
                Outcome::Answered
            }
            Ok(Validated::New {
                entry,
                actions,
                scratch,
            }) => match codec::encode_entry(&entry) {
                Ok(payload) => {
                    overlay.merge(*scratch);
                    Outcome::Accepted(Pending {
                        reply,
                        entry,
                        payload,
                        actions,
                    })
                }
                Err(e) => {
                    self.next_id -= entry
                        .ops
                        .iter()
                        .filter(|op| matches!(op, Op::Create(_)))
                        .count() as u64;
                    let _ = reply.send(Err(Rejection::Limit {
                        limit: "RECORD_PAYLOAD_BYTES_MAX",
                        field: "request".into(),
                        max: RECORD_PAYLOAD_BYTES_MAX as u64,
                        actual: match e {
                            codec::CodecError::TooLarge { actual, .. } => actual as u64,
                            _ => 0,
                        },
                    }
                    .into()));
                    Outcome::Answered
                }
            },
            Err(e) => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                let _ = reply.send(Err(e));
                Outcome::Answered
            }
        }
    }

    fn validate(&mut self, sub: &Submission, overlay: &Overlay) -> Result<Validated, LedgerError> {
        if sub.commands.is_empty() {
            return Err(Rejection::BadRequest {
                field: "commands".into(),
                reason: "must not be empty".into(),
            }
            .into());
        }
        if sub.commands.len() > BATCH_COMMANDS_MAX {
            return Err(Rejection::Limit {
                limit: "BATCH_COMMANDS_MAX",
                field: "commands".into(),
                max: BATCH_COMMANDS_MAX as u64,
                actual: sub.commands.len() as u64,
            }
            .into());
        }
        if let Some(stamp) = &sub.idempotency {
            let key = (stamp.tenant.clone(), stamp.key.clone());
            let empty = Overlay::default();
            // Found in an overlay = not applied yet: the repeat is answered after the batch
            // being built, like the original (and never before it).
            let (previous, in_batch) = match self.seen(&empty, overlay, |o| o.idempotent.get(&key))
            {
                Some(r) => (Some(r.clone()), true),
                None => (
                    self.store.idempotent_result(&stamp.tenant, &stamp.key)?,
                    false,
                ),
            };
            if let Some(previous) = previous {
                if previous.request_digest == stamp.request_digest {
                    return Ok(Validated::Replay {
                        result: previous,
                        in_batch,
                    });
                }
                return Err(Rejection::IdempotencyKeyReused {
                    key: stamp.key.clone(),
                }
                .into());
            }
        }

        let recorded_at = self.now();
        // Accepted records of this batch are appended in order, so this one's position is
        // known now.
        let position = self.log.next_position() + overlay.accepted;
        let mut scratch = Overlay::default();
        let mut ops = Vec::with_capacity(sub.commands.len());
        let mut actions = Vec::with_capacity(sub.commands.len());
        let first_id = self.next_id;
        for (index, command) in sub.commands.iter().enumerate() {
            let admitted = match command {
                Command::Create(c) => {
                    self.admit_create(sub, c, overlay, &mut scratch, recorded_at, position)
                }
                Command::Event(e) => {
                    self.admit_event(sub, e, overlay, &scratch, recorded_at, position)
                }
            };
            let (op, after) = match admitted {
                Ok(x) => x,
                Err(e) => {
                    self.next_id = first_id;
                    return Err(match e {
                        LedgerError::Rejected(rejection) if sub.commands.len() > 1 => {
                            LedgerError::CommandRejected { index, rejection }
                        }
                        e => e,
                    });
                }
            };
            if after.exclusive && after.status.is_terminal() {
                scratch
                    .exclusive
                    .insert((after.tenant.clone(), after.resource.clone()), None);
            }
            scratch.actions.insert(after.id, after.clone());
            actions.push(after);
            ops.push(op);
        }
        let entry = Entry {
            recorded_at,
            principal: sub.principal.clone(),
            idempotency: sub.idempotency.clone(),
            ops,
        };
        if let Some(stamp) = &sub.idempotency {
            scratch.idempotent.insert(
                (stamp.tenant.clone(), stamp.key.clone()),
                IdempotentResult {
                    request_digest: stamp.request_digest,
                    position,
                    recorded_at,
                    actions: actions.clone(),
                },
            );
        }
        Ok(Validated::New {
            entry,
            actions,
            scratch: Box::new(scratch),
        })
    }

    fn lookup_action(
        &self,
        id: ActionId,
        overlay: &Overlay,
        scratch: &Overlay,
    ) -> Result<Option<Action>, LedgerError> {
        if let Some(a) = self.seen(scratch, overlay, |o| o.actions.get(&id)) {
            return Ok(Some(a.clone()));
        }
        Ok(self.store.action(id)?)
    }

    fn admit_create(
        &mut self,
        sub: &Submission,
        c: &CreateAction,
        overlay: &Overlay,
        scratch: &mut Overlay,
        recorded_at: Micros,
        position: Position,
    ) -> Result<(Op, Action), LedgerError> {
        fold::validate_create(c)?;
        if let Some(scope) = &sub.tenant_scope {
            if &c.tenant != scope {
                return Err(Rejection::BadRequest {
                    field: "tenant".into(),
                    reason: format!("may only create actions for tenant {scope:?}"),
                }
                .into());
            }
        }
        let id = self.next_id;
        let uid = match &c.uid {
            Some(uid) => {
                if uid.starts_with(GENERATED_UID_PREFIX) {
                    return Err(Rejection::BadRequest {
                        field: "uid".into(),
                        reason: format!(
                            "the prefix {GENERATED_UID_PREFIX:?} is reserved for generated uids"
                        ),
                    }
                    .into());
                }
                let holder = match self.seen(scratch, overlay, |o| o.uids.get(uid)) {
                    Some(id) => Some(*id),
                    None => self.store.id_for_uid(uid)?,
                };
                if let Some(holder) = holder {
                    let visible = self
                        .lookup_action(holder, overlay, scratch)?
                        .filter(|a| sub.tenant_scope.as_ref().is_none_or(|t| &a.tenant == t))
                        .map(|a| a.id);
                    return Err(Rejection::UidTaken {
                        uid: uid.clone(),
                        existing: visible,
                    }
                    .into());
                }
                uid.clone()
            }
            None => format!("{GENERATED_UID_PREFIX}{id}"),
        };
        if c.exclusive {
            let key = (c.tenant.clone(), c.resource.clone());
            let holder = match self.seen(scratch, overlay, |o| o.exclusive.get(&key)) {
                Some(h) => *h,
                None => self.store.exclusive_holder(&c.tenant, &c.resource)?,
            };
            if let Some(blocking) = holder {
                return Err(Rejection::ResourceBusy {
                    resource_type: c.resource.resource_type.clone(),
                    resource_id: c.resource.id.clone(),
                    blocking,
                }
                .into());
            }
            scratch.exclusive.insert(key, Some(id));
        }
        self.next_id += 1;
        scratch.uids.insert(uid.clone(), id);
        let new = NewAction::assign(c, id, uid);
        let action = fold::create(&new, recorded_at, position);
        Ok((Op::Create(new), action))
    }

    fn admit_event(
        &mut self,
        sub: &Submission,
        e: &RecordEvent,
        overlay: &Overlay,
        scratch: &Overlay,
        recorded_at: Micros,
        position: Position,
    ) -> Result<(Op, Action), LedgerError> {
        fold::validate_event(&e.body)?;
        let not_found = || LedgerError::from(Rejection::NotFound(e.action.to_string()));
        let id = match &e.action {
            ActionRef::Id(id) => *id,
            ActionRef::Uid(uid) => match self.seen(scratch, overlay, |o| o.uids.get(uid)) {
                Some(id) => *id,
                None => self.store.id_for_uid(uid)?.ok_or_else(not_found)?,
            },
        };
        let mut action = self
            .lookup_action(id, overlay, scratch)?
            .ok_or_else(not_found)?;
        if sub
            .tenant_scope
            .as_ref()
            .is_some_and(|t| &action.tenant != t)
        {
            return Err(not_found());
        }
        if let Some(expected) = e.expected_version {
            if expected != action.version {
                return Err(Rejection::VersionConflict {
                    action: id,
                    expected,
                    actual: action.version,
                }
                .into());
            }
        }
        fold::apply(&mut action, &e.body, recorded_at, position)?;
        let op = Op::Event {
            action: id,
            body: e.body.clone(),
        };
        Ok((op, action))
    }

    /// Writes the batch and fsyncs once, then hands it to the applier, which applies it and
    /// answers everyone (`deferred` idempotent repeats included). If the write fails, the
    /// batch and the repeats are refused and the writer is poisoned.
    fn commit(&mut self, accepted: Vec<Pending>, overlay: Overlay, deferred: Vec<Reply>) {
        let appended = if accepted.is_empty() {
            Ok(Vec::new())
        } else {
            self.write(&accepted)
        };
        let appended = match appended {
            Ok(a) => a,
            Err(e) => {
                // This batch's callers learn the log failed; later ones that it is poisoned.
                self.poisoned.get_or_insert(Poison::Log(e.clone()));
                let refuse = || Err(LedgerError::Log(LogError::Poisoned(Box::new(e.clone()))));
                for p in accepted {
                    let _ = p.reply.send(refuse());
                }
                for (reply, _) in deferred {
                    let _ = reply.send(refuse());
                }
                return;
            }
        };
        let mut answers = Vec::with_capacity(accepted.len() + deferred.len());
        let entries: Vec<CommittedEntry> = accepted
            .into_iter()
            .zip(&appended)
            .map(|(p, a)| {
                debug_assert!(p.actions.iter().all(|x| x.updated_position == a.position));
                answers.push((
                    p.reply,
                    Committed {
                        position: a.position,
                        recorded_at: p.entry.recorded_at,
                        actions: p.actions,
                        replayed: false,
                    },
                ));
                CommittedEntry {
                    position: a.position,
                    segment: a.segment,
                    offset: a.offset,
                    entry: p.entry,
                }
            })
            .collect();
        answers.extend(deferred);
        if let Some(last) = appended.last() {
            self.in_flight.push_back(InFlight {
                last_position: last.position,
                overlay,
            });
        }
        // The applier answers in log order; it only stops when the writer drops the sender.
        let _ = self.apply_tx.send(Job { entries, answers });
    }

    /// One write and one fdatasync for the batch; its failure poisons the ledger.
    fn write(
        &mut self,
        accepted: &[Pending],
    ) -> Result<Vec<crate::log::writer::Appended>, LogError> {
        let records: Vec<NewRecord<'_>> = accepted
            .iter()
            .map(|p| codec::entry_record(&p.payload))
            .collect();
        let started = std::time::Instant::now();
        let appended = self.log.append(&records);
        let micros = started.elapsed().as_micros() as u64;
        self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.stats.fsync_micros.fetch_add(micros, Ordering::Relaxed);
        self.stats
            .fsync_micros_max
            .fetch_max(micros, Ordering::Relaxed);
        let appended = appended?;
        self.stats
            .records
            .fetch_add(appended.len() as u64, Ordering::Relaxed);
        Ok(appended)
    }
}

/// Prefix of ledger-generated uids; clients may not use it.
pub const GENERATED_UID_PREFIX: &str = "al-";

enum Validated {
    /// A repeat of an idempotent submission; `in_batch` when the original is not yet durable.
    Replay {
        result: IdempotentResult,
        in_batch: bool,
    },
    New {
        entry: Entry,
        actions: Vec<Action>,
        scratch: Box<Overlay>,
    },
}

impl Overlay {
    fn merge(&mut self, other: Overlay) {
        self.actions.extend(other.actions);
        self.uids.extend(other.uids);
        self.exclusive.extend(other.exclusive);
        self.idempotent.extend(other.idempotent);
        self.accepted += 1;
    }
}
