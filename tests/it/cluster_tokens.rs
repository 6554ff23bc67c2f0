//! Cluster mode's tokens (docs/cluster.md, "Tokens"): one table in PostgreSQL for every node.
//! A token created, rotated or revoked on any node works (or stops) on all of them, streams
//! it holds open on another node end, the first admin token of a cluster is created once, and
//! a node cut off from PostgreSQL stops trusting its copy after `CLUSTER_TOKENS_STALE_MS`.

use crate::app::{Api, ADMIN};
use crate::nodes::{start_nodes, wait_leader, Node};
use action_ledger::cluster::tokens::ClusterTokens;
use action_ledger::cluster::{ClusterLog, ClusterOptions};
use action_ledger::limits::CLUSTER_TOKENS_STALE_MS;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Hang guard of a change reaching every node (not a timed assertion: the documented bound
/// is CLUSTER_TOKENS_STALE_MS; this only stops a broken build from hanging).
const REACH: Duration = Duration::from_secs(30);

/// Polls `GET /api/v1/actions` with `token` on `api` until it answers `want`; the last
/// answer (status, headers' Retry-After, body) either way.
async fn until_status(
    api: &Api,
    token: &str,
    want: StatusCode,
) -> (StatusCode, Option<String>, Value) {
    let started = Instant::now();
    loop {
        let (s, h, v) = api
            .request_as(Method::GET, "/api/v1/actions?limit=1", Some(token), None)
            .await;
        let retry = h
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        if s == want || started.elapsed() > REACH {
            return (s, retry, v);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn on_every_node(nodes: &[Node], token: &str, want: StatusCode, what: &str) {
    for n in nodes.iter().filter(|n| n.server.is_some()) {
        let (s, _, v) = until_status(n.api(), token, want).await;
        assert_eq!(s, want, "{what} on {}: {v}", n.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_created_rotated_and_revoked_on_one_node_act_on_every_node() {
    let url = crate::pg::fresh_db();
    let root = tempfile::tempdir().unwrap();
    let mut nodes = start_nodes(root.path(), &url, 3).await;
    let leader = wait_leader(&nodes).await;
    let f1 = (leader + 1) % 3;
    let f2 = (leader + 2) % 3;

    // Created on a follower (handled there, not forwarded): works on every node.
    let (s, created) = nodes[f1]
        .api()
        .post(
            "/api/v1/tokens",
            ADMIN,
            json!({"name": "w", "tenant": "acme", "role": "writer"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let w = created["token"].as_str().unwrap().to_string();
    on_every_node(&nodes, &w, StatusCode::OK, "a token created on a follower").await;
    // A write with it through the other follower (forwarded to the leader).
    let a = nodes[f2].api().create(&w, "vm-1").await;
    assert_eq!(a["tenant"], "acme", "{a}");
    // Every node lists it, hash never shown.
    for n in &nodes {
        let (s, list) = n.api().get("/api/v1/tokens", ADMIN).await;
        assert_eq!(s, StatusCode::OK);
        let names: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["w"], "{} lists {list}", n.name);
        assert!(!list.to_string().contains("sha256"), "{list}");
    }
    // A second token of the same name, on another node: refused, as on one node.
    let (s, v) = nodes[f2]
        .api()
        .post(
            "/api/v1/tokens",
            ADMIN,
            json!({"name": "w", "tenant": "other", "role": "reader"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");

    // Rotated on the leader: the old secret stops everywhere, the new one works everywhere.
    let (s, rotated) = nodes[leader]
        .api()
        .post("/api/v1/tokens/w/rotate", ADMIN, json!(null))
        .await;
    assert_eq!(s, StatusCode::OK, "{rotated}");
    let w2 = rotated["token"].as_str().unwrap().to_string();
    assert_ne!(w, w2);
    assert_eq!(rotated["tenant"], "acme");
    on_every_node(
        &nodes,
        &w,
        StatusCode::UNAUTHORIZED,
        "the rotated-away secret",
    )
    .await;
    on_every_node(&nodes, &w2, StatusCode::OK, "the rotated secret").await;

    // A watch stream held open on one follower ends when the token is revoked on the other.
    let api = nodes[f1].api();
    let stream = api
        .client
        .get(api.url("/api/v1/watch"))
        .bearer_auth(&w2)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let (s, _) = nodes[f2]
        .api()
        .call(Method::DELETE, "/api/v1/tokens/w", Some(ADMIN), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let body = tokio::time::timeout(REACH, stream.text())
        .await
        .expect("the revoked token's stream on another node ends")
        .unwrap();
    assert!(body.contains("event: revoked"), "{body:?}");
    on_every_node(&nodes, &w2, StatusCode::UNAUTHORIZED, "the revoked token").await;

    // A use is stored when a node stops (and at least every minute): another node lists it.
    let reader = nodes[f1].api().token("r", "acme", "reader").await;
    on_every_node(&nodes, &reader, StatusCode::OK, "a reader token").await;
    nodes[f2].signal("TERM");
    let mut stopped = nodes[f2].server.take().unwrap();
    assert!(stopped.child.wait().unwrap().success(), "a clean stop");
    let started = Instant::now();
    let used = loop {
        let (_, list) = nodes[leader].api().get("/api/v1/tokens", ADMIN).await;
        let used = list[0]["last_used_at"].clone();
        if used.is_string() || started.elapsed() > REACH {
            break used;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(used.is_string(), "last_used_at of r: {used}");
    for n in nodes.iter_mut() {
        n.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_creates_its_first_admin_token_once() {
    let url = crate::pg::fresh_db();
    // The schema, as the first node's start-up creates it.
    drop(
        ClusterLog::connect(ClusterOptions::new(&url, "setup"))
            .await
            .unwrap(),
    );
    let root = tempfile::tempdir().unwrap();
    let handle = tokio::runtime::Handle::current();
    // Four nodes starting at once against an empty token table.
    let starts: Vec<_> = (0..4)
        .map(|i| {
            let table =
                ClusterTokens::new(ClusterOptions::new(&url, format!("n{i}")), handle.clone());
            let dir = root.path().join(format!("n{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            tokio::task::spawn_blocking(move || {
                let (store, file) =
                    action_ledger::http::server::open_tokens(&dir, None, Some(&table)).unwrap();
                (store, file, dir)
            })
        })
        .collect();
    let mut opened = Vec::new();
    for s in starts {
        opened.push(s.await.unwrap());
    }
    let files: Vec<_> = opened.iter().filter_map(|(_, f, _)| f.clone()).collect();
    assert_eq!(files.len(), 1, "exactly one node created it: {files:?}");
    let secret = std::fs::read_to_string(&files[0])
        .unwrap()
        .trim()
        .to_string();
    for (store, _, dir) in &opened {
        // Each store reads the table again (its backend blocks on the runtime).
        tokio::task::block_in_place(|| store.sync().unwrap());
        assert!(store.authenticate(&secret).is_ok(), "{}", dir.display());
        let creator = files[0].starts_with(dir);
        assert_eq!(
            dir.join("first-admin-token").exists(),
            creator,
            "only the creator has the file"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_postgres_stops_trusting_its_tokens() {
    let pg = crate::pg::dedicated("tokstale");
    let url = pg.create_db("ledger");
    let root = tempfile::tempdir().unwrap();
    let mut node = Node::new(root.path(), "n1", &url);
    node.start().await;
    wait_leader(std::slice::from_ref(&node)).await;
    let t = node.api().token("t", "acme", "reader").await;
    let (s, _, _) = until_status(node.api(), &t, StatusCode::OK).await;
    assert_eq!(s, StatusCode::OK);

    pg.stop_immediate();
    let cut = Instant::now();
    let (s, retry, body) = until_status(node.api(), &t, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "tokens_unavailable", "{body}");
    assert_eq!(retry.as_deref(), Some("1"));
    // Not before the documented bound (the copy was fresh when PostgreSQL went away).
    assert!(
        cut.elapsed() >= Duration::from_millis(CLUSTER_TOKENS_STALE_MS) / 2,
        "refused after {:?}",
        cut.elapsed()
    );
    // The --admin-token of the node's command line is not stored: it still reads locally.
    let (s, v) = node.api().get("/api/v1/actions?limit=1", ADMIN).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    pg.start_again();
    let (s, _, body) = until_status(node.api(), &t, StatusCode::OK).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "trusted again once the table is read: {body}"
    );
    node.kill();
}
