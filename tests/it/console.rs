//! The web console over HTTP (the browser tests drive it in Chromium): sign-in and the
//! cookie, the same-site check, the security headers, escaping of user input, tenant
//! scoping on every page, filters and paging, export, `console = false`, and 404 pages.

use crate::app::{config, spawn_app, spawn_app_with, TestApp, ADMIN};
use reqwest::header::HeaderMap;
use reqwest::{redirect, Client, StatusCode};
use serde_json::{json, Value};

/// A browser-like client of one server: no automatic redirects (the tests look at them),
/// the cookie kept by hand, and the same-origin headers a browser sends with its forms.
struct Browser {
    base: String,
    client: Client,
    cookie: Option<String>,
}

struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

impl Browser {
    fn new(app: &TestApp) -> Browser {
        Browser {
            base: app.base.clone(),
            client: Client::builder()
                .redirect(redirect::Policy::none())
                .build()
                .unwrap(),
            cookie: None,
        }
    }

    async fn get(&self, path: &str) -> Page {
        let mut req = self.client.get(format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        page(req.send().await.unwrap()).await
    }

    /// A form POST; `site` is the `Sec-Fetch-Site` a browser would send.
    async fn post(&self, path: &str, form: &[(&str, &str)], site: &str) -> Page {
        let mut req = self
            .client
            .post(format!("{}{path}", self.base))
            .header("sec-fetch-site", site)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(form));
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        page(req.send().await.unwrap()).await
    }

    /// Signs in with `token`; returns the answer (303 and a cookie when it worked).
    async fn sign_in(&mut self, token: &str) -> Page {
        let p = self
            .post("/console/login", &[("token", token)], "same-origin")
            .await;
        if let Some(set) = p.headers.get("set-cookie") {
            let pair = set.to_str().unwrap().split(';').next().unwrap().to_string();
            self.cookie = Some(pair);
        }
        p
    }
}

/// A form's `application/x-www-form-urlencoded` body.
fn form_body(form: &[(&str, &str)]) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    form.iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

async fn page(resp: reqwest::Response) -> Page {
    Page {
        status: resp.status(),
        headers: resp.headers().clone(),
        body: resp.text().await.unwrap(),
    }
}

