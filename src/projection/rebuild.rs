//! Rebuilding the projection from the log, and checking a projection against a fresh fold
//! of the log.
//!
//! [`rebuild`] deletes the projection directory, reads the log with the same checking scan
//! `verify` uses (read-only: a torn tail is reported, not cut — the next `serve` cuts it) on
//! a thread of its own, at most [`REBUILD_WINDOWS_AHEAD`] windows ahead, and folds it in
//! windows of [`REBUILD_WINDOW_RECORDS`] records: each window is folded in
//! memory and written once, so an action created and finished within a window costs one
//! snapshot write, and dense index buckets and counters one write per window; a resource
//! list's last chunk, which most windows touching that resource change, stays in memory
//! until it fills (bounded by [`REBUILD_HELD_CHUNK_BYTES_MAX`]). The writes of
//! a window go to sled in several batches (sled 0.34 holds every write of a batch in memory
//! until it ends), which is only safe because the format version is written last: a
//! rebuild interrupted at any point leaves a projection that [`Projection::open`] deletes
//! and that the next start rebuilds.
//!
//! [`verify_projection`] folds the log into a [`MemoryStore`] (memory grows with the number
//! of actions: it is an offline check) up to the projection's applied position and compares
//! every snapshot, index bucket (the `updated` index's too), resource list chunk (its ids
//! and the copy of its finished members), counter, uid, exclusive holder, idempotent answer
//! and history location with what they should be.

use super::apply::{self, Fold};
use super::keys;
use super::{
    store_err, CreatedMeta, Projection, ProjectionConfig, ProjectionError, StoredIdempotent,
};
use crate::event::codec;
use crate::event::{Action, ActionId};
use crate::ledger::memory::MemoryStore;
use crate::ledger::{CommittedEntry, StateStore, StoreError};
use crate::log::{self, LogError, Storage, TornTail};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Records folded in memory before their writes go to sled during a rebuild.
pub const REBUILD_WINDOW_RECORDS: usize = 16 * 1024;
/// Windows the rebuild's scanning thread may read ahead of the fold.
pub const REBUILD_WINDOWS_AHEAD: usize = 2;
/// Most bytes of resource list chunks a rebuild holds in memory between windows rather than
/// rewriting them in sled each window (see `apply_window`); past it, all go to sled. A
/// list's unfilled chunk holds ~2 KB, so this holds every list of a store of ~120k
/// resources (10M actions at ~100 per resource). With 32 MiB a 10M rebuild flushed every
/// few windows and was still running after 13.5 minutes with 6 GB of sled files.
pub const REBUILD_HELD_CHUNK_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Most differences [`verify_projection`] lists (it counts them all).
pub const VERIFY_DIFFERENCES_LISTED_MAX: usize = 100;

#[derive(Debug, Error)]
pub enum RebuildError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    #[error("projection store: {0}")]
    Store(#[from] StoreError),
    #[error("log record {position} does not decode: {reason}")]
    BadRecord { position: u64, reason: String },
}

/// How far a rebuild is. Reported after every window and once at the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RebuildProgress {
    pub records_done: u64,
    /// Bytes of log read so far (segment headers and padding included).
    pub bytes_done: u64,
    /// Bytes of log in all segments when the rebuild started.
    pub bytes_total: u64,
    /// The last position folded.
    pub position: u64,
}

#[derive(Clone, Debug)]
pub struct RebuildSummary {
    pub records: u64,
    /// Actions in the rebuilt projection.
    pub actions: u64,
    pub last_position: u64,
    pub elapsed: Duration,
    /// A torn tail the scan stopped at (left in place; the next open of the log cuts it).
    pub torn_tail: Option<TornTail>,
}

