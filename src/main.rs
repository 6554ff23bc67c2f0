//! The `action-ledger` binary: parses the command line, runs the command, maps errors to
//! exit codes (0 ok, 1 damage found by `verify`, 2 any other error). All work lives in the
//! library.

use action_ledger::http::server::{self, ServeConfig};
use action_ledger::log::{self, FsStorage, LogError};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "action-ledger",
    version,
    about = "A persistent, event-sourced ledger of long-running cloud actions"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Recover the log, catch up the projection, serve HTTP until SIGINT/SIGTERM.
    /// Exit 0 after a clean stop, 2 on a configuration or start-up error.
    Serve {
        /// The ledger's data directory (created, owner-only, if missing).
        #[arg(long, env = "ACTION_LEDGER_DATA_DIR", default_value = "./ledger-data")]
        data_dir: PathBuf,
        /// Address of the HTTP listener.
        #[arg(long, env = "ACTION_LEDGER_LISTEN", default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Address of the Redis Enterprise dialect's own listener; "off" (or empty) disables it.
        #[arg(long, env = "ACTION_LEDGER_REDIS_LISTEN", default_value = "127.0.0.1:9443", value_parser = parse_redis_listen)]
        redis_listen: RedisListen,
        /// Accept this token as an admin token for this run (never stored).
        #[arg(long, env = "ACTION_LEDGER_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        /// Start a new log segment past this many bytes.
        #[arg(long, env = "ACTION_LEDGER_SEGMENT_BYTES", default_value_t = action_ledger::limits::SEGMENT_BYTES_DEFAULT)]
        segment_bytes: u64,
        /// sled page cache of the projection, in bytes.
        #[arg(long, env = "ACTION_LEDGER_SLED_CACHE_BYTES", default_value_t = 64 * 1024 * 1024)]
        sled_cache_bytes: u64,
        /// Serve /metrics without a token.
        #[arg(long, env = "ACTION_LEDGER_PUBLIC_METRICS")]
        public_metrics: bool,
    },
    /// Read-only integrity check of the log: frames, checksums, positions, digest chain.
    /// Exit 0 intact, 1 damage found (file and offset printed), 2 error.
    Verify {
        /// The ledger's data directory.
        #[arg(long, env = "ACTION_LEDGER_DATA_DIR")]
        data_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ACTION_LEDGER_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Cmd::Verify { data_dir } => verify(data_dir),
        Cmd::Serve {
            data_dir,
            listen,
            redis_listen,
            admin_token,
            segment_bytes,
            sled_cache_bytes,
            public_metrics,
        } => {
            if segment_bytes < 4096 {
                eprintln!("error: --segment-bytes must be at least 4096, got {segment_bytes}");
                return ExitCode::from(2);
            }
            let mut config = ServeConfig::new(data_dir, listen);
            config.admin_token = admin_token.filter(|t| !t.is_empty());
            config.segment_bytes = segment_bytes;
            config.sled_cache_bytes = sled_cache_bytes;
            config.public_metrics = public_metrics;
            config.redis_listen = redis_listen.0;
            serve(config)
        }
    }
}

/// `--redis-listen`: an address, or "off"/"" for no Redis listener.
#[derive(Clone, Debug)]
struct RedisListen(Option<std::net::SocketAddr>);

fn parse_redis_listen(s: &str) -> Result<RedisListen, String> {
    match s.trim() {
        "" | "off" => Ok(RedisListen(None)),
        a => a
            .parse()
            .map(|a| RedisListen(Some(a)))
            .map_err(|e| format!("{e} (an address such as 127.0.0.1:9443, or \"off\")")),
    }
}

fn serve(config: ServeConfig) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async move {
        let running = match server::start(config, server::termination_signal()).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::from(2);
            }
        };
        let base = format!("http://{}", running.addr);
        eprintln!("action-ledger listening on {base}");
        if let Some(redis) = running.redis_addr {
            eprintln!("Redis Enterprise dialect listening on http://{redis}");
        }
        if let Some(token) = &running.first_admin_token {
            println!("Created the first admin token (shown once; only its hash is stored):");
            println!("  {token}");
            println!("Try it:");
            println!(
                "  curl -s -X POST {base}/api/v1/actions -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' -d '{{\"type\":\"snapshot\",\"resource\":{{\"type\":\"droplet\",\"id\":\"3164450\"}}}}'"
            );
            println!("  curl -s {base}/api/v1/actions/1 -H 'Authorization: Bearer {token}'");
        }
        match running.wait().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        }
    })
}

fn verify(data_dir: PathBuf) -> ExitCode {
    let log_dir = data_dir.join("log");
    if !log_dir.is_dir() {
        eprintln!(
            "error: {} is not a ledger data directory (no log/ inside)",
            data_dir.display()
        );
        return ExitCode::from(2);
    }
    let mut records = 0u64;
    match log::verify(&FsStorage, &log_dir, &mut |_| {
        records += 1;
        Ok(())
    }) {
        Ok(summary) => {
            println!(
                "ok: {} records in {} segments, last position {}, head digest {}",
                records,
                summary.segments.len(),
                summary.last_position,
                hex(&summary.last_digest)
            );
            if let Some(t) = summary.torn_tail {
                println!(
                    "note: torn tail of {} bytes at {} offset {} ({}); never acknowledged, the next start cuts it",
                    t.len,
                    t.file.display(),
                    t.offset,
                    t.reason
                );
            }
            ExitCode::SUCCESS
        }
        Err(e @ LogError::Corrupt { .. }) => {
            println!("damaged: {e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
