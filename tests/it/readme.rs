//! README's "A five-minute tour", run as written: its fenced `sh` blocks, in order, against a
//! fresh data directory, with the real binary, bash and curl — each step's answer asserted.
//!
//! The only changes to the text: `cargo run --release --` becomes the built binary, the
//! listeners get free ports (port 0, learned from the server's "listening on" lines, and
//! substituted for `localhost:8080` and `localhost:9443`), `mktemp` works under the test's
//! own temporary directory (the second block gets the first's `D`, as the tour tells its
//! reader), and every curl is bounded (`--max-time`) and reports its HTTP status.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The heading of the tour section in README.md.
const TOUR_HEADING: &str = "## A five-minute tour";
/// What the tour types to run the binary; the test runs the built one instead.
const CARGO_RUN: &str = "cargo run --release --";
/// The addresses the tour's curls use (the server's default listeners).
const TOUR_HTTP: &str = "localhost:8080";
const TOUR_REDIS: &str = "localhost:9443";
/// A hang guard, not a timed assertion: how long the server may take to print its first-run
/// token, or to exit after SIGTERM, on a loaded 2-core machine.
const SERVER_WAIT: Duration = Duration::from_secs(120);
/// Hang guard for one ordinary curl (`--max-time`).
const CURL_MAX_SECS: u32 = 120;
/// How long the `watch` step (which streams until interrupted) listens. The whole log is
/// committed before it starts and `after=0` sends it at once; this only ends the stream.
const WATCH_SECS: u32 = 5;
/// curl's exit code when `--max-time` ends a transfer.
const CURL_TIMED_OUT: i32 = 28;
/// What the test's curl wrapper appends to every answer: the HTTP status on its own line.
const STATUS_MARK: &str = "@@http ";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The tour's fenced `sh` blocks, found by the section heading (the text up to the next `## `).
fn tour_blocks(readme: &str) -> Vec<String> {
    let section = readme
        .split(TOUR_HEADING)
        .nth(1)
        .unwrap_or_else(|| panic!("README.md has no {TOUR_HEADING:?} section"));
    let section = section.split("\n## ").next().unwrap();
    section
        .split("```")
        .skip(1)
        .step_by(2)
        .filter_map(|b| b.strip_prefix("sh\n"))
        .map(str::to_string)
        .collect()
}

/// Lines joined where they end in `\`; blank and comment-only lines dropped.
fn commands(block: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in block.lines() {
        if cur.is_empty() && (line.trim().is_empty() || line.trim_start().starts_with('#')) {
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
        if !line.trim_end().ends_with('\\') {
            out.push(std::mem::take(&mut cur));
        }
    }
    assert!(
        cur.is_empty(),
        "a block ends in a continuation line: {cur:?}"
    );
    out
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `bash -c script` in the repository, with no inherited ACTION_LEDGER_* settings and
/// `mktemp` working under `tmp`.
fn bash(script: &str, tmp: &Path) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(script)
        .current_dir(repo())
        .env("TMPDIR", tmp);
    for (k, _) in std::env::vars() {
        if k.starts_with("ACTION_LEDGER_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        text(&o.stdout),
        text(&o.stderr)
    )
}

/// The tools the tour uses must be installed: run as root, the test installs a missing one
/// (Debian's package); otherwise it fails with what to do, never a silent skip.
fn require_tools() {
    let missing = |tool: &str, package: &str, why: String| -> ! {
        panic!(
            "README's tour needs {tool} and this machine has none ({why}): install it \
             (on Debian/Ubuntu: apt-get install {package}) and run the test again"
        )
    };
    if let Err(e) = Command::new("bash").arg("--version").output() {
        missing("bash", "bash", e.to_string());
    }
    for (tool, package) in [("curl", "curl"), ("sed", "sed"), ("mktemp", "coreutils")] {
        let found = || {
            Command::new("bash")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !found() && crate::host::is_root() {
            if let Err(e) = crate::host::apt_install(package) {
                missing(tool, package, e);
            }
        }
        if !found() {
            missing(tool, package, format!("`command -v {tool}` finds nothing"));
        }
    }
}

/// The running `serve`: SIGKILLed if the test fails before it stops it.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The port of the address on the stderr line that contains `needle` and "listening on".
fn port_from(stderr: &str, needle: &str) -> Option<u16> {
    let line = stderr
        .lines()
        .find(|l| l.contains(needle) && l.contains("listening on "))?;
    let addr = line.split("listening on ").nth(1)?.trim();
    addr.rsplit(':').next()?.trim_end_matches('/').parse().ok()
}

/// One step of the second block: its text, its output, its exit code.
struct Step {
    cmd: String,
    out: String,
    rc: i32,
}

impl Step {
    /// The HTTP status curl reported (the last one, for a step with several curls).
    fn status(&self) -> u16 {
        let line = self
            .out
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix(STATUS_MARK))
            .unwrap_or_else(|| panic!("no HTTP status in the answer to {}{}", self.cmd, self.out));
        line.trim().parse().unwrap()
    }

    /// The answer's body as JSON (the output before the status line).
    fn json(&self) -> Value {
        let body = self
            .out
            .rsplit_once(&format!("\n{STATUS_MARK}"))
            .map_or(self.out.as_str(), |(b, _)| b);
        serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("{e}: the answer to {}is not JSON: {}", self.cmd, self.out))
    }
}

/// The one step whose text contains `needle` (the tour changed if there is not exactly one).
fn step<'a>(steps: &'a [Step], needle: &str) -> &'a Step {
    let found: Vec<&Step> = steps.iter().filter(|s| s.cmd.contains(needle)).collect();
    assert_eq!(
        found.len(),
        1,
        "expected one tour step containing {needle:?}; the steps are:\n{}",
        steps.iter().map(|s| s.cmd.as_str()).collect::<String>()
    );
    found[0]
}

