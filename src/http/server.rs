//! Running the server: data directory, tokens, recovery, listeners, and graceful shutdown.
//!
//! Start-up binds the listener first and answers `/healthz` (200) and `/readyz` (503) while
//! the log is recovered and the projection caught up; every other route answers 503 until
//! then. Shutdown runs in a fixed order: stop accepting, end waits and watch streams, let
//! in-flight requests finish (bounded by `drain_timeout_ms`), drain the writer (every queued
//! submission is fsynced and answered), flush the projection.

use super::{error::ApiError, metrics, native, openapi, AppState, Caller, HttpLimits};
use crate::ledger::{Ledger, LedgerConfig, StateStore};
use crate::projection::{Projection, ProjectionConfig};
use crate::tokens::{Role, TokenStore};
use anyhow::Context;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tower::ServiceExt as _;

/// Everything `serve` needs, validated.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub admin_token: Option<String>,
    pub segment_bytes: u64,
    pub sled_cache_bytes: u64,
    /// Group-commit limits of the writer (see [`LedgerConfig`]).
    pub commit_batch_records_max: usize,
    pub commit_batch_bytes_max: usize,
    pub append_queue_max: usize,
    pub limits: HttpLimits,
    pub public_metrics: bool,
    /// The Redis Enterprise dialect's own listener (`--redis-listen`; `serve` defaults to
    /// `127.0.0.1:9443`). `None`: no such listener (Redis stays under `/redis` on the main
    /// listener).
    pub redis_listen: Option<SocketAddr>,
    /// Where the log lives: real files ([`crate::log::FsStorage`], the default) or, in
    /// tests, a simulated disk with injected faults ([`crate::log::SimStorage`]).
    pub log_storage: LogStorage,
}

/// The log's storage seam, as a config field.
#[derive(Clone)]
pub struct LogStorage(pub Arc<dyn crate::log::Storage>);

impl std::fmt::Debug for LogStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogStorage")
    }
}

impl ServeConfig {
    pub fn new(data_dir: impl Into<PathBuf>, listen: SocketAddr) -> ServeConfig {
        ServeConfig {
            data_dir: data_dir.into(),
            listen,
            admin_token: None,
            segment_bytes: crate::limits::SEGMENT_BYTES_DEFAULT,
            sled_cache_bytes: 64 * 1024 * 1024,
            commit_batch_records_max: crate::limits::COMMIT_BATCH_RECORDS_MAX,
            commit_batch_bytes_max: crate::limits::COMMIT_BATCH_BYTES_MAX,
            append_queue_max: crate::limits::APPEND_QUEUE_MAX,
            limits: HttpLimits::default(),
            public_metrics: false,
            redis_listen: None,
            log_storage: LogStorage(Arc::new(crate::log::FsStorage)),
        }
    }
}

/// The full application router over a ready state.
pub fn router(state: AppState) -> Router {
    let timeout = Duration::from_millis(state.limits.request_timeout_ms);
    let prompt = native::routes()
        .merge(super::dialect::main_routes())
        .route("/api/v1/openapi.json", get(openapi_doc))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            timeout,
        ));
    Router::new()
        .merge(prompt)
        .merge(native::streaming_routes())
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::render))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .with_state(state)
}

/// The Redis listener's router: the Redis Enterprise dialect at its documented root paths
/// (its routes bring Redis-shaped 404/405 answers), with the same timeout and metrics as the
/// main router.
pub fn redis_router(state: AppState) -> Router {
    let timeout = Duration::from_millis(state.limits.request_timeout_ms);
    super::dialect::redis_routes()
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .with_state(state)
}

async fn openapi_doc(_caller: Caller) -> impl IntoResponse {
    openapi::document().await
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.is_ready() {
        Json(json!({"status": "ready", "position": state.ledger.committed_position()}))
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "starting"})),
        )
            .into_response()
    }
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
fn create_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))
}

/// Opens the token store; on a first start with no token at all, creates an admin token
/// and returns its secret (to be shown once; only its hash is stored).
pub fn open_tokens(
    data_dir: &std::path::Path,
    admin_token: Option<&str>,
) -> anyhow::Result<(TokenStore, Option<String>)> {
    let mut tokens = TokenStore::open(data_dir.join("tokens.json"))?;
    if let Some(t) = admin_token {
        tokens.add_ephemeral_admin(t);
    }
    let mut created = None;
    if tokens.is_empty() {
        let (_, secret) = tokens.create("admin", "default", Role::Admin)?;
        created = Some(secret);
    }
    Ok((tokens, created))
}

/// A running server, for tests and `serve`.
pub struct Running {
    pub addr: SocketAddr,
    /// Where the Redis Enterprise listener is bound, when configured.
    pub redis_addr: Option<SocketAddr>,
    /// The admin token created on this first start, if any.
    pub first_admin_token: Option<String>,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Starts the graceful shutdown and waits for it to finish.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.wait().await
    }

    /// Waits until the server has shut down (after the signal given to [`start`]).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("server task panicked")?
    }
}

