//! The web console in a real browser: Debian's Chromium, headless, driven over WebDriver
//! (chromedriver, through fantoccini). Sign-in and out, filtered URLs that survive a reload,
//! live progress and the "new" bar, the timeline, as-of, tenant scoping on every page,
//! escaping of user input, keyboard reach, and light and dark screenshots of every page
//! under `target/console-shots/`.
//!
//! `chromium` and `chromium-driver` are installed by the first test that needs them when
//! missing and the tests run as root (as on CI); without them the tests fail with a message
//! saying how to install them, never skip. One browser runs at a time ([`BROWSER`]), each
//! test with its own chromedriver, Chromium profile and server.

use crate::app::{spawn_app, Api, TestApp};
use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long a live update may take to show (the console's promise).
const LIVE_WITHIN: Duration = Duration::from_secs(2);
/// How long a page may take to load or a browser to start, before the test gives up.
const LOAD_WITHIN: Duration = Duration::from_secs(30);

/// One Chromium at a time: the machine may have two cores, and each browser wants both.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Chromium and chromedriver, installed first when missing and this process is root; an
/// error saying how to get them otherwise.
fn tools() -> Result<(), String> {
    static TOOLS: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    TOOLS
        .get_or_init(|| {
            let present = || Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists();
            if present() {
                return Ok(());
            }
            let ci = if std::env::var("CI").as_deref() == Ok("true") {
                " (CI=true: the browser tests need them and do not skip)"
            } else {
                ""
            };
            let missing = format!(
                "no {CHROMIUM} and {CHROMEDRIVER}{ci}; install them with \
                 `apt-get install -y chromium chromium-driver` (the tests do when run as root)"
            );
            if !crate::host::is_root() {
                return Err(missing);
            }
            for package in ["chromium", "chromium-driver"] {
                crate::host::apt_install(package).map_err(|e| format!("{missing}\n{e}"))?;
            }
            if present() {
                Ok(())
            } else {
                Err(missing)
            }
        })
        .clone()
}

/// A chromedriver process on a port of its own; killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_driver() -> Driver {
    let mut last = String::new();
    for _ in 0..3 {
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e}"));
        let driver = Driver { child, port };
        let deadline = Instant::now() + LOAD_WITHIN;
        let status = format!("http://127.0.0.1:{port}/status");
        while Instant::now() < deadline {
            match reqwest::get(&status).await {
                Ok(r) if r.status().is_success() => return driver,
                Ok(r) => last = format!("status {}", r.status()),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!("chromedriver did not answer: {last}");
}

/// `prefers-color-scheme` of a browser session.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Scheme {
    Light,
    Dark,
}

impl Scheme {
    fn name(self) -> &'static str {
        match self {
            Scheme::Light => "light",
            Scheme::Dark => "dark",
        }
    }
}

/// A headless Chromium session (and the chromedriver and profile it lives in), holding the
/// one-browser lock. Dereferences to the fantoccini client.
struct Browser {
    client: Client,
    base: String,
    _driver: Driver,
    _profile: tempfile::TempDir,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl std::ops::Deref for Browser {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Browser {
    /// A browser for the server at `base`.
    async fn open(base: &str, scheme: Scheme) -> Browser {
        tools().unwrap_or_else(|e| panic!("{e}"));
        let turn = BROWSER.lock().await;
        let driver = start_driver().await;
        let profile = tempfile::tempdir().unwrap();
        let mut args = vec![
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--window-size=1280,1000".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        // Blink's preferred scheme: 0 dark, 1 light.
        match scheme {
            Scheme::Dark => {
                args.push("--blink-settings=preferredColorScheme=0".into());
                args.push("--force-dark-mode".into());
            }
            Scheme::Light => args.push("--blink-settings=preferredColorScheme=1".into()),
        }
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        });
        let caps = caps.as_object().unwrap().clone();
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
            .unwrap_or_else(|e| panic!("no Chromium session: {e}"));
        let b = Browser {
            client,
            base: base.to_string(),
            _driver: driver,
            _profile: profile,
            _turn: turn,
        };
        let dark: bool = b
            .js("return matchMedia('(prefers-color-scheme: dark)').matches")
            .await
            .as_bool()
            .unwrap();
        assert_eq!(dark, scheme == Scheme::Dark, "the color scheme was not set");
        b
    }

    async fn go(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    }

    /// The path and query of the page shown.
    async fn at(&self) -> String {
        let url = self.client.current_url().await.unwrap();
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        }
    }

