//! `GET /console/actions/export?format=jsonl|csv&<the list's filters>`: the filtered list,
//! newest first, streamed in pages of [`CONSOLE_EXPORT_PAGE_ROWS`] (one indexed query each,
//! with the API's keyset cursors), at most [`CONSOLE_EXPORT_ROWS_MAX`] rows. Memory stays
//! bounded: one page and a small channel of written chunks. The answer says how many
//! actions matched (`X-Export-Total`) and how many rows it holds (`X-Export-Rows`), so a cut
//! export is visible.
//!
//! - **JSON lines**: one action per line, exactly the API's JSON of it.
//! - **CSV** (RFC 4180, CRLF): a header row, then one row per action. Cells holding a comma,
//!   quote or line break are quoted (quotes doubled); a text cell starting with `=`, `+`,
//!   `-`, `@`, tab or carriage return is quoted and prefixed with `'`, so a spreadsheet shows
//!   it as text instead of running it as a formula.

use super::pages::{run_list, ListView};
use super::{PageError, Viewer};
use crate::event::Action;
use crate::http::error::ApiError;
use crate::http::AppState;
use crate::json::rfc3339;
use crate::limits::{CONSOLE_EXPORT_PAGE_ROWS, CONSOLE_EXPORT_ROWS_MAX};
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Written chunks waiting for the client, at most.
const EXPORT_CHUNKS_QUEUED_MAX: usize = 4;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    JsonLines,
    Csv,
}

/// The CSV columns.
pub const CSV_COLUMNS: [&str; 18] = [
    "id",
    "uid",
    "tenant",
    "type",
    "kind",
    "resource_type",
    "resource_id",
    "user",
    "status",
    "progress",
    "description",
    "created_at",
    "started_at",
    "updated_at",
    "completed_at",
    "error_code",
    "error_message",
    "labels",
];

pub async fn export(
    State(state): State<AppState>,
    Viewer(p): Viewer,
    Query(raw): Query<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    let viewer = p.clone();
    let page: Result<Response, PageError> = async move {
        let format = match raw
            .iter()
            .find(|(k, _)| k == "format")
            .map(|(_, v)| v.as_str())
        {
            Some("jsonl") | None => Format::JsonLines,
            Some("csv") => Format::Csv,
            Some(_) => return Err(ApiError::field("format", "must be jsonl or csv").into()),
        };
        let mut view = ListView::read(raw);
        view.cursor = None;
        let mut q = view.query(&state, &p)?;
        q.limit = CONSOLE_EXPORT_PAGE_ROWS.min(state.limits.list_limit_max);
        // The first page before answering: a bad filter is a 400 page, not a broken download.
        let first = run_list(&state, &p, q.clone()).await?;
        let total = first.total;
        let rows = total.min(CONSOLE_EXPORT_ROWS_MAX as u64);
        let rendered = state.rendered.clone();
        let (tx, rx) =
            tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(EXPORT_CHUNKS_QUEUED_MAX);
        let st = state.clone();
        tokio::spawn(async move {
            let mut written = 0usize;
            let mut page = first;
            if format == Format::Csv {
                let mut head = String::new();
                for (i, c) in CSV_COLUMNS.iter().enumerate() {
                    if i > 0 {
                        head.push(',');
                    }
                    head.push_str(c);
                }
                head.push_str("\r\n");
                if tx.send(Ok(Bytes::from(head))).await.is_err() {
                    return;
                }
            }
            loop {
                let take = page.actions.len().min(CONSOLE_EXPORT_ROWS_MAX - written);
                let mut out = Vec::with_capacity(take * 768);
                for a in &page.actions[..take] {
                    match format {
                        Format::JsonLines => match rendered.action(a) {
                            Ok(json) => {
                                out.extend_from_slice(&json);
                                out.push(b'\n');
                            }
                            Err(_) => return,
                        },
                        Format::Csv => csv_row(a, &mut out),
                    }
                }
                written += take;
                if tx.send(Ok(Bytes::from(out))).await.is_err() {
                    return; // the client left
                }
                let Some(cursor) = page.next_cursor.take() else {
                    return;
                };
                // A token revoked during the export ends it (the rows already sent stay sent).
                if written >= CONSOLE_EXPORT_ROWS_MAX || p.is_revoked() {
                    return;
                }
                q.cursor = Some(cursor);
                page = match run_list(&st, &p, q.clone()).await {
                    Ok(page) => page,
                    Err(e) => {
                        tracing::warn!(code = e.code, message = %e.message, "console export stopped");
                        let _ = tx
                            .send(Err(std::io::Error::other("the export stopped early")))
                            .await;
                        return;
                    }
                };
            }
        });
        let (content_type, file) = match format {
            Format::JsonLines => ("application/x-ndjson", "actions.jsonl"),
            Format::Csv => ("text/csv; charset=utf-8", "actions.csv"),
        };
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let mut resp = (StatusCode::OK, Body::from_stream(stream)).into_response();
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file}\"")) {
            h.insert(header::CONTENT_DISPOSITION, v);
        }
        h.insert("x-export-total", HeaderValue::from(total));
        h.insert("x-export-rows", HeaderValue::from(rows));
        Ok(resp)
    }
    .await;
    page.map_err(|e| e.seen_by(&viewer))
}

