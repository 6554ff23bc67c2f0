//! The command line: one module per command group. `main.rs` only calls [`main`].
//!
//! | command | module |
//! |---|---|
//! | `serve` | [`serve`] (configuration layering lives in [`crate::config`]) |
//! | `verify`, `rebuild` | [`check`] |
//! | `replay` | [`replay`] |
//! | `export`, `import` | [`transfer`] |
//! | `token create\|list\|revoke` | [`token`] |
//! | `cluster status\|init` | [`cluster`] |
//! | `actions …`, `tokens …` (against a running server) | [`remote`] |
//!
//! Exit codes (docs/operations.md): 0 success, 1 damage found by `verify` or a request the
//! server refused (remote commands: not found, 401/403, 409, 4xx), 2 any other error
//! (usage, connection). Every error is one line on stderr starting with `error:`. Writing to a closed pipe
//! (`action-ledger replay … | head -1`) ends the command quietly with 0.

pub mod check;
pub mod cluster;
pub mod remote;
pub mod replay;
pub mod serve;
pub mod token;
pub mod transfer;

use clap::{Args, Parser, Subcommand};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "action-ledger",
    version,
    about = "A persistent, event-sourced ledger of long-running cloud actions",
    after_help = "Exit codes: 0 success, 1 damage found (verify) or refused by the server \
                  (actions, tokens), 2 any other error (usage, connection)."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Recover the log, catch up the projection, serve HTTP until SIGINT/SIGTERM.
    /// Exit 0 after a clean stop, 2 on a configuration or start-up error.
    Serve(serve::ServeArgs),
    /// Read-only integrity check of the log (frames, checksums, positions, digest chain) and
    /// of the projection against a fresh fold of the log. Exit 0 intact, 1 damage found
    /// (file and offset printed), 2 error.
    Verify(DataDir),
    /// Delete the projection and rebuild it from the log, with progress. The server must be
    /// stopped.
    Rebuild(DataDir),
    /// Print log records as JSON lines up to a point, or (--snapshots) the actions' states
    /// as of that point.
    Replay(replay::ReplayArgs),
    /// Write the whole log as JSON lines (one record per line), to --out or stdout.
    Export(transfer::ExportArgs),
    /// Load an export into an empty ledger, keeping ids, positions, times and record
    /// boundaries (the digest chain is checked against the export's).
    Import(transfer::ImportArgs),
    /// Manage API tokens (only their hashes are stored). The server reads tokens.json at
    /// start: while it runs, use the HTTP token routes instead.
    Token {
        #[command(subcommand)]
        command: token::TokenCmd,
    },
    /// Cluster mode's tools (docs/cluster.md): `status` of a cluster log, `init` of one from
    /// a single-node data directory.
    Cluster {
        #[command(subcommand)]
        command: cluster::ClusterCmd,
    },
    /// Actions on a running server over its HTTP API: list, get, history, wait, watch,
    /// create, event, cancel. Exit 0 ok, 1 not found or refused by the server, 2 usage or
    /// connection error.
    Actions(Box<remote::actions::ActionsArgs>),
    /// Tokens of a running server over its HTTP API (admin): list, create, revoke. The
    /// offline `token` command edits a stopped server's data directory instead.
    Tokens(remote::tokens::TokensArgs),
}

/// `--data-dir DIR` (or `ACTION_LEDGER_DATA_DIR`) of every command but serve.
#[derive(Args, Clone, Debug)]
pub struct DataDir {
    /// The ledger's data directory.
    #[arg(long = "data-dir", env = "ACTION_LEDGER_DATA_DIR", value_name = "DIR")]
    pub data_dir: PathBuf,
}

impl DataDir {
    /// The directory, which must exist and hold a ledger (a `log/` directory).
    pub fn existing(&self) -> Result<&Path, Failure> {
        let dir = &self.data_dir;
        if !dir.is_dir() {
            return Err(Failure::error(format!(
                "data directory {} does not exist",
                dir.display()
            )));
        }
        if !dir.join("log").is_dir() {
            return Err(Failure::error(format!(
                "{} is not a ledger data directory (no log/ inside)",
                dir.display()
            )));
        }
        Ok(dir)
    }

    pub fn log_dir(&self) -> PathBuf {
        self.data_dir.join("log")
    }
}

