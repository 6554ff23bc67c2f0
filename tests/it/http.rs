//! The native HTTP API on a real socket: every route, bad input of every kind, the tenant
//! isolation matrix, wait, watch, and graceful shutdown.

use crate::app::{spawn_app, spawn_on, ADMIN};
use action_ledger::http::server;
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn assert_error(status: StatusCode, body: &Value, expected: StatusCode, code: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_over_http_matches_the_contract_shape() {
    let app = spawn_app().await;
    let w = app.token("acme-writer", "acme", "writer").await;
    let a = app.create(&w, "3164450").await;
    assert_eq!(a["id"], 1);
    assert_eq!(a["tenant"], "acme");
    assert_eq!(a["status"], "queued");
    assert_eq!(a["progress"], 0.0);
    assert_eq!(a["resource"], json!({"type": "droplet", "id": "3164450"}));
    for key in [
        "uid",
        "user",
        "kind",
        "related",
        "node",
        "region",
        "description",
        "labels",
        "state",
        "message",
        "error",
        "created_at",
        "started_at",
        "updated_at",
        "completed_at",
        "heartbeat_at",
        "events",
        "pending_ops",
        "version",
    ] {
        assert!(a.get(key).is_some(), "missing {key}: {a}");
    }
    assert!(a["started_at"].is_null());
    let created = a["created_at"].as_str().unwrap();
    assert!(
        created.ends_with('Z') && created.len() == 27,
        "RFC 3339 UTC with microseconds: {created}"
    );

    let (s, a) = app
        .post("/api/v1/actions/1/events", &w, json!({"type": "started"}))
        .await;
    assert_eq!((s, &a["status"]), (StatusCode::OK, &json!("running")));
    let (s, a) = app
        .post(
            "/api/v1/actions/1/events",
            &w,
            json!({"type": "progress", "progress": 40, "pending_ops": {"3": {"op_name": "SMUpgradeBDB", "progress": 50.0}}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{a}");
    assert_eq!(a["pending_ops"]["3"]["op_name"], "SMUpgradeBDB");
    assert!(a["pending_ops"]["3"]["status_code"].is_null());
    let (s, _) = app
        .post(
            "/api/v1/actions/1/events",
            &w,
            json!({"type": "event_started", "name": "compute_snapshot", "host": "cmp-1"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, a) = app
        .post(
            "/api/v1/actions/1/events",
            &w,
            json!({"type": "event_finished", "name": "compute_snapshot", "result": "success"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(a["events"][0]["result"], "success");
    assert_eq!(a["version"], 5);

    let uid = a["uid"].as_str().unwrap().to_string();
    let (s, by_uid) = app.get(&format!("/api/v1/actions/{uid}"), &w).await;
    assert_eq!((s, &by_uid["id"]), (StatusCode::OK, &json!(1)));

    // Unfinished → Retry-After.
    let (_, headers, _) = app
        .request_as(Method::GET, "/api/v1/actions/1", Some(&w), None)
        .await;
    assert_eq!(headers["retry-after"], "1");

    let (s, a) = app
        .post(
            "/api/v1/actions/1/events",
            &w,
            json!({"type": "completed", "message": "done"}),
        )
        .await;
    assert_eq!(
        (s, &a["status"], &a["progress"]),
        (StatusCode::OK, &json!("completed"), &json!(100.0))
    );
    let (_, headers, _) = app
        .request_as(Method::GET, "/api/v1/actions/1", Some(&w), None)
        .await;
    assert!(headers.get("retry-after").is_none());

    let (s, e) = app
        .post("/api/v1/actions/1/events", &w, json!({"type": "heartbeat"}))
        .await;
    assert_error(s, &e, StatusCode::CONFLICT, "invalid_transition");

    // History: every record of the action, in order.
    let (s, h) = app.get("/api/v1/actions/1/history", &w).await;
    assert_eq!(s, StatusCode::OK);
    let types: Vec<&str> = h["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["event"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "created",
            "started",
            "progress",
            "event_started",
            "event_finished",
            "completed"
        ]
    );
    assert_eq!(h["records"][0]["principal"], "acme-writer");

    // as_of a position gives the state then.
    let (s, then) = app.get("/api/v1/actions/1?as_of=2", &w).await;
    assert_eq!(
        (s, &then["status"], &then["version"]),
        (StatusCode::OK, &json!("running"), &json!(2))
    );

    // Cancel of a new action → 202 with cancel_requested.
    app.create(&w, "7").await;
    let (s, c) = app.post("/api/v1/actions/2/cancel", &w, json!({})).await;
    assert_eq!(
        (s, &c["cancel_requested"]),
        (StatusCode::ACCEPTED, &json!(true))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn list_filters_cursors_and_batch() {
    let app = spawn_app().await;
    let w = app.token("w", "acme", "writer").await;
    let (s, b) = app
        .post(
            "/api/v1/batch",
            &w,
            json!({"commands": [
                {"create": {"type": "reboot", "resource": {"type": "server", "id": "s1"}, "uid": "req-a"}},
                {"event": {"action": "req-a", "type": "started"}},
                {"create": {"type": "snapshot", "resource": {"type": "droplet", "id": 5}}}
            ]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["results"].as_array().unwrap().len(), 3);
    assert_eq!(b["results"][2]["resource"]["id"], "5");
    for i in 0..7 {
        app.create(&w, &format!("d{i}")).await;
    }
    let (s, l) = app.get("/api/v1/actions?limit=4", &w).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(l["total"], 9);
    let ids: Vec<u64> = l["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [9, 8, 7, 6], "newest first");
    // A new action arrives between pages: the cursor still continues where it was.
    app.create(&w, "late").await;
    let cursor = l["next_cursor"].as_str().unwrap();
    let (s, l2) = app
        .get(&format!("/api/v1/actions?limit=4&cursor={cursor}"), &w)
        .await;
    assert_eq!(s, StatusCode::OK, "{l2}");
    let ids: Vec<u64> = l2["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [5, 4, 3, 2]);
    // The cursor is bound to its filters.
    let (s, e) = app
        .get(
            &format!("/api/v1/actions?limit=4&status=queued&cursor={cursor}"),
            &w,
        )
        .await;
    assert_error(s, &e, StatusCode::BAD_REQUEST, "bad_cursor");

    let (_, l) = app
        .get("/api/v1/actions?resource_type=server&resource_id=s1", &w)
        .await;
    assert_eq!(l["total"], 1);
    assert_eq!(l["actions"][0]["uid"], "req-a");
    let (_, l) = app.get("/api/v1/actions?status=running", &w).await;
    assert_eq!(l["total"], 1);
    let (_, l) = app.get("/api/v1/actions?id=1&id=3&id=999", &w).await;
    assert_eq!(l["actions"].as_array().unwrap().len(), 2);
    let (_, l) = app
        .get("/api/v1/actions?type=reboot&unknown_param=x", &w)
        .await;
    assert_eq!(l["total"], 1, "unknown parameters are ignored");

    // The raw log.
    let (s, log) = app.get("/api/v1/log?after=0&limit=2", &w).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(log["records"][0]["position"], 1);
    assert_eq!(log["next_after"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_a_clear_4xx_never_a_5xx() {
    let app = spawn_app().await;
    let w = app.token("w", "acme", "writer").await;
    app.create(&w, "1").await;
    let raw = |path: &str, body: &'static str| {
        app.client
            .post(format!("{}{}", app.base, path))
            .bearer_auth(&w)
            .header("content-type", "application/json")
            .body(body)
    };
    for (path, body) in [
        ("/api/v1/actions", "{not json"),
        ("/api/v1/actions", ""),
        ("/api/v1/actions", "[]"),
        (
            "/api/v1/actions",
            r#"{"type": 5, "resource": {"type": "x", "id": "1"}}"#,
        ),
        ("/api/v1/actions", r#"{"type": "x"}"#),
        (
            "/api/v1/actions",
            r#"{"type": "x", "resource": {"type": "x", "id": "1"}, "bogus": 1}"#,
        ),
        (
            "/api/v1/actions",
            r#"{"type": "", "resource": {"type": "x", "id": "1"}}"#,
        ),
        ("/api/v1/actions/1/events", r#"{"type": "teleported"}"#),
        (
            "/api/v1/actions/1/events",
            r#"{"type": "progress", "progress": 101}"#,
        ),
        (
            "/api/v1/actions/1/events",
            r#"{"type": "progress", "progress": -1}"#,
        ),
        (
            "/api/v1/actions/1/events",
            r#"{"type": "started", "progress": 5}"#,
        ),
        ("/api/v1/actions/1/events", r#"{"type": "event_started"}"#),
        (
            "/api/v1/actions/1/events",
            r#"{"type": "event_finished", "name": "x", "result": "maybe"}"#,
        ),
        ("/api/v1/actions/1/events", r#"{"type": "failed"}"#),
        ("/api/v1/batch", r#"{"commands": [{}]}"#),
        (
            "/api/v1/batch",
            r#"{"commands": [{"event": {"type": "started"}}]}"#,
        ),
        ("/api/v1/batch", r#"{"commands": []}"#),
    ] {
        let resp = raw(path, body).send().await.unwrap();
        let status = resp.status();
        let v: Value = resp.json().await.unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body}: {v}");
        assert!(v["error"]["message"].is_string(), "{v}");
    }
    // An oversized body is refused from its declared length. Only the head is sent: with
    // the whole body, the server's answer-then-close may reach the client as a reset while
    // it is still writing (a race of the client, not of the server).
    let (s, e) = declared_only(&app.base, "/api/v1/actions", &w, 70 * 1024).await;
    assert_error(s, &e, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert_eq!(e["error"]["limit"], "BODY_BYTES_MAX");
    let (s, e) = app
        .post(
            "/api/v1/actions",
            &w,
            json!({"type": "x", "resource": {"type": "x", "id": "y".repeat(300)}}),
        )
        .await;
    assert_error(s, &e, StatusCode::BAD_REQUEST, "limit_exceeded");
    assert_eq!(e["error"]["limit"], "NAME_BYTES_MAX");
    let (s, e) = app.get("/api/v1/actions?cursor=garbage!", &w).await;
    assert_error(s, &e, StatusCode::BAD_REQUEST, "bad_cursor");
    let (s, e) = app.get("/api/v1/actions?limit=100000", &w).await;
    assert_error(s, &e, StatusCode::BAD_REQUEST, "limit_exceeded");
    assert_eq!(e["error"]["limit"], "LIST_LIMIT_MAX");
    let (s, e) = app.get("/api/v1/actions?since=yesterday", &w).await;
    assert_error(s, &e, StatusCode::BAD_REQUEST, "bad_request");
    let (s, e) = app.get("/api/v1/actions/424242", &w).await;
    assert_error(s, &e, StatusCode::NOT_FOUND, "not_found");
    let (s, e) = app.get("/api/v1/actions/req-nope", &w).await;
    assert_error(s, &e, StatusCode::NOT_FOUND, "not_found");
    let (s, e) = app
        .get("/api/v1/actions/1/wait?timeout_ms=999999", &w)
        .await;
    assert_error(s, &e, StatusCode::BAD_REQUEST, "limit_exceeded");
    assert_eq!(e["error"]["limit"], "WAIT_MS_MAX");
    let (s, e) = app.get("/api/v1/actions/1?as_of=notatime", &w).await;
    assert_error(s, &e, StatusCode::BAD_REQUEST, "bad_request");
    let (s, e) = app.get("/api/v1/nope", &w).await;
    assert_error(s, &e, StatusCode::NOT_FOUND, "not_found");
    let (s, e) = app
        .call(Method::PUT, "/api/v1/actions", Some(&w), None)
        .await;
    assert_error(s, &e, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
}

#[tokio::test(flavor = "multi_thread")]
async fn idempotency_key_on_post() {
    let app = spawn_app().await;
    let w = app.token("w", "acme", "writer").await;
    let send = |body: Value| {
        app.client
            .post(format!("{}/api/v1/actions", app.base))
            .bearer_auth(&w)
            .header("Idempotency-Key", "create-1")
            .json(&body)
            .send()
    };
    let body = json!({"type": "snapshot", "resource": {"type": "droplet", "id": "1"}});
    let first = send(body.clone()).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    let again = send(body).await.unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    let other = send(json!({"type": "reboot", "resource": {"type": "droplet", "id": "1"}}))
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let (_, l) = app.get("/api/v1/actions", &w).await;
    assert_eq!(l["total"], 1, "the repeat recorded nothing");
}

/// `Idempotency-Key` compares bodies as JSON values: reordered keys, other spacing, `1.0`
/// for `1` are the same request (the first answer, nothing recorded); another value is 422.
#[tokio::test(flavor = "multi_thread")]
async fn idempotency_key_compares_json_values_not_bytes() {
    let app = spawn_app().await;
    let w = app.token("w", "acme", "writer").await;
    let send = |path: &'static str, body: &'static str| {
        app.client
            .post(format!("{}{path}", app.base))
            .bearer_auth(&w)
            .header("Idempotency-Key", path)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let first = send(
        "/api/v1/actions",
        r#"{"type":"snapshot","resource":{"type":"droplet","id":"1"},"labels":{"a":"1","b":"2"}}"#,
    )
    .await
    .unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    for same in [
        r#"{"labels":{"b":"2","a":"1"},"resource":{"id":"1","type":"droplet"},"type":"snapshot"}"#,
        "{ \"type\" : \"snapshot\",\n  \"resource\": {\"type\": \"droplet\", \"id\": \"1\"},\n  \"labels\": {\"a\": \"1\", \"b\": \"2\"} }\n",
        r#"{"type":"snap\u0073hot","resource":{"type":"droplet","id":"1"},"labels":{"a":"1","b":"2"}}"#,
    ] {
        let again = send("/api/v1/actions", same).await.unwrap();
        assert_eq!(again.status(), StatusCode::CREATED, "{same}");
        assert_eq!(again.json::<Value>().await.unwrap(), first, "{same}");
    }
    for other in [
        r#"{"type":"snapshot","resource":{"type":"droplet","id":"1"},"labels":{"a":"1"}}"#,
        r#"{"type":"snapshot","resource":{"type":"droplet","id":"1"},"labels":{"a":"1","b":"3"}}"#,
    ] {
        let r = send("/api/v1/actions", other).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{other}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["code"], "idempotency_key_reused", "{e}");
    }
    let (_, l) = app.get("/api/v1/actions", &w).await;
    assert_eq!(l["total"], 1, "the repeats recorded nothing: {l}");
    // Numbers compare as numbers, on any POST route (here an event).
    let path = "/api/v1/actions/1/events";
    let r = send(path, r#"{"type":"progress","progress":50}"#)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let first: Value = r.json().await.unwrap();
    let r = send(path, r#"{"progress": 50.0, "type": "progress"}"#)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap(), first);
    let (_, a) = app.get("/api/v1/actions/1", &w).await;
    assert_eq!(a["version"], first["version"], "{a}");
}

/// A refused batch names the command that failed: `"index"` in the error and a message
/// starting `command N: `, whether it failed to parse or the ledger refused it.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_batch_names_the_failing_command() {
    let app = spawn_app().await;
    let w = app.token("w", "acme", "writer").await;
    let done = app.create(&w, "1").await["id"].as_u64().unwrap();
    for ev in ["started", "completed"] {
        let (s, v) = app
            .post(
                &format!("/api/v1/actions/{done}/events"),
                &w,
                json!({"type": ev}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let ok = || json!({"create": {"type": "t", "resource": {"type": "droplet", "id": "2"}}});
    let batch = |commands: Vec<Value>| {
        let app = &app;
        let w = &w;
        async move {
            app.post("/api/v1/batch", w, json!({ "commands": commands }))
                .await
        }
    };
    let cases = [
        // Refused while parsing.
        (
            vec![ok(), ok(), json!({"event": {"type": "started"}})],
            2,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            vec![
                ok(),
                json!({"create": {"type": 5, "resource": {"type": "d", "id": "1"}}}),
            ],
            1,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            vec![ok(), json!({})],
            1,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            vec![
                json!({"create": {"type": "t", "resource": {"type": "d", "id": "1"}, "tenant": "globex"}}),
            ],
            0,
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        // Refused by the ledger.
        (
            vec![
                ok(),
                ok(),
                ok(),
                json!({"event": {"action": done, "type": "started"}}),
            ],
            3,
            StatusCode::CONFLICT,
            "invalid_transition",
        ),
        (
            vec![
                json!({"create": {"type": "t", "uid": "u-1", "resource": {"type": "d", "id": "1"}}}),
                json!({"create": {"type": "t", "uid": "u-1", "resource": {"type": "d", "id": "1"}}}),
            ],
            1,
            StatusCode::CONFLICT,
            "uid_taken",
        ),
        (
            vec![
                ok(),
                json!({"create": {"type": "t", "resource": {"type": "d", "id": "y".repeat(300)}}}),
            ],
            1,
            StatusCode::BAD_REQUEST,
            "limit_exceeded",
        ),
        (
            vec![json!({"event": {"action": 424242, "type": "started"}})],
            0,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ];
    for (commands, index, status, code) in cases {
        let (s, e) = batch(commands.clone()).await;
        assert_error(s, &e, status, code);
        assert_eq!(e["error"]["index"], index, "{commands:?}: {e}");
        let m = e["error"]["message"].as_str().unwrap();
        assert!(m.starts_with(&format!("command {index}: ")), "{m}");
    }
    // The request's own errors name no command.
    let (s, e) = batch(vec![]).await;
    assert_error(s, &e, StatusCode::BAD_REQUEST, "bad_request");
    assert!(e["error"].get("index").is_none(), "{e}");
    let (_, l) = app.get("/api/v1/actions", &w).await;
    assert_eq!(l["total"], 1, "a refused batch records nothing: {l}");
}

/// Every route with a method, a path, and the role it needs.
fn routes() -> Vec<(Method, &'static str, Option<Value>, &'static str)> {
    let ev = json!({"type": "heartbeat"});
    vec![
        (Method::GET, "/api/v1/actions", None, "reader"),
        (Method::GET, "/api/v1/actions/{id}", None, "reader"),
        (Method::GET, "/api/v1/actions/{id}/history", None, "reader"),
        (
            Method::GET,
            "/api/v1/actions/{id}/wait?timeout_ms=1",
            None,
            "reader",
        ),
        (Method::GET, "/api/v1/log", None, "reader"),
        (Method::GET, "/api/v1/histogram", None, "reader"),
        (Method::GET, "/api/v1/openapi.json", None, "reader"),
        (
            Method::POST,
            "/api/v1/actions/{id}/events",
            Some(ev.clone()),
            "writer",
        ),
        (
            Method::POST,
            "/api/v1/actions/{id}/cancel",
            Some(json!({})),
            "writer",
        ),
        (
            Method::POST,
            "/api/v1/actions",
            Some(json!({"type": "t", "resource": {"type": "r", "id": "9"}})),
            "writer",
        ),
        (
            Method::POST,
            "/api/v1/batch",
            Some(json!({"commands": [{"event": {"action": "{id}", "type": "heartbeat"}}]})),
            "writer",
        ),
        (Method::GET, "/api/v1/tokens", None, "admin"),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_isolation_matrix() {
    // Two tenants × three roles × every route: only what docs/api.md allows.
    let app = spawn_app().await;
    let mut tokens = Vec::new();
    for tenant in ["acme", "globex"] {
        for role in ["reader", "writer", "admin"] {
            tokens.push((
                tenant,
                role,
                app.token(&format!("{tenant}-{role}"), tenant, role).await,
            ));
        }
    }
    let acme_w = &tokens[1].2;
    let acme_action = app.create(acme_w, "a1").await["id"].as_u64().unwrap();
    let rank = |r: &str| {
        ["reader", "writer", "admin"]
            .iter()
            .position(|x| *x == r)
            .unwrap()
    };
    for (tenant, role, token) in &tokens {
        for (method, path, body, needs) in routes() {
            let path = path.replace("{id}", &acme_action.to_string());
            let body = body.map(|b| {
                serde_json::from_str::<Value>(
                    &b.to_string().replace("\"{id}\"", &acme_action.to_string()),
                )
                .unwrap()
            });
            let (s, v) = app.call(method.clone(), &path, Some(token), body).await;
            let who = format!("{tenant}/{role} {method} {path}: {v}");
            assert!(!s.is_server_error(), "{who}");
            if rank(role) < rank(needs) {
                assert_eq!(s, StatusCode::FORBIDDEN, "{who}");
                continue;
            }
            let touches_acme_action =
                path.contains(&format!("/{acme_action}")) || path == "/api/v1/batch";
            if *tenant == "globex" && *role != "admin" && touches_acme_action {
                assert_eq!(
                    s,
                    StatusCode::NOT_FOUND,
                    "another tenant's action looks absent: {who}"
                );
            } else {
                assert!(s.is_success() || s == StatusCode::CONFLICT, "{who}");
            }
        }
        // Lists and the log show only the caller's tenant (admins see all).
        let (_, l) = app.get("/api/v1/actions", token).await;
        for a in l["actions"].as_array().unwrap() {
            assert!(
                *role == "admin" || a["tenant"] == *tenant,
                "{tenant}/{role} saw {a}"
            );
        }
        // So do lists by resource, twice: the second is answered from memory (the memos
        // are keyed by scope; an admin's listing of the same resource came before).
        for _ in 0..2 {
            let (_, l) = app
                .get("/api/v1/actions?resource_type=r&resource_id=9", token)
                .await;
            let listed = l["actions"].as_array().unwrap();
            // Writers and admins have just created one there (the routes above).
            assert!(
                *role == "reader" || !listed.is_empty(),
                "{tenant}/{role}: {l}"
            );
            for a in listed {
                assert!(
                    *role == "admin" || a["tenant"] == *tenant,
                    "{tenant}/{role} saw {a} by resource"
                );
            }
            assert_eq!(l["total"], listed.len(), "{tenant}/{role}: {l}");
        }
        let (_, log) = app.get("/api/v1/log", token).await;
        for r in log["records"].as_array().unwrap() {
            let acme_record = r["event"]["action"] == acme_action || r["event"]["tenant"] == "acme";
            assert!(
                !(acme_record && *tenant == "globex" && *role != "admin"),
                "globex saw an acme record: {r}"
            );
        }
        // A non-admin cannot create for another tenant.
        let (s, _) = app
            .post(
                "/api/v1/actions",
                token,
                json!({"type": "t", "resource": {"type": "r", "id": "1"}, "tenant": "other"}),
            )
            .await;
        assert!(
            s == StatusCode::FORBIDDEN || *role == "admin",
            "{tenant}/{role}: {s}"
        );
    }
    // No token → 401 everywhere; a bad token → 401; health needs none.
    for (method, path, body, _) in routes() {
        let path = path.replace("{id}", "1");
        let (s, v) = app.call(method.clone(), &path, None, body.clone()).await;
        assert_error(s, &v, StatusCode::UNAUTHORIZED, "unauthorized");
        let (s, _) = app.call(method, &path, Some("wrong"), body).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    for path in ["/healthz", "/readyz"] {
        let (s, _) = app.call(Method::GET, path, None, None).await;
        assert_eq!(s, StatusCode::OK, "{path}");
    }
    let (s, _) = app.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "metrics are private unless configured public"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_all_header_forms_and_revocation() {
    let app = spawn_app().await;
    let r = app.token("r1", "acme", "reader").await;
    for (name, value) in [
        ("authorization", format!("Bearer {r}")),
        ("x-auth-token", r.clone()),
        ("x-apitoken", r.clone()),
        (
            "authorization",
            format!("Basic {}", b64(&format!("anyone:{r}"))),
        ),
    ] {
        let (s, _, _) = app
            .request(Method::GET, "/api/v1/actions", &[(name, &value)], None)
            .await;
        assert_eq!(s, StatusCode::OK, "{name}");
    }
    let (s, list) = app.get("/api/v1/tokens", ADMIN).await;
    assert_eq!(s, StatusCode::OK);
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t.get("token").is_none() && t.get("sha256").is_none()));
    let (s, _) = app
        .call(Method::DELETE, "/api/v1/tokens/r1", Some(ADMIN), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = app.get("/api/v1/actions", &r).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let stored = std::fs::read_to_string(app.dir.path().join("data/tokens.json")).unwrap();
    assert!(!stored.contains(&r), "only hashes are stored");
}

/// Base64 (standard alphabet, padded), for HTTP Basic credentials.
pub fn b64(s: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(3) {
        let mut n = 0u32;
        for (i, b) in chunk.iter().enumerate() {
            n |= (*b as u32) << (16 - 8 * i);
        }
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_returns_promptly_when_the_action_completes() {
    let app = spawn_app().await;
    let w = app.token("w", "acme", "writer").await;
    app.create(&w, "1").await;
    app.post("/api/v1/actions/1/events", &w, json!({"type": "started"}))
        .await;
    let waiter = {
        let (client, url, w) = (
            app.client.clone(),
            format!("{}/api/v1/actions/1/wait?timeout_ms=60000", app.base),
            w.clone(),
        );
        tokio::spawn(async move {
            let resp = client.get(url).bearer_auth(w).send().await.unwrap();
            let done = Instant::now();
            (resp.json::<Value>().await.unwrap(), done)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.post("/api/v1/actions/1/events", &w, json!({"type": "completed"}))
        .await;
    let completed_at = Instant::now();
    let (body, returned_at) = waiter.await.unwrap();
    assert_eq!(body["status"], "completed");
    // Woken by the commit: the wait answers as soon as the completing request is acknowledged
    // (measured from that acknowledgement, so the fsync's own time does not count).
    let lag = returned_at.saturating_duration_since(completed_at);
    assert!(
        lag < Duration::from_millis(100),
        "wait returned {lag:?} after the completion was acknowledged"
    );

    // Timeout: the current state with Retry-After.
    app.create(&w, "2").await;
    let (s, headers, _) = app
        .request_as(
            Method::GET,
            "/api/v1/actions/2/wait?timeout_ms=50",
            Some(&w),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(headers["retry-after"], "1");
}

/// Reads SSE events (id, data) from a response until `n` arrived.
async fn read_events(resp: reqwest::Response, n: usize) -> Vec<(u64, Value)> {
    use futures_util::StreamExt;
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    let mut out = Vec::new();
    while out.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("event in time")
            .unwrap()
            .unwrap();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut id = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse().ok();
                }
                if let Some(v) = line.strip_prefix("data:") {
                    data = serde_json::from_str(v.trim()).ok();
                }
            }
            if let (Some(id), Some(data)) = (id, data) {
                out.push((id, data));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_delivers_in_order_and_resumes_without_loss() {
    let app = spawn_app().await;
    let w = app.token("w", "acme", "writer").await;
    let g = app.token("g", "globex", "writer").await;
    let resp = app
        .client
        .get(format!("{}/api/v1/watch?after=0", app.base))
        .bearer_auth(&w)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    for i in 0..3 {
        app.create(&w, &i.to_string()).await;
        app.create(&g, "hidden").await; // another tenant's: never delivered
    }
    let first = read_events(resp, 3).await;
    let positions: Vec<u64> = first.iter().map(|(id, _)| *id).collect();
    assert_eq!(positions, [1, 3, 5]);
    assert!(first.iter().all(|(_, d)| d["action"]["tenant"] == "acme"));
    // Disconnect, write more, resume from the last id seen: nothing lost, nothing twice.
    app.post("/api/v1/actions/1/events", &w, json!({"type": "started"}))
        .await;
    app.post("/api/v1/actions/1/events", &w, json!({"type": "completed"}))
        .await;
    let resp = app
        .client
        .get(format!("{}/api/v1/watch", app.base))
        .bearer_auth(&w)
        .header("Last-Event-ID", "5")
        .send()
        .await
        .unwrap();
    let resumed = read_events(resp, 2).await;
    let got: Vec<(u64, String)> = resumed
        .iter()
        .map(|(id, d)| (*id, d["event"]["type"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(got, [(7, "started".into()), (8, "completed".into())]);
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_shutdown_keeps_every_acknowledged_write() {
    let mut app = spawn_app().await;
    let w = app.token("w", "acme", "writer").await;
    let mut writers = Vec::new();
    for i in 0..8 {
        let (client, base, w) = (app.client.clone(), app.base.clone(), w.clone());
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for j in 0..200 {
                let r = client
                    .post(format!("{base}/api/v1/actions"))
                    .bearer_auth(&w)
                    .json(
                        &json!({"type": "t", "resource": {"type": "r", "id": format!("{i}-{j}")}}),
                    )
                    .send()
                    .await;
                match r {
                    Ok(resp) if resp.status() == StatusCode::CREATED => acked.push(
                        resp.json::<Value>().await.unwrap()["uid"]
                            .as_str()
                            .unwrap()
                            .to_string(),
                    ),
                    _ => break,
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    app.stop().await;
    let mut acked = Vec::new();
    for wr in writers {
        acked.extend(wr.await.unwrap());
    }
    assert!(!acked.is_empty());
    let dir = std::mem::replace(&mut app.dir, tempfile::tempdir().unwrap());
    let app = spawn_on(dir).await;
    for uid in &acked {
        let (s, _) = app.get(&format!("/api/v1/actions/{uid}"), ADMIN).await;
        assert_eq!(s, StatusCode::OK, "acknowledged {uid} lost");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn openapi_metrics_and_readiness() {
    let app = spawn_app().await;
    let (s, doc) = app.get("/api/v1/openapi.json", ADMIN).await;
    assert_eq!(s, StatusCode::OK);
    for path in [
        "/api/v1/actions",
        "/api/v1/actions/{id}",
        "/api/v1/actions/{id}/events",
        "/api/v1/batch",
        "/api/v1/actions/{id}/cancel",
        "/api/v1/actions/{id}/history",
        "/api/v1/actions/{id}/wait",
        "/api/v1/watch",
        "/api/v1/log",
        "/api/v1/histogram",
        "/api/v1/tokens",
        "/api/v1/tokens/{name}",
    ] {
        assert!(doc["paths"].get(path).is_some(), "openapi lacks {path}");
    }
    assert!(doc["components"]["schemas"].get("ErrorBody").is_some());
    app.create(ADMIN, "1").await;
    let (s, _) = app
        .call(Method::GET, "/no/such/route", Some(ADMIN), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let resp = app
        .client
        .get(format!("{}/metrics", app.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    assert!(text.contains("action_ledger_appends_total 1"), "{text}");
    assert!(
        text.contains(r#"route="/api/v1/actions",status="201""#),
        "{text}"
    );
    // Requests no route matched are counted too, under one bounded label.
    assert!(
        text.contains(
            r#"action_ledger_http_request_duration_seconds_count{method="GET",route="unmatched",status="404"} 1"#
        ),
        "{text}"
    );
    let (s, r) = app.call(Method::GET, "/readyz", None, None).await;
    assert_eq!((s, &r["status"]), (StatusCode::OK, &json!("ready")));
}

/// Sends a POST head declaring a `len`-byte JSON body, without the body, and returns the
/// answer's status and JSON body.
async fn declared_only(base: &str, path: &str, token: &str, len: usize) -> (StatusCode, Value) {
    let addr = base.strip_prefix("http://").unwrap();
    let text = crate::support::post_head_only(addr, path, token, len).await;
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let code: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body: Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}"));
    (StatusCode::from_u16(code).unwrap(), body)
}

/// The real filesystem, except that listing a directory waits until `open` is set: holds a
/// server in recovery for as long as a test needs.
struct GatedStorage {
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl action_ledger::log::Storage for GatedStorage {
    fn create_dir_all(&self, dir: &std::path::Path) -> std::io::Result<()> {
        action_ledger::log::FsStorage.create_dir_all(dir)
    }
    fn list(&self, dir: &std::path::Path) -> std::io::Result<Vec<String>> {
        while !self.open.load(std::sync::atomic::Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(5));
        }
        action_ledger::log::FsStorage.list(dir)
    }
    fn read(&self, path: &std::path::Path) -> std::io::Result<Vec<u8>> {
        action_ledger::log::FsStorage.read(path)
    }
    fn read_at(&self, path: &std::path::Path, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        action_ledger::log::FsStorage.read_at(path, offset, len)
    }
    fn file_len(&self, path: &std::path::Path) -> std::io::Result<u64> {
        action_ledger::log::FsStorage.file_len(path)
    }
    fn create(
        &self,
        path: &std::path::Path,
    ) -> std::io::Result<Box<dyn action_ledger::log::storage::LogFile>> {
        action_ledger::log::FsStorage.create(path)
    }
    fn open_append(
        &self,
        path: &std::path::Path,
    ) -> std::io::Result<Box<dyn action_ledger::log::storage::LogFile>> {
        action_ledger::log::FsStorage.open_append(path)
    }
    fn rename(&self, from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
        action_ledger::log::FsStorage.rename(from, to)
    }
    fn remove(&self, path: &std::path::Path) -> std::io::Result<()> {
        action_ledger::log::FsStorage.remove(path)
    }
    fn truncate(&self, path: &std::path::Path, len: u64) -> std::io::Result<()> {
        action_ledger::log::FsStorage.truncate(path, len)
    }
    fn sync_dir(&self, dir: &std::path::Path) -> std::io::Result<()> {
        action_ledger::log::FsStorage.sync_dir(dir)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_recovering_healthz_is_up_and_everything_else_is_503() {
    // Goal: the listener answers from the moment it is bound: `/healthz` 200, `/readyz` 503
    // "starting", any other route 503 in the error shape; once recovery is done the same
    // address serves the application.
    let dir = tempfile::tempdir().unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // However the test ends, the gate opens (a recovery held forever would hang the runtime's
    // shutdown instead of failing the test).
    struct OpenOnDrop(std::sync::Arc<std::sync::atomic::AtomicBool>);
    impl Drop for OpenOnDrop {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Release);
        }
    }
    let _gate = OpenOnDrop(open.clone());
    let mut config = crate::app::config();
    config.data_dir = dir.path().join("data");
    config.listen = addr;
    config.log_storage =
        server::LogStorage(std::sync::Arc::new(GatedStorage { open: open.clone() }));
    let starting = tokio::spawn(server::start(config, std::future::pending()));
    let base = format!("http://{addr}");
    let client = Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let get = |path: &'static str| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let (status, _, body) =
                crate::app::try_send(client.get(format!("{base}{path}")).bearer_auth(ADMIN))
                    .await?;
            Ok::<_, reqwest::Error>((status, body))
        }
    };
    // The listener is bound before recovery starts; wait for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let health = loop {
        match get("/healthz").await {
            Ok(answer) => break answer,
            Err(e) => {
                assert!(Instant::now() < deadline, "never listened: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    assert_eq!(health, (StatusCode::OK, json!({"status": "ok"})));
    assert_eq!(
        get("/readyz").await.unwrap(),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "starting"})
        )
    );
    let (s, body) = get("/api/v1/actions").await.unwrap();
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("starting"),
        "{body}"
    );
    // The refusal echoes the request id, and says when to retry.
    let resp = client
        .get(format!("{base}/api/v1/actions"))
        .header("x-request-id", "while-starting")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["x-request-id"], "while-starting");
    assert_eq!(resp.headers()["retry-after"], "1");
    assert!(!starting.is_finished(), "recovery is held at the gate");

    open.store(true, std::sync::atomic::Ordering::Release);
    let running = starting.await.unwrap().unwrap();
    let (s, r) = get("/readyz").await.unwrap();
    assert_eq!((s, &r["status"]), (StatusCode::OK, &json!("ready")));
    assert_eq!(get("/api/v1/actions").await.unwrap().0, StatusCode::OK);
    running.stop().await.unwrap();
}
