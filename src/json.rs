//! The JSON form of what the ledger holds: an action ([`ActionOut`], and [`ActionView`]
//! which serialises the same bytes borrowing), a log operation ([`op_json`]) and record
//! ([`RecordOut`]), and times (RFC 3339, [`rfc3339`] / [`parse_time`]). Shared by the
//! native API (whose OpenAPI document is generated from these types, through
//! `http::wire`) and the CLI (replay, export/import), so neither depends on the other.

use crate::event::*;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// RFC 3339, UTC, microseconds: `2024-10-19T15:08:55.887799Z`.
pub fn rfc3339(micros: Micros) -> String {
    Rfc3339::new(micros).as_str().to_string()
}

/// The RFC 3339 text of a time (UTC, six fractional digits, `Z`), formatted on the stack:
/// exactly chrono's `to_rfc3339_opts(SecondsFormat::Micros, true)` (a time chrono cannot
/// represent is the Unix epoch, as before), without its formatting machinery for the
/// common years 0000–9999. Rendering an action formats up to five of these.
pub struct Rfc3339 {
    buf: [u8; Rfc3339::LEN],
    /// Chrono's own text, for years outside 0000–9999.
    other: Option<String>,
}

impl Rfc3339 {
    const LEN: usize = "2024-10-19T15:08:55.887799Z".len();

    pub fn new(micros: Micros) -> Rfc3339 {
        use chrono::{Datelike as _, Timelike as _};
        let t = chrono::DateTime::from_timestamp_micros(micros).unwrap_or_default();
        let year = t.year();
        if !(0..=9999).contains(&year) {
            return Rfc3339 {
                buf: [0; Rfc3339::LEN],
                other: Some(t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
            };
        }
        let mut buf = *b"0000-00-00T00:00:00.000000Z";
        let mut put = |at: usize, width: usize, mut v: u32| {
            for i in (at..at + width).rev() {
                buf[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, year as u32);
        put(5, 2, t.month());
        put(8, 2, t.day());
        put(11, 2, t.hour());
        put(14, 2, t.minute());
        put(17, 2, t.second());
        put(20, 6, t.nanosecond() / 1000);
        Rfc3339 { buf, other: None }
    }

    pub fn as_str(&self) -> &str {
        match &self.other {
            Some(s) => s,
            // Only ASCII digits and separators were written.
            None => std::str::from_utf8(&self.buf).unwrap_or_default(),
        }
    }
}

impl Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Parses RFC 3339 (any offset) into microseconds.
pub fn parse_time(s: &str) -> Option<Micros> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_micros())
}

/// A string, or an integer taken as its decimal string (resource ids are both in the wild).
fn string_or_int<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Text(String),
        Signed(i64),
        Unsigned(u64),
    }
    Ok(match Id::deserialize(d)? {
        Id::Text(s) => s,
        Id::Signed(i) => i.to_string(),
        Id::Unsigned(u) => u.to_string(),
    })
}

/// `{"type": "droplet", "id": "3164450"}` (the id may also be an integer).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceJson {
    #[serde(rename = "type")]
    pub resource_type: String,
    #[serde(deserialize_with = "string_or_int")]
    #[schema(value_type = String)]
    pub id: String,
}

impl From<ResourceJson> for ResourceRef {
    fn from(r: ResourceJson) -> Self {
        ResourceRef {
            resource_type: r.resource_type,
            id: r.id,
        }
    }
}

impl From<&ResourceRef> for ResourceJson {
    fn from(r: &ResourceRef) -> Self {
        ResourceJson {
            resource_type: r.resource_type.clone(),
            id: r.id.clone(),
        }
    }
}

/// `{code, message}` of a failure.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorInfoJson {
    pub code: String,
    pub message: String,
}

