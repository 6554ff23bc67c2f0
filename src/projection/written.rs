//! The applier's own memo: the snapshot values (action and history tail) it wrote last,
//! decoded, for the actions it changed most recently ([`WRITTEN_MEMO_BYTES`]). The next
//! record on such an action — the common case: events arrive while an action runs — starts
//! from it instead of a sled read and a decode (see `apply`'s `Fold`).
//!
//! Unlike the read memos of `cache`, which any reader may fill, only the writer of the
//! projection touches it: it is written and read only under the projection's `write` lock,
//! after the batch that wrote a value is applied, so it never differs from what sled holds
//! once the write-back is empty (`verify` checks that). A rebuild, which writes sled
//! directly, empties it.

use super::cache::{footprint, IdHash, Memo};
use crate::event::{Action, ActionId};
use std::sync::Arc;

/// Default bytes the applier's memo of the snapshot values it wrote may hold
/// ([`super::ProjectionConfig::written_memo_bytes`]): a few thousand recently changed
/// actions.
pub const WRITTEN_MEMO_BYTES: usize = 4 * 1024 * 1024;

/// An action as sled holds it, and the history tail of its snapshot value: what a snapshot
/// value decodes to, shared (the memo hands out clones).
pub(crate) type Stored = (Arc<Action>, Arc<[u8]>);

/// What the applier wrote last for each recently changed action.
pub(crate) struct Written(Memo<ActionId, Stored, IdHash>);

impl Written {
    pub fn new(bytes_max: usize) -> Written {
        Written(Memo::new(bytes_max))
    }

    /// What the applier last wrote for action `id`, if the memo still holds it.
    pub fn get(&self, id: ActionId) -> Option<Stored> {
        self.0.get(&id)
    }

    /// Notes the snapshot value just written for `action`: its history `tail`, and the
    /// length of its encoded snapshot (which sizes the entry).
    pub fn put(&self, action: Arc<Action>, tail: Arc<[u8]>, encoded_len: usize) {
        let held = footprint(encoded_len) + tail.len();
        self.0.put(action.id, (action, tail), held);
    }

    /// Forgets everything (a rebuild writes underneath it).
    pub fn clear(&self) {
        self.0.clear();
    }
}
