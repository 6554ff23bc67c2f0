//! Disk faults through the real server: the binary runs under `RLIMIT_FSIZE` (SIGXFSZ
//! ignored, so a write past the limit fails with EFBIG like a full disk) while concurrent
//! writers fill it. Writes are refused with 507 `insufficient_storage`, reads keep working,
//! nothing acknowledged is lost, `log::verify` passes, and after a restart with the limit
//! lifted ("space is back") the server accepts writes again.
//!
//! Two shapes of load decide which file hits the limit first: large batches grow the log
//! faster (the log write itself fails: a partial frame that recovery cuts), single creates
//! of large actions grow the sled projection faster (writing the projection fails after the
//! record was durable: that write is acknowledged, every later one refused). Each create is
//! a new action, so the projection's write-back has no repeated key to merge. Failed fsync and
//! ENOSPC at the storage seam are in powerloss.rs (SimStorage).

use super::binserver::{self, Options};
use crate::app::{Api, ADMIN};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const LIMIT: u64 = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Shape {
    /// Batches of 40 events with 2 KiB messages: the log outgrows the projection.
    BigBatches,
    /// Single creates with 8 KiB descriptions: the projection outgrows the log.
    BigEvents,
}

/// marker → (action id, version) of every acknowledged operation.
type Acked = Arc<Mutex<HashMap<String, (u64, u64)>>>;

async fn post(api: &Api, path: &str, body: &Value) -> (StatusCode, Value) {
    api.post(path, ADMIN, body.clone()).await
}

fn assert_disk_full(status: StatusCode, body: &Value) {
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_storage", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("disk is full") && message.contains("restart"),
        "{message}"
    );
}

