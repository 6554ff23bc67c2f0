//! `action-ledger actions list|get|history|wait|watch|create|event|cancel`: the native
//! actions routes of a running server (docs/api.md), one subcommand per route.

use super::client::{idempotency_key, Client, SseParser};
use super::output::{self, Printer};
use super::{parse_duration, read_body, OutputFormat, RemoteOpts};
use crate::cli::{CliResult, Failure};
use crate::limits::{
    REMOTE_WATCH_IDLE_MS, REMOTE_WATCH_RECONNECTS_MAX, REMOTE_WATCH_RECONNECT_DELAY_MS,
    WAIT_MS_DEFAULT,
};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Map, Value};
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct ActionsArgs {
    #[command(flatten)]
    pub remote: RemoteOpts,
    #[command(subcommand)]
    pub command: ActionsCmd,
}

#[derive(Subcommand, Debug)]
pub enum ActionsCmd {
    /// List actions, newest first (GET /api/v1/actions). One page unless --all; the
    /// cursor of the next page is printed on stderr.
    List(ListArgs),
    /// One action by id or uid (GET /api/v1/actions/{id}).
    Get {
        /// The action's id or uid.
        id: String,
        /// The action as it stood at a log position or an RFC 3339 time.
        #[arg(long, value_name = "POSITION|TIME")]
        as_of: Option<String>,
    },
    /// Every log record that touched an action, oldest first
    /// (GET /api/v1/actions/{id}/history).
    History {
        /// The action's id or uid.
        id: String,
    },
    /// Wait until an action is terminal (completed, failed or cancelled) and print it
    /// (GET /api/v1/actions/{id}/wait, repeated). Exit 0 whatever the terminal status.
    Wait {
        /// The action's id or uid.
        id: String,
        /// Give up after this long (`30s`, `10m`): print the action as it is and exit 1.
        /// Default: wait as long as it takes.
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
        wait_for: Option<Duration>,
    },
    /// Print committed events as they happen (GET /api/v1/watch), resuming after a
    /// dropped connection where it stopped.
    Watch(WatchArgs),
    /// Create an action (POST /api/v1/actions). The body is --body's JSON object, with the
    /// flags given set on it; `type` and `resource` are required.
    Create(CreateArgs),
    /// Record one event of an action (POST /api/v1/actions/{id}/events). The body is
    /// --body's JSON object, with the flags given set on it; `type` is required.
    Event(EventArgs),
    /// Ask for an action's cancellation (POST /api/v1/actions/{id}/cancel).
    Cancel {
        /// The action's id or uid.
        id: String,
        /// Sent as `Idempotency-Key`: a repeat records nothing and answers as the first.
        #[arg(long, value_name = "KEY")]
        idempotency_key: Option<String>,
    },
}

/// The filters of list and watch (the same query parameters).
#[derive(Args, Debug, Default)]
pub struct Filters {
    /// A resource's type (with --resource-id: that resource, primary or related).
    #[arg(long, value_name = "TYPE")]
    pub resource_type: Option<String>,
    /// A resource's id (needs --resource-type).
    #[arg(long, value_name = "ID")]
    pub resource_id: Option<String>,
    /// The action type.
    #[arg(long = "type", value_name = "TYPE")]
    pub action_type: Option<String>,
    #[arg(long)]
    pub user: Option<String>,
    /// task, state-machine or other.
    #[arg(long)]
    pub kind: Option<String>,
    /// Only this tenant (admin; others may name only their own).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only these action ids (repeatable, or comma-separated).
    #[arg(long = "id", value_name = "ID")]
    pub ids: Vec<String>,
}

