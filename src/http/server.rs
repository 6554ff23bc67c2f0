//! Running the server: data directory, tokens, recovery, listeners, and graceful shutdown.
//!
//! Start-up binds the listener first and answers `/healthz` (200) and `/readyz` (503) while
//! the log is recovered and the projection caught up; every other route answers 503 until
//! then. Shutdown runs in a fixed order: stop accepting, end waits and watch streams, let
//! in-flight requests finish (bounded by `drain_timeout_ms`), drain the writer (every queued
//! submission is fsynced and answered), flush the projection.

use super::{error::ApiError, metrics, native, openapi, AppState, Caller, HttpLimits};
use crate::cluster::tokens::ClusterTokens;
use crate::cluster::{ClusterLog, ClusterNode, ClusterSettings, Role as NodeRole};
use crate::ledger::{ClusterLink, Ledger, LedgerConfig, LedgerError, StateStore};
use crate::projection::{Projection, ProjectionConfig, ProjectionError};
use crate::tokens::{generate_secret, TokenError, TokenStore};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Everything `serve` needs, validated.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub admin_token: Option<String>,
    pub segment_bytes: u64,
    pub sled_cache_bytes: u64,
    /// The projection's memos ([`ProjectionConfig::snapshot_cache_bytes`]).
    pub memo_bytes: usize,
    /// The memo of rendered JSON ([`crate::http::render::RenderCache`]).
    pub render_cache_bytes: usize,
    /// The applier's memo ([`ProjectionConfig::written_memo_bytes`]).
    pub written_memo_bytes: usize,
    /// Group-commit limits of the writer (see [`LedgerConfig`]).
    pub commit_batch_records_max: usize,
    pub commit_batch_bytes_max: usize,
    pub append_queue_max: usize,
    /// Threads of the read pool ([`super::reads`]); 0: one per core.
    pub read_threads: usize,
    pub limits: HttpLimits,
    pub public_metrics: bool,
    /// The web console at `/console` (key `console`; on by default). Off: its routes are
    /// not there (404).
    pub console: bool,
    /// One access log line per request (target `access`, level info; see
    /// [`super::access`]).
    pub access_log: bool,
    /// The Redis Enterprise dialect's own listener (`--redis-listen`; `serve` defaults to
    /// `127.0.0.1:9443`). `None`: no such listener (Redis stays under `/redis` on the main
    /// listener).
    pub redis_listen: Option<SocketAddr>,
    /// Where the log lives: real files ([`crate::log::FsStorage`], the default) or, in
    /// tests, a simulated disk with injected faults ([`crate::log::SimStorage`]).
    pub log_storage: LogStorage,
    /// Cluster mode (docs/cluster.md); the embedded default when its `log` is `None`.
    pub cluster: ClusterSettings,
    /// TLS on both listeners (`tls_cert`, `tls_key`, `tls_client_ca`); `None`: plain HTTP.
    pub tls: Option<super::tls::TlsFiles>,
}

/// The log's storage seam, as a config field.
#[derive(Clone)]
pub struct LogStorage(pub Arc<dyn crate::log::Storage>);

impl std::fmt::Debug for LogStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogStorage")
    }
}

