//! Folding a run of committed log entries into one set of sled writes.
//!
//! [`Fold`] replays entries with [`fold::apply_entry`] (the one fold) on top of what sled
//! holds, keeping every action it touches in memory, and mirrors exactly what
//! [`crate::ledger::memory::MemoryStore`] does per operation for uids, exclusive holders and
//! idempotent answers. [`Fold::finish`] then turns the difference between each touched
//! action's stored snapshot and its final one into writes: the new snapshot, index bucket
//! changes (the `updated` index's among them), counter deltas, plus uids, holders,
//! idempotent answers and the meta records. Each snapshot carries the locations of its
//! latest records (see `keys`); the runs that overflow it become history keys. An action
//! touched many times in the run is written once, and each bucket or counter once — which
//! is what makes bulk catch-up and rebuild cheaper than one write per event.

use super::keys;
use super::written::{Stored, Written};
use super::{store_err, CreatedMeta, StoredIdempotent, STORED_VALUE_BYTES_MAX};
use crate::event::codec;
use crate::event::fold;
use crate::event::{Action, ActionId, Op};
use crate::ledger::{CommittedEntry, StoreError};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// Estimated sled writes per operation, to cut batches near `batch_writes_max` before the
/// writes are known. A create touches ~7 buckets, ~14 counters, the snapshot and uid keys;
/// an event the snapshot, and sometimes two updated buckets; on a status change two
/// buckets and four counters (and, once per `HISTORY_INLINE_MAX` records, a history key).
const WRITES_PER_CREATE: usize = 23;
const WRITES_PER_EVENT: usize = 7;

/// One key's new value (`None`: delete it).
pub(crate) type Write = (Vec<u8>, Option<Vec<u8>>);

/// A finished action's new snapshot value at its offset in its pack (`None`: it leaves).
type PackChange = (u8, Option<Vec<u8>>);

/// What one resource list gains in a run: ids appended at its end (ascending), and the
/// snapshot values of finished members (`None`: the member is no longer finished).
#[derive(Default)]
struct ListChanges {
    appended: Vec<ActionId>,
    packed: Vec<(ActionId, Option<Vec<u8>>)>,
}

/// One chunk of a resource list as a run leaves it.
struct ChunkEdit {
    ids: Vec<ActionId>,
    pack: ChunkPack,
    /// Changed by the run: to be written.
    dirty: bool,
}

/// A chunk's pack: its value as stored until an entry changes, then decoded.
enum ChunkPack {
    Stored(Vec<u8>),
    Entries(BTreeMap<u8, Vec<u8>>),
}

impl ChunkEdit {
    /// Sets (`None`: removes) the pack entry at position `at`: spliced into the stored
    /// value while that is raw (a list's last chunk, where most finishes land), else into
    /// the decoded entries.
    fn set(&mut self, at: u8, value: Option<Vec<u8>>) -> Result<(), String> {
        if let ChunkPack::Stored(v) = &self.pack {
            if super::pack::is_raw(v) {
                let spliced = super::pack::splice_raw(v, at, value.as_deref())?;
                self.pack = ChunkPack::Stored(spliced);
                return Ok(());
            }
        }
        let entries = self.entries()?;
        match value {
            Some(v) => entries.insert(at, v),
            None => entries.remove(&at),
        };
        Ok(())
    }

    /// The pack's entries (position → snapshot value), decoded on first use.
    fn entries(&mut self) -> Result<&mut BTreeMap<u8, Vec<u8>>, String> {
        if let ChunkPack::Stored(v) = &self.pack {
            let entries: BTreeMap<u8, Vec<u8>> = super::pack::decode_or_empty(v)?
                .iter()
                .map(|(o, v)| (o, v.to_vec()))
                .collect();
            if entries
                .keys()
                .next_back()
                .is_some_and(|&o| usize::from(o) >= self.ids.len())
            {
                return Err("a pack entry lies past the chunk's ids".into());
            }
            self.pack = ChunkPack::Entries(entries);
        }
        match &mut self.pack {
            ChunkPack::Entries(e) => Ok(e),
            ChunkPack::Stored(_) => unreachable!("decoded above"),
        }
    }
}

