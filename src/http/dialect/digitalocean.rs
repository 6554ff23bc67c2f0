//! The DigitalOcean v2 dialect: `/v2/actions[/{id}]`, `/v2/droplets/{droplet_id}/actions[/{id}]`
//! and `POST /v2/droplets/{droplet_id}/actions`, Bearer auth.
//!
//! Translation only: `page`/`per_page` become an offset [`ActionQuery`], ids go through
//! [`super::super::load_action`], a POST becomes one exclusive `Create` for
//! [`crate::ledger::Ledger::submit`] (the core refuses it with `resource_busy` while the
//! droplet has an unfinished exclusive action, which this module shows as DO's 422).
//!
//! Decisions where the DigitalOcean documents are silent (docs/dialects.md gives each):
//! - `/v2/actions` lists every action of the caller's tenant (all tenants for admin).
//!   `resource_id` is an integer when the resource id is a decimal integer, otherwise
//!   `null` (godo decodes null as 0; pydo passes it through); `resource_type` is the
//!   action's own.
//! - Action and droplet ids in paths must be positive integers; anything else is DO's 404.
//!   `/v2/droplets/{d}/actions/{id}` is 404 unless action `id` is about droplet `d`.
//! - `started_at` is the start time, or the creation time for an action that has not
//!   started yet (DO has no queued state: "in-progress" from the moment it is initiated).
//!   Times are RFC 3339 UTC with seconds, as DO sends them.
//! - `region` is built from the action's region slug: `{name, slug, features: [], available:
//!   true, sizes: []}` with DO's display name for known slugs (the slug itself otherwise);
//!   the ledger does not know a region's features or sizes. No region → `region: null`,
//!   `region_slug: null`.
//! - `page` >= 1 and `per_page` 1..=200 (default 20); anything else is a 400 `bad_request`
//!   naming the parameter. Page links are absolute, built from the request's `Host` and
//!   `X-Forwarded-Proto` (default `http`), keep `per_page` when the request gave it, and
//!   only the meaningful ones (first/prev/next/last) appear.
//! - `POST` `{"type": T, ...}` records a running, exclusive task on `{type: "droplet", id}`
//!   with `user` = the token's name and the droplet's region (the region of the newest of
//!   its last [`REGION_LOOKBACK`] actions that names one, so a droplet created in `nyc3`
//!   keeps acting in `nyc3`); other body fields are accepted and not recorded.
//!   `Idempotency-Key` works as on the native API.
//! - "Actions cannot be queued" is the core's exclusivity: the POST is refused (422) while
//!   the droplet has an unfinished *exclusive* action of the same tenant. Every action
//!   created here is exclusive; native creators opt in with `"exclusive": true`. The same
//!   droplet id in another tenant is another droplet.

use super::super::error::ApiError;
use super::super::{with_retry_after, AppState, Body};
use crate::event::{Action, Micros, ResourceRef, Status};
use crate::projection::query::ActionQuery;
use crate::tokens::Principal;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::limits::{DO_PER_PAGE_DEFAULT, DO_PER_PAGE_MAX};
/// The resource type of droplet actions.
pub const DROPLET: &str = "droplet";
/// How many of a droplet's newest actions a POST looks through for its region.
pub const REGION_LOOKBACK: usize = 20;
/// The 422 message of a POST on a droplet with an unfinished action (docs/dialects.md).
pub const BUSY_MESSAGE: &str = "Droplet already has a pending event.";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2/actions", get(list))
        .route("/v2/actions/{id}", get(show))
        .route(
            "/v2/droplets/{droplet_id}/actions",
            get(droplet_list).post(create),
        )
        .route("/v2/droplets/{droplet_id}/actions/{id}", get(droplet_show))
}

/// The one mapping from the canonical status to DigitalOcean's (docs/dialects.md table).
pub fn status(s: Status) -> &'static str {
    match s {
        Status::Queued | Status::Running => "in-progress",
        Status::Completed => "completed",
        Status::Failed | Status::Cancelled => "errored",
    }
}

/// RFC 3339 UTC with seconds (`2014-11-14T16:34:39Z`), as DO sends its times.
fn time(micros: Micros) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// DO's display names of its region slugs; unknown slugs are shown as themselves.
const REGION_NAMES: &[(&str, &str)] = &[
    ("ams2", "Amsterdam 2"),
    ("ams3", "Amsterdam 3"),
    ("atl1", "Atlanta 1"),
    ("blr1", "Bangalore 1"),
    ("fra1", "Frankfurt 1"),
    ("lon1", "London 1"),
    ("nyc1", "New York 1"),
    ("nyc2", "New York 2"),
    ("nyc3", "New York 3"),
    ("sfo1", "San Francisco 1"),
    ("sfo2", "San Francisco 2"),
    ("sfo3", "San Francisco 3"),
    ("sgp1", "Singapore 1"),
    ("syd1", "Sydney 1"),
    ("tor1", "Toronto 1"),
];

