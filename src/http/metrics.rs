//! Prometheus metrics: request counts and latency histograms by route and status, plus the
//! ledger's own gauges and counters, rendered as Prometheus text at `/metrics`.

use super::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

/// Upper bounds of the latency histogram buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default, Clone)]
struct Series {
    count: u64,
    sum_seconds: f64,
    buckets: [u64; BUCKETS.len()],
}

#[derive(Default)]
pub struct Metrics {
    /// route template → (method, status, latency series). Routes are templates
    /// (`/api/v1/actions/{id}`), so the label set stays bounded; a request allocates only
    /// the first time its combination is seen.
    requests: Mutex<BTreeMap<String, Vec<MethodSeries>>>,
}

/// Method, status and the latency series of one route's requests.
type MethodSeries = (String, u16, Series);

impl Metrics {
    fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let mut map = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        if !map.contains_key(route) {
            map.insert(route.to_string(), Vec::new());
        }
        let series = map.get_mut(route).expect("inserted above");
        let i = match series
            .iter()
            .position(|(m, st, _)| m == method && *st == status)
        {
            Some(i) => i,
            None => {
                series.push((method.to_string(), status, Series::default()));
                series.len() - 1
            }
        };
        let s = &mut series[i].2;
        s.count += 1;
        s.sum_seconds += seconds;
        for (i, le) in BUCKETS.iter().enumerate() {
            if seconds <= *le {
                s.buckets[i] += 1;
            }
        }
    }
}

/// The layer recording every request: count and latency by method, route template and
/// status. A plain tower layer (no boxed future, no per-request clone of the inner service).
#[derive(Clone)]
pub struct TrackLayer(pub Arc<Metrics>);

impl<S> tower::Layer<S> for TrackLayer {
    type Service = Track<S>;
    fn layer(&self, inner: S) -> Track<S> {
        Track {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// See [`TrackLayer`].
#[derive(Clone)]
pub struct Track<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> tower::Service<Request> for Track<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Tracked<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let route = req.extensions().get::<MatchedPath>().cloned();
        // The access log's line names the same route template.
        if let (Some(r), Some(info)) = (&route, req.extensions().get::<Arc<super::access::Info>>())
        {
            info.set_route(r);
        }
        let method = req.method().clone();
        Tracked {
            start: Instant::now(),
            inner: self.inner.call(req),
            metrics: self.metrics.clone(),
            route,
            method,
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's answer, observed when it is ready.
    pub struct Tracked<F> {
        #[pin]
        inner: F,
        metrics: Arc<Metrics>,
        route: Option<MatchedPath>,
        method: Method,
        start: Instant,
    }
}

impl<F, E> Future for Tracked<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        if let Ok(resp) = &out {
            this.metrics.observe(
                this.method.as_str(),
                this.route.as_ref().map_or("unmatched", MatchedPath::as_str),
                resp.status().as_u16(),
                this.start.elapsed().as_secs_f64(),
            );
        }
        Poll::Ready(out)
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The process's families under their conventional names (those of the Prometheus Go and
/// Rust clients), read from `/proc/self` on Linux; none elsewhere, and a family whose
/// source cannot be read is left out.
pub fn process_metrics() -> Vec<(&'static str, &'static str, &'static str, f64)> {
    #[cfg(target_os = "linux")]
    {
        linux_process_metrics()
    }
    #[cfg(not(target_os = "linux"))]
    {
        Vec::new()
    }
}

/// Linux's clock ticks per second in `/proc` (`USER_HZ`, 100 on every architecture this
/// server is built for; reading `sysconf(_SC_CLK_TCK)` would need unsafe code).
#[cfg(target_os = "linux")]
const USER_HZ: f64 = 100.0;

#[cfg(target_os = "linux")]
fn linux_process_metrics() -> Vec<(&'static str, &'static str, &'static str, f64)> {
    let mut rows = Vec::new();
    // /proc/self/stat: the fields after the command name (which may hold spaces), from
    // field 3 (state) on: utime is field 14, stime 15, starttime 22, vsize 23.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    if let (Some(utime), Some(stime)) = (field(14), field(15)) {
        rows.push((
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            (utime + stime) / USER_HZ,
        ));
    }
    let boot_time = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    });
    if let (Some(boot), Some(start)) = (boot_time, field(22)) {
        rows.push((
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            boot + start / USER_HZ,
        ));
    }
    if let Some(vsize) = field(23) {
        rows.push((
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            vsize,
        ));
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rss_kb = status.lines().find_map(|l| {
        l.strip_prefix("VmRSS:")
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
    });
    if let Some(kb) = rss_kb {
        rows.push((
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            kb * 1024.0,
        ));
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        // The directory's own descriptor, open while it is read, is not counted.
        let open = dir.count().saturating_sub(1);
        rows.push((
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            open as f64,
        ));
    }
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Max open files"))
                .and_then(|rest| rest.split_whitespace().next().map(str::to_string))
        })
        .and_then(|soft| soft.parse::<f64>().ok());
    if let Some(max) = max_fds {
        rows.push((
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max,
        ));
    }
    rows
}