/// Sizes of the segments of `log_dir`, in order.
fn segment_sizes(storage: &dyn Storage, log_dir: &Path) -> Result<Vec<(u64, u64)>, LogError> {
    let mut out = Vec::new();
    for (seq, path) in log::scan::list_segments(storage, log_dir)? {
        let len = storage
            .file_len(&path)
            .map_err(|e| LogError::io(&path, e))?;
        out.push((seq, len));
    }
    Ok(out)
}

impl Projection {
    /// Folds a rebuild window and writes it in sled batches of `batch_writes_max`, except
    /// packs not sealed yet (see `values`) and the resource lists' last chunks while they
    /// are not full: those stay in `held` (and
    /// the next windows read them there) until they fill, or until `held` outgrows
    /// `rebuild_held_bytes_max` ([`REBUILD_HELD_CHUNK_BYTES_MAX`]) and everything in it
    /// goes to sled. A list's last chunk gains an id or a finished snapshot in most windows
    /// that touch its resource, so writing it every window wrote each chunk's pack up to 16
    /// times.
    fn apply_window(&self, entries: &[CommittedEntry], held: &mut Held) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut created = self.write.lock().unwrap_or_else(|e| e.into_inner());
        // A rebuild writes underneath the applier's memo: it starts and stays empty.
        self.written.clear();
        // A rebuild writes sled directly (its projection is fresh, the write-back empty),
        // but for the chunks it holds back.
        let mut fold = Fold::new(
            &self.tree,
            &self.values,
            &held.chunks,
            &self.written,
            *created,
        );
        for c in entries {
            fold.fold_entry(c)?;
        }
        let last = fold.last_position();
        let meta = fold.created();
        let mut done = fold.finish()?;
        self.seal(&held.chunks, &mut done.writes, meta.last_id)?;
        let mut writes = Vec::with_capacity(done.writes.len());
        // Packs not sealed yet are held too: the next windows seal most of them, and sled
        // then only ever sees their pointers.
        let sealed_below = self.values.sealed_below();
        for (k, v) in done.writes {
            let family = k.first().copied();
            match v {
                Some(v) if family == Some(keys::P_IX_RESOURCE) && !keys::chunk_is_full(&v) => {
                    held.hold(k, v)
                }
                Some(v)
                    if family == Some(keys::P_PACK)
                        && !super::values::is_pointer(&v)
                        && keys::read_u64(&k[1..]).is_some_and(|p| p >= sealed_below) =>
                {
                    held.hold(k, v)
                }
                v => {
                    if matches!(family, Some(keys::P_IX_RESOURCE | keys::P_PACK)) {
                        held.release(&k);
                    }
                    writes.push((k, v));
                }
            }
        }
        if held.bytes > self.config.rebuild_held_bytes_max {
            writes.extend(held.take());
        }
        apply::write_in_chunks(&self.tree, writes, self.config.batch_writes_max)
            .map_err(store_err)?;
        if let Some(last) = last {
            self.memos.publishing(last);
            self.memos.clear();
            self.applied.store(last, Ordering::Release);
        }
        self.created_monotone
            .store(meta.monotone, Ordering::Release);
        *created = meta;
        Ok(())
    }
}

/// The resource list chunks and packs a rebuild holds back from sled between windows.
#[derive(Default)]
struct Held {
    chunks: apply::Unwritten,
    /// Bytes of their keys and values.
    bytes: usize,
}

impl Held {
    fn hold(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.release(&key);
        self.bytes += key.len() + value.len();
        self.chunks.insert(key, Some(value));
    }

    fn release(&mut self, key: &[u8]) {
        if let Some(Some(old)) = self.chunks.remove(key) {
            self.bytes -= key.len() + old.len();
        }
    }

    /// Everything held, to write.
    fn take(&mut self) -> Vec<apply::Write> {
        self.bytes = 0;
        std::mem::take(&mut self.chunks).into_iter().collect()
    }
}