/// The service a listener runs: the application once recovery is done (`slot` set), and
/// until then `/healthz` 200, `/readyz` 503 and 503 for everything else.
fn starting_front(slot: Arc<OnceLock<Router>>) -> Router {
    Router::new().fallback(move |req: Request| {
        let slot = slot.clone();
        async move {
            match slot.get() {
                Some(app) => app.clone().oneshot(req).await.into_response(),
                None if req.uri().path() == "/healthz" => healthz().await.into_response(),
                None if req.uri().path() == "/readyz" => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({"status": "starting"})),
                )
                    .into_response(),
                None => ApiError::unavailable("starting: recovering the log").into_response(),
            }
        }
    })
}

/// Binds, recovers, serves until [`Running::stop`] or `signal` resolves.
pub async fn start(
    config: ServeConfig,
    signal: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Running> {
    create_private_dir(&config.data_dir)?;
    let (tokens, first_admin_token) = open_tokens(&config.data_dir, config.admin_token.as_deref())?;
    let tokens = Arc::new(tokens);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let listener = CappedListener::new(listener, config.limits.connections_max);
    tracing::info!(%addr, "listening");
    let redis_listener = match config.redis_listen {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("cannot listen on {a} (--redis-listen)"))?,
        ),
        None => None,
    };
    let redis_addr = redis_listener
        .as_ref()
        .map(|l| l.local_addr())
        .transpose()?;
    let redis_listener =
        redis_listener.map(|l| CappedListener::new(l, config.limits.connections_max));
    if let Some(redis_addr) = redis_addr {
        tracing::info!(%redis_addr, "Redis Enterprise dialect listening");
    }

    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let slot: Arc<OnceLock<Router>> = Arc::new(OnceLock::new());
    let redis_slot: Arc<OnceLock<Router>> = Arc::new(OnceLock::new());
    let front = starting_front(slot.clone());
    let redis_front = starting_front(redis_slot.clone());

    // Open the ledger off the async workers: recovery reads and checks every segment.
    let cfg = config.clone();
    let (ledger, projection) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let projection = Arc::new(
            Projection::open(
                cfg.data_dir.join("projection"),
                ProjectionConfig {
                    cache_capacity_bytes: cfg.sled_cache_bytes,
                    ..Default::default()
                },
            )
            .context("cannot open the projection")?,
        );
        let mut lc = LedgerConfig::new(cfg.data_dir.join("log"));
        lc.segment_bytes = cfg.segment_bytes;
        lc.commit_batch_records_max = cfg.commit_batch_records_max;
        lc.commit_batch_bytes_max = cfg.commit_batch_bytes_max;
        lc.append_queue_max = cfg.append_queue_max;
        let store: Arc<dyn StateStore> = projection.clone();
        let ledger =
            Ledger::open(cfg.log_storage.0.clone(), lc, store).context("cannot open the ledger")?;
        Ok((Arc::new(ledger), projection))
    })
    .await??;
    if let Some(t) = &ledger.recovery().torn_tail {
        tracing::warn!(file = %t.file.display(), offset = t.offset, bytes = t.len, "recovered from a torn tail");
    }
    let state = AppState {
        ledger: ledger.clone(),
        projection: projection.clone(),
        tokens,
        limits: Arc::new(config.limits.clone()),
        metrics: Arc::new(metrics::Metrics::default()),
        ready: Arc::new(AtomicBool::new(false)),
        watchers: Arc::new(AtomicUsize::new(0)),
        public_metrics: config.public_metrics,
        shutdown: shutdown_rx.clone(),
    };
    let _ = slot.set(router(state.clone()));
    let _ = redis_slot.set(redis_router(state.clone()));
    state.ready.store(true, Ordering::Release);
    tracing::info!(position = ledger.committed_position(), "ready");

    let drain = Duration::from_millis(config.limits.drain_timeout_ms);
    let stop_rx = shutdown_rx.clone();
    let redis_stop_rx = shutdown_rx.clone();
    let shutdown_tx2 = shutdown_tx.clone();
    tokio::spawn(async move {
        signal.await;
        let _ = shutdown_tx2.send(true);
    });
    let task = tokio::spawn(async move {
        let serve = axum::serve(listener, front.into_make_service())
            .with_graceful_shutdown(async move {
                super::shutting_down(stop_rx).await;
                tracing::info!("shutting down: no new connections");
            })
            .into_future();
        // The Redis listener stops accepting at the same moment and shares the drain.
        let redis_serve = async move {
            match redis_listener {
                Some(l) => {
                    axum::serve(l, redis_front.into_make_service())
                        .with_graceful_shutdown(super::shutting_down(redis_stop_rx))
                        .await
                }
                None => Ok(()),
            }
        };
        let serve = async move {
            let (main, redis) = tokio::join!(serve, redis_serve);
            main.and(redis)
        };
        let mut serve = std::pin::pin!(serve);
        tokio::select! {
            r = &mut serve => r?,
            _ = super::shutting_down(shutdown_rx.clone()) => {
                // In-flight requests get `drain` to finish.
                if tokio::time::timeout(drain, &mut serve).await.is_err() {
                    tracing::warn!(?drain, "in-flight requests did not finish in time; closing them");
                }
            }
        }
        state.ready.store(false, Ordering::Release);
        // Every queued submission is fsynced and answered before the writer exits.
        let l = ledger.clone();
        tokio::task::spawn_blocking(move || l.close()).await?;
        let p = projection.clone();
        tokio::task::spawn_blocking(move || p.flush()).await??;

        tracing::info!("stopped cleanly");
        Ok(())
    });
    Ok(Running {
        addr,
        redis_addr,
        first_admin_token,
        shutdown: shutdown_tx,
        task,
    })
}

