//! Planning and running an [`ActionQuery`]: pick the most selective index, scan it newest
//! first, post-filter the rest on the snapshot.
//!
//! **Which index.** For one tenant, every equality filter that is set names a candidate
//! index whose size is known exactly from its counter — the tenant's recency index
//! (always), the resource index, the status indexes (merged), type, user, kind — and the
//! smallest one is scanned. An `updated_since`/`updated_until` range takes its candidates
//! from the `updated` index instead when they are fewer than the best candidate's entries
//! (collected newest id bucket first, given up past that many; finding them reads the
//! tenant's updated-index keys, ~1 per 4096 ids and time bucket). A batch get by `ids`
//! reads those snapshots directly.
//! For every tenant (admin, `tenant: None`) only the resource index is used (merged over the
//! tenants that have actions on that resource); everything else scans all snapshots newest
//! first.
//!
//! **Created-time ranges** cost nothing extra: ids are assigned in log order and records'
//! times never go backwards, so `created_at` is non-decreasing in id order and a range of
//! creation times is a range of ids, found by binary search over the snapshots and applied
//! as key bounds on whichever index is scanned. The projection records whether that order
//! has ever been broken (an imported log could); if so, ranges are only post-filtered.
//!
//! **Lists by resource only** (and tenant) — the dialects' "actions of this server" query —
//! are paged out of the resource's whole id list: kept in the projection's memo (see
//! `cache`; the applier keeps it current), or read once from the resource index (≤ 1024
//! ids; a larger resource takes the general path below) and offered to it. With the
//! snapshots memoised too, such a page needs no sled read ([`run_in_memory`]). Otherwise
//! the page's finished actions come from the packs its chunks carry (see `keys`): a page
//! of 50 reads three or four neighbouring chunks, not 50 id packs.
//!
//! **Cost.**
//! - A page: O(scanned index entries until `limit + 1` matches) snapshot reads. With one
//!   filter (or none) every scanned entry matches, so a page costs `limit + 1` reads.
//! - `total`: from counters when the filters are the tenant plus at most one of resource,
//!   `resource_type`, statuses, type, user, kind — O(1). Any other combination (two equality
//!   filters, time ranges, `ids`) counts matches while scanning the chosen index to its
//!   end: O(size of that index) snapshot reads, for every page.
//! - `offset`: O(offset) — the skipped matches are read and filtered, then dropped. Keyset
//!   cursors cost nothing extra; prefer them.
//! - `resource_type` alone has no index: it post-filters the tenant's recency index (its
//!   total comes from a counter).

use super::cache::{ResourceIds, ResourceKey, RESOURCE_IDS_MAX};
use super::cursor;
use super::keys::{self, Dim, Scope};
use super::query::{ActionQuery, Page, QueryError, LIST_IDS_MAX, LIST_LIMIT_MAX};
use super::{pack, Projection};
use crate::event::{Action, ActionId, Micros, ResourceRef};
use crate::ledger::StoreError;
use std::sync::Arc;

pub(super) fn store(e: StoreError) -> QueryError {
    QueryError::Store(e)
}

pub(super) fn sled_q(e: sled::Error) -> QueryError {
    QueryError::Store(e.into())
}

pub(super) fn damaged(why: String) -> QueryError {
    QueryError::Store(StoreError::Damaged(why))
}

/// Does `a` satisfy every filter of `q`? The single definition of the filter semantics;
/// indexes only narrow what is checked here.
pub(crate) fn matches(q: &ActionQuery, a: &Action) -> bool {
    q.tenant.as_ref().is_none_or(|t| &a.tenant == t)
        && q.resource
            .as_ref()
            .is_none_or(|r| &a.resource == r || a.related.contains(r))
        && q.resource_type.as_ref().is_none_or(|t| {
            &a.resource.resource_type == t || a.related.iter().any(|r| &r.resource_type == t)
        })
        && (q.statuses.is_empty() || q.statuses.contains(&a.status))
        && q.action_type.as_ref().is_none_or(|t| &a.action_type == t)
        && q.user.as_ref().is_none_or(|u| a.user.as_ref() == Some(u))
        && q.kind.is_none_or(|k| a.kind == k)
        && q.created_since.is_none_or(|t| a.created_at >= t)
        && q.created_until.is_none_or(|t| a.created_at < t)
        && q.updated_since.is_none_or(|t| a.updated_at >= t)
        && q.updated_until.is_none_or(|t| a.updated_at < t)
        && (q.ids.is_empty() || q.ids.contains(&a.id))
}

