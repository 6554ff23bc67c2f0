//! A bounded memo of action snapshots, kept current by the applier, so reads of recently
//! written or recently read actions skip sled's lookup and the snapshot's decoding.
//!
//! **Who writes it.** The applier [`put`](SnapshotCache::put)s every action a batch changed,
//! after the batch is in sled and before the batch's `applied_position` is published (and
//! so before any of its commands is acknowledged): once a write is acknowledged, the memo
//! holds its state or nothing for that action. Readers that had to go to sled
//! [`offer`](SnapshotCache::offer) what they decoded.
//!
//! **Why an offer can never leave a stale entry.** A reader reads `applied_position`
//! (`read_at`) *before* its sled lookup. Its snapshot can only be older than the newest
//! one when a batch past `read_at` changed the action after the lookup; that batch's `put`
//! either
//! - has not happened yet: it will overwrite the offer;
//! - has happened and its entry is still here: the offer is older (a smaller
//!   `updated_position`) and refused;
//! - has happened and its entry was evicted since: evicting a shard records the highest
//!   position the applier had started to put ([`publishing`](SnapshotCache::publishing)),
//!   ≥ that batch's, and offers read before it (`read_at` below it) are refused.
//!
//! While a batch is being put, a reader may see some of its actions in their new state and
//! others not yet: the batch is not acknowledged yet, and each action's state is one it
//! really has (durable in the log). A reader never sees a state older than one it was
//! acknowledged or shown before.
//!
//! **Memory.** At most `bytes_max` (estimated: twice the encoded snapshot plus a fixed
//! overhead per entry) over [`SHARDS`] shards; a shard that would exceed its share is
//! emptied and refilled (crude, but bounded and lock-cheap). `bytes_max = 0` disables it.

use crate::event::{Action, ActionId, Position};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

const SHARDS: usize = 16;

/// A map keyed by action id with a cheap multiplicative hash instead of SipHash: ids are
/// assigned by the ledger, not chosen by clients, so there is no flooding to defend
/// against, and a memo lookup is on every read's path.
pub(crate) type IdMap<V> = HashMap<ActionId, V, IdHash>;

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

/// Heap bytes an entry is counted as, from the length of its encoded snapshot: the decoded
/// action's strings and maps take about as much again as their encoding, plus the entry.
fn footprint(encoded_len: usize) -> usize {
    2 * encoded_len + 256
}

#[derive(Default)]
struct Shard {
    map: IdMap<(Arc<Action>, usize)>,
    bytes: usize,
    /// Offers read before this position are refused (set when the shard is emptied).
    floor: Position,
}

pub struct SnapshotCache {
    shards: Vec<Mutex<Shard>>,
    shard_bytes_max: usize,
    /// The highest position the applier has started to put.
    publishing: AtomicU64,
}

impl SnapshotCache {
    pub fn new(bytes_max: usize) -> SnapshotCache {
        SnapshotCache {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            shard_bytes_max: bytes_max / SHARDS,
            publishing: AtomicU64::new(0),
        }
    }

    fn shard(&self, id: ActionId) -> MutexGuard<'_, Shard> {
        self.shards[(id % SHARDS as u64) as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, id: ActionId) -> Option<Arc<Action>> {
        self.shard(id).map.get(&id).map(|(a, _)| a.clone())
    }

    /// The applier is about to put the actions of batches through `last`.
    pub fn publishing(&self, last: Position) {
        self.publishing.fetch_max(last, Ordering::AcqRel);
    }

    /// The applier's put: `a` is the newest state of its action (its snapshot encodes to
    /// `encoded_len` bytes).
    pub fn put(&self, a: Arc<Action>, encoded_len: usize) {
        let mut s = self.shard(a.id);
        self.insert(&mut s, a, footprint(encoded_len));
    }

    /// A reader's offer of what it decoded from sled, having read `applied_position` =
    /// `read_at` before its lookup. Refused when it may be stale (see the module docs).
    pub fn offer(&self, a: Arc<Action>, encoded_len: usize, read_at: Position) {
        let mut s = self.shard(a.id);
        if read_at < s.floor {
            return;
        }
        if let Some((cached, _)) = s.map.get(&a.id) {
            if cached.updated_position >= a.updated_position {
                return;
            }
        }
        self.insert(&mut s, a, footprint(encoded_len));
    }

    /// Forgets everything (a rebuild rewrote the projection underneath).
    pub fn clear(&self) {
        for shard in &self.shards {
            let mut s = shard.lock().unwrap_or_else(|e| e.into_inner());
            self.empty(&mut s);
        }
    }

    fn empty(&self, s: &mut Shard) {
        s.map.clear();
        s.bytes = 0;
        s.floor = self.publishing.load(Ordering::Acquire);
    }

    fn insert(&self, s: &mut Shard, a: Arc<Action>, bytes: usize) {
        if bytes > self.shard_bytes_max {
            // Too large to keep (or the memo is off): an older state must not stay.
            if let Some((_, old)) = s.map.remove(&a.id) {
                s.bytes -= old;
            }
            return;
        }
        if let Some((_, old)) = s.map.remove(&a.id) {
            s.bytes -= old;
        }
        if s.bytes + bytes > self.shard_bytes_max {
            self.empty(s);
        }
        s.bytes += bytes;
        s.map.insert(a.id, (a, bytes));
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

    #[test]
    fn an_offer_older_than_the_cached_state_is_refused() {
        let c = SnapshotCache::new(1 << 20);
        c.publishing(9);
        c.put(action(1, 9), 100);
        c.offer(action(1, 5), 100, 4);
        assert_eq!(c.get(1).unwrap().updated_position, 9);
        // A newer state read after it was applied replaces it.
        c.offer(action(1, 12), 100, 12);
        assert_eq!(c.get(1).unwrap().updated_position, 12);
    }

    #[test]
    fn an_offer_read_before_an_eviction_is_refused() {
        // Room for one entry per shard: ids 1 and 17 share shard 1.
        let c = SnapshotCache::new(SHARDS * footprint(100));
        c.publishing(9);
        c.put(action(1, 9), 100);
        c.put(action(17, 9), 100); // evicts id 1; the shard's floor is 9
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
    fn the_id_hash_spreads_the_ids_of_one_shard() {
        // Ids of one shard differ by multiples of SHARDS; their hashes must not share the
        // low bits hashbrown picks buckets with.
        let low: std::collections::HashSet<u64> = (0..4096u64)
            .map(|i| IdHash.hash_one(3 + i * SHARDS as u64) & 0xfff)
            .collect();
        assert!(low.len() > 2048, "{} distinct low 12-bit values", low.len());
    }

    #[test]
    fn memory_stays_within_the_bound_and_zero_disables() {
        let c = SnapshotCache::new(SHARDS * 4 * footprint(100));
        for id in 0..10_000 {
            c.put(action(id, id + 1), 100);
        }
        for shard in &c.shards {
            let s = shard.lock().unwrap();
            assert!(s.bytes <= c.shard_bytes_max);
            assert_eq!(s.bytes, s.map.values().map(|(_, b)| b).sum::<usize>());
        }
        assert!(c.get(9_999).is_some());

        let off = SnapshotCache::new(0);
        off.put(action(1, 1), 100);
        off.offer(action(1, 1), 100, 1);
        assert!(off.get(1).is_none());
    }
}
