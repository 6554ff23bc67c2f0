//! HTTP benchmark (issue 4, "Speed"): the real server against a bare axum server built here
//! that does no storage, in the same run, on loopback, with the same Rust client.
//!
//! Three scenarios, each with `HTTP_BENCH_CONNECTIONS` (64) concurrent connections (one
//! `reqwest::Client` per connection, each task sending its next request when the previous
//! answer has been read in full):
//! - **POST events**: `POST /api/v1/actions/{id}/events` with a progress event; each
//!   connection has its own running action. The real server authenticates, parses,
//!   validates, group-commits to the log (write + fdatasync per batch), applies to sled and
//!   answers the action. The bare server parses the same body into the same
//!   [`EventJson`] type (and validates it the same way) and answers the bytes the real
//!   server answered. Target: real ≥ 50% of bare.
//! - **GET one action**: `GET /api/v1/actions/{id}`. Bare: the same bytes, no storage.
//!   Target: real ≥ 60% of bare.
//! - **GET list of 50**: `GET /api/v1/actions?resource_type=droplet&resource_id=bench&limit=50`
//!   over a resource with 200 actions. Bare: the same bytes. Target: real ≥ 60% of bare.
//!
//! Each server runs on its own tokio runtime with `HTTP_BENCH_SERVER_THREADS` (2) workers and
//! the client on a third; they share the machine's cores, so the client's cost is in both
//! figures alike. Each scenario alternates bare and real `HTTP_BENCH_ROUNDS` (2) times for
//! `HTTP_BENCH_SECS` (3) seconds each and keeps each server's best round. Any answer other
//! than the expected status fails the run.
//!
//! Under each scenario's rates a second line gives the CPU time per request of each side,
//! by thread group (`/proc/self/task/*/schedstat`): the bare server's workers, the real
//! server's split into its HTTP workers, the ledger's writer and applier threads and sled's
//! threads, and the client's in either round. On a shared VM the rates move with the
//! neighbours (steal time); the work per request moves much less, so this is the line to
//! compare between two builds.
//!
//! `HTTP_BENCH_ONLY=post|one|list` runs one scenario (to profile it); `HTTP_BENCH_METRICS=1`
//! prints the real server's append, fsync and fsync-time counters at the end.
//!
//! Run with `cargo bench --bench http`. `cargo test` never builds or runs it.

mod common;

use action_ledger::http::server::{self, ServeConfig};
use action_ledger::http::wire::EventJson;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use common::{env_or, ms, percentile, runtime};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const ADMIN: &str = "http-bench-admin-token";
const LIST_RESOURCE_ACTIONS: usize = 200;

/// What the bare server answers: the real server's bytes, captured before the run.
struct Canned {
    action: Bytes,
    list: Bytes,
    event: Bytes,
}

fn json_bytes(status: StatusCode, b: &Bytes) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        b.clone(),
    )
        .into_response()
}

fn bare_router(canned: Arc<Canned>) -> Router {
    let c1 = canned.clone();
    let c2 = canned.clone();
    let c3 = canned;
    Router::new()
        .route(
            "/api/v1/actions",
            get(move || {
                let c = c1.clone();
                async move { json_bytes(StatusCode::OK, &c.list) }
            }),
        )
        .route(
            "/api/v1/actions/{id}",
            get(move |Path(_id): Path<String>| {
                let c = c2.clone();
                async move { json_bytes(StatusCode::OK, &c.action) }
            }),
        )
        .route(
            "/api/v1/actions/{id}/events",
            post(move |Path(_id): Path<String>, body: Bytes| {
                let c = c3.clone();
                async move {
                    // The same parsing and validation the real handler does before it
                    // submits.
                    let parsed: EventJson = match serde_json::from_slice(&body) {
                        Ok(p) => p,
                        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
                    };
                    match parsed.into_body() {
                        Ok(_) => json_bytes(StatusCode::OK, &c.event),
                        Err((f, r)) => {
                            (StatusCode::BAD_REQUEST, format!("{f}: {r}")).into_response()
                        }
                    }
                }
            }),
        )
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Scenario {
    PostEvent,
    GetOne,
    GetList,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::PostEvent => "POST event",
            Scenario::GetOne => "GET one action",
            Scenario::GetList => "GET list of 50",
        }
    }

    fn target(self) -> f64 {
        match self {
            Scenario::PostEvent => 0.5,
            _ => 0.6,
        }
    }
}