async fn create(app: &TestApp, token: &str, body: Value) -> Value {
    let (s, v) = app.post("/api/v1/actions", token, body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v
}

/// The `data-id`s of the list's rows, in order.
fn row_ids(body: &str) -> Vec<u64> {
    body.split("class=\"action-row\" data-id=\"")
        .skip(1)
        .map(|rest| rest[..rest.find('"').unwrap()].parse().unwrap())
        .collect()
}

/// The `href` of the element with `id`, unescaped.
fn href_of(body: &str, id: &str) -> Option<String> {
    let at = body.find(&format!("id=\"{id}\""))?;
    let tag_start = body[..at].rfind('<')?;
    let tag = &body[tag_start..tag_start + body[tag_start..].find('>')?];
    let h = tag.find("href=\"")? + 6;
    Some(tag[h..h + tag[h..].find('"')?].replace("&amp;", "&"))
}

#[tokio::test(flavor = "multi_thread")]
async fn signing_in_sets_a_strict_http_only_cookie_and_signing_out_clears_it() {
    let mut app = spawn_app().await;
    let mut b = Browser::new(&app);

    // Unauthenticated: the console leads to the list, the list to the sign-in form,
    // keeping where it was going.
    let p = b.get("/console").await;
    assert_eq!(
        (p.status, p.location()),
        (StatusCode::SEE_OTHER, "/console/actions")
    );
    let p = b.get("/console/actions?status=running").await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert_eq!(
        p.location(),
        "/console/login?next=%2Fconsole%2Factions%3Fstatus%3Drunning"
    );
    let p = b.get(p.location()).await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(p.body.contains("name=\"token\""), "{}", p.body);
    assert!(
        p.body
            .contains("name=\"next\" value=\"/console/actions?status=running\""),
        "{}",
        p.body
    );

    // A bad token: 401, the form again, no cookie.
    let p = b.sign_in("not-a-token").await;
    assert_eq!(p.status, StatusCode::UNAUTHORIZED);
    assert!(p.body.contains("id=\"login-form\""));
    assert!(p.headers.get("set-cookie").is_none());
    assert!(
        !p.body.contains("not-a-token"),
        "the page never repeats a token"
    );

    // A good one: a cookie with every flag, and the way back to `next`.
    let p = b
        .post(
            "/console/login",
            &[
                ("token", ADMIN),
                ("next", "/console/actions?status=running"),
            ],
            "same-origin",
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert_eq!(p.location(), "/console/actions?status=running");
    let set = p.headers["set-cookie"].to_str().unwrap().to_string();
    for flag in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/console",
        &format!(
            "Max-Age={}",
            action_ledger::limits::CONSOLE_COOKIE_MAX_AGE_S
        ),
    ] {
        assert!(set.contains(flag), "{flag} missing from {set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: no Secure flag");
    assert!(!set.contains(ADMIN), "the cookie value is encoded");
    b.cookie = Some(set.split(';').next().unwrap().to_string());

    // An absolute or protocol-relative `next` is ignored.
    for evil in [
        "https://evil.example/",
        "//evil.example/console",
        "/api/v1/actions",
    ] {
        let p = b
            .post(
                "/console/login",
                &[("token", ADMIN), ("next", evil)],
                "same-origin",
            )
            .await;
        assert_eq!(p.location(), "/console/actions", "{evil}");
    }

    let p = b.get("/console/actions").await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(p.body.contains("id=\"actions\""));

    // Signing out clears the cookie.
    let p = b.post("/console/logout", &[], "same-origin").await;
    assert_eq!(
        (p.status, p.location()),
        (StatusCode::SEE_OTHER, "/console/login")
    );
    let set = p.headers["set-cookie"].to_str().unwrap();
    assert!(
        set.starts_with("ledger_console=;") && set.contains("Max-Age=0"),
        "{set}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_tokens_cookie_stops_working_at_once() {
    let mut app = spawn_app().await;
    let reader = app.token("viewer", "acme", "reader").await;
    let mut b = Browser::new(&app);
    assert_eq!(b.sign_in(&reader).await.status, StatusCode::SEE_OTHER);
    assert_eq!(b.get("/console/actions").await.status, StatusCode::OK);

    let (s, _) = app
        .call(
            reqwest::Method::DELETE,
            "/api/v1/tokens/viewer",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let p = b.get("/console/actions").await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    assert!(p.location().starts_with("/console/login"));
    let set = p.headers["set-cookie"].to_str().unwrap();
    assert!(
        set.contains("Max-Age=0"),
        "the dead cookie is cleared: {set}"
    );
    assert_eq!(b.get("/console/watch").await.status, StatusCode::SEE_OTHER);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cross_site_posts_are_refused() {
    let mut app = spawn_app().await;
    let a = create(
        &app,
        ADMIN,
        json!({"type": "t", "resource": {"type": "droplet", "id": "1"}}),
    )
    .await;
    let id = a["id"].as_u64().unwrap();
    let mut b = Browser::new(&app);
    b.sign_in(ADMIN).await;
    let cancel = format!("/console/actions/{id}/cancel");
    for site in ["cross-site", "same-site", "none"] {
        let p = b.post(&cancel, &[], site).await;
        assert_eq!(p.status, StatusCode::FORBIDDEN, "{site}");
        let p = b.post("/console/login", &[("token", ADMIN)], site).await;
        assert_eq!(p.status, StatusCode::FORBIDDEN, "login {site}");
        assert!(p.headers.get("set-cookie").is_none());
    }
    // Without Sec-Fetch-Site: the Origin must name this host.
    let host = b.base.trim_start_matches("http://").to_string();
    for (origin, expected) in [
        ("https://evil.example".to_string(), StatusCode::FORBIDDEN),
        ("null".to_string(), StatusCode::FORBIDDEN),
        (format!("http://{host}"), StatusCode::SEE_OTHER),
    ] {
        let p = b
            .client
            .post(format!("{}{cancel}", b.base))
            .header("cookie", b.cookie.clone().unwrap())
            .header("origin", &origin)
            .send()
            .await
            .unwrap();
        assert_eq!(p.status(), expected, "{origin}");
    }
    let (_, v) = app
        .get(&format!("/api/v1/actions/{id}/history"), ADMIN)
        .await;
    let types: Vec<&str> = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["event"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["created", "cancel_requested"],
        "only the same-origin cancel"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_page_has_the_security_headers_and_no_inline_script() {
    let mut app = spawn_app().await;
    let a = create(
        &app,
        ADMIN,
        json!({"type": "t", "resource": {"type": "droplet", "id": "9"}}),
    )
    .await;
    let id = a["id"].as_u64().unwrap();
    let mut b = Browser::new(&app);
    let login = b.get("/console/login").await;
    b.sign_in(ADMIN).await;
    let mut pages = vec![login];
    for path in [
        "/console/actions".to_string(),
        format!("/console/actions/{id}"),
        format!("/console/actions/{id}?as_of=1"),
        format!("/console/actions/{id}/cancel"),
        "/console/resources/droplet/9".to_string(),
        "/console/actions/999999".to_string(),
    ] {
        pages.push(b.get(&path).await);
    }
    for p in &pages {
        let csp = p.headers["content-security-policy"].to_str().unwrap();
        for part in [
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "default-src 'none'",
        ] {
            assert!(csp.contains(part), "{csp}");
        }
        assert!(!csp.contains("unsafe-inline"));
        assert_eq!(p.headers["x-content-type-options"], "nosniff");
        assert_eq!(p.headers["referrer-policy"], "no-referrer");
        assert_eq!(p.headers["cache-control"], "no-store");
        assert!(p.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        // Every <script> has a src and no body; no inline handlers or style attributes.
        for tag in p.body.split("<script").skip(1) {
            assert!(
                tag.starts_with(" src=\"/console/assets/console.js?v="),
                "{tag}"
            );
            assert!(tag[tag.find('>').unwrap() + 1..].starts_with("</script>"));
        }
        assert!(!p.body.contains(" style=\""), "no style attributes");
        assert!(!p.body.contains(" onclick="));
    }
    // The assets: long cache with a content hash, ETag, 304 on revalidation.
    let css_url = pages[1]
        .body
        .split("href=\"/console/assets/console.css")
        .nth(1)
        .map(|r| format!("/console/assets/console.css{}", &r[..r.find('"').unwrap()]))
        .unwrap();
    let css = b.get(&css_url).await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(css.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
    assert!(css.headers["cache-control"]
        .to_str()
        .unwrap()
        .contains("immutable"));
    let etag = css.headers["etag"].clone();
    let again = b
        .client
        .get(format!("{}{css_url}", b.base))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(
        b.get("/console/assets/other.js").await.status,
        StatusCode::NOT_FOUND
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn user_input_renders_escaped_on_every_page() {
    let mut app = spawn_app().await;
    let payloads = [
        "<script>alert(1)</script>",
        "\"><img src=x onerror=alert(1)>",
    ];
    let mut ids = Vec::new();
    for (i, evil) in payloads.iter().enumerate() {
        let a = create(
            &app,
            ADMIN,
            json!({"type": format!("t{i}{evil}"), "description": evil, "user": evil,
                   "labels": {"k": evil}, "region": evil,
                   "resource": {"type": "droplet", "id": format!("r{i}{evil}")},
                   "related": [{"type": "volume", "id": evil}]}),
        )
        .await;
        let id = a["id"].as_u64().unwrap();
        for body in [
            json!({"type": "event_started", "name": evil, "host": evil}),
            json!({"type": "event_finished", "name": evil, "result": "error", "traceback": evil, "details": evil}),
            json!({"type": "progress", "progress": 10, "message": evil, "state": evil}),
            json!({"type": "failed", "error": {"code": "E", "message": evil}}),
        ] {
            let (s, v) = app
                .post(&format!("/api/v1/actions/{id}/events"), ADMIN, body)
                .await;
            assert_eq!(s, StatusCode::OK, "{v}");
        }
        ids.push(id);
    }
    let mut b = Browser::new(&app);
    b.sign_in(ADMIN).await;
    let mut paths = vec!["/console/actions".to_string()];
    for (i, id) in ids.iter().enumerate() {
        paths.push(format!("/console/actions/{id}"));
        let rid: String = format!("r{i}{}", payloads[i])
            .bytes()
            .map(|b| format!("%{b:02X}"))
            .collect();
        paths.push(format!("/console/resources/droplet/{rid}"));
    }
    for path in &paths {
        let p = b.get(path).await;
        assert_eq!(p.status, StatusCode::OK, "{path}");
        assert!(!p.body.contains("<script>alert"), "{path}");
        assert!(!p.body.contains("<img src=x"), "{path}");
        assert!(
            p.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;")
                || p.body.contains("&lt;img src=x onerror=alert(1)&gt;"),
            "{path}: the payload is shown as text"
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn another_tenants_actions_are_nowhere_in_the_console() {
    let mut app = spawn_app().await;
    let a_writer = app.token("a", "tenant-a", "writer").await;
    let b_reader = app.token("b", "tenant-b", "reader").await;
    let secret = create(
        &app,
        &a_writer,
        json!({"type": "secret-type", "description": "tenant-a-only",
               "resource": {"type": "droplet", "id": "a-res"}}),
    )
    .await;
    let id = secret["id"].as_u64().unwrap();
    create(
        &app,
        ADMIN,
        json!({"type": "b-type", "tenant": "tenant-b", "resource": {"type": "droplet", "id": "b-res"}}),
    )
    .await;
    let mut b = Browser::new(&app);
    b.sign_in(&b_reader).await;
    for path in [
        "/console/actions".to_string(),
        "/console/actions?resource_type=droplet&resource_id=a-res".to_string(),
        "/console/resources/droplet/a-res".to_string(),
        "/console/actions/export?format=jsonl".to_string(),
        "/console/actions/export?format=csv".to_string(),
    ] {
        let p = b.get(&path).await;
        assert_eq!(p.status, StatusCode::OK, "{path}");
        assert!(
            !p.body.contains("tenant-a-only") && !p.body.contains("secret-type"),
            "{path}"
        );
    }
    assert!(b.get("/console/actions").await.body.contains("b-type"));
    for path in [
        format!("/console/actions/{id}"),
        format!("/console/actions/{id}?as_of=1"),
        format!("/console/actions/{id}/cancel"),
    ] {
        let p = b.get(&path).await;
        assert_eq!(p.status, StatusCode::NOT_FOUND, "{path}");
        assert!(!p.body.contains("tenant-a-only"));
    }
    // Asking for tenant A by name is refused, as in the API.
    let p = b.get("/console/actions?tenant=tenant-a").await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    // A reader has no cancel button, and cannot cancel.
    let own = b.get("/console/actions").await;
    let own_id = row_ids(&own.body)[0];
    let p = b.get(&format!("/console/actions/{own_id}")).await;
    assert!(!p.body.contains("id=\"cancel-link\""));
    let p = b
        .post(
            &format!("/console/actions/{own_id}/cancel"),
            &[],
            "same-origin",
        )
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn filters_and_paging_give_the_right_rows() {
    let mut app = spawn_app().await;
    let page = action_ledger::limits::CONSOLE_PAGE_ROWS as u64;
    let n = page + 10;
    for i in 1..=n {
        let kind = if i % 2 == 0 { "even" } else { "odd" };
        let (s, _) = app
            .post(
                "/api/v1/batch",
                ADMIN,
                json!({"commands": [{"create": {"type": kind, "user": format!("u{}", i % 3),
                        "resource": {"type": "droplet", "id": format!("d{i}")}}}]}),
            )
            .await;
        assert_eq!(s, StatusCode::OK);
    }
    let mut b = Browser::new(&app);
    b.sign_in(ADMIN).await;

    // Newest first, one page, the total, an older link, no newer one.
    let first = b.get("/console/actions").await;
    assert_eq!(row_ids(&first.body), (11..=n).rev().collect::<Vec<_>>());
    assert!(first.body.contains(&format!("data-total=\"{n}\"")));
    assert!(!first.body.contains("id=\"page-newer\""));
    let older = href_of(&first.body, "page-older").unwrap();
    let second = b.get(&older).await;
    assert_eq!(row_ids(&second.body), (1..=10).rev().collect::<Vec<_>>());
    assert!(!second.body.contains("id=\"page-older\""));
    let newer = href_of(&second.body, "page-newer").unwrap();
    assert_eq!(row_ids(&b.get(&newer).await.body), row_ids(&first.body));

    // Filters from the GET form (empty fields mean "any").
    let p = b
        .get("/console/actions?type=even&user=u1&status=&kind=&since=&resource_type=")
        .await;
    let expected: Vec<u64> = (1..=n).rev().filter(|i| i % 2 == 0 && i % 3 == 1).collect();
    assert_eq!(row_ids(&p.body), expected);
    assert!(
        p.body.contains("value=\"even\""),
        "the form shows the filter"
    );
    let p = b
        .get("/console/actions?resource_type=droplet&resource_id=d7")
        .await;
    assert_eq!(row_ids(&p.body), vec![7]);
    let p = b.get("/console/resources/droplet/d7").await;
    assert_eq!(row_ids(&p.body), vec![7]);
    // A datetime-local value is read as UTC; a time in the future matches nothing.
    let p = b.get("/console/actions?since=2999-01-01T00%3A00").await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(row_ids(&p.body).is_empty());
    assert!(p.body.contains("value=\"2999-01-01T00:00\""));
    // A bad filter is a 400 page that says why.
    let p = b.get("/console/actions?kind=nonsense").await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    assert!(p.body.contains("kind"), "{}", p.body);
    // The histogram's element carries the filters.
    let p = b.get("/console/actions?type=even").await;
    assert!(p.body.contains("id=\"histogram\""));
    assert!(p.body.contains("data-query=\"type=even\""));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn export_writes_the_filtered_list_as_json_lines_and_csv() {
    let mut app = spawn_app().await;
    for (i, desc) in ["plain", "a,b \"q\"\nnext", "=HYPERLINK(\"x\")"]
        .iter()
        .enumerate()
    {
        create(
            &app,
            ADMIN,
            json!({"type": if i == 1 { "other" } else { "export" }, "description": desc,
                   "resource": {"type": "droplet", "id": format!("e{i}")}}),
        )
        .await;
    }
    let mut b = Browser::new(&app);
    b.sign_in(ADMIN).await;
    let p = b
        .get("/console/actions/export?format=jsonl&type=export")
        .await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(p.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/x-ndjson"));
    assert_eq!(p.headers["x-export-total"], "2");
    let lines: Vec<Value> = p
        .body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["id"], 3);
    assert_eq!(lines[1]["id"], 1);
    let (_, api) = app.get("/api/v1/actions/1", ADMIN).await;
    assert_eq!(lines[1], api, "each line is the API's JSON");

    let p = b.get("/console/actions/export?format=csv").await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(p.headers["content-disposition"]
        .to_str()
        .unwrap()
        .contains("actions.csv"));
    assert!(p
        .body
        .starts_with("id,uid,tenant,type,kind,resource_type,resource_id,"));
    assert!(
        p.body.contains(",\"'=HYPERLINK(\"\"x\"\")\","),
        "{}",
        p.body
    );
    assert!(p.body.contains(",\"a,b \"\"q\"\"\nnext\","), "{}", p.body);
    assert_eq!(p.body.matches("\r\n").count(), 4, "header and three rows");
    let p = b.get("/console/actions/export?format=xml").await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_action_page_shows_timeline_history_as_of_and_cancels() {
    let mut app = spawn_app().await;
    let writer = app.token("w", "acme", "writer").await;
    let a = create(
        &app,
        &writer,
        json!({"type": "resize", "labels": {"team": "blue"},
               "resource": {"type": "droplet", "id": "7"},
               "related": [{"type": "volume", "id": "v1"}]}),
    )
    .await;
    let id = a["id"].as_u64().unwrap();
    for body in [
        json!({"type": "event_started", "name": "compute_resize", "host": "cmp-1"}),
        json!({"type": "progress", "progress": 40, "pending_ops": {"3": {"op_name": "SMUpgradeBDB", "progress": 50}}}),
        json!({"type": "event_finished", "name": "compute_resize", "result": "success"}),
    ] {
        let (s, v) = app
            .post(&format!("/api/v1/actions/{id}/events"), &writer, body)
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let mut b = Browser::new(&app);
    b.sign_in(&writer).await;
    let p = b.get(&format!("/console/actions/{id}")).await;
    assert_eq!(p.status, StatusCode::OK);
    for needle in [
        "data-status=\"running\"",
        "data-progress=\"40\"",
        "class=\"span\"",
        "compute_resize",
        "data-result=\"success\"",
        "id=\"pending-ops\"",
        "SMUpgradeBDB",
        "href=\"/console/resources/volume/v1\"",
        "href=\"/console/resources/droplet/7\"",
        "team",
        "class=\"history-row\" data-position=",
        "id=\"cancel-link\"",
        "data-watch=\"action=",
    ] {
        assert!(p.body.contains(needle), "{needle} missing");
    }
    assert_eq!(p.body.matches("class=\"history-row\"").count(), 4);
    // As of the first record: queued, no progress, no sub-events, no cancel button.
    let first_position = p
        .body
        .split("class=\"history-row\" data-position=\"")
        .nth(1)
        .map(|r| r[..r.find('"').unwrap()].to_string())
        .unwrap();
    let then = b
        .get(&format!("/console/actions/{id}?as_of={first_position}"))
        .await;
    assert_eq!(then.status, StatusCode::OK);
    assert!(then.body.contains("id=\"as-of-banner\""));
    assert!(then.body.contains("data-status=\"queued\""));
    assert!(!then.body.contains("class=\"span\""));
    assert!(!then.body.contains("id=\"cancel-link\""));
    let p = b.get(&format!("/console/actions/{id}?as_of=soon")).await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);

    // Cancel: a confirmation page, then the POST records cancel_requested.
    let confirm = b.get(&format!("/console/actions/{id}/cancel")).await;
    assert!(confirm.body.contains("id=\"cancel-confirm\""));
    let done = b
        .post(&format!("/console/actions/{id}/cancel"), &[], "same-origin")
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    assert_eq!(done.location(), format!("/console/actions/{id}"));
    let (_, v) = app.get(&format!("/api/v1/actions/{id}"), &writer).await;
    assert_eq!(v["version"], 5);
    let (_, h) = app
        .get(&format!("/api/v1/actions/{id}/history"), &writer)
        .await;
    assert_eq!(h["records"][4]["event"]["type"], "cancel_requested");
    assert_eq!(h["records"][4]["principal"], "w");

    // Missing actions are a 404 page.
    let p = b.get("/console/actions/424242").await;
    assert_eq!(p.status, StatusCode::NOT_FOUND);
    assert!(p.body.contains("id=\"error-message\""));
    assert!(
        p.body.contains("id=\"logout-form\""),
        "the error page keeps the top bar"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_watch_streams_under_the_cookie() {
    let mut app = spawn_app().await;
    let mut b = Browser::new(&app);
    b.sign_in(ADMIN).await;
    let mut resp = b
        .client
        .get(format!(
            "{}/console/watch?type=live&since=x&cursor=y",
            b.base
        ))
        .header("cookie", b.cookie.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    create(
        &app,
        ADMIN,
        json!({"type": "live", "resource": {"type": "droplet", "id": "1"}}),
    )
    .await;
    let mut got = String::new();
    while !got.contains("\"created\"") {
        let chunk = resp.chunk().await.unwrap().expect("the stream stays open");
        got.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(got.contains("event: created"), "{got}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn console_false_removes_the_routes() {
    let mut config = config();
    config.console = false;
    let mut app = spawn_app_with(config).await;
    let b = Browser::new(&app);
    for path in [
        "/console",
        "/console/login",
        "/console/actions",
        "/console/assets/console.css",
    ] {
        assert_eq!(b.get(path).await.status, StatusCode::NOT_FOUND, "{path}");
    }
    let p = b
        .post("/console/login", &[("token", ADMIN)], "same-origin")
        .await;
    assert_eq!(p.status, StatusCode::NOT_FOUND);
    app.stop().await;
}