/// `GET /metrics`.
/// One family per row (name, type, help, value): its HELP and TYPE lines, then its sample.
fn families(out: &mut String, rows: &[(&str, &str, &str, f64)]) {
    for (name, kind, help, value) in rows {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
}

/// Cluster mode's families: role, epoch, positions, lag, reachability of the cluster log,
/// forwarding and commits.
fn cluster_metrics(
    out: &mut String,
    face: &crate::http::cluster::ClusterFace,
    stats: &crate::ledger::LedgerStats,
) {
    let status = face.node.status();
    let leader = matches!(status.role, crate::cluster::Role::Leader { .. });
    let epoch = status.role.epoch();
    let gauges: [(&str, &str, &str, f64); 11] = [
        (
            "action_ledger_cluster_leader",
            "gauge",
            "1 while this node holds the lease and may write, else 0.",
            f64::from(u8::from(leader)),
        ),
        (
            "action_ledger_cluster_epoch",
            "gauge",
            "The last leadership epoch this node has seen.",
            epoch as f64,
        ),
        (
            "action_ledger_cluster_position",
            "gauge",
            "The highest position this node knows the cluster log has committed.",
            status.cluster_position as f64,
        ),
        (
            "action_ledger_cluster_lag_positions",
            "gauge",
            "Committed positions this node has not applied yet.",
            (status.cluster_position - status.applied_position) as f64,
        ),
        (
            "action_ledger_cluster_lag_seconds",
            "gauge",
            "For the last batch copied from the cluster log: from its commit to its local append.",
            status.lag_micros as f64 / 1e6,
        ),
        (
            "action_ledger_cluster_log_reachable",
            "gauge",
            "1 while this node has heard from PostgreSQL within CLUSTER_LOG_STALE_MS, else 0 (then /readyz answers 503 cluster_log_unreachable).",
            f64::from(u8::from(status.cluster_log_reachable())),
        ),
        (
            "action_ledger_cluster_log_last_contact_seconds",
            "gauge",
            "Time since this node last heard from PostgreSQL (a replica read, a notification, a lease answer).",
            status.last_contact.as_secs_f64(),
        ),
        (
            "action_ledger_cluster_forwarded_total",
            "counter",
            "Requests this node forwarded to the leader.",
            face.forwarded.load(Ordering::Relaxed) as f64,
        ),
        (
            "action_ledger_cluster_commits_total",
            "counter",
            "Batches this node committed (or tried to) in the cluster log as leader.",
            stats.cluster_commits.load(Ordering::Relaxed) as f64,
        ),
        (
            "action_ledger_cluster_commit_seconds_total",
            "counter",
            "Time spent committing batches in the cluster log as leader (one round trip each).",
            stats.cluster_commit_micros.load(Ordering::Relaxed) as f64 / 1e6,
        ),
        (
            "action_ledger_cluster_replicated_total",
            "counter",
            "Records this node copied from the cluster log.",
            stats.records_replicated.load(Ordering::Relaxed) as f64,
        ),
    ];
    families(out, &gauges);
}

pub async fn render(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    if !state.public_metrics && super::auth::authenticate(&headers, &state.tokens).is_err() {
        return super::error::ApiError::unauthorized().into_response();
    }
    // Every family has one HELP and one TYPE line, before its samples; a family without
    // samples (the request histogram before the first request is counted) has neither.
    let mut out = String::new();
    {
        let map = state
            .metrics
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut rows: Vec<(&str, &str, u16, &Series)> = map
            .iter()
            .flat_map(|(route, series)| {
                series
                    .iter()
                    .map(move |(method, status, s)| (method.as_str(), route.as_str(), *status, s))
            })
            .collect();
        rows.sort_by_key(|&(method, route, status, _)| (method, route, status));
        if !rows.is_empty() {
            out.push_str(
                "# HELP action_ledger_http_request_duration_seconds HTTP requests by method, route template and status: count and latency.\n\
                 # TYPE action_ledger_http_request_duration_seconds histogram\n",
            );
        }
        for (method, route, status, s) in rows {
            let labels = format!(
                "method=\"{}\",route=\"{}\",status=\"{status}\"",
                escape(method),
                escape(route)
            );
            for (i, le) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "action_ledger_http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {}",
                    s.buckets[i]
                );
            }
            let _ = writeln!(
                out,
                "action_ledger_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(
                out,
                "action_ledger_http_request_duration_seconds_sum{{{labels}}} {}",
                s.sum_seconds
            );
            let _ = writeln!(
                out,
                "action_ledger_http_request_duration_seconds_count{{{labels}}} {}",
                s.count
            );
        }
    }
    let stats = state.ledger.stats();
    let gauges: [(&str, &str, &str, f64); 11] = [
        (
            "action_ledger_log_position",
            "gauge",
            "Last committed log position.",
            state.ledger.committed_position() as f64,
        ),
        (
            "action_ledger_projection_applied_position",
            "gauge",
            "Last log position applied to the projection.",
            state.ledger.store().applied_position() as f64,
        ),
        (
            "action_ledger_projection_lag_records",
            "gauge",
            "Committed records not yet applied to the projection.",
            state
                .ledger
                .committed_position()
                .saturating_sub(state.ledger.store().applied_position()) as f64,
        ),
        (
            "action_ledger_appends_total",
            "counter",
            "Log records appended (accepted submissions).",
            stats.records.load(Ordering::Relaxed) as f64,
        ),
        (
            "action_ledger_fsyncs_total",
            "counter",
            "fdatasync calls of the log writer (one per commit batch).",
            stats.fsyncs.load(Ordering::Relaxed) as f64,
        ),
        (
            "action_ledger_fsync_seconds_total",
            "counter",
            "Time spent in the log writer's write+fdatasync.",
            stats.fsync_micros.load(Ordering::Relaxed) as f64 / 1e6,
        ),
        (
            "action_ledger_fsync_seconds_max",
            "gauge",
            "Slowest write+fdatasync since start.",
            stats.fsync_micros_max.load(Ordering::Relaxed) as f64 / 1e6,
        ),
        (
            "action_ledger_rejected_total",
            "counter",
            "Submissions refused by validation (nothing written).",
            stats.rejected.load(Ordering::Relaxed) as f64,
        ),
        (
            "action_ledger_watchers",
            "gauge",
            "Open watch streams.",
            state.watchers.load(Ordering::Relaxed) as f64,
        ),
        (
            "action_ledger_read_threads",
            "gauge",
            "Threads of the read pool (read_threads).",
            state.reads.threads() as f64,
        ),
        (
            "action_ledger_reads_waiting",
            "gauge",
            "Reads waiting for a thread of the read pool.",
            state.reads.waiting() as f64,
        ),
    ];
    families(&mut out, &gauges);
    if let Some(face) = &state.cluster {
        cluster_metrics(&mut out, face, stats);
    }
    families(&mut out, &process_metrics());
    let fsyncs = stats.fsyncs.load(Ordering::Relaxed).max(1);
    let _ = writeln!(
        out,
        "# HELP action_ledger_batch_records_mean Mean records per fsync batch since start.\n# TYPE action_ledger_batch_records_mean gauge\naction_ledger_batch_records_mean {}",
        stats.records.load(Ordering::Relaxed) as f64 / fsyncs as f64
    );
    ([("content-type", "text/plain; version=0.0.4")], out).into_response()
}
