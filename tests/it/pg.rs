//! A throwaway PostgreSQL for the cluster tests: one server per run of this test binary,
//! one fresh database per test (and [`dedicated`] servers; the cluster bench includes this
//! file for its own).
//!
//! The server is Debian's PostgreSQL (binaries under `/usr/lib/postgresql/*/bin`, or the
//! directory in `ACTION_LEDGER_PG_BIN`), initialised into a directory under Cargo's
//! `target/tmp`, listening on a free loopback port, with `fsync` and `synchronous_commit` on
//! (a crash test against a server that does not sync would prove nothing). initdb refuses to
//! run as root, so as root every server command runs as the `postgres` user (`runuser`).
//!
//! Nothing is left behind: a detached watchdog (`setsid`, `tail --pid`) stops the server
//! (`pg_ctl stop -m immediate`) and deletes its directory as soon as this test process exits,
//! however it exits; and each start first stops and deletes the servers of earlier runs whose
//! process is gone.
//!
//! PostgreSQL missing is a failure with a message saying how to install it, never a skip
//! (run as root, the harness installs Debian's `postgresql` package when the binaries are
//! absent, as the client tests create their venv).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The running server of this test process.
pub struct PgServer {
    pub port: u16,
    bin: PathBuf,
    /// `pg_ctl`'s `-o` options, to start it again after a stop.
    options: String,
    /// `<target>/tmp/pg/<pid>`: the data directory, socket and server log.
    pub dir: PathBuf,
}

/// The server, started on first use.
pub fn server() -> &'static PgServer {
    static SERVER: OnceLock<Result<PgServer, String>> = OnceLock::new();
    // Many small databases, one per test: a small buffer pool.
    match SERVER.get_or_init(|| start("shared", "-c shared_buffers=16MB")) {
        Ok(server) => server,
        Err(e) => panic!("the PostgreSQL test server could not start: {e}"),
    }
}

/// A connection URL for a new, empty database of its own (`t_<pid>_<n>_<random>`).
pub fn fresh_db() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let server = server();
    let name = format!(
        "t_{}_{}_{:08x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    );
    server.psql("postgres", &format!("CREATE DATABASE {name}"));
    server.url(&name)
}

/// A server of its own, with PostgreSQL's default memory settings: for a test that stops
/// and restarts PostgreSQL under the ledger (the shared one serves other tests meanwhile),
/// and for the cluster bench. Stopped and deleted like the shared one.
pub fn dedicated(name: &str) -> PgServer {
    start(name, "").unwrap_or_else(|e| panic!("a dedicated PostgreSQL could not start: {e}"))
}

