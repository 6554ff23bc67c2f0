//! The persistent projection: the log folded into action snapshots and indexes in sled, the
//! [`StateStore`] the writer validates against, and the queries every read route uses.
//!
//! Everything here is derived from the log and can be thrown away: the log is the only
//! durability barrier (writes are acknowledged after the log's fdatasync, never after sled),
//! so sled is never flushed on the acknowledgement path. What keeps the projection honest:
//! - every batch written to sled carries its `applied_position` in the same atomic
//!   [`sled::Batch`], so after any stop the projection is exactly "the log up to
//!   `applied_position`", and [`crate::ledger::Ledger::open`] replays what follows. Applied
//!   batches wait in a write-back for a few milliseconds and go to sled together (see
//!   `apply_entries`); every read of sled writes it out first ([`Projection::settled`]);
//! - [`StateStore::apply`] skips entries at or below `applied_position` (idempotent);
//! - a format version is stored too; at [`Projection::open`] a projection that sled cannot
//!   open, or of another version, or left half-built by an interrupted [`rebuild`], is
//!   deleted and starts empty, so the ledger rebuilds it from position 0;
//! - snapshots come from [`crate::event::fold::apply_entry`], the one fold.
//!
//! Modules:
//! - [`keys`]: the key layout of the one sled tree (drawn there byte by byte); `pack`: the
//!   compressed packs finished actions live in;
//! - `apply`: folding a run of committed entries into one set of sled writes;
//! - [`query`]: the query types; `list`: planning and running them; [`cursor`]: keyset
//!   cursors bound to their filters;
//! - [`rebuild`]: rebuild from the log with progress, and `verify_projection`;
//! - `written`: the applier's memo of the snapshot values it wrote (`cache` holds the read
//!   memos);
//! - [`history`]: where each log record of an action lives (the index the ledger's history
//!   and as-of reads go through).
//!
//! Blocking: every method is synchronous sled work. The writer thread calls the
//! [`StateStore`] methods; async callers must use `spawn_blocking` for the rest.

mod apply;
pub(crate) mod cache;
pub mod cursor;
pub mod histogram;
pub mod history;
pub mod keys;
mod list;
pub(crate) mod pack;
pub mod query;
pub mod rebuild;
pub mod values;
mod written;

pub use history::{AsOf, HistoryRecord, RecordLocation};
pub use query::{ActionQuery, Page, QueryError};
pub use rebuild::{rebuild, verify_projection, RebuildProgress, RebuildSummary, VerifyReport};
pub use written::WRITTEN_MEMO_BYTES;

use crate::event::codec;
use crate::event::{Action, ActionId, ActionRef, Micros, Position, ResourceRef};
use crate::ledger::{CommittedEntry, IdempotentResult, StateStore, StoreError};
use crate::limits::{MEMO_BYTES_DEFAULT, SLED_CACHE_BYTES_DEFAULT};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use thiserror::Error;

/// Name of the projection directory inside a data directory (next to `log/`).
pub const PROJECTION_DIR_NAME: &str = "projection";
/// Default for [`ProjectionConfig::batch_writes_max`]. sled 0.34 pins its epoch for a whole
/// batch, so the garbage of every write in a batch stays allocated until it ends: measured
/// here, 8k-write batches pushed RSS past 1 GB where 512-write batches stayed near 100 MB.
pub const BATCH_WRITES_MAX_DEFAULT: usize = 1024;
/// Applied writes the write-back holds before they go to sled together (see
/// [`Projection::apply_entries`]): at most this many keys...
pub const WRITE_BACK_KEYS_MAX: usize = 4096;
/// ...held at most this long while batches keep coming (the applier writes them out when
/// none has come for as long).
pub const WRITE_BACK_DELAY: std::time::Duration = std::time::Duration::from_millis(5);
/// Largest stored snapshot or idempotent answer the projection will decode; a bound for
/// damaged bytes, far above what the input limits allow an action to reach.
pub const STORED_VALUE_BYTES_MAX: usize = 512 * 1024 * 1024;

/// `<data_dir>/projection`.
pub fn projection_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(PROJECTION_DIR_NAME)
}

#[derive(Clone, Debug)]
pub struct ProjectionConfig {
    /// sled's page cache in bytes ([`SLED_CACHE_BYTES_DEFAULT`]).
    pub cache_capacity_bytes: u64,
    /// Soft bound on the writes of one sled batch ([`BATCH_WRITES_MAX_DEFAULT`]). A batch
    /// always holds whole log entries, so one huge entry may exceed it.
    pub batch_writes_max: usize,
    /// How often sled's background thread flushes its own buffers (`None`: only on
    /// [`Projection::flush`] / drop). Not a durability setting: after a crash the projection
    /// catches up from the log whatever sled lost.
    pub flush_every_ms: Option<u64>,
    /// Bytes of decoded snapshots kept in memory, over sled's own cache
    /// ([`MEMO_BYTES_DEFAULT`]; 0 turns the memo off). See the `cache` module.
    pub snapshot_cache_bytes: usize,
    /// Bytes of the applier's memo of the values it wrote ([`WRITTEN_MEMO_BYTES`]).
    pub written_memo_bytes: usize,
    /// Bytes of resource list chunks a rebuild holds between windows
    /// ([`rebuild::REBUILD_HELD_CHUNK_BYTES_MAX`]).
    pub rebuild_held_bytes_max: usize,
    /// How far below the newest action a pack is sealed into the value file, and how many
    /// packs are sealed at once ([`values::SEAL_DISTANCE_IDS`], [`values::SEAL_STEP_PACKS`];
    /// tests make them small).
    pub seal_distance_ids: u64,
    pub seal_step_packs: u64,
}