/// DO's region object, built from a slug.
#[derive(Serialize, Debug, PartialEq)]
pub struct Region {
    pub name: String,
    pub slug: String,
    pub features: Vec<String>,
    pub available: bool,
    pub sizes: Vec<String>,
}

fn region(slug: &str) -> Region {
    let name = REGION_NAMES
        .iter()
        .find(|(s, _)| *s == slug)
        .map_or(slug, |(_, n)| n);
    Region {
        name: name.to_string(),
        slug: slug.to_string(),
        features: Vec::new(),
        available: true,
        sizes: Vec::new(),
    }
}

/// A DigitalOcean action.
#[derive(Serialize, Debug)]
pub struct DoAction {
    pub id: u64,
    pub status: &'static str,
    #[serde(rename = "type")]
    pub action_type: String,
    pub started_at: String,
    pub completed_at: Option<String>,
    pub resource_id: Option<u64>,
    pub resource_type: String,
    pub region: Option<Region>,
    pub region_slug: Option<String>,
}

impl From<&Action> for DoAction {
    fn from(a: &Action) -> Self {
        DoAction {
            id: a.id,
            status: status(a.status),
            action_type: a.action_type.clone(),
            started_at: time(a.started_at.unwrap_or(a.created_at)),
            completed_at: a.completed_at.map(time),
            resource_id: integer_id(&a.resource.id),
            resource_type: a.resource.resource_type.clone(),
            region: a.region.as_deref().map(region),
            region_slug: a.region.clone(),
        }
    }
}

/// A positive decimal integer without sign or leading zeros, as DO ids are.
fn integer_id(s: &str) -> Option<u64> {
    let canonical = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && !s.starts_with('0');
    canonical.then(|| s.parse().ok()).flatten()
}

/// DO's error: `{"id": "not_found", "message": "..."}`.
#[derive(Debug)]
pub struct DoError {
    pub status: StatusCode,
    pub id: &'static str,
    pub message: String,
}

impl DoError {
    fn new(status: StatusCode, id: &'static str, message: impl Into<String>) -> DoError {
        DoError {
            status,
            id,
            message: message.into(),
        }
    }

    fn not_found() -> DoError {
        DoError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "The resource you requested could not be found.",
        )
    }

    fn bad_request(message: impl Into<String>) -> DoError {
        DoError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl IntoResponse for DoError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"id": self.id, "message": self.message})),
        )
            .into_response()
    }
}

/// Every core answer mapped once to DO's ids; `resource_busy` is DO's 422.
impl From<ApiError> for DoError {
    fn from(e: ApiError) -> DoError {
        match (e.status, e.code) {
            (_, "resource_busy") => DoError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unprocessable_entity",
                BUSY_MESSAGE,
            ),
            (StatusCode::NOT_FOUND, _) => DoError::not_found(),
            (StatusCode::UNAUTHORIZED, _) => unauthorized(),
            (StatusCode::FORBIDDEN, _) => forbidden(),
            (StatusCode::UNPROCESSABLE_ENTITY, _) => {
                DoError::new(e.status, "unprocessable_entity", e.message)
            }
            (StatusCode::CONFLICT, _) => DoError::new(e.status, "conflict", e.message),
            (StatusCode::PAYLOAD_TOO_LARGE, _) => {
                DoError::new(e.status, "request_entity_too_large", e.message)
            }
            (StatusCode::TOO_MANY_REQUESTS, _) => {
                DoError::new(e.status, "too_many_requests", "API Rate limit exceeded.")
            }
            (StatusCode::SERVICE_UNAVAILABLE, _) => {
                DoError::new(e.status, "service_unavailable", e.message)
            }
            (s, _) if s.is_server_error() => DoError::new(
                e.status,
                "server_error",
                "Server was unable to give you a response.",
            ),
            (s, _) if s.is_client_error() => DoError::new(e.status, "bad_request", e.message),
            _ => DoError::new(e.status, "server_error", e.message),
        }
    }
}

fn unauthorized() -> DoError {
    DoError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "Unable to authenticate you.",
    )
}

