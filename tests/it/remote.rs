//! The remote CLI (`action-ledger actions …`, `action-ledger tokens …`) run as a user runs
//! it, against the real binary serving on a fresh data directory: every subcommand's answer
//! parsed and asserted, the table columns, the watch stream, and the exit codes scripts rely
//! on (0 ok, 1 not found or refused, 2 usage or connection), with the token never printed.

use crate::app::ADMIN;
use crate::binserver::{self, BinServer, Options};
use serde_json::Value;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// A served binary on a fresh data directory (killed when dropped).
fn serve() -> (tempfile::TempDir, BinServer) {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt
        .block_on(binserver::start(
            &dir.path().join("data"),
            &dir.path().join("server.out"),
            &Options::default(),
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    (dir, server)
}

/// The CLI with no inherited ACTION_LEDGER_* settings, pointed at `server` with `token`.
fn cli(server: &str, token: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(binserver::bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("ACTION_LEDGER_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("ACTION_LEDGER_SERVER", server)
        .env("ACTION_LEDGER_TOKEN", token)
        .args(args)
        .stdin(Stdio::null());
    cmd
}

fn run(server: &str, token: &str, args: &[&str]) -> Output {
    let out = cli(server, token, args).output().expect("run the binary");
    for stream in [&out.stdout, &out.stderr] {
        let text = String::from_utf8_lossy(stream);
        assert!(
            !text.contains(token) || token.is_empty(),
            "{args:?} printed the token: {text}"
        );
    }
    out
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited, not killed")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs and expects exit 0; the JSON lines of stdout (stdout is a pipe: JSON by default).
fn ok_lines(server: &str, token: &str, args: &[&str]) -> Vec<Value> {
    let o = run(server, token, args);
    assert_eq!(code(&o), 0, "{args:?}: {}{}", stdout(&o), stderr(&o));
    stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{args:?}: {l:?}: {e}")))
        .collect()
}

fn ok_one(server: &str, token: &str, args: &[&str]) -> Value {
    let mut lines = ok_lines(server, token, args);
    assert_eq!(lines.len(), 1, "{args:?}: {lines:?}");
    lines.remove(0)
}

#[test]
fn actions_create_get_event_history_wait_list_cancel() {
    let (_dir, server) = serve();
    let s = server.base.as_str();
    let create = [
        "actions",
        "create",
        "--type",
        "snapshot",
        "--resource-type",
        "droplet",
        "--resource-id",
        "3164450",
        "--uid",
        "req-remote-1",
        "--label",
        "team=infra",
        "--idempotency-key",
        "k-1",
    ];
    let a = ok_one(s, ADMIN, &create);
    assert_eq!(a["uid"], "req-remote-1");
    assert_eq!(a["status"], "queued");
    assert_eq!(a["labels"]["team"], "infra");
    assert_eq!(a["resource"]["id"], "3164450");
    let id = a["id"].as_u64().unwrap().to_string();

    // The same key and body again: the first answer, nothing recorded.
    let again = ok_one(s, ADMIN, &create);
    assert_eq!(again["id"], a["id"]);

    let got = ok_one(s, ADMIN, &["actions", "get", "req-remote-1"]);
    assert_eq!(got["id"], a["id"]);

    let e = ok_one(
        s,
        ADMIN,
        &[
            "actions",
            "event",
            &id,
            "progress",
            "--progress",
            "40",
            "--state",
            "copying",
        ],
    );
    assert_eq!(e["status"], "running");
    assert_eq!(e["progress"], 40.0);
    assert_eq!(e["state"], "copying");

    // A body from stdin, with a flag on top.
    let mut child = cli(
        s,
        ADMIN,
        &["actions", "event", &id, "--body", "-", "--message", "done"],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(br#"{"type": "completed"}"#).unwrap();
    }
    let done = child.wait_with_output().unwrap();
    assert_eq!(code(&done), 0);
    let done: Value = serde_json::from_slice(&done.stdout).unwrap();
    assert_eq!(done["status"], "completed");
    assert_eq!(done["message"], "done");

    let history = ok_lines(s, ADMIN, &["actions", "history", &id]);
    let types: Vec<&str> = history
        .iter()
        .map(|r| r["event"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["created", "progress", "completed"]);
    assert_eq!(history[0]["principal"], "admin-token");

    // Terminal: the wait answers at once.
    let waited = ok_one(s, ADMIN, &["actions", "wait", &id]);
    assert_eq!(waited["status"], "completed");
    assert_eq!(waited["progress"], 100.0);

    // A second action, still queued; the list filters on status and resource.
    let b = ok_one(
        s,
        ADMIN,
        &[
            "actions",
            "create",
            "--type",
            "reboot",
            "--resource-type",
            "server",
            "--resource-id",
            "s-1",
        ],
    );
    let listed = ok_lines(s, ADMIN, &["actions", "list", "--status", "queued"]);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], b["id"]);
    let listed = ok_lines(
        s,
        ADMIN,
        &[
            "actions",
            "list",
            "--resource-type",
            "droplet",
            "--resource-id",
            "3164450",
        ],
    );
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], a["id"]);

    // Paging: one page says where the next starts; --all follows every cursor.
    let o = run(s, ADMIN, &["actions", "list", "--limit", "1"]);
    assert_eq!(code(&o), 0);
    assert_eq!(stdout(&o).lines().count(), 1);
    let cursor = stderr(&o)
        .split("--cursor ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no cursor in {:?}", stderr(&o)))
        .to_string();
    let second = ok_lines(
        s,
        ADMIN,
        &["actions", "list", "--limit", "1", "--cursor", &cursor],
    );
    assert_eq!(second.len(), 1);
    assert_eq!(second[0]["id"], a["id"]);
    let all = ok_lines(s, ADMIN, &["actions", "list", "--limit", "1", "--all"]);
    let ids: Vec<&Value> = all.iter().map(|x| &x["id"]).collect();
    assert_eq!(ids, [&b["id"], &a["id"]]);

    // Table output: the header's columns and one row per action.
    let o = run(s, ADMIN, &["actions", "list", "--output", "table"]);
    assert_eq!(code(&o), 0);
    let text = stdout(&o);
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["ID", "UID", "TENANT", "TYPE", "RESOURCE", "STATUS", "PROGRESS", "UPDATED"]
    );
    let row: Vec<&str> = lines.nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        &row[..7],
        [
            &id,
            "req-remote-1",
            "default",
            "snapshot",
            "droplet/3164450",
            "completed",
            "100"
        ]
    );
    let o = run(s, ADMIN, &["actions", "history", &id, "--output", "table"]);
    assert!(
        stdout(&o).starts_with("POSITION  RECORDED"),
        "{}",
        stdout(&o)
    );

    // Cancel: the queued one gets cancel_requested; the terminal one is refused (409 → 1).
    let c = ok_one(s, ADMIN, &["actions", "cancel", &b["id"].to_string()]);
    assert_eq!(c["cancel_requested"], true);
    let o = run(s, ADMIN, &["actions", "cancel", &id]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).starts_with("error: "), "{}", stderr(&o));
    assert!(stderr(&o).contains("invalid_transition"), "{}", stderr(&o));

    // wait --for on an unfinished action: printed as it is, exit 1.
    let o = run(
        s,
        ADMIN,
        &["actions", "wait", &b["id"].to_string(), "--for", "200ms"],
    );
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let still: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(still["status"], "queued");
}

