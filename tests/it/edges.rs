//! Edges a new user hit: trailing slashes, oversized bodies written in full, wrong JSON
//! types, the metrics text, a second server on a data directory in use.

use crate::http::{spawn_app, ADMIN};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// GET `url` with `token`: status and body (JSON when it parses, else the text).
async fn get(client: &reqwest::Client, url: &str, token: &str) -> (StatusCode, Value) {
    let resp = client.get(url).bearer_auth(token).send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

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
        (format!("{main}/api/v1/actions/{native_id}/history"), StatusCode::OK),
        (format!("{main}/api/v1/tokens"), StatusCode::OK),
        (format!("{main}/v2/actions"), StatusCode::OK),
        (format!("{main}/v2/actions/{do_id}"), StatusCode::OK),
        (format!("{main}/v2/droplets/1/actions"), StatusCode::OK),
        (format!("{main}/v2/droplets/1/actions/{do_id}"), StatusCode::OK),
        (format!("{main}/ecs/v2/actions"), StatusCode::OK),
        (format!("{main}/ecs/v2/actions?resource=ec200285"), StatusCode::OK),
        (format!("{main}/v2.1"), StatusCode::OK),
        (format!("{main}/v2.1/servers/srv-1/os-instance-actions"), StatusCode::OK),
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
        let (s, without) = get(&app.client, &url, ADMIN).await;
        assert_eq!(s, expected, "{url}: {without}");
        let with = match url.split_once('?') {
            Some((path, query)) => format!("{path}/?{query}"),
            None => format!("{url}/"),
        };
        let (s, with_slash) = get(&app.client, &with, ADMIN).await;
        assert_eq!(s, expected, "{with}: {with_slash}");
        assert_eq!(with_slash, without, "{with} answers differently from {url}");
    }
    // The ECS list shows the action posted with the slash.
    let (_, ecs) = get(&app.client, &format!("{main}/ecs/v2/actions/"), ADMIN).await;
    assert!(ecs.to_string().contains("ec200285"), "{ecs}");
    // Requests with the slash are counted under their route template.
    let (_, metrics) = get(&app.client, &format!("{main}/metrics"), ADMIN).await;
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(
        metrics.contains(r#"method="POST",route="/v2/droplets/{droplet_id}/actions",status="201""#),
        "{metrics}"
    );
    assert!(!metrics.contains(r#"/",status"#), "{metrics}");
}