impl Default for ProjectionConfig {
    fn default() -> Self {
        ProjectionConfig {
            cache_capacity_bytes: SLED_CACHE_BYTES_DEFAULT,
            batch_writes_max: BATCH_WRITES_MAX_DEFAULT,
            flush_every_ms: Some(1000),
            snapshot_cache_bytes: MEMO_BYTES_DEFAULT,
            written_memo_bytes: WRITTEN_MEMO_BYTES,
            rebuild_held_bytes_max: rebuild::REBUILD_HELD_CHUNK_BYTES_MAX,
            seal_distance_ids: values::SEAL_DISTANCE_IDS,
            seal_step_packs: values::SEAL_STEP_PACKS,
        }
    }
}

#[derive(Debug, Error)]
pub enum ProjectionError {
    /// Another process (or another `Projection` in this one) has the directory open.
    #[error("projection {dir} is in use by another process: {reason}")]
    Locked { dir: PathBuf, reason: String },
    #[error("projection {dir}: I/O error: {source}")]
    Io {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("projection {dir}: sled: {reason}")]
    Sled { dir: PathBuf, reason: String },
    #[error("projection {dir}: {reason}")]
    Damaged { dir: PathBuf, reason: String },
}

/// What [`Projection::open`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenReport {
    /// `Some(why)` when the old projection was deleted and an empty one started.
    pub reset: Option<String>,
    /// The log position the projection is at after opening.
    pub applied_position: u64,
}

/// The first answer to an idempotent submission as stored (the plain on-disk mirror of
/// [`IdempotentResult`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub(crate) struct StoredIdempotent {
    pub request_digest: [u8; 32],
    pub position: Position,
    pub recorded_at: Micros,
    pub actions: Vec<Action>,
}

/// Whether `created_at` has stayed non-decreasing in id order (see [`keys::META_CREATED`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CreatedMeta {
    pub last_id: ActionId,
    pub last_created_at: Micros,
    pub monotone: bool,
}

impl CreatedMeta {
    pub const EMPTY: CreatedMeta = CreatedMeta {
        last_id: 0,
        last_created_at: Micros::MIN,
        monotone: true,
    };

    pub fn encode(&self) -> [u8; 17] {
        let mut b = [0u8; 17];
        b[..8].copy_from_slice(&self.last_id.to_be_bytes());
        b[8..16].copy_from_slice(&self.last_created_at.to_be_bytes());
        b[16] = self.monotone as u8;
        b
    }

    pub fn decode(b: &[u8]) -> Option<CreatedMeta> {
        if b.len() != 17 || b[16] > 1 {
            return None;
        }
        Some(CreatedMeta {
            last_id: u64::from_be_bytes(b[..8].try_into().ok()?),
            last_created_at: i64::from_be_bytes(b[8..16].try_into().ok()?),
            monotone: b[16] == 1,
        })
    }

    /// Notes the creation of `a` (creations arrive in log order).
    pub fn note(&mut self, a: &Action) {
        if a.id <= self.last_id || a.created_at < self.last_created_at {
            self.monotone = false;
        }
        self.last_id = self.last_id.max(a.id);
        self.last_created_at = self.last_created_at.max(a.created_at);
    }
}

/// The sled projection. Share it behind an `Arc`: the ledger holds it as its
/// [`StateStore`], the HTTP layer queries it.
pub struct Projection {
    dir: PathBuf,
    /// Owns sled's files and background flusher; dropped last (after `tree`).
    db: sled::Db,
    /// The one tree every key lives in (sled's default tree of `db`).
    tree: sled::Tree,
    /// Where sealed packs' values live (see `values`).
    values: Arc<values::ValueFile>,
    config: ProjectionConfig,
    /// The last position applied: in sled, or in `pending` on its way there.
    applied: AtomicU64,
    /// Mirror of `META_CREATED.monotone`, read by query planning.
    created_monotone: AtomicBool,
    /// Serialises writers (the ledger's writer thread, or a rebuild): `apply` reads indexes
    /// and counters, then writes them back, which is only correct with one writer. Holds
    /// the creation-order bookkeeping.
    write: Mutex<CreatedMeta>,
    /// The write-back: applied writes sled does not hold yet (locked after `write`).
    pending: Mutex<WriteBack>,
    /// Whether `pending` holds writes (or failed): every sled read empties it first.
    unwritten: AtomicBool,
    /// Why a write-back failed, once one has: its writes are lost to sled, so nothing may
    /// read sled or apply on top of it until a restart catches up from the log.
    failed: std::sync::OnceLock<StoreError>,
    /// Decoded snapshots and resource id lists, kept current by `apply` (see `cache`).
    memos: cache::Memos,
    /// The applier's own memo of the snapshot values it wrote last (see `written`). Written
    /// and read only under `write`.
    written: written::Written,
    opened: OpenReport,
}

/// Applied writes on their way to sled, merged by key (see [`Projection::apply_entries`]).
#[derive(Default)]
struct WriteBack {
    writes: apply::Unwritten,
    /// When the oldest of `writes` was applied.
    since: Option<std::time::Instant>,
}

fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// Opens sled at `dir`. sled 0.34 has been reported to panic on some damaged files instead
/// of returning an error; a panic here is turned into an error so the caller can delete and
/// rebuild rather than crash-loop.
fn open_sled(dir: &Path, config: &ProjectionConfig) -> Result<sled::Db, sled::Error> {
    // Owner-only like the rest of the data directory (sled itself would use the umask).
    crate::log::storage::create_private_dir_all(dir)?;
    let sled_config = sled::Config::new()
        .path(dir)
        .cache_capacity(config.cache_capacity_bytes)
        .flush_every_ms(config.flush_every_ms)
        .mode(sled::Mode::HighThroughput);
    // sled's background threads can hold the directory's lock for a moment after the last
    // handle in this process drops; a lock still held after LOCK_WAIT is someone else's.
    // A process that has opened no sled database yet (a CLI command such as `verify`) has
    // no such threads: a lock it finds is another process's, reported at once.
    let deadline = std::time::Instant::now()
        + if SLED_OPENED.load(std::sync::atomic::Ordering::Relaxed) {
            LOCK_WAIT
        } else {
            std::time::Duration::ZERO
        };
    loop {
        let result =
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sled_config.open())) {
                Ok(result) => result,
                Err(_) => Err(sled::Error::ReportableBug(
                    "sled panicked while opening".into(),
                )),
            };
        if result.is_ok() {
            SLED_OPENED.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        match result {
            Err(e) if is_lock_error(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// How long opening waits for sled's lock before reporting the projection as in use, in a
/// process that has opened a sled database before.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Whether this process has opened a sled database (whose threads may still hold a lock).
static SLED_OPENED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Opens the value file of the projection in `dir` against what `db` records of it; `Err`
/// says why they disagree (the projection is then rebuilt).
pub(crate) fn open_values(dir: &Path, db: &sled::Db) -> Result<values::ValueFile, String> {
    let sealed = match db.get(keys::META_SEALED) {
        Ok(None) => None,
        Ok(Some(v)) => Some(
            values::read_sealed_meta(&v)
                .ok_or_else(|| format!("its sealing record is {} bytes", v.len()))?,
        ),
        Err(e) => return Err(format!("cannot read its sealing record: {e}")),
    };
    values::ValueFile::open(dir, sealed)
}

impl Projection {
    /// Opens the projection in `dir`, creating it if needed. A projection that sled cannot
    /// open, whose format version differs, or that an interrupted rebuild left incomplete
    /// is deleted and replaced by an empty one (see [`OpenReport::reset`]); the ledger then
    /// catches it up from the start of the log. A directory locked by another process is an
    /// error and is never deleted.
    pub fn open(
        dir: impl AsRef<Path>,
        config: ProjectionConfig,
    ) -> Result<Projection, ProjectionError> {
        let dir = dir.as_ref().to_path_buf();
        let reset = match open_sled(&dir, &config) {
            Ok(db) => match Self::check_format(&db).and_then(|()| open_values(&dir, &db)) {
                Ok(values) => return Self::from_db(dir, db, values, config, None),
                Err(reason) => reason,
            },
            Err(e) if is_lock_error(&e) => {
                return Err(ProjectionError::Locked {
                    dir,
                    reason: e.to_string(),
                })
            }
            Err(e) => format!("sled failed to open it: {e}"),
        };
        tracing::warn!(dir = %dir.display(), reason = %reset, "deleting the projection; it will be rebuilt from the log");
        let (db, values) = Self::fresh_db(&dir, &config)?;
        db.insert(keys::META_FORMAT, &keys::FORMAT_VERSION.to_be_bytes())
            .map_err(|e| sled_err(&dir, e))?;
        Self::from_db(dir, db, values, config, Some(reset))
    }

    /// Deletes `dir` and opens an empty sled there, *without* a format version (until one
    /// is written, a later open treats it as incomplete), and a new value file.
    pub(crate) fn fresh_db(
        dir: &Path,
        config: &ProjectionConfig,
    ) -> Result<(sled::Db, values::ValueFile), ProjectionError> {
        // Never delete a projection another process is serving from: taking sled's lock
        // first tells. (Any other failure to open is what deleting is for.)
        if dir.exists() {
            if let Err(e) = open_sled(dir, config) {
                if is_lock_error(&e) {
                    return Err(ProjectionError::Locked {
                        dir: dir.to_path_buf(),
                        reason: e.to_string(),
                    });
                }
            }
        }
        match std::fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ProjectionError::Io {
                    dir: dir.to_path_buf(),
                    source: e,
                })
            }
        }
        let db = open_sled(dir, config).map_err(|e| {
            if is_lock_error(&e) {
                ProjectionError::Locked {
                    dir: dir.to_path_buf(),
                    reason: e.to_string(),
                }
            } else {
                sled_err(dir, e)
            }
        })?;
        let values = open_values(dir, &db).map_err(|reason| ProjectionError::Damaged {
            dir: dir.to_path_buf(),
            reason,
        })?;
        Ok((db, values))
    }

    /// `Ok` when `db` holds a complete projection of this format, or is brand new.
    fn check_format(db: &sled::Db) -> Result<(), String> {
        match db.get(keys::META_FORMAT) {
            Ok(Some(v)) if v.as_ref() == keys::FORMAT_VERSION.to_be_bytes() => Ok(()),
            Ok(Some(v)) => Err(format!(
                "its format version is {:?}, this build uses {}",
                v.as_ref(),
                keys::FORMAT_VERSION
            )),
            Ok(None) => match db.first() {
                Ok(None) => {
                    db.insert(keys::META_FORMAT, &keys::FORMAT_VERSION.to_be_bytes())
                        .map_err(|e| format!("cannot initialise it: {e}"))?;
                    Ok(())
                }
                Ok(Some(_)) => Err("it has no format version (an interrupted rebuild?)".into()),
                Err(e) => Err(format!("cannot read it: {e}")),
            },
            Err(e) => Err(format!("cannot read its format version: {e}")),
        }
    }

    pub(crate) fn from_db(
        dir: PathBuf,
        db: sled::Db,
        values: values::ValueFile,
        config: ProjectionConfig,
        reset: Option<String>,
    ) -> Result<Projection, ProjectionError> {
        let tree: sled::Tree = (*db).clone();
        let damaged = |reason: String| ProjectionError::Damaged {
            dir: dir.clone(),
            reason,
        };
        let applied = match tree
            .get(keys::META_APPLIED)
            .map_err(|e| sled_err(&dir, e))?
        {
            None => 0,
            Some(v) => keys::read_u64(&v)
                .ok_or_else(|| damaged(format!("applied position is {} bytes", v.len())))?,
        };
        let created = match tree
            .get(keys::META_CREATED)
            .map_err(|e| sled_err(&dir, e))?
        {
            None => CreatedMeta::EMPTY,
            Some(v) => CreatedMeta::decode(&v)
                .ok_or_else(|| damaged("creation-order record is malformed".into()))?,
        };
        Ok(Projection {
            dir,
            db,
            tree,
            values: Arc::new(values),
            memos: cache::Memos::new(config.snapshot_cache_bytes),
            written: written::Written::new(config.written_memo_bytes),
            config,
            applied: AtomicU64::new(applied),
            created_monotone: AtomicBool::new(created.monotone),
            write: Mutex::new(created),
            pending: Mutex::new(WriteBack::default()),
            unwritten: AtomicBool::new(false),
            failed: std::sync::OnceLock::new(),
            opened: OpenReport {
                reset,
                applied_position: applied,
            },
        })
    }

    /// What happened at open.
    pub fn open_report(&self) -> &OpenReport {
        &self.opened
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &ProjectionConfig {
        &self.config
    }

    /// Asks sled to write its buffers out (shutdown; never on the acknowledgement path —
    /// the log is the durability barrier). Returns the bytes flushed.
    pub fn flush(&self) -> Result<usize, ProjectionError> {
        self.settle().map_err(|e| ProjectionError::Sled {
            dir: self.dir.clone(),
            reason: e.to_string(),
        })?;
        self.db.flush().map_err(|e| sled_err(&self.dir, e))
    }

    /// Bytes sled occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64, ProjectionError> {
        self.db.size_on_disk().map_err(|e| sled_err(&self.dir, e))
    }

    /// The snapshot of action `id`.
    pub fn get(&self, id: ActionId) -> Result<Option<Action>, QueryError> {
        Ok(self.load(id)?)
    }

    /// The snapshot of the action with client uid `uid`.
    pub fn get_by_uid(&self, uid: &str) -> Result<Option<Action>, QueryError> {
        match self.uid(uid)? {
            Some(id) => self.get(id),
            None => Ok(None),
        }
    }

    /// The action named by an id or a uid, whatever its tenant (the core's own reads; a
    /// read for a caller is [`get_ref_scoped`](Self::get_ref_scoped)).
    pub fn get_ref(&self, r: &ActionRef) -> Result<Option<Action>, QueryError> {
        match r {
            ActionRef::Id(id) => self.get(*id),
            ActionRef::Uid(uid) => self.get_by_uid(uid),
        }
    }

    /// The action named by an id or a uid, as a caller scoped to `tenant` sees it (`None`:
    /// every tenant, an admin). Another tenant's action is `None`, exactly like one that
    /// does not exist: every read by id or uid for a caller goes through here (or
    /// [`get_in_memory_scoped`](Self::get_in_memory_scoped)), so none can forget the check.
    pub fn get_ref_scoped(
        &self,
        r: &ActionRef,
        tenant: Option<&str>,
    ) -> Result<Option<Action>, QueryError> {
        Ok(self.get_ref(r)?.filter(|a| in_scope(a, tenant)))
    }

    /// Runs a query: newest first, filtered, paged. See [`ActionQuery`] and the `list`
    /// module for costs.
    pub fn list(&self, q: &ActionQuery) -> Result<Page, QueryError> {
        list::run(self, q)
    }

    /// Counts the matches of `q` (paging ignored) per creation-time bucket
    /// `edges[i]..edges[i + 1]` and status; see the `histogram` module for how and what it
    /// costs. `edges` must be strictly ascending, at least two.
    pub fn histogram(
        &self,
        q: &ActionQuery,
        edges: &[Micros],
    ) -> Result<histogram::Histogram, QueryError> {
        histogram::run(self, q, edges, histogram::HISTOGRAM_SCAN_MAX)
    }

    /// [`histogram`](Self::histogram) with another read budget than
    /// [`histogram::HISTOGRAM_SCAN_MAX`], for tests of an incomplete count. Not an API.
    #[doc(hidden)]
    pub fn histogram_with_scan_max(
        &self,
        q: &ActionQuery,
        edges: &[Micros],
        scan_max: u64,
    ) -> Result<histogram::Histogram, QueryError> {
        histogram::run(self, q, edges, scan_max)
    }

    /// [`get_ref`](Self::get_ref) from memory alone (no sled work), when the snapshot memo
    /// holds the action; `None` otherwise (which says nothing about whether it exists).
    fn get_in_memory(&self, r: &ActionRef) -> Option<Arc<Action>> {
        match r {
            ActionRef::Id(id) => self.memos.snapshots.get(*id),
            ActionRef::Uid(uid) => {
                let a = self.memos.snapshots.get(keys::generated_uid_id(uid)?)?;
                (a.uid == *uid).then_some(a)
            }
        }
    }

    /// [`get_ref_scoped`](Self::get_ref_scoped) from memory alone (no sled work): the
    /// action when the snapshot memo holds it and `tenant` may see it; `None` otherwise,
    /// which says nothing about whether it exists (the caller asks `get_ref_scoped`).
    pub fn get_in_memory_scoped(&self, r: &ActionRef, tenant: Option<&str>) -> Option<Arc<Action>> {
        self.get_in_memory(r).filter(|a| in_scope(a, tenant))
    }

    /// [`list`](Self::list) from memory alone — no sled work, so an async worker may call
    /// it — when the memos hold everything the answer needs (today: lists filtered by
    /// resource only, of memoised actions); `Ok(None)` otherwise. Same answers as `list`.
    pub fn list_in_memory(&self, q: &ActionQuery) -> Result<Option<Page>, QueryError> {
        list::run_in_memory(self, q)
    }

    /// Where each log record that touched action `id` lives, in log order.
    pub fn history(&self, id: ActionId) -> Result<Vec<RecordLocation>, QueryError> {
        Ok(history::locations(self, id)?)
    }

    /// The raw sled tree, for tests that damage it on purpose. Not an API.
    #[doc(hidden)]
    pub fn tree_for_tests(&self) -> &sled::Tree {
        self.settled().expect("the write-back goes to sled")
    }

    /// The snapshot value of action `id` as stored (its own key or its pack), for tests.
    pub fn snapshot_value_for_tests(&self, id: ActionId) -> Option<Vec<u8>> {
        let tree = self.tree_for_tests();
        snapshot_bytes(|k| tree.get(k).map_err(store_err), &self.values, id, false)
            .expect("readable")
            .map(|v| v.to_vec())
    }

    /// Overwrites the stored snapshot value of action `id` where it lives, bypassing the
    /// applier (to damage it in tests).
    pub fn put_snapshot_value_for_tests(&self, id: ActionId, value: &[u8]) {
        let tree = self.tree_for_tests();
        let own = keys::snapshot_key(id);
        if tree.contains_key(own).expect("readable") {
            tree.insert(own, value).expect("writable");
            return;
        }
        let key = keys::pack_key(keys::pack_of(id));
        let old = tree.get(key).expect("readable").expect("a pack holds it");
        let old = self
            .values
            .resolve(keys::pack_of(id), &old)
            .expect("readable");
        let pack = pack::decode(&old).expect("a valid pack");
        let entries: Vec<(u8, &[u8])> = pack
            .iter()
            .map(|(o, v)| (o, if o == keys::pack_offset(id) { value } else { v }))
            .collect();
        tree.insert(key, pack::encode(entries).expect("encodes"))
            .expect("writable");
    }

    /// Seals the packs a fold whose newest action is `last_id` has made old enough (see
    /// `values`): `writes` then carries their pointers.
    fn seal(
        &self,
        unwritten: &apply::Unwritten,
        writes: &mut Vec<apply::Write>,
        last_id: ActionId,
    ) -> Result<(), StoreError> {
        self.values.seal(
            &self.tree,
            unwritten,
            writes,
            last_id,
            (self.config.seal_distance_ids, self.config.seal_step_packs),
        )
    }

    /// The bytes a pack key's `value` stands for (itself, or the sealed pack it points at),
    /// for tests that compare stored packs.
    pub fn pack_bytes_for_tests(&self, key: &[u8], value: &[u8]) -> Vec<u8> {
        let pack = keys::read_u64(&key[1..]).expect("a pack key");
        self.values.resolve(pack, value).expect("readable").to_vec()
    }

    /// sled, holding every applied write: what every read of sled goes through.
    pub(crate) fn settled(&self) -> Result<&sled::Tree, StoreError> {
        self.settle()?;
        Ok(&self.tree)
    }

    /// Writes the write-back to sled, if it holds anything.
    fn settle(&self) -> Result<(), StoreError> {
        if !self.unwritten.load(Ordering::Acquire) {
            return Ok(());
        }
        let _writer = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        self.write_out(&mut pending)
    }

    /// Refuses to go on once a write-back has failed.
    fn check_failed(&self) -> Result<(), StoreError> {
        match self.failed.get() {
            Some(first) => Err(StoreError::Failed(Box::new(first.clone()))),
            None => Ok(()),
        }
    }

    /// Writes everything `pending` holds in one atomic sled batch (it ends with the
    /// `applied_position` of the last batch applied). Called holding `write`.
    fn write_out(&self, pending: &mut WriteBack) -> Result<(), StoreError> {
        self.check_failed()?;
        let writes: Vec<apply::Write> = std::mem::take(&mut pending.writes).into_iter().collect();
        pending.since = None;
        if !writes.is_empty() {
            if let Err(e) = apply::write_atomically(&self.tree, writes) {
                let e = StoreError::from(e);
                tracing::error!(error = %e, "projection write-back failed; refusing writes and sled reads until a restart");
                let _ = self.failed.set(e.clone());
                return Err(e);
            }
        }
        self.unwritten.store(false, Ordering::Release);
        Ok(())
    }

    pub(crate) fn created_monotone(&self) -> bool {
        self.created_monotone.load(Ordering::Acquire)
    }

    pub(crate) fn load(&self, id: ActionId) -> Result<Option<Action>, StoreError> {
        Ok(self.load_shared(id)?.map(Arc::unwrap_or_clone))
    }

    /// Publishes a batch through `last`, written to sled, to the memos.
    fn publish(&self, last: Position, changed: Vec<apply::Changed>) {
        self.memos.publishing(last);
        for c in changed {
            if c.created {
                for r in keys::resources_of(&c.action) {
                    for tenant in [Some(c.action.tenant.clone()), None] {
                        let k = cache::ResourceKey {
                            tenant,
                            resource: r.clone(),
                        };
                        self.memos.resources.created(&k, c.action.id);
                    }
                }
            }
            let action = Arc::new(c.action);
            self.written.put(action.clone(), c.tail, c.encoded_len);
            self.memos.snapshots.put(action, c.encoded_len);
        }
    }

    /// The snapshot value of action `id` as sled holds it, bypassing the memos: the action
    /// and its history tail (for `verify`).
    pub(crate) fn load_stored(
        &self,
        id: ActionId,
    ) -> Result<Option<(Action, Vec<u8>)>, StoreError> {
        let tree = self.settled()?;
        match snapshot_bytes(|k| tree.get(k).map_err(store_err), &self.values, id, false)? {
            None => Ok(None),
            Some(v) => decode_snapshot(id, &v).map(|(a, tail)| Some((a, tail.to_vec()))),
        }
    }

    /// What the applier's memo of written values holds for action `id` (for `verify`).
    pub(crate) fn written(&self, id: ActionId) -> Option<written::Stored> {
        self.written.get(id)
    }

    /// What the snapshot memo holds for action `id` (for `verify`).
    pub(crate) fn memo(&self, id: ActionId) -> Option<Arc<Action>> {
        self.memos.snapshots.get(id)
    }

    /// The snapshot of action `id`, from the memo when it holds it.
    pub(crate) fn load_shared(&self, id: ActionId) -> Result<Option<Arc<Action>>, StoreError> {
        self.load_shared_as(id, true)
    }

    /// [`Self::load_shared`], looking in the pack of `id` first or, with `pack_first`
    /// false (for an action known not to be finished), under its own key first.
    pub(crate) fn load_shared_as(
        &self,
        id: ActionId,
        pack_first: bool,
    ) -> Result<Option<Arc<Action>>, StoreError> {
        if let Some(a) = self.memos.snapshots.get(id) {
            return Ok(Some(a));
        }
        // Read before the lookup: what makes the offer below safe (see `cache`).
        let read_at = self.applied.load(Ordering::Acquire);
        let tree = self.settled()?;
        match snapshot_bytes(
            |k| tree.get(k).map_err(store_err),
            &self.values,
            id,
            pack_first,
        )? {
            None => Ok(None),
            Some(v) => {
                let a = Arc::new(decode_action(id, &v)?);
                self.memos.snapshots.offer(a.clone(), v.len(), read_at);
                Ok(Some(a))
            }
        }
    }

    /// The action with `uid`: a uid key, or for a generated uid (`al-<id>`, which has no
    /// key, see `keys`) the action of that id when it carries that uid.
    fn uid(&self, uid: &str) -> Result<Option<ActionId>, StoreError> {
        match self.settled()?.get(keys::uid_key(uid)).map_err(store_err)? {
            Some(v) => keys::read_u64(&v).map(Some).ok_or_else(|| {
                StoreError::Damaged(format!("uid {uid:?}: malformed id ({} bytes)", v.len()))
            }),
            None => match keys::generated_uid_id(uid) {
                Some(id) => Ok(self.load(id)?.filter(|a| a.uid == uid).map(|a| a.id)),
                None => Ok(None),
            },
        }
    }

    /// A counter's value (0 when absent).
    pub(crate) fn counter(&self, key: &[u8]) -> Result<u64, StoreError> {
        match self.settled()?.get(key).map_err(store_err)? {
            None => Ok(0),
            Some(v) => keys::read_u64(&v)
                .ok_or_else(|| StoreError::Damaged(format!("counter of {} bytes", v.len()))),
        }
    }

    /// Applies `entries` (see [`StateStore::apply`]) in folds of about `batch_writes_max`
    /// writes, each carrying its own `applied_position`, into the write-back: it goes to
    /// sled in one atomic batch once it holds [`WRITE_BACK_KEYS_MAX`] keys or its oldest
    /// write is [`WRITE_BACK_DELAY`] old, when the applier has been idle that long
    /// ([`StateStore::write_back`]), and before anything reads sled. A run of events on the
    /// same actions then costs sled one write per action and one batch (sled seals and
    /// writes out two of its buffers per batch), not one per commit. A crash loses only
    /// what the log still holds: sled's `applied_position` is the last batch written.
    fn apply_entries(&self, entries: &[CommittedEntry]) -> Result<(), StoreError> {
        let mut created = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        self.check_failed()?;
        let mut i = 0;
        while i < entries.len() {
            let applied = self.applied.load(Ordering::Acquire);
            let mut fold = apply::Fold::new(
                &self.tree,
                &self.values,
                &pending.writes,
                &self.written,
                *created,
            );
            while i < entries.len() {
                let c = &entries[i];
                i += 1;
                if c.position <= applied {
                    continue;
                }
                fold.fold_entry(c)?;
                if fold.writes_estimate() >= self.config.batch_writes_max {
                    break;
                }
            }
            if let Some(last) = fold.last_position() {
                let meta = fold.created();
                let mut done = fold.finish()?;
                self.seal(&pending.writes, &mut done.writes, meta.last_id)?;
                // Into the write-back, which goes to sled in one atomic batch when it is
                // big or old enough, when the applier has been idle for a moment, and
                // before any read of sled.
                if pending.writes.is_empty() {
                    pending.since = Some(std::time::Instant::now());
                }
                pending.writes.extend(done.writes);
                self.unwritten.store(true, Ordering::Release);
                if pending.writes.len() >= WRITE_BACK_KEYS_MAX
                    || pending
                        .since
                        .is_some_and(|t| t.elapsed() >= WRITE_BACK_DELAY)
                {
                    self.write_out(&mut pending)?;
                }
                // Into the memos before anyone can be told it is applied.
                self.publish(last, done.changed);
                self.applied.store(last, Ordering::Release);
                self.created_monotone
                    .store(meta.monotone, Ordering::Release);
                *created = meta;
            }
        }
        Ok(())
    }
}

