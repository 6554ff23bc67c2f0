//! The projection against a PostgreSQL table of the same snapshots (issue 19): the answer
//! to "why not a PostgreSQL table?", measured side by side in one run.
//!
//! For each size N (actions):
//! 1. **Generate** the `query` bench's log of N actions (benches/common/workload.rs: 10
//!    tenants, N/100 resources of ~100 actions spread over the whole id range, ~2.9 records
//!    per action, 90% finished, 10% left running). The data directory is the `query`
//!    bench's (`target/tmp/query-bench/n<N>`), so either bench reuses the other's log.
//! 2. **Rebuild** the projection from it ([`projection::rebuild`], the default
//!    configuration, in this process), timed.
//! 3. **Rows**: every action's snapshot read back from the projection and rendered exactly
//!    as the server answers it (`ActionView`), written to a file in PostgreSQL's COPY text
//!    format with the columns the queries filter on: `id bigint, tenant, resource_type,
//!    resource_id, status, type, "user", created_at, updated_at timestamptz, snapshot
//!    jsonb` (`QUERY_PG_SNAPSHOT=text` stores it as text instead).
//! 4. **Probe** (a child process, before the server starts): the projection opened as the
//!    server opens it; for random lists by resource and gets, the time of the projection
//!    call (sled + memos) and of rendering its JSON with the server's render memo — so the
//!    HTTP figures below can be split into store, JSON and HTTP.
//! 5. **PostgreSQL 15** (a throwaway server of its own with the default memory settings,
//!    started like the cluster tests' harness does, tests/it/pg.rs): `COPY actions FROM
//!    STDIN` through `psql`, then the primary key on `id` and the indexes `(tenant,
//!    resource_type, resource_id, id DESC)`, `(tenant, id DESC)`, `(status)` — COPY +
//!    indexes are the figure compared with the rebuild; `VACUUM ANALYZE` after (timed
//!    apart), then `pg_database_size`.
//! 6. **The ledger**: the real binary (`action-ledger serve` on that data directory, an
//!    admin token, its default caches), timed from spawn to `/readyz` 200.
//! 7. **Queries**, each kind against both, one after the other, the same random keys:
//!    - list the 50 newest of a resource: `GET /api/v1/actions?tenant=T&resource_type=droplet&
//!      resource_id=R&limit=50` (answer with `total`) vs one prepared statement returning
//!      the 50 snapshots (`snapshot::text`, newest id first) and, as an uncorrelated scalar
//!      subquery computed once, the count of the resource's rows — the same work;
//!    - get one by id: `GET /api/v1/actions/{id}` vs `SELECT snapshot::text … WHERE id = $1`;
//!    - list the 50 newest of a tenant, and the 50 newest running of a tenant
//!      (`status=running`): PostgreSQL returns the rows **without** a count (a tenant holds
//!      N/10 rows: counting them per page is what nobody would deploy), the ledger its
//!      `total` from counters — this favours PostgreSQL;
//!    - the floor of each protocol: `GET /healthz` (no store, no auth) vs a prepared
//!      `SELECT 'ok'::text` (no table): what a request costs before any work.
//!
//!    1 client (one keep-alive HTTP/1.1 connection, hyper's connection-level client / one
//!    tokio-postgres connection):
//!    p50/p99 over `QUERY_PG_OPS` requests after a 10% warm-up; then
//!    `QUERY_PG_CONNECTIONS` (16) concurrent connections for `QUERY_PG_SECS` (10) s: requests
//!    per second (each connection sends its next request when it has read the whole
//!    answer), and the CPU time per request of the serving side (the server process's
//!    utime + stime; PostgreSQL's postmaster, its children and its exited children) and of
//!    the client threads — on a shared 2-core machine the steadiest figure. The client runs on 2 tokio workers in this process; the server, PostgreSQL and
//!    the client share the machine's cores.
//! 8. **Memory**: the server's VmRSS when ready (idle) and VmHWM at the end (peak under
//!    load), from `/proc/<pid>/status`; PostgreSQL's as the sum of the PSS of the postmaster
//!    and its children (`/proc/<pid>/smaps_rollup`), idle after the load and the highest of
//!    samples every 200 ms under load (the server's VmRSS is sampled the same way).
//!    **Disk**: the log and projection directories against `pg_database_size`.
//!
//! Before timing, the answers are checked to agree: for 20 resources the ledger's ids and
//! `total` equal PostgreSQL's rows and count, and 20 snapshots are equal as JSON values.
//!
//! Environment:
//! - `QUERY_PG_SIZES=10000,1000000` (default) — sizes to run (at most 10M);
//! - `QUERY_PG_OPS=5000` — measured requests per kind at 1 client;
//! - `QUERY_PG_CONNECTIONS=16`, `QUERY_PG_SECS=10` — the throughput phase;
//! - `QUERY_PG_ROUNDS=2` — rounds per kind, alternating the two sides; each side keeps
//!   its best round (lowest p50 at 1 client, highest rate under load), as the http bench;
//! - `QUERY_PG_REUSE=1` — keep the generated log, the rebuilt projection (its rebuild time
//!   is remembered and printed again) and the rows file between runs; PostgreSQL is loaded
//!   afresh every run;
//! - `QUERY_PG_SNAPSHOT=jsonb|text` — the snapshot column's type (default jsonb);
//! - `QUERY_PG_ONLY=resource,one,tenant,running,floor` — the queries to run (default all);
//! - `QUERY_PG_CLIENT=reqwest` — time the ledger through reqwest instead of hyper's
//!   connection-level client (the bench's client until 2026-12-07);
//! - `QUERY_PG_RESTART=1` — instead of the comparison (after the log and the projection
//!   exist): the time from spawn to `/readyz` 200 on a copy of the data directory, after
//!   `kill -9` while 16 connections create actions (every acknowledged create checked
//!   after) and after a clean stop, two rounds (the goal: at 10M at most twice the 10k
//!   figure);
//! - `QUERY_PG_PROBE_DIR=<bench dir>/n<N>/projection QUERY_PG_PROBE_N=<N>` — the probe
//!   (step 4) alone on an existing projection, with the bench binary (`cargo bench --bench
//!   query_pg --no-run` prints its path).
//!
//! Run with `cargo bench --bench query_pg`. `cargo test` never builds or runs it.

mod common;
#[path = "common/workload.rs"]
mod workload;
// The cluster tests' PostgreSQL harness, as the cluster bench includes it.
#[allow(dead_code)]
#[path = "../tests/it/host.rs"]
mod host;
#[allow(dead_code)]
#[path = "../tests/it/pg.rs"]
mod pg;

