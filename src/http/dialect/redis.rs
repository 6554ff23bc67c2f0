//! The Redis Enterprise dialect: `/v1/actions[/{uid}]`, `/v1/actions/bdb/{uid}` and
//! `/v2/actions[/{uid}]`, read-only, HTTP Basic auth (the password is the token).
//!
//! Served at those root paths on its own listener (`--redis-listen`, default
//! `127.0.0.1:9443`) and under `/redis` on the main listener, where `/v2/actions` belongs
//! to DigitalOcean. Translation only: [`ActionQuery`] / [`super::super::load_action`] in,
//! the shapes of docs/dialects.md out (Redis Enterprise REST API, "Actions requests").
//!
//! Decisions where the Redis documents are silent (docs/dialects.md gives each):
//! - `kind = task` actions are v1 "actions", `kind = state-machine` the v1 "state-machines";
//!   `other` appears in v2 only (v1 get of one answers 404, as Redis documents for
//!   import/export/backup).
//! - v1 tasks carry `action_uid`, `name` (the action type), `progress`/`node_uid`/`task_id`
//!   as strings (`task_id` = `action_uid`), and `state`/`pending_ops` when set; no
//!   `object_name` (the documented task records have none; v2's `additional_info` carries
//!   the object). State machines carry `object_name` = `{resource type}:{resource id}`
//!   (`bdb:1`; none for the cluster itself, see below), a numeric `progress` (an integer when whole, as in the example),
//!   `heartbeat` = the last heartbeat, else the last update, in epoch seconds, and `error`
//!   when failed (the failure message; "cancelled" or the cancel message for cancelled).
//! - The object of an action is its resource, except for resource type `cluster`: an action
//!   on the cluster itself has no object, so v1 shows no `object_name` and v2 no
//!   `object_type`/`object_uid` (and no `additional_info` at all when nothing else is set).
//! - `/v1/actions/bdb/{uid}` answers the state machines of resource `{type: "bdb", id:
//!   uid}` (primary or related), newest first, as a bare array; 404 when there are none.
//! - Lists have no paging in Redis: each list holds the newest `LIST_LIMIT_MAX` (1000 by
//!   default) matching actions. Query parameters are ignored.
//! - Any Basic user name is accepted; the password must be a valid token. Every role
//!   includes `view_status_of_cluster_action` (docs/api.md: reader), so a valid token never
//!   gets the 403 Redis documents for a missing permission (the shape is kept for any 403
//!   of the core: `insufficient_permissions`).
//! - Unknown paths and methods answer Redis's error shape (404 / 405) on both listeners.

use super::super::auth::{authenticate, AuthFailure};
use super::super::error::ApiError;
use super::super::{with_retry_after, AppState};
use crate::event::{Action, Kind, Micros, PendingOp, ResourceRef, Status};
use crate::projection::query::ActionQuery;
use crate::tokens::Principal;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{Map, Number, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The Redis routes at their documented root paths, with Redis-shaped 404/405 answers (the
/// same whether served at the root of the Redis listener or nested under `/redis`).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/actions", get(v1_list))
        .route("/v1/actions/bdb/{uid}", get(v1_bdb))
        .route("/v1/actions/{uid}", get(v1_get))
        .route("/v2/actions", get(v2_list))
        .route("/v2/actions/{uid}", get(v2_get))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

/// The resource type of the cluster itself: actions on it have no object.
pub const CLUSTER: &str = "cluster";

/// The object an action runs on: its resource, or none for the cluster itself.
fn object(a: &Action) -> Option<&ResourceRef> {
    (a.resource.resource_type != CLUSTER).then_some(&a.resource)
}

/// Which of Redis's two status vocabularies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// `pending / active / completed / failed` (the requests page).
    V1,
    /// `queued / running / completed / failed / cancelled` (the object page).
    V2,
}

/// The one mapping from the canonical status to Redis's (docs/dialects.md table).
pub fn status(s: Status, api: Api) -> &'static str {
    match (api, s) {
        (Api::V1, Status::Queued) => "pending",
        (Api::V1, Status::Running) => "active",
        (Api::V1, Status::Completed) | (Api::V2, Status::Completed) => "completed",
        (Api::V1, Status::Failed | Status::Cancelled) | (Api::V2, Status::Failed) => "failed",
        (Api::V2, Status::Queued) => "queued",
        (Api::V2, Status::Running) => "running",
        (Api::V2, Status::Cancelled) => "cancelled",
    }
}