struct Round {
    requests: u64,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
    /// CPU time used during the round, by thread group.
    cpu: BTreeMap<&'static str, Duration>,
}

/// The group a thread of this process counts in: the client, either server's runtime, the
/// ledger's threads (writer, applier) and sled's (flusher, I/O pool).
fn thread_group(comm: &str) -> &'static str {
    match comm {
        "client" => "client",
        "bare-server" => "bare",
        "real-server" => "server",
        c if c.starts_with("ledger") => "ledger",
        c if c.starts_with("sled") || c == "log flusher" => "sled",
        _ => "other",
    }
}

/// CPU time each thread group has used so far (Linux: `/proc/self/task/*/schedstat`, whose
/// first field is the nanoseconds on CPU). Threads that ended are no longer counted, which
/// is why the rounds take differences of live threads only: the servers' threads live on.
fn cpu_by_group() -> BTreeMap<&'static str, Duration> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let ns = std::fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        *out.entry(thread_group(comm.trim())).or_default() += Duration::from_nanos(ns);
    }
    out
}

fn cpu_since(
    before: &BTreeMap<&'static str, Duration>,
    after: BTreeMap<&'static str, Duration>,
) -> BTreeMap<&'static str, Duration> {
    after
        .into_iter()
        .map(|(g, t)| {
            (
                g,
                t.saturating_sub(before.get(g).copied().unwrap_or_default()),
            )
        })
        .collect()
}

