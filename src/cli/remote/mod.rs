//! The remote CLI: `action-ledger actions …` and `action-ledger tokens …` against a running
//! server over its native HTTP API (docs/api.md), as etcdctl is to etcdutl. The offline
//! commands (`token`, `verify`, …) work on a data directory instead.
//!
//! | part | module |
//! |---|---|
//! | the options every remote command takes, the runtime | here |
//! | HTTP, error mapping, the watch stream's parser | [`client`] |
//! | `actions list\|get\|history\|wait\|watch\|create\|event\|cancel` | [`actions`] |
//! | `tokens list\|create\|revoke` | [`tokens`] |
//! | tables, JSON lines, the progress bar | [`output`] |
//!
//! Exit codes: 0 ok; 1 the server refused (404, 401/403, 409, another 4xx: its message is
//! printed as `error: …`); 2 a usage error, a connection failure (unreachable, timeout, bad
//! URL) or a server error (5xx). The token is sent as `Authorization: Bearer` and never
//! printed, not even in an error.

pub mod actions;
pub mod client;
pub mod output;
pub mod tokens;

use super::Failure;
use crate::limits::{REMOTE_BODY_BYTES_MAX, REMOTE_TIMEOUT_MS_DEFAULT};
use clap::{Args, ValueEnum};
use std::io::{IsTerminal, Read};
use std::time::Duration;

/// How answers are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// One JSON object per line (the default when stdout is not a terminal).
    Json,
    /// Aligned columns for people (the default on a terminal).
    Table,
}

/// The options of every remote command (accepted before or after the subcommand).
#[derive(Args, Clone, Debug)]
pub struct RemoteOpts {
    /// The server's base URL.
    #[arg(
        long,
        global = true,
        env = "ACTION_LEDGER_SERVER",
        value_name = "URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,
    /// The API token (sent as `Authorization: Bearer`; never printed). Prefer the
    /// environment variable: a command line is visible to other users of the machine.
    #[arg(
        long,
        global = true,
        env = "ACTION_LEDGER_TOKEN",
        value_name = "T",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// json (one object per line) or table. Default: table on a terminal, json in a pipe.
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub output: Option<OutputFormat>,
    /// Time limit of one request: connecting, sending, reading the answer (`500ms`, `30s`,
    /// `2m`; a bare number is seconds). A wait gets its wait on top; a watch stream has
    /// none once connected. Default 30s.
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// For an https:// server: trust only the CA certificates (PEM) in this file, instead of
    /// the system's trusted roots (for a server with a private CA).
    #[arg(long, global = true, env = "ACTION_LEDGER_CACERT", value_name = "FILE")]
    pub cacert: Option<std::path::PathBuf>,
    /// For an https:// server that asks for one: this client certificate (PEM; with --key).
    #[arg(
        long,
        global = true,
        env = "ACTION_LEDGER_CERT",
        value_name = "FILE",
        requires = "key"
    )]
    pub cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(
        long,
        global = true,
        env = "ACTION_LEDGER_KEY",
        value_name = "FILE",
        requires = "cert"
    )]
    pub key: Option<std::path::PathBuf>,
}

impl RemoteOpts {
    /// `--timeout`, or [`REMOTE_TIMEOUT_MS_DEFAULT`].
    pub fn timeout(&self) -> Duration {
        self.timeout
            .unwrap_or(Duration::from_millis(REMOTE_TIMEOUT_MS_DEFAULT))
    }

    /// The output format asked for, or the default for where stdout goes.
    pub fn format(&self) -> OutputFormat {
        self.output.unwrap_or(if std::io::stdout().is_terminal() {
            OutputFormat::Table
        } else {
            OutputFormat::Json
        })
    }
}

/// `500ms`, `30s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit_ms) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1_000)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3_600_000)
    } else {
        (s, 1_000)
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (like 500ms, 30s, 2m, 1h)"))?;
    n.checked_mul(unit_ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{s:?} is too long"))
}

/// Runs a remote command on a runtime of its own (one thread: the CLI waits on the network).
pub fn block_on<F: std::future::Future<Output = Result<(), Failure>>>(
    fut: F,
) -> Result<(), Failure> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::error(format!("cannot start the runtime: {e}")))?;
    rt.block_on(fut)
}

/// The JSON object of `--body FILE` (`-`: stdin), at most [`REMOTE_BODY_BYTES_MAX`] bytes;
/// an empty object without `--body`.
pub fn read_body(
    path: Option<&str>,
) -> Result<serde_json::Map<String, serde_json::Value>, Failure> {
    let Some(path) = path else {
        return Ok(serde_json::Map::new());
    };
    let mut bytes = Vec::new();
    let limit = REMOTE_BODY_BYTES_MAX as u64 + 1;
    let read = if path == "-" {
        std::io::stdin().lock().take(limit).read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(limit).read_to_end(&mut bytes))
    };
    let name = if path == "-" { "stdin" } else { path };
    read.map_err(|e| Failure::error(format!("--body {name}: {e}")))?;
    if bytes.len() > REMOTE_BODY_BYTES_MAX {
        return Err(Failure::error(format!(
            "--body {name}: more than {REMOTE_BODY_BYTES_MAX} bytes (REMOTE_BODY_BYTES_MAX)"
        )));
    }
    match serde_json::from_slice(&bytes) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => Err(Failure::error(format!(
            "--body {name}: must be a JSON object"
        ))),
        Err(e) => Err(Failure::error(format!("--body {name}: not JSON: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("99999999999999999h").is_err());
    }
}
