//! The value file: packs sealed out of sled's tree.
//!
//! sled 0.34 keeps every value inside its tree's pages: each insert copies a whole leaf,
//! its cache holds values and keys alike, and at 10M actions most reads of a finished
//! action miss that cache and read and decode a whole leaf of packs. A pack whose id range
//! is old enough rarely changes again (its actions have mostly finished, and nothing is
//! accepted after a terminal event), so it is **sealed**: its value (the very bytes sled
//! held, see `pack`) is appended to this file, and sled keeps only a 13-byte pointer under
//! the pack's key. A read follows the pointer with one positional read, through the
//! kernel's page cache rather than the process's memory.
//!
//! **When.** After each fold, packs whose every id lies [`SEAL_DISTANCE_IDS`] or more
//! below the newest action are sealed, in steps of [`SEAL_STEP_PACKS`] packs (one append
//! and one `fdatasync` per step, ~1 MB). `META_SEALED` (in the same sled batch as the
//! pointers) records how far sealing has gone and the file's length then. A finish that
//! lands in a sealed pack later (an action running for longer than the distance) rewrites
//! the pack in sled as before, unsealed for good: where a pack's bytes are stored changes,
//! never what they are, so "finished ⇔ in its pack" and every reader are unchanged.
//!
//! **Durability.** The file is synced before the batch that points into it reaches the
//! write-back, so every pointer sled can ever hold points at synced bytes. A failed sync
//! poisons the file (never retried): the projection fails and a restart catches up from the
//! log. Bytes past the last pointer (a crash between the sync and sled's batch, or a pack
//! unsealed since) are never read; a rebuild, which starts a new file, drops them.
//!
//! **Layout** (integers big-endian):
//!
//! ```text
//! header   "ALVALUES" ‖ version u32 (1) ‖ 4 zero bytes                       16 bytes
//! record   pack u64 ‖ length u32 ‖ crc32 u32 ‖ value (length bytes)    16 + length
//! pointer  02 ‖ record offset u64 ‖ value length u32          (in sled, 13 bytes)
//! ```
//!
//! The crc32 (IEEE, crc32fast) covers the pack number, the length and the value: a read
//! checks the record's pack and length against the pointer and its checksum, and damage is
//! reported naming the file and the offset.

use super::apply::{Unwritten, Write};
use super::keys;
use crate::event::ActionId;
use crate::ledger::StoreError;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The file's name in the projection's directory.
pub const VALUES_FILE: &str = "values";
/// How far below the newest action id a pack's last id must be before it is sealed. A
/// finish later than that (in ids created since) unseals its pack.
pub const SEAL_DISTANCE_IDS: u64 = 4096;
/// Packs sealed at once: one append and one sync per this many packs (4096 ids).
pub const SEAL_STEP_PACKS: u64 = 256;
/// The first byte of a pointer: a pack codec no pack value uses (see `pack`).
pub const CODEC_SEALED: u8 = 2;
pub const POINTER_BYTES: usize = 13;
const MAGIC: &[u8; 8] = b"ALVALUES";
const VERSION: u32 = 1;
const HEADER_BYTES: u64 = 16;
const RECORD_HEADER_BYTES: usize = 16;
/// Most bytes one record's value may state: a damaged length must not become a huge read.
const RECORD_VALUE_BYTES_MAX: u32 = 64 << 20;

/// The open value file of a projection.
pub struct ValueFile {
    path: PathBuf,
    file: File,
    /// Bytes written and synced: every pointer lies below it.
    end: AtomicU64,
    /// Packs below this one have been sealed (the applier's, and the rebuild's, alone).
    sealed_below: AtomicU64,
    /// A sync failed: the file takes no more appends (never retried).
    failed: AtomicBool,
}

/// `META_SEALED`'s value: packs sealed below `below`, the file `end` bytes long then.
pub(crate) fn sealed_meta(below: u64, end: u64) -> Vec<u8> {
    [below.to_be_bytes(), end.to_be_bytes()].concat()
}

/// `(below, end)` of a `META_SEALED` value.
pub(crate) fn read_sealed_meta(v: &[u8]) -> Option<(u64, u64)> {
    match v.len() {
        16 => Some((keys::read_u64(&v[..8])?, keys::read_u64(&v[8..])?)),
        _ => None,
    }
}

/// Whether a pack key's value is a pointer into the value file.
pub fn is_pointer(value: &[u8]) -> bool {
    value.len() == POINTER_BYTES && value[0] == CODEC_SEALED
}

fn pointer(offset: u64, len: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(POINTER_BYTES);
    p.push(CODEC_SEALED);
    p.extend_from_slice(&offset.to_be_bytes());
    p.extend_from_slice(&len.to_be_bytes());
    p
}