impl PgServer {
    /// `pg_ctl stop -m immediate`: the server dies as in a crash (no checkpoint); what it
    /// committed is in its WAL.
    pub fn stop_immediate(&self) {
        run(pg_command(crate::host::is_root(), &self.bin, "pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"]))
        .unwrap_or_else(|e| panic!("stop PostgreSQL: {e}"));
    }

    /// Starts the stopped server again, on the same port (crash recovery replays its WAL).
    pub fn start_again(&self) {
        run(pg_command(crate::host::is_root(), &self.bin, "pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .args(["-o", &self.options, "-w", "-t", "60", "start"]))
        .unwrap_or_else(|e| panic!("start PostgreSQL again: {e}"));
    }

    /// A new empty database on this server.
    pub fn create_db(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(name)
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs one SQL command as the superuser; panics with psql's message on error.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ])
            .stdin(Stdio::null())
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// Starts a server in `<target>/tmp/pg/<pid>-<name>` with PostgreSQL's defaults but for
/// durability and the connection count, plus `settings` (more `-c` options).
fn start(name: &str, settings: &str) -> Result<PgServer, String> {
    let bin = find_bin()?;
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pg");
    std::fs::create_dir_all(&root).map_err(|e| format!("create {}: {e}", root.display()))?;
    reap_stale(&root, &bin);
    let dir = root.join(format!("{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let as_root = crate::host::is_root();
    if as_root {
        // The postgres user must reach its directory through the path above it.
        use std::os::unix::fs::PermissionsExt;
        for d in dir.ancestors().skip(1) {
            let mode = std::fs::metadata(d)
                .map(|m| m.permissions().mode())
                .unwrap_or(0);
            if mode & 0o001 == 0 {
                run(Command::new("chmod").arg("o+x").arg(d))?;
            }
        }
        run(Command::new("chown").arg("postgres:postgres").arg(&dir))?;
    }
    let data = dir.join("data");
    run(pg_command(as_root, &bin, "initdb")
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "-A", "trust", "--no-locale", "-E", "UTF8"])
        // Only initdb's own final flush of the new files; the server runs with fsync on.
        .arg("--no-sync"))?;
    // A free port can be taken between the probe and the start: try a few.
    let mut last_err = String::new();
    for _ in 0..5 {
        let port = free_port()?;
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on \
             -c max_connections=200 {settings}",
            dir.display()
        );
        let started = run(pg_command(as_root, &bin, "pg_ctl")
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.join("server.log"))
            .args(["-o", &options, "-w", "-t", "60", "start"]));
        match started {
            Ok(()) => {
                spawn_watchdog(as_root, &bin, &dir)?;
                return Ok(PgServer {
                    port,
                    bin,
                    dir,
                    options,
                });
            }
            Err(e) => {
                last_err = format!(
                    "{e}; server log: {}",
                    std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
                )
            }
        }
    }
    Err(last_err)
}

/// The newest `/usr/lib/postgresql/<version>/bin` holding `initdb` and `pg_ctl`; when there
/// is none and this process is root (as on CI and the project's machines), Debian's
/// `postgresql` package is installed first, so `cargo test` alone needs nothing installed.
fn find_bin() -> Result<PathBuf, String> {
    installed_bin().or_else(|missing| {
        if std::env::var_os("ACTION_LEDGER_PG_BIN").is_some() || !crate::host::is_root() {
            return Err(missing);
        }
        crate::host::apt_install("postgresql").map_err(|e| format!("{missing}\n{e}"))?;
        installed_bin()
    })
}

fn installed_bin() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("ACTION_LEDGER_PG_BIN") {
        let bin = PathBuf::from(dir);
        if bin.join("initdb").exists() && bin.join("pg_ctl").exists() {
            return Ok(bin);
        }
        return Err(format!(
            "ACTION_LEDGER_PG_BIN={} holds no initdb and pg_ctl",
            bin.display()
        ));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").exists() && bin.join("pg_ctl").exists()).then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).ok_or_else(|| {
        let ci = if std::env::var("CI").as_deref() == Ok("true") {
            " (CI=true: the cluster tests need it and do not skip)"
        } else {
            ""
        };
        format!(
            "no PostgreSQL server binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin{ci}; \
             install them with `apt-get install -y postgresql` (the tests do when run as root), or point \
             ACTION_LEDGER_PG_BIN at a directory holding them"
        )
    })
}

/// A server command, run as the `postgres` user when this process is root.
fn pg_command(as_root: bool, bin: &Path, tool: &str) -> Command {
    let mut c = if as_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    };
    c.stdin(Stdio::null());
    c
}

fn run(c: &mut Command) -> Result<(), String> {
    let out = c.output().map_err(|e| format!("{c:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{c:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("probe a free port: {e}"))?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// Stops the server and deletes its directory once this process exits (whichever way):
/// a detached shell waits for our pid, then `pg_ctl stop -m immediate` and `rm -rf`.
fn spawn_watchdog(as_root: bool, bin: &Path, dir: &Path) -> Result<(), String> {
    let pg_ctl = bin.join("pg_ctl");
    let stop = if as_root {
        "runuser -u postgres -- \"$1\" -D \"$2/data\" -m immediate stop"
    } else {
        "\"$1\" -D \"$2/data\" -m immediate stop"
    };
    let script = format!("tail --pid=\"$0\" -f /dev/null; {stop}; rm -rf \"$2\"");
    Command::new("setsid")
        .args(["sh", "-c", &script])
        .arg(std::process::id().to_string())
        .arg(&pg_ctl)
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("start the server's watchdog: {e}"))?;
    Ok(())
}

/// Stops and deletes the servers of earlier runs whose test process is gone (a watchdog
/// that was itself killed leaves them).
fn reap_stale(root: &Path, bin: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        // `<pid>-<name>`: the test process that started it.
        let Some(pid) = e
            .file_name()
            .to_str()
            .and_then(|s| s.split('-').next())
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let data = e.path().join("data");
        if data.join("postmaster.pid").exists() {
            let _ = pg_command(crate::host::is_root(), bin, "pg_ctl")
                .arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "stop"])
                .output();
        }
        let _ = std::fs::remove_dir_all(e.path());
    }
}

#[test]
fn the_throwaway_server_syncs_and_gives_each_test_its_own_database() {
    let a = fresh_db();
    let b = fresh_db();
    assert_ne!(a, b);
    let server = server();
    assert_eq!(server.psql("postgres", "SHOW fsync"), "on");
    assert_eq!(server.psql("postgres", "SHOW synchronous_commit"), "on");
    let db = a.rsplit('/').next().unwrap();
    assert_eq!(
        server.psql(
            db,
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ),
        "0"
    );
    assert!(server.dir.starts_with(env!("CARGO_TARGET_TMPDIR")));
}