use action_ledger::event::{Action, ResourceRef};
use action_ledger::http::render::RenderCache;
use action_ledger::json::{rfc3339, ActionView};
use action_ledger::projection::{self, ActionQuery, Projection, ProjectionConfig};
use common::{dir_bytes, env_or, ms, percentile, runtime};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use workload::{generate, proc_status_kb, resources, status_kb, tenant_of, TENANTS};

const ADMIN: &str = "query-pg-bench-admin-token";
const PAGE: usize = 50;
/// Guards against a typo turning the benchmark into a day-long run.
const SIZE_MAX: u64 = 10_000_000;
/// Resources and ids whose answers are compared between the two before timing.
const AGREEMENT_SAMPLES: usize = 20;
const SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// How long connections get to close before and after a measured round.
const CPU_SETTLE: Duration = Duration::from_millis(300);
/// `USER_HZ`, the unit of `/proc/<pid>/stat`'s times on Linux.
const CLOCK_TICKS: f64 = 100.0;

/// Indexes and constraints, created after COPY as a bulk load does.
const PG_INDEXES: [&str; 4] = [
    "ALTER TABLE actions ADD PRIMARY KEY (id)",
    "CREATE INDEX actions_resource ON actions (tenant, resource_type, resource_id, id DESC)",
    "CREATE INDEX actions_tenant ON actions (tenant, id DESC)",
    "CREATE INDEX actions_status ON actions (status)",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    ListResource,
    GetOne,
    ListTenant,
    ListRunning,
    Floor,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::ListResource,
        Kind::GetOne,
        Kind::ListTenant,
        Kind::ListRunning,
        Kind::Floor,
    ];
    fn name(self) -> &'static str {
        match self {
            Kind::ListResource => "list 50 newest of a resource",
            Kind::GetOne => "get one by id",
            Kind::ListTenant => "list 50 newest of a tenant",
            Kind::ListRunning => "list 50 newest running of a tenant",
            Kind::Floor => "floor: GET /healthz vs SELECT a constant",
        }
    }
    /// Its name in `QUERY_PG_ONLY`.
    fn short(self) -> &'static str {
        match self {
            Kind::ListResource => "resource",
            Kind::GetOne => "one",
            Kind::ListTenant => "tenant",
            Kind::ListRunning => "running",
            Kind::Floor => "floor",
        }
    }
    fn sql(self) -> &'static str {
        match self {
            Kind::ListResource => {
                "SELECT (SELECT count(*) FROM actions WHERE tenant = $1 AND resource_type = $2 \
                 AND resource_id = $3), snapshot::text FROM actions WHERE tenant = $1 AND \
                 resource_type = $2 AND resource_id = $3 ORDER BY id DESC LIMIT 50"
            }
            Kind::GetOne => "SELECT snapshot::text FROM actions WHERE id = $1",
            Kind::ListTenant => {
                "SELECT snapshot::text FROM actions WHERE tenant = $1 ORDER BY id DESC LIMIT 50"
            }
            Kind::ListRunning => {
                "SELECT snapshot::text FROM actions WHERE tenant = $1 AND status = 'running' \
                 ORDER BY id DESC LIMIT 50"
            }
            Kind::Floor => "SELECT 'ok'::text",
        }
    }
}

/// One request's random choices: a resource (lists by resource, with its own tenant), an
/// id (gets), a tenant (the tenant lists); each kind uses its part.
#[derive(Clone)]
struct Key {
    resource: String,
    resource_tenant: String,
    id: i64,
    tenant: String,
}

fn keys(n: u64, count: usize, seed: u64) -> Vec<Key> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let res = resources(n);
    (0..count)
        .map(|_| {
            let r = rng.random_range(0..res);
            Key {
                resource: r.to_string(),
                resource_tenant: tenant_of(r),
                id: rng.random_range(1..=n) as i64,
                tenant: format!("tenant-{}", rng.random_range(0..TENANTS)),
            }
        })
        .collect()
}

fn url(base: &str, kind: Kind, k: &Key) -> String {
    match kind {
        Kind::ListResource => format!(
            "{base}/api/v1/actions?tenant={}&resource_type=droplet&resource_id={}&limit={PAGE}",
            k.resource_tenant, k.resource
        ),
        Kind::GetOne => format!("{base}/api/v1/actions/{}", k.id),
        Kind::ListTenant => format!("{base}/api/v1/actions?tenant={}&limit={PAGE}", k.tenant),
        Kind::ListRunning => format!(
            "{base}/api/v1/actions?tenant={}&status=running&limit={PAGE}",
            k.tenant
        ),
        Kind::Floor => format!("{base}/healthz"),
    }
}

/// One request over the connection `client` holds; returns the answer's length in bytes.
async fn ledger_once(client: &reqwest::Client, url: String) -> usize {
    let resp = client
        .get(url)
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("request");
    let status = resp.status();
    let body = resp.bytes().await.expect("body");
    assert_eq!(
        status,
        reqwest::StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&body)
    );
    body.len()
}

/// One keep-alive HTTP/1.1 connection as hyper's connection-level client drives it: the
/// timed phases' client. reqwest (its pool, URL handling and layers) spent 18–25 µs of CPU
/// per request where tokio-postgres spends 9–13 µs per statement, and the two clients share
/// the machine with the servers they measure (`QUERY_PG_CLIENT=reqwest` brings it back).
enum LedgerConn {
    Hyper(hyper::client::conn::http1::SendRequest<String>),
    Reqwest(reqwest::Client),
}

impl LedgerConn {
    async fn open(base: &str) -> LedgerConn {
        if std::env::var("QUERY_PG_CLIENT").as_deref() == Ok("reqwest") {
            return LedgerConn::Reqwest(http_client());
        }
        let addr = base.trim_start_matches("http://").trim_end_matches('/');
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let (send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("handshake");
        tokio::spawn(conn);
        LedgerConn::Hyper(send)
    }

    /// One request; returns the answer's length in bytes.
    async fn once(&mut self, url: String) -> usize {
        let send = match self {
            LedgerConn::Reqwest(client) => return ledger_once(client, url).await,
            LedgerConn::Hyper(send) => send,
        };
        let uri: hyper::Uri = url.parse().expect("a URL");
        let req = hyper::Request::get(uri.path_and_query().expect("a path").as_str())
            .header("host", uri.authority().expect("an authority").as_str())
            .header("authorization", format!("Bearer {ADMIN}"))
            .body(String::new())
            .expect("a request");
        send.ready().await.expect("connection ready");
        let resp = send.send_request(req).await.expect("request");
        let status = resp.status();
        let mut body = resp.into_body();
        let mut bytes = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| {
            hyper::body::Body::poll_frame(std::pin::Pin::new(&mut body), cx)
        })
        .await
        {
            if let Ok(data) = frame.expect("body").into_data() {
                bytes.extend_from_slice(&data);
            }
        }
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
        bytes.len()
    }
}

