//! The key layout of the projection's one sled tree, drawn once here.
//!
//! Every key starts with a one-byte prefix naming its family. Integers in keys are
//! big-endian so byte order is numeric order; strings are `u32 BE length ‖ bytes` so a
//! string component can never run into the next one (no separator to escape) and a
//! prefix of components is a byte prefix of every key below it.
//!
//! ```text
//! family       key                                                  value
//! meta         00 ‖ name                                            see META_*
//! snapshot     01 ‖ id u64                                          see "Snapshot value"
//! uid          02 ‖ uid bytes                                       id u64 (not for al-<id>)
//! history      03 ‖ id u64 ‖ first position u64                     32 locations
//! idempotency  04 ‖ s(tenant) ‖ s(key)                              codec(StoredIdempotent)
//! exclusive    05 ‖ s(tenant) ‖ s(resource type) ‖ s(resource id)  id u64
//! counter      06 ‖ scope ‖ dimension                               count u64
//! pack         07 ‖ id / 16 u64                                     see `pack` (sealed: `values`)
//! resource     11 ‖ s(type) ‖ s(id) ‖ s(tenant) ‖ first id u64      chunk value (ids + pack)
//! updated      16 ‖ s(tenant) ‖ id bucket u64 ‖ time bucket u64    bucket value
//! id buckets   10, 12..15 ‖ index components ‖ bucket u64           bucket value
//! ```
//!
//! **Where a snapshot lives.** An action that is not finished (queued, running) has its
//! own snapshot key; a finished one (completed, failed, cancelled) is an entry of its
//! pack, the [`PACK_IDS`] consecutive ids `id / 16` names, compressed together (see
//! `pack`). The action that finishes moves from its key into its pack in the same sled
//! batch. Which of the two holds an action depends only on its status, so a rebuilt
//! projection is laid out like a live one. (A pack's bytes may be stored in the value file
//! instead, with a pointer under its key: see `values`. Which packs are sealed depends on
//! when they were, so only that may differ between a live and a rebuilt projection.)
//! Why: sled 0.34 holds ~35 bytes of memory per key whatever its cache, and most of a
//! store is finished actions — packs bring the snapshot keys of 10M actions (90%
//! finished) from 10M to ~1.6M.
//!
//! **Resource lists.** The resource index is not bucketed: a resource's ~100 actions are
//! spread over the whole id range, so id buckets would cost a key per action.
//! Each (resource, tenant) has a list of its action ids (primary or related resource),
//! cut into chunks of at most [`RESOURCE_CHUNK_IDS`] ids keyed by their first id. An
//! action's resources are set when it is created, and ids are created in increasing order,
//! so a list only ever grows at its end: every chunk but the last is full, whatever the
//! batching. A chunk also carries the snapshot values of its finished members, as a pack
//! whose entry offsets are their positions in the chunk — a second copy of what their id
//! packs hold, so that a resource's newest 50 actions are three or four neighbouring keys
//! (one reverse range scan) rather than 50 packs spread over the id range. The copy is
//! written in the same batch as the id pack, by the same rule (finished ⇔ present), so the
//! two never disagree and a rebuilt chunk is the same bytes as a live one. Chunk value:
//! see [`chunk_value`].
//!
//! **Id buckets.** The id-ordered indexes (tenant recency, status, type, user, kind) do
//! not keep one key per action: ids are grouped in buckets of [`BUCKET_IDS`]
//! consecutive ids, and one key per (index, bucket) holds which ids of the bucket are in
//! the index. Why: sled 0.34 holds ~35 bytes of memory per key whatever its size or its
//! cache, and an index key per (tenant, value, bucket) is what the projection pays for: with
//! 4096-id buckets a tenant's status, type, user or kind of a few hundred actions per
//! bucket costs one key, not dozens (measured at 1M actions: 256-id buckets made 0.57 index
//! keys per action). Rebuild and bulk catch-up write that many fewer keys, and a
//! newest-first scan reads up to 4096 ids per key. The cost: an update rewrites a value of
//! up to 512 bytes where it used to be 32 (the write-back merges a burst into one rewrite).
//!
//! Bucket value: the offsets (`id % 4096`) of its members as u16 BE, ascending, when there
//! are fewer than 256 of them (so a value is never longer than a bitmap), otherwise a
//! 512-byte bitmap (bit `i` of byte `i / 8`, least significant first). Length 512 means
//! bitmap, shorter means list; an empty bucket has no key.
//!
//! **Updated index.** An id bucket of a tenant's actions, split by the coarse time bucket
//! (`updated_at` sign-flipped, shifted right by [`UPDATED_BUCKET_SHIFT`]: ~67 s) their last
//! update falls in; the value is a bucket value like the id indexes'. An action moves only
//! when an update carries it into another time bucket, so the many events a running
//! action receives within a minute cost no index write at all (an exact time-ordered key
//! per action cost a delete and an insert per event). A range query reads the tenant's
//! keys newest id bucket first and takes the members of the time buckets the range
//! touches; the exact bounds are checked on the snapshot.
//!
//! **Uids.** A uid the ledger generated for an action (`al-<id>`, a prefix clients may
//! not use) has no key: it names its action by itself, and a lookup checks that action's
//! snapshot. Only uids a client chose (or an imported log carries in another form) cost a
//! key.
//!
//! **Snapshot value**: `u32 BE n ‖ codec(Action) (n bytes) ‖ history tail`. The tail is the
//! locations of the action's latest log records, oldest first, each [`LOCATION_BYTES`]:
//! `position u64 ‖ segment u64 ‖ offset u64`, all big-endian. A read of the action decodes
//! only the first `n` bytes. Every record that touches an action rewrites its snapshot
//! anyway, so keeping its location there costs no extra sled key; when the tail would grow
//! past [`HISTORY_INLINE_MAX`] locations, its oldest [`HISTORY_INLINE_MAX`] move to a
//! history key named by the first one's position. The layout depends only on how many
//! records touched the action (never on how they were batched): the history keys hold
//! locations `[0, 32)`, `[32, 64)`, … and the tail the remaining 1–32, so a rebuilt
//! projection is byte-identical to a live one.
//!
//! **Counters** are kept per scope — `00` every tenant (admin queries), `01 ‖ s(tenant)` one
//! tenant — and per dimension: `t` total, `r ‖ s(type) ‖ s(id)` resource (primary or
//! related, each action once), `s ‖ status`, `y ‖ s(type)`, `w ‖ s(user)`, `k ‖ kind`.

