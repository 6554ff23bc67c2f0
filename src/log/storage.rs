//! The storage seam: every byte the log reads or writes goes through [`Storage`].
//!
//! [`FsStorage`] is the real filesystem. [`SimStorage`] is a disk in memory for tests: it
//! tracks what has been synced, can fail the N-th operation (EIO or ENOSPC, with a partial
//! write first), can simulate a power loss that drops or tears everything not yet synced
//! (file contents *and* directory entries not yet made durable by a directory fsync), and can
//! flip bytes.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// A file open for appending.
pub trait LogFile: Send {
    /// Appends all of `buf` (or fails; a failure may leave a prefix written).
    fn append(&mut self, buf: &[u8]) -> io::Result<()>;
    /// fdatasync: returns once everything appended so far is durable.
    fn sync_data(&mut self) -> io::Result<()>;
}

/// The file operations the log needs, and nothing more.
pub trait Storage: Send + Sync + 'static {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names of the entries of `dir` (files only matter to the log).
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Reads the whole file into `buf`, replacing what it held and reusing its memory (the
    /// scan reads every segment into one buffer).
    fn read_into(&self, path: &Path, buf: &mut Vec<u8>) -> io::Result<()> {
        *buf = self.read(path)?;
        Ok(())
    }
    /// Reads up to `len` bytes at `offset` (fewer at the end of the file).
    fn read_at(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    fn file_len(&self, path: &Path) -> io::Result<u64>;
    /// Creates `path` empty (replacing any file there) and opens it for appending.
    fn create(&self, path: &Path) -> io::Result<Box<dyn LogFile>>;
    /// Opens an existing file for appending at its end.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn LogFile>>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Cuts `path` to `len` bytes and makes the new length durable.
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()>;
    /// fsync of a directory: makes created, renamed and removed entries durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The real filesystem.
#[derive(Debug, Default, Clone, Copy)]
pub struct FsStorage;

struct FsFile(File);

impl LogFile for FsFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
}

/// Creates `dir` and any missing parents with owner-only permissions (0700 on Unix):
/// everything under the data directory is the ledger's alone. Existing directories keep
/// their permissions.
pub fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

impl Storage for FsStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        create_private_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }
    fn read_into(&self, path: &Path, buf: &mut Vec<u8>) -> io::Result<()> {
        buf.clear();
        File::open(path)?.read_to_end(buf)?;
        Ok(())
    }
    fn read_at(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut f = File::open(path)?;
        f.seek(SeekFrom::Start(offset))?;
        let mut buf = Vec::with_capacity(len);
        f.take(len as u64).read_to_end(&mut buf)?;
        Ok(buf)
    }
    fn file_len(&self, path: &Path) -> io::Result<u64> {
        Ok(fs::metadata(path)?.len())
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(Box::new(FsFile(f)))
    }
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        let f = OpenOptions::new().append(true).open(path)?;
        Ok(Box::new(FsFile(f)))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let f = OpenOptions::new().write(true).open(path)?;
        f.set_len(len)?;
        f.sync_all()
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

// ---------------------------------------------------------------------------------------------
// Simulated disk

#[derive(Clone, Default)]
struct Inode {
    /// What a reader sees now.
    data: Vec<u8>,
    /// What survives a power loss: the contents as of the last successful sync.
    durable: Vec<u8>,
}

#[derive(Default)]
struct SimState {
    /// The namespace as the process sees it: path → inode.
    names: BTreeMap<PathBuf, u64>,
    /// The namespace as it would be found after a power loss.
    durable_names: BTreeMap<PathBuf, u64>,
    inodes: HashMap<u64, Inode>,
    next_inode: u64,
    /// Operations counted so far (see [`SimStorage::fail_op`]).
    ops: u64,
    /// Bytes `read_at` has returned (see [`SimStorage::bytes_read`]).
    bytes_read: u64,
    /// Fail the operation with this count, with this error kind.
    fail_at: Option<(u64, io::ErrorKind)>,
    /// After the first injected failure, fail every later operation too (a dead disk).
    fail_forever: bool,
    failed: bool,
    /// Power loss scheduled at this operation count, tearing with this seed.
    power_loss_at: Option<(u64, u64)>,
    /// The process that used the disk is gone: every operation fails until `restart`.
    crashed: bool,
    /// Bumped by `restart`; handles of an older generation are dead.
    generation: u64,
}