struct PgConn {
    client: tokio_postgres::Client,
    stmts: Vec<tokio_postgres::Statement>,
    _conn: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
}

async fn pg_connect(url: &str) -> PgConn {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL");
    let conn = tokio::spawn(connection);
    let mut stmts = Vec::new();
    for kind in Kind::ALL {
        stmts.push(client.prepare(kind.sql()).await.expect("prepare"));
    }
    PgConn {
        client,
        stmts,
        _conn: conn,
    }
}

/// The rows of one prepared query: (count if the query has one, snapshots as text).
async fn pg_query(c: &PgConn, kind: Kind, k: &Key) -> (Option<i64>, Vec<String>) {
    let i = Kind::ALL.iter().position(|x| *x == kind).expect("a kind");
    let stmt = &c.stmts[i];
    let rows = match kind {
        Kind::ListResource => {
            c.client
                .query(stmt, &[&k.resource_tenant, &"droplet", &k.resource])
                .await
        }
        Kind::GetOne => c.client.query(stmt, &[&k.id]).await,
        Kind::ListTenant | Kind::ListRunning => c.client.query(stmt, &[&k.tenant]).await,
        Kind::Floor => c.client.query(stmt, &[]).await,
    }
    .expect("query");
    let with_count = kind == Kind::ListResource;
    let count = with_count.then(|| rows.first().map_or(0, |r| r.get::<_, i64>(0)));
    let col = usize::from(with_count);
    let snaps = rows.iter().map(|r| r.get::<_, String>(col)).collect();
    (count, snaps)
}

/// One query; returns the snapshots' length in bytes.
async fn pg_once(c: &PgConn, kind: Kind, k: &Key) -> usize {
    let (_, snaps) = pg_query(c, kind, k).await;
    snaps.iter().map(String::len).sum()
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .expect("client")
}

/// Latencies of `ops` requests in sequence over one connection (after `ops / 10` warm-up).
async fn latency(side: &Side<'_>, kind: Kind, keys: &[Key], ops: usize) -> Vec<Duration> {
    let warm = ops / 10;
    let mut lat = Vec::with_capacity(ops);
    match side {
        Side::Ledger(base) => {
            let mut conn = LedgerConn::open(base).await;
            for (i, k) in keys.iter().cycle().take(warm + ops).enumerate() {
                let t = Instant::now();
                std::hint::black_box(conn.once(url(base, kind, k)).await);
                if i >= warm {
                    lat.push(t.elapsed());
                }
            }
        }
        Side::Pg(pg_url) => {
            let c = pg_connect(pg_url).await;
            for (i, k) in keys.iter().cycle().take(warm + ops).enumerate() {
                let t = Instant::now();
                std::hint::black_box(pg_once(&c, kind, k).await);
                if i >= warm {
                    lat.push(t.elapsed());
                }
            }
        }
    }
    lat.sort_unstable();
    lat
}

/// `conns` connections for `secs`: (requests, elapsed, sorted latencies).
async fn throughput(
    side: &Side<'_>,
    kind: Kind,
    keys: &Arc<Vec<Key>>,
    conns: usize,
    secs: f64,
) -> Load {
    // Connect (and prepare) before the clock starts.
    let mut tasks = Vec::with_capacity(conns);
    let start = Arc::new(tokio::sync::Barrier::new(conns + 1));
    for c in 0..conns {
        let keys = keys.clone();
        let start = start.clone();
        let per_conn = keys.len() / conns;
        let offset = c * per_conn;
        match side {
            Side::Ledger(base) => {
                let base = base.to_string();
                tasks.push(tokio::spawn(async move {
                    let mut conn = LedgerConn::open(&base).await;
                    // One request to open the connection.
                    conn.once(format!("{base}/readyz")).await;
                    start.wait().await;
                    let deadline = Instant::now() + Duration::from_secs_f64(secs);
                    let mut lat = Vec::new();
                    let mut i = offset;
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        std::hint::black_box(
                            conn.once(url(&base, kind, &keys[i % keys.len()])).await,
                        );
                        lat.push(t.elapsed());
                        i += 1;
                    }
                    lat
                }));
            }
            Side::Pg(pg_url) => {
                let pg_url = pg_url.to_string();
                tasks.push(tokio::spawn(async move {
                    let c = pg_connect(&pg_url).await;
                    start.wait().await;
                    let deadline = Instant::now() + Duration::from_secs_f64(secs);
                    let mut lat = Vec::new();
                    let mut i = offset;
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        std::hint::black_box(pg_once(&c, kind, &keys[i % keys.len()]).await);
                        lat.push(t.elapsed());
                        i += 1;
                    }
                    lat
                }));
            }
        }
    }
    start.wait().await;
    let t = Instant::now();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("client task"));
    }
    let elapsed = t.elapsed();
    all.sort_unstable();
    Load {
        requests: all.len(),
        elapsed,
        lat: all,
        ..Load::default()
    }
}

/// A throughput round: requests answered, how long, their latencies, and the CPU time the
/// serving side (the ledger server, or PostgreSQL's processes) and this process's client
/// threads used meanwhile.
#[derive(Default)]
struct Load {
    requests: usize,
    elapsed: Duration,
    lat: Vec<Duration>,
    server_cpu: Duration,
    client_cpu: Duration,
}