fn forbidden() -> DoError {
    DoError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        "You do not have access for the attempted action.",
    )
}

/// The caller, from `Authorization: Bearer` (or any header form docs/api.md lists).
fn caller(headers: &HeaderMap, state: &AppState) -> Result<Principal, DoError> {
    use super::super::auth::AuthFailure;
    super::super::auth::authenticate(headers, &state.tokens).map_err(|f| match f {
        AuthFailure::Unavailable => DoError::new(f.status(), "service_unavailable", f.message()),
        AuthFailure::Expired { .. } => DoError::new(f.status(), "unauthorized", f.message()),
        _ => unauthorized(),
    })
}

/// A droplet or action id of a path: a positive integer, or DO's 404.
fn path_id(s: &str) -> Result<u64, DoError> {
    s.parse::<u64>()
        .ok()
        .filter(|n| *n > 0 && !s.starts_with('+'))
        .ok_or_else(DoError::not_found)
}

/// The paging of one list request.
struct Paging {
    page: u64,
    per_page: u64,
    /// Whether the request named `per_page` (links then repeat it).
    explicit_per_page: bool,
}

fn paging(pairs: &[(String, String)]) -> Result<Paging, DoError> {
    let mut p = Paging {
        page: 1,
        per_page: DO_PER_PAGE_DEFAULT,
        explicit_per_page: false,
    };
    for (k, v) in pairs {
        match k.as_str() {
            "page" => {
                p.page = v
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| {
                        DoError::bad_request(format!(
                            "page must be an integer of at least 1, got {v:?}"
                        ))
                    })?;
            }
            "per_page" => {
                p.per_page = v
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| (1..=DO_PER_PAGE_MAX).contains(n))
                    .ok_or_else(|| {
                        DoError::bad_request(format!(
                            "per_page must be an integer from 1 to {DO_PER_PAGE_MAX}, got {v:?}"
                        ))
                    })?;
                p.explicit_per_page = true;
            }
            _ => {} // unknown parameters are ignored (docs/dialects.md)
        }
    }
    Ok(p)
}

/// `scheme://host` of the request: `X-Forwarded-Proto` or `http`, and the `Host` header.
fn base_url(headers: &HeaderMap) -> String {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(',').next().unwrap_or("").trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let scheme = match header("x-forwarded-proto").as_deref() {
        Some("https") => "https",
        _ => "http",
    };
    let host = header("host").unwrap_or_else(|| "localhost".into());
    format!("{scheme}://{host}")
}

/// `links.pages` with only the meaningful links.
fn page_links(url: &str, p: &Paging, total: u64) -> Map<String, Value> {
    let last = total.div_ceil(p.per_page);
    let link = |page: u64| {
        if p.explicit_per_page {
            Value::String(format!("{url}?page={page}&per_page={}", p.per_page))
        } else {
            Value::String(format!("{url}?page={page}"))
        }
    };
    let mut pages = Map::new();
    if p.page > 1 {
        pages.insert("first".into(), link(1));
        pages.insert("prev".into(), link((p.page - 1).min(last.max(1))));
    }
    if p.page < last {
        pages.insert("next".into(), link(p.page + 1));
        pages.insert("last".into(), link(last));
    }
    pages
}

async fn list_page(
    state: &AppState,
    headers: &HeaderMap,
    p: &Principal,
    path: &str,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    resource: Option<ResourceRef>,
) -> Result<Response, DoError> {
    let Query(pairs) = query.map_err(|e| DoError::bad_request(format!("bad query string: {e}")))?;
    let paging = paging(&pairs)?;
    let offset = (paging.page - 1)
        .checked_mul(paging.per_page)
        .ok_or_else(|| DoError::bad_request("page is too large"))?;
    let q = ActionQuery {
        tenant: p.scope().map(str::to_string),
        resource,
        limit: paging.per_page as usize,
        offset,
        ..Default::default()
    };
    let page = super::list(state, q).await?;
    let actions: Vec<DoAction> = page.actions.iter().map(|a| DoAction::from(&**a)).collect();
    let url = format!("{}{path}", base_url(headers));
    Ok(Json(json!({
        "actions": actions,
        "links": {"pages": page_links(&url, &paging, page.total)},
        "meta": {"total": page.total},
    }))
    .into_response())
}

fn droplet(id: u64) -> ResourceRef {
    ResourceRef {
        resource_type: DROPLET.into(),
        id: id.to_string(),
    }
}

