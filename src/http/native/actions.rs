//! The action routes of the native API: create, record an event, cancel, batch, get (now
//! or as of a log position or time), history and list.

use super::{
    action_response, create_tenant, idempotency, json_response, parse_list_params, require, submit,
};
use crate::event::*;
use crate::http::error::ApiError;
use crate::http::wire::*;
use crate::http::{blocking, parse_json, AppState, Body, Caller};
use crate::projection::history::AsOf;
use crate::tokens::{Principal, Role};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use serde::Deserialize;
use std::sync::Arc;

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
    let route = EventRoute {
        verb: "events",
        refused: "record events",
        status: StatusCode::OK,
    };
    record_one_event(&state, &p, &id, &headers, &body, route, |body| {
        let req: EventJson = parse_json(body)?;
        if req.action.is_some() {
            return Err(ApiError::field(
                "action",
                "is only accepted inside a batch; the path names the action",
            ));
        }
        let expected_version = req.expected_version;
        let event = req.into_body().map_err(|(f, r)| ApiError::field(&f, &r))?;
        Ok((expected_version, event))
    })
    .await
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
    let route = EventRoute {
        verb: "cancel",
        refused: "cancel actions",
        status: StatusCode::ACCEPTED,
    };
    record_one_event(&state, &p, &id, &headers, &body, route, |_| {
        Ok((None, EventBody::CancelRequested))
    })
    .await
}

/// What tells apart the routes that record one event on the action their path names.
struct EventRoute {
    /// The path's last segment: `POST /api/v1/actions/{id}/{verb}`.
    verb: &'static str,
    /// What a caller without the writer role is refused.
    refused: &'static str,
    /// The status of the answer (which holds the action).
    status: StatusCode,
}

/// Records on action `id` the event `event_of` reads from the body (with the version it
/// expects, if any), after the role check and the `Idempotency-Key`, and answers with the
/// action.
async fn record_one_event(
    state: &AppState,
    p: &Principal,
    id: &str,
    headers: &HeaderMap,
    body: &[u8],
    route: EventRoute,
    event_of: impl FnOnce(&[u8]) -> Result<(Option<u64>, EventBody), ApiError>,
) -> Result<Response, ApiError> {
    require(p, Role::Writer, route.refused)?;
    let idem = idempotency(
        headers,
        p,
        &format!("POST /api/v1/actions/{id}/{}", route.verb),
        body,
    )?;
    let (expected_version, body) = event_of(body)?;
    let command = Command::Event(RecordEvent {
        action: ActionRef::parse(id),
        expected_version,
        body,
    });
    let c = submit(state, p, idem, vec![command]).await?;
    action_response(state, route.status, &c.actions[0])
}

/// `POST /api/v1/batch` before its commands are read: each command is parsed on its own,
/// so an error names the command it is in. The struct bears the name of the body's schema
/// ([`BatchBody`]), so a body of the wrong type is described with that schema's fields
/// ("an object {commands}"): serde names the Rust struct in its error.
mod unread {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct BatchBody {
        pub commands: Vec<serde_json::Value>,
    }
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
    let req: unread::BatchBody = parse_json(&body)?;
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
    // The current state from memory when the snapshot memo holds it and the caller may
    // see it (no sled work, so here on the async worker); otherwise off it, where another
    // tenant's action is "not found" like a missing one.
    let in_memory = match as_of {
        None => state
            .projection
            .get_in_memory_scoped(&crate::event::ActionRef::parse(&id), p.scope()),
        Some(_) => None,
    };
    let action = match in_memory {
        Some(a) => a,
        None => {
            let st = state.clone();
            blocking(move || {
                let current = crate::http::load_action(&st, &p, &id)?;
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
        let action = crate::http::load_action(&st, &p, &id)?;
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
