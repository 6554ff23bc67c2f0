//! Cluster-mode benchmark (issue 17, "Speed"): durable creates over HTTP, on this one
//! machine, in one run, against
//!
//! 1. **embedded**: the single node, no cluster (local segment log + fdatasync per batch);
//! 2. **1 node + PG**: one cluster node on PostgreSQL (each group-commit batch is one
//!    fenced PostgreSQL transaction, then the local append), writes to it;
//! 3. **3 nodes + PG, leader**: three nodes on one PostgreSQL, writes to the leader;
//! 4. **3 nodes + PG, follower**: the same cluster, writes to a follower, which forwards
//!    each to the leader (server-side proxy);
//! 5. **plain PG**: PostgreSQL alone doing the same rows the naive way — one tokio-postgres
//!    connection per client, each request one autocommit `INSERT` of one row (a jsonb
//!    snapshot of the action as the ledger answers it, its resource, a bigserial id, an index
//!    on the resource), `synchronous_commit` on. No HTTP layer in front: this favours PG;
//! 6. **PG-table service over HTTP**: the same inserts behind an axum server built here (its
//!    own runtime, same worker count as a node; 64 connections to PostgreSQL, round robin),
//!    driven by the same HTTP client as cases 1–4 — the like-for-like naive service.
//!
//! Each case is `CLUSTER_BENCH_CONNECTIONS` (64) concurrent connections, each sending its
//! next request when the previous answer has been read in full: `POST /api/v1/actions`
//! creating an action on a resource of its own (distinct resource per request, so no
//! exclusivity conflicts), answered 201 only once durable. The cases alternate
//! `CLUSTER_BENCH_ROUNDS` (2) times for `CLUSTER_BENCH_SECS` (3) s each; each case keeps its
//! best round (by rate).
//!
//! The nodes run **in this process**: each its own tokio runtime
//! (`CLUSTER_BENCH_SERVER_THREADS`, 2 workers), own data directory, own loopback port, as
//! `serve --cluster-log … --node-id …` would; the client has a runtime of its own (2
//! workers). All of it — the five servers, the client and PostgreSQL — shares the machine's
//! cores. All nodes stay up through the whole run (the idle ones renew their lease or poll).
//!
//! **Follower lag** (during case 3's rounds): a 65th connection writes through the leader,
//! takes the answer's `X-Ledger-Position` P, then reads the action on a follower with
//! `?min_position=P`; the visibility lag is the time from the write's answer to that read's
//! answer (it includes one loaded GET round trip; the same GET without `min_position` right
//! after is reported as the floor). A sampler also reads each follower's `/readyz`
//! `lag_positions` every 50 ms.
//!
//! Under each case, the leader's (or embedded node's) `/metrics` deltas for the best round:
//! records per batch, PostgreSQL commit time per batch (`action_ledger_cluster_commit_seconds_total`
//! / `action_ledger_cluster_commits_total`), local write+fdatasync time per batch; and CPU per
//! request: this process's threads (all nodes), the client's, and the PostgreSQL server's
//! processes (postmaster and its children, `/proc/*/stat`).
//!
//! **Reads** (after the write cases, no write load): the same GET workload — three of four
//! requests `GET /api/v1/actions/{id}` of an id both ledgers hold, one a list page
//! `GET /api/v1/actions?limit=20` —, `CLUSTER_BENCH_CONNECTIONS` connections,
//! `CLUSTER_BENCH_SECS` per round, against the embedded node and against a follower of the
//! 3-node cluster, alternating, `CLUSTER_BENCH_ROUNDS` times. CPU per read is the serving
//! node's threads' CPU time (its runtime's workers and blocking threads, named after it:
//! `/proc/self/task/*/schedstat`, before and after) over the reads it answered; the follower's
//! includes its idle cluster work (the replica's poll, LISTEN, the lease reads), which is the
//! point: a follower read needs no coordination, so the two should be equal.
//!
//! The bench starts its own throwaway PostgreSQL with the cluster tests' harness
//! (tests/it/pg.rs: Debian's binaries, initdb as the `postgres` user when run as root, a free
//! loopback port, `fsync` and `synchronous_commit` on, PostgreSQL's default memory settings);
//! a detached watchdog stops it and deletes its directory once the bench exits.
//!
//! Run with `cargo bench --bench cluster`. `cargo test` never builds or runs it.

