//! Security review as tests: authentication on every route of both listeners (walked from
//! the routers themselves), tokens never in logs and only hashed at rest, owner-only data
//! directory, and limits against huge or slow requests (slowloris, big heads and bodies).

use crate::app::{spawn_app, spawn_app_with, Api, ADMIN};
use action_ledger::http::server::{self, ServeConfig};
use reqwest::{Client, Method, StatusCode};
use serde_json::json;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Routes that answer without a token, by design (docs/api.md): health, readiness
/// and Nova's version documents. `/metrics` is private unless `--public-metrics`.
const PUBLIC: &[&str] = &["/healthz", "/readyz", "/", "/v2.1", "/v2"];

/// Every method a route could be registered for.
const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// A concrete path for a route template: every `{param}` becomes `1`.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|seg| if seg.starts_with('{') { "1" } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

/// Console routes that show nothing of the ledger without a sign-in: the sign-in form, the
/// way to the list, the CSS and JS.
const CONSOLE_PUBLIC: &[&str] = &["/console/login", "/console/assets/{name}"];

/// One console route and method without the sign-in cookie (and with each of the API's
/// bad-token headers, which the console ignores): a page GET leads to the sign-in form
/// (303), a POST is refused (401, or 403 for a request not from the console's origin),
/// nothing answers 200 but the public ones. False when the route has no such method (405).
async fn console_route_without_a_cookie(m: &Method, url: &str, path: &str, who: &str) -> bool {
    let client = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut first = None;
    for bad in [
        None,
        Some(("authorization", format!("Bearer {ADMIN}"))),
        Some(("x-auth-token", ADMIN.to_string())),
        Some(("cookie", "ledger_console=6e6f70652d6e6f7065".to_string())),
    ] {
        let mut req = client.request(m.clone(), url);
        if let Some((k, v)) = &bad {
            req = req.header(*k, v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        if status == StatusCode::METHOD_NOT_ALLOWED {
            return false;
        }
        let location = resp
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_string())
            .unwrap_or_default();
        let public = CONSOLE_PUBLIC
            .iter()
            .any(|p| concrete(p) == path && (*m == Method::GET || *m == Method::HEAD));
        match m.as_str() {
            _ if public => assert!(
                status == StatusCode::OK || status == StatusCode::NOT_FOUND,
                "{who}: {status}"
            ),
            "GET" | "HEAD" => {
                assert_eq!(status, StatusCode::SEE_OTHER, "{who} {bad:?}");
                assert!(
                    location.starts_with("/console/login") || location == "/console/actions",
                    "{who}: to {location}"
                );
            }
            _ => assert!(
                status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN,
                "{who} {bad:?}: {status}"
            ),
        }
        // A token in a header changes nothing: the console reads only its cookie.
        match first {
            None => first = Some((status, location)),
            Some((s, ref l)) => assert_eq!(
                (s, l.as_str()),
                (status, location.as_str()),
                "{who} {bad:?}"
            ),
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_of_both_listeners_needs_a_token() {
    let mut app = spawn_app().await;
    let running = app.running();
    let client = &app.client;
    // An action 1 exists, so a handler that skipped auth would answer 200 rather than 404.
    let (s, _) = app
        .post(
            "/api/v1/actions",
            ADMIN,
            json!({"type": "t", "resource": {"type": "droplet", "id": "1"}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);

    let (main, redis) = server::route_templates();
    // The walk reads the routers' own tables; make sure it really found them.
    for expected in [
        "/api/v1/actions",
        "/api/v1/actions/{id}/wait",
        "/api/v1/watch",
        "/api/v1/openapi.json",
        "/ecs/v2/actions",
        "/v2/droplets/{droplet_id}/actions",
        "/v2.1/servers/{server_id}/os-instance-actions",
        "/redis/v1/actions",
        "/metrics",
        "/healthz",
    ] {
        assert!(
            main.iter().any(|p| p == expected),
            "{expected} missing from {main:?}"
        );
    }
    assert!(redis.iter().any(|p| p == "/v1/actions"), "{redis:?}");
    assert!(main.len() >= 30, "{main:?}");

    let redis_addr = running.redis_addr.unwrap();
    let mut checked = 0;
    let mut public_seen = Vec::new();
    for (addr, templates) in [(running.addr, &main), (redis_addr, &redis)] {
        for template in templates.iter() {
            let path = concrete(template);
            let mut routed = 0;
            for method in METHODS {
                let m = Method::from_bytes(method.as_bytes()).unwrap();
                let url = format!("http://{addr}{path}");
                let send = |auth: Option<(&str, String)>| {
                    let mut req = client
                        .request(m.clone(), &url)
                        .timeout(Duration::from_secs(30));
                    if let Some((k, v)) = auth {
                        req = req.header(k, v);
                    }
                    if *method == "POST" || *method == "PUT" || *method == "PATCH" {
                        req = req
                            .header("content-type", "application/json")
                            .body(r#"{"type":"reboot","resource":{"type":"droplet","id":"1"}}"#);
                    }
                    req.send()
                };
                let who = format!("{method} {path} on {addr}");
                if template.starts_with("/console") {
                    // The console answers browsers: see `console_route_without_a_cookie`.
                    if console_route_without_a_cookie(&m, &url, &path, &who).await {
                        routed += 1;
                        checked += 1;
                    }
                    continue;
                }
                let status = send(None).await.unwrap().status();
                assert!(!status.is_server_error(), "{who}: {status}");
                if status == StatusCode::METHOD_NOT_ALLOWED {
                    continue; // no route for this method
                }
                routed += 1;
                checked += 1;
                if PUBLIC.contains(&template.as_str())
                    && (*method == "GET" || *method == "HEAD")
                    && addr == running.addr
                {
                    assert_eq!(status, StatusCode::OK, "public {who}");
                    public_seen.push(template.clone());
                    continue;
                }
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{who} without a token");
                for bad in [
                    ("authorization", "Bearer not-a-token".to_string()),
                    ("authorization", format!("Bearer {ADMIN}x")),
                    ("x-auth-token", "not-a-token".to_string()),
                    ("x-apitoken", "not-a-token".to_string()),
                    ("authorization", "Basic dXNlcjpub3BlCg==".to_string()),
                    ("authorization", "Basic !!!".to_string()),
                    ("authorization", "Digest abc".to_string()),
                ] {
                    let status = send(Some(bad.clone())).await.unwrap().status();
                    assert_eq!(status, StatusCode::UNAUTHORIZED, "{who} with {bad:?}");
                }
            }
            assert!(routed > 0, "{template} answers 405 to every method");
        }
    }
    public_seen.sort();
    public_seen.dedup();
    assert_eq!(public_seen.len(), PUBLIC.len(), "{public_seen:?}");
    for console in [
        "/console",
        "/console/login",
        "/console/actions",
        "/console/actions/{id}",
        "/console/resources/{resource_type}/{resource_id}",
        "/console/watch",
        "/console/actions/export",
    ] {
        assert!(main.iter().any(|p| p == console), "{console} missing");
    }
    assert!(checked > 40, "walked only {checked} route/method pairs");
    app.stop().await;
}

/// Secrets presented in every header form (and one created through the API) never appear in
/// the server's output, even at the most verbose log level.
#[test]
fn tokens_never_reach_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_action-ledger"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--redis-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--admin-token")
        .arg(ADMIN)
        .env("ACTION_LEDGER_LOG", "trace")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start action-ledger serve");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::BufReader::new(stdout).read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let mut main = None;
    let mut redis = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    while main.is_none() || redis.is_none() {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the server announces its listeners");
        if let Some(a) = line.strip_prefix("action-ledger listening on http://") {
            main = Some(a.trim().to_string());
        }
        if let Some(a) = line.strip_prefix("Redis Enterprise dialect listening on http://") {
            redis = Some(a.trim().to_string());
        }
    }
    let (main, redis) = (main.unwrap(), redis.unwrap());

    let rt = tokio::runtime::Runtime::new().unwrap();
    let created = rt.block_on(async {
        let api = Api::new(format!("http://{main}"));
        let client = &api.client;
        let secret = api.token("w", "acme", "writer").await;
        let wrong = "wrong-secret-a1b2c3d4e5f6";
        for token in [secret.as_str(), ADMIN, wrong] {
            let basic = crate::http::b64(&format!("user:{token}"));
            for (k, v) in [
                ("authorization", format!("Bearer {token}")),
                ("x-auth-token", token.to_string()),
                ("x-apitoken", token.to_string()),
                ("authorization", format!("Basic {basic}")),
            ] {
                for url in [
                    format!("http://{main}/api/v1/actions"),
                    format!("http://{main}/ecs/v2/actions"),
                    format!("http://{main}/v2/actions"),
                    format!("http://{main}/v2.1/servers/s1/os-instance-actions"),
                    format!("http://{main}/redis/v1/actions"),
                    format!("http://{main}/metrics"),
                    format!("http://{redis}/v2/actions"),
                ] {
                    client.get(&url).header(k, &v).send().await.unwrap();
                }
                client
                    .post(format!("http://{main}/api/v1/actions"))
                    .header(k, &v)
                    .json(&json!({"type": "t", "resource": {"type": "droplet", "id": "1"}}))
                    .send()
                    .await
                    .unwrap();
            }
            // The console's sign-in form and cookie (the token hex-encoded).
            client
                .post(format!("http://{main}/console/login"))
                .header("sec-fetch-site", "same-origin")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("token={token}"))
                .send()
                .await
                .unwrap();
            for path in ["/console/actions", "/console/actions/1", "/console/watch"] {
                let _ = client
                    .get(format!("http://{main}{path}"))
                    .header("cookie", format!("ledger_console={}", hex(token)))
                    .timeout(Duration::from_millis(500))
                    .send()
                    .await;
            }
        }
        secret
    });
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "serve exited {exit}");
    let output = out_reader.join().unwrap() + &err_reader.join().unwrap();
    assert!(
        output.contains("TRACE") || output.contains("DEBUG"),
        "the run logged verbosely"
    );
    for secret in [created.as_str(), ADMIN, "wrong-secret-a1b2c3d4e5f6"] {
        assert!(
            !output.contains(secret),
            "a token appears in the server's output"
        );
        let b = crate::http::b64(&format!("user:{secret}"));
        assert!(
            !output.contains(&b),
            "a Basic credential appears in the output"
        );
        assert!(
            !output.contains(&hex(secret)),
            "a console cookie appears in the output"
        );
    }
}

/// A token as the console's cookie carries it.
fn hex(token: &str) -> String {
    token.bytes().map(|b| format!("{b:02x}")).collect()
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn data_dir_is_owner_only_and_tokens_are_hashes_in_a_0600_file() {
    use std::os::unix::fs::PermissionsExt;
    let mut app = spawn_app().await;
    let secret = app.token("r", "acme", "reader").await;
    app.stop().await;
    let data = app.dir.path().join("data");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "data directory");
    assert_eq!(mode(&data.join("log")), 0o700, "log directory");
    assert_eq!(
        mode(&data.join("projection")),
        0o700,
        "projection directory"
    );
    let tokens = data.join("tokens.json");
    assert_eq!(mode(&tokens), 0o600, "tokens.json");
    let stored = std::fs::read_to_string(&tokens).unwrap();
    assert!(!stored.contains(&secret), "the secret is not stored");
    assert!(!stored.contains(ADMIN), "--admin-token is never stored");
    use sha2::Digest;
    let hash: String = sha2::Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(stored.contains(&hash), "its SHA-256 is: {stored}");
}

/// Reads until the peer closes; returns what was read (a 408 answer, or nothing).
fn read_until_closed(s: &mut TcpStream, bound: Duration) -> Option<String> {
    s.set_read_timeout(Some(bound)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(String::from_utf8_lossy(&got).into_owned()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(String::from_utf8_lossy(&got).into_owned())
            }
            Err(_) => return None, // still open after `bound`
        }
    }
}

fn short_limits() -> ServeConfig {
    let mut c = crate::app::config();
    c.limits.header_read_timeout_ms = 300;
    c.limits.request_timeout_ms = 500;
    c.limits.body_bytes_max = 64 * 1024;
    c
}

/// A client that trickles its headers (or sends nothing) is disconnected after
/// `HEADER_READ_TIMEOUT_MS`, on both listeners; the server keeps serving others.
#[tokio::test(flavor = "multi_thread")]
async fn slowloris_clients_are_disconnected() {
    let mut app = spawn_app_with(short_limits()).await;
    let running = app.running();
    let addrs: Vec<SocketAddr> = vec![running.addr, running.redis_addr.unwrap()];
    let results = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for addr in addrs {
            // Trickles one header line every 100 ms, for up to 60 s.
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
            let mut cut = false;
            for i in 0..600 {
                std::thread::sleep(Duration::from_millis(100));
                if s.write_all(format!("X-Slow-{i}: y\r\n").as_bytes()).is_err() {
                    cut = true;
                    break;
                }
                // Still open means the read would block; anything else (end of stream, a
                // 408, a reset) means the server gave up on us.
                s.set_nonblocking(true).unwrap();
                let mut b = [0u8; 64];
                let open = matches!(s.read(&mut b), Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock);
                s.set_nonblocking(false).unwrap();
                if !open {
                    cut = true;
                    break;
                }
            }
            out.push((addr, "trickled headers", cut));
            // A connection that sends nothing at all.
            let mut idle = TcpStream::connect(addr).unwrap();
            let closed = read_until_closed(&mut idle, Duration::from_secs(60)).is_some();
            out.push((addr, "idle connection", closed));
        }
        out
    })
    .await
    .unwrap();
    for (addr, what, cut) in results {
        assert!(cut, "{what} on {addr} was never disconnected");
    }
    let resp = reqwest::get(format!("http://{}/healthz", running.addr))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "still serving");
    app.stop().await;
}