impl Load {
    fn rate(&self) -> f64 {
        if self.requests == 0 {
            return 0.0;
        }
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    fn per_request(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() * 1e6 / self.requests.max(1) as f64
    }
}

/// Whose CPU time to count: the ledger server's pid and the postmaster's.
struct CpuOf {
    ledger: u32,
    postmaster: u32,
}

/// CPU time so far: (the ledger server, PostgreSQL's processes, this process's client
/// threads).
fn cpu_now(of: &CpuOf) -> (Duration, Duration, Duration) {
    (
        stat_cpu(of.ledger, false),
        pg_cpu(of.postmaster),
        client_cpu(),
    )
}

/// Runs `f` (the ledger's load if `ledger`, else PostgreSQL's), charging it with the CPU
/// its server and the client used.
/// Connections closed just before or after finish exiting first (a PostgreSQL backend's
/// time moves to the postmaster's children's total when it exits).
fn measured(of: &CpuOf, ledger: bool, f: impl FnOnce() -> Load) -> Load {
    std::thread::sleep(CPU_SETTLE);
    let (l0, p0, c0) = cpu_now(of);
    let mut load = f();
    std::thread::sleep(CPU_SETTLE);
    let (l1, p1, c1) = cpu_now(of);
    load.server_cpu = if ledger { l1 - l0 } else { p1 - p0 };
    load.client_cpu = c1 - c0;
    load
}

/// utime + stime of `pid` (`/proc/<pid>/stat`), with its reaped children's when
/// `children`.
fn stat_cpu(pid: u32, children: bool) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return Duration::ZERO;
    };
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|s| s.parse().unwrap_or(0))
        .collect();
    let field = |i: usize| f.get(i).copied().unwrap_or(0);
    // Fields after the command: state(0) ppid(1) … utime(11) stime(12) cutime(13) cstime(14).
    let ticks = field(11) + field(12) + if children { field(13) + field(14) } else { 0 };
    Duration::from_secs_f64(ticks as f64 / CLOCK_TICKS)
}

/// CPU time of the postmaster, its live children and its exited ones.
fn pg_cpu(postmaster: u32) -> Duration {
    let mut total = stat_cpu(postmaster, true);
    for pid in pg_children(postmaster) {
        total += stat_cpu(pid, false);
    }
    total
}

/// The pids whose parent is `postmaster`.
fn pg_children(postmaster: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let ppid = std::fs::read_to_string(e.path().join("stat"))
            .ok()
            .and_then(|s| {
                let rest = s.rsplit_once(')')?.1.to_string();
                rest.split_whitespace().nth(1)?.parse::<u32>().ok()
            })
            .unwrap_or(0);
        if ppid == postmaster {
            out.push(pid);
        }
    }
    out
}

/// CPU time of this process's threads named `client` (the client runtime's).
fn client_cpu() -> Duration {
    let mut total = Duration::ZERO;
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != "client" {
            continue;
        }
        let ns = std::fs::read_to_string(task.path().join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        total += Duration::from_nanos(ns);
    }
    total
}

