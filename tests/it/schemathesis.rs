//! HTTP fuzzing over real sockets: every native route from the OpenAPI document the server
//! serves (schemathesis, from PyPI, installed by the test into `target/fuzz-venv`), and the
//! dialect routes (plus the watch stream, which schemathesis cannot end) with a handwritten
//! case generator. Both assert 0 5xx, 0 panics (the server's own counters), 0 hangs
//! (per-request timeouts). `SCHEMATHESIS_EXAMPLES` (examples per operation, default 25) and
//! `FUZZ_HTTP_CASES` (generated dialect requests, default 400) scale them (docs/testing.md "Fuzzing
//! and security").

use crate::app::{spawn_app_with, Api, TestApp, ADMIN};
use proptest::prelude::*;
use reqwest::{Client, Method};
use serde_json::json;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// Per-request bound: anything slower is a hang (every wait is capped below it).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

fn env_cases(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `target/fuzz-venv/bin/schemathesis`, installed (pinned, from tests/fuzz/requirements.txt)
/// once, and again only when the requirements change; a venv of its own so that it and the
/// dialect clients never pin each other's dependencies.
fn schemathesis() -> PathBuf {
    static ST: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    ST.get_or_init(|| {
        crate::clients::create_pinned_venv("target/fuzz-venv", "tests/fuzz/requirements.txt")
            .map(|venv| venv.join("bin/schemathesis"))
    })
    .clone()
    .unwrap_or_else(|e| panic!("{e}"))
}

async fn start() -> TestApp {
    let mut config = crate::app::config();
    // Waits are capped well below the per-request timeout, so a long wait is not a "hang".
    config.limits.wait_ms_max = 2_000;
    config.limits.body_bytes_max = 256 * 1024;
    spawn_app_with(config).await
}

/// Seeds data the generated requests can hit: actions 1..=6 in two tenants and on the
/// resource types of every dialect, some finished, with sub-events.
async fn seed(api: &Api) {
    for (i, (rtype, rid, tenant, kind)) in [
        ("droplet", "1", "default", "task"),
        ("server", "1", "default", "task"),
        ("ECS", "1", "default", "task"),
        ("bdb", "1", "default", "state-machine"),
        ("droplet", "2", "acme", "task"),
        ("cluster", "1", "default", "other"),
    ]
    .into_iter()
    .enumerate()
    {
        let (s, v) = api
            .post(
                "/api/v1/actions",
                ADMIN,
                json!({"type": "reboot", "uid": format!("req-{i}"), "kind": kind, "tenant": tenant,
                       "resource": {"type": rtype, "id": rid}, "related": [{"type": "bdb", "id": "1"}],
                       "status": "running", "node": "n1", "region": "nyc3"}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        let id = i + 1;
        for ev in [
            json!({"type": "event_started", "name": "compute_reboot", "host": "h1"}),
            json!({"type": "event_finished", "name": "compute_reboot", "result": "error", "traceback": "tb"}),
            json!({"type": "progress", "progress": 50, "pending_ops": {"s1": {"op_name": "x", "progress": 10}}}),
        ] {
            api.post(&format!("/api/v1/actions/{id}/events"), ADMIN, ev)
                .await;
        }
        if id % 2 == 0 {
            api.post(
                &format!("/api/v1/actions/{id}/events"),
                ADMIN,
                json!({"type": "completed"}),
            )
            .await;
        }
    }
}

/// Requests the server answered, by status class, from its own `/metrics` counters.
async fn served(client: &Client, base: &str) -> (u64, Vec<String>) {
    let api = crate::app::Api {
        base: base.to_string(),
        client: client.clone(),
    };
    let text = api.metrics_text().await;
    let mut total = 0;
    let mut errors = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("action_ledger_http_request_duration_seconds_count{")
        {
            let (labels, count) = rest.split_once("} ").unwrap();
            let count: u64 = count.trim().parse().unwrap();
            total += count;
            if labels.contains("status=\"5") {
                errors.push(line.to_string());
            }
        }
    }
    (total, errors)
}

/// Schemathesis against the served OpenAPI document: every operation, examples, coverage
/// and fuzzing phases, positive and negative data, `not_a_server_error`.
#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_server_error_on_any_native_route() {
    let st = tokio::task::spawn_blocking(schemathesis).await.unwrap();
    let mut app = start().await;
    let api = Api {
        base: app.base.clone(),
        client: Client::builder().timeout(REQUEST_TIMEOUT).build().unwrap(),
    };
    let (base, client, dir) = (&api.base, &api.client, &app.dir);
    seed(&api).await;
    let (_, doc) = api.get("/api/v1/openapi.json", ADMIN).await;
    let operations: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_object().unwrap().len())
        .sum();
    assert!(operations >= 13, "{operations} operations in the document");
    let schema = dir.path().join("openapi.json");
    std::fs::write(&schema, doc.to_string()).unwrap();
    let (before, _) = served(client, base).await;

    let examples = env_cases("SCHEMATHESIS_EXAMPLES", 25).to_string();
    let timeout = REQUEST_TIMEOUT.as_secs().to_string();
    let out = tokio::task::spawn_blocking({
        let base = base.clone();
        let report = dir.path().join("report");
        let cwd = dir.path().to_path_buf();
        move || {
            Command::new(st)
                // schemathesis keeps its example database in the working directory.
                .current_dir(cwd)
                .arg("run")
                .arg(&schema)
                .args(["--url", &base])
                .args(["--header", &format!("Authorization: Bearer {ADMIN}")])
                .args(["--checks", "not_a_server_error"])
                .args(["--max-examples", &examples])
                .args(["--request-timeout", &timeout])
                .args(["--phases", "examples,coverage,fuzzing"])
                .args(["--mode", "all"])
                .args(["--seed", "20261126"])
                .args(["--workers", "2"])
                .args(["--suppress-health-check", "all"])
                // The SSE stream never ends by design; the handwritten generator covers it.
                .args(["--exclude-path", "/api/v1/watch"])
                .args(["--report-dir"])
                .arg(report)
                .env("NO_COLOR", "1")
                .output()
                .expect("run schemathesis")
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let (after, errors) = served(client, base).await;
    let cases = after - before;
    eprintln!("schemathesis: {cases} requests served\n{stdout}");
    assert!(
        out.status.success(),
        "schemathesis found failures ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(errors.is_empty(), "5xx answers: {errors:?}");
    assert!(
        cases >= 10 * operations as u64,
        "only {cases} requests for {operations} operations:\n{stdout}"
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Dialect routes (and watch): a handwritten generator

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("1".to_string()),
        Just("2".to_string()),
        Just("req-3".to_string()),
        Just("default".to_string()),
        Just("acme".to_string()),
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("18446744073709551616".to_string()),
        Just("%00".to_string()),
        Just("%2F".to_string()),
        Just("%C3%A9".to_string()),
        Just("%ff".to_string()),
        Just("..".to_string()),
        "[a-zA-Z0-9._~-]{1,20}",
        (1usize..2000).prop_map(|n| "a".repeat(n)),
    ]
}

/// Route templates of both listeners' dialects (and watch), `{x}` = a generated segment.
const TEMPLATES: &[(bool, &str)] = &[
    (false, "/ecs/v2/actions"),
    (false, "/ecs/v2/actions/{x}"),
    (false, "/ecs/v2/servers/{x}/actions"),
    (false, "/v2/actions"),
    (false, "/v2/actions/{x}"),
    (false, "/v2/droplets/{x}/actions"),
    (false, "/v2/droplets/{x}/actions/{x}"),
    (false, "/"),
    (false, "/v2.1"),
    (false, "/v2/"),
    (false, "/v2.1/servers/{x}/os-instance-actions"),
    (false, "/v2.1/servers/{x}/os-instance-actions/{x}"),
    (false, "/v2.1/{x}/servers/{x}/os-instance-actions"),
    (false, "/v2.1/{x}/servers/{x}/os-instance-actions/{x}"),
    (false, "/v2/{x}/servers/{x}/os-instance-actions"),
    (false, "/v2/{x}/servers/{x}/os-instance-actions/{x}"),
    (false, "/redis/v1/actions"),
    (false, "/redis/v1/actions/{x}"),
    (false, "/redis/v1/actions/bdb/{x}"),
    (false, "/redis/v2/actions"),
    (false, "/redis/v2/actions/{x}"),
    (false, "/api/v1/watch"),
    (false, "/api/v1/actions/{x}/wait"),
    (true, "/v1/actions"),
    (true, "/v1/actions/{x}"),
    (true, "/v1/actions/bdb/{x}"),
    (true, "/v2/actions"),
    (true, "/v2/actions/{x}"),
    (true, "/{x}"),
];

const QUERY_KEYS: &[&str] = &[
    "page",
    "per_page",
    "start",
    "length",
    "resource",
    "limit",
    "marker",
    "changes-since",
    "changes-before",
    "after",
    "timeout_ms",
    "resource_type",
    "resource_id",
    "status",
    "type",
    "kind",
    "user",
    "tenant",
    "id",
    "cursor",
    "since",
];

fn query_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("1".to_string()),
        Just("0".to_string()),
        Just("-5".to_string()),
        Just("200".to_string()),
        Just("201".to_string()),
        Just("1000".to_string()),
        Just("99999999999999999999".to_string()),
        Just("2026-01-01T00:00:00Z".to_string()),
        Just("2026-13-45T99:00:00".to_string()),
        Just("req-1".to_string()),
        Just("%zz".to_string()),
        Just("".to_string()),
        "[a-z0-9:._-]{0,12}",
    ]
}

#[derive(Debug, Clone)]
struct Case {
    redis: bool,
    method: &'static str,
    path: String,
    query: Vec<(&'static str, String)>,
    auth: u8,
    version: Option<String>,
    last_event_id: Option<String>,
    body: Option<String>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        proptest::sample::select(TEMPLATES),
        proptest::collection::vec(segment(), 3),
        prop_oneof![
            6 => Just("GET"),
            2 => Just("POST"),
            1 => proptest::sample::select(vec!["PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
        ],
        proptest::collection::vec((proptest::sample::select(QUERY_KEYS), query_value()), 0..4),
        0..8u8,
        proptest::option::of(prop_oneof![
            Just("compute 2.1".to_string()),
            Just("compute 2.58".to_string()),
            Just("compute 2.104".to_string()),
            Just("compute latest".to_string()),
            Just("compute 2.105".to_string()),
            Just("compute 3.0".to_string()),
            Just("compute abc".to_string()),
            Just("2.05".to_string()),
            "[ -~]{0,16}",
        ]),
        proptest::option::of("[0-9a-z-]{0,22}"),
        proptest::option::of(prop_oneof![
            Just(r#"{"type":"reboot"}"#.to_string()),
            Just(r#"{"type":"rollback","snapshot":"s"}"#.to_string()),
            Just(r#"{"type":""}"#.to_string()),
            Just(r#"{"type":5}"#.to_string()),
            Just("[]".to_string()),
            Just("{".to_string()),
            "\\PC{0,64}",
        ]),
    )
        .prop_map(
            |((redis, template), segs, method, query, auth, version, last_event_id, body)| {
                let mut segs = segs.into_iter();
                let path = template
                    .split('/')
                    .map(|s| {
                        if s == "{x}" {
                            segs.next().unwrap_or_default()
                        } else {
                            s.to_string()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("/");
                Case {
                    redis,
                    method,
                    path,
                    query,
                    auth,
                    version,
                    last_event_id,
                    body,
                }
            },
        )
}

#[test]
fn dialect_routes_survive_generated_requests() {
    let n = env_cases("FUZZ_HTTP_CASES", 400);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mut app, reader, writer) = rt.block_on(async {
        let app = start().await;
        seed(&app).await;
        let reader = app.token("r", "default", "reader").await;
        let writer = app.token("w", "default", "writer").await;
        (app, reader, writer)
    });
    let main = app.running().addr;
    let redis = app.running().redis_addr.unwrap();
    let client = Client::builder().timeout(REQUEST_TIMEOUT).build().unwrap();
    let statuses = std::sync::Mutex::new(std::collections::BTreeMap::<u16, u64>::new());
    let mut config = ProptestConfig::with_cases(n);
    config.failure_persistence = None;
    proptest!(config, |(c in case())| {
        let addr = if c.redis { redis } else { main };
        let mut url = format!("http://{addr}{}", c.path);
        if !c.query.is_empty() {
            let q: Vec<String> = c.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            url = format!("{url}?{}", q.join("&"));
        }
        let token = [ADMIN, reader.as_str(), writer.as_str()][c.auth as usize % 3];
        let method = Method::from_bytes(c.method.as_bytes()).unwrap();
        let mut req = client.request(method, &url);
        req = match c.auth {
            0..=2 => req.bearer_auth(token),
            3 => req.header("x-auth-token", token),
            4 => req.header("x-apitoken", token),
            5 => req.header("authorization", format!("Basic {}", crate::http::b64(&format!("u:{token}")))),
            6 => req.header("authorization", "Bearer wrong"),
            _ => req,
        };
        if let Some(v) = &c.version {
            req = req.header("openstack-api-version", v.as_str());
        }
        if let Some(v) = &c.last_event_id {
            req = req.header("last-event-id", v.as_str());
        }
        if let Some(b) = &c.body {
            req = req.header("content-type", "application/json").body(b.clone());
        }
        let status = rt.block_on(async {
            // Only the head is awaited: watch streams never end by design.
            let resp = req.send().await;
            resp.map(|r| r.status())
        });
        let status = match status {
            Ok(s) => s,
            // A header the client itself refuses (not a server fault) never reached it.
            Err(e) if e.is_builder() => return Ok(()),
            Err(e) => {
                prop_assert!(false, "{} {} failed: {} (timeout: {})", c.method, url, e, e.is_timeout());
                unreachable!()
            }
        };
        *statuses.lock().unwrap().entry(status.as_u16()).or_default() += 1;
        prop_assert!(!status.is_server_error(), "{} {} -> {}", c.method, url, status);
    });
    let (total, errors) = rt.block_on(served(&client, &format!("http://{main}")));
    let statuses = statuses.into_inner().unwrap();
    eprintln!("dialect fuzz: {n} cases, {total} requests served, statuses {statuses:?}");
    assert!(errors.is_empty(), "5xx answers: {errors:?}");
    // The generator gets past authentication and validation, not only 4xx.
    assert!(statuses.get(&200).copied().unwrap_or(0) > 0, "{statuses:?}");
    rt.block_on(app.stop());
}