mod common;
// The cluster tests' PostgreSQL harness, so both start it the same way; the bench calls
// only part of it.
#[allow(dead_code)]
#[path = "../tests/it/host.rs"]
mod host;
#[allow(dead_code)]
#[path = "../tests/it/pg.rs"]
mod pg;

use action_ledger::cluster::ClusterSettings;
use action_ledger::http::server::{self, Running, ServeConfig};
use common::{env_or, ms, percentile, runtime};
use reqwest::StatusCode;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ADMIN: &str = "cluster-bench-admin-token";
const PLAIN_TABLE: &str = "CREATE TABLE actions (
    id bigserial PRIMARY KEY,
    resource_type text NOT NULL,
    resource_id text NOT NULL,
    snapshot jsonb NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX actions_resource ON actions (resource_type, resource_id);";
const PLAIN_INSERT: &str =
    "INSERT INTO actions (resource_type, resource_id, snapshot) VALUES ('droplet', $1, $2::text::jsonb)";
/// The resource id in the captured answer that the plain case replaces per row.
const TEMPLATE_RESOURCE: &str = "template-resource-0000";

/// A ledger node of this process.
struct Node {
    rt: tokio::runtime::Runtime,
    running: Option<Running>,
    base: String,
}

fn start_node(dir: &Path, name: &str, threads: usize, cluster_log: Option<&str>) -> Node {
    let rt = runtime(threads, &format!("node-{name}"));
    let mut config = ServeConfig::new(dir.join(name), "127.0.0.1:0".parse().unwrap());
    config.admin_token = Some(ADMIN.into());
    if let Some(url) = cluster_log {
        config.cluster = ClusterSettings {
            log: Some(url.to_string()),
            node_id: Some(name.to_string()),
            ..ClusterSettings::new()
        };
    }
    let running = rt
        .block_on(server::start(config, std::future::pending()))
        .unwrap_or_else(|e| panic!("start node {name}: {e}"));
    let base = format!("http://{}", running.addr);
    Node {
        rt,
        running: Some(running),
        base,
    }
}

impl Node {
    fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            self.rt.block_on(r.stop()).expect("stop a node");
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Case {
    Embedded,
    OneNode,
    Leader3,
    Follower3,
    PlainPg,
    PgService,
}

impl Case {
    const ALL: [Case; 6] = [
        Case::Embedded,
        Case::OneNode,
        Case::Leader3,
        Case::Follower3,
        Case::PlainPg,
        Case::PgService,
    ];
    fn name(self) -> &'static str {
        match self {
            Case::Embedded => "embedded single node",
            Case::OneNode => "1 node + PG",
            Case::Leader3 => "3 nodes + PG, via leader",
            Case::Follower3 => "3 nodes + PG, via follower",
            Case::PlainPg => "plain PG, INSERT per request",
            Case::PgService => "PG-table service over HTTP",
        }
    }
    fn short(self) -> &'static str {
        match self {
            Case::Embedded => "emb",
            Case::OneNode => "one",
            Case::Leader3 => "ldr",
            Case::Follower3 => "fol",
            Case::PlainPg => "pg",
            Case::PgService => "svc",
        }
    }
}

struct Round {
    requests: u64,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
    /// CPU during the round: this process but the client, the client, PostgreSQL.
    cpu_nodes: Duration,
    cpu_client: Duration,
    cpu_pg: Duration,
    /// The writing node's `/metrics` deltas (none for plain PG).
    metrics: BTreeMap<String, f64>,
}