impl Filters {
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        let pairs = [
            ("resource_type", &self.resource_type),
            ("resource_id", &self.resource_id),
            ("type", &self.action_type),
            ("user", &self.user),
            ("kind", &self.kind),
            ("tenant", &self.tenant),
        ];
        for (k, v) in pairs {
            if let Some(v) = v {
                q.push((k, v.clone()));
            }
        }
        q.extend(self.ids.iter().map(|id| ("id", id.clone())));
        q
    }
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub filters: Filters,
    /// Only these statuses (repeatable, or comma-separated).
    #[arg(long, value_name = "STATUS")]
    pub status: Vec<String>,
    /// Created at or after this RFC 3339 time.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Created before this RFC 3339 time.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Updated at or after this RFC 3339 time.
    #[arg(long, value_name = "TIME")]
    pub updated_since: Option<String>,
    /// Updated before this RFC 3339 time.
    #[arg(long, value_name = "TIME")]
    pub updated_until: Option<String>,
    /// Page size (the server's default 50, at most its LIST_LIMIT_MAX).
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Start at this page (the cursor printed after the previous one).
    #[arg(long)]
    pub cursor: Option<String>,
    /// Follow the cursors to the last page.
    #[arg(long)]
    pub all: bool,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    pub filters: Filters,
    /// Only this action (id or uid); the watch ends when it is terminal. On a terminal, a
    /// live progress bar shows it.
    #[arg(long, value_name = "ID")]
    pub action: Option<String>,
    /// Only operations of these types (`created`, `started`, `progress`, …; repeatable,
    /// or comma-separated).
    #[arg(long, value_name = "TYPE")]
    pub event_type: Vec<String>,
    /// Only operations that leave their action in one of these statuses (repeatable, or
    /// comma-separated).
    #[arg(long, value_name = "STATUS")]
    pub status: Vec<String>,
    /// Start after this log position (default: from now).
    #[arg(long, value_name = "POSITION")]
    pub after: Option<u64>,
    /// Stop after this many events.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The action's type (`snapshot`, `reboot`, …).
    #[arg(long = "type", value_name = "TYPE")]
    pub action_type: Option<String>,
    /// The type of the resource it acts on.
    #[arg(long, value_name = "TYPE")]
    pub resource_type: Option<String>,
    /// The id of the resource it acts on.
    #[arg(long, value_name = "ID")]
    pub resource_id: Option<String>,
    /// The client's id for the action (default: generated `al-{id}`).
    #[arg(long)]
    pub uid: Option<String>,
    /// task, state-machine or other.
    #[arg(long)]
    pub kind: Option<String>,
    /// queued (default) or running.
    #[arg(long)]
    pub status: Option<String>,
    #[arg(long)]
    pub description: Option<String>,
    #[arg(long)]
    pub user: Option<String>,
    #[arg(long)]
    pub node: Option<String>,
    #[arg(long)]
    pub region: Option<String>,
    /// Create it for this tenant (admin; default the token's).
    #[arg(long)]
    pub tenant: Option<String>,
    /// A label, KEY=VALUE (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Refuse while the resource has an unfinished exclusive action.
    #[arg(long)]
    pub exclusive: bool,
    /// A JSON object to start the body from: a file, or `-` for stdin.
    #[arg(long, value_name = "FILE|-")]
    pub body: Option<String>,
    /// Sent as `Idempotency-Key`: a repeat records nothing and answers as the first.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
}

#[derive(Args, Debug)]
pub struct EventArgs {
    /// The action's id or uid.
    pub id: String,
    /// The event: started, progress, event_started, event_finished, heartbeat, completed,
    /// failed, cancel_requested, cancelled.
    #[arg(value_name = "TYPE")]
    pub event_type: Option<String>,
    /// progress: 0–100.
    #[arg(long)]
    pub progress: Option<f64>,
    /// progress: the worker's state.
    #[arg(long)]
    pub state: Option<String>,
    /// progress, completed, cancelled: a message.
    #[arg(long)]
    pub message: Option<String>,
    /// event_started, event_finished: the sub-event's name.
    #[arg(long)]
    pub name: Option<String>,
    /// event_started: the host.
    #[arg(long)]
    pub host: Option<String>,
    /// event_finished: success or error.
    #[arg(long)]
    pub result: Option<String>,
    /// event_finished.
    #[arg(long)]
    pub traceback: Option<String>,
    /// event_finished.
    #[arg(long)]
    pub details: Option<String>,
    /// failed: the error's code (with --error-message).
    #[arg(long, value_name = "CODE")]
    pub error_code: Option<String>,
    /// failed: the error's message (with --error-code).
    #[arg(long, value_name = "MESSAGE")]
    pub error_message: Option<String>,
    /// Record the event only if the action's version is this (else 409).
    #[arg(long, value_name = "N")]
    pub expected_version: Option<u64>,
    /// A JSON object to start the body from: a file, or `-` for stdin.
    #[arg(long, value_name = "FILE|-")]
    pub body: Option<String>,
    /// Sent as `Idempotency-Key`: a repeat records nothing and answers as the first.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
}

