//! Soak: runs the real `action-ledger serve` binary and drives it with mixed writers,
//! readers, waiters and watchers for `SOAK_MINUTES`, printing per interval the throughput,
//! p50/p99 latency and errors of each kind of client and the server's RSS.
//!
//! ```sh
//! SOAK_MINUTES=10 cargo bench --bench soak
//! ```
//!
//! Knobs (environment): `SOAK_MINUTES` (1), `SOAK_INTERVAL_SECS` (10), `SOAK_WRITERS` (4),
//! `SOAK_READERS` (4), `SOAK_WAITERS` (2), `SOAK_WATCHERS` (2), `SOAK_WARMUP_INTERVALS` (2,
//! excluded from the RSS-growth and p99 figures of the summary), `SOAK_PRELOAD_ACTIONS` (0:
//! before the clock starts, fill the store with that many completed actions through
//! `POST /api/v1/batch`, so the run measures a server whose projection no longer fits its
//! cache instead of an empty one warming up). Exit 1 if any request failed or a watcher saw
//! positions out of order.
//!
//! Writers: create an action, then `started`, three `progress`, `completed` (6 durable
//! writes per action). Readers: get one recent action, list a page, and the DigitalOcean
//! list. Waiters: `wait` on the newest action (2 s at most). Watchers: one SSE stream each,
//! resumed with `Last-Event-ID` if it ends; their figure is events received.

mod common;

use common::{dir_bytes, env_or, percentile};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "soak-admin-token";

/// Latencies (µs) and errors of one kind of client during the current interval.
#[derive(Default)]
struct Class {
    latencies: Mutex<Vec<u32>>,
    errors: AtomicU64,
    total: AtomicU64,
}