fn checksum(pack: u64, len: u32, value: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&pack.to_be_bytes());
    h.update(&len.to_be_bytes());
    h.update(value);
    h.finalize()
}

impl ValueFile {
    /// Opens the value file in `dir`, creating it (synced, with its directory entry) when
    /// absent. `sealed` is `META_SEALED` as sled holds it: a file shorter than the length
    /// recorded there has lost bytes sled points at, which is an `Err` naming both.
    pub fn open(dir: &Path, sealed: Option<(u64, u64)>) -> Result<ValueFile, String> {
        let path = dir.join(VALUES_FILE);
        let io = |what: &str, e: std::io::Error| format!("{}: {what}: {e}", path.display());
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io("cannot open", e))?;
        let mut len = file.metadata().map_err(|e| io("cannot stat", e))?.len();
        if len == 0 {
            let mut header = MAGIC.to_vec();
            header.extend_from_slice(&VERSION.to_be_bytes());
            header.extend_from_slice(&[0; 4]);
            file.write_all_at(&header, 0)
                .map_err(|e| io("cannot write", e))?;
            file.sync_data().map_err(|e| io("cannot sync", e))?;
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io("cannot sync its directory", e))?;
            len = HEADER_BYTES;
        } else {
            let mut header = [0u8; HEADER_BYTES as usize];
            file.read_exact_at(&mut header, 0)
                .map_err(|e| io("cannot read its header", e))?;
            if &header[..8] != MAGIC || header[8..12] != VERSION.to_be_bytes() {
                return Err(format!(
                    "{}: not a value file of version {VERSION}",
                    path.display()
                ));
            }
        }
        let (below, end) = sealed.unwrap_or((0, HEADER_BYTES));
        if len < end {
            return Err(format!(
                "{} is {len} bytes, but the projection points into it up to {end}",
                path.display()
            ));
        }
        Ok(ValueFile {
            path,
            file,
            end: AtomicU64::new(len),
            sealed_below: AtomicU64::new(below),
            failed: AtomicBool::new(false),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Packs below this one have been sealed.
    pub fn sealed_below(&self) -> u64 {
        self.sealed_below.load(Ordering::Acquire)
    }

    /// The file's length (synced bytes).
    pub fn bytes(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }

    /// The bytes of pack `pack` that `value` (its key's value in sled) stands for: `value`
    /// itself, or what its pointer points at.
    pub fn resolve<'v>(
        &self,
        pack: u64,
        value: &'v [u8],
    ) -> Result<std::borrow::Cow<'v, [u8]>, StoreError> {
        if !is_pointer(value) {
            return Ok(std::borrow::Cow::Borrowed(value));
        }
        self.read(pack, value)
            .map(std::borrow::Cow::Owned)
            .map_err(StoreError::Damaged)
    }

    /// Reads the record `pointer` points at, checked; `Err` names the file and offset.
    fn read(&self, pack: u64, pointer: &[u8]) -> Result<Vec<u8>, String> {
        let offset = keys::read_u64(&pointer[1..9]).unwrap_or(0);
        let len = u32::from_be_bytes(pointer[9..13].try_into().expect("4 bytes"));
        let at = |why: String| {
            format!(
                "{} at offset {offset}: pack {pack}: {why}",
                self.path.display()
            )
        };
        let end = self.bytes();
        let record_end = offset
            .checked_add(RECORD_HEADER_BYTES as u64 + u64::from(len))
            .filter(|&e| offset >= HEADER_BYTES && e <= end && len <= RECORD_VALUE_BYTES_MAX)
            .ok_or_else(|| at(format!("a pointer of {len} bytes past the file's {end}")))?;
        let mut record = vec![0u8; (record_end - offset) as usize];
        self.file
            .read_exact_at(&mut record, offset)
            .map_err(|e| at(format!("cannot read: {e}")))?;
        let (header, value) = record.split_at(RECORD_HEADER_BYTES);
        let stated_pack = keys::read_u64(&header[..8]).unwrap_or(u64::MAX);
        let stated_len = u32::from_be_bytes(header[8..12].try_into().expect("4 bytes"));
        let crc = u32::from_be_bytes(header[12..16].try_into().expect("4 bytes"));
        if stated_pack != pack || stated_len != len {
            return Err(at(format!(
                "the record holds pack {stated_pack} of {stated_len} bytes"
            )));
        }
        if checksum(pack, len, value) != crc {
            return Err(at("checksum mismatch".into()));
        }
        record.drain(..RECORD_HEADER_BYTES);
        Ok(record)
    }

    /// Appends `packs` (pack number, value) and syncs; their pointers, in order.
    fn append(&self, packs: &[(u64, Vec<u8>)]) -> Result<Vec<Vec<u8>>, StoreError> {
        if self.failed.load(Ordering::Acquire) {
            return Err(StoreError::Other(format!(
                "{}: an earlier sync failed",
                self.path.display()
            )));
        }
        let start = self.bytes();
        let mut buf = Vec::with_capacity(
            packs
                .iter()
                .map(|(_, v)| RECORD_HEADER_BYTES + v.len())
                .sum(),
        );
        let mut pointers = Vec::with_capacity(packs.len());
        for (pack, value) in packs {
            let len = u32::try_from(value.len())
                .ok()
                .filter(|&l| l <= RECORD_VALUE_BYTES_MAX)
                .ok_or_else(|| {
                    StoreError::Other(format!("pack {pack} of {} bytes", value.len()))
                })?;
            pointers.push(pointer(start + buf.len() as u64, len));
            buf.extend_from_slice(&pack.to_be_bytes());
            buf.extend_from_slice(&len.to_be_bytes());
            buf.extend_from_slice(&checksum(*pack, len, value).to_be_bytes());
            buf.extend_from_slice(value);
        }
        // Of the same kind, so a full disk stays `DiskFull` (507), naming the file.
        let io = |what: &str, e: std::io::Error| {
            let message = format!("{}: {what}: {e}", self.path.display());
            StoreError::io(std::io::Error::new(e.kind(), message))
        };
        self.file
            .write_all_at(&buf, start)
            .map_err(|e| io("cannot append", e))?;
        if let Err(e) = self.file.sync_data() {
            // What the kernel did with the unsynced pages is unknown: no more appends.
            self.failed.store(true, Ordering::Release);
            return Err(io("cannot sync", e));
        }
        self.end.store(start + buf.len() as u64, Ordering::Release);
        Ok(pointers)
    }

    /// Seals what has become old enough after a fold whose newest action is `last_id`
    /// (see the module docs): the packs in `[sealed_below, horizon)` whose value is held
    /// in sled (`tree`, under `unwritten`, under `writes`) go to the file, and `writes`
    /// gets their pointers and `META_SEALED` instead. `(distance, step)` are
    /// [`SEAL_DISTANCE_IDS`] and [`SEAL_STEP_PACKS`] but for tests.
    pub(crate) fn seal(
        &self,
        tree: &sled::Tree,
        unwritten: &Unwritten,
        writes: &mut Vec<Write>,
        last_id: ActionId,
        (distance, step): (u64, u64),
    ) -> Result<(), StoreError> {
        let from = self.sealed_below.load(Ordering::Acquire);
        let horizon = last_id.saturating_sub(distance) / keys::PACK_IDS;
        let horizon = horizon - horizon % step.max(1);
        if horizon <= from {
            return Ok(());
        }
        let (lo, hi) = (
            keys::pack_key(from).to_vec(),
            keys::pack_key(horizon).to_vec(),
        );
        let pack_of = |k: &[u8]| keys::read_u64(&k[1..]).unwrap_or(u64::MAX);
        // Each pack's value as applied, and where it is in `writes` when it is there.
        let mut current: BTreeMap<u64, (Option<usize>, Option<Vec<u8>>)> = BTreeMap::new();
        for kv in tree.range(lo.clone()..hi.clone()) {
            let (k, v) = kv.map_err(super::store_err)?;
            current.insert(pack_of(&k), (None, Some(v.to_vec())));
        }
        for (k, v) in unwritten.range(lo.clone()..hi.clone()) {
            current.insert(pack_of(k), (None, v.clone()));
        }
        for (i, (k, v)) in writes.iter().enumerate() {
            if k.len() == 9 && k[0] == keys::P_PACK && k[..] >= lo[..] && k[..] < hi[..] {
                current.insert(pack_of(k), (Some(i), v.clone()));
            }
        }
        let mut sealing = Vec::new();
        let mut at = Vec::new();
        for (pack, (i, v)) in current {
            if let Some(v) = v.filter(|v| !v.is_empty() && !is_pointer(v)) {
                sealing.push((pack, v));
                at.push(i);
            }
        }
        let pointers = self.append(&sealing)?;
        for (((pack, _), i), p) in sealing.into_iter().zip(at).zip(pointers) {
            match i {
                Some(i) => writes[i].1 = Some(p),
                None => writes.push((keys::pack_key(pack).to_vec(), Some(p))),
            }
        }
        writes.push((
            keys::META_SEALED.to_vec(),
            Some(sealed_meta(horizon, self.bytes())),
        ));
        self.sealed_below.store(horizon, Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_and_damage_names_the_file_and_offset() {
        let tmp = tempfile::tempdir().unwrap();
        let f = ValueFile::open(tmp.path(), None).unwrap();
        let pointers = f
            .append(&[(7, b"seven".to_vec()), (9, vec![0xab; 1000])])
            .unwrap();
        assert!(pointers.iter().all(|p| is_pointer(p)));
        assert_eq!(&f.resolve(7, &pointers[0]).unwrap()[..], b"seven");
        assert_eq!(f.resolve(9, &pointers[1]).unwrap().len(), 1000);
        // A value that is not a pointer is itself.
        assert_eq!(&f.resolve(3, b"\x01abc").unwrap()[..], b"\x01abc");
        // The wrong pack, a pointer past the end, a flipped byte: each refused by name.
        let e = f.read(8, &pointers[0]).unwrap_err();
        assert!(e.contains("holds pack 7") && e.contains("offset 16"), "{e}");
        let past = pointer(f.bytes(), 4);
        assert!(f.read(7, &past).unwrap_err().contains("past the file"));
        let len = f.bytes();
        drop(f);
        let path = tmp.path().join(VALUES_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[16 + 16 + 2] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let f = ValueFile::open(tmp.path(), Some((0, len))).unwrap();
        let e = f.read(7, &pointers[0]).unwrap_err();
        assert!(
            e.contains("checksum") && e.contains(&path.display().to_string()),
            "{e}"
        );
        assert_eq!(&f.resolve(9, &pointers[1]).unwrap()[..], &[0xab; 1000][..]);
        // A file shorter than the projection says it was is refused at open.
        drop(f);
        let e = ValueFile::open(tmp.path(), Some((0, len + 1)))
            .err()
            .unwrap();
        assert!(e.contains("points into it"), "{e}");
        std::fs::write(&path, b"not a value file").unwrap();
        assert!(ValueFile::open(tmp.path(), None).is_err());
    }

    #[test]
    fn sealing_moves_packs_below_the_horizon_in_steps() {
        let tmp = tempfile::tempdir().unwrap();
        let db = sled::Config::new().temporary(true).open().unwrap();
        let f = ValueFile::open(tmp.path(), None).unwrap();
        // Pack 1 in sled, pack 2 in the write-back, pack 3 in this fold's writes, pack
        // 300 past the horizon; pack 4 already a pointer.
        db.insert(keys::pack_key(1), b"\x00one".to_vec()).unwrap();
        let old = f.append(&[(4, b"\x00four".to_vec())]).unwrap().remove(0);
        db.insert(keys::pack_key(4), old.clone()).unwrap();
        let mut unwritten = Unwritten::new();
        unwritten.insert(keys::pack_key(2).to_vec(), Some(b"\x00two".to_vec()));
        let mut writes = vec![
            (keys::pack_key(3).to_vec(), Some(b"\x00three".to_vec())),
            (keys::pack_key(300).to_vec(), Some(b"\x00late".to_vec())),
        ];
        let seal = |writes: &mut Vec<Write>, last_id: u64| {
            f.seal(&db, &unwritten, writes, last_id, (100, SEAL_STEP_PACKS))
                .unwrap()
        };
        // Not yet a whole step below the horizon: nothing moves.
        let last = SEAL_STEP_PACKS * keys::PACK_IDS + 100 - 1;
        seal(&mut writes, last);
        assert_eq!(writes.len(), 2);
        seal(&mut writes, last + 1);
        assert!(is_pointer(writes[0].1.as_deref().unwrap()));
        assert_eq!(writes[1].1.as_deref(), Some(&b"\x00late"[..]));
        let find = |pack: u64| {
            writes
                .iter()
                .find(|(k, _)| k[..] == keys::pack_key(pack))
                .and_then(|(_, v)| v.clone())
        };
        assert_eq!(&f.resolve(1, &find(1).unwrap()).unwrap()[..], b"\x00one");
        assert_eq!(&f.resolve(2, &find(2).unwrap()).unwrap()[..], b"\x00two");
        assert_eq!(&f.resolve(3, &find(3).unwrap()).unwrap()[..], b"\x00three");
        assert_eq!(find(4), None, "a sealed pack is not sealed again");
        let (below, end) = read_sealed_meta(&writes.last().unwrap().1.clone().unwrap()).unwrap();
        assert_eq!((below, end), (SEAL_STEP_PACKS, f.bytes()));
        // The same horizon again: nothing more.
        let n = writes.len();
        seal(&mut writes, last + 1);
        assert_eq!(writes.len(), n);
    }
}
