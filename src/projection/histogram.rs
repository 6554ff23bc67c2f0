//! Counting the actions of an [`ActionQuery`] per creation-time bucket and status: what
//! `GET /api/v1/histogram` answers.
//!
//! An action is counted in the bucket its `created_at` falls in (buckets are half-open,
//! `[edges[i], edges[i + 1])`), under its current status.
//!
//! **From the indexes** (the usual case: one tenant or each tenant in turn, filters among
//! statuses, type, user, kind and the creation-time range, creation times
//! non-decreasing in id order): each bucket's edge time becomes an id (a binary search over
//! the snapshots, narrowed by the edges already found), and for each status the id buckets
//! of that status's index are intersected with those of every other filter's index — the
//! smallest of them (by its counter) scanned, the others read bucket by bucket. No snapshot
//! is read beyond the edge searches.
//!
//! **From the snapshots** otherwise (`resource` — a resource's list is chunked, not
//! bucketed, so it does not intersect with the others — `resource_type`,
//! `updated_since`/`updated_until`, `id`, or an imported log whose creation times go
//! backwards): the list's own plan picks
//! the index, and each candidate is read and filtered like a list would.
//!
//! Either way at most [`HISTOGRAM_SCAN_MAX`] index keys or snapshots are read, newest ids
//! first; past that the answer is marked incomplete and counts what was read.

use super::keys::{self, Dim, Scope};
use super::list::{self, damaged, sled_q, store};
use super::query::{ActionQuery, QueryError};
use super::Projection;
use crate::event::{ActionId, Micros, Status};
pub use crate::limits::HISTOGRAM_SCAN_MAX;

/// The counts of one histogram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Histogram {
    /// Per bucket, per status (indexed by [`Status::ALL`] order).
    pub counts: Vec<[u64; 5]>,
    /// False when [`HISTOGRAM_SCAN_MAX`] stopped the count: the counts are then lower
    /// bounds (the newest actions of the range counted first).
    pub complete: bool,
}

fn status_index(s: Status) -> usize {
    Status::ALL
        .iter()
        .position(|x| *x == s)
        .expect("every status is in ALL")
}

/// Counts the matches of `q` (paging ignored) created in `edges[0]..edges[last]`, per
/// bucket `edges[i]..edges[i + 1]`, reading at most `scan_max` index keys or snapshots.
/// `edges` must be strictly ascending with at least two times.
pub(super) fn run(
    p: &Projection,
    q: &ActionQuery,
    edges: &[Micros],
    scan_max: u64,
) -> Result<Histogram, QueryError> {
    assert!(
        edges.len() >= 2 && edges.windows(2).all(|w| w[0] < w[1]),
        "histogram edges must ascend"
    );
    let mut h = Histogram {
        counts: vec![[0; 5]; edges.len() - 1],
        complete: true,
    };
    let indexed = p.created_monotone()
        && q.ids.is_empty()
        && q.resource.is_none()
        && q.resource_type.is_none()
        && q.updated_since.is_none()
        && q.updated_until.is_none();
    let (from, to) = effective_range(q, edges);
    if from >= to {
        return Ok(h);
    }
    if indexed {
        from_indexes(p, q, edges, (from, to), scan_max, &mut h)?;
    } else {
        from_snapshots(p, q, edges, (from, to), scan_max, &mut h)?;
    }
    Ok(h)
}

/// The time range both the edges and the query's own `since`/`until` allow.
fn effective_range(q: &ActionQuery, edges: &[Micros]) -> (Micros, Micros) {
    let from = q.created_since.map_or(edges[0], |t| t.max(edges[0]));
    let to = q
        .created_until
        .map_or(edges[edges.len() - 1], |t| t.min(edges[edges.len() - 1]));
    (from, to)
}

/// The bucket of a creation time in `edges[0]..edges[last]`.
fn bucket_of_time(edges: &[Micros], t: Micros) -> Option<usize> {
    if t < edges[0] || t >= edges[edges.len() - 1] {
        return None;
    }
    Some(edges.partition_point(|e| *e <= t) - 1)
}

