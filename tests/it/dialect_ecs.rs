//! The Seeweb ECS dialect on a real socket: exact JSON against data/dialects/ecs/ (built from
//! ECS's documented examples), paging and the resource filter, status mapping, errors, tenancy.
//!
//! Also holds the fixture helpers the other dialect tests share ([`fixture`], [`normalize`]).

use crate::app::{spawn_app, TestApp, ADMIN};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};

// ---- shared by the dialect tests -------------------------------------------------------

/// `data/dialects/{dialect}/{name}.json`.
pub fn fixture(dialect: &str, name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/dialects")
        .join(dialect)
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Asserts that `actual`, with its volatile values replaced by placeholders, equals the
/// committed fixture exactly (field names, types, null vs absent, order of arrays).
pub fn assert_fixture(actual: &Value, base: &str, dialect: &str, name: &str) {
    let normalized = normalize(actual, base);
    let expected = fixture(dialect, name);
    assert_eq!(
        normalized,
        expected,
        "data/dialects/{dialect}/{name}.json differs; actual (normalized):\n{}",
        serde_json::to_string_pretty(&normalized).unwrap()
    );
}

/// True when `s` has exactly the shape of `pattern`, where `d` stands for one ASCII digit.
fn shaped(s: &str, pattern: &str) -> bool {
    s.len() == pattern.len()
        && s.bytes().zip(pattern.bytes()).all(|(c, p)| {
            if p == b'd' {
                c.is_ascii_digit()
            } else {
                c == p
            }
        })
}

/// Replaces what changes from run to run by placeholders (documented in
/// data/dialects/README.md):
/// - a time string (any key) of the form `2024-10-19T15:08:55.887799+00:00` →
///   `"<rfc3339-micros+00:00>"`, of the form `2014-11-14T16:34:39Z` → `"<rfc3339-seconds-Z>"`;
/// - an integer `creation_time` or `heartbeat` within a day of now → `"<epoch-seconds>"`
///   (given values, such as a shard's heartbeat, stay as they are);
/// - the `http://127.0.0.1:PORT` of the server under test at the start of a string → `<base>`.
pub fn normalize(v: &Value, base: &str) -> Value {
    fn walk(key: Option<&str>, v: &Value, base: &str, now: i64) -> Value {
        match v {
            Value::String(s) if shaped(s, "dddd-dd-ddTdd:dd:dd.dddddd+00:00") => {
                Value::String("<rfc3339-micros+00:00>".into())
            }
            Value::String(s) if shaped(s, "dddd-dd-ddTdd:dd:ddZ") => {
                Value::String("<rfc3339-seconds-Z>".into())
            }
            Value::String(s) if s.starts_with(base) => {
                Value::String(format!("<base>{}", &s[base.len()..]))
            }
            Value::Number(n)
                if matches!(key, Some("creation_time" | "heartbeat"))
                    && n.as_i64().is_some_and(|t| (t - now).abs() < 86_400) =>
            {
                Value::String("<epoch-seconds>".into())
            }
            Value::Array(a) => Value::Array(a.iter().map(|x| walk(None, x, base, now)).collect()),
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, x)| (k.clone(), walk(Some(k), x, base, now)))
                    .collect::<Map<String, Value>>(),
            ),
            other => other.clone(),
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    walk(None, v, base, now)
}

