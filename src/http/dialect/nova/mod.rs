//! The OpenStack Nova dialect: `os-instance-actions` (list and show) and the version
//! documents, as python-novaclient, openstacksdk and `openstack server event list` use them.
//!
//! Translation only: the URL and query become an [`ActionQuery`] (resource `server/{id}`,
//! newest first) or a [`load_action`]; the result is rendered in Nova's wire shape
//! (docs/dialects.md "OpenStack Nova", Nova's api-ref samples). Nothing here
//! reads storage except through the projection's queries.
//!
//! # Routes
//! - `GET /v2.1[/{project_id}]/servers/{server_id}/os-instance-actions[/{request_id}]`, and
//!   the same under the legacy `/v2/{tenant_id}` prefix.
//! - `GET /`, `/v2.1`, `/v2.1/`, `/v2`, `/v2/`: version documents, without a token
//!   (docs/api.md); `GET /v2.1/{project_id}[/]`: the v2.1 document behind the token.
//!   `/v2/actions` (DigitalOcean) has one more segment less than the legacy Nova prefix,
//!   so the two never meet in the router.
//!
//! # Mapping
//! A Nova instance action is a ledger action on the resource `server/{server_id}` (as its
//! primary resource or a related one — the projection's one definition of "on a
//! resource"). `request_id` = uid, `action` = type, `user_id` = user, `project_id` =
//! tenant, `start_time` = created_at, `updated_at` = updated_at, `instance_uuid` = the
//! server id of the URL. `message` is `"Error"` once the action failed or was cancelled or
//! any sub-event finished with an error, else null. Events are the action's sub-events,
//! newest first (Nova orders them by `created_at desc`). Times are UTC, ISO 8601 with
//! microseconds and no zone (`2018-04-25T01:26:36.790544`).
//!
//! # Files
//! - this module: the routes, the handlers of `os-instance-actions`, Nova's faults, and
//!   the rendering of actions and events;
//! - `microversion`: the microversion headers, their range, the headers echoed on every
//!   answer, and what each microversion changes;
//! - `versions`: the version documents.
//!
//! # Tenancy
//! A non-admin sees its tenant only; a URL project id other than its tenant → 400
//! "Malformed request URL: ...". An admin may name any project (the list is then that
//! project's actions), or none (every project's). A server with no action the caller may
//! see does not exist (404 "Instance ... could not be found.").

mod microversion;
mod versions;

pub use microversion::{negotiate, Microversion, MAX_VERSION, MIN_VERSION};

use crate::event::{Action, Micros, ResourceRef, Status, SubEvent, SubResult};
use crate::http::auth::{authenticate, AuthFailure};
use crate::http::error::ApiError;
use crate::http::{load_action, with_retry_after, AppState};
use crate::projection::query::{ActionQuery, LIST_LIMIT_MAX};
use crate::tokens::Principal;
use axum::extract::rejection::QueryRejection;
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha224};
use std::sync::Arc;

use microversion::stamp;

/// The resource type of a Nova server.
pub const RESOURCE_TYPE: &str = "server";
pub use crate::limits::NOVA_LIMIT_MAX;

pub fn routes() -> Router<AppState> {
    let actions = "servers/{server_id}/os-instance-actions";
    let action = "servers/{server_id}/os-instance-actions/{request_id}";
    // A trailing slash is removed before routing (`server::Front`), so `/v2.1/` and
    // `/v2.1/{project_id}/` are these routes too.
    Router::new()
        .route("/", only_get(get(versions::versions)))
        .route("/v2.1", only_get(get(versions::version_v21)))
        .route("/v2", only_get(get(versions::version_v20)))
        .route(&format!("/v2.1/{actions}"), only_get(get(list_unscoped)))
        .route(&format!("/v2.1/{action}"), only_get(get(show_unscoped)))
        .route(
            &format!("/v2.1/{{project_id}}/{actions}"),
            only_get(get(list_scoped)),
        )
        .route(
            &format!("/v2.1/{{project_id}}/{action}"),
            only_get(get(show_scoped)),
        )
        .route(
            &format!("/v2/{{project_id}}/{actions}"),
            only_get(get(list_scoped)),
        )
        .route(
            &format!("/v2/{{project_id}}/{action}"),
            only_get(get(show_scoped)),
        )
        .route(
            "/v2.1/{project_id}",
            only_get(get(versions::version_v21_scoped)),
        )
}

