//! Bounded memos, kept current by the applier, so reads of recently written or read data
//! skip sled and decoding: [`SnapshotMemo`] (decoded snapshots by id) and [`ResourceMemo`]
//! (every id of a resource's actions, for lists filtered by resource only — the query the
//! dialects' "actions of this server/droplet/instance" pages run). With both, such a list
//! can be answered from memory alone, on an async worker without any sled work.
//!
//! **Who writes them.** The applier publishes every batch after it is applied (in sled, or
//! in the write-back that every sled read writes out first) and before
//! its `applied_position` is published (so before any of its commands is acknowledged): it
//! puts each changed action's snapshot, and inserts each created action's id into the
//! lists of its resources that are present. Once a write is acknowledged, a memo holds
//! its effect or nothing. Readers that had to go to sled *offer* what they read.
//!
//! **Why an offer can never leave a stale entry.** A reader reads `applied_position`
//! (`read_at`) *before* its sled reads, which go through `Projection::settled`: that writes
//! the write-back out after `read_at` was read, so they include every batch up to
//! `read_at`. What it read can only miss a change of a batch past
//! `read_at` that landed after its reads; that batch's publication either
//! - has not happened yet: it will overwrite (snapshot) or update (list) the offer;
//! - has happened and the entry is still there: a snapshot offer older than it (a smaller
//!   `updated_position`) is refused, and a list is never replaced by an offer;
//! - has happened and found no entry, or the entry has been evicted since: both raise the
//!   shard's floor to the highest position the applier had started to publish (≥ that
//!   batch's), and offers read before the floor (`read_at` below it) are refused.
//!
//! While a batch is being published, a reader may see some of its changes and not yet
//! others: the batch is not acknowledged yet, and every state shown is one the action
//! really has (durable in the log). A reader never sees less than was acknowledged or
//! shown to it before.
//!
//! **Memory.** At most `snapshot_cache_bytes` together (7/8 snapshots, estimated at twice
//! the encoded snapshot plus a fixed overhead; 1/8 resource lists, 8 bytes an id, lists of
//! at most [`RESOURCE_IDS_MAX`] ids) over [`SHARDS`] shards each; a shard that would exceed
//! its share lets its oldest entries go, first in first out. 0 disables both.

use crate::event::{Action, ActionId, Position, ResourceRef};
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

pub(crate) const SHARDS: usize = 16;

/// The hash of memos keyed by action id: murmur3's finaliser instead of SipHash — ids are
/// assigned by the ledger, not chosen by clients, so there is no flooding to defend
/// against, and a memo lookup is on every read's path.
#[derive(Clone, Copy, Default)]
pub(crate) struct IdHash;

impl BuildHasher for IdHash {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        // murmur3's 64-bit finaliser: every input bit reaches the low bits hashbrown picks
        // buckets with (the ids of one shard share their low bits).
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = self.0.rotate_left(5) ^ n;
    }
}

/// Heap bytes a snapshot entry is counted as, from the length of its encoded snapshot: the
/// decoded action's strings and maps take about as much again as their encoding, plus the
/// entry.
pub(crate) fn footprint(encoded_len: usize) -> usize {
    2 * encoded_len + 256
}

struct Shard<K, V, S> {
    map: HashMap<K, (V, usize), S>,
    /// Keys in the order they came in, oldest first: who leaves when the shard is full.
    /// May hold keys that already left, and a key twice; compacted when mostly those.
    order: VecDeque<K>,
    bytes: usize,
    /// Offers read before this position are refused (raised when entries leave).
    floor: Position,
}

/// The sharded, bounded map under both memos, with the rules of the module docs.
pub(crate) struct Memo<K, V, S = RandomState> {
    shards: Vec<Mutex<Shard<K, V, S>>>,
    hasher: S,
    shard_bytes_max: usize,
    /// The highest position the applier has started to publish.
    publishing: AtomicU64,
}