impl Round {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    fn per_request_us(&self, d: Duration) -> f64 {
        d.as_secs_f64() * 1e6 / self.requests.max(1) as f64
    }
    fn metric(&self, name: &str) -> f64 {
        self.metrics.get(name).copied().unwrap_or(0.0)
    }
}

/// This process's CPU time, split into the client's threads and all others.
fn own_cpu() -> (Duration, Duration) {
    let (mut client, mut rest) = (Duration::ZERO, Duration::ZERO);
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return (client, rest);
    };
    for task in tasks.flatten() {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let ns = std::fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        if comm.trim() == "client" {
            client += Duration::from_nanos(ns);
        } else {
            rest += Duration::from_nanos(ns);
        }
    }
    (client, rest)
}

/// CPU time of this process's threads whose name starts with `prefix` (one node's runtime:
/// its workers and blocking threads).
fn threads_cpu(prefix: &str) -> Duration {
    let mut total = Duration::ZERO;
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if !comm.trim().starts_with(prefix) {
            continue;
        }
        let ns = std::fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        total += Duration::from_nanos(ns);
    }
    total
}

/// `conns` connections reading from `base` for `secs`: three of four requests fetch one
/// action (ids `1..=ids`, spread), one a list page. Every answer must be 200.
async fn read_load(base: &str, conns: usize, secs: f64, ids: u64) -> Vec<Duration> {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::with_capacity(conns);
    for c in 0..conns {
        let base = base.to_string();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .expect("client");
            let mut lat = Vec::new();
            let mut i = c as u64;
            while Instant::now() < deadline {
                i += 1;
                let url = if i % 4 == 0 {
                    format!("{base}/api/v1/actions?limit=20")
                } else {
                    format!("{base}/api/v1/actions/{}", 1 + (i * 7919) % ids)
                };
                let req = client.get(url).bearer_auth(ADMIN);
                lat.push(timed(req, StatusCode::OK, &base).await);
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client task"));
    }
    all
}

/// Sends `req`, checks that it is answered `want`, and returns how long the answer took.
async fn timed(req: reqwest::RequestBuilder, want: StatusCode, base: &str) -> Duration {
    let t = Instant::now();
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let body = resp.bytes().await.expect("body");
    assert_eq!(status, want, "{base}: {}", String::from_utf8_lossy(&body));
    t.elapsed()
}

/// CPU time (user + system) of the postmaster `pid` and its children.
fn pg_cpu(postmaster: u32) -> Duration {
    let tick = 100.0; // USER_HZ on Linux
    let mut total = 0u64;
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // Fields after the command's closing parenthesis: state ppid … utime(14) stime(15).
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ppid = f.get(1).and_then(|s| s.parse::<u32>().ok()).unwrap_or(0);
        let field = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        if pid == postmaster {
            // Its own time and that of its children that exited (cutime, cstime).
            total += field(11) + field(12) + field(13) + field(14);
        } else if ppid == postmaster {
            total += field(11) + field(12);
        }
    }
    Duration::from_secs_f64(total as f64 / tick)
}

