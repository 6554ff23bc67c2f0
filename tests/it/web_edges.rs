//! Compression and CORS around both listeners: answers compressed with gzip, zstd or br when
//! the client asks (decoded here to the same JSON as the plain answer), never a watch stream;
//! CORS off by default, preflights answered for the named origins only, and a bad origin a
//! configuration error (exit 2).

use crate::app::{spawn_app_with, TestApp, ADMIN};
use crate::binserver::{self, Options};
use futures_util::StreamExt;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::Value;
use std::io::Read;
use std::time::Duration;

/// A bound against a hang, not a speed assertion.
const HANG: Duration = Duration::from_secs(60);

const CONSOLE: &str = "https://console.example.com";

fn redis_base(app: &TestApp) -> String {
    format!(
        "http://{}",
        app.running().redis_addr.expect("a Redis listener")
    )
}

/// `GET url` as the admin with `headers`: status, headers, raw body bytes.
async fn raw_get(
    app: &TestApp,
    url: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut req = app.client.get(url).bearer_auth(ADMIN);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let (status, h) = (resp.status(), resp.headers().clone());
    (status, h, resp.bytes().await.unwrap().to_vec())
}

fn decode(encoding: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        "gzip" => {
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .unwrap();
        }
        "br" => {
            brotli::Decompressor::new(body, 4096)
                .read_to_end(&mut out)
                .unwrap();
        }
        "zstd" => out = zstd::decode_all(body).unwrap(),
        other => panic!("no decoder for {other}"),
    };
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_are_compressed_as_asked_and_decode_to_the_same_json() {
    let app = spawn_app_with(crate::app::config()).await;
    for i in 0..30 {
        app.create(ADMIN, &format!("d-{i}")).await;
    }
    let main = format!("{}/api/v1/actions?limit=30", app.base);
    let redis = format!("{}/v1/actions", redis_base(&app));
    for url in [&main, &redis] {
        let (s, h, plain) = raw_get(&app, url, &[]).await;
        assert_eq!(s, StatusCode::OK, "{url}");
        assert!(
            h.get("content-encoding").is_none(),
            "{url}: compressed unasked"
        );
        let plain: Value = serde_json::from_slice(&plain).unwrap();
        for encoding in ["gzip", "zstd", "br"] {
            let (s, h, body) = raw_get(&app, url, &[("accept-encoding", encoding)]).await;
            assert_eq!(s, StatusCode::OK, "{url} {encoding}");
            assert_eq!(h["content-encoding"], encoding, "{url}");
            assert!(
                h.get_all("vary")
                    .iter()
                    .any(|v| v.to_str().unwrap().contains("accept-encoding")),
                "{url} {encoding}: {h:?}"
            );
            let decoded: Value = serde_json::from_slice(&decode(encoding, &body))
                .unwrap_or_else(|e| panic!("{url} {encoding}: {e}"));
            assert_eq!(decoded, plain, "{url} {encoding}");
            assert!(body.len() < serde_json::to_vec(&plain).unwrap().len());
        }
        // The client's preference wins among several.
        let (_, h, _) = raw_get(&app, url, &[("accept-encoding", "gzip;q=0.5, br;q=1.0")]).await;
        assert_eq!(h["content-encoding"], "br");
    }
    // A tiny body is not worth it.
    let (s, h, body) = raw_get(
        &app,
        &format!("{}/healthz", app.base),
        &[("accept-encoding", "gzip")],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.len() < 32, "{}", String::from_utf8_lossy(&body));
    assert!(h.get("content-encoding").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_stream_is_never_compressed() {
    let app = spawn_app_with(crate::app::config()).await;
    app.create(ADMIN, "d-1").await;
    let resp = app
        .client
        .get(format!("{}/api/v1/watch?after=0", app.base))
        .bearer_auth(ADMIN)
        .header("accept-encoding", "gzip, br, zstd")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert!(
        resp.headers().get("content-encoding").is_none(),
        "{:?}",
        resp.headers()
    );
    // The first frame arrives as it was written, in plain text, while the stream stays open.
    let mut stream = resp.bytes_stream();
    let mut text = String::new();
    while !text.contains("\n\n") {
        let chunk = tokio::time::timeout(HANG, stream.next())
            .await
            .expect("a frame, not a frame held in an encoder")
            .expect("the stream stays open")
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).expect("plain text"));
    }
    assert!(text.contains("id: 1\n"), "{text}");
    assert!(text.contains("event: created\n"), "{text}");
}

