//! The store seam: what the ledger needs from the derived state it validates against and
//! keeps current ([`StateStore`]), and what it hands the store ([`CommittedEntry`]) or keeps
//! in it ([`IdempotentResult`]). Implemented by the sled projection and by
//! [`super::memory::MemoryStore`].

use super::StoreError;
use crate::event::*;

/// A committed log entry with where it lives, as the store applies it.
#[derive(Clone, Debug)]
pub struct CommittedEntry {
    pub position: Position,
    pub segment: u64,
    pub offset: u64,
    pub entry: Entry,
}

/// The first answer to an idempotent submission, kept so a repeat can return it.
#[derive(Clone, Debug, PartialEq)]
pub struct IdempotentResult {
    pub request_digest: [u8; 32],
    pub position: Position,
    pub recorded_at: Micros,
    pub actions: Vec<Action>,
}

/// What the writer needs from the derived state, and what keeps it current. Implemented by
/// the sled projection and by [`super::memory::MemoryStore`].
///
/// `apply` must be idempotent per position: entries at or below [`Self::applied_position`]
/// are skipped, so catch-up can always restart from the checkpoint.
pub trait StateStore: Send + Sync + 'static {
    fn action(&self, id: ActionId) -> Result<Option<Action>, StoreError>;
    fn id_for_uid(&self, uid: &str) -> Result<Option<ActionId>, StoreError>;
    /// The unfinished exclusive action holding `resource` for `tenant`, if any.
    fn exclusive_holder(
        &self,
        tenant: &str,
        resource: &ResourceRef,
    ) -> Result<Option<ActionId>, StoreError>;
    fn idempotent_result(
        &self,
        tenant: &str,
        key: &str,
    ) -> Result<Option<IdempotentResult>, StoreError>;
    /// Highest action id created so far (0 when none).
    fn max_action_id(&self) -> Result<ActionId, StoreError>;
    /// Position of the last applied log record (0 when none).
    fn applied_position(&self) -> u64;
    fn apply(&self, entries: &[CommittedEntry]) -> Result<(), StoreError>;
    /// Whether `apply` left writes for [`Self::write_back`] (a store that writes everything
    /// before `apply` returns never does). Every read of the store sees them either way.
    fn unwritten(&self) -> bool {
        false
    }
    /// Writes out what `apply` left; the applier calls it once no batch has come for
    /// [`super::WRITE_BACK_IDLE`], and when it stops.
    fn write_back(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Why the store can take no more batches, once it cannot (checked before each batch:
    /// the writer then refuses every command, as after a failed `apply`).
    fn failure(&self) -> Option<StoreError> {
        None
    }
}