impl Class {
    fn record(&self, started: Instant, ok: bool) {
        let us = started.elapsed().as_micros().min(u32::MAX as u128) as u32;
        self.latencies.lock().unwrap().push(us);
        self.total.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// (count, p50 ms, p99 ms, errors) of the interval, resetting it.
    fn take(&self) -> (usize, f64, f64, u64) {
        let mut v = std::mem::take(&mut *self.latencies.lock().unwrap());
        let errors = self.errors.swap(0, Ordering::Relaxed);
        if v.is_empty() {
            return (0, 0.0, 0.0, errors);
        }
        v.sort_unstable();
        let q = |p: f64| percentile(&v, p) as f64 / 1000.0;
        (v.len(), q(0.50), q(0.99), errors)
    }
}

#[derive(Default)]
struct Stats {
    write: Class,
    read: Class,
    wait: Class,
    watch_events: AtomicU64,
    watch_errors: AtomicU64,
    newest: AtomicU64,
}

struct Server {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn start_server() -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_action-ledger"))
        .args(["serve", "--listen", "127.0.0.1:0", "--redis-listen", "off"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--admin-token", TOKEN])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start action-ledger serve");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let base = loop {
        let line = lines
            .next()
            .expect("serve exited before listening")
            .expect("read serve's stderr");
        if let Some(a) = line.strip_prefix("action-ledger listening on ") {
            break a.trim().to_string();
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server {
        child,
        base,
        _dir: dir,
    }
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

async fn writer(client: reqwest::Client, base: String, stats: Arc<Stats>, stop: Arc<AtomicBool>) {
    static NEXT_RESOURCE: AtomicU64 = AtomicU64::new(0);
    while !stop.load(Ordering::Relaxed) {
        let n = NEXT_RESOURCE.fetch_add(1, Ordering::Relaxed);
        let t = Instant::now();
        let resp = client
            .post(format!("{base}/api/v1/actions"))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"type": "snapshot", "kind": "task",
                "resource": {"type": "droplet", "id": n.to_string()}}))
            .send()
            .await;
        let id = match resp {
            Ok(r) if r.status() == 201 => {
                let v: serde_json::Value = r.json().await.unwrap_or_default();
                stats.write.record(t, true);
                v["id"].as_u64()
            }
            _ => {
                stats.write.record(t, false);
                None
            }
        };
        let Some(id) = id else { continue };
        stats.newest.fetch_max(id, Ordering::Relaxed);
        for ev in [
            serde_json::json!({"type": "started"}),
            serde_json::json!({"type": "progress", "progress": 25}),
            serde_json::json!({"type": "progress", "progress": 50, "message": "half"}),
            serde_json::json!({"type": "progress", "progress": 75}),
            serde_json::json!({"type": "completed"}),
        ] {
            let t = Instant::now();
            let ok = client
                .post(format!("{base}/api/v1/actions/{id}/events"))
                .bearer_auth(TOKEN)
                .json(&ev)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            stats.write.record(t, ok);
        }
    }
}

/// Fills the store with `n` completed actions, 500 per batch request (creates, then their
/// `completed` events). Returns the highest id.
async fn preload(client: &reqwest::Client, base: &str, n: u64) -> u64 {
    const CHUNK: u64 = 500;
    let mut newest = 0;
    let mut done = 0;
    let started = Instant::now();
    while done < n {
        let k = CHUNK.min(n - done);
        let creates: Vec<_> = (0..k)
            .map(|i| {
                serde_json::json!({"create": {"type": "snapshot", "kind": "task", "status": "running",
                "resource": {"type": "droplet", "id": format!("pre-{}", done + i)}}})
            })
            .collect();
        let post = |body: serde_json::Value| async move {
            let r = client
                .post(format!("{base}/api/v1/batch"))
                .bearer_auth(TOKEN)
                .json(&body)
                .send()
                .await
                .expect("preload batch");
            let status = r.status();
            let v: serde_json::Value = r.json().await.expect("preload answer");
            assert_eq!(status, 200, "preload batch: {v}");
            v
        };
        let v = post(serde_json::json!({ "commands": creates })).await;
        let ids: Vec<u64> = v["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|r| r["id"].as_u64().expect("id"))
            .collect();
        let completes: Vec<_> = ids
            .iter()
            .map(|id| serde_json::json!({"event": {"action": id, "type": "completed"}}))
            .collect();
        post(serde_json::json!({ "commands": completes })).await;
        newest = newest.max(ids.into_iter().max().unwrap_or(0));
        done += k;
    }
    println!(
        "preloaded {n} completed actions in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    newest
}

async fn reader(client: reqwest::Client, base: String, stats: Arc<Stats>, stop: Arc<AtomicBool>) {
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let newest = stats.newest.load(Ordering::Relaxed);
        let url = match i % 3 {
            0 if newest > 0 => format!("{base}/api/v1/actions/{}", 1 + (i * 7919) % newest),
            1 => format!("{base}/api/v1/actions?limit=20&resource_type=droplet"),
            _ => format!("{base}/v2/actions?per_page=20"),
        };
        let t = Instant::now();
        let ok = client
            .get(url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        stats.read.record(t, ok);
    }
}

async fn waiter(client: reqwest::Client, base: String, stats: Arc<Stats>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let id = stats.newest.load(Ordering::Relaxed);
        if id == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let t = Instant::now();
        let ok = client
            .get(format!("{base}/api/v1/actions/{id}/wait?timeout_ms=2000"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        stats.wait.record(t, ok);
    }
}

async fn watcher(client: reqwest::Client, base: String, stats: Arc<Stats>, stop: Arc<AtomicBool>) {
    use futures_util::StreamExt;
    let mut last: Option<u64> = None;
    while !stop.load(Ordering::Relaxed) {
        let mut req = client
            .get(format!("{base}/api/v1/watch"))
            .bearer_auth(TOKEN);
        if let Some(l) = last {
            req = req.header("last-event-id", l.to_string());
        }
        let resp = match req.send().await {
            Ok(r) if r.status() == 200 => r,
            _ => {
                stats.watch_errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let mut stream = resp.bytes_stream();
        let mut buf = String::new();
        loop {
            let chunk = tokio::select! {
                c = stream.next() => c,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {
                    if stop.load(Ordering::Relaxed) { return; }
                    continue;
                }
            };
            let Some(Ok(chunk)) = chunk else { break };
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(nl) = buf.find('\n') {
                let line: String = buf.drain(..=nl).collect();
                if let Some(id) = line.strip_prefix("id:") {
                    let Ok(id) = id.trim().parse::<u64>() else {
                        continue;
                    };
                    // One record may hold several events (a batch): same id, never lower.
                    if last.is_some_and(|l| id < l) {
                        stats.watch_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    last = Some(id);
                    stats.watch_events.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; this harness takes its settings from the environment.
    let minutes = env_or::<u64>("SOAK_MINUTES", 1);
    let interval = Duration::from_secs(env_or::<u64>("SOAK_INTERVAL_SECS", 10).max(1));
    let warmup = env_or::<u64>("SOAK_WARMUP_INTERVALS", 2) as usize;
    let counts = [
        env_or::<u64>("SOAK_WRITERS", 4),
        env_or::<u64>("SOAK_READERS", 4),
        env_or::<u64>("SOAK_WAITERS", 2),
        env_or::<u64>("SOAK_WATCHERS", 2),
    ];
    let server = start_server();
    let pid = server.child.id();
    println!(
        "soak: {minutes} min against {} (pid {pid}); writers {} readers {} waiters {} watchers {}; {} cores",
        server.base,
        counts[0],
        counts[1],
        counts[2],
        counts[3],
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let watch_client = reqwest::Client::new();
    let preload_actions = env_or::<u64>("SOAK_PRELOAD_ACTIONS", 0);
    if preload_actions > 0 {
        let newest = rt.block_on(preload(&client, &server.base, preload_actions));
        stats.newest.store(newest, Ordering::Relaxed);
        println!("RSS after preload: {:.1} MiB", rss_mib(pid));
    }
    let mut tasks = Vec::new();
    for (kind, n) in counts.iter().enumerate() {
        for _ in 0..*n {
            let (b, s, st) = (server.base.clone(), stats.clone(), stop.clone());
            let c = if kind == 3 {
                watch_client.clone()
            } else {
                client.clone()
            };
            tasks.push(rt.spawn(async move {
                match kind {
                    0 => writer(c, b, s, st).await,
                    1 => reader(c, b, s, st).await,
                    2 => waiter(c, b, s, st).await,
                    _ => watcher(c, b, s, st).await,
                }
            }));
        }
    }
    println!(
        "{:>6} | {:>22} | {:>22} | {:>22} | {:>10} | {:>8} | errors",
        "t(s)",
        "writes/s p50 p99 ms",
        "reads/s p50 p99 ms",
        "waits/s p50 p99 ms",
        "events/s",
        "RSS MiB"
    );
    let start = Instant::now();
    let end = start + Duration::from_secs(minutes * 60);
    let mut rss = Vec::new();
    let mut p99s: Vec<(f64, f64)> = Vec::new();
    let mut total_errors = 0u64;
    let mut last_events = 0u64;
    let mut last_watch_errors = 0u64;
    while Instant::now() < end {
        std::thread::sleep(interval.min(end.saturating_duration_since(Instant::now())));
        let secs = interval.as_secs_f64();
        let (wn, w50, w99, we) = stats.write.take();
        let (rn, r50, r99, re) = stats.read.take();
        let (an, a50, a99, ae) = stats.wait.take();
        let events = stats.watch_events.load(Ordering::Relaxed);
        let watch_errors = stats.watch_errors.load(Ordering::Relaxed);
        let errors = we + re + ae + (watch_errors - last_watch_errors);
        last_watch_errors = watch_errors;
        total_errors += errors;
        let mem = rss_mib(pid);
        rss.push(mem);
        p99s.push((w99, r99));
        println!(
            "{:>6.0} | {:>8.0} {:>6.2} {:>6.2} | {:>8.0} {:>6.2} {:>6.2} | {:>8.1} {:>6.1} {:>6.1} | {:>10.0} | {:>8.1} | {errors}",
            start.elapsed().as_secs_f64(),
            wn as f64 / secs, w50, w99,
            rn as f64 / secs, r50, r99,
            an as f64 / secs, a50, a99,
            (events - last_events) as f64 / secs,
            mem,
        );
        last_events = events;
    }
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    });
    let writes = stats.write.total.load(Ordering::Relaxed);
    let reads = stats.read.total.load(Ordering::Relaxed);
    let waits = stats.wait.total.load(Ordering::Relaxed);
    let after = rss.iter().skip(warmup).copied().collect::<Vec<_>>();
    let (first, last) = (
        after.first().copied().unwrap_or(f64::NAN),
        after.last().copied().unwrap_or(f64::NAN),
    );
    let steady: Vec<&(f64, f64)> = p99s.iter().skip(warmup).collect();
    let w99: Vec<f64> = steady.iter().map(|p| p.0).collect();
    let r99: Vec<f64> = steady.iter().map(|p| p.1).collect();
    let range = |v: &[f64]| {
        (
            v.iter().copied().fold(f64::INFINITY, f64::min),
            v.iter().copied().fold(0.0, f64::max),
        )
    };
    println!(
        "summary: {writes} writes, {reads} reads, {waits} waits, {} watch events, {total_errors} errors",
        stats.watch_events.load(Ordering::Relaxed)
    );
    println!(
        "summary: RSS after warm-up {first:.1} MiB -> {last:.1} MiB ({:+.1}%); write p99 {:.2}..{:.2} ms, read p99 {:.2}..{:.2} ms over the steady intervals",
        (last - first) / first * 100.0,
        range(&w99).0,
        range(&w99).1,
        range(&r99).0,
        range(&r99).1,
    );
    let data = server._dir.path().join("data");
    println!(
        "summary: disk as the live server wrote it: log {} MB, projection {} MB",
        dir_bytes(&data.join("log")) >> 20,
        dir_bytes(&data.join("projection")) >> 20,
    );
    drop(server);
    if total_errors > 0 {
        std::process::exit(1);
    }
}