fn from_snapshots(
    p: &Projection,
    q: &ActionQuery,
    edges: &[Micros],
    (from, to): (Micros, Micros),
    scan_max: u64,
    h: &mut Histogram,
) -> Result<(), QueryError> {
    let mut q = q.clone();
    q.created_since = Some(from);
    q.created_until = Some(to);
    q.cursor = None;
    q.offset = 0;
    let (mut lo, mut hi) = (0, ActionId::MAX);
    if p.created_monotone() {
        lo = list::first_id_created_at_or_after(p, from)?;
        hi = list::first_id_created_at_or_after(p, to)?;
    }
    let mut stream = list::plan(p, &q, lo, hi)?;
    let mut read = 0u64;
    while let Some((id, bytes)) = stream.next_id()? {
        if read == scan_max {
            h.complete = false;
            break;
        }
        read += 1;
        let action = match bytes {
            Some(b) => std::sync::Arc::new(super::decode_action(id, &b).map_err(store)?),
            // Gone: a race with a concurrent apply (as in the list).
            None => match p.load_shared(id).map_err(store)? {
                Some(a) => a,
                None => continue,
            },
        };
        if !list::matches(&q, &action) {
            continue;
        }
        if let Some(b) = bucket_of_time(edges, action.created_at) {
            h.counts[b][status_index(action.status)] += 1;
        }
    }
    Ok(())
}

/// The tenants with actions, from the per-tenant total counters (one seek per tenant).
fn tenants(p: &Projection) -> Result<Vec<String>, QueryError> {
    let tree = p.settled()?;
    let family = [keys::P_COUNTER, 1];
    let mut seek = family.to_vec();
    let mut out = Vec::new();
    while let Some(kv) = tree.range(seek..).next() {
        let (k, _) = kv.map_err(sled_q)?;
        if !k.starts_with(&family) {
            break;
        }
        let (t, _) = keys::take_str(&k[family.len()..])
            .ok_or_else(|| damaged(format!("counter key {k:?} is malformed")))?;
        out.push(String::from_utf8_lossy(t).into_owned());
        match keys::prefix_end(&k[..family.len() + 4 + t.len()]) {
            Some(end) => seek = end,
            None => break,
        }
    }
    Ok(out)
}

/// The ids each edge time maps to: `ids[i]` is the first id created at or after
/// `times[i]` (`times` ascending). Each search is narrowed by the answers already found,
/// and a range with no ids left costs nothing.
fn edge_ids(
    p: &Projection,
    times: &[Micros],
    lo: ActionId,
    hi: ActionId,
    out: &mut [ActionId],
) -> Result<(), QueryError> {
    if times.is_empty() {
        return Ok(());
    }
    if lo == hi {
        out.fill(lo);
        return Ok(());
    }
    let mid = times.len() / 2;
    let id = list::first_id_created_in(p, times[mid], lo, hi)?;
    out[mid] = id;
    let (left, right) = out.split_at_mut(mid);
    edge_ids(p, &times[..mid], lo, id, left)?;
    edge_ids(p, &times[mid + 1..], id, hi, &mut right[1..])
}

/// Members of `a` also in `b` (both ascending).
fn intersect(a: &mut Vec<ActionId>, b: &[ActionId]) {
    let mut j = 0;
    a.retain(|x| {
        while j < b.len() && b[j] < *x {
            j += 1;
        }
        j < b.len() && b[j] == *x
    });
}