/// Why [`start`] (or a running server's shutdown) failed: what failed, and where. Each
/// message is one line that names the directory, address or file concerned.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The data directory could not be created.
    #[error("cannot create data directory {}: {source}", path.display())]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The data directory could not be locked: another server runs on it (or an offline
    /// command is writing to it), or the lock file failed.
    #[error("{source}{}", lock_advice(source))]
    Lock { source: crate::datadir::LockError },
    /// The HTTP listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The Redis Enterprise dialect's listener (`--redis-listen`) could not be bound.
    #[error("cannot listen on {addr} (--redis-listen): {source}")]
    RedisListen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The token file could not be read, or the first admin token not stored.
    #[error(transparent)]
    Tokens(#[from] TokenError),
    /// The projection could not be opened.
    #[error("cannot open the projection: {0}")]
    Projection(#[source] ProjectionError),
    /// The projection could not be flushed at shutdown.
    #[error("cannot flush the projection: {0}")]
    Flush(#[source] ProjectionError),
    /// The log could not be recovered or the projection caught up with it.
    #[error("cannot open the ledger: {0}")]
    Ledger(#[source] LedgerError),
    /// The TLS certificate, key or client CA cannot be used (the message names the file).
    #[error("TLS: {0}")]
    Tls(String),
    /// The read pool's threads could not be started.
    #[error("cannot start the read pool's threads: {0}")]
    ReadPool(#[source] std::io::Error),
    /// Serving a listener failed.
    #[error("serving failed: {0}")]
    Serve(#[source] std::io::Error),
    /// The cluster settings do not make a usable node.
    #[error("cluster mode: {0}")]
    ClusterConfig(String),
    /// The cluster log (PostgreSQL) is unreachable or unusable.
    #[error("{0}")]
    Cluster(#[source] crate::cluster::ClusterError),
    /// The local log cannot continue the cluster log (or copying it failed).
    #[error("cannot join the cluster: {0}")]
    Join(#[source] crate::cluster::ReplicaError),
    /// A task of the server panicked (or was cancelled).
    #[error("the {task} task failed: {source}")]
    Task {
        task: &'static str,
        source: tokio::task::JoinError,
    },
}

/// What to do about a data directory another server holds.
fn lock_advice(e: &crate::datadir::LockError) -> &'static str {
    match e {
        crate::datadir::LockError::InUse { .. } => "; stop it first or use another data directory",
        crate::datadir::LockError::Io { .. } => "",
    }
}

impl ServeError {
    fn task(task: &'static str) -> impl FnOnce(tokio::task::JoinError) -> ServeError {
        move |source| ServeError::Task { task, source }
    }
}

impl ServeConfig {
    pub fn new(data_dir: impl Into<PathBuf>, listen: SocketAddr) -> ServeConfig {
        ServeConfig {
            data_dir: data_dir.into(),
            listen,
            admin_token: None,
            segment_bytes: crate::limits::SEGMENT_BYTES_DEFAULT,
            sled_cache_bytes: crate::limits::SLED_CACHE_BYTES_DEFAULT,
            memo_bytes: crate::limits::MEMO_BYTES_DEFAULT,
            render_cache_bytes: crate::http::render::RENDER_CACHE_BYTES,
            written_memo_bytes: crate::projection::WRITTEN_MEMO_BYTES,
            commit_batch_records_max: crate::limits::COMMIT_BATCH_RECORDS_MAX,
            commit_batch_bytes_max: crate::limits::COMMIT_BATCH_BYTES_MAX,
            append_queue_max: crate::limits::APPEND_QUEUE_MAX,
            read_threads: 0,
            limits: HttpLimits::default(),
            public_metrics: false,
            console: true,
            access_log: true,
            redis_listen: None,
            log_storage: LogStorage(Arc::new(crate::log::FsStorage)),
            cluster: ClusterSettings::new(),
            tls: None,
        }
    }
}

/// The main listener's routes, before state and the metrics middleware; the console's
/// when `console` is on.
fn main_routes(timeout: Duration, console: bool) -> Router<AppState> {
    let mut prompt = native::routes()
        .merge(super::dialect::main_routes())
        .route("/api/v1/openapi.json", get(openapi_doc));
    if console {
        prompt = prompt.merge(super::console::routes());
    }
    let prompt = prompt.layer(tower_http::timeout::TimeoutLayer::with_status_code(
        StatusCode::SERVICE_UNAVAILABLE,
        timeout,
    ));
    let mut streaming = native::streaming_routes();
    if console {
        streaming = streaming.merge(super::console::streaming_routes());
    }
    Router::new()
        .merge(prompt)
        .merge(streaming)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::render))
}

/// The Redis listener's routes, before state and the metrics middleware.
fn redis_routes(timeout: Duration) -> Router<AppState> {
    super::dialect::redis_routes().layer(tower_http::timeout::TimeoutLayer::with_status_code(
        StatusCode::SERVICE_UNAVAILABLE,
        timeout,
    ))
}

/// The full application router over a ready state.
pub fn router(state: AppState) -> Router {
    let timeout = Duration::from_millis(state.limits.request_timeout_ms);
    let router = main_routes(timeout, state.console.is_some())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            super::cluster::positions,
        ))
        .layer(metrics::TrackLayer(state.metrics.clone()));
    super::web::around(router, &state.limits).with_state(state)
}

/// The Redis listener's router: the Redis Enterprise dialect at its documented root paths
/// (its routes bring Redis-shaped 404/405 answers), with the same timeout and metrics as the
/// main router.
pub fn redis_router(state: AppState) -> Router {
    let timeout = Duration::from_millis(state.limits.request_timeout_ms);
    let router = redis_routes(timeout).layer(metrics::TrackLayer(state.metrics.clone()));
    super::web::around(router, &state.limits).with_state(state)
}

/// The path templates of every route of the main listener and of the Redis listener, read
/// from the very routers [`router`] and [`redis_router`] serve (axum's router can list its
/// paths only through its `Debug` form). The security suite walks them, so a route added
/// anywhere without authentication fails it.
pub fn route_templates() -> (Vec<String>, Vec<String>) {
    let timeout = Duration::from_secs(1);
    (
        paths_of(&format!("{:?}", main_routes(timeout, true))),
        paths_of(&format!("{:?}", redis_routes(timeout))),
    )
}

/// The route paths in the `Debug` text of an axum router: `Router { path_router: ... Node {
/// paths: {RouteId(N): "/path", ...} }, fallback_router: ... }` (the fallback router's
/// catch-all paths are not routes).
fn paths_of(debug: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = debug.split("fallback_router:").next().unwrap_or(debug);
    while let Some(i) = rest.find("RouteId(") {
        rest = &rest[i + "RouteId(".len()..];
        let Some(close) = rest.find(')') else { break };
        let after = &rest[close + 1..];
        if let Some(q) = after.strip_prefix(": \"") {
            if let Some(end) = q.find('"') {
                paths.push(q[..end].to_string());
            }
        }
    }
    paths.sort();
    paths.dedup();
    paths
}

async fn openapi_doc(_caller: Caller) -> impl IntoResponse {
    openapi::document().await
}

async fn healthz() -> Json<serde_json::Value> {
    health()
}

/// The `/healthz` answer: the process is up (ready or not).
fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// `/readyz`: ready or not, the node's role, and how far it has applied. A cluster node
/// whose replica stopped (a broken chain, a divergence, a local disk failure) is not ready
/// (`failed`), nor is one that has not heard from PostgreSQL for longer than
/// [`crate::limits::CLUSTER_LOG_STALE_MS`] (`cluster_log_unreachable`: it still serves reads
/// from its replica, but its data may be stale and it cannot take writes).
async fn readyz(State(state): State<AppState>) -> Response {
    if !state.is_ready() {
        return not_ready();
    }
    let position = state.ledger.committed_position();
    let mut body = json!({
        "status": "ready",
        "role": "single",
        "epoch": null,
        "leader": null,
        "applied_position": position,
        "lag_positions": 0,
        "position": position,
        "head_digest": head_digest(&state),
    });
    let mut code = StatusCode::OK;
    if let Some(face) = &state.cluster {
        let status = face.node.status();
        let node_id = &face.node.options().node_id;
        let (role, leader) = match &status.role {
            NodeRole::Leader { .. } => ("leader", Some(node_id.clone())),
            NodeRole::Follower { leader, .. } => ("follower", leader.clone().map(|l| l.0)),
        };
        body["role"] = json!(role);
        body["epoch"] = json!(status.role.epoch());
        body["leader"] = json!(leader);
        body["node_id"] = json!(node_id);
        body["applied_position"] = json!(status.applied_position);
        body["lag_positions"] = json!(status.cluster_position - status.applied_position);
        body["cluster_log_last_contact_seconds"] = json!(status.last_contact.as_secs_f64());
        if status.replica_failed {
            body["status"] = json!("failed");
            code = StatusCode::SERVICE_UNAVAILABLE;
        } else if !status.cluster_log_reachable() {
            body["status"] = json!("cluster_log_unreachable");
            code = StatusCode::SERVICE_UNAVAILABLE;
        }
    }
    (code, Json(body)).into_response()
}

/// The chain digest of the local log's last record, in hex: equal on two nodes that hold
/// the same log up to the same position.
fn head_digest(state: &AppState) -> String {
    crate::hex(&state.ledger.log_head().digest)
}

/// The `/readyz` answer while the server is not (or no longer) ready.
fn not_ready() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"status": "starting"})),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::not_found("route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

/// Creates `dir` (owner-only permissions) if needed.
fn create_private_dir(dir: &Path) -> Result<(), ServeError> {
    crate::log::storage::create_private_dir_all(dir).map_err(|source| ServeError::DataDir {
        path: dir.to_path_buf(),
        source,
    })
}

/// Stores the uses of tokens this server saw (`last_used_at`) every
/// [`TOKEN_LAST_USED_RESOLUTION_SECS`](crate::limits::TOKEN_LAST_USED_RESOLUTION_SECS); the
/// stop stores them once more.
async fn store_token_uses_regularly(tokens: Arc<TokenStore>) {
    let every = Duration::from_secs(crate::limits::TOKEN_LAST_USED_RESOLUTION_SECS as u64);
    loop {
        tokio::time::sleep(every).await;
        store_token_uses(tokens.clone()).await;
    }
}

async fn store_token_uses(tokens: Arc<TokenStore>) {
    match tokio::task::spawn_blocking(move || tokens.store_last_used()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "could not store when tokens were last used"),
        Err(e) => tracing::warn!(error = %e, "storing when tokens were last used failed"),
    }
}