/// Ids in descending order, each with its snapshot bytes when the source already has them.
pub(super) trait IdStream {
    fn next_id(&mut self) -> Result<Option<Entry>, QueryError>;
}

/// One id a stream yields, with its snapshot value when the source already holds it.
type Entry = (ActionId, Option<sled::IVec>);

/// Newest-first scan of one index whose keys are `prefix ‖ u64` and whose values each hold
/// ascending ids — an id-bucket index ([`BucketScan::buckets`]) or a resource list
/// ([`BucketScan::chunks`]) — limited to ids in `lo..hi`.
struct BucketScan {
    iter: sled::Iter,
    prefix_len: usize,
    /// The entries a key (its u64 suffix) and value hold, ascending; `None` if malformed.
    decode: fn(u64, &[u8]) -> Option<Vec<Entry>>,
    /// Entries of the current key, ascending (popped from the end).
    pending: Vec<Entry>,
    lo: ActionId,
    hi: ActionId,
    done: bool,
}

/// An id bucket's members (the snapshots are elsewhere).
fn bucket_entries(bucket: u64, value: &[u8]) -> Option<Vec<Entry>> {
    without_snapshots(keys::bucket_ids(bucket, value))
}

/// Ids as entries that carry no snapshot.
fn without_snapshots(ids: Option<Vec<ActionId>>) -> Option<Vec<Entry>> {
    Some(ids?.into_iter().map(|id| (id, None)).collect())
}

/// A chunk's ids, with the snapshot values its pack holds for the finished ones.
fn chunk_entries(first: ActionId, value: &[u8]) -> Option<Vec<Entry>> {
    let (ids, pack) = chunk_with_pack(first, value)?;
    Some(
        ids.iter()
            .enumerate()
            .map(|(at, &id)| (id, pack.get(at as u8).map(sled::IVec::from)))
            .collect(),
    )
}

/// A chunk's ids alone.
fn chunk_ids_only(first: ActionId, value: &[u8]) -> Option<Vec<Entry>> {
    without_snapshots(keys::chunk_ids(first, value))
}

/// A chunk's ids and its decoded pack (empty when no member is finished); `None` when
/// either is malformed.
fn chunk_with_pack(first: ActionId, value: &[u8]) -> Option<(Vec<ActionId>, pack::Pack)> {
    let (ids, pack) = keys::chunk_split(first, value)?;
    Some((ids, pack::decode_or_empty(pack).ok()?))
}

impl BucketScan {
    /// An id-bucket index: the buckets of `lo` through `hi - 1`.
    fn buckets(tree: &sled::Tree, prefix: &[u8], lo: ActionId, hi: ActionId) -> BucketScan {
        let start = keys::bucket_key(prefix, keys::bucket_of(lo));
        let end = keys::bucket_key(prefix, keys::bucket_of(hi.saturating_sub(1)));
        BucketScan::over(tree.range(start..=end), prefix, bucket_entries, lo, hi)
    }

    /// A resource list: the chunk holding `hi - 1` starts at or below it, so from there down.
    /// With `snapshots`, finished members come with their values from the chunks' packs.
    fn chunks(
        tree: &sled::Tree,
        prefix: &[u8],
        lo: ActionId,
        hi: ActionId,
        snapshots: bool,
    ) -> BucketScan {
        let end = keys::chunk_key(prefix, hi.saturating_sub(1));
        let decode = match snapshots {
            true => chunk_entries,
            false => chunk_ids_only,
        };
        BucketScan::over(tree.range(prefix.to_vec()..=end), prefix, decode, lo, hi)
    }

