//! The console's pages, rendered on the server with maud (which escapes every interpolated
//! value: descriptions, labels, tracebacks and resource ids are user input, and nothing
//! here ever marks user data as pre-escaped). Each page is one indexed query: a list page
//! is one page of the projection's list (the API's keyset cursors), an action page one
//! load, one page of its history and, for "as of", one fold of its history up to a
//! position through the ledger (the same read as the API's `?as_of=`).
//!
//! What the browser tests and the JS rely on (ids, classes, data attributes) is listed in
//! the module documentation of the JS file, `assets/console.js`.

use super::{assets, cross_site, session, PageError, Viewer};
use crate::event::{Action, ActionRef, Command, EventBody, RecordEvent, ResourceRef, Status};
use crate::http::auth::{allows, still_valid};
use crate::http::error::ApiError;
use crate::http::{load_action, AppState};
use crate::json::{op_json, parse_time, rfc3339};
use crate::ledger::AsOf;
use crate::limits::{CONSOLE_HISTORY_PAGE_RECORDS, CONSOLE_PAGE_ROWS, CONSOLE_PAGE_TRAIL_MAX};
use crate::projection::query::ActionQuery;
use crate::projection::Page;
use crate::tokens::{Principal, Role};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};
use std::sync::Arc;

/// The list filters a console URL may carry (the API's names); anything else is ignored.
pub const FILTER_KEYS: [&str; 9] = [
    "status",
    "type",
    "resource_type",
    "resource_id",
    "user",
    "kind",
    "since",
    "until",
    "tenant",
];

/// A page as an HTML answer.
pub fn html_response(status: StatusCode, page: Markup) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        page.into_string(),
    )
        .into_response()
}

/// Percent-encodes `s` for a query value or a path segment (everything but RFC 3986's
/// unreserved characters).
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `k=v&k=v`, encoded.
pub fn query_string(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn with_query(path: &str, pairs: &[(String, String)]) -> String {
    if pairs.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", query_string(pairs))
    }
}

/// The console URL of an action.
pub fn action_url(id: u64) -> String {
    format!("/console/actions/{id}")
}

/// The console URL of a resource.
pub fn resource_url(r: &ResourceRef) -> String {
    format!(
        "/console/resources/{}/{}",
        enc(&r.resource_type),
        enc(&r.id)
    )
}

/// Every page's frame: head (the CSS, the deferred JS), the top bar with who is signed in
/// and the sign-out button, then `body`.
fn layout(title: &str, viewer: Option<&Principal>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) " · action-ledger console" }
                link rel="stylesheet" href=(assets::url("console.css"));
                script src=(assets::url("console.js")) defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/console/actions" { "action-ledger" }
                    @if let Some(p) = viewer {
                        nav aria-label="Console" {
                            a href="/console/actions" { "Actions" }
                        }
                        span.spacer {}
                        button #tz-toggle type="button" title="Show times in UTC or local time" { "UTC" }
                        span #whoami.who {
                            (p.name) " · " (p.tenant) " · " (p.role.as_str())
                        }
                        form #logout-form method="post" action="/console/logout" {
                            button #logout type="submit" { "Sign out" }
                        }
                    }
                }
                (body)
            }
        }
    }
}

/// The sign-in page (`status`: 200, or 401 after a refused token, with `error`).
pub fn login_page(status: StatusCode, next: Option<&str>, error: Option<&str>) -> Response {
    let body = html! {
        main #main.narrow {
            h1 { "Sign in" }
            @if let Some(e) = error {
                p #login-error.alert role="alert" { (e) }
            }
            form #login-form method="post" action="/console/login" {
                label for="token" { "Token" }
                input #token type="password" name="token" autocomplete="current-password"
                    required autofocus spellcheck="false";
                @if let Some(next) = next {
                    input type="hidden" name="next" value=(next);
                }
                button type="submit" { "Sign in" }
            }
            p.hint { "The console shows what this token's role and tenant may see through the API." }
        }
    };
    html_response(status, layout("Sign in", None, body))
}

/// A page saying what went wrong (404 for an action the viewer may not see, as anywhere).
pub fn error_page(status: StatusCode, message: &str) -> Response {
    error_page_for(None, status, message)
}