pub fn run(args: ActionsArgs) -> CliResult {
    let client = Client::new(&args.remote)?;
    let printer = Printer::new(args.remote.format());
    super::block_on(async move {
        match args.command {
            ActionsCmd::List(a) => list(&client, &printer, a).await,
            ActionsCmd::Get { id, as_of } => {
                let query: Vec<(&str, String)> = as_of.into_iter().map(|v| ("as_of", v)).collect();
                let a = client.get(&["api", "v1", "actions", &id], &query).await?;
                printer.actions(&[a])
            }
            ActionsCmd::History { id } => history(&client, &printer, &id).await,
            ActionsCmd::Wait { id, wait_for } => wait(&client, &printer, &id, wait_for).await,
            ActionsCmd::Watch(a) => watch(&client, &printer, a).await,
            ActionsCmd::Create(a) => create(&client, &printer, a).await,
            ActionsCmd::Event(a) => event(&client, &printer, a).await,
            ActionsCmd::Cancel {
                id,
                idempotency_key: key,
            } => {
                let url = client.url(&["api", "v1", "actions", &id, "cancel"], &[]);
                let req = idempotency_key(client.request(Method::POST, url), key.as_deref())?;
                let a = client.call(req, Duration::ZERO).await?;
                printer.actions(&[a])
            }
        }
    })
}

async fn list(client: &Client, printer: &Printer, a: ListArgs) -> CliResult {
    let mut base = a.filters.query();
    base.extend(a.status.iter().map(|s| ("status", s.clone())));
    let times = [
        ("since", &a.since),
        ("until", &a.until),
        ("updated_since", &a.updated_since),
        ("updated_until", &a.updated_until),
    ];
    for (k, v) in times {
        if let Some(v) = v {
            base.push((k, v.clone()));
        }
    }
    if let Some(l) = a.limit {
        base.push(("limit", l.to_string()));
    }
    let mut cursor = a.cursor.clone();
    // A table is aligned over every page, so it is printed once at the end.
    let mut rows = Vec::new();
    let mut shown = 0;
    loop {
        let mut query = base.clone();
        if let Some(c) = &cursor {
            query.push(("cursor", c.clone()));
        }
        let page = client.get(&["api", "v1", "actions"], &query).await?;
        let actions = page["actions"].as_array().cloned().unwrap_or_default();
        shown += actions.len();
        match printer.format {
            OutputFormat::Json => printer.actions(&actions)?,
            OutputFormat::Table => rows.extend(actions.iter().map(output::action_row)),
        }
        let next = page["next_cursor"].as_str().map(str::to_string);
        match next {
            Some(n) if a.all && cursor.as_deref() != Some(n.as_str()) => cursor = Some(n),
            Some(n) if !a.all => {
                if printer.format == OutputFormat::Table {
                    printer.table(&output::ACTION_COLUMNS, &rows)?;
                }
                eprintln!(
                    "{shown} of {} shown; next page: --cursor {n} (or --all)",
                    output::cell(&page["total"])
                );
                return Ok(());
            }
            _ => break,
        }
    }
    if printer.format == OutputFormat::Table {
        printer.table(&output::ACTION_COLUMNS, &rows)?;
    }
    Ok(())
}

async fn history(client: &Client, printer: &Printer, id: &str) -> CliResult {
    let ans = client
        .get(&["api", "v1", "actions", id, "history"], &[])
        .await?;
    let records = ans["records"].as_array().cloned().unwrap_or_default();
    match printer.format {
        OutputFormat::Json => records.iter().try_for_each(|r| printer.json(r)),
        OutputFormat::Table => {
            let rows: Vec<Vec<String>> = records.iter().map(output::record_row).collect();
            printer.table(&output::RECORD_COLUMNS, &rows)
        }
    }
}