impl Round {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs one scenario against `base` with `conns` connections for `secs`.
async fn load(
    base: &str,
    scenario: Scenario,
    conns: usize,
    secs: f64,
    action_ids: &[u64],
    one_id: u64,
) -> Round {
    let cpu_before = cpu_by_group();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::with_capacity(conns);
    for c in 0..conns {
        let base = base.to_string();
        let action_id = action_ids[c % action_ids.len()];
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .expect("client");
            let mut lat = Vec::new();
            let mut i = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                let (req, expect) = match scenario {
                    Scenario::PostEvent => {
                        i += 1;
                        let body = format!(
                            r#"{{"type":"progress","progress":{},"state":"copying","message":"block {i} of 1000"}}"#,
                            (i % 100) as f64
                        );
                        (
                            client
                                .post(format!("{base}/api/v1/actions/{action_id}/events"))
                                .header(header::CONTENT_TYPE, "application/json")
                                .body(body),
                            StatusCode::OK,
                        )
                    }
                    Scenario::GetOne => (
                        client.get(format!("{base}/api/v1/actions/{one_id}")),
                        StatusCode::OK,
                    ),
                    Scenario::GetList => (
                        client.get(format!(
                            "{base}/api/v1/actions?resource_type=droplet&resource_id=bench&limit=50"
                        )),
                        StatusCode::OK,
                    ),
                };
                let resp = req.bearer_auth(ADMIN).send().await.expect("request");
                let status = resp.status();
                let body = resp.bytes().await.expect("body");
                assert_eq!(
                    status.as_u16(),
                    expect.as_u16(),
                    "{}: {}",
                    scenario.name(),
                    String::from_utf8_lossy(&body)
                );
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client task"));
    }
    let elapsed = start.elapsed();
    let cpu = cpu_since(&cpu_before, cpu_by_group());
    all.sort_unstable();
    Round {
        requests: all.len() as u64,
        elapsed,
        p50: percentile(&all, 0.5),
        p99: percentile(&all, 0.99),
        cpu,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; anything else (`cargo test --benches`) gets a smoke run.
    let benching = std::env::args().any(|a| a == "--bench");
    let conns: usize = env_or("HTTP_BENCH_CONNECTIONS", 64);
    let secs: f64 = env_or("HTTP_BENCH_SECS", if benching { 3.0 } else { 0.3 });
    let rounds: usize = env_or("HTTP_BENCH_ROUNDS", if benching { 2 } else { 1 });
    let server_threads: usize = env_or("HTTP_BENCH_SERVER_THREADS", 2);
    assert!(conns >= 1 && rounds >= 1 && secs > 0.0);

    let dir = tempfile::tempdir().expect("temp dir");
    let real_rt = runtime(server_threads, "real-server");
    let bare_rt = runtime(server_threads, "bare-server");
    let client_rt = runtime(2, "client");

    let mut config = ServeConfig::new(dir.path().join("data"), "127.0.0.1:0".parse().unwrap());
    config.admin_token = Some(ADMIN.into());
    let running = real_rt
        .block_on(server::start(config, std::future::pending()))
        .expect("start the real server");
    let real = format!("http://{}", running.addr);

    // Seed: one running action per connection (POST events), and a resource with
    // LIST_RESOURCE_ACTIONS actions (GET list, GET one).
    let (action_ids, one_id, canned) = client_rt.block_on(async {
        let client = reqwest::Client::new();
        let create = |resource: String| {
            let client = client.clone();
            let real = real.clone();
            async move {
                let resp = client
                    .post(format!("{real}/api/v1/actions"))
                    .bearer_auth(ADMIN)
                    .json(&serde_json::json!({"type": "snapshot", "user": "bench",
                        "resource": {"type": "droplet", "id": resource}}))
                    .send()
                    .await
                    .expect("create");
                assert_eq!(resp.status(), StatusCode::CREATED);
                let v: serde_json::Value = resp.json().await.expect("json");
                v["id"].as_u64().expect("id")
            }
        };
        let mut ids = Vec::new();
        for c in 0..conns {
            let id = create(format!("post-{c}")).await;
            let resp = client
                .post(format!("{real}/api/v1/actions/{id}/events"))
                .bearer_auth(ADMIN)
                .json(&serde_json::json!({"type": "started"}))
                .send()
                .await
                .expect("start");
            assert_eq!(resp.status(), StatusCode::OK);
            ids.push(id);
        }
        let mut seeded = Vec::new();
        for chunk in 0..LIST_RESOURCE_ACTIONS / 20 {
            let _ = chunk;
            let batch: Vec<_> = (0..20).map(|_| create("bench".into())).collect();
            seeded.extend(futures_util::future::join_all(batch).await);
        }
        let one_id = seeded[seeded.len() / 2];
        let fetch = |path: String| {
            let client = client.clone();
            let real = real.clone();
            async move {
                let resp = client
                    .get(format!("{real}{path}"))
                    .bearer_auth(ADMIN)
                    .send()
                    .await
                    .expect("get");
                assert_eq!(resp.status(), StatusCode::OK);
                resp.bytes().await.expect("body")
            }
        };
        let action = fetch(format!("/api/v1/actions/{one_id}")).await;
        let list =
            fetch("/api/v1/actions?resource_type=droplet&resource_id=bench&limit=50".into()).await;
        let listed: serde_json::Value = serde_json::from_slice(&list).expect("list json");
        assert_eq!(
            listed["actions"].as_array().map(Vec::len),
            Some(50),
            "{listed}"
        );
        let event = client
            .post(format!("{real}/api/v1/actions/{}/events", ids[0]))
            .bearer_auth(ADMIN)
            .json(&serde_json::json!({"type": "progress", "progress": 1.0,
                "state": "copying", "message": "block 0 of 1000"}))
            .send()
            .await
            .expect("event");
        assert_eq!(event.status(), StatusCode::OK);
        let event = event.bytes().await.expect("body");
        (
            ids,
            one_id,
            Arc::new(Canned {
                action,
                list,
                event,
            }),
        )
    });

    let bare_listener = bare_rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind the bare server");
    let bare_addr: SocketAddr = bare_listener.local_addr().expect("addr");
    let bare = format!("http://{bare_addr}");
    let app = bare_router(canned);
    bare_rt.spawn(async move {
        use axum::serve::ListenerExt as _;
        // Same socket option as the real server's listener.
        let l = bare_listener.tap_io(|s| {
            let _ = s.set_nodelay(true);
        });
        axum::serve(l, app).await.expect("bare server");
    });

    println!(
        "http bench: {conns} connections, {rounds} x {secs} s per server and scenario, {server_threads} server worker threads each, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut failed = Vec::new();
    // `HTTP_BENCH_ONLY=post|one|list` runs one scenario (for profiling).
    let only = std::env::var("HTTP_BENCH_ONLY").ok();
    for scenario in [Scenario::PostEvent, Scenario::GetOne, Scenario::GetList] {
        if only
            .as_deref()
            .is_some_and(|o| !scenario.name().to_lowercase().contains(o))
        {
            continue;
        }
        let mut best_bare: Option<Round> = None;
        let mut best_real: Option<Round> = None;
        for _ in 0..rounds {
            for (base, best) in [(&bare, &mut best_bare), (&real, &mut best_real)] {
                let r = client_rt.block_on(load(base, scenario, conns, secs, &action_ids, one_id));
                if best.as_ref().is_none_or(|b| r.rate() > b.rate()) {
                    *best = Some(r);
                }
            }
        }
        let (b, r) = (best_bare.expect("ran"), best_real.expect("ran"));
        let ratio = r.rate() / b.rate();
        let ok = ratio >= scenario.target();
        println!(
            "{:<15} | bare {:>8.0} req/s (p50 {} ms, p99 {} ms) | real {:>8.0} req/s (p50 {} ms, p99 {} ms) | real/bare {:>5.1}% (target >= {:.0}%) {}",
            scenario.name(),
            b.rate(),
            ms(b.p50),
            ms(b.p99),
            r.rate(),
            ms(r.p50),
            ms(r.p99),
            ratio * 100.0,
            scenario.target() * 100.0,
            if ok { "ok" } else { "MISSED" }
        );
        if !ok {
            failed.push(scenario.name());
        }
        // CPU per request by thread group: noisier machines change the rates, much less the
        // work each request costs.
        let per_request = |round: &Round, groups: &[&str]| -> f64 {
            let cpu: Duration = groups.iter().filter_map(|g| round.cpu.get(g)).sum();
            cpu.as_secs_f64() * 1e6 / round.requests.max(1) as f64
        };
        let (bare_cpu, client_bare) = (per_request(&b, &["bare"]), per_request(&b, &["client"]));
        let (real_cpu, client_real) = (
            per_request(&r, &["server", "ledger", "sled"]),
            per_request(&r, &["client"]),
        );
        println!(
            "{:<15} | CPU per request: bare server {bare_cpu:.1} µs (client {client_bare:.1}) | real server {real_cpu:.1} µs = http {:.1} + ledger {:.1} + sled {:.1} (client {client_real:.1}) | server CPU ratio bare/real {:.1}%",
            "",
            per_request(&r, &["server"]),
            per_request(&r, &["ledger"]),
            per_request(&r, &["sled"]),
            bare_cpu / real_cpu * 100.0,
        );
    }
    if !failed.is_empty() {
        println!("targets missed: {}", failed.join(", "));
    }
    // `HTTP_BENCH_METRICS=1` prints the real server's write-path counters (batch sizes).
    if std::env::var_os("HTTP_BENCH_METRICS").is_some() {
        let text = client_rt.block_on(async {
            reqwest::Client::new()
                .get(format!("{real}/metrics"))
                .bearer_auth(ADMIN)
                .send()
                .await
                .expect("metrics")
                .text()
                .await
                .expect("metrics body")
        });
        for line in text.lines().filter(|l| {
            ["appends_total", "fsyncs_total", "fsync_seconds"]
                .iter()
                .any(|m| l.starts_with(&format!("action_ledger_{m}")))
        }) {
            println!("real server: {line}");
        }
    }
    real_rt
        .block_on(running.stop())
        .expect("stop the real server");
}
