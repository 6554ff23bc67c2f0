//! The watch route's server-side filters (`action`, `resource_type` + `resource_id`, `type`,
//! `event_type`, `status`), combined with each other and with the caller's tenant; resuming
//! a filtered stream; the `id:`-only marks past records that matched nothing; and the 400s
//! for unknown parameters and bad values. Each filtered stream is checked against the
//! unfiltered one, filtered here by the documented rule.

use crate::app::{spawn_app_with, Api, TestApp, ADMIN};
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

/// A bound against a hang, not a speed assertion: every stream read ends long before.
const HANG: Duration = Duration::from_secs(60);

async fn start() -> TestApp {
    let mut config = crate::app::config();
    // Marks (and keep-alives) go out after this much silence: short, so a filtered
    // stream reaches the end of the log soon.
    config.limits.watch_keepalive_ms = 50;
    spawn_app_with(config).await
}

/// One frame of a stream: its `id:` and its data (`None` for a mark).
type Frame = (u64, Option<Value>);

/// Opens `watch?{query}` as `token` (with `Last-Event-ID` when given) and reads frames until
/// one has an id at or past `until`. Returns the events (position, data) before that point
/// and whether any mark (an `id:`-only frame) came.
async fn collect(
    api: &Api,
    token: &str,
    query: &str,
    last_event_id: Option<u64>,
    until: u64,
) -> (Vec<(u64, Value)>, bool) {
    let mut req = api
        .client
        .get(format!("{}/api/v1/watch?{query}", api.base))
        .bearer_auth(token);
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id.to_string());
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "watch?{query}");
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    let (mut events, mut marked) = (Vec::new(), false);
    loop {
        let chunk = tokio::time::timeout(HANG, stream.next())
            .await
            .unwrap_or_else(|_| panic!("watch?{query}: no frame reached position {until}"))
            .expect("the stream stays open")
            .unwrap();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let Some(frame) = parse_frame(&block) else {
                continue; // a keep-alive comment
            };
            match frame {
                (id, Some(data)) => {
                    assert_eq!(data["position"], id);
                    events.push((id, data));
                }
                (_, None) => marked = true,
            }
            if frame_id(&block) >= until {
                return (events, marked);
            }
        }
    }
}

fn frame_id(block: &str) -> u64 {
    parse_frame(block).map_or(0, |(id, _)| id)
}

fn parse_frame(block: &str) -> Option<Frame> {
    let mut id = None;
    let mut data = None;
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("id:") {
            id = Some(v.trim().parse::<u64>().expect("ids are positions"));
        }
        if let Some(v) = line.strip_prefix("data:") {
            data = Some(serde_json::from_str(v.trim()).expect("data is JSON"));
        }
    }
    Some((id?, data))
}

async fn ok(api: &Api, token: &str, path: &str, body: Value) -> Value {
    let (s, v) = api.post(path, token, body).await;
    assert!(s.is_success(), "{path}: {s} {v}");
    v
}

async fn create(api: &Api, token: &str, action_type: &str, resource_id: &str) -> u64 {
    let v = ok(
        api,
        token,
        "/api/v1/actions",
        json!({"type": action_type, "resource": {"type": "droplet", "id": resource_id}}),
    )
    .await;
    v["id"].as_u64().unwrap()
}

async fn event(api: &Api, token: &str, id: u64, body: Value) {
    ok(api, token, &format!("/api/v1/actions/{id}/events"), body).await;
}

/// The documented status after each event of `all` (the unfiltered stream, in order).
fn statuses_after(all: &[(u64, Value)]) -> Vec<String> {
    let mut now: std::collections::HashMap<u64, String> = Default::default();
    all.iter()
        .map(|(_, d)| {
            let e = &d["event"];
            let id = e["action"].as_u64().unwrap();
            let s = match e["type"].as_str().unwrap() {
                "created" => e["status"].as_str().unwrap().to_string(),
                "started" | "progress" | "event_started" | "event_finished" => "running".into(),
                "heartbeat" | "cancel_requested" => now[&id].clone(),
                terminal => terminal.to_string(),
            };
            now.insert(id, s.clone());
            s
        })
        .collect()
}

/// A log of two tenants' actions on the same resource names.
async fn history(app: &TestApp, acme: &str, globex: &str) {
    let a1 = create(app, acme, "snapshot", "d1").await;
    let a2 = create(app, acme, "reboot", "d2").await;
    let g1 = create(app, globex, "snapshot", "d1").await;
    event(app, acme, a1, json!({"type": "started"})).await;
    event(app, acme, a1, json!({"type": "heartbeat"})).await;
    event(app, globex, g1, json!({"type": "started"})).await;
    event(app, acme, a1, json!({"type": "progress", "progress": 50})).await;
    event(app, acme, a2, json!({"type": "heartbeat"})).await; // still queued
    event(app, acme, a2, json!({"type": "cancel_requested"})).await;
    event(app, globex, g1, json!({"type": "completed"})).await;
    event(app, acme, a1, json!({"type": "completed"})).await;
    event(app, acme, a2, json!({"type": "cancelled"})).await;
    let a3 = create(app, acme, "snapshot", "d1").await;
    event(
        app,
        acme,
        a3,
        json!({"type": "failed", "error": {"code": "x", "message": "y"}}),
    )
    .await;
    // The last record is another tenant's and matches no acme filter: acme's streams reach
    // it only through a mark.
    create(app, globex, "reboot", "d9").await;
}