/// Creates an action through the native API (`body` is a native create body) and records
/// `events` on it; returns the native action after the last one.
pub async fn native_action(app: &TestApp, token: &str, body: Value, events: &[Value]) -> Value {
    let (s, mut a) = app.post("/api/v1/actions", token, body).await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    for e in events {
        let (s, next) = app
            .post(
                &format!("/api/v1/actions/{}/events", a["id"]),
                token,
                e.clone(),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{e} -> {next}");
        a = next;
    }
    a
}

/// One action in each canonical status (queued, running, completed, failed, cancelled), in
/// that creation order, on `resource`; returns their native forms.
pub async fn one_per_status(
    app: &TestApp,
    token: &str,
    resource: Value,
    extra: Value,
) -> Vec<Value> {
    let mut out = Vec::new();
    let events: [&[Value]; 5] = [
        &[],
        &[json!({"type": "progress", "progress": 42.7})],
        &[json!({"type": "started"}), json!({"type": "completed"})],
        &[json!({"type": "failed", "error": {"code": "E1", "message": "disk full"}})],
        &[json!({"type": "cancelled", "message": "stopped by operator"})],
    ];
    for (i, evs) in events.iter().enumerate() {
        let mut body = json!({"type": format!("step{i}"), "resource": resource.clone()});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        out.push(native_action(app, token, body, evs).await);
    }
    out
}

// ---- ECS ---------------------------------------------------------------------------------

async fn ecs(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, HeaderMap, Value) {
    let headers: Vec<(&str, &str)> = token.map(|t| ("X-APITOKEN", t)).into_iter().collect();
    app.request(method, path, &headers, body).await
}

fn method_again(path: &str) -> Method {
    if path.starts_with("/ecs/v2/servers") {
        Method::POST
    } else {
        Method::GET
    }
}

async fn ecs_get(app: &TestApp, path: &str, token: &str) -> (StatusCode, HeaderMap, Value) {
    ecs(app, Method::GET, path, Some(token), None).await
}

/// The `id`s of a list's `actions` (ECS and DigitalOcean both use that key).
pub fn ids(list: &Value) -> Vec<u64> {
    list["actions"]
        .as_array()
        .unwrap_or_else(|| panic!("no actions: {list}"))
        .iter()
        .map(|a| a["id"].as_u64().unwrap())
        .collect()
}

/// The two completed server actions of ECS's documented example (`new_server` then
/// `delete_server` on `ec200285` by user `foo`); the ledger numbers them 1 and 2 where the
/// example shows 708/709.
async fn seed_000(app: &TestApp, token: &str) {
    for t in ["new_server", "delete_server"] {
        native_action(
            app,
            token,
            json!({"type": t, "resource": {"type": "ECS", "id": "ec200285"}, "user": "foo", "status": "running"}),
            &[json!({"type": "completed"})],
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ecs_list_and_get_match_the_documented_examples() {
    let app = spawn_app().await;
    let w = app.token("ecs-writer", "acme", "writer").await;
    seed_000(&app, &w).await;

    let (s, h, list) = ecs_get(&app, "/ecs/v2/actions", &w).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert!(h["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    assert_fixture(&list, &app.base, "ecs", "list");

    let (s, h, one) = ecs_get(&app, "/ecs/v2/actions/2", &w).await;
    assert_eq!(s, StatusCode::OK, "{one}");
    assert_fixture(&one, &app.base, "ecs", "get");
    assert!(
        h.get("retry-after").is_none(),
        "a completed action has no Retry-After"
    );
    // The same action in the list and alone.
    assert_eq!(one["action"], list["actions"][0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn ecs_post_records_a_running_action_with_idempotency_and_roles() {
    let app = spawn_app().await;
    let w = app.token("ecs-writer", "acme", "writer").await;
    let r = app.token("ecs-reader", "acme", "reader").await;

    let (s, h, a) = ecs(
        &app,
        Method::POST,
        "/ecs/v2/servers/ec000001/actions",
        Some(&w),
        Some(json!({"type": "power_on"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    assert_fixture(&a, &app.base, "ecs", "post");
    assert_eq!(h["retry-after"], "1");
    let (s, h, one) = ecs_get(&app, "/ecs/v2/actions/1", &r).await;
    assert_eq!((s, &one["action"]), (StatusCode::OK, &a));
    assert_eq!(
        h["retry-after"], "1",
        "an unfinished action carries Retry-After"
    );

    // Extra body fields (rollback's snapshot) are accepted; the native view shows the record.
    let (s, _, b) = ecs(
        &app,
        Method::POST,
        "/ecs/v2/servers/ec000001/actions",
        Some(&w),
        Some(json!({"type": "rollback", "snapshot": 12})),
    )
    .await;
    assert_eq!((s, &b["id"]), (StatusCode::CREATED, &json!(2)));
    let (_, native) = app.get("/api/v1/actions/2", &w).await;
    assert_eq!(native["resource"], json!({"type": "ECS", "id": "ec000001"}));
    assert_eq!(
        (&native["status"], &native["user"]),
        (&json!("running"), &json!("ecs-writer"))
    );

    // Idempotency-Key: the repeat answers the first action and records nothing.
    let key = [("X-APITOKEN", w.as_str()), ("Idempotency-Key", "ecs-key-1")];
    let url = format!("{}/ecs/v2/servers/ec000009/actions", app.base);
    let (s1, _, first) = app
        .request(Method::POST, &url, &key, Some(json!({"type": "power_off"})))
        .await;
    let (s2, _, again) = app
        .request(Method::POST, &url, &key, Some(json!({"type": "power_off"})))
        .await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::CREATED));
    assert_eq!(first, again);
    let (s, _, other) = app
        .request(Method::POST, &url, &key, Some(json!({"type": "power_on"})))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{other}");
    assert_eq!(other["status"], "error");
    let (_, _, list) = ecs_get(&app, "/ecs/v2/actions", &r).await;
    assert_eq!(list["total_actions"], 3);

    // A reader may not POST; no token → 401; both in ECS's error shape.
    let (s, _, e) = ecs(
        &app,
        Method::POST,
        "/ecs/v2/servers/ec000001/actions",
        Some(&r),
        Some(json!({"type": "power_on"})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(e["status"], "error");
    for (method, path) in [
        (Method::GET, "/ecs/v2/actions"),
        (Method::GET, "/ecs/v2/actions/1"),
        (Method::POST, "/ecs/v2/servers/x/actions"),
    ] {
        let (s, _, e) = ecs(&app, method, path, None, Some(json!({"type": "power_on"}))).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(e["status"], "error", "{e}");
        let (s, _, _) = ecs(
            &app,
            method_again(path),
            path,
            Some("not-a-token"),
            Some(json!({"type": "power_on"})),
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    // Bad bodies → 400 in ECS's shape.
    for body in [json!({}), json!({"type": 5}), json!([1])] {
        let (s, _, e) = ecs(
            &app,
            Method::POST,
            "/ecs/v2/servers/ec000001/actions",
            Some(&w),
            Some(body.clone()),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body} -> {e}");
        assert_eq!(e["status"], "error");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ecs_start_length_and_resource_page_the_filtered_list() {
    let app = spawn_app().await;
    let w = app.token("w", "acme", "writer").await;
    // ids 1..=5 on ec000001, 6..=8 on ec000002, 9 on a droplet.
    for i in 1..=9 {
        let server = match i {
            1..=5 => "ec000001",
            6..=8 => "ec000002",
            _ => "3164450",
        };
        let rtype = if i == 9 { "droplet" } else { "ECS" };
        native_action(
            &app,
            &w,
            json!({"type": "power_on", "resource": {"type": rtype, "id": server}}),
            &[],
        )
        .await;
    }
    async fn page_of(app: &TestApp, w: &str, q: &str) -> Value {
        let (s, _, v) = ecs_get(app, &format!("/ecs/v2/actions{q}"), w).await;
        assert_eq!(s, StatusCode::OK, "{q}: {v}");
        v
    }
    let page = |q: &'static str| page_of(&app, &w, q);
    // Only actions on ECS servers are in the ECS API (the droplet's 9 is not).
    let all = page("").await;
    assert_eq!(
        (ids(&all), &all["total_actions"]),
        ((1..=8).rev().collect::<Vec<u64>>(), &json!(8))
    );
    let p = page("?start=2&length=3").await;
    assert_eq!((ids(&p), &p["total_actions"]), (vec![6, 5, 4], &json!(8)));
    // Filter first, then page; total counts the filtered list.
    let f = page("?resource=ec000001&start=1&length=2").await;
    assert_eq!((ids(&f), &f["total_actions"]), (vec![4, 3], &json!(5)));
    let f = page("?resource=ec000001&start=4&length=50").await;
    assert_eq!((ids(&f), &f["total_actions"]), (vec![1], &json!(5)));
    let f = page("?resource=ec000001&start=40&length=20").await;
    assert_eq!((ids(&f), &f["total_actions"]), (vec![], &json!(5)));
    let none = page("?resource=nosuch").await;
    assert_eq!((ids(&none), &none["total_actions"]), (vec![], &json!(0)));
    // Unknown parameters are ignored.
    let u = page("?length=2&sort=asc&foo=bar&resource_type=x").await;
    assert_eq!(ids(&u), vec![8, 7]);
    let max = page("?length=1000").await;
    assert_eq!(ids(&max).len(), 8);
}

/// `resource=NAME` finds exactly the actions the list shows with `"resource": NAME`: the
/// ECS API shows the actions on ECS servers (primary or related), each under its server.
#[tokio::test(flavor = "multi_thread")]
async fn ecs_resource_filter_finds_exactly_what_the_list_shows() {
    let app = spawn_app().await;
    let w = app.token("w", "acme", "writer").await;
    let bodies = [
        json!({"type": "power_on", "resource": {"type": "ECS", "id": "ec1"}}),
        // A Nova server of the same name: not an ECS server.
        json!({"type": "reboot", "resource": {"type": "server", "id": "ec1"}}),
        // A droplet action related to ECS server ec2: on ec2 in the ECS API.
        json!({"type": "snapshot", "resource": {"type": "droplet", "id": "d1"},
               "related": [{"type": "ECS", "id": "ec2"}]}),
        json!({"type": "power_off", "resource": {"type": "ECS", "id": "ec2"}}),
        json!({"type": "shutdown", "resource": {"type": "droplet", "id": "ec1"}}),
    ];
    for b in bodies {
        native_action(&app, &w, b, &[]).await;
    }
    let (s, _, all) = ecs_get(&app, "/ecs/v2/actions", &w).await;
    assert_eq!(s, StatusCode::OK, "{all}");
    assert_eq!(
        (ids(&all), &all["total_actions"]),
        (vec![4, 3, 1], &json!(3)),
        "{all}"
    );
    let shown = |name: &str| -> Vec<u64> {
        all["actions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["resource"] == name)
            .map(|a| a["id"].as_u64().unwrap())
            .collect()
    };
    for a in all["actions"].as_array().unwrap() {
        assert_eq!(a["resource_type"], "ECS", "{a}");
    }
    for name in ["ec1", "ec2", "d1", "nosuch"] {
        let (s, _, f) = ecs_get(&app, &format!("/ecs/v2/actions?resource={name}"), &w).await;
        assert_eq!(s, StatusCode::OK, "{f}");
        assert_eq!(ids(&f), shown(name), "resource={name}: {f} vs {all}");
        assert_eq!(f["total_actions"], json!(shown(name).len()), "{f}");
        for a in f["actions"].as_array().unwrap() {
            assert_eq!(a["resource"], name, "{a}");
        }
    }
    // By id: an action on an ECS server shows under it; any other is not in this API.
    let (s, _, v) = ecs_get(&app, "/ecs/v2/actions/3", &w).await;
    assert_eq!(
        (s, &v["action"]["resource"]),
        (StatusCode::OK, &json!("ec2")),
        "{v}"
    );
    for id in [2, 5] {
        let (s, _, v) = ecs_get(&app, &format!("/ecs/v2/actions/{id}"), &w).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ecs_bad_parameters_are_400_and_unknown_ids_404() {
    let app = spawn_app().await;
    let w = app.token("w", "acme", "writer").await;
    native_action(
        &app,
        &w,
        json!({"type": "power_on", "resource": {"type": "ECS", "id": "ec1"}}),
        &[],
    )
    .await;
    for q in [
        "start=-1",
        "start=x",
        "start=",
        "length=0",
        "length=1001",
        "length=-5",
        "length=abc",
        "length=2.5",
        "start=1e3",
    ] {
        let (s, _, e) = ecs_get(&app, &format!("/ecs/v2/actions?{q}"), &w).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{q}: {e}");
        assert_eq!(e["status"], "error", "{q}: {e}");
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .contains(q.split('=').next().unwrap()),
            "{q}: {e}"
        );
    }
    let (_, _, e) = ecs_get(&app, "/ecs/v2/actions?length=0", &w).await;
    assert_fixture(&e, &app.base, "ecs", "error-400-length");
    let (s, _, e) = ecs_get(&app, "/ecs/v2/actions/999", &w).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_fixture(&e, &app.base, "ecs", "error-404");
    for id in ["abc", "-1", "1.0", "%20", "99999999999999999999999"] {
        let (s, _, e) = ecs_get(&app, &format!("/ecs/v2/actions/{id}"), &w).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{id}: {e}");
        assert_eq!(e["status"], "error");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ecs_status_mapping_fields_and_tenancy() {
    let app = spawn_app().await;
    let w = app.token("w", "acme", "writer").await;
    let other = app.token("other", "globex", "writer").await;
    let all = one_per_status(&app, &w, json!({"type": "ECS", "id": "ec1"}), json!({})).await;
    let expected = [
        ("in-progress", 0),
        ("in-progress", 42),
        ("completed", 100),
        ("failed", 0),
        ("failed", 0),
    ];
    for (a, (status, progress)) in all.iter().zip(expected) {
        let (s, h, v) = ecs_get(&app, &format!("/ecs/v2/actions/{}", a["id"]), &w).await;
        assert_eq!(s, StatusCode::OK);
        let e = &v["action"];
        assert_eq!(
            (
                e["status"].as_str().unwrap(),
                e["progress"].as_u64().unwrap()
            ),
            (status, progress),
            "{e}"
        );
        assert!(e["progress"].is_u64(), "progress is an integer: {e}");
        // No user recorded → the tenant; never null.
        assert_eq!(e["user"], "acme");
        for key in [
            "id",
            "status",
            "user",
            "created_at",
            "resource",
            "resource_type",
            "type",
            "progress",
        ] {
            assert!(!e[key].is_null(), "{key} is never null: {e}");
        }
        assert_eq!(e["started_at"].is_null(), a["started_at"].is_null(), "{e}");
        assert_eq!(e["completed_at"].is_null(), status == "in-progress", "{e}");
        assert_eq!(h.get("retry-after").is_some(), status == "in-progress");
    }
    // Another tenant's action is invisible: 404 and absent from its list.
    let theirs = native_action(
        &app,
        &other,
        json!({"type": "power_on", "resource": {"type": "ECS", "id": "ec1"}}),
        &[],
    )
    .await;
    let (s, _, e) = ecs_get(&app, &format!("/ecs/v2/actions/{}", theirs["id"]), &w).await;
    assert_eq!((s, &e["status"]), (StatusCode::NOT_FOUND, &json!("error")));
    let (_, _, mine) = ecs_get(&app, "/ecs/v2/actions?resource=ec1", &w).await;
    assert_eq!(
        (ids(&mine), &mine["total_actions"]),
        (vec![5, 4, 3, 2, 1], &json!(5))
    );
    let (_, _, theirs_list) = ecs_get(&app, "/ecs/v2/actions", &other).await;
    assert_eq!(ids(&theirs_list), vec![6]);
    // Admin sees every tenant.
    let (_, _, admin) = ecs_get(&app, "/ecs/v2/actions", ADMIN).await;
    assert_eq!(admin["total_actions"], 6);
    let (s, _, _) = ecs_get(&app, "/ecs/v2/actions/6", ADMIN).await;
    assert_eq!(s, StatusCode::OK);
}
