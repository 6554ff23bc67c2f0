//! The data directory's lock: one process at a time changes a data directory. A running
//! server holds it for its whole life; the offline commands that change what a server serves
//! from (`import`, `token create`, `token revoke`) hold it while they write. It is an
//! exclusive `flock` on `DATA_DIR/lock` (owner-only), released when the holder exits or dies;
//! the file holds the holder's pid, for the message of whoever finds it taken.

use std::fs::File;
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

/// The lock file in the data directory.
pub const LOCK_FILE: &str = "lock";

/// Why the data directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it: a running server (or an offline command while it writes).
    #[error("data directory {} is in use by a running server{}", dir.display(), pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    InUse { dir: PathBuf, pid: Option<u32> },
    #[error("cannot lock {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The lock on a data directory; dropping it releases the directory.
#[derive(Debug)]
pub struct DataDirLock(#[allow(dead_code)] File);

/// Locks `data_dir` (which must exist) for this process, or says who holds it.
pub fn lock(data_dir: &Path) -> Result<DataDirLock, LockError> {
    use fs2::FileExt as _;
    let path = data_dir.join(LOCK_FILE);
    let io = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        // Owner-only, like the rest of the data directory.
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut file = opts.open(&path).map_err(io)?;
    if let Err(e) = file.try_lock_exclusive() {
        if e.kind() != fs2::lock_contended_error().kind() {
            return Err(io(e));
        }
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        return Err(LockError::InUse {
            dir: data_dir.to_path_buf(),
            pid: holder.trim().parse().ok(),
        });
    }
    // Who holds it, for the message above (best effort: the lock is what counts).
    let _ = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()));
    Ok(DataDirLock(file))
}