impl<K: Hash + Eq + Clone, V: Clone, S: BuildHasher + Clone + Default> Memo<K, V, S> {
    pub fn new(bytes_max: usize) -> Self {
        Memo {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        map: HashMap::default(),
                        order: VecDeque::new(),
                        bytes: 0,
                        floor: 0,
                    })
                })
                .collect(),
            hasher: S::default(),
            shard_bytes_max: bytes_max / SHARDS,
            publishing: AtomicU64::new(0),
        }
    }

    fn shard(&self, k: &K) -> MutexGuard<'_, Shard<K, V, S>> {
        // Middle bits: hashbrown takes a table's bucket from the low bits and its tag
        // from the top 7, which must stay spread within a shard.
        let i = ((self.hasher.hash_one(k) >> 32) % SHARDS as u64) as usize;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, k: &K) -> Option<V> {
        self.shard(k).map.get(k).map(|(v, _)| v.clone())
    }

    /// The applier is about to publish the changes of batches through `last`.
    pub fn publishing(&self, last: Position) {
        self.publishing.fetch_max(last, Ordering::AcqRel);
    }

    /// Puts the newest value of `k` (the applier's put, or any value that cannot be stale).
    pub fn put(&self, k: K, v: V, bytes: usize) {
        let mut s = self.shard(&k);
        self.insert(&mut s, k, v, bytes);
    }

    /// The applier's change of `k`: an entry present is updated in place by `f` (which
    /// returns its new size, or `None` to drop it); with no entry, offers read before this
    /// change are refused from now on.
    pub fn update(&self, k: &K, f: impl FnOnce(&mut V) -> Option<usize>) {
        let mut s = self.shard(k);
        let Some((v, bytes)) = s.map.get_mut(k) else {
            s.floor = self.publishing.load(Ordering::Acquire);
            return;
        };
        let old = *bytes;
        match f(v) {
            Some(new) if new <= self.shard_bytes_max => {
                *bytes = new;
                s.bytes = s.bytes - old + new;
                self.fit(&mut s, k);
            }
            _ => {
                s.map.remove(k);
                s.bytes -= old;
                s.floor = self.publishing.load(Ordering::Acquire);
            }
        }
    }

    /// A reader's offer of what it read from sled, having read `applied_position` =
    /// `read_at` before its reads. Refused when it may be stale, and when an entry is
    /// present that `replaces` does not say it replaces.
    pub fn offer(
        &self,
        k: K,
        v: V,
        bytes: usize,
        read_at: Position,
        replaces: impl FnOnce(&V) -> bool,
    ) {
        let mut s = self.shard(&k);
        if read_at < s.floor {
            return;
        }
        if let Some((cached, _)) = s.map.get(&k) {
            if !replaces(cached) {
                return;
            }
        }
        self.insert(&mut s, k, v, bytes);
    }

    /// Each shard's byte count and the sum of its entries' sizes, and the share each may
    /// hold (for tests of the bound).
    #[cfg(test)]
    pub(crate) fn usage(&self) -> (Vec<(usize, usize)>, usize) {
        let shards = self
            .shards
            .iter()
            .map(|shard| {
                let s = shard.lock().unwrap();
                (s.bytes, s.map.values().map(|(_, b)| b).sum())
            })
            .collect();
        (shards, self.shard_bytes_max)
    }

    /// Forgets everything (a rebuild rewrote the projection underneath).
    pub fn clear(&self) {
        for shard in &self.shards {
            let mut s = shard.lock().unwrap_or_else(|e| e.into_inner());
            self.empty(&mut s);
        }
    }

    fn empty(&self, s: &mut Shard<K, V, S>) {
        s.map.clear();
        s.order.clear();
        s.bytes = 0;
        s.floor = self.publishing.load(Ordering::Acquire);
    }

    fn insert(&self, s: &mut Shard<K, V, S>, k: K, v: V, bytes: usize) {
        if bytes > self.shard_bytes_max {
            // Too large to keep (or the memo is off); no older value stays either.
            if let Some((_, old)) = s.map.remove(&k) {
                s.bytes -= old;
            }
            s.floor = self.publishing.load(Ordering::Acquire);
            return;
        }
        match s.map.get_mut(&k) {
            Some(entry) => {
                s.bytes = s.bytes - entry.1 + bytes;
                *entry = (v, bytes);
            }
            None => {
                s.bytes += bytes;
                s.order.push_back(k.clone());
                s.map.insert(k.clone(), (v, bytes));
            }
        }
        self.fit(s, &k);
    }

    /// Lets the oldest entries other than `keep` go, one by one (first in, first out),
    /// until the shard is within its share again.
    fn fit(&self, s: &mut Shard<K, V, S>, keep: &K) {
        let mut turns = s.order.len();
        while s.bytes > self.shard_bytes_max && turns > 0 {
            turns -= 1;
            let Some(old) = s.order.pop_front() else {
                break;
            };
            if old == *keep {
                s.order.push_back(old);
            } else if let Some((_, b)) = s.map.remove(&old) {
                s.bytes -= b;
                s.floor = self.publishing.load(Ordering::Acquire);
            }
        }
        if s.order.len() > 2 * s.map.len() + 64 {
            let Shard { map, order, .. } = s;
            let mut kept = HashSet::with_capacity(map.len());
            order.retain(|key| map.contains_key(key) && kept.insert(key.clone()));
        }
    }
}