/// The file in the data directory where the first start writes the first admin token
/// (readable by its owner only): printing the secret would put it into the journal.
pub const FIRST_ADMIN_TOKEN_FILE: &str = "first-admin-token";

/// Opens the token store (the token file; in cluster mode the cluster's token table,
/// `cluster_tokens`); on a first start with no token at all, creates an admin token, writes
/// its secret to [`FIRST_ADMIN_TOKEN_FILE`] and returns that file's path. Only the hash is
/// stored, and only after the file is on disk, so no stored admin token goes unseen.
///
/// [`start`] calls it last, once the listeners are bound, the ledger is open (holding the
/// data directory's lock) and, in cluster mode, the node has joined: nothing can fail after
/// the first admin token is stored and before `serve` says where it is, and a `token`
/// command, which refuses a locked directory, cannot change the file between this read and
/// the server's stop. Blocks (file and PostgreSQL I/O): call it off the async workers.
pub fn open_tokens(
    data_dir: &Path,
    admin_token: Option<&str>,
    cluster_tokens: Option<&Arc<ClusterTokens>>,
) -> Result<(TokenStore, Option<PathBuf>), TokenError> {
    let mut tokens = match cluster_tokens {
        Some(table) => crate::cluster::tokens::open_store(table)?,
        None => TokenStore::open(data_dir.join("tokens.json"))?,
    };
    if let Some(t) = admin_token {
        tokens.add_ephemeral_admin(t);
    }
    if !tokens.is_empty() {
        return Ok((tokens, None));
    }
    let file = data_dir.join(FIRST_ADMIN_TOKEN_FILE);
    let file_error = |e: std::io::Error| TokenError::File {
        path: file.clone(),
        reason: e.to_string(),
    };
    let secret = generate_secret();
    crate::tokens::write_private(&file, format!("{secret}\n").as_bytes()).map_err(file_error)?;
    std::fs::File::open(data_dir)
        .and_then(|d| d.sync_all())
        .map_err(file_error)?;
    match tokens.create_first_admin("admin", &secret) {
        Ok(true) => Ok((tokens, Some(file))),
        // Another node of the cluster created the first token meanwhile.
        Ok(false) => {
            std::fs::remove_file(&file).map_err(file_error)?;
            Ok((tokens, None))
        }
        Err(e) => {
            let _ = std::fs::remove_file(&file);
            Err(e)
        }
    }
}

