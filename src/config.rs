//! `serve`'s configuration: defaults < TOML file < `ACTION_LEDGER_*` environment < flags,
//! validated once into an immutable [`Settings`]. A bad value is reported with its key, where
//! it came from, and why (exit 2). Every key is documented in [`KEYS`] (shown by
//! `serve --help`) and in deploy/action-ledger.toml.

use crate::http::server::ServeConfig;
use crate::limits;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Every configuration key: name, what it is, default. The environment variable of a key is
/// `ACTION_LEDGER_` + the key in upper case.
pub const KEYS: &[(&str, &str, &str)] = &[
    (
        "data_dir",
        "data directory (log, projection, tokens)",
        "./ledger-data",
    ),
    (
        "listen",
        "address of the main HTTP listener",
        "127.0.0.1:8080",
    ),
    (
        "redis_listen",
        "address of the Redis Enterprise listener, or \"off\"",
        "127.0.0.1:9443",
    ),
    (
        "admin_token",
        "accept this token as admin for this run (never stored)",
        "(none)",
    ),
    (
        "segment_bytes",
        "start a new log segment past this size (>= 4096)",
        "67108864",
    ),
    (
        "commit_batch_records_max",
        "most records per fdatasync batch",
        "4096",
    ),
    (
        "commit_batch_bytes_max",
        "most bytes per fdatasync batch",
        "8388608",
    ),
    (
        "append_queue_max",
        "most submissions waiting for the writer",
        "16384",
    ),
    (
        "cache_bytes",
        "memory of all caches together, split 16:8:4:1 between sled's page cache, the memos, the rendered-JSON memo and the applier's memo (>= 2097152)",
        "121634816",
    ),
    (
        "sled_cache_bytes",
        "sled page cache of the projection, instead of its share of cache_bytes (>= 1048576)",
        "67108864",
    ),
    (
        "memo_bytes",
        "projection memos of decoded snapshots and resource id lists, instead of their share of cache_bytes (0: off)",
        "33554432",
    ),
    (
        "read_threads",
        "threads of the read pool that serves one action and list pages (0: one per core; at most READ_THREADS_MAX, 1024)",
        "0",
    ),
    (
        "body_bytes_max",
        "largest request body (BODY_BYTES_MAX)",
        "4194304",
    ),
    (
        "list_limit_max",
        "largest list page (LIST_LIMIT_MAX, at most 1000)",
        "1000",
    ),
    ("wait_ms_max", "longest wait (WAIT_MS_MAX)", "60000"),
    (
        "watchers_max",
        "most open watch streams (WATCHERS_MAX)",
        "1024",
    ),
    (
        "connections_max",
        "most in-flight requests per listener (CONNECTIONS_MAX)",
        "4096",
    ),
    (
        "request_timeout_ms",
        "time limit of every route but wait and watch",
        "30000",
    ),
    (
        "drain_timeout_ms",
        "how long shutdown waits for in-flight requests",
        "10000",
    ),
    (
        "public_metrics",
        "serve /metrics without a token (true/false)",
        "false",
    ),
    (
        "console",
        "serve the web console at /console (true/false)",
        "true",
    ),
    (
        "cluster_log",
        "cluster mode: postgres:// URL of the log of record (docs/cluster.md)",
        "(none)",
    ),
    (
        "node_id",
        "cluster mode: this node's id (default: its advertise URL)",
        "(none)",
    ),
    (
        "advertise_url",
        "cluster mode: URL other nodes reach this node at (default: http://LISTEN)",
        "(none)",
    ),
    (
        "cluster_lease_ms",
        "cluster mode: the leader's lease; a dead leader is replaced after it",
        "2000",
    ),
    (
        "tls_cert",
        "TLS on both listeners: certificate chain (PEM); reloaded on SIGHUP or change",
        "(none)",
    ),
    ("tls_key", "TLS: private key (PEM) of tls_cert", "(none)"),
    (
        "tls_client_ca",
        "TLS: require client certificates signed by these CAs (PEM)",
        "(none)",
    ),
    (
        "cors_origins",
        "origins browsers may call from, comma-separated scheme://host[:port] (TOML: a list); empty: CORS off",
        "(none)",
    ),
    ("log_format", "log output: text or json", "text"),
    (
        "access_log",
        "one log line per request (target \"access\", level info) (true/false)",
        "true",
    ),
    ("log_level", "log filter (tracing EnvFilter syntax)", "info"),
    (
        "otlp_endpoint",
        "OpenTelemetry: export request spans to this OTLP/HTTP collector (http://HOST:4318); needs a build with --features otlp",
        "(none)",
    ),
    (
        "otlp_service_name",
        "OpenTelemetry: the service.name of the exported spans",
        "action-ledger",
    ),
];

