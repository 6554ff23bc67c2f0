//! An action's history index: where each log record that touched it lives, kept by the
//! projection at apply time (the latest in the action's snapshot value, older runs in
//! history keys). The ledger reads the records through it
//! ([`crate::ledger::Ledger::history`], [`crate::ledger::Ledger::action_as_of`]); the types
//! of those reads are re-exported here.

use super::keys;
use super::Projection;
use crate::event::ActionId;
use crate::ledger::{HistoryIndex, StoreError};

pub use crate::ledger::{AsOf, HistoryRecord, RecordLocation};

pub(super) fn locations(p: &Projection, id: ActionId) -> Result<Vec<RecordLocation>, StoreError> {
    // The snapshot first, then the history keys: a run spilled by a write in between then
    // shows up twice (deduplicated below), never not at all.
    let tree = p.settled()?;
    let tail = match super::snapshot_bytes(
        |k| tree.get(k).map_err(StoreError::from),
        &p.values,
        id,
        true,
    )? {
        None => return Ok(Vec::new()),
        Some(v) => super::decode_snapshot(id, &v)?.1.to_vec(),
    };
    let mut runs = Vec::new();
    for kv in p.settled()?.scan_prefix(keys::history_prefix(id)) {
        let (k, v) = kv.map_err(StoreError::from)?;
        let (_, run) = keys::history_run(&k, &v)
            .ok_or_else(|| StoreError::Damaged(format!("history key {k:?} is malformed")))?;
        runs.extend(run);
    }
    runs.extend(keys::locations(&tail).expect("decode_snapshot checked whole locations"));
    runs.sort_unstable_by_key(|l| l.0);
    runs.dedup_by_key(|l| l.0);
    Ok(runs
        .into_iter()
        .map(|(position, segment, offset)| RecordLocation {
            position,
            segment,
            offset,
        })
        .collect())
}

impl HistoryIndex for Projection {
    fn record_locations(&self, id: ActionId) -> Result<Vec<RecordLocation>, StoreError> {
        locations(self, id)
    }
}
