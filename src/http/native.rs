//! The native API, `/api/v1`, exactly as docs/api.md describes it.
//!
//! Handlers parse and authorize, build core commands and queries, and render. Every store
//! or log read runs in `spawn_blocking` ([`super::blocking`]); every write goes through
//! [`crate::ledger::Ledger::submit`], which answers after fdatasync.

use super::error::ApiError;
use super::wire::*;
use super::{
    blocking, parse_json, with_retry_after, AppState, Body, Caller, IDEMPOTENCY_KEY_BYTES_MAX,
};
use crate::event::*;
use crate::ledger::Committed;
use crate::projection::history::AsOf;
use crate::projection::query::ActionQuery;
use crate::tokens::{Principal, Role};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Routes that answer promptly (they run under the request timeout).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/actions", post(create).get(list))
        .route("/api/v1/actions/{id}", get(get_action))
        .route("/api/v1/actions/{id}/events", post(record_event))
        .route("/api/v1/actions/{id}/cancel", post(cancel))
        .route("/api/v1/actions/{id}/history", get(history))
        .route("/api/v1/batch", post(batch))
        .route("/api/v1/log", get(log_page))
        .route("/api/v1/tokens", post(create_token).get(list_tokens))
        .route("/api/v1/tokens/{name}", delete(revoke_token))
}

/// Routes that hold the connection open (bounded by their own limits, not the timeout).
pub fn streaming_routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/actions/{id}/wait", get(wait))
        .route("/api/v1/watch", get(watch))
}

fn require(p: &Principal, role: Role, what: &str) -> Result<(), ApiError> {
    if super::auth::allows(p, role) {
        Ok(())
    } else {
        Err(ApiError::forbidden(what))
    }
}

/// The `Idempotency-Key` of a POST and the digest of what was asked: SHA-256 of
/// `route ‖ 0 ‖ body`, where a JSON body is taken as its value ([`canonical_json`]: keys
/// sorted, no whitespace), so a repeat with reordered keys or other spacing is the same
/// request. A body that is not JSON is hashed as its bytes.
///
/// Stamps recorded before digests were canonical hashed the raw bytes. Hashing canonical
/// bytes gives the same digest, so only a body that was not already canonical can differ:
/// for such a body the byte digest is kept too ([`Idempotency::legacy_digest`]) and
/// [`submit`] uses it when the stored stamp of this key was made from these very bytes.
pub(crate) struct Idempotency {
    stamp: IdempotencyStamp,
    /// The byte digest, when the body was not canonical JSON already.
    legacy_digest: Option<[u8; 32]>,
}

/// The canonical text of a JSON value: object keys sorted (by their UTF-8 bytes), no
/// whitespace, strings as serde_json escapes them, and a float with an integral value
/// below 2^53 written as the integer (`1.0` and `1` are the same number). Does not depend
/// on serde_json's `preserve_order` feature.
pub(crate) fn canonical_json(v: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            let mut entries: Vec<_> = m.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, k).expect("a string serializes");
                out.push(b':');
                canonical_json(v, out);
            }
            out.push(b'}');
        }
        Value::Array(a) => {
            out.push(b'[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical_json(v, out);
            }
            out.push(b']');
        }
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 => {
                out.extend_from_slice((f as i64).to_string().as_bytes())
            }
            _ => serde_json::to_writer(&mut *out, n).expect("a number serializes"),
        },
        scalar => serde_json::to_writer(&mut *out, scalar).expect("a scalar serializes"),
    }
}

fn request_digest(route: &str, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(route.as_bytes());
    h.update([0]);
    h.update(body);
    h.finalize().into()
}

/// The `Idempotency-Key` of a POST, if it has one (see [`Idempotency`]).
pub(crate) fn idempotency(
    headers: &HeaderMap,
    p: &Principal,
    route: &str,
    body: &[u8],
) -> Result<Option<Idempotency>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = v
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::field(
                "Idempotency-Key",
                "must be 1 or more visible ASCII characters",
            )
        })?;
    if key.len() > IDEMPOTENCY_KEY_BYTES_MAX {
        return Err(ApiError::limit(
            "IDEMPOTENCY_KEY_BYTES_MAX",
            IDEMPOTENCY_KEY_BYTES_MAX as u64,
            key.len() as u64,
            "Idempotency-Key",
        ));
    }
    let canonical = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .map(|v| {
            let mut out = Vec::with_capacity(body.len());
            canonical_json(&v, &mut out);
            out
        });
    let (digest, legacy_digest) = match canonical {
        Some(c) if c != body => (request_digest(route, &c), Some(request_digest(route, body))),
        _ => (request_digest(route, body), None),
    };
    Ok(Some(Idempotency {
        stamp: IdempotencyStamp {
            tenant: p.tenant.clone(),
            key: key.to_string(),
            request_digest: digest,
        },
        legacy_digest,
    }))
}