/// Other methods on a Nova route get Nova's 405 body rather than the native one.
fn only_get(m: MethodRouter<AppState>) -> MethodRouter<AppState> {
    m.fallback(|| async {
        Fault::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "The method specified is not allowed for this resource.",
        )
    })
}

// ---------------------------------------------------------------------------------------
// Faults

/// A Nova fault: `{"<faultName>": {"code": N, "message": "..."}}`, with the negotiated
/// version echoed when there is one.
#[derive(Debug)]
pub struct Fault {
    pub status: StatusCode,
    pub message: String,
    pub version: Option<Microversion>,
}

impl Fault {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Fault {
        Fault {
            status,
            message: message.into(),
            version: None,
        }
    }

    fn bad_request(message: impl Into<String>) -> Fault {
        Fault::new(StatusCode::BAD_REQUEST, message)
    }

    fn at(mut self, v: Microversion) -> Fault {
        self.version = Some(v);
        self
    }
}

/// Nova's fault names by status (`nova.api.openstack.wsgi.Fault._fault_names`).
pub fn fault_name(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "badRequest",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "itemNotFound",
        405 => "badMethod",
        409 => "conflictingRequest",
        413 | 429 => "overLimit",
        415 => "badMediaType",
        501 => "notImplemented",
        503 => "serviceUnavailable",
        _ => "computeFault",
    }
}

impl IntoResponse for Fault {
    fn into_response(self) -> Response {
        let body = json!({ fault_name(self.status): {"code": self.status.as_u16(), "message": self.message} });
        stamp((self.status, Json(body)).into_response(), self.version)
    }
}

impl From<ApiError> for Fault {
    fn from(e: ApiError) -> Fault {
        if e.status.is_server_error() {
            // The cause was logged where the ApiError was made; the body stays opaque.
            let message = if e.status == StatusCode::SERVICE_UNAVAILABLE {
                e.message
            } else {
                "Unexpected API Error. Please report this at the ledger's operators and attach its log if possible.".into()
            };
            return Fault::new(e.status, message);
        }
        Fault::new(e.status, e.message)
    }
}

// ---------------------------------------------------------------------------------------
// Rendering

/// `2018-04-25T01:26:36.790544`: UTC, microseconds, no zone.
pub fn nova_time(micros: Micros) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .naive_utc()
        .format("%Y-%m-%dT%H:%M:%S%.6f")
        .to_string()
}

/// ISO 8601 as Nova's `timeutils.parse_isotime` takes it: with an offset (or `Z`), or
/// without one (UTC); `T` or a space between date and time; or a bare date.
pub fn parse_nova_time(s: &str) -> Option<Micros> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_micros());
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f%:z",
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%dT%H:%M:%S%.f%z",
    ] {
        if let Ok(t) = chrono::DateTime::parse_from_str(s, fmt) {
            return Some(t.timestamp_micros());
        }
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc().timestamp_micros());
        }
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_micros())
}

/// Nova's `generate_hostid`: sha224 hex of project_id + host, `""` without a host.
pub fn host_id(project_id: &str, host: Option<&str>) -> String {
    match host {
        Some(h) if !h.is_empty() => Sha224::digest(format!("{project_id}{h}").as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        _ => String::new(),
    }
}

/// `"Error"` once the action failed or was cancelled or a sub-event finished with an
/// error (Nova sets it when an event finishes with `Error`); otherwise null.
fn message(a: &Action) -> Value {
    let failed = matches!(a.status, Status::Failed | Status::Cancelled)
        || a.events.iter().any(|e| e.result == Some(SubResult::Error));
    if failed {
        json!("Error")
    } else {
        Value::Null
    }
}

fn action_json(a: &Action, server_id: &str, v: Microversion) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("action".into(), json!(a.action_type));
    m.insert("instance_uuid".into(), json!(server_id));
    m.insert("message".into(), message(a));
    m.insert("project_id".into(), json!(a.tenant));
    m.insert("request_id".into(), json!(a.uid));
    m.insert("start_time".into(), json!(nova_time(a.created_at)));
    m.insert("user_id".into(), json!(a.user));
    if v.at_least(58) {
        m.insert("updated_at".into(), json!(nova_time(a.updated_at)));
    }
    m
}