    async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script {script:?}: {e}"))
    }

    async fn text_of(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .text()
            .await
            .unwrap()
    }

    /// Clicks the element `css` selects.
    async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Types `text` into the element `css` selects.
    async fn type_into(&self, css: &str, text: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    async fn count(&self, css: &str) -> usize {
        self.client.find_all(Locator::Css(css)).await.unwrap().len()
    }

    /// Everything the page shows as text.
    async fn page_text(&self) -> String {
        self.js("return document.body.innerText")
            .await
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Signs in through the form and lands on the list.
    async fn sign_in(&self, token: &str) {
        self.go("/console/login").await;
        self.client
            .find(Locator::Css("#token"))
            .await
            .unwrap()
            .send_keys(token)
            .await
            .unwrap();
        self.client
            .find(Locator::Css("#login-form button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        self.until("the list after signing in", || async {
            self.at().await.starts_with("/console/actions")
        })
        .await;
    }

    /// Waits, up to [`LOAD_WITHIN`], for `cond`.
    async fn until<F, Fut>(&self, what: &str, cond: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        within(LOAD_WITHIN, what, cond).await;
    }

    /// Saves a screenshot as `target/console-shots/NAME-SCHEME.png`.
    async fn shot(&self, name: &str, scheme: Scheme) {
        let png = self.client.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        let dir = root().join("target/console-shots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}-{}.png", scheme.name())), png).unwrap();
    }

    /// Presses Tab once (on whatever has the focus).
    async fn tab(&self) {
        let tab: char = Key::Tab.into();
        let keys = KeyActions::new("keyboard".into())
            .then(KeyAction::Down { value: tab })
            .then(KeyAction::Up { value: tab });
        self.client.perform_actions(keys).await.unwrap();
    }

    async fn close(self) {
        let Browser { client, .. } = self;
        client.close().await.unwrap();
    }
}