/// The stamp to submit: the canonical one, or the byte digest when that is what the stored
/// stamp of this key holds (a request first recorded before digests were canonical).
async fn stamp_for(
    state: &AppState,
    idem: Option<Idempotency>,
) -> Result<Option<IdempotencyStamp>, ApiError> {
    let Some(Idempotency {
        mut stamp,
        legacy_digest,
    }) = idem
    else {
        return Ok(None);
    };
    if let Some(legacy) = legacy_digest {
        let (projection, tenant, key) = (
            state.projection.clone(),
            stamp.tenant.clone(),
            stamp.key.clone(),
        );
        let stored = blocking(move || {
            use crate::ledger::StateStore;
            projection
                .idempotent_result(&tenant, &key)
                .map_err(|e| ApiError::from(crate::projection::query::QueryError::from(e)))
        })
        .await?;
        if stored.is_some_and(|s| s.request_digest == legacy) {
            stamp.request_digest = legacy;
        }
    }
    Ok(Some(stamp))
}

pub(crate) async fn submit(
    state: &AppState,
    p: &Principal,
    idem: Option<Idempotency>,
    commands: Vec<Command>,
) -> Result<Committed, ApiError> {
    // A token revoked while this request was in flight writes nothing.
    super::auth::still_valid(p)?;
    let submission = Submission {
        principal: p.name.clone(),
        tenant_scope: p.scope().map(str::to_string),
        idempotency: stamp_for(state, idem).await?,
        commands,
    };
    Ok(state.ledger.submit(submission).await?)
}

/// The tenant a create is for: the token's, or (admin only) the body's.
fn create_tenant(p: &Principal, body_tenant: Option<String>) -> Result<String, ApiError> {
    match body_tenant {
        None => Ok(p.tenant.clone()),
        Some(t) if p.is_admin() || t == p.tenant => Ok(t),
        Some(_) => Err(ApiError::forbidden("create actions for another tenant")),
    }
}

#[utoipa::path(post, path = "/api/v1/actions", request_body = CreateBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "repeat-safe POST")),
    responses((status = 201, body = ActionOut), (status = 400, description = "bad input"),
        (status = 401), (status = 403), (status = 409, description = "uid_taken or resource_busy"),
        (status = 413), (status = 422, description = "idempotency_key_reused")))]
pub async fn create(
    State(state): State<AppState>,
    Caller(p): Caller,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    require(&p, Role::Writer, "record actions")?;
    let idem = idempotency(&headers, &p, "POST /api/v1/actions", &body)?;
    let req: CreateBody = parse_json(&body)?;
    let tenant = create_tenant(&p, req.tenant.clone())?;
    let c = submit(
        &state,
        &p,
        idem,
        vec![Command::Create(req.into_command(tenant))],
    )
    .await?;
    action_response(&state, StatusCode::CREATED, &c.actions[0])
}

#[utoipa::path(post, path = "/api/v1/actions/{id}/events", request_body = EventJson,
    params(("id" = String, Path, description = "action id or uid")),
    responses((status = 200, body = ActionOut), (status = 400), (status = 401), (status = 403),
        (status = 404), (status = 409, description = "invalid_transition or version_conflict")))]
pub async fn record_event(
    State(state): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    require(&p, Role::Writer, "record events")?;
    let idem = idempotency(
        &headers,
        &p,
        &format!("POST /api/v1/actions/{id}/events"),
        &body,
    )?;
    let req: EventJson = parse_json(&body)?;
    if req.action.is_some() {
        return Err(ApiError::field(
            "action",
            "is only accepted inside a batch; the path names the action",
        ));
    }
    let expected_version = req.expected_version;
    let event = req.into_body().map_err(|(f, r)| ApiError::field(&f, &r))?;
    let command = Command::Event(RecordEvent {
        action: ActionRef::parse(&id),
        expected_version,
        body: event,
    });
    let c = submit(&state, &p, idem, vec![command]).await?;
    action_response(&state, StatusCode::OK, &c.actions[0])
}

