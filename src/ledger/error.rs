//! The ledger's errors: what a submission or a store read can fail with, as variants a
//! caller matches on (HTTP maps each to its status in `http::error`).

use crate::event::fold::Rejection;
use crate::log::LogError;
use std::io;
use std::sync::Arc;
use thiserror::Error;

/// Errors of a [`super::StateStore`]. Cheap to clone, so a failure the store keeps can be
/// handed to every later caller.
#[derive(Clone, Debug, Error)]
pub enum StoreError {
    /// A file of the store could not grow: no space left, a disk quota or a file size limit
    /// (see [`crate::log::disk_full`]).
    #[error("the disk is full: {source}")]
    DiskFull { source: Arc<io::Error> },
    /// Any other I/O failure of the store's files.
    #[error("I/O error ({kind}): {source}")]
    Io {
        kind: io::ErrorKind,
        source: Arc<io::Error>,
    },
    /// The storage engine failed other than by I/O (sled reports corruption or a bug).
    #[error("sled: {0}")]
    Engine(String),
    /// What the store holds does not decode, or disagrees with the log: rebuild it.
    #[error("damaged: {0}")]
    Damaged(String),
    /// A committed record does not apply to the state it follows: the log or the code is
    /// wrong.
    #[error("record {position} does not apply: {reason}")]
    BadRecord { position: u64, reason: String },
    /// The store failed earlier (the cause, its first failure, is kept) and refuses
    /// everything until a restart catches it up from the log.
    #[error("refused after an earlier failure: {0}")]
    Failed(Box<StoreError>),
    /// Anything else the store could not do (start a thread, ...).
    #[error("{0}")]
    Other(String),
}

impl StoreError {
    /// An I/O failure of the store: [`StoreError::DiskFull`] or [`StoreError::Io`].
    pub fn io(source: io::Error) -> StoreError {
        if crate::log::disk_full(&source) {
            StoreError::DiskFull {
                source: Arc::new(source),
            }
        } else {
            StoreError::Io {
                kind: source.kind(),
                source: Arc::new(source),
            }
        }
    }

    /// True for [`StoreError::DiskFull`], and for a store failed by one.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::DiskFull { .. } => true,
            StoreError::Failed(cause) => cause.is_disk_full(),
            _ => false,
        }
    }
}

/// Why the ledger refuses every write until a restart: its first failure.
#[derive(Clone, Debug, Error)]
pub enum Poison {
    /// Writing or syncing the log failed: what is on disk is known only after recovery.
    #[error("the log failed: {0}")]
    Log(LogError),
    /// The store could not apply (or write out) a committed batch: a restart catches it up
    /// from the log.
    #[error("projection apply failed: {0}")]
    Store(StoreError),
}

impl Poison {
    pub fn is_disk_full(&self) -> bool {
        match self {
            Poison::Log(e) => e.is_disk_full(),
            Poison::Store(e) => e.is_disk_full(),
        }
    }
}

#[derive(Debug, Error)]
pub enum LedgerError {
    /// The command was refused; nothing was written.
    #[error("{0}")]
    Rejected(#[from] Rejection),
    /// Command `index` (from 0) of a submission of several commands was refused; nothing
    /// was written. (A submission of one command reports its refusal as `Rejected`.)
    #[error("command {index}: {rejection}")]
    CommandRejected { index: usize, rejection: Rejection },
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("state store: {0}")]
    Store(#[from] StoreError),
    /// A storage failure stopped the writer; nothing is accepted until a restart.
    #[error("the ledger is poisoned and refuses writes until a restart: {0}")]
    Poisoned(Poison),
    /// A record in the log does not fold: the log or the code is wrong.
    #[error("log record {position} does not apply: {reason}")]
    BadRecord { position: u64, reason: String },
    /// The ledger is shutting down or its writer has stopped.
    #[error("the ledger is closed")]
    Closed,
    /// Cluster mode: nothing was written because this node cannot commit now (it does not
    /// lead, its replica is behind the cluster log, or PostgreSQL is unreachable). Retrying
    /// is safe.
    #[error("not committed: {reason}")]
    NotCommitted { reason: String },
    /// Cluster mode: the commit was sent to PostgreSQL but its answer was lost; the write may
    /// or may not be recorded. A retry with the same `Idempotency-Key` settles it.
    #[error("the outcome is unknown ({reason}); retry with the same Idempotency-Key to settle it")]
    OutcomeUnknown { reason: String },
}

impl LedgerError {
    /// Whether the write failed because a file of the ledger could not grow: the log's, or
    /// the store's (found while checking the command against it, or applying a batch).
    pub fn is_disk_full(&self) -> bool {
        match self {
            LedgerError::Log(e) => e.is_disk_full(),
            LedgerError::Store(e) => e.is_disk_full(),
            LedgerError::Poisoned(p) => p.is_disk_full(),
            _ => false,
        }
    }
}
