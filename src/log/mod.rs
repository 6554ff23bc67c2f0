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
use thiserror::Error;

pub use scan::{ScanMode, ScanSummary, ScannedRecord, TornTail};
pub use storage::{FsStorage, SimStorage, Storage};
pub use writer::{Appended, LogConfig, LogWriter};

/// Errors of the log. Every variant names the file it is about.
#[derive(Debug, Error)]
pub enum LogError {
    /// Damage that is not a torn tail. The log refuses to open.
    #[error("corrupt log: {file}: offset {offset}: {reason}")]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A write or fsync failed earlier; nothing more is accepted until a restart recovers
    /// from what is really on disk.
    #[error("the log writer is poisoned after an I/O failure ({0}); restart to recover")]
    Poisoned(String),
    #[error("record payload of {actual} bytes exceeds RECORD_PAYLOAD_BYTES_MAX ({max})")]
    RecordTooLarge { actual: usize, max: usize },
}

impl LogError {
    pub fn io(path: &Path, source: io::Error) -> LogError {
        LogError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// True when the disk is full: no space left (ENOSPC), a disk quota exceeded (EDQUOT) or
    /// a file size limit reached (EFBIG, e.g. `RLIMIT_FSIZE`). Callers report it as 507.
    /// A poisoned writer keeps the first failure's text, so that is matched too (the
    /// projection's store reports the same errors through it).
    pub fn is_disk_full(&self) -> bool {
        match self {
            LogError::Io { source, .. } => is_disk_full_io(source),
            LogError::Poisoned(msg) => names_disk_full(msg),
            _ => false,
        }
    }
}

/// Whether an error message (an I/O error passed on as text) says the disk is full.
pub fn names_disk_full(msg: &str) -> bool {
    [
        "No space left",
        "Disk quota exceeded",
        "File too large",
        "StorageFull",
        "QuotaExceeded",
        "FileTooLarge",
    ]
    .iter()
    .any(|m| msg.contains(m))
}

fn is_disk_full_io(e: &io::Error) -> bool {
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
