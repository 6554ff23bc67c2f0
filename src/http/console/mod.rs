//! The web console at `/console`: server-rendered pages (maud) over the very queries and
//! commands the native API runs, plus one CSS and one plain-JS file embedded in the binary.
//! Nothing here touches the log or the projection another way: lists go through the
//! projection's list query, an action through [`super::load_action`], its past through the
//! ledger's history and as-of reads, a cancellation through [`super::native::submit`].
//!
//! - [`session`]: signing in and out, the cookie, the same-site check of every POST.
//! - [`pages`]: the pages (list, action, resource, sign-in, confirmations, errors).
//! - [`export`]: the filtered list as JSON lines or CSV, streamed page by page.
//! - [`assets`]: the CSS and JS, with content-hashed URLs and ETags.
//!
//! **Who is looking.** The sign-in cookie carries the token itself (hex-encoded), not a
//! session id: every console request authenticates it through the same token store as the
//! API's `Authorization` header ([`super::auth::authenticate_secret`]), so a revoked or
//! expired token stops working in the console at once, on every node of a cluster, and a
//! restart signs nobody out. The cookie is `HttpOnly` (no script reads it),
//! `SameSite=Strict`, `Path=/console` (the API never sees it, and ignores cookies anyway)
//! and `Secure` behind TLS; it lasts
//! [`crate::limits::CONSOLE_COOKIE_MAX_AGE_S`]. The token never appears
//! in a URL or a page, and the access log logs no header.
//!
//! **Safe by construction.** Every answer carries [`CSP`] (no inline script or style, no
//! framing), `nosniff` and `Referrer-Policy: no-referrer`; pages are `no-store`. Every
//! state-changing request (sign-in, sign-out, cancel) must come from the console's own
//! origin (`Sec-Fetch-Site: same-origin`, or an `Origin` equal to the request's host), else
//! 403. maud escapes every value interpolated into a page.
//!
//! **Live.** The JS opens one watch stream per tab through [`watch`], the native watch
//! stream under the cookie's identity (an `EventSource` cannot send `Authorization`).

pub mod assets;
pub mod export;
pub mod pages;
pub mod session;

use super::error::ApiError;
use super::AppState;
use crate::tokens::Principal;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

/// The console's settings, as the server runs it.
#[derive(Clone, Debug)]
pub struct Console {
    /// Mark the sign-in cookie `Secure` (the listener speaks TLS).
    pub secure_cookie: bool,
}

/// The Content-Security-Policy of every console answer: scripts and styles only from the
/// console's own files (no inline script, no `style` attribute), no framing, forms and
/// connections only to this origin.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's routes that answer promptly (under the request timeout).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console", get(root))
        .route("/console/", get(root))
        .route(
            "/console/login",
            get(session::login_form).post(session::login),
        )
        .route("/console/logout", post(session::logout))
        .route("/console/actions", get(pages::list))
        .route("/console/actions/{id}", get(pages::action))
        .route(
            "/console/actions/{id}/cancel",
            get(pages::cancel_confirm).post(pages::cancel),
        )
        .route(
            "/console/resources/{resource_type}/{resource_id}",
            get(pages::resource),
        )
        .route("/console/assets/{name}", get(assets::serve))
        .route("/console/histogram", get(histogram))
        .layer(axum::middleware::from_fn(headers))
}

/// The console's long-lived routes (no request timeout): the watch stream and the export.
pub fn streaming_routes() -> Router<AppState> {
    Router::new()
        .route("/console/watch", get(watch))
        .route("/console/actions/export", get(export::export))
        .layer(axum::middleware::from_fn(headers))
}

/// True for the console routes that write nothing to the ledger (a cluster follower serves
/// them itself rather than forwarding them to the leader).
pub fn writes_nothing(path: &str) -> bool {
    path == "/console/login" || path == "/console/logout"
}

/// `/console`: the list.
async fn root() -> Response {
    see_other("/console/actions")
}

