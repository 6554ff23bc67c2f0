//! The HTTP side of positions and cluster mode, one middleware around the main router:
//!
//! - **`X-Ledger-Position`** on every answer: the position this node has applied when it
//!   answered (a forwarded write keeps the leader's).
//! - **`min_position`** (query parameter, or the `X-Ledger-Min-Position` header) on a read:
//!   the read waits until this node has applied that position, at most
//!   [`MIN_POSITION_WAIT_MS`], then answers 503 `position_not_reached`. So a client reads its
//!   own write on any node by passing the position its write was answered with.
//! - **Forwarding** (cluster mode): a follower sends every request that is not a read (any
//!   method but GET, HEAD and OPTIONS, and not a token change: tokens live in the cluster's
//!   token table, which every node writes itself) to the leader's advertise URL and relays
//!   the answer (the console's sign-in and sign-out, which write nothing, stay here) — headers, `Authorization`, `Idempotency-Key`, `X-Request-Id` and
//!   `traceparent` included (the request id and trace context [`super::access`] settled,
//!   generated ones too, so both nodes log the same ids), never a redirect. With no
//!   leader known it answers 503 `no_leader` with `Retry-After`. A forwarded request carries
//!   [`FORWARDED_BY`] and is never forwarded again.
//! - **A failed node** (its replica stopped, or a local storage failure poisoned its writer:
//!   [`ClusterNode::failed`]) answers every write 503 `node_failed`, and `/readyz` 503.

use super::error::ApiError;
use super::AppState;
use crate::cluster::{ClusterNode, Role};
use crate::limits::MIN_POSITION_WAIT_MS;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The answering node's applied position.
pub const POSITION: HeaderName = HeaderName::from_static("x-ledger-position");
/// The header form of `min_position`.
pub const MIN_POSITION: HeaderName = HeaderName::from_static("x-ledger-min-position");
/// Set on a request a follower forwards (its value: the follower's node id).
pub const FORWARDED_BY: HeaderName = HeaderName::from_static("x-ledger-forwarded-by");

/// Cluster mode's part of the HTTP state.
pub struct ClusterFace {
    pub node: ClusterNode,
    client: Client<HttpConnector, Body>,
    /// Requests this node forwarded to the leader.
    pub forwarded: AtomicU64,
}

impl ClusterFace {
    pub fn new(node: ClusterNode) -> Arc<ClusterFace> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_millis(
            crate::limits::CLUSTER_CONNECT_TIMEOUT_MS,
        )));
        let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
        Arc::new(ClusterFace {
            node,
            client,
            forwarded: AtomicU64::new(0),
        })
    }
}

/// The middleware (see the module's documentation).
pub async fn positions(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let wanted = match take_min_position(&mut req) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    // Token changes go to the cluster's token table from any node: never forwarded.
    // Neither do the console's sign-in and sign-out: they only set or clear a cookie.
    let is_read = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        || req.uri().path().starts_with("/api/v1/tokens")
        || super::console::writes_nothing(req.uri().path());
    if let Some(face) = &state.cluster {
        if !is_read && face.node.failed() {
            return node_failed().into_response();
        }
        let role = face.node.role().borrow().clone();
        if let (false, Role::Follower { leader, .. }) = (is_read, role) {
            return forward(&state, face, leader, req)
                .await
                .unwrap_or_else(IntoResponse::into_response);
        }
    }
    if let Some(p) = wanted {
        if let Err(e) = wait_for(&state, p).await {
            return e.into_response();
        }
    }
    let mut response = next.run(req).await;
    response
        .headers_mut()
        .entry(POSITION)
        .or_insert_with(|| HeaderValue::from(state.ledger.committed_position()));
    response
}