/// A running server, for tests and `serve`.
pub struct Running {
    pub addr: SocketAddr,
    /// Where the Redis Enterprise listener is bound, when configured.
    pub redis_addr: Option<SocketAddr>,
    /// Where the admin token created on this first start was written, if one was.
    pub first_admin_token_file: Option<PathBuf>,
    /// Whether the listeners speak TLS (`https://`).
    pub tls: bool,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
}

impl Running {
    /// Starts the graceful shutdown and waits for it to finish.
    pub async fn stop(self) -> Result<(), ServeError> {
        let _ = self.shutdown.send(true);
        self.wait().await
    }

    /// Waits until the server has shut down (after the signal given to [`start`]).
    pub async fn wait(self) -> Result<(), ServeError> {
        self.task.await.map_err(ServeError::task("server"))?
    }
}

/// The service a listener runs: the application once recovery is done (`slot` set), and
/// until then `/healthz` 200, `/readyz` 503 and 503 for everything else. A plain service
/// rather than a router with a fallback: once ready, a request goes straight to the
/// application's router (one routing pass, not two).
#[derive(Clone)]
struct Front {
    slot: Arc<OnceLock<Router>>,
    /// Request ids and the access log of this listener ([`super::access`]).
    log: super::access::AccessLog,
}

impl Front {
    /// The answer while recovery runs.
    fn starting(path: &str) -> Response {
        match path {
            "/healthz" => health().into_response(),
            "/readyz" => not_ready(),
            _ => ApiError::unavailable("starting: recovering the log").into_response(),
        }
    }
}

impl<B> tower::Service<axum::http::Request<B>> for Front
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = super::access::Answer<
        futures_util::future::Either<
            axum::routing::future::RouteFuture<std::convert::Infallible>,
            std::future::Ready<Result<Response, std::convert::Infallible>>,
        >,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: axum::http::Request<B>) -> Self::Future {
        use futures_util::future::Either;
        strip_trailing_slash(req.uri_mut());
        let slot = &self.slot;
        super::access::serve(self.log, req, |req| match slot.get() {
            Some(app) => Either::Left(app.clone().call(req)),
            None => Either::Right(std::future::ready(Ok(Front::starting(req.uri().path())))),
        })
    }
}

/// Rewrites `/v2/actions/` (or `/v2/actions//`) to `/v2/actions`, keeping the query, so
/// every route answers the same with or without a trailing slash (public clients send
/// both). Done once, before routing: the handlers, `OriginalUri` and the metrics' route
/// templates all see the path without the slash. `/` stays `/`.
fn strip_trailing_slash(uri: &mut axum::http::Uri) {
    let path = uri.path();
    if path.len() <= 1 || !path.ends_with('/') {
        return;
    }
    let trimmed = match path.trim_end_matches('/') {
        "" => "/",
        t => t,
    };
    let path_and_query = match uri.query() {
        Some(q) => format!("{trimmed}?{q}"),
        None => trimmed.to_string(),
    };
    let mut parts = uri.clone().into_parts();
    // A prefix of a valid path is valid; should it ever not be, the request is routed as sent.
    let Ok(pq) = axum::http::uri::PathAndQuery::try_from(path_and_query) else {
        return;
    };
    parts.path_and_query = Some(pq);
    if let Ok(stripped) = axum::http::Uri::from_parts(parts) {
        *uri = stripped;
    }
}