/// A TCP listener that serves at most `max` connections at once (`CONNECTIONS_MAX`, per
/// listener). A connection accepted beyond the cap is answered at once — without reading
/// its request — with `503 Service Unavailable`, `Retry-After: 1`, `Connection: close` and
/// the native JSON error body naming the limit, then closed. Refusing (rather than holding
/// the accept queue) tells a client why it waits, and keeps a flood of idle connections
/// from exhausting file descriptors; at most [`REFUSALS_IN_FLIGHT_MAX`] refusals are
/// written at once, connections beyond that are closed without an answer.
pub struct CappedListener {
    inner: tokio::net::TcpListener,
    max: usize,
    open: Arc<AtomicUsize>,
    refusing: Arc<AtomicUsize>,
    refused: u64,
    last_warning: Option<std::time::Instant>,
}

/// Most refusal answers being written at once (see [`CappedListener`]).
pub const REFUSALS_IN_FLIGHT_MAX: usize = 256;
/// How long a refused connection's unread request is drained before closing, so the client
/// reads the 503 rather than a reset.
const REFUSAL_LINGER: Duration = Duration::from_millis(500);

impl CappedListener {
    pub fn new(inner: tokio::net::TcpListener, max: usize) -> CappedListener {
        CappedListener {
            inner,
            max,
            open: Arc::new(AtomicUsize::new(0)),
            refusing: Arc::new(AtomicUsize::new(0)),
            refused: 0,
            last_warning: None,
        }
    }

    /// Connections being served now (a handle that stays valid after `serve` takes the
    /// listener).
    pub fn open_connections(&self) -> Arc<AtomicUsize> {
        self.open.clone()
    }
}

/// The body of the answer to a connection beyond the cap.
pub fn connections_refusal_body(max: usize) -> String {
    json!({"error": {
        "code": "unavailable",
        "message": format!("CONNECTIONS_MAX ({max}) connections are open; retry later"),
        "limit": "CONNECTIONS_MAX",
        "max": max,
    }})
    .to_string()
}

async fn refuse(mut stream: tokio::net::TcpStream, max: usize) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let body = connections_refusal_body(max);
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
        while drained < 64 * 1024 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok::<(), std::io::Error>(())
    };
    let _ = tokio::time::timeout(REFUSAL_LINGER, answer).await;
}

impl axum::serve::Listener for CappedListener {
    type Io = CountedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (CountedStream, SocketAddr) {
        loop {
            let (stream, addr) = axum::serve::Listener::accept(&mut self.inner).await;
            if self.open.fetch_add(1, Ordering::AcqRel) < self.max {
                let _ = stream.set_nodelay(true);
                return (
                    CountedStream {
                        stream,
                        open: self.open.clone(),
                    },
                    addr,
                );
            }
            self.open.fetch_sub(1, Ordering::AcqRel);
            self.refused += 1;
            if self
                .last_warning
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
            {
                // At most one line a second, however many connections are refused.
                tracing::warn!(%addr, max = self.max, refused_total = self.refused, "CONNECTIONS_MAX reached; refusing connections");
                self.last_warning = Some(std::time::Instant::now());
            }
            if self.refusing.fetch_add(1, Ordering::AcqRel) < REFUSALS_IN_FLIGHT_MAX {
                let refusing = self.refusing.clone();
                let max = self.max;
                tokio::spawn(async move {
                    refuse(stream, max).await;
                    refusing.fetch_sub(1, Ordering::AcqRel);
                });
            } else {
                self.refusing.fetch_sub(1, Ordering::AcqRel);
                drop(stream);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A served connection; gives its place under `CONNECTIONS_MAX` back when dropped.
pub struct CountedStream {
    stream: tokio::net::TcpStream,
    open: Arc<AtomicUsize>,
}

impl Drop for CountedStream {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl tokio::io::AsyncRead for CountedStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for CountedStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
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
