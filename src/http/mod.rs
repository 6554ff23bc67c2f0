//! The HTTP face of the ledger: one axum router for the native API (`/api/v1`), the public
//! dialects, health, readiness and metrics. Handlers translate; the [`Ledger`] decides.
//!
//! - [`native`]: `/api/v1` as docs/api.md describes it.
//! - [`console`]: the web console at `/console` (server-rendered pages over the same
//!   queries and commands as the native API).
//! - [`access`]: request ids, trace context and the access log.
//! - [`auth`]: tokens from any of the four header forms → [`Principal`].
//! - [`cluster`]: `X-Ledger-Position`, `min_position`, and a follower's forwarding of writes.
//! - [`error`]: the native error type and body.
//! - [`dialect`]: the public API dialects (one module each; they only translate).
//! - [`wire`]: the native JSON shapes (the OpenAPI document is generated from them).
//! - [`metrics`]: Prometheus counters and the request-metrics middleware.
//! - [`reads`]: the pool of threads that serves short projection reads.
//! - [`render`]: a memo of each action state's native JSON.
//! - [`server`]: listeners, limits, graceful shutdown.
//! - [`web`]: compression of answers and CORS around both routers.

pub mod access;
pub mod auth;
pub mod cluster;
pub mod console;
pub mod dialect;
pub mod error;
pub mod metrics;
pub mod native;
pub mod openapi;
pub mod reads;
pub mod render;
pub mod server;
pub mod tls;
pub mod web;
pub mod wire;

use crate::ledger::Ledger;
use crate::limits;
use crate::projection::Projection;
use crate::tokens::{Principal, TokenStore};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use error::ApiError;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Limits of the HTTP layer, as configured; their defaults are in [`crate::limits`].
#[derive(Clone, Debug)]
pub struct HttpLimits {
    /// Largest accepted request body (`BODY_BYTES_MAX`).
    pub body_bytes_max: usize,
    /// Largest `limit` of a list (`LIST_LIMIT_MAX`).
    pub list_limit_max: usize,
    /// Longest wait (`WAIT_MS_MAX`).
    pub wait_ms_max: u64,
    /// Most simultaneous watch streams (`WATCHERS_MAX`).
    pub watchers_max: usize,
    /// Most simultaneous connections per listener (`CONNECTIONS_MAX`); connections beyond
    /// it are answered 503 and closed (see `server::serve_listener`).
    pub connections_max: usize,
    /// Interval of the keep-alive comments of a watch stream. Also bounds how long a watch
    /// stream whose client left unnoticed keeps its place under `WATCHERS_MAX`: HTTP/1 only
    /// notices a closed connection when writing to it.
    pub watch_keepalive_ms: u64,
    /// Time limit of every request except wait and watch (`REQUEST_TIMEOUT_MS`).
    pub request_timeout_ms: u64,
    /// How long shutdown waits for in-flight requests (`DRAIN_TIMEOUT_MS`).
    pub drain_timeout_ms: u64,
    /// How long a client may take to send a request's headers, and how long an idle
    /// keep-alive connection stays open (`HEADER_READ_TIMEOUT_MS`): a client trickling
    /// headers (slowloris) is disconnected after it.
    pub header_read_timeout_ms: u64,
    /// Largest request head, request line and headers together (`HEADER_BYTES_MAX`); a
    /// larger one is answered 431.
    pub header_bytes_max: usize,
    /// The origins browsers may call from (`cors_origins`; empty: CORS off), each
    /// `scheme://host[:port]` as checked by [`web::check_origin`].
    pub cors_origins: Vec<String>,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            body_bytes_max: limits::BODY_BYTES_MAX,
            list_limit_max: limits::LIST_LIMIT_MAX,
            wait_ms_max: limits::WAIT_MS_MAX,
            watchers_max: limits::WATCHERS_MAX,
            connections_max: limits::CONNECTIONS_MAX,
            watch_keepalive_ms: limits::WATCH_KEEPALIVE_MS,
            request_timeout_ms: limits::REQUEST_TIMEOUT_MS,
            drain_timeout_ms: limits::DRAIN_TIMEOUT_MS,
            header_read_timeout_ms: limits::HEADER_READ_TIMEOUT_MS,
            header_bytes_max: limits::HEADER_BYTES_MAX,
            cors_origins: Vec::new(),
        }
    }
}