/// One shard's pending operation (Redis Enterprise `pending_ops`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PendingOpJson {
    pub op_name: Option<String>,
    pub progress: Option<f64>,
    pub status_code: Option<String>,
    pub status_description: Option<String>,
    /// Seconds since the Unix epoch.
    pub heartbeat: Option<i64>,
    /// Seconds since the Unix epoch.
    pub last_sample_time: Option<i64>,
    /// Free-form object.
    #[schema(value_type = Option<Object>)]
    pub snapshot: Option<Value>,
}

/// A Nova-style sub-event as returned.
#[derive(Serialize, Clone, Debug, PartialEq, ToSchema)]
pub struct SubEventOut {
    pub name: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// `success`, `error`, or null while running.
    pub result: Option<String>,
    pub traceback: Option<String>,
    pub host: Option<String>,
    pub details: Option<String>,
}

/// The action, as every native route returns it.
#[derive(Serialize, Clone, Debug, PartialEq, ToSchema)]
pub struct ActionOut {
    pub id: u64,
    pub uid: String,
    pub tenant: String,
    pub user: Option<String>,
    #[serde(rename = "type")]
    pub action_type: String,
    /// `task`, `state-machine` or `other`.
    pub kind: String,
    pub resource: ResourceJson,
    pub related: Vec<ResourceJson>,
    pub node: Option<String>,
    pub region: Option<String>,
    pub description: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// `queued`, `running`, `completed`, `failed` or `cancelled`.
    pub status: String,
    pub progress: f64,
    pub state: Option<String>,
    pub message: Option<String>,
    pub error: Option<ErrorInfoJson>,
    pub exclusive: bool,
    pub cancel_requested: bool,
    pub created_at: String,
    pub started_at: Option<String>,
    pub updated_at: String,
    pub completed_at: Option<String>,
    pub heartbeat_at: Option<String>,
    pub events: Vec<SubEventOut>,
    pub pending_ops: BTreeMap<String, PendingOpJson>,
    /// Number of operations applied (1 after creation).
    pub version: u64,
}

impl From<&Action> for ActionOut {
    fn from(a: &Action) -> Self {
        ActionOut {
            id: a.id,
            uid: a.uid.clone(),
            tenant: a.tenant.clone(),
            user: a.user.clone(),
            action_type: a.action_type.clone(),
            kind: a.kind.as_str().into(),
            resource: (&a.resource).into(),
            related: a.related.iter().map(Into::into).collect(),
            node: a.node.clone(),
            region: a.region.clone(),
            description: a.description.clone(),
            labels: a.labels.clone(),
            status: a.status.as_str().into(),
            progress: a.progress,
            state: a.state.clone(),
            message: a.message.clone(),
            error: a.error.as_ref().map(|e| ErrorInfoJson {
                code: e.code.clone(),
                message: e.message.clone(),
            }),
            exclusive: a.exclusive,
            cancel_requested: a.cancel_requested,
            created_at: rfc3339(a.created_at),
            started_at: a.started_at.map(rfc3339),
            updated_at: rfc3339(a.updated_at),
            completed_at: a.completed_at.map(rfc3339),
            heartbeat_at: a.heartbeat_at.map(rfc3339),
            events: a
                .events
                .iter()
                .map(|e| SubEventOut {
                    name: e.name.clone(),
                    started_at: rfc3339(e.started_at),
                    finished_at: e.finished_at.map(rfc3339),
                    result: e.result.map(|r| sub_result_str(r).into()),
                    traceback: e.traceback.clone(),
                    host: e.host.clone(),
                    details: e.details.clone(),
                })
                .collect(),
            pending_ops: a
                .pending_ops
                .iter()
                .map(|(shard, op)| (shard.clone(), pending_op_out(op)))
                .collect(),
            version: a.version,
        }
    }
}

/// Serialises an action exactly as [`ActionOut::from`] would (same fields, order and
/// bytes), borrowing instead of copying: the write and read paths render every answer
/// through this, [`ActionOut`] stays the documented shape and the reference the tests
/// compare it with.
pub struct ActionView<'a>(pub &'a Action);