async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, DoError> {
    let p = caller(&headers, &state)?;
    list_page(&state, &headers, &p, "/v2/actions", query, None).await
}

async fn droplet_list(
    State(state): State<AppState>,
    headers: HeaderMap,
    droplet_id: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, DoError> {
    let p = caller(&headers, &state)?;
    let Path(droplet_id) = droplet_id.map_err(|_| DoError::not_found())?;
    let d = path_id(&droplet_id)?;
    let path = format!("/v2/droplets/{d}/actions");
    list_page(&state, &headers, &p, &path, query, Some(droplet(d))).await
}

/// One action the caller may see, optionally required to be about `resource`.
async fn one(
    state: &AppState,
    p: Principal,
    id: u64,
    resource: Option<ResourceRef>,
) -> Result<Response, DoError> {
    let a = super::one(state, &p, &id.to_string()).await?;
    if let Some(r) = resource {
        if a.resource != r && !a.related.contains(&r) {
            return Err(DoError::not_found());
        }
    }
    Ok(with_retry_after(
        &a,
        Json(json!({"action": DoAction::from(&a)})).into_response(),
    ))
}

async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, DoError> {
    let p = caller(&headers, &state)?;
    let Path(id) = id.map_err(|_| DoError::not_found())?;
    one(&state, p, path_id(&id)?, None).await
}

async fn droplet_show(
    State(state): State<AppState>,
    headers: HeaderMap,
    ids: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, DoError> {
    let p = caller(&headers, &state)?;
    let Path((droplet_id, id)) = ids.map_err(|_| DoError::not_found())?;
    let d = path_id(&droplet_id)?;
    one(&state, p, path_id(&id)?, Some(droplet(d))).await
}

/// The droplet's region: the newest of its last [`REGION_LOOKBACK`] actions that names one.
async fn droplet_region(state: &AppState, tenant: &str, d: u64) -> Result<Option<String>, DoError> {
    let q = ActionQuery {
        tenant: Some(tenant.to_string()),
        resource: Some(droplet(d)),
        limit: REGION_LOOKBACK,
        ..Default::default()
    };
    let page = super::list(state, q).await?;
    Ok(page.actions.iter().find_map(|a| a.region.clone()))
}

async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    droplet_id: Result<Path<String>, PathRejection>,
    body: Result<Body, ApiError>,
) -> Result<Response, DoError> {
    let p = caller(&headers, &state)?;
    let Path(droplet_id) = droplet_id.map_err(|_| DoError::not_found())?;
    let d = path_id(&droplet_id)?;
    super::require_writer(&p)?;
    let Body(body) = body?;
    let region = droplet_region(&state, &p.tenant, d).await?;
    let route = format!("POST /v2/droplets/{d}/actions");
    let a = super::record_task(&state, &headers, &p, &route, &body, droplet(d), |c| {
        c.exclusive = true;
        c.region = region;
    })
    .await?;
    Ok(with_retry_after(
        &a,
        (
            StatusCode::CREATED,
            Json(json!({"action": DoAction::from(&a)})),
        )
            .into_response(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paging(page: u64, per_page: u64, explicit: bool) -> Paging {
        Paging {
            page,
            per_page,
            explicit_per_page: explicit,
        }
    }

    #[test]
    fn page_links_show_only_the_meaningful_ones() {
        let url = "http://h/v2/actions";
        assert!(page_links(url, &paging(1, 20, false), 0).is_empty());
        assert!(page_links(url, &paging(1, 20, false), 20).is_empty());
        let first = page_links(url, &paging(1, 2, true), 5);
        assert_eq!(first.keys().collect::<Vec<_>>(), ["last", "next"]);
        assert_eq!(first["last"], "http://h/v2/actions?page=3&per_page=2");
        let middle = page_links(url, &paging(2, 2, false), 5);
        assert_eq!(middle.len(), 4);
        assert_eq!(middle["prev"], "http://h/v2/actions?page=1");
        let beyond = page_links(url, &paging(9, 2, false), 5);
        assert_eq!(beyond.keys().collect::<Vec<_>>(), ["first", "prev"]);
        assert_eq!(beyond["prev"], "http://h/v2/actions?page=3");
    }

    #[test]
    fn only_canonical_positive_integers_are_do_ids() {
        assert_eq!(integer_id("3164450"), Some(3164450));
        for s in ["", "0", "012", "ec200285", "-1", "+1", "1.5"] {
            assert_eq!(integer_id(s), None, "{s}");
        }
    }
}
