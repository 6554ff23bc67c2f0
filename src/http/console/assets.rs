//! The console's two static files, embedded in the binary (`include_str!`): no Node, no npm,
//! no files beside the binary. Pages link them as `/console/assets/<name>?v=<hash>`, where
//! the hash is of their content, so browsers may keep them for
//! [`CONSOLE_ASSET_MAX_AGE_S`]; an `ETag` (the same hash) answers revalidation with 304.
//! They need no sign-in: they hold nothing of the ledger.

use crate::limits::CONSOLE_ASSET_MAX_AGE_S;
use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

/// The stylesheet.
pub const CSS: &str = include_str!("assets/console.css");
/// The script: plain JS, no build step.
pub const JS: &str = include_str!("assets/console.js");

/// One embedded file and its content hash.
struct Asset {
    name: &'static str,
    body: &'static str,
    content_type: &'static str,
    /// The first 8 bytes of SHA-256 of the body, in hex.
    hash: String,
}

fn assets() -> &'static [Asset; 2] {
    static ASSETS: OnceLock<[Asset; 2]> = OnceLock::new();
    ASSETS.get_or_init(|| {
        let hash = |body: &str| {
            Sha256::digest(body.as_bytes())[..8]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        [
            Asset {
                name: "console.css",
                body: CSS,
                content_type: "text/css; charset=utf-8",
                hash: hash(CSS),
            },
            Asset {
                name: "console.js",
                body: JS,
                content_type: "text/javascript; charset=utf-8",
                hash: hash(JS),
            },
        ]
    })
}

/// The URL pages link `name` at (with its content hash).
pub fn url(name: &str) -> String {
    let hash = assets()
        .iter()
        .find(|a| a.name == name)
        .map_or("", |a| a.hash.as_str());
    format!("/console/assets/{name}?v={hash}")
}

/// `GET /console/assets/{name}`.
pub async fn serve(Path(name): Path<String>, headers: HeaderMap) -> Response {
    let Some(asset) = assets().iter().find(|a| a.name == name) else {
        return super::pages::error_page(StatusCode::NOT_FOUND, "no such console file");
    };
    let etag = format!("\"{}\"", asset.hash);
    let cache = format!("public, max-age={CONSOLE_ASSET_MAX_AGE_S}, immutable");
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&cache) {
        h.insert(header::CACHE_CONTROL, v);
    }
    resp
}