pub use crate::limits::{IDEMPOTENCY_KEY_BYTES_MAX, LIST_LIMIT_DEFAULT};

/// Everything a handler needs: one shared handle to [`Shared`], so the clones axum makes
/// per request (the handler's state, the metrics middleware's) cost one reference count,
/// not one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }

    /// Runs a short read (one action, one list page) on the read pool, [`Shared::reads`],
    /// handing it its own handle to the state.
    pub async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&AppState) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let st = self.clone();
        self.reads.run(move || read(&st)).await
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What every handler shares (see [`AppState`]).
pub struct Shared {
    pub ledger: Arc<Ledger>,
    pub projection: Arc<Projection>,
    pub tokens: Arc<TokenStore>,
    pub limits: Arc<HttpLimits>,
    pub metrics: Arc<metrics::Metrics>,
    /// False until recovery and catch-up are done (readiness).
    pub ready: Arc<AtomicBool>,
    /// Open watch streams.
    pub watchers: Arc<AtomicUsize>,
    /// Whether `/metrics` answers without a token.
    pub public_metrics: bool,
    /// The web console's settings; `None`: the console is off (its routes are absent).
    pub console: Option<console::Console>,
    /// Turns true when shutdown begins: waits return, watch streams end.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// The native JSON of action states already rendered.
    pub rendered: Arc<render::RenderCache>,
    /// Cluster mode: the node, and forwarding to its leader (`None`: embedded).
    pub cluster: Option<Arc<cluster::ClusterFace>>,
    /// The threads that serve one action and list pages ([`reads`]).
    pub reads: reads::ReadPool,
}

impl Shared {
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// Loads an action the caller may see, by id or uid: the projection applies the caller's
/// tenant scope ([`Projection::get_ref_scoped`]), so another tenant's action is "not found",
/// exactly like one that does not exist. Blocking: call inside [`blocking`].
pub fn load_action(
    state: &AppState,
    p: &Principal,
    id: &str,
) -> Result<crate::event::Action, ApiError> {
    let action = state
        .projection
        .get_ref_scoped(&crate::event::ActionRef::parse(id), p.scope())?;
    auth::still_valid(p)?;
    action.ok_or_else(|| not_found(id))
}

/// The answer for an action the caller may not see or that does not exist (the same).
pub fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("action {id}"))
}

/// Adds `Retry-After` to the answer about an unfinished action, so pollers back off. Every
/// dialect's GET of one action uses it (docs/api.md, "Retry-After").
pub fn with_retry_after(
    a: &crate::event::Action,
    mut resp: axum::response::Response,
) -> axum::response::Response {
    if !a.status.is_terminal() {
        resp.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("1"),
        );
    }
    resp
}

/// Resolves once shutdown has begun (or the sender is gone).
pub async fn shutting_down(mut rx: tokio::sync::watch::Receiver<bool>) {
    // The borrow `wait_for` returns is dropped here, so callers' futures stay `Send`.
    let _ = rx.wait_for(|down| *down).await;
}

/// Runs blocking work off the async workers on tokio's blocking pool: writes that wait (token
/// changes), and long reads (scans, the log). Short projection reads go to the read pool,
/// [`Shared::reads`].
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
}

/// The caller of a native route (401 in the native error shape when absent or unknown).
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        auth::authenticate(&parts.headers, &state.tokens)
            .map(Caller)
            .map_err(auth::refused)
    }
}

/// The raw request body, with the size limit reported in the native error shape.
///
/// An oversized body is answered 413 at once (from its declared `Content-Length`, else as
/// soon as more than the limit has arrived), and its rest is then read and discarded in the
/// background, bounded by [`crate::limits::BODY_DRAIN_BYTES_MAX`] and
/// [`crate::limits::BODY_DRAIN_TIMEOUT_MS`]: a client that writes its whole body before
/// reading (most HTTP libraries, without `Expect: 100-continue`) reads the 413 instead of a
/// reset. A client that sent `Expect: 100-continue` was never told to send, so nothing is
/// drained.
pub struct Body(pub axum::body::Bytes);

