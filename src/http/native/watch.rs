//! Holding a connection open: the watch stream (SSE of every new operation the caller may
//! see, resumable by log position) and the wait for one action to finish.

use super::{action_response, parse_list_params};
use crate::event::*;
use crate::http::error::ApiError;
use crate::http::wire::*;
use crate::http::{blocking, AppState, Caller};
use crate::limits::{
    WATCH_BUFFER_EVENTS_MAX, WATCH_IDENTITIES_MAX, WATCH_READ_RECORDS_MAX, WATCH_SEND_TIMEOUT_MS,
};
use crate::projection::query::ActionQuery;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

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
        let (p2, id2) = (p.clone(), id.clone());
        let action = state
            .read(move |st| crate::http::load_action(st, &p2, &id2))
            .await?;
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
            _ = crate::http::shutting_down(state.shutdown.clone()) => {
                return action_response(&state, StatusCode::OK, &action);
            }
            // The caller's token was revoked: the wait ends now, refused.
            _ = &mut revoked => return Err(crate::http::auth::revoked(&p)),
        }
    }
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

/// The query parameters of the watch route; any other is a 400 that names it.
/// (`min_position` is taken off the query by the positions middleware before the route.)
pub const WATCH_PARAMS: [&str; 12] = [
    "after",
    "action",
    "id",
    "resource_type",
    "resource_id",
    "type",
    "user",
    "kind",
    "tenant",
    "event_type",
    "status",
    "min_position",
];

/// The filters of one watch stream: the identity filters it shares with the list, one
/// action, the operation's type, and the status the operation leaves its action in.
struct WatchFilter {
    query: ActionQuery,
    action: Option<ActionId>,
    event_types: Vec<&'static str>,
    statuses: Vec<Status>,
}

impl WatchFilter {
    fn identity_matches(&self, a: &Action) -> bool {
        self.action.is_none_or(|id| a.id == id) && watch_matches(&self.query, a)
    }
}

/// Splits a repeatable, comma-separated parameter.
fn each(v: &str) -> impl Iterator<Item = &str> {
    v.split(',').map(str::trim)
}

/// Parses the watch route's query: its own parameters here, the list's identity filters
/// (and `after`) by [`parse_list_params`]. Returns the filter, the named action (raw, to
/// be resolved in the caller's scope) and `after`.
fn parse_watch_params(
    pairs: Vec<(String, String)>,
    p: &crate::tokens::Principal,
    limit_max: usize,
) -> Result<(WatchFilter, Option<String>, Option<u64>), ApiError> {
    let mut list_pairs = Vec::new();
    let (mut action, mut event_types, mut statuses) = (None, Vec::new(), Vec::new());
    for (k, v) in pairs {
        match k.as_str() {
            "action" => {
                if action.is_some() {
                    return Err(ApiError::field("action", "may be given once"));
                }
                if v.is_empty() {
                    return Err(ApiError::field("action", "must be an action id or uid"));
                }
                action = Some(v);
            }
            "event_type" => {
                for t in each(&v) {
                    // `created` and the types of events.
                    let known = std::iter::once("created")
                        .chain(EventBody::TYPE_NAMES)
                        .find(|x| *x == t)
                        .ok_or_else(|| {
                            ApiError::field(
                                "event_type",
                                &format!(
                                    "unknown event type {t:?} (one of created, {})",
                                    EventBody::TYPE_NAMES.join(", ")
                                ),
                            )
                        })?;
                    event_types.push(known);
                }
            }
            "status" => {
                for s in each(&v) {
                    let status = Status::ALL
                        .into_iter()
                        .find(|x| x.as_str() == s)
                        .ok_or_else(|| {
                            ApiError::field(
                                "status",
                                &format!(
                                    "unknown status {s:?} (one of {})",
                                    Status::ALL.map(Status::as_str).join(", ")
                                ),
                            )
                        })?;
                    statuses.push(status);
                }
            }
            // A well-formed one never gets here (the positions middleware takes it).
            "min_position" => {
                return Err(ApiError::field(
                    "min_position",
                    "must be a log position (a non-negative integer)",
                ))
            }
            known if WATCH_PARAMS.contains(&known) => list_pairs.push((k, v)),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter {k:?}: watch accepts {}",
                    WATCH_PARAMS.join(", ")
                ))
                .with("field", k)
                .with("accepted", WATCH_PARAMS.to_vec()))
            }
        }
    }
    let params = parse_list_params(list_pairs, p, limit_max)?;
    let filter = WatchFilter {
        query: params.query,
        action: None,
        event_types,
        statuses,
    };
    Ok((filter, action, params.after))
}