/// What [`Fold::finish`] produces: the writes, and every action they change (for the
/// memos).
pub(crate) struct Finished {
    pub writes: Vec<Write>,
    pub changed: Vec<Changed>,
}

pub(crate) struct Changed {
    pub action: Action,
    /// The history tail its snapshot value now carries.
    pub tail: Arc<[u8]>,
    /// Length of its encoded snapshot.
    pub encoded_len: usize,
    /// Created by this run.
    pub created: bool,
}

/// Applied writes not yet in sled, by key (`None`: a delete); see `Projection::pending`.
pub(crate) type Unwritten = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

pub(crate) struct Fold<'t> {
    tree: &'t sled::Tree,
    /// Where sealed packs are read (see `values`).
    values: &'t super::values::ValueFile,
    /// Applied writes sled does not hold yet: read before sled.
    unwritten: &'t Unwritten,
    /// The applier's memo of the snapshot values it wrote: consulted before sled.
    written: &'t Written,
    /// What sled holds for each touched action — the action and the history tail of its
    /// snapshot value (`None`: it did not exist).
    before: HashMap<ActionId, Option<Stored>>,
    /// Locations of the records folded in this run, per action, in log order.
    locations: HashMap<ActionId, Vec<u8>>,
    /// The current state of each touched action that exists.
    now: HashMap<ActionId, Box<Action>>,
    uids: Vec<(String, ActionId)>,
    /// Exclusive holder keys read or changed in this run; `None` = no holder.
    exclusive: HashMap<Vec<u8>, Option<ActionId>>,
    exclusive_dirty: HashSet<Vec<u8>>,
    idempotent: HashMap<Vec<u8>, StoredIdempotent>,
    created: CreatedMeta,
    last_position: Option<u64>,
    writes_estimate: usize,
}

pub(crate) fn read_exclusive(
    tree: &sled::Tree,
    key: &[u8],
) -> Result<Option<ActionId>, StoreError> {
    holder_of(tree.get(key).map_err(store_err)?.as_deref())
}

fn holder_of(value: Option<&[u8]>) -> Result<Option<ActionId>, StoreError> {
    match value {
        None => Ok(None),
        Some(v) => keys::read_u64(v)
            .map(Some)
            .ok_or_else(|| StoreError::Damaged(format!("exclusive holder of {} bytes", v.len()))),
    }
}