use crate::event::{Action, ActionId, Kind, Micros, ResourceRef, Status};

pub const P_META: u8 = 0x00;
pub const P_SNAPSHOT: u8 = 0x01;
pub const P_UID: u8 = 0x02;
pub const P_HISTORY: u8 = 0x03;
pub const P_IDEMPOTENCY: u8 = 0x04;
pub const P_EXCLUSIVE: u8 = 0x05;
pub const P_COUNTER: u8 = 0x06;
pub const P_PACK: u8 = 0x07;
pub const P_IX_TENANT: u8 = 0x10;
pub const P_IX_RESOURCE: u8 = 0x11;
pub const P_IX_STATUS: u8 = 0x12;
pub const P_IX_TYPE: u8 = 0x13;
pub const P_IX_USER: u8 = 0x14;
pub const P_IX_KIND: u8 = 0x15;
pub const P_IX_UPDATED: u8 = 0x16;

/// Format version of everything below. Bump it whenever a key, a value or the encoding of
/// [`Action`] changes: a projection with another version is deleted and rebuilt at open.
pub const FORMAT_VERSION: u32 = 9;

/// `00 ‖ "format"` → u32 BE. Absent while a rebuild is in progress, so an interrupted
/// rebuild is detected and redone.
pub const META_FORMAT: &[u8] = b"\x00format";
/// `00 ‖ "applied"` → u64 BE: the last log position applied. Written in every batch.
pub const META_APPLIED: &[u8] = b"\x00applied";
/// `00 ‖ "created"` → last created id u64 ‖ its created_at i64 ‖ monotone u8. Tracks
/// whether `created_at` has been non-decreasing in id order so far, which lets a
/// created-time range become an id range (see `list`).
pub const META_CREATED: &[u8] = b"\x00created";
/// `00 ‖ "sealed"` → pack u64 BE ‖ length u64 BE: packs below that pack are sealed (see
/// `values`), the value file being that long when the last of them was. Absent: none yet.
pub const META_SEALED: &[u8] = b"\x00sealed";