fn epoch_seconds(micros: Micros) -> i64 {
    micros.div_euclid(1_000_000)
}

/// `"100"` for whole numbers, `"42.5"` otherwise (v1 tasks send progress as a string).
fn progress_string(p: f64) -> String {
    if p.fract() == 0.0 {
        format!("{}", p as i64)
    } else {
        format!("{p}")
    }
}

/// A JSON number that is an integer when whole (`100`, as in the state-machine example).
fn progress_number(p: f64) -> Value {
    if p.fract() == 0.0 {
        Value::Number(Number::from(p as i64))
    } else {
        Number::from_f64(p)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

/// One shard's pending operation: only the fields that are set; `snapshot` as an object.
fn pending_op(op: &PendingOp) -> Value {
    let mut m = Map::new();
    if let Some(v) = op.heartbeat {
        m.insert("heartbeat".into(), v.into());
    }
    if let Some(v) = &op.snapshot {
        let snapshot = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.clone()));
        m.insert("snapshot".into(), snapshot);
    }
    if let Some(v) = op.last_sample_time {
        m.insert("last_sample_time".into(), v.into());
    }
    if let Some(v) = &op.op_name {
        m.insert("op_name".into(), v.clone().into());
    }
    if let Some(v) = &op.status_code {
        m.insert("status_code".into(), v.clone().into());
    }
    if let Some(v) = &op.status_description {
        m.insert("status_description".into(), v.clone().into());
    }
    if let Some(v) = op.progress {
        m.insert(
            "progress".into(),
            Number::from_f64(v)
                .map(Value::Number)
                .unwrap_or(Value::Null),
        );
    }
    Value::Object(m)
}

fn pending_ops(a: &Action) -> Option<BTreeMap<String, Value>> {
    (!a.pending_ops.is_empty()).then(|| {
        a.pending_ops
            .iter()
            .map(|(shard, op)| (shard.clone(), pending_op(op)))
            .collect()
    })
}

/// The error text Redis shows for a failed (or, in v1, cancelled) action.
fn error_text(a: &Action) -> Option<String> {
    match a.status {
        Status::Failed => Some(
            a.error
                .as_ref()
                .map(|e| e.message.clone())
                .or_else(|| a.message.clone())
                .unwrap_or_else(|| "failed".into()),
        ),
        Status::Cancelled => Some(a.message.clone().unwrap_or_else(|| "cancelled".into())),
        _ => None,
    }
}

fn object_name(r: &ResourceRef) -> String {
    format!("{}:{}", r.resource_type, r.id)
}

/// A v1 task (an entry of `actions`).
#[derive(Serialize, Debug)]
pub struct V1Task {
    pub action_uid: String,
    pub name: String,
    pub progress: String,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_ops: Option<BTreeMap<String, Value>>,
    pub task_id: String,
}

/// A v1 state machine (an entry of `state-machines`).
#[derive(Serialize, Debug)]
pub struct V1StateMachine {
    pub action_uid: String,
    pub name: String,
    pub progress: Value,
    pub status: &'static str,
    pub heartbeat: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_ops: Option<BTreeMap<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn v1_task(a: &Action) -> V1Task {
    V1Task {
        action_uid: a.uid.clone(),
        name: a.action_type.clone(),
        progress: progress_string(a.progress),
        status: status(a.status, Api::V1),
        node_uid: a.node.clone(),
        state: a.state.clone(),
        pending_ops: pending_ops(a),
        task_id: a.uid.clone(),
    }
}

fn v1_state_machine(a: &Action) -> V1StateMachine {
    V1StateMachine {
        action_uid: a.uid.clone(),
        name: a.action_type.clone(),
        progress: progress_number(a.progress),
        status: status(a.status, Api::V1),
        heartbeat: epoch_seconds(a.heartbeat_at.unwrap_or(a.updated_at)),
        object_name: object(a).map(object_name),
        node_uid: a.node.clone(),
        state: a.state.clone(),
        pending_ops: pending_ops(a),
        error: error_text(a),
    }
}

/// The v1 rendering of one action; `None` for `other` kinds, which v1 does not show.
fn v1(a: &Action) -> Option<Value> {
    let v = match a.kind {
        Kind::Task => serde_json::to_value(v1_task(a)),
        Kind::StateMachine => serde_json::to_value(v1_state_machine(a)),
        Kind::Other => return None,
    };
    v.ok()
}

/// `additional_info` of a v2 action; absent when it would be empty.
#[derive(Serialize, Debug, Default)]
pub struct AdditionalInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_ops: Option<BTreeMap<String, Value>>,
}