impl<'t> Fold<'t> {
    pub fn new(
        tree: &'t sled::Tree,
        values: &'t super::values::ValueFile,
        unwritten: &'t Unwritten,
        written: &'t Written,
        created: CreatedMeta,
    ) -> Fold<'t> {
        Fold {
            tree,
            values,
            unwritten,
            written,
            before: HashMap::new(),
            locations: HashMap::new(),
            now: HashMap::new(),
            uids: Vec::new(),
            exclusive: HashMap::new(),
            exclusive_dirty: HashSet::new(),
            idempotent: HashMap::new(),
            created,
            last_position: None,
            writes_estimate: 0,
        }
    }

    /// The value of `key` as applied: unwritten, else what sled holds.
    fn get(&self, key: &[u8]) -> Result<Option<sled::IVec>, StoreError> {
        match self.unwritten.get(key) {
            Some(v) => Ok(v.as_deref().map(sled::IVec::from)),
            None => self.tree.get(key).map_err(store_err),
        }
    }

    /// The last chunk of the resource list under `prefix` (at or below the key `upper`,
    /// when given) and its value, as applied (the write-back over sled). A chunk that is
    /// not full is its list's last, so one found in the write-back answers without a sled
    /// read (a rebuild holds every list's unfilled chunk there).
    fn last_under(
        &self,
        prefix: &[u8],
        upper: Option<&[u8]>,
    ) -> Result<Option<(Vec<u8>, sled::IVec)>, StoreError> {
        use std::ops::Bound;
        let upper = match upper {
            Some(u) => Bound::Included(u.to_vec()),
            None => keys::prefix_end(prefix).map_or(Bound::Unbounded, Bound::Excluded),
        };
        let unwritten = self
            .unwritten
            .range::<Vec<u8>, _>((Bound::Included(prefix.to_vec()), upper.clone()))
            .rev()
            .find_map(|(k, v)| v.as_ref().map(|v| (k.clone(), sled::IVec::from(&v[..]))));
        if let Some((_, v)) = &unwritten {
            if !keys::chunk_is_full(v) {
                return Ok(unwritten);
            }
        }
        let mut in_sled = None;
        for kv in self
            .tree
            .range((Bound::Included(prefix.to_vec()), upper))
            .rev()
        {
            let (k, v) = kv.map_err(store_err)?;
            match self.unwritten.get(&*k) {
                // Deleted, not yet in sled.
                Some(None) => continue,
                // Rewritten: the write-back's value is found above.
                Some(Some(_)) => break,
                None => {
                    in_sled = Some((k.to_vec(), v));
                    break;
                }
            }
        }
        Ok(match (in_sled, unwritten) {
            (Some(a), Some(b)) => Some(if a.0 > b.0 { a } else { b }),
            (a, b) => a.or(b),
        })
    }

    /// Applies one run's `changes` to the resource list under `prefix`: appends its new ids
    /// (into its last chunk while that has room, then into new chunks) and sets or removes
    /// the finished members' entries in their chunks' packs. Each chunk it changes is
    /// written once.
    fn edit_list(
        &self,
        prefix: &[u8],
        changes: ListChanges,
        writes: &mut Vec<Write>,
    ) -> Result<(), StoreError> {
        let damaged = |why: String| StoreError::Damaged(format!("resource list {prefix:?}: {why}"));
        let read = |(k, v): (Vec<u8>, sled::IVec)| -> Result<(ActionId, ChunkEdit), StoreError> {
            let first = k
                .get(prefix.len()..)
                .and_then(keys::read_u64)
                .ok_or_else(|| damaged(format!("chunk key {k:?} is malformed")))?;
            let (ids, pack) = keys::chunk_split(first, &v)
                .ok_or_else(|| damaged(format!("chunk {first} is malformed")))?;
            let chunk = ChunkEdit {
                ids,
                pack: ChunkPack::Stored(pack.to_vec()),
                dirty: false,
            };
            Ok((first, chunk))
        };
        // The chunks this run touches, by first id.
        let mut chunks: BTreeMap<ActionId, ChunkEdit> = BTreeMap::new();
        if !changes.appended.is_empty() {
            if let Some(last) = self.last_under(prefix, None)? {
                let (first, chunk) = read(last)?;
                chunks.insert(first, chunk);
            }
        }
        for id in changes.appended {
            match chunks.values_mut().next_back() {
                Some(last) if last.ids.last().is_some_and(|&l| l >= id) => {
                    let l = last.ids.last().copied().unwrap_or_default();
                    return Err(damaged(format!("action {id} arrived after action {l}")));
                }
                Some(last) if last.ids.len() < keys::RESOURCE_CHUNK_IDS => {
                    last.ids.push(id);
                    last.dirty = true;
                }
                _ => {
                    let chunk = ChunkEdit {
                        ids: vec![id],
                        pack: ChunkPack::Stored(Vec::new()),
                        dirty: true,
                    };
                    chunks.insert(id, chunk);
                }
            }
        }
        for (id, value) in changes.packed {
            let known = chunks
                .range(..=id)
                .next_back()
                .filter(|(_, c)| c.ids.binary_search(&id).is_ok())
                .map(|(&first, _)| first);
            let first = match known {
                Some(first) => first,
                None => {
                    let stored = self
                        .last_under(prefix, Some(&keys::chunk_key(prefix, id)))?
                        .ok_or_else(|| damaged(format!("action {id} is in none of its chunks")))?;
                    let (first, chunk) = read(stored)?;
                    chunks.entry(first).or_insert(chunk);
                    first
                }
            };
            let chunk = chunks.get_mut(&first).expect("just found or inserted");
            let at = chunk
                .ids
                .binary_search(&id)
                .map_err(|_| damaged(format!("action {id} is not in chunk {first}")))?;
            chunk
                .set(at as u8, value)
                .map_err(|e| damaged(format!("chunk {first}: {e}")))?;
            chunk.dirty = true;
        }
        for (first, mut chunk) in chunks.into_iter().filter(|(_, c)| c.dirty) {
            // A chunk's pack is compressed once the chunk is full: a list's last chunk,
            // where its newest actions finish, stays raw, so each finish there costs a copy
            // rather than a decompression and a compression.
            let full = chunk.ids.len() == keys::RESOURCE_CHUNK_IDS;
            if let ChunkPack::Stored(v) = &chunk.pack {
                if full && super::pack::is_raw(v) {
                    // Filled by this run: compressed now.
                    chunk
                        .entries()
                        .map_err(|e| damaged(format!("chunk {first}: {e}")))?;
                }
            }
            let pack = match chunk.pack {
                ChunkPack::Stored(v) => v,
                ChunkPack::Entries(e) if e.is_empty() => Vec::new(),
                ChunkPack::Entries(e) => {
                    super::pack::encode_as(e.iter().map(|(o, v)| (*o, &v[..])), full)
                        .map_err(StoreError::Other)?
                }
            };
            writes.push((
                keys::chunk_key(prefix, first),
                Some(keys::chunk_value(&chunk.ids, &pack)),
            ));
        }
        Ok(())
    }

    pub fn writes_estimate(&self) -> usize {
        self.writes_estimate
    }

    pub fn last_position(&self) -> Option<u64> {
        self.last_position
    }

    pub fn created(&self) -> CreatedMeta {
        self.created
    }

    /// Brings action `id` into memory (once), remembering what sled holds.
    fn load(&mut self, id: ActionId) -> Result<(), StoreError> {
        if self.before.contains_key(&id) {
            return Ok(());
        }
        // Ids are given out in increasing order: an id above the last one created cannot be
        // stored yet (every create folded so far is noted in `created`), so a create — most
        // of what a rebuild folds — costs no sled read.
        let stored = if id > self.created.last_id {
            debug_assert!(self.written.get(id).is_none());
            // Nothing stored under it; a read that fails (a store that has just failed, such
            // as a full disk) cannot tell, and the failure is reported where it is met.
            debug_assert!(!matches!(
                super::snapshot_bytes(|k| self.get(k), self.values, id, false),
                Ok(Some(_))
            ));
            None
        } else {
            self.stored(id)?
        };
        if let Some((a, _)) = &stored {
            self.now.insert(id, Box::new(Action::clone(a)));
        }
        self.before.insert(id, stored);
        Ok(())
    }

    /// What the applier's memo or sled holds for action `id`.
    fn stored(&self, id: ActionId) -> Result<Option<Stored>, StoreError> {
        Ok(match self.written.get(id) {
            Some(stored) => Some(stored),
            None => match super::snapshot_bytes(|k| self.get(k), self.values, id, false)? {
                None => None,
                Some(v) => {
                    let (a, tail) = super::decode_snapshot(id, &v)?;
                    Some((Arc::new(a), Arc::from(tail)))
                }
            },
        })
    }

    fn holder(&mut self, key: &[u8]) -> Result<Option<ActionId>, StoreError> {
        if let Some(h) = self.exclusive.get(key) {
            return Ok(*h);
        }
        let h = holder_of(self.get(key)?.as_deref())?;
        self.exclusive.insert(key.to_vec(), h);
        Ok(h)
    }

    fn set_holder(&mut self, key: Vec<u8>, holder: Option<ActionId>) {
        self.exclusive_dirty.insert(key.clone());
        self.exclusive.insert(key, holder);
    }

    /// Folds one committed entry. The caller has already skipped entries at or below the
    /// applied position.
    pub fn fold_entry(&mut self, c: &CommittedEntry) -> Result<(), StoreError> {
        if let Some(last) = self.last_position {
            if c.position <= last {
                return Err(StoreError::Other(format!(
                    "record {} arrived after record {last}: entries must be in log order",
                    c.position
                )));
            }
        }
        for op in &c.entry.ops {
            self.load(op.action_id())?;
        }
        let now = &self.now;
        let results = fold::apply_entry(&c.entry, c.position, |id| {
            now.get(&id).map(|a| Action::clone(a))
        })
        .map_err(|e| StoreError::BadRecord {
            position: c.position,
            reason: e.to_string(),
        })?;

        // Per operation, exactly what MemoryStore does.
        let mut touched: Vec<ActionId> = Vec::with_capacity(results.len());
        for a in &results {
            if a.version == 1 {
                self.uids.push((a.uid.clone(), a.id));
                self.created.note(a);
            }
            if a.exclusive {
                let key = keys::exclusive_key(&a.tenant, &a.resource);
                if !a.status.is_terminal() {
                    self.set_holder(key, Some(a.id));
                } else if self.holder(&key)? == Some(a.id) {
                    self.set_holder(key, None);
                }
            }
            if !touched.contains(&a.id) {
                touched.push(a.id);
            }
        }
        let location = keys::location(c.position, c.segment, c.offset);
        for id in touched {
            self.locations
                .entry(id)
                .or_default()
                .extend_from_slice(&location);
        }
        // In order: an action changed twice by the record ends in its later state.
        match &c.entry.idempotency {
            None => {
                for a in results {
                    self.now.insert(a.id, Box::new(a));
                }
            }
            Some(stamp) => {
                for a in &results {
                    self.now.insert(a.id, Box::new(a.clone()));
                }
                self.idempotent.insert(
                    keys::idempotency_key(&stamp.tenant, &stamp.key),
                    StoredIdempotent {
                        request_digest: stamp.request_digest,
                        position: c.position,
                        recorded_at: c.entry.recorded_at,
                        actions: results,
                    },
                );
            }
        }
        self.writes_estimate += 2 + c
            .entry
            .ops
            .iter()
            .map(|op| match op {
                Op::Create(_) => WRITES_PER_CREATE,
                Op::Event { .. } => WRITES_PER_EVENT,
            })
            .sum::<usize>();
        self.last_position = Some(c.position);
        Ok(())
    }

    /// Turns everything folded into writes, meta records last.
    pub fn finish(mut self) -> Result<Finished, StoreError> {
        let mut writes: Vec<Write> = Vec::with_capacity(self.writes_estimate);
        let mut changed: Vec<(ActionId, Arc<[u8]>, usize, bool)> = Vec::new();
        // (index, bucket) → (offset within bucket → add?), and counter → delta. Collected
        // under keys borrowed from the actions (a rebuild window makes ~7 bucket and ~14
        // counter changes per created action, on far fewer distinct keys), in hash maps
        // (ordered ones spent most of this function comparing keys); each distinct key is
        // spelled once and sorted below.
        let mut buckets: HashMap<(keys::Ix<'_>, u64), BTreeMap<u16, bool>> = HashMap::new();
        let mut updated: HashMap<Vec<u8>, BTreeMap<u16, bool>> = HashMap::new();
        let mut counters: HashMap<(keys::Scope<'_>, keys::Dim<'_>), i64> = HashMap::new();
        // Finished actions' snapshot values by pack (offset → new value, `None`: leaves it),
        // and each resource list's changes: the ids it gains (ascending: ids are visited in
        // order) and its finished members' values.
        let mut packs: BTreeMap<u64, Vec<PackChange>> = BTreeMap::new();
        let mut listed: HashMap<keys::Ix<'_>, ListChanges> = HashMap::new();

        // Sorted so writes go to sled in key order (kinder to its leaves).
        let ids: BTreeSet<ActionId> = self.now.keys().copied().collect();
        for id in ids {
            let new: &Action = &self.now[&id];
            let (old, stored_tail) = match self.before.get(&id) {
                Some(Some(stored)) => (Some(&*stored.0), &stored.1[..]),
                _ => (None, &[][..]),
            };
            let added = self.locations.get(&id).map_or(&[][..], Vec::as_slice);
            if old == Some(new) && added.is_empty() {
                continue;
            }
            let action = codec::encode_unbounded(new)
                .map_err(|e| StoreError::Other(format!("cannot encode action {id}: {e}")))?;
            debug_assert!(action.len() <= STORED_VALUE_BYTES_MAX);
            let mut tail = stored_tail.to_vec();
            tail.extend_from_slice(added);
            let run = keys::HISTORY_INLINE_MAX * keys::LOCATION_BYTES;
            let mut spilled = 0;
            while tail.len() - spilled > run {
                let chunk = &tail[spilled..spilled + run];
                let first = keys::read_u64(&chunk[..8]).expect("8 bytes");
                writes.push((keys::history_key(id, first).to_vec(), Some(chunk.to_vec())));
                spilled += run;
            }
            let kept: Arc<[u8]> = Arc::from(&tail[spilled..]);
            // A finished action lives in its pack, any other under its own key; one that
            // finishes in this run moves.
            let value = keys::snapshot_value(&action, &kept);
            let was_packed = old.is_some_and(|o| o.status.is_terminal());
            let own_key = keys::snapshot_key(id).to_vec();
            let (pack, at) = (keys::pack_of(id), keys::pack_offset(id));
            // The chunks of its resource lists carry the same value by the same rule.
            let listed_value = match new.status.is_terminal() {
                true => Some(Some(value.clone())),
                false => was_packed.then_some(None),
            };
            if let Some(v) = listed_value {
                for r in keys::resources_of(new) {
                    let list = listed.entry(keys::Ix::Resource(&new.tenant, r));
                    list.or_default().packed.push((id, v.clone()));
                }
            }
            if new.status.is_terminal() {
                packs.entry(pack).or_default().push((at, Some(value)));
                if old.is_some() && !was_packed {
                    writes.push((own_key, None));
                }
            } else {
                if was_packed {
                    packs.entry(pack).or_default().push((at, None));
                }
                writes.push((own_key, Some(value)));
            }
            changed.push((id, kept, action.len(), old.is_none()));

            let offset = keys::bucket_offset(id);
            let bucket = keys::bucket_of(id);
            // Most events (progress, sub-events, heartbeats) change none of the attributes
            // the id indexes and counters are keyed by: their keys are not even built.
            if !old.is_some_and(|o| keys::same_indexed_attributes(o, new)) {
                let old_ix = old.map(keys::indexes_of).unwrap_or_default();
                let new_ix = keys::indexes_of(new);
                for &ix in old_ix.iter().filter(|ix| !new_ix.contains(ix)) {
                    if let keys::Ix::Resource(..) = ix {
                        // An action's resources are set when it is created, once.
                        return Err(StoreError::Damaged(format!(
                            "action {id} would leave the list of resource {:?}",
                            ix.prefix()
                        )));
                    }
                    buckets
                        .entry((ix, bucket))
                        .or_default()
                        .insert(offset, false);
                }
                for &ix in new_ix.iter().filter(|ix| !old_ix.contains(ix)) {
                    if let keys::Ix::Resource(..) = ix {
                        listed.entry(ix).or_default().appended.push(id);
                        continue;
                    }
                    buckets
                        .entry((ix, bucket))
                        .or_default()
                        .insert(offset, true);
                }
                if let Some(old) = old {
                    for c in keys::counted_in(old) {
                        *counters.entry(c).or_default() -= 1;
                    }
                }
                for c in keys::counted_in(new) {
                    *counters.entry(c).or_default() += 1;
                }
            }

            let new_updated = keys::updated_key(new);
            let old_updated = old.map(keys::updated_key);
            if old_updated.as_ref() != Some(&new_updated) {
                if let Some(k) = old_updated {
                    updated.entry(k).or_default().insert(offset, false);
                }
                updated.entry(new_updated).or_default().insert(offset, true);
            }
        }

        for (pack, changes) in packs {
            let key = keys::pack_key(pack);
            let damaged = |e: String| StoreError::Damaged(format!("pack {pack}: {e}"));
            let mut entries: BTreeMap<u8, Vec<u8>> = match self.get(&key)? {
                None => BTreeMap::new(),
                Some(v) => super::pack::decode(&self.values.resolve(pack, &v)?)
                    .map_err(damaged)?
                    .iter()
                    .map(|(o, v)| (o, v.to_vec()))
                    .collect(),
            };
            for (offset, value) in changes {
                match value {
                    Some(v) => entries.insert(offset, v),
                    None => entries.remove(&offset),
                };
            }
            let value = match entries.is_empty() {
                true => None,
                false => Some(
                    super::pack::encode(entries.iter().map(|(o, v)| (*o, &v[..])))
                        .map_err(StoreError::Other)?,
                ),
            };
            writes.push((key.to_vec(), value));
        }

        let lists = listed.into_iter().map(|(ix, c)| (ix.prefix(), c));
        for (prefix, changes) in sorted(lists) {
            self.edit_list(&prefix, changes, &mut writes)?;
        }

        let buckets = buckets
            .into_iter()
            .map(|((ix, bucket), changes)| (keys::bucket_key(&ix.prefix(), bucket), changes))
            .chain(updated);
        for (key, changes) in sorted(buckets) {
            let mut members: BTreeSet<u16> = match self.get(&key)? {
                None => BTreeSet::new(),
                Some(v) => keys::bucket_members(&v)
                    .ok_or_else(|| {
                        StoreError::Damaged(format!("index bucket {key:?} is malformed"))
                    })?
                    .into_iter()
                    .collect(),
            };
            for (offset, add) in changes {
                if add {
                    members.insert(offset);
                } else {
                    members.remove(&offset);
                }
            }
            let members: Vec<u16> = members.into_iter().collect();
            writes.push((key, keys::bucket_value(&members)));
        }

        let counters = counters
            .into_iter()
            .filter(|&(_, delta)| delta != 0)
            .map(|((scope, dim), delta)| (keys::counter_key(scope, dim), delta));
        for (key, delta) in sorted(counters) {
            let current = match self.get(&key)? {
                None => 0,
                Some(v) => keys::read_u64(&v)
                    .ok_or_else(|| StoreError::Damaged(format!("counter {key:?} is malformed")))?,
            };
            let next = current as i64 + delta;
            if next < 0 {
                return Err(StoreError::Damaged(format!(
                    "counter {key:?} would go below zero ({current} {delta:+})"
                )));
            }
            writes.push((
                key,
                (next > 0).then(|| (next as u64).to_be_bytes().to_vec()),
            ));
        }

        for (uid, id) in self.uids {
            if keys::has_uid_key(id, &uid) {
                writes.push((keys::uid_key(&uid), Some(id.to_be_bytes().to_vec())));
            }
        }
        for key in self.exclusive_dirty {
            let value = self.exclusive.get(&key).copied().flatten();
            writes.push((key, value.map(|id| id.to_be_bytes().to_vec())));
        }
        for (key, answer) in self.idempotent {
            let value = codec::encode_unbounded(&answer)
                .map_err(|e| StoreError::Other(format!("cannot encode idempotent answer: {e}")))?;
            writes.push((key, Some(value)));
        }
        writes.push((
            keys::META_CREATED.to_vec(),
            Some(self.created.encode().to_vec()),
        ));
        if let Some(last) = self.last_position {
            writes.push((
                keys::META_APPLIED.to_vec(),
                Some(last.to_be_bytes().to_vec()),
            ));
        }
        let changed = changed
            .into_iter()
            .filter_map(|(id, tail, encoded_len, created)| {
                let action = *self.now.remove(&id)?;
                Some(Changed {
                    action,
                    tail,
                    encoded_len,
                    created,
                })
            })
            .collect();
        Ok(Finished { writes, changed })
    }
}

