//! The DigitalOcean v2 dialect on a real socket: exact JSON against data/dialects/digitalocean/
//! (built from DO's snapshot example and action object), page/per_page with
//! absolute page links and meta.total, the exclusive POST and its 422, status mapping,
//! region, errors, Bearer auth, roles and tenancy; and the official `pydo` client against it.

use crate::app::{spawn_app, TestApp, ADMIN};
use crate::clients::run_script;
use crate::dialect_ecs::{assert_fixture, ids, native_action, one_per_status};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const BUSY: &str = "Droplet already has a pending event.";

async fn get(app: &TestApp, path: &str, token: &str) -> (StatusCode, HeaderMap, Value) {
    app.request_as(Method::GET, path, Some(token), None).await
}

async fn post(
    app: &TestApp,
    droplet: &str,
    token: &str,
    body: Value,
) -> (StatusCode, HeaderMap, Value) {
    let path = format!("/v2/droplets/{droplet}/actions");
    app.request_as(Method::POST, &path, Some(token), Some(body))
        .await
}

fn link_names(list: &Value) -> Vec<&str> {
    let mut names: Vec<&str> = list["links"]["pages"]
        .as_object()
        .unwrap_or_else(|| panic!("no links.pages: {list}"))
        .keys()
        .map(String::as_str)
        .collect();
    names.sort();
    names
}