fn from_indexes(
    p: &Projection,
    q: &ActionQuery,
    edges: &[Micros],
    (from, to): (Micros, Micros),
    scan_max: u64,
    h: &mut Histogram,
) -> Result<(), QueryError> {
    let tree = p.settled()?;
    let last = crate::ledger::StateStore::max_action_id(p).map_err(store)?;
    // The ids of every edge, and of the effective range's ends.
    let mut times: Vec<Micros> = edges.to_vec();
    times.extend([from, to]);
    times.sort_unstable();
    times.dedup();
    let mut ids = vec![0; times.len()];
    edge_ids(p, &times, 0, last + 1, &mut ids)?;
    let id_of = |t: Micros| ids[times.binary_search(&t).expect("every edge was searched")];
    let edge_ids: Vec<ActionId> = edges.iter().map(|t| id_of(*t)).collect();
    let (lo, hi) = (id_of(from), id_of(to));
    if lo >= hi {
        return Ok(());
    }
    let statuses: Vec<Status> = if q.statuses.is_empty() {
        Status::ALL.to_vec()
    } else {
        let mut s = q.statuses.clone();
        s.sort();
        s.dedup();
        s
    };
    let tenants = match &q.tenant {
        Some(t) => vec![t.clone()],
        None => tenants(p)?,
    };
    let mut read = 0u64;
    'tenants: for tenant in &tenants {
        read += 1;
        let scope = Scope::Tenant(tenant);
        let count = |d: Dim<'_>| p.counter(&keys::counter_key(scope, d)).map_err(store);
        // (size, prefix) of every filter's index but the status.
        let mut filters: Vec<(u64, Vec<u8>)> = Vec::new();
        if let Some(t) = &q.action_type {
            filters.push((count(Dim::Type(t))?, keys::ix_type(tenant, t)));
        }
        if let Some(u) = &q.user {
            filters.push((count(Dim::User(u))?, keys::ix_user(tenant, u)));
        }
        if let Some(k) = q.kind {
            filters.push((count(Dim::Kind(k))?, keys::ix_kind(tenant, k)));
        }
        for &status in &statuses {
            let mut indexes = filters.clone();
            indexes.push((count(Dim::Status(status))?, keys::ix_status(tenant, status)));
            if indexes.iter().any(|(size, _)| *size == 0) {
                continue;
            }
            indexes.sort_by_key(|(size, _)| *size);
            let (driver, others) = indexes.split_first().expect("the status index is there");
            let start = keys::bucket_key(&driver.1, keys::bucket_of(lo));
            let end = keys::bucket_key(&driver.1, keys::bucket_of(hi - 1));
            for kv in tree.range(start..=end).rev() {
                if read >= scan_max {
                    h.complete = false;
                    break 'tenants;
                }
                read += 1;
                let (k, v) = kv.map_err(sled_q)?;
                let malformed = || damaged(format!("index bucket {k:?} is malformed"));
                let bucket = k
                    .get(driver.1.len()..)
                    .and_then(keys::read_u64)
                    .ok_or_else(malformed)?;
                let mut members = keys::bucket_ids(bucket, &v).ok_or_else(malformed)?;
                members.retain(|id| (lo..hi).contains(id));
                for (_, prefix) in others {
                    if members.is_empty() {
                        break;
                    }
                    read += 1;
                    let key = keys::bucket_key(prefix, bucket);
                    let other = match tree.get(&key).map_err(sled_q)? {
                        Some(v) => keys::bucket_ids(bucket, &v)
                            .ok_or_else(|| damaged(format!("index bucket {key:?} is malformed")))?,
                        None => Vec::new(),
                    };
                    intersect(&mut members, &other);
                }
                for id in members {
                    let b = edge_ids.partition_point(|e| *e <= id) - 1;
                    h.counts[b][status_index(status)] += 1;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intersect_keeps_common_members() {
        let mut a = vec![1, 3, 5, 7, 9];
        intersect(&mut a, &[0, 3, 4, 9, 10]);
        assert_eq!(a, vec![3, 9]);
        let mut a = vec![1, 2];
        intersect(&mut a, &[]);
        assert!(a.is_empty());
    }

    #[test]
    fn times_fall_in_half_open_buckets() {
        let edges = [10, 20, 30];
        assert_eq!(bucket_of_time(&edges, 9), None);
        assert_eq!(bucket_of_time(&edges, 10), Some(0));
        assert_eq!(bucket_of_time(&edges, 19), Some(0));
        assert_eq!(bucket_of_time(&edges, 20), Some(1));
        assert_eq!(bucket_of_time(&edges, 29), Some(1));
        assert_eq!(bucket_of_time(&edges, 30), None);
    }
}
