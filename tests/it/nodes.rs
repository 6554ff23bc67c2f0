//! Cluster mode end to end: real `serve` processes sharing one PostgreSQL log of record
//! (docs/cluster.md). Each test gets a fresh database of the throwaway server ([`crate::pg`]).

use crate::app::{send, Answer, Api, ADMIN};
use crate::binserver::{self, BinServer, Options};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Lease of the test clusters: short, so takeovers are quick.
pub const LEASE_MS: u64 = 1_000;

/// One node: its data directory, output file, and the running process (if any).
pub struct Node {
    pub name: String,
    pub dir: PathBuf,
    pub output: PathBuf,
    pub cluster_log: String,
    pub server: Option<BinServer>,
}

impl Node {
    pub fn new(root: &std::path::Path, name: &str, cluster_log: &str) -> Node {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        Node {
            name: name.to_string(),
            output: root.join(format!("{name}.out")),
            dir: dir.join("data"),
            cluster_log: cluster_log.to_string(),
            server: None,
        }
    }

    pub async fn start(&mut self) {
        self.start_opts(&Options::default()).await;
    }

    /// [`Node::start`] with the binary's [`Options`] (a file size limit, say).
    pub async fn start_opts(&mut self, opts: &Options) {
        let extra: Vec<String> = [
            "--cluster-log",
            &self.cluster_log,
            "--node-id",
            &self.name,
            "--set",
            &format!("cluster_lease_ms={LEASE_MS}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let server = binserver::start_with(&self.dir, &self.output, opts, &extra)
            .await
            .unwrap_or_else(|e| panic!("node {} did not start: {e}", self.name));
        self.server = Some(server);
    }

    pub fn api(&self) -> &Api {
        &self.server.as_ref().expect("node running").api
    }

    pub fn pid(&self) -> u32 {
        self.server.as_ref().expect("node running").child.id()
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.kill();
        }
    }

    pub fn signal(&self, signal: &str) {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal} {}", self.name);
    }

    pub async fn readyz(&self) -> Option<Value> {
        let api = self.api();
        let req = api
            .client
            .get(api.url("/readyz"))
            .timeout(Duration::from_secs(2));
        match crate::app::try_send(req).await {
            Ok((StatusCode::OK, _, v)) => Some(v),
            _ => None,
        }
    }
}