/// Whether a caller scoped to `tenant` (`None`: every tenant) may see `a`.
fn in_scope(a: &Action, tenant: Option<&str>) -> bool {
    tenant.is_none_or(|t| a.tenant == t)
}

impl StateStore for Projection {
    fn action(&self, id: ActionId) -> Result<Option<Action>, StoreError> {
        self.load(id)
    }

    fn id_for_uid(&self, uid: &str) -> Result<Option<ActionId>, StoreError> {
        self.uid(uid)
    }

    fn exclusive_holder(
        &self,
        tenant: &str,
        resource: &ResourceRef,
    ) -> Result<Option<ActionId>, StoreError> {
        apply::read_exclusive(self.settled()?, &keys::exclusive_key(tenant, resource))
    }

    fn idempotent_result(
        &self,
        tenant: &str,
        key: &str,
    ) -> Result<Option<IdempotentResult>, StoreError> {
        let Some(v) = self
            .settled()?
            .get(keys::idempotency_key(tenant, key))
            .map_err(store_err)?
        else {
            return Ok(None);
        };
        let s: StoredIdempotent =
            codec::decode_bounded(&v, STORED_VALUE_BYTES_MAX).map_err(|e| {
                StoreError::Damaged(format!("idempotent answer ({tenant:?}, {key:?}): {e}"))
            })?;
        Ok(Some(IdempotentResult {
            request_digest: s.request_digest,
            position: s.position,
            recorded_at: s.recorded_at,
            actions: s.actions,
        }))
    }