/// Most record locations a snapshot value keeps in its history tail.
pub const HISTORY_INLINE_MAX: usize = 32;
/// Bytes of one record location: position, segment, offset (u64 BE each).
pub const LOCATION_BYTES: usize = 24;

/// `updated_at` time buckets are 2^26 µs (~67 s) wide.
pub const UPDATED_BUCKET_SHIFT: u32 = 26;

/// Ids per bucket of an id-ordered index.
pub const BUCKET_IDS: u64 = 4096;
/// Consecutive ids per pack of finished actions (see `pack`).
pub const PACK_IDS: u64 = 16;
/// Most ids one chunk of a resource's list holds: as many as a pack, because a chunk
/// carries the finished actions among its ids as a pack whose entry offsets are positions
/// in the chunk (see "Resource lists").
pub const RESOURCE_CHUNK_IDS: usize = PACK_IDS as usize;
const BITMAP_BYTES: usize = (BUCKET_IDS / 8) as usize;

pub fn u64_be(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

/// Reads a big-endian u64 from exactly 8 bytes.
pub fn read_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

/// Orders signed microseconds as unsigned bytes: flipping the sign bit maps i64 order onto
/// u64 order.
pub fn time_key(t: Micros) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

pub fn push_str(key: &mut Vec<u8>, s: &str) {
    key.extend_from_slice(&(s.len() as u32).to_be_bytes());
    key.extend_from_slice(s.as_bytes());
}

/// Splits one `s(..)` component off the front of `b`.
pub fn take_str(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_be_bytes(b.get(..4)?.try_into().ok()?) as usize;
    let s = b.get(4..4 + len)?;
    Some((s, &b[4 + len..]))
}

pub fn snapshot_key(id: ActionId) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = P_SNAPSHOT;
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

/// The pack of finished actions `id` belongs to.
pub fn pack_of(id: ActionId) -> u64 {
    id / PACK_IDS
}

/// Where `id` sits in its pack.
pub fn pack_offset(id: ActionId) -> u8 {
    (id % PACK_IDS) as u8
}

pub fn pack_key(pack: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = P_PACK;
    k[1..].copy_from_slice(&pack.to_be_bytes());
    k
}

pub fn uid_key(uid: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + uid.len());
    k.push(P_UID);
    k.extend_from_slice(uid.as_bytes());
    k
}

pub fn history_prefix(id: ActionId) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = P_HISTORY;
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

/// The history key of a spilled run of locations, named by its first location's position.
pub fn history_key(id: ActionId, position: u64) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[..9].copy_from_slice(&history_prefix(id));
    k[9..].copy_from_slice(&position.to_be_bytes());
    k
}

/// The id a generated uid names, when `uid` is exactly `al-<id>` in canonical form.
pub fn generated_uid_id(uid: &str) -> Option<ActionId> {
    let digits = uid.strip_prefix(crate::ledger::GENERATED_UID_PREFIX)?;
    let id: ActionId = digits.parse().ok()?;
    (id.to_string() == digits).then_some(id)
}

/// Does action `id` with `uid` need a uid key (see the module docs)?
pub fn has_uid_key(id: ActionId, uid: &str) -> bool {
    generated_uid_id(uid) != Some(id)
}

/// Encodes one record location of a history tail or history key.
pub fn location(position: u64, segment: u64, offset: u64) -> [u8; LOCATION_BYTES] {
    let mut l = [0u8; LOCATION_BYTES];
    l[..8].copy_from_slice(&position.to_be_bytes());
    l[8..16].copy_from_slice(&segment.to_be_bytes());
    l[16..].copy_from_slice(&offset.to_be_bytes());
    l
}

/// A decoded record location: position, segment, offset.
pub type Location = (u64, u64, u64);

/// Decodes a run of locations (`None` unless it is a whole number of them).
pub fn locations(bytes: &[u8]) -> Option<Vec<Location>> {
    if bytes.len() % LOCATION_BYTES != 0 {
        return None;
    }
    bytes
        .chunks_exact(LOCATION_BYTES)
        .map(|l| {
            Some((
                read_u64(&l[..8])?,
                read_u64(&l[8..16])?,
                read_u64(&l[16..])?,
            ))
        })
        .collect()
}