#[utoipa::path(post, path = "/api/v1/actions/{id}/cancel",
    params(("id" = String, Path, description = "action id or uid")),
    responses((status = 202, body = ActionOut), (status = 404), (status = 409)))]
pub async fn cancel(
    State(state): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    require(&p, Role::Writer, "cancel actions")?;
    let idem = idempotency(
        &headers,
        &p,
        &format!("POST /api/v1/actions/{id}/cancel"),
        &body,
    )?;
    let command = Command::Event(RecordEvent {
        action: ActionRef::parse(&id),
        expected_version: None,
        body: EventBody::CancelRequested,
    });
    let c = submit(&state, &p, idem, vec![command]).await?;
    action_response(&state, StatusCode::ACCEPTED, &c.actions[0])
}

/// `POST /api/v1/batch` before its commands are read: each command is parsed on its own,
/// so an error names the command it is in.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchCommands {
    commands: Vec<serde_json::Value>,
}

/// One command of a batch, as the ledger takes it. Errors name nothing yet (the caller adds
/// the command's index).
fn batch_command(p: &Principal, i: usize, c: serde_json::Value) -> Result<Command, ApiError> {
    let c: BatchCommandJson = parse_json(&serde_json::to_vec(&c).expect("a value serializes"))?;
    let at = |f: &str| format!("commands[{i}].{f}");
    match (c.create, c.event) {
        (Some(create), None) => {
            let tenant = create_tenant(p, create.tenant.clone())?;
            Ok(Command::Create(create.into_command(tenant)))
        }
        (None, Some(event)) => {
            let action = event
                .action
                .clone()
                .ok_or_else(|| ApiError::field(&at("event.action"), "is required"))?;
            let expected_version = event.expected_version;
            let body = event
                .into_body()
                .map_err(|(f, r)| ApiError::field(&at(&format!("event.{f}")), &r))?;
            Ok(Command::Event(RecordEvent {
                action: action.into(),
                expected_version,
                body,
            }))
        }
        _ => Err(ApiError::field(
            &format!("commands[{i}]"),
            "must hold exactly one of \"create\" or \"event\"",
        )),
    }
}

/// All or nothing: a refused command fails the batch, and the error names it
/// (`"index"`, from 0, and a message starting `command N: `), whether it was refused
/// while parsing or by the ledger.
#[utoipa::path(post, path = "/api/v1/batch", request_body = BatchBody,
    responses((status = 200, body = BatchOut), (status = 400), (status = 404), (status = 409)))]
pub async fn batch(
    State(state): State<AppState>,
    Caller(p): Caller,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Json<BatchOut>, ApiError> {
    require(&p, Role::Writer, "record actions")?;
    let idem = idempotency(&headers, &p, "POST /api/v1/batch", &body)?;
    let req: BatchCommands = parse_json(&body)?;
    let mut commands = Vec::with_capacity(req.commands.len());
    for (i, c) in req.commands.into_iter().enumerate() {
        commands.push(batch_command(&p, i, c).map_err(|e| e.in_command(i))?);
    }
    // The ledger names the refused command of a batch of several; a batch of one has only
    // command 0 to refuse (a reused Idempotency-Key is the request's, not the command's).
    let single = commands.len() == 1;
    let c = submit(&state, &p, idem, commands).await.map_err(|e| {
        if single && e.code != "idempotency_key_reused" && e.status.is_client_error() {
            e.in_command(0)
        } else {
            e
        }
    })?;
    Ok(Json(BatchOut {
        results: c.actions.iter().map(ActionOut::from).collect(),
    }))
}

#[derive(Deserialize, Default)]
pub struct GetParams {
    /// RFC 3339 time or log position.
    as_of: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/actions/{id}",
    params(("id" = String, Path, description = "action id or uid"),
        ("as_of" = Option<String>, Query, description = "RFC 3339 time or log position")),
    responses((status = 200, body = ActionOut), (status = 400), (status = 401), (status = 404)))]
