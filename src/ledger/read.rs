//! Reads of the past through the ledger: an action's history (the log records that touched
//! it) and its state as of a position or a time. The ledger owns the log and the fold, so
//! it composes them: a [`HistoryIndex`] (the sled projection keeps one at apply time) says
//! where each record of the action lives, the ledger reads those records from its log,
//! checks each is the one the index names, and folds them with [`crate::event::fold`] —
//! the same functions live apply uses. Callers (HTTP) hand the index to the ledger; nothing
//! outside the ledger touches its log reader for these reads.
//!
//! Cost: one `read_at` per record of the action (a seek and a small read each), never a
//! scan of the log. Records' `recorded_at` never goes backwards along the log, so "as of
//! time T" is "every record up to the last one recorded at or before T".

use super::{Ledger, LedgerError, StoreError};
use crate::event::codec;
use crate::event::fold;
use crate::event::{Action, ActionId, Entry, Micros, Op, Position};

/// Where one record of an action's history lives in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordLocation {
    pub position: Position,
    pub segment: u64,
    pub offset: u64,
}

/// One log record as an action's history shows it: only the operations on that action.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryRecord {
    pub position: Position,
    pub recorded_at: Micros,
    /// Token name that submitted the record.
    pub principal: String,
    /// The record's operations on this action (a batch record may hold others too).
    pub ops: Vec<Op>,
}

/// A point in the log's past.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsOf {
    /// Everything up to and including this log position.
    Position(Position),
    /// Everything recorded at or before this time (microseconds since the epoch).
    Time(Micros),
}

/// Where the log records of each action live: the index history reads go through. It must
/// be built from the log of the ledger that reads through it.
pub trait HistoryIndex {
    /// Where each log record that touched action `id` lives, in log order (empty when it
    /// does not exist).
    fn record_locations(&self, id: ActionId) -> Result<Vec<RecordLocation>, StoreError>;
}

impl Ledger {
    /// The log records that touched action `id`, in log order (empty when it does not
    /// exist), found through `index`.
    pub fn history(
        &self,
        index: &dyn HistoryIndex,
        id: ActionId,
    ) -> Result<Vec<HistoryRecord>, LedgerError> {
        Ok(self.history_page(index, id, 0, usize::MAX)?.0)
    }

    /// At most `limit` of the log records that touched action `id`, from the `skip`-th on
    /// (log order), and how many there are in all: only the records of the page are read
    /// from the log.
    pub fn history_page(
        &self,
        index: &dyn HistoryIndex,
        id: ActionId,
        skip: usize,
        limit: usize,
    ) -> Result<(Vec<HistoryRecord>, usize), LedgerError> {
        let locations = index.record_locations(id)?;
        let total = locations.len();
        let mut out = Vec::new();
        for loc in locations.into_iter().skip(skip).take(limit) {
            let entry = self.read_entry(&loc)?;
            out.push(HistoryRecord {
                position: loc.position,
                recorded_at: entry.recorded_at,
                principal: entry.principal,
                ops: entry
                    .ops
                    .into_iter()
                    .filter(|op| op.action_id() == id)
                    .collect(),
            });
        }
        Ok((out, total))
    }

    /// Action `id` as it stood at `at`: `None` if it did not exist yet (or at all).
    pub fn action_as_of(
        &self,
        index: &dyn HistoryIndex,
        id: ActionId,
        at: AsOf,
    ) -> Result<Option<Action>, LedgerError> {
        let mut state: Option<Action> = None;
        for loc in index.record_locations(id)? {
            if matches!(at, AsOf::Position(p) if loc.position > p) {
                break;
            }
            let entry = self.read_entry(&loc)?;
            if matches!(at, AsOf::Time(t) if entry.recorded_at > t) {
                break;
            }
            for op in &entry.ops {
                match op {
                    Op::Create(new) if new.id == id => {
                        state = Some(fold::create(new, entry.recorded_at, loc.position));
                    }
                    Op::Event { action, body } if *action == id => {
                        let a = state.as_mut().ok_or_else(|| StoreError::BadRecord {
                            position: loc.position,
                            reason: format!("an event for action {id} before its creation"),
                        })?;
                        fold::apply(a, body, entry.recorded_at, loc.position).map_err(|e| {
                            StoreError::BadRecord {
                                position: loc.position,
                                reason: format!("action {id}: {e}"),
                            }
                        })?;
                    }
                    _ => {}
                }
            }
        }
        Ok(state)
    }

    /// Reads and decodes the record at `loc`, checking it is the one the index expects.
    fn read_entry(&self, loc: &RecordLocation) -> Result<Entry, LedgerError> {
        let rec = self.reader().read_at(loc.segment, loc.offset)?;
        if rec.position != loc.position {
            return Err(StoreError::Damaged(format!(
                "history index says record {} is at segment {} offset {}, but record {} is there; rebuild the projection",
                loc.position, loc.segment, loc.offset, rec.position
            ))
            .into());
        }
        codec::decode_entry(rec.kind, rec.schema, &rec.payload).map_err(|e| {
            StoreError::BadRecord {
                position: rec.position,
                reason: e.to_string(),
            }
            .into()
        })
    }
}