/// Decoded snapshots by action id.
pub(crate) struct SnapshotMemo(Memo<ActionId, Arc<Action>, IdHash>);

impl SnapshotMemo {
    pub fn new(bytes_max: usize) -> SnapshotMemo {
        SnapshotMemo(Memo::new(bytes_max))
    }

    pub fn get(&self, id: ActionId) -> Option<Arc<Action>> {
        self.0.get(&id)
    }

    /// The applier's put: `a` is the newest state of its action (its snapshot encodes to
    /// `encoded_len` bytes).
    pub fn put(&self, a: Arc<Action>, encoded_len: usize) {
        self.0.put(a.id, a, footprint(encoded_len));
    }

    /// A reader's offer of what it decoded from sled (see the module docs).
    pub fn offer(&self, a: Arc<Action>, encoded_len: usize, read_at: Position) {
        let position = a.updated_position;
        self.0
            .offer(a.id, a, footprint(encoded_len), read_at, |cached| {
                cached.updated_position < position
            });
    }
}

/// Whose actions a resource list holds: one tenant's, or every tenant's (admin).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ResourceKey {
    pub tenant: Option<String>,
    pub resource: ResourceRef,
}

/// Every id of the actions on a resource (primary or related) in one scope, newest first.
/// Ids are only ever added: an action's resources are fixed when it is created. A new id is
/// inserted at its sorted place, not just in front: a reader's scan may have seen a later
/// action of the same batch and not an earlier one, and the union is the whole list.
pub(crate) type ResourceIds = Arc<Vec<ActionId>>;

/// Resources with more actions than this are not memoised (their lists read sled).
pub(crate) const RESOURCE_IDS_MAX: usize = 1024;

fn resource_footprint(k: &ResourceKey, ids: usize) -> usize {
    128 + k.tenant.as_ref().map_or(0, String::len)
        + k.resource.resource_type.len()
        + k.resource.id.len()
        + 8 * ids
}

/// The id lists of resources, for lists filtered by resource only.
pub(crate) struct ResourceMemo(Memo<ResourceKey, ResourceIds>);

impl ResourceMemo {
    pub fn new(bytes_max: usize) -> ResourceMemo {
        ResourceMemo(Memo::new(bytes_max))
    }

    pub fn get(&self, k: &ResourceKey) -> Option<ResourceIds> {
        self.0.get(k)
    }

    /// The applier created action `id` on the resource of `k`.
    pub fn created(&self, k: &ResourceKey, id: ActionId) {
        self.0.update(k, |ids| {
            if let Err(at) = ids.binary_search_by(|x| id.cmp(x)) {
                Arc::make_mut(ids).insert(at, id);
            }
            (ids.len() <= RESOURCE_IDS_MAX).then(|| resource_footprint(k, ids.len()))
        });
    }