pub async fn get_action(
    State(state): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    Query(params): Query<GetParams>,
) -> Result<Response, ApiError> {
    let as_of = match params.as_of.as_deref() {
        None => None,
        Some(s) => Some(match s.parse::<u64>() {
            Ok(n) => AsOf::Position(n),
            Err(_) => AsOf::Time(parse_time(s).ok_or_else(|| {
                ApiError::field("as_of", "must be an RFC 3339 time or a log position")
            })?),
        }),
    };
    // The current state from memory when the snapshot memo holds it (no sled work, so
    // here on the async worker); otherwise off it.
    let in_memory = match as_of {
        None => state
            .projection
            .get_in_memory(&crate::event::ActionRef::parse(&id)),
        Some(_) => None,
    };
    let action = match in_memory {
        Some(a) => super::visible(&p, a, &id)?,
        None => {
            let st = state.clone();
            blocking(move || {
                let current = super::load_action(&st, &p, &id)?;
                match as_of {
                    None => Ok(Arc::new(current)),
                    Some(as_of) => st
                        .ledger
                        .action_as_of(&*st.projection, current.id, as_of)?
                        .map(Arc::new)
                        .ok_or_else(|| ApiError::not_found(format!("action {id} at that point"))),
                }
            })
            .await?
        }
    };
    action_response(&state, StatusCode::OK, &action)
}

/// The answer about one action: its native JSON (rendered once per state: the render memo
/// keeps it for the GETs and lists that follow a write), `Retry-After` while unfinished.
fn action_response(state: &AppState, status: StatusCode, a: &Action) -> Result<Response, ApiError> {
    let json = state.rendered.action(a).map_err(ApiError::internal)?;
    let mut resp = json_response(json);
    *resp.status_mut() = status;
    Ok(with_retry_after(a, resp))
}

/// A 200 answer with an already serialised JSON body.
fn json_response(body: impl Into<axum::body::Body>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        body.into(),
    )
        .into_response()
}

#[utoipa::path(get, path = "/api/v1/actions/{id}/history",
    params(("id" = String, Path, description = "action id or uid")),
    responses((status = 200, body = RecordsOut), (status = 404)))]
pub async fn history(
    State(state): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<Json<RecordsOut>, ApiError> {
    let st = state.clone();
    blocking(move || {
        let action = super::load_action(&st, &p, &id)?;
        let mut records = Vec::new();
        for rec in st.ledger.history(&*st.projection, action.id)? {
            for op in &rec.ops {
                records.push(RecordOut {
                    position: rec.position,
                    recorded_at: rfc3339(rec.recorded_at),
                    principal: rec.principal.clone(),
                    event: op_json(op),
                });
            }
        }
        Ok(Json(RecordsOut {
            records,
            next_after: None,
        }))
    })
    .await
}

#[derive(Deserialize, Default)]
pub struct WaitParams {
    timeout_ms: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/actions/{id}/wait",
    params(("id" = String, Path, description = "action id or uid"),
        ("timeout_ms" = Option<u64>, Query, description = "at most WAIT_MS_MAX (60000)")),
    responses((status = 200, body = ActionOut, description = "terminal, or current state at the timeout (with Retry-After)"),
        (status = 400), (status = 404)))]