/// Deletes the projection at `projection_dir` and rebuilds it from the log in `log_dir`,
/// calling `progress` after every window. Refuses (without deleting anything) while another
/// process has the projection open. Returns the rebuilt, open projection.
pub fn rebuild(
    storage: &dyn Storage,
    log_dir: &Path,
    projection_dir: &Path,
    config: &ProjectionConfig,
    progress: &mut dyn FnMut(&RebuildProgress),
) -> Result<(Projection, RebuildSummary), RebuildError> {
    let started = Instant::now();
    let sizes = segment_sizes(storage, log_dir)?;
    let bytes_total: u64 = sizes.iter().map(|(_, len)| len).sum();
    // Bytes of all segments before segment `seq`.
    let bytes_before = |seq: u64| -> u64 {
        sizes
            .iter()
            .take_while(|(s, _)| *s < seq)
            .map(|(_, len)| len)
            .sum()
    };

    let (db, values) = Projection::fresh_db(projection_dir, config)?;
    let projection = Projection::from_db(
        projection_dir.to_path_buf(),
        db,
        values,
        config.clone(),
        Some("rebuild requested".into()),
    )?;

    // The log is read and checked (CRC, SHA-256 chain, decode) on a thread of its own, a
    // few windows ahead of the fold and the sled writes on this one: on two or more cores
    // the checking scan costs no time of its own.
    let (windows_tx, windows_rx) = std::sync::mpsc::sync_channel(REBUILD_WINDOWS_AHEAD);
    let (summary, last) = std::thread::scope(|s| -> Result<_, RebuildError> {
        let scanner = std::thread::Builder::new()
            .name("rebuild-scan".into())
            .spawn_scoped(s, move || {
                scan_windows(storage, log_dir, bytes_before, bytes_total, windows_tx)
            })
            .map_err(|e| {
                StoreError::Other(format!("cannot start the rebuild's scanning thread: {e}"))
            })?;
        let mut last = None;
        let mut applied = Ok(());
        let mut held = Held::default();
        // A failed fold ends the loop, which drops the receiver: the scanner stops at its
        // next window.
        for (window, state) in windows_rx {
            applied = projection.apply_window(&window, &mut held);
            if applied.is_err() {
                break;
            }
            progress(&state);
            last = Some(state);
        }
        let scanned = scanner.join().unwrap_or_else(|_| {
            Err(RebuildError::Store(StoreError::Other(
                "the rebuild's scanning thread panicked".into(),
            )))
        });
        // The fold's failure first: it is why the scan stopped.
        applied?;
        apply::write_in_chunks(&projection.tree, held.take(), config.batch_writes_max)
            .map_err(store_err)?;
        Ok((scanned?, last))
    })?;
    let mut state = last.unwrap_or(RebuildProgress {
        records_done: 0,
        bytes_done: 0,
        bytes_total,
        position: 0,
    });
    state.bytes_done = bytes_total;
    progress(&state);

    // The rebuilt projection becomes valid only now.
    projection
        .tree
        .insert(keys::META_FORMAT, &keys::FORMAT_VERSION.to_be_bytes())
        .map_err(store_err)?;
    projection.flush()?;
    let actions = projection.counter(&keys::counter_key(keys::Scope::All, keys::Dim::Total))?;
    Ok((
        projection,
        RebuildSummary {
            records: state.records_done,
            actions,
            last_position: summary.last_position,
            elapsed: started.elapsed(),
            torn_tail: summary.torn_tail,
        },
    ))
}

