//! The crash oracle: the real `action-ledger serve` binary, concurrent HTTP writers (creates,
//! events, completions, all-or-nothing batches, half of them with an `Idempotency-Key`),
//! SIGKILL at seeded random moments (sometimes again during the recovery that follows),
//! restart, and a check of everything that was ever sent against what the ledger serves:
//!
//! - every acknowledged submission is in the log exactly once, each of its operations at the
//!   place its acknowledged `version` says (the action's history, index `version − 1`);
//! - every unacknowledged submission is wholly present (one record) or wholly absent, and a
//!   refused one is absent; nothing appears that nobody sent;
//! - positions are dense, `/history` and `GET /actions/{id}` agree with the log;
//! - every restart succeeds, and the final log passes `log::verify`.
//!
//! A request whose answer was lost to a kill is retried after the restart when it carries
//! an `Idempotency-Key` (its answer then counts as the acknowledgement: the retry must not
//! record it twice). `CRASH_CYCLES=N` (default 20) sets the number of kills,
//! `CRASH_SEED=S` replays a seed's kill schedule and request mix (the interleaving of the
//! writers is the scheduler's).

use super::binserver::{self, BinServer, Options};
use crate::app::{try_send, ADMIN};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::RwLock;

const WRITERS: usize = 6;

#[derive(Debug, Clone)]
struct Sub {
    writer: usize,
    what: &'static str,
    /// One marker per command: the uid of a create, the message of an event.
    markers: Vec<String>,
    /// (action id, version) per command, from a 2xx answer.
    acked: Option<Vec<(u64, u64)>>,
    /// Refused with 409 (nothing may have been recorded).
    refused: bool,
}

#[derive(Clone)]
struct Req {
    sub: usize,
    what: &'static str,
    path: String,
    body: Value,
    key: Option<String>,
}

struct Shared {
    /// (generation, base URL): `None` while the server is down or being checked.
    base: RwLock<(u64, Option<String>)>,
    subs: Mutex<Vec<Sub>>,
    failures: Mutex<Vec<String>>,
    stop: AtomicBool,
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {v:?}"))
    })
}

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn next_request(sh: &Shared, w: usize, n: u64, rng: &mut SmallRng, current: Option<u64>) -> Req {
    let tag = format!("w{w}n{n}");
    let key = rng.random_bool(0.5).then(|| format!("k-{tag}"));
    let create = |uid: &str| {
        json!({"type": "crash-test", "uid": uid, "resource": {"type": "vm", "id": tag},
               "status": "running"})
    };
    let roll = rng.random_range(0..100);
    let (what, path, body, markers) = match current {
        Some(id) if (10..70).contains(&roll) => {
            let m = format!("e-{tag}");
            (
                "event",
                format!("/api/v1/actions/{id}/events"),
                json!({"type": "progress", "progress": (n % 100) as f64, "message": m}),
                vec![m],
            )
        }
        Some(id) if (10..92).contains(&roll) => {
            let (c, e1, e2) = (format!("b-{tag}"), format!("b1-{tag}"), format!("b2-{tag}"));
            (
                "batch",
                "/api/v1/batch".to_string(),
                json!({"commands": [
                    {"create": create(&c)},
                    {"event": {"action": id, "type": "progress", "message": e1}},
                    {"event": {"action": id, "type": "progress", "message": e2}},
                ]}),
                vec![c, e1, e2],
            )
        }
        Some(id) if roll >= 10 => {
            let m = format!("x-{tag}");
            (
                "complete",
                format!("/api/v1/actions/{id}/events"),
                json!({"type": "completed", "message": m}),
                vec![m],
            )
        }
        _ => {
            let uid = format!("u-{tag}");
            (
                "create",
                "/api/v1/actions".to_string(),
                create(&uid),
                vec![uid],
            )
        }
    };
    let mut subs = sh.subs.lock().unwrap();
    subs.push(Sub {
        writer: w,
        what,
        markers,
        acked: None,
        refused: false,
    });
    Req {
        sub: subs.len() - 1,
        what,
        path,
        body,
        key,
    }
}

async fn send(client: &Client, base: &str, req: &Req) -> Result<(StatusCode, Value), String> {
    let mut r = client
        .post(format!("{base}{}", req.path))
        .bearer_auth(ADMIN)
        .json(&req.body);
    if let Some(k) = &req.key {
        r = r.header("Idempotency-Key", k);
    }
    let (status, _, body) = try_send(r).await.map_err(|e| e.to_string())?;
    Ok((status, body))
}

