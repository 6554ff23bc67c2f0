//! The event model: what a client asks for ([`Command`]), what the log stores ([`Entry`],
//! [`Op`]), and what users read ([`Action`]).
//!
//! Everything here is pure: no I/O, no clocks. The log stores [`Entry`] values encoded by
//! [`codec`]; [`fold`] turns them into [`Action`] snapshots and is the *only* place where the
//! lifecycle rules live — the writer validates a command by folding it onto the current state,
//! and live apply, rebuild and point-in-time reads fold the same records the same way.
//!
//! On-disk types are plain on purpose (see docs/format.md): no serde
//! `flatten`, `skip`, `tag`, `untagged` or `serde_json::Value`, timestamps as integer
//! microseconds since the Unix epoch, enum variants only ever appended at the end.

pub mod codec;
pub mod fold;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Microseconds since the Unix epoch, UTC. The only time type stored on disk.
pub type Micros = i64;

/// A log position: 1 for the first record, +1 for each record after it.
pub type Position = u64;

/// A ledger-assigned action id: 1 for the first action, +1 for each created after it.
pub type ActionId = u64;

/// What the action is about: `{"type": "droplet", "id": "3164450"}`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceRef {
    #[serde(rename = "type")]
    pub resource_type: String,
    pub id: String,
}

/// The family an action belongs to; Redis Enterprise splits its list by it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Task,
    StateMachine,
    Other,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Task => "task",
            Kind::StateMachine => "state-machine",
            Kind::Other => "other",
        }
    }
}

/// The canonical lifecycle. `Completed`, `Failed` and `Cancelled` are terminal.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl Status {
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Completed | Status::Failed | Status::Cancelled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    pub const ALL: [Status; 5] = [
        Status::Queued,
        Status::Running,
        Status::Completed,
        Status::Failed,
        Status::Cancelled,
    ];
}

/// The status an action may be created in.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum InitialStatus {
    #[default]
    Queued,
    Running,
}

/// `{code, message}` of a failed action.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ErrorInfo {
    pub code: String,
    pub message: String,
}

/// Outcome of a Nova-style sub-event.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SubResult {
    Success,
    Error,
}

/// One shard's pending operation (Redis Enterprise `pending_ops`). Every field is optional.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct PendingOp {
    pub op_name: Option<String>,
    pub progress: Option<f64>,
    pub status_code: Option<String>,
    pub status_description: Option<String>,
    /// Seconds since the Unix epoch (Redis's unit for this field).
    pub heartbeat: Option<i64>,
    /// Seconds since the Unix epoch.
    pub last_sample_time: Option<i64>,
    /// Redis's free-form `snapshot` map, kept as compact JSON text (bincode cannot hold a
    /// `serde_json::Value`).
    pub snapshot: Option<String>,
}

/// A progress report. Absent fields leave the action's value unchanged.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct ProgressUpdate {
    pub progress: Option<f64>,
    pub state: Option<String>,
    pub message: Option<String>,
    /// Per shard: `Some` replaces that shard's entry, `None` removes it. Shards not named are
    /// unchanged.
    pub pending_ops: BTreeMap<String, Option<PendingOp>>,
}

/// An event recorded against an existing action. Append new variants at the end only.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum EventBody {
    Started,
    Progress(ProgressUpdate),
    EventStarted {
        name: String,
        host: Option<String>,
    },
    EventFinished {
        name: String,
        result: SubResult,
        traceback: Option<String>,
        details: Option<String>,
    },
    Heartbeat,
    Completed {
        message: Option<String>,
    },
    Failed {
        error: ErrorInfo,
    },
    CancelRequested,
    Cancelled {
        message: Option<String>,
    },
}

impl EventBody {
    /// The wire name of the event type (`"event_started"`, ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            EventBody::Started => "started",
            EventBody::Progress(_) => "progress",
            EventBody::EventStarted { .. } => "event_started",
            EventBody::EventFinished { .. } => "event_finished",
            EventBody::Heartbeat => "heartbeat",
            EventBody::Completed { .. } => "completed",
            EventBody::Failed { .. } => "failed",
            EventBody::CancelRequested => "cancel_requested",
            EventBody::Cancelled { .. } => "cancelled",
        }
    }

    /// Every [`type_name`](EventBody::type_name), in lifecycle order.
    pub const TYPE_NAMES: [&'static str; 9] = [
        "started",
        "progress",
        "event_started",
        "event_finished",
        "heartbeat",
        "completed",
        "failed",
        "cancel_requested",
        "cancelled",
    ];
}

/// A new action as the log stores it: everything the client gave, plus the id and uid the
/// ledger assigned.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct NewAction {
    pub id: ActionId,
    pub uid: String,
    pub tenant: String,
    pub user: Option<String>,
    pub action_type: String,
    pub kind: Kind,
    pub resource: ResourceRef,
    pub related: Vec<ResourceRef>,
    pub node: Option<String>,
    pub region: Option<String>,
    pub description: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub status: InitialStatus,
    pub exclusive: bool,
}

/// One operation inside a log entry. Append new variants at the end only.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum Op {
    Create(NewAction),
    Event { action: ActionId, body: EventBody },
}

impl Op {
    pub fn action_id(&self) -> ActionId {
        match self {
            Op::Create(new) => new.id,
            Op::Event { action, .. } => *action,
        }
    }
}

