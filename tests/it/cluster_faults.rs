//! Cluster mode's answers to a node cut off from PostgreSQL and to a node's local disk
//! failing, through the real binary (docs/cluster.md, the failure table).
//!
//! - **Cut off**: PostgreSQL stops; every node turns not ready (`/readyz` 503
//!   `cluster_log_unreachable`, the metric `action_ledger_cluster_log_reachable` 0) once it
//!   has not heard from it for `CLUSTER_LOG_STALE_MS`, keeps answering reads from its replica,
//!   and is ready again once PostgreSQL is back.
//! - **Disk failure**: a node's writes to its data directory fail (`prlimit --fsize` on the
//!   running process, SIGXFSZ ignored: EFBIG, like a full or failed disk). A leader steps
//!   down and another node takes over; a follower stops copying; the failed node is not ready
//!   and refuses writes; every acknowledged write is on the surviving nodes exactly once.

use crate::app::{try_send, ADMIN};
use crate::binserver::{read_output, Options};
use crate::nodes::{start_nodes, wait_leader, Node};
use action_ledger::limits::CLUSTER_LOG_STALE_MS;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long anything may take before the test gives up: a hang guard, not a timing
/// assertion.
const GUARD: Duration = Duration::from_secs(90);

async fn readyz(node: &Node) -> Option<(StatusCode, Value)> {
    let api = node.api();
    let req = api
        .client
        .get(api.url("/readyz"))
        .timeout(Duration::from_secs(5));
    try_send(req).await.ok().map(|(s, _, v)| (s, v))
}