fn is_terminal(a: &Value) -> bool {
    matches!(
        a["status"].as_str(),
        Some("completed" | "failed" | "cancelled")
    )
}

async fn wait(
    client: &Client,
    printer: &Printer,
    id: &str,
    wait_for: Option<Duration>,
) -> CliResult {
    let deadline = wait_for.map(|d| Instant::now() + d);
    // The live bar follows the action's watch stream while the wait route waits.
    let bar = if output::bar_allowed() {
        let a = client.get(&["api", "v1", "actions", id], &[]).await?;
        if is_terminal(&a) {
            return printer.actions(&[a]);
        }
        Some((output::progress_bar(&a), a["id"].to_string()))
    } else {
        None
    };
    let waited = async {
        let mut per_request = WAIT_MS_DEFAULT;
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let ms = left.map_or(per_request, |l| per_request.min(l.as_millis() as u64));
            let url = client.url(
                &["api", "v1", "actions", id, "wait"],
                &[("timeout_ms", ms.to_string())],
            );
            let req = client.request(Method::GET, url);
            let a = match client.call(req, Duration::from_millis(ms)).await {
                Ok(a) => a,
                // A server whose wait_ms_max is below the default: wait in its steps.
                Err(Failure::Refused(msg))
                    if msg.contains("WAIT_MS_MAX") && per_request > 1_000 =>
                {
                    per_request = 1_000;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if is_terminal(&a) {
                return Ok((a, true));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok((a, false));
            }
        }
    };
    let result = match &bar {
        Some((bar, action_id)) => {
            tokio::select! {
                r = waited => r,
                () = follow(client, action_id, bar) => unreachable!("follow never ends"),
            }
        }
        None => waited.await,
    };
    if let Some((bar, _)) = &bar {
        bar.finish_and_clear();
    }
    let (a, done) = result?;
    printer.actions(std::slice::from_ref(&a))?;
    if done {
        Ok(())
    } else {
        Err(Failure::Refused(format!(
            "action {} is still {} after {:?} (--for)",
            output::cell(&a["id"]),
            output::cell(&a["status"]),
            wait_for.unwrap_or_default()
        )))
    }
}

/// Moves `bar` with the watch stream of one action, for as long as it is polled; a failed
/// stream just leaves the bar where it is (the wait decides the outcome).
async fn follow(client: &Client, action_id: &str, bar: &indicatif::ProgressBar) {
    let query = [("id", action_id.to_string())];
    let req = client.request(Method::GET, client.url(&["api", "v1", "watch"], &query));
    if let Ok(mut resp) = client.open(req).await {
        let mut parser = SseParser::default();
        while let Ok(Some(chunk)) = resp.chunk().await {
            let Ok(events) = parser.feed(&chunk) else {
                break;
            };
            for ev in events {
                if let Ok(d) = serde_json::from_str::<Value>(&ev.data) {
                    output::set_from_op(bar, &d["event"]);
                }
            }
        }
    }
    std::future::pending::<()>().await
}

async fn watch(client: &Client, printer: &Printer, a: WatchArgs) -> CliResult {
    let mut query = a.filters.query();
    // `--action`: its numeric id (the watch filters by id), resolved from a uid if need be.
    let action_id = match &a.action {
        None => None,
        Some(id) if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) => Some(id.clone()),
        Some(uid) => {
            let act = client.get(&["api", "v1", "actions", uid], &[]).await?;
            Some(act["id"].to_string())
        }
    };
    if let Some(id) = &action_id {
        query.push(("id", id.clone()));
    }
    query.extend(a.event_type.iter().map(|t| ("event_type", t.clone())));
    query.extend(a.status.iter().map(|s| ("status", s.clone())));
    if let Some(after) = a.after {
        query.push(("after", after.to_string()));
    }
    let url = client.url(&["api", "v1", "watch"], &query);
    let mut last_id: Option<String> = None;
    let mut seen: u64 = 0;
    let mut failures: u32 = 0;
    let mut bar: Option<indicatif::ProgressBar> = None;
    let result = loop {
        if a.count.is_some_and(|n| seen >= n) {
            break Ok(());
        }
        let mut req = client.request(Method::GET, url.clone());
        if let Some(id) = &last_id {
            req = req.header("last-event-id", id.as_str());
        }
        let mut resp = match client.open(req).await {
            Ok(r) => r,
            // The first connection must work; a later failure is retried with a backoff.
            Err(Failure::Error(msg)) if last_id.is_some() || failures > 0 => {
                failures += 1;
                if failures > REMOTE_WATCH_RECONNECTS_MAX {
                    break Err(Failure::Error(format!(
                        "{msg} (gave up after {REMOTE_WATCH_RECONNECTS_MAX} reconnections)"
                    )));
                }
                let delay = REMOTE_WATCH_RECONNECT_DELAY_MS << (failures - 1).min(10);
                tokio::time::sleep(Duration::from_millis(delay)).await;
                continue;
            }
            Err(e) => break Err(e),
        };
        failures = 0;
        if let (Some(id), None) = (&action_id, &bar) {
            // The stream is open (it starts from now): the action's current state, read
            // after it, misses nothing. Already terminal: nothing more will happen.
            let act = client.get(&["api", "v1", "actions", id], &[]).await?;
            if is_terminal(&act) && a.after.is_none() && last_id.is_none() {
                eprintln!("action {id} is already {}", output::cell(&act["status"]));
                break Ok(());
            }
            bar = Some(if output::bar_allowed() {
                output::progress_bar(&act)
            } else {
                indicatif::ProgressBar::hidden()
            });
        }
        let mut parser = SseParser::default();
        let idle = Duration::from_millis(REMOTE_WATCH_IDLE_MS);
        let outcome: Result<bool, Failure> = 'stream: loop {
            let chunk = match tokio::time::timeout(idle, resp.chunk()).await {
                Ok(Ok(Some(c))) => c,
                // Ended, broken or silent for too long: resume from the last id.
                Ok(Ok(None)) | Ok(Err(_)) | Err(_) => break Ok(false),
            };
            let events = match parser.feed(&chunk) {
                Ok(e) => e,
                Err(msg) => break Err(Failure::error(msg)),
            };
            for ev in events {
                if ev.event.as_deref() == Some("revoked") {
                    break 'stream Err(Failure::Refused(
                        "the token was revoked (watch ended by the server)".into(),
                    ));
                }
                if ev.id.is_some() {
                    last_id = ev.id.clone();
                }
                let d: Value = match serde_json::from_str(&ev.data) {
                    Ok(d) => d,
                    Err(_) => continue,
                };
                let print = || match printer.format {
                    OutputFormat::Json => printer.json(&d),
                    OutputFormat::Table => printer.line(&output::watch_line(&d)),
                };
                match &bar {
                    Some(b) => {
                        b.suspend(print)?;
                        output::set_from_op(b, &d["event"]);
                    }
                    None => print()?,
                }
                seen += 1;
                let ended = action_id.is_some()
                    && matches!(
                        d["event"]["type"].as_str(),
                        Some("completed" | "failed" | "cancelled")
                    );
                if ended || a.count.is_some_and(|n| seen >= n) {
                    break 'stream Ok(true);
                }
            }
        };
        match outcome {
            Ok(true) => break Ok(()),
            Ok(false) => {
                // Dropped: reconnect (after a pause) with Last-Event-ID.
                tokio::time::sleep(Duration::from_millis(REMOTE_WATCH_RECONNECT_DELAY_MS)).await;
                if last_id.is_none() {
                    // Nothing seen yet: resume from where the first stream started.
                    failures += 1;
                    if failures > REMOTE_WATCH_RECONNECTS_MAX {
                        break Err(Failure::error("the watch stream keeps ending"));
                    }
                }
            }
            Err(e) => break Err(e),
        }
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    result
}

