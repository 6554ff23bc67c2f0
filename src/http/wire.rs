//! JSON shapes of the native API (`/api/v1`): request bodies, parsed strictly into core
//! commands, and the envelopes of lists, batches and log pages. The action object every
//! native route returns, log operations and times are [`crate::json`]'s, re-exported here.
//! The OpenAPI document is generated from these types.

use crate::event::*;
pub use crate::json::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// Body of `POST /api/v1/actions` (and `create` in a batch).
#[derive(Deserialize, Debug, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    #[serde(rename = "type")]
    pub action_type: String,
    pub resource: ResourceJson,
    pub uid: Option<String>,
    /// `task` (default), `state-machine` or `other`.
    #[schema(value_type = Option<String>)]
    pub kind: Option<Kind>,
    #[serde(default)]
    pub related: Vec<ResourceJson>,
    pub node: Option<String>,
    pub region: Option<String>,
    pub description: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub user: Option<String>,
    /// `queued` (default) or `running`.
    #[schema(value_type = Option<String>)]
    pub status: Option<InitialStatus>,
    /// Refuse while the resource has an unfinished exclusive action.
    #[serde(default)]
    pub exclusive: bool,
    /// Admin only: the tenant to create the action for (default: the token's tenant).
    pub tenant: Option<String>,
}

impl CreateBody {
    pub fn into_command(self, tenant: String) -> CreateAction {
        CreateAction {
            uid: self.uid,
            tenant,
            user: self.user,
            action_type: self.action_type,
            kind: self.kind.unwrap_or(Kind::Task),
            resource: self.resource.into(),
            related: self.related.into_iter().map(Into::into).collect(),
            node: self.node,
            region: self.region,
            description: self.description,
            labels: self.labels,
            status: self.status.unwrap_or_default(),
            exclusive: self.exclusive,
        }
    }
}

/// An action reference in a batch: the integer id or the uid.
#[derive(Deserialize, Debug, Clone, ToSchema)]
#[serde(untagged)]
pub enum IdOrUid {
    Id(u64),
    Uid(String),
}

impl From<IdOrUid> for ActionRef {
    fn from(r: IdOrUid) -> Self {
        match r {
            IdOrUid::Id(id) => ActionRef::Id(id),
            IdOrUid::Uid(uid) => ActionRef::parse(&uid),
        }
    }
}

/// Body of `POST /api/v1/actions/{id}/events` (and `event` in a batch, with `action`).
#[derive(Deserialize, Debug, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventJson {
    /// `started`, `progress`, `event_started`, `event_finished`, `heartbeat`, `completed`,
    /// `failed`, `cancel_requested` or `cancelled`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Batch only: the action the event is for.
    pub action: Option<IdOrUid>,
    pub expected_version: Option<u64>,
    /// progress: 0-100.
    pub progress: Option<f64>,
    pub state: Option<String>,
    pub message: Option<String>,
    /// progress: per shard, an object replaces that shard's entry, `null` removes it.
    #[schema(value_type = Option<BTreeMap<String, PendingOpJson>>)]
    pub pending_ops: Option<BTreeMap<String, Option<PendingOpJson>>>,
    /// event_started / event_finished: the sub-event name.
    pub name: Option<String>,
    pub host: Option<String>,
    /// event_finished: `success` or `error`.
    pub result: Option<String>,
    pub traceback: Option<String>,
    pub details: Option<String>,
    /// failed: `{code, message}`.
    pub error: Option<ErrorInfoJson>,
}

/// Why an event body does not make an event.
pub type FieldError = (String, String);

