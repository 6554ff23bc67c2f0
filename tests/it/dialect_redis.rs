//! The Redis Enterprise dialect on real sockets: exact JSON against data/dialects/redis/
//! (from Redis's documented examples), v1 (`actions` + `state-machines`, one, by database) and
//! v2 (bare array, one), `additional_info` only when non-empty, `pending_ops` per shard,
//! both status vocabularies, Basic auth, errors and tenancy. Every request is made twice, on
//! the Redis listener at the documented root paths and under `/redis` on the main listener,
//! and both answers must be the same.

use crate::app::{send, spawn_app, TestApp, ADMIN};
use crate::dialect_ecs::{assert_fixture, native_action, one_per_status};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// How a request authenticates.
#[derive(Clone, Copy)]
enum Auth<'a> {
    None,
    /// HTTP Basic: user name and password (the token).
    Basic(&'a str, &'a str),
}

fn redis_base(app: &TestApp) -> String {
    let addr = app
        .running
        .as_ref()
        .unwrap()
        .redis_addr
        .expect("the test server starts the Redis listener");
    format!("http://{addr}")
}

async fn raw(
    app: &TestApp,
    method: Method,
    url: &str,
    auth: Auth<'_>,
) -> (StatusCode, HeaderMap, Value) {
    let mut req = app.client.request(method, url);
    if let Auth::Basic(user, password) = auth {
        req = req.basic_auth(user, Some(password));
    }
    send(req).await
}

/// `method path` on the Redis listener and as `/redis{path}` on the main listener; asserts
/// both give the same status, body and `Retry-After`, and returns the answer.
async fn both_with(
    app: &TestApp,
    method: Method,
    path: &str,
    auth: Auth<'_>,
) -> (StatusCode, HeaderMap, Value) {
    let own = raw(
        app,
        method.clone(),
        &format!("{}{path}", redis_base(app)),
        auth,
    )
    .await;
    let nested = raw(app, method, &format!("{}/redis{path}", app.base), auth).await;
    assert_eq!(
        (own.0, &own.2),
        (nested.0, &nested.2),
        "{path}: the Redis listener and /redis on the main listener differ"
    );
    assert_eq!(
        own.1.get("retry-after"),
        nested.1.get("retry-after"),
        "{path}"
    );
    assert_eq!(
        own.1.get("www-authenticate"),
        nested.1.get("www-authenticate"),
        "{path}"
    );
    own
}

async fn both(app: &TestApp, path: &str, token: &str) -> (StatusCode, HeaderMap, Value) {
    both_with(
        app,
        Method::GET,
        path,
        Auth::Basic("admin@example.com", token),
    )
    .await
}

async fn ok(app: &TestApp, path: &str, token: &str) -> (HeaderMap, Value) {
    let (s, h, v) = both(app, path, token).await;
    assert_eq!(s, StatusCode::OK, "{path}: {v}");
    (h, v)
}