/// A `303 See Other` to `location` (a path of this console).
pub fn see_other(location: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// The security headers of every console answer (see the module's documentation); pages
/// are not cached, the assets set their own caching first.
async fn headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

/// Who is looking at a console page: the principal of the sign-in cookie's token. Without
/// a valid one, a GET is sent to the sign-in page (keeping where it was going as `next`,
/// and clearing a cookie that no longer works); anything else is refused 401.
pub struct Viewer(pub Principal);

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let console = state.console.as_ref().ok_or_else(|| {
            // Unreachable: the routes are absent when the console is off.
            StatusCode::NOT_FOUND.into_response()
        })?;
        let cookie = session::cookie_secret(&parts.headers);
        let failure = match &cookie {
            Some(secret) => match super::auth::authenticate_secret(secret, &state.tokens) {
                Ok(p) => return Ok(Viewer(p)),
                Err(f) => Some(f),
            },
            None => None,
        };
        let mut resp = if matches!(parts.method, Method::GET | Method::HEAD) {
            let target = parts
                .uri
                .path_and_query()
                .map_or("/console/actions", |pq| pq.as_str());
            see_other(&session::login_url(target))
        } else {
            let why = failure.as_ref().map_or_else(
                || "sign in first".to_string(),
                super::auth::AuthFailure::message,
            );
            pages::login_page(StatusCode::UNAUTHORIZED, None, Some(&why))
        };
        if cookie.is_some() {
            session::clear_cookie(console, resp.headers_mut());
        }
        Err(resp)
    }
}

/// A console page's failure, shown as a page: 400, 403, 404, 409, 503... with the
/// API's message (5xx bodies stay opaque, as the API's; the cause is logged).
pub struct PageError {
    pub status: StatusCode,
    pub message: String,
    /// Who was refused, when known: the page then has the signed-in top bar.
    pub viewer: Option<Principal>,
}

impl PageError {
    /// This failure as shown to `p` (with the top bar: sign-out, the time switch).
    pub fn seen_by(mut self, p: &Principal) -> PageError {
        self.viewer = Some(p.clone());
        self
    }
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> PageError {
        if e.status.is_server_error() && e.status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(code = e.code, message = %e.message, "console page failed");
            return PageError {
                status: e.status,
                message: "internal error (logged on the server)".into(),
                viewer: None,
            };
        }
        PageError {
            status: e.status,
            message: e.message,
            viewer: None,
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        pages::error_page_for(self.viewer.as_ref(), self.status, &self.message)
    }
}

/// The refusal of a state-changing request that did not come from the console's own
/// origin (a CSRF defence next to the `SameSite=Strict` cookie).
pub fn cross_site() -> PageError {
    PageError {
        status: StatusCode::FORBIDDEN,
        message: "this form must be sent from the console's own pages (cross-site request refused)"
            .into(),
        viewer: None,
    }
}

/// The native histogram (`GET /api/v1/histogram`) under the cookie's identity: what the
/// list page's activity chart draws. Empty parameters (an empty form field) are dropped.
async fn histogram(
    state: State<AppState>,
    Viewer(p): Viewer,
    axum::extract::Query(pairs): axum::extract::Query<Vec<(String, String)>>,
) -> Response {
    let pairs = pairs.into_iter().filter(|(_, v)| !v.is_empty()).collect();
    match super::native::histogram(state, super::Caller(p), axum::extract::Query(pairs)).await {
        Ok(json) => json.into_response(),
        Err(e) => e.into_response(),
    }
}

/// The native watch stream under the cookie's identity: the same filters, the same
/// `Last-Event-ID` / `after` resumption, the same revocation (the stream ends when the
/// token is revoked). Parameters the watch does not take (the list page's `since`, `until`,
/// `cursor`, `back`) are dropped, so the JS can pass a list page's query as it is.
async fn watch(
    state: State<AppState>,
    Viewer(p): Viewer,
    headers: HeaderMap,
    axum::extract::Query(pairs): axum::extract::Query<Vec<(String, String)>>,
) -> Response {
    let pairs = pairs
        .into_iter()
        .filter(|(k, v)| {
            !v.is_empty() && super::native::WATCH_PARAMS.contains(&k.as_str()) && k != "limit"
        })
        .collect();
    match super::native::watch(
        state,
        super::Caller(p),
        headers,
        axum::extract::Query(pairs),
    )
    .await
    {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}