impl EventJson {
    /// Converts to the core event, refusing fields that do not belong to its type.
    pub fn into_body(self) -> Result<EventBody, FieldError> {
        let t = self.event_type.as_str();
        let present: [(&str, bool); 10] = [
            ("progress", self.progress.is_some()),
            ("state", self.state.is_some()),
            ("message", self.message.is_some()),
            ("pending_ops", self.pending_ops.is_some()),
            ("name", self.name.is_some()),
            ("host", self.host.is_some()),
            ("result", self.result.is_some()),
            ("traceback", self.traceback.is_some()),
            ("details", self.details.is_some()),
            ("error", self.error.is_some()),
        ];
        let allowed: &[&str] = match t {
            "started" | "heartbeat" | "cancel_requested" => &[],
            "progress" => &["progress", "state", "message", "pending_ops"],
            "event_started" => &["name", "host"],
            "event_finished" => &["name", "result", "traceback", "details"],
            "completed" | "cancelled" => &["message"],
            "failed" => &["error"],
            other => {
                return Err((
                    "type".into(),
                    format!(
                        "unknown event type {other:?}; expected one of started, progress, event_started, event_finished, heartbeat, completed, failed, cancel_requested, cancelled"
                    ),
                ))
            }
        };
        if let Some((field, _)) = present.iter().find(|(f, set)| *set && !allowed.contains(f)) {
            return Err((
                field.to_string(),
                format!("is not accepted for event type {t:?}"),
            ));
        }
        let need = |v: Option<String>, field: &str| {
            v.ok_or_else(|| {
                (
                    field.to_string(),
                    format!("is required for event type {t:?}"),
                )
            })
        };
        Ok(match t {
            "started" => EventBody::Started,
            "heartbeat" => EventBody::Heartbeat,
            "cancel_requested" => EventBody::CancelRequested,
            "progress" => {
                let mut pending_ops = BTreeMap::new();
                for (shard, op) in self.pending_ops.unwrap_or_default() {
                    let op = match op {
                        None => None,
                        Some(op) => Some(pending_op(op)?),
                    };
                    pending_ops.insert(shard, op);
                }
                EventBody::Progress(ProgressUpdate {
                    progress: self.progress,
                    state: self.state,
                    message: self.message,
                    pending_ops,
                })
            }
            "event_started" => EventBody::EventStarted {
                name: need(self.name, "name")?,
                host: self.host,
            },
            "event_finished" => EventBody::EventFinished {
                name: need(self.name, "name")?,
                result: match need(self.result, "result")?.as_str() {
                    "success" | "Success" => SubResult::Success,
                    "error" | "Error" => SubResult::Error,
                    other => {
                        return Err((
                            "result".into(),
                            format!("must be \"success\" or \"error\", got {other:?}"),
                        ))
                    }
                },
                traceback: self.traceback,
                details: self.details,
            },
            "completed" => EventBody::Completed {
                message: self.message,
            },
            "cancelled" => EventBody::Cancelled {
                message: self.message,
            },
            "failed" => {
                let error = self.error.ok_or_else(|| {
                    (
                        "error".to_string(),
                        "is required for event type \"failed\"".to_string(),
                    )
                })?;
                EventBody::Failed {
                    error: ErrorInfo {
                        code: error.code,
                        message: error.message,
                    },
                }
            }
            _ => unreachable!("checked above"),
        })
    }
}

fn pending_op(op: PendingOpJson) -> Result<PendingOp, FieldError> {
    let snapshot = match op.snapshot {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => Some(v.to_string()),
        Some(_) => return Err(("pending_ops.snapshot".into(), "must be an object".into())),
    };
    Ok(PendingOp {
        op_name: op.op_name,
        progress: op.progress,
        status_code: op.status_code,
        status_description: op.status_description,
        heartbeat: op.heartbeat,
        last_sample_time: op.last_sample_time,
        snapshot,
    })
}

/// One command of `POST /api/v1/batch`: exactly one of `create` or `event`.
#[derive(Deserialize, Debug, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchCommandJson {
    pub create: Option<CreateBody>,
    pub event: Option<EventJson>,
}

/// Body of `POST /api/v1/batch`.
#[derive(Deserialize, Debug, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    pub commands: Vec<BatchCommandJson>,
}

/// `{"actions": [...], "next_cursor": ..., "total": N}`.
#[derive(Serialize, ToSchema)]
pub struct ListOut {
    pub actions: Vec<ActionOut>,
    pub next_cursor: Option<String>,
    pub total: u64,
}

/// `GET /api/v1/histogram`: how many actions of the filtered set were created in each
/// bucket, by current status.
#[derive(Serialize, ToSchema)]
pub struct HistogramOut {
    /// `minute`, `hour` or `day`.
    pub interval: String,
    /// RFC 3339: the start of the first bucket (the request's `from`).
    pub from: String,
    /// RFC 3339: the end of the last bucket (the request's `to`, exclusive).
    pub to: String,
    /// Oldest first.
    pub buckets: Vec<HistogramBucketOut>,
    /// Every action counted.
    pub total: u64,
    /// False when the count stopped at `HISTOGRAM_SCAN_MAX` reads: the counts are then
    /// lower bounds (the newest actions of the range were counted first).
    pub complete: bool,
}