pub async fn wait(
    State(state): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    Query(params): Query<WaitParams>,
) -> Result<Response, ApiError> {
    let max = state.limits.wait_ms_max;
    let timeout_ms = match params.timeout_ms.as_deref() {
        None => max.min(crate::limits::WAIT_MS_DEFAULT),
        Some(s) => {
            let v: u64 = s
                .parse()
                .map_err(|_| ApiError::field("timeout_ms", "must be a non-negative integer"))?;
            if v > max {
                return Err(ApiError::limit("WAIT_MS_MAX", max, v, "timeout_ms"));
            }
            v
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
    // Subscribe before the first read, so a commit between read and wait still wakes us.
    let mut commits = state.ledger.subscribe();
    let revoked = p.revocation.revoked();
    tokio::pin!(revoked);
    loop {
        let (st, p2, id2) = (state.clone(), p.clone(), id.clone());
        let action = blocking(move || super::load_action(&st, &p2, &id2)).await?;
        if action.status.is_terminal() {
            return action_response(&state, StatusCode::OK, &action);
        }
        tokio::select! {
            changed = commits.changed() => {
                if changed.is_err() {
                    return Err(ApiError::unavailable("the ledger is shutting down"));
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                return action_response(&state, StatusCode::OK, &action);
            }
            _ = super::shutting_down(state.shutdown.clone()) => {
                return action_response(&state, StatusCode::OK, &action);
            }
            // The caller's token was revoked: the wait ends now, refused.
            _ = &mut revoked => return Err(super::auth::revoked(&p)),
        }
    }
}

/// Query parameters of the list and watch routes, parsed by hand so `status` and `id` can
/// repeat. Unknown parameters are ignored.
pub struct ListParams {
    pub query: ActionQuery,
    pub after: Option<u64>,
}

fn parse_list_params(
    pairs: Vec<(String, String)>,
    p: &Principal,
    limit_max: usize,
) -> Result<ListParams, ApiError> {
    let mut q = ActionQuery {
        tenant: p.scope().map(str::to_string),
        limit: super::LIST_LIMIT_DEFAULT.min(limit_max),
        ..Default::default()
    };
    let mut after = None;
    let (mut rtype, mut rid) = (None, None);
    let time = |k: &str, v: &str| {
        parse_time(v).ok_or_else(|| ApiError::field(k, "must be an RFC 3339 time"))
    };
    for (k, v) in pairs {
        match k.as_str() {
            "resource_type" => rtype = Some(v),
            "resource_id" => rid = Some(v),
            "status" => {
                for s in v.split(',') {
                    let status = Status::ALL
                        .into_iter()
                        .find(|x| x.as_str() == s)
                        .ok_or_else(|| {
                            ApiError::field("status", &format!("unknown status {s:?}"))
                        })?;
                    q.statuses.push(status);
                }
            }
            "type" => q.action_type = Some(v),
            "user" => q.user = Some(v),
            "kind" => {
                q.kind = Some(match v.as_str() {
                    "task" => Kind::Task,
                    "state-machine" => Kind::StateMachine,
                    "other" => Kind::Other,
                    _ => {
                        return Err(ApiError::field(
                            "kind",
                            "must be task, state-machine or other",
                        ))
                    }
                })
            }
            "since" => q.created_since = Some(time("since", &v)?),
            "until" => q.created_until = Some(time("until", &v)?),
            "updated_since" => q.updated_since = Some(time("updated_since", &v)?),
            "updated_until" => q.updated_until = Some(time("updated_until", &v)?),
            "id" => {
                for s in v.split(',') {
                    q.ids.push(
                        s.parse()
                            .map_err(|_| ApiError::field("id", "must be integer action ids"))?,
                    );
                }
            }
            "tenant" => {
                if !p.is_admin() {
                    if v != p.tenant {
                        return Err(ApiError::forbidden("list another tenant's actions"));
                    }
                } else {
                    q.tenant = Some(v);
                }
            }
            "limit" => {
                let n: usize = v
                    .parse()
                    .map_err(|_| ApiError::field("limit", "must be a positive integer"))?;
                if n == 0 {
                    return Err(ApiError::field("limit", "must be at least 1"));
                }
                if n > limit_max {
                    return Err(ApiError::limit(
                        "LIST_LIMIT_MAX",
                        limit_max as u64,
                        n as u64,
                        "limit",
                    ));
                }
                q.limit = n;
            }
            "cursor" => q.cursor = Some(v),
            "after" => {
                after = Some(
                    v.parse()
                        .map_err(|_| ApiError::field("after", "must be a log position"))?,
                )
            }
            _ => {} // unknown parameters are ignored
        }
    }
    match (rtype, rid) {
        (Some(t), Some(i)) => {
            q.resource = Some(ResourceRef {
                resource_type: t,
                id: i,
            })
        }
        (Some(t), None) => q.resource_type = Some(t),
        (None, Some(_)) => {
            return Err(ApiError::field("resource_id", "needs resource_type too"));
        }
        (None, None) => {}
    }
    Ok(ListParams { query: q, after })
}

#[utoipa::path(get, path = "/api/v1/actions",
    params(("resource_type" = Option<String>, Query), ("resource_id" = Option<String>, Query),
        ("status" = Option<String>, Query, description = "repeatable"), ("type" = Option<String>, Query),
        ("user" = Option<String>, Query), ("kind" = Option<String>, Query),
        ("since" = Option<String>, Query), ("until" = Option<String>, Query),
        ("updated_since" = Option<String>, Query), ("id" = Option<u64>, Query, description = "repeatable: batch get"),
        ("tenant" = Option<String>, Query, description = "admin only"),
        ("limit" = Option<u64>, Query, description = "default 50, max LIST_LIMIT_MAX (1000)"),
        ("cursor" = Option<String>, Query)),
    responses((status = 200, body = ListOut), (status = 400, description = "bad filter or cursor")))]
pub async fn list(
    State(state): State<AppState>,
    Caller(p): Caller,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let params = parse_list_params(pairs, &p, state.limits.list_limit_max)?;
    let render = |st: &AppState, page: crate::projection::Page| -> Result<Response, ApiError> {
        let body = st
            .rendered
            .list(&page.actions, page.next_cursor.as_deref(), page.total)
            .map_err(ApiError::internal)?;
        Ok(json_response(body))
    };
    // Answered from memory when the projection's memos can (no sled work, so here on the
    // async worker); otherwise off it.
    if let Some(page) = state.projection.list_in_memory(&params.query)? {
        return render(&state, page);
    }
    let st = state.clone();
    blocking(move || render(&st, st.projection.list(&params.query)?)).await
}

/// Whether an action's identity matches the immutable filters of a watch.
fn watch_matches(q: &ActionQuery, a: &Action) -> bool {
    q.tenant.as_ref().is_none_or(|t| &a.tenant == t)
        && q.resource
            .as_ref()
            .is_none_or(|r| &a.resource == r || a.related.contains(r))
        && q.resource_type
            .as_ref()
            .is_none_or(|t| &a.resource.resource_type == t)
        && q.action_type.as_ref().is_none_or(|t| &a.action_type == t)
        && q.user.as_ref().is_none_or(|u| a.user.as_ref() == Some(u))
        && q.kind.is_none_or(|k| a.kind == k)
        && (q.ids.is_empty() || q.ids.contains(&a.id))
}

/// Records read per log read of a watch stream.
const WATCH_READ_CHUNK: usize = 256;
/// Events buffered per watcher; a client that does not drain them within
/// [`WATCH_SEND_TIMEOUT`] is dropped (and can resume with `Last-Event-ID`).
const WATCH_BUFFER: usize = 512;
const WATCH_SEND_TIMEOUT: Duration = Duration::from_secs(10);

#[utoipa::path(get, path = "/api/v1/watch",
    params(("after" = Option<u64>, Query, description = "resume after this position (or Last-Event-ID)"),
        ("resource_type" = Option<String>, Query), ("resource_id" = Option<String>, Query),
        ("type" = Option<String>, Query), ("user" = Option<String>, Query), ("kind" = Option<String>, Query)),
    responses((status = 200, description = "text/event-stream: id = log position, data = {position, event, action}"),
        (status = 503, description = "WATCHERS_MAX reached")))]