/// The position of the last record of the log.
async fn end_of_log(api: &Api) -> u64 {
    let (s, v) = api.get("/api/v1/log?after=0&limit=1000", ADMIN).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["records"].as_array().unwrap().last().unwrap()["position"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_filter_delivers_exactly_the_matching_events() {
    let app = start().await;
    let acme = app.token("acme-w", "acme", "writer").await;
    let globex = app.token("globex-w", "globex", "writer").await;
    history(&app, &acme, &globex).await;
    // The admin's unfiltered stream from the start: every event; its last position is the
    // end of the log.
    let end = end_of_log(&app).await;
    let (all, _) = collect(&app, ADMIN, "after=0", None, end).await;
    assert_eq!(all.last().unwrap().0, end);
    let status = statuses_after(&all);
    let a1 = all[0].1["action"]["id"].as_u64().unwrap();

    type Pred = Box<dyn Fn(&Value, &str) -> bool>;
    let tenant = |t: &'static str| move |d: &Value| d["action"]["tenant"] == t;
    let by_action = format!("action={a1}");
    let cases: Vec<(&str, &str, Pred)> = vec![
        (
            "action",
            &by_action,
            Box::new(move |d, _| d["action"]["id"] == a1),
        ),
        (
            "resource",
            "resource_type=droplet&resource_id=d1",
            Box::new(move |d, _| tenant("acme")(d) && d["action"]["resource"]["id"] == "d1"),
        ),
        (
            "action type",
            "type=reboot",
            Box::new(move |d, _| tenant("acme")(d) && d["action"]["type"] == "reboot"),
        ),
        (
            "event type",
            "event_type=heartbeat,completed",
            Box::new(move |d, _| {
                tenant("acme")(d)
                    && matches!(d["event"]["type"].as_str(), Some("heartbeat" | "completed"))
            }),
        ),
        (
            "status",
            "status=queued&status=cancelled",
            Box::new(move |d, s| tenant("acme")(d) && matches!(s, "queued" | "cancelled")),
        ),
        (
            "status running (heartbeats keep it)",
            "status=running",
            Box::new(move |d, s| tenant("acme")(d) && s == "running"),
        ),
        (
            "combined (AND)",
            "resource_type=droplet&resource_id=d1&event_type=completed,failed&status=failed",
            Box::new(move |d, s| {
                tenant("acme")(d) && d["action"]["resource"]["id"] == "d1" && s == "failed"
            }),
        ),
    ];
    for (name, query, pred) in cases {
        let want: Vec<(u64, Value)> = all
            .iter()
            .zip(&status)
            .filter(|((_, d), s)| pred(d, s))
            .map(|(e, _)| e.clone())
            .collect();
        assert!(
            !want.is_empty() && want.len() < all.len(),
            "{name}: the log must hold events that match and events that do not"
        );
        let (got, marked) = collect(&app, &acme, &format!("after=0&{query}"), None, end).await;
        assert_eq!(
            got.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            want.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            "{name}: {query}"
        );
        assert_eq!(got, want, "{name}: the same frames as unfiltered");
        // The last record matched nothing of acme's: a mark took the stream there.
        assert!(marked, "{name}: no mark past the unmatched tail");

        // Resume after the first match: the rest, nothing twice.
        let (rest, _) = collect(&app, &acme, query, Some(want[0].0), end).await;
        assert_eq!(rest, want[1..], "{name}: resumed");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn filters_never_reach_past_the_tenant() {
    let app = start().await;
    let acme = app.token("acme-w", "acme", "writer").await;
    let globex = app.token("globex-w", "globex", "writer").await;
    let a = create(&app, &acme, "snapshot", "d1").await;
    event(&app, &acme, a, json!({"type": "started"})).await;
    let g = create(&app, &globex, "snapshot", "d1").await;
    event(&app, &globex, g, json!({"type": "started"})).await;
    let end = end_of_log(&app).await;
    // The same resource and event type in both tenants: globex sees only its own.
    for (query, n) in [
        (
            "after=0&resource_type=droplet&resource_id=d1&event_type=started",
            1,
        ),
        ("after=0&status=running", 1),
        ("after=0&type=snapshot", 2),
    ] {
        let (got, _) = collect(&app, &globex, query, None, end).await;
        assert_eq!(got.len(), n, "{query}: {got:?}");
        assert!(
            got.iter().all(|(_, d)| d["action"]["tenant"] == "globex"),
            "{query}: {got:?}"
        );
    }
    // Another tenant's action by id or uid: not found, as everywhere.
    let (s, body) = app.get(&format!("/api/v1/watch?action={a}"), &globex).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    let (s, _) = app
        .get(&format!("/api/v1/watch?action=al-{a}"), &globex)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // A tenant may not name another tenant.
    let (s, _) = app.get("/api/v1/watch?tenant=acme", &globex).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // By uid, one's own: the same stream as by id.
    let (by_uid, _) = collect(&app, &acme, &format!("after=0&action=al-{a}"), None, end).await;
    let (by_id, _) = collect(&app, &acme, &format!("after=0&action={a}"), None, end).await;
    assert_eq!(by_uid.len(), 2);
    assert_eq!(by_uid, by_id);
}

/// `watch?{query}` as the admin: the status, and the body unless it is a stream (which
/// would never end).
async fn refused(app: &TestApp, query: &str) -> (StatusCode, Value) {
    let resp = app
        .client
        .get(format!("{}/api/v1/watch?{query}", app.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    if status == StatusCode::OK {
        return (status, Value::Null);
    }
    (status, resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_parameters_and_bad_values_are_400s_that_name_them() {
    let app = start().await;
    let cases = [
        ("bogus=1", "bogus"),
        ("limit=10", "limit"),
        ("since=2024-01-01T00:00:00Z", "since"),
        ("cursor=abc", "cursor"),
        ("status=done", "status"),
        ("event_type=exploded", "event_type"),
        ("action=", "action"),
        ("action=1&action=2", "action"),
        ("resource_id=d1", "resource_id"),
        ("id=x", "id"),
        ("kind=job", "kind"),
        ("after=-1", "after"),
        ("min_position", "min_position"),
    ];
    for (query, field) in cases {
        let (s, v) = refused(&app, query).await;
        let v = &v["error"];
        assert_eq!(s, StatusCode::BAD_REQUEST, "{query}: {v}");
        assert_eq!(v["field"], field, "{query}: {v}");
        assert!(
            v["message"].as_str().unwrap().contains(field),
            "{query}: {v}"
        );
    }
    let (_, v) = refused(&app, "bogus=1").await;
    let v = &v["error"];
    let accepted: Vec<&str> = v["accepted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    for p in [
        "after",
        "action",
        "resource_type",
        "event_type",
        "status",
        "min_position",
    ] {
        assert!(accepted.contains(&p), "{v}");
        assert!(v["message"].as_str().unwrap().contains(p), "{v}");
    }
    let (s, v) = app.get("/api/v1/watch?action=999", ADMIN).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn min_position_is_still_accepted_on_watch() {
    let app = start().await;
    create(&app, ADMIN, "snapshot", "d1").await;
    let at = end_of_log(&app).await;
    let (got, _) = collect(
        &app,
        ADMIN,
        &format!("after=0&min_position={at}&event_type=created"),
        None,
        at,
    )
    .await;
    assert_eq!(got.len(), 1);
    // And in its header form.
    let resp = app
        .client
        .get(format!("{}/api/v1/watch?after=0", app.base))
        .bearer_auth(ADMIN)
        .header("x-ledger-min-position", at.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

/// `actions watch --event-type … --status …` passes the filters to the server.
#[test]
fn the_remote_cli_passes_the_filters() {
    use crate::binserver::{self, Options};
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt
        .block_on(binserver::start(
            &dir.path().join("data"),
            &dir.path().join("server.out"),
            &Options::default(),
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    let (a, b) = rt.block_on(async {
        let a = create(&server, ADMIN, "snapshot", "d1").await;
        let b = create(&server, ADMIN, "snapshot", "d2").await;
        event(&server, ADMIN, a, json!({"type": "started"})).await;
        event(&server, ADMIN, b, json!({"type": "started"})).await;
        event(&server, ADMIN, b, json!({"type": "completed"})).await;
        (a, b)
    });
    let watch = |args: &[&str]| -> Vec<Value> {
        let mut cmd = std::process::Command::new(binserver::bin());
        for (k, _) in std::env::vars() {
            if k.starts_with("ACTION_LEDGER_") {
                cmd.env_remove(k);
            }
        }
        let out = cmd
            .env("ACTION_LEDGER_SERVER", &server.base)
            .env("ACTION_LEDGER_TOKEN", ADMIN)
            .args(["actions", "watch", "--after", "0", "--count", "1"])
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let got = watch(&["--event-type", "started"]);
    assert_eq!(got[0]["event"]["type"], "started");
    assert_eq!(got[0]["action"]["id"], a);
    let got = watch(&["--status", "completed"]);
    assert_eq!(got[0]["event"]["type"], "completed");
    assert_eq!(got[0]["action"]["id"], b);
    let got = watch(&["--resource-type", "droplet", "--resource-id", "d2"]);
    assert_eq!(got[0]["event"]["type"], "created");
    assert_eq!(got[0]["action"]["id"], b);
}