    /// A reader's offer of every id of a resource, newest first, scanned after reading
    /// `applied_position` = `read_at`. An entry present is never replaced: the applier
    /// keeps it whole.
    pub fn offer(&self, k: ResourceKey, ids: Vec<ActionId>, read_at: Position) {
        if ids.len() <= RESOURCE_IDS_MAX {
            let bytes = resource_footprint(&k, ids.len());
            self.0.offer(k, Arc::new(ids), bytes, read_at, |_| false);
        }
    }
}

/// Both memos, published to together by the applier.
pub(crate) struct Memos {
    pub snapshots: SnapshotMemo,
    pub resources: ResourceMemo,
}

impl Memos {
    /// `bytes_max` split 7:1 between snapshots and resource lists.
    pub fn new(bytes_max: usize) -> Memos {
        Memos {
            snapshots: SnapshotMemo::new(bytes_max / 8 * 7),
            resources: ResourceMemo::new(bytes_max / 8),
        }
    }

    /// The applier is about to publish the changes of batches through `last`.
    pub fn publishing(&self, last: Position) {
        self.snapshots.0.publishing(last);
        self.resources.0.publishing(last);
    }

    pub fn clear(&self) {
        self.snapshots.0.clear();
        self.resources.0.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::fold;
    use crate::event::{CreateAction, NewAction};

    fn action(id: ActionId, updated_position: Position) -> Arc<Action> {
        let create = CreateAction::new("acme", "snapshot", "droplet", "1");
        let mut a = fold::create(&NewAction::assign(&create, id, format!("u-{id}")), 0, 1);
        a.updated_position = updated_position;
        Arc::new(a)
    }

    /// An id other than `id` in the same shard of `m`.
    fn shard_mate(m: &SnapshotMemo, id: ActionId) -> ActionId {
        let shard = |x: ActionId| (m.0.hasher.hash_one(x) >> 32) % SHARDS as u64;
        (id + 1..).find(|x| shard(*x) == shard(id)).unwrap()
    }

    #[test]
    fn an_offer_older_than_the_cached_state_is_refused() {
        let c = SnapshotMemo::new(1 << 20);
        c.0.publishing(9);
        c.put(action(1, 9), 100);
        c.offer(action(1, 5), 100, 4);
        assert_eq!(c.get(1).unwrap().updated_position, 9);
        // A newer state read after it was applied replaces it.
        c.offer(action(1, 12), 100, 12);
        assert_eq!(c.get(1).unwrap().updated_position, 12);
    }

    #[test]
    fn an_offer_read_before_an_eviction_is_refused() {
        // Room for one entry per shard.
        let c = SnapshotMemo::new(SHARDS * footprint(100));
        let mate = shard_mate(&c, 1);
        c.0.publishing(9);
        c.put(action(1, 9), 100);
        c.put(action(mate, 9), 100); // evicts id 1; the shard's floor is 9
        assert!(c.get(1).is_none());
        // A reader that looked id 1 up in sled before position 9 was applied may hold its
        // state before the put: refused.
        c.offer(action(1, 5), 100, 8);
        assert!(c.get(1).is_none());
        // One that read at 9 or later saw the put's state.
        c.offer(action(1, 9), 100, 9);
        assert_eq!(c.get(1).unwrap().updated_position, 9);
    }

    #[test]
    fn resource_lists_take_created_ids_in_order_and_refuse_stale_offers() {
        let m = ResourceMemo::new(1 << 20);
        let k = ResourceKey {
            tenant: Some("acme".into()),
            resource: ResourceRef {
                resource_type: "droplet".into(),
                id: "1".into(),
            },
        };
        // No entry: the creation of 7 at position 20 raises the floor, so a scan read
        // before it (which may lack 7) is refused, and one read after it is kept.
        m.0.publishing(20);
        m.created(&k, 7);
        m.offer(k.clone(), vec![3], 19);
        assert!(m.get(&k).is_none());
        m.offer(k.clone(), vec![7, 3], 20);
        assert_eq!(*m.get(&k).unwrap(), vec![7, 3]);
        // Present: created ids go to their sorted place, once; an offer never replaces.
        m.0.publishing(21);
        m.created(&k, 9);
        m.created(&k, 5);
        m.created(&k, 9);
        assert_eq!(*m.get(&k).unwrap(), vec![9, 7, 5, 3]);
        m.offer(k.clone(), vec![9], 30);
        assert_eq!(*m.get(&k).unwrap(), vec![9, 7, 5, 3]);
        // A list that outgrows RESOURCE_IDS_MAX leaves, and a scan read before that cannot
        // bring an older one back.
        let big: Vec<ActionId> = (100..100 + RESOURCE_IDS_MAX as u64).rev().collect();
        let k2 = ResourceKey {
            tenant: None,
            ..k.clone()
        };
        m.offer(k2.clone(), big.clone(), 30);
        assert_eq!(m.get(&k2).unwrap().len(), RESOURCE_IDS_MAX);
        m.0.publishing(40);
        m.created(&k2, 5_000);
        assert!(m.get(&k2).is_none());
        m.offer(k2.clone(), big, 39);
        assert!(m.get(&k2).is_none());
    }

    #[test]
    fn lists_growing_in_place_stay_within_the_bound() {
        let m = ResourceMemo::new(8 * SHARDS * 1024);
        let key = |i: u64| ResourceKey {
            tenant: None,
            resource: ResourceRef {
                resource_type: "droplet".into(),
                id: i.to_string(),
            },
        };
        for i in 0..64 {
            m.offer(key(i), vec![i], 0);
        }
        for id in 100..600 {
            for i in 0..64 {
                m.created(&key(i), id);
            }
        }
        for shard in &m.0.shards {
            let s = shard.lock().unwrap();
            assert!(s.bytes <= m.0.shard_bytes_max, "{} bytes", s.bytes);
            assert_eq!(s.bytes, s.map.values().map(|(_, b)| b).sum::<usize>());
        }
    }

    #[test]
    fn the_id_hash_spreads_the_ids_of_one_shard() {
        // The ids of one shard must not share the low bits hashbrown picks buckets with.
        let m = SnapshotMemo::new(1 << 20);
        let shard = |x: ActionId| (m.0.hasher.hash_one(x) >> 32) % SHARDS as u64;
        let low: std::collections::HashSet<u64> = (0..200_000u64)
            .filter(|x| shard(*x) == 3)
            .map(|x| IdHash.hash_one(x) & 0xfff)
            .take(4096)
            .collect();
        assert!(low.len() > 2048, "{} distinct low 12-bit values", low.len());
    }

    #[test]
    fn memory_stays_within_the_bound_and_zero_disables() {
        let c = SnapshotMemo::new(SHARDS * 4 * footprint(100));
        for id in 0..10_000 {
            c.put(action(id, id + 1), 100);
        }
        for shard in &c.0.shards {
            let s = shard.lock().unwrap();
            assert!(s.bytes <= c.0.shard_bytes_max);
            assert_eq!(s.bytes, s.map.values().map(|(_, b)| b).sum::<usize>());
            assert!(s.order.len() <= 2 * s.map.len() + 64);
        }
        // First in, first out: the newest are kept, the oldest went.
        assert!(c.get(9_999).is_some());
        assert!(c.get(0).is_none());
        // Updating an entry in place keeps it, and its place in line.
        for v in 0..1_000 {
            c.put(action(9_999, 20_000 + v), 100);
        }
        assert_eq!(c.get(9_999).unwrap().updated_position, 20_999);

        let off = Memos::new(0);
        off.snapshots.put(action(1, 1), 100);
        off.snapshots.offer(action(1, 1), 100, 1);
        assert!(off.snapshots.get(1).is_none());
    }
}
