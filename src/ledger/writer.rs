//! The writer thread: takes waiting submissions up to the batch limits (group commit),
//! validates each against the store seen through the overlays of what earlier submissions
//! and not-yet-applied batches changed, writes the accepted ones as one log append with one
//! fdatasync, and hands the batch to the applier. A log failure poisons it. Also owns the
//! rule for generated uids ([`GENERATED_UID_PREFIX`]).

use super::applier::{Job, Reply};
use super::cluster::{AppendFailure, ClusterAppender};
use super::{
    Committed, CommittedEntry, IdempotentResult, LedgerConfig, LedgerError, LedgerStats, Poison,
    StateStore, StoreError,
};
use crate::cluster::replica::append_copied;
use crate::cluster::{ClusterRecord, ReplicaError, ReplicaHead};
use crate::event::codec;
use crate::event::fold::{self, Rejection};
use crate::event::*;
use crate::limits::*;
use crate::log::writer::NewRecord;
use crate::log::{LogError, LogWriter};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot, watch};

/// A submission waiting in the ledger's queue, with where its answer goes.
pub(super) struct Request {
    pub(super) submission: Submission,
    pub(super) reply: oneshot::Sender<Result<Committed, LedgerError>>,
}

/// What the writer thread takes from its queue.
pub(super) enum Work {
    Submit(Request),
    /// Cluster mode: whole batches the cluster log committed, to append to the local log
    /// (those it already holds are skipped) and apply. Answered with the local head once
    /// they are durable locally.
    Replicate {
        records: Vec<ClusterRecord>,
        reply: oneshot::Sender<Result<ReplicaHead, ReplicaError>>,
    },
}

/// What the writer thread owns.
pub(super) struct WriterState {
    pub(super) stats: Arc<LedgerStats>,
    pub(super) log: LogWriter,
    pub(super) store: Arc<dyn StateStore>,
    pub(super) next_id: ActionId,
    /// `recorded_at` never goes backwards along the log, so time and position order agree.
    pub(super) last_recorded_at: Micros,
    pub(super) config: LedgerConfig,
    /// Batches written (durable) but perhaps not yet applied to the store, oldest first.
    /// Dropped once the applier has applied them, never before: a lookup that misses every
    /// overlay finds the store already current.
    pub(super) in_flight: VecDeque<InFlight>,
    /// The last position the applier has applied.
    pub(super) applied: Arc<AtomicU64>,
    /// Set by the applier when the store failed; the writer then refuses everything.
    pub(super) store_failure: Arc<Mutex<Option<StoreError>>>,
    /// The first failure of the log or the store; from then on every submission is refused.
    pub(super) poisoned: Option<Poison>,
    pub(super) apply_tx: std::sync::mpsc::SyncSender<Job>,
    pub(super) applier: std::thread::JoinHandle<()>,
    /// Cluster mode: where a batch is committed before the local log (`None`: embedded).
    pub(super) cluster: Option<ClusterAppender>,
    /// The last position appended locally from the cluster log (not by this writer): before
    /// validating, the writer waits until the applier has applied up to it, since no overlay
    /// holds what those batches changed.
    pub(super) replicated_upto: u64,
    /// The local log's head (position and digest), published after every local append.
    pub(super) head: watch::Sender<ReplicaHead>,
}

