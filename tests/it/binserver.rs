//! The real `action-ledger serve` binary as a child process, for the crash, disk-fault and
//! damage tests: start it on port 0, learn its address from its stderr, wait until ready,
//! SIGKILL it.

use crate::app::{Api, ADMIN};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary under test: cargo's build of it, or `ACTION_LEDGER_TEST_BIN` (for example a
/// release build: `ACTION_LEDGER_TEST_BIN=target/release/action-ledger`).
pub fn bin() -> String {
    std::env::var("ACTION_LEDGER_TEST_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_action-ledger").to_string())
}

/// How long a start may take on a loaded 2-core machine before it counts as a failed start.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one `/readyz` probe may take. Without it one stuck probe (a connection the
/// kernel let wait in SYN retries, ~2 min) would use up all of [`START_TIMEOUT`] with no
/// second try; a server that really stopped answering still fails every probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub segment_bytes: u64,
    /// `RLIMIT_FSIZE` of the server process in bytes (SIGXFSZ ignored, so an oversized
    /// write fails with EFBIG instead of killing the process).
    pub file_size_limit: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_bytes: 16 * 1024,
            file_size_limit: None,
        }
    }
}

pub struct BinServer {
    pub child: Child,
    pub api: Api,
}

impl std::ops::Deref for BinServer {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

/// Starts the binary on `data_dir`; its stdout and stderr go to `output`.
pub fn spawn(data_dir: &Path, output: &Path, opts: &Options) -> Child {
    spawn_with(data_dir, output, opts, &[])
}

/// [`spawn`] with more `serve` arguments (`extra`) after the usual ones.
pub fn spawn_with(data_dir: &Path, output: &Path, opts: &Options, extra: &[String]) -> Child {
    let out = std::fs::File::create(output)
        .unwrap_or_else(|e| panic!("create {}: {e}", output.display()));
    let err = out.try_clone().unwrap();
    let segment_bytes = format!("segment_bytes={}", opts.segment_bytes);
    let args = [
        "serve",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--redis-listen",
        "off",
        "--admin-token",
        ADMIN,
        "--set",
        &segment_bytes,
    ];
    let mut cmd = match opts.file_size_limit {
        None => {
            let mut c = Command::new(bin());
            c.args(args).args(extra);
            c
        }
        Some(bytes) => {
            // The crate forbids unsafe code (so no pre_exec): an ignored signal and a resource
            // limit both survive exec, so a shell sets them and execs the server.
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg("trap '' XFSZ; exec prlimit --fsize=\"$FSIZE\" -- \"$@\"")
                .arg("sh")
                .arg(bin())
                .args(args)
                .args(extra)
                .env("FSIZE", bytes.to_string());
            c
        }
    };
    for var in [
        "ACTION_LEDGER_DATA_DIR",
        "ACTION_LEDGER_LISTEN",
        "ACTION_LEDGER_REDIS_LISTEN",
        "ACTION_LEDGER_ADMIN_TOKEN",
        "ACTION_LEDGER_SEGMENT_BYTES",
        "ACTION_LEDGER_CLUSTER_LOG",
        "ACTION_LEDGER_NODE_ID",
        "ACTION_LEDGER_ADVERTISE_URL",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("ACTION_LEDGER_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin()))
}

/// Starts the binary and waits until `/readyz` answers 200. `Err` (with the server's output)
/// when it exits or does not become ready.
pub async fn start(data_dir: &Path, output: &Path, opts: &Options) -> Result<BinServer, String> {
    start_with(data_dir, output, opts, &[]).await
}

/// [`start`] with more `serve` arguments.
pub async fn start_with(
    data_dir: &Path,
    output: &Path,
    opts: &Options,
    extra: &[String],
) -> Result<BinServer, String> {
    let mut child = spawn_with(data_dir, output, opts, extra);
    match wait_ready(&mut child, output).await {
        Ok(base) => Ok(BinServer {
            child,
            api: Api::new(base),
        }),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

async fn wait_ready(child: &mut Child, output: &Path) -> Result<String, String> {
    let started = Instant::now();
    let client = reqwest::Client::builder()
        .timeout(PROBE_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let mut base: Option<String> = None;
    // What the last probe got, for the failure message.
    let mut last_probe = String::from("no probe yet (no \"listening on\" line)");
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!(
                "server exited with {status} before it was ready; output:\n{}",
                read_output(output)
            ));
        }
        if started.elapsed() > START_TIMEOUT {
            return Err(format!(
                "server not ready after {START_TIMEOUT:?} (last /readyz probe: {last_probe}); output:\n{}",
                read_output(output)
            ));
        }
        if base.is_none() {
            // Only whole lines: the server may be writing the "listening on" line right now.
            let out = read_output(output);
            let whole = &out[..out.rfind('\n').map_or(0, |i| i + 1)];
            base = whole
                .lines()
                .find_map(|l| l.split("listening on ").nth(1))
                .map(|s| s.trim().to_string());
        }
        if let Some(b) = &base {
            match client.get(format!("{b}/readyz")).send().await {
                Ok(r) if r.status() == reqwest::StatusCode::OK => return Ok(b.clone()),
                Ok(r) => last_probe = format!("status {}", r.status()),
                Err(e) => last_probe = format!("{e:?}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn read_output(output: &Path) -> String {
    std::fs::read_to_string(output).unwrap_or_default()
}

impl BinServer {
    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for BinServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until `child` (a `serve` with stdout and stderr piped) says on stderr that it listens,
/// stops it with SIGTERM, and returns its whole stdout once it exited 0.
pub fn until_listening_then_stop(mut child: Child) -> String {
    use std::io::{BufRead as _, BufReader, Read as _};
    let mut err = BufReader::new(child.stderr.take().expect("stderr piped"));
    let mut line = String::new();
    while !line.contains("listening on") {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "server exited early");
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout piped")
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    out
}