/// What setting `otlp_endpoint` says in a build without the cargo feature `otlp`.
pub const NO_OTLP: &str = "this build has no OTLP support: rebuild with --features otlp";

/// Keys that have a flag of their own (the others are set with `--set key=value`).
pub const FLAG_KEYS: &[&str] = &[
    "data_dir",
    "listen",
    "redis_listen",
    "admin_token",
    "public_metrics",
    "cluster_log",
    "node_id",
    "advertise_url",
    "tls_cert",
    "tls_key",
    "tls_client_ca",
    "cors_origins",
];

#[derive(Debug, Error, PartialEq)]
#[error("configuration: {key} (from {origin}): {reason}")]
pub struct ConfigError {
    pub key: String,
    pub origin: String,
    pub reason: String,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The validated configuration of `serve`.
#[derive(Clone, Debug)]
pub struct Settings {
    pub serve: ServeConfig,
    pub log_format: LogFormat,
    pub log_level: String,
    /// The TLS keys as set; [`Settings::load`] makes them `serve.tls` (both of cert and key,
    /// or neither).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_client_ca: Option<PathBuf>,
    /// The OTLP/HTTP collector's base URL (spans go to `<it>/v1/traces`), if any.
    pub otlp_endpoint: Option<String>,
    pub otlp_service_name: String,
    /// `cache_bytes` as set; [`Settings::load`] splits it into the caches of `serve`.
    pub cache_bytes: Option<u64>,
    /// Whether `sled_cache_bytes` / `memo_bytes` were set themselves (they then keep their
    /// value instead of their share of `cache_bytes`).
    pub sled_cache_set: bool,
    pub memo_set: bool,
}

impl Default for Settings {
    fn default() -> Self {
        let mut serve = ServeConfig::new("./ledger-data", "127.0.0.1:8080".parse().expect("addr"));
        serve.redis_listen = Some("127.0.0.1:9443".parse().expect("addr"));
        Settings {
            serve,
            log_format: LogFormat::Text,
            log_level: "info".into(),
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            otlp_endpoint: None,
            otlp_service_name: "action-ledger".into(),
            cache_bytes: None,
            sled_cache_set: false,
            memo_set: false,
        }
    }
}

fn parse<T: std::str::FromStr>(v: &str, what: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    v.trim()
        .parse()
        .map_err(|e| format!("{v:?} is not {what} ({e})"))
}

fn at_least<T: PartialOrd + std::fmt::Display + Copy>(v: T, min: T) -> Result<T, String> {
    if v < min {
        return Err(format!("must be at least {min}, got {v}"));
    }
    Ok(v)
}

/// `v`, if it is at most `max`, the limit named `limit` (in [`crate::limits`]) because `why`.
fn at_most<T: PartialOrd + std::fmt::Display + Copy>(
    v: T,
    max: T,
    limit: &str,
    why: &str,
) -> Result<T, String> {
    if v > max {
        return Err(format!("must be at most {max} ({limit}: {why}), got {v}"));
    }
    Ok(v)
}

impl Settings {
    /// Sets one key from its textual value.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let s = &mut self.serve;
        let l = &mut s.limits;
        let size = |v: &str| parse::<u64>(v, "a non-negative integer");
        let count = |v: &str| parse::<usize>(v, "a non-negative integer");
        match key {
            "data_dir" => {
                if value.trim().is_empty() {
                    return Err("must not be empty".into());
                }
                s.data_dir = PathBuf::from(value)
            }
            "listen" => s.listen = parse::<SocketAddr>(value, "an address such as 127.0.0.1:8080")?,
            "redis_listen" => {
                s.redis_listen = match value.trim() {
                    "" | "off" => None,
                    v => Some(parse::<SocketAddr>(
                        v,
                        "an address such as 127.0.0.1:9443, or \"off\"",
                    )?),
                }
            }
            "admin_token" => {
                s.admin_token = match value.trim() {
                    "" => None,
                    v if v.len() < 16 => return Err("must be at least 16 characters".into()),
                    v => Some(v.to_string()),
                }
            }
            "segment_bytes" => s.segment_bytes = at_least(size(value)?, limits::SEGMENT_BYTES_MIN)?,
            "commit_batch_records_max" => s.commit_batch_records_max = at_least(count(value)?, 1)?,
            "commit_batch_bytes_max" => {
                s.commit_batch_bytes_max = at_least(count(value)?, limits::COMMIT_BATCH_BYTES_MIN)?
            }
            "append_queue_max" => {
                s.append_queue_max = at_most(
                    at_least(count(value)?, 1)?,
                    limits::APPEND_QUEUE_CEILING,
                    "APPEND_QUEUE_CEILING",
                    "the most a bounded queue can hold",
                )?
            }
            "cache_bytes" => {
                self.cache_bytes = Some(at_least(size(value)?, limits::CACHE_BYTES_MIN)?)
            }
            "sled_cache_bytes" => {
                s.sled_cache_bytes = at_least(size(value)?, limits::SLED_CACHE_BYTES_MIN)?;
                self.sled_cache_set = true;
            }
            "memo_bytes" => {
                s.memo_bytes = count(value)?;
                self.memo_set = true;
            }
            "read_threads" => {
                s.read_threads = at_most(
                    count(value)?,
                    limits::READ_THREADS_MAX,
                    "READ_THREADS_MAX",
                    "more threads than that only wait on each other",
                )?
            }
            "body_bytes_max" => l.body_bytes_max = at_least(count(value)?, limits::BODY_BYTES_MIN)?,
            "list_limit_max" => {
                l.list_limit_max = at_most(
                    at_least(count(value)?, 1)?,
                    limits::LIST_LIMIT_MAX,
                    "LIST_LIMIT_MAX",
                    "the largest page the projection serves",
                )?
            }
            "wait_ms_max" => l.wait_ms_max = size(value)?,
            "watchers_max" => l.watchers_max = count(value)?,
            "connections_max" => {
                l.connections_max = at_most(
                    at_least(count(value)?, 1)?,
                    limits::CONNECTIONS_CEILING,
                    "CONNECTIONS_CEILING",
                    "the most a semaphore can count",
                )?
            }
            "request_timeout_ms" => l.request_timeout_ms = at_least(size(value)?, 1)?,
            "drain_timeout_ms" => l.drain_timeout_ms = size(value)?,
            "public_metrics" => s.public_metrics = parse::<bool>(value, "true or false")?,
            "console" => s.console = parse::<bool>(value, "true or false")?,
            "cluster_log" => {
                s.cluster.log = match value.trim() {
                    "" => None,
                    v => {
                        // Checked now, so a typo fails before anything starts; the message
                        // never repeats the URL (it may hold a password).
                        crate::cluster::store::parse_url(v).map_err(|e| e.to_string())?;
                        Some(v.to_string())
                    }
                }
            }
            "node_id" => {
                s.cluster.node_id = match value.trim() {
                    "" => None,
                    v if v.len() > limits::NODE_ID_BYTES_MAX => {
                        return Err(format!(
                            "longer than NODE_ID_BYTES_MAX ({} bytes)",
                            limits::NODE_ID_BYTES_MAX
                        ))
                    }
                    v => Some(v.to_string()),
                }
            }
            "advertise_url" => {
                s.cluster.advertise_url = match value.trim() {
                    "" => None,
                    v => {
                        let uri =
                            parse::<axum::http::Uri>(v, "a URL such as http://10.0.0.5:8080")?;
                        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
                            return Err("must be an http:// URL with a host and port".into());
                        }
                        Some(v.trim_end_matches('/').to_string())
                    }
                }
            }
            "cluster_lease_ms" => {
                s.cluster.lease_ms = at_most(
                    at_least(size(value)?, limits::CLUSTER_LEASE_TTL_MS_MIN)?,
                    limits::CLUSTER_LEASE_TTL_MS_MAX,
                    "CLUSTER_LEASE_TTL_MS_MAX",
                    "the longest lease",
                )?
            }
            "tls_cert" => self.tls_cert = path_or_none(value),
            "tls_key" => self.tls_key = path_or_none(value),
            "tls_client_ca" => self.tls_client_ca = path_or_none(value),
            "cors_origins" => {
                // The whole list each time: a later source replaces an earlier one.
                l.cors_origins = value
                    .split(',')
                    .map(str::trim)
                    .filter(|o| !o.is_empty())
                    .map(crate::http::web::check_origin)
                    .collect::<Result<_, _>>()?;
                l.cors_origins.dedup();
            }
            "log_format" => {
                self.log_format = match value.trim() {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    other => return Err(format!("{other:?} is not text or json")),
                }
            }
            "access_log" => s.access_log = parse::<bool>(value, "true or false")?,
            "log_level" => {
                tracing_subscriber::EnvFilter::try_new(value)
                    .map_err(|e| format!("{value:?} is not a log filter ({e})"))?;
                self.log_level = value.to_string();
            }
            "otlp_endpoint" => {
                self.otlp_endpoint = match value.trim() {
                    "" => None,
                    _ if !cfg!(feature = "otlp") => return Err(NO_OTLP.into()),
                    v => Some(otlp_endpoint(v)?),
                }
            }
            "otlp_service_name" => {
                let v = value.trim();
                if v.is_empty() || v.len() > limits::NAME_BYTES_MAX {
                    return Err(format!(
                        "expected 1 to {} bytes (NAME_BYTES_MAX)",
                        limits::NAME_BYTES_MAX
                    ));
                }
                self.otlp_service_name = v.to_string();
            }
            _ => return Err("unknown key".into()),
        }
        Ok(())
    }

    /// Builds the settings: defaults, then `file` (TOML), then the environment (as given by
    /// `env`), then `flags` (key, value) in order.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
        flags: &[(String, String)],
    ) -> Result<Settings, ConfigError> {
        let mut settings = Settings::default();
        if let Some(path) = file {
            let origin = path.display().to_string();
            let err = |key: &str, reason: String| ConfigError {
                key: key.to_string(),
                origin: origin.clone(),
                reason,
            };
            let text = std::fs::read_to_string(path)
                .map_err(|e| err("config", format!("cannot read the file: {e}")))?;
            let table: toml::Table = toml::from_str(&text).map_err(|e| {
                let at = e.span().map(|span| {
                    let before = &text[..span.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                    format!("line {line} column {column}: ")
                });
                err(
                    "config",
                    format!(
                        "not valid TOML: {}{}",
                        at.unwrap_or_default(),
                        e.message().trim()
                    ),
                )
            })?;
            for (key, value) in table {
                let text = match value {
                    toml::Value::String(s) => s,
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    // A list (`cors_origins`): its strings, comma-separated.
                    toml::Value::Array(items) if items.iter().all(toml::Value::is_str) => items
                        .iter()
                        .filter_map(toml::Value::as_str)
                        .collect::<Vec<_>>()
                        .join(","),
                    other => {
                        return Err(err(
                            &key,
                            format!("{} values are not accepted", other.type_str()),
                        ))
                    }
                };
                settings
                    .set(&key, &text)
                    .map_err(|reason| err(&key, reason))?;
            }
        }
        for (key, _, _) in KEYS {
            let var = format!("ACTION_LEDGER_{}", key.to_uppercase());
            if let Some(value) = env(&var) {
                settings.set(key, &value).map_err(|reason| ConfigError {
                    key: key.to_string(),
                    origin: var.clone(),
                    reason,
                })?;
            }
        }
        for (key, value) in flags {
            settings.set(key, value).map_err(|reason| ConfigError {
                key: key.clone(),
                origin: if FLAG_KEYS.contains(&key.as_str()) {
                    format!("--{}", key.replace('_', "-"))
                } else {
                    format!("--set {key}=…")
                },
                reason,
            })?;
        }
        settings.serve.tls = settings.tls_files()?;
        if let Some(total) = settings.cache_bytes {
            let budget = limits::CacheBudget::split(total);
            let s = &mut settings.serve;
            if !settings.sled_cache_set {
                s.sled_cache_bytes = budget.sled;
            }
            if !settings.memo_set {
                s.memo_bytes = budget.memo;
            }
            s.render_cache_bytes = budget.render;
            s.written_memo_bytes = budget.written;
        }
        Ok(settings)
    }

    /// The TLS files: `tls_cert` and `tls_key` together, `tls_client_ca` only with them.
    fn tls_files(&self) -> Result<Option<crate::http::tls::TlsFiles>, ConfigError> {
        let err = |key: &str, reason: &str| ConfigError {
            key: key.into(),
            origin: "the configuration".into(),
            reason: reason.into(),
        };
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(crate::http::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            })),
            (Some(_), None) => Err(err("tls_key", "tls_cert is set but tls_key is not")),
            (None, Some(_)) => Err(err("tls_cert", "tls_key is set but tls_cert is not")),
            (None, None) if self.tls_client_ca.is_some() => Err(err(
                "tls_client_ca",
                "client certificates need TLS: set tls_cert and tls_key too",
            )),
            (None, None) => Ok(None),
        }
    }
}

