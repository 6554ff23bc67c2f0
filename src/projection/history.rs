//! An action's history: where each log record that touched it lives (kept by the
//! projection at apply time: the latest in the action's snapshot value, older runs in
//! history keys), the records themselves, and the action's state as of a
//! position or a time — folded from those records with [`crate::event::fold`], the same
//! functions live apply uses.
//!
//! Cost: one `read_at` per record of the action (a seek and a small read each), never a
//! scan of the log. Records' `recorded_at` never goes backwards along the log, so "as of
//! time T" is "every record up to the last one recorded at or before T".

use super::keys;
use super::query::QueryError;
use super::Projection;
use crate::event::codec;
use crate::event::fold;
use crate::event::{Action, ActionId, Micros, Op, Position};
use crate::ledger::StoreError;
use crate::log::reader::LogReader;

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

pub(super) fn locations(p: &Projection, id: ActionId) -> Result<Vec<RecordLocation>, QueryError> {
    let damaged = |e: String| QueryError::Store(StoreError::Damaged(e));
    // The snapshot first, then the history keys: a run spilled by a write in between then
    // shows up twice (deduplicated below), never not at all.
    let tail = match p.settled()?.get(keys::snapshot_key(id)) {
        Err(e) => return Err(StoreError::from(e).into()),
        Ok(None) => return Ok(Vec::new()),
        Ok(Some(v)) => super::decode_snapshot(id, &v)?.1.to_vec(),
    };
    let mut runs = Vec::new();
    for kv in p.settled()?.scan_prefix(keys::history_prefix(id)) {
        let (k, v) = kv.map_err(StoreError::from)?;
        let (_, run) = keys::history_run(&k, &v)
            .ok_or_else(|| damaged(format!("history key {k:?} is malformed")))?;
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

/// Reads and decodes the record at `loc`, checking it is the one the index expects.
fn read_entry(reader: &LogReader, loc: &RecordLocation) -> Result<crate::event::Entry, QueryError> {
    let rec = reader.read_at(loc.segment, loc.offset)?;
    if rec.position != loc.position {
        return Err(QueryError::Store(StoreError::Damaged(format!(
            "history index says record {} is at segment {} offset {}, but record {} is there; rebuild the projection",
            loc.position, loc.segment, loc.offset, rec.position
        ))));
    }
    codec::decode_entry(rec.kind, rec.schema, &rec.payload).map_err(|e| {
        QueryError::Store(StoreError::BadRecord {
            position: rec.position,
            reason: e.to_string(),
        })
    })
}

impl Projection {
    /// The log records that touched action `id`, in log order (empty when it does not
    /// exist). `reader` must read the log this projection was built from.
    pub fn history_records(
        &self,
        reader: &LogReader,
        id: ActionId,
    ) -> Result<Vec<HistoryRecord>, QueryError> {
        let mut out = Vec::new();
        for loc in locations(self, id)? {
            let entry = read_entry(reader, &loc)?;
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
        Ok(out)
    }

    /// Action `id` as it stood at `at`: `None` if it did not exist yet (or at all).
    pub fn action_as_of(
        &self,
        reader: &LogReader,
        id: ActionId,
        at: AsOf,
    ) -> Result<Option<Action>, QueryError> {
        let mut state: Option<Action> = None;
        for loc in locations(self, id)? {
            if matches!(at, AsOf::Position(p) if loc.position > p) {
                break;
            }
            let entry = read_entry(reader, &loc)?;
            if matches!(at, AsOf::Time(t) if entry.recorded_at > t) {
                break;
            }
            for op in &entry.ops {
                match op {
                    Op::Create(new) if new.id == id => {
                        state = Some(fold::create(new, entry.recorded_at, loc.position));
                    }
                    Op::Event { action, body } if *action == id => {
                        let a = state.as_mut().ok_or_else(|| {
                            QueryError::Store(StoreError::BadRecord {
                                position: loc.position,
                                reason: format!("an event for action {id} before its creation"),
                            })
                        })?;
                        fold::apply(a, body, entry.recorded_at, loc.position).map_err(|e| {
                            QueryError::Store(StoreError::BadRecord {
                                position: loc.position,
                                reason: format!("action {id}: {e}"),
                            })
                        })?;
                    }
                    _ => {}
                }
            }
        }
        Ok(state)
    }
}