fn acks(what: &str, body: &Value) -> Option<Vec<(u64, u64)>> {
    let one = |v: &Value| Some((v["id"].as_u64()?, v["version"].as_u64()?));
    if what == "batch" {
        body["results"].as_array()?.iter().map(one).collect()
    } else {
        Some(vec![one(body)?])
    }
}

async fn writer(w: usize, seed: u64, sh: Arc<Shared>) {
    let client = client();
    let mut rng = SmallRng::seed_from_u64(seed.wrapping_add((w as u64 + 1) * 0x9E37_79B9));
    let mut current: Option<u64> = None;
    // An answer about `current` was lost: it may have been completed.
    let mut uncertain = false;
    let mut retry: Option<Req> = None;
    let mut n = 0u64;
    let mut failed_gen: Option<u64> = None;
    while !sh.stop.load(Ordering::Relaxed) {
        let guard = sh.base.read().await;
        let gen = guard.0;
        let base = match (&guard.1, failed_gen) {
            (Some(b), None) => b.clone(),
            (Some(b), Some(g)) if gen > g => b.clone(),
            _ => {
                drop(guard);
                tokio::time::sleep(Duration::from_millis(2)).await;
                continue;
            }
        };
        failed_gen = None;
        let req = match retry.take() {
            Some(r) => r,
            None => {
                n += 1;
                next_request(&sh, w, n, &mut rng, current)
            }
        };
        match send(&client, &base, &req).await {
            Ok((status, body)) if status.is_success() => match acks(req.what, &body) {
                Some(a) => {
                    match req.what {
                        "create" => current = Some(a[0].0),
                        "complete" => current = None,
                        _ => {}
                    }
                    uncertain = false;
                    sh.subs.lock().unwrap()[req.sub].acked = Some(a);
                }
                None => sh.failures.lock().unwrap().push(format!(
                    "writer {w}: {} answered {status} without ids and versions: {body}",
                    req.path
                )),
            },
            Ok((StatusCode::CONFLICT, body))
                if uncertain && body["error"]["code"] == "invalid_transition" =>
            {
                // An earlier request whose answer was lost completed the action after all.
                sh.subs.lock().unwrap()[req.sub].refused = true;
                current = None;
                uncertain = false;
            }
            Ok((status, body)) => sh.failures.lock().unwrap().push(format!(
                "writer {w}: POST {} {} -> {status} {body}",
                req.path, req.body
            )),
            Err(_) => {
                failed_gen = Some(gen);
                uncertain = true;
                if req.key.is_some() {
                    retry = Some(req);
                }
            }
        }
        drop(guard);
    }
}

#[derive(Default, Debug)]
struct Stats {
    records: u64,
    acked_subs: u64,
    acked_ops: u64,
    unacked_present: u64,
    unacked_absent: u64,
    refused: u64,
    histories_checked: u64,
}

async fn get(client: &Client, url: String) -> Result<Value, String> {
    let (status, _, body) = try_send(client.get(&url).bearer_auth(ADMIN))
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if status != StatusCode::OK {
        return Err(format!("GET {url} -> {status} {body}"));
    }
    Ok(body)
}

/// The marker of one operation as the API shows it.
fn marker(event: &Value) -> String {
    match event["type"].as_str() {
        Some("created") => event["uid"].as_str().unwrap_or("?").to_string(),
        _ => event["message"].as_str().unwrap_or("?").to_string(),
    }
}