/// [`error_page`] with the top bar of `viewer`, when known.
pub fn error_page_for(viewer: Option<&Principal>, status: StatusCode, message: &str) -> Response {
    let body = html! {
        main #main.narrow {
            h1 #error-title { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
            p #error-message.alert role="alert" { (message) }
            p { a href="/console/actions" { "Back to the actions" } }
        }
    };
    html_response(status, layout(status.as_str(), viewer, body))
}

// ---------------------------------------------------------------------------------------
// Filters and paging

/// The filters of a list URL, cleaned: only [`FILTER_KEYS`], no empty values (an empty
/// form field means "any"), times from a `datetime-local` field read as UTC; and its
/// paging (`cursor`, and `back`: the cursors of the newer pages, for the "newer" link).
pub struct ListView {
    pub filters: Vec<(String, String)>,
    pub cursor: Option<String>,
    pub back: Vec<String>,
}

impl ListView {
    pub fn read(raw: Vec<(String, String)>) -> ListView {
        let mut filters = Vec::new();
        let (mut cursor, mut back) = (None, Vec::new());
        for (k, v) in raw {
            let v = v.trim().to_string();
            if v.is_empty() {
                continue;
            }
            match k.as_str() {
                "cursor" => cursor = Some(v),
                "back" => {
                    back = v
                        .split('.')
                        .filter(|c| !c.is_empty())
                        .map(str::to_string)
                        .collect()
                }
                "since" | "until" => filters.push((k, local_to_rfc3339(&v))),
                key if FILTER_KEYS.contains(&key) => filters.push((k, v)),
                _ => {}
            }
        }
        let keep = back.len().saturating_sub(CONSOLE_PAGE_TRAIL_MAX);
        back.drain(..keep);
        ListView {
            filters,
            cursor,
            back,
        }
    }

    /// The API query for this view (the API's own parsing and checks: a reader's `tenant`
    /// other than its own is refused, a cursor of other filters is refused).
    pub fn query(&self, state: &AppState, p: &Principal) -> Result<ActionQuery, ApiError> {
        let mut pairs = self.filters.clone();
        if let Some(c) = &self.cursor {
            pairs.push(("cursor".into(), c.clone()));
        }
        let mut q =
            crate::http::native::parse_list_params(pairs, p, state.limits.list_limit_max)?.query;
        q.limit = CONSOLE_PAGE_ROWS.min(state.limits.list_limit_max);
        Ok(q)
    }

    fn value(&self, key: &str) -> &str {
        self.filters
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| v.as_str())
    }

    fn has(&self, key: &str, value: &str) -> bool {
        self.filters.iter().any(|(k, v)| k == key && v == value)
    }

    /// The URL of the older page (after `next_cursor`).
    fn older(&self, path: &str, next_cursor: &str) -> String {
        let mut pairs = self.filters.clone();
        pairs.push(("cursor".into(), next_cursor.into()));
        let mut back = self.back.clone();
        if let Some(c) = &self.cursor {
            back.push(c.clone());
        }
        let keep = back.len().saturating_sub(CONSOLE_PAGE_TRAIL_MAX);
        if !back[keep..].is_empty() {
            pairs.push(("back".into(), back[keep..].join(".")));
        }
        with_query(path, &pairs)
    }

    /// The URL of the newer page, when this is not the newest.
    fn newer(&self, path: &str) -> Option<String> {
        self.cursor.as_ref()?;
        let mut pairs = self.filters.clone();
        if let Some((last, rest)) = self.back.split_last() {
            pairs.push(("cursor".into(), last.clone()));
            if !rest.is_empty() {
                pairs.push(("back".into(), rest.join(".")));
            }
        }
        Some(with_query(path, &pairs))
    }
}

/// A `datetime-local` field's value (`2024-10-19T15:08` or with seconds) as RFC 3339 UTC;
/// anything else as it is (the API checks it).
fn local_to_rfc3339(v: &str) -> String {
    let b = v.as_bytes();
    let shaped = |n: usize| b.len() == n && b[4] == b'-' && b[10] == b'T' && b[13] == b':';
    if shaped(16) {
        format!("{v}:00Z")
    } else if shaped(19) {
        format!("{v}Z")
    } else {
        v.to_string()
    }
}