fn event_json(e: &SubEvent, project_id: &str, v: Microversion, admin: bool) -> Value {
    let mut m = Map::new();
    m.insert("event".into(), json!(e.name));
    m.insert("start_time".into(), json!(nova_time(e.started_at)));
    m.insert("finish_time".into(), json!(e.finished_at.map(nova_time)));
    let result = e.result.map(|r| match r {
        SubResult::Success => "Success",
        SubResult::Error => "Error",
    });
    m.insert("result".into(), json!(result));
    if admin {
        m.insert("traceback".into(), json!(e.traceback));
    }
    if v.at_least(62) {
        if admin {
            m.insert("host".into(), json!(e.host));
        }
        m.insert(
            "hostId".into(),
            json!(host_id(project_id, e.host.as_deref())),
        );
    }
    if v.at_least(84) && admin {
        m.insert("details".into(), json!(e.details));
    }
    Value::Object(m)
}

// ---------------------------------------------------------------------------------------
// Requests

/// Who is calling, at which version, for which tenant(s).
struct Ctx {
    principal: Principal,
    version: Microversion,
    /// `Some(t)`: only tenant `t`'s actions; `None`: every tenant (admin, no project in URL).
    tenant: Option<String>,
}

/// Authentication (401 without version headers, as keystonemiddleware answers before
/// Nova), then the microversion, then the URL's project id.
fn context(state: &AppState, headers: &HeaderMap, project: Option<&str>) -> Result<Ctx, Fault> {
    let principal = authenticate(headers, &state.tokens).map_err(|f| {
        let message = match f {
            AuthFailure::Missing => "The request you have made requires authentication.",
            AuthFailure::Unknown => {
                "The request you have made requires authentication (the token is not valid)."
            }
            _ => return Fault::new(f.status(), f.message()),
        };
        Fault::new(StatusCode::UNAUTHORIZED, message)
    })?;
    let version = negotiate(headers)?;
    let tenant = match (principal.scope(), project) {
        (Some(own), Some(url)) if url != own => {
            return Err(Fault::bad_request(format!(
                "Malformed request URL: URL's project_id '{url}' doesn't match Context's project_id '{own}'"
            ))
            .at(version))
        }
        (Some(own), _) => Some(own.to_string()),
        (None, url) => url.map(str::to_string),
    };
    Ok(Ctx {
        principal,
        version,
        tenant,
    })
}

/// The query pairs, or Nova's 400 for an undecodable query string.
fn pairs(
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
    v: Microversion,
) -> Result<Vec<(String, String)>, Fault> {
    q.map(|Query(p)| p)
        .map_err(|e| Fault::bad_request(format!("Invalid query string: {e}")).at(v))
}

fn unexpected(name: &str) -> Fault {
    Fault::bad_request(format!(
        "Invalid input for query parameters. Value: {name}. Additional properties are not allowed ('{name}' was unexpected)"
    ))
}

/// The list's parameters after Nova's query schema for the version.
#[derive(Debug, Default)]
struct ListParams {
    limit: Option<usize>,
    marker: Option<String>,
    since: Option<Micros>,
    before: Option<Micros>,
    /// The accepted parameters, for the next link.
    given: Vec<(String, String)>,
}