/// The status an operation leaves its action in; `None` for the events that keep it
/// (`heartbeat`, `cancel_requested`).
fn status_after(op: &Op) -> Option<Status> {
    match op {
        Op::Create(new) => Some(match new.status {
            InitialStatus::Queued => Status::Queued,
            InitialStatus::Running => Status::Running,
        }),
        Op::Event { body, .. } => match body {
            // Each of these starts a queued action (docs/api.md, the event rules).
            EventBody::Started
            | EventBody::Progress(_)
            | EventBody::EventStarted { .. }
            | EventBody::EventFinished { .. } => Some(Status::Running),
            EventBody::Completed { .. } => Some(Status::Completed),
            EventBody::Failed { .. } => Some(Status::Failed),
            EventBody::Cancelled { .. } => Some(Status::Cancelled),
            EventBody::Heartbeat | EventBody::CancelRequested => None,
        },
    }
}

/// The status of action `a` just before the record at `position`, for a stream that has
/// not seen it yet: queued if it is queued now (a status never goes back), else refolded
/// from its history up to the record before.
async fn status_before(state: &AppState, a: &Action, position: u64) -> Result<Status, ApiError> {
    if a.status == Status::Queued {
        return Ok(Status::Queued);
    }
    let (id, current) = (a.id, a.status);
    state
        .read(move |st| {
            let before = st
                .ledger
                .action_as_of(
                    &*st.projection,
                    id,
                    crate::ledger::AsOf::Position(position.saturating_sub(1)),
                )
                .map_err(ApiError::internal)?;
            Ok(before.map_or(current, |b| b.status))
        })
        .await
}

#[utoipa::path(get, path = "/api/v1/watch",
    params(("after" = Option<u64>, Query, description = "resume after this position (or Last-Event-ID)"),
        ("action" = Option<String>, Query, description = "only this action (id or uid)"),
        ("id" = Option<String>, Query, description = "only these action ids (repeatable or comma-separated)"),
        ("resource_type" = Option<String>, Query), ("resource_id" = Option<String>, Query),
        ("type" = Option<String>, Query, description = "the action type"),
        ("user" = Option<String>, Query), ("kind" = Option<String>, Query),
        ("tenant" = Option<String>, Query),
        ("event_type" = Option<String>, Query, description = "only operations of these types (created, started, progress, ...)"),
        ("status" = Option<String>, Query, description = "only operations that leave their action in one of these statuses")),
    responses((status = 200, description = "text/event-stream: id = log position, data = {position, event, action}"),
        (status = 400, description = "an unknown parameter or a bad value"),
        (status = 404, description = "`action` names no action the caller may see"),
        (status = 503, description = "WATCHERS_MAX reached")))]