impl SimState {
    /// Counts one operation and decides whether it fails.
    fn op(&mut self) -> io::Result<()> {
        if self.crashed {
            return Err(io::Error::other(
                "simulated power loss: the process is gone",
            ));
        }
        self.ops += 1;
        if let Some((at, seed)) = self.power_loss_at {
            if self.ops >= at {
                let mut rng = SplitMix(seed);
                self.power_loss(&mut |_, unsynced| rng.tear(unsynced));
                self.crashed = true;
                return Err(io::Error::other("simulated power loss"));
            }
        }
        let fail = match self.fail_at {
            Some((n, _)) if self.ops == n => true,
            _ => self.failed && self.fail_forever,
        };
        if fail {
            self.failed = true;
            let kind = self.fail_at.map_or(io::ErrorKind::Other, |(_, k)| k);
            return Err(match kind {
                io::ErrorKind::StorageFull => io::Error::from_raw_os_error(28), // ENOSPC
                _ => io::Error::from_raw_os_error(5),                           // EIO
            });
        }
        Ok(())
    }

    fn power_loss(&mut self, tear: &mut dyn FnMut(&Path, usize) -> Tear) {
        let names = self.durable_names.clone();
        let mut inodes = HashMap::new();
        for (path, ino) in &names {
            let node = &self.inodes[ino];
            let mut data = node.durable.clone();
            if node.data.len() > data.len() && node.data.starts_with(&data) {
                let unsynced = &node.data[data.len()..];
                match tear(path, unsynced.len()) {
                    Tear::DropAll => {}
                    Tear::KeepPrefix(n) => {
                        data.extend_from_slice(&unsynced[..n.min(unsynced.len())])
                    }
                    Tear::Hole {
                        keep,
                        at,
                        len,
                        fill,
                    } => {
                        let keep = keep.min(unsynced.len());
                        let base = data.len();
                        data.extend_from_slice(&unsynced[..keep]);
                        let at = at.min(keep);
                        let end = (at + len).min(keep);
                        data[base + at..base + end].fill(fill);
                    }
                }
            }
            inodes.insert(
                *ino,
                Inode {
                    durable: data.clone(),
                    data,
                },
            );
        }
        self.names = names;
        self.inodes = inodes;
        self.fail_at = None;
        self.failed = false;
        self.power_loss_at = None;
    }

    fn inode(&self, path: &Path) -> io::Result<u64> {
        self.names
            .get(path)
            .copied()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{}", path.display())))
    }
}

/// An in-memory disk with explicit durability, for fault-injection tests. Cloning shares the
/// same disk.
#[derive(Clone, Default)]
pub struct SimStorage {
    state: Arc<Mutex<SimState>>,
}

/// How a simulated power loss treats bytes written but not yet synced.
#[derive(Clone, Copy, Debug)]
pub enum Tear {
    /// Lose all of them.
    DropAll,
    /// Keep a prefix of this many of them.
    KeepPrefix(usize),
    /// Keep a prefix of `keep` of them, but with `len` bytes at `at` (within the kept part)
    /// replaced by `fill` — sectors that never reached the platter.
    Hole {
        keep: usize,
        at: usize,
        len: usize,
        fill: u8,
    },
}

struct SimFile {
    state: Arc<Mutex<SimState>>,
    inode: u64,
    generation: u64,
}

impl SimFile {
    fn check_alive(&self, s: &SimState) -> io::Result<()> {
        if s.generation != self.generation {
            return Err(io::Error::other(
                "file handle from before a simulated power loss",
            ));
        }
        Ok(())
    }
}

fn lock(state: &Mutex<SimState>) -> MutexGuard<'_, SimState> {
    // A panicking test thread must not hide the disk from the others.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl LogFile for SimFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut s = lock(&self.state);
        self.check_alive(&s)?;
        if let Err(e) = s.op() {
            // A failed write may still have written a prefix.
            let partial = buf.len() / 2;
            if !s.crashed {
                if let Some(node) = s.inodes.get_mut(&self.inode) {
                    node.data.extend_from_slice(&buf[..partial]);
                }
            }
            return Err(e);
        }
        let node = s.inodes.get_mut(&self.inode).expect("open inode");
        node.data.extend_from_slice(buf);
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut s = lock(&self.state);
        self.check_alive(&s)?;
        s.op()?;
        let node = s.inodes.get_mut(&self.inode).expect("open inode");
        node.durable = node.data.clone();
        Ok(())
    }
}

impl SimStorage {
    pub fn new() -> SimStorage {
        SimStorage::default()
    }

    /// Fails the `n`-th operation from now (1 = the next one) with `kind`
    /// (`StorageFull` → ENOSPC, anything else → EIO). With `forever`, every operation after
    /// it fails too.
    pub fn fail_op(&self, n: u64, kind: io::ErrorKind, forever: bool) {
        let mut s = lock(&self.state);
        s.fail_at = Some((s.ops + n, kind));
        s.fail_forever = forever;
        s.failed = false;
    }

    /// Stops injecting failures (space is back, the disk works again).
    pub fn heal(&self) {
        let mut s = lock(&self.state);
        s.fail_at = None;
        s.fail_forever = false;
        s.failed = false;
    }

    /// Operations performed so far.
    pub fn op_count(&self) -> u64 {
        lock(&self.state).ops
    }

