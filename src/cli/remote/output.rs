//! How the remote CLI prints: JSON lines (one object per line, for `jq` and scripts) or
//! aligned tables (for people), and the live progress bar of `wait` and `watch --action`
//! (on stderr, only when stdout and stderr are both terminals).

use super::OutputFormat;
use crate::cli::CliResult;
use serde_json::Value;
use std::io::{IsTerminal, Write};

/// The columns of an action in a table.
pub const ACTION_COLUMNS: [&str; 8] = [
    "ID", "UID", "TENANT", "TYPE", "RESOURCE", "STATUS", "PROGRESS", "UPDATED",
];
/// The columns of a history record in a table.
pub const RECORD_COLUMNS: [&str; 5] = ["POSITION", "RECORDED", "PRINCIPAL", "EVENT", "DETAILS"];

/// Writes to stdout, flushing every line (a watch is read as it comes).
pub struct Printer {
    pub format: OutputFormat,
}

impl Printer {
    pub fn new(format: OutputFormat) -> Printer {
        Printer { format }
    }

    /// One line on stdout; a closed pipe becomes [`crate::cli::Failure::PipeClosed`].
    pub fn line(&self, text: &str) -> CliResult {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        out.write_all(text.as_bytes())?;
        out.write_all(b"\n")?;
        out.flush()?;
        Ok(())
    }

    /// One JSON value on one line.
    pub fn json(&self, v: &Value) -> CliResult {
        self.line(&v.to_string())
    }

    /// A table: the header, then the rows, columns aligned (the last one unpadded).
    pub fn table(&self, header: &[&str], rows: &[Vec<String>]) -> CliResult {
        let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
        for row in rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let render = |cells: &mut dyn Iterator<Item = &str>| {
            let mut line = String::new();
            for (i, cell) in cells.enumerate() {
                if i + 1 == widths.len() {
                    line.push_str(cell);
                } else {
                    let pad = widths[i].saturating_sub(cell.chars().count());
                    line.push_str(cell);
                    line.push_str(&" ".repeat(pad + 2));
                }
            }
            line.trim_end().to_string()
        };
        let mut text = render(&mut header.iter().copied());
        for row in rows {
            text.push('\n');
            text.push_str(&render(&mut row.iter().map(String::as_str)));
        }
        self.line(&text)
    }

    /// Actions: a JSON line each, or one table.
    pub fn actions(&self, actions: &[Value]) -> CliResult {
        match self.format {
            OutputFormat::Json => actions.iter().try_for_each(|a| self.json(a)),
            OutputFormat::Table => {
                let rows: Vec<Vec<String>> = actions.iter().map(action_row).collect();
                self.table(&ACTION_COLUMNS, &rows)
            }
        }
    }
}

/// A cell of a JSON value: strings bare, `null` as `-`, whole numbers without `.0`.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.replace(['\n', '\r', '\t'], " "),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// `type/id` of a resource object.
pub fn resource(v: &Value) -> String {
    format!("{}/{}", cell(&v["type"]), cell(&v["id"]))
}

pub fn action_row(a: &Value) -> Vec<String> {
    vec![
        cell(&a["id"]),
        cell(&a["uid"]),
        cell(&a["tenant"]),
        cell(&a["type"]),
        resource(&a["resource"]),
        cell(&a["status"]),
        cell(&a["progress"]),
        cell(&a["updated_at"]),
    ]
}

/// An operation's own fields as compact JSON, without `type`, `action` and nulls.
pub fn op_details(event: &Value) -> String {
    match event.as_object() {
        Some(m) => {
            let rest: serde_json::Map<String, Value> = m
                .iter()
                .filter(|(k, v)| *k != "type" && *k != "action" && !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if rest.is_empty() {
                String::new()
            } else {
                Value::Object(rest).to_string()
            }
        }
        None => String::new(),
    }
}

/// A history record (`{position, recorded_at, principal, event}`) as a table row.
pub fn record_row(r: &Value) -> Vec<String> {
    vec![
        cell(&r["position"]),
        cell(&r["recorded_at"]),
        cell(&r["principal"]),
        cell(&r["event"]["type"]),
        op_details(&r["event"]),
    ]
}

/// A watch event (`{position, recorded_at, event, action}`) as one line of text.
pub fn watch_line(d: &Value) -> String {
    let who = match d["action"]["uid"].as_str() {
        Some(uid) => format!("{} ({uid})", cell(&d["action"]["id"])),
        None => cell(&d["action"]["id"]),
    };
    let mut line = format!(
        "{}  {}  {}  {}",
        cell(&d["position"]),
        cell(&d["recorded_at"]),
        who,
        cell(&d["event"]["type"])
    );
    let details = op_details(&d["event"]);
    if !details.is_empty() {
        line.push_str("  ");
        line.push_str(&details);
    }
    line
}

/// Whether a live progress bar may be drawn: stdout and stderr are both terminals (never in
/// a pipe, where it would only be noise).
pub fn bar_allowed() -> bool {
    std::io::stdout().is_terminal() && std::io::stderr().is_terminal()
}

/// A progress bar (0–100) on stderr, set from `action`.
pub fn progress_bar(action: &Value) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(100);
    let style =
        indicatif::ProgressStyle::with_template("{spinner} {prefix} [{bar:40}] {pos:>3}% {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(format!("action {}", cell(&action["id"])));
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    set_from_action(&bar, action);
    bar
}

/// The bar's position and message from an action object.
pub fn set_from_action(bar: &indicatif::ProgressBar, a: &Value) {
    if let Some(p) = a["progress"].as_f64() {
        bar.set_position(p.clamp(0.0, 100.0) as u64);
    }
    bar.set_message(status_message(
        a["status"].as_str().unwrap_or("?"),
        &a["state"],
        &a["message"],
    ));
}

/// The bar's position and message from a watch event's operation (`status` is what the
/// operation makes of the action).
pub fn set_from_op(bar: &indicatif::ProgressBar, op: &Value) {
    let ty = op["type"].as_str().unwrap_or("");
    match ty {
        "progress" => {
            if let Some(p) = op["progress"].as_f64() {
                bar.set_position(p.clamp(0.0, 100.0) as u64);
            }
            bar.set_message(status_message("running", &op["state"], &op["message"]));
        }
        "started" | "event_started" | "event_finished" => {
            let what = match op["name"].as_str() {
                Some(n) => format!("running: {ty} {n}"),
                None => "running".into(),
            };
            bar.set_message(what);
        }
        "completed" => {
            bar.set_position(100);
            bar.set_message("completed");
        }
        "failed" => bar.set_message(format!(
            "failed: {}",
            op["error"]["message"].as_str().unwrap_or("")
        )),
        "cancelled" => bar.set_message("cancelled"),
        "cancel_requested" => bar.set_message("cancel requested"),
        _ => {}
    }
}

fn status_message(status: &str, state: &Value, message: &Value) -> String {
    let mut s = status.to_string();
    for v in [state, message] {
        if let Some(t) = v.as_str() {
            s.push_str(": ");
            s.push_str(t);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cells() {
        assert_eq!(cell(&json!(null)), "-");
        assert_eq!(cell(&json!(40.0)), "40");
        assert_eq!(cell(&json!(12.5)), "12.5");
        assert_eq!(cell(&json!("a\nb")), "a b");
        assert_eq!(
            resource(&json!({"type": "droplet", "id": "3"})),
            "droplet/3"
        );
        assert_eq!(
            op_details(&json!({"type": "progress", "action": 1, "progress": 5.0, "state": null})),
            r#"{"progress":5.0}"#
        );
    }
}