/// Decodes a history key and its value: the action's id and its run of locations, `None`
/// unless the run is [`HISTORY_INLINE_MAX`] whole locations starting at the key's position.
pub fn history_run(key: &[u8], value: &[u8]) -> Option<(ActionId, Vec<Location>)> {
    if key.len() != 17 || key[0] != P_HISTORY {
        return None;
    }
    let (id, first) = (read_u64(&key[1..9])?, read_u64(&key[9..])?);
    let run = locations(value)?;
    (run.len() == HISTORY_INLINE_MAX && run[0].0 == first).then_some((id, run))
}

/// A snapshot value: the encoded action, then the history tail.
pub fn snapshot_value(action: &[u8], tail: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + action.len() + tail.len());
    v.extend_from_slice(&(action.len() as u32).to_be_bytes());
    v.extend_from_slice(action);
    v.extend_from_slice(tail);
    v
}

/// Splits a snapshot value into the encoded action and the history tail; `None` when the
/// lengths do not add up.
pub fn split_snapshot(value: &[u8]) -> Option<(&[u8], &[u8])> {
    let n = u32::from_be_bytes(value.get(..4)?.try_into().ok()?) as usize;
    let action = value.get(4..4usize.checked_add(n)?)?;
    let tail = &value[4 + n..];
    (tail.len() % LOCATION_BYTES == 0).then_some((action, tail))
}

pub fn idempotency_key(tenant: &str, key: &str) -> Vec<u8> {
    let mut k = vec![P_IDEMPOTENCY];
    push_str(&mut k, tenant);
    push_str(&mut k, key);
    k
}

pub fn exclusive_key(tenant: &str, resource: &ResourceRef) -> Vec<u8> {
    let mut k = vec![P_EXCLUSIVE];
    push_str(&mut k, tenant);
    push_str(&mut k, &resource.resource_type);
    push_str(&mut k, &resource.id);
    k
}

pub fn status_byte(s: Status) -> u8 {
    match s {
        Status::Queued => 0,
        Status::Running => 1,
        Status::Completed => 2,
        Status::Failed => 3,
        Status::Cancelled => 4,
    }
}

pub fn kind_byte(k: Kind) -> u8 {
    match k {
        Kind::Task => 0,
        Kind::StateMachine => 1,
        Kind::Other => 2,
    }
}

// ----------------------------------------------------------------------------------------
// Id-ordered indexes.

/// The prefix of one id-ordered index (everything before the bucket number).
pub fn ix_tenant(tenant: &str) -> Vec<u8> {
    let mut k = vec![P_IX_TENANT];
    push_str(&mut k, tenant);
    k
}

/// Resource first, tenant last: a tenant's query reads one prefix, and an admin query
/// enumerates the (few) tenants under `11 ‖ s(type) ‖ s(id)` by seeking.
pub fn ix_resource_all(resource: &ResourceRef) -> Vec<u8> {
    let mut k = vec![P_IX_RESOURCE];
    push_str(&mut k, &resource.resource_type);
    push_str(&mut k, &resource.id);
    k
}

pub fn ix_resource(tenant: &str, resource: &ResourceRef) -> Vec<u8> {
    let mut k = ix_resource_all(resource);
    push_str(&mut k, tenant);
    k
}

pub fn ix_status(tenant: &str, status: Status) -> Vec<u8> {
    let mut k = vec![P_IX_STATUS];
    push_str(&mut k, tenant);
    k.push(status_byte(status));
    k
}

pub fn ix_type(tenant: &str, action_type: &str) -> Vec<u8> {
    let mut k = vec![P_IX_TYPE];
    push_str(&mut k, tenant);
    push_str(&mut k, action_type);
    k
}

pub fn ix_user(tenant: &str, user: &str) -> Vec<u8> {
    let mut k = vec![P_IX_USER];
    push_str(&mut k, tenant);
    push_str(&mut k, user);
    k
}

pub fn ix_kind(tenant: &str, kind: Kind) -> Vec<u8> {
    let mut k = vec![P_IX_KIND];
    push_str(&mut k, tenant);
    k.push(kind_byte(kind));
    k
}

pub fn bucket_of(id: ActionId) -> u64 {
    id / BUCKET_IDS
}

/// Where `id` sits in its bucket (the member stored in a bucket value).
pub fn bucket_offset(id: ActionId) -> u16 {
    (id % BUCKET_IDS) as u16
}