    /// Bytes returned by `read_at` so far (what a reader really read).
    pub fn bytes_read(&self) -> u64 {
        lock(&self.state).bytes_read
    }

    /// Simulated power loss: directory entries revert to their durable state and every file
    /// keeps its synced bytes plus whatever `tear` decides of the rest. Open file handles
    /// must not be used afterwards (their process is gone).
    pub fn power_loss(&self, mut tear: impl FnMut(&Path, usize) -> Tear) {
        lock(&self.state).power_loss(&mut tear);
    }

    /// Schedules a power loss at the `n`-th operation from now (that operation and every
    /// later one fails, as the process is gone), tearing unsynced bytes as `seed` decides.
    pub fn schedule_power_loss(&self, n: u64, seed: u64) {
        let mut s = lock(&self.state);
        s.power_loss_at = Some((s.ops + n, seed));
    }

    /// True once a scheduled power loss has happened (until [`Self::restart`]).
    pub fn crashed(&self) -> bool {
        lock(&self.state).crashed
    }

    /// Boots the machine again: operations work, and file handles from before are dead.
    pub fn restart(&self) {
        let mut s = lock(&self.state);
        s.crashed = false;
        s.generation += 1;
        s.power_loss_at = None;
    }

    /// XORs one byte of a file with `mask`, as bit rot or a malicious edit would.
    pub fn corrupt(&self, path: &Path, offset: usize, mask: u8) {
        let mut s = lock(&self.state);
        let ino = s.inode(path).expect("file to corrupt exists");
        let node = s.inodes.get_mut(&ino).expect("inode");
        node.data[offset] ^= mask;
        if offset < node.durable.len() {
            node.durable[offset] ^= mask;
        }
    }

    /// Replaces a file's contents (durably), as an editor with write access would.
    pub fn overwrite(&self, path: &Path, bytes: Vec<u8>) {
        let mut s = lock(&self.state);
        let ino = s.inode(path).expect("file exists");
        s.inodes.insert(
            ino,
            Inode {
                durable: bytes.clone(),
                data: bytes,
            },
        );
    }
}

impl Storage for SimStorage {
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        // Directories are implicit in the simulated namespace.
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = lock(&self.state);
        Ok(s.names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let s = lock(&self.state);
        let ino = s.inode(path)?;
        Ok(s.inodes[&ino].data.clone())
    }

    fn read_at(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut s = lock(&self.state);
        let ino = s.inode(path)?;
        let data = &s.inodes[&ino].data;
        let start = (offset as usize).min(data.len());
        let end = start.saturating_add(len).min(data.len());
        let out = data[start..end].to_vec();
        s.bytes_read += out.len() as u64;
        Ok(out)
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        let s = lock(&self.state);
        let ino = s.inode(path)?;
        Ok(s.inodes[&ino].data.len() as u64)
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        let mut s = lock(&self.state);
        s.op()?;
        let ino = s.next_inode;
        s.next_inode += 1;
        s.inodes.insert(ino, Inode::default());
        s.names.insert(path.to_path_buf(), ino);
        Ok(Box::new(SimFile {
            state: self.state.clone(),
            inode: ino,
            generation: s.generation,
        }))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        let mut s = lock(&self.state);
        s.op()?;
        let ino = s.inode(path)?;
        Ok(Box::new(SimFile {
            state: self.state.clone(),
            inode: ino,
            generation: s.generation,
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = lock(&self.state);
        s.op()?;
        let ino = s.inode(from)?;
        s.names.remove(from);
        s.names.insert(to.to_path_buf(), ino);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut s = lock(&self.state);
        s.op()?;
        s.inode(path)?;
        s.names.remove(path);
        Ok(())
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut s = lock(&self.state);
        s.op()?;
        let ino = s.inode(path)?;
        let node = s.inodes.get_mut(&ino).expect("inode");
        node.data.truncate(len as usize);
        node.durable = node.data.clone();
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = lock(&self.state);
        s.op()?;
        // Every entry directly in `dir` becomes durable as it is now.
        let visible: Vec<(PathBuf, u64)> = s
            .names
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        s.durable_names.retain(|p, _| p.parent() != Some(dir));
        s.durable_names.extend(visible);
        Ok(())
    }
}

/// A small deterministic generator for tear decisions (the library takes no `rand`).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    fn tear(&mut self, unsynced: usize) -> Tear {
        match self.next() % 4 {
            0 => Tear::DropAll,
            1 => Tear::KeepPrefix(unsynced),
            2 => Tear::KeepPrefix(self.below(unsynced + 1)),
            _ => {
                let keep = self.below(unsynced + 1);
                Tear::Hole {
                    keep,
                    at: self.below(keep + 1),
                    len: 1 + self.below(1024),
                    fill: if self.next() % 2 == 0 {
                        0
                    } else {
                        self.next() as u8
                    },
                }
            }
        }
    }
}