/// Checks everything sent so far against the server at `base` (no writer is running).
/// `since`: only actions touched after this position get their history and snapshot
/// compared (all of them when 0). Returns the log's last position.
async fn check(
    base: &str,
    sh: &Shared,
    since: u64,
    stats: &mut Stats,
    violations: &mut Vec<String>,
) -> Result<u64, String> {
    let client = client();
    // The whole log, as (position, action, marker) per operation.
    let mut ops: Vec<(u64, u64, String)> = Vec::new();
    let mut after = 0u64;
    loop {
        let page = get(
            &client,
            format!("{base}/api/v1/log?after={after}&limit=1000"),
        )
        .await?;
        for r in page["records"]
            .as_array()
            .ok_or("log page without records")?
        {
            let action = r["event"]["action"].as_u64().ok_or("op without action")?;
            ops.push((
                r["position"].as_u64().ok_or("record without position")?,
                action,
                marker(&r["event"]),
            ));
        }
        match page["next_after"].as_u64() {
            Some(n) => after = n,
            None => break,
        }
    }
    let mut last = 0u64;
    for &(p, _, _) in &ops {
        if p != last && p != last + 1 {
            violations.push(format!("positions not dense: {p} follows {last}"));
        }
        last = p;
    }
    stats.records = last;
    let mut by_marker: HashMap<&str, Vec<(u64, u64)>> = HashMap::new();
    let mut per_action: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
    let mut touched: BTreeSet<u64> = BTreeSet::new();
    for (p, a, m) in &ops {
        by_marker.entry(m).or_default().push((*p, *a));
        per_action.entry(*a).or_default().push(m);
        if *p > since {
            touched.insert(*a);
        }
    }

    let subs = sh.subs.lock().unwrap().clone();
    let mut known: BTreeSet<&str> = BTreeSet::new();
    *stats = Stats {
        records: stats.records,
        histories_checked: stats.histories_checked,
        ..Stats::default()
    };
    for (i, s) in subs.iter().enumerate() {
        let occ: Vec<Vec<(u64, u64)>> = s
            .markers
            .iter()
            .map(|m| by_marker.get(m.as_str()).cloned().unwrap_or_default())
            .collect();
        for m in &s.markers {
            known.insert(m);
        }
        let what = format!(
            "submission {i} ({} by writer {}, {:?})",
            s.what, s.writer, s.markers
        );
        if let Some(o) = occ.iter().find(|o| o.len() > 1) {
            violations.push(format!("{what}: recorded {} times at {o:?}", o.len()));
            continue;
        }
        let present = occ.iter().filter(|o| o.len() == 1).count();
        if present != 0 && present != s.markers.len() {
            violations.push(format!(
                "{what}: only {present} of its {} operations are in the log: {occ:?}",
                s.markers.len()
            ));
            continue;
        }
        if present > 0 && occ.iter().any(|o| o[0].0 != occ[0][0].0) {
            violations.push(format!("{what}: split over several records: {occ:?}"));
        }
        match &s.acked {
            Some(acks) => {
                stats.acked_subs += 1;
                stats.acked_ops += acks.len() as u64;
                if present == 0 {
                    violations.push(format!("{what}: acknowledged as {acks:?} but LOST"));
                    continue;
                }
                for (m, &(id, version)) in s.markers.iter().zip(acks) {
                    let seq = per_action.get(&id).cloned().unwrap_or_default();
                    let at = seq.get(version as usize - 1).copied();
                    if at != Some(m.as_str()) {
                        violations.push(format!(
                            "{what}: acknowledged {m} as action {id} version {version}, but that place holds {at:?} (action's operations: {seq:?})"
                        ));
                    }
                }
            }
            None if s.refused => {
                stats.refused += 1;
                if present > 0 {
                    violations.push(format!("{what}: refused with 409 but recorded: {occ:?}"));
                }
            }
            None if present > 0 => stats.unacked_present += 1,
            None => stats.unacked_absent += 1,
        }
    }
    for m in by_marker.keys() {
        if !known.contains(m) {
            violations.push(format!(
                "the log holds an operation nobody sent: {m:?} at {:?}",
                by_marker[m]
            ));
        }
    }

    // The projection's answers agree with the log.
    for (&id, seq) in &per_action {
        if since > 0 && !touched.contains(&id) {
            continue;
        }
        let h = get(&client, format!("{base}/api/v1/actions/{id}/history")).await?;
        let hist: Vec<String> = h["records"]
            .as_array()
            .ok_or("history without records")?
            .iter()
            .map(|r| marker(&r["event"]))
            .collect();
        if hist != *seq {
            violations.push(format!(
                "action {id}: history {hist:?} but the log says {seq:?}"
            ));
        }
        let a = get(&client, format!("{base}/api/v1/actions/{id}")).await?;
        if a["version"].as_u64() != Some(seq.len() as u64) {
            violations.push(format!(
                "action {id}: version {} but {} operations in the log",
                a["version"],
                seq.len()
            ));
        }
        stats.histories_checked += 1;
    }
    Ok(last)
}