    fn over(
        iter: sled::Iter,
        prefix: &[u8],
        decode: fn(u64, &[u8]) -> Option<Vec<Entry>>,
        lo: ActionId,
        hi: ActionId,
    ) -> BucketScan {
        BucketScan {
            iter,
            prefix_len: prefix.len(),
            decode,
            pending: Vec::new(),
            lo,
            hi,
            done: hi <= lo,
        }
    }
}

impl IdStream for BucketScan {
    fn next_id(&mut self) -> Result<Option<Entry>, QueryError> {
        loop {
            if self.done {
                return Ok(None);
            }
            if let Some((id, bytes)) = self.pending.pop() {
                if id >= self.hi {
                    continue;
                }
                if id < self.lo {
                    self.done = true;
                    return Ok(None);
                }
                return Ok(Some((id, bytes)));
            }
            let Some(kv) = self.iter.next_back() else {
                self.done = true;
                return Ok(None);
            };
            let (k, v) = kv.map_err(sled_q)?;
            let at = k
                .get(self.prefix_len..)
                .and_then(keys::read_u64)
                .ok_or_else(|| damaged(format!("index key {k:?} is malformed")))?;
            self.pending = (self.decode)(at, &v)
                .ok_or_else(|| damaged(format!("index value of {k:?} is malformed")))?;
        }
    }
}

/// Newest-first over every snapshot with an id in `lo..hi` (admin scans).
struct SnapshotScan<I>(I);

impl<I> IdStream for SnapshotScan<I>
where
    I: Iterator<Item = Result<(ActionId, sled::IVec), StoreError>>,
{
    fn next_id(&mut self) -> Result<Option<Entry>, QueryError> {
        match self.0.next() {
            None => Ok(None),
            Some(r) => {
                let (id, v) = r.map_err(store)?;
                Ok(Some((id, Some(v))))
            }
        }
    }
}

/// A fixed list of ids, already descending and de-duplicated.
struct IdList(std::vec::IntoIter<ActionId>);

impl IdStream for IdList {
    fn next_id(&mut self) -> Result<Option<Entry>, QueryError> {
        Ok(self.0.next().map(|id| (id, None)))
    }
}

/// Union of descending streams, descending, without duplicates (an action moving between
/// two merged indexes while the scan runs may show up in both).
struct Merge {
    streams: Vec<Box<dyn IdStream>>,
    heads: Vec<Option<Entry>>,
    started: bool,
}

impl Merge {
    fn new(streams: Vec<Box<dyn IdStream>>) -> Merge {
        let heads = vec![None; streams.len()];
        Merge {
            streams,
            heads,
            started: false,
        }
    }
}

impl IdStream for Merge {
    fn next_id(&mut self) -> Result<Option<Entry>, QueryError> {
        if !self.started {
            for (s, h) in self.streams.iter_mut().zip(self.heads.iter_mut()) {
                *h = s.next_id()?;
            }
            self.started = true;
        }
        let Some(top) = self.heads.iter().flatten().map(|(id, _)| *id).max() else {
            return Ok(None);
        };
        let mut bytes = None;
        for (s, h) in self.streams.iter_mut().zip(self.heads.iter_mut()) {
            if h.as_ref().is_some_and(|(id, _)| *id == top) {
                let (_, b) = std::mem::replace(h, s.next_id()?).expect("checked above");
                bytes = bytes.or(b);
            }
        }
        Ok(Some((top, bytes)))
    }
}

/// The smallest id whose action was created at or after `t` (one past the last id when
/// none). Valid only while creation times are non-decreasing in id order.
pub(super) fn first_id_created_at_or_after(
    p: &Projection,
    t: Micros,
) -> Result<ActionId, QueryError> {
    let last = crate::ledger::StateStore::max_action_id(p).map_err(store)?;
    first_id_created_in(p, t, 0, last + 1)
}

