//! The writer's side of cluster mode (docs/cluster.md): where a leader's batch becomes
//! durable, and how a follower's copied batches enter the same writer.
//!
//! In cluster mode the log of record is PostgreSQL. The writer thread validates a batch
//! exactly as in the embedded mode, then [`ClusterLink::append`] commits it in PostgreSQL,
//! fenced by this node's lease and the local head; only after COMMIT returned does the writer
//! append the same records to the local log (which must give them the same positions and
//! digests) and apply them. Nothing is acknowledged before both.
//!
//! Batches another leader committed reach the writer from the node's [`crate::cluster::Replica`]
//! as [`Work::Replicate`](super::writer::Work) jobs: the same thread appends them to the local log
//! and hands them to the same applier, so one thread decides every local append.

use super::LedgerError;
use crate::cluster::{ClusterError, ClusterLog, ClusterOptions, Head, Leadership};
use crate::limits::CLUSTER_APPEND_TIMEOUT_MS;
use crate::log::format::Digest;
use crate::log::writer::NewRecord;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// What a ledger in cluster mode needs: the cluster log's options, the node's leadership
/// (set once the node has caught up and competes for the lease; until then it does not
/// lead), and a handle of the runtime the PostgreSQL connection runs on (the writer is an
/// OS thread and blocks on it).
#[derive(Clone)]
pub struct ClusterLink {
    pub options: ClusterOptions,
    pub leadership: Arc<OnceLock<Leadership>>,
    pub runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for ClusterLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterLink")
            .field("node_id", &self.options.node_id)
            .finish_non_exhaustive()
    }
}

/// Why a batch was not committed in the cluster log.
#[derive(Clone, Debug)]
pub(super) enum AppendFailure {
    /// Nothing was appended: this node does not lead (no term, deposed, lease over), or its
    /// local log is behind the cluster log's head, or PostgreSQL could not be reached before
    /// anything was sent.
    NotAppended(String),
    /// The append was sent but its answer never came (connection lost, timeout): it may or
    /// may not have committed. The node's replica learns which from PostgreSQL.
    Unknown(String),
}

impl AppendFailure {
    /// The answer of every caller of the batch.
    pub(super) fn to_error(&self) -> LedgerError {
        match self {
            AppendFailure::NotAppended(reason) => LedgerError::NotCommitted {
                reason: reason.clone(),
            },
            AppendFailure::Unknown(reason) => LedgerError::OutcomeUnknown {
                reason: reason.clone(),
            },
        }
    }
}

/// The writer thread's connection to the cluster log.
pub(super) struct ClusterAppender {
    link: ClusterLink,
    log: Option<ClusterLog>,
}

impl ClusterAppender {
    pub(super) fn new(link: ClusterLink) -> ClusterAppender {
        ClusterAppender { link, log: None }
    }

    /// Stops this node's leadership for good (the writer is poisoned): no term is handed
    /// out any more, and the lease expires on its own.
    pub(super) fn step_down(&self) {
        if let Some(l) = self.link.leadership.get() {
            l.abort();
        }
    }

    /// Commits `records` as one batch after the local head `(position, digest)`, fenced by
    /// this node's current term. Returns the positions and digests PostgreSQL recorded.
    pub(super) fn append(
        &mut self,
        head: (u64, Digest),
        records: &[NewRecord<'_>],
    ) -> Result<Vec<crate::cluster::Appended>, AppendFailure> {
        let Some(term) = self.link.leadership.get().and_then(|l| l.term()) else {
            return Err(AppendFailure::NotAppended(
                "this node is not the leader".into(),
            ));
        };
        let runtime = self.link.runtime.clone();
        if self.log.as_ref().is_none_or(|l| l.is_closed()) {
            self.log = None;
            let log = runtime
                .block_on(ClusterLog::connect(self.link.options.clone()))
                .map_err(|e| AppendFailure::NotAppended(e.to_string()))?;
            self.log = Some(log);
        }
        let log = self.log.as_ref().expect("connected");
        let expected = Head {
            position: head.0,
            digest: head.1,
            epoch: term.lease.epoch,
        };
        let timeout = Duration::from_millis(CLUSTER_APPEND_TIMEOUT_MS);
        let result = runtime.block_on(async {
            tokio::time::timeout(timeout, log.append(&term.lease, &expected, records)).await
        });
        match result {
            Ok(Ok(appended)) => Ok(appended),
            Ok(Err(e)) if e.is_step_down() || matches!(e, ClusterError::Limit(_)) => {
                Err(AppendFailure::NotAppended(e.to_string()))
            }
            Ok(Err(e)) => {
                self.log = None;
                Err(AppendFailure::Unknown(e.to_string()))
            }
            Err(_) => {
                // Drop the connection: the statement may still commit, and the replica
                // finds out whether it did.
                self.log = None;
                Err(AppendFailure::Unknown(format!(
                    "no answer within CLUSTER_APPEND_TIMEOUT_MS ({CLUSTER_APPEND_TIMEOUT_MS} ms)"
                )))
            }
        }
    }
}