/// Polls `/readyz` until `ok` holds; returns that answer's body.
async fn wait_readyz(node: &Node, what: &str, ok: impl Fn(StatusCode, &Value) -> bool) -> Value {
    let started = Instant::now();
    let mut last = None;
    loop {
        if let Some((s, v)) = readyz(node).await {
            if ok(s, &v) {
                return v;
            }
            last = Some((s, v));
        }
        assert!(
            started.elapsed() < GUARD,
            "{}: {what} not seen within {GUARD:?}; last /readyz {last:?}",
            node.name
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One sample of `/metrics`.
async fn metric(node: &Node, name: &str) -> f64 {
    let api = node.api();
    let text = api.metrics_text().await;
    crate::app::Api::metric(&text, name)
}

async fn create(node: &Node, resource: &str, key: &str) -> (StatusCode, Value) {
    let api = node.api();
    let req = api
        .client
        .post(api.url("/api/v1/actions"))
        .bearer_auth(ADMIN)
        .header("Idempotency-Key", key)
        .timeout(Duration::from_secs(30))
        .json(&json!({"type": "snapshot", "resource": {"type": "disk", "id": resource}}));
    match try_send(req).await {
        Ok((s, _, v)) => (s, v),
        Err(e) => (StatusCode::BAD_GATEWAY, json!({"no answer": e.to_string()})),
    }
}

/// Sends the create until a node acknowledges it (503s retried with the same key); returns
/// the action id.
async fn acked(node: &Node, resource: &str, key: &str) -> u64 {
    let started = Instant::now();
    loop {
        let (s, v) = create(node, resource, key).await;
        if s.is_success() {
            return v["id"].as_u64().unwrap();
        }
        assert!(
            s == StatusCode::SERVICE_UNAVAILABLE || s == StatusCode::BAD_GATEWAY,
            "{key} via {}: {s} {v}",
            node.name
        );
        assert!(
            started.elapsed() < GUARD,
            "{key} via {} not acknowledged within {GUARD:?}: {s} {v}",
            node.name
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every action of `node` by resource id.
async fn actions(node: &Node) -> BTreeMap<String, Vec<u64>> {
    let (s, v) = node.api().get("/api/v1/actions?limit=1000", ADMIN).await;
    assert_eq!(s, StatusCode::OK, "{}: {v}", node.name);
    let mut found: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for a in v["actions"].as_array().unwrap() {
        found
            .entry(a["resource"]["id"].as_str().unwrap().to_string())
            .or_default()
            .push(a["id"].as_u64().unwrap());
    }
    found
}

/// Waits until the nodes at `live` have applied one head, then checks that every write in
/// `acked` (resource → id) is on each exactly once with its id.
async fn check_survivors(nodes: &[Node], live: &[usize], acked: &BTreeMap<String, u64>) {
    let started = Instant::now();
    loop {
        let mut heads = Vec::new();
        for &i in live {
            let v = wait_readyz(&nodes[i], "ready", |s, _| s == StatusCode::OK).await;
            heads.push((v["applied_position"].clone(), v["head_digest"].clone()));
        }
        if heads.windows(2).all(|w| w[0] == w[1]) {
            break;
        }
        assert!(
            started.elapsed() < GUARD,
            "survivors did not converge: {heads:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for &i in live {
        let found = actions(&nodes[i]).await;
        for (resource, id) in acked {
            assert_eq!(
                found.get(resource),
                Some(&vec![*id]),
                "{}: acknowledged {resource} (id {id}) must be there exactly once",
                nodes[i].name
            );
        }
    }
}

/// Waits until one of `live` leads and the others name it; returns its index.
async fn wait_leader_among(nodes: &[Node], live: &[usize]) -> usize {
    let started = Instant::now();
    loop {
        let mut leaders = Vec::new();
        let mut named = Vec::new();
        for &i in live {
            if let Some((StatusCode::OK, v)) = readyz(&nodes[i]).await {
                if v["role"] == "leader" {
                    leaders.push(i);
                }
                named.push(v["leader"].as_str().map(str::to_string));
            }
        }
        if let ([l], true) = (&leaders[..], named.len() == live.len()) {
            if named
                .iter()
                .all(|n| n.as_deref() == Some(nodes[*l].name.as_str()))
            {
                return *l;
            }
        }
        if started.elapsed() > GUARD {
            let outputs: Vec<String> = nodes
                .iter()
                .map(|n| format!("{}:\n{}", n.name, read_output(&n.output)))
                .collect();
            panic!(
                "no leader among {live:?}: leaders {leaders:?}, named {named:?}\n{}",
                outputs.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Makes every later write of `node`'s process past byte 1 of a file fail with EFBIG.
fn fail_disk(node: &Node) {
    let out = std::process::Command::new("prlimit")
        .args(["--pid", &node.pid().to_string(), "--fsize=1"])
        .output()
        .expect("prlimit");
    assert!(out.status.success(), "prlimit: {out:?}");
}

/// Three nodes whose processes ignore SIGXFSZ (so [`fail_disk`] makes writes fail instead of
/// killing them).
async fn start_faultable(root: &std::path::Path, url: &str) -> Vec<Node> {
    let opts = Options {
        file_size_limit: Some(1 << 40),
        ..Options::default()
    };
    let mut nodes: Vec<Node> = (1..=3)
        .map(|i| Node::new(root, &format!("n{i}"), url))
        .collect();
    for n in nodes.iter_mut() {
        n.start_opts(&opts).await;
    }
    nodes
}

/// A failed node answers a write with 503 `node_failed`, never a redirect or a forward.
async fn assert_refuses_writes(node: &Node) {
    let (s, v) = create(node, "to-the-failed-node", "to-the-failed-node").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{}: {v}", node.name);
    assert_eq!(v["error"]["code"], "node_failed", "{}: {v}", node.name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_postgres_is_not_ready_but_still_serves_reads() {
    let pg = crate::pg::dedicated("partition");
    let url = pg.create_db("partition");
    let root = tempfile::tempdir().unwrap();
    let nodes = start_nodes(root.path(), &url, 3).await;
    let leader = wait_leader(&nodes).await;
    let id = acked(&nodes[leader], "before", "before").await;
    crate::nodes::wait_converged(&nodes).await;
    for n in &nodes {
        let (s, v) = readyz(n).await.unwrap();
        assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("ready")));
        assert!(v["cluster_log_last_contact_seconds"].is_number(), "{v}");
        assert_eq!(metric(n, "action_ledger_cluster_log_reachable").await, 1.0);
    }

    pg.stop_immediate();
    let stale = CLUSTER_LOG_STALE_MS as f64 / 1000.0;
    for n in &nodes {
        let v = wait_readyz(n, "cluster_log_unreachable", |s, v| {
            s == StatusCode::SERVICE_UNAVAILABLE && v["status"] == "cluster_log_unreachable"
        })
        .await;
        assert!(
            v["cluster_log_last_contact_seconds"].as_f64().unwrap() > stale,
            "{v}"
        );
        assert!(
            v["role"].is_string() && v["applied_position"].is_u64(),
            "{v}"
        );
        // Reads are still served from the replica, with the position they reflect.
        let (s, h, a) = n
            .api()
            .request_as(
                Method::GET,
                &format!("/api/v1/actions/{id}"),
                Some(ADMIN),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{}: {a}", n.name);
        assert!(h.contains_key("x-ledger-position"), "{h:?}");
        let (s, list) = n.api().get("/api/v1/actions?limit=10", ADMIN).await;
        assert_eq!(s, StatusCode::OK, "{}: {list}", n.name);
        assert_eq!(metric(n, "action_ledger_cluster_log_reachable").await, 0.0);
        assert!(metric(n, "action_ledger_cluster_log_last_contact_seconds").await > stale);
    }

    pg.start_again();
    for n in &nodes {
        wait_readyz(n, "ready again", |s, v| {
            s == StatusCode::OK && v["status"] == "ready"
        })
        .await;
        assert_eq!(metric(n, "action_ledger_cluster_log_reachable").await, 1.0);
    }
    let leader = wait_leader(&nodes).await;
    let after = acked(&nodes[(leader + 1) % 3], "after", "after").await;
    let expected = BTreeMap::from([("before".to_string(), id), ("after".to_string(), after)]);
    check_survivors(&nodes, &[0, 1, 2], &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_disk_fails_steps_down_and_loses_no_acknowledged_write() {
    let url = crate::pg::fresh_db();
    let root = tempfile::tempdir().unwrap();
    let nodes = start_faultable(root.path(), &url).await;
    let leader = wait_leader(&nodes).await;
    let mut written = BTreeMap::new();
    for i in 0..6 {
        let key = format!("before-{i}");
        written.insert(key.clone(), acked(&nodes[i % 3], &key, &key).await);
    }
    crate::nodes::wait_converged(&nodes).await;

    fail_disk(&nodes[leader]);
    // Two truthful answers, depending on which write hits the limit first:
    // - the batch commits in PostgreSQL, then the leader's local append fails: a 503, never
    //   "nothing was recorded", since the log of record has it;
    // - the projection's flush hits the limit before the batch reaches PostgreSQL: 507
    //   `insufficient_storage`, and nothing was recorded anywhere.
    // Either way the retry below, with the same key, settles it exactly once.
    let (s, v) = create(&nodes[leader], "doomed", "doomed").await;
    assert!(
        s == StatusCode::SERVICE_UNAVAILABLE
            || (s == StatusCode::INSUFFICIENT_STORAGE
                && v["error"]["code"] == "insufficient_storage"),
        "{s} {v}"
    );

    wait_readyz(&nodes[leader], "the failed leader not ready", |s, v| {
        s == StatusCode::SERVICE_UNAVAILABLE && v["status"] == "failed"
    })
    .await;
    let live: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let new_leader = wait_leader_among(&nodes, &live).await;
    // Settled on the new leader with the same key: once, whatever the first answer was.
    let doomed = acked(&nodes[new_leader], "doomed", "doomed").await;
    written.insert("doomed".to_string(), doomed);
    for (n, &i) in live.iter().enumerate() {
        let key = format!("after-{n}");
        written.insert(key.clone(), acked(&nodes[i], &key, &key).await);
    }
    assert_refuses_writes(&nodes[leader]).await;
    let (_, v) = readyz(&nodes[leader]).await.unwrap();
    assert_eq!(v["role"], "follower", "{v}");
    check_survivors(&nodes, &live, &written).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_whose_disk_fails_stops_copying_and_the_cluster_keeps_writing() {
    let url = crate::pg::fresh_db();
    let root = tempfile::tempdir().unwrap();
    let nodes = start_faultable(root.path(), &url).await;
    let leader = wait_leader(&nodes).await;
    let mut written = BTreeMap::new();
    for (i, node) in nodes.iter().enumerate() {
        let key = format!("before-{i}");
        written.insert(key.clone(), acked(node, &key, &key).await);
    }
    crate::nodes::wait_converged(&nodes).await;

    let failed = (leader + 1) % 3;
    fail_disk(&nodes[failed]);
    // The next batch is the follower's first failing local append.
    written.insert(
        "first".to_string(),
        acked(&nodes[leader], "first", "first").await,
    );
    wait_readyz(&nodes[failed], "the failed follower not ready", |s, v| {
        s == StatusCode::SERVICE_UNAVAILABLE && v["status"] == "failed"
    })
    .await;
    let live: Vec<usize> = (0..3).filter(|&i| i != failed).collect();
    for (n, &i) in live.iter().enumerate() {
        let key = format!("after-{n}");
        written.insert(key.clone(), acked(&nodes[i], &key, &key).await);
    }
    assert_eq!(
        wait_leader_among(&nodes, &live).await,
        leader,
        "the leader keeps leading"
    );
    assert_refuses_writes(&nodes[failed]).await;
    check_survivors(&nodes, &live, &written).await;
}