/// Polls `cond` until it holds, failing the test after `limit`.
async fn within<F, Fut>(limit: Duration, what: &str, cond: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if cond().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_harness_drives_chromium_against_the_server() {
    // Goal: Chromium starts headless under chromedriver, reaches the in-process server over
    // plain HTTP, and the page's JSON is what the server answers.
    let app = spawn_app().await;
    let b = Browser::open(&app.base, Scheme::Light).await;
    b.go("/healthz").await;
    let text = b.page_text().await;
    assert!(text.contains("ok") || text.contains("status"), "{text}");
    assert_eq!(b.at().await, "/healthz");
    b.close().await;
}

// ---------------------------------------------------------------------------------------
// The console

async fn create(api: &Api, token: &str, body: Value) -> u64 {
    let (s, v) = api.post("/api/v1/actions", token, body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["id"].as_u64().unwrap()
}

async fn event(api: &Api, token: &str, id: u64, body: Value) {
    let (s, v) = api
        .post(&format!("/api/v1/actions/{id}/events"), token, body)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

/// The watch streams the server has open (its `action_ledger_watchers` gauge).
async fn watchers(api: &Api) -> u64 {
    let text = api.metrics_text().await;
    text.lines()
        .find_map(|l| l.strip_prefix("action_ledger_watchers "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no watchers gauge in:\n{text}")) as u64
}

/// The `data-id`s of the list's rows, in order.
async fn row_ids(b: &Browser) -> Vec<u64> {
    let mut ids = Vec::new();
    for row in b
        .find_all(Locator::Css("#actions-body tr.action-row"))
        .await
        .unwrap()
    {
        ids.push(row.attr("data-id").await.unwrap().unwrap().parse().unwrap());
    }
    ids
}

/// A tenant with a writer and a reader, and a few actions: a running one with sub-events,
/// progress and pending operations, a failed one, a completed one. Returns (writer, reader,
/// [running, failed, completed]).
async fn seed(app: &TestApp, tenant: &str) -> (String, String, [u64; 3]) {
    let writer = app.token(&format!("{tenant}-w"), tenant, "writer").await;
    let reader = app.token(&format!("{tenant}-r"), tenant, "reader").await;
    let running = create(
        app,
        &writer,
        json!({"type": "resize", "user": "ann", "description": format!("grow the {tenant} disk"),
               "labels": {"team": "blue"}, "node": "n1", "region": "nyc3",
               "resource": {"type": "droplet", "id": format!("{tenant}-1")},
               "related": [{"type": "volume", "id": format!("{tenant}-v")}]}),
    )
    .await;
    for body in [
        json!({"type": "event_started", "name": "compute_resize", "host": "cmp-1"}),
        json!({"type": "progress", "progress": 30,
               "pending_ops": {"3": {"op_name": "SMUpgradeBDB", "progress": 50}}}),
        json!({"type": "event_finished", "name": "compute_resize", "result": "success"}),
        json!({"type": "event_started", "name": "compute_migrate", "host": "cmp-2"}),
        json!({"type": "event_finished", "name": "compute_migrate", "result": "error",
               "traceback": "Traceback (most recent call last):\n  boom"}),
    ] {
        event(app, &writer, running, body).await;
    }
    let failed = create(
        app,
        &writer,
        json!({"type": "reboot", "resource": {"type": "droplet", "id": format!("{tenant}-2")}}),
    )
    .await;
    event(
        app,
        &writer,
        failed,
        json!({"type": "failed", "error": {"code": "E1", "message": format!("{tenant} broke")}}),
    )
    .await;
    let completed = create(
        app,
        &writer,
        json!({"type": "snapshot", "resource": {"type": "droplet", "id": format!("{tenant}-1")}}),
    )
    .await;
    event(app, &writer, completed, json!({"type": "started"})).await;
    event(app, &writer, completed, json!({"type": "completed"})).await;
    (writer, reader, [running, failed, completed])
}

#[tokio::test(flavor = "multi_thread")]
async fn signing_in_and_out_in_the_browser() {
    // Goal: a visitor without a cookie is sent to the sign-in page; the form signs in (the
    // token in no URL), the header names who is signed in, and "Sign out" ends it: the list
    // sends to the sign-in page again. A wrong token is refused on the page.
    let app = spawn_app().await;
    let (_, reader, _) = seed(&app, "acme").await;
    let b = Browser::open(&app.base, Scheme::Light).await;
    b.go("/console").await;
    b.until("the sign-in page", || async {
        b.at().await.starts_with("/console/login")
    })
    .await;
    b.type_into("#token", "not-a-token").await;
    b.click("#login-form button[type=submit]").await;
    b.until("the refusal", || async {
        b.count("#login-error").await == 1
    })
    .await;
    b.sign_in(&reader).await;
    assert!(!b.at().await.contains(&reader), "the token is in the URL");
    assert!(
        !b.source().await.unwrap().contains(&reader),
        "the token is in the page"
    );
    let who = b.text_of("#whoami").await;
    assert!(who.contains("acme-r") && who.contains("reader"), "{who}");
    assert_eq!(row_ids(&b).await.len(), 3);
    b.click("#logout").await;
    b.until("the sign-in page after signing out", || async {
        b.at().await.starts_with("/console/login")
    })
    .await;
    b.go("/console/actions").await;
    b.until("the sign-in page again", || async {
        b.at().await.starts_with("/console/login")
    })
    .await;
    b.close().await;
}

/// What a list view shows: its rows, the resource id field, the "completed" box, the total.
async fn view(b: &Browser) -> (Vec<u64>, Option<String>, bool, String) {
    (
        row_ids(b).await,
        b.find(Locator::Css("#f-resource_id"))
            .await
            .unwrap()
            .prop("value")
            .await
            .unwrap(),
        b.find(Locator::Css("#f-status-completed"))
            .await
            .unwrap()
            .is_selected()
            .await
            .unwrap(),
        b.text_of("#total").await,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_filtered_url_reloads_to_the_same_view() {
    // Goal: filters set in the form become the URL; reloading (and going back to) that URL
    // shows the same rows with the same fields filled in.
    let app = spawn_app().await;
    let (writer, _, [running, failed, completed]) = seed(&app, "acme").await;
    let b = Browser::open(&app.base, Scheme::Light).await;
    b.sign_in(&writer).await;
    assert_eq!(row_ids(&b).await, vec![completed, failed, running]);
    b.until("the histogram of every action", || async {
        b.js("return document.getElementById('histogram').getAttribute('data-total')")
            .await
            == json!("3")
    })
    .await;
    assert!(b.count("#histogram svg rect.h-completed").await >= 1);
    b.type_into("#f-resource_type", "droplet").await;
    b.type_into("#f-resource_id", "acme-1").await;
    b.click("#f-status-completed").await;
    b.click("#apply-filters").await;
    b.until("the filtered list", || async {
        b.at().await.contains("status=completed")
    })
    .await;
    let url = b.at().await;
    assert!(url.contains("resource_id=acme-1"), "{url}");
    let shown = view(&b).await;
    assert_eq!(shown.0, vec![completed]);
    // The activity histogram counts the filtered set (server-side), not the rows.
    b.until("the histogram of the filtered set", || async {
        b.js("return document.getElementById('histogram').getAttribute('data-total')")
            .await
            == json!("1")
    })
    .await;
    assert_eq!(shown.1.as_deref(), Some("acme-1"));
    assert!(shown.2);
    b.refresh().await.unwrap();
    assert_eq!(b.at().await, url);
    assert_eq!(view(&b).await, shown, "a reload shows the same view");
    // Another view, then back: the filtered one again.
    b.go("/console/actions").await;
    assert_eq!(row_ids(&b).await.len(), 3);
    b.back().await.unwrap();
    b.until("the filtered URL again", || async { b.at().await == url })
        .await;
    assert_eq!(view(&b).await, shown, "back shows the same view");
    // The URL alone (a shared link) gives it too, in a fresh page load.
    b.go(&url).await;
    assert_eq!(view(&b).await, shown);
    b.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn live_progress_and_the_new_bar_follow_the_api() {
    // Goal: an event posted through the API moves the open action page's progress bar, and
    // a row's on the list, in place; a new action raises the list's "N new — show" bar
    // without adding a row; each within LIVE_WITHIN of the API's answer. The live switch
    // pauses it.
    let app = spawn_app().await;
    let (writer, reader, [running, ..]) = seed(&app, "acme").await;
    let b = Browser::open(&app.base, Scheme::Light).await;
    // Signed in straight onto the action page (the sign-in page keeps where it was going),
    // so its stream is the server's only one.
    let page = format!("/console/actions/{running}");
    b.go(&page).await;
    b.until("the sign-in page", || async {
        b.at().await.starts_with("/console/login")
    })
    .await;
    b.type_into("#token", &reader).await;
    b.click("#login-form button[type=submit]").await;
    b.until("the action page", || async { b.at().await == page })
        .await;
    b.until("the page's watch stream to open", || async {
        watchers(&app).await == 1
    })
    .await;
    let progress = || async {
        b.js("return document.querySelector('#action-progress-cell progress').value")
            .await
            .as_f64()
    };
    assert_eq!(progress().await, Some(30.0));
    event(
        &app,
        &writer,
        running,
        json!({"type": "progress", "progress": 65}),
    )
    .await;
    within(
        LIVE_WITHIN,
        "the action page's progress bar at 65",
        || async { progress().await == Some(65.0) },
    )
    .await;
    assert_eq!(
        b.find(Locator::Css("main.action-page"))
            .await
            .unwrap()
            .attr("data-progress")
            .await
            .unwrap()
            .as_deref(),
        Some("65")
    );

    // The list: the row moves in place, and a new action raises the bar.
    b.go("/console/actions").await;
    b.until("the list's watch stream to open", || async {
        b.text_of("#live-status").await == "live"
    })
    .await;
    let rows_before = row_ids(&b).await;
    let row_progress = || async {
        b.find(Locator::Css(&format!(
            "#actions-body tr.action-row[data-id='{running}']"
        )))
        .await
        .unwrap()
        .attr("data-progress")
        .await
        .unwrap()
    };
    event(
        &app,
        &writer,
        running,
        json!({"type": "progress", "progress": 80}),
    )
    .await;
    within(LIVE_WITHIN, "the row's progress at 80", || async {
        row_progress().await.as_deref() == Some("80")
    })
    .await;
    assert!(!b
        .find(Locator::Css("#new-bar"))
        .await
        .unwrap()
        .attr("class")
        .await
        .unwrap()
        .unwrap_or_default()
        .contains("shown"));
    let fresh = create(
        &app,
        &writer,
        json!({"type": "resize", "resource": {"type": "droplet", "id": "new-1"}}),
    )
    .await;
    let bar_shown = || async {
        b.js("return document.getElementById('new-bar').classList.contains('shown')")
            .await
            .as_bool()
            == Some(true)
    };
    within(LIVE_WITHIN, "the new bar", bar_shown).await;
    assert_eq!(b.text_of("#new-count").await, "1");
    assert_eq!(row_ids(&b).await, rows_before, "no row was pushed in");
    // "show" leads to the first page, with the new action on top.
    b.click("#new-bar-link").await;
    b.until("the new action on top", || async {
        row_ids(&b).await.first() == Some(&fresh)
    })
    .await;

    // Paused: an update does not arrive until live again.
    b.until("the watch stream to open", || async {
        b.text_of("#live-status").await == "live"
    })
    .await;
    // Paused before any event reached this freshly loaded page: the stream resumes after
    // the position the page was rendered at (`data-after`), not from "now".
    b.click("#live-toggle").await;
    assert_eq!(
        b.find(Locator::Css("#live-toggle"))
            .await
            .unwrap()
            .attr("aria-pressed")
            .await
            .unwrap()
            .as_deref(),
        Some("false")
    );
    event(
        &app,
        &writer,
        running,
        json!({"type": "progress", "progress": 90}),
    )
    .await;
    assert_eq!(b.text_of("#live-status").await, "paused");
    assert_eq!(row_progress().await.as_deref(), Some("80"), "paused");
    // Live again: it resumes where the page stood, so the update arrives.
    b.click("#live-toggle").await;
    within(
        LIVE_WITHIN * 2,
        "the missed update after resuming",
        || async { row_progress().await.as_deref() == Some("90") },
    )
    .await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_timeline_and_as_of_show_sub_events_and_the_earlier_state() {
    // Goal: the action page's timeline has one span per sub-event, with its name, result
    // and duration, bars placed by the script; the traceback is folded. Following an "as
    // of" link of the history shows the action as it stood then.
    let app = spawn_app().await;
    let (_, reader, [running, ..]) = seed(&app, "acme").await;
    let b = Browser::open(&app.base, Scheme::Light).await;
    b.sign_in(&reader).await;
    b.go(&format!("/console/actions/{running}")).await;
    let spans = b.find_all(Locator::Css("#timeline li.span")).await.unwrap();
    assert_eq!(spans.len(), 2);
    let mut names = Vec::new();
    for s in &spans {
        let name = s
            .find(Locator::Css(".span-name"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let duration = s
            .find(Locator::Css(".span-duration"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            duration.ends_with(" ms") || duration.ends_with(" s"),
            "{name}: duration {duration:?}"
        );
        let width = s
            .find(Locator::Css(".span-bar"))
            .await
            .unwrap()
            .rectangle()
            .await
            .unwrap()
            .2;
        assert!(width > 0.0, "{name}: the bar has a width");
        names.push((name, s.attr("data-result").await.unwrap().unwrap()));
    }
    assert_eq!(
        names,
        vec![
            ("compute_resize".to_string(), "success".to_string()),
            ("compute_migrate".to_string(), "error".to_string())
        ]
    );
    // The traceback is folded until opened.
    let tb = b
        .find(Locator::Css("#timeline details.traceback"))
        .await
        .unwrap();
    assert!(!tb
        .find(Locator::Css("pre"))
        .await
        .unwrap()
        .is_displayed()
        .await
        .unwrap());
    tb.find(Locator::Css("summary"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(tb
        .find(Locator::Css("pre"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .contains("boom"));

    // As of the second record (the first sub-event started, no progress yet).
    let links = b.find_all(Locator::Css("a.as-of-link")).await.unwrap();
    assert_eq!(links.len(), 6, "one per record");
    links[1].click().await.unwrap();
    b.until("the as-of view", || async {
        b.at().await.contains("as_of=")
    })
    .await;
    assert_eq!(b.count("#as-of-banner").await, 1);
    let main = b.find(Locator::Css("main.action-page")).await.unwrap();
    assert_eq!(
        main.attr("data-progress").await.unwrap().as_deref(),
        Some("0")
    );
    assert_eq!(
        main.attr("data-status").await.unwrap().as_deref(),
        Some("running")
    );
    assert_eq!(b.count("#timeline li.span").await, 1);
    assert_eq!(b.count("#pending-ops").await, 0);
    assert_eq!(b.text_of("#action-version").await, "2");
    // Back to the current state.
    b.click("#as-of-current").await;
    b.until("the current state", || async {
        !b.at().await.contains("as_of=")
    })
    .await;
    assert_eq!(b.count("#timeline li.span").await, 2);
    b.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reader_of_another_tenant_sees_none_of_its_actions() {
    // Goal: tenant B's reader finds none of tenant A's actions on any console page: the
    // list (filters included), A's action pages, A's resources, the as-of view.
    let app = spawn_app().await;
    let (_, _, a_ids) = seed(&app, "acme").await;
    let (_, b_reader, b_ids) = seed(&app, "globex").await;
    let b = Browser::open(&app.base, Scheme::Light).await;
    b.sign_in(&b_reader).await;
    let mut shown = row_ids(&b).await;
    shown.sort_unstable();
    assert_eq!(shown, b_ids.to_vec());
    for path in [
        "/console/actions?tenant=acme".to_string(),
        "/console/actions?resource_type=droplet&resource_id=acme-1".to_string(),
        "/console/resources/droplet/acme-1".to_string(),
        "/console/resources/volume/acme-v".to_string(),
        format!("/console/actions/{}", a_ids[0]),
        format!("/console/actions/{}?as_of=1", a_ids[0]),
        format!("/console/actions/{}", a_ids[1]),
        format!("/console/actions/{}/cancel", a_ids[0]),
    ] {
        b.go(&path).await;
        let text = b.page_text().await;
        // Nothing of acme's but what the URL itself names.
        for needle in [
            "acme-1",
            "acme-2",
            "acme-v",
            "acme-w",
            "grow the acme disk",
            "acme broke",
        ] {
            if !path.contains(needle) {
                assert!(!text.contains(needle), "{path} shows {needle:?}:\n{text}");
            }
        }
        for id in a_ids {
            assert_eq!(
                b.count(&format!("tr.action-row[data-id='{id}']")).await,
                0,
                "{path} lists action {id}"
            );
        }
        if path.starts_with("/console/actions/") {
            assert_eq!(
                b.count("#error-message").await + b.count("#error-title").await,
                2,
                "{path} is an error page: {text}"
            );
        }
    }
    b.close().await;
}

/// Texts that would run script or add elements if a page did not escape them.
const PAYLOADS: [&str; 2] = [
    "<script>alert('xss')</script>",
    "\"><img src=x onerror=alert('xss')>",
];

#[tokio::test(flavor = "multi_thread")]
async fn script_and_markup_in_every_text_field_render_as_text() {
    // Goal: user input in every text field of an action (type, user, resource type and
    // id, related resources, description, labels, node, region, message, state, error,
    // sub-event names, hosts, tracebacks and details, pending operations) and in the list's
    // filters shows as the text it is on every page: no alert, no element it would add.
    let app = spawn_app().await;
    let writer = app.token("w", "acme", "writer").await;
    let mut ids = Vec::new();
    for (i, p) in PAYLOADS.iter().enumerate() {
        let id = create(
            &app,
            &writer,
            json!({"type": p, "user": p, "description": p, "node": p, "region": p,
                   "uid": format!("u{i}{}", p.replace('/', "")),
                   "labels": {*p: p}, "resource": {"type": p, "id": p},
                   "related": [{"type": "volume", "id": p}]}),
        )
        .await;
        for body in [
            json!({"type": "event_started", "name": p, "host": p}),
            json!({"type": "progress", "progress": 10, "message": p, "state": p,
                   "pending_ops": {*p: {"op_name": p, "progress": 5, "status_description": p}}}),
            json!({"type": "event_finished", "name": p, "result": "error", "traceback": p, "details": p}),
            json!({"type": "failed", "error": {"code": p, "message": p}}),
        ] {
            event(&app, &writer, id, body).await;
        }
        ids.push(id);
    }
    let b = Browser::open(&app.base, Scheme::Light).await;
    b.sign_in(&writer).await;
    let enc = |s: &str| {
        s.bytes()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    (c as char).to_string()
                } else {
                    format!("%{c:02X}")
                }
            })
            .collect::<String>()
    };
    let mut pages = vec!["/console/actions".to_string()];
    for (p, id) in PAYLOADS.iter().zip(&ids) {
        pages.push(format!("/console/actions/{id}"));
        let (_, h) = app
            .get(&format!("/api/v1/actions/{id}/history"), &writer)
            .await;
        pages.push(format!(
            "/console/actions/{id}?as_of={}",
            h["records"][2]["position"]
        ));
        pages.push(format!("/console/resources/{}/{}", enc(p), enc(p)));
        pages.push(format!("/console/resources/volume/{}", enc(p)));
        pages.push(format!(
            "/console/actions?type={}&user={}&resource_type={}",
            enc(p),
            enc(p),
            enc(p)
        ));
        pages.push(format!("/console/actions/{id}/cancel"));
    }
    for path in &pages {
        b.go(path).await;
        assert!(b.get_alert_text().await.is_err(), "{path}: an alert opened");
        assert_eq!(b.count("img").await, 0, "{path}: an injected element");
        assert_eq!(
            b.js("return document.scripts.length").await,
            json!(1),
            "{path}: an injected script"
        );
        let text = b.page_text().await;
        let fields: Value = b
            .js("return Array.from(document.querySelectorAll('input')).map(i => i.value)")
            .await;
        let shown = PAYLOADS
            .iter()
            .any(|p| text.contains(p) || fields.as_array().unwrap().iter().any(|v| v == p));
        assert!(shown, "{path}: the payload is not shown as text:\n{text}");
    }
    b.close().await;
}

/// Marks every control of the page a keyboard user should reach (visible, enabled links,
/// buttons, fields, summaries) with `data-tab-i`, and says how many there are.
const MARK_CONTROLS: &str = r#"
const sel = 'a[href], button, input:not([type=hidden]), select, textarea, summary, [tabindex]:not([tabindex="-1"])';
const els = Array.from(document.querySelectorAll(sel)).filter(e =>
  !e.disabled && e.getClientRects().length > 0 && getComputedStyle(e).visibility !== 'hidden'
  && !e.closest('details:not([open]) > :not(summary)'));
els.forEach((e, i) => e.setAttribute('data-tab-i', i));
document.activeElement && document.activeElement.blur();
return els.length;
"#;

/// What has the focus: its `data-tab-i` and whether its focus is drawn (an outline or a
/// shadow under `:focus-visible`).
const FOCUSED: &str = r#"
const e = document.activeElement;
if (!e || e === document.body) return null;
const s = getComputedStyle(e);
// A date field's focus is on one of its parts (inside it), which Chromium highlights.
const inner = e.type === 'datetime-local';
const drawn = inner || e.matches(':focus-visible') && (s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0 || s.boxShadow !== 'none');
return [e.getAttribute('data-tab-i'), drawn, e.outerHTML.slice(0, 120)];
"#;

#[tokio::test(flavor = "multi_thread")]
async fn tab_reaches_every_control_with_visible_focus() {
    // Goal: on every page, pressing Tab from the top reaches every visible control, in turn,
    // each with a visible focus ring.
    let app = spawn_app().await;
    let (writer, _, [running, ..]) = seed(&app, "acme").await;
    let b = Browser::open(&app.base, Scheme::Light).await;
    b.go("/console/login").await;
    let mut pages = vec![("/console/login".to_string(), false)];
    pages.extend([
        ("/console/actions".to_string(), true),
        (format!("/console/actions/{running}"), true),
        (format!("/console/actions/{running}?as_of=2"), true),
        ("/console/resources/droplet/acme-1".to_string(), true),
        (format!("/console/actions/{running}/cancel"), true),
    ]);
    for (path, signed_in) in pages {
        if signed_in && b.count("#logout").await == 0 {
            b.sign_in(&writer).await;
        }
        b.go(&path).await;
        let n = b.js(MARK_CONTROLS).await.as_u64().unwrap() as usize;
        assert!(n >= 2, "{path}: {n} controls");
        let mut reached = vec![false; n];
        let mut others = Vec::new();
        for _ in 0..2 * n + 10 {
            b.tab().await;
            let f = b.js(FOCUSED).await;
            let Some(f) = f.as_array() else { continue };
            let Some(i) = f[0].as_str().and_then(|i| i.parse::<usize>().ok()) else {
                others.push(f[2].clone());
                continue;
            };
            assert_eq!(f[1], true, "{path}: no visible focus on {}", f[2]);
            reached[i] = true;
            if reached.iter().all(|r| *r) {
                break;
            }
        }
        let missed: Value = b
            .js(&format!(
                "return Array.from(document.querySelectorAll('[data-tab-i]')).filter(e => {:?}.includes(+e.getAttribute('data-tab-i'))).map(e => e.outerHTML.slice(0, 100))",
                reached
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| !**r)
                    .map(|(i, _)| i)
                    .collect::<Vec<_>>()
            ))
            .await;
        assert_eq!(
            missed,
            json!([]),
            "{path}: Tab never reached these (it stopped on {others:?})"
        );
    }
    b.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_page_in_light_and_dark() {
    // Goal: screenshots of every console page in both color schemes, under
    // target/console-shots/ (for people to look at); the dark scheme really is dark (the
    // page background's luminance) and the light one light.
    let app = spawn_app().await;
    let (writer, _, [running, failed, _]) = seed(&app, "acme").await;
    for i in 0..12 {
        create(
            &app,
            &writer,
            json!({"type": if i % 3 == 0 { "resize" } else { "snapshot" },
                   "resource": {"type": "droplet", "id": format!("d-{i}")}}),
        )
        .await;
    }
    for scheme in [Scheme::Light, Scheme::Dark] {
        let b = Browser::open(&app.base, scheme).await;
        b.go("/console/login").await;
        b.shot("login", scheme).await;
        b.sign_in(&writer).await;
        for (name, path) in [
            ("list", "/console/actions".to_string()),
            (
                "list-filtered",
                "/console/actions?status=running&type=resize".to_string(),
            ),
            ("action", format!("/console/actions/{running}")),
            ("action-failed", format!("/console/actions/{failed}")),
            (
                "action-as-of",
                format!("/console/actions/{running}?as_of=2"),
            ),
            ("resource", "/console/resources/droplet/acme-1".to_string()),
            ("cancel", format!("/console/actions/{running}/cancel")),
            ("not-found", "/console/actions/424242".to_string()),
        ] {
            b.go(&path).await;
            // Times are rendered and bars placed by the deferred script.
            b.until("the script to run", || async {
                b.js("return document.readyState").await == json!("complete")
            })
            .await;
            b.shot(name, scheme).await;
        }
        let bg: Value = b
            .js("const c = getComputedStyle(document.body).backgroundColor.match(/\\d+/g).map(Number); return (c[0] + c[1] + c[2]) / 3")
            .await;
        let bg = bg.as_f64().unwrap();
        match scheme {
            Scheme::Dark => assert!(bg < 80.0, "dark background {bg}"),
            Scheme::Light => assert!(bg > 180.0, "light background {bg}"),
        }
        b.close().await;
    }
}