impl AdditionalInfo {
    fn is_empty(&self) -> bool {
        self.description.is_none()
            && self.error.is_none()
            && self.object_type.is_none()
            && self.object_uid.is_none()
            && self.pending_ops.is_none()
    }
}

/// A v2 action.
#[derive(Serialize, Debug)]
pub struct V2Action {
    pub action_type: &'static str,
    pub action_uid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub additional_info: Option<AdditionalInfo>,
    pub creation_time: i64,
    pub name: String,
    pub progress: f64,
    pub status: &'static str,
}

fn v2(a: &Action) -> V2Action {
    let info = AdditionalInfo {
        description: a.description.clone(),
        error: (a.status == Status::Failed)
            .then(|| error_text(a))
            .flatten(),
        object_type: object(a).map(|r| r.resource_type.clone()),
        object_uid: object(a).map(|r| r.id.clone()),
        pending_ops: pending_ops(a),
    };
    V2Action {
        action_type: a.kind.as_str(),
        action_uid: a.uid.clone(),
        additional_info: (!info.is_empty()).then_some(info),
        creation_time: epoch_seconds(a.created_at),
        name: a.action_type.clone(),
        progress: a.progress,
        status: status(a.status, Api::V2),
    }
}

/// The Redis listener's 503 body for a connection refused beyond `CONNECTIONS_MAX`, in
/// Redis's error shape.
pub fn connections_refusal_body(max: usize) -> String {
    RedisError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        format!("CONNECTIONS_MAX ({max}) connections are open; retry later"),
    )
    .body()
    .to_string()
}

/// Redis's error body: `{"error_code": "...", "description": "..."}`.
#[derive(Debug)]
pub struct RedisError {
    pub status: StatusCode,
    pub code: &'static str,
    pub description: String,
}

impl RedisError {
    fn new(status: StatusCode, code: &'static str, description: impl Into<String>) -> RedisError {
        RedisError {
            status,
            code,
            description: description.into(),
        }
    }

    /// `{"error_code": ..., "description": ...}`.
    fn body(&self) -> Value {
        serde_json::json!({"error_code": self.code, "description": self.description})
    }

    fn not_found(uid: &str) -> RedisError {
        RedisError::new(
            StatusCode::NOT_FOUND,
            "action_not_found",
            format!("Action {uid} does not exist"),
        )
    }
}

impl IntoResponse for RedisError {
    fn into_response(self) -> Response {
        let unauthorized = self.status == StatusCode::UNAUTHORIZED;
        let mut resp = (self.status, Json(self.body())).into_response();
        if unauthorized {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"action-ledger\""),
            );
        }
        resp
    }
}

impl From<ApiError> for RedisError {
    fn from(e: ApiError) -> RedisError {
        let code = match e.status {
            StatusCode::BAD_REQUEST => "bad_request",
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::FORBIDDEN => "insufficient_permissions",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            s if s.is_server_error() => "internal_error",
            _ => e.code,
        };
        RedisError::new(e.status, code, e.message)
    }
}