/// Reads the log with the checking scan and sends it in windows of
/// [`REBUILD_WINDOW_RECORDS`] records (the last one possibly shorter), each with the
/// progress it completes. Stops early, with an error, when the receiver is gone.
fn scan_windows(
    storage: &dyn Storage,
    log_dir: &Path,
    bytes_before: impl Fn(u64) -> u64,
    bytes_total: u64,
    windows: std::sync::mpsc::SyncSender<(Vec<CommittedEntry>, RebuildProgress)>,
) -> Result<log::ScanSummary, RebuildError> {
    let mut window: Vec<CommittedEntry> = Vec::with_capacity(REBUILD_WINDOW_RECORDS);
    let mut failure: Option<RebuildError> = None;
    let mut state = RebuildProgress {
        records_done: 0,
        bytes_done: 0,
        bytes_total,
        position: 0,
    };
    let scanned = log::verify(storage, log_dir, &mut |rec| {
        let entry = match codec::decode_entry(rec.meta.kind, rec.meta.schema, rec.payload) {
            Ok(e) => e,
            Err(e) => {
                failure = Some(RebuildError::BadRecord {
                    position: rec.meta.position,
                    reason: e.to_string(),
                });
                return Err(e.to_string());
            }
        };
        window.push(CommittedEntry {
            position: rec.meta.position,
            segment: rec.segment,
            offset: rec.offset,
            entry,
        });
        state.records_done += 1;
        state.position = rec.meta.position;
        state.bytes_done = bytes_before(rec.segment) + rec.offset + rec.payload.len() as u64;
        if window.len() >= REBUILD_WINDOW_RECORDS {
            let full = std::mem::replace(&mut window, Vec::with_capacity(REBUILD_WINDOW_RECORDS));
            if windows.send((full, state)).is_err() {
                return Err("the rebuild stopped".into());
            }
        }
        Ok(())
    });
    let summary = match scanned {
        Ok(s) => s,
        Err(e) => return Err(failure.take().unwrap_or(RebuildError::Log(e))),
    };
    if !window.is_empty() {
        // A closed receiver means the fold failed; its error is the one reported.
        let _ = windows.send((window, state));
    }
    Ok(summary)
}

/// What [`verify_projection`] found.
#[derive(Clone, Debug, Default)]
pub struct VerifyReport {
    /// The last intact position of the log.
    pub log_position: u64,
    /// The projection's applied position. Below `log_position` it is merely behind (the
    /// next open catches it up) and was compared with the log up to its own position.
    pub applied_position: u64,
    /// Actions compared.
    pub actions: u64,
    /// The first [`VERIFY_DIFFERENCES_LISTED_MAX`] differences, in words.
    pub differences: Vec<String>,
    /// Every difference found.
    pub differences_total: u64,
}

impl VerifyReport {
    /// True when the projection matches the log (it may still be behind it).
    pub fn is_consistent(&self) -> bool {
        self.differences_total == 0
    }

    fn differ(&mut self, what: String) {
        self.differences_total += 1;
        if self.differences.len() < VERIFY_DIFFERENCES_LISTED_MAX {
            self.differences.push(what);
        }
    }
}

/// A sum of per-item hashes: equal multisets give equal sums, in any order, in O(1) memory.
#[derive(Default, PartialEq, Eq, Debug, Clone, Copy)]
struct MultisetHash {
    count: u64,
    sum: u64,
}

impl MultisetHash {
    fn add(&mut self, bytes: &[u8]) {
        use sha2::{Digest, Sha256};
        let d = Sha256::digest(bytes);
        self.count += 1;
        self.sum = self
            .sum
            .wrapping_add(u64::from_le_bytes(d[..8].try_into().expect("8 bytes")));
    }
}

type KeyValue = (Vec<u8>, Vec<u8>);

/// One history location of an action, as the multiset hash sees it.
fn history_item(id: ActionId, location: &[u8]) -> Vec<u8> {
    let mut item = id.to_be_bytes().to_vec();
    item.extend_from_slice(location);
    item
}

/// Every key under `prefix` with its value.
fn scan(tree: &sled::Tree, prefix: &[u8]) -> Result<Vec<KeyValue>, RebuildError> {
    let mut out = Vec::new();
    for kv in tree.scan_prefix(prefix) {
        let (k, v) = kv.map_err(store_err)?;
        out.push((k.to_vec(), v.to_vec()));
    }
    Ok(out)
}