/// The ids a bucket value of bucket `bucket` holds, ascending; `None` when the value is not
/// a valid bucket value.
pub fn bucket_ids(bucket: u64, value: &[u8]) -> Option<Vec<ActionId>> {
    let members = bucket_members(value)?;
    Some(
        members
            .into_iter()
            .map(|m| bucket * BUCKET_IDS + u64::from(m))
            .collect(),
    )
}

pub fn bucket_key(index: &[u8], bucket: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(index.len() + 8);
    k.extend_from_slice(index);
    k.extend_from_slice(&bucket.to_be_bytes());
    k
}

/// The key of a resource list's chunk whose first (smallest) id is `first`.
pub fn chunk_key(resource_index: &[u8], first: ActionId) -> Vec<u8> {
    bucket_key(resource_index, first)
}

/// A chunk value: `n u8 ‖ the ids after the first ‖ pack`. `n` is how many ids the chunk
/// holds (1 to [`RESOURCE_CHUNK_IDS`]); the ids after the first (named by the key) are each
/// the LEB128 varint of its distance from the one before; `pack` is a pack value (see
/// `pack`) of the finished actions among them, each at its position in the chunk, or
/// nothing when none is finished; compressed (when smaller) once the chunk is full, raw
/// before. `ids` ascend strictly and start with the key's id.
pub fn chunk_value(ids: &[ActionId], pack: &[u8]) -> Vec<u8> {
    debug_assert!((1..=RESOURCE_CHUNK_IDS).contains(&ids.len()));
    let mut v = Vec::with_capacity(1 + ids.len() * 3 + pack.len());
    v.push(ids.len() as u8);
    for w in ids.windows(2) {
        let mut d = w[1] - w[0];
        loop {
            let byte = (d & 0x7f) as u8;
            d >>= 7;
            if d == 0 {
                v.push(byte);
                break;
            }
            v.push(byte | 0x80);
        }
    }
    v.extend_from_slice(pack);
    v
}