async fn create(client: &Client, printer: &Printer, a: CreateArgs) -> CliResult {
    let mut body = read_body(a.body.as_deref())?;
    set_str(&mut body, "type", a.action_type);
    if a.resource_type.is_some() || a.resource_id.is_some() {
        let r = body
            .entry("resource")
            .or_insert_with(|| Value::Object(Map::new()));
        let Some(r) = r.as_object_mut() else {
            return Err(Failure::error("--body: `resource` must be an object"));
        };
        set_str(r, "type", a.resource_type);
        set_str(r, "id", a.resource_id);
    }
    set_str(&mut body, "uid", a.uid);
    set_str(&mut body, "kind", a.kind);
    set_str(&mut body, "status", a.status);
    set_str(&mut body, "description", a.description);
    set_str(&mut body, "user", a.user);
    set_str(&mut body, "node", a.node);
    set_str(&mut body, "region", a.region);
    set_str(&mut body, "tenant", a.tenant);
    if a.exclusive {
        body.insert("exclusive".into(), Value::Bool(true));
    }
    if !a.labels.is_empty() {
        let labels = body
            .entry("labels")
            .or_insert_with(|| Value::Object(Map::new()));
        let Some(labels) = labels.as_object_mut() else {
            return Err(Failure::error("--body: `labels` must be an object"));
        };
        for l in a.labels {
            let Some((k, v)) = l.split_once('=') else {
                return Err(Failure::error(format!("--label {l:?}: must be KEY=VALUE")));
            };
            labels.insert(k.to_string(), Value::String(v.to_string()));
        }
    }
    let resource_ok = body
        .get("resource")
        .and_then(Value::as_object)
        .is_some_and(|r| r.contains_key("type") && r.contains_key("id"));
    if !body.contains_key("type") || !resource_ok {
        return Err(Failure::error(
            "create needs --type, --resource-type and --resource-id (or a --body holding \
             `type` and `resource`)",
        ));
    }
    let url = client.url(&["api", "v1", "actions"], &[]);
    let req = client
        .request(Method::POST, url)
        .header("content-type", "application/json")
        .body(Value::Object(body).to_string());
    let req = idempotency_key(req, a.idempotency_key.as_deref())?;
    let act = client.call(req, Duration::ZERO).await?;
    printer.actions(&[act])
}