#[test]
fn watch_prints_events_and_ends() {
    let (_dir, server) = serve();
    let s = server.base.as_str();
    let a = ok_one(
        s,
        ADMIN,
        &[
            "actions",
            "create",
            "--type",
            "t",
            "--resource-type",
            "r",
            "--resource-id",
            "1",
        ],
    );
    let id = a["id"].to_string();
    ok_one(
        s,
        ADMIN,
        &["actions", "event", &id, "progress", "--progress", "50"],
    );
    ok_one(s, ADMIN, &["actions", "event", &id, "completed"]);

    // From the start of the log, one action: its events, and the watch ends at the terminal
    // one by itself.
    let events = ok_lines(
        s,
        ADMIN,
        &["actions", "watch", "--action", &id, "--after", "0"],
    );
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["event"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["created", "progress", "completed"]);
    assert_eq!(events[0]["action"]["id"], a["id"]);
    assert!(events[0]["position"].as_u64().is_some());

    // --count stops after N events; table lines name the action and the event.
    let o = run(
        s,
        ADMIN,
        &[
            "actions", "watch", "--after", "0", "--count", "1", "--output", "table",
        ],
    );
    assert_eq!(code(&o), 0);
    let text = stdout(&o);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains(&format!("{id} (al-{id})  created")), "{text}");

    // Live: a watch from now sees an action created after it opened. Heartbeats go out until
    // it has printed one event (it may open after the first few).
    let b = ok_one(
        s,
        ADMIN,
        &[
            "actions",
            "create",
            "--type",
            "t",
            "--resource-type",
            "r",
            "--resource-id",
            "2",
        ],
    );
    let bid = b["id"].to_string();
    let mut child = cli(
        s,
        ADMIN,
        &["actions", "watch", "--count", "1", "--id", &bid],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    for _ in 0..6000 {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        ok_one(s, ADMIN, &["actions", "event", &bid, "heartbeat"]);
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let ev: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(ev["event"]["type"], "heartbeat");
    assert_eq!(ev["action"]["id"], b["id"]);

    // A watch of an action that is already terminal ends at once.
    let o = run(s, ADMIN, &["actions", "watch", "--action", &id]);
    assert_eq!(code(&o), 0);
    assert!(stderr(&o).contains("already completed"), "{}", stderr(&o));
}

#[test]
fn tokens_create_list_revoke() {
    let (_dir, server) = serve();
    let s = server.base.as_str();
    let created = ok_one(
        s,
        ADMIN,
        &[
            "tokens", "create", "--name", "ci", "--tenant", "acme", "--role", "writer",
        ],
    );
    assert_eq!(created["name"], "ci");
    let secret = created["token"].as_str().unwrap().to_string();

    // Table output of create: the secret alone on stdout.
    let o = run(
        s,
        ADMIN,
        &[
            "tokens", "create", "--name", "ro", "--tenant", "acme", "--role", "reader", "--output",
            "table",
        ],
    );
    assert_eq!(code(&o), 0);
    let ro_secret = stdout(&o).trim().to_string();
    assert!(
        !ro_secret.is_empty() && !ro_secret.contains(' '),
        "{ro_secret:?}"
    );

    let list = ok_lines(s, ADMIN, &["tokens", "list"]);
    let names: Vec<&str> = list.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"ci") && names.contains(&"ro"), "{names:?}");
    assert!(list.iter().all(|t| t.get("token").is_none()), "{list:?}");
    let o = run(s, ADMIN, &["tokens", "list", "--output", "table"]);
    let header: Vec<String> = stdout(&o)
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(&header[..4], ["NAME", "TENANT", "ROLE", "CREATED"]);
    assert!(header.contains(&"EXPIRES_AT".to_string()), "{header:?}");

    // --ttl sends an expiry; rotate prints a new secret that works, the old one stops.
    let brief = ok_one(
        s,
        ADMIN,
        &[
            "tokens", "create", "--name", "brief", "--tenant", "acme", "--role", "reader", "--ttl",
            "1h",
        ],
    );
    assert!(brief["expires_at"].is_string(), "{brief}");
    let o = run(
        s,
        ADMIN,
        &[
            "tokens", "create", "--name", "b2", "--tenant", "acme", "--role", "reader", "--ttl",
            "soon",
        ],
    );
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(stderr(&o).contains("--ttl"), "{}", stderr(&o));
    let rotated = ok_one(s, ADMIN, &["tokens", "rotate", "brief"]);
    let new = rotated["token"].as_str().unwrap();
    assert_ne!(new, brief["token"].as_str().unwrap());
    assert_eq!(rotated["expires_at"], brief["expires_at"]);
    let o = run(s, ADMIN, &["tokens", "rotate", "nope"]);
    assert_eq!(code(&o), 1, "not found: {}", stderr(&o));

    // The new token works (its tenant only), a reader may not write (403 → 1).
    let mine = ok_one(
        s,
        &secret,
        &[
            "actions",
            "create",
            "--type",
            "t",
            "--resource-type",
            "r",
            "--resource-id",
            "1",
        ],
    );
    assert_eq!(mine["tenant"], "acme");
    let o = run(
        s,
        &ro_secret,
        &[
            "actions",
            "create",
            "--type",
            "t",
            "--resource-type",
            "r",
            "--resource-id",
            "1",
        ],
    );
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("forbidden"), "{}", stderr(&o));

    let revoked = ok_one(s, ADMIN, &["tokens", "revoke", "ci"]);
    assert_eq!(revoked["revoked"], true);
    // Revoked: refused (401 → 1), and so is revoking it again (404 → 1).
    let o = run(s, &secret, &["actions", "list"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("401"), "{}", stderr(&o));
    let o = run(s, ADMIN, &["tokens", "revoke", "ci"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    // A non-admin may not manage tokens.
    let o = run(s, &ro_secret, &["tokens", "list"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
}

#[test]
fn exit_codes_and_the_token_stays_secret() {
    let (_dir, server) = serve();
    let s = server.base.as_str();

    // Not found → 1, with the server's message.
    let o = run(s, ADMIN, &["actions", "get", "999"]);
    assert_eq!(code(&o), 1);
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with("error: ") && stderr(&o).contains("not found"),
        "{}",
        stderr(&o)
    );
    assert!(stdout(&o).is_empty());
    // A bad token, from the environment or the flag → 1; never printed.
    let bad = "not-a-real-token-0123456789";
    let o = run(s, bad, &["actions", "list"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("unauthorized"), "{}", stderr(&o));
    let o = run(s, "", &["actions", "list", "--token", bad]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(!stderr(&o).contains(bad) && !stdout(&o).contains(bad));
    // A validation error of the server → 1.
    let o = run(s, ADMIN, &["actions", "list", "--status", "sleeping"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("bad_request"), "{}", stderr(&o));

    // Unreachable (a port nothing listens on) → 2, one line naming the server.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        format!("http://127.0.0.1:{port}")
    };
    let o = run(&closed, ADMIN, &["actions", "get", "1"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(
        stderr(&o).starts_with("error: cannot connect to"),
        "{}",
        stderr(&o)
    );
    // A bad URL, an unknown flag, a missing argument, a create without its fields → 2.
    for args in [
        &["actions", "get", "1", "--server", "not a url"][..],
        &["actions", "get", "1", "--server", "ftp://127.0.0.1:1"],
        &["actions", "list", "--no-such-flag"],
        &["actions", "get"],
        &["actions", "create", "--type", "t"],
        &["actions", "event", "1"],
        &["actions", "list", "--timeout", "soon"],
        &["tokens", "create", "--name", "x"],
    ] {
        let o = run(s, ADMIN, args);
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).starts_with("error"), "{args:?}: {}", stderr(&o));
        assert!(stdout(&o).is_empty(), "{args:?}");
    }
    // The token in the help's environment listing stays hidden.
    let o = run(s, ADMIN, &["actions", "--help"]);
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).contains("ACTION_LEDGER_TOKEN"));
}

/// `serve` on a fixed port (so a restart keeps the address), ready when the CLI can list.
fn serve_on(data: &std::path::Path, port: u16, log: &std::path::Path) -> std::process::Child {
    let out = std::fs::File::create(log).unwrap();
    let mut cmd = Command::new(binserver::bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("ACTION_LEDGER_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .args([
            "serve",
            "--data-dir",
            data.to_str().unwrap(),
            "--redis-listen",
            "off",
        ])
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin-token",
            ADMIN,
        ])
        .env("ACTION_LEDGER_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let server = format!("http://127.0.0.1:{port}");
    for _ in 0..2400 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "serve exited: {}",
            std::fs::read_to_string(log).unwrap()
        );
        if code(&run(
            &server,
            ADMIN,
            &["actions", "list", "--timeout", "5s"],
        )) == 0
        {
            return child;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!(
        "serve on {port} not ready: {}",
        std::fs::read_to_string(log).unwrap()
    );
}

#[test]
fn watch_resumes_after_the_server_restarts() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let s = format!("http://127.0.0.1:{port}");
    let mut server = serve_on(&data, port, &dir.path().join("first.out"));
    let a = ok_one(
        &s,
        ADMIN,
        &[
            "actions",
            "create",
            "--type",
            "t",
            "--resource-type",
            "r",
            "--resource-id",
            "1",
        ],
    );
    let id = a["id"].to_string();
    let mut watch = cli(
        &s,
        ADMIN,
        &["actions", "watch", "--after", "0", "--count", "3"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["event"]["type"], "created");

    // The stream breaks under the watch; the server comes back on the same address and
    // more events are recorded: the watch goes on from where it was, nothing repeated.
    let _ = server.kill();
    let _ = server.wait();
    let mut server = serve_on(&data, port, &dir.path().join("second.out"));
    ok_one(
        &s,
        ADMIN,
        &["actions", "event", &id, "progress", "--progress", "50"],
    );
    ok_one(&s, ADMIN, &["actions", "event", &id, "completed"]);
    let rest: Vec<Value> = lines
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    let status = watch.wait().unwrap();
    let _ = server.kill();
    let _ = server.wait();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut watch.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    let types: Vec<&str> = rest
        .iter()
        .map(|e| e["event"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["progress", "completed"]);
}