/// Huge heads get 431, bodies past `BODY_BYTES_MAX` 413 (declared or chunked, native and
/// dialect routes), and a body trickled slower than `REQUEST_TIMEOUT_MS` a 503 — never a
/// hang or a 500.
#[tokio::test(flavor = "multi_thread")]
async fn huge_heads_huge_bodies_and_slow_bodies_are_refused() {
    let mut app = spawn_app_with(short_limits()).await;
    let running = app.running();
    let base = format!("http://{}", running.addr);
    let client = Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let resp = client
        .get(format!("{base}/api/v1/actions"))
        .bearer_auth(ADMIN)
        .header("x-big", "a".repeat(100 * 1024))
        .send()
        .await;
    match resp {
        Ok(r) => assert_eq!(r.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        // The server may close before the client has written the whole head.
        Err(e) => assert!(!e.is_timeout(), "a huge head hung: {e}"),
    }
    let mut many = client
        .get(format!("{base}/api/v1/actions"))
        .bearer_auth(ADMIN);
    for i in 0..200 {
        many = many.header(format!("x-h{i}"), "v");
    }
    let r = many.send().await.unwrap();
    assert_eq!(r.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);

    let big = format!(
        r#"{{"type":"t","resource":{{"type":"droplet","id":"1"}},"description":"{}"}}"#,
        "x".repeat(100 * 1024)
    );
    let before = total(&base).await;
    for path in [
        "/api/v1/actions",
        "/api/v1/batch",
        "/api/v1/actions/1/events",
        "/api/v1/tokens",
        "/ecs/v2/servers/s1/actions",
        "/v2/droplets/1/actions",
    ] {
        // A declared length over the limit is refused from the head alone: send the head
        // only and read the answer (deterministic, unlike racing a full upload with the
        // server's early close).
        let answer =
            crate::support::post_head_only(&running.addr.to_string(), path, ADMIN, big.len()).await;
        assert!(
            answer.starts_with("HTTP/1.1 413"),
            "{path} declared: {answer}"
        );
        let declared = client
            .post(format!("{base}{path}"))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(big.clone())
            .send()
            .await;
        match declared {
            Ok(r) => assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE, "{path}"),
            // The server may answer and close before the client has written the body.
            Err(e) => assert!(!e.is_timeout(), "{path} declared hung: {e}"),
        }
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big
            .as_bytes()
            .chunks(8192)
            .map(|c| Ok(c.to_vec()))
            .collect();
        let chunked = client
            .post(format!("{base}{path}"))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                chunks,
            )))
            .send()
            .await;
        match chunked {
            Ok(r) => assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE, "{path} chunked"),
            // The server answers 413 as soon as the limit is crossed and closes; a client
            // still writing the rest may see the close before the answer. Either way the
            // request was refused (checked below: nothing was recorded), and nothing hung.
            Err(e) => assert!(!e.is_timeout(), "{path} chunked hung: {e}"),
        }
    }
    assert_eq!(
        total(&base).await,
        before,
        "a refused oversized body was recorded"
    );

    // A body that trickles in forever: the request timeout answers.
    let trickle = futures_util::stream::unfold(0u32, |i| async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        (i < 1200).then(|| (Ok::<_, std::io::Error>(b" ".to_vec()), i + 1))
    });
    let slow = client
        .post(format!("{base}/api/v1/actions"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(trickle))
        .send()
        .await;
    match slow {
        Ok(r) => assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE),
        // The server may answer and close while the client is still sending.
        Err(e) => assert!(!e.is_timeout(), "a trickled body hung: {e}"),
    }
    app.stop().await;
}

