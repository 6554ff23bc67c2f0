//! [`MemoryStore`]: the simplest [`StateStore`] — every snapshot and index in memory, built
//! from the log at each open. Used by tests and tools that need no persistent projection; the
//! server uses the sled projection.

use super::{CommittedEntry, IdempotentResult, StateStore, StoreError};
use crate::event::fold;
use crate::event::{Action, ActionId, ResourceRef};
use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

#[derive(Default)]
struct Inner {
    actions: BTreeMap<ActionId, Action>,
    uids: HashMap<String, ActionId>,
    exclusive: HashMap<(String, ResourceRef), ActionId>,
    idempotent: HashMap<(String, String), IdempotentResult>,
    applied: u64,
}

#[derive(Default)]
pub struct MemoryStore {
    inner: RwLock<Inner>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Every action, in id order.
    pub fn all(&self) -> Vec<Action> {
        self.read().actions.values().cloned().collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }
}

impl StateStore for MemoryStore {
    fn action(&self, id: ActionId) -> Result<Option<Action>, StoreError> {
        Ok(self.read().actions.get(&id).cloned())
    }

    fn id_for_uid(&self, uid: &str) -> Result<Option<ActionId>, StoreError> {
        Ok(self.read().uids.get(uid).copied())
    }

    fn exclusive_holder(
        &self,
        tenant: &str,
        resource: &ResourceRef,
    ) -> Result<Option<ActionId>, StoreError> {
        Ok(self
            .read()
            .exclusive
            .get(&(tenant.to_string(), resource.clone()))
            .copied())
    }

    fn idempotent_result(
        &self,
        tenant: &str,
        key: &str,
    ) -> Result<Option<IdempotentResult>, StoreError> {
        Ok(self
            .read()
            .idempotent
            .get(&(tenant.to_string(), key.to_string()))
            .cloned())
    }

    fn max_action_id(&self) -> Result<ActionId, StoreError> {
        Ok(self.read().actions.keys().next_back().copied().unwrap_or(0))
    }

    fn applied_position(&self) -> u64 {
        self.read().applied
    }

    fn apply(&self, entries: &[CommittedEntry]) -> Result<(), StoreError> {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        for c in entries {
            if c.position <= inner.applied {
                continue;
            }
            let results =
                fold::apply_entry(&c.entry, c.position, |id| inner.actions.get(&id).cloned())
                    .map_err(|e| StoreError::BadRecord {
                        position: c.position,
                        reason: e.to_string(),
                    })?;
            for a in &results {
                if a.version == 1 {
                    inner.uids.insert(a.uid.clone(), a.id);
                }
                let key = (a.tenant.clone(), a.resource.clone());
                if a.exclusive && !a.status.is_terminal() {
                    inner.exclusive.insert(key, a.id);
                } else if a.exclusive && inner.exclusive.get(&key) == Some(&a.id) {
                    inner.exclusive.remove(&key);
                }
                inner.actions.insert(a.id, a.clone());
            }
            if let Some(stamp) = &c.entry.idempotency {
                inner.idempotent.insert(
                    (stamp.tenant.clone(), stamp.key.clone()),
                    IdempotentResult {
                        request_digest: stamp.request_digest,
                        position: c.position,
                        recorded_at: c.entry.recorded_at,
                        actions: results,
                    },
                );
            }
            inner.applied = c.position;
        }
        Ok(())
    }
}