/// Runs the tour and checks every step's answer.
#[test]
fn readme_tour_runs_in_order_on_a_fresh_data_dir() {
    require_tools();
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let blocks = tour_blocks(&readme);
    assert_eq!(
        blocks.len(),
        3,
        "the tour has three sh blocks (start, use, verify)"
    );
    let bin = sh_quote(&crate::binserver::bin());
    let run_bin = |s: &str| s.replace(CARGO_RUN, &bin);
    let tmp = tempfile::tempdir().unwrap();

    // Block 1: everything but `serve` runs as written; it leaves the data dir in $D.
    let (serve, import): (Vec<String>, Vec<String>) = commands(&blocks[0])
        .into_iter()
        .partition(|c| c.contains(&format!("{CARGO_RUN} serve")));
    assert_eq!(serve.len(), 1, "one serve line in {:?}", blocks[0]);
    let d_file = tmp.path().join("D");
    let import = format!(
        "set -eu\n{}printf %s \"$D\" >{}\n",
        run_bin(&import.concat()),
        sh_quote(d_file.to_str().unwrap())
    );
    let o = bash(&import, tmp.path()).output().unwrap();
    assert!(
        o.status.success(),
        "block 1 (import):\n{import}\n{}",
        show(&o)
    );
    let data_dir = std::fs::read_to_string(&d_file).unwrap();
    assert!(
        Path::new(&data_dir).starts_with(tmp.path()),
        "$D is a fresh directory under TMPDIR: {data_dir:?}"
    );
    let sample_records = std::fs::read_to_string(repo().join("data/sample/actions.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    assert!(
        text(&o.stdout).contains(&format!("imported: {sample_records} records")),
        "{}",
        show(&o)
    );

    // `serve` as written, on free ports (given by the environment, so its line stays the
    // README's); the token is read from the file the first start names, as a user reads it.
    let serve_line = format!("exec {}", run_bin(&serve[0]));
    let stderr_path = tmp.path().join("serve.stderr");
    let mut server = Server(
        bash(&serve_line, tmp.path())
            .env("D", &data_dir)
            .env("ACTION_LEDGER_LISTEN", "127.0.0.1:0")
            .env("ACTION_LEDGER_REDIS_LISTEN", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let (lines_tx, lines_rx) = mpsc::channel();
    let stdout = server.0.stdout.take().unwrap();
    // Reads stdout to its end, so the server never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let serve_stderr = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let mut banner = Vec::new();
    let token_file = Path::new(&data_dir).join("first-admin-token");
    let token = loop {
        match lines_rx.recv_timeout(SERVER_WAIT) {
            Ok(line) => {
                if line.contains(token_file.to_str().unwrap()) {
                    break std::fs::read_to_string(&token_file)
                        .unwrap()
                        .trim()
                        .to_string();
                }
                banner.push(line);
            }
            Err(e) => panic!(
                "the first start named no token file ({e:?}); stdout: {banner:?}\nstderr:\n{}",
                serve_stderr()
            ),
        }
    };
    assert!(token.starts_with("alt_"), "{token:?}");
    // Both listeners' "listening on" lines (today they come before the banner).
    let started = Instant::now();
    let (http_port, redis_port) = loop {
        let err = serve_stderr();
        if let (Some(h), Some(r)) = (port_from(&err, "action-ledger"), port_from(&err, "Redis")) {
            break (h, r);
        }
        let exited = server.0.try_wait().unwrap();
        assert!(
            exited.is_none() && started.elapsed() < SERVER_WAIT,
            "no \"listening on\" line for each listener (exit {exited:?}); stderr:\n{err}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };

    // Block 2 with bash: each step's output (the background `wait` included) goes to its own
    // file; `set -u` catches a step that uses a variable the tour never set.
    let block2 = blocks[1]
        .replace(TOUR_HTTP, &format!("localhost:{http_port}"))
        .replace(TOUR_REDIS, &format!("localhost:{redis_port}"));
    assert_ne!(
        block2, blocks[1],
        "the tour's curls use {TOUR_HTTP} and {TOUR_REDIS}"
    );
    let cmds = commands(&block2);
    let token_steps = cmds.iter().filter(|c| c.starts_with("T=")).count();
    assert_eq!(token_steps, 1, "one `T=` line sets the token: {cmds:?}");
    let outs = tmp.path().join("steps");
    std::fs::create_dir(&outs).unwrap();
    let mut script = format!(
        "set -u\n\
         curl() {{\n\
           local max={CURL_MAX_SECS}\n\
           case \" $* \" in *\" -N \"*) max={WATCH_SECS};; esac\n\
           command curl --max-time \"$max\" -w '\\n{STATUS_MARK}%{{http_code}}\\n' \"$@\"\n\
         }}\n"
    );
    for (i, c) in cmds.iter().enumerate() {
        let out = outs.join(i.to_string());
        let out = sh_quote(out.to_str().unwrap());
        script.push_str(&format!("{{\n{c}}} >{out}.out 2>&1; echo $? >{out}.rc\n"));
    }
    // The background `wait` step finishes before the script does.
    script.push_str("wait\n");
    let o = bash(&script, tmp.path())
        .env("D", &data_dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "block 2:\n{script}\n{}", show(&o));
    let steps: Vec<Step> = cmds
        .iter()
        .enumerate()
        .map(|(i, cmd)| {
            let read = |ext: &str| {
                std::fs::read_to_string(outs.join(format!("{i}.{ext}")))
                    .unwrap_or_else(|e| panic!("step {cmd}did not run ({e}); script:\n{script}"))
            };
            Step {
                cmd: cmd.clone(),
                out: read("out"),
                rc: read("rc").trim().parse().unwrap(),
            }
        })
        .collect();
    let everything = || {
        steps
            .iter()
            .map(|s| format!("$ {}-> exit {}\n{}\n", s.cmd, s.rc, s.out))
            .collect::<String>()
    };
    let watch = step(&steps, "/watch");
    for s in &steps {
        let timed_out_watch = std::ptr::eq(s, watch) && s.rc == CURL_TIMED_OUT;
        assert!(
            s.rc == 0 || timed_out_watch,
            "a step failed:\n{}",
            everything()
        );
    }

    // 1. The create answers with the uid the tour chose.
    let create = step(&steps, "\"uid\":");
    assert_eq!(create.status(), 201, "{}", everything());
    assert_eq!(create.json()["uid"], "tour-1");
    let tour_id = create.json()["id"].clone();
    assert!(tour_id.is_u64(), "{}", create.out);
    // 2. Each event is accepted; the progress report's time is kept and echoed.
    assert_eq!(
        step(&steps, "\"started\"").status(),
        200,
        "{}",
        everything()
    );
    let at = step(&steps, "\"type\":\"progress\"").out.trim().to_string();
    assert!(
        at.len() > 10 && at.chars().next().unwrap().is_ascii_digit() && !at.contains('\n'),
        "AT is one timestamp: {at:?}\n{}",
        everything()
    );
    assert_eq!(
        step(&steps, "\"completed\"").status(),
        200,
        "{}",
        everything()
    );
    let waited = step(&steps, "/wait");
    assert_eq!(waited.status(), 200, "{}", everything());
    assert_eq!(waited.json()["status"], "completed", "{}", everything());
    // 3. Now, as of $AT, the raw records, and by resource.
    let reads: Vec<&Step> = steps
        .iter()
        .filter(|s| s.cmd.contains("/actions/tour-1 ") && !s.cmd.contains("-X"))
        .collect();
    assert_eq!(reads.len(), 1, "one plain read:\n{}", everything());
    assert_eq!(reads[0].status(), 200);
    assert_eq!(reads[0].json()["status"], "completed");
    let as_of = step(&steps, "as_of=$AT").json();
    assert_eq!(
        (&as_of["status"], &as_of["progress"]),
        (&Value::from("running"), &Value::from(40.0)),
        "as_of=$AT shows the action running at 40%:\n{}",
        everything()
    );
    let history = step(&steps, "/history").json();
    let kinds: Vec<&Value> = history["records"]
        .as_array()
        .unwrap_or_else(|| panic!("history has records: {history}"))
        .iter()
        .map(|r| &r["event"]["type"])
        .collect();
    assert_eq!(kinds, ["created", "started", "progress", "completed"]);
    let by_resource = step(&steps, "resource_type=").json();
    assert_eq!(by_resource["actions"][0]["uid"], "tour-1", "{by_resource}");
    assert_eq!(by_resource["actions"].as_array().unwrap().len(), 1);
    // 4. The refused heartbeat.
    let refused = step(&steps, "\"heartbeat\"");
    assert_eq!(refused.status(), 409, "{}", everything());
    assert_eq!(refused.json()["error"]["code"], "invalid_transition");
    // 5. The sample through each dialect.
    let ecs = step(&steps, "/ecs/v2/actions");
    assert_eq!(ecs.status(), 200, "{}", everything());
    assert_eq!(ecs.json()["status"], "ok", "{}", ecs.out);
    assert!(!ecs.json()["actions"].as_array().unwrap().is_empty());
    let droplet = step(&steps, "/v2/droplets/");
    assert_eq!(droplet.status(), 200, "{}", everything());
    let do_actions = droplet.json()["actions"].as_array().unwrap().clone();
    assert!(!do_actions.is_empty(), "{}", droplet.out);
    assert!(do_actions.iter().all(|a| a["resource_id"] == 3164450));
    let redis = step(&steps, &format!("localhost:{redis_port}/v1/actions/"));
    assert_eq!(redis.status(), 200, "{}", everything());
    let redis = redis.json();
    assert!(
        redis.as_array().is_some_and(|a| !a.is_empty()),
        "the Redis answer is a non-empty array: {redis}"
    );
    assert_eq!(redis[0]["object_name"], "bdb:1");
    let nova = step(&steps, "/os-instance-actions");
    assert_eq!(nova.status(), 200, "{}", everything());
    let nova = nova.json();
    assert!(
        nova["instanceActions"]
            .as_array()
            .is_some_and(|a| !a.is_empty()),
        "{nova}"
    );
    assert_eq!(nova["instanceActions"][0]["action"], "reboot");
    // 6. The watch stream: every committed record, up to the tour's completed event.
    let ids: Vec<u64> = watch
        .out
        .lines()
        .filter_map(|l| l.strip_prefix("id:"))
        .map(|id| id.trim().parse().unwrap())
        .collect();
    let tour_records = 4; // created, started, progress, completed; the refusal writes nothing
    let last = (sample_records + tour_records) as u64;
    assert_eq!(
        ids.first(),
        Some(&1),
        "watch starts at the first record:\n{}",
        watch.out
    );
    assert_eq!(
        ids.last(),
        Some(&last),
        "watch reaches the last:\n{}",
        watch.out
    );

    // Stop the server (SIGTERM, as Ctrl-C does): a clean exit 0.
    let killed = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < SERVER_WAIT,
            "serve did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "stderr:\n{}", serve_stderr());

    // Block 3: verify, as written; the log holds the sample and the tour's four records.
    let verify = run_bin(&blocks[2]);
    let o = bash(&verify, tmp.path())
        .env("D", &data_dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{verify}\n{}", show(&o));
    assert!(
        text(&o.stdout).contains(&format!("{last} records")),
        "{}",
        show(&o)
    );
}

/// README's limits table holds each limit's value as `src/limits.rs` defines it: every row
/// names a constant of `action_ledger::limits`, and its value column says that constant's
/// value (bytes as B/KiB/MiB, times in ms, counts plain).
#[test]
fn readme_limits_table_matches_the_constants() {
    use action_ledger::limits as l;
    let constants: &[(&str, u64)] = &[
        ("BODY_BYTES_MAX", l::BODY_BYTES_MAX as u64),
        ("UID_BYTES_MAX", l::UID_BYTES_MAX as u64),
        ("NAME_BYTES_MAX", l::NAME_BYTES_MAX as u64),
        ("TEXT_BYTES_MAX", l::TEXT_BYTES_MAX as u64),
        ("LABELS_MAX", l::LABELS_MAX as u64),
        ("RELATED_MAX", l::RELATED_MAX as u64),
        ("SUB_EVENTS_MAX", l::SUB_EVENTS_MAX as u64),
        ("PENDING_OPS_MAX", l::PENDING_OPS_MAX as u64),
        ("BATCH_COMMANDS_MAX", l::BATCH_COMMANDS_MAX as u64),
        (
            "RECORD_PAYLOAD_BYTES_MAX",
            l::RECORD_PAYLOAD_BYTES_MAX as u64,
        ),
        ("SEGMENT_BYTES_DEFAULT", l::SEGMENT_BYTES_DEFAULT),
        (
            "COMMIT_BATCH_RECORDS_MAX",
            l::COMMIT_BATCH_RECORDS_MAX as u64,
        ),
        ("COMMIT_BATCH_BYTES_MAX", l::COMMIT_BATCH_BYTES_MAX as u64),
        ("APPEND_QUEUE_MAX", l::APPEND_QUEUE_MAX as u64),
        ("LIST_LIMIT_MAX", l::LIST_LIMIT_MAX as u64),
        ("LOG_PAGE_MAX", l::LOG_PAGE_MAX as u64),
        ("WAIT_MS_MAX", l::WAIT_MS_MAX),
        ("WATCHERS_MAX", l::WATCHERS_MAX as u64),
        ("CONNECTIONS_MAX", l::CONNECTIONS_MAX as u64),
        ("REQUEST_TIMEOUT_MS", l::REQUEST_TIMEOUT_MS),
        ("HEADER_READ_TIMEOUT_MS", l::HEADER_READ_TIMEOUT_MS),
        ("HEADER_BYTES_MAX", l::HEADER_BYTES_MAX as u64),
        ("HEADERS_MAX", l::HEADERS_MAX as u64),
        ("TLS_HANDSHAKE_TIMEOUT_MS", l::TLS_HANDSHAKE_TIMEOUT_MS),
        ("TLS_RELOAD_POLL_MS", l::TLS_RELOAD_POLL_MS),
        ("TLS_PEM_BYTES_MAX", l::TLS_PEM_BYTES_MAX as u64),
        ("H2_STREAMS_MAX", l::H2_STREAMS_MAX as u64),
        ("H2_KEEPALIVE_INTERVAL_MS", l::H2_KEEPALIVE_INTERVAL_MS),
        ("H2_KEEPALIVE_TIMEOUT_MS", l::H2_KEEPALIVE_TIMEOUT_MS),
        (
            "IDEMPOTENCY_KEY_BYTES_MAX",
            l::IDEMPOTENCY_KEY_BYTES_MAX as u64,
        ),
        ("TOKEN_NAME_BYTES_MAX", l::TOKEN_NAME_BYTES_MAX as u64),
        ("TOKENS_MAX", l::TOKENS_MAX as u64),
        ("CLUSTER_TOKENS_STALE_MS", l::CLUSTER_TOKENS_STALE_MS),
    ];
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let section = readme
        .split("\n## Limits\n")
        .nth(1)
        .expect("README has a ## Limits section");
    let section = section.split("\n## ").next().unwrap();
    let rows: Vec<(String, String)> = section
        .lines()
        .filter(|l| l.starts_with("| ") && l.ends_with('|'))
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            let name = cells.last()?.strip_prefix('`')?.strip_suffix('`')?;
            Some((name.to_string(), cells[cells.len() - 2].to_string()))
        })
        .collect();
    assert!(rows.len() >= 20, "README's limits table has rows: {rows:?}");
    for (name, value) in &rows {
        let expected = constants
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| {
                panic!("README names `{name}`: add it to this test's table of limits")
            })
            .1;
        let (number, unit) = value
            .rsplit_once(' ')
            .filter(|(n, _)| n.chars().any(|c| c.is_ascii_digit()))
            .map_or((value.as_str(), ""), |(n, u)| (n, u));
        let (number, unit) = if unit.chars().any(|c| c.is_ascii_digit()) {
            (value.as_str(), "")
        } else {
            (number, unit)
        };
        let n: u64 = number
            .replace([' ', '\u{202f}'], "")
            .parse()
            .unwrap_or_else(|e| panic!("README's value for `{name}`, {value:?}: {e}"));
        let scale = match unit {
            "" | "bytes" | "ms" => 1,
            "KiB" => 1024,
            "MiB" => 1024 * 1024,
            other => panic!("README's value for `{name}` has an unknown unit {other:?}"),
        };
        assert_eq!(
            n * scale,
            expected,
            "README says {value} for `{name}`, src/limits.rs says {expected}"
        );
    }
}