/// An OTLP/HTTP collector's base URL: `http://` or `https://`, a host, maybe a port and a
/// path; no query. Given without the trailing `/`.
fn otlp_endpoint(v: &str) -> Result<String, String> {
    let rest = v
        .strip_prefix("http://")
        .or_else(|| v.strip_prefix("https://"))
        .ok_or_else(|| format!("{v:?} is not an http:// or https:// URL"))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || v.contains(['?', '#', ' ']) || v.parse::<axum::http::Uri>().is_err() {
        return Err(format!(
            "{v:?} is not a collector URL like http://collector:4318"
        ));
    }
    Ok(v.trim_end_matches('/').to_string())
}

/// A file path, or `None` for an empty value.
fn path_or_none(value: &str) -> Option<PathBuf> {
    match value.trim() {
        "" => None,
        v => Some(PathBuf::from(v)),
    }
}

/// `serve --help`'s table of keys.
pub fn keys_help() -> String {
    let mut out = String::from(
        "Configuration keys (defaults < --config FILE (TOML) < ACTION_LEDGER_<KEY> environment < flags;\n`--set key=value` sets any key):\n",
    );
    for (key, what, default) in KEYS {
        let env = format!("ACTION_LEDGER_{}", key.to_uppercase());
        out.push_str(&format!(
            "  {key:<26} {what}\n  {:<26} [default: {default}] [env: {env}]\n",
            ""
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order_and_errors_name_key_and_origin() {
        let dir = tempfile_dir();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:1000\"\nsegment_bytes = 8192\npublic_metrics = true\n",
        )
        .unwrap();
        let env = |k: &str| (k == "ACTION_LEDGER_LISTEN").then(|| "127.0.0.1:2000".to_string());
        let s = Settings::load(Some(&file), env, &[]).unwrap();
        assert_eq!(s.serve.listen.port(), 2000, "env beats file");
        assert_eq!(s.serve.segment_bytes, 8192);
        assert!(s.serve.public_metrics);
        let s = Settings::load(
            Some(&file),
            env,
            &[("listen".into(), "127.0.0.1:3000".into())],
        )
        .unwrap();
        assert_eq!(s.serve.listen.port(), 3000, "flags beat env");

        std::fs::write(&file, "segment_bytes = 10\n").unwrap();
        let e = Settings::load(Some(&file), |_| None, &[]).unwrap_err();
        assert_eq!(e.key, "segment_bytes");
        assert!(e.to_string().contains("at least 4096"), "{e}");
        std::fs::write(&file, "bogus = 1\n").unwrap();
        let e = Settings::load(Some(&file), |_| None, &[]).unwrap_err();
        assert_eq!(
            (e.key.as_str(), e.reason.as_str()),
            ("bogus", "unknown key")
        );
        let e = Settings::load(
            None,
            |k| (k == "ACTION_LEDGER_REDIS_LISTEN").then(|| "nowhere".into()),
            &[],
        )
        .unwrap_err();
        assert_eq!(e.origin, "ACTION_LEDGER_REDIS_LISTEN");
        let s = Settings::load(
            None,
            |k| (k == "ACTION_LEDGER_REDIS_LISTEN").then(|| "off".into()),
            &[],
        )
        .unwrap();
        assert_eq!(s.serve.redis_listen, None);
    }

    /// What `Settings::default()` holds for `key`, as the text `KEYS` shows for it.
    fn default_text(s: &Settings, key: &str) -> String {
        let (v, l) = (&s.serve, &s.serve.limits);
        match key {
            "data_dir" => v.data_dir.display().to_string(),
            "listen" => v.listen.to_string(),
            "redis_listen" => v.redis_listen.map_or("off".into(), |a| a.to_string()),
            "admin_token" => v.admin_token.clone().unwrap_or("(none)".into()),
            "segment_bytes" => v.segment_bytes.to_string(),
            "commit_batch_records_max" => v.commit_batch_records_max.to_string(),
            "commit_batch_bytes_max" => v.commit_batch_bytes_max.to_string(),
            "append_queue_max" => v.append_queue_max.to_string(),
            "cache_bytes" => limits::CACHE_BYTES_DEFAULT.to_string(),
            "sled_cache_bytes" => v.sled_cache_bytes.to_string(),
            "memo_bytes" => v.memo_bytes.to_string(),
            "read_threads" => v.read_threads.to_string(),
            "body_bytes_max" => l.body_bytes_max.to_string(),
            "list_limit_max" => l.list_limit_max.to_string(),
            "wait_ms_max" => l.wait_ms_max.to_string(),
            "watchers_max" => l.watchers_max.to_string(),
            "connections_max" => l.connections_max.to_string(),
            "request_timeout_ms" => l.request_timeout_ms.to_string(),
            "drain_timeout_ms" => l.drain_timeout_ms.to_string(),
            "public_metrics" => v.public_metrics.to_string(),
            "console" => v.console.to_string(),
            "cluster_log" => v.cluster.log.clone().unwrap_or("(none)".into()),
            "node_id" => v.cluster.node_id.clone().unwrap_or("(none)".into()),
            "advertise_url" => v.cluster.advertise_url.clone().unwrap_or("(none)".into()),
            "cluster_lease_ms" => v.cluster.lease_ms.to_string(),
            "tls_cert" | "tls_key" | "tls_client_ca" => "(none)".into(),
            "cors_origins" if l.cors_origins.is_empty() => "(none)".into(),
            "cors_origins" => l.cors_origins.join(","),
            "log_format" => "text".into(),
            "access_log" => v.access_log.to_string(),
            "log_level" => s.log_level.clone(),
            "otlp_endpoint" => s.otlp_endpoint.clone().unwrap_or("(none)".into()),
            "otlp_service_name" => s.otlp_service_name.clone(),
            other => panic!("KEYS has {other}, which this test does not know"),
        }
    }

    /// Flags as `Settings::load` takes them.
    fn flags(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn cache_bytes_splits_one_budget_and_the_single_keys_override_their_share() {
        let total: u64 = 290 << 20;
        let s = Settings::load(
            None,
            |_| None,
            &flags(&[("cache_bytes", &total.to_string())]),
        )
        .unwrap();
        let v = &s.serve;
        let b = limits::CacheBudget::split(total);
        assert_eq!(
            (
                v.sled_cache_bytes,
                v.memo_bytes,
                v.render_cache_bytes,
                v.written_memo_bytes
            ),
            (b.sled, b.memo, b.render, b.written)
        );
        assert_eq!(
            v.sled_cache_bytes
                + (v.memo_bytes + v.render_cache_bytes + v.written_memo_bytes) as u64,
            total
        );
        assert_eq!(v.sled_cache_bytes, 160 << 20);
        // An explicit sled_cache_bytes keeps its value whatever the order it comes in.
        let s = Settings::load(
            None,
            |k| (k == "ACTION_LEDGER_SLED_CACHE_BYTES").then(|| "2097152".into()),
            &flags(&[("cache_bytes", &total.to_string())]),
        )
        .unwrap();
        assert_eq!(s.serve.sled_cache_bytes, 2 << 20);
        assert_eq!(s.serve.memo_bytes, b.memo);
        let e = Settings::load(None, |_| None, &flags(&[("cache_bytes", "1000")])).unwrap_err();
        assert_eq!(e.key, "cache_bytes");
        assert!(e.reason.contains("at least 2097152"), "{}", e.reason);
    }

    #[test]
    fn defaults_are_the_limits_constants_and_keys_shows_them() {
        let s = Settings::default();
        let (v, l) = (&s.serve, &s.serve.limits);
        assert_eq!(v.segment_bytes, limits::SEGMENT_BYTES_DEFAULT);
        assert_eq!(v.commit_batch_records_max, limits::COMMIT_BATCH_RECORDS_MAX);
        assert_eq!(v.commit_batch_bytes_max, limits::COMMIT_BATCH_BYTES_MAX);
        assert_eq!(v.append_queue_max, limits::APPEND_QUEUE_MAX);
        assert_eq!(v.sled_cache_bytes, limits::SLED_CACHE_BYTES_DEFAULT);
        assert_eq!(v.memo_bytes, limits::MEMO_BYTES_DEFAULT);
        assert_eq!(l.body_bytes_max, limits::BODY_BYTES_MAX);
        assert_eq!(l.list_limit_max, limits::LIST_LIMIT_MAX);
        assert_eq!(l.wait_ms_max, limits::WAIT_MS_MAX);
        assert_eq!(l.watchers_max, limits::WATCHERS_MAX);
        assert_eq!(l.connections_max, limits::CONNECTIONS_MAX);
        assert_eq!(l.watch_keepalive_ms, limits::WATCH_KEEPALIVE_MS);
        assert_eq!(l.request_timeout_ms, limits::REQUEST_TIMEOUT_MS);
        assert_eq!(l.drain_timeout_ms, limits::DRAIN_TIMEOUT_MS);
        assert_eq!(l.header_read_timeout_ms, limits::HEADER_READ_TIMEOUT_MS);
        assert_eq!(l.header_bytes_max, limits::HEADER_BYTES_MAX);
        let p = crate::projection::ProjectionConfig::default();
        assert_eq!(p.cache_capacity_bytes, limits::SLED_CACHE_BYTES_DEFAULT);
        assert_eq!(p.snapshot_cache_bytes, limits::MEMO_BYTES_DEFAULT);
        // `serve --help` and the deploy file show these defaults.
        for (key, _, shown) in KEYS {
            assert_eq!(&default_text(&s, key), shown, "KEYS default of {key}");
        }
        // Every default passes the configuration's own checks.
        let mut again = Settings::default();
        for (key, _, _) in KEYS {
            let text = default_text(&s, key);
            if ![
                "admin_token",
                "redis_listen",
                "cluster_log",
                "node_id",
                "advertise_url",
                "tls_cert",
                "tls_key",
                "tls_client_ca",
                "cors_origins",
                "otlp_endpoint",
            ]
            .contains(key)
            {
                again
                    .set(key, &text)
                    .unwrap_or_else(|e| panic!("{key}={text}: {e}"));
            }
        }
    }

    #[test]
    fn bounds_the_code_would_refuse_are_refused_naming_the_limit() {
        let set = |key: &str, v: String| Settings::load(None, |_| None, &[(key.into(), v)]);
        let e = set("list_limit_max", (limits::LIST_LIMIT_MAX + 1).to_string()).unwrap_err();
        assert_eq!(e.key, "list_limit_max");
        assert!(
            e.reason.contains("at most 1000") && e.reason.contains("LIST_LIMIT_MAX"),
            "{e}"
        );
        let s = set("list_limit_max", limits::LIST_LIMIT_MAX.to_string()).unwrap();
        assert_eq!(s.serve.limits.list_limit_max, limits::LIST_LIMIT_MAX);
        assert!(set("list_limit_max", "0".into()).is_err());
        for (key, limit) in [
            ("connections_max", "CONNECTIONS_CEILING"),
            ("append_queue_max", "APPEND_QUEUE_CEILING"),
            ("read_threads", "READ_THREADS_MAX"),
        ] {
            let e = set(key, usize::MAX.to_string()).unwrap_err();
            assert!(e.reason.contains(limit), "{e}");
        }
        let s = set("read_threads", limits::READ_THREADS_MAX.to_string()).unwrap();
        assert_eq!(s.serve.read_threads, limits::READ_THREADS_MAX);
        assert!(set("read_threads", "-1".into()).is_err());
    }

    #[test]
    fn tls_cert_and_key_go_together() {
        let s = Settings::load(
            None,
            |k| (k == "ACTION_LEDGER_TLS_KEY").then(|| "/k.pem".into()),
            &flags(&[("tls_cert", "/c.pem")]),
        )
        .unwrap();
        let tls = s.serve.tls.unwrap();
        assert_eq!(
            (tls.cert.to_str(), tls.key.to_str(), tls.client_ca),
            (Some("/c.pem"), Some("/k.pem"), None)
        );
        let e = Settings::load(None, |_| None, &flags(&[("tls_cert", "/c.pem")])).unwrap_err();
        assert_eq!(e.key, "tls_key");
        let e =
            Settings::load(None, |_| None, &flags(&[("tls_client_ca", "/ca.pem")])).unwrap_err();
        assert_eq!(e.key, "tls_client_ca");
        let s = Settings::load(None, |_| None, &[]).unwrap();
        assert!(s.serve.tls.is_none());
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("al-config-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