impl FromRequest<AppState> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        use futures_util::StreamExt as _;
        let max = state.limits.body_bytes_max;
        let declared = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let expects_continue = req
            .headers()
            .get(axum::http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let mut body = req.into_body().into_data_stream();
        if let Some(len) = declared {
            if len > max as u64 {
                if !expects_continue {
                    drain(body);
                }
                return Err(too_large(max, len));
            }
        }
        // One chunk (the common case) is returned as it came; more are gathered.
        let mut first: Option<axum::body::Bytes> = None;
        let mut gathered: Vec<u8> = Vec::new();
        let mut len = 0usize;
        while let Some(chunk) = body.next().await {
            let chunk = chunk
                .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
            len += chunk.len();
            if len > max {
                drain(body);
                return Err(too_large(max, len as u64));
            }
            match first.take() {
                None if gathered.is_empty() => first = Some(chunk),
                earlier => {
                    if let Some(earlier) = earlier {
                        gathered.extend_from_slice(&earlier);
                    }
                    gathered.extend_from_slice(&chunk);
                }
            }
        }
        Ok(Body(first.unwrap_or_else(|| gathered.into())))
    }
}

/// Reads and discards the rest of an oversized body in the background (see [`Body`]).
fn drain(mut body: axum::body::BodyDataStream) {
    use futures_util::StreamExt as _;
    tokio::spawn(async move {
        let discard = async {
            let mut drained = 0usize;
            while let Some(Ok(chunk)) = body.next().await {
                drained += chunk.len();
                if drained >= crate::limits::BODY_DRAIN_BYTES_MAX {
                    break;
                }
            }
        };
        let limit = std::time::Duration::from_millis(crate::limits::BODY_DRAIN_TIMEOUT_MS);
        let _ = tokio::time::timeout(limit, discard).await;
    });
}

fn too_large(max: usize, actual: u64) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("request body exceeds BODY_BYTES_MAX ({max} bytes)"),
    )
    .with("limit", "BODY_BYTES_MAX")
    .with("max", max as u64)
    .with("actual", actual)
}

/// Parses a JSON body, turning serde's complaint into a 400 that says where and what, in
/// the API's terms: the field's JSON path and the JSON it must be (never a Rust type name;
/// see [`wire::expected_json`]).
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "request body is empty; a JSON object is required",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let e = e.inner();
        let well_formed = || serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok();
        if e.classify() == serde_json::error::Category::Syntax && path != "." && well_formed() {
            // serde_json reports a string-valued enum (`kind`, `status`) given another JSON
            // type as a syntax error ("expected value"), though the JSON is well formed.
            return ApiError::bad_request(format!(
                "`{path}` must be a string (one of its documented values)"
            ));
        }
        ApiError::bad_request(json_error(&path, e))
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    Ok(value)
}

/// The message of a body that is not the JSON a route takes; `path` is where (`.` for the
/// body itself, else `error.code`, `commands[2].event.progress`...).
fn json_error(path: &str, e: &serde_json::Error) -> String {
    if e.classify() != serde_json::error::Category::Data {
        return format!("invalid JSON body: {e}");
    }
    let full = e.to_string();
    let text = match full.rfind(" at line ") {
        Some(i) => &full[..i],
        None => &full,
    };
    let at_root = path == "." || path.is_empty();
    let field = if at_root {
        "the body".to_string()
    } else {
        format!("`{path}`")
    };
    let last = path.rsplit(['.', '[']).next().unwrap_or(path);
    if let Some(rest) = text
        .strip_prefix("invalid type: ")
        .or_else(|| text.strip_prefix("invalid value: "))
    {
        if let Some((got, expected)) = rest.rsplit_once(", expected ") {
            return format!(
                "{field} must be {}; got {}",
                wire::expected_json(last, expected),
                wire::got_json(got)
            );
        }
    }
    if let Some(name) = text.strip_prefix("data did not match any variant of untagged enum ") {
        return format!("{field} must be {}", wire::expected_json(last, name));
    }
    if let Some(name) = text
        .strip_prefix("missing field `")
        .and_then(|r| r.strip_suffix('`'))
    {
        return if at_root {
            format!("`{name}` is required")
        } else {
            format!("`{path}.{name}` is required")
        };
    }
    if at_root {
        format!("invalid JSON body: {text}")
    } else {
        format!("{field}: {text}")
    }
}
