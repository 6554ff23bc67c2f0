//! The fold: the one function that turns log operations into action snapshots, and the
//! lifecycle rules it enforces.
//!
//! The writer validates a command by applying it to a copy of the current snapshot: if
//! [`apply`] accepts it, the command is written and the copy is the new state. Live apply,
//! rebuild and point-in-time reads call the same [`create`] and [`apply`] on records that were
//! accepted once, so a record the fold refuses during replay means the log or the code is
//! wrong, never the user.
//!
//! Lifecycle: `queued → running → completed | failed | cancelled`.
//! - `started` moves a queued action to running; `progress`, `event_started` and
//!   `event_finished` on a queued action imply `started`.
//! - `completed` needs a running action with no open sub-event; `failed` and `cancelled` are
//!   accepted from queued or running.
//! - Nothing is accepted after a terminal event.
//! - `event_finished` must name an open sub-event; a name can be open only once at a time.

use super::{Action, CreateAction, EventBody, Micros, NewAction, PendingOp, Position, Status};
use crate::limits::*;
use thiserror::Error;

/// Why a command was refused. A refused command writes nothing.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum Rejection {
    #[error("action {0} not found")]
    NotFound(String),
    #[error("action {action} is {status}: {reason}")]
    InvalidTransition {
        action: u64,
        status: &'static str,
        event: &'static str,
        reason: String,
    },
    #[error("action {action} is at version {actual}, expected_version was {expected}")]
    VersionConflict {
        action: u64,
        expected: u64,
        actual: u64,
    },
    #[error("uid {uid:?} is already taken")]
    UidTaken {
        uid: String,
        /// The holder's id, only when the caller may see it (same tenant).
        existing: Option<u64>,
    },
    #[error(
        "resource {resource_type}/{resource_id} is busy: unfinished exclusive action {blocking}"
    )]
    ResourceBusy {
        resource_type: String,
        resource_id: String,
        blocking: u64,
    },
    #[error("{field}: {reason}")]
    BadRequest { field: String, reason: String },
    #[error("{field}: limit {limit} is {max}, got {actual}")]
    Limit {
        limit: &'static str,
        field: String,
        max: u64,
        actual: u64,
    },
    #[error("Idempotency-Key {key:?} was already used with a different request body")]
    IdempotencyKeyReused { key: String },
}

