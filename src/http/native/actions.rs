//! The action routes of the native API: create, record an event, cancel, batch, get (now
//! or as of a log position or time), history, list and the histogram of a list's actions.

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
            state
                .read(move |st| {
                    let current = crate::http::load_action(st, &p, &id)?;
                    match as_of {
                        None => Ok(Arc::new(current)),
                        Some(as_of) => st
                            .ledger
                            .action_as_of(&*st.projection, current.id, as_of)?
                            .map(Arc::new)
                            .ok_or_else(|| {
                                ApiError::not_found(format!("action {id} at that point"))
                            }),
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
    state
        .read(move |st| {
            let action = crate::http::load_action(st, &p, &id)?;
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
    state
        .read(move |st| render(st, st.projection.list(&params.query)?))
        .await
}

/// The width of one histogram bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interval {
    Minute,
    Hour,
    Day,
}

impl Interval {
    fn parse(s: &str) -> Option<Interval> {
        match s {
            "minute" => Some(Interval::Minute),
            "hour" => Some(Interval::Hour),
            "day" => Some(Interval::Day),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Interval::Minute => "minute",
            Interval::Hour => "hour",
            Interval::Day => "day",
        }
    }

    /// Its length in microseconds.
    fn micros(self) -> i64 {
        match self {
            Interval::Minute => 60_000_000,
            Interval::Hour => 3_600_000_000,
            Interval::Day => 86_400_000_000,
        }
    }
}

/// The bucket edges of `from..to` in `interval`s: `from`, every multiple of the interval
/// since the Unix epoch strictly between, `to` (so buckets are aligned to UTC minutes,
/// hours or days, and only the first and last may be shorter). At most `max` buckets,
/// else the limit error.
fn histogram_edges(
    from: Micros,
    to: Micros,
    interval: Interval,
    max: usize,
) -> Result<Vec<Micros>, ApiError> {
    let iv = interval.micros();
    let (f, t, i) = (i128::from(from), i128::from(to), i128::from(iv));
    // Buckets: 1 + the multiples of the interval in (from, to).
    let first_after = f.div_euclid(i) + 1;
    let last_before = (t - 1).div_euclid(i);
    let buckets = 1 + (last_before - first_after + 1).max(0);
    if buckets > max as i128 {
        return Err(ApiError::limit(
            "HISTOGRAM_BUCKETS_MAX",
            max as u64,
            u64::try_from(buckets).unwrap_or(u64::MAX),
            "from",
        ));
    }
    let mut edges = Vec::with_capacity(buckets as usize + 1);
    edges.push(from);
    for k in first_after..=last_before {
        // Between from and to, so within i64.
        edges.push((k * i) as Micros);
    }
    edges.push(to);
    Ok(edges)
}

/// `GET /api/v1/histogram`: the actions matching the list's filters, counted per
/// creation-time bucket and current status (docs/api.md).
#[utoipa::path(get, path = "/api/v1/histogram",
    params(("interval" = Option<String>, Query, description = "minute, hour (default) or day"),
        ("from" = Option<String>, Query, description = "RFC 3339; default HISTOGRAM_BUCKETS_DEFAULT (60) intervals before to"),
        ("to" = Option<String>, Query, description = "RFC 3339, exclusive; default now"),
        ("resource_type" = Option<String>, Query), ("resource_id" = Option<String>, Query),
        ("status" = Option<String>, Query, description = "repeatable"), ("type" = Option<String>, Query),
        ("user" = Option<String>, Query), ("kind" = Option<String>, Query),
        ("since" = Option<String>, Query), ("until" = Option<String>, Query),
        ("updated_since" = Option<String>, Query), ("updated_until" = Option<String>, Query),
        ("id" = Option<u64>, Query, description = "repeatable"),
        ("tenant" = Option<String>, Query, description = "admin only")),
    responses((status = 200, body = HistogramOut),
        (status = 400, description = "bad filter, interval or range; more than HISTOGRAM_BUCKETS_MAX (2000) buckets")))]
pub async fn histogram(
    State(state): State<AppState>,
    Caller(p): Caller,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<HistogramOut>, ApiError> {
    use crate::limits::{HISTOGRAM_BUCKETS_DEFAULT, HISTOGRAM_BUCKETS_MAX};
    let (mut interval, mut from, mut to) = (Interval::Hour, None, None);
    let time = |k: &str, v: &str| {
        parse_time(v).ok_or_else(|| ApiError::field(k, "must be an RFC 3339 time"))
    };
    let mut filters = Vec::with_capacity(pairs.len());
    for (k, v) in pairs {
        match k.as_str() {
            "interval" => {
                interval = Interval::parse(&v)
                    .ok_or_else(|| ApiError::field("interval", "must be minute, hour or day"))?
            }
            "from" => from = Some(time("from", &v)?),
            "to" => to = Some(time("to", &v)?),
            // Paging means nothing here: ignored like any unknown parameter.
            "limit" | "cursor" | "after" => {}
            _ => filters.push((k, v)),
        }
    }
    let query = parse_list_params(filters, &p, state.limits.list_limit_max)?.query;
    let to = to.unwrap_or_else(|| chrono::Utc::now().timestamp_micros());
    let from = match from {
        Some(f) => f,
        None => to.saturating_sub(interval.micros() * HISTOGRAM_BUCKETS_DEFAULT as i64),
    };
    if from >= to {
        return Err(ApiError::field("from", "must be before to"));
    }
    let edges = histogram_edges(from, to, interval, HISTOGRAM_BUCKETS_MAX)?;
    let st = state.clone();
    let h = blocking(move || {
        Ok(st
            .projection
            .histogram(&query, &edges)
            .map(|h| (h, edges))?)
    })
    .await?;
    let (h, edges) = h;
    let buckets: Vec<HistogramBucketOut> = h
        .counts
        .iter()
        .zip(edges.windows(2))
        .map(|(c, w)| HistogramBucketOut {
            start: rfc3339(w[0]),
            end: rfc3339(w[1]),
            counts: StatusCounts::from_all(*c),
            total: c.iter().sum(),
        })
        .collect();
    Ok(Json(HistogramOut {
        interval: interval.as_str().to_string(),
        from: rfc3339(from),
        to: rfc3339(to),
        total: buckets.iter().map(|b| b.total).sum(),
        buckets,
        complete: h.complete,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_edges_align_to_the_interval_inside_the_range() {
        let m = 60_000_000;
        // 00:00:30 .. 00:03:00 in minutes: [0:30, 1:00), [1:00, 2:00), [2:00, 3:00).
        let e = histogram_edges(m / 2, 3 * m, Interval::Minute, 10).unwrap();
        assert_eq!(e, vec![m / 2, m, 2 * m, 3 * m]);
        // Inside one minute: one bucket.
        let e = histogram_edges(m + 1, m + 5, Interval::Minute, 10).unwrap();
        assert_eq!(e, vec![m + 1, m + 5]);
        // Before the epoch too.
        let e = histogram_edges(-m - 1, 0, Interval::Minute, 10).unwrap();
        assert_eq!(e, vec![-m - 1, -m, 0]);
        // The limit counts buckets, not edges.
        assert!(histogram_edges(0, 10 * m, Interval::Minute, 10).is_ok());
        let e = histogram_edges(0, 10 * m + 1, Interval::Minute, 10).unwrap_err();
        assert_eq!(e.code, "limit_exceeded");
        // Years of minutes are refused before anything is allocated.
        assert!(histogram_edges(i64::MIN / 2, i64::MAX / 2, Interval::Minute, 10).is_err());
    }
}