/// One page of the list `q`, exactly as the API's list runs it (from the projection's memos
/// when they can answer, else one indexed read off the async workers).
pub async fn run_list(state: &AppState, p: &Principal, q: ActionQuery) -> Result<Page, ApiError> {
    let page = match state.projection.list_in_memory(&q)? {
        Some(page) => page,
        None => state.read(move |st| Ok(st.projection.list(&q)?)).await?,
    };
    still_valid(p)?;
    Ok(page)
}

// ---------------------------------------------------------------------------------------
// Small pieces

/// A time: the absolute UTC time as text and title (the JS shows it relative, or local).
fn time(micros: Option<i64>) -> Markup {
    match micros {
        None => html! { span.none { "—" } },
        Some(t) => {
            let s = rfc3339(t);
            html! { time.t datetime=(s) title=(s) { (s) } }
        }
    }
}

/// A copy button for `text` (the JS copies `data-copy`).
fn copy(text: &str, what: &str) -> Markup {
    html! {
        button.copy type="button" data-copy=(text) aria-label={ "Copy " (what) } title={ "Copy " (what) } { "Copy" }
    }
}

fn status_badge(s: Status) -> Markup {
    html! { span class={ "badge status status-" (s.as_str()) } { (s.as_str()) } }
}

fn progress_bar(progress: f64) -> Markup {
    html! {
        progress.progress max="100" value=(progress) { (progress) "%" }
        span.pct { (format_pct(progress)) }
    }
}

fn format_pct(p: f64) -> String {
    if p.fract() == 0.0 {
        format!("{p:.0}%")
    } else {
        format!("{p:.1}%")
    }
}

/// A duration in microseconds, for people: `850 ms`, `12.3 s`, `4 min 5 s`, `2 h 3 min`.
pub fn duration(micros: i64) -> String {
    let ms = micros.max(0) / 1000;
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000)
    } else {
        format!("{} h {} min", ms / 3_600_000, (ms % 3_600_000) / 60_000)
    }
}

fn resource_link(r: &ResourceRef) -> Markup {
    html! { a.resource href=(resource_url(r)) { (r.resource_type) "/" (r.id) } }
}

/// The table of actions of the list and resource pages: real links per row, and each row's
/// id, status and progress as data attributes for the JS to update in place.
fn actions_table(actions: &[Arc<Action>], show_tenant: bool) -> Markup {
    html! {
        table #actions.actions {
            thead {
                tr {
                    th scope="col" { "ID" }
                    th scope="col" { "Status" }
                    th scope="col" { "Progress" }
                    th scope="col" { "Type" }
                    th scope="col" { "Resource" }
                    th scope="col" { "User" }
                    @if show_tenant { th scope="col" { "Tenant" } }
                    th scope="col" { "Created" }
                    th scope="col" { "Updated" }
                }
            }
            tbody #actions-body {
                @for a in actions {
                    tr.action-row data-id=(a.id) data-status=(a.status.as_str()) data-progress=(a.progress) {
                        td.id { a.action-link href=(action_url(a.id)) { (a.id) } }
                        td { (status_badge(a.status)) }
                        td.progress-cell { (progress_bar(a.progress)) }
                        td { (a.action_type) }
                        td { (resource_link(&a.resource)) }
                        td { (a.user.as_deref().unwrap_or("")) }
                        @if show_tenant { td { (a.tenant) } }
                        td { (time(Some(a.created_at))) }
                        td { (time(Some(a.updated_at))) }
                    }
                }
                @if actions.is_empty() {
                    tr.empty { td colspan=(if show_tenant { 9 } else { 8 }) { "No actions match." } }
                }
            }
        }
    }
}

/// The live controls: the switch, its state, and the reserved room of the "N new" bar.
fn live_controls(first_page: &str) -> Markup {
    html! {
        div.live {
            button #live-toggle type="button" aria-pressed="true" { "Live" }
            span #live-status aria-live="polite" { "connecting…" }
        }
        div #new-bar.new-bar role="status" {
            a #new-bar-link href=(first_page) { span #new-count { "0" } " new — show" }
        }
    }
}