fn list_params(pairs: Vec<(String, String)>, v: Microversion) -> Result<ListParams, Fault> {
    let mut p = ListParams::default();
    if !v.at_least(58) {
        return Ok(p); // before 2.58 the list takes no parameters and ignores all
    }
    let allowed: &[&str] = if v.at_least(66) {
        &["limit", "marker", "changes-since", "changes-before"]
    } else {
        &["limit", "marker", "changes-since"]
    };
    for (k, val) in &pairs {
        if !allowed.contains(&k.as_str()) {
            return Err(unexpected(k));
        }
        if p.given.iter().any(|(g, _)| g == k) {
            return Err(Fault::bad_request(format!(
                "Invalid input for query parameters {k}. Value: {val}. {k} may be given only once"
            )));
        }
        p.given.push((k.clone(), val.clone()));
        let time = |val: &str| {
            parse_nova_time(val).ok_or_else(|| {
                Fault::bad_request(format!(
                    "Invalid input for query parameters {k}. Value: {val}. '{val}' is not a 'date-time'"
                ))
            })
        };
        match k.as_str() {
            "limit" => {
                // Digits only (Nova's `^[0-9]*$`, at least one); Python's int() has no
                // overflow, so a huge limit is clamped like any other above the maximum.
                let n: u64 = (!val.is_empty() && val.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| val.parse().unwrap_or(u64::MAX))
                    .ok_or_else(|| {
                        Fault::bad_request(format!(
                            "Invalid input for query parameters limit. Value: {val}. '{val}' does not match '^[0-9]*$'"
                        ))
                    })?;
                p.limit = Some(n.min(NOVA_LIMIT_MAX as u64) as usize);
            }
            "marker" => p.marker = Some(val.clone()),
            "changes-since" => p.since = Some(time(val)?),
            "changes-before" => p.before = Some(time(val)?),
            _ => unreachable!("checked against `allowed`"),
        }
    }
    if let (Some(since), Some(before)) = (p.since, p.before) {
        if before < since {
            return Err(Fault::bad_request(
                "The value of changes-since must be less than or equal to changes-before.",
            ));
        }
    }
    Ok(p)
}

fn server(server_id: &str) -> ResourceRef {
    ResourceRef {
        resource_type: RESOURCE_TYPE.into(),
        id: server_id.into(),
    }
}

fn on_server(a: &Action, r: &ResourceRef) -> bool {
    &a.resource == r || a.related.contains(r)
}

/// Whether the caller can see any action on the server: Nova's "does the instance exist".
fn server_exists(
    state: &AppState,
    tenant: &Option<String>,
    r: &ResourceRef,
) -> Result<bool, ApiError> {
    let q = ActionQuery {
        tenant: tenant.clone(),
        resource: Some(r.clone()),
        limit: 1,
        ..Default::default()
    };
    Ok(!state.projection.list(&q)?.actions.is_empty())
}

fn instance_not_found(server_id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("Instance {server_id} could not be found."),
    )
}

/// An action of the server that the caller may see, by request id (or ledger id).
fn find_action(
    state: &AppState,
    ctx: &Ctx,
    r: &ResourceRef,
    request_id: &str,
) -> Result<Option<Action>, ApiError> {
    match load_action(state, &ctx.principal, request_id) {
        Ok(a) if on_server(&a, r) && ctx.tenant.as_ref().is_none_or(|t| &a.tenant == t) => {
            Ok(Some(a))
        }
        Ok(_) => Ok(None),
        Err(e) if e.status == StatusCode::NOT_FOUND => Ok(None),
        Err(e) => Err(e),
    }
}

/// Up to `want` actions of `q` that pass `keep`, following keyset cursors past the ones
/// `keep` drops. `keep` only ever drops the few actions created in the marker's own
/// microsecond, so this reads about one page.
fn collect(
    state: &AppState,
    mut q: ActionQuery,
    want: usize,
    keep: impl Fn(&Action) -> bool,
) -> Result<Vec<Arc<Action>>, ApiError> {
    let mut out = Vec::new();
    if want == 0 {
        return Ok(out);
    }
    q.limit = want.min(LIST_LIMIT_MAX);
    loop {
        let page = state.projection.list(&q)?;
        for a in page.actions {
            if keep(&a) {
                out.push(a);
                if out.len() == want {
                    return Ok(out);
                }
            }
        }
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => return Ok(out),
        }
    }
}

/// `application/x-www-form-urlencoded` as Python's `urlencode` writes it.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The `next` link of a full page: this URL with the request's parameters in their order
/// and `marker` (moved to the end) set to the page's last request id (Nova's
/// `_get_next_link`: a copy of webob's `request.params` with `params["marker"] = ...`).
fn next_link(headers: &HeaderMap, path: &str, given: &[(String, String)], last: &str) -> Value {
    let mut params: Vec<(String, String)> = given
        .iter()
        .filter(|(k, _)| k != "marker")
        .cloned()
        .collect();
    params.push(("marker".into(), last.into()));
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
        .collect();
    json!([{"rel": "next", "href": format!("{}{path}?{}", versions::base_url(headers), query.join("&"))}])
}