pub async fn watch(
    State(state): State<AppState>,
    Caller(p): Caller,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let params = parse_list_params(pairs, &p, state.limits.list_limit_max)?;
    if !params.query.statuses.is_empty() || params.query.cursor.is_some() {
        return Err(ApiError::bad_request(
            "watch filters on what does not change (resource, type, user, kind, id, tenant); status and cursor do not apply",
        ));
    }
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| ApiError::field("Last-Event-ID", "must be a log position"))
        })
        .transpose()?;
    let start = last_event_id
        .or(params.after)
        .unwrap_or_else(|| state.ledger.committed_position());

    let max = state.limits.watchers_max;
    if state.watchers.fetch_add(1, Ordering::AcqRel) >= max {
        state.watchers.fetch_sub(1, Ordering::AcqRel);
        return Err(
            ApiError::unavailable(format!("WATCHERS_MAX ({max}) watch streams are open"))
                .with("limit", "WATCHERS_MAX"),
        );
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<SseEvent>(WATCH_BUFFER);
    let st = state.clone();
    let query = params.query;
    // Revoking the caller's token ends the stream at once, wherever the task is waiting;
    // a last `revoked` event tells the client why (when its buffer has room).
    let revoked = p.revocation.revoked();
    let revoked_tx = tx.clone();
    let stream_task = async move {
        let _guard = WatcherGuard(st.clone());
        let mut after = start;
        // Where the last read stopped: each later read starts there (O(new records)); only
        // the first one reads the segment holding `start` from its beginning.
        let mut mark = None;
        let mut commits = st.ledger.subscribe();
        let mut identities: HashMap<ActionId, Option<Action>> = HashMap::new();
        loop {
            let st2 = st.clone();
            let records = match blocking(move || {
                st2.ledger
                    .read_records_from(mark, after, WATCH_READ_CHUNK)
                    .map_err(ApiError::internal)
            })
            .await
            {
                Ok((r, m)) => {
                    mark = m;
                    r
                }
                Err(_) => return,
            };
            let caught_up = records.len() < WATCH_READ_CHUNK;
            for (rec, entry) in records {
                after = rec.position;
                for op in &entry.ops {
                    let id = op.action_id();
                    if !identities.contains_key(&id) {
                        if identities.len() > 10_000 {
                            identities.clear(); // bounded cache of identities
                        }
                        let a = st.ledger.store().action(id).ok().flatten();
                        identities.insert(id, a);
                    }
                    let Some(a) = identities.get(&id).and_then(|a| a.as_ref()) else {
                        continue;
                    };
                    if !watch_matches(&query, a) {
                        continue;
                    }
                    let data = serde_json::json!({
                        "position": rec.position,
                        "recorded_at": rfc3339(entry.recorded_at),
                        "event": op_json(op),
                        "action": {"id": a.id, "uid": a.uid, "tenant": a.tenant,
                                   "type": a.action_type, "resource": ResourceJson::from(&a.resource)},
                    });
                    let ev = SseEvent::default()
                        .id(rec.position.to_string())
                        .event(op_json(op)["type"].as_str().unwrap_or("event"))
                        .data(data.to_string());
                    match tokio::time::timeout(WATCH_SEND_TIMEOUT, tx.send(ev)).await {
                        Ok(Ok(())) => {}
                        // Client gone, or too slow to drain its buffer: drop it; it can
                        // resume from the last id it saw.
                        _ => return,
                    }
                }
            }
            if caught_up {
                tokio::select! {
                    changed = commits.changed() => if changed.is_err() { return },
                    // The client went away while nothing was committed: give its place
                    // under WATCHERS_MAX back now, not at the next commit.
                    _ = tx.closed() => return,
                    _ = super::shutting_down(st.shutdown.clone()) => return,
                }
            }
        }
    };
    tokio::spawn(async move {
        tokio::select! {
            () = stream_task => {}
            () = revoked => {
                let _ = revoked_tx.try_send(
                    SseEvent::default()
                        .event("revoked")
                        .data(r#"{"code":"unauthorized","message":"the token was revoked"}"#),
                );
            }
        }
    });
    let stream =
        tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, std::convert::Infallible>);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_millis(
            state.limits.watch_keepalive_ms.max(10),
        )))
        .into_response())
}