/// One CSV row of `a` (see [`CSV_COLUMNS`]).
fn csv_row(a: &Arc<Action>, out: &mut Vec<u8>) {
    let labels = serde_json::to_string(&a.labels).unwrap_or_default();
    let time = |t: Option<i64>| t.map(rfc3339).unwrap_or_default();
    let cells: [(String, bool); 18] = [
        (a.id.to_string(), false),
        (a.uid.clone(), true),
        (a.tenant.clone(), true),
        (a.action_type.clone(), true),
        (a.kind.as_str().to_string(), false),
        (a.resource.resource_type.clone(), true),
        (a.resource.id.clone(), true),
        (a.user.clone().unwrap_or_default(), true),
        (a.status.as_str().to_string(), false),
        (a.progress.to_string(), false),
        (a.description.clone().unwrap_or_default(), true),
        (time(Some(a.created_at)), false),
        (time(a.started_at), false),
        (time(Some(a.updated_at)), false),
        (time(a.completed_at), false),
        (
            a.error.as_ref().map(|e| e.code.clone()).unwrap_or_default(),
            true,
        ),
        (
            a.error
                .as_ref()
                .map(|e| e.message.clone())
                .unwrap_or_default(),
            true,
        ),
        (labels, true),
    ];
    for (i, (cell, text)) in cells.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        csv_cell(cell, *text, out);
    }
    out.extend_from_slice(b"\r\n");
}

/// One CSV cell; `text`: user-supplied text, guarded against formula injection.
pub fn csv_cell(s: &str, text: bool, out: &mut Vec<u8>) {
    let formula = text && s.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if !formula && !s.contains([',', '"', '\n', '\r']) {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    out.push(b'"');
    if formula {
        out.push(b'\'');
    }
    out.extend_from_slice(s.replace('"', "\"\"").as_bytes());
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::csv_cell;

    #[test]
    fn csv_cells_are_quoted_and_formulas_defused() {
        let cell = |s: &str, text: bool| {
            let mut out = Vec::new();
            csv_cell(s, text, &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(cell("plain", true), "plain");
        assert_eq!(cell("a,b", true), "\"a,b\"");
        assert_eq!(cell("say \"hi\"", true), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("two\nlines", true), "\"two\nlines\"");
        assert_eq!(cell("=1+1", true), "\"'=1+1\"");
        assert_eq!(cell("@SUM(A1)", true), "\"'@SUM(A1)\"");
        assert_eq!(cell("-2", true), "\"'-2\"");
        assert_eq!(cell("+x", true), "\"'+x\"");
        assert_eq!(cell("-2", false), "-2", "numbers are not text");
    }
}