/// The entries in key order (writes go to sled in key order).
fn sorted<V>(entries: impl Iterator<Item = (Vec<u8>, V)>) -> Vec<(Vec<u8>, V)> {
    let mut entries: Vec<(Vec<u8>, V)> = entries.collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    entries
}

fn to_batch(writes: impl IntoIterator<Item = Write>) -> sled::Batch {
    let mut batch = sled::Batch::default();
    for (k, v) in writes {
        match v {
            Some(v) => batch.insert(k, v),
            None => batch.remove(k),
        }
    }
    batch
}

/// Writes everything in one atomic sled batch.
pub(crate) fn write_atomically(tree: &sled::Tree, writes: Vec<Write>) -> Result<(), sled::Error> {
    tree.apply_batch(to_batch(writes))
}

/// Writes in sled batches of at most `per_batch` writes, in order. Not atomic as a whole:
/// only for a rebuild, whose projection has no format version until it completes, so a
/// crash in between is detected at the next open and the rebuild redone.
pub(crate) fn write_in_chunks(
    tree: &sled::Tree,
    writes: Vec<Write>,
    per_batch: usize,
) -> Result<(), sled::Error> {
    let mut it = writes.into_iter().peekable();
    while it.peek().is_some() {
        tree.apply_batch(to_batch(it.by_ref().take(per_batch.max(1))))?;
    }
    Ok(())
}