/// 404 for a path this listener does not serve, in Redis's error shape.
pub async fn not_found() -> RedisError {
    RedisError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// 405 in Redis's error shape.
pub async fn method_not_allowed() -> RedisError {
    RedisError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

/// The caller, from HTTP Basic (the password is the token). Every valid token has
/// `view_status_of_cluster_action`, so there is no 403 path here.
fn caller(headers: &HeaderMap, state: &AppState) -> Result<Principal, RedisError> {
    authenticate(headers, &state.tokens).map_err(|f| {
        let description = match f {
            AuthFailure::Missing => {
                "authentication required: HTTP Basic with a token as the password"
            }
            AuthFailure::Unknown => "invalid credentials",
            AuthFailure::Expired { .. } => {
                return RedisError::new(StatusCode::UNAUTHORIZED, "unauthorized", f.message())
            }
            AuthFailure::Unavailable => {
                return RedisError::new(f.status(), "unavailable", f.message())
            }
        };
        RedisError::new(StatusCode::UNAUTHORIZED, "unauthorized", description)
    })
}

/// The newest actions of the caller's scope, optionally of one kind and one resource.
async fn query(
    state: &AppState,
    p: &Principal,
    kind: Option<Kind>,
    resource: Option<ResourceRef>,
) -> Result<Vec<Arc<Action>>, RedisError> {
    let q = ActionQuery {
        tenant: p.scope().map(str::to_string),
        kind,
        resource,
        limit: state.limits.list_limit_max,
        ..Default::default()
    };
    Ok(super::list(state, q).await?.actions)
}

/// One action by uid (or ledger id), visible to the caller.
async fn one(
    state: &AppState,
    p: Principal,
    uid: Result<Path<String>, PathRejection>,
) -> Result<Action, RedisError> {
    let Path(uid) = uid.map_err(|_| RedisError::not_found("?"))?;
    super::one(state, &p, &uid)
        .await
        .map_err(|e| match e.status {
            StatusCode::NOT_FOUND => RedisError::not_found(&uid),
            _ => e.into(),
        })
}

async fn v1_list(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, RedisError> {
    let p = caller(&headers, &state)?;
    let tasks = query(&state, &p, Some(Kind::Task), None).await?;
    let machines = query(&state, &p, Some(Kind::StateMachine), None).await?;
    let tasks: Vec<V1Task> = tasks.iter().map(|a| v1_task(a)).collect();
    let machines: Vec<V1StateMachine> = machines.iter().map(|a| v1_state_machine(a)).collect();
    Ok(Json(serde_json::json!({"actions": tasks, "state-machines": machines})).into_response())
}

async fn v1_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    uid: Result<Path<String>, PathRejection>,
) -> Result<Response, RedisError> {
    let p = caller(&headers, &state)?;
    let a = one(&state, p, uid).await?;
    let body = v1(&a).ok_or_else(|| RedisError::not_found(&a.uid))?;
    Ok(with_retry_after(&a, Json(body).into_response()))
}

async fn v1_bdb(
    State(state): State<AppState>,
    headers: HeaderMap,
    uid: Result<Path<String>, PathRejection>,
) -> Result<Response, RedisError> {
    let p = caller(&headers, &state)?;
    let Path(uid) = uid.map_err(|_| RedisError::not_found("?"))?;
    let resource = ResourceRef {
        resource_type: "bdb".into(),
        id: uid.clone(),
    };
    let machines = query(&state, &p, Some(Kind::StateMachine), Some(resource)).await?;
    if machines.is_empty() {
        return Err(RedisError::new(
            StatusCode::NOT_FOUND,
            "action_not_found",
            format!("database {uid} has no actions"),
        ));
    }
    let machines: Vec<V1StateMachine> = machines.iter().map(|a| v1_state_machine(a)).collect();
    Ok(Json(machines).into_response())
}

async fn v2_list(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, RedisError> {
    let p = caller(&headers, &state)?;
    let all = query(&state, &p, None, None).await?;
    let out: Vec<V2Action> = all.iter().map(|a| v2(a)).collect();
    Ok(Json(out).into_response())
}

async fn v2_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    uid: Result<Path<String>, PathRejection>,
) -> Result<Response, RedisError> {
    let p = caller(&headers, &state)?;
    let a = one(&state, p, uid).await?;
    Ok(with_retry_after(&a, Json(v2(&a)).into_response()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_errors_keep_their_status_in_redis_shape() {
        for (status, code) in [
            (StatusCode::UNAUTHORIZED, "unauthorized"),
            (StatusCode::FORBIDDEN, "insufficient_permissions"),
            (StatusCode::NOT_FOUND, "not_found"),
            (StatusCode::BAD_REQUEST, "bad_request"),
            (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        ] {
            let e = RedisError::from(ApiError::new(status, "x", "why"));
            assert_eq!(
                (e.status, e.code, e.description.as_str()),
                (status, code, "why")
            );
        }
    }

    #[test]
    fn both_status_vocabularies() {
        let v1: Vec<_> = Status::ALL.iter().map(|s| status(*s, Api::V1)).collect();
        let v2: Vec<_> = Status::ALL.iter().map(|s| status(*s, Api::V2)).collect();
        assert_eq!(v1, ["pending", "active", "completed", "failed", "failed"]);
        assert_eq!(
            v2,
            ["queued", "running", "completed", "failed", "cancelled"]
        );
    }

    #[test]
    fn progress_is_whole_when_whole() {
        assert_eq!(progress_string(100.0), "100");
        assert_eq!(progress_string(42.5), "42.5");
        assert_eq!(progress_number(100.0), serde_json::json!(100));
        assert_eq!(progress_number(42.5), serde_json::json!(42.5));
    }
}