    fn max_action_id(&self) -> Result<ActionId, StoreError> {
        let tree = self.settled()?;
        let unfinished = match tree.scan_prefix([keys::P_SNAPSHOT]).next_back() {
            None => 0,
            Some(kv) => {
                let (k, _) = kv.map_err(store_err)?;
                keys::read_u64(&k[1..]).ok_or_else(|| {
                    StoreError::Damaged(format!("snapshot key of {} bytes", k.len()))
                })?
            }
        };
        let finished = match tree.scan_prefix([keys::P_PACK]).next_back() {
            None => 0,
            Some(kv) => {
                let (k, v) = kv.map_err(store_err)?;
                let (pack, decoded) = pack::decode_stored(&self.values, &k, &v)?;
                let last = decoded.iter().next_back().map_or(0, |(o, _)| u64::from(o));
                pack * keys::PACK_IDS + last
            }
        };
        Ok(unfinished.max(finished))
    }

    fn applied_position(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    fn apply(&self, entries: &[CommittedEntry]) -> Result<(), StoreError> {
        self.apply_entries(entries)
    }

    fn unwritten(&self) -> bool {
        self.unwritten.load(Ordering::Acquire)
    }

    fn write_back(&self) -> Result<(), StoreError> {
        self.settle()
    }

    fn failure(&self) -> Option<StoreError> {
        self.failed.get().cloned()
    }
}

/// Decodes the action of a snapshot value (see `keys`), leaving its history tail.
/// The snapshot value of action `id` read through `get`: under its own key while it is not
/// finished, else in its pack (see `pack`). `pack_first` looks in the pack first (for
/// readers, who mostly read finished actions; the applier mostly changes unfinished ones).
pub(crate) fn snapshot_bytes(
    get: impl Fn(&[u8]) -> Result<Option<sled::IVec>, StoreError>,
    values: &values::ValueFile,
    id: ActionId,
    pack_first: bool,
) -> Result<Option<sled::IVec>, StoreError> {
    let packed = || -> Result<Option<sled::IVec>, StoreError> {
        let pack = keys::pack_of(id);
        match get(&keys::pack_key(pack))? {
            None => Ok(None),
            Some(v) => pack::find(id, &values.resolve(pack, &v)?)
                .map(|found| found.map(sled::IVec::from))
                .map_err(|e| StoreError::Damaged(format!("pack {pack}: {e}"))),
        }
    };
    let own = || get(&keys::snapshot_key(id));
    let (first, second): (&dyn Fn() -> _, &dyn Fn() -> _) = match pack_first {
        true => (&packed, &own),
        false => (&own, &packed),
    };
    match first()? {
        Some(v) => Ok(Some(v)),
        None => second(),
    }
}

/// Every stored snapshot value with an id in `lo..hi`, newest first: the unfinished
/// actions' own keys and the packs' entries, merged.
pub(crate) fn snapshots_newest_first(
    tree: &sled::Tree,
    values: &Arc<values::ValueFile>,
    lo: ActionId,
    hi: ActionId,
) -> impl Iterator<Item = Result<(ActionId, sled::IVec), StoreError>> {
    let own = {
        let start = keys::snapshot_key(lo).to_vec();
        let end = match hi {
            ActionId::MAX => vec![keys::P_SNAPSHOT + 1],
            hi => keys::snapshot_key(hi).to_vec(),
        };
        tree.range(start..end).rev().map(|kv| {
            let (k, v) = kv.map_err(store_err)?;
            let id = keys::read_u64(&k[1..])
                .ok_or_else(|| StoreError::Damaged(format!("snapshot key {k:?} is malformed")))?;
            Ok((id, v))
        })
    };
    let packed = {
        let start = keys::pack_key(keys::pack_of(lo)).to_vec();
        let end = match hi {
            ActionId::MAX => vec![keys::P_PACK + 1],
            hi => keys::pack_key(keys::pack_of(hi - 1) + 1).to_vec(),
        };
        let values = values.clone();
        tree.range(start..end).rev().flat_map(
            move |kv| -> Vec<Result<(ActionId, sled::IVec), StoreError>> {
                let unpack = || -> Result<Vec<(ActionId, sled::IVec)>, StoreError> {
                    let (k, v) = kv.map_err(store_err)?;
                    let (pack, decoded) = pack::decode_stored(&values, &k, &v)?;
                    Ok(decoded
                        .iter()
                        .rev()
                        .map(|(o, v)| (pack * keys::PACK_IDS + u64::from(o), sled::IVec::from(v)))
                        .filter(|(id, _)| (lo..hi).contains(id))
                        .collect())
                };
                match unpack() {
                    Ok(entries) => entries.into_iter().map(Ok).collect(),
                    Err(e) => vec![Err(e)],
                }
            },
        )
    };
    NewestFirst {
        a: own.peekable(),
        b: packed.peekable(),
    }
}

/// The stored snapshot with the smallest id at or above `id`, if any.
pub(crate) fn first_snapshot_at_or_after(
    tree: &sled::Tree,
    values: &values::ValueFile,
    id: ActionId,
) -> Result<Option<(ActionId, sled::IVec)>, StoreError> {
    let own = match tree
        .range(keys::snapshot_key(id).to_vec()..vec![keys::P_SNAPSHOT + 1])
        .next()
    {
        None => None,
        Some(kv) => {
            let (k, v) = kv.map_err(store_err)?;
            let found = keys::read_u64(&k[1..])
                .ok_or_else(|| StoreError::Damaged(format!("snapshot key {k:?} is malformed")))?;
            Some((found, v))
        }
    };
    let mut packed = None;
    // The pack of `id` may hold only smaller ids; the next pack then holds the answer.
    for kv in tree.range(keys::pack_key(keys::pack_of(id)).to_vec()..[keys::P_PACK + 1].to_vec()) {
        let (k, v) = kv.map_err(store_err)?;
        let (pack, decoded) = pack::decode_stored(values, &k, &v)?;
        packed = decoded
            .iter()
            .map(|(o, v)| (pack * keys::PACK_IDS + u64::from(o), v))
            .find(|(found, _)| *found >= id)
            .map(|(found, v)| (found, sled::IVec::from(v)));
        if packed.is_some() {
            break;
        }
    }
    Ok(match (own, packed) {
        (Some(a), Some(b)) => Some(if a.0 < b.0 { a } else { b }),
        (a, b) => a.or(b),
    })
}

/// Two newest-first streams merged newest first (an id in both, which only a concurrent
/// move from a key to a pack can cause, comes once).
struct NewestFirst<A: Iterator, B: Iterator> {
    a: std::iter::Peekable<A>,
    b: std::iter::Peekable<B>,
}

impl<A, B> Iterator for NewestFirst<A, B>
where
    A: Iterator<Item = Result<(ActionId, sled::IVec), StoreError>>,
    B: Iterator<Item = Result<(ActionId, sled::IVec), StoreError>>,
{
    type Item = Result<(ActionId, sled::IVec), StoreError>;
    fn next(&mut self) -> Option<Self::Item> {
        let id = |x: Option<&Self::Item>| match x {
            None => None,
            Some(Err(_)) => Some(ActionId::MAX),
            Some(Ok((id, _))) => Some(*id),
        };
        match (id(self.a.peek()), id(self.b.peek())) {
            (None, None) => None,
            (Some(_), None) => self.a.next(),
            (None, Some(_)) => self.b.next(),
            (Some(x), Some(y)) if x > y => self.a.next(),
            (Some(x), Some(y)) if x < y => self.b.next(),
            _ => {
                self.b.next();
                self.a.next()
            }
        }
    }
}

pub(crate) fn decode_action(id: ActionId, value: &[u8]) -> Result<Action, StoreError> {
    decode_snapshot(id, value).map(|(a, _)| a)
}

/// Decodes a snapshot value into the action and its history tail (whole locations).
pub(crate) fn decode_snapshot(id: ActionId, value: &[u8]) -> Result<(Action, &[u8]), StoreError> {
    let (bytes, tail) = keys::split_snapshot(value).ok_or_else(|| {
        StoreError::Damaged(format!(
            "snapshot of action {id}: a value of {} bytes is not an action and whole record locations",
            value.len()
        ))
    })?;
    let a: Action = codec::decode_bounded(bytes, STORED_VALUE_BYTES_MAX)
        .map_err(|e| StoreError::Damaged(format!("snapshot of action {id}: {e}")))?;
    if a.id != id {
        return Err(StoreError::Damaged(format!(
            "snapshot stored under id {id} is action {}",
            a.id
        )));
    }
    Ok((a, tail))
}

pub(crate) fn store_err(e: sled::Error) -> StoreError {
    StoreError::from(e)
}

/// sled's I/O errors keep their kind (a disk full stays [`StoreError::DiskFull`]); its
/// other failures are the engine's.
impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> StoreError {
        match e {
            sled::Error::Io(e) => StoreError::io(e),
            other => StoreError::Engine(other.to_string()),
        }
    }
}

fn sled_err(dir: &Path, e: sled::Error) -> ProjectionError {
    ProjectionError::Sled {
        dir: dir.to_path_buf(),
        reason: e.to_string(),
    }
}