impl Serialize for ActionView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let a = self.0;
        let mut st = s.serialize_struct("ActionOut", 27)?;
        st.serialize_field("id", &a.id)?;
        st.serialize_field("uid", &a.uid)?;
        st.serialize_field("tenant", &a.tenant)?;
        st.serialize_field("user", &a.user)?;
        st.serialize_field("type", &a.action_type)?;
        st.serialize_field("kind", a.kind.as_str())?;
        st.serialize_field("resource", &ResourceView(&a.resource))?;
        st.serialize_field("related", &Seq(&a.related, ResourceView))?;
        st.serialize_field("node", &a.node)?;
        st.serialize_field("region", &a.region)?;
        st.serialize_field("description", &a.description)?;
        st.serialize_field("labels", &a.labels)?;
        st.serialize_field("status", a.status.as_str())?;
        st.serialize_field("progress", &a.progress)?;
        st.serialize_field("state", &a.state)?;
        st.serialize_field("message", &a.message)?;
        st.serialize_field(
            "error",
            &a.error.as_ref().map(|e| ErrorInfoView {
                code: &e.code,
                message: &e.message,
            }),
        )?;
        st.serialize_field("exclusive", &a.exclusive)?;
        st.serialize_field("cancel_requested", &a.cancel_requested)?;
        st.serialize_field("created_at", &Rfc3339::new(a.created_at))?;
        st.serialize_field("started_at", &a.started_at.map(Rfc3339::new))?;
        st.serialize_field("updated_at", &Rfc3339::new(a.updated_at))?;
        st.serialize_field("completed_at", &a.completed_at.map(Rfc3339::new))?;
        st.serialize_field("heartbeat_at", &a.heartbeat_at.map(Rfc3339::new))?;
        st.serialize_field("events", &Seq(&a.events, SubEventView))?;
        st.serialize_field("pending_ops", &PendingOpsView(&a.pending_ops))?;
        st.serialize_field("version", &a.version)?;
        st.end()
    }
}

/// A slice serialised through a borrowed view of each element.
struct Seq<'a, T, V>(&'a [T], fn(&'a T) -> V);

impl<'a, T, V: Serialize> Serialize for Seq<'a, T, V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(self.1))
    }
}

/// [`ResourceJson`], borrowed.
struct ResourceView<'a>(&'a ResourceRef);

impl Serialize for ResourceView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut st = s.serialize_struct("ResourceJson", 2)?;
        st.serialize_field("type", &self.0.resource_type)?;
        st.serialize_field("id", &self.0.id)?;
        st.end()
    }
}

/// [`ErrorInfoJson`], borrowed.
#[derive(Serialize)]
struct ErrorInfoView<'a> {
    code: &'a str,
    message: &'a str,
}

/// [`SubEventOut`], borrowed.
struct SubEventView<'a>(&'a SubEvent);

impl Serialize for SubEventView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let e = self.0;
        let mut st = s.serialize_struct("SubEventOut", 7)?;
        st.serialize_field("name", &e.name)?;
        st.serialize_field("started_at", &Rfc3339::new(e.started_at))?;
        st.serialize_field("finished_at", &e.finished_at.map(Rfc3339::new))?;
        st.serialize_field("result", &e.result.map(sub_result_str))?;
        st.serialize_field("traceback", &e.traceback)?;
        st.serialize_field("host", &e.host)?;
        st.serialize_field("details", &e.details)?;
        st.end()
    }
}

/// The native name of a sub-event's result.
fn sub_result_str(r: SubResult) -> &'static str {
    match r {
        SubResult::Success => "success",
        SubResult::Error => "error",
    }
}

/// The pending ops as [`pending_op_out`] gives them (rare: the Redis dialect's shards).
struct PendingOpsView<'a>(&'a BTreeMap<String, PendingOp>);