impl Rejection {
    /// The stable error code (docs/api.md, "Errors").
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::NotFound(_) => "not_found",
            Rejection::InvalidTransition { .. } => "invalid_transition",
            Rejection::VersionConflict { .. } => "version_conflict",
            Rejection::UidTaken { .. } => "uid_taken",
            Rejection::ResourceBusy { .. } => "resource_busy",
            Rejection::BadRequest { .. } => "bad_request",
            Rejection::Limit { .. } => "limit_exceeded",
            Rejection::IdempotencyKeyReused { .. } => "idempotency_key_reused",
        }
    }

    fn bad(field: impl Into<String>, reason: impl Into<String>) -> Rejection {
        Rejection::BadRequest {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

fn check_len(field: &str, value: &str, limit: &'static str, max: usize) -> Result<(), Rejection> {
    if value.len() > max {
        return Err(Rejection::Limit {
            limit,
            field: field.to_string(),
            max: max as u64,
            actual: value.len() as u64,
        });
    }
    Ok(())
}

fn check_name(field: &str, value: &str) -> Result<(), Rejection> {
    if value.trim().is_empty() {
        return Err(Rejection::bad(field, "must not be empty"));
    }
    if value.chars().any(char::is_control) {
        return Err(Rejection::bad(field, "must not contain control characters"));
    }
    check_len(field, value, "NAME_BYTES_MAX", NAME_BYTES_MAX)
}

fn check_opt_name(field: &str, value: &Option<String>) -> Result<(), Rejection> {
    value.as_deref().map_or(Ok(()), |v| check_name(field, v))
}

fn check_opt_text(field: &str, value: &Option<String>) -> Result<(), Rejection> {
    value.as_deref().map_or(Ok(()), |v| {
        check_len(field, v, "TEXT_BYTES_MAX", TEXT_BYTES_MAX)
    })
}

fn check_count(field: &str, n: usize, limit: &'static str, max: usize) -> Result<(), Rejection> {
    if n > max {
        return Err(Rejection::Limit {
            limit,
            field: field.to_string(),
            max: max as u64,
            actual: n as u64,
        });
    }
    Ok(())
}

/// Progress is a finite number in 0..=100.
pub fn check_progress(field: &str, p: f64) -> Result<(), Rejection> {
    if !p.is_finite() || !(0.0..=100.0).contains(&p) {
        return Err(Rejection::bad(
            field,
            format!("must be between 0 and 100, got {p}"),
        ));
    }
    Ok(())
}

/// Field checks of a create that need no state.
pub fn validate_create(c: &CreateAction) -> Result<(), Rejection> {
    if let Some(uid) = &c.uid {
        if uid.is_empty() || uid.chars().any(|ch| ch.is_control() || ch == '/') {
            return Err(Rejection::bad(
                "uid",
                "must be non-empty, without '/' or control characters",
            ));
        }
        if uid.bytes().all(|b| b.is_ascii_digit()) {
            // Routes take `{id}` as "digits → id, otherwise uid": an all-digit uid could
            // never be looked up.
            return Err(Rejection::bad("uid", "must not be all digits"));
        }
        check_len("uid", uid, "UID_BYTES_MAX", UID_BYTES_MAX)?;
    }
    check_name("tenant", &c.tenant)?;
    check_opt_name("user", &c.user)?;
    check_name("type", &c.action_type)?;
    check_name("resource.type", &c.resource.resource_type)?;
    check_name("resource.id", &c.resource.id)?;
    check_count("related", c.related.len(), "RELATED_MAX", RELATED_MAX)?;
    for r in &c.related {
        check_name("related.type", &r.resource_type)?;
        check_name("related.id", &r.id)?;
    }
    check_opt_name("node", &c.node)?;
    check_opt_name("region", &c.region)?;
    check_opt_text("description", &c.description)?;
    check_count("labels", c.labels.len(), "LABELS_MAX", LABELS_MAX)?;
    for (k, v) in &c.labels {
        check_name("labels key", k)?;
        check_len("labels value", v, "TEXT_BYTES_MAX", TEXT_BYTES_MAX)?;
    }
    Ok(())
}

fn validate_pending_op(shard: &str, op: &PendingOp) -> Result<(), Rejection> {
    check_name("pending_ops shard", shard)?;
    check_opt_name("pending_ops.op_name", &op.op_name)?;
    if let Some(p) = op.progress {
        check_progress("pending_ops.progress", p)?;
    }
    check_opt_name("pending_ops.status_code", &op.status_code)?;
    check_opt_text("pending_ops.status_description", &op.status_description)?;
    check_opt_text("pending_ops.snapshot", &op.snapshot)?;
    Ok(())
}

/// Field checks of an event that need no state.
pub fn validate_event(body: &EventBody) -> Result<(), Rejection> {
    match body {
        EventBody::Started | EventBody::Heartbeat | EventBody::CancelRequested => Ok(()),
        EventBody::Progress(p) => {
            if let Some(v) = p.progress {
                check_progress("progress", v)?;
            }
            check_opt_text("state", &p.state)?;
            check_opt_text("message", &p.message)?;
            check_count(
                "pending_ops",
                p.pending_ops.len(),
                "PENDING_OPS_MAX",
                PENDING_OPS_MAX,
            )?;
            for (shard, op) in &p.pending_ops {
                match op {
                    Some(op) => validate_pending_op(shard, op)?,
                    None => check_name("pending_ops shard", shard)?,
                }
            }
            Ok(())
        }
        EventBody::EventStarted { name, host } => {
            check_name("name", name)?;
            check_opt_name("host", host)
        }
        EventBody::EventFinished {
            name,
            traceback,
            details,
            ..
        } => {
            check_name("name", name)?;
            check_opt_text("traceback", traceback)?;
            check_opt_text("details", details)
        }
        EventBody::Completed { message } | EventBody::Cancelled { message } => {
            check_opt_text("message", message)
        }
        EventBody::Failed { error } => {
            check_name("error.code", &error.code)?;
            check_len(
                "error.message",
                &error.message,
                "TEXT_BYTES_MAX",
                TEXT_BYTES_MAX,
            )
        }
    }
}

/// The snapshot of a freshly created action.
pub fn create(new: &NewAction, at: Micros, position: Position) -> Action {
    let running = new.status == super::InitialStatus::Running;
    Action {
        id: new.id,
        uid: new.uid.clone(),
        tenant: new.tenant.clone(),
        user: new.user.clone(),
        action_type: new.action_type.clone(),
        kind: new.kind,
        resource: new.resource.clone(),
        related: new.related.clone(),
        node: new.node.clone(),
        region: new.region.clone(),
        description: new.description.clone(),
        labels: new.labels.clone(),
        exclusive: new.exclusive,
        status: if running {
            Status::Running
        } else {
            Status::Queued
        },
        progress: 0.0,
        state: None,
        message: None,
        error: None,
        cancel_requested: false,
        created_at: at,
        started_at: running.then_some(at),
        updated_at: at,
        completed_at: None,
        heartbeat_at: None,
        events: Vec::new(),
        pending_ops: Default::default(),
        version: 1,
        created_position: position,
        updated_position: position,
    }
}

/// Applies one event to `action`. On `Err` the action is unchanged.
pub fn apply(
    action: &mut Action,
    body: &EventBody,
    at: Micros,
    position: Position,
) -> Result<(), Rejection> {
    let refuse = |reason: String| Rejection::InvalidTransition {
        action: action.id,
        status: action.status.as_str(),
        event: body.type_name(),
        reason,
    };
    if action.status.is_terminal() {
        return Err(refuse(format!(
            "{} is not accepted after a terminal event",
            body.type_name()
        )));
    }
    fn open_event(action: &Action, name: &str) -> Option<usize> {
        action
            .events
            .iter()
            .rposition(|e| e.name == name && e.finished_at.is_none())
    }

    // Check everything first, then mutate, so a refusal leaves the action untouched.
    match body {
        EventBody::Started if action.status != Status::Queued => {
            return Err(refuse("started is only accepted while queued".into()));
        }
        EventBody::EventStarted { name, .. } => {
            if open_event(action, name).is_some() {
                return Err(refuse(format!("sub-event {name:?} is already open")));
            }
            if action.events.len() >= SUB_EVENTS_MAX {
                return Err(Rejection::Limit {
                    limit: "SUB_EVENTS_MAX",
                    field: "events".into(),
                    max: SUB_EVENTS_MAX as u64,
                    actual: action.events.len() as u64 + 1,
                });
            }
        }
        EventBody::EventFinished { name, .. } if open_event(action, name).is_none() => {
            return Err(refuse(format!("no open sub-event named {name:?}")));
        }
        EventBody::Progress(p) => {
            let removed = p.pending_ops.values().filter(|op| op.is_none()).count();
            let after = action.pending_ops.len() + p.pending_ops.len() - removed;
            if after > PENDING_OPS_MAX {
                return Err(Rejection::Limit {
                    limit: "PENDING_OPS_MAX",
                    field: "pending_ops".into(),
                    max: PENDING_OPS_MAX as u64,
                    actual: after as u64,
                });
            }
        }
        EventBody::Completed { .. } => {
            if action.status != Status::Running {
                return Err(refuse("completed needs a running action".into()));
            }
            if let Some(open) = action.events.iter().find(|e| e.finished_at.is_none()) {
                return Err(refuse(format!(
                    "sub-event {:?} is still open; finish it first",
                    open.name
                )));
            }
        }
        _ => {}
    }

    let start = |action: &mut Action| {
        if action.status == Status::Queued {
            action.status = Status::Running;
            action.started_at = Some(at);
        }
    };
    match body {
        EventBody::Started => start(action),
        EventBody::Progress(p) => {
            start(action);
            if let Some(v) = p.progress {
                action.progress = v;
            }
            if p.state.is_some() {
                action.state.clone_from(&p.state);
            }
            if p.message.is_some() {
                action.message.clone_from(&p.message);
            }
            for (shard, op) in &p.pending_ops {
                match op {
                    Some(op) => {
                        action.pending_ops.insert(shard.clone(), op.clone());
                    }
                    None => {
                        action.pending_ops.remove(shard);
                    }
                }
            }
        }
        EventBody::EventStarted { name, host } => {
            start(action);
            action.events.push(super::SubEvent {
                name: name.clone(),
                started_at: at,
                finished_at: None,
                result: None,
                traceback: None,
                host: host.clone(),
                details: None,
            });
        }
        EventBody::EventFinished {
            name,
            result,
            traceback,
            details,
        } => {
            start(action);
            let i = open_event(action, name).expect("checked above");
            let e = &mut action.events[i];
            e.finished_at = Some(at);
            e.result = Some(*result);
            e.traceback.clone_from(traceback);
            e.details.clone_from(details);
        }
        EventBody::Heartbeat => action.heartbeat_at = Some(at),
        EventBody::Completed { message } => {
            action.status = Status::Completed;
            action.progress = 100.0;
            action.completed_at = Some(at);
            if message.is_some() {
                action.message.clone_from(message);
            }
        }
        EventBody::Failed { error } => {
            action.status = Status::Failed;
            action.completed_at = Some(at);
            action.error = Some(error.clone());
        }
        EventBody::CancelRequested => action.cancel_requested = true,
        EventBody::Cancelled { message } => {
            action.status = Status::Cancelled;
            action.completed_at = Some(at);
            if message.is_some() {
                action.message.clone_from(message);
            }
        }
    }
    action.updated_at = at;
    action.version += 1;
    action.updated_position = position;
    Ok(())
}

/// Folds every operation of one log entry at `position`. `get` supplies the current snapshot
/// of an action (or `None`); operations later in the entry see the effect of earlier ones.
/// Returns the snapshot after each operation, in operation order. The caller stores the
/// last snapshot of each id.
pub fn apply_entry(
    entry: &super::Entry,
    position: Position,
    mut get: impl FnMut(super::ActionId) -> Option<Action>,
) -> Result<Vec<Action>, Rejection> {
    let mut touched: std::collections::HashMap<super::ActionId, Action> = Default::default();
    let mut results = Vec::with_capacity(entry.ops.len());
    for op in &entry.ops {
        let after = match op {
            super::Op::Create(new) => {
                if touched.contains_key(&new.id) || get(new.id).is_some() {
                    return Err(Rejection::bad(
                        "id",
                        format!("action {} already exists", new.id),
                    ));
                }
                create(new, entry.recorded_at, position)
            }
            super::Op::Event { action, body } => {
                let mut current = match touched.remove(action) {
                    Some(a) => a,
                    None => get(*action).ok_or_else(|| Rejection::NotFound(action.to_string()))?,
                };
                apply(&mut current, body, entry.recorded_at, position)?;
                current
            }
        };
        results.push(after.clone());
        touched.insert(after.id, after);
    }
    Ok(results)
}