fn assert_do_error(status: StatusCode, body: &Value, expected: StatusCode, id: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["id"], id, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(
        body.as_object().unwrap().len(),
        2,
        "only id and message: {body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn do_post_get_and_droplet_list_match_the_documented_examples() {
    let app = spawn_app().await;
    let w = app.token("do-writer", "acme", "writer").await;

    // The droplet as created in nyc3 (a finished action, id 1): later actions on it are in
    // its region.
    native_action(
        &app,
        &w,
        json!({"type": "create", "resource": {"type": "droplet", "id": "3164450"}, "region": "nyc3", "status": "running"}),
        &[json!({"type": "completed"})],
    )
    .await;

    // DO's example: POST {"type":"snapshot","name":"Nifty New Snapshot"} on droplet 3164450 →
    // 201 with an in-progress action (other body fields are accepted).
    let (s, h, posted) = post(
        &app,
        "3164450",
        &w,
        json!({"type": "snapshot", "name": "Nifty New Snapshot"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{posted}");
    assert!(h["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(h["retry-after"], "1");
    assert_fixture(&posted, &app.base, "digitalocean", "post");

    // "Actions cannot be queued": a second POST while it is unfinished → 422.
    let (s, _, busy) = post(&app, "3164450", &w, json!({"type": "power_off"})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{busy}");
    assert_fixture(&busy, &app.base, "digitalocean", "error-422-busy");
    // Exclusive per droplet: another droplet is free (and has no known region).
    let (s, _, other) = post(&app, "3164451", &w, json!({"type": "reboot"})).await;
    assert_eq!(
        (s, &other["action"]["id"]),
        (StatusCode::CREATED, &json!(3))
    );
    assert_eq!(
        (&other["action"]["region"], &other["action"]["region_slug"]),
        (&Value::Null, &Value::Null)
    );

    // Polling the action: the same object, Retry-After while unfinished.
    let (s, h, one) = get(&app, "/v2/actions/2", &w).await;
    assert_eq!((s, &one), (StatusCode::OK, &posted));
    assert_eq!(h["retry-after"], "1");

    // Once the snapshot is done, it reads completed with both timestamps, no Retry-After.
    let (s, _) = app
        .post("/api/v1/actions/2/events", &w, json!({"type": "completed"}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, h, done) = get(&app, "/v2/actions/2", &w).await;
    assert_eq!(s, StatusCode::OK);
    assert!(h.get("retry-after").is_none());
    assert_fixture(&done, &app.base, "digitalocean", "get-completed");
    let (s, _, via_droplet) = get(&app, "/v2/droplets/3164450/actions/2", &w).await;
    assert_eq!((s, &via_droplet), (StatusCode::OK, &done));
    // An action of another droplet is not found under this one.
    let (s, _, e) = get(&app, "/v2/droplets/3164451/actions/2", &w).await;
    assert_do_error(s, &e, StatusCode::NOT_FOUND, "not_found");

    // The droplet is free again.
    let (s, _, again) = post(&app, "3164450", &w, json!({"type": "power_on"})).await;
    assert_eq!(
        (s, &again["action"]["id"]),
        (StatusCode::CREATED, &json!(4))
    );
    let (s, h, unfinished) = get(&app, "/v2/droplets/3164450/actions/4", &w).await;
    assert_eq!((s, &unfinished), (StatusCode::OK, &again));
    assert_eq!(h["retry-after"], "1", "unfinished under the droplet too");
    let (s, _, list) = get(&app, "/v2/droplets/3164450/actions", &w).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert_fixture(&list, &app.base, "digitalocean", "droplet-list");
    let (_, _, all) = get(&app, "/v2/actions", &w).await;
    assert_eq!(
        (ids(&all), &all["meta"]["total"]),
        (vec![4, 3, 2, 1], &json!(4))
    );

    // The record behind it: a running, exclusive task on the droplet, by the token's name.
    let (_, native) = app.get("/api/v1/actions/4", &w).await;
    assert_eq!(
        native["resource"],
        json!({"type": "droplet", "id": "3164450"})
    );
    assert_eq!(
        (
            &native["status"],
            &native["user"],
            &native["kind"],
            &native["region"]
        ),
        (
            &json!("running"),
            &json!("do-writer"),
            &json!("task"),
            &json!("nyc3")
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn do_pages_have_absolute_links_and_meta_total() {
    let app = spawn_app().await;
    let w = app.token("w", "acme", "writer").await;
    // 1..=5: droplets 3164450 (1, 2, 4) and 3164451 (3, 5); some with a region.
    for (i, (droplet, region)) in [
        ("3164450", Some("nyc3")),
        ("3164450", None),
        ("3164451", Some("ams3")),
        ("3164450", Some("nyc3")),
        ("3164451", None),
    ]
    .into_iter()
    .enumerate()
    {
        let mut body = json!({"type": format!("step{}", i + 1), "resource": {"type": "droplet", "id": droplet}, "status": "running"});
        if let Some(r) = region {
            body["region"] = json!(r);
        }
        native_action(&app, &w, body, &[json!({"type": "completed"})]).await;
    }
    async fn page_of(app: &TestApp, w: &str, q: &str) -> Value {
        let (s, _, v) = get(app, q, w).await;
        assert_eq!(s, StatusCode::OK, "{q}: {v}");
        v
    }
    let page = |q: &'static str| page_of(&app, &w, q);

    let p2 = page("/v2/actions?page=2&per_page=2").await;
    assert_fixture(&p2, &app.base, "digitalocean", "list-page2");
    let base = &app.base;
    assert_eq!(
        p2["links"]["pages"]["next"],
        format!("{base}/v2/actions?page=3&per_page=2")
    );

    // Only the meaningful links: none on a single page, no first/prev on page 1, no
    // next/last on the last page.
    let all = page("/v2/actions").await;
    assert_eq!(
        (ids(&all), &all["meta"]["total"]),
        (vec![5, 4, 3, 2, 1], &json!(5))
    );
    assert_eq!(all["links"], json!({"pages": {}}));
    let p1 = page("/v2/actions?per_page=2").await;
    assert_eq!(
        (ids(&p1), link_names(&p1)),
        (vec![5, 4], vec!["last", "next"])
    );
    assert_eq!(
        p1["links"]["pages"]["last"],
        format!("{base}/v2/actions?page=3&per_page=2")
    );
    let p3 = page("/v2/actions?page=3&per_page=2").await;
    assert_eq!(
        (ids(&p3), link_names(&p3)),
        (vec![1], vec!["first", "prev"])
    );
    assert_eq!(
        p3["links"]["pages"]["first"],
        format!("{base}/v2/actions?page=1&per_page=2")
    );
    let beyond = page("/v2/actions?page=9&per_page=2").await;
    assert_eq!(
        (ids(&beyond), link_names(&beyond), &beyond["meta"]["total"]),
        (vec![], vec!["first", "prev"], &json!(5))
    );
    assert_eq!(
        beyond["links"]["pages"]["prev"],
        format!("{base}/v2/actions?page=3&per_page=2")
    );
    // Following every next link walks the whole list exactly once.
    let mut seen = Vec::new();
    let mut url = format!("{base}/v2/actions?per_page=2");
    loop {
        let (s, _, v) = app
            .request(
                Method::GET,
                &url,
                &[("Authorization", &format!("Bearer {w}"))],
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{url}: {v}");
        seen.extend(ids(&v));
        match v["links"]["pages"]["next"].as_str() {
            Some(next) => url = next.to_string(),
            None => break,
        }
    }
    assert_eq!(seen, vec![5, 4, 3, 2, 1]);
    // Without per_page in the request the links do not invent one.
    let dflt = page("/v2/actions?page=2").await;
    assert_eq!(
        (ids(&dflt), &dflt["links"]["pages"]),
        (
            vec![],
            &json!({"first": format!("{base}/v2/actions?page=1"), "prev": format!("{base}/v2/actions?page=1")})
        )
    );
    // Droplet lists page the same way, with their own path in the links.
    let d2 = page("/v2/droplets/3164450/actions?page=2&per_page=1").await;
    assert_eq!((ids(&d2), &d2["meta"]["total"]), (vec![2], &json!(3)));
    assert_eq!(
        d2["links"]["pages"]["next"],
        format!("{base}/v2/droplets/3164450/actions?page=3&per_page=1")
    );
    let dp = page("/v2/droplets/3164451/actions?page=1").await;
    assert_eq!((ids(&dp), link_names(&dp)), (vec![5, 3], vec![]));
    // Unknown parameters are ignored.
    let u = page("/v2/actions?per_page=2&sort=asc&foo=bar&resource_type=x&page=1").await;
    assert_eq!(u, p1);
    // A proxy's X-Forwarded-Proto makes the links https.
    let (_, _, tls) = app
        .request(
            Method::GET,
            &format!("{base}/v2/actions?per_page=2"),
            &[
                ("Authorization", &format!("Bearer {w}")),
                ("X-Forwarded-Proto", "https"),
                ("Host", "api.example.com"),
            ],
            None,
        )
        .await;
    assert_eq!(
        tls["links"]["pages"]["next"],
        "https://api.example.com/v2/actions?page=2&per_page=2"
    );

    // Bad paging → 400 in DO's error shape naming the parameter.
    for q in [
        "page=0",
        "page=-1",
        "page=x",
        "page=",
        "per_page=0",
        "per_page=201",
        "per_page=abc",
        "per_page=2.5",
        "page=99999999999999999999999",
    ] {
        let (s, _, e) = get(&app, &format!("/v2/actions?{q}"), &w).await;
        assert_do_error(s, &e, StatusCode::BAD_REQUEST, "bad_request");
        let name = q.split('=').next().unwrap();
        assert!(e["message"].as_str().unwrap().contains(name), "{q}: {e}");
        let (s, _, _) = get(&app, &format!("/v2/droplets/3164450/actions?{q}"), &w).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{q}");
    }
    let (_, _, e) = get(&app, "/v2/actions?per_page=201", &w).await;
    assert_fixture(&e, &app.base, "digitalocean", "error-400-per_page");
    // The largest page and a page whose offset overflows are fine or a clear 400.
    let max = page("/v2/actions?per_page=200").await;
    assert_eq!(ids(&max).len(), 5);
    let (s, _, e) = get(
        &app,
        "/v2/actions?page=18446744073709551615&per_page=200",
        &w,
    )
    .await;
    assert_do_error(s, &e, StatusCode::BAD_REQUEST, "bad_request");
}

#[tokio::test(flavor = "multi_thread")]
async fn do_status_mapping_region_and_resource_id() {
    let app = spawn_app().await;
    let w = app.token("w", "acme", "writer").await;
    let all = one_per_status(
        &app,
        &w,
        json!({"type": "droplet", "id": "3164450"}),
        json!({"region": "nyc3"}),
    )
    .await;
    let expected = [
        "in-progress",
        "in-progress",
        "completed",
        "errored",
        "errored",
    ];
    for (a, status) in all.iter().zip(expected) {
        let (s, h, v) = get(&app, &format!("/v2/actions/{}", a["id"]), &w).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let d = &v["action"];
        assert_eq!(d["status"], status, "{d}");
        assert_eq!(d["resource_id"], 3164450, "an integer: {d}");
        assert_eq!(d["resource_type"], "droplet");
        assert_eq!(
            d["region"],
            json!({"name": "New York 3", "slug": "nyc3", "features": [], "available": true, "sizes": []})
        );
        assert_eq!(d["region_slug"], "nyc3");
        assert!(d["started_at"].is_string(), "never null: {d}");
        assert_eq!(d["completed_at"].is_null(), status == "in-progress", "{d}");
        assert_eq!(h.get("retry-after").is_some(), status == "in-progress");
        let keys: Vec<&String> = d.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 9, "{d}");
    }
    // No region → null (never a string); a non-integer resource id → null; an unknown slug
    // names itself.
    let bare = native_action(
        &app,
        &w,
        json!({"type": "power_on", "resource": {"type": "server", "id": "ec200285"}}),
        &[],
    )
    .await;
    let (_, _, v) = get(&app, &format!("/v2/actions/{}", bare["id"]), &w).await;
    let d = &v["action"];
    assert_eq!(
        (
            &d["region"],
            &d["region_slug"],
            &d["resource_id"],
            &d["resource_type"]
        ),
        (&Value::Null, &Value::Null, &Value::Null, &json!("server"))
    );
    let odd = native_action(
        &app,
        &w,
        json!({"type": "power_on", "resource": {"type": "droplet", "id": "7"}, "region": "xyz9"}),
        &[],
    )
    .await;
    let (_, _, v) = get(&app, &format!("/v2/actions/{}", odd["id"]), &w).await;
    assert_eq!(v["action"]["region"]["name"], "xyz9");
    assert_eq!(v["action"]["resource_id"], 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn do_auth_roles_tenancy_and_bad_input() {
    let app = spawn_app().await;
    let w = app.token("w", "acme", "writer").await;
    let r = app.token("r", "acme", "reader").await;
    let g = app.token("g", "globex", "writer").await;
    let (s, _, mine) = post(&app, "3164450", &w, json!({"type": "shutdown"})).await;
    assert_eq!(s, StatusCode::CREATED, "{mine}");

    // No or an unknown token → 401 on every route.
    for (method, path) in [
        (Method::GET, "/v2/actions"),
        (Method::GET, "/v2/actions/1"),
        (Method::GET, "/v2/droplets/3164450/actions"),
        (Method::GET, "/v2/droplets/3164450/actions/1"),
        (Method::POST, "/v2/droplets/3164450/actions"),
    ] {
        let body = Some(json!({"type": "reboot"}));
        let (s, _, e) = app
            .request_as(method.clone(), path, None, body.clone())
            .await;
        assert_fixture(&e, &app.base, "digitalocean", "error-401");
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}");
        let (s, _, e) = app
            .request_as(method, path, Some("not-a-token"), body)
            .await;
        assert_do_error(s, &e, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    // A reader reads but may not POST.
    let (s, _, e) = post(&app, "3164452", &r, json!({"type": "reboot"})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_fixture(&e, &app.base, "digitalocean", "error-403");
    let (s, _, v) = get(&app, "/v2/actions/1", &r).await;
    assert_eq!((s, &v), (StatusCode::OK, &mine));

    // Another tenant: the action does not exist for it, and its own droplet 3164450 (a
    // different droplet in another account) is not busy.
    let (s, _, e) = get(&app, "/v2/actions/1", &g).await;
    assert_do_error(s, &e, StatusCode::NOT_FOUND, "not_found");
    let (s, _, e) = get(&app, "/v2/droplets/3164450/actions/1", &g).await;
    assert_do_error(s, &e, StatusCode::NOT_FOUND, "not_found");
    let (s, _, theirs) = post(&app, "3164450", &g, json!({"type": "shutdown"})).await;
    assert_eq!(
        (s, &theirs["action"]["id"]),
        (StatusCode::CREATED, &json!(2))
    );
    let (_, _, gl) = get(&app, "/v2/actions", &g).await;
    assert_eq!((ids(&gl), &gl["meta"]["total"]), (vec![2], &json!(1)));
    let (_, _, gd) = get(&app, "/v2/droplets/3164450/actions", &g).await;
    assert_eq!(ids(&gd), vec![2]);
    let (s, _, _) = post(&app, "3164450", &w, json!({"type": "reboot"})).await;
    assert_eq!(
        s,
        StatusCode::UNPROCESSABLE_ENTITY,
        "acme's droplet is still busy"
    );
    // Admin sees both tenants.
    let (_, _, al) = get(&app, "/v2/actions", ADMIN).await;
    assert_eq!(ids(&al), vec![2, 1]);

    // Ids that are not positive integers name nothing.
    for path in [
        "/v2/actions/abc",
        "/v2/actions/0",
        "/v2/actions/-1",
        "/v2/actions/1.0",
        "/v2/actions/99999999999999999999999",
        "/v2/actions/999",
        "/v2/droplets/abc/actions",
        "/v2/droplets/0/actions/1",
        "/v2/droplets/3164450/actions/abc",
    ] {
        let (s, _, e) = get(&app, path, &w).await;
        assert_do_error(s, &e, StatusCode::NOT_FOUND, "not_found");
        if path == "/v2/actions/999" {
            assert_fixture(&e, &app.base, "digitalocean", "error-404");
        }
    }
    let (s, _, e) = post(&app, "droplet-x", &w, json!({"type": "reboot"})).await;
    assert_do_error(s, &e, StatusCode::NOT_FOUND, "not_found");
    // Bad bodies → 400 in DO's shape; nothing recorded.
    for body in [json!({}), json!({"type": 5}), json!([1]), json!("reboot")] {
        let (s, _, e) = post(&app, "3164460", &w, body.clone()).await;
        assert_do_error(s, &e, StatusCode::BAD_REQUEST, "bad_request");
    }
    let (s, _, e) = app
        .request(
            Method::POST,
            &format!("{}/v2/droplets/3164460/actions", app.base),
            &[
                ("Authorization", &format!("Bearer {w}")),
                ("Content-Type", "application/json"),
            ],
            None,
        )
        .await;
    assert_do_error(s, &e, StatusCode::BAD_REQUEST, "bad_request");
    let (_, _, dl) = get(&app, "/v2/droplets/3164460/actions", &w).await;
    assert_eq!(dl["meta"]["total"], 0);

    // Idempotency-Key: the repeat is the first answer (not a 422), nothing new recorded.
    let url = format!("{}/v2/droplets/3164470/actions", app.base);
    let bearer = format!("Bearer {w}");
    let key = [
        ("Authorization", bearer.as_str()),
        ("Idempotency-Key", "do-1"),
    ];
    let (s1, _, first) = app
        .request(Method::POST, &url, &key, Some(json!({"type": "reboot"})))
        .await;
    let (s2, _, repeat) = app
        .request(Method::POST, &url, &key, Some(json!({"type": "reboot"})))
        .await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::CREATED));
    assert_eq!(first, repeat);
    let (s, _, e) = app
        .request(Method::POST, &url, &key, Some(json!({"type": "shutdown"})))
        .await;
    assert_do_error(
        s,
        &e,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unprocessable_entity",
    );
    let (_, _, dl) = get(&app, "/v2/droplets/3164470/actions", &w).await;
    assert_eq!(dl["meta"]["total"], 1);
}

/// The official DigitalOcean Python client (`pydo`, tests/clients/do_client.py) against the
/// ledger: `Client(token=..., endpoint=BASE)` where BASE has no `/v2` (pydo's operations
/// add `/v2/...` themselves).
#[tokio::test(flavor = "multi_thread")]
async fn pydo_lists_gets_posts_and_gets_the_422_on_a_busy_droplet() {
    let app = spawn_app().await;
    let w = app.token("pydo", "acme", "writer").await;
    // Three finished actions on droplet 3164450 in nyc3 (ids 1..=3).
    for t in ["create", "snapshot", "power_off"] {
        native_action(
            &app,
            &w,
            json!({"type": t, "resource": {"type": "droplet", "id": "3164450"}, "region": "nyc3", "status": "running"}),
            &[json!({"type": "completed"})],
        )
        .await;
    }
    let base = app.base.clone();
    let token = w.clone();
    let out = tokio::task::spawn_blocking(move || {
        run_script("do_client.py", &[&base, &token, "3164450"])
    })
    .await
    .unwrap();
    let out: Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("do_client.py printed no JSON ({e}):\n{out}"));
    let base = &app.base;

    // actions.list(per_page=2): two newest, meta.total and absolute links.
    let list = &out["list"];
    assert_eq!(ids(list), vec![3, 2], "{list}");
    assert_eq!(list["meta"]["total"], 3);
    assert_eq!(
        list["links"]["pages"],
        json!({"next": format!("{base}/v2/actions?page=2&per_page=2"),
               "last": format!("{base}/v2/actions?page=2&per_page=2")})
    );
    assert_eq!(ids(&out["list_page2"]), vec![1]);
    // actions.get
    let got = &out["get"]["action"];
    assert_eq!(
        (
            &got["id"],
            &got["status"],
            &got["type"],
            &got["resource_id"]
        ),
        (
            &json!(2),
            &json!("completed"),
            &json!("snapshot"),
            &json!(3164450)
        )
    );
    assert_eq!(got["region"]["slug"], "nyc3");
    // droplet_actions.post → 201 in-progress shutdown.
    let posted = &out["post"]["action"];
    assert_eq!(
        (
            &posted["id"],
            &posted["status"],
            &posted["type"],
            &posted["resource_type"]
        ),
        (
            &json!(4),
            &json!("in-progress"),
            &json!("shutdown"),
            &json!("droplet")
        )
    );
    assert!(posted["completed_at"].is_null());
    // The second post while the shutdown is unfinished: HttpResponseError with 422.
    let busy = &out["busy"];
    assert_eq!(busy["status_code"], 422, "{busy}");
    assert_eq!(
        busy["body"],
        json!({"id": "unprocessable_entity", "message": BUSY})
    );
    assert!(
        busy["message"].as_str().is_some_and(|m| m.contains(BUSY)),
        "pydo's error message carries DO's message: {busy}"
    );
    // droplet_actions.list and actions.get of the posted one (still in progress).
    assert_eq!(ids(&out["droplet_list"]), vec![4, 3, 2, 1]);
    assert_eq!(out["droplet_list"]["meta"]["total"], 4);
    assert_eq!(out["droplet_get"]["action"], *posted);
    assert_eq!(out["get_posted"]["action"], *posted);
    // pydo hands back DO's 404 body for an unknown action.
    assert_eq!(
        out["get_missing"],
        json!({"id": "not_found", "message": "The resource you requested could not be found."})
    );
    // The client's view matches the server's own.
    let (_, _, ours) = get(&app, "/v2/actions/4", &w).await;
    assert_eq!(ours["action"], *posted);
}