/// [`first_id_created_at_or_after`] when the answer is known to lie in `lo..=hi` (`hi` at
/// most one past the last id): a search over that range only.
pub(super) fn first_id_created_in(
    p: &Projection,
    t: Micros,
    mut lo: ActionId,
    mut hi: ActionId,
) -> Result<ActionId, QueryError> {
    let tree = p.settled()?;
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        // Missing ids take the creation time of the next existing id, which keeps the
        // predicate monotone.
        match super::first_snapshot_at_or_after(tree, &p.values, mid).map_err(store)? {
            Some((id, v)) => {
                let a = super::decode_action(id, &v).map_err(store)?;
                if a.created_at < t {
                    lo = id + 1;
                } else {
                    hi = mid;
                }
            }
            None => hi = mid,
        }
    }
    Ok(lo)
}

/// `Some(total)` when one counter (or a sum of disjoint counters) answers it exactly.
fn counter_total(p: &Projection, q: &ActionQuery) -> Result<Option<u64>, QueryError> {
    if !q.ids.is_empty()
        || q.created_since.is_some()
        || q.created_until.is_some()
        || q.updated_since.is_some()
        || q.updated_until.is_some()
    {
        return Ok(None);
    }
    let set = [
        q.resource.is_some(),
        q.resource_type.is_some(),
        !q.statuses.is_empty(),
        q.action_type.is_some(),
        q.user.is_some(),
        q.kind.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if set > 1 {
        return Ok(None);
    }
    let scope = match &q.tenant {
        Some(t) => Scope::Tenant(t),
        None => Scope::All,
    };
    let get = |d: Dim<'_>| p.counter(&keys::counter_key(scope, d)).map_err(store);
    let total = if let Some(r) = &q.resource {
        get(Dim::Resource(r))?
    } else if let Some(t) = &q.resource_type {
        get(Dim::ResourceType(t))?
    } else if !q.statuses.is_empty() {
        let mut statuses = q.statuses.clone();
        statuses.sort();
        statuses.dedup();
        let mut sum = 0;
        for s in statuses {
            sum += get(Dim::Status(s))?;
        }
        sum
    } else if let Some(t) = &q.action_type {
        get(Dim::Type(t))?
    } else if let Some(u) = &q.user {
        get(Dim::User(u))?
    } else if let Some(k) = q.kind {
        get(Dim::Kind(k))?
    } else {
        get(Dim::Total)?
    };
    Ok(Some(total))
}

/// The ids of the actions on resource `r` (primary or related) of `tenant` (`None`: every
/// tenant's), in `lo..hi`, newest first; with `snapshots`, the finished ones come with
/// their snapshot values.
fn resource_stream(
    tree: &sled::Tree,
    tenant: Option<&str>,
    r: &ResourceRef,
    lo: ActionId,
    hi: ActionId,
    snapshots: bool,
) -> Result<Box<dyn IdStream>, QueryError> {
    if let Some(t) = tenant {
        return Ok(Box::new(BucketScan::chunks(
            tree,
            &keys::ix_resource(t, r),
            lo,
            hi,
            snapshots,
        )));
    }
    // Every tenant's bucket index on this resource, found by seeking from one tenant's
    // prefix to the next.
    let all = keys::ix_resource_all(r);
    let mut streams: Vec<Box<dyn IdStream>> = Vec::new();
    let mut seek = all.clone();
    loop {
        let Some(kv) = tree.range(seek..).next() else {
            break;
        };
        let (k, _) = kv.map_err(sled_q)?;
        if !k.starts_with(&all) {
            break;
        }
        let (t, _) = keys::take_str(&k[all.len()..])
            .ok_or_else(|| damaged(format!("index key {k:?} is malformed")))?;
        let prefix = k[..all.len() + 4 + t.len()].to_vec();
        streams.push(Box::new(BucketScan::chunks(
            tree, &prefix, lo, hi, snapshots,
        )));
        match keys::prefix_end(&prefix) {
            Some(end) => seek = end,
            None => break,
        }
    }
    Ok(Box::new(Merge::new(streams)))
}

/// The memo key of a query filtered by resource only (and tenant), which a resource's id
/// list answers whole.
fn resource_only(q: &ActionQuery) -> Option<ResourceKey> {
    let only = q.resource_type.is_none()
        && q.statuses.is_empty()
        && q.action_type.is_none()
        && q.user.is_none()
        && q.kind.is_none()
        && q.created_since.is_none()
        && q.created_until.is_none()
        && q.updated_since.is_none()
        && q.updated_until.is_none()
        && q.ids.is_empty();
    let resource = q.resource.as_ref().filter(|_| only)?.clone();
    Some(ResourceKey {
        tenant: q.tenant.clone(),
        resource,
    })
}

/// Every id of the resource of `key`, newest first, from the memo or read from sled (and
/// offered to the memo); `None` for a resource with more than the memo keeps. A tenant's
/// list is read in one forward scan (sled 0.34 steps forward far more cheaply than
/// backward), and its chunks are handed to `reader` for the page's reads.
fn resource_ids(
    p: &Projection,
    key: ResourceKey,
    reader: &mut ChunkReader<'_>,
) -> Result<Option<ResourceIds>, QueryError> {
    if let Some(ids) = p.memos.resources.get(&key) {
        return Ok(Some(ids));
    }
    // Read before the scan: what makes the offers safe (see `cache`).
    let read_at = p.applied.load(std::sync::atomic::Ordering::Acquire);
    let tree = p.settled()?;
    let mut ids = Vec::new();
    if let Some(prefix) = &reader.prefix {
        let mut chunks = Vec::new();
        for kv in tree.scan_prefix(prefix) {
            let (k, v) = kv.map_err(sled_q)?;
            let malformed = || damaged(format!("resource list chunk {k:?} is malformed"));
            let first = k
                .get(prefix.len()..)
                .and_then(keys::read_u64)
                .ok_or_else(malformed)?;
            let chunk = keys::chunk_ids(first, &v).ok_or_else(malformed)?;
            if ids.len() + chunk.len() > RESOURCE_IDS_MAX {
                return Ok(None);
            }
            ids.extend(chunk);
            chunks.push((first, v));
        }
        ids.reverse();
        reader.read = chunks;
        reader.read_at = read_at;
    } else {
        let tenant = key.tenant.as_deref();
        let mut stream = resource_stream(tree, tenant, &key.resource, 0, ActionId::MAX, false)?;
        while let Some((id, _)) = stream.next_id()? {
            if ids.len() == RESOURCE_IDS_MAX {
                return Ok(None);
            }
            ids.push(id);
        }
    }
    p.memos.resources.offer(key, ids.clone(), read_at);
    Ok(Some(Arc::new(ids)))
}

/// Loads the actions of one tenant's resource list for a page: from the memo when it
/// holds them, else a finished one from its chunk's pack — one read for up to
/// [`keys::RESOURCE_CHUNK_IDS`] neighbours in the list, where their id packs would cost a
/// read each, and none at all for the chunks [`resource_ids`] just read — else from its
/// own key. Every tenant's list (the admin's) reads each action by its id.
struct ChunkReader<'p> {
    p: &'p Projection,
    /// The tenant's list, `None` for every tenant's.
    prefix: Option<Vec<u8>>,
    /// Chunks already read (first id, value), ascending, and the applied position before.
    read: Vec<(ActionId, sled::IVec)>,
    read_at: u64,
    /// The chunk decoded last: its ids and pack, and the applied position before its read.
    current: Option<(Vec<ActionId>, pack::Pack, u64)>,
}