/// One bucket: actions with `start <= created_at < end`.
#[derive(Serialize, ToSchema)]
pub struct HistogramBucketOut {
    pub start: String,
    pub end: String,
    pub counts: StatusCounts,
    pub total: u64,
}

/// Actions per current status.
#[derive(Serialize, ToSchema, Default)]
pub struct StatusCounts {
    pub queued: u64,
    pub running: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
}

impl StatusCounts {
    /// From counts in [`Status::ALL`] order.
    pub fn from_all(c: [u64; 5]) -> StatusCounts {
        StatusCounts {
            queued: c[0],
            running: c[1],
            completed: c[2],
            failed: c[3],
            cancelled: c[4],
        }
    }
}

/// `{"results": [...]}` of a batch: the action after each command.
#[derive(Serialize, ToSchema)]
pub struct BatchOut {
    pub results: Vec<ActionOut>,
}

/// `{"records": [...]}`.
#[derive(Serialize, ToSchema)]
pub struct RecordsOut {
    pub records: Vec<RecordOut>,
    /// For `/api/v1/log`: pass as `after` to get the next page; null at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<u64>,
}

/// What a field must be, in JSON terms, from serde's `expected` (a Rust type: `f64`, `struct
/// ErrorInfoJson`, `a sequence`...) and the field's name: "a number 0-100", "an object
/// {code, message}". An object's fields come from the OpenAPI schema of its type, so they
/// stay in step with the wire types.
pub fn expected_json(field: &str, expected: &str) -> String {
    let expected = expected.trim();
    let words = match expected {
        "f64" | "f32" if field == "progress" => "a number 0-100",
        "f64" | "f32" => "a number",
        "u64" | "u32" | "u16" | "u8" | "usize" => "a non-negative integer",
        "i64" | "i32" | "i16" | "i8" | "isize" => "an integer",
        "a string" | "a borrowed string" | "string" | "a character" | "char" => "a string",
        "a boolean" | "bool" => "true or false",
        "a sequence" => "an array",
        "a map" => "an object",
        // A unit-variant enum (`kind`, `status`): its values are strings.
        "variant identifier" => "a string",
        // The untagged enums: a resource id, and an action in a batch.
        "Id" => "a string or an integer",
        "IdOrUid" => "an action id (integer) or uid (string)",
        _ => {
            if expected.starts_with("enum ") {
                return "a string".to_string();
            }
            return match expected.strip_prefix("struct ") {
                Some(name) => schema_shape(name).unwrap_or_else(|| "an object".to_string()),
                None => "a value of another JSON type".to_string(),
            };
        }
    };
    words.to_string()
}

/// What serde saw (`string "x"`, `integer `5``, `map`...), in JSON terms.
pub fn got_json(got: &str) -> String {
    let literal = |prefix: &str| {
        got.strip_prefix(prefix)
            .map(|v| v.trim().trim_matches('`').to_string())
    };
    if got.starts_with("string") {
        "a string".into()
    } else if let Some(v) = literal("integer").or_else(|| literal("floating point")) {
        v
    } else if let Some(v) = literal("boolean") {
        v
    } else {
        match got {
            "map" => "an object".into(),
            "sequence" => "an array".into(),
            "unit value" | "null" => "null".into(),
            "unit variant" | "newtype variant" | "tuple variant" | "struct variant" => {
                "another value".into()
            }
            other => other.into(),
        }
    }
}

/// The JSON shape of a wire type named `name`, from its OpenAPI schema: an object with its
/// fields (`an object {code, message}`).
fn schema_shape(name: &str) -> Option<String> {
    use utoipa::openapi::{schema::Schema, RefOr};
    use utoipa::OpenApi as _;
    let doc = super::openapi::ApiDoc::openapi();
    match doc.components?.schemas.get(name)? {
        RefOr::T(Schema::Object(o)) => {
            let fields: Vec<&str> = o.properties.keys().map(String::as_str).collect();
            Some(format!("an object {{{}}}", fields.join(", ")))
        }
        _ => None,
    }
}