async fn event(client: &Client, printer: &Printer, a: EventArgs) -> CliResult {
    let mut body = read_body(a.body.as_deref())?;
    set_str(&mut body, "type", a.event_type);
    if let Some(p) = a.progress {
        body.insert("progress".into(), Value::from(p));
    }
    set_str(&mut body, "state", a.state);
    set_str(&mut body, "message", a.message);
    set_str(&mut body, "name", a.name);
    set_str(&mut body, "host", a.host);
    set_str(&mut body, "result", a.result);
    set_str(&mut body, "traceback", a.traceback);
    set_str(&mut body, "details", a.details);
    match (a.error_code, a.error_message) {
        (None, None) => {}
        (Some(code), Some(message)) => {
            body.insert(
                "error".into(),
                serde_json::json!({"code": code, "message": message}),
            );
        }
        _ => {
            return Err(Failure::error(
                "--error-code and --error-message go together",
            ))
        }
    }
    if let Some(v) = a.expected_version {
        body.insert("expected_version".into(), Value::from(v));
    }
    if !body.contains_key("type") {
        return Err(Failure::error(
            "event needs its TYPE (started, progress, completed, …) or a --body with `type`",
        ));
    }
    let url = client.url(&["api", "v1", "actions", &a.id, "events"], &[]);
    let req = client
        .request(Method::POST, url)
        .header("content-type", "application/json")
        .body(Value::Object(body).to_string());
    let req = idempotency_key(req, a.idempotency_key.as_deref())?;
    let act = client.call(req, Duration::ZERO).await?;
    printer.actions(&[act])
}

fn set_str(body: &mut Map<String, Value>, key: &str, v: Option<String>) {
    if let Some(v) = v {
        body.insert(key.into(), Value::String(v));
    }
}