/// Binds, recovers, serves until [`Running::stop`] or `signal` resolves.
pub async fn start(
    config: ServeConfig,
    signal: impl Future<Output = ()> + Send + 'static,
) -> Result<Running, ServeError> {
    create_private_dir(&config.data_dir)?;
    // Before anything else touches the directory or a port: a second server fails here.
    let data_dir_lock =
        crate::datadir::lock(&config.data_dir).map_err(|source| ServeError::Lock { source })?;
    // TLS files are read before binding: a bad one stops the start with nothing listening.
    // SIGHUP reloads them from now on (it no longer ends the process, TLS or not).
    let tls = match &config.tls {
        Some(files) => Some(super::tls::Tls::open(files.clone()).map_err(ServeError::Tls)?),
        None => None,
    };
    let hangup = super::tls::Hangup::listen();
    let (listener, addr) = bind(config.listen, |addr, source| ServeError::Listen {
        addr,
        source,
    })
    .await?;
    tracing::info!(%addr, tls = tls.is_some(), "listening");
    let (redis_listener, redis_addr) = match config.redis_listen {
        Some(a) => {
            let (l, addr) =
                bind(a, |addr, source| ServeError::RedisListen { addr, source }).await?;
            (Some(l), Some(addr))
        }
        None => (None, None),
    };
    if let Some(redis_addr) = redis_addr {
        tracing::info!(%redis_addr, "Redis Enterprise dialect listening");
    }

    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let slot: Arc<OnceLock<Router>> = Arc::new(OnceLock::new());
    let redis_slot: Arc<OnceLock<Router>> = Arc::new(OnceLock::new());
    let access_log = |listener| super::access::AccessLog {
        listener,
        enabled: config.access_log,
    };
    let front = Front {
        slot: slot.clone(),
        log: access_log("main"),
    };
    let redis_front = Front {
        slot: redis_slot.clone(),
        log: access_log("redis"),
    };

    // Serve from now on: until recovery is done, `Front` answers `/healthz` 200 and 503
    // to everything else, so a supervisor sees the process up and not yet ready.
    let limits = config.limits.clone();
    let stop_rx = shutdown_rx.clone();
    let redis_stop_rx = shutdown_rx.clone();
    tokio::spawn(super::tls::reload_on_hangup(
        tls.clone(),
        hangup,
        super::shutting_down(shutdown_rx.clone()),
    ));
    let redis_tls = tls.clone();
    let serving = tokio::spawn(async move {
        let serve = serve_listener(
            listener,
            front,
            limits.clone(),
            tls,
            connections_refusal_body,
            async move {
                super::shutting_down(stop_rx).await;
                tracing::info!("shutting down: no new connections");
            },
        );
        // The Redis listener stops accepting at the same moment and shares the drain.
        let redis_serve = async move {
            match redis_listener {
                Some(l) => {
                    serve_listener(
                        l,
                        redis_front,
                        limits,
                        redis_tls,
                        super::dialect::redis::connections_refusal_body,
                        super::shutting_down(redis_stop_rx),
                    )
                    .await
                }
                None => Ok(()),
            }
        };
        let (main, redis) = tokio::join!(serve, redis_serve);
        main.and(redis)
    });

    let Opened {
        ledger,
        projection,
        cluster,
        tokens,
        following_tokens,
        first_admin_token_file,
    } = match open(&config, addr).await {
        Ok(opened) => opened,
        Err(e) => {
            // Stop answering "starting" and report why.
            serving.abort();
            return Err(e);
        }
    };
    let reads = match super::reads::ReadPool::start(config.read_threads) {
        Ok(pool) => pool,
        Err(e) => {
            serving.abort();
            return Err(ServeError::ReadPool(e));
        }
    };
    let state = AppState::new(super::Shared {
        ledger: ledger.clone(),
        projection: projection.clone(),
        tokens,
        limits: Arc::new(config.limits.clone()),
        metrics: Arc::new(metrics::Metrics::default()),
        ready: Arc::new(AtomicBool::new(false)),
        watchers: Arc::new(AtomicUsize::new(0)),
        public_metrics: config.public_metrics,
        console: config.console.then(|| super::console::Console {
            secure_cookie: config.tls.is_some(),
        }),
        shutdown: shutdown_rx.clone(),
        rendered: Arc::new(crate::http::render::RenderCache::new(
            config.render_cache_bytes,
        )),
        cluster,
        reads,
    });
    // Arm the stop signal before the server can be seen ready: tokio's signal futures
    // install their handler on the first poll, and until then SIGTERM's default action
    // kills the process instead of stopping it gracefully (a supervisor that stops the
    // server right after it reports ready would get an unclean exit). During recovery the
    // default action stands: recovery is safe to interrupt.
    let mut signal = Box::pin(signal);
    let signalled =
        std::future::poll_fn(|cx| std::task::Poll::Ready(signal.as_mut().poll(cx).is_ready()))
            .await;
    let _ = slot.set(router(state.clone()));
    let _ = redis_slot.set(redis_router(state.clone()));
    state.ready.store(true, Ordering::Release);
    tracing::info!(position = ledger.committed_position(), "ready");

    let drain = Duration::from_millis(config.limits.drain_timeout_ms);
    let noting_uses = tokio::spawn(store_token_uses_regularly(state.tokens.clone()));
    let shutdown_tx2 = shutdown_tx.clone();
    tokio::spawn(async move {
        if !signalled {
            signal.await;
        }
        let _ = shutdown_tx2.send(true);
    });
    let task = tokio::spawn(async move {
        let mut serve = serving;
        tokio::select! {
            r = &mut serve => r.map_err(ServeError::task("listener"))?.map_err(ServeError::Serve)?,
            _ = super::shutting_down(shutdown_rx.clone()) => {
                // In-flight requests get `drain` to finish.
                if tokio::time::timeout(drain, &mut serve).await.is_err() {
                    tracing::warn!(?drain, "in-flight requests did not finish in time; closing them");
                    serve.abort();
                }
            }
        }
        state.ready.store(false, Ordering::Release);
        // The uses of tokens seen since the last store, then the token table is let go.
        noting_uses.abort();
        store_token_uses(state.tokens.clone()).await;
        drop(following_tokens);
        if let Some(face) = &state.cluster {
            face.node.stop().await;
        }
        // Every queued submission is fsynced and answered before the writer exits.
        let l = ledger.clone();
        tokio::task::spawn_blocking(move || l.close())
            .await
            .map_err(ServeError::task("ledger close"))?;
        let p = projection.clone();
        tokio::task::spawn_blocking(move || p.flush())
            .await
            .map_err(ServeError::task("projection flush"))?
            .map_err(ServeError::Flush)?;

        tracing::info!("stopped cleanly");
        drop(data_dir_lock);
        Ok(())
    });
    Ok(Running {
        addr,
        redis_addr,
        first_admin_token_file,
        tls: config.tls.is_some(),
        shutdown: shutdown_tx,
        task,
    })
}

