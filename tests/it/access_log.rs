//! The access log, request ids and trace context, through the real binary: what one line per
//! request holds (route templates, the caller's tenant and token name, ids) and never holds
//! (a secret, a query string), `X-Request-Id` on every answer, the JSON format, the switch
//! that turns the log off; and the process metrics on `/metrics`.

use crate::app::{Api, ADMIN};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to start, or a line to appear, before the test fails (a
/// bound for failure, not a timed assertion).
const PATIENCE: Duration = Duration::from_secs(120);

/// The binary, with stderr and stdout in a file, the access log at info (also used by
/// tests/it/otlp.rs).
pub(crate) struct Server {
    child: Child,
    api: Api,
    redis: String,
    output: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    pub(crate) async fn start(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("output");
        let out = std::fs::File::create(&output).unwrap();
        let child = Command::new(crate::binserver::bin())
            .args(["serve", "--data-dir"])
            .arg(dir.path().join("data"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--redis-listen",
                "127.0.0.1:0",
                "--admin-token",
                ADMIN,
            ])
            .args(extra)
            .env_remove("ACTION_LEDGER_LOG")
            .env_remove("ACTION_LEDGER_LOG_FORMAT")
            .env_remove("ACTION_LEDGER_ACCESS_LOG")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let mut s = Server {
            child,
            api: Api::new(""),
            redis: String::new(),
            output,
            _dir: dir,
        };
        let started = Instant::now();
        loop {
            let out = s.output();
            let url = |prefix: &str| {
                out.lines()
                    .find_map(|l| l.strip_prefix(prefix))
                    .map(|u| u.trim().to_string())
            };
            if let (Some(main), Some(redis)) = (
                url("action-ledger listening on "),
                url("Redis Enterprise dialect listening on "),
            ) {
                s.api = Api::new(main);
                s.redis = redis;
                let ready = s.api.client.get(s.api.url("/readyz")).send().await;
                if ready.is_ok_and(|r| r.status() == StatusCode::OK) {
                    return s;
                }
            }
            assert!(s.child.try_wait().unwrap().is_none(), "exited: {out}");
            assert!(started.elapsed() < PATIENCE, "not ready: {out}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) fn output(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }

    /// The access log line of the request `id` (waiting for it to be written).
    pub(crate) async fn line(&self, id: &str) -> String {
        let started = Instant::now();
        let needle = format!("request_id=\"{id}\"");
        loop {
            let out = self.output();
            if let Some(l) = out
                .lines()
                .find(|l| l.contains(" access: ") && l.contains(&needle))
            {
                return l.to_string();
            }
            assert!(started.elapsed() < PATIENCE, "no line for {id}: {out}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the server (SIGTERM) and returns its whole output.
    pub(crate) fn stop(mut self) -> String {
        let killed = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        assert!(self.child.wait().unwrap().success());
        self.output()
    }
}

impl std::ops::Deref for Server {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `field=` in a text line (quotes removed).
pub(crate) fn field(line: &str, name: &str) -> Option<String> {
    let at = line.find(&format!(" {name}="))? + name.len() + 2;
    let rest = &line[at..];
    let value = match rest.strip_prefix('"') {
        Some(q) => &q[..q.find('"')?],
        None => rest.split_whitespace().next()?,
    };
    Some(value.to_string())
}

fn is_generated_id(v: &str) -> bool {
    v.len() == 32 && v.bytes().all(|c| c.is_ascii_hexdigit())
}

#[tokio::test]
async fn one_text_line_per_request_with_template_caller_and_ids() {
    let s = Server::start(&[]).await;
    let secret = s.token("alice", "acme", "writer").await;
    let id = "uid-in-the-path-77";
    let (st, v) = s
        .post(
            "/api/v1/actions",
            &secret,
            json!({"uid": id, "type": "snapshot", "resource": {"type": "droplet", "id": "77"}}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");

    // A path with an id: the line names the template, the caller's token name and tenant.
    let auth = format!("Bearer {secret}");
    let target = format!("/api/v1/actions/{id}?token={secret}");
    let (st, h, _) = s
        .request(
            reqwest::Method::GET,
            &target,
            &[("authorization", &auth), ("x-request-id", "given-id-1")],
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h["x-request-id"], "given-id-1");
    let line = s.line("given-id-1").await;
    assert_eq!(
        field(&line, "route").as_deref(),
        Some("/api/v1/actions/{id}"),
        "{line}"
    );
    assert!(!line.contains(id), "{line}");
    assert_eq!(field(&line, "method").as_deref(), Some("GET"));
    assert_eq!(field(&line, "status").as_deref(), Some("200"));
    assert_eq!(field(&line, "listener").as_deref(), Some("main"));
    assert_eq!(field(&line, "tenant").as_deref(), Some("acme"));
    assert_eq!(field(&line, "token").as_deref(), Some("alice"));
    let bytes: u64 = field(&line, "bytes").unwrap().parse().unwrap();
    assert!(bytes > 0, "{line}");
    let ms: f64 = field(&line, "duration_ms").unwrap().parse().unwrap();
    assert!(ms >= 0.0, "{line}");
    assert!(
        is_generated_id(&field(&line, "trace_id").unwrap()),
        "{line}"
    );

    // No id given: one is generated, a different one each time; an insane one is replaced.
    let mut generated = Vec::new();
    for given in [None, None, Some("has space"), Some(&*"x".repeat(129))] {
        let headers: Vec<(&str, &str)> = given.map(|g| ("x-request-id", g)).into_iter().collect();
        let (st, h, _) = s
            .request(reqwest::Method::GET, "/healthz", &headers, None)
            .await;
        assert_eq!(st, StatusCode::OK);
        let echoed = h["x-request-id"].to_str().unwrap().to_string();
        assert!(is_generated_id(&echoed), "{echoed:?} for {given:?}");
        let line = s.line(&echoed).await;
        assert_eq!(field(&line, "route").as_deref(), Some("/healthz"));
        assert_eq!(field(&line, "token"), None, "{line}");
        generated.push(echoed);
    }
    generated.sort();
    generated.dedup();
    assert_eq!(generated.len(), 4);

    // Echoed on errors: 404 (no route; an action that is not there), 400, 401.
    let bad_token = "Bearer not-a-token-at-all";
    for (target, headers, status, route) in [
        ("/no/such/route", vec![], 404, "<unmatched>"),
        (
            "/api/v1/actions/act_nope",
            vec![("authorization", auth.as_str())],
            404,
            "/api/v1/actions/{id}",
        ),
        (
            "/api/v1/actions?min_position=abc",
            vec![("authorization", auth.as_str())],
            400,
            "/api/v1/actions",
        ),
        (
            "/api/v1/actions",
            vec![("authorization", bad_token)],
            401,
            "/api/v1/actions",
        ),
    ] {
        let rid = format!("err-{status}-{}", target.len());
        let mut headers = headers;
        headers.push(("x-request-id", &rid));
        let (st, h, body) = s
            .request(reqwest::Method::GET, target, &headers, None)
            .await;
        assert_eq!(st.as_u16(), status, "{target}: {body}");
        assert_eq!(h["x-request-id"], rid.as_str(), "{target}");
        let line = s.line(&rid).await;
        assert_eq!(field(&line, "route").as_deref(), Some(route), "{line}");
        assert_eq!(
            field(&line, "status").as_deref(),
            Some(&*status.to_string())
        );
        if status == 401 {
            assert_eq!(field(&line, "token"), None, "{line}");
        }
    }

    // A valid traceparent's trace id is the line's; an invalid one's is not.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let valid = format!("00-{trace}-00f067aa0ba902b7-01");
    let invalid = "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01";
    for (rid, tp) in [("tp-valid", valid.as_str()), ("tp-invalid", invalid)] {
        s.request(
            reqwest::Method::GET,
            "/healthz",
            &[("x-request-id", rid), ("traceparent", tp)],
            None,
        )
        .await;
        let line = s.line(rid).await;
        let got = field(&line, "trace_id").unwrap();
        if rid == "tp-valid" {
            assert_eq!(got, trace, "{line}");
        } else {
            assert!(is_generated_id(&got), "{line}");
            assert!(!got.eq_ignore_ascii_case("0af7651916cd43dd8448eb211c80319c"));
        }
    }

    // The Redis listener logs the same way, with Basic credentials.
    let resp = s
        .api
        .client
        .get(format!("{}/v1/actions", s.redis))
        .basic_auth("alice", Some(&secret))
        .header("x-request-id", "redis-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-request-id"], "redis-1");
    let line = s.line("redis-1").await;
    assert_eq!(field(&line, "listener").as_deref(), Some("redis"), "{line}");
    assert_eq!(field(&line, "route").as_deref(), Some("/v1/actions"));
    assert_eq!(field(&line, "token").as_deref(), Some("alice"));

    // Never the secret (nor the admin token), anywhere in the output.
    let out = s.stop();
    assert!(!out.contains(&secret), "{out}");
    assert!(!out.contains(ADMIN), "{out}");
    assert!(!out.contains("?token="), "{out}");
}

#[tokio::test]
async fn json_lines_parse_with_the_fields_and_the_switch_turns_them_off() {
    let s = Server::start(&["--set", "log_format=json"]).await;
    let (st, h, _) = s
        .request(
            reqwest::Method::GET,
            "/api/v1/actions",
            &[
                ("authorization", &format!("Bearer {ADMIN}")),
                ("x-request-id", "json-1"),
            ],
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h["x-request-id"], "json-1");
    let started = Instant::now();
    let line: Value = loop {
        let found = s.output().lines().find_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            (v["fields"]["request_id"] == "json-1").then_some(v)
        });
        if let Some(v) = found {
            break v;
        }
        assert!(started.elapsed() < PATIENCE, "{}", s.output());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(line["target"], "access");
    assert_eq!(line["level"], "INFO");
    let f = &line["fields"];
    assert_eq!(f["method"], "GET");
    assert_eq!(f["route"], "/api/v1/actions");
    assert_eq!(f["status"], 200);
    assert_eq!(f["listener"], "main");
    assert_eq!(f["tenant"], "default");
    assert!(f["token"].is_string(), "{line}");
    assert!(f["bytes"].as_u64().unwrap() > 0, "{line}");
    assert!(f["duration_ms"].as_f64().unwrap() >= 0.0, "{line}");
    assert!(is_generated_id(f["trace_id"].as_str().unwrap()), "{line}");
    s.stop();

    // access_log = false: requests are answered (with their id), and no line is written.
    let s = Server::start(&["--set", "access_log=false"]).await;
    let (st, h, _) = s
        .request(
            reqwest::Method::GET,
            "/healthz",
            &[("x-request-id", "quiet-1")],
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h["x-request-id"], "quiet-1");
    let out = s.stop();
    assert!(!out.contains("quiet-1"), "{out}");
    assert!(!out.contains(" access: "), "{out}");
}

/// The request timeout's 503 carries `Retry-After: 1` and the request id, like every 503:
/// a create whose declared body never comes waits for it until the timeout answers.
#[tokio::test]
async fn a_timed_out_request_is_answered_503_with_retry_after_and_its_id() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let s = Server::start(&["--set", "request_timeout_ms=200"]).await;
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/v1/actions HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {ADMIN}\r\ncontent-type: application/json\r\ncontent-length: 100\r\nx-request-id: slow-1\r\n\r\n{{"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("\r\n\r\n") {
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(answer.starts_with("http/1.1 503"), "{answer}");
    assert!(answer.contains("\r\nretry-after: 1\r\n"), "{answer}");
    assert!(answer.contains("\r\nx-request-id: slow-1\r\n"), "{answer}");
    let line = s.line("slow-1").await;
    assert_eq!(field(&line, "status").as_deref(), Some("503"), "{line}");
    assert_eq!(field(&line, "route").as_deref(), Some("/api/v1/actions"));
}

/// The value of the unlabelled series `name` in the Prometheus `text`, which must declare
/// its type.
fn metric(text: &str, name: &str) -> f64 {
    assert!(text.contains(&format!("# TYPE {name} ")), "{name}: {text}");
    Api::metric(text, name)
}

#[tokio::test]
async fn process_metrics_are_present_and_plausible() {
    let s = Server::start(&[]).await;
    let text = s.api.metrics_text().await;
    let value = |name: &str| metric(&text, name);
    assert!(value("process_resident_memory_bytes") > 0.0);
    assert!(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"));
    assert!(value("process_open_fds") >= 3.0);
    assert!(value("process_max_fds") >= value("process_open_fds"));
    assert!(value("process_cpu_seconds_total") >= 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let start = value("process_start_time_seconds");
    assert!(
        start <= now + 1.0 && start > now - 3600.0,
        "{start} vs {now}"
    );
    assert!(text.contains("# TYPE process_cpu_seconds_total counter"));
}

/// `read_threads` sizes the read pool, which `/metrics` reports; with the memos off every
/// GET of one action and every list is read there, through the native API and a dialect.
#[tokio::test]
async fn the_read_pool_has_the_threads_set_and_serves_the_reads() {
    let s = Server::start(&["--set", "read_threads=3", "--set", "memo_bytes=0"]).await;
    let body = json!({"type": "resize", "resource": {"type": "droplet", "id": "77"}});
    let (st, created) = s.api.post("/api/v1/actions", ADMIN, body).await;
    assert_eq!(st, StatusCode::CREATED, "{created}");
    let id = created["id"].as_u64().unwrap();
    let (st, one) = s.get(&format!("/api/v1/actions/{id}"), ADMIN).await;
    assert_eq!((st, one["type"].as_str()), (StatusCode::OK, Some("resize")));
    let (st, page) = s
        .get(
            "/api/v1/actions?resource_type=droplet&resource_id=77",
            ADMIN,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{page}");
    assert_eq!(page["actions"][0]["id"].as_u64(), Some(id), "{page}");
    let (st, missing) = s.get("/api/v1/actions/999999", ADMIN).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{missing}");
    let (st, dialect) = s.get(&format!("/v2/actions/{id}"), ADMIN).await;
    assert_eq!(st, StatusCode::OK, "{dialect}");
    assert_eq!(dialect["action"]["id"].as_u64(), Some(id), "{dialect}");

    let text = s.api.metrics_text().await;
    assert_eq!(metric(&text, "action_ledger_read_threads"), 3.0);
    assert_eq!(metric(&text, "action_ledger_reads_waiting"), 0.0);
}

/// A write sent to a follower is forwarded to the leader with its request id and trace
/// context: both nodes log the same ids, generated or given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_write_keeps_its_request_id_and_trace_id_on_the_leader() {
    let url = crate::pg::fresh_db();
    let mut nodes = Vec::new();
    for name in ["a1", "a2"] {
        let lease = format!("cluster_lease_ms={}", crate::nodes::LEASE_MS);
        let args = ["--cluster-log", &url, "--node-id", name, "--set", &lease];
        nodes.push(Server::start(&args).await);
    }
    // Wait until one leads and the other follows it.
    let started = Instant::now();
    let (leader, follower) = loop {
        let mut roles = Vec::new();
        for n in &nodes {
            let (_, v) = n.get("/readyz", ADMIN).await;
            roles.push((v["role"].clone(), v["leader"].clone()));
        }
        let follows = |i: usize| roles[i].0 == "follower" && roles[i].1.is_string();
        if roles[0].0 == "leader" && follows(1) {
            break (&nodes[0], &nodes[1]);
        }
        if roles[1].0 == "leader" && follows(0) {
            break (&nodes[1], &nodes[0]);
        }
        assert!(started.elapsed() < PATIENCE, "no leader: {roles:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let trace = "0af7651916cd43dd8448eb211c80319c";
    let traceparent = format!("00-{trace}-b7ad6b7169203331-01");
    let body = json!({"type": "snapshot", "resource": {"type": "droplet", "id": "f1"}});
    let auth = format!("Bearer {ADMIN}");
    let (st, h, v) = follower
        .request(
            reqwest::Method::POST,
            "/api/v1/actions",
            &[
                ("authorization", &auth),
                ("x-request-id", "forwarded-1"),
                ("traceparent", &traceparent),
            ],
            Some(body.clone()),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(h["x-request-id"], "forwarded-1");
    for node in [leader, follower] {
        let line = node.line("forwarded-1").await;
        assert_eq!(field(&line, "trace_id").as_deref(), Some(trace), "{line}");
        assert_eq!(field(&line, "route").as_deref(), Some("/api/v1/actions"));
        assert_eq!(field(&line, "status").as_deref(), Some("201"), "{line}");
    }

    // No id, no trace: the follower's generated ones reach the leader.
    let (st, h, v) = follower
        .request(
            reqwest::Method::POST,
            "/api/v1/actions",
            &[("authorization", &auth)],
            Some(body),
        )
        .await;
    assert!(st.is_success(), "{v}");
    let id = h["x-request-id"].to_str().unwrap().to_string();
    assert!(is_generated_id(&id), "{id}");
    let on_follower = follower.line(&id).await;
    let on_leader = leader.line(&id).await;
    assert_eq!(
        field(&on_follower, "trace_id"),
        field(&on_leader, "trace_id"),
        "{on_follower}\n{on_leader}"
    );
}