/// Waits until exactly one of the running nodes says it leads and every other running node
/// names it; returns its index.
pub async fn wait_leader(nodes: &[Node]) -> usize {
    let started = Instant::now();
    loop {
        let mut leaders = Vec::new();
        let mut named = Vec::new();
        for (i, n) in nodes.iter().enumerate() {
            if n.server.is_none() {
                continue;
            }
            if let Some(r) = n.readyz().await {
                if r["role"] == "leader" {
                    leaders.push(i);
                }
                named.push(r["leader"].as_str().map(str::to_string));
            }
        }
        if let [leader] = leaders[..] {
            let name = &nodes[leader].name;
            if named.iter().all(|n| n.as_deref() == Some(name.as_str())) {
                return leader;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no single leader after 60 s (leaders: {leaders:?}, named: {named:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every running node has applied the same position with the same head digest;
/// returns (position, digest).
pub async fn wait_converged(nodes: &[Node]) -> (u64, String) {
    let started = Instant::now();
    loop {
        let mut seen = Vec::new();
        for n in nodes.iter().filter(|n| n.server.is_some()) {
            let r = n.readyz().await.unwrap_or(Value::Null);
            seen.push((r["applied_position"].as_u64(), r["head_digest"].clone()));
        }
        if seen.windows(2).all(|w| w[0] == w[1]) && seen[0].0.is_some() {
            return (seen[0].0.unwrap(), seen[0].1.as_str().unwrap().to_string());
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "nodes did not converge in 60 s: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn position(answer: &Answer) -> u64 {
    answer
        .1
        .get("x-ledger-position")
        .unwrap_or_else(|| panic!("no X-Ledger-Position on {answer:?}"))
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn create(api: &Api, resource: &str, key: &str) -> Answer {
    let req = api
        .client
        .post(api.url("/api/v1/actions"))
        .bearer_auth(ADMIN)
        .header("Idempotency-Key", key)
        .json(&json!({"type": "snapshot", "resource": {"type": "droplet", "id": resource}}));
    send(req).await
}

pub async fn start_nodes(root: &std::path::Path, url: &str, n: usize) -> Vec<Node> {
    let mut nodes: Vec<Node> = (1..=n)
        .map(|i| Node::new(root, &format!("n{i}"), url))
        .collect();
    for node in nodes.iter_mut() {
        node.start().await;
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_one_log_and_any_node_answers_any_request() {
    let url = crate::pg::fresh_db();
    let root = tempfile::tempdir().unwrap();
    let nodes = start_nodes(root.path(), &url, 3).await;
    let leader = wait_leader(&nodes).await;

    let mut created = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        // Through every node, the leader and both followers (which forward).
        let answer = create(node.api(), &format!("r{i}"), &format!("key-{i}")).await;
        assert_eq!(
            answer.0,
            StatusCode::CREATED,
            "via {}: {answer:?}",
            node.name
        );
        let at = position(&answer);
        let id = answer.2["id"].as_u64().unwrap();
        // Read your own write on another node: min_position makes it wait until applied.
        let other = &nodes[(i + 1) % 3];
        let (s, h, v) = other
            .api()
            .request_as(
                Method::GET,
                &format!("/api/v1/actions/{id}?min_position={at}"),
                Some(ADMIN),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v, answer.2, "the same action on {}", other.name);
        let seen: u64 = h["x-ledger-position"].to_str().unwrap().parse().unwrap();
        assert!(seen >= at, "{} answered at {seen}, before {at}", other.name);
        created.push((id, at));
    }
    let ids: Vec<u64> = created.iter().map(|c| c.0).collect();
    assert_eq!(ids, vec![1, 2, 3], "ids are dense across nodes");

    // The same Idempotency-Key through another node settles to the first answer.
    let follower = (leader + 1) % 3;
    let again = create(nodes[follower].api(), "r0", "key-0").await;
    assert!(again.0.is_success(), "{again:?}");
    assert_eq!(again.2["id"], 1, "{again:?}");

    // The header form of min_position, and a bad one.
    let (s, _, v) = nodes[follower]
        .api()
        .request(
            Method::GET,
            "/api/v1/actions/3",
            &[
                ("authorization", &format!("Bearer {ADMIN}")),
                ("x-ledger-min-position", &created[2].1.to_string()),
            ],
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _, v) = nodes[follower]
        .api()
        .request_as(
            Method::GET,
            "/api/v1/actions?min_position=soon",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["field"], "min_position", "{v}");

    // Every node converges to one head and gives identical answers.
    let (head, _) = wait_converged(&nodes).await;
    assert_eq!(head, created[2].1);
    let mut lists = Vec::new();
    for n in &nodes {
        let (s, v) = n.api().get("/api/v1/actions?limit=100", ADMIN).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        lists.push(v);
    }
    assert_eq!(lists[0]["actions"].as_array().map(Vec::len), Some(3));
    assert!(lists.windows(2).all(|w| w[0] == w[1]), "{lists:?}");

    // readyz names the roles.
    let roles: Vec<String> = {
        let mut r = Vec::new();
        for n in &nodes {
            r.push(
                n.readyz().await.unwrap()["role"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
        r
    };
    assert_eq!(roles.iter().filter(|r| *r == "leader").count(), 1);
    assert_eq!(roles.iter().filter(|r| *r == "follower").count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_log_is_one_error_line_and_exit_2() {
    let root = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for url in [
        format!("postgres://postgres@127.0.0.1:{port}/ledger"),
        "mysql://nope".to_string(),
    ] {
        let out = std::process::Command::new(binserver::bin())
            .args(["serve", "--data-dir"])
            .arg(root.path().join("d"))
            .args(["--listen", "127.0.0.1:0", "--redis-listen", "off"])
            .args(["--cluster-log", &url])
            .env_remove("ACTION_LEDGER_CLUSTER_LOG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{url}: {stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{url}: {stderr}");
        assert!(
            errors[0].contains("cluster log") || errors[0].contains("cluster_log"),
            "{url}: {stderr}"
        );
    }
}

/// Cycles of the fault test; `ACTION_LEDGER_CLUSTER_CYCLES=100` for a long run.
fn cycles() -> usize {
    std::env::var("ACTION_LEDGER_CLUSTER_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

/// What the writers share with the test: where the nodes are, what was acknowledged.
#[derive(Default)]
struct Writes {
    /// Base URLs of the running nodes (`None`: down).
    bases: Vec<Option<String>>,
    /// Acknowledged creates: key → (id, position).
    acked: std::collections::BTreeMap<String, (u64, u64)>,
    /// Acknowledged progress events: keys of actions whose progress is 0.5.
    evented: std::collections::BTreeSet<String>,
    /// When each write was acknowledged.
    ack_times: Vec<Instant>,
    paused: bool,
    stop: bool,
    /// Writers between taking a new key and its acknowledgement.
    in_flight: usize,
}

type Shared = std::sync::Arc<std::sync::Mutex<Writes>>;

/// Sends `body` to a random running node with `key` until a node acknowledges it: a 503 or a
/// lost connection is retried with the same `Idempotency-Key`, which settles an outcome the
/// writer never heard. Any other answer fails the test.
async fn until_acked(
    shared: &Shared,
    client: &reqwest::Client,
    path: &str,
    key: &str,
    body: Value,
) -> Value {
    let started = Instant::now();
    loop {
        let base = {
            let w = shared.lock().unwrap();
            let up: Vec<&String> = w.bases.iter().flatten().collect();
            (!up.is_empty()).then(|| up[rand::random_range(0..up.len())].clone())
        };
        if let Some(base) = base {
            let req = client
                .post(format!("{base}{path}"))
                .bearer_auth(ADMIN)
                .header("Idempotency-Key", key)
                .timeout(Duration::from_secs(10))
                .json(&body);
            match crate::app::try_send(req).await {
                Ok((s, _, v)) if s.is_success() => return v,
                Ok((StatusCode::SERVICE_UNAVAILABLE, _, _)) | Err(_) => {}
                Ok((s, _, v)) => panic!("{key} via {base}: {s} {v}"),
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{key} not acknowledged in 120 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn writer(shared: Shared, n: usize) {
    let client = reqwest::Client::new();
    for i in 0.. {
        loop {
            {
                let mut w = shared.lock().unwrap();
                if w.stop {
                    return;
                }
                if !w.paused {
                    w.in_flight += 1;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let key = format!("w{n}-{i}");
        let body = json!({"type": "snapshot", "resource": {"type": "chaos", "id": key}});
        let v = until_acked(&shared, &client, "/api/v1/actions", &key, body).await;
        let (id, position) = (
            v["id"].as_u64().unwrap(),
            v["position"].as_u64().unwrap_or(0),
        );
        {
            let mut w = shared.lock().unwrap();
            w.acked.insert(key.clone(), (id, position));
            w.ack_times.push(Instant::now());
        }
        if i % 3 == 0 {
            let path = format!("/api/v1/actions/{id}/events");
            let body = json!({"type": "progress", "progress": 0.5});
            until_acked(&shared, &client, &path, &format!("e-{key}"), body).await;
            shared.lock().unwrap().evented.insert(key);
        }
        shared.lock().unwrap().in_flight -= 1;
    }
}

/// Every acknowledged write is on `node` exactly once, at its acknowledged state.
async fn check_node(
    node: &Node,
    acked: &std::collections::BTreeMap<String, (u64, u64)>,
    evented: &std::collections::BTreeSet<String>,
) {
    let mut found: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/api/v1/actions?resource_type=chaos&limit=1000".to_string();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (s, v) = node.api().get(&path, ADMIN).await;
        assert_eq!(s, StatusCode::OK, "{}: {v}", node.name);
        for a in v["actions"].as_array().unwrap() {
            let key = a["resource"]["id"].as_str().unwrap().to_string();
            found.entry(key).or_default().push(a.clone());
        }
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    for (key, (id, _)) in acked {
        let actions = found
            .get(key)
            .unwrap_or_else(|| panic!("{}: acknowledged {key} (id {id}) is missing", node.name));
        assert_eq!(
            actions.len(),
            1,
            "{}: {key} recorded {} times",
            node.name,
            actions.len()
        );
        assert_eq!(actions[0]["id"].as_u64(), Some(*id), "{}: {key}", node.name);
        if evented.contains(key) {
            assert_eq!(
                actions[0]["progress"], 0.5,
                "{}: {key}: {}",
                node.name, actions[0]
            );
        }
    }
}

/// The cluster log in PostgreSQL: positions 1..=head without a gap, epochs never decreasing.
fn check_log(pg: &crate::pg::PgServer, db: &str, head: u64, digest: &str) {
    let facts = pg.psql(
        db,
        "SELECT count(*), coalesce(max(position), 0), \
         (SELECT count(*) FROM ledger_log a JOIN ledger_log b ON b.position = a.position + 1 WHERE b.epoch < a.epoch), \
         (SELECT encode(digest, 'hex') FROM ledger_log ORDER BY position DESC LIMIT 1) \
         FROM ledger_log",
    );
    let f: Vec<&str> = facts.trim().split('|').collect();
    assert_eq!(f[0], f[1], "positions have a gap: {facts}");
    assert_eq!(
        f[1],
        head.to_string(),
        "the nodes' head is the log's: {facts}"
    );
    assert_eq!(f[2], "0", "an epoch decreased along the log: {facts}");
    assert_eq!(f[3], digest, "the nodes' head digest is the log's");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_kills_pauses_and_a_postgres_restart() {
    let pg = crate::pg::dedicated("faults");
    let db = "faults";
    let url = pg.create_db(db);
    let root = tempfile::tempdir().unwrap();
    let mut nodes = start_nodes(root.path(), &url, 3).await;
    let shared: Shared = Default::default();
    let set_bases = |nodes: &[Node], shared: &Shared| {
        shared.lock().unwrap().bases = nodes
            .iter()
            .map(|n| n.server.as_ref().map(|s| s.api.base.clone()))
            .collect();
    };
    set_bases(&nodes, &shared);
    let writers: Vec<_> = (0..3)
        .map(|n| tokio::spawn(writer(shared.clone(), n)))
        .collect();
    let mut failovers = Vec::new();
    for cycle in 0..cycles() {
        let leader = wait_leader(&nodes).await;
        let before = shared.lock().unwrap().acked.len();
        match cycle % 4 {
            0 => {
                // kill -9 the leader; another takes over; the dead one comes back.
                let killed_at = Instant::now();
                nodes[leader].kill();
                set_bases(&nodes, &shared);
                wait_leader(&nodes).await;
                let first = loop {
                    let t = shared
                        .lock()
                        .unwrap()
                        .ack_times
                        .iter()
                        .copied()
                        .find(|t| *t > killed_at);
                    if let Some(t) = t {
                        break t;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                };
                failovers.push(first - killed_at);
                nodes[leader].start().await;
            }
            1 => {
                // kill -9 a follower; it comes back and catches up.
                let follower = (leader + 1) % nodes.len();
                nodes[follower].kill();
                set_bases(&nodes, &shared);
                tokio::time::sleep(Duration::from_millis(300)).await;
                nodes[follower].start().await;
            }
            2 => {
                // SIGSTOP the leader past its lease: another takes over; the paused one,
                // resumed, must append nothing with its old epoch.
                nodes[leader].signal("STOP");
                tokio::time::sleep(Duration::from_millis(LEASE_MS * 5 / 2)).await;
                nodes[leader].signal("CONT");
            }
            _ => {
                // PostgreSQL dies and comes back: commits it confirmed survive.
                pg.stop_immediate();
                tokio::time::sleep(Duration::from_millis(300)).await;
                pg.start_again();
            }
        }
        set_bases(&nodes, &shared);
        wait_leader(&nodes).await;
        // The writers make progress again, then pause for the checks.
        loop {
            if shared.lock().unwrap().acked.len() >= before + 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        shared.lock().unwrap().paused = true;
        while shared.lock().unwrap().in_flight > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (head, digest) = wait_converged(&nodes).await;
        check_log(&pg, db, head, &digest);
        let (acked, evented) = {
            let w = shared.lock().unwrap();
            (w.acked.clone(), w.evented.clone())
        };
        for node in &nodes {
            check_node(node, &acked, &evented).await;
        }
        eprintln!(
            "cycle {cycle}: {} writes acknowledged, head {head}",
            acked.len()
        );
        shared.lock().unwrap().paused = false;
    }
    shared.lock().unwrap().stop = true;
    for w in writers {
        w.await.unwrap();
    }
    let (head, digest) = wait_converged(&nodes).await;
    check_log(&pg, db, head, &digest);
    // Every node's local log verifies, with the cluster log's head digest.
    for node in nodes.iter_mut() {
        node.kill();
        let out = std::process::Command::new(binserver::bin())
            .args(["verify", "--data-dir"])
            .arg(&node.dir)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {text}", node.name);
        assert!(text.contains(&digest), "{}: {text}", node.name);
    }
    failovers.sort();
    if !failovers.is_empty() {
        eprintln!(
            "failover (kill -9 of the leader to the first acknowledged write), {} kills: p50 {:?}, max {:?}",
            failovers.len(),
            percentile(&failovers, 0.5),
            failovers.last().unwrap()
        );
    }
}

fn cli(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(binserver::bin())
        .args(args)
        .env_remove("ACTION_LEDGER_CLUSTER_LOG")
        .env_remove("ACTION_LEDGER_DATA_DIR")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_init_moves_a_single_node_ledger_in_and_a_late_node_joins() {
    let url = crate::pg::fresh_db();
    let root = tempfile::tempdir().unwrap();
    let mut n1 = Node::new(root.path(), "n1", &url);

    // A single-node ledger with some history.
    let mut single = binserver::start(&n1.dir, &n1.output, &Options::default())
        .await
        .unwrap();
    for i in 0..5 {
        let a = single.create(ADMIN, &format!("vm-{i}")).await;
        let path = format!("/api/v1/actions/{}/events", a["id"]);
        let (s, v) = single
            .post(&path, ADMIN, json!({"type": "progress", "progress": 0.25}))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let (_, before) = single.get("/api/v1/actions?limit=100", ADMIN).await;
    let keeper = single.token("keeper", "acme", "reader").await;
    single.kill();
    let (code, verified) = cli(&["verify", "--data-dir", n1.dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{verified}");
    let digest = verified
        .split("head digest ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();

    let (code, status) = cli(&["cluster", "status", "--cluster-log", &url]);
    assert_eq!(code, 0, "{status}");
    assert!(status.contains("head: position 0,"), "{status}");
    assert!(status.contains("leader: none"), "{status}");

    let dir = n1.dir.to_str().unwrap().to_string();
    let (code, text) = cli(&["cluster", "init", "--data-dir", &dir, "--cluster-log", &url]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("copied 10 records"), "{text}");
    assert!(text.contains(&digest), "{text}");
    assert!(text.contains("copied 1 tokens"), "{text}");
    // Only an empty cluster log is filled.
    let (code, text) = cli(&["cluster", "init", "--data-dir", &dir, "--cluster-log", &url]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("already holds 10 records"), "{text}");

    // The data directory now serves as a cluster node, with every id and position kept.
    n1.start().await;
    wait_leader(std::slice::from_ref(&n1)).await;
    let (_, after) = n1.api().get("/api/v1/actions?limit=100", ADMIN).await;
    assert_eq!(after, before);
    let more = create(n1.api(), "vm-new", "late-1").await;
    assert_eq!(more.0, StatusCode::CREATED, "{more:?}");
    assert_eq!(more.2["id"], 6);

    // A node that joins late bootstraps its replica from PostgreSQL.
    let mut n2 = Node::new(root.path(), "n2", &url);
    n2.start().await;
    let nodes = [n1, n2];
    let (head, _) = wait_converged(&nodes).await;
    assert_eq!(head, 11);
    let (_, one) = nodes[0].api().get("/api/v1/actions?limit=100", ADMIN).await;
    let (_, two) = nodes[1].api().get("/api/v1/actions?limit=100", ADMIN).await;
    assert_eq!(one, two);
    assert_eq!(one["actions"].as_array().unwrap().len(), 6);
    // The single node's token came along, and works on the node that joined late too.
    for n in &nodes {
        let (s, v) = n.api().get("/api/v1/actions?limit=1", &keeper).await;
        assert_eq!(s, StatusCode::OK, "{} with the copied token: {v}", n.name);
    }

    let (code, status) = cli(&["cluster", "status", "--cluster-log", &url]);
    assert_eq!(code, 0, "{status}");
    assert!(status.contains("head: position 11,"), "{status}");
    assert!(status.contains("leader: n1 ("), "{status}");
}
