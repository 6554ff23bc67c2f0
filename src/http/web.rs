//! What browsers and thin links need around both listeners' routers: compression of the
//! answers a client asks to have compressed, and CORS for the origins the operator names.
//!
//! - **Compression** (tower-http): gzip, br or zstd, as `Accept-Encoding` prefers. Never
//!   `text/event-stream` (a watch stream's frames would wait in the encoder's buffer), never
//!   a body under 32 bytes, never an image or gRPC: tower-http's default predicate, which
//!   [`compression`] keeps.
//! - **CORS** (`cors_origins`; off when empty): a request whose `Origin` is one of the named
//!   origins goes through tower-http's `CorsLayer` (a preflight is answered there, before
//!   authentication: it carries no token); any other request passes by it untouched, so an
//!   unlisted origin gets no CORS header and an `OPTIONS` without a listed origin is the
//!   route's own answer. Credentials mode is not allowed (tokens travel in
//!   `Authorization`, which needs no cookies).

use super::{AppState, HttpLimits};
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::sync::Arc;
use std::time::Duration;
use tower::{Layer, ServiceExt};
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// `router` with compression and, when origins are named, CORS around it (outermost: a
/// preflight is answered before anything else looks at it).
pub fn around(router: Router<AppState>, limits: &HttpLimits) -> Router<AppState> {
    let router = router.layer(compression());
    match Cors::new(&limits.cors_origins) {
        Some(c) => router.layer(axum::middleware::from_fn_with_state(c, cors)),
        None => router,
    }
}

/// The compression of answers (see the module's documentation).
pub fn compression() -> CompressionLayer {
    // The default predicate: not for SSE, images, gRPC or bodies under 32 bytes.
    CompressionLayer::new()
}

/// The request headers a browser may send cross-origin.
pub const CORS_ALLOW_HEADERS: [&str; 8] = [
    "authorization",
    "content-type",
    "idempotency-key",
    "x-request-id",
    "x-ledger-min-position",
    "last-event-id",
    "x-auth-token",
    "x-apitoken",
];

/// The answer headers a cross-origin script may read.
pub const CORS_EXPOSE_HEADERS: [&str; 4] = [
    "x-ledger-position",
    "x-request-id",
    "location",
    "retry-after",
];

/// How long a browser may cache a preflight's answer, in seconds.
pub const CORS_MAX_AGE_S: u64 = 600;

/// The CORS policy of a server: its named origins and the layer that answers them.
#[derive(Clone)]
pub struct Cors {
    origins: Arc<[HeaderValue]>,
    layer: CorsLayer,
}

impl Cors {
    /// `None` when `origins` is empty (CORS off). The origins are already validated
    /// ([`check_origin`]).
    pub fn new(origins: &[String]) -> Option<Cors> {
        if origins.is_empty() {
            return None;
        }
        let origins: Arc<[HeaderValue]> = origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        let layer = CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins.iter().cloned()))
            .allow_methods([
                Method::GET,
                Method::HEAD,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers(CORS_ALLOW_HEADERS.map(HeaderName::from_static))
            .expose_headers(CORS_EXPOSE_HEADERS.map(HeaderName::from_static))
            .max_age(Duration::from_secs(CORS_MAX_AGE_S));
        Some(Cors { origins, layer })
    }
}

/// The CORS middleware: a listed `Origin` through the `CorsLayer`, anything else past it
/// (with `Vary: Origin`, as the answer depends on it).
pub async fn cors(State(cors): State<Cors>, req: Request, next: Next) -> Response {
    let listed = req
        .headers()
        .get(header::ORIGIN)
        .is_some_and(|o| cors.origins.contains(o));
    if !listed {
        let mut resp = next.run(req).await;
        resp.headers_mut()
            .append(header::VARY, HeaderValue::from_static("origin"));
        return resp;
    }
    let mut next = Some(next);
    let inner = tower::service_fn(move |req: Request| {
        let next = next.take();
        async move {
            Ok::<_, std::convert::Infallible>(match next {
                Some(next) => next.run(req).await,
                None => axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            })
        }
    });
    match cors.layer.layer(inner).oneshot(req).await {
        Ok(resp) => resp.into_response(),
        Err(never) => match never {},
    }
}

/// Checks one configured origin: `scheme://host[:port]` with scheme http or https, nothing
/// after the authority, no user info, no wildcard. Returns it as browsers send it (scheme
/// and host in lower case).
pub fn check_origin(origin: &str) -> Result<String, String> {
    let o = origin.trim();
    let bad = |why: &str| {
        Err(format!(
            "{o:?} is not an origin ({why}); an origin is scheme://host[:port], such as https://console.example.com"
        ))
    };
    if o == "*" || o.contains('*') {
        return bad("a wildcard is not accepted: name each origin");
    }
    let Some((scheme, rest)) = o.split_once("://") else {
        return bad("no scheme");
    };
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return bad("the scheme must be http or https");
    }
    if rest.is_empty() {
        return bad("no host");
    }
    if rest.contains(['/', '?', '#']) {
        return bad("it has a path, query or fragment");
    }
    if rest.contains('@') {
        return bad("it has user info");
    }
    let uri: axum::http::Uri = format!("{scheme}://{rest}")
        .parse()
        .map_err(|_| format!("{o:?} is not an origin (not a valid URL authority)"))?;
    let Some(auth) = uri.authority() else {
        return bad("no host");
    };
    if auth.host().is_empty() {
        return bad("no host");
    }
    let normal = format!("{scheme}://{}", auth.as_str().to_ascii_lowercase());
    HeaderValue::from_str(&normal).map_err(|_| format!("{o:?} is not an origin"))?;
    Ok(normal)
}

#[cfg(test)]
mod tests {
    use super::check_origin;

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        for ok in [
            "https://console.example.com",
            "http://localhost:3000",
            "HTTPS://Console.Example.com:8443",
            "http://[::1]:8080",
        ] {
            assert!(check_origin(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            check_origin("HTTPS://Console.Example.com").unwrap(),
            "https://console.example.com"
        );
        for bad in [
            "*",
            "https://*.example.com",
            "console.example.com",
            "ftp://example.com",
            "https://",
            "https://example.com/",
            "https://example.com/app",
            "https://example.com?x=1",
            "https://user@example.com",
            "https://exa mple.com",
        ] {
            assert!(check_origin(bad).is_err(), "{bad}");
        }
    }
}
