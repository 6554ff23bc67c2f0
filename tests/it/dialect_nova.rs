//! The OpenStack Nova dialect (`os-instance-actions`) on a real socket: exact JSON against
//! data/dialects/nova/ (built from Nova's api-ref samples: doc/api_samples/os-instance-actions
//! v2.1, v2.51, v2.58, v2.62, v2.66, v2.84 and doc/api_samples/versions), every microversion
//! from both headers, each behaviour change of docs/dialects.md, admin-only fields, Nova
//! fault bodies, query parameter rules, tenancy, and the DigitalOcean routes beside the
//! legacy `/v2/{tenant_id}` prefix. The real python-novaclient runs in
//! `novaclient_lists_and_shows_with_a_keystoneauth_session`.
//!
//! Nova is read-only: the actions are recorded through the native API (resource type
//! `server`, uid = the `req-...` request id, sub-events via `event_started`/`event_finished`).

use crate::app::{spawn_app, TestApp, ADMIN};
use crate::dialect_ecs::{fixture, native_action};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};

/// The project of Nova's api samples (`6f70656e737461636b20342065766572`, "openstack 4 ever")
/// as the ledger tenant, so `hostId` equals the samples' value.
const P: &str = "6f70656e737461636b20342065766572";
/// The server of the v2.84 samples.
const S: &str = "4bf3473b-d550-4b65-9409-292d44ab14a2";
const CREATE: &str = "req-c8fd339d-d2bf-43c2-a98a-84328281f83e";
const STOP: &str = "req-0d819d5c-1527-4669-bdf0-ffad31b5105b";
const RESIZE: &str = "req-25517360-b757-47d3-be45-0e8d2a01b36a";
/// sha224(P + "compute"), the samples' hostId.
const HOST_ID: &str = "2091634baaccdc4c5a1d57069c833e402921df696b7f970791b12ec6";

/// Nova times (`2018-04-25T01:26:36.790544`) → `"<nova-time>"`, and the server's base URL
/// at the start of a string → `<base>`. Nothing else changes (the version documents' fixed
/// `updated` values stay checked).
fn nova_normalize(v: &Value, base: &str) -> Value {
    match v {
        Value::String(s) if is_nova_time(s) => Value::String("<nova-time>".into()),
        Value::String(s) if s.starts_with(base) => {
            Value::String(format!("<base>{}", &s[base.len()..]))
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| nova_normalize(x, base)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), nova_normalize(x, base)))
                .collect::<Map<String, Value>>(),
        ),
        other => other.clone(),
    }
}

/// `dddd-dd-ddTdd:dd:dd.dddddd`: UTC, microseconds, no zone.
fn is_nova_time(s: &str) -> bool {
    let p = "dddd-dd-ddTdd:dd:dd.dddddd";
    s.len() == p.len()
        && s.bytes().zip(p.bytes()).all(|(c, p)| {
            if p == b'd' {
                c.is_ascii_digit()
            } else {
                c == p
            }
        })
}

fn assert_nova_fixture(actual: &Value, base: &str, name: &str) {
    let normalized = nova_normalize(actual, base);
    let expected = fixture("nova", name);
    assert_eq!(
        normalized,
        expected,
        "data/dialects/nova/{name}.json differs; actual (normalized):\n{}",
        serde_json::to_string_pretty(&normalized).unwrap()
    );
}

