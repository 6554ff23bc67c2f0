//! Keyset cursors: opaque, stable while new actions arrive, bound to their filters.
//!
//! A cursor is 17 bytes written as 34 lowercase hex digits:
//!
//! ```text
//! 0      1                    9                   17
//! | ver  | filter digest (8)  | last id (u64 BE)  |
//! ```
//!
//! - `last id` is the id of the last action of the page it came from. Results are in
//!   descending id order and new actions always get higher ids, so the next page is "ids
//!   below `last id`": nothing that existed when paging began is skipped or repeated,
//!   whatever is created meanwhile.
//! - `filter digest` is the first 8 bytes of SHA-256 over the normalized filters (every
//!   [`ActionQuery`] field except `limit`, `cursor` and `offset`; status and id lists sorted
//!   and de-duplicated). A cursor presented with other filters — another tenant included —
//!   is refused with [`QueryError::BadCursor`] instead of paging through a different list.
//!
//! The digest is not a secret: cursors are opaque by convention, not signed. Forging one
//! only lets a caller start a listing it could already run at another id.

use super::query::{ActionQuery, QueryError};
use crate::event::codec;
use crate::event::{ActionId, Kind, Micros, ResourceRef};
use serde::Serialize;
use sha2::{Digest, Sha256};

const CURSOR_VERSION: u8 = 1;
const CURSOR_BYTES: usize = 17;

/// The filters of a query in one canonical form (plain, so bincode encodes it stably).
#[derive(Serialize)]
struct Normalized<'a> {
    tenant: &'a Option<String>,
    resource: &'a Option<ResourceRef>,
    resource_type: &'a Option<String>,
    statuses: Vec<u8>,
    action_type: &'a Option<String>,
    user: &'a Option<String>,
    kind: Option<Kind>,
    created_since: Option<Micros>,
    created_until: Option<Micros>,
    updated_since: Option<Micros>,
    updated_until: Option<Micros>,
    ids: Vec<ActionId>,
}

/// The first 8 bytes of SHA-256 of the normalized filters of `q`.
pub fn filter_digest(q: &ActionQuery) -> [u8; 8] {
    let mut statuses: Vec<u8> = q
        .statuses
        .iter()
        .map(|s| super::keys::status_byte(*s))
        .collect();
    statuses.sort_unstable();
    statuses.dedup();
    let mut ids = q.ids.clone();
    ids.sort_unstable();
    ids.dedup();
    let n = Normalized {
        tenant: &q.tenant,
        resource: &q.resource,
        resource_type: &q.resource_type,
        statuses,
        action_type: &q.action_type,
        user: &q.user,
        kind: q.kind,
        created_since: q.created_since,
        created_until: q.created_until,
        updated_since: q.updated_since,
        updated_until: q.updated_until,
        ids,
    };
    // Plain data of bounded size: encoding cannot fail; fall back to Debug text regardless.
    let bytes = codec::encode_unbounded(&n).unwrap_or_else(|_| format!("{q:?}").into_bytes());
    let digest = Sha256::digest(&bytes);
    digest[..8].try_into().expect("8 bytes")
}

/// The cursor continuing after `last_id` under the filters of `q`.
pub fn encode(q: &ActionQuery, last_id: ActionId) -> String {
    let mut b = [0u8; CURSOR_BYTES];
    b[0] = CURSOR_VERSION;
    b[1..9].copy_from_slice(&filter_digest(q));
    b[9..].copy_from_slice(&last_id.to_be_bytes());
    let mut s = String::with_capacity(CURSOR_BYTES * 2);
    for byte in b {
        s.push(char::from_digit(u32::from(byte >> 4), 16).expect("nibble"));
        s.push(char::from_digit(u32::from(byte & 0xf), 16).expect("nibble"));
    }
    s
}

/// The last id of the previous page, if `cursor` is well formed and was issued for the
/// filters of `q`.
pub fn decode(q: &ActionQuery, cursor: &str) -> Result<ActionId, QueryError> {
    let bad = |why: &str| QueryError::BadCursor(why.to_string());
    if cursor.len() != CURSOR_BYTES * 2 {
        return Err(bad("not a cursor issued by this server"));
    }
    let mut b = [0u8; CURSOR_BYTES];
    for (i, pair) in cursor.as_bytes().chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16);
        let lo = (pair[1] as char).to_digit(16);
        match (hi, lo) {
            (Some(hi), Some(lo)) => b[i] = (hi << 4 | lo) as u8,
            _ => return Err(bad("not a cursor issued by this server")),
        }
    }
    if b[0] != CURSOR_VERSION {
        return Err(bad("cursor of an unknown version"));
    }
    if b[1..9] != filter_digest(q) {
        return Err(bad(
            "the cursor was issued for other filters; repeat the original filters or start without a cursor",
        ));
    }
    Ok(u64::from_be_bytes(b[9..].try_into().expect("8 bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Status;

    #[test]
    fn round_trip_and_binding() {
        let q = ActionQuery {
            tenant: Some("acme".into()),
            statuses: vec![Status::Running, Status::Queued],
            limit: 10,
            ..Default::default()
        };
        let c = encode(&q, 42);
        assert_eq!(c.len(), 34);
        assert_eq!(decode(&q, &c).unwrap(), 42);
        // Same filters in another order, another limit: still valid.
        let same = ActionQuery {
            statuses: vec![Status::Queued, Status::Running, Status::Queued],
            limit: 50,
            ..q.clone()
        };
        assert_eq!(decode(&same, &c).unwrap(), 42);
        let other = ActionQuery {
            tenant: Some("globex".into()),
            ..q.clone()
        };
        assert!(matches!(decode(&other, &c), Err(QueryError::BadCursor(_))));
        for junk in [
            "",
            "zz",
            &c[..33],
            &format!("{c}0"),
            &c.replace(&c[..2], "ff"),
        ] {
            assert!(
                matches!(decode(&q, junk), Err(QueryError::BadCursor(_))),
                "{junk}"
            );
        }
        let multibyte = "é".repeat(17);
        assert!(matches!(
            decode(&q, &multibyte),
            Err(QueryError::BadCursor(_))
        ));
    }
}