pub(super) struct InFlight {
    last_position: Position,
    overlay: Overlay,
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
    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Work>) {
        let mut held = None;
        while let Some(first) = held.take().or_else(|| rx.blocking_recv()) {
            let first = match first {
                Work::Submit(req) => req,
                Work::Replicate { records, reply } => {
                    let _ = reply.send(self.replicate(records));
                    continue;
                }
            };
            self.catch_up_with_applier();
            let first_id = self.next_id;
            let mut overlay = Overlay::default();
            let mut accepted: Vec<Pending> = Vec::new();
            let mut deferred = Vec::new();
            let mut bytes = 0usize;
            let mut next = Some(first);
            // Group commit: take everything already waiting, up to the batch limits (and up
            // to replicated batches, which wait for this batch).
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
                match rx.try_recv() {
                    Ok(Work::Submit(req)) => next = Some(req),
                    Ok(replicate) => held = Some(replicate),
                    Err(_) => {}
                }
            }
            self.commit(accepted, overlay, deferred, first_id);
        }
        tracing::debug!("ledger writer stopped: queue closed and drained");
        drop(self.apply_tx);
        if self.applier.join().is_err() {
            tracing::error!("the ledger applier thread panicked");
        }
    }

    /// Drops the overlays of batches the applier has applied, and takes over a store failure
    /// it reported. Called before each batch. After replicated batches (which have no
    /// overlay) it first waits until the applier has applied them.
    fn catch_up_with_applier(&mut self) {
        while self.applied.load(Ordering::Acquire) < self.replicated_upto
            && self.poisoned.is_none()
            && self.store.failure().is_none()
            && self
                .store_failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_none()
        {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
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
            self.poison(Poison::Store(e));
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
                // A store that cannot be read (sled keeps the first failure of its background
                // flush, a full disk say, and answers some later calls with it) cannot validate
                // writes until a restart catches it up from the log: the writer is poisoned, so
                // every later write is refused alike instead of the ones that happen to miss
                // the failed read, and a cluster leader stops leading so another node takes the
                // cluster's writes.
                if let LedgerError::Store(cause) = &e {
                    self.poison(Poison::Store(cause.clone()));
                }
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
    fn commit(
        &mut self,
        accepted: Vec<Pending>,
        overlay: Overlay,
        deferred: Vec<Reply>,
        first_id: ActionId,
    ) {
        let records: Vec<NewRecord<'_>> = accepted
            .iter()
            .map(|p| codec::entry_record(&p.payload))
            .collect();
        let appended = if records.is_empty() {
            Ok(Vec::new())
        } else {
            match self.commit_in_cluster(&records) {
                Ok(committed) => self.write(&records, &committed),
                Err(failure) => {
                    // Nothing of this batch is in the local log: undo its ids, refuse its
                    // callers (and the repeats waiting on it) with what is known.
                    self.next_id = first_id;
                    for p in accepted {
                        let _ = p.reply.send(Err(failure.to_error()));
                    }
                    for (reply, _) in deferred {
                        let _ = reply.send(Err(failure.to_error()));
                    }
                    return;
                }
            }
        };
        let appended = match appended {
            Ok(a) => a,
            Err(e) => {
                // This batch's callers learn the log failed; later ones that it is poisoned.
                self.poison(Poison::Log(e.clone()));
                // In cluster mode the batch is already committed in the log of record: "the
                // disk is full, nothing was recorded" would be false, and a retry without
                // the key would write it twice. The other nodes have it; the key settles it.
                let in_cluster = self.cluster.is_some();
                let refuse = || {
                    Err(if in_cluster {
                        LedgerError::OutcomeUnknown {
                            reason: format!(
                                "the batch was committed in the cluster log, but this node's local log failed ({e}); this node stops leading and another takes over"
                            ),
                        }
                    } else {
                        LedgerError::Log(LogError::Poisoned(Box::new(e.clone())))
                    })
                };
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
        self.publish_head();
        // The applier answers in log order; it only stops when the writer drops the sender.
        let _ = self.apply_tx.send(Job { entries, answers });
    }

    /// Keeps the first failure; from now on every submission is refused. In cluster mode the
    /// node also stops leading at once (its lease then expires and another node takes
    /// over): a leader that cannot write its local log must not hold the cluster's writes.
    fn poison(&mut self, cause: Poison) {
        self.stats.poisoned.store(true, Ordering::Relaxed);
        if self.poisoned.is_none() {
            if let Some(cluster) = &self.cluster {
                tracing::error!(%cause, "the writer is poisoned: this node stops leading");
                cluster.step_down();
            }
        }
        self.poisoned.get_or_insert(cause);
    }

    /// Runs one local append (one write and one fdatasync) and counts it in the stats.
    fn timed_append<T, E>(
        &mut self,
        append: impl FnOnce(&mut LogWriter) -> Result<T, E>,
    ) -> Result<T, E> {
        let started = std::time::Instant::now();
        let appended = append(&mut self.log);
        let micros = started.elapsed().as_micros() as u64;
        self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.stats.fsync_micros.fetch_add(micros, Ordering::Relaxed);
        self.stats
            .fsync_micros_max
            .fetch_max(micros, Ordering::Relaxed);
        appended
    }

    fn publish_head(&self) {
        self.head.send_replace(ReplicaHead {
            position: self.log.next_position() - 1,
            digest: self.log.last_digest(),
        });
    }

    /// Cluster mode: commits the batch in the cluster log first and returns where it landed
    /// there (nothing to do embedded: empty). [`Self::write`] checks that the local append
    /// gives each record the same position and digest.
    fn commit_in_cluster(
        &mut self,
        records: &[NewRecord<'_>],
    ) -> Result<Vec<crate::cluster::Appended>, AppendFailure> {
        let Some(cluster) = self.cluster.as_mut() else {
            return Ok(Vec::new());
        };
        let head = (self.log.next_position() - 1, self.log.last_digest());
        let started = std::time::Instant::now();
        let committed = cluster.append(head, records);
        let micros = started.elapsed().as_micros() as u64;
        self.stats.cluster_commits.fetch_add(1, Ordering::Relaxed);
        self.stats
            .cluster_commit_micros
            .fetch_add(micros, Ordering::Relaxed);
        committed
    }

    /// Cluster mode: appends batches the cluster log committed to the local log (skipping
    /// what it already holds), checks they got the cluster log's positions and digests, and
    /// hands them to the applier.
    fn replicate(&mut self, records: Vec<ClusterRecord>) -> Result<ReplicaHead, ReplicaError> {
        if let Some(cause) = &self.poisoned {
            return Err(ReplicaError::Poisoned(cause.to_string()));
        }
        let local = self.log.next_position() - 1;
        let records: Vec<ClusterRecord> =
            records.into_iter().filter(|r| r.position > local).collect();
        let Some(first) = records.first() else {
            return Ok(*self.head.borrow());
        };
        if first.position != local + 1 || first.batch_offset != 0 {
            return Err(ReplicaError::Diverged {
                position: first.position,
                reason: format!(
                    "the local log ends at position {local}; a batch must start right after it"
                ),
            });
        }
        let appended = match self.timed_append(|log| append_copied(log, &records)) {
            Ok(a) => a,
            Err(e) => {
                match &e {
                    ReplicaError::Log(cause) => self.poison(Poison::Log(cause.clone())),
                    ReplicaError::Diverged { position, .. } => {
                        self.poison(Poison::Log(LogError::Diverged {
                            position: *position,
                        }))
                    }
                    _ => {}
                }
                return Err(e);
            }
        };
        let mut entries = Vec::with_capacity(records.len());
        for (r, a) in records.iter().zip(&appended) {
            let entry = match codec::decode_entry(r.kind, r.schema, &r.payload) {
                Ok(entry) => entry,
                Err(e) => {
                    let error = StoreError::BadRecord {
                        position: r.position,
                        reason: e.to_string(),
                    };
                    self.poison(Poison::Store(error.clone()));
                    return Err(ReplicaError::Poisoned(error.to_string()));
                }
            };
            // Ids and time continue after what other leaders wrote.
            for op in &entry.ops {
                self.next_id = self.next_id.max(op.action_id() + 1);
            }
            self.last_recorded_at = self.last_recorded_at.max(entry.recorded_at);
            entries.push(CommittedEntry {
                position: a.position,
                segment: a.segment,
                offset: a.offset,
                entry,
            });
        }
        self.stats
            .records_replicated
            .fetch_add(entries.len() as u64, Ordering::Relaxed);
        self.replicated_upto = self.log.next_position() - 1;
        self.publish_head();
        let _ = self.apply_tx.send(Job {
            entries,
            answers: Vec::new(),
        });
        Ok(*self.head.borrow())
    }

    /// One write and one fdatasync for the batch; its failure poisons the ledger. In
    /// cluster mode each record must land where the cluster log put it (`committed`).
    fn write(
        &mut self,
        records: &[NewRecord<'_>],
        committed: &[crate::cluster::Appended],
    ) -> Result<Vec<crate::log::writer::Appended>, LogError> {
        let appended = self.timed_append(|log| log.append(records))?;
        if let Some((a, _)) = appended
            .iter()
            .zip(committed)
            .find(|(a, c)| (a.position, a.digest) != (c.position, c.digest))
        {
            self.log.poison_diverged(a.position);
            return Err(LogError::Diverged {
                position: a.position,
            });
        }
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
