//! A bounded memo of the native JSON of actions, so lists and gets serialise each state of
//! an action once rather than on every read.
//!
//! An action's state is identified by `(id, updated_position)`: every change is a new log
//! record, and the state at a position is the fold of the records up to it. So a memo entry
//! can never be stale — a newer state has another position and misses — and no
//! invalidation is needed (`as_of` states are states the action once had, and hit too).
//!
//! Memory: [`RENDER_CACHE_BYTES`], in the projection's bounded, sharded `Memo` (oldest
//! entries leave first); its stale-offer rules are not needed here, only `get` and `put`.

use super::wire::{ActionOut, ActionView, ListOut};
use crate::event::{Action, ActionId, Position};
use crate::projection::cache::{IdHash, Memo};
use axum::body::Bytes;
use std::sync::Arc;

/// Bytes of rendered JSON kept at most (all shards together).
pub const RENDER_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// Room reserved for one action's JSON (most are 600–900 bytes).
const RENDERED_ACTION_BYTES_TYPICAL: usize = 1024;

pub struct RenderCache(Memo<ActionId, (Position, Bytes), IdHash>);

impl Default for RenderCache {
    fn default() -> Self {
        RenderCache::new(RENDER_CACHE_BYTES)
    }
}

impl RenderCache {
    pub fn new(bytes_max: usize) -> RenderCache {
        RenderCache(Memo::new(bytes_max))
    }

    /// The JSON of `ActionOut::from(a)`, byte for byte.
    pub fn action(&self, a: &Action) -> Result<Bytes, serde_json::Error> {
        if let Some((position, json)) = self.0.get(&a.id) {
            if position == a.updated_position {
                return Ok(json);
            }
        }
        // Sized for a typical action, so serialising rarely regrows the buffer.
        let mut out = Vec::with_capacity(RENDERED_ACTION_BYTES_TYPICAL);
        serde_json::to_writer(&mut out, &ActionView(a))?;
        // What the memo holds is the whole allocation, spare room included.
        let held = out.capacity();
        let json = Bytes::from(out);
        self.0.put(a.id, (a.updated_position, json.clone()), held);
        Ok(json)
    }

    /// The JSON of [`ListOut`] for these actions, byte for byte, from the memo.
    pub fn list(
        &self,
        actions: &[Arc<Action>],
        next_cursor: Option<&str>,
        total: u64,
    ) -> Result<Vec<u8>, serde_json::Error> {
        let mut out = Vec::with_capacity(64 + actions.len() * 768);
        out.extend_from_slice(b"{\"actions\":[");
        for (i, a) in actions.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&self.action(a)?);
        }
        out.extend_from_slice(b"],\"next_cursor\":");
        serde_json::to_writer(&mut out, &next_cursor)?;
        out.extend_from_slice(b",\"total\":");
        serde_json::to_writer(&mut out, &total)?;
        out.push(b'}');
        // Every list of a debug build (the test suite) checks the memo against serde.
        debug_assert!({
            let typed = ListOut {
                actions: actions.iter().map(|a| ActionOut::from(&**a)).collect(),
                next_cursor: next_cursor.map(str::to_string),
                total,
            };
            serde_json::to_vec(&typed).ok().as_deref() == Some(&out[..])
        });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::fold;
    use crate::event::{CreateAction, EventBody, NewAction};
    use crate::projection::cache::SHARDS;

    fn action(id: ActionId) -> Action {
        let create = CreateAction {
            user: Some("ops \"quoted\" \u{e9}".into()),
            region: Some("ams3".into()),
            labels: [("k".to_string(), "v\n".to_string())].into(),
            ..CreateAction::new("acme", "snapshot", "droplet", &id.to_string())
        };
        fold::create(
            &NewAction::assign(&create, id, format!("u-{id}")),
            1_700_000_000_000_000,
            id,
        )
    }

    #[test]
    fn the_memo_answers_the_bytes_serde_would() {
        let cache = RenderCache::default();
        let mut a = action(7);
        let expected = serde_json::to_vec(&ActionOut::from(&a)).unwrap();
        assert_eq!(cache.action(&a).unwrap()[..], expected[..]);
        assert_eq!(cache.action(&a).unwrap()[..], expected[..], "from the memo");

        // A later state of the same action is a new position: rendered afresh.
        fold::apply(&mut a, &EventBody::Started, 1_700_000_000_000_001, 9).unwrap();
        let later = serde_json::to_vec(&ActionOut::from(&a)).unwrap();
        assert_ne!(later, expected);
        assert_eq!(cache.action(&a).unwrap()[..], later[..]);

        let list = vec![
            Arc::new(a.clone()),
            Arc::new(action(8)),
            Arc::new(action(9)),
        ];
        for (cursor, total) in [(None, 3), (Some("c\"x"), 40)] {
            let typed = ListOut {
                actions: list.iter().map(|a| ActionOut::from(&**a)).collect(),
                next_cursor: cursor.map(str::to_string),
                total,
            };
            assert_eq!(
                cache.list(&list, cursor, total).unwrap(),
                serde_json::to_vec(&typed).unwrap()
            );
        }
        assert_eq!(
            cache.list(&[], None, 0).unwrap(),
            br#"{"actions":[],"next_cursor":null,"total":0}"#
        );
    }

    #[test]
    fn a_full_memo_stays_within_its_budget_and_stays_right() {
        let cache = RenderCache::new(SHARDS * 2048);
        for id in 1..2000 {
            let a = action(id);
            let expected = serde_json::to_vec(&ActionOut::from(&a)).unwrap();
            assert_eq!(cache.action(&a).unwrap()[..], expected[..]);
        }
        let (shards, shard_bytes_max) = cache.0.usage();
        for (bytes, held) in shards {
            assert!(bytes <= shard_bytes_max);
            assert_eq!(held, bytes, "the byte count is exact");
        }
    }
}