/// Compares `projection` with a fresh fold of the log in `log_dir` (read-only on both).
pub fn verify_projection(
    storage: &dyn Storage,
    log_dir: &Path,
    projection: &Projection,
) -> Result<VerifyReport, RebuildError> {
    let applied = projection.applied_position();
    let reference = MemoryStore::new();
    let mut report = VerifyReport {
        applied_position: applied,
        ..Default::default()
    };
    let mut chunk: Vec<CommittedEntry> = Vec::new();
    let mut failure: Option<RebuildError> = None;
    let mut history = MultisetHash::default();
    let mut stamps: HashSet<(String, String)> = HashSet::new();
    let scanned = log::verify(storage, log_dir, &mut |rec| {
        if rec.meta.position > applied {
            return Ok(());
        }
        let entry = match codec::decode_entry(rec.meta.kind, rec.meta.schema, rec.payload) {
            Ok(e) => e,
            Err(e) => {
                failure = Some(RebuildError::BadRecord {
                    position: rec.meta.position,
                    reason: e.to_string(),
                });
                return Err(e.to_string());
            }
        };
        let mut ids: Vec<ActionId> = entry.ops.iter().map(|op| op.action_id()).collect();
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            history.add(&history_item(
                id,
                &keys::location(rec.meta.position, rec.segment, rec.offset),
            ));
        }
        if let Some(s) = &entry.idempotency {
            stamps.insert((s.tenant.clone(), s.key.clone()));
        }
        chunk.push(CommittedEntry {
            position: rec.meta.position,
            segment: rec.segment,
            offset: rec.offset,
            entry,
        });
        if chunk.len() >= 4096 {
            if let Err(e) = reference.apply(&chunk) {
                failure = Some(e.into());
                return Err("the reference fold failed".into());
            }
            chunk.clear();
        }
        Ok(())
    });
    let summary = match scanned {
        Ok(s) => s,
        Err(e) => return Err(failure.take().unwrap_or(RebuildError::Log(e))),
    };
    reference.apply(&chunk)?;
    report.log_position = summary.last_position;
    if applied > summary.last_position {
        report.differ(format!(
            "the projection has applied position {applied} but the log ends at {}",
            summary.last_position
        ));
    }
    let tree = projection.settled()?;
    let actions: Vec<Action> = reference.all();
    report.actions = actions.len() as u64;

    // Snapshots, and the expected indexes and counters.
    let mut expected_buckets: BTreeMap<Vec<u8>, BTreeSet<u16>> = BTreeMap::new();
    // Resource list prefix → its ids, ascending (actions are visited in id order).
    let mut expected_lists: BTreeMap<Vec<u8>, Vec<ActionId>> = BTreeMap::new();
    let mut expected_counters: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    let mut expected_exclusive: BTreeMap<Vec<u8>, ActionId> = BTreeMap::new();
    let mut created = CreatedMeta::EMPTY;
    for a in &actions {
        // One read of what sled holds, for the applier's memo and for the log's state.
        let stored = projection.load_stored(a.id);
        if let Some((written, tail)) = projection.written(a.id) {
            let same = matches!(&stored, Ok(Some((s, t))) if *s == *written && t[..] == tail[..]);
            if !same {
                report.differ(format!(
                    "action {}: the applier's memo of written values differs from sled",
                    a.id
                ));
            }
        }
        if projection.memo(a.id).is_some_and(|m| *m != *a) {
            report.differ(format!(
                "action {}: the snapshot memo holds a state the log does not give",
                a.id
            ));
        }
        match stored {
            Ok(Some((stored, _))) if &stored == a => {}
            Ok(Some((stored, _))) => report.differ(format!(
                "action {}: stored snapshot differs from the log (stored version {}, log version {})",
                a.id, stored.version, a.version
            )),
            Ok(None) => report.differ(format!("action {}: missing from the projection", a.id)),
            Err(e) => report.differ(format!("action {}: {e}", a.id)),
        }
        match projection.id_for_uid(&a.uid) {
            Ok(Some(id)) if id == a.id => {}
            other => report.differ(format!(
                "uid {:?}: expected action {}, projection has {other:?}",
                a.uid, a.id
            )),
        }
        let mut bucketed = Vec::new();
        for ix in keys::indexes_of(a) {
            match ix {
                keys::Ix::Resource(..) => expected_lists.entry(ix.prefix()).or_default().push(a.id),
                _ => bucketed.push(keys::bucket_key(&ix.prefix(), keys::bucket_of(a.id))),
            }
        }
        let bucket_keys = bucketed.into_iter().chain([keys::updated_key(a)]);
        for k in bucket_keys {
            expected_buckets
                .entry(k)
                .or_default()
                .insert(keys::bucket_offset(a.id));
        }
        for c in keys::counters_of(a) {
            *expected_counters.entry(c).or_default() += 1;
        }
        if a.exclusive && !a.status.is_terminal() {
            expected_exclusive.insert(keys::exclusive_key(&a.tenant, &a.resource), a.id);
        }
        created.note(a);
    }

    // Snapshots that should not exist, and the history tails of those that should.
    let known: HashSet<ActionId> = actions.iter().map(|a| a.id).collect();
    let mut stored_history = MultisetHash::default();
    let run_bytes = keys::HISTORY_INLINE_MAX * keys::LOCATION_BYTES;
    // Where each lives: a finished action in its pack, any other under its own key.
    let finished: HashSet<ActionId> = actions
        .iter()
        .filter(|a| a.status.is_terminal())
        .map(|a| a.id)
        .collect();
    let mut stored_snapshots: Vec<(Option<ActionId>, bool, sled::IVec)> = Vec::new();
    for kv in tree.scan_prefix([keys::P_SNAPSHOT]) {
        let (k, v) = kv.map_err(store_err)?;
        stored_snapshots.push((keys::read_u64(&k[1..]), false, v));
    }
    for kv in tree.scan_prefix([keys::P_PACK]) {
        let (k, v) = kv.map_err(store_err)?;
        let Some(pack) = keys::read_u64(&k[1..]) else {
            report.differ(format!("pack key {k:?} is malformed"));
            continue;
        };
        let resolved = match projection.values.resolve(pack, &v) {
            Ok(r) => r,
            Err(e) => {
                report.differ(format!("pack {pack}: {e}"));
                continue;
            }
        };
        match super::pack::decode(&resolved) {
            Ok(p) => stored_snapshots.extend(p.iter().map(|(o, v)| {
                (
                    Some(pack * keys::PACK_IDS + u64::from(o)),
                    true,
                    sled::IVec::from(v),
                )
            })),
            Err(e) => report.differ(format!("pack {pack}: {e}")),
        }
    }
    for (id, packed, v) in &stored_snapshots {
        let (id, packed) = (*id, *packed);
        if let Some(id) = id.filter(|id| known.contains(id)) {
            if finished.contains(&id) != packed {
                report.differ(format!(
                    "action {id}: stored {} although it is {}finished",
                    if packed {
                        "in a pack"
                    } else {
                        "under its own key"
                    },
                    if packed { "not " } else { "" }
                ));
            }
        }
        match id {
            Some(id) if known.contains(&id) => match keys::split_snapshot(v) {
                Some((_, tail)) if !tail.is_empty() && tail.len() <= run_bytes => {
                    for l in tail.chunks_exact(keys::LOCATION_BYTES) {
                        stored_history.add(&history_item(id, l));
                    }
                }
                _ => report.differ(format!(
                    "action {id}: the history tail of its snapshot is not 1 to {} locations",
                    keys::HISTORY_INLINE_MAX
                )),
            },
            other => report.differ(format!(
                "stored snapshot of {other:?} is not an action of the log"
            )),
        }
    }
    let uids = tree.scan_prefix([keys::P_UID]).count() as u64;
    let keyed = actions
        .iter()
        .filter(|a| keys::has_uid_key(a.id, &a.uid))
        .count() as u64;
    if uids != keyed {
        report.differ(format!(
            "{uids} uid keys stored for {keyed} actions with a uid of their own"
        ));
    }

    // Resource lists: each chunk's ids, in key order, make up the list of its prefix, and
    // its pack holds exactly its finished members, each the very value of its id pack.
    let packed: HashMap<ActionId, &sled::IVec> = stored_snapshots
        .iter()
        .filter_map(|(id, packed, v)| id.filter(|_| *packed).map(|id| (id, v)))
        .collect();
    let mut stored_lists: BTreeMap<Vec<u8>, Vec<ActionId>> = BTreeMap::new();
    for (k, v) in scan(tree, &[keys::P_IX_RESOURCE])? {
        let Some((prefix, first)) = k
            .len()
            .checked_sub(8)
            .and_then(|at| Some((k[..at].to_vec(), keys::read_u64(&k[at..])?)))
        else {
            report.differ(format!("resource list key {k:?} is malformed"));
            continue;
        };
        let Some((ids, pack)) = keys::chunk_split(first, &v) else {
            report.differ(format!("resource list chunk {k:?} is malformed"));
            continue;
        };
        match super::pack::decode_or_empty(pack) {
            Ok(entries) => {
                for (at, &id) in ids.iter().enumerate() {
                    let copy = entries.get(at as u8);
                    if copy.is_some() != finished.contains(&id) {
                        report.differ(format!(
                            "resource list chunk {k:?}: action {id} is {}in its pack although it is {}finished",
                            if copy.is_some() { "" } else { "not " },
                            if copy.is_some() { "not " } else { "" },
                        ));
                    } else if copy.is_some_and(|c| packed.get(&id).is_none_or(|v| &v[..] != c)) {
                        report.differ(format!(
                            "resource list chunk {k:?}: action {id} differs from its id pack's"
                        ));
                    }
                }
                if entries.iter().any(|(at, _)| usize::from(at) >= ids.len()) {
                    report.differ(format!(
                        "resource list chunk {k:?}: a pack entry lies past its ids"
                    ));
                }
            }
            Err(e) => report.differ(format!("resource list chunk {k:?}: {e}")),
        }
        stored_lists.entry(prefix).or_default().extend(ids);
    }
    if stored_lists != expected_lists {
        let all: BTreeSet<&Vec<u8>> = stored_lists.keys().chain(expected_lists.keys()).collect();
        for k in all {
            let (s, e) = (stored_lists.get(k), expected_lists.get(k));
            if s != e {
                report.differ(format!("resource list {k:?}: stored {s:?}, expected {e:?}"));
            }
        }
    }

    let mut stored_buckets: BTreeMap<Vec<u8>, BTreeSet<u16>> = BTreeMap::new();
    for p in (keys::P_IX_TENANT..=keys::P_IX_UPDATED).filter(|&p| p != keys::P_IX_RESOURCE) {
        for (k, v) in scan(tree, &[p])? {
            match keys::bucket_members(&v) {
                Some(m) => {
                    stored_buckets.insert(k, m.into_iter().collect());
                }
                None => report.differ(format!("index bucket {k:?} is malformed")),
            }
        }
    }
    if stored_buckets != expected_buckets {
        let keys_all: BTreeSet<&Vec<u8>> = stored_buckets
            .keys()
            .chain(expected_buckets.keys())
            .collect();
        for k in keys_all {
            let (s, e) = (stored_buckets.get(k), expected_buckets.get(k));
            if s != e {
                report.differ(format!("index bucket {k:?}: stored {s:?}, expected {e:?}"));
            }
        }
    }

    let mut stored_counters: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    for (k, v) in scan(tree, &[keys::P_COUNTER])? {
        match keys::read_u64(&v) {
            Some(n) => {
                stored_counters.insert(k, n);
            }
            None => report.differ(format!("counter {k:?} is malformed")),
        }
    }
    if stored_counters != expected_counters {
        let all: BTreeSet<&Vec<u8>> = stored_counters
            .keys()
            .chain(expected_counters.keys())
            .collect();
        for k in all {
            let (s, e) = (stored_counters.get(k), expected_counters.get(k));
            if s != e {
                report.differ(format!("counter {k:?}: stored {s:?}, expected {e:?}"));
            }
        }
    }

    let mut stored_exclusive: BTreeMap<Vec<u8>, ActionId> = BTreeMap::new();
    for (k, v) in scan(tree, &[keys::P_EXCLUSIVE])? {
        match keys::read_u64(&v) {
            Some(id) => {
                stored_exclusive.insert(k, id);
            }
            None => report.differ(format!("exclusive holder {k:?} is malformed")),
        }
    }
    if stored_exclusive != expected_exclusive {
        report.differ(format!(
            "exclusive holders: stored {stored_exclusive:?}, expected {expected_exclusive:?}"
        ));
    }

    let mut idempotent_stored = 0u64;
    for (k, v) in scan(tree, &[keys::P_IDEMPOTENCY])? {
        idempotent_stored += 1;
        let parsed = keys::take_str(&k[1..]).and_then(|(t, rest)| {
            let (key, rest) = keys::take_str(rest)?;
            rest.is_empty().then(|| {
                (
                    String::from_utf8_lossy(t).into_owned(),
                    String::from_utf8_lossy(key).into_owned(),
                )
            })
        });
        let Some((tenant, key)) = parsed else {
            report.differ(format!("idempotency key {k:?} is malformed"));
            continue;
        };
        let stored: Result<StoredIdempotent, _> =
            codec::decode_bounded(&v, super::STORED_VALUE_BYTES_MAX);
        let expected = reference.idempotent_result(&tenant, &key)?;
        match (stored, expected) {
            (Ok(s), Some(e))
                if s.request_digest == e.request_digest
                    && s.position == e.position
                    && s.recorded_at == e.recorded_at
                    && s.actions == e.actions => {}
            (s, e) => report.differ(format!(
                "idempotent answer ({tenant:?}, {key:?}): stored {:?}, expected position {:?}",
                s.map(|s| s.position),
                e.map(|e| e.position)
            )),
        }
    }
    if idempotent_stored != stamps.len() as u64 {
        report.differ(format!(
            "{idempotent_stored} idempotent answers stored, the log has {}",
            stamps.len()
        ));
    }

    for (k, v) in scan(tree, &[keys::P_HISTORY])? {
        match keys::history_run(&k, &v) {
            Some((id, _)) => {
                for l in v.chunks_exact(keys::LOCATION_BYTES) {
                    stored_history.add(&history_item(id, l));
                }
            }
            None => report.differ(format!(
                "history key {k:?} does not hold {} locations from its own position",
                keys::HISTORY_INLINE_MAX
            )),
        }
    }
    if stored_history != history {
        report.differ(format!(
            "history index: {} locations stored, {} expected, or their positions/offsets differ",
            stored_history.count, history.count
        ));
    }

    let stored_created = tree
        .get(keys::META_CREATED)
        .map_err(store_err)?
        .and_then(|v| CreatedMeta::decode(&v));
    let expected_created = (created != CreatedMeta::EMPTY).then_some(created);
    if stored_created
        .is_some_and(|s| s.monotone != created.monotone || s.last_id != created.last_id)
        || (stored_created.is_none() && expected_created.is_some())
    {
        report.differ(format!(
            "creation-order record: stored {stored_created:?}, expected {expected_created:?}"
        ));
    }
    Ok(report)
}