/// Reads `min_position` from the query (removing it, so routes never see it) or the header.
fn take_min_position(req: &mut Request) -> Result<Option<u64>, ApiError> {
    let bad = |v: &str| {
        ApiError::bad_request(format!(
            "min_position must be a log position (a non-negative integer), got {v:?}"
        ))
        .with("field", "min_position")
    };
    let mut found = None;
    if let Some(query) = req.uri().query() {
        let mut kept = Vec::new();
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("min_position", v)) => found = Some(v.parse::<u64>().map_err(|_| bad(v))?),
                _ => kept.push(pair),
            }
        }
        if found.is_some() {
            let path = req.uri().path();
            let pq = if kept.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{}", kept.join("&"))
            };
            let mut parts = req.uri().clone().into_parts();
            parts.path_and_query = Some(pq.parse().map_err(|_| bad(query))?);
            *req.uri_mut() = Uri::from_parts(parts).map_err(|_| bad(query))?;
        }
    }
    if found.is_none() {
        if let Some(v) = req.headers().get(MIN_POSITION) {
            let v = v.to_str().unwrap_or("");
            found = Some(v.trim().parse::<u64>().map_err(|_| bad(v))?);
        }
    }
    Ok(found)
}

/// Waits (bounded) until this node has applied `position`.
async fn wait_for(state: &AppState, position: u64) -> Result<(), ApiError> {
    let mut committed = state.ledger.subscribe();
    let reached = tokio::time::timeout(
        Duration::from_millis(MIN_POSITION_WAIT_MS),
        committed.wait_for(|p| *p >= position),
    )
    .await;
    match reached {
        Ok(Ok(_)) => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "position_not_reached",
            format!(
                "this node has applied position {}, not yet {position}, after MIN_POSITION_WAIT_MS ({MIN_POSITION_WAIT_MS} ms); retry, or read from the leader",
                state.ledger.committed_position()
            ),
        )
        .with("min_position", position)
        .with("applied_position", state.ledger.committed_position())),
    }
}

/// Sends `req` to the leader and relays its answer.
async fn forward(
    state: &AppState,
    face: &ClusterFace,
    leader: Option<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    if req.headers().contains_key(FORWARDED_BY) {
        // The sender believed this node leads; it does not (any more): never bounce.
        return Err(no_leader(
            "this node is not the leader (the request was already forwarded once); retry",
        ));
    }
    let Some((leader_id, url)) = leader.filter(|(_, url)| !url.is_empty()) else {
        return Err(no_leader(
            "no leader is known right now (an election is under way); retry",
        ));
    };
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    parts.uri = format!("{url}{path}")
        .parse::<Uri>()
        .map_err(|_| no_leader(format!("the leader {leader_id} advertises an unusable URL")))?;
    for h in HOP_BY_HOP {
        parts.headers.remove(*h);
    }
    parts.headers.remove(axum::http::header::HOST);
    if let Ok(v) = HeaderValue::from_str(&face.node.options().node_id) {
        parts.headers.insert(FORWARDED_BY, v);
    }
    face.forwarded.fetch_add(1, Ordering::Relaxed);
    let timeout = Duration::from_millis(state.limits.request_timeout_ms);
    let sent = tokio::time::timeout(
        timeout,
        face.client.request(Request::from_parts(parts, body)),
    );
    match sent.await {
        Ok(Ok(answer)) => {
            let (mut parts, body) = answer.into_parts();
            for h in HOP_BY_HOP {
                parts.headers.remove(*h);
            }
            Ok(Response::from_parts(parts, Body::new(body)))
        }
        Ok(Err(e)) if e.is_connect() => Err(no_leader(format!(
            "cannot reach the leader {leader_id} at {url}; nothing was sent; retry"
        ))),
        Ok(Err(e)) => Err(unknown(&leader_id, &e.to_string())),
        Err(_) => Err(unknown(&leader_id, "no answer within the request timeout")),
    }
}

/// 503 `node_failed`: this node's local replica or log failed (see its log); it neither
/// writes nor forwards (its view of the leader is no longer kept up to date).
fn node_failed() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "node_failed",
        "this node failed for good (its local log or replica could not be written, or its replica diverged: see its log); it is not ready and takes no writes; send them to another node, and restart this one once its disk is fixed",
    )
}

/// 503 `no_leader`: nothing was sent to a leader; retrying is safe.
fn no_leader(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_leader", message)
}

/// 503 for a forwarded write whose answer was lost on the way back.
fn unknown(leader: &str, why: &str) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "outcome_unknown",
        format!(
            "the request was forwarded to the leader {leader} but its answer was lost ({why}); retry with the same Idempotency-Key to settle it"
        ),
    )
}

/// Headers that belong to one connection, not to the request or answer.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];