pub async fn watch(
    State(state): State<AppState>,
    Caller(p): Caller,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let (mut filter, action, after) = parse_watch_params(pairs, &p, state.limits.list_limit_max)?;
    if filter.query.cursor.is_some() {
        return Err(ApiError::field("cursor", "does not apply to watch"));
    }
    if let Some(action) = action {
        // Resolved in the caller's scope: another tenant's action is not found, as anywhere.
        let p2 = p.clone();
        let a = state
            .read(move |st| crate::http::load_action(st, &p2, &action))
            .await?;
        filter.action = Some(a.id);
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
        .or(after)
        .unwrap_or_else(|| state.ledger.committed_position());

    let max = state.limits.watchers_max;
    if state.watchers.fetch_add(1, Ordering::AcqRel) >= max {
        state.watchers.fetch_sub(1, Ordering::AcqRel);
        return Err(
            ApiError::unavailable(format!("WATCHERS_MAX ({max}) watch streams are open"))
                .with("limit", "WATCHERS_MAX"),
        );
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<SseEvent>(WATCH_BUFFER_EVENTS_MAX);
    let st = state.clone();
    let keepalive = Duration::from_millis(state.limits.watch_keepalive_ms.max(10));
    // Revoking the caller's token ends the stream at once, wherever the task is waiting;
    // a last `revoked` event tells the client why (when its buffer has room).
    let revoked = p.revocation.revoked();
    let revoked_tx = tx.clone();
    let stream_task = async move {
        let _guard = WatcherGuard(st.clone());
        let send = |ev: SseEvent| {
            let tx = tx.clone();
            async move {
                // Client gone, or too slow to drain its buffer: drop it; it can resume
                // from the last id it saw.
                matches!(
                    tokio::time::timeout(Duration::from_millis(WATCH_SEND_TIMEOUT_MS), tx.send(ev))
                        .await,
                    Ok(Ok(()))
                )
            }
        };
        let mut after = start;
        // The last position the client was given as an `id:` (an event or a mark).
        let mut marked = start;
        let mut last_frame = tokio::time::Instant::now();
        // Where the last read stopped: each later read starts there (O(new records)); only
        // the first one reads the segment holding `start` from its beginning.
        let mut mark = None;
        let mut commits = st.ledger.subscribe();
        let mut identities: HashMap<ActionId, Option<Arc<Action>>> = HashMap::new();
        // With a `status` filter: each matching action's status after the last operation seen.
        let mut statuses: HashMap<ActionId, Status> = HashMap::new();
        loop {
            if tx.is_closed() {
                return;
            }
            let st2 = st.clone();
            let records = match blocking(move || {
                st2.ledger
                    .read_records_from(mark, after, WATCH_READ_RECORDS_MAX)
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
            let caught_up = records.len() < WATCH_READ_RECORDS_MAX;
            if learn_identities(&st, &mut identities, &records)
                .await
                .is_err()
            {
                return;
            }
            for (rec, entry) in records {
                after = rec.position;
                for op in &entry.ops {
                    let id = op.action_id();
                    let Some(a) = identities.get(&id).and_then(|a| a.as_ref()) else {
                        continue;
                    };
                    if !filter.identity_matches(a) {
                        continue;
                    }
                    if !filter.statuses.is_empty() {
                        let status = match status_after(op) {
                            Some(s) => s,
                            None => match statuses.get(&id) {
                                Some(s) => *s,
                                None => match status_before(&st, a, rec.position).await {
                                    Ok(s) => s,
                                    Err(_) => return,
                                },
                            },
                        };
                        if statuses.len() >= WATCH_IDENTITIES_MAX {
                            statuses.clear(); // bounded; a forgotten one is refolded
                        }
                        statuses.insert(id, status);
                        if !filter.statuses.contains(&status) {
                            continue;
                        }
                    }
                    let event = op_json(op);
                    let event_type = event["type"].as_str().unwrap_or("event").to_string();
                    if !filter.event_types.is_empty()
                        && !filter.event_types.contains(&event_type.as_str())
                    {
                        continue;
                    }
                    let data = serde_json::json!({
                        "position": rec.position,
                        "recorded_at": rfc3339(entry.recorded_at),
                        "event": event,
                        "action": {"id": a.id, "uid": a.uid, "tenant": a.tenant,
                                   "type": a.action_type, "resource": ResourceJson::from(&a.resource)},
                    });
                    let ev = SseEvent::default()
                        .id(rec.position.to_string())
                        .event(event_type)
                        .data(data.to_string());
                    if !send(ev).await {
                        return;
                    }
                    marked = rec.position;
                    last_frame = tokio::time::Instant::now();
                }
            }
            if caught_up {
                // Records passed that matched nothing: once a keep-alive interval has gone
                // by without a frame, an `id:`-only frame (no data: no event for the
                // client) moves the client's Last-Event-ID past them, so a resume does not
                // read them again.
                let mark_due = (after > marked).then_some(last_frame + keepalive);
                tokio::select! {
                    changed = commits.changed() => if changed.is_err() { return },
                    () = tokio::time::sleep_until(mark_due.unwrap_or(last_frame)), if mark_due.is_some() => {
                        if !send(SseEvent::default().id(after.to_string())).await {
                            return;
                        }
                        marked = after;
                        last_frame = tokio::time::Instant::now();
                    }
                    // The client went away while nothing was committed: give its place
                    // under WATCHERS_MAX back now, not at the next commit.
                    _ = tx.closed() => return,
                    _ = crate::http::shutting_down(st.shutdown.clone()) => return,
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
        .keep_alive(KeepAlive::new().interval(keepalive))
        .into_response())
}

/// Makes `identities` hold every action the operations of `records` touch (`None`: not
/// found). From the snapshot memo when it has them, here on the async worker; the rest in
/// one read of the store off it (a memo miss reads sled). The stream then sends the
/// records' events in order from `identities`.
async fn learn_identities(
    st: &AppState,
    identities: &mut HashMap<ActionId, Option<Arc<Action>>>,
    records: &crate::ledger::Records,
) -> Result<(), ApiError> {
    let mut touched: Vec<ActionId> = records
        .iter()
        .flat_map(|(_, entry)| entry.ops.iter().map(Op::action_id))
        .collect();
    touched.sort_unstable();
    touched.dedup();
    let unknown = touched.iter().filter(|id| !identities.contains_key(id));
    if identities.len() + unknown.count() > WATCH_IDENTITIES_MAX {
        identities.clear(); // bounded memory of identities
    }
    let mut missed = Vec::new();
    for id in touched {
        if identities.contains_key(&id) {
            continue;
        }
        // Identity fields never change, so any snapshot of the action will do.
        match st.projection.get_in_memory_scoped(&ActionRef::Id(id), None) {
            Some(a) => {
                identities.insert(id, Some(a));
            }
            None => missed.push(id),
        }
    }
    if !missed.is_empty() {
        let st = st.clone();
        let loaded = blocking(move || {
            Ok(missed
                .into_iter()
                .map(|id| {
                    (
                        id,
                        st.ledger.store().action(id).ok().flatten().map(Arc::new),
                    )
                })
                .collect::<Vec<_>>())
        })
        .await?;
        identities.extend(loaded);
    }
    Ok(())
}

use futures_util::StreamExt as _;

struct WatcherGuard(AppState);

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.0.watchers.fetch_sub(1, Ordering::AcqRel);
    }
}
