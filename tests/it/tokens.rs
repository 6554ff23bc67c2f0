//! Tokens as a new user meets them: the first admin token reaches whoever starts the server
//! even after a failed start, `token create|revoke` refuse a data directory a server owns,
//! revoking a token ends what it holds open, and the last admin token stays.

use crate::app::{spawn_app, Api, TestApp, ADMIN};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The binary, with no inherited ACTION_LEDGER_* settings.
fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(crate::binserver::bin());
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("ACTION_LEDGER_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

fn run(args: &[&str]) -> Output {
    command(args)
        .output()
        .expect("run the action-ledger binary")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `serve` on `data` until it says it listens, then SIGTERM; its whole stdout.
fn serve_once_and_stop(data: &Path) -> String {
    let child = command(&[
        "serve",
        "--data-dir",
        s(data),
        "--listen",
        "127.0.0.1:0",
        "--redis-listen",
        "off",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    crate::binserver::until_listening_then_stop(child)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_first_start_leaves_the_first_admin_token_to_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = busy.local_addr().unwrap().to_string();
    // The HTTP port busy, then the Redis port busy: both starts fail.
    for (listen, redis) in [(busy.as_str(), "off"), ("127.0.0.1:0", busy.as_str())] {
        let o = run(&[
            "serve",
            "--data-dir",
            s(&data),
            "--listen",
            listen,
            "--redis-listen",
            redis,
        ]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("cannot listen"), "{}", stderr(&o));
        assert_eq!(stdout(&o), "", "nothing printed, so nothing created");
    }
    let o = run(&["token", "list", "--data-dir", s(&data)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "", "no token was stored unseen");
    assert!(
        !data.join("first-admin-token").exists(),
        "no token file either"
    );

    // The next start writes the first admin token to an owner-only file and says where;
    // the secret itself is never printed (under systemd, stdout is the journal).
    let out = serve_once_and_stop(&data);
    let file = data.join("first-admin-token");
    assert!(
        out.lines()
            .next()
            .is_some_and(|l| l.contains("first admin token") && l.contains(s(&file))),
        "{out:?}"
    );
    let token = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert!(token.starts_with("alt_"), "{token:?}");
    assert!(!out.contains(&token), "the secret is not printed: {out:?}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "owner-only");

    // And it works on the data directory.
    let mut config = crate::app::config();
    config.admin_token = None;
    let running = crate::app::start(&data, config).await;
    assert_eq!(running.first_admin_token_file, None, "created once");
    let (s, _) = Api::new(format!("http://{}", running.addr))
        .get("/api/v1/tokens", &token)
        .await;
    assert_eq!(s, StatusCode::OK);
    running.stop().await.unwrap();
}

/// Asserts exit 2 with one `error:` line mentioning every `needle`.
fn assert_refused(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(2),
        "stdout: {}\nstderr: {err}",
        stdout(o)
    );
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(err.starts_with("error: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "{err:?} should mention {n:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn token_create_and_revoke_refuse_a_data_dir_a_server_owns() {
    let mut app = spawn_app().await;
    app.token("r1", "acme", "reader").await;
    let data = app.dir.path().join("data");
    let before = std::fs::read_to_string(data.join("tokens.json")).unwrap();
    let d = s(&data);
    assert_refused(
        &run(&[
            "token",
            "create",
            "--data-dir",
            d,
            "--tenant",
            "acme",
            "--role",
            "admin",
        ]),
        &[d, "in use by a running server"],
    );
    assert_refused(
        &run(&["token", "revoke", "--data-dir", d, "r1"]),
        &[d, "in use by a running server"],
    );
    assert_eq!(
        std::fs::read_to_string(data.join("tokens.json")).unwrap(),
        before,
        "the file is the server's"
    );
    // Listing only reads a file that is always replaced whole: allowed.
    let o = run(&["token", "list", "--data-dir", d]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("\"r1\""), "{}", stdout(&o));

    // Once the server stops, both work (and the server's lock is taken and given back).
    app.stop().await;
    let o = run(&["token", "revoke", "--data-dir", d, "r1"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = run(&[
        "token",
        "create",
        "--data-dir",
        d,
        "--tenant",
        "acme",
        "--role",
        "reader",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let secret = stdout(&o).trim().to_string();
    let app = crate::app::spawn_on(app.dir).await;
    let (st, _) = app.get("/api/v1/actions", &secret).await;
    assert_eq!(
        st,
        StatusCode::OK,
        "the server reads what the command wrote"
    );
}

/// A new action by `token`, still running (so a wait on it waits).
async fn running_action(app: &TestApp, token: &str) -> String {
    let v = app.create(token, "3164450").await;
    v["id"].to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_a_token_ends_its_watch_streams_and_waits() {
    let app = spawn_app().await;
    let keep = app.token("keep", "acme", "writer").await;
    let id = running_action(&app, &keep).await;

    // A watch stream: its 200 means the token was accepted.
    let w = app.token("w", "acme", "writer").await;
    let other = app
        .client
        .get(format!("{}/api/v1/watch", app.base))
        .bearer_auth(&keep)
        .send()
        .await
        .unwrap();
    let resp = app
        .client
        .get(format!("{}/api/v1/watch", app.base))
        .bearer_auth(&w)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (st, _) = app
        .call(Method::DELETE, "/api/v1/tokens/w", Some(ADMIN), None)
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    // Without the revocation it would run until the server stops (keep-alives every 15 s).
    let body = tokio::time::timeout(Duration::from_secs(60), resp.text())
        .await
        .expect("the revoked token's watch stream ends")
        .unwrap();
    assert!(body.contains("event: revoked"), "{body:?}");
    // Another token's stream stays open.
    app.create(&keep, "2").await;
    let mut other = other;
    let chunk = tokio::time::timeout(Duration::from_secs(60), other.chunk())
        .await
        .expect("the other stream goes on")
        .unwrap();
    assert!(chunk.is_some());

    // A wait (up to 60 s on a running action) ends at once, refused. Whether the wait had
    // been accepted before the revoke shows in the answer: a revoked-in-flight token says so,
    // a token already unknown gets the plain 401. Retry until the order was the one tested.
    for attempt in 1..=20u64 {
        let name = format!("w{attempt}");
        let t = app.token(&name, "acme", "writer").await;
        let (client, url, t2) = (
            app.client.clone(),
            format!("{}/api/v1/actions/{id}/wait?timeout_ms=60000", app.base),
            t.clone(),
        );
        let waiting = tokio::spawn(async move {
            let resp = client.get(url).bearer_auth(t2).send().await.unwrap();
            (resp.status(), resp.json::<Value>().await.unwrap())
        });
        tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
        let (st, _) = app
            .call(
                Method::DELETE,
                &format!("/api/v1/tokens/{name}"),
                Some(ADMIN),
                None,
            )
            .await;
        assert_eq!(st, StatusCode::NO_CONTENT);
        let (st, body) = waiting.await.unwrap();
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{body}");
        if body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("was revoked"))
        {
            return;
        }
    }
    panic!("no wait was accepted before its token was revoked in 20 attempts");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_last_admin_token_cannot_be_revoked() {
    let app = spawn_app().await;
    // `ADMIN` is the --admin-token of this run: it does not count, it is gone at the next
    // start without the flag.
    let a1 = app.token("a1", "default", "admin").await;
    let (st, body) = app
        .call(Method::DELETE, "/api/v1/tokens/a1", Some(ADMIN), None)
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "last_admin_token", "{body}");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("last admin token") && msg.contains("create another admin token first"),
        "{msg}"
    );
    // With a second admin, an admin may revoke even its own token — but not the last one.
    let a2 = app.token("a2", "default", "admin").await;
    let (st, _) = app
        .call(Method::DELETE, "/api/v1/tokens/a1", Some(&a1), None)
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, body) = app
        .call(Method::DELETE, "/api/v1/tokens/a2", Some(&a2), None)
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{body}");
    let (st, _) = app.get("/api/v1/tokens", &a2).await;
    assert_eq!(st, StatusCode::OK);
    // Other roles are revoked as before.
    app.token("r", "acme", "reader").await;
    let (st, _) = app
        .call(Method::DELETE, "/api/v1/tokens/r", Some(&a2), None)
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
}

#[test]
fn token_revoke_of_the_last_admin_token_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    let create = |name: &str| {
        let o = run(&[
            "token",
            "create",
            "--data-dir",
            d,
            "--tenant",
            "default",
            "--role",
            "admin",
            "--name",
            name,
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    };
    create("a1");
    assert_refused(
        &run(&["token", "revoke", "--data-dir", d, "a1"]),
        &["a1", "last admin token"],
    );
    create("a2");
    let o = run(&["token", "revoke", "--data-dir", d, "a1"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = run(&["token", "list", "--data-dir", d]);
    let names: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["name"].clone())
        .collect();
    assert_eq!(names, [json!("a2")]);
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_expire_rotate_and_show_their_last_use() {
    let app = spawn_app().await;
    // Bad expiries are a 400 naming the field.
    for bad in ["yesterday", "2001-01-01T00:00:00Z", "9999-01-01T00:00:00Z"] {
        let (s, v) = app
            .post(
                "/api/v1/tokens",
                ADMIN,
                json!({"name": "x", "tenant": "acme", "role": "reader", "expires_at": bad}),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert_eq!(v["error"]["field"], "expires_at", "{v}");
    }
    // A token that expires in two seconds works, then is refused saying why.
    let at = (chrono::Utc::now() + chrono::Duration::seconds(2))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (s, v) = app
        .post(
            "/api/v1/tokens",
            ADMIN,
            json!({"name": "brief", "tenant": "acme", "role": "reader", "expires_at": at}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["expires_at"], at.as_str());
    let brief = v["token"].as_str().unwrap().to_string();
    let (s, _) = app.get("/api/v1/actions", &brief).await;
    assert_eq!(s, StatusCode::OK);
    // A watch stream of it ends at the expiry.
    let stream = app
        .client
        .get(format!("{}/api/v1/watch", app.base))
        .bearer_auth(&brief)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let body = tokio::time::timeout(Duration::from_secs(60), stream.text())
        .await
        .expect("the expired token's stream ends")
        .unwrap();
    assert!(body.contains("event: revoked"), "{body:?}");
    let (s, v) = app.get("/api/v1/actions", &brief).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(v["error"]["code"], "token_expired", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains(&at), "{v}");

    // The list shows expiry and last use.
    let (_, list) = app.get("/api/v1/tokens", ADMIN).await;
    let brief_row = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "brief")
        .unwrap();
    assert_eq!(brief_row["expires_at"], at.as_str());
    assert!(brief_row["last_used_at"].is_string(), "{brief_row}");

    // Rotate: a new secret for the same token; the old one is refused at once.
    let w = app.token("w", "acme", "writer").await;
    let (s, v) = app
        .call(Method::POST, "/api/v1/tokens/w/rotate", Some(ADMIN), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["name"].as_str(), v["tenant"].as_str()),
        (Some("w"), Some("acme"))
    );
    let w2 = v["token"].as_str().unwrap().to_string();
    assert_eq!(
        app.get("/api/v1/actions", &w).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.get("/api/v1/actions", &w2).await.0, StatusCode::OK);
    let (s, _) = app
        .call(
            Method::POST,
            "/api/v1/tokens/nope/rotate",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app
        .call(Method::POST, "/api/v1/tokens/w/rotate", Some(&w2), None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "a writer may not rotate tokens");
}

#[test]
fn token_create_ttl_and_rotate_on_a_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let d = s(dir.path());
    let create = |extra: &[&str]| {
        let mut args = vec![
            "token",
            "create",
            "--data-dir",
            d,
            "--tenant",
            "acme",
            "--role",
            "reader",
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    let o = create(&["--name", "month", "--ttl", "30d"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let first = stdout(&o).trim().to_string();
    for bad in ["30", "0d", "3y", "99999d"] {
        let o = create(&["--ttl", bad]);
        assert_refused(&o, &["--ttl", bad]);
    }
    let o = run(&["token", "list", "--data-dir", d]);
    let row: Value = serde_json::from_str(stdout(&o).lines().next().unwrap()).unwrap();
    let expires =
        chrono::DateTime::parse_from_rfc3339(row["expires_at"].as_str().unwrap()).unwrap();
    let days = (expires.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_hours() as f64 / 24.0;
    assert!((29.9..=30.1).contains(&days), "{row}");
    assert_eq!(row["last_used_at"], Value::Null);

    let o = run(&["token", "rotate", "--data-dir", d, "month"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let second = stdout(&o).trim().to_string();
    assert!(second.starts_with("alt_") && second != first);
    assert_refused(
        &run(&["token", "rotate", "--data-dir", d, "nope"]),
        &["nope"],
    );
    let store = action_ledger::tokens::TokenStore::open(dir.path().join("tokens.json")).unwrap();
    assert!(store.authenticate(&second).is_ok());
    assert!(store.authenticate(&first).is_err());
}