fn pager(view: &ListView, path: &str, page: &Page) -> Markup {
    let first = with_query(path, &view.filters);
    html! {
        nav.pager aria-label="Pages" {
            @if view.cursor.is_some() {
                a #page-newest href=(first) { "⇤ Newest" }
            }
            @match view.newer(path) {
                Some(url) => a #page-newer rel="prev" href=(url) { "← Newer" },
                None => span.disabled { "← Newer" },
            }
            @match &page.next_cursor {
                Some(c) => a #page-older rel="next" href=(view.older(path, c)) { "Older →" },
                None => span.disabled { "Older →" },
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The list

/// `GET /console/actions`: the filtered list, newest first.
pub async fn list(
    State(state): State<AppState>,
    Viewer(p): Viewer,
    Query(raw): Query<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let viewer = p.clone();
    let page: Result<Response, PageError> = async move {
        let view = ListView::read(raw);
        let q = view.query(&state, &p)?;
        let after = rendered_after(&state);
        let page = run_list(&state, &p, q).await?;
        let path = "/console/actions";
        let filters_q = query_string(&view.filters);
        let first = with_query(path, &view.filters);
        let export = |format: &str| {
            let mut pairs = vec![("format".to_string(), format.to_string())];
            pairs.extend(view.filters.iter().cloned());
            with_query("/console/actions/export", &pairs)
        };
        let watch_q = watch_query(&view.filters);
        let body = html! {
            main #main.list-page data-watch=(watch_q) data-after=(after) data-first-page=(if view.cursor.is_none() { "true" } else { "false" }) {
                h1 { "Actions" }
                (filter_form(&view, &p))
                div.summary-bar {
                    p #total data-total=(page.total) { (page.total) " " (if page.total == 1 { "action" } else { "actions" }) }
                    span.spacer {}
                    a #export-jsonl href=(export("jsonl")) download { "Export JSON lines" }
                    a #export-csv href=(export("csv")) download { "Export CSV" }
                }
                div #histogram.histogram data-query=(filters_q) aria-label="Activity of the filtered actions" {}
                (live_controls(&first))
                (actions_table(&page.actions, p.is_admin()))
                (pager(&view, path, &page))
            }
        };
        Ok(html_response(
            StatusCode::OK,
            layout("Actions", Some(&p), body),
        ))
    }
    .await;
    page.map_err(|e| e.seen_by(&viewer))
}

/// The watch parameters of a list view: its filters minus the time range (the watch
/// streams what happens from now on).
fn watch_query(filters: &[(String, String)]) -> String {
    let pairs: Vec<(String, String)> = filters
        .iter()
        .filter(|(k, _)| k != "since" && k != "until")
        .cloned()
        .collect();
    query_string(&pairs)
}

fn filter_form(view: &ListView, p: &Principal) -> Markup {
    let kinds = [
        ("", "any"),
        ("task", "task"),
        ("state-machine", "state-machine"),
        ("other", "other"),
    ];
    let time_value = |key: &str| {
        // Shown back in the `datetime-local` shape when it is a whole-minute UTC time.
        let v = view.value(key);
        match v.strip_suffix(":00Z") {
            Some(t) if t.len() == 16 => t.to_string(),
            _ => v.to_string(),
        }
    };
    html! {
        form #filters.filters method="get" action="/console/actions" {
            fieldset.statuses {
                legend { "Status" }
                @for s in Status::ALL {
                    label for={ "f-status-" (s.as_str()) } {
                        input id={ "f-status-" (s.as_str()) } type="checkbox" name="status"
                            value=(s.as_str()) checked[view.has("status", s.as_str())];
                        " " (s.as_str())
                    }
                }
            }
            div.field {
                label for="f-type" { "Type" }
                input #f-type type="text" name="type" value=(view.value("type"));
            }
            div.field {
                label for="f-resource_type" { "Resource type" }
                input #f-resource_type type="text" name="resource_type" value=(view.value("resource_type"));
            }
            div.field {
                label for="f-resource_id" { "Resource id" }
                input #f-resource_id type="text" name="resource_id" value=(view.value("resource_id"));
            }
            div.field {
                label for="f-user" { "User" }
                input #f-user type="text" name="user" value=(view.value("user"));
            }
            div.field {
                label for="f-kind" { "Kind" }
                select #f-kind name="kind" {
                    @for (value, text) in kinds {
                        option value=(value) selected[view.value("kind") == value] { (text) }
                    }
                }
            }
            div.field {
                label for="f-since" { "Created from (UTC)" }
                input #f-since type="datetime-local" name="since" value=(time_value("since"));
            }
            div.field {
                label for="f-until" { "Created before (UTC)" }
                input #f-until type="datetime-local" name="until" value=(time_value("until"));
            }
            @if p.is_admin() {
                div.field {
                    label for="f-tenant" { "Tenant" }
                    input #f-tenant type="text" name="tenant" value=(view.value("tenant"));
                }
            }
            div.buttons {
                button #apply-filters type="submit" { "Apply" }
                a #reset-filters href="/console/actions" { "Reset" }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// One resource

/// `GET /console/resources/{type}/{id}`: every action of one resource (primary or
/// related), newest first, paged like the list.
pub async fn resource(
    State(state): State<AppState>,
    Viewer(p): Viewer,
    Path((rtype, rid)): Path<(String, String)>,
    Query(raw): Query<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let viewer = p.clone();
    let page: Result<Response, PageError> = async move {
        // Only paging comes from the query; the resource is the path's.
        let mut view = ListView::read(
            raw.into_iter()
                .filter(|(k, _)| k == "cursor" || k == "back")
                .collect(),
        );
        view.filters = vec![
            ("resource_type".into(), rtype.clone()),
            ("resource_id".into(), rid.clone()),
        ];
        let q = view.query(&state, &p)?;
        let after = rendered_after(&state);
        let page = run_list(&state, &p, q).await?;
        let r = ResourceRef {
            resource_type: rtype,
            id: rid,
        };
        let path = resource_url(&r);
        // The pager's links carry the resource in the path, not the query.
        let paging = ListView {
            filters: Vec::new(),
            cursor: view.cursor.clone(),
            back: view.back.clone(),
        };
        let body = html! {
            main #main.resource-page data-watch=(watch_query(&view.filters)) data-after=(after) data-first-page=(if view.cursor.is_none() { "true" } else { "false" }) {
                h1 { "Resource " span #resource-name { (r.resource_type) "/" (r.id) } }
                p { (copy(&r.id, "resource id")) " " a href=(with_query("/console/actions", &view.filters)) { "Filter the list by this resource" } }
                p #total data-total=(page.total) { (page.total) " " (if page.total == 1 { "action" } else { "actions" }) }
                (live_controls(&path))
                (actions_table(&page.actions, p.is_admin()))
                (pager(&paging, &path, &page))
            }
        };
        Ok(html_response(
            StatusCode::OK,
            layout(&format!("{}/{}", r.resource_type, r.id), Some(&p), body),
        ))
    }
    .await;
    page.map_err(|e| e.seen_by(&viewer))
}

// ---------------------------------------------------------------------------------------
// One action

#[derive(serde::Deserialize, Default)]
pub struct ActionParams {
    /// A log position or an RFC 3339 time (as the API's `?as_of=`).
    as_of: Option<String>,
    /// The page of the history, from 1.
    history_page: Option<String>,
}

/// What the action page reads: the action (now, or as of a point), one page of its
/// history, and how many records it has.
/// The log position a page's live updates resume after: the position the node had applied
/// *before* the page's query ran, so no event committed between the query and the script's
/// watch stream is missed (one the page already shows may be seen again, which changes
/// nothing: the script sets status and progress, and counts only ids newer than its rows).
fn rendered_after(state: &AppState) -> u64 {
    state.ledger.store().applied_position()
}

struct ActionRead {
    /// The watch position the page's live updates start after ([`rendered_after`]).
    after: u64,
    current: Action,
    shown: Action,
    history: Vec<crate::ledger::HistoryRecord>,
    history_total: usize,
}

fn parse_as_of(s: &str) -> Result<AsOf, ApiError> {
    match s.trim().parse::<u64>() {
        Ok(n) => Ok(AsOf::Position(n)),
        Err(_) => parse_time(s.trim())
            .map(AsOf::Time)
            .ok_or_else(|| ApiError::field("as_of", "must be an RFC 3339 time or a log position")),
    }
}

/// `GET /console/actions/{id}`: the action, its timeline, its history; `?as_of=` shows it
/// as it stood then.
pub async fn action(
    State(state): State<AppState>,
    Viewer(p): Viewer,
    Path(id): Path<String>,
    Query(params): Query<ActionParams>,
) -> Result<Response, PageError> {
    let viewer = p.clone();
    let page: Result<Response, PageError> = async move {
        let as_of = match params.as_of.as_deref().filter(|s| !s.trim().is_empty()) {
            None => None,
            Some(s) => Some(parse_as_of(s)?),
        };
        let history_page =
            match params.history_page.as_deref() {
                None | Some("") => 1,
                Some(s) => s.parse::<usize>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                    ApiError::field("history_page", "must be a page number from 1")
                })?,
            };
        let p2 = p.clone();
        let after = rendered_after(&state);
        let read = state
            .read(move |st| {
                let current = load_action(st, &p2, &id)?;
                let shown = match as_of {
                    None => current.clone(),
                    Some(at) => st
                        .ledger
                        .action_as_of(&*st.projection, current.id, at)?
                        .ok_or_else(|| ApiError::not_found(format!("action {id} at that point")))?,
                };
                let skip = (history_page - 1).saturating_mul(CONSOLE_HISTORY_PAGE_RECORDS);
                let (history, history_total) = st.ledger.history_page(
                    &*st.projection,
                    current.id,
                    skip,
                    CONSOLE_HISTORY_PAGE_RECORDS,
                )?;
                still_valid(&p2)?;
                Ok(ActionRead {
                    after,
                    current,
                    shown,
                    history,
                    history_total,
                })
            })
            .await?;
        let body = action_body(&p, &read, as_of, history_page);
        Ok(html_response(
            StatusCode::OK,
            layout(&format!("Action {}", read.shown.id), Some(&p), body),
        ))
    }
    .await;
    page.map_err(|e| e.seen_by(&viewer))
}

fn action_body(p: &Principal, r: &ActionRead, as_of: Option<AsOf>, history_page: usize) -> Markup {
    let a = &r.shown;
    let live = as_of.is_none() && !a.status.is_terminal();
    let can_cancel = as_of.is_none() && allows(p, Role::Writer) && !a.status.is_terminal();
    html! {
        main #main.action-page data-id=(a.id) data-status=(a.status.as_str()) data-progress=(a.progress)
            data-version=(a.version) data-live=(if live { "true" } else { "false" })
            data-watch={ "action=" (a.id) } data-after=(r.after) {
            h1 { "Action " span #action-id { (a.id) } " " (copy(&a.id.to_string(), "action id")) }
            @if let Some(at) = as_of {
                p #as-of-banner.notice role="status" {
                    "As it stood at "
                    @match at {
                        AsOf::Position(n) => { "log position " (n) }
                        AsOf::Time(t) => { (time(Some(t))) }
                    }
                    " (version " (a.version) " of " (r.current.version) "). "
                    a #as-of-current href=(action_url(a.id)) { "Show the current state" }
                }
            }
            div #action-stale.notice.stale role="status" {
                "New events were recorded. " a href=(action_url(a.id)) { "Reload" }
            }
            section.summary aria-labelledby="summary-title" {
                h2 #summary-title { "Summary" }
                dl #summary {
                    dt { "Status" } dd { span #action-status { (status_badge(a.status)) }
                        @if a.cancel_requested && !a.status.is_terminal() { " " span.badge.cancel-requested { "cancellation requested" } } }
                    dt { "Progress" } dd #action-progress-cell { (progress_bar(a.progress)) }
                    dt { "UID" } dd { code #action-uid { (a.uid) } " " (copy(&a.uid, "uid")) }
                    dt { "Type" } dd { (a.action_type) }
                    dt { "Kind" } dd { (a.kind.as_str()) }
                    dt { "Tenant" } dd { (a.tenant) }
                    dt { "User" } dd { (a.user.as_deref().unwrap_or("—")) }
                    dt { "Resource" } dd #action-resource { (resource_link(&a.resource)) }
                    @if !a.related.is_empty() {
                        dt { "Related" } dd #action-related {
                            ul.inline { @for r in &a.related { li { (resource_link(r)) } } }
                        }
                    }
                    @if let Some(n) = &a.node { dt { "Node" } dd { (n) } }
                    @if let Some(n) = &a.region { dt { "Region" } dd { (n) } }
                    @if let Some(d) = &a.description { dt { "Description" } dd #action-description { (d) } }
                    @if let Some(s) = &a.state { dt { "State" } dd #action-state { (s) } }
                    @if let Some(m) = &a.message { dt { "Message" } dd #action-message { (m) } }
                    dt { "Created" } dd { (time(Some(a.created_at))) }
                    dt { "Started" } dd { (time(a.started_at)) }
                    dt { "Updated" } dd { (time(Some(a.updated_at))) }
                    dt { "Completed" } dd { (time(a.completed_at)) }
                    dt { "Heartbeat" } dd { (time(a.heartbeat_at)) }
                    dt { "Version" } dd #action-version { (a.version) }
                }
                @if can_cancel {
                    p { a #cancel-link.button.danger href={ (action_url(a.id)) "/cancel" } { "Cancel…" } }
                }
            }
            @if let Some(e) = &a.error {
                section #error.error-box aria-labelledby="error-title" {
                    h2 #error-title { "Error" }
                    p { code #error-code { (e.code) } }
                    pre #error-text { (e.message) }
                }
            }
            @if !a.labels.is_empty() {
                section aria-labelledby="labels-title" {
                    h2 #labels-title { "Labels" }
                    table #labels {
                        thead { tr { th scope="col" { "Key" } th scope="col" { "Value" } } }
                        tbody { @for (k, v) in &a.labels { tr { th scope="row" { (k) } td { (v) } } } }
                    }
                }
            }
            @if !a.pending_ops.is_empty() {
                section aria-labelledby="pending-title" {
                    h2 #pending-title { "Pending operations per shard" }
                    table #pending-ops {
                        thead { tr {
                            th scope="col" { "Shard" } th scope="col" { "Operation" }
                            th scope="col" { "Progress" } th scope="col" { "Status" }
                            th scope="col" { "Heartbeat" }
                        } }
                        tbody {
                            @for (shard, op) in &a.pending_ops {
                                tr.pending-op data-shard=(shard) {
                                    th scope="row" { (shard) }
                                    td { (op.op_name.as_deref().unwrap_or("—")) }
                                    td { @match op.progress { Some(v) => (progress_bar(v)), None => "—" } }
                                    td { (op.status_code.as_deref().unwrap_or("")) " " (op.status_description.as_deref().unwrap_or("")) }
                                    td { (time(op.heartbeat.map(|s| s.saturating_mul(1_000_000)))) }
                                }
                            }
                        }
                    }
                }
            }
            (timeline(a))
            (history(a.id, r, history_page))
            section aria-labelledby="as-of-title" {
                h2 #as-of-title { "As of" }
                form #as-of-form method="get" action=(action_url(a.id)) {
                    label for="as-of" { "Log position or RFC 3339 time" }
                    input #as-of type="text" name="as_of" inputmode="numeric"
                        value=(match as_of { Some(AsOf::Position(n)) => n.to_string(), Some(AsOf::Time(t)) => rfc3339(t), None => String::new() });
                    button type="submit" { "Show" }
                }
            }
        }
    }
}

/// The Nova-style sub-events as spans on one time axis (the JS places each bar from its
/// `data-left` and `data-width`, percentages of the axis; CSP allows no `style` attribute).
fn timeline(a: &Action) -> Markup {
    let start = a.events.iter().map(|e| e.started_at).min();
    let end = a
        .events
        .iter()
        .map(|e| e.finished_at.unwrap_or(a.updated_at))
        .max();
    let span = match (start, end) {
        (Some(s), Some(e)) => (e - s).max(1) as f64,
        _ => 1.0,
    };
    html! {
        section #timeline-section aria-labelledby="timeline-title" {
            h2 #timeline-title { "Timeline" }
            @if a.events.is_empty() {
                p.none { "No sub-events." }
            } @else {
                ol #timeline.timeline {
                    @for e in &a.events {
                        @let left = (e.started_at - start.unwrap_or(e.started_at)) as f64 / span * 100.0;
                        @let length = e.finished_at.unwrap_or(a.updated_at) - e.started_at;
                        @let width = (length as f64 / span * 100.0).max(0.5);
                        @let result = match e.result { Some(crate::event::SubResult::Success) => "success", Some(crate::event::SubResult::Error) => "error", None => "running" };
                        li.span data-left=(format!("{left:.2}")) data-width=(format!("{width:.2}")) data-result=(result) {
                            div.span-head {
                                span.span-name { (e.name) }
                                span class={ "badge result-" (result) } { (result) }
                                span.span-duration {
                                    @if e.finished_at.is_some() { (duration(length)) } @else { "unfinished (" (duration(length)) " until the last update)" }
                                }
                                @if let Some(h) = &e.host { span.span-host { "on " (h) } }
                                (time(Some(e.started_at)))
                            }
                            div.span-track { div.span-bar {} }
                            @if let Some(tb) = &e.traceback {
                                details.traceback { summary { "Traceback" } pre { (tb) } }
                            }
                            @if let Some(d) = &e.details {
                                details.details { summary { "Details" } pre { (d) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One page of the raw history: position, time, who, type, the JSON (folded, copyable), and
/// an "as of" link per record.
fn history(id: u64, r: &ActionRead, page: usize) -> Markup {
    let pages = r
        .history_total
        .div_ceil(CONSOLE_HISTORY_PAGE_RECORDS)
        .max(1);
    let link = |n: usize| format!("{}?history_page={n}#history", action_url(id));
    html! {
        section #history aria-labelledby="history-title" {
            h2 #history-title { "History " span.count { "(" (r.history_total) " records)" } }
            table #history-table {
                thead { tr {
                    th scope="col" { "Position" } th scope="col" { "Recorded" }
                    th scope="col" { "By" } th scope="col" { "Event" } th scope="col" { "As of" }
                } }
                tbody {
                    @for rec in &r.history {
                        @for op in &rec.ops {
                            @let json = op_json(op);
                            @let text = serde_json::to_string_pretty(&json).unwrap_or_default();
                            tr.history-row data-position=(rec.position) {
                                th scope="row" { (rec.position) }
                                td { (time(Some(rec.recorded_at))) }
                                td { (rec.principal) }
                                td {
                                    details.event-json {
                                        summary { (json["type"].as_str().unwrap_or("event")) }
                                        pre { (text) }
                                    }
                                    (copy(&text, "event JSON"))
                                }
                                td { a.as-of-link href={ (action_url(id)) "?as_of=" (rec.position) } { "as of " (rec.position) } }
                            }
                        }
                    }
                }
            }
            @if pages > 1 {
                nav.pager aria-label="History pages" {
                    @if page > 1 { a #history-prev href=(link(page - 1)) { "← Earlier" } } @else { span.disabled { "← Earlier" } }
                    span { "page " (page) " of " (pages) }
                    @if page < pages { a #history-next href=(link(page + 1)) { "Later →" } } @else { span.disabled { "Later →" } }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Cancel

/// `GET /console/actions/{id}/cancel`: the confirmation (writers only).
pub async fn cancel_confirm(
    State(state): State<AppState>,
    Viewer(p): Viewer,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let viewer = p.clone();
    let page: Result<Response, PageError> = async move {
        let p2 = p.clone();
        let a = state.read(move |st| load_action(st, &p2, &id)).await?;
        if !allows(&p, Role::Writer) {
            return Err(ApiError::forbidden("cancel actions").into());
        }
        let body = html! {
            main #main.narrow {
                h1 { "Cancel action " (a.id) "?" }
                p { "This records " code { "cancel_requested" } " on action " (a.id) " (" (a.action_type) " of "
                    (resource_link(&a.resource)) "). The worker running it decides when it stops." }
                form #cancel-form method="post" action={ (action_url(a.id)) "/cancel" } {
                    button #cancel-confirm.danger type="submit" { "Request cancellation" }
                    " "
                    a #cancel-back href=(action_url(a.id)) { "Keep it" }
                }
            }
        };
        Ok(html_response(
            StatusCode::OK,
            layout("Cancel?", Some(&p), body),
        ))
    }
    .await;
    page.map_err(|e| e.seen_by(&viewer))
}

/// `POST /console/actions/{id}/cancel`: records `cancel_requested` through the ledger, as
/// `POST /api/v1/actions/{id}/cancel` does, then shows the action.
pub async fn cancel(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    Viewer(p): Viewer,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let viewer = p.clone();
    let page: Result<Response, PageError> = async move {
        if !session::same_origin(&headers, &uri) {
            return Err(cross_site());
        }
        if !allows(&p, Role::Writer) {
            return Err(ApiError::forbidden("cancel actions").into());
        }
        let command = Command::Event(RecordEvent {
            action: ActionRef::parse(&id),
            expected_version: None,
            body: EventBody::CancelRequested,
        });
        let c = crate::http::native::submit(&state, &p, None, vec![command]).await?;
        Ok(super::see_other(&action_url(c.actions[0].id)))
    }
    .await;
    page.map_err(|e| e.seen_by(&viewer))
}