impl<'p> ChunkReader<'p> {
    fn new(p: &'p Projection, key: &ResourceKey) -> ChunkReader<'p> {
        let prefix = key
            .tenant
            .as_deref()
            .map(|t| keys::ix_resource(t, &key.resource));
        ChunkReader {
            p,
            prefix,
            read: Vec::new(),
            read_at: 0,
            current: None,
        }
    }

    /// Makes `current` the chunk that holds `id`, if the list has one.
    fn find(&mut self, id: ActionId) -> Result<(), QueryError> {
        let Some(prefix) = &self.prefix else {
            return Ok(());
        };
        let holds = |c: &(Vec<ActionId>, pack::Pack, u64)| c.0.binary_search(&id).is_ok();
        if self.current.as_ref().is_some_and(holds) {
            return Ok(());
        }
        let below = self.read.partition_point(|(first, _)| *first <= id);
        let (first, value, read_at) = match below.checked_sub(1).map(|i| &self.read[i]) {
            Some((first, v)) => (*first, v.clone(), self.read_at),
            None => {
                // Read before the chunk: what makes the offers safe (see `cache`).
                let read_at = self.p.applied.load(std::sync::atomic::Ordering::Acquire);
                let tree = self.p.settled()?;
                let last = tree
                    .range(prefix.clone()..=keys::chunk_key(prefix, id))
                    .next_back();
                let Some(kv) = last else {
                    self.current = None;
                    return Ok(());
                };
                let (k, v) = kv.map_err(sled_q)?;
                let first = k
                    .get(prefix.len()..)
                    .and_then(keys::read_u64)
                    .ok_or_else(|| damaged(format!("resource list chunk {k:?} is malformed")))?;
                (first, v, read_at)
            }
        };
        let (ids, pack) = chunk_with_pack(first, &value)
            .ok_or_else(|| damaged(format!("resource list chunk {first} is malformed")))?;
        self.current = Some((ids, pack, read_at));
        Ok(())
    }

    fn load(&mut self, id: ActionId) -> Result<Option<Arc<Action>>, QueryError> {
        if let Some(a) = self.p.memos.snapshots.get(id) {
            return Ok(Some(a));
        }
        self.find(id)?;
        let mut listed = false;
        if let Some((ids, pack, read_at)) = &self.current {
            let at = ids.binary_search(&id).ok();
            listed = at.is_some();
            if let Some(v) = at.and_then(|at| pack.get(at as u8)) {
                let a = Arc::new(super::decode_action(id, v).map_err(store)?);
                self.p.memos.snapshots.offer(a.clone(), v.len(), *read_at);
                return Ok(Some(a));
            }
        }
        // Listed but not in the pack: not finished when the chunk was read, so under its own
        // key (or, finished since, in its id pack). Not listed: a race the caller handles.
        self.p.load_shared_as(id, !listed).map_err(store)
    }
}

/// The page of `q` out of `ids` (every match of `q`, newest first), loading each action
/// with `load`; `None` when one is not available (`load` gave `None`, or the action does
/// not match: a race with a concurrent apply, which the general path handles).
fn page_of_ids(
    q: &ActionQuery,
    ids: &[ActionId],
    after: Option<ActionId>,
    mut load: impl FnMut(ActionId) -> Result<Option<Arc<Action>>, QueryError>,
) -> Result<Option<Page>, QueryError> {
    let start = after.map_or(0, |a| ids.partition_point(|&id| id >= a));
    let start = start
        .saturating_add(usize::try_from(q.offset).unwrap_or(usize::MAX))
        .min(ids.len());
    let end = start.saturating_add(q.limit).min(ids.len());
    let mut actions = Vec::with_capacity(end - start);
    for &id in &ids[start..end] {
        match load(id)? {
            Some(a) if matches(q, &a) => actions.push(a),
            _ => return Ok(None),
        }
    }
    // `end > start` whenever `end < ids.len()`: the limit is at least 1.
    let next_cursor = (end < ids.len()).then(|| cursor::encode(q, ids[end - 1]));
    Ok(Some(Page {
        actions,
        next_cursor,
        total: ids.len() as u64,
    }))
}

/// Checks `q`'s limits and paging; the id its cursor continues below, if any.
fn check(q: &ActionQuery) -> Result<Option<ActionId>, QueryError> {
    if q.limit == 0 {
        return Err(QueryError::BadRequest("limit must be at least 1".into()));
    }
    if q.limit > LIST_LIMIT_MAX {
        return Err(QueryError::BadRequest(format!(
            "limit: limit LIST_LIMIT_MAX is {LIST_LIMIT_MAX}, got {}",
            q.limit
        )));
    }
    if q.ids.len() > LIST_IDS_MAX {
        return Err(QueryError::BadRequest(format!(
            "id: limit LIST_IDS_MAX is {LIST_IDS_MAX}, got {}",
            q.ids.len()
        )));
    }
    if q.cursor.is_some() && q.offset > 0 {
        return Err(QueryError::BadRequest(
            "cursor and offset paging cannot be combined".into(),
        ));
    }
    match &q.cursor {
        Some(c) => cursor::decode(q, c).map(Some),
        None => Ok(None),
    }
}

/// `q` answered from the memos alone (no sled work), when they hold everything it needs.
pub(super) fn run_in_memory(p: &Projection, q: &ActionQuery) -> Result<Option<Page>, QueryError> {
    let after = check(q)?;
    let Some(ids) = resource_only(q).and_then(|k| p.memos.resources.get(&k)) else {
        return Ok(None);
    };
    page_of_ids(q, &ids, after, |id| Ok(p.memos.snapshots.get(id)))
}

/// Chooses and opens the id stream for `q`, limited to ids in `lo..hi`.
pub(super) fn plan(
    p: &Projection,
    q: &ActionQuery,
    lo: ActionId,
    hi: ActionId,
) -> Result<Box<dyn IdStream>, QueryError> {
    let tree = p.settled()?;
    if !q.ids.is_empty() {
        let mut ids: Vec<ActionId> = q
            .ids
            .iter()
            .copied()
            .filter(|id| (lo..hi).contains(id))
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.dedup();
        return Ok(Box::new(IdList(ids.into_iter())));
    }
    let Some(tenant) = &q.tenant else {
        if let Some(r) = &q.resource {
            return resource_stream(tree, None, r, lo, hi, true);
        }
        return Ok(Box::new(SnapshotScan(super::snapshots_newest_first(
            tree, &p.values, lo, hi,
        ))));
    };

    let scope = Scope::Tenant(tenant);
    let count = |d: Dim<'_>| p.counter(&keys::counter_key(scope, d)).map_err(store);
    // (size, index prefixes to merge)
    let mut best: (u64, Vec<Vec<u8>>) = (count(Dim::Total)?, vec![keys::ix_tenant(tenant)]);
    let mut consider = |size: u64, prefixes: Vec<Vec<u8>>| {
        if size < best.0 {
            best = (size, prefixes);
        }
    };
    // The resource list is chunked, not bucketed: it is scanned by itself (`None`).
    if let Some(r) = &q.resource {
        consider(count(Dim::Resource(r))?, vec![]);
    }
    if !q.statuses.is_empty() {
        let mut statuses = q.statuses.clone();
        statuses.sort();
        statuses.dedup();
        let mut size = 0;
        for s in &statuses {
            size += count(Dim::Status(*s))?;
        }
        consider(
            size,
            statuses
                .iter()
                .map(|s| keys::ix_status(tenant, *s))
                .collect(),
        );
    }
    if let Some(t) = &q.action_type {
        consider(count(Dim::Type(t))?, vec![keys::ix_type(tenant, t)]);
    }
    if let Some(u) = &q.user {
        consider(count(Dim::User(u))?, vec![keys::ix_user(tenant, u)]);
    }
    if let Some(k) = q.kind {
        consider(count(Dim::Kind(k))?, vec![keys::ix_kind(tenant, k)]);
    }

    if (q.updated_since.is_some() || q.updated_until.is_some()) && hi > lo {
        // Candidates from the updated index: members of the time buckets the range touches
        // (a superset; `matches` checks the exact bounds), newest id bucket first, given up
        // once they outnumber the best index's entries.
        let from = q.updated_since.map_or(0, keys::updated_bucket);
        let to = q.updated_until.map_or(u64::MAX, keys::updated_bucket);
        let prefix = keys::updated_prefix(tenant);
        let start = keys::bucket_key(&prefix, keys::bucket_of(lo));
        let end = keys::bucket_key(&prefix, keys::bucket_of(hi - 1) + 1);
        let mut ids = Vec::new();
        let mut small = true;
        for kv in tree.range(start..end).rev() {
            let (k, v) = kv.map_err(sled_q)?;
            let malformed = || damaged(format!("updated index key {k:?} is malformed"));
            let rest = k
                .get(prefix.len()..)
                .filter(|r| r.len() == 16)
                .ok_or_else(malformed)?;
            let (id_bucket, time_bucket) = (
                keys::read_u64(&rest[..8]).ok_or_else(malformed)?,
                keys::read_u64(&rest[8..]).ok_or_else(malformed)?,
            );
            if !(from..=to).contains(&time_bucket) {
                continue;
            }
            let members = keys::bucket_ids(id_bucket, &v).ok_or_else(malformed)?;
            ids.extend(members.into_iter().filter(|id| (lo..hi).contains(id)));
            if ids.len() as u64 > best.0 {
                small = false;
                break;
            }
        }
        if small {
            ids.sort_unstable_by(|a, b| b.cmp(a));
            ids.dedup();
            return Ok(Box::new(IdList(ids.into_iter())));
        }
    }

    if best.1.is_empty() {
        let r = q
            .resource
            .as_ref()
            .expect("only the resource list has no bucket prefix");
        return resource_stream(tree, Some(tenant), r, lo, hi, true);
    }
    let mut streams: Vec<Box<dyn IdStream>> = best
        .1
        .iter()
        .map(|prefix| Box::new(BucketScan::buckets(tree, prefix, lo, hi)) as Box<dyn IdStream>)
        .collect();
    if streams.len() == 1 {
        Ok(streams.remove(0))
    } else {
        Ok(Box::new(Merge::new(streams)))
    }
}

pub(super) fn run(p: &Projection, q: &ActionQuery) -> Result<Page, QueryError> {
    // Ids below `after` only (the page after the cursor's).
    let after = check(q)?;
    if let Some(key) = resource_only(q) {
        let mut chunks = ChunkReader::new(p, &key);
        if let Some(ids) = resource_ids(p, key, &mut chunks)? {
            if let Some(page) = page_of_ids(q, &ids, after, |id| chunks.load(id))? {
                return Ok(page);
            }
        }
    }

    let (mut lo, mut hi) = (0, ActionId::MAX);
    if p.created_monotone() {
        if let Some(t) = q.created_since {
            lo = first_id_created_at_or_after(p, t)?;
        }
        if let Some(t) = q.created_until {
            hi = first_id_created_at_or_after(p, t)?;
        }
    }

    let counted = counter_total(p, q)?;
    // With a counter for the total, the scan can start at the cursor and stop after the
    // page; otherwise it runs over the whole range, counting, and the cursor only decides
    // which matches go into the page.
    let scan_hi = match (counted, after) {
        (Some(_), Some(a)) => hi.min(a),
        _ => hi,
    };
    let mut stream = plan(p, q, lo, scan_hi)?;

    let limit = q.limit;
    let mut page: Vec<Arc<Action>> = Vec::with_capacity(limit.min(64));
    let mut more = false;
    let mut matched = 0u64;
    let mut skipped = 0u64;
    while let Some((id, bytes)) = stream.next_id()? {
        let action = match bytes {
            Some(b) => Arc::new(super::decode_action(id, &b).map_err(store)?),
            // An index entry whose snapshot is gone can only be a race with a concurrent
            // apply (never after it commits): skip it.
            None => match p.load_shared(id).map_err(store)? {
                Some(a) => a,
                None => continue,
            },
        };
        if !matches(q, &action) {
            continue;
        }
        matched += 1;
        if after.is_some_and(|a| id >= a) {
            continue;
        }
        if skipped < q.offset {
            skipped += 1;
            continue;
        }
        if page.len() < limit {
            page.push(action);
            continue;
        }
        more = true;
        if counted.is_some() {
            break;
        }
    }
    let next_cursor = match (more, page.last()) {
        (true, Some(last)) => Some(cursor::encode(q, last.id)),
        _ => None,
    };
    Ok(Page {
        actions: page,
        next_cursor,
        total: counted.unwrap_or(matched),
    })
}
