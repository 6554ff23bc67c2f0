//! The `action-ledger` binary: parses the command line, runs the command, maps errors to
//! exit codes (0 ok, 1 damage found by `verify`, 2 any other error). All work lives in the
//! library.

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
    }
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
