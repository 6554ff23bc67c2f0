//! `serve`: configuration (validated once, see [`crate::config`]), then the server until
//! SIGINT/SIGTERM.

use super::{CliResult, Failure};
use crate::config::{LogFormat, Settings};
use crate::http::server;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
#[command(after_help = crate::config::keys_help())]
pub struct ServeArgs {
    /// TOML configuration file (keys below; see deploy/action-ledger.toml).
    #[arg(long, env = "ACTION_LEDGER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory, created owner-only if missing [key data_dir].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,
    /// Address of the HTTP listener [key listen].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Address of the Redis Enterprise dialect's own listener, or "off" [key redis_listen].
    #[arg(long, value_name = "ADDR")]
    pub redis_listen: Option<String>,
    /// Accept this token as an admin token for this run; never stored [key admin_token].
    #[arg(long, value_name = "TOKEN")]
    pub admin_token: Option<String>,
    /// Serve /metrics without a token [key public_metrics].
    #[arg(long)]
    pub public_metrics: bool,
    /// Do not serve the web console at /console [key console].
    #[arg(long)]
    pub no_console: bool,
    /// Cluster mode: the PostgreSQL URL of the log of record [key cluster_log].
    #[arg(long, value_name = "URL")]
    pub cluster_log: Option<String>,
    /// Cluster mode: this node's id [key node_id].
    #[arg(long, value_name = "ID")]
    pub node_id: Option<String>,
    /// Cluster mode: the URL other nodes reach this node at [key advertise_url].
    #[arg(long, value_name = "URL")]
    pub advertise_url: Option<String>,
    /// TLS on both listeners: the certificate chain (PEM); reloaded on SIGHUP and when the
    /// file changes [key tls_cert].
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<String>,
    /// TLS: the private key (PEM) of --tls-cert [key tls_key].
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<String>,
    /// TLS: require a client certificate signed by one of these CAs (PEM) [key tls_client_ca].
    #[arg(long, value_name = "FILE")]
    pub tls_client_ca: Option<String>,
    /// An origin browsers may call from, scheme://host[:port] (repeatable; replaces the
    /// file's and the environment's list) [key cors_origins].
    #[arg(
        long = "cors-origin",
        visible_alias = "cors-origins",
        value_name = "ORIGIN"
    )]
    pub cors_origin: Vec<String>,
    /// Set any configuration key (repeatable), e.g. --set segment_bytes=1048576.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

impl ServeArgs {
    /// The flags as (key, value) pairs, in the order they apply (named flags, then --set).
    pub fn flag_pairs(&self) -> Result<Vec<(String, String)>, Failure> {
        let mut out = Vec::new();
        let named = [
            ("data_dir", &self.data_dir),
            ("listen", &self.listen),
            ("redis_listen", &self.redis_listen),
            ("admin_token", &self.admin_token),
            ("cluster_log", &self.cluster_log),
            ("node_id", &self.node_id),
            ("advertise_url", &self.advertise_url),
            ("tls_cert", &self.tls_cert),
            ("tls_key", &self.tls_key),
            ("tls_client_ca", &self.tls_client_ca),
        ];
        for (key, value) in named {
            if let Some(v) = value {
                out.push((key.to_string(), v.clone()));
            }
        }
        if self.public_metrics {
            out.push(("public_metrics".into(), "true".into()));
        }
        if self.no_console {
            out.push(("console".into(), "false".into()));
        }
        if !self.cors_origin.is_empty() {
            out.push(("cors_origins".into(), self.cors_origin.join(",")));
        }
        for kv in &self.set {
            let (k, v) = kv.split_once('=').ok_or_else(|| {
                Failure::error(format!(
                    "--set {kv:?}: expected KEY=VALUE (keys are listed by `serve --help`)"
                ))
            })?;
            out.push((k.trim().to_string(), v.to_string()));
        }
        Ok(out)
    }
}

/// Loads and validates the settings: defaults < file < environment < flags.
pub fn settings(args: &ServeArgs) -> Result<Settings, Failure> {
    let flags = args.flag_pairs()?;
    Settings::load(args.config.as_deref(), |k| std::env::var(k).ok(), &flags)
        .map_err(|e| Failure::error(e.to_string()))
}

pub fn run(args: ServeArgs) -> CliResult {
    let settings = settings(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::error(format!("cannot start the async runtime: {e}")))?;
    // The OTLP exporter's batch task runs on the server's runtime.
    #[cfg(feature = "otlp")]
    let (extra, otlp) = match &settings.otlp_endpoint {
        Some(endpoint) => {
            let _on = runtime.enter();
            let (layer, otlp) = crate::telemetry::layer(endpoint, &settings.otlp_service_name)
                .map_err(Failure::error)?;
            (Some(layer), Some(otlp))
        }
        None => (None, None),
    };
    #[cfg(not(feature = "otlp"))]
    let extra = None;
    super::init_tracing_with(
        &settings.log_level,
        settings.log_format == LogFormat::Json,
        extra,
    );
    let config = settings.serve;
    let served = runtime.block_on(async move {
        let running = server::start(config, server::termination_signal())
            .await
            .map_err(failed)?;
        let scheme = if running.tls { "https" } else { "http" };
        let base = format!("{scheme}://{}", running.addr);
        eprintln!("action-ledger listening on {base}");
        if let Some(redis) = running.redis_addr {
            eprintln!("Redis Enterprise dialect listening on {scheme}://{redis}");
        }
        if let Some(file) = &running.first_admin_token_file {
            // A closed stdout must not stop the server; the token is in the file anyway.
            if let Err(e) = print_first_run(&base, file) {
                eprintln!(
                    "error: cannot print the first-run banner ({e}); the first admin token is in {}",
                    file.display()
                );
            }
        }
        running.wait().await.map_err(failed)
    });
    #[cfg(feature = "otlp")]
    if let Some(otlp) = otlp {
        runtime.block_on(otlp.shutdown());
    }
    served
}

/// The server's error, as the binary's one `error:` line (every [`server::ServeError`]
/// message already carries its cause).
fn failed(e: server::ServeError) -> Failure {
    Failure::error(e.to_string())
}

/// The first-run banner: where the admin token is (never the secret itself: stdout is the
/// journal under systemd) and two copy-paste commands (create, read).
pub fn first_run_text(base: &str, file: &std::path::Path) -> String {
    let file = file.display();
    format!(
        "Created the first admin token. Its secret is in {file} (readable by this user only; \
the ledger stores only its hash). Keep it somewhere safe, then delete that file.\n\
Try it (create an action, then read it):\n  \
T=$(cat '{file}')\n  \
curl -s -X POST {base}/api/v1/actions -H \"Authorization: Bearer $T\" -H 'Content-Type: application/json' -d '{{\"uid\":\"first-snapshot\",\"type\":\"snapshot\",\"resource\":{{\"type\":\"droplet\",\"id\":\"3164450\"}}}}'\n  \
curl -s {base}/api/v1/actions/first-snapshot -H \"Authorization: Bearer $T\"\n"
    )
}

fn print_first_run(base: &str, file: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(first_run_text(base, file).as_bytes())?;
    out.flush()
}