/// Binds a listener on `addr` and reads back the address it got (the port, for `:0`); on
/// failure, `failed` names the listener, the address asked for and why.
async fn bind(
    addr: SocketAddr,
    failed: fn(SocketAddr, std::io::Error) -> ServeError,
) -> Result<(tokio::net::TcpListener, SocketAddr), ServeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| failed(addr, e))?;
    let bound = listener.local_addr().map_err(|e| failed(addr, e))?;
    Ok((listener, bound))
}

/// What start-up opens behind the listeners.
struct Opened {
    ledger: Arc<Ledger>,
    projection: Arc<Projection>,
    cluster: Option<Arc<super::cluster::ClusterFace>>,
    tokens: Arc<TokenStore>,
    /// Cluster mode: the task keeping `tokens` in step with the cluster's token table.
    following_tokens: Option<crate::cluster::tokens::Following>,
    first_admin_token_file: Option<PathBuf>,
}

/// Start-up behind the listeners (bound at `addr`): in cluster mode PostgreSQL first, then
/// recovery of the log and the projection, in cluster mode the copy of what the local log
/// lacks and the start of leadership, and the tokens last (see [`open_tokens`]).
async fn open(config: &ServeConfig, addr: SocketAddr) -> Result<Opened, ServeError> {
    // Cluster mode: PostgreSQL must be reachable and its schema usable before anything else.
    let cluster = match config
        .cluster
        .options(addr)
        .map_err(ServeError::ClusterConfig)?
    {
        Some(options) => {
            let log = ClusterLog::connect(options)
                .await
                .map_err(ServeError::Cluster)?;
            let options = log.options();
            tracing::info!(node_id = %options.node_id, advertise_url = %options.advertise_url, "cluster mode: the cluster log is reachable");
            Some(log)
        }
        None => None,
    };
    let leadership = Arc::new(OnceLock::new());
    let link = cluster.as_ref().map(|log| ClusterLink {
        options: log.options().clone(),
        leadership: leadership.clone(),
        runtime: tokio::runtime::Handle::current(),
    });

    // Open the ledger off the async workers: recovery reads and checks every segment.
    let cfg = config.clone();
    let (ledger, projection) = tokio::task::spawn_blocking(move || -> Result<_, ServeError> {
        let projection = Arc::new(
            Projection::open(
                cfg.data_dir.join(crate::projection::PROJECTION_DIR_NAME),
                ProjectionConfig {
                    cache_capacity_bytes: cfg.sled_cache_bytes,
                    snapshot_cache_bytes: cfg.memo_bytes,
                    written_memo_bytes: cfg.written_memo_bytes,
                    ..Default::default()
                },
            )
            .map_err(ServeError::Projection)?,
        );
        let mut lc = LedgerConfig::new(cfg.data_dir.join("log"));
        lc.segment_bytes = cfg.segment_bytes;
        lc.commit_batch_records_max = cfg.commit_batch_records_max;
        lc.commit_batch_bytes_max = cfg.commit_batch_bytes_max;
        lc.append_queue_max = cfg.append_queue_max;
        let store: Arc<dyn StateStore> = projection.clone();
        let storage = cfg.log_storage.0.clone();
        let ledger = match link {
            Some(link) => Ledger::open_clustered(storage, lc, store, link),
            None => Ledger::open(storage, lc, store),
        }
        .map_err(ServeError::Ledger)?;
        Ok((Arc::new(ledger), projection))
    })
    .await
    .map_err(ServeError::task("recovery"))??;
    if let Some(t) = &ledger.recovery().torn_tail {
        tracing::warn!(file = %t.file.display(), offset = t.offset, bytes = t.len, "recovered from a torn tail");
    }
    // Cluster mode: copy what the local log lacks, then compete for the lease.
    let cluster = match cluster {
        Some(log) => {
            let mut local = crate::log::LogConfig::new(config.data_dir.join("log"));
            local.segment_bytes = config.segment_bytes;
            let node = ClusterNode::start(log, local, ledger.clone(), leadership)
                .await
                .map_err(ServeError::Join)?;
            Some(super::cluster::ClusterFace::new(node))
        }
        None => None,
    };
    // The tokens, read only now: see `open_tokens`.
    let table = cluster.as_ref().map(|face| {
        ClusterTokens::new(
            face.node.options().clone(),
            tokio::runtime::Handle::current(),
        )
    });
    let (data_dir, admin_token, t) = (
        config.data_dir.clone(),
        config.admin_token.clone(),
        table.clone(),
    );
    let (tokens, first_admin_token_file) = tokio::task::spawn_blocking(move || {
        open_tokens(&data_dir, admin_token.as_deref(), t.as_ref())
    })
    .await
    .map_err(ServeError::task("tokens"))??;
    if first_admin_token_file.is_none() {
        tracing::info!(
            tokens = tokens.list().len(),
            "tokens loaded; to add one, POST /api/v1/tokens with an admin token, or stop the server and run `action-ledger token create --data-dir DIR --tenant default --role admin`"
        );
    }
    let tokens = Arc::new(tokens);
    let following_tokens =
        table.map(|t| crate::cluster::tokens::Following::spawn(tokens.clone(), t));
    Ok(Opened {
        ledger,
        projection,
        cluster,
        tokens,
        following_tokens,
        first_admin_token_file,
    })
}