async fn list_unscoped(
    State(state): State<AppState>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Path(server_id): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, Fault> {
    list(
        state,
        headers,
        uri.path().to_string(),
        None,
        server_id,
        query,
    )
    .await
}

async fn list_scoped(
    State(state): State<AppState>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    Path((project_id, server_id)): Path<(String, String)>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, Fault> {
    list(
        state,
        headers,
        uri.path().to_string(),
        Some(project_id),
        server_id,
        query,
    )
    .await
}

async fn show_unscoped(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((server_id, request_id)): Path<(String, String)>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, Fault> {
    show(state, headers, None, server_id, request_id, query).await
}

async fn show_scoped(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((project_id, server_id, request_id)): Path<(String, String, String)>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, Fault> {
    show(
        state,
        headers,
        Some(project_id),
        server_id,
        request_id,
        query,
    )
    .await
}

/// `GET .../servers/{server_id}/os-instance-actions`.
async fn list(
    state: AppState,
    headers: HeaderMap,
    path: String,
    project: Option<String>,
    server_id: String,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, Fault> {
    let ctx = context(&state, &headers, project.as_deref())?;
    let v = ctx.version;
    let params = list_params(pairs(query, v)?, v).map_err(|f| f.at(v))?;
    let limit = params.limit.unwrap_or(NOVA_LIMIT_MAX);
    let sid = server_id.clone();
    let (since, before, marker) = (params.since, params.before, params.marker.clone());
    let actions = state
        .read(move |st| {
            let r = server(&sid);
            let mut q = ActionQuery {
                tenant: ctx.tenant.clone(),
                resource: Some(r.clone()),
                updated_since: since,
                // changes-before is inclusive (`updated_at <= t`); the query's bound is not.
                updated_until: before.map(|t| t.saturating_add(1)),
                ..Default::default()
            };
            // After the marker in Nova's order (created_at desc, id desc): created at or
            // before it (a key bound on the scan), minus those of its own microsecond that
            // are not older than it.
            let marker = match &marker {
                None => None,
                Some(m) => match find_action(st, &ctx, &r, m)? {
                    Some(a) => Some(a),
                    None if !server_exists(st, &ctx.tenant, &r)? => {
                        return Err(instance_not_found(&sid))
                    }
                    None => {
                        return Err(ApiError::bad_request(format!(
                            "Marker {m} could not be found."
                        )));
                    }
                },
            };
            if let Some(m) = &marker {
                q.created_until = Some(m.created_at.saturating_add(1));
            }
            let keep = |a: &Action| {
                marker.as_ref().is_none_or(|m| {
                    a.created_at < m.created_at || (a.created_at == m.created_at && a.id < m.id)
                })
            };
            let actions = collect(st, q, limit, keep)?;
            if actions.is_empty() && marker.is_none() && !server_exists(st, &ctx.tenant, &r)? {
                return Err(instance_not_found(&sid));
            }
            Ok(actions)
        })
        .await
        .map_err(|e| Fault::from(e).at(v))?;

    let mut body = Map::new();
    let full = limit > 0 && actions.len() == limit;
    let rendered: Vec<Value> = actions
        .iter()
        .map(|a| Value::Object(action_json(a, &server_id, v)))
        .collect();
    body.insert("instanceActions".into(), Value::Array(rendered));
    if v.at_least(58) && full {
        if let Some(last) = actions.last() {
            body.insert(
                "links".into(),
                next_link(&headers, &path, &params.given, &last.uid),
            );
        }
    }
    Ok(stamp(Json(Value::Object(body)).into_response(), Some(v)))
}

/// `GET .../servers/{server_id}/os-instance-actions/{request_id}`.
async fn show(
    state: AppState,
    headers: HeaderMap,
    project: Option<String>,
    server_id: String,
    request_id: String,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, Fault> {
    let ctx = context(&state, &headers, project.as_deref())?;
    let v = ctx.version;
    let pairs = pairs(query, v)?;
    if v.at_least(102) {
        if let Some((k, _)) = pairs.first() {
            return Err(unexpected(k).at(v));
        }
    }
    let admin = ctx.principal.is_admin();
    let sid = server_id.clone();
    let action = state
        .read(move |st| {
            let r = server(&sid);
            match find_action(st, &ctx, &r, &request_id)? {
                Some(a) => Ok(a),
                None if !server_exists(st, &ctx.tenant, &r)? => Err(instance_not_found(&sid)),
                None => Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("Action {request_id} not found"),
                )),
            }
        })
        .await
        .map_err(|e| Fault::from(e).at(v))?;

    let mut m = action_json(&action, &server_id, v);
    if admin || v.at_least(51) {
        let events: Vec<Value> = action
            .events
            .iter()
            .rev() // newest first, like Nova's `created_at desc`
            .map(|e| event_json(e, &action.tenant, v, admin))
            .collect();
        m.insert("events".into(), Value::Array(events));
    }
    let resp = Json(json!({"instanceAction": m})).into_response();
    Ok(with_retry_after(&action, stamp(resp, Some(v))))
}

#[cfg(test)]
mod tests {
    use super::microversion::{HEADER, LEGACY_HEADER};
    use super::*;

    #[tokio::test]
    async fn faults_have_novas_names_codes_and_version_headers() {
        for (status, name) in [
            (400, "badRequest"),
            (401, "unauthorized"),
            (403, "forbidden"),
            (404, "itemNotFound"),
            (405, "badMethod"),
            (406, "computeFault"),
            (409, "conflictingRequest"),
            (413, "overLimit"),
            (429, "overLimit"),
            (500, "computeFault"),
            (503, "serviceUnavailable"),
        ] {
            let status = StatusCode::from_u16(status).unwrap();
            let resp = Fault::new(status, "why").at(MAX_VERSION).into_response();
            assert_eq!(resp.status(), status);
            assert_eq!(resp.headers()[HEADER], "compute 2.104");
            assert_eq!(resp.headers()[LEGACY_HEADER], "2.104");
            let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
                .await
                .unwrap();
            let body: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                body,
                json!({name: {"code": status.as_u16(), "message": "why"}})
            );
        }
        // Server errors never leak their cause.
        let f = Fault::from(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "sled: disk I/O at /secret/path",
        ));
        assert!(!f.message.contains("/secret/path"), "{}", f.message);
    }

    #[test]
    fn host_id_matches_novas_api_sample() {
        // nova/doc/api_samples/os-instance-actions/v2.62: project 6f70...6572, host "compute".
        assert_eq!(
            host_id("6f70656e737461636b20342065766572", Some("compute")),
            "2091634baaccdc4c5a1d57069c833e402921df696b7f970791b12ec6"
        );
        assert_eq!(host_id("p", None), "");
        assert_eq!(host_id("p", Some("")), "");
    }

    #[test]
    fn times_are_naive_utc_with_microseconds() {
        let t = parse_nova_time("2018-04-25T01:26:36.790544Z").unwrap();
        assert_eq!(nova_time(t), "2018-04-25T01:26:36.790544");
        assert_eq!(parse_nova_time("2018-04-25T01:26:36.790544"), Some(t));
        assert_eq!(parse_nova_time("2018-04-25 01:26:36.790544"), Some(t));
        assert_eq!(parse_nova_time("2018-04-25T03:26:36.790544+02:00"), Some(t));
        assert_eq!(
            nova_time(parse_nova_time("2018-04-25").unwrap()),
            "2018-04-25T00:00:00.000000"
        );
        assert_eq!(parse_nova_time("yesterday"), None);
    }

    #[test]
    fn form_encoding_matches_python_urlencode() {
        assert_eq!(
            form_encode("2018-04-25T01:26:36Z"),
            "2018-04-25T01%3A26%3A36Z"
        );
        assert_eq!(form_encode("a b+c/d"), "a+b%2Bc%2Fd");
        assert_eq!(form_encode("req-1_2.3~"), "req-1_2.3~");
    }
}
