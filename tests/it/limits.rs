//! The connection and watcher caps of the HTTP layer (issue 4, "Errors and limits"):
//! `CONNECTIONS_MAX` refuses connections beyond the cap with a 503 naming the limit and
//! serves again once a place is free; `WATCHERS_MAX` likewise for watch streams.

use crate::app::{spawn_app_with, TestApp, ADMIN};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a freed place may take to be noticed by the server (a bound, not a speed
/// assertion: the test retries until then).
const SETTLE: Duration = Duration::from_secs(10);

async fn start(connections_max: usize, watchers_max: usize) -> TestApp {
    let mut config = crate::app::config();
    config.limits.connections_max = connections_max;
    config.limits.watchers_max = watchers_max;
    // A gone watch client is noticed at the next write: keep-alives make that prompt.
    config.limits.watch_keepalive_ms = 100;
    spawn_app_with(config).await
}

/// Sends one keep-alive `GET /healthz` on `s` and returns the status line and body.
async fn healthz_on(s: &mut TcpStream) -> (String, String) {
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "connection closed early: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("content-length");
            if body.len() >= len {
                return (head.lines().next().unwrap().to_string(), body.to_string());
            }
        }
    }
}

/// Opens a connection and sends one request; returns what came back before the close.
async fn one_shot(addr: std::net::SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(SETTLE, s.read_to_end(&mut out))
        .await
        .expect("the server answers, it does not hang")
        .unwrap();
    String::from_utf8_lossy(&out).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_beyond_the_cap_get_a_503_naming_the_limit() {
    let mut app = start(2, 8).await;
    let addr = app.running().addr;
    let mut a = TcpStream::connect(addr).await.unwrap();
    let mut b = TcpStream::connect(addr).await.unwrap();
    // Both are served (and stay open: keep-alive).
    assert_eq!(healthz_on(&mut a).await.0, "HTTP/1.1 200 OK");
    assert_eq!(healthz_on(&mut b).await.0, "HTTP/1.1 200 OK");

    let refused = one_shot(addr).await;
    let (head, body) = refused.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(
        head.starts_with("HTTP/1.1 503"),
        "a third connection is refused: {refused}"
    );
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );
    let v: Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["error"]["code"], "unavailable", "{v}");
    assert_eq!(v["error"]["limit"], "CONNECTIONS_MAX", "{v}");
    assert_eq!(v["error"]["max"], 2, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("CONNECTIONS_MAX"));

    // The open connections keep working while others are refused.
    assert_eq!(healthz_on(&mut a).await.0, "HTTP/1.1 200 OK");

    // Closing one frees its place.
    drop(b);
    let deadline = Instant::now() + SETTLE;
    loop {
        let answer = one_shot(addr).await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            answer.starts_with("HTTP/1.1 503"),
            "only 200 or the cap's 503: {answer}"
        );
        assert!(
            Instant::now() < deadline,
            "a closed connection's place was never given back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(a);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn watchers_beyond_the_cap_get_a_503_and_a_closed_stream_frees_its_place() {
    let mut app = start(64, 1).await;
    let watch = || {
        app.client
            .get(format!("{}/api/v1/watch", app.base))
            .bearer_auth(ADMIN)
            .send()
    };
    let first = watch().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);

    let second = watch().await.unwrap();
    assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
    let v: Value = second.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unavailable", "{v}");
    assert_eq!(v["error"]["limit"], "WATCHERS_MAX", "{v}");

    // Other routes are not affected by the watcher cap.
    let (health, _) = app.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(health, StatusCode::OK);

    // The first watcher leaves while nothing is being committed: its place comes back
    // without waiting for a commit.
    drop(first);
    let deadline = Instant::now() + SETTLE;
    loop {
        let again = watch().await.unwrap();
        if again.status() == StatusCode::OK {
            break;
        }
        assert_eq!(again.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            Instant::now() < deadline,
            "a closed watch stream's place was never given back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_redis_listener_refuses_in_redis_s_error_shape() {
    let mut config = crate::app::config();
    config.limits.connections_max = 1;
    let mut app = spawn_app_with(config).await;
    let addr = app.running().redis_addr.expect("the Redis listener is on");
    // One connection holds the only place (it is answered, so it has been accepted).
    let mut held = TcpStream::connect(addr).await.unwrap();
    let (status, _) = healthz_on(&mut held).await;
    assert!(status.starts_with("HTTP/1.1 "), "{status}");

    let refused = one_shot(addr).await;
    let (head, body) = refused.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 503"), "{refused}");
    let v: Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["error_code"], "unavailable", "{v}");
    assert!(
        v["description"]
            .as_str()
            .unwrap()
            .contains("CONNECTIONS_MAX (1)"),
        "{v}"
    );
    assert!(v.get("error").is_none(), "not the native shape: {v}");
    drop(held);
    app.stop().await;
}