fn cors_headers(h: &HeaderMap) -> Vec<String> {
    h.keys()
        .map(|k| k.as_str().to_string())
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

fn list(h: &HeaderMap, name: &str) -> Vec<String> {
    h.get_all(name)
        .iter()
        .flat_map(|v| v.to_str().unwrap().split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .collect()
}

async fn preflight(app: &TestApp, url: &str, origin: &str) -> (StatusCode, HeaderMap) {
    let resp = app
        .client
        .request(reqwest::Method::OPTIONS, url)
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type, idempotency-key",
        )
        .send()
        .await
        .unwrap();
    (resp.status(), resp.headers().clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_answers_the_named_origins_only() {
    let mut config = crate::app::config();
    config.limits.cors_origins = vec![CONSOLE.into(), "http://localhost:3000".into()];
    let app = spawn_app_with(config).await;
    let actions = format!("{}/api/v1/actions", app.base);
    let redis = format!("{}/v1/actions", redis_base(&app));
    for url in [&actions, &redis] {
        let (s, h) = preflight(&app, url, CONSOLE).await;
        assert!(s.is_success(), "{url}: {s}");
        assert_eq!(h["access-control-allow-origin"], CONSOLE, "{url}");
        assert!(list(&h, "access-control-allow-methods").contains(&"post".into()));
        let allowed = list(&h, "access-control-allow-headers");
        for name in [
            "authorization",
            "content-type",
            "idempotency-key",
            "x-request-id",
            "x-ledger-min-position",
        ] {
            assert!(
                allowed.contains(&name.to_string()),
                "{url}: {name} in {allowed:?}"
            );
        }
        assert!(list(&h, "vary").contains(&"origin".into()), "{url}: {h:?}");
        assert!(h.get("access-control-allow-credentials").is_none());

        // The request itself: the origin echoed, the ledger's headers readable.
        let (s, h, _) = raw_get(&app, url, &[("origin", "http://localhost:3000")]).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(h["access-control-allow-origin"], "http://localhost:3000");
        let exposed = list(&h, "access-control-expose-headers");
        for name in ["x-ledger-position", "x-request-id", "location"] {
            assert!(exposed.contains(&name.to_string()), "{name} in {exposed:?}");
        }

        // Another origin (even one that differs by scheme or port): no CORS header at all.
        for other in [
            "https://evil.example",
            "http://console.example.com",
            "http://localhost:3001",
        ] {
            let (_, h) = preflight(&app, url, other).await;
            assert_eq!(cors_headers(&h), Vec::<String>::new(), "{url} {other}");
            let (s, h, _) = raw_get(&app, url, &[("origin", other)]).await;
            assert_eq!(s, StatusCode::OK);
            assert_eq!(cors_headers(&h), Vec::<String>::new(), "{url} {other}");
            assert!(list(&h, "vary").contains(&"origin".into()), "{url}: {h:?}");
        }
    }
    // A listed origin without a token still needs one for the request itself.
    let resp = app
        .client
        .get(&actions)
        .header("origin", CONSOLE)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()["access-control-allow-origin"], CONSOLE);
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_is_off_by_default() {
    let app = spawn_app_with(crate::app::config()).await;
    let url = format!("{}/api/v1/actions", app.base);
    let (s, h) = preflight(&app, &url, CONSOLE).await;
    assert!(!s.is_success(), "{s}");
    assert_eq!(cors_headers(&h), Vec::<String>::new());
    let (_, h, _) = raw_get(&app, &url, &[("origin", CONSOLE)]).await;
    assert_eq!(cors_headers(&h), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_takes_cors_origins_and_refuses_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let server = binserver::start_with(
        &dir.path().join("data"),
        &dir.path().join("server.out"),
        &Options::default(),
        &[
            "--cors-origin".into(),
            CONSOLE.into(),
            "--cors-origin".into(),
            "http://localhost:3000".into(),
        ],
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    for origin in [CONSOLE, "http://localhost:3000"] {
        let resp = server
            .client
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/api/v1/actions", server.base),
            )
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.headers()["access-control-allow-origin"], origin);
    }
    drop(server);

    let serve = |args: &[&str], env: Option<&str>| {
        let mut cmd = std::process::Command::new(binserver::bin());
        for (k, _) in std::env::vars() {
            if k.starts_with("ACTION_LEDGER_") {
                cmd.env_remove(k);
            }
        }
        if let Some(v) = env {
            cmd.env("ACTION_LEDGER_CORS_ORIGINS", v);
        }
        cmd.args(["serve", "--data-dir"])
            .arg(dir.path().join("bad"))
            .args(["--listen", "127.0.0.1:0", "--redis-listen", "off"])
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    for (args, env) in [
        (
            &["--cors-origin", "https://console.example.com/app"][..],
            None,
        ),
        (&["--cors-origin", "*"][..], None),
        (&["--cors-origin", "console.example.com"][..], None),
        (&[][..], Some("https://ok.example,ftp://files.example")),
    ] {
        let out = serve(args, env);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {err}");
        assert!(err.contains("cors_origins"), "{err}");
        assert!(err.contains("is not an origin"), "{err}");
    }
    assert!(
        !dir.path().join("bad").exists(),
        "nothing created before the config is valid"
    );
}