/// The `action_ledger_*` samples of a node's `/metrics` (no labels are used here).
async fn metrics(client: &reqwest::Client, base: &str) -> BTreeMap<String, f64> {
    let text = client
        .get(format!("{base}/metrics"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn create_body(resource: &str) -> String {
    format!(
        r#"{{"type":"snapshot","user":"bench","resource":{{"type":"droplet","id":"{resource}"}}}}"#
    )
}

/// `conns` connections creating actions on `base` for `secs`.
async fn http_load(base: &str, tag: String, conns: usize, secs: f64) -> Vec<Duration> {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::with_capacity(conns);
    for c in 0..conns {
        let base = base.to_string();
        let tag = tag.clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .expect("client");
            let mut lat = Vec::new();
            let mut i = 0u64;
            while Instant::now() < deadline {
                i += 1;
                let req = client
                    .post(format!("{base}/api/v1/actions"))
                    .bearer_auth(ADMIN)
                    .header("content-type", "application/json")
                    .body(create_body(&format!("{tag}-{c}-{i}")));
                lat.push(timed(req, StatusCode::CREATED, &base).await);
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client task"));
    }
    all
}

type OpenPg = (
    tokio_postgres::Client,
    tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
);
type PgConn = (
    tokio_postgres::Client,
    tokio_postgres::Statement,
    tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
);

/// The plain case's connections, each with the insert prepared (before the clock starts).
async fn pg_connect(url: &str, conns: usize) -> Vec<PgConn> {
    let mut clients = Vec::with_capacity(conns);
    for _ in 0..conns {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect to PostgreSQL");
        let conn = tokio::spawn(connection);
        let stmt = client.prepare(PLAIN_INSERT).await.expect("prepare");
        clients.push((client, stmt, conn));
    }
    clients
}

/// The plain case: each connection inserts one row per autocommit statement for `secs`.
async fn pg_load(
    clients: Vec<PgConn>,
    template: &str,
    tag: String,
    secs: f64,
) -> (Vec<Duration>, Vec<OpenPg>) {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::with_capacity(clients.len());
    for (c, (client, stmt, conn)) in clients.into_iter().enumerate() {
        let template = template.to_string();
        let tag = tag.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0u64;
            while Instant::now() < deadline {
                i += 1;
                let t = Instant::now();
                let resource = format!("{tag}-{c}-{i}");
                let snapshot = template.replace(TEMPLATE_RESOURCE, &resource);
                let n = client
                    .execute(&stmt, &[&resource, &snapshot])
                    .await
                    .expect("insert");
                assert_eq!(n, 1);
                lat.push(t.elapsed());
            }
            (lat, client, conn)
        }));
    }
    let mut all = Vec::new();
    let mut open = Vec::new();
    for t in tasks {
        let (lat, client, conn) = t.await.expect("pg task");
        all.extend(lat);
        open.push((client, conn));
    }
    // The connections close after the CPU figures are taken: the caller drops them.
    (all, open)
}

/// Case 6, a naive PostgreSQL-table service: an axum server whose `POST /api/v1/actions`
/// parses the body, builds the snapshot and runs the plain case's autocommit `INSERT` on one
/// of `conns` connections (round robin), answering 201 with the snapshot once committed.
/// Returns its base URL.
async fn pg_service(url: &str, conns: usize, template: String) -> String {
    use axum::http::header;
    use axum::response::IntoResponse;
    let pool = Arc::new(pg_connect(url, conns).await);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let template = Arc::new(template);
    let app = axum::Router::new().route(
        "/api/v1/actions",
        axum::routing::post(move |body: axum::body::Bytes| {
            let (pool, next, template) = (pool.clone(), next.clone(), template.clone());
            async move {
                let v: serde_json::Value = match serde_json::from_slice(&body) {
                    Ok(v) => v,
                    Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
                };
                let Some(resource) = v["resource"]["id"].as_str() else {
                    return (StatusCode::BAD_REQUEST, "resource.id").into_response();
                };
                let snapshot = template.replace(TEMPLATE_RESOURCE, resource);
                let (client, stmt, _) = &pool[next.fetch_add(1, Ordering::Relaxed) % pool.len()];
                match client.execute(stmt, &[&resource, &snapshot]).await {
                    Ok(1) => (
                        StatusCode::CREATED,
                        [(header::CONTENT_TYPE, "application/json")],
                        snapshot,
                    )
                        .into_response(),
                    other => {
                        (StatusCode::INTERNAL_SERVER_ERROR, format!("{other:?}")).into_response()
                    }
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the PG service");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        use axum::serve::ListenerExt as _;
        let l = listener.tap_io(|s| {
            let _ = s.set_nodelay(true);
        });
        axum::serve(l, app).await.expect("PG service");
    });
    format!("http://{addr}")
}

/// What the lag probe and the `/readyz` sampler gathered.
#[derive(Default)]
struct Lag {
    /// Write answered by the leader → read with `min_position` answered by a follower.
    visible: Vec<Duration>,
    /// The same read without `min_position`, right after: the floor of `visible`.
    plain_read: Vec<Duration>,
    /// Followers' `/readyz` `lag_positions` samples.
    positions: Vec<u64>,
    /// Reads answered 503 (`position_not_reached`).
    not_reached: u64,
}

async fn lag_probe(
    leader: String,
    followers: Vec<String>,
    stop: Arc<AtomicBool>,
    tag: String,
) -> Lag {
    let client = reqwest::Client::new();
    let mut lag = Lag::default();
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let resp = client
            .post(format!("{leader}/api/v1/actions"))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(create_body(&format!("{tag}-probe-{i}")))
            .send()
            .await
            .expect("probe write");
        assert_eq!(resp.status(), StatusCode::CREATED);
        let position: u64 = resp
            .headers()
            .get("x-ledger-position")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .expect("X-Ledger-Position on the write's answer");
        let v: serde_json::Value = resp.json().await.expect("probe answer");
        let written = Instant::now();
        let id = v["id"].as_u64().expect("id");
        let follower = &followers[i % followers.len()];
        let resp = client
            .get(format!(
                "{follower}/api/v1/actions/{id}?min_position={position}"
            ))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("probe read");
        let status = resp.status();
        let _ = resp.bytes().await;
        if status == StatusCode::OK {
            lag.visible.push(written.elapsed());
        } else {
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            lag.not_reached += 1;
        }
        let t = Instant::now();
        let resp = client
            .get(format!("{follower}/api/v1/actions/{id}"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("probe plain read");
        let _ = resp.bytes().await;
        lag.plain_read.push(t.elapsed());
    }
    lag
}

async fn readyz_sampler(followers: Vec<String>, stop: Arc<AtomicBool>) -> Vec<u64> {
    let client = reqwest::Client::new();
    let mut out = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        for f in &followers {
            if let Ok(resp) = client.get(format!("{f}/readyz")).send().await {
                if let Ok(v) = resp.json::<serde_json::Value>().await {
                    if let Some(n) = v["lag_positions"].as_u64() {
                        out.push(n);
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    out
}

async fn readyz(base: &str) -> serde_json::Value {
    reqwest::get(format!("{base}/readyz"))
        .await
        .expect("readyz")
        .json()
        .await
        .expect("readyz json")
}

/// Waits until `base` reports `role` (and, for a follower, a known leader).
async fn await_role(base: &str, role: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = readyz(base).await;
        if v["role"] == role && !v["leader"].is_null() {
            return;
        }
        assert!(Instant::now() < deadline, "{base} never became {role}: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn main() {
    // `cargo bench` passes `--bench`; anything else (`cargo test --benches`) gets a smoke run.
    let benching = std::env::args().any(|a| a == "--bench");
    let conns: usize = env_or("CLUSTER_BENCH_CONNECTIONS", 64);
    let secs: f64 = env_or("CLUSTER_BENCH_SECS", if benching { 3.0 } else { 0.3 });
    let rounds: usize = env_or("CLUSTER_BENCH_ROUNDS", if benching { 2 } else { 1 });
    let threads: usize = env_or("CLUSTER_BENCH_SERVER_THREADS", 2);
    assert!(conns >= 1 && rounds >= 1 && secs > 0.0);

    let pg = pg::dedicated("bench");
    let one_url = pg.create_db("bench_one");
    let three_url = pg.create_db("bench_three");
    let plain_url = pg.create_db("bench_plain");
    pg.psql("bench_plain", PLAIN_TABLE);

    // On the real filesystem (`/tmp` may be a tmpfs where fdatasync is free), like PostgreSQL.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let client_rt = runtime(2, "client");
    let mut embedded = start_node(dir.path(), "embedded", threads, None);
    let mut one = start_node(dir.path(), "one", threads, Some(&one_url));
    client_rt.block_on(await_role(&one.base, "leader"));
    let mut a = start_node(dir.path(), "a", threads, Some(&three_url));
    client_rt.block_on(await_role(&a.base, "leader"));
    let mut b = start_node(dir.path(), "b", threads, Some(&three_url));
    let mut c = start_node(dir.path(), "c", threads, Some(&three_url));
    client_rt.block_on(async {
        await_role(&b.base, "follower").await;
        await_role(&c.base, "follower").await;
    });

    // The plain case stores what the ledger answers for a create.
    let template = client_rt.block_on(async {
        let resp = reqwest::Client::new()
            .post(format!("{}/api/v1/actions", embedded.base))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(create_body(TEMPLATE_RESOURCE))
            .send()
            .await
            .expect("template create");
        assert_eq!(resp.status(), StatusCode::CREATED);
        resp.text().await.expect("template body")
    });

    // Case 6: the plain case behind an HTTP server of its own.
    let service_rt = runtime(threads, "pg-service");
    let service = service_rt.block_on(pg_service(&plain_url, conns, template.clone()));

    println!(
        "cluster bench: {conns} connections, {rounds} x {secs} s per case, {threads} server worker threads per node (in-process), {} cores, PostgreSQL {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        pg.psql("postgres", "SHOW server_version"),
    );
    let postmaster = postmaster_pid(&pg);
    let metrics_client = reqwest::Client::new();
    let mut best: BTreeMap<Case, Round> = BTreeMap::new();
    let mut lag = Lag::default();
    for round in 0..rounds {
        for case in Case::ALL {
            let tag = format!("{}-{round}", case.short());
            // The node whose writer commits (whose metrics tell the batches).
            let writer = match case {
                Case::Embedded => Some(&embedded.base),
                Case::OneNode => Some(&one.base),
                Case::Leader3 | Case::Follower3 => Some(&a.base),
                Case::PlainPg | Case::PgService => None,
            };
            let before = writer.map(|w| client_rt.block_on(metrics(&metrics_client, w)));
            let plain = match case {
                Case::PlainPg => Some(client_rt.block_on(pg_connect(&plain_url, conns))),
                _ => None,
            };
            let (client0, own0) = own_cpu();
            let pg0 = pg_cpu(postmaster);
            let start = Instant::now();
            let mut open_pg = Vec::new();
            let mut lat = match case {
                Case::Embedded => client_rt.block_on(http_load(&embedded.base, tag, conns, secs)),
                Case::OneNode => client_rt.block_on(http_load(&one.base, tag, conns, secs)),
                Case::Follower3 => client_rt.block_on(http_load(&b.base, tag, conns, secs)),
                Case::PgService => client_rt.block_on(http_load(&service, tag, conns, secs)),
                Case::PlainPg => {
                    let clients = plain.expect("connected");
                    let (lat, open) = client_rt.block_on(pg_load(clients, &template, tag, secs));
                    open_pg = open;
                    lat
                }
                Case::Leader3 => {
                    let stop = Arc::new(AtomicBool::new(false));
                    let followers = vec![b.base.clone(), c.base.clone()];
                    let probe = client_rt.spawn(lag_probe(
                        a.base.clone(),
                        followers.clone(),
                        stop.clone(),
                        tag.clone(),
                    ));
                    let sampler = client_rt.spawn(readyz_sampler(followers, stop.clone()));
                    let lat = client_rt.block_on(http_load(&a.base, tag, conns, secs));
                    stop.store(true, Ordering::Relaxed);
                    let probed = client_rt.block_on(probe).expect("probe");
                    lag.visible.extend(probed.visible);
                    lag.plain_read.extend(probed.plain_read);
                    lag.not_reached += probed.not_reached;
                    lag.positions
                        .extend(client_rt.block_on(sampler).expect("sampler"));
                    lat
                }
            };
            let elapsed = start.elapsed();
            let (client1, own1) = own_cpu();
            let pg1 = pg_cpu(postmaster);
            client_rt.block_on(async move {
                for (client, conn) in open_pg {
                    drop(client);
                    let _ = conn.await;
                }
            });
            let metrics = match (writer, before) {
                (Some(w), Some(before)) => {
                    let after = client_rt.block_on(metrics(&metrics_client, w));
                    after
                        .into_iter()
                        .map(|(k, v)| {
                            let d = v - before.get(&k).copied().unwrap_or(0.0);
                            (k, d)
                        })
                        .collect()
                }
                _ => BTreeMap::new(),
            };
            lat.sort_unstable();
            let r = Round {
                requests: lat.len() as u64,
                elapsed,
                p50: percentile(&lat, 0.5),
                p99: percentile(&lat, 0.99),
                cpu_nodes: own1.saturating_sub(own0),
                cpu_client: client1.saturating_sub(client0),
                cpu_pg: pg1.saturating_sub(pg0),
                metrics,
            };
            println!(
                "  round {round} {:<30} {:>8.0} req/s (p50 {} ms, p99 {} ms)",
                case.name(),
                r.rate(),
                ms(r.p50),
                ms(r.p99)
            );
            if best.get(&case).is_none_or(|b| r.rate() > b.rate()) {
                best.insert(case, r);
            }
        }
    }

    println!();
    println!(
        "| case | req/s | p50 ms | p99 ms | records/batch | PG commit ms/batch | local fsync ms/batch | CPU µs/req nodes | PG | client |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (case, r) in &best {
        let batches = r.metric("action_ledger_fsyncs_total");
        let commits = r.metric("action_ledger_cluster_commits_total");
        let records = r.metric("action_ledger_appends_total");
        let per = |x: f64, n: f64| {
            if n > 0.0 {
                format!("{:.2}", x / n)
            } else {
                "–".into()
            }
        };
        println!(
            "| {} | {:.0} | {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.0} |",
            case.name(),
            r.rate(),
            ms(r.p50),
            ms(r.p99),
            per(records, batches),
            per(
                r.metric("action_ledger_cluster_commit_seconds_total") * 1e3,
                commits
            ),
            per(r.metric("action_ledger_fsync_seconds_total") * 1e3, batches),
            r.per_request_us(r.cpu_nodes),
            r.per_request_us(r.cpu_pg),
            r.per_request_us(r.cpu_client),
        );
    }
    println!();
    let rate = |c: Case| best[&c].rate();
    let mut missed = Vec::new();
    for case in [Case::OneNode, Case::Leader3, Case::Follower3] {
        let vs_embedded = rate(case) / rate(Case::Embedded);
        let vs_pg = rate(case) / rate(Case::PlainPg);
        let vs_service = rate(case) / rate(Case::PgService);
        let ok_e = vs_embedded >= 0.5;
        let ok_p = vs_pg >= 2.0;
        println!(
            "{:<30} / embedded {:>6.1}% (target >= 50%) {} | / plain PG {:>5.2}x (target >= 2x) {} | / PG-table service over HTTP {:>5.2}x",
            case.name(),
            vs_embedded * 100.0,
            if ok_e { "ok" } else { "MISSED" },
            vs_pg,
            if ok_p { "ok" } else { "MISSED" },
            vs_service,
        );
        if !ok_e {
            missed.push(format!("{} vs embedded", case.name()));
        }
        if !ok_p {
            missed.push(format!("{} vs plain PG", case.name()));
        }
    }
    lag.visible.sort_unstable();
    lag.plain_read.sort_unstable();
    lag.positions.sort_unstable();
    println!(
        "follower visibility lag under case 3 ({} probes): write answered by the leader -> follower read with min_position answered: p50 {} ms, p99 {} ms, max {} ms (floor, the same read without min_position: p50 {} ms, p99 {} ms); {} reads not reached in time",
        lag.visible.len(),
        ms(percentile(&lag.visible, 0.5)),
        ms(percentile(&lag.visible, 0.99)),
        ms(lag.visible.last().copied().unwrap_or_default()),
        ms(percentile(&lag.plain_read, 0.5)),
        ms(percentile(&lag.plain_read, 0.99)),
        lag.not_reached,
    );
    println!(
        "followers' /readyz lag_positions under case 3 ({} samples): p50 {}, p99 {}, max {}",
        lag.positions.len(),
        percentile(&lag.positions, 0.5),
        percentile(&lag.positions, 0.99),
        lag.positions.last().copied().unwrap_or(0),
    );

    // Reads, no write load: the embedded node against a follower (b), on ids both hold.
    let ids = client_rt.block_on(async {
        let mut held = u64::MAX;
        for base in [&embedded.base, &b.base] {
            let v = readyz(base).await;
            held = held.min(v["applied_position"].as_u64().unwrap_or(0));
        }
        // Every create is one record, so ids up to the lower head exist on both.
        held.clamp(1, 10_000)
    });
    let mut reads: BTreeMap<&str, (Vec<Duration>, Duration, f64)> = BTreeMap::new();
    for _ in 0..rounds {
        for (name, base, threads_of) in [
            ("embedded single node", &embedded.base, "node-embedded"),
            ("follower of 3 nodes + PG", &b.base, "node-b"),
        ] {
            let cpu = threads_cpu(threads_of);
            let t = Instant::now();
            let lat = client_rt.block_on(read_load(base, conns, secs, ids));
            let wall = t.elapsed().as_secs_f64();
            let cpu = threads_cpu(threads_of) - cpu;
            let e = reads.entry(name).or_default();
            e.0.extend(lat);
            e.1 += cpu;
            e.2 += wall;
        }
    }
    println!();
    println!(
        "| reads (no write load; GET one action x3, list page x1; ids 1..={ids}) | reads/s | p50 ms | p99 ms | CPU µs/read (serving node's threads) |"
    );
    println!("|---|---:|---:|---:|---:|");
    let mut per_read = BTreeMap::new();
    for (name, (lat, cpu, wall)) in reads.iter_mut() {
        lat.sort_unstable();
        let us = cpu.as_secs_f64() * 1e6 / lat.len().max(1) as f64;
        per_read.insert(*name, us);
        println!(
            "| {name} | {:.0} | {} | {} | {us:.1} |",
            lat.len() as f64 / *wall,
            ms(percentile(lat, 0.5)),
            ms(percentile(lat, 0.99)),
        );
    }
    let ratio = per_read["follower of 3 nodes + PG"] / per_read["embedded single node"];
    println!(
        "CPU per read, follower / embedded: {ratio:.2} (target: equal, within the noise of a shared machine)"
    );

    if !missed.is_empty() {
        println!("targets missed: {}", missed.join(", "));
    }

    // Followers first, then the leaders, then PostgreSQL.
    for n in [&mut b, &mut c, &mut a, &mut one, &mut embedded] {
        n.stop();
    }
    drop(service_rt);
    // PostgreSQL is stopped and its directory deleted once this process exits (the
    // harness's watchdog).
}

/// The pid of the server's postmaster (the first line of `postmaster.pid`).
fn postmaster_pid(pg: &pg::PgServer) -> u32 {
    std::fs::read_to_string(pg.dir.join("data/postmaster.pid"))
        .ok()
        .and_then(|s| s.lines().next()?.trim().parse().ok())
        .expect("postmaster.pid")
}