/// Takes the lock a running server holds on `data_dir` ([`crate::datadir`]), or refuses with
/// "DIR is in use by a running server (pid N); stop it before DOING". Offline commands that
/// change what a server serves from call it first and keep the returned guard while they
/// write, so a server cannot start in between. `None` when the directory does not exist yet.
pub fn lock_unserved(
    data_dir: &Path,
    doing: &str,
) -> Result<Option<crate::datadir::DataDirLock>, Failure> {
    if !data_dir.exists() {
        return Ok(None);
    }
    match crate::datadir::lock(data_dir) {
        Ok(lock) => Ok(Some(lock)),
        Err(e @ crate::datadir::LockError::InUse { .. }) => {
            Err(Failure::error(format!("{e}; stop it before {doing}")))
        }
        Err(e) => Err(Failure::error(e.to_string())),
    }
}

/// Why a command did not succeed.
#[derive(Debug)]
pub enum Failure {
    /// `verify` found damage (exit 1); the message names file and offset.
    Damage(String),
    /// The server refused a remote command: not found, unauthorized, forbidden, conflict,
    /// a 4xx validation error (exit 1, `error: MESSAGE`).
    Refused(String),
    /// Any other error (exit 2).
    Error(String),
    /// stdout was closed by the reader (exit 0, nothing printed).
    PipeClosed,
}

impl Failure {
    pub fn error(msg: impl Into<String>) -> Failure {
        Failure::Error(msg.into())
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Failure::PipeClosed
        } else {
            Failure::Error(format!("cannot write the output: {e}"))
        }
    }
}

pub type CliResult = Result<(), Failure>;

/// Writes one line to `out`; a closed pipe becomes [`Failure::PipeClosed`].
pub fn line(out: &mut dyn Write, text: &str) -> CliResult {
    out.write_all(text.as_bytes())?;
    out.write_all(b"\n")?;
    Ok(())
}

/// A progress bar on stderr when it is a terminal; hidden (and free) otherwise.
pub fn progress_bar(len: u64, what: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    let style =
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} ({eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(what.to_string());
    bar
}

pub use crate::hex;

fn init_tracing(filter: &str, json: bool) {
    init_tracing_with(filter, json, None);
}

/// A `tracing` layer beside the log (with its own filter): the OpenTelemetry export.
pub type ExtraLayer =
    Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>;

/// Logging to stderr, filtered by `ACTION_LEDGER_LOG` or else `filter`, as text or JSON lines;
/// and `extra`, which sees what its own filter lets through.
fn init_tracing_with(filter: &str, json: bool, extra: Option<ExtraLayer>) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("ACTION_LEDGER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        // Where stderr cannot be written (a file on a full or failed disk), a log line is
        // lost; the default would report that with eprintln!, which panics the thread that
        // logged — the writer thread or a cluster node's leadership task.
        .log_internal_errors(false);
    let fmt = if json {
        fmt.json().with_filter(filter).boxed()
    } else {
        fmt.with_filter(filter).boxed()
    };
    let _ = tracing_subscriber::registry()
        .with(extra)
        .with(fmt)
        .try_init();
}

/// Runs an offline command with logging to stderr (warnings only, unless `ACTION_LEDGER_LOG`
/// says otherwise) and a locked stdout, flushed at the end.
fn with_stdout(run: impl FnOnce(&mut dyn Write) -> CliResult) -> CliResult {
    init_tracing("warn", false);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    run(&mut out)?;
    out.flush()?;
    Ok(())
}

/// Parses the command line, runs the command, maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help / --version print and exit 0; usage errors print and exit 2.
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let result = match cli.command {
        Cmd::Serve(args) => serve::run(args),
        Cmd::Verify(d) => with_stdout(|out| check::verify(&d, out)),
        Cmd::Rebuild(d) => with_stdout(|out| check::rebuild(&d, out)),
        Cmd::Replay(a) => with_stdout(|out| replay::run(&a, out)),
        Cmd::Export(a) => with_stdout(|out| transfer::export(&a, out)),
        Cmd::Import(a) => with_stdout(|out| transfer::import(&a, out)),
        Cmd::Token { command } => with_stdout(|out| token::run(command, out)),
        Cmd::Cluster { command } => with_stdout(|out| match command {
            cluster::ClusterCmd::Status(a) => cluster::status(&a, out),
            cluster::ClusterCmd::Init(a) => cluster::init(&a, out),
        }),
        Cmd::Actions(a) => remote::actions::run(*a),
        Cmd::Tokens(a) => remote::tokens::run(a),
    };
    match result {
        Ok(()) | Err(Failure::PipeClosed) => ExitCode::SUCCESS,
        Err(Failure::Damage(msg)) => {
            // The report itself went to stdout; this is the one-line verdict.
            eprintln!("damaged: {msg}");
            ExitCode::from(1)
        }
        Err(Failure::Refused(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(1)
        }
        Err(Failure::Error(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
    }
}