/// The ids of the chunk whose key names `first`, ascending, and its pack value (empty when
/// no member is finished); `None` when the value is not a valid chunk value (a count out
/// of range, a zero or overflowing distance, a cut varint).
pub fn chunk_split(first: ActionId, value: &[u8]) -> Option<(Vec<ActionId>, &[u8])> {
    let (&n, mut rest) = value.split_first()?;
    let n = usize::from(n);
    if !(1..=RESOURCE_CHUNK_IDS).contains(&n) {
        return None;
    }
    let mut ids = Vec::with_capacity(n);
    ids.push(first);
    while ids.len() < n {
        let (mut d, mut shift) = (0u64, 0u32);
        loop {
            let (&b, more) = rest.split_first()?;
            rest = more;
            if shift > 63 {
                return None;
            }
            d |= u64::from(b & 0x7f).checked_shl(shift)?;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        if d == 0 {
            return None;
        }
        ids.push(ids.last()?.checked_add(d)?);
    }
    Some((ids, rest))
}

/// Whether a chunk value holds [`RESOURCE_CHUNK_IDS`] ids: no later id joins it.
pub fn chunk_is_full(value: &[u8]) -> bool {
    value
        .first()
        .is_some_and(|&n| usize::from(n) == RESOURCE_CHUNK_IDS)
}

/// The ids of a chunk (see [`chunk_split`]).
pub fn chunk_ids(first: ActionId, value: &[u8]) -> Option<Vec<ActionId>> {
    chunk_split(first, value).map(|(ids, _)| ids)
}

/// The distinct resources an action is indexed under: primary first, then related.
pub fn resources_of(a: &Action) -> Vec<&ResourceRef> {
    let mut out: Vec<&ResourceRef> = Vec::with_capacity(1 + a.related.len());
    out.push(&a.resource);
    for r in &a.related {
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

/// Whether `a` and `b` agree on every attribute [`id_indexes`] and [`counters_of`] read
/// (tenant, resources, status, type, user, kind), so they have the same index and counter
/// keys. Keep it in step with those two functions (a unit test checks it).
pub fn same_indexed_attributes(a: &Action, b: &Action) -> bool {
    a.status == b.status
        && a.tenant == b.tenant
        && a.resource == b.resource
        && a.related == b.related
        && a.action_type == b.action_type
        && a.user == b.user
        && a.kind == b.kind
}

/// One id-ordered index, borrowed from an action: what [`Ix::prefix`] spells as bytes.
/// Folds collect bucket changes under these and build each distinct key once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ix<'a> {
    Tenant(&'a str),
    Resource(&'a str, &'a ResourceRef),
    Status(&'a str, Status),
    Type(&'a str, &'a str),
    User(&'a str, &'a str),
    Kind(&'a str, Kind),
}

impl Ix<'_> {
    /// The index's key prefix (everything before the bucket number).
    pub fn prefix(self) -> Vec<u8> {
        match self {
            Ix::Tenant(t) => ix_tenant(t),
            Ix::Resource(t, r) => ix_resource(t, r),
            Ix::Status(t, s) => ix_status(t, s),
            Ix::Type(t, ty) => ix_type(t, ty),
            Ix::User(t, u) => ix_user(t, u),
            Ix::Kind(t, k) => ix_kind(t, k),
        }
    }
}

/// Every id-ordered index `a` belongs to.
pub fn indexes_of(a: &Action) -> Vec<Ix<'_>> {
    let t = a.tenant.as_str();
    let mut out = Vec::with_capacity(6 + a.related.len());
    out.push(Ix::Tenant(t));
    for r in resources_of(a) {
        out.push(Ix::Resource(t, r));
    }
    out.push(Ix::Status(t, a.status));
    out.push(Ix::Type(t, &a.action_type));
    if let Some(u) = &a.user {
        out.push(Ix::User(t, u));
    }
    out.push(Ix::Kind(t, a.kind));
    out
}

/// Every id-ordered index prefix `a` belongs to.
pub fn id_indexes(a: &Action) -> Vec<Vec<u8>> {
    indexes_of(a).into_iter().map(Ix::prefix).collect()
}

pub fn updated_prefix(tenant: &str) -> Vec<u8> {
    let mut k = vec![P_IX_UPDATED];
    push_str(&mut k, tenant);
    k
}

/// The time bucket of an `updated_at`.
pub fn updated_bucket(t: Micros) -> u64 {
    u64::from_be_bytes(time_key(t)) >> UPDATED_BUCKET_SHIFT
}

/// The updated-index key `a` is a member of (see the module docs).
pub fn updated_key(a: &Action) -> Vec<u8> {
    let mut k = updated_prefix(&a.tenant);
    k.extend_from_slice(&bucket_of(a.id).to_be_bytes());
    k.extend_from_slice(&updated_bucket(a.updated_at).to_be_bytes());
    k
}

// ----------------------------------------------------------------------------------------
// Counters.

/// Whose count: every tenant, or one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope<'a> {
    All,
    Tenant(&'a str),
}

/// One counted dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dim<'a> {
    Total,
    Resource(&'a ResourceRef),
    /// Actions with a primary or related resource of this type (each counted once).
    ResourceType(&'a str),
    Status(Status),
    Type(&'a str),
    User(&'a str),
    Kind(Kind),
}

pub fn counter_key(scope: Scope<'_>, dim: Dim<'_>) -> Vec<u8> {
    let mut k = vec![P_COUNTER];
    match scope {
        Scope::All => k.push(0),
        Scope::Tenant(t) => {
            k.push(1);
            push_str(&mut k, t);
        }
    }
    match dim {
        Dim::Total => k.push(b't'),
        Dim::Resource(r) => {
            k.push(b'r');
            push_str(&mut k, &r.resource_type);
            push_str(&mut k, &r.id);
        }
        Dim::ResourceType(t) => {
            k.push(b'e');
            push_str(&mut k, t);
        }
        Dim::Status(s) => {
            k.push(b's');
            k.push(status_byte(s));
        }
        Dim::Type(t) => {
            k.push(b'y');
            push_str(&mut k, t);
        }
        Dim::User(u) => {
            k.push(b'w');
            push_str(&mut k, u);
        }
        Dim::Kind(kind) => {
            k.push(b'k');
            k.push(kind_byte(kind));
        }
    }
    k
}

/// Every counter `a` adds one to.
pub fn counters_of(a: &Action) -> Vec<Vec<u8>> {
    counted_in(a)
        .into_iter()
        .map(|(scope, dim)| counter_key(scope, dim))
        .collect()
}

/// Every counter `a` adds one to, borrowed from it: what [`counter_key`] spells as bytes.
pub fn counted_in(a: &Action) -> Vec<(Scope<'_>, Dim<'_>)> {
    let mut dims = vec![
        Dim::Total,
        Dim::Status(a.status),
        Dim::Type(&a.action_type),
        Dim::Kind(a.kind),
    ];
    if let Some(u) = &a.user {
        dims.push(Dim::User(u));
    }
    let resources = resources_of(a);
    for (i, r) in resources.iter().enumerate() {
        dims.push(Dim::Resource(r));
        if !resources[..i]
            .iter()
            .any(|o| o.resource_type == r.resource_type)
        {
            dims.push(Dim::ResourceType(&r.resource_type));
        }
    }
    let mut out = Vec::with_capacity(dims.len() * 2);
    for d in dims {
        out.push((Scope::All, d));
        out.push((Scope::Tenant(&a.tenant), d));
    }
    out
}

// ----------------------------------------------------------------------------------------
// Bucket values.

/// The members of a bucket, as offsets `0..BUCKET_IDS` within it, ascending. `None` when
/// the value is not a valid bucket value.
pub fn bucket_members(value: &[u8]) -> Option<Vec<u16>> {
    if value.len() == BITMAP_BYTES {
        let mut out = Vec::with_capacity(256);
        for (byte_i, byte) in value.iter().enumerate() {
            for bit in 0..8 {
                if byte & (1 << bit) != 0 {
                    out.push((byte_i * 8 + bit) as u16);
                }
            }
        }
        Some(out)
    } else if value.len() < BITMAP_BYTES && value.len() % 2 == 0 {
        let out: Vec<u16> = value
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        // A list must be strictly ascending and inside the bucket; anything else is damage.
        if out.windows(2).any(|w| w[0] >= w[1])
            || out.last().is_some_and(|&m| u64::from(m) >= BUCKET_IDS)
        {
            return None;
        }
        Some(out)
    } else {
        None
    }
}

/// Encodes ascending, distinct offsets; `None` for an empty bucket (delete its key).
pub fn bucket_value(members: &[u16]) -> Option<Vec<u8>> {
    if members.is_empty() {
        None
    } else if members.len() * 2 < BITMAP_BYTES {
        Some(members.iter().flat_map(|m| m.to_be_bytes()).collect())
    } else {
        let mut bitmap = vec![0u8; BITMAP_BYTES];
        for &m in members {
            bitmap[m as usize / 8] |= 1 << (m % 8);
        }
        Some(bitmap)
    }
}

/// The smallest key greater than every key that starts with `prefix`, or `None` when no
/// such key exists (the prefix is all `0xff`).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_values_round_trip_and_refuse_damage() {
        for ids in [
            vec![5],
            vec![1, 2, 3],
            vec![100, 227, 100_000, 1 << 40, u64::MAX],
            (0..RESOURCE_CHUNK_IDS as u64)
                .map(|i| 7 + i * 300)
                .collect(),
        ] {
            for pack in [&b""[..], &b"\x00\x00\x00\x00\x01z"[..]] {
                let v = chunk_value(&ids, pack);
                assert_eq!(
                    chunk_split(ids[0], &v),
                    Some((ids.clone(), pack)),
                    "{ids:?}"
                );
                assert_eq!(chunk_ids(ids[0], &v), Some(ids.clone()));
            }
        }
        assert_eq!(chunk_value(&[9], b""), vec![1]);
        assert_eq!(chunk_ids(1, &[]), None, "no count");
        assert_eq!(chunk_ids(1, &[0]), None, "no ids");
        assert_eq!(chunk_ids(1, &[2, 0]), None, "a zero distance");
        assert_eq!(chunk_ids(1, &[2, 0x81]), None, "a cut varint");
        assert_eq!(chunk_ids(1, &[3, 1]), None, "fewer ids than counted");
        assert_eq!(chunk_ids(u64::MAX, &[2, 1]), None, "past the last id");
        let too_many = RESOURCE_CHUNK_IDS as u8 + 1;
        assert_eq!(chunk_ids(0, &[too_many, 1]), None);
    }

    #[test]
    fn bucket_values_round_trip_at_the_list_bitmap_boundary() {
        let top = BUCKET_IDS as usize - 1;
        for n in [0usize, 1, 2, 255, 256, 257, 2000, 4096] {
            let members: Vec<u16> = (0..n).map(|i| (i * top / n.max(1)) as u16).collect();
            let mut members = members;
            members.dedup();
            match bucket_value(&members) {
                None => assert!(members.is_empty()),
                Some(v) => {
                    assert!(v.len() <= BITMAP_BYTES);
                    assert_eq!(bucket_members(&v).unwrap(), members);
                }
            }
        }
        assert_eq!(bucket_value(&[1, 258]), Some(vec![0, 1, 1, 2]));
        assert!(
            bucket_members(&[0, 3, 0, 2]).is_none(),
            "unordered list is damage"
        );
        assert!(bucket_members(&[0, 3, 0]).is_none(), "a cut member");
        assert!(
            bucket_members(&[0x10, 0, 0x20, 0]).is_none(),
            "outside the bucket"
        );
        assert!(bucket_members(&[0u8; BITMAP_BYTES + 1]).is_none());
    }

    #[test]
    fn snapshot_values_split_back() {
        let tail = [location(7, 1, 72), location(9, 1, 400)].concat();
        let v = snapshot_value(b"action", &tail);
        assert_eq!(split_snapshot(&v), Some((&b"action"[..], &tail[..])));
        assert_eq!(locations(&tail), Some(vec![(7, 1, 72), (9, 1, 400)]));
        assert!(
            split_snapshot(&v[..v.len() - 1]).is_none(),
            "a torn tail is damage"
        );
        assert!(split_snapshot(&[0, 0, 1]).is_none());
        assert!(split_snapshot(&[0, 0, 0, 9, 1]).is_none(), "n past the end");
    }

    #[test]
    fn only_canonical_generated_uids_go_without_a_key() {
        assert_eq!(generated_uid_id("al-42"), Some(42));
        for other in [
            "al-042",
            "al-",
            "al-+4",
            "al-4x",
            "al-99999999999999999999",
            "x-4",
        ] {
            assert_eq!(generated_uid_id(other), None, "{other}");
        }
        assert!(!has_uid_key(42, "al-42"));
        assert!(
            has_uid_key(41, "al-42"),
            "an imported uid naming another id keeps its key"
        );
        assert!(has_uid_key(42, "job-42"));
    }

    #[test]
    fn indexed_attributes_decide_the_index_and_counter_keys() {
        use crate::event::{fold, CreateAction, NewAction};
        let create = CreateAction {
            user: Some("ann".into()),
            ..CreateAction::new("acme", "resize", "droplet", "1")
        };
        let base = fold::create(&NewAction::assign(&create, 7, "al-7".into()), 1_000, 1);
        let keys_of = |a: &Action| (id_indexes(a), counters_of(a));
        // Everything else may change without changing a key.
        let mut other = base.clone();
        other.progress = 50.0;
        other.message = Some("half".into());
        other.updated_at += 5;
        other.version += 3;
        other.updated_position = 9;
        other.labels.insert("k".into(), "v".into());
        other.node = Some("n1".into());
        assert!(same_indexed_attributes(&base, &other));
        assert_eq!(keys_of(&base), keys_of(&other));
        // Each indexed attribute changes the keys and is seen by the comparison.
        let changes: Vec<fn(&mut Action)> = vec![
            |a| a.status = Status::Running,
            |a| a.tenant = "globex".into(),
            |a| a.resource.id = "2".into(),
            |a| {
                a.related.push(ResourceRef {
                    resource_type: "volume".into(),
                    id: "v".into(),
                })
            },
            |a| a.action_type = "reboot".into(),
            |a| a.user = None,
            |a| a.kind = Kind::Other,
        ];
        for change in changes {
            let mut changed = base.clone();
            change(&mut changed);
            assert!(!same_indexed_attributes(&base, &changed));
            assert_ne!(keys_of(&base), keys_of(&changed));
        }
    }

    #[test]
    fn time_keys_sort_like_times() {
        let times = [i64::MIN, -5, -1, 0, 1, 1_700_000_000_000_000, i64::MAX];
        for w in times.windows(2) {
            assert!(time_key(w[0]) < time_key(w[1]));
        }
    }

    #[test]
    fn prefix_end_bounds_the_prefix() {
        assert_eq!(prefix_end(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
    }
}