/// A watch client that disconnects frees its `WATCHERS_MAX` slot even when no event ever
/// matches its filter (before the fix, the slot stayed taken until a matching commit, so
/// connect-and-drop clients could lock every watcher out with 503s).
#[tokio::test(flavor = "multi_thread")]
async fn disconnected_watchers_free_their_slot() {
    let mut c = crate::app::config();
    c.limits.watchers_max = 2;
    let mut app = spawn_app_with(c).await;
    let running = app.running();
    let url = format!(
        "http://{}/api/v1/watch?resource_type=never-matches",
        running.addr
    );
    for round in 0..10 {
        let mut attempts = 0;
        loop {
            // A fresh client per attempt: the dropped stream's connection is really closed.
            let resp = Client::new()
                .get(&url)
                .bearer_auth(ADMIN)
                .send()
                .await
                .unwrap();
            if resp.status() == StatusCode::OK {
                drop(resp);
                break;
            }
            assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
            attempts += 1;
            assert!(
                attempts < 200,
                "round {round}: the slots of disconnected watchers were never freed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    app.stop().await;
}

/// The number of actions the admin sees, on a connection of its own: the server closes a
/// connection after refusing an oversized body, and a pooled one may be that connection.
async fn total(base: &str) -> u64 {
    let (s, v) = Api::new(base).get("/api/v1/actions?limit=1", ADMIN).await;
    assert_eq!(s, StatusCode::OK);
    v["total"].as_u64().unwrap()
}