fn verify_log(data_dir: &Path) -> Result<u64, String> {
    let summary = action_ledger::log::verify(
        &action_ledger::log::FsStorage,
        &data_dir.join("log"),
        &mut |_| Ok(()),
    )
    .map_err(|e| e.to_string())?;
    Ok(summary.last_position)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_under_concurrent_writers_loses_nothing_acknowledged() {
    let cycles = env_u64("CRASH_CYCLES").unwrap_or(20);
    let seed = env_u64("CRASH_SEED").unwrap_or_else(rand::random);
    eprintln!("crash oracle: seed {seed} (CRASH_SEED={seed} to replay), {cycles} cycles");
    let fail = |msg: String| -> ! {
        panic!("crash oracle, seed {seed} (CRASH_SEED={seed} to replay): {msg}")
    };
    let mut rng = SmallRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let opts = Options {
        // Small segments: kills land during rotations too.
        segment_bytes: 8 * 1024,
        file_size_limit: None,
    };
    let mut starts = 0u64;
    let start = |rng: &mut SmallRng, starts: &mut u64| {
        let data = data.clone();
        let out = dir.path().join(format!("server-{starts}.out"));
        *starts += 1;
        let kill_in_recovery = rng.random_bool(0.15).then(|| rng.random_range(0..60));
        async move {
            if let Some(ms) = kill_in_recovery {
                // Kill it again while it recovers (or even before it has read anything).
                let mut child = binserver::spawn(&data, &out, &opts);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                let _ = child.kill();
                let _ = child.wait();
            }
            binserver::start(&data, &out, &opts).await
        }
    };
    let mut server: BinServer = match start(&mut rng, &mut starts).await {
        Ok(s) => s,
        Err(e) => fail(format!("first start failed: {e}")),
    };
    let sh = Arc::new(Shared {
        base: RwLock::new((0, Some(server.base.clone()))),
        subs: Mutex::new(Vec::new()),
        failures: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
    });
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(writer(w, seed, sh.clone())))
        .collect();

    let mut stats = Stats::default();
    let mut violations = Vec::new();
    let mut checked_up_to = 0u64;
    for cycle in 0..cycles {
        tokio::time::sleep(Duration::from_millis(rng.random_range(5..300))).await;
        server.kill();
        let mut base = sh.base.write().await;
        // Every writer's request has now failed or been answered.
        base.0 += 1;
        base.1 = None;
        server = match start(&mut rng, &mut starts).await {
            Ok(s) => s,
            Err(e) => fail(format!("restart after kill {} failed: {e}", cycle + 1)),
        };
        match check(
            &server.base,
            &sh,
            checked_up_to,
            &mut stats,
            &mut violations,
        )
        .await
        {
            Ok(last) => checked_up_to = last,
            Err(e) => fail(format!("check after kill {} failed: {e}", cycle + 1)),
        }
        if !violations.is_empty() {
            break;
        }
        base.1 = Some(server.base.clone());
    }

    sh.stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    // One last kill, then everything: every action's history, and the on-disk check.
    server.kill();
    let verified = verify_log(&data);
    server = match start(&mut rng, &mut starts).await {
        Ok(s) => s,
        Err(e) => fail(format!("final restart failed: {e}")),
    };
    if let Err(e) = check(&server.base, &sh, 0, &mut stats, &mut violations).await {
        fail(format!("final check failed: {e}"));
    }
    server.kill();
    let failures = sh.failures.lock().unwrap().clone();
    eprintln!(
        "crash oracle: seed {seed}: {cycles} kills, {starts} starts (0 failed), {} log records, \
         {} acknowledged submissions ({} operations) all present exactly once and in place, \
         {} unacknowledged present whole, {} absent, {} refused; {} history checks; \
         {} violations, {} unexpected answers",
        stats.records,
        stats.acked_subs,
        stats.acked_ops,
        stats.unacked_present,
        stats.unacked_absent,
        stats.refused,
        stats.histories_checked,
        violations.len(),
        failures.len()
    );
    if !violations.is_empty() {
        let shown: Vec<_> = violations.iter().take(20).collect();
        fail(format!("{} violations:\n{shown:#?}", violations.len()));
    }
    if !failures.is_empty() {
        let shown: Vec<_> = failures.iter().take(20).collect();
        fail(format!(
            "{} unexpected answers:\n{shown:#?}",
            failures.len()
        ));
    }
    match verified {
        Ok(last) => assert_eq!(
            last, stats.records,
            "seed {seed}: verify and the restarted server disagree on the last position"
        ),
        Err(e) => fail(format!("log::verify after the last kill: {e}")),
    }
    assert!(
        stats.acked_subs > 0,
        "seed {seed}: nothing was acknowledged"
    );
}