/// Writes until the server refuses; returns the refusals seen.
async fn fill(api: Api, w: usize, shape: Shape, acked: Acked) -> usize {
    let (s, a) = post(&api, "/api/v1/actions",
        &json!({"type": "fill", "uid": format!("fill-{w}"), "resource": {"type": "vm", "id": w.to_string()},
                "status": "running"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    let id = a["id"].as_u64().unwrap();
    acked
        .lock()
        .unwrap()
        .insert(format!("fill-{w}"), (id, a["version"].as_u64().unwrap()));
    for n in 0.. {
        let (path, body, markers) = match shape {
            Shape::BigBatches => {
                let markers: Vec<String> = (0..40).map(|k| format!("w{w}n{n}k{k}")).collect();
                let commands: Vec<Value> = markers
                    .iter()
                    .map(|m| {
                        json!({"event": {"action": id, "type": "progress",
                                              "message": format!("{m} {}", "x".repeat(2048))}})
                    })
                    .collect();
                (
                    "/api/v1/batch".to_string(),
                    json!({ "commands": commands }),
                    markers,
                )
            }
            Shape::BigEvents => {
                let m = format!("w{w}n{n}");
                (
                    "/api/v1/actions".to_string(),
                    json!({"type": "fill", "uid": m, "description": "y".repeat(8192),
                           "resource": {"type": "vm", "id": w.to_string()}}),
                    vec![m],
                )
            }
        };
        let (status, answer) = post(&api, &path, &body).await;
        if status.is_success() {
            let results = match shape {
                Shape::BigBatches => answer["results"].as_array().unwrap().clone(),
                Shape::BigEvents => vec![answer],
            };
            let mut acked = acked.lock().unwrap();
            for (m, r) in markers.into_iter().zip(results) {
                let id = r["id"].as_u64().unwrap_or(id);
                acked.insert(m, (id, r["version"].as_u64().unwrap()));
            }
            continue;
        }
        assert_disk_full(status, &answer);
        // Refused for good until a restart, creates included; reads still answer.
        let (s, b) = post(&api, &path, &body).await;
        assert_disk_full(s, &b);
        let (s, b) = post(
            &api,
            "/api/v1/actions",
            &json!({"type": "more", "resource": {"type": "vm", "id": "x"}}),
        )
        .await;
        assert_disk_full(s, &b);
        let (s, _) = api.get(&format!("/api/v1/actions/{id}"), ADMIN).await;
        assert_eq!(s, StatusCode::OK);
        return n;
    }
    unreachable!()
}

async fn fill_and_recover(shape: Shape) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let opts = Options {
        segment_bytes: 64 << 20,
        file_size_limit: Some(LIMIT),
    };
    let mut server = binserver::start(&data, &dir.path().join("full.out"), &opts)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.child.id())).unwrap();
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max file size") && l.contains(&LIMIT.to_string())),
        "the server does not run under RLIMIT_FSIZE={LIMIT}:\n{limits}"
    );
    let acked: Acked = Default::default();
    let writers: Vec<_> = (0..3)
        .map(|w| tokio::spawn(fill(server.api.clone(), w, shape, acked.clone())))
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    server.kill();
    let output = binserver::read_output(&dir.path().join("full.out"));
    let failed_file = match shape {
        Shape::BigBatches => "log/00000000000000000001.seg",
        Shape::BigEvents => "projection apply failed",
    };
    assert!(
        output.contains("File too large") && output.contains(failed_file),
        "{shape:?}: expected the failure in {failed_file}:\n{output}"
    );

    // Nothing acknowledged lost, nothing damaged.
    let summary = action_ledger::log::verify(
        &action_ledger::log::FsStorage,
        &data.join("log"),
        &mut |_| Ok(()),
    )
    .unwrap_or_else(|e| panic!("{shape:?}: verify after the disk filled: {e}"));
    let opts = Options {
        segment_bytes: 64 << 20,
        file_size_limit: None,
    };
    let mut server = binserver::start(&data, &dir.path().join("after.out"), &opts)
        .await
        .unwrap_or_else(|e| panic!("{shape:?}: restart with space back failed: {e}"));
    let acked = acked.lock().unwrap().clone();
    let mut histories: HashMap<u64, Vec<String>> = HashMap::new();
    for &(id, _) in acked.values() {
        if histories.contains_key(&id) {
            continue;
        }
        let (_, h) = server
            .get(&format!("/api/v1/actions/{id}/history"), ADMIN)
            .await;
        let markers = h["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let e = &r["event"];
                match e["type"].as_str() {
                    Some("created") => e["uid"].as_str().unwrap().to_string(),
                    _ => e["message"]
                        .as_str()
                        .unwrap()
                        .split(' ')
                        .next()
                        .unwrap()
                        .to_string(),
                }
            })
            .collect();
        histories.insert(id, markers);
    }
    for (m, &(id, version)) in &acked {
        let h = &histories[&id];
        assert_eq!(
            h.get(version as usize - 1),
            Some(m),
            "{shape:?}: acknowledged {m} (action {id} version {version}) lost or misplaced"
        );
        assert_eq!(h.iter().filter(|x| *x == m).count(), 1, "{m} twice");
    }
    let total: usize = histories.values().map(Vec::len).sum();
    assert!(
        summary.last_position as usize >= acked.len() / 40,
        "{shape:?}: {} records",
        summary.last_position
    );
    assert!(total >= acked.len());
    // Usable again.
    let (s, b) = post(
        &server,
        "/api/v1/actions",
        &json!({"type": "after", "resource": {"type": "vm", "id": "after"}}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    server.kill();
    eprintln!(
        "disk full ({shape:?}): {} acknowledged operations before the limit, all present after restart; \
         torn tail {}",
        acked.len(),
        summary
            .torn_tail
            .map_or("none".to_string(), |t| format!("{} bytes cut", t.len))
    );
    assert!(
        acked.len() > 10,
        "{shape:?}: only {} acknowledged",
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_log_file_refuses_writes_with_507_and_loses_nothing() {
    fill_and_recover(Shape::BigBatches).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_projection_file_refuses_writes_with_507_and_loses_nothing() {
    fill_and_recover(Shape::BigEvents).await;
}

/// The in-process server with its log on a simulated disk (the storage seam), for the
/// faults a real filesystem cannot produce on demand: a failed fdatasync, and ENOSPC.
async fn sim_server(
    dir: &std::path::Path,
    sim: &action_ledger::log::SimStorage,
) -> (action_ledger::http::server::Running, Api) {
    let mut config = crate::app::config();
    config.log_storage = action_ledger::http::server::LogStorage(Arc::new(sim.clone()));
    let running = crate::app::start(&dir.join("data"), config).await;
    let api = Api::new(format!("http://{}", running.addr));
    (running, api)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_fsync_and_enospc_over_http_refuse_writes_and_lose_nothing() {
    use action_ledger::log::storage::Tear;
    use action_ledger::log::SimStorage;
    use std::io::ErrorKind;
    let dir = tempfile::tempdir().unwrap();
    let sim = SimStorage::new();
    let event = |m: &str| json!({"type": "progress", "message": m});

    // 1. A failed fdatasync: 503, for that write and every later one, until a restart.
    let (running, api) = sim_server(dir.path(), &sim).await;
    let (s, a) = post(
        &api,
        "/api/v1/actions",
        &json!({"type": "t", "resource": {"type": "vm", "id": "1"}, "status": "running"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    let path = format!("/api/v1/actions/{}/events", a["id"]);
    let (s, b) = post(&api, &path, &event("acked-1")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    sim.fail_op(2, ErrorKind::Other, false); // the write succeeds, its fdatasync fails
    for m in ["lost-1", "lost-2"] {
        let (s, b) = post(&api, &path, &event(m)).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
        assert_eq!(b["error"]["code"], "unavailable", "{b}");
        assert!(
            b["error"]["message"]
                .as_str()
                .unwrap()
                .contains("storage failure"),
            "{b}"
        );
    }
    running.stop().await.unwrap();
    // The machine loses power: what was never synced is gone.
    sim.power_loss(|_, _| Tear::DropAll);
    sim.restart();
    sim.heal();
    let (running, api) = sim_server(dir.path(), &sim).await;
    let (_, h) = api.get(&path.replace("/events", "/history"), ADMIN).await;
    let messages: Vec<&str> = h["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["event"]["message"].as_str())
        .collect();
    assert_eq!(messages, ["acked-1"], "{h}");
    let (s, b) = post(&api, &path, &event("acked-2")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["version"], 3, "{b}");

    // 2. ENOSPC: 507 insufficient_storage, until a restart with space back.
    sim.fail_op(1, ErrorKind::StorageFull, true);
    for m in ["full-1", "full-2"] {
        let (s, b) = post(&api, &path, &event(m)).await;
        assert_disk_full(s, &b);
    }
    sim.heal();
    running.stop().await.unwrap();
    let (running, api) = sim_server(dir.path(), &sim).await;
    let (s, b) = post(&api, &path, &event("acked-3")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["version"], 4, "{b}");
    running.stop().await.unwrap();
    let summary = action_ledger::log::verify(
        &sim,
        std::path::Path::new(&dir.path().join("data").join("log")),
        &mut |_| Ok(()),
    )
    .unwrap();
    assert_eq!(summary.last_position, 4);
}