/// How a request names its microversion.
#[derive(Clone, Copy)]
enum Ver<'a> {
    None,
    /// `OpenStack-API-Version: compute X`.
    New(&'a str),
    /// `X-OpenStack-Nova-API-Version: X`.
    Legacy(&'a str),
}

async fn nova_at(
    app: &TestApp,
    path: &str,
    token: Option<&str>,
    ver: Ver<'_>,
) -> (StatusCode, HeaderMap, Value) {
    let new;
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(t) = token {
        headers.push(("X-Auth-Token", t));
    }
    match ver {
        Ver::None => {}
        Ver::New(v) => {
            new = format!("compute {v}");
            headers.push(("OpenStack-API-Version", new.as_str()));
        }
        Ver::Legacy(v) => headers.push(("X-OpenStack-Nova-API-Version", v)),
    }
    app.request(Method::GET, path, &headers, None).await
}

/// GET at microversion `v` (new header) with `token`; asserts 200.
async fn ok(app: &TestApp, path: &str, token: &str, v: &str) -> Value {
    let (s, h, body) = nova_at(app, path, Some(token), Ver::New(v)).await;
    assert_eq!(s, StatusCode::OK, "{path} @{v}: {body}");
    assert_eq!(h["openstack-api-version"], format!("compute {v}").as_str());
    body
}

/// GET expecting a Nova fault with `status`; returns the body after checking its shape.
async fn fault(app: &TestApp, path: &str, token: Option<&str>, ver: Ver<'_>, status: u16) -> Value {
    let (s, _, body) = nova_at(app, path, token, ver).await;
    assert_eq!(s.as_u16(), status, "{path}: {body}");
    let (name, inner) = body
        .as_object()
        .and_then(|o| o.iter().next())
        .unwrap_or_else(|| panic!("{path}: not a fault: {body}"));
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    let expected_name = match status {
        400 => "badRequest",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "itemNotFound",
        405 => "badMethod",
        _ => "computeFault",
    };
    assert_eq!(name, expected_name, "{body}");
    assert_eq!(inner["code"], status, "{body}");
    assert!(
        inner["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body
}

fn list_path(prefix: &str) -> String {
    format!("{prefix}/servers/{S}/os-instance-actions")
}

fn show_path(prefix: &str, rid: &str) -> String {
    format!("{prefix}/servers/{S}/os-instance-actions/{rid}")
}

fn request_ids(list: &Value) -> Vec<String> {
    list["instanceActions"]
        .as_array()
        .unwrap_or_else(|| panic!("no instanceActions: {list}"))
        .iter()
        .map(|a| a["request_id"].as_str().unwrap().to_string())
        .collect()
}

fn server(id: &str) -> Value {
    json!({"type": "server", "id": id})
}

fn started(name: &str, host: &str) -> Value {
    json!({"type": "event_started", "name": name, "host": host})
}

fn finished(name: &str) -> Value {
    json!({"type": "event_finished", "name": name, "result": "success"})
}

/// A finished Nova action on `server_id` with one successful sub-event on host `compute`.
async fn nova_action(
    app: &TestApp,
    token: &str,
    server_id: &str,
    uid: &str,
    action: &str,
    user: &str,
    event: &str,
) -> Value {
    native_action(
        app,
        token,
        json!({"type": action, "uid": uid, "user": user, "resource": server(server_id), "status": "running"}),
        &[started(event, "compute"), finished(event), json!({"type": "completed"})],
    )
    .await
}

/// The samples' two actions on server S of project P: `create` (user `fake`) then `stop`
/// (user `admin`), each with one successful event on host `compute`.
async fn seed_samples(app: &TestApp, writer: &str) {
    nova_action(
        app,
        writer,
        S,
        CREATE,
        "create",
        "fake",
        "compute__do_build_and_run_instance",
    )
    .await;
    nova_action(
        app,
        writer,
        S,
        STOP,
        "stop",
        "admin",
        "compute_stop_instance",
    )
    .await;
}

/// A `resize` still running: prep succeeded on `compute`, resize failed there with a
/// traceback and details, finish started on `compute2`.
async fn seed_resize(app: &TestApp, writer: &str) {
    native_action(
        app,
        writer,
        json!({"type": "resize", "uid": RESIZE, "user": "fake", "resource": server(S), "status": "running"}),
        &[
            started("compute_prep_resize", "compute"),
            finished("compute_prep_resize"),
            started("compute_resize_instance", "compute"),
            json!({"type": "event_finished", "name": "compute_resize_instance", "result": "error",
                   "traceback": "Traceback (most recent call last):\n  File \"nova/compute/manager.py\", line 5460, in _resize_instance\nnova.exception.ResizeError: Resize error: disk full",
                   "details": "Resize error: disk full"}),
            started("compute_finish_resize", "compute2"),
        ],
    )
    .await;
}

struct Tokens {
    writer: String,
    reader: String,
}

async fn tokens(app: &TestApp) -> Tokens {
    Tokens {
        writer: app.token("nova-writer", P, "writer").await,
        reader: app.token("nova-reader", P, "reader").await,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn nova_list_and_show_match_the_api_samples_under_every_prefix() {
    let app = spawn_app().await;
    let t = tokens(&app).await;
    seed_samples(&app, &t.writer).await;
    let v21 = format!("/v2.1/{P}");
    let v2 = format!("/v2/{P}");
    // The same answers under /v2.1, /v2.1/{project_id} and /v2/{tenant_id}, for every role.
    for prefix in ["/v2.1", v21.as_str(), v2.as_str()] {
        for token in [&t.reader, &t.writer] {
            let list = ok(&app, &list_path(prefix), token, "2.1").await;
            assert_nova_fixture(&list, &app.base, "list-v2.1");
            let list = ok(&app, &list_path(prefix), token, "2.58").await;
            assert_nova_fixture(&list, &app.base, "list-v2.58");
            let one = ok(&app, &show_path(prefix, STOP), token, "2.1").await;
            assert_nova_fixture(&one, &app.base, "show-v2.1-reader");
            let one = ok(&app, &show_path(prefix, STOP), token, "2.51").await;
            assert_nova_fixture(&one, &app.base, "show-v2.51-reader");
            let one = ok(&app, &show_path(prefix, STOP), token, "2.84").await;
            assert_nova_fixture(&one, &app.base, "show-v2.84-reader");
        }
        let one = ok(&app, &show_path(prefix, STOP), ADMIN, "2.1").await;
        assert_nova_fixture(&one, &app.base, "show-v2.1-admin");
        let one = ok(&app, &show_path(prefix, STOP), ADMIN, "2.62").await;
        assert_nova_fixture(&one, &app.base, "show-v2.62-admin");
        let one = ok(&app, &show_path(prefix, STOP), ADMIN, "2.84").await;
        assert_nova_fixture(&one, &app.base, "show-v2.84-admin");
        assert_eq!(one["instanceAction"]["events"][0]["hostId"], HOST_ID);
    }
    let (_, h, _) = nova_at(&app, &show_path(&v21, STOP), Some(&t.reader), Ver::None).await;
    assert!(
        h.get("retry-after").is_none(),
        "a finished action has no Retry-After"
    );
    let page = ok(
        &app,
        &format!("{}?limit=1", list_path(&v21)),
        &t.reader,
        "2.66",
    )
    .await;
    assert_nova_fixture(&page, &app.base, "list-v2.66-limit");

    // Times: start_time is the creation, updated_at the last change, in Nova's format; the
    // list entry and the show agree.
    let (_, native) = app.get(&format!("/api/v1/actions/{STOP}"), &t.reader).await;
    let list = ok(&app, &list_path(&v21), &t.reader, "2.84").await;
    let one = ok(&app, &show_path(&v21, STOP), ADMIN, "2.84").await;
    let entry = &list["instanceActions"][0];
    let shown = &one["instanceAction"];
    for k in [
        "action",
        "instance_uuid",
        "message",
        "project_id",
        "request_id",
        "start_time",
        "updated_at",
        "user_id",
    ] {
        assert_eq!(entry[k], shown[k], "{k}");
    }
    let rfc = |s: &Value| s.as_str().unwrap().trim_end_matches('Z').to_string();
    assert_eq!(
        shown["start_time"].as_str().unwrap(),
        rfc(&native["created_at"])
    );
    assert_eq!(
        shown["updated_at"].as_str().unwrap(),
        rfc(&native["updated_at"])
    );
    let ev = &native["events"][0];
    assert_eq!(
        shown["events"][0]["start_time"].as_str().unwrap(),
        rfc(&ev["started_at"])
    );
    assert_eq!(
        shown["events"][0]["finish_time"].as_str().unwrap(),
        rfc(&ev["finished_at"])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nova_errors_events_running_and_admin_only_fields() {
    let app = spawn_app().await;
    let t = tokens(&app).await;
    seed_resize(&app, &t.writer).await;
    let v21 = format!("/v2.1/{P}");
    let (s, h, one) = nova_at(
        &app,
        &show_path(&v21, RESIZE),
        Some(ADMIN),
        Ver::New("2.84"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{one}");
    assert_nova_fixture(&one, &app.base, "show-v2.84-admin-resize");
    assert_eq!(
        h["retry-after"], "1",
        "an unfinished action carries Retry-After"
    );
    for token in [&t.reader, &t.writer] {
        let one = ok(&app, &show_path(&v21, RESIZE), token, "2.84").await;
        assert_nova_fixture(&one, &app.base, "show-v2.84-reader-resize");
    }
    // Admin-only fields by version: traceback always (admin), host from 2.62, details from
    // 2.84; non-admins never see them, and see events only from 2.51.
    for minor in 1..=104u32 {
        let v = format!("2.{minor}");
        let admin = ok(&app, &show_path(&v21, RESIZE), ADMIN, &v).await;
        let reader = ok(&app, &show_path(&v21, RESIZE), &t.reader, &v).await;
        let ev = &admin["instanceAction"]["events"];
        assert_eq!(ev.as_array().unwrap().len(), 3, "{v}");
        let err = &ev[1];
        assert_eq!(err["result"], "Error", "{v}");
        assert!(
            err["traceback"].as_str().unwrap().contains("ResizeError"),
            "{v}"
        );
        assert_eq!(err.get("host").is_some(), minor >= 62, "{v}: {err}");
        assert_eq!(err.get("hostId").is_some(), minor >= 62, "{v}: {err}");
        assert_eq!(err.get("details").is_some(), minor >= 84, "{v}: {err}");
        assert_eq!(
            admin["instanceAction"].get("updated_at").is_some(),
            minor >= 58,
            "{v}"
        );
        let rev = reader["instanceAction"].get("events");
        assert_eq!(rev.is_some(), minor >= 51, "{v}: {reader}");
        if let Some(rev) = rev {
            for e in rev.as_array().unwrap() {
                for k in ["traceback", "host", "details"] {
                    assert!(e.get(k).is_none(), "{v}: reader sees {k}: {e}");
                }
                assert_eq!(e.get("hostId").is_some(), minor >= 62, "{v}");
            }
        }
        assert_eq!(reader["instanceAction"]["message"], "Error");
    }

    // A failed or cancelled action says "Error" even without an errored event; a completed
    // one null.
    for (uid, last) in [
        (
            "req-failed",
            json!({"type": "failed", "error": {"code": "E", "message": "boom"}}),
        ),
        ("req-cancelled", json!({"type": "cancelled"})),
        ("req-done", json!({"type": "completed"})),
    ] {
        native_action(
            &app,
            &t.writer,
            json!({"type": "reboot", "uid": uid, "resource": server(S), "status": "running"}),
            &[last],
        )
        .await;
        let one = ok(&app, &show_path(&v21, uid), &t.reader, "2.1").await;
        let want = if uid == "req-done" {
            Value::Null
        } else {
            json!("Error")
        };
        assert_eq!(one["instanceAction"]["message"], want, "{uid}");
    }
    let list = ok(&app, &list_path("/v2.1"), &t.reader, "2.1").await;
    assert_eq!(
        request_ids(&list),
        ["req-done", "req-cancelled", "req-failed", RESIZE],
        "newest first"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nova_version_documents_without_a_token() {
    let app = spawn_app().await;
    for (path, name) in [
        ("/v2.1", "version-v2.1"),
        ("/v2.1/", "version-v2.1"),
        ("/v2", "version-v2"),
        ("/v2/", "version-v2"),
        ("/", "versions"),
    ] {
        let (s, h, body) = nova_at(&app, path, None, Ver::None).await;
        assert_eq!(s, StatusCode::OK, "{path}: {body}");
        assert!(h["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"));
        assert_nova_fixture(&body, &app.base, name);
        // A token (even a bad one) changes nothing.
        let (s, _, again) = nova_at(&app, path, Some("not-a-token"), Ver::New("2.1")).await;
        assert_eq!((s, again), (StatusCode::OK, body));
    }
    // The advertised maximum is the negotiated maximum.
    let (_, _, doc) = nova_at(&app, "/v2.1", None, Ver::None).await;
    let max = doc["version"]["version"].as_str().unwrap().to_string();
    let t = app.token("w", P, "writer").await;
    native_action(
        &app,
        &t,
        json!({"type": "stop", "resource": server(S)}),
        &[],
    )
    .await;
    let (s, h, _) = nova_at(&app, &list_path("/v2.1"), Some(&t), Ver::New("latest")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        h["openstack-api-version"],
        format!("compute {max}").as_str()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nova_microversions_from_both_headers_are_echoed_with_vary() {
    let app = spawn_app().await;
    let t = tokens(&app).await;
    seed_samples(&app, &t.writer).await;
    let list = list_path("/v2.1");
    let show = show_path("/v2.1", STOP);
    for minor in 1..=104u32 {
        let v = format!("2.{minor}");
        for ver in [Ver::New(&v), Ver::Legacy(&v)] {
            for path in [&list, &show] {
                let (s, h, body) = nova_at(&app, path, Some(&t.reader), ver).await;
                assert_eq!(s, StatusCode::OK, "{path} @{v}: {body}");
                assert_eq!(h["openstack-api-version"], format!("compute {v}").as_str());
                assert_eq!(h["x-openstack-nova-api-version"], v.as_str());
                let vary = h["vary"].to_str().unwrap();
                assert!(
                    vary.contains("OpenStack-API-Version")
                        && vary.contains("X-OpenStack-Nova-API-Version"),
                    "{vary}"
                );
                // The version shows in the body: updated_at from 2.58.
                let first = if path == &list {
                    &body["instanceActions"][0]
                } else {
                    &body["instanceAction"]
                };
                assert_eq!(first.get("updated_at").is_some(), minor >= 58, "{v}");
            }
        }
    }
    // No header: 2.1, echoed. `latest` (any case): the maximum.
    let (_, h, body) = nova_at(&app, &show, Some(&t.reader), Ver::None).await;
    assert_eq!(h["openstack-api-version"], "compute 2.1");
    assert!(body["instanceAction"].get("events").is_none());
    for ver in [
        Ver::New("latest"),
        Ver::Legacy("latest"),
        Ver::New("LATEST"),
    ] {
        let (s, h, _) = nova_at(&app, &show, Some(&t.reader), ver).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(h["openstack-api-version"], "compute 2.104");
        assert_eq!(h["x-openstack-nova-api-version"], "2.104");
    }
    // The new header wins over the legacy one; other services' entries are skipped.
    let url = format!("{}{show}", app.base);
    let (_, h, _) = app
        .request(
            Method::GET,
            &url,
            &[
                ("X-Auth-Token", &t.reader),
                ("OpenStack-API-Version", "volume 3.0, compute 2.60"),
                ("X-OpenStack-Nova-API-Version", "2.3"),
            ],
            None,
        )
        .await;
    assert_eq!(h["openstack-api-version"], "compute 2.60");
    let (_, h, _) = app
        .request(
            Method::GET,
            &url,
            &[
                ("X-Auth-Token", &t.reader),
                ("OpenStack-API-Version", "volume 3.0"),
                ("X-OpenStack-Nova-API-Version", "2.3"),
            ],
            None,
        )
        .await;
    assert_eq!(h["openstack-api-version"], "compute 2.3");

    // Out of range → 406 computeFault; malformed → 400 badRequest (Nova's
    // InvalidGlobalAPIVersion / InvalidAPIVersionString), on both routes and both headers.
    for v in ["2.105", "2.0", "3.0", "1.1", "2.999", "99.1"] {
        for ver in [Ver::New(v), Ver::Legacy(v)] {
            for path in [&list, &show] {
                fault(&app, path, Some(&t.reader), ver, 406).await;
            }
        }
    }
    for v in [
        "abc", "2.05", "2", "2.", "02.1", "2.1.1", "", "-2.1", "compute",
    ] {
        for ver in [Ver::New(v), Ver::Legacy(v)] {
            fault(&app, &list, Some(&t.reader), ver, 400).await;
        }
    }
    let e = fault(&app, &show, Some(&t.reader), Ver::New("2.105"), 406).await;
    assert_nova_fixture(&e, &app.base, "error-406");
    let e = fault(&app, &show, Some(&t.reader), Ver::Legacy("2.05"), 400).await;
    assert_nova_fixture(&e, &app.base, "error-400-version");
}

#[tokio::test(flavor = "multi_thread")]
async fn nova_2_58_paging_changes_since_and_next_links() {
    let app = spawn_app().await;
    let t = tokens(&app).await;
    // Five actions on S, one on another server.
    let mut uids = Vec::new();
    let mut natives = Vec::new();
    for i in 1..=5 {
        let uid = format!("req-0000000{i}-0000-4000-8000-000000000000");
        natives.push(
            nova_action(
                &app,
                &t.writer,
                S,
                &uid,
                "reboot",
                "fake",
                "compute_reboot_instance",
            )
            .await,
        );
        uids.push(uid);
    }
    nova_action(
        &app,
        &t.writer,
        "other-server",
        "req-other",
        "stop",
        "fake",
        "e",
    )
    .await;
    let newest_first: Vec<String> = uids.iter().rev().cloned().collect();
    let base = list_path(&format!("/v2.1/{P}"));
    let get = |q: String, v: &'static str| {
        let app = &app;
        let path = format!("{base}{q}");
        let tok = t.reader.clone();
        async move { ok(app, &path, &tok, v).await }
    };

    let all = get(String::new(), "2.58").await;
    assert_eq!(request_ids(&all), newest_first);
    assert!(
        all.get("links").is_none(),
        "a short page has no next link: {all}"
    );
    // limit pages; a full page links to the next one, which continues after the marker.
    let p1 = get("?limit=2".into(), "2.58").await;
    assert_eq!(request_ids(&p1), newest_first[..2]);
    let next = p1["links"][0]["href"].as_str().unwrap().to_string();
    assert_eq!(p1["links"][0]["rel"], "next");
    assert_eq!(
        next,
        format!("{}{base}?limit=2&marker={}", app.base, newest_first[1])
    );
    let p2 = get(
        next.trim_start_matches(&format!("{}{base}", app.base))
            .to_string(),
        "2.58",
    )
    .await;
    assert_eq!(request_ids(&p2), newest_first[2..4]);
    let p3 = get(format!("?limit=2&marker={}", newest_first[3]), "2.58").await;
    assert_eq!(request_ids(&p3), newest_first[4..]);
    assert!(p3.get("links").is_none());
    // An exactly full last page still links (Nova does too); the next page is empty.
    let p = get(format!("?marker={}&limit=1", newest_first[3]), "2.58").await;
    assert_eq!(request_ids(&p), newest_first[4..]);
    assert_eq!(
        p["links"][0]["href"].as_str().unwrap(),
        format!("{}{base}?limit=1&marker={}", app.base, newest_first[4])
    );
    let e = get(format!("?marker={}", newest_first[4]), "2.58").await;
    assert_eq!(request_ids(&e), Vec::<String>::new());
    assert_eq!(
        request_ids(&get("?limit=0".into(), "2.58").await),
        Vec::<String>::new()
    );
    assert_eq!(
        request_ids(&get("?limit=5000".into(), "2.58").await),
        newest_first
    );
    let huge = get("?limit=99999999999999999999999".into(), "2.58").await;
    assert_eq!(request_ids(&huge), newest_first);
    // The next link keeps the other parameters (in the request's order) and replaces marker.
    let since = natives[1]["updated_at"].as_str().unwrap().to_string();
    let enc = since.replace(':', "%3A");
    let p = get(
        format!("?changes-since={enc}&marker={}&limit=1", newest_first[0]),
        "2.58",
    )
    .await;
    assert_eq!(request_ids(&p), newest_first[1..2]);
    assert_eq!(
        p["links"][0]["href"].as_str().unwrap(),
        format!(
            "{}{base}?changes-since={enc}&limit=1&marker={}",
            app.base, newest_first[1]
        )
    );

    // changes-since: updated_at >= t (inclusive), in any ISO 8601 form Nova takes.
    let p = get(format!("?changes-since={enc}"), "2.58").await;
    assert_eq!(request_ids(&p), newest_first[..4]);
    let naive = since.trim_end_matches('Z');
    let p = get(
        format!("?changes-since={}", naive.replace(':', "%3A")),
        "2.58",
    )
    .await;
    assert_eq!(request_ids(&p), newest_first[..4]);
    let p = get("?changes-since=2999-01-01T00:00:00Z".into(), "2.58").await;
    assert_eq!(request_ids(&p), Vec::<String>::new());
    // 2.66 changes-before: updated_at <= t (inclusive); together a window.
    let before = natives[3]["updated_at"]
        .as_str()
        .unwrap()
        .replace(':', "%3A");
    let p = get(format!("?changes-before={before}"), "2.66").await;
    assert_eq!(request_ids(&p), newest_first[1..]);
    let p = get(
        format!("?changes-since={enc}&changes-before={before}"),
        "2.66",
    )
    .await;
    assert_eq!(request_ids(&p), newest_first[1..4]);
    let p = get(format!("?changes-since={enc}&changes-before={enc}"), "2.66").await;
    assert_eq!(request_ids(&p), [uids[1].clone()]);

    // Bad input → 400 badRequest.
    let r = Some(t.reader.as_str());
    for (q, v) in [
        ("?marker=req-nosuch", "2.58"),
        ("?limit=-1", "2.58"),
        ("?limit=abc", "2.58"),
        ("?limit=1.5", "2.58"),
        ("?limit=", "2.58"),
        ("?changes-since=yesterday", "2.58"),
        ("?changes-since=", "2.58"),
        ("?changes-before=2020-01-01", "2.58"),
        ("?changes-before=2020-01-01", "2.65"),
        ("?changes-before=nope", "2.66"),
        (
            "?changes-since=2020-01-02&changes-before=2020-01-01",
            "2.66",
        ),
        ("?limit=1&limit=2", "2.58"),
        ("?sort_key=created_at", "2.58"),
        ("?foo=bar", "2.104"),
        ("?%ZZ=1", "2.58"),
    ] {
        fault(&app, &format!("{base}{q}"), r, Ver::New(v), 400).await;
    }
    let e = fault(
        &app,
        &format!("{base}?marker=req-nosuch"),
        r,
        Ver::New("2.58"),
        400,
    )
    .await;
    assert_nova_fixture(&e, &app.base, "error-400-marker");
    let e = fault(
        &app,
        &format!("{base}?sort_key=x"),
        r,
        Ver::New("2.58"),
        400,
    )
    .await;
    assert_nova_fixture(&e, &app.base, "error-400-unexpected");
    // Another server's action is no marker here.
    fault(
        &app,
        &format!("{base}?marker=req-other"),
        r,
        Ver::New("2.58"),
        400,
    )
    .await;
    // Before 2.58 the list takes no parameters: all of them are ignored.
    for q in [
        "?limit=1",
        "?marker=req-nosuch",
        "?foo=bar",
        "?changes-since=nope",
    ] {
        let p = get(q.into(), "2.57").await;
        assert_eq!(request_ids(&p), newest_first, "{q}");
        assert!(p.get("links").is_none());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn nova_show_query_parameters_ignored_until_2_102() {
    let app = spawn_app().await;
    let t = tokens(&app).await;
    seed_samples(&app, &t.writer).await;
    let show = show_path("/v2.1", STOP);
    for v in ["2.1", "2.58", "2.101"] {
        let one = ok(&app, &format!("{show}?foo=bar&limit=x"), &t.reader, v).await;
        assert_eq!(one["instanceAction"]["request_id"], STOP);
    }
    for v in ["2.102", "2.104"] {
        fault(
            &app,
            &format!("{show}?foo=bar"),
            Some(&t.reader),
            Ver::New(v),
            400,
        )
        .await;
        let one = ok(&app, &show, &t.reader, v).await;
        assert_eq!(one["instanceAction"]["request_id"], STOP);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn nova_faults_tenancy_and_project_mismatch() {
    let app = spawn_app().await;
    let t = tokens(&app).await;
    seed_samples(&app, &t.writer).await;
    let globex = app.token("globex-writer", "globex", "writer").await;
    // globex has its own action on the same server id, and one on a server only it uses.
    nova_action(
        &app,
        &globex,
        S,
        "req-globex-1",
        "stop",
        "g",
        "compute_stop_instance",
    )
    .await;
    nova_action(
        &app,
        &globex,
        "globex-only",
        "req-globex-2",
        "stop",
        "g",
        "e",
    )
    .await;
    let v21 = format!("/v2.1/{P}");

    // 401 without a token or with an unknown one, before anything else (even a bad version).
    for path in [
        list_path(&v21),
        show_path(&v21, STOP),
        list_path("/v2.1"),
        list_path(&format!("/v2/{P}")),
    ] {
        let e = fault(&app, &path, None, Ver::None, 401).await;
        assert_nova_fixture(&e, &app.base, "error-401");
        fault(&app, &path, Some("not-a-token"), Ver::New("2.999"), 401).await;
        fault(&app, &path, None, Ver::Legacy("abc"), 401).await;
    }
    // Project mismatch → 400 with Nova's message, under both prefixes, at any version.
    let e = fault(
        &app,
        &list_path("/v2.1/globex"),
        Some(&t.reader),
        Ver::None,
        400,
    )
    .await;
    assert_eq!(
        e["badRequest"]["message"],
        format!("Malformed request URL: URL's project_id 'globex' doesn't match Context's project_id '{P}'")
    );
    assert_nova_fixture(&e, &app.base, "error-400-project");
    for path in [
        show_path("/v2.1/globex", "req-globex-1"),
        list_path("/v2/globex"),
        show_path("/v2/globex", STOP),
    ] {
        fault(&app, &path, Some(&t.reader), Ver::New("2.84"), 400).await;
    }
    // The other tenant's action on the same server id is invisible: absent and 404.
    for prefix in ["/v2.1", v21.as_str()] {
        let list = ok(&app, &list_path(prefix), &t.reader, "2.84").await;
        assert_eq!(request_ids(&list), [STOP, CREATE]);
        let e = fault(
            &app,
            &show_path(prefix, "req-globex-1"),
            Some(&t.reader),
            Ver::None,
            404,
        )
        .await;
        assert_eq!(
            e["itemNotFound"]["message"],
            "Action req-globex-1 not found"
        );
    }
    let list = ok(&app, &list_path("/v2.1/globex"), &globex, "2.84").await;
    assert_eq!(request_ids(&list), ["req-globex-1"]);
    fault(
        &app,
        &show_path("/v2.1/globex", STOP),
        Some(&globex),
        Ver::None,
        404,
    )
    .await;
    // A server with no visible action does not exist: 404 on list and show.
    for path in [
        "/v2.1/servers/globex-only/os-instance-actions".to_string(),
        "/v2.1/servers/globex-only/os-instance-actions/req-globex-2".to_string(),
    ] {
        let e = fault(&app, &path, Some(&t.reader), Ver::None, 404).await;
        assert_eq!(
            e["itemNotFound"]["message"],
            "Instance globex-only could not be found."
        );
    }
    let missing = "00000000-0000-4000-8000-000000000000";
    let e = fault(
        &app,
        &format!("{v21}/servers/{missing}/os-instance-actions"),
        Some(&t.reader),
        Ver::None,
        404,
    )
    .await;
    assert_nova_fixture(&e, &app.base, "error-404-instance");
    let e = fault(
        &app,
        &show_path(&v21, &format!("req-{missing}")),
        Some(&t.reader),
        Ver::New("2.84"),
        404,
    )
    .await;
    assert_nova_fixture(&e, &app.base, "error-404-action");
    // A marker of another tenant is unknown (400), never a way to see it.
    fault(
        &app,
        &format!("{}?marker=req-globex-1", list_path(&v21)),
        Some(&t.reader),
        Ver::New("2.58"),
        400,
    )
    .await;
    // An action on another server is not found through this server.
    nova_action(&app, &t.writer, "second", "req-second", "stop", "fake", "e").await;
    fault(
        &app,
        &show_path(&v21, "req-second"),
        Some(&t.reader),
        Ver::None,
        404,
    )
    .await;
    let one = ok(
        &app,
        "/v2.1/servers/second/os-instance-actions/req-second",
        &t.reader,
        "2.1",
    )
    .await;
    assert_eq!(one["instanceAction"]["instance_uuid"], "second");

    // Admin: a URL project scopes to it; without one, every project's actions on the server.
    let list = ok(&app, &list_path(&v21), ADMIN, "2.84").await;
    assert_eq!(request_ids(&list), [STOP, CREATE]);
    let list = ok(&app, &list_path("/v2.1/globex"), ADMIN, "2.84").await;
    assert_eq!(request_ids(&list), ["req-globex-1"]);
    let list = ok(&app, &list_path("/v2.1"), ADMIN, "2.84").await;
    assert_eq!(request_ids(&list), ["req-globex-1", STOP, CREATE]);
    let one = ok(&app, &show_path("/v2.1", "req-globex-1"), ADMIN, "2.84").await;
    assert_eq!(one["instanceAction"]["project_id"], "globex");
    fault(
        &app,
        &show_path(&v21, "req-globex-1"),
        Some(ADMIN),
        Ver::None,
        404,
    )
    .await;

    // The project-scoped root is the version document behind the token.
    for path in [v21.clone(), format!("{v21}/")] {
        fault(&app, &path, None, Ver::None, 401).await;
        let (s, h, doc) = nova_at(&app, &path, Some(&t.reader), Ver::New("2.84")).await;
        assert_eq!(
            (s, &h["openstack-api-version"]),
            (StatusCode::OK, &"compute 2.84".parse().unwrap())
        );
        assert_nova_fixture(&doc, &app.base, "version-v2.1");
        fault(
            &app,
            &path.replace(P, "globex"),
            Some(&t.reader),
            Ver::None,
            400,
        )
        .await;
    }
    // Nova is read-only: other methods → 405 badMethod, nothing recorded.
    for method in [Method::POST, Method::PUT, Method::DELETE] {
        let (s, _, e) = app
            .request(
                method.clone(),
                &format!("{}{}", app.base, list_path(&v21)),
                &[("X-Auth-Token", &t.writer)],
                Some(json!({})),
            )
            .await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{method}: {e}");
        assert_eq!(e["badMethod"]["code"], 405, "{e}");
    }
    let (_, all) = app.get("/api/v1/actions", ADMIN).await;
    assert_eq!(all["total"], 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn nova_legacy_prefix_does_not_shadow_digitalocean() {
    let app = spawn_app().await;
    // Tenants named like DigitalOcean's static segments.
    for tenant in ["droplets", "actions", "servers"] {
        let w = app
            .token(&format!("{tenant}-writer"), tenant, "writer")
            .await;
        let uid = format!("req-{tenant}");
        nova_action(&app, &w, S, &uid, "stop", "fake", "compute_stop_instance").await;
        for prefix in [format!("/v2/{tenant}"), format!("/v2.1/{tenant}")] {
            let list = ok(&app, &list_path(&prefix), &w, "2.84").await;
            assert_eq!(request_ids(&list), vec![uid.clone()], "{prefix}");
            let one = ok(&app, &show_path(&prefix, &uid), &w, "2.84").await;
            assert_eq!(one["instanceAction"]["project_id"], tenant);
        }
        // DigitalOcean's own routes still answer in DigitalOcean's shape.
        let d = native_action(
            &app,
            &w,
            json!({"type": "snapshot", "resource": {"type": "droplet", "id": "3164450"}}),
            &[],
        )
        .await;
        for path in [
            "/v2/actions".to_string(),
            format!("/v2/actions/{}", d["id"]),
            "/v2/droplets/3164450/actions".to_string(),
            format!("/v2/droplets/3164450/actions/{}", d["id"]),
        ] {
            let (s, v) = app.get(&path, &w).await;
            assert_eq!(s, StatusCode::OK, "{path}: {v}");
            assert!(
                v.get("actions").is_some() || v.get("action").is_some(),
                "{path}: {v}"
            );
            assert!(v.get("instanceActions").is_none() && v.get("instanceAction").is_none());
        }
    }
}

/// python-novaclient (pinned in tests/clients/requirements.txt) with a keystoneauth1
/// session (`token_endpoint.Token`, which sends `X-Auth-Token`) and `endpoint_override`:
/// version discovery, list with limit/marker/changes-since/changes-before, show at 2.84 as
/// admin and as a reader, and faults as novaclient exceptions (tests/clients/nova_client.py).
#[tokio::test(flavor = "multi_thread")]
async fn novaclient_lists_and_shows_with_a_keystoneauth_session() {
    let app = spawn_app().await;
    let t = tokens(&app).await;
    let mut natives = Vec::new();
    for i in 1..=5 {
        let uid = format!("req-0000000{i}-0000-4000-8000-000000000000");
        natives.push(
            nova_action(
                &app,
                &t.writer,
                S,
                &uid,
                "reboot",
                "fake",
                "compute_reboot_instance",
            )
            .await,
        );
    }
    seed_resize(&app, &t.writer).await;
    let uid = |i: usize| natives[i]["uid"].as_str().unwrap().to_string();
    let since = natives[2]["updated_at"].as_str().unwrap().to_string();

    let args = [
        app.base.clone(),
        P.to_string(),
        S.to_string(),
        ADMIN.to_string(),
        t.reader.clone(),
        since,
    ];
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::clients::run_script("nova_client.py", &args)
    })
    .await
    .unwrap();
    let out: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));

    // novaclient 18.x supports up to 2.96; the ledger up to 2.104.
    assert_eq!(out["negotiated"], "2.96", "{out}");
    assert_eq!(out["negotiated_scoped"], "2.96", "{out}");
    assert_eq!(out["server_version"], json!(["2.1", "2.104"]));
    assert_eq!(out["versions"], json!(["v2.0", "v2.1"]));
    let newest_first = json!([RESIZE, uid(4), uid(3), uid(2), uid(1), uid(0)]);
    assert_eq!(out["all"], newest_first);
    assert_eq!(
        out["pages"],
        json!([[RESIZE, uid(4), uid(3), uid(2)], [uid(1), uid(0)]])
    );
    assert_eq!(
        out["changes_since"],
        json!([RESIZE, uid(4), uid(3), uid(2)])
    );
    assert_eq!(out["changes_before"], json!([uid(2), uid(1)]));
    // The events novaclient got are exactly what the dialect serves each role.
    let admin = ok(&app, &show_path("/v2.1", RESIZE), ADMIN, "2.84").await;
    let reader = ok(&app, &show_path("/v2.1", RESIZE), &t.reader, "2.84").await;
    assert_eq!(out["admin_events"], admin["instanceAction"]["events"]);
    assert_eq!(out["reader_events"], reader["instanceAction"]["events"]);
    assert_eq!(out["admin_events"][1]["details"], "Resize error: disk full");
    assert_eq!(out["admin_events"][1]["host"], "compute");
    assert_eq!(out["admin_events"][1]["hostId"], HOST_ID);
    assert_eq!(
        out["show_fields"],
        json!([
            "action",
            "instance_uuid",
            "message",
            "project_id",
            "request_id",
            "start_time",
            "updated_at",
            "user_id"
        ])
    );
    assert_eq!(
        (
            &out["reader_events_at_2.1"],
            &out["reader_events_at_2.50"],
            &out["reader_events_at_2.51"]
        ),
        (&json!(false), &json!(false), &json!(true))
    );
    assert_eq!(
        out["errors"],
        json!({
            "unknown_action": [404, "Action req-nosuch not found"],
            "unknown_server": [404, "Instance no-such-server could not be found."],
            "bad_marker": [400, "Marker req-nosuch could not be found."],
            "project_mismatch": [400, format!("Malformed request URL: URL's project_id 'someone-else' doesn't match Context's project_id '{P}'")],
            "bad_token": [401],
        })
    );
}
