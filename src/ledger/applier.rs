//! The applier thread: applies each written (durable) batch to the [`StateStore`] in log
//! order, publishes the committed position, and only then answers the batch's callers
//! (read-your-writes). When no batch comes for [`WRITE_BACK_IDLE`] it asks the store to write
//! out what `apply` left; a store failure is handed to the writer, which then refuses every
//! command.

use super::{Committed, CommittedEntry, LedgerError, StateStore, StoreError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{oneshot, watch};

/// How long the applier waits for the next batch before it asks the store to write out
/// what `apply` left (see [`StateStore::write_back`]).
pub const WRITE_BACK_IDLE: std::time::Duration = std::time::Duration::from_millis(5);

/// Written batches waiting for the applier; the writer waits (back-pressure) beyond it.
pub(super) const APPLY_QUEUE_BATCHES: usize = 2;

/// A caller and the answer it gets once its batch is applied.
pub(super) type Reply = (oneshot::Sender<Result<Committed, LedgerError>>, Committed);

/// A written batch on its way to the applier, with everyone to answer after it is applied.
pub(super) struct Job {
    pub(super) entries: Vec<CommittedEntry>,
    pub(super) answers: Vec<Reply>,
}

/// What the applier thread owns: it applies written batches to the store in log order and
/// answers their callers.
pub(super) struct Applier {
    pub(super) store: Arc<dyn StateStore>,
    pub(super) committed: watch::Sender<u64>,
    pub(super) applied: Arc<AtomicU64>,
    pub(super) failure: Arc<Mutex<Option<StoreError>>>,
}

impl Applier {
    pub(super) fn run(self, rx: std::sync::mpsc::Receiver<Job>) {
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
