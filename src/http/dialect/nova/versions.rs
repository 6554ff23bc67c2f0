//! Nova's version documents (Nova's `doc/api_samples/versions`): `GET /` (the major
//! versions), `GET /v2.1[/]` and `GET /v2[/]`, answered without a token (docs/api.md,
//! "Roles and tenants"), and `GET /v2.1/{project_id}[/]`, the v2.1 document behind the
//! token. Links are absolute, built from the request's `Host` and `X-Forwarded-Proto`
//! ([`base_url`], which also builds the list's `next` link). See docs/dialects.md
//! "OpenStack Nova".

use super::microversion::{stamp, MAX_VERSION, MIN_VERSION};
use super::{context, Fault};
use crate::http::AppState;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// `updated` of the version documents: Nova's fixed values.
const UPDATED_V21: &str = "2013-07-23T11:33:21Z";
const UPDATED_V20: &str = "2011-01-21T11:33:21Z";

/// `http(s)://host` of the request, for absolute links.
pub(super) fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or("localhost");
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    format!("{}://{host}", if https { "https" } else { "http" })
}

fn v21_doc(base: &str) -> Value {
    json!({
        "id": "v2.1",
        "status": "CURRENT",
        "version": MAX_VERSION.to_string(),
        "min_version": MIN_VERSION.to_string(),
        "updated": UPDATED_V21,
        "links": [
            {"rel": "self", "href": format!("{base}/v2.1/")},
            {"rel": "describedby", "type": "text/html", "href": "http://docs.openstack.org/"}
        ],
        "media-types": [
            {"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2.1"}
        ]
    })
}

fn v20_doc(base: &str) -> Value {
    json!({
        "id": "v2.0",
        "status": "SUPPORTED",
        "version": "",
        "min_version": "",
        "updated": UPDATED_V20,
        "links": [
            {"rel": "self", "href": format!("{base}/v2/")},
            {"rel": "describedby", "type": "text/html", "href": "http://docs.openstack.org/"}
        ],
        "media-types": [
            {"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2"}
        ]
    })
}

/// `GET /`: the major versions (Nova's `versions-get-resp.json`: only the self link).
pub(super) async fn versions(headers: HeaderMap) -> Response {
    let base = base_url(&headers);
    let entry = |doc: Value| {
        json!({
            "id": doc["id"], "status": doc["status"], "version": doc["version"],
            "min_version": doc["min_version"], "updated": doc["updated"],
            "links": [doc["links"][0].clone()],
        })
    };
    let body = json!({"versions": [entry(v20_doc(&base)), entry(v21_doc(&base))]});
    stamp(Json(body).into_response(), None)
}

pub(super) async fn version_v21(headers: HeaderMap) -> Response {
    stamp(
        Json(json!({"version": v21_doc(&base_url(&headers))})).into_response(),
        None,
    )
}

/// `GET /v2.1/{project_id}[/]`: the same document behind the token (Nova routes the
/// project-scoped root to its version `show`; novaclient's discovery of a project-scoped
/// endpoint asks for it first).
pub(super) async fn version_v21_scoped(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(project_id): Path<String>,
) -> Result<Response, Fault> {
    let ctx = context(&state, &headers, Some(&project_id))?;
    Ok(stamp(
        Json(json!({"version": v21_doc(&base_url(&headers))})).into_response(),
        Some(ctx.version),
    ))
}

pub(super) async fn version_v20(headers: HeaderMap) -> Response {
    stamp(
        Json(json!({"version": v20_doc(&base_url(&headers))})).into_response(),
        None,
    )
}