fn assert_redis_error(status: StatusCode, body: &Value, expected: StatusCode, code: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["error_code"], code, "{body}");
    assert!(
        body["description"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

fn uids(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|a| a["action_uid"].as_str().unwrap())
        .collect()
}

/// A finished action as Redis documents them: running, then completed.
async fn completed(app: &TestApp, token: &str, body: Value) -> Value {
    let mut body = body;
    body["status"] = json!("running");
    native_action(app, token, body, &[json!({"type": "completed"})]).await
}

/// Redis's documented v1 example: two completed `retry_bdb` tasks (node 1, then node 2) and
/// the completed `SMCreateBDB` state machine of database 1, with the documented uids.
async fn seed_v1(app: &TestApp, token: &str) {
    for (uid, node) in [
        ("661697c5-c747-41bd-ab81-ffc8fd13c494", "1"),
        ("159ca2f8-7bf3-4cda-97e8-4eb560665c28", "2"),
    ] {
        completed(
            app,
            token,
            json!({"uid": uid, "type": "retry_bdb", "kind": "task", "resource": {"type": "node", "id": node}, "node": node}),
        )
        .await;
    }
    completed(
        app,
        token,
        json!({"uid": "a10586b1-60bc-428e-9bc6-392eb5f0d8ae", "type": "SMCreateBDB", "kind": "state-machine", "resource": {"type": "bdb", "id": "1"}}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_v1_matches_the_documented_examples() {
    let app = spawn_app().await;
    let w = app.token("redis-writer", "acme", "writer").await;
    let r = app.token("redis-reader", "acme", "reader").await;
    seed_v1(&app, &w).await;

    // view_status_of_cluster_action is the reader role: the reader reads everything.
    let (h, list) = ok(&app, "/v1/actions", &r).await;
    assert!(h["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    assert_fixture(&list, &app.base, "redis", "v1-list");

    let (h, one) = ok(&app, "/v1/actions/159ca2f8-7bf3-4cda-97e8-4eb560665c28", &r).await;
    assert_fixture(&one, &app.base, "redis", "v1-get");
    assert!(h.get("retry-after").is_none(), "completed: no Retry-After");
    assert_eq!(one, list["actions"][0]);
    // The ledger id names the same action.
    let (_, by_id) = ok(&app, "/v1/actions/2", &r).await;
    assert_eq!(by_id, one);
    let (_, sm) = ok(&app, "/v1/actions/a10586b1-60bc-428e-9bc6-392eb5f0d8ae", &r).await;
    assert_eq!(sm, list["state-machines"][0]);

    let (_, bdb) = ok(&app, "/v1/actions/bdb/1", &r).await;
    assert_fixture(&bdb, &app.base, "redis", "v1-bdb");
    let (s, _, e) = both(&app, "/v1/actions/bdb/2", &r).await;
    assert_redis_error(s, &e, StatusCode::NOT_FOUND, "action_not_found");
    assert_fixture(&e, &app.base, "redis", "error-404-bdb");

    let (s, _, e) = both(&app, "/v1/actions/nosuch", &r).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_fixture(&e, &app.base, "redis", "error-404");
    // Unknown query parameters are ignored.
    let (_, same) = ok(&app, "/v1/actions?limit=1&foo=bar&status=failed", &r).await;
    assert_eq!(same, list);
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_v2_matches_the_documented_examples() {
    let app = spawn_app().await;
    let w = app.token("redis-writer", "acme", "writer").await;
    // Redis's documented v2 example, then an export (kind other, v2 only) with a description and a
    // queued task on the cluster itself (no object, so no additional_info at all).
    completed(
        &app,
        &w,
        json!({"uid": "6155403f-c26f-40ab-8afc-23ed663973f6", "type": "retry_bdb", "resource": {"type": "node", "id": "1"}}),
    )
    .await;
    native_action(
        &app,
        &w,
        json!({"uid": "export-bdb-1", "type": "export", "kind": "other", "resource": {"type": "bdb", "id": "1"}, "description": "Export of database 1 to S3"}),
        &[json!({"type": "progress", "progress": 42.5})],
    )
    .await;
    native_action(
        &app,
        &w,
        json!({"uid": "cluster-upgrade-1", "type": "cluster_upgrade", "resource": {"type": "cluster", "id": "1"}}),
        &[],
    )
    .await;

    let (_, list) = ok(&app, "/v2/actions", &w).await;
    assert!(list.is_array(), "a bare array: {list}");
    assert_fixture(&list, &app.base, "redis", "v2-list");
    let (h, one) = ok(&app, "/v2/actions/6155403f-c26f-40ab-8afc-23ed663973f6", &w).await;
    assert_fixture(&one, &app.base, "redis", "v2-get");
    assert!(h.get("retry-after").is_none());
    let (h, export) = ok(&app, "/v2/actions/export-bdb-1", &w).await;
    assert_eq!(export, list[1]);
    assert_eq!(h["retry-after"], "1", "unfinished: Retry-After");
    assert!(list[0].get("additional_info").is_none(), "{}", list[0]);
    assert!(list[0]["creation_time"].is_i64() || list[0]["creation_time"].is_u64());
    let (_, again) = ok(&app, "/v2/actions?foo=bar&page=2", &w).await;
    assert_eq!(again, list, "unknown query parameters are ignored");

    // v1 does not show other kinds: absent from the list, 404 alone.
    let (_, v1) = ok(&app, "/v1/actions", &w).await;
    assert_eq!(
        uids(&v1["actions"]),
        ["cluster-upgrade-1", "6155403f-c26f-40ab-8afc-23ed663973f6"]
    );
    assert_eq!(v1["state-machines"], json!([]));
    assert_eq!(v1["actions"][0]["status"], "pending");
    let (s, _, e) = both(&app, "/v1/actions/export-bdb-1", &w).await;
    assert_redis_error(s, &e, StatusCode::NOT_FOUND, "action_not_found");
    let (s, _, e) = both(&app, "/v2/actions/nosuch", &w).await;
    assert_redis_error(s, &e, StatusCode::NOT_FOUND, "action_not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_pending_ops_and_status_vocabularies() {
    let app = spawn_app().await;
    let w = app.token("w", "acme", "writer").await;
    native_action(
        &app,
        &w,
        json!({"uid": "sm-upgrade-bdb-3", "type": "SMUpgradeBDB", "kind": "state-machine", "resource": {"type": "bdb", "id": "3"}, "node": "1"}),
        &[json!({"type": "progress", "progress": 50, "state": "upgrade_shards", "pending_ops": {
            "3": {"op_name": "SMUpgradeBDB", "progress": 50.0, "status_code": "0", "status_description": "upgrading",
                  "heartbeat": 1650378874, "last_sample_time": 1650378870, "snapshot": {"step": 2}},
            "4": {"op_name": "SMUpgradeBDB"}
        }})],
    )
    .await;
    let (h, v1) = ok(&app, "/v1/actions/sm-upgrade-bdb-3", &w).await;
    assert_fixture(&v1, &app.base, "redis", "v1-get-pending-ops");
    assert_eq!(h["retry-after"], "1");
    let (_, v2) = ok(&app, "/v2/actions/sm-upgrade-bdb-3", &w).await;
    assert_fixture(&v2, &app.base, "redis", "v2-get-pending-ops");
    let (_, bdb) = ok(&app, "/v1/actions/bdb/3", &w).await;
    assert_eq!(bdb, json!([v1]));

    // One action per canonical status, as tasks and as state machines.
    let tasks = one_per_status(&app, &w, json!({"type": "node", "id": "2"}), json!({})).await;
    let machines = one_per_status(
        &app,
        &w,
        json!({"type": "bdb", "id": "5"}),
        json!({"kind": "state-machine"}),
    )
    .await;
    let v1_status = ["pending", "active", "completed", "failed", "failed"];
    let v2_status = ["queued", "running", "completed", "failed", "cancelled"];
    let errors = [
        None,
        None,
        None,
        Some("disk full"),
        Some("stopped by operator"),
    ];
    for i in 0..5 {
        let (t, m) = (&tasks[i], &machines[i]);
        let (_, tv1) = ok(
            &app,
            &format!("/v1/actions/{}", t["uid"].as_str().unwrap()),
            &w,
        )
        .await;
        assert_eq!(tv1["status"], v1_status[i], "{tv1}");
        assert!(
            tv1["progress"].is_string(),
            "v1 task progress is a string: {tv1}"
        );
        assert_eq!(tv1["task_id"], t["uid"]);
        assert!(
            tv1.get("object_name").is_none() && tv1.get("error").is_none(),
            "{tv1}"
        );
        let (_, mv1) = ok(
            &app,
            &format!("/v1/actions/{}", m["uid"].as_str().unwrap()),
            &w,
        )
        .await;
        assert_eq!(mv1["status"], v1_status[i], "{mv1}");
        assert!(
            mv1["progress"].is_number(),
            "state-machine progress is a number: {mv1}"
        );
        assert_eq!(mv1["object_name"], "bdb:5");
        assert!(mv1["heartbeat"].is_i64(), "{mv1}");
        assert_eq!(mv1["error"].as_str(), errors[i], "{mv1}");
        for a in [t, m] {
            let (h, v2) = ok(
                &app,
                &format!("/v2/actions/{}", a["uid"].as_str().unwrap()),
                &w,
            )
            .await;
            assert_eq!(v2["status"], v2_status[i], "{v2}");
            assert!(v2["progress"].is_f64(), "v2 progress is a float: {v2}");
            assert_eq!(
                v2["additional_info"]["error"].as_str(),
                (v2_status[i] == "failed").then_some("disk full"),
                "{v2}"
            );
            assert_eq!(h.get("retry-after").is_some(), i < 2, "{v2}");
        }
    }
    assert_eq!(
        ok(&app, "/v2/actions", &w)
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        11
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_auth_errors_and_tenancy_on_both_listeners() {
    let app = spawn_app().await;
    let w = app.token("w", "acme", "writer").await;
    let g = app.token("g", "globex", "reader").await;
    seed_v1(&app, &w).await;

    // No credentials → 401 with a Basic challenge; a wrong password, a malformed header → 401.
    for path in [
        "/v1/actions",
        "/v1/actions/661697c5-c747-41bd-ab81-ffc8fd13c494",
        "/v1/actions/bdb/1",
        "/v2/actions",
        "/v2/actions/1",
    ] {
        let (s, h, e) = both_with(&app, Method::GET, path, Auth::None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}");
        assert_fixture(&e, &app.base, "redis", "error-401");
        assert!(h["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic "));
        let (s, _, e) = both_with(&app, Method::GET, path, Auth::Basic("w", "wrong")).await;
        assert_redis_error(s, &e, StatusCode::UNAUTHORIZED, "unauthorized");
        for header in ["Basic !!!", "Basic", "Digest abc"] {
            let url = format!("{}{path}", redis_base(&app));
            let (s, _, _) = app
                .request(Method::GET, &url, &[("Authorization", header)], None)
                .await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{header}");
        }
    }
    // The Basic user name is not checked; the password is the token.
    let (s, _, _) = both_with(&app, Method::GET, "/v1/actions", Auth::Basic("", &w)).await;
    assert_eq!(s, StatusCode::OK);

    // Another tenant sees nothing of acme's: empty lists, 404 alone and by database.
    let (_, v1) = ok(&app, "/v1/actions", &g).await;
    assert_eq!(v1, json!({"actions": [], "state-machines": []}));
    let (_, v2) = ok(&app, "/v2/actions", &g).await;
    assert_eq!(v2, json!([]));
    for path in [
        "/v1/actions/661697c5-c747-41bd-ab81-ffc8fd13c494",
        "/v1/actions/1",
        "/v2/actions/a10586b1-60bc-428e-9bc6-392eb5f0d8ae",
        "/v1/actions/bdb/1",
    ] {
        let (s, _, e) = both(&app, path, &g).await;
        assert_redis_error(s, &e, StatusCode::NOT_FOUND, "action_not_found");
    }
    // Admin sees every tenant.
    let (_, all) = ok(&app, "/v2/actions", ADMIN).await;
    assert_eq!(all.as_array().unwrap().len(), 3);

    // Read-only: other methods → 405, unknown paths → 404, both in Redis's shape and the
    // same on both listeners.
    for method in [Method::POST, Method::PUT, Method::DELETE] {
        let (s, _, e) = both_with(&app, method, "/v1/actions", Auth::Basic("w", &w)).await;
        assert_redis_error(s, &e, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    }
    for path in ["/v1/nosuch", "/v3/actions", "/v1/actions/bdb/1/extra"] {
        let (s, _, e) = both(&app, path, &w).await;
        assert_redis_error(s, &e, StatusCode::NOT_FOUND, "not_found");
    }
    // The Redis listener serves only Redis: the native API is not there.
    let (s, _, e) = raw(
        &app,
        Method::GET,
        &format!("{}/api/v1/actions", redis_base(&app)),
        Auth::Basic("w", &w),
    )
    .await;
    assert_redis_error(s, &e, StatusCode::NOT_FOUND, "not_found");
    // And /v2/actions on the main listener is DigitalOcean's, not Redis's.
    let (_, _, v) = raw(
        &app,
        Method::GET,
        &format!("{}/v2/actions", app.base),
        Auth::Basic("w", &w),
    )
    .await;
    assert_eq!(v["meta"]["total"], 3, "{v}");
}