use crate::limits::{REFUSALS_IN_FLIGHT_MAX, REFUSAL_DRAIN_BYTES_MAX, REFUSAL_LINGER_MS};

/// The body of the answer to a connection beyond the cap, in the native error shape; the
/// Redis listener uses its own ([`super::dialect::redis::connections_refusal_body`]).
pub fn connections_refusal_body(max: usize) -> String {
    ApiError::unavailable(format!(
        "CONNECTIONS_MAX ({max}) connections are open; retry later"
    ))
    .with("limit", "CONNECTIONS_MAX")
    .with("max", max)
    .body()
    .to_string()
}

/// Renders the 503 body of a connection refused beyond `CONNECTIONS_MAX`, in the
/// listener's error shape.
type RefusalBody = fn(usize) -> String;

async fn refuse<S>(mut stream: S, max: usize, refusal_body: RefusalBody)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let body = refusal_body(max);
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let answer = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await?;
        // Drain what the client sent (bounded), so closing does not reset the connection
        // before the client has read the answer.
        let mut sink = [0u8; 4096];
        let mut drained = 0usize;
        while drained < REFUSAL_DRAIN_BYTES_MAX {
            match stream.read(&mut sink).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok::<(), std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_millis(REFUSAL_LINGER_MS), answer).await;
}

pub use crate::limits::HEADERS_MAX;

