//! The append-only log: segment files of checksummed, hash-chained records. The single
//! source of truth; everything else is derived from it.
//!
//! - [`format`]: the byte layout (header, record frame, chain digest).
//! - [`storage`]: the I/O seam ([`storage::FsStorage`], [`storage::SimStorage`]).
//! - [`scan`]: the one reader that checks everything; recovery and `verify` both use it.
//! - [`writer`]: [`writer::LogWriter`], which appends a batch with one write and one
//!   fdatasync, rotates segments, and poisons itself on the first I/O error.
//! - [`reader`]: random access to committed records for history, replay and catch-up.

pub mod format;
pub mod reader;
pub mod scan;
pub mod storage;
pub mod writer;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;

pub use scan::{ScanMode, ScanSummary, ScannedRecord, TornTail};
pub use storage::{FsStorage, SimStorage, Storage};
pub use writer::{Appended, LogConfig, LogWriter};

/// Errors of the log. Every variant names the file it is about; storage failures keep the
/// operation, the offset when there is one, and the OS error (its [`io::ErrorKind`] decides
/// [`LogError::DiskFull`] against [`LogError::Io`]). Cheap to clone, so one failure can
/// answer every caller of a batch.
#[derive(Clone, Debug, Error)]
pub enum LogError {
    /// Damage that is not a torn tail. The log refuses to open.
    #[error("corrupt log: {file}: offset {offset}: {reason}")]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    /// A file of the log could not grow: no space left (ENOSPC), a disk quota exceeded
    /// (EDQUOT) or a file size limit reached (EFBIG, e.g. `RLIMIT_FSIZE`). See [`disk_full`].
    #[error("{path}{}: {op} failed, the disk is full: {source}", at(*offset))]
    DiskFull {
        op: &'static str,
        path: PathBuf,
        offset: Option<u64>,
        source: Arc<io::Error>,
    },
    /// Any other I/O failure.
    #[error("{path}{}: {op} failed ({kind}): {source}", at(*offset))]
    Io {
        op: &'static str,
        path: PathBuf,
        offset: Option<u64>,
        kind: io::ErrorKind,
        source: Arc<io::Error>,
    },
    /// A write or fsync failed earlier (the cause, the first failure, is kept); nothing more
    /// is accepted until a restart recovers from what is really on disk.
    #[error("the log writer is poisoned; restart to recover (first failure: {0})")]
    Poisoned(Box<LogError>),
    #[error("record payload of {actual} bytes exceeds RECORD_PAYLOAD_BYTES_MAX ({max})")]
    RecordTooLarge { actual: usize, max: usize },
    /// A replica's local log stopped matching the log of record (cluster mode) at
    /// `position`; its writer is poisoned with this cause.
    #[error("the local log diverged from the log of record at position {position}")]
    Diverged { position: u64 },
}

fn at(offset: Option<u64>) -> String {
    offset
        .map(|o| format!(" at offset {o}"))
        .unwrap_or_default()
}

impl LogError {
    /// An I/O failure on `path`: [`LogError::DiskFull`] when [`disk_full`] says so,
    /// [`LogError::Io`] otherwise. Name the operation with [`Self::during`] and the offset
    /// with [`Self::at`].
    pub fn io(path: &Path, source: io::Error) -> LogError {
        let path = path.to_path_buf();
        if disk_full(&source) {
            LogError::DiskFull {
                op: "I/O",
                path,
                offset: None,
                source: Arc::new(source),
            }
        } else {
            LogError::Io {
                op: "I/O",
                path,
                offset: None,
                kind: source.kind(),
                source: Arc::new(source),
            }
        }
    }

    /// Names the operation that failed (`"write"`, `"fdatasync"`, ...).
    pub fn during(mut self, what: &'static str) -> LogError {
        if let LogError::DiskFull { op, .. } | LogError::Io { op, .. } = &mut self {
            *op = what;
        }
        self
    }

    /// Names the offset in the file where the failed operation started.
    pub fn at(mut self, at: u64) -> LogError {
        if let LogError::DiskFull { offset, .. } | LogError::Io { offset, .. } = &mut self {
            *offset = Some(at);
        }
        self
    }

    /// True for [`LogError::DiskFull`], and for a writer poisoned by one. Callers report
    /// it as 507.
    pub fn is_disk_full(&self) -> bool {
        match self {
            LogError::DiskFull { .. } => true,
            LogError::Poisoned(cause) => cause.is_disk_full(),
            _ => false,
        }
    }
}

/// Whether an I/O error means the disk is full: its kind is `StorageFull`, `QuotaExceeded`
/// or `FileTooLarge`, or its OS code is ENOSPC, EDQUOT or EFBIG. The projection's store
/// classifies its I/O errors with it too.
pub fn disk_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded | io::ErrorKind::FileTooLarge
    ) || matches!(e.raw_os_error(), Some(27 | 28 | 122))
}

/// Read-only integrity check of the log: the same scan recovery runs, changing nothing.
/// A torn tail is reported in the summary (recovery would cut it); any other damage is
/// `Err(LogError::Corrupt)`.
pub fn verify(
    storage: &dyn Storage,
    log_dir: &Path,
    visit: &mut dyn FnMut(&ScannedRecord<'_>) -> Result<(), String>,
) -> Result<ScanSummary, LogError> {
    scan::scan(
        storage,
        log_dir,
        ScanMode::ReadOnly,
        crate::limits::RECORD_PAYLOAD_BYTES_MAX,
        visit,
    )
}
