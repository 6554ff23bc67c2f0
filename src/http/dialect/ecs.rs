//! The Seeweb ECS dialect: `/ecs/v2/actions[/{id}]` and `POST /ecs/v2/servers/{name}/actions`.
//!
//! Translation only: query parameters become an [`ActionQuery`], a path id goes through
//! [`super::super::load_action`], a POST becomes one `Create` command for
//! [`crate::ledger::Ledger::submit`]; results are rendered in ECS's wire shape
//! (docs/dialects.md). Nothing here reads storage directly.
//!
//! **Resource types.** ECS actions act on ECS servers, and this dialect shows exactly the
//! actions on an ECS server: in the native model, the resource `{type: "ECS", id: NAME}`
//! ([`RESOURCE_TYPE`]; the type is case-sensitive). An action is in the ECS view when its
//! primary resource or one of its related resources has type `ECS`; actions on any other
//! type (a DigitalOcean `droplet`, a Nova `server`, a Redis `bdb`) are not, in the list nor
//! by id (404), even though they share the tenant and the id space.
//! - `resource` is the action's ECS server: its primary resource's id when that has type
//!   `ECS`, otherwise its first related resource of type `ECS`. In a list filtered by
//!   `resource=NAME` it is `NAME`, the server the action was found by (an action linked to
//!   several ECS servers is found by each of them).
//! - `resource_type` is always `"ECS"`.
//! - `resource=NAME` filters on `{type: "ECS", id: NAME}` as primary or related resource,
//!   so it finds exactly the actions the list shows with `"resource": NAME`.
//! - `POST /ecs/v2/servers/{name}/actions` records its action on `{type: "ECS", id: name}`;
//!   the native API records one with `"resource": {"type": "ECS", "id": NAME}`.
//!
//! Cost: `resource=NAME` reads the resource index (a page reads `start + length + 1`
//! snapshots; `total_actions` comes from a counter). The unfiltered list has no index on
//! the resource type: it scans the tenant's actions newest first and keeps the ECS ones, so
//! a page reads every action of the tenant newer than its last ECS action (all of them when
//! the tenant has few ECS actions); `total_actions` still comes from a counter.
//!
//! Other decisions where the ECS documents are silent:
//! - `length` is 1..=`LIST_LIMIT_MAX` (1000 by default), default 50; `start` >= 0. Anything
//!   else, or a non-number, is a 400 in ECS's error shape naming the parameter and limit.
//!   `resource=ID` filters first, then `start`/`length` page; `total_actions` counts the
//!   filtered list.
//! - `user` is never null: the action's `user`, or its tenant when no user was recorded.
//! - `progress` is the canonical progress rounded down, so 100 only when complete.
//! - `POST /ecs/v2/servers/{name}/actions` `{"type": T, ...}` records a *running* task with
//!   `user` = the token's name and answers **201** with the bare action (the `ecsapi`
//!   client parses the bare object and ignores the status code). Other body fields (e.g.
//!   rollback's `snapshot`) are accepted and not recorded. `Idempotency-Key` works as on
//!   the native API.

use super::super::error::ApiError;
use super::super::{with_retry_after, AppState, Body};
use crate::event::{Action, ResourceRef, Status};
use crate::projection::query::ActionQuery;
use crate::tokens::Principal;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;

/// The resource type of the servers this dialect acts on (ECS answers `"resource_type": "ECS"`).
pub const RESOURCE_TYPE: &str = "ECS";
use crate::limits::ECS_LENGTH_DEFAULT;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ecs/v2/actions", get(list))
        .route("/ecs/v2/actions/{id}", get(show))
        .route("/ecs/v2/servers/{name}/actions", post(create))
}

/// The one mapping from the canonical status to ECS's (docs/dialects.md).
pub fn status(s: Status) -> &'static str {
    match s {
        Status::Queued | Status::Running => "in-progress",
        Status::Completed => "completed",
        Status::Failed | Status::Cancelled => "failed",
    }
}

/// RFC 3339 with an explicit `+00:00` offset and microseconds, as ECS's examples show.
fn time(micros: crate::event::Micros) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, false)
}

/// An ECS action. Every field but `started_at`/`completed_at` is always non-null.
#[derive(Serialize, Debug)]
pub struct EcsAction {
    pub id: u64,
    pub status: &'static str,
    pub user: String,
    pub created_at: String,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    pub resource: String,
    pub resource_type: String,
    #[serde(rename = "type")]
    pub action_type: String,
    pub progress: u8,
}

/// The ECS server `a` acts on: its primary resource when that is an ECS server, otherwise
/// its first related ECS server; `None` when it has none (it is not in the ECS view).
pub fn server(a: &Action) -> Option<&str> {
    std::iter::once(&a.resource)
        .chain(&a.related)
        .find(|r| r.resource_type == RESOURCE_TYPE)
        .map(|r| r.id.as_str())
}

impl EcsAction {
    /// `a` as ECS shows it, under `server` (one of its ECS servers, see the module doc).
    fn on(a: &Action, server: &str) -> Self {
        EcsAction {
            id: a.id,
            status: status(a.status),
            user: a.user.clone().unwrap_or_else(|| a.tenant.clone()),
            created_at: time(a.created_at),
            started_at: a.started_at.map(time),
            completed_at: a.completed_at.map(time),
            resource: server.to_string(),
            resource_type: RESOURCE_TYPE.to_string(),
            action_type: a.action_type.clone(),
            progress: a.progress.floor().clamp(0.0, 100.0) as u8,
        }
    }