enum Side<'a> {
    Ledger(&'a str),
    Pg(&'a str),
}

/// The sum of the PSS (kB) of the postmaster `pid` and its children.
fn pg_pss_kb(postmaster: u32) -> u64 {
    let mut total = 0;
    for pid in std::iter::once(postmaster).chain(pg_children(postmaster)) {
        let rollup =
            std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        total += rollup
            .lines()
            .find(|l| l.starts_with("Pss:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    total
}

/// Samples the server's VmRSS and PostgreSQL's PSS while running; `stop` returns the peaks.
struct Sampler {
    running: Arc<AtomicBool>,
    peaks: Arc<Mutex<(u64, u64)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(ledger_pid: u32, postmaster: u32) -> Sampler {
        let running = Arc::new(AtomicBool::new(true));
        let peaks = Arc::new(Mutex::new((0, 0)));
        let (r, p) = (running.clone(), peaks.clone());
        let thread = std::thread::spawn(move || {
            while r.load(Ordering::Relaxed) {
                let rss = proc_status_kb(&ledger_pid.to_string(), "VmRSS:");
                let pss = pg_pss_kb(postmaster);
                let mut g = p.lock().expect("peaks");
                g.0 = g.0.max(rss);
                g.1 = g.1.max(pss);
                drop(g);
                std::thread::sleep(SAMPLE_EVERY);
            }
        });
        Sampler {
            running,
            peaks,
            thread: Some(thread),
        }
    }
    fn stop(mut self) -> (u64, u64) {
        self.running.store(false, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("sampler");
        }
        *self.peaks.lock().expect("peaks")
    }
}

/// PostgreSQL's COPY text format of one field.
fn copy_field(out: &mut Vec<u8>, s: &str) {
    for b in s.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b => out.push(b),
        }
    }
}

fn copy_row(out: &mut Vec<u8>, a: &Action, json: &[u8]) {
    let text = |out: &mut Vec<u8>, s: &str| {
        copy_field(out, s);
        out.push(b'\t');
    };
    text(out, &a.id.to_string());
    text(out, &a.tenant);
    text(out, &a.resource.resource_type);
    text(out, &a.resource.id);
    text(out, a.status.as_str());
    text(out, &a.action_type);
    match &a.user {
        Some(u) => text(out, u),
        None => out.extend_from_slice(b"\\N\t"),
    }
    text(out, &rfc3339(a.created_at));
    text(out, &rfc3339(a.updated_at));
    copy_field(out, std::str::from_utf8(json).expect("JSON is UTF-8"));
    out.push(b'\n');
}

/// Writes every action's row (ids `1..=n`) to `path`; returns the row count.
fn write_rows(proj_dir: &Path, n: u64, path: &Path) -> u64 {
    let p = Projection::open(proj_dir, ProjectionConfig::default()).expect("open projection");
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut line = Vec::with_capacity(4096);
    let mut json = Vec::with_capacity(2048);
    let mut rows = 0;
    for id in 1..=n {
        let Some(a) = p.get(id).expect("get") else {
            continue;
        };
        json.clear();
        serde_json::to_writer(&mut json, &ActionView(&a)).expect("render");
        line.clear();
        copy_row(&mut line, &a, &json);
        out.write_all(&line).expect("write rows");
        rows += 1;
    }
    out.flush().expect("flush rows");
    rows
}

/// The probe child: in-process times of the projection call and of rendering its JSON.
fn probe(dir: &Path, n: u64) {
    let ops: usize = env_or("QUERY_PG_OPS", 5000);
    let p = Projection::open(dir, ProjectionConfig::default()).expect("open projection");
    let render = RenderCache::default();
    let ks = keys(n, ops + ops / 10, 11);
    for kind in [Kind::ListResource, Kind::GetOne] {
        let (mut store, mut json, mut both) = (Vec::new(), Vec::new(), Vec::new());
        for (i, k) in ks.iter().enumerate() {
            let t0 = Instant::now();
            let bytes = match kind {
                Kind::ListResource => {
                    let q = ActionQuery {
                        tenant: Some(k.resource_tenant.clone()),
                        resource: Some(ResourceRef {
                            resource_type: "droplet".into(),
                            id: k.resource.clone(),
                        }),
                        limit: PAGE,
                        ..Default::default()
                    };
                    let page = p.list(&q).expect("list");
                    let t1 = Instant::now();
                    let out = render
                        .list(&page.actions, page.next_cursor.as_deref(), page.total)
                        .expect("render");
                    (t1, out.len())
                }
                _ => {
                    let a = p.get(k.id as u64).expect("get").expect("present");
                    let t1 = Instant::now();
                    (t1, render.action(&a).expect("render").len())
                }
            };
            let t2 = Instant::now();
            std::hint::black_box(bytes.1);
            if i >= ops / 10 {
                store.push(bytes.0 - t0);
                json.push(t2 - bytes.0);
                both.push(t2 - t0);
            }
        }
        println!(
            "probe n={n} | {:<30} | projection call {} | JSON render {} | together {}",
            kind.name(),
            p50_p99(&mut store),
            p50_p99(&mut json),
            p50_p99(&mut both),
        );
    }
    raw_probe(&p, n, ops);
    println!(
        "probe n={n} | VmRSS {} MB, VmHWM {} MB",
        status_kb("VmRSS:") / 1024,
        status_kb("VmHWM:") / 1024
    );
    key_census(&p, n);
}

/// The projection's sled keys by family (what sled's per-key memory is paid for), after
/// the timed probes: a full scan of the tree.
fn key_census(p: &Projection, n: u64) {
    use action_ledger::projection::keys;
    let mut by_family = std::collections::BTreeMap::<u8, (u64, u64)>::new();
    // The resource lists' unfilled chunks: what a rebuild holds in memory at its end.
    let (mut unfilled, mut unfilled_bytes) = (0u64, 0u64);
    // Packs sealed into the value file (sled holds their pointers).
    let mut sealed = 0u64;
    for kv in p.tree_for_tests().iter() {
        let (k, v) = kv.expect("scan");
        let e = by_family.entry(k[0]).or_default();
        e.0 += 1;
        e.1 += (k.len() + v.len()) as u64;
        if k[0] == keys::P_PACK && action_ledger::projection::values::is_pointer(&v) {
            sealed += 1;
        }
        if k[0] == keys::P_IX_RESOURCE && !keys::chunk_is_full(&v) {
            unfilled += 1;
            unfilled_bytes += (k.len() + v.len()) as u64;
        }
    }
    let total: u64 = by_family.values().map(|e| e.0).sum();
    let families: Vec<String> = by_family
        .iter()
        .map(|(f, (keys, bytes))| format!("{f:02x}: {keys} ({} MB)", bytes >> 20))
        .collect();
    println!(
        "probe n={n} | sled keys {total} ({:.3} per action): {}",
        total as f64 / n.max(1) as f64,
        families.join(", ")
    );
    println!(
        "probe n={n} | unfilled resource list chunks {unfilled} ({} MB)",
        unfilled_bytes >> 20
    );
    let file = p.dir().join(action_ledger::projection::values::VALUES_FILE);
    println!(
        "probe n={n} | sealed packs {sealed}; value file {} MB",
        std::fs::metadata(file).map_or(0, |m| m.len()) >> 20
    );
}

/// The sled floor of a list by resource with the present layout, on resources the probe
/// has not read yet: the reverse scan of the resource's list chunks, then a read of each of
/// its 50 newest snapshot values where they live (own key or pack; no decoding, no memo).
fn raw_probe(p: &Projection, n: u64, ops: usize) {
    use action_ledger::projection::keys;
    let tree = p.tree_for_tests();
    let (mut scans, mut gets, mut keys_read) = (Vec::new(), Vec::new(), 0usize);
    for k in keys(n, ops, 13) {
        let resource = ResourceRef {
            resource_type: "droplet".into(),
            id: k.resource.clone(),
        };
        let prefix = keys::ix_resource(&k.resource_tenant, &resource);
        let t0 = Instant::now();
        let mut ids = Vec::with_capacity(PAGE);
        for kv in tree.scan_prefix(&prefix).rev() {
            let (key, value) = kv.expect("scan");
            keys_read += 1;
            let first = u64::from_be_bytes(key[key.len() - 8..].try_into().expect("first id"));
            let chunk = keys::chunk_ids(first, &value).expect("a chunk");
            ids.extend(chunk.into_iter().rev());
            if ids.len() >= PAGE {
                break;
            }
        }
        ids.truncate(PAGE);
        let t1 = Instant::now();
        let mut bytes = 0;
        for id in &ids {
            bytes += p.snapshot_value_for_tests(*id).map_or(0, |v| v.len());
        }
        std::hint::black_box(bytes);
        scans.push(t1 - t0);
        gets.push(t1.elapsed());
    }
    println!(
        "probe n={n} | raw sled, list by resource      | index scan {} ({:.1} keys) | 50 snapshot gets {}",
        p50_p99(&mut scans),
        keys_read as f64 / ops.max(1) as f64,
        p50_p99(&mut gets),
    );
}

/// "p50 … / p99 … us" of `v` (sorted here).
fn p50_p99(v: &mut [Duration]) -> String {
    v.sort_unstable();
    format!(
        "p50 {} / p99 {} us",
        us(percentile(v, 0.5)),
        us(percentile(v, 0.99))
    )
}

fn us(d: Duration) -> String {
    let v = d.as_secs_f64() * 1e6;
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn mb(bytes: u64) -> String {
    format!("{} MB", bytes >> 20)
}

/// `action-ledger serve` on `data_dir`; its output goes to `output`. Returns the child, its
/// base URL and the time from spawn to `/readyz` 200.
async fn start_ledger(data_dir: &Path, output: &Path) -> (Child, String, Duration) {
    let out = std::fs::File::create(output).expect("server output file");
    let err = out.try_clone().expect("clone");
    let t = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_action-ledger"))
        .args(["serve", "--data-dir"])
        .arg(data_dir)
        .args(["--listen", "127.0.0.1:0", "--redis-listen", "off"])
        .args(["--admin-token", ADMIN])
        .env_remove("ACTION_LEDGER_DATA_DIR")
        .env_remove("ACTION_LEDGER_LISTEN")
        .env_remove("ACTION_LEDGER_ADMIN_TOKEN")
        .env("ACTION_LEDGER_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn action-ledger serve");
    let client = http_client();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            panic!(
                "the server exited ({status}): {}",
                std::fs::read_to_string(output).unwrap_or_default()
            );
        }
        assert!(
            t.elapsed() < Duration::from_secs(600),
            "the server was not ready in 10 minutes"
        );
        let text = std::fs::read_to_string(output).unwrap_or_default();
        let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        if let Some(base) = whole
            .lines()
            .find_map(|l| l.split("listening on ").nth(1))
            .map(|s| s.trim().to_string())
        {
            if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
                if r.status() == reqwest::StatusCode::OK {
                    return (child, base, t.elapsed());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How long the server takes to be ready again on a copy of the size's data directory:
/// after `kill -9` while 16 connections create actions, and after a clean stop. Every
/// create acknowledged before the kill must be there after the restart (checked per writer
/// from its resource's list `total`). Two rounds; the copy is removed after.
fn restart_probe(base: &Path, dir: &Path, n: u64) {
    let copy = base.join(format!("n{n}-restart"));
    let _ = std::fs::remove_dir_all(&copy);
    let t = Instant::now();
    for sub in ["log", "projection"] {
        copy_dir(&dir.join(sub), &copy.join(sub));
    }
    println!(
        "n={n}: restart probe on a copy of the log and projection ({} + {}), copied in {}",
        mb(dir_bytes(&copy.join("log"))),
        mb(dir_bytes(&copy.join("projection"))),
        secs(t.elapsed())
    );
    let output = base.join(format!("n{n}-restart-server.out"));
    runtime(2, "restart").block_on(async {
        let (mut child, mut base_url, first) = start_ledger(&copy, &output).await;
        println!("n={n}: restart: first start {} ms", ms(first));
        for round in 1..=2 {
            // Writers until the kill; each counts its acknowledged creates.
            let url = format!("{base_url}/api/v1/actions");
            let stop = Arc::new(AtomicBool::new(false));
            let mut writers = Vec::new();
            for w in 0..16 {
                let (url, stop) = (url.clone(), stop.clone());
                writers.push(tokio::spawn(async move {
                    let client = http_client();
                    let body = serde_json::json!({
                        "type": "restart-probe",
                        "resource": {"type": "restart-probe", "id": format!("r{round}w{w}")},
                    });
                    let mut acked = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        match client.post(&url).bearer_auth(ADMIN).json(&body).send().await {
                            Ok(r) if r.status() == reqwest::StatusCode::CREATED => acked += 1,
                            _ => break,
                        }
                    }
                    acked
                }));
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
            child.kill().expect("kill -9");
            let _ = child.wait();
            stop.store(true, Ordering::Relaxed);
            let mut acked = Vec::new();
            for w in writers {
                acked.push(w.await.expect("writer"));
            }
            let (c, b, killed) = start_ledger(&copy, &output).await;
            (child, base_url) = (c, b);
            let client = http_client();
            for (w, &a) in acked.iter().enumerate() {
                let page: serde_json::Value = client
                    .get(format!(
                        "{base_url}/api/v1/actions?resource_type=restart-probe&resource_id=r{round}w{w}&limit=1"
                    ))
                    .bearer_auth(ADMIN)
                    .send()
                    .await
                    .expect("list")
                    .json()
                    .await
                    .expect("json");
                let total = page["total"].as_u64().expect("total");
                assert!(total >= a, "writer {w}: {a} acknowledged, {total} after the restart");
            }
            stop_ledger(child);
            let (c, b, clean) = start_ledger(&copy, &output).await;
            (child, base_url) = (c, b);
            println!(
                "n={n}: restart round {round}: after kill -9 under writes {} ms ({} creates acknowledged, all there); after a clean stop {} ms",
                ms(killed),
                acked.iter().sum::<u64>(),
                ms(clean)
            );
        }
        stop_ledger(child);
    });
    let _ = std::fs::remove_dir_all(&copy);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("copy dir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

/// Stops the server with SIGTERM and waits for it.
fn stop_ledger(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// The ledger's and PostgreSQL's answers agree on ids, totals and snapshots.
async fn check_agreement(base: &str, pg_url: &str, n: u64) {
    let client = http_client();
    let c = pg_connect(pg_url).await;
    for k in keys(n, AGREEMENT_SAMPLES, 3) {
        let body = client
            .get(url(base, Kind::ListResource, &k))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("list")
            .text()
            .await
            .expect("list body");
        let v: serde_json::Value = serde_json::from_str(&body).expect("list JSON");
        let ids: Vec<i64> = v["actions"]
            .as_array()
            .expect("actions")
            .iter()
            .map(|a| a["id"].as_i64().expect("id"))
            .collect();
        let (count, snaps) = pg_query(&c, Kind::ListResource, &k).await;
        let pg_ids: Vec<i64> = snaps
            .iter()
            .map(|s| {
                serde_json::from_str::<serde_json::Value>(s).expect("snapshot JSON")["id"]
                    .as_i64()
                    .expect("id")
            })
            .collect();
        assert_eq!(ids, pg_ids, "resource {}: ids differ", k.resource);
        assert_eq!(
            v["total"].as_i64(),
            count,
            "resource {}: totals differ",
            k.resource
        );
        let one = client
            .get(url(base, Kind::GetOne, &k))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("get")
            .text()
            .await
            .expect("get body");
        let (_, pg_one) = pg_query(&c, Kind::GetOne, &k).await;
        let a: serde_json::Value = serde_json::from_str(&one).expect("action JSON");
        let b: serde_json::Value = serde_json::from_str(&pg_one[0]).expect("row JSON");
        assert_eq!(a, b, "action {}: snapshots differ", k.id);
    }
}

struct Row {
    what: String,
    ledger: String,
    pg: String,
    ratio: String,
}

fn ratio(ledger: f64, pg: f64) -> String {
    if pg > 0.0 {
        format!("{:.2}", ledger / pg)
    } else {
        "-".into()
    }
}

fn psql_file(server: &pg::PgServer, db: &str, sql: &str, stdin: &Path) {
    let out = Command::new(server_bin_psql())
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
        .args(["-p", &server.port.to_string(), "-U", "postgres", "-d", db])
        .args(["-c", sql])
        .stdin(std::fs::File::open(stdin).expect("rows file"))
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// psql of the newest installed PostgreSQL (the harness runs the server from the same).
fn server_bin_psql() -> PathBuf {
    if let Some(dir) = std::env::var_os("ACTION_LEDGER_PG_BIN") {
        return PathBuf::from(dir).join("psql");
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((v, e.path().join("bin/psql")))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p).expect("psql")
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn run_size(base: &Path, n: u64, reuse: bool) {
    let ops: usize = env_or("QUERY_PG_OPS", 5000);
    let conns: usize = env_or("QUERY_PG_CONNECTIONS", 16);
    let run_secs: f64 = env_or("QUERY_PG_SECS", 10.0);
    let rounds: usize = env_or("QUERY_PG_ROUNDS", 2);
    assert!(rounds >= 1, "QUERY_PG_ROUNDS: at least 1");
    let snapshot_type: String = env_or("QUERY_PG_SNAPSHOT", "jsonb".to_string());
    assert!(
        snapshot_type == "jsonb" || snapshot_type == "text",
        "QUERY_PG_SNAPSHOT: jsonb or text"
    );
    let dir = base.join(format!("n{n}"));
    let log_dir = dir.join("log");
    let proj_dir = projection::projection_dir(&dir);
    let t_all = Instant::now();

    // 1. The log.
    if !(reuse && dir.join("generated").exists()) {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("bench dir");
        let t = Instant::now();
        let records = generate(&log_dir, n);
        println!(
            "n={n}: generated {records} records ({} of log) in {}",
            mb(dir_bytes(&log_dir)),
            secs(t.elapsed())
        );
        std::fs::write(dir.join("generated"), records.to_string()).expect("stamp");
    }

    // 2. The rebuild (remembered under reuse).
    let rebuilt_stamp = dir.join("rebuilt-seconds");
    let rebuild = match std::fs::read_to_string(&rebuilt_stamp)
        .ok()
        .filter(|_| reuse)
        .and_then(|s| s.trim().parse::<f64>().ok())
    {
        Some(s) => {
            println!("n={n}: rebuild reused (it took {s:.1} s)");
            Duration::from_secs_f64(s)
        }
        None => {
            let _ = std::fs::remove_file(dir.join("rows.copy"));
            let t = Instant::now();
            let (p, summary) = projection::rebuild(
                &action_ledger::log::FsStorage,
                &log_dir,
                &proj_dir,
                &ProjectionConfig::default(),
                &mut |_| {},
            )
            .expect("rebuild");
            let took = t.elapsed();
            drop(p);
            println!(
                "n={n}: rebuild of {} records ({} actions) in {}",
                summary.records,
                summary.actions,
                secs(took)
            );
            std::fs::write(&rebuilt_stamp, took.as_secs_f64().to_string()).expect("stamp");
            // The query bench's own stamp: its projection is this one.
            std::fs::write(dir.join("rebuilt"), b"").expect("stamp");
            took
        }
    };
    let log_bytes = dir_bytes(&log_dir);
    let proj_bytes = dir_bytes(&proj_dir);

    // 3. The rows file.
    let rows_path = dir.join("rows.copy");
    if !(reuse && rows_path.exists()) {
        let t = Instant::now();
        let rows = write_rows(&proj_dir, n, &rows_path);
        println!(
            "n={n}: {rows} rows ({}) read from the projection and rendered in {}",
            mb(std::fs::metadata(&rows_path).map(|m| m.len()).unwrap_or(0)),
            secs(t.elapsed())
        );
    }

    if std::env::var_os("QUERY_PG_RESTART").is_some() {
        restart_probe(base, &dir, n);
        return;
    }

    // 4. The in-process probe, in a fresh child.
    let status = Command::new(std::env::current_exe().expect("own path"))
        .env("QUERY_PG_PROBE_DIR", &proj_dir)
        .env("QUERY_PG_PROBE_N", n.to_string())
        .status()
        .expect("spawn the probe child");
    assert!(status.success(), "probe child failed");

    // 5. PostgreSQL.
    let server = pg::dedicated(&format!("query-{n}"));
    let pg_url = server.create_db("bench");
    server.psql(
        "bench",
        &format!(
            "CREATE TABLE actions (id bigint NOT NULL, tenant text NOT NULL, \
             resource_type text NOT NULL, resource_id text NOT NULL, status text NOT NULL, \
             type text NOT NULL, \"user\" text, created_at timestamptz NOT NULL, \
             updated_at timestamptz NOT NULL, snapshot {snapshot_type} NOT NULL)"
        ),
    );
    let t = Instant::now();
    psql_file(&server, "bench", "COPY actions FROM STDIN", &rows_path);
    let copy = t.elapsed();
    let t = Instant::now();
    for sql in PG_INDEXES {
        server.psql("bench", sql);
    }
    let index = t.elapsed();
    let t = Instant::now();
    server.psql("bench", "VACUUM ANALYZE actions");
    let vacuum = t.elapsed();
    let db_bytes: u64 = server
        .psql("bench", "SELECT pg_database_size('bench')")
        .parse()
        .expect("size");
    println!(
        "n={n}: PostgreSQL COPY {} + primary key and 3 indexes {} = {} (VACUUM ANALYZE after: {}); database {}",
        secs(copy),
        secs(index),
        secs(copy + index),
        secs(vacuum),
        mb(db_bytes)
    );
    if !reuse {
        let _ = std::fs::remove_file(&rows_path);
    }
    let postmaster: u32 = std::fs::read_to_string(server.dir.join("data/postmaster.pid"))
        .expect("postmaster.pid")
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("postmaster pid");

    // 6. The ledger, and the queries.
    let rt = runtime(2, "client");
    let output = base.join(format!("n{n}-server.out"));
    let (child, ledger_base, ready) = rt.block_on(start_ledger(&dir, &output));
    let pid = child.id().to_string();
    std::thread::sleep(Duration::from_secs(1));
    let ledger_idle_kb = proc_status_kb(&pid, "VmRSS:");
    println!(
        "n={n}: server ready {} after spawn; VmRSS {} MB idle",
        secs(ready),
        ledger_idle_kb / 1024
    );
    rt.block_on(check_agreement(&ledger_base, &pg_url, n));
    println!("n={n}: the ledger's and PostgreSQL's answers agree ({AGREEMENT_SAMPLES} resources, {AGREEMENT_SAMPLES} actions)");

    let mut table: Vec<Row> = Vec::new();
    let sampler = Sampler::start(child.id(), postmaster);
    let cpu = CpuOf {
        ledger: child.id(),
        postmaster,
    };
    let lat_keys = keys(n, ops + ops / 10, 17);
    let thr_keys = Arc::new(keys(n, 1 << 16, 23));
    let only = std::env::var("QUERY_PG_ONLY").unwrap_or_default();
    let chosen = |k: Kind| only.is_empty() || only.split(',').any(|w| w.trim() == k.short());
    for kind in Kind::ALL.into_iter().filter(|&k| chosen(k)) {
        // Rounds alternate the two sides; each side keeps its best round (lowest p50 at 1
        // client, highest rate at `conns`), so a burst of the machine's other work hits
        // one round, not one side.
        let (mut l, mut p): (Vec<Duration>, Vec<Duration>) = (Vec::new(), Vec::new());
        let (mut lt, mut pt) = (Load::default(), Load::default());
        for _ in 0..rounds {
            let ledger = Side::Ledger(&ledger_base);
            let pg = Side::Pg(&pg_url);
            let better = |new: &Vec<Duration>, old: &Vec<Duration>| {
                old.is_empty() || percentile(new, 0.5) < percentile(old, 0.5)
            };
            let r = rt.block_on(latency(&ledger, kind, &lat_keys, ops));
            if better(&r, &l) {
                l = r;
            }
            let r = rt.block_on(latency(&pg, kind, &lat_keys, ops));
            if better(&r, &p) {
                p = r;
            }
            let r = measured(&cpu, true, || {
                rt.block_on(throughput(&ledger, kind, &thr_keys, conns, run_secs))
            });
            if r.rate() > lt.rate() {
                lt = r;
            }
            let r = measured(&cpu, false, || {
                rt.block_on(throughput(&pg, kind, &thr_keys, conns, run_secs))
            });
            if r.rate() > pt.rate() {
                pt = r;
            }
        }
        let (l50, l99) = (percentile(&l, 0.5), percentile(&l, 0.99));
        let (p50, p99) = (percentile(&p, 0.5), percentile(&p, 0.99));
        table.push(Row {
            what: format!("{}, 1 client, p50 / p99 µs", kind.name()),
            ledger: format!("{} / {}", us(l50), us(l99)),
            pg: format!("{} / {}", us(p50), us(p99)),
            ratio: format!(
                "{} / {}",
                ratio(l50.as_secs_f64(), p50.as_secs_f64()),
                ratio(l99.as_secs_f64(), p99.as_secs_f64())
            ),
        });
        let (lr, pr) = (lt.rate(), pt.rate());
        table.push(Row {
            what: format!(
                "{}, {conns} connections, per second (p50 / p99 µs)",
                kind.name()
            ),
            ledger: format!(
                "{lr:.0} ({} / {})",
                us(percentile(&lt.lat, 0.5)),
                us(percentile(&lt.lat, 0.99))
            ),
            pg: format!(
                "{pr:.0} ({} / {})",
                us(percentile(&pt.lat, 0.5)),
                us(percentile(&pt.lat, 0.99))
            ),
            ratio: ratio(lr, pr),
        });
        table.push(Row {
            what: format!(
                "{}, {conns} connections, CPU µs per request: server (client)",
                kind.name()
            ),
            ledger: format!(
                "{:.1} ({:.1})",
                lt.per_request(lt.server_cpu),
                lt.per_request(lt.client_cpu)
            ),
            pg: format!(
                "{:.1} ({:.1})",
                pt.per_request(pt.server_cpu),
                pt.per_request(pt.client_cpu)
            ),
            ratio: ratio(lt.per_request(lt.server_cpu), pt.per_request(pt.server_cpu)),
        });
        println!(
            "n={n}: {} done: 1 client {}/{} vs {}/{} us; {conns} connections {lr:.0}/s vs {pr:.0}/s",
            kind.name(),
            us(l50),
            us(l99),
            us(p50),
            us(p99)
        );
    }
    let (ledger_peak_sampled, pg_peak_pss) = sampler.stop();
    let ledger_hwm = proc_status_kb(&pid, "VmHWM:");
    let ledger_end = proc_status_kb(&pid, "VmRSS:");
    let pg_idle_pss = pg_pss_kb(postmaster);
    stop_ledger(child);
    drop(rt);

    table.push(Row {
        what: "rebuild vs COPY + primary key + 3 indexes".into(),
        ledger: secs(rebuild),
        pg: secs(copy + index),
        ratio: ratio(rebuild.as_secs_f64(), (copy + index).as_secs_f64()),
    });
    table.push(Row {
        what: "disk: log + projection (rebuilt) vs pg_database_size".into(),
        ledger: format!("{} + {}", mb(log_bytes), mb(proj_bytes)),
        pg: mb(db_bytes),
        ratio: ratio((log_bytes + proj_bytes) as f64, db_bytes as f64),
    });
    table.push(Row {
        what: "memory: peak under load (ledger VmHWM; pg PSS sum, sampled)".into(),
        ledger: format!(
            "{} MB (sampled VmRSS peak {} MB)",
            ledger_hwm / 1024,
            ledger_peak_sampled / 1024
        ),
        pg: format!("{} MB", pg_peak_pss / 1024),
        ratio: ratio(ledger_hwm as f64, pg_peak_pss as f64),
    });
    table.push(Row {
        what: "memory: idle (ledger VmRSS when ready / after load; pg PSS after load)".into(),
        ledger: format!("{} / {} MB", ledger_idle_kb / 1024, ledger_end / 1024),
        pg: format!("{} MB", pg_idle_pss / 1024),
        ratio: ratio(ledger_end as f64, pg_idle_pss as f64),
    });

    println!();
    println!(
        "n={n} ({}; snapshot column {snapshot_type}; server ready in {}; whole size took {})",
        machine(),
        secs(ready),
        secs(t_all.elapsed())
    );
    println!("| at {n} actions | ledger | PostgreSQL | ledger / pg |");
    println!("|---|---|---|---|");
    for r in &table {
        println!("| {} | {} | {} | {} |", r.what, r.ledger, r.pg, r.ratio);
    }
    println!();
    if !reuse {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// `nproc` and the CPU model.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cpus} × {model}")
}

fn main() {
    if let Ok(dir) = std::env::var("QUERY_PG_PROBE_DIR") {
        probe(Path::new(&dir), env_or("QUERY_PG_PROBE_N", 0));
        return;
    }
    let sizes = workload::sizes("QUERY_PG_SIZES", "10000,1000000");
    let reuse = std::env::var_os("QUERY_PG_REUSE").is_some();
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("query-bench");
    std::fs::create_dir_all(&base).expect("bench dir");
    for n in sizes {
        assert!(
            (1..=SIZE_MAX).contains(&n),
            "size {n} outside 1..={SIZE_MAX}"
        );
        run_size(&base, n, reuse);
    }
}