use futures_util::StreamExt as _;

struct WatcherGuard(AppState);

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.0.watchers.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Deserialize)]
pub struct LogParams {
    after: Option<String>,
    limit: Option<String>,
}

pub use crate::limits::LOG_PAGE_MAX;

#[utoipa::path(get, path = "/api/v1/log",
    params(("after" = Option<u64>, Query), ("limit" = Option<u64>, Query, description = "max LOG_PAGE_MAX (1000)")),
    responses((status = 200, body = RecordsOut)))]
pub async fn log_page(
    State(state): State<AppState>,
    Caller(p): Caller,
    Query(params): Query<LogParams>,
) -> Result<Json<RecordsOut>, ApiError> {
    let after: u64 = match params.after.as_deref() {
        None => 0,
        Some(s) => s
            .parse()
            .map_err(|_| ApiError::field("after", "must be a log position"))?,
    };
    let limit: usize = match params.limit.as_deref() {
        None => crate::limits::LOG_PAGE_DEFAULT,
        Some(s) => {
            let n: usize = s
                .parse()
                .map_err(|_| ApiError::field("limit", "must be a positive integer"))?;
            if n == 0 || n > LOG_PAGE_MAX {
                return Err(ApiError::limit(
                    "LOG_PAGE_MAX",
                    LOG_PAGE_MAX as u64,
                    n as u64,
                    "limit",
                ));
            }
            n
        }
    };
    let st = state.clone();
    blocking(move || {
        let records = st
            .ledger
            .read_records(after, limit)
            .map_err(ApiError::internal)?;
        let full = records.len() == limit;
        let last = records.last().map(|(r, _)| r.position);
        let mut out = Vec::new();
        for (rec, entry) in records {
            for op in &entry.ops {
                // Tenants see only their own actions' operations.
                if let Some(t) = p.scope() {
                    let visible = st
                        .ledger
                        .store()
                        .action(op.action_id())
                        .map_err(ApiError::internal)?
                        .is_some_and(|a| a.tenant == t);
                    if !visible {
                        continue;
                    }
                }
                out.push(RecordOut {
                    position: rec.position,
                    recorded_at: rfc3339(entry.recorded_at),
                    principal: entry.principal.clone(),
                    event: op_json(op),
                });
            }
        }
        Ok(Json(RecordsOut {
            records: out,
            next_after: if full { last } else { None },
        }))
    })
    .await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenCreate {
    name: String,
    tenant: String,
    /// `reader`, `writer` or `admin`.
    role: String,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct TokenOut {
    name: String,
    tenant: String,
    role: String,
    created_at: String,
    /// Only in the answer to a create: the secret, shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

fn token_out(t: &crate::tokens::TokenRecord, secret: Option<String>) -> TokenOut {
    TokenOut {
        name: t.name.clone(),
        tenant: t.tenant.clone(),
        role: t.role.as_str().into(),
        created_at: t.created_at.clone(),
        token: secret,
    }
}

fn token_error(e: crate::tokens::TokenError) -> ApiError {
    use crate::tokens::TokenError as E;
    match e {
        E::NameTaken(_) => ApiError::new(StatusCode::CONFLICT, "name_taken", e.to_string()),
        E::NotFound(name) => ApiError::not_found(format!("token {name:?}")),
        E::Invalid { field, reason } => ApiError::field(field, &reason),
        E::LastAdmin(_) => ApiError::new(StatusCode::CONFLICT, "last_admin_token", e.to_string()),
        E::File { .. } => ApiError::internal(e),
    }
}

#[utoipa::path(post, path = "/api/v1/tokens", request_body = TokenCreate,
    responses((status = 201, body = TokenOut), (status = 403), (status = 409)))]
pub async fn create_token(
    State(state): State<AppState>,
    Caller(p): Caller,
    Body(body): Body,
) -> Result<Response, ApiError> {
    require(&p, Role::Admin, "manage tokens")?;
    let req: TokenCreate = parse_json(&body)?;
    let role = Role::parse(&req.role)
        .ok_or_else(|| ApiError::field("role", "must be reader, writer or admin"))?;
    let st = state.clone();
    blocking(move || {
        let (record, secret) = st
            .tokens
            .create(&req.name, &req.tenant, role)
            .map_err(token_error)?;
        Ok((StatusCode::CREATED, Json(token_out(&record, Some(secret)))).into_response())
    })
    .await
}

#[utoipa::path(get, path = "/api/v1/tokens", responses((status = 200, body = [TokenOut]), (status = 403)))]
pub async fn list_tokens(
    State(state): State<AppState>,
    Caller(p): Caller,
) -> Result<Json<Vec<TokenOut>>, ApiError> {
    require(&p, Role::Admin, "manage tokens")?;
    Ok(Json(
        state
            .tokens
            .list()
            .iter()
            .map(|t| token_out(t, None))
            .collect(),
    ))
}

#[utoipa::path(delete, path = "/api/v1/tokens/{name}",
    params(("name" = String, Path)), responses((status = 204), (status = 403), (status = 404),
        (status = 409, description = "last_admin_token: the last admin token cannot be revoked")))]
pub async fn revoke_token(
    State(state): State<AppState>,
    Caller(p): Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    require(&p, Role::Admin, "manage tokens")?;
    let st = state.clone();
    blocking(move || {
        st.tokens.revoke(&name).map_err(token_error)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