/// An `Idempotency-Key` and the digest of the request body it came with. Scoped to the
/// tenant of the entry's principal.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyStamp {
    pub tenant: String,
    pub key: String,
    pub request_digest: [u8; 32],
}

/// The payload of one log record (schema version 1): one accepted submission, applied
/// all-or-nothing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Entry {
    /// When the ledger accepted it (the writer's clock, microseconds).
    pub recorded_at: Micros,
    /// The name of the token that submitted it (never the token itself).
    pub principal: String,
    pub idempotency: Option<IdempotencyStamp>,
    pub ops: Vec<Op>,
}

/// A Nova-style sub-event of an action.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SubEvent {
    pub name: String,
    pub started_at: Micros,
    pub finished_at: Option<Micros>,
    pub result: Option<SubResult>,
    pub traceback: Option<String>,
    pub host: Option<String>,
    pub details: Option<String>,
}

/// An action as it stands after folding its events: the snapshot every route reads.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Action {
    pub id: ActionId,
    pub uid: String,
    pub tenant: String,
    pub user: Option<String>,
    pub action_type: String,
    pub kind: Kind,
    pub resource: ResourceRef,
    pub related: Vec<ResourceRef>,
    pub node: Option<String>,
    pub region: Option<String>,
    pub description: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub exclusive: bool,
    pub status: Status,
    pub progress: f64,
    pub state: Option<String>,
    pub message: Option<String>,
    pub error: Option<ErrorInfo>,
    pub cancel_requested: bool,
    pub created_at: Micros,
    pub started_at: Option<Micros>,
    pub updated_at: Micros,
    pub completed_at: Option<Micros>,
    pub heartbeat_at: Option<Micros>,
    pub events: Vec<SubEvent>,
    pub pending_ops: BTreeMap<String, PendingOp>,
    /// Number of log operations applied to this action; 1 right after creation.
    pub version: u64,
    /// Log position of the record that created it.
    pub created_position: Position,
    /// Log position of the last record that changed it.
    pub updated_position: Position,
}

/// How a command names an action: the ledger's integer id or the client's uid.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ActionRef {
    Id(ActionId),
    Uid(String),
}

impl std::fmt::Display for ActionRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ActionRef::Id(id) => write!(f, "{id}"),
            ActionRef::Uid(uid) => write!(f, "{uid}"),
        }
    }
}

impl ActionRef {
    /// Parses a path segment: all digits → id, anything else → uid.
    pub fn parse(s: &str) -> ActionRef {
        match s.parse::<u64>() {
            Ok(id) if !s.starts_with('+') => ActionRef::Id(id),
            _ => ActionRef::Uid(s.to_string()),
        }
    }
}

impl NewAction {
    /// The create `c` with the id and uid the ledger assigned.
    pub fn assign(c: &CreateAction, id: ActionId, uid: String) -> NewAction {
        NewAction {
            id,
            uid,
            tenant: c.tenant.clone(),
            user: c.user.clone(),
            action_type: c.action_type.clone(),
            kind: c.kind,
            resource: c.resource.clone(),
            related: c.related.clone(),
            node: c.node.clone(),
            region: c.region.clone(),
            description: c.description.clone(),
            labels: c.labels.clone(),
            status: c.status,
            exclusive: c.exclusive,
        }
    }
}

/// A request to create an action, before the ledger has assigned its id.
#[derive(Clone, Debug, PartialEq)]
pub struct CreateAction {
    /// `None` → the ledger generates one.
    pub uid: Option<String>,
    pub tenant: String,
    pub user: Option<String>,
    pub action_type: String,
    pub kind: Kind,
    pub resource: ResourceRef,
    pub related: Vec<ResourceRef>,
    pub node: Option<String>,
    pub region: Option<String>,
    pub description: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub status: InitialStatus,
    /// Refuse while the resource has an unfinished exclusive action.
    pub exclusive: bool,
}

impl CreateAction {
    /// A minimal create: a queued task of `action_type` on `resource`.
    pub fn new(tenant: &str, action_type: &str, resource_type: &str, resource_id: &str) -> Self {
        CreateAction {
            uid: None,
            tenant: tenant.to_string(),
            user: None,
            action_type: action_type.to_string(),
            kind: Kind::Task,
            resource: ResourceRef {
                resource_type: resource_type.to_string(),
                id: resource_id.to_string(),
            },
            related: Vec::new(),
            node: None,
            region: None,
            description: None,
            labels: BTreeMap::new(),
            status: InitialStatus::Queued,
            exclusive: false,
        }
    }
}

/// A request to record an event.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordEvent {
    pub action: ActionRef,
    pub expected_version: Option<u64>,
    pub body: EventBody,
}

/// One command of a submission.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    Create(CreateAction),
    Event(RecordEvent),
}

/// Everything one request asks the ledger to record, applied all-or-nothing as one record.
#[derive(Clone, Debug, PartialEq)]
pub struct Submission {
    /// Token name recorded with the entry.
    pub principal: String,
    /// `Some(t)`: the caller may only touch tenant `t`'s actions (others look absent).
    /// `None`: admin, every tenant.
    pub tenant_scope: Option<String>,
    pub idempotency: Option<IdempotencyStamp>,
    pub commands: Vec<Command>,
}