/// Serves `app` on `listener` until `stop` resolves, then lets open connections finish
/// (graceful: keep-alive connections close after their current request).
///
/// Per connection: an HTTP/1 request head must arrive within `header_read_timeout_ms` (a
/// client trickling its headers, or idling on a keep-alive connection, is disconnected) and
/// fit in `header_bytes_max` and [`HEADERS_MAX`] fields (431 otherwise). At most
/// `connections_max` connections (`CONNECTIONS_MAX`, per listener) are served at once. A
/// connection accepted beyond the cap is answered at once, without reading its request,
/// with `503 Service Unavailable`, `Retry-After: 1`, `Connection: close` and the JSON error
/// body naming the limit, then closed: refusing (rather than leaving it in the accept queue)
/// tells a client why it waits and keeps a flood of idle connections from exhausting file
/// descriptors. At most [`REFUSALS_IN_FLIGHT_MAX`] refusals are written at once; connections
/// beyond that are closed without an answer.
async fn serve_listener(
    listener: tokio::net::TcpListener,
    app: Front,
    limits: HttpLimits,
    tls: Option<super::tls::Tls>,
    refusal_body: RefusalBody,
    stop: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(limits.header_read_timeout_ms))
        .max_header_size(limits.header_bytes_max)
        .max_headers(HEADERS_MAX);
    let h2 = h2_builder(&limits);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let max = limits.connections_max.max(1);
    let permits = Arc::new(tokio::sync::Semaphore::new(max));
    let mut stop = std::pin::pin!(stop);
    let refusing = Arc::new(AtomicUsize::new(0));
    let mut refused = 0u64;
    let mut last_warning: Option<std::time::Instant> = None;
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refused += 1;
            if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                // At most one line a second, however many connections are refused.
                tracing::warn!(
                    max,
                    refused_total = refused,
                    "CONNECTIONS_MAX reached; refusing connections"
                );
                last_warning = Some(std::time::Instant::now());
            }
            if refusing.fetch_add(1, Ordering::AcqRel) < REFUSALS_IN_FLIGHT_MAX {
                let refusing = refusing.clone();
                let acceptor = tls.as_ref().map(super::tls::Tls::acceptor);
                tokio::spawn(async move {
                    match acceptor {
                        None => refuse(stream, max, refusal_body).await,
                        Some(acceptor) => refuse_tls(acceptor, stream, max, refusal_body).await,
                    }
                    refusing.fetch_sub(1, Ordering::AcqRel);
                });
            } else {
                refusing.fetch_sub(1, Ordering::AcqRel);
                drop(stream);
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        if let Some(tls) = &tls {
            // The handshake runs on the connection's task, bounded, holding its permit;
            // the watcher counts it for the graceful stop from now on.
            let acceptor = tls.acceptor();
            let watcher = graceful.watcher();
            let (h1, h2) = (builder.clone(), h2.clone());
            tokio::spawn(async move {
                serve_tls(acceptor, stream, h1, h2, service, watcher).await;
                drop(permit);
            });
            continue;
        }
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// The HTTP/2 settings of a TLS connection that negotiated `h2`: the same head size limit
/// as HTTP/1, at most [`H2_STREAMS_MAX`] requests at once, and a PING that disconnects a
/// peer gone silent.
fn h2_builder(
    limits: &HttpLimits,
) -> hyper::server::conn::http2::Builder<hyper_util::rt::TokioExecutor> {
    use crate::limits::{H2_KEEPALIVE_INTERVAL_MS, H2_KEEPALIVE_TIMEOUT_MS, H2_STREAMS_MAX};
    let mut h2 = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
    h2.timer(hyper_util::rt::TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.header_bytes_max).unwrap_or(u32::MAX))
        .max_concurrent_streams(H2_STREAMS_MAX)
        .keep_alive_interval(Duration::from_millis(H2_KEEPALIVE_INTERVAL_MS))
        .keep_alive_timeout(Duration::from_millis(H2_KEEPALIVE_TIMEOUT_MS));
    h2
}

/// One TLS connection: the handshake within [`TLS_HANDSHAKE_TIMEOUT_MS`] (a client that
/// fails it, or presents no acceptable certificate when `tls_client_ca` is set, is
/// disconnected), then HTTP/2 or HTTP/1.1 as ALPN chose (HTTP/1.1 when the client offered
/// none), under the graceful stop.
async fn serve_tls(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    h1: hyper::server::conn::http1::Builder,
    h2: hyper::server::conn::http2::Builder<hyper_util::rt::TokioExecutor>,
    service: hyper_util::service::TowerToHyperService<Front>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    use crate::limits::TLS_HANDSHAKE_TIMEOUT_MS;
    use hyper_util::rt::TokioIo;
    let timeout = Duration::from_millis(TLS_HANDSHAKE_TIMEOUT_MS);
    let peer = stream.peer_addr().ok();
    let stream = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(?peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(?peer, "TLS handshake timed out (TLS_HANDSHAKE_TIMEOUT_MS)");
            return;
        }
    };
    let result = if super::tls::is_h2(&stream) {
        watcher
            .watch(h2.serve_connection(TokioIo::new(stream), service))
            .await
    } else {
        watcher
            .watch(h1.serve_connection(TokioIo::new(stream), service))
            .await
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// [`refuse`] over TLS: the handshake (bounded like the answer, by `REFUSAL_LINGER_MS`),
/// then the HTTP/1.1 503. A client that negotiated HTTP/2 is closed without it.
async fn refuse_tls(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    max: usize,
    refusal_body: RefusalBody,
) {
    let linger = Duration::from_millis(REFUSAL_LINGER_MS);
    if let Ok(Ok(stream)) = tokio::time::timeout(linger, acceptor.accept(stream)).await {
        if !super::tls::is_h2(&stream) {
            refuse(stream, max, refusal_body).await;
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn termination_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