    /// `a` under its own ECS server; `None` when it is not in the ECS view.
    fn of(a: &Action) -> Option<Self> {
        server(a).map(|s| EcsAction::on(a, s))
    }
}

/// ECS's error: `{"status": "error", "message": "..."}`.
#[derive(Debug)]
pub struct EcsError {
    pub status: StatusCode,
    pub message: String,
}

impl EcsError {
    fn new(status: StatusCode, message: impl Into<String>) -> EcsError {
        EcsError {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> EcsError {
        EcsError::new(StatusCode::BAD_REQUEST, message)
    }

    fn not_found(id: &str) -> EcsError {
        EcsError::new(StatusCode::NOT_FOUND, format!("action {id} not found"))
    }
}

impl IntoResponse for EcsError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({"status": "error", "message": self.message})),
        )
            .into_response()
    }
}

/// Every core answer keeps its status; the body takes ECS's shape (5xx messages are already
/// opaque in [`ApiError`]).
impl From<ApiError> for EcsError {
    fn from(e: ApiError) -> EcsError {
        EcsError::new(e.status, e.message)
    }
}

/// The caller, from `X-APITOKEN` (or any token header the native API accepts).
fn caller(headers: &HeaderMap, state: &AppState) -> Result<Principal, EcsError> {
    use super::super::auth::AuthFailure;
    super::super::auth::authenticate(headers, &state.tokens).map_err(|f| match f {
        AuthFailure::Missing | AuthFailure::Unknown => EcsError::new(
            StatusCode::UNAUTHORIZED,
            "a valid API token is required in the X-APITOKEN header",
        ),
        _ => EcsError::new(f.status(), f.message()),
    })
}

/// `start`/`length`/`resource` of the list; unknown parameters are ignored. Without
/// `resource`, the query is every action on an ECS server; with it, the actions on that one
/// (the resource filter implies the type, and one filter keeps the total a counter read).
fn list_query(
    pairs: &[(String, String)],
    p: &Principal,
    length_max: usize,
) -> Result<ActionQuery, EcsError> {
    let mut q = ActionQuery {
        tenant: p.scope().map(str::to_string),
        resource_type: Some(RESOURCE_TYPE.to_string()),
        limit: ECS_LENGTH_DEFAULT.min(length_max),
        ..Default::default()
    };
    for (k, v) in pairs {
        match k.as_str() {
            "start" => {
                q.offset = v.trim().parse::<u64>().map_err(|_| {
                    EcsError::bad_request(format!(
                        "start must be a non-negative integer, got {v:?}"
                    ))
                })?;
            }
            "length" => {
                let n = v.trim().parse::<usize>().map_err(|_| {
                    EcsError::bad_request(format!("length must be a positive integer, got {v:?}"))
                })?;
                if n == 0 || n > length_max {
                    return Err(EcsError::bad_request(format!(
                        "length must be between 1 and {length_max} (LIST_LIMIT_MAX), got {n}"
                    )));
                }
                q.limit = n;
            }
            "resource" => {
                q.resource_type = None;
                q.resource = Some(ResourceRef {
                    resource_type: RESOURCE_TYPE.to_string(),
                    id: v.clone(),
                })
            }
            _ => {} // unknown parameters are ignored
        }
    }
    Ok(q)
}

async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, EcsError> {
    let p = caller(&headers, &state)?;
    let Query(pairs) =
        query.map_err(|e| EcsError::bad_request(format!("bad query string: {e}")))?;
    let q = list_query(&pairs, &p, state.limits.list_limit_max)?;
    let filter = q.resource.as_ref().map(|r| r.id.clone());
    let page = super::list(&state, q).await?;
    let actions: Vec<EcsAction> = page
        .actions
        .iter()
        .filter_map(|a| match &filter {
            Some(name) => Some(EcsAction::on(a, name)),
            None => EcsAction::of(a),
        })
        .collect();
    Ok(Json(serde_json::json!({
        "status": "ok",
        "actions": actions,
        "total_actions": page.total,
    }))
    .into_response())
}

async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, EcsError> {
    let p = caller(&headers, &state)?;
    let Path(id) = id.map_err(|_| EcsError::not_found("?"))?;
    // ECS action ids are integers: anything else names no action.
    let Ok(n) = id.parse::<u64>() else {
        return Err(EcsError::not_found(&id));
    };
    let action = super::one(&state, &p, &n.to_string())
        .await
        .map_err(|e| match e.status {
            StatusCode::NOT_FOUND => EcsError::not_found(&id),
            _ => e.into(),
        })?;
    // An action on no ECS server is not in this API (module doc).
    let ecs = EcsAction::of(&action).ok_or_else(|| EcsError::not_found(&id))?;
    let body = serde_json::json!({"status": "ok", "action": ecs});
    Ok(with_retry_after(&action, Json(body).into_response()))
}

async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
    body: Result<Body, ApiError>,
) -> Result<Response, EcsError> {
    let p = caller(&headers, &state)?;
    super::require_writer(&p)?;
    let Path(name) = name.map_err(|_| EcsError::bad_request("bad server name in the path"))?;
    let Body(body) = body?;
    let route = format!("POST /ecs/v2/servers/{name}/actions");
    let server = ResourceRef {
        resource_type: RESOURCE_TYPE.to_string(),
        id: name,
    };
    let a = super::record_task(&state, &headers, &p, &route, &body, server, |_| {}).await?;
    let ecs = EcsAction::on(&a, &a.resource.id);
    Ok(with_retry_after(
        &a,
        (StatusCode::CREATED, Json(ecs)).into_response(),
    ))
}
