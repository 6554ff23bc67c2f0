//! Edges a new user hit: trailing slashes, oversized bodies written in full, wrong JSON
//! types, the metrics text, a second server on a data directory in use.

use crate::app::{spawn_app, ADMIN};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test]
async fn every_route_answers_the_same_with_a_trailing_slash() {
    let app = spawn_app().await;
    let redis_base = format!(
        "http://{}",
        app.running.as_ref().unwrap().redis_addr.unwrap()
    );
    // A dialect POST with the slash: DigitalOcean's droplet action.
    let (s, posted) = app
        .call(
            Method::POST,
            "/v2/droplets/1/actions/",
            Some(ADMIN),
            Some(json!({"type": "reboot"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{posted}");
    let do_id = posted["action"]["id"].as_u64().expect("a DigitalOcean id");
    let (s, posted) = app
        .call(
            Method::POST,
            "/ecs/v2/servers/ec200285/actions/",
            Some(ADMIN),
            Some(json!({"type": "reboot"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{posted}");
    let (s, v) = app
        .call(
            Method::POST,
            "/api/v1/actions/",
            Some(ADMIN),
            Some(json!({"uid": "req-edges-1", "type": "reboot",
                        "resource": {"type": "server", "id": "srv-1"}})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let native_id = v["id"].to_string();

    let main = &app.base;
    let routes: Vec<(String, StatusCode)> = [
        (format!("{main}/healthz"), StatusCode::OK),
        (format!("{main}/api/v1/actions"), StatusCode::OK),
        (format!("{main}/api/v1/actions/{native_id}"), StatusCode::OK),
        (
            format!("{main}/api/v1/actions/{native_id}/history"),
            StatusCode::OK,
        ),
        (format!("{main}/api/v1/tokens"), StatusCode::OK),
        (format!("{main}/v2/actions"), StatusCode::OK),
        (format!("{main}/v2/actions/{do_id}"), StatusCode::OK),
        (format!("{main}/v2/droplets/1/actions"), StatusCode::OK),
        (
            format!("{main}/v2/droplets/1/actions/{do_id}"),
            StatusCode::OK,
        ),
        (format!("{main}/ecs/v2/actions"), StatusCode::OK),
        (
            format!("{main}/ecs/v2/actions?resource=ec200285"),
            StatusCode::OK,
        ),
        (format!("{main}/v2.1"), StatusCode::OK),
        (
            format!("{main}/v2.1/servers/srv-1/os-instance-actions"),
            StatusCode::OK,
        ),
        (
            format!("{main}/v2.1/servers/srv-1/os-instance-actions/req-edges-1"),
            StatusCode::OK,
        ),
        (
            format!("{main}/v2.1/default/servers/srv-1/os-instance-actions"),
            StatusCode::OK,
        ),
        (
            format!("{main}/v2/default/servers/srv-1/os-instance-actions/req-edges-1"),
            StatusCode::OK,
        ),
        (format!("{main}/redis/v1/actions"), StatusCode::OK),
        (format!("{main}/redis/v2/actions"), StatusCode::OK),
        (format!("{redis_base}/v1/actions"), StatusCode::OK),
        (format!("{redis_base}/v2/actions"), StatusCode::OK),
        // An unknown route stays unknown, with or without the slash.
        (format!("{main}/api/v1/nothing"), StatusCode::NOT_FOUND),
    ]
    .into_iter()
    .collect();
    for (url, expected) in routes {
        let (s, without) = app.get(&url, ADMIN).await;
        assert_eq!(s, expected, "{url}: {without}");
        let with = match url.split_once('?') {
            Some((path, query)) => format!("{path}/?{query}"),
            None => format!("{url}/"),
        };
        let (s, with_slash) = app.get(&with, ADMIN).await;
        assert_eq!(s, expected, "{with}: {with_slash}");
        assert_eq!(with_slash, without, "{with} answers differently from {url}");
    }
    // The ECS list shows the action posted with the slash.
    let (_, ecs) = app.get(&format!("{main}/ecs/v2/actions/"), ADMIN).await;
    assert!(ecs.to_string().contains("ec200285"), "{ecs}");
    // Requests with the slash are counted under their route template.
    let (_, metrics) = app.get(&format!("{main}/metrics"), ADMIN).await;
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(
        metrics.contains(r#"method="POST",route="/v2/droplets/{droplet_id}/actions",status="201""#),
        "{metrics}"
    );
    assert!(!metrics.contains(r#"/",status"#), "{metrics}");
}

/// Writes a whole POST (head and `body_len` bytes of body, declared by `Content-Length` or
/// sent chunked) before reading anything, then reads the answer until the server closes.
/// A write or read error (the server closed before reading the body) is returned as `Err`.
async fn post_all_then_read(
    addr: &str,
    path: &str,
    body_len: usize,
    chunked: bool,
) -> Result<String, std::io::Error> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let framing = if chunked {
        "transfer-encoding: chunked".to_string()
    } else {
        format!("content-length: {body_len}")
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {ADMIN}\r\ncontent-type: application/json\r\n{framing}\r\nconnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await?;
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    while sent < body_len {
        let n = chunk.len().min(body_len - sent);
        if chunked {
            s.write_all(format!("{n:x}\r\n").as_bytes()).await?;
        }
        s.write_all(&chunk[..n]).await?;
        if chunked {
            s.write_all(b"\r\n").await?;
        }
        sent += n;
    }
    if chunked {
        s.write_all(b"0\r\n\r\n").await?;
    }
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn a_client_that_writes_its_whole_oversized_body_first_reads_the_413() {
    let app = spawn_app().await;
    let addr = app.base.strip_prefix("http://").unwrap().to_string();
    // 5 MB, far above the test server's 64 KiB limit (and the default 4 MiB).
    let len = 5 * 1024 * 1024;
    for path in ["/api/v1/actions", "/api/v1/batch", "/v2/droplets/1/actions"] {
        for chunked in [false, true] {
            let answer = tokio::time::timeout(
                std::time::Duration::from_secs(60),
                post_all_then_read(&addr, path, len, chunked),
            )
            .await
            .unwrap_or_else(|_| panic!("{path} (chunked {chunked}): no answer"))
            .unwrap_or_else(|e| panic!("{path} (chunked {chunked}): {e}"));
            let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
            assert!(head.starts_with("HTTP/1.1 413"), "{path}: {answer}");
            let body: Value = serde_json::from_str(body)
                .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {answer}"));
            let limit = if path.starts_with("/v2/") {
                // DigitalOcean's error shape.
                body["message"].as_str().unwrap_or_default().to_string()
            } else {
                assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
                body["error"]["limit"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            };
            assert!(limit.contains("BODY_BYTES_MAX"), "{path}: {body}");
        }
    }
    // The server still answers on new connections.
    let (s, _) = app.get("/api/v1/actions", ADMIN).await;
    assert_eq!(s, StatusCode::OK);
}

/// Checks the Prometheus text: every sample's family has exactly one HELP and one TYPE line,
/// both before its first sample, and no HELP or TYPE names a family without samples.
fn check_metrics_text(text: &str) {
    use std::collections::BTreeMap;
    let mut help: BTreeMap<&str, usize> = BTreeMap::new();
    let mut kind: BTreeMap<&str, &str> = BTreeMap::new();
    let mut sampled: BTreeMap<String, usize> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            *help.entry(name).or_default() += 1;
            assert!(!sampled.contains_key(name), "HELP after samples: {line}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split(' ');
            let (name, t) = (words.next().unwrap(), words.next().unwrap());
            assert!(
                kind.insert(name, t).is_none(),
                "a second TYPE: {line}\n{text}"
            );
            assert!(!sampled.contains_key(name), "TYPE after samples: {line}");
        } else {
            assert!(!line.starts_with('#'), "{line}");
            let name = line.split(['{', ' ']).next().unwrap();
            // A histogram's samples are `_bucket`, `_sum` and `_count` of its family.
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    name.strip_suffix(suffix)
                        .filter(|f| kind.get(f) == Some(&"histogram"))
                })
                .unwrap_or(name);
            assert!(kind.contains_key(family), "no TYPE before {line}\n{text}");
            *sampled.entry(family.to_string()).or_default() += 1;
        }
    }
    for (name, n) in &help {
        assert_eq!(*n, 1, "{name}: {n} HELP lines\n{text}");
        assert!(
            sampled.contains_key(*name),
            "HELP for {name}, which has no samples"
        );
    }
    for name in kind.keys() {
        assert!(
            help.contains_key(name),
            "{name} has a TYPE but no HELP\n{text}"
        );
        assert!(
            sampled.contains_key(*name),
            "TYPE for {name}, which has no samples"
        );
    }
}

#[tokio::test]
async fn every_metric_family_has_its_own_help_and_type() {
    let app = spawn_app().await;
    let metrics = format!("{}/metrics", app.base);
    // The first scrape: no request counted yet.
    let (s, first) = app.get(&metrics, ADMIN).await;
    assert_eq!(s, StatusCode::OK);
    check_metrics_text(first.as_str().unwrap());
    app.create(ADMIN, "3164450").await;
    let (_, text) = app.get(&metrics, ADMIN).await;
    let text = text.as_str().unwrap();
    check_metrics_text(text);
    assert!(
        text.contains("# TYPE action_ledger_http_request_duration_seconds histogram"),
        "{text}"
    );
}

#[tokio::test]
async fn a_second_serve_on_a_data_dir_in_use_fails_before_listening_with_one_line() {
    use crate::binserver;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut first = binserver::start(
        &data,
        &dir.path().join("first.out"),
        &binserver::Options::default(),
    )
    .await
    .unwrap();
    let mut second = std::process::Command::new(binserver::bin())
        .args(["serve", "--data-dir", data.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0", "--redis-listen", "127.0.0.1:0"])
        .env("ACTION_LEDGER_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = second.kill();
            panic!("a second serve on a data directory in use did not exit");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let out = second.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    first.kill();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!stderr.contains("listening"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    let expected = format!(
        "error: data directory {} is in use by a running server (pid {})",
        data.display(),
        first.child.id()
    );
    assert!(lines[0].starts_with(&expected), "{stderr}");
    assert!(!stderr.contains("Os {"), "{stderr}");
}

#[tokio::test]
async fn a_body_of_the_wrong_json_type_is_named_in_api_terms() {
    let app = spawn_app().await;
    let created = app.create(ADMIN, "3164450").await;
    let id = created["id"].as_u64().unwrap();
    let resource = json!({"type": "droplet", "id": "1"});
    // (path, body, what the message must say)
    let cases: Vec<(String, Value, &[&str])> = vec![
        (
            "/api/v1/actions".into(),
            json!({"type": "snapshot", "resource": "droplet-1"}),
            &[
                "`resource` must be an object {",
                "type",
                "id",
                "got a string",
            ],
        ),
        (
            "/api/v1/actions".into(),
            json!({"type": 5, "resource": resource}),
            &["`type` must be a string; got 5"],
        ),
        (
            "/api/v1/actions".into(),
            json!({"type": "snapshot", "resource": {"type": "droplet", "id": true}}),
            &["`resource.id` must be a string or an integer"],
        ),
        (
            "/api/v1/actions".into(),
            json!({"type": "snapshot", "resource": resource, "labels": {"env": 1}}),
            &["`labels.env` must be a string; got 1"],
        ),
        (
            "/api/v1/actions".into(),
            json!({"type": "snapshot", "resource": resource, "related": {}}),
            &["`related` must be an array; got an object"],
        ),
        (
            "/api/v1/actions".into(),
            json!({"type": "snapshot", "resource": resource, "exclusive": "yes"}),
            &["`exclusive` must be true or false"],
        ),
        (
            "/api/v1/actions".into(),
            json!({"type": "snapshot", "resource": resource, "kind": 3}),
            &["`kind` must be a string"],
        ),
        (
            "/api/v1/actions".into(),
            json!({"type": "snapshot", "resource": {"type": "droplet"}}),
            &["`resource.id` is required"],
        ),
        (
            format!("/api/v1/actions/{id}/events"),
            json!({"type": "failed", "error": "boom"}),
            &["`error` must be an object {code, message}; got a string"],
        ),
        (
            format!("/api/v1/actions/{id}/events"),
            json!({"type": "progress", "progress": "half"}),
            &["`progress` must be a number 0-100; got a string"],
        ),
        (
            format!("/api/v1/actions/{id}/events"),
            json!({"type": "progress", "expected_version": -1}),
            &["`expected_version` must be a non-negative integer; got -1"],
        ),
        (
            format!("/api/v1/actions/{id}/events"),
            json!({"type": "progress", "pending_ops": {"s1": 7}}),
            &[
                "`pending_ops.s1` must be an object {",
                "op_name",
                "progress",
            ],
        ),
        (
            "/api/v1/batch".into(),
            json!({"commands": {}}),
            &["`commands` must be an array; got an object"],
        ),
        (
            "/api/v1/batch".into(),
            json!({"commands": [{"create": {"type": "t", "resource": resource}},
                                {"event": {"type": "progress", "action": 1, "progress": [1]}}]}),
            &["command 1: `event.progress` must be a number 0-100; got an array"],
        ),
        (
            "/api/v1/batch".into(),
            json!({"commands": [{"event": {"type": "progress", "action": true}}]}),
            &["command 0: `event.action` must be an action id (integer) or uid (string)"],
        ),
        (
            "/api/v1/batch".into(),
            json!("commands"),
            &["the body must be an object {commands}; got a string"],
        ),
    ];
    for (path, body, needles) in cases {
        let (s, v) = app.post(&path, ADMIN, body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path} {body}: {v}");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        for needle in needles {
            assert!(
                message.contains(needle),
                "{path} {body}: {message:?} lacks {needle:?}"
            );
        }
        for rust in [
            "struct", "f64", "u64", "i64", "usize", "Json", "enum", "sequence", "map",
        ] {
            assert!(
                !message.contains(rust),
                "{path} {body}: {message:?} names {rust:?}"
            );
        }
    }
}