impl Serialize for PendingOpsView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(shard, op)| (shard, pending_op_out(op))))
    }
}

/// A stored pending op as JSON (`snapshot` parsed back into an object).
pub fn pending_op_out(op: &PendingOp) -> PendingOpJson {
    PendingOpJson {
        op_name: op.op_name.clone(),
        progress: op.progress,
        status_code: op.status_code.clone(),
        status_description: op.status_description.clone(),
        heartbeat: op.heartbeat,
        last_sample_time: op.last_sample_time,
        snapshot: op
            .snapshot
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok()),
    }
}

/// One raw log record as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct RecordOut {
    pub position: u64,
    pub recorded_at: String,
    /// Name of the token that submitted it.
    pub principal: String,
    /// The operation(s) of the record that concern the action (history) or all (log).
    #[schema(value_type = Object)]
    pub event: Value,
}

/// An operation of a log record as JSON (used by history, log pages, watch and replay).
pub fn op_json(op: &Op) -> Value {
    match op {
        Op::Create(n) => serde_json::json!({
            "type": "created",
            "action": n.id,
            "uid": n.uid,
            "tenant": n.tenant,
            "user": n.user,
            "action_type": n.action_type,
            "kind": n.kind.as_str(),
            "resource": ResourceJson::from(&n.resource),
            "related": n.related.iter().map(ResourceJson::from).collect::<Vec<_>>(),
            "node": n.node,
            "region": n.region,
            "description": n.description,
            "labels": n.labels,
            "status": match n.status { InitialStatus::Queued => "queued", InitialStatus::Running => "running" },
            "exclusive": n.exclusive,
        }),
        Op::Event { action, body } => {
            let mut v = serde_json::json!({ "type": body.type_name(), "action": action });
            let m = v.as_object_mut().expect("object");
            match body {
                EventBody::Progress(p) => {
                    m.insert("progress".into(), serde_json::json!(p.progress));
                    m.insert("state".into(), serde_json::json!(p.state));
                    m.insert("message".into(), serde_json::json!(p.message));
                    let ops: BTreeMap<&String, Option<PendingOpJson>> = p
                        .pending_ops
                        .iter()
                        .map(|(k, v)| (k, v.as_ref().map(pending_op_out)))
                        .collect();
                    m.insert("pending_ops".into(), serde_json::json!(ops));
                }
                EventBody::EventStarted { name, host } => {
                    m.insert("name".into(), serde_json::json!(name));
                    m.insert("host".into(), serde_json::json!(host));
                }
                EventBody::EventFinished {
                    name,
                    result,
                    traceback,
                    details,
                } => {
                    m.insert("name".into(), serde_json::json!(name));
                    m.insert(
                        "result".into(),
                        serde_json::json!(match result {
                            SubResult::Success => "success",
                            SubResult::Error => "error",
                        }),
                    );
                    m.insert("traceback".into(), serde_json::json!(traceback));
                    m.insert("details".into(), serde_json::json!(details));
                }
                EventBody::Completed { message } | EventBody::Cancelled { message } => {
                    m.insert("message".into(), serde_json::json!(message));
                }
                EventBody::Failed { error } => {
                    m.insert(
                        "error".into(),
                        serde_json::json!({"code": error.code, "message": error.message}),
                    );
                }
                EventBody::Started | EventBody::Heartbeat | EventBody::CancelRequested => {}
            }
            v
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::fold;
    use proptest::prelude::*;

    fn chrono_rfc3339(micros: Micros) -> String {
        chrono::DateTime::from_timestamp_micros(micros)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    }

    #[test]
    fn rfc3339_is_chronos_text_at_the_edges() {
        let edges = [
            0,
            -1,
            1,
            1_700_000_000_123_456,
            // 0000-01-01T00:00:00Z and the microsecond before it (year -1: chrono's text).
            -62_167_219_200_000_000,
            -62_167_219_200_000_001,
            // 9999-12-31T23:59:59.999999Z and the microsecond after it (year 10000).
            253_402_300_799_999_999,
            253_402_300_800_000_000,
            // 2000-02-29 and 2100-03-01 (leap rules).
            951_782_400_000_000,
            4_107_542_400_000_000,
            i64::MIN,
            i64::MAX,
        ];
        for m in edges {
            assert_eq!(Rfc3339::new(m).as_str(), chrono_rfc3339(m), "micros {m}");
        }
    }

    proptest! {
        #[test]
        fn rfc3339_is_chronos_text(m in any::<i64>(), near in -400_000_000_000_000_000i64..400_000_000_000_000_000) {
            prop_assert_eq!(rfc3339(m), chrono_rfc3339(m));
            prop_assert_eq!(rfc3339(near), chrono_rfc3339(near));
        }
    }

    /// An action with every optional part filled, escapes included.
    fn full_action() -> Action {
        let create = CreateAction {
            user: Some("ops \"quoted\" \u{e9}".into()),
            node: Some("node-1".into()),
            region: Some("ams3".into()),
            description: Some("line\nbreak".into()),
            labels: [
                ("k".to_string(), "v\u{1}".to_string()),
                ("a".into(), "".into()),
            ]
            .into(),
            related: vec![
                ResourceRef {
                    resource_type: "volume".into(),
                    id: "v-1".into(),
                },
                ResourceRef {
                    resource_type: "ip".into(),
                    id: "10.0.0.1".into(),
                },
            ],
            exclusive: true,
            ..CreateAction::new("acme", "snapshot", "droplet", "42")
        };
        let mut a = fold::create(
            &NewAction::assign(&create, 9, "u-9".into()),
            1_700_000_000_000_001,
            3,
        );
        let t = 1_700_000_000_500_000;
        let shard = PendingOp {
            op_name: Some("SetupReplication".into()),
            progress: Some(12.5),
            heartbeat: Some(1_700_000_000),
            snapshot: Some(r#"{"state":"running","n":[1,2]}"#.into()),
            ..PendingOp::default()
        };
        let events = [
            EventBody::Started,
            EventBody::Progress(ProgressUpdate {
                progress: Some(42.5),
                state: Some("copying".into()),
                message: Some("half \t way".into()),
                pending_ops: [("shard:1".to_string(), Some(shard))].into(),
            }),
            EventBody::EventStarted {
                name: "compute__do_snapshot".into(),
                host: Some("h1".into()),
            },
            EventBody::EventFinished {
                name: "compute__do_snapshot".into(),
                result: SubResult::Error,
                traceback: Some("Traceback\n  ...".into()),
                details: Some("{\"x\": 1}".into()),
            },
            EventBody::EventStarted {
                name: "compute__cleanup".into(),
                host: None,
            },
            EventBody::Heartbeat,
            EventBody::CancelRequested,
            EventBody::Failed {
                error: ErrorInfo {
                    code: "E1".into(),
                    message: "disk \"full\"".into(),
                },
            },
        ];
        for (i, e) in events.iter().enumerate() {
            fold::apply(&mut a, e, t + i as i64, 4 + i as u64).unwrap();
        }
        a
    }

    #[test]
    fn the_view_serialises_exactly_like_action_out() {
        let mut actions = vec![full_action()];
        let mut bare = fold::create(
            &NewAction::assign(
                &CreateAction::new("t", "reboot", "server", "1"),
                1,
                "al-1".into(),
            ),
            -5,
            1,
        );
        actions.push(bare.clone());
        bare.created_at = i64::MAX;
        bare.updated_at = i64::MIN;
        actions.push(bare);
        for a in &actions {
            assert_eq!(
                serde_json::to_string(&ActionView(a)).unwrap(),
                serde_json::to_string(&ActionOut::from(a)).unwrap()
            );
        }
    }
}
