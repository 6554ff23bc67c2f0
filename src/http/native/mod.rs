//! The native API, `/api/v1`, exactly as docs/api.md describes it: its routes and what
//! every route shares (roles, `Idempotency-Key`, submitting, rendering one action, list
//! parameters). The handlers live in one room per concern:
//!
//! - [`actions`]: create, events, cancel, batch, get, history, list, histogram.
//! - [`watch`]: the watch stream (SSE) and the wait for one action.
//! - [`tokens`]: token management.
//! - [`log`]: pages of the raw log.
//!
//! Handlers parse and authorize, build core commands and queries, and render. Every store
//! or log read runs off the async workers: one action or one page on the read pool
//! ([`super::reads`]), scans and the log on `spawn_blocking` ([`super::blocking`]); every
//! write goes through
//! [`crate::ledger::Ledger::submit`], which answers after fdatasync.

pub mod actions;
pub mod log;
pub mod tokens;
pub mod watch;

pub use self::actions::*;
pub use self::log::*;
pub use self::tokens::*;
pub use self::watch::*;

use super::error::ApiError;
use super::wire::*;
use super::{with_retry_after, AppState, IDEMPOTENCY_KEY_BYTES_MAX};
use crate::event::*;
use crate::ledger::Committed;
use crate::projection::query::ActionQuery;
use crate::tokens::{Principal, Role};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use sha2::{Digest, Sha256};

/// Routes that answer promptly (they run under the request timeout).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/actions", post(create).get(list))
        .route("/api/v1/actions/{id}", get(get_action))
        .route("/api/v1/actions/{id}/events", post(record_event))
        .route("/api/v1/actions/{id}/cancel", post(cancel))
        .route("/api/v1/actions/{id}/history", get(history))
        .route("/api/v1/histogram", get(histogram))
        .route("/api/v1/batch", post(batch))
        .route("/api/v1/log", get(log_page))
        .route("/api/v1/tokens", post(create_token).get(list_tokens))
        .route("/api/v1/tokens/{name}", delete(revoke_token))
        .route("/api/v1/tokens/{name}/rotate", post(rotate_token))
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
        let (tenant, key) = (stamp.tenant.clone(), stamp.key.clone());
        let stored = state
            .read(move |st| {
                use crate::ledger::StateStore;
                st.projection
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

/// Query parameters of the list and watch routes, parsed by hand so `status` and `id` can
/// repeat. Unknown parameters are ignored.
pub struct ListParams {
    pub query: ActionQuery,
    pub after: Option<u64>,
}

pub(crate) fn parse_list_params(
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
