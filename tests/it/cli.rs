//! The built `action-ledger` binary, run as a user runs it: every command's happy path and
//! exit code on bad input, export → import equivalence (served and compared query by
//! query), `replay --until` against as-of reads, the committed sample log, and README's
//! run command.
//!
//! The binary is `CARGO_BIN_EXE_action-ledger`; `ACTION_LEDGER_TEST_BIN=path` runs another
//! build of it (useful when several checkouts share one target directory).

use crate::app::{Api, ADMIN};
use action_ledger::event::*;
use action_ledger::http::server::Running;
use action_ledger::log::format::HEADER_LEN;
use action_ledger::log::writer::NewRecord;
use action_ledger::log::{FsStorage, LogConfig, LogWriter};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

fn bin() -> PathBuf {
    PathBuf::from(crate::binserver::bin())
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the binary with `args`, no inherited ACTION_LEDGER_* settings.
fn run(args: &[&str]) -> Output {
    run_env(args, &[])
}

fn run_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("ACTION_LEDGER_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run the action-ledger binary")
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

/// Asserts exit 2 with exactly one `error:` line mentioning every `needle`.
fn assert_error(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(code(o), 2, "stdout: {}\nstderr: {err}", stdout(o));
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(err.starts_with("error: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "{err:?} should mention {n:?}");
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

// ---------------------------------------------------------------------------------------
// The sample log (data/sample/actions.jsonl), shaped like each dialect's documented examples.

fn t(rfc: &str) -> Micros {
    action_ledger::http::wire::parse_time(rfc).unwrap()
}

fn new_action(id: ActionId, uid: &str, tenant: &str, ty: &str, res: (&str, &str)) -> NewAction {
    NewAction {
        id,
        uid: uid.into(),
        tenant: tenant.into(),
        user: None,
        action_type: ty.into(),
        kind: Kind::Task,
        resource: ResourceRef {
            resource_type: res.0.into(),
            id: res.1.into(),
        },
        related: vec![],
        node: None,
        region: None,
        description: None,
        labels: BTreeMap::new(),
        status: InitialStatus::Running,
        exclusive: false,
    }
}

fn ev(action: ActionId, body: EventBody) -> Op {
    Op::Event { action, body }
}

fn pending(op: &str, progress: f64) -> Option<PendingOp> {
    Some(PendingOp {
        op_name: Some(op.into()),
        progress: Some(progress),
        ..Default::default()
    })
}

/// The sample's fsync batches of entries, in log order.
fn sample_batches() -> Vec<Vec<Entry>> {
    let entry = |at: &str, principal: &str, ops: Vec<Op>| Entry {
        recorded_at: t(at),
        principal: principal.into(),
        idempotency: None,
        ops,
    };
    let done = || EventBody::Completed { message: None };
    // ECS: a server created, then deleted, by user foo, on the ECS server ec200285.
    let mut ecs_new = new_action(1, "ecs-709-new", "acme", "new_server", ("ECS", "ec200285"));
    ecs_new.user = Some("foo".into());
    let mut ecs_del = new_action(
        2,
        "ecs-710-delete",
        "acme",
        "delete_server",
        ("ECS", "ec200285"),
    );
    ecs_del.user = Some("foo".into());
    // Redis Enterprise (its documented examples): retry_bdb tasks and an SMCreateBDB state machine.
    let mut retry = new_action(
        3,
        "159ca2f8-7bf3-4cda-97e8-4eb560665c28",
        "redis",
        "retry_bdb",
        ("bdb", "1"),
    );
    retry.node = Some("2".into());
    let mut sm = new_action(
        4,
        "a10586b1-60bc-428e-9bc6-392eb5f0d8ae",
        "redis",
        "SMCreateBDB",
        ("bdb", "1"),
    );
    sm.kind = Kind::StateMachine;
    // Nova (its api-ref example): a reboot with its events.
    let mut reboot = new_action(
        5,
        "req-3293a3f1-b44c-4609-b8d2-d81b105636b8",
        "acme",
        "reboot",
        ("server", "4bdd7c2e-0bd8-4b4c-8a4e-7a8c9a3f1e20"),
    );
    reboot.user = Some("admin-user".into());
    reboot.description = Some("reboot HARD".into());
    // DigitalOcean (its Actions guide): shutdown, then a snapshot, each exclusive on the droplet.
    let mut shutdown = new_action(
        6,
        "do-shutdown-36804745",
        "acme",
        "shutdown",
        ("droplet", "3164450"),
    );
    shutdown.exclusive = true;
    shutdown.region = Some("nyc3".into());
    let mut snap = new_action(
        7,
        "do-snapshot-36804807",
        "acme",
        "snapshot",
        ("droplet", "3164450"),
    );
    snap.exclusive = true;
    snap.region = Some("nyc3".into());
    snap.labels
        .insert("name".into(), "Nifty New Snapshot".into());
    let progress = |p: f64, state: Option<&str>, ops: Vec<(&str, Option<PendingOp>)>| {
        EventBody::Progress(ProgressUpdate {
            progress: Some(p),
            state: state.map(str::to_string),
            message: None,
            pending_ops: ops.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        })
    };
    vec![
        vec![entry(
            "2024-10-18T15:08:55.887284Z",
            "ecs-writer",
            vec![Op::Create(ecs_new)],
        )],
        vec![entry(
            "2024-10-18T15:09:56.067592Z",
            "ecs-writer",
            vec![ev(1, done())],
        )],
        vec![entry(
            "2024-10-19T15:08:55.887284Z",
            "ecs-writer",
            vec![Op::Create(ecs_del)],
        )],
        vec![entry(
            "2024-10-19T15:09:56.067592Z",
            "ecs-writer",
            vec![ev(2, done())],
        )],
        vec![
            entry(
                "2024-10-20T09:00:00.000000Z",
                "redis-writer",
                vec![Op::Create(retry)],
            ),
            entry(
                "2024-10-20T09:00:00.000000Z",
                "redis-writer",
                vec![Op::Create(sm)],
            ),
        ],
        vec![entry(
            "2024-10-20T09:00:05.250000Z",
            "redis-writer",
            vec![
                ev(
                    3,
                    progress(50.0, None, vec![("3", pending("SMUpgradeBDB", 50.0))]),
                ),
                ev(
                    4,
                    progress(
                        20.0,
                        Some("active-change-pending"),
                        vec![
                            ("1", pending("SMCreateBDB", 20.0)),
                            ("2", pending("SMCreateBDB", 10.0)),
                        ],
                    ),
                ),
            ],
        )],
        vec![entry(
            "2024-10-20T09:00:30.000000Z",
            "redis-writer",
            vec![
                ev(3, progress(100.0, None, vec![("3", None)])),
                ev(3, done()),
            ],
        )],
        vec![entry(
            "2024-10-20T09:01:00.000000Z",
            "redis-writer",
            vec![ev(
                4,
                progress(
                    60.0,
                    Some("active"),
                    vec![
                        ("1", pending("SMCreateBDB", 70.0)),
                        ("2", pending("SMCreateBDB", 50.0)),
                    ],
                ),
            )],
        )],
        vec![entry(
            "2024-12-05T01:00:00.000000Z",
            "nova",
            vec![
                Op::Create(reboot),
                ev(
                    5,
                    EventBody::EventStarted {
                        name: "compute_reboot_instance".into(),
                        host: Some("cmp-1".into()),
                    },
                ),
            ],
        )],
        vec![entry(
            "2024-12-05T01:02:00.000000Z",
            "nova",
            vec![
                ev(
                    5,
                    EventBody::EventFinished {
                        name: "compute_reboot_instance".into(),
                        result: SubResult::Success,
                        traceback: None,
                        details: None,
                    },
                ),
                ev(5, done()),
            ],
        )],
        vec![entry(
            "2025-01-10T12:00:00.000000Z",
            "do-writer",
            vec![Op::Create(shutdown)],
        )],
        vec![entry(
            "2025-01-10T12:00:42.000000Z",
            "do-writer",
            vec![ev(6, done())],
        )],
        vec![entry(
            "2025-01-10T12:01:00.000000Z",
            "do-writer",
            vec![Op::Create(snap)],
        )],
        vec![entry(
            "2025-01-10T12:03:00.000000Z",
            "do-writer",
            vec![ev(7, progress(40.0, None, vec![]))],
        )],
    ]
}

/// Writes the sample's log into `log_dir` with the log writer, batch by batch.
fn write_sample_log(log_dir: &Path) {
    write_log(log_dir, sample_batches());
}

/// Writes `batches` of entries into `log_dir` with the log writer.
fn write_log(log_dir: &Path, batches: Vec<Vec<Entry>>) {
    let (mut w, _) = LogWriter::open(
        Arc::new(FsStorage),
        LogConfig::new(log_dir),
        &mut |_| Ok(()),
    )
    .unwrap();
    for batch in batches {
        let payloads: Vec<Vec<u8>> = batch
            .iter()
            .map(|e| codec::encode_entry(e).unwrap())
            .collect();
        let records: Vec<NewRecord<'_>> = payloads
            .iter()
            .map(|p| NewRecord {
                kind: codec::KIND_ENTRY,
                schema: codec::ENTRY_SCHEMA_CURRENT,
                payload: p,
            })
            .collect();
        w.append(&records).unwrap();
    }
}

fn sample_path() -> PathBuf {
    repo().join("data/sample/actions.jsonl")
}

/// data/sample/actions.jsonl is what the binary's `export` makes of the sample log.
/// `ACTION_LEDGER_WRITE_FIXTURES=1` rewrites it.
#[test]
fn sample_log_is_the_binarys_export_of_the_sample() {
    let dir = tempfile::tempdir().unwrap();
    write_sample_log(&dir.path().join("log"));
    let o = run(&["export", "--data-dir", s(dir.path())]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let fresh = stdout(&o);
    assert_eq!(fresh.lines().count(), 15);
    if std::env::var_os("ACTION_LEDGER_WRITE_FIXTURES").is_some() {
        std::fs::create_dir_all(sample_path().parent().unwrap()).unwrap();
        std::fs::write(sample_path(), &fresh).unwrap();
    }
    let committed = std::fs::read_to_string(sample_path())
        .expect("data/sample/actions.jsonl (ACTION_LEDGER_WRITE_FIXTURES=1 writes it)");
    assert_eq!(
        committed, fresh,
        "the sample changed; rerun with ACTION_LEDGER_WRITE_FIXTURES=1"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sample_imports_verifies_and_answers_in_every_dialect() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let o = run(&["import", "--data-dir", s(&data), s(&sample_path())]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("imported: 15 records, 7 actions"),
        "{}",
        stdout(&o)
    );
    let o = run(&["verify", "--data-dir", s(&data)]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("projection ok: 7 actions"),
        "{}",
        stdout(&o)
    );

    let app = serve_dir(&data).await;
    let (st, v) = app
        .get(
            "/api/v1/actions/159ca2f8-7bf3-4cda-97e8-4eb560665c28",
            ADMIN,
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["status"].as_str(), v["progress"].as_f64()),
        (Some("completed"), Some(100.0))
    );
    let (_, v) = app
        .get(
            "/api/v1/actions/a10586b1-60bc-428e-9bc6-392eb5f0d8ae",
            ADMIN,
        )
        .await;
    assert_eq!(v["pending_ops"]["2"]["op_name"], "SMCreateBDB");
    assert_eq!(v["state"], "active");
    let (_, v) = app
        .get(
            "/api/v1/actions?resource_type=droplet&resource_id=3164450",
            ADMIN,
        )
        .await;
    let types: Vec<&str> = v["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["snapshot", "shutdown"]);
    let (_, v) = app
        .get(
            "/api/v1/actions/req-3293a3f1-b44c-4609-b8d2-d81b105636b8",
            ADMIN,
        )
        .await;
    assert_eq!(v["events"][0]["name"], "compute_reboot_instance");
    assert_eq!(v["events"][0]["result"], "success");
    // Dialects read the same actions.
    let (st, v) = app.get("/v2/droplets/3164450/actions", ADMIN).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["actions"].as_array().unwrap().len(), 2, "{v}");
    // The ECS API shows the actions on ECS servers, and finds them by name.
    let (st, v) = app.get("/ecs/v2/actions", ADMIN).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(crate::dialect_ecs::ids(&v), [2, 1], "{v}");
    let (st, f) = app.get("/ecs/v2/actions?resource=ec200285", ADMIN).await;
    assert_eq!(st, 200, "{f}");
    assert_eq!(
        (&f["actions"], &f["total_actions"]),
        (&v["actions"], &json!(2))
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Serving a data directory through the library, for comparing answers.

struct Served {
    api: Api,
    running: Running,
}

impl std::ops::Deref for Served {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Served {
    async fn stop(self) {
        self.running.stop().await.unwrap();
    }
}

async fn serve_dir(data: &Path) -> Served {
    let running = crate::app::start(data, crate::app::config()).await;
    Served {
        api: Api::new(format!("http://{}", running.addr)),
        running,
    }
}

/// A ledger written through the HTTP API: creates, events, a batch, an idempotent repeat,
/// two tenants, sub-events, pending ops, a failure and a cancel.
async fn populate(app: &Api) {
    for i in 0..12u32 {
        let tenant = if i % 3 == 0 { "globex" } else { "acme" };
        let (st, v) = app
            .post(
                "/api/v1/actions",
                ADMIN,
                json!({"type": if i % 2 == 0 {"snapshot"} else {"reboot"}, "tenant": tenant,
                       "resource": {"type": "droplet", "id": format!("d{}", i % 4)},
                       "user": format!("u{}", i % 2), "labels": {"n": i.to_string()}}),
            )
            .await;
        assert_eq!(st, 201, "{v}");
        let id = v["id"].as_u64().unwrap();
        let ev = |body: Value| async move {
            let (st, v) = app
                .post(&format!("/api/v1/actions/{id}/events"), ADMIN, body)
                .await;
            assert_eq!(st, 200, "{v}");
        };
        ev(json!({"type": "started"})).await;
        ev(
            json!({"type": "progress", "progress": 100.0 / 3.0 * (i % 3) as f64, "state": "working",
                  "pending_ops": {"1": {"op_name": "SMUpgradeBDB", "progress": 12.5}}}),
        )
        .await;
        ev(json!({"type": "event_started", "name": "compute_x", "host": "cmp-1"})).await;
        if i % 4 != 3 {
            ev(json!({"type": "event_finished", "name": "compute_x",
                      "result": if i % 2 == 0 {"success"} else {"error"}, "traceback": "tb"}))
            .await;
        }
        match i % 4 {
            0 => ev(json!({"type": "completed", "message": "done"})).await,
            1 => ev(json!({"type": "failed", "error": {"code": "E1", "message": "boom"}})).await,
            2 => ev(json!({"type": "cancel_requested"})).await,
            _ => {}
        }
    }
    let (st, v) = app
        .post(
            "/api/v1/batch",
            ADMIN,
            json!({"commands": [
                {"create": {"type": "resize", "resource": {"type": "server", "id": "s1"}, "uid": "batch-1"}},
                {"event": {"action": 4, "type": "heartbeat"}}]}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    for _ in 0..2 {
        let resp = app
            .client
            .post(format!("{}/api/v1/actions", app.base))
            .bearer_auth(ADMIN)
            .header("Idempotency-Key", "key-1")
            .json(&json!({"type": "backup", "resource": {"type": "bdb", "id": "9"}}))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
    }
}

/// The queries compared between two ledgers.
fn queries(actions: u64) -> Vec<String> {
    let mut q: Vec<String> = [
        "/api/v1/actions?limit=1000",
        "/api/v1/actions?limit=3",
        "/api/v1/actions?tenant=acme",
        "/api/v1/actions?resource_type=droplet&resource_id=d1",
        "/api/v1/actions?status=completed&status=failed",
        "/api/v1/actions?type=reboot&user=u1",
        "/api/v1/actions?kind=task&since=2000-01-01T00:00:00Z",
        "/api/v1/log?after=0&limit=1000",
        "/api/v1/log?after=5&limit=7",
        "/v2/actions",
        "/ecs/v2/actions",
        "/redis/v1/actions",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for id in 1..=actions + 1 {
        q.push(format!("/api/v1/actions/{id}"));
        q.push(format!("/api/v1/actions/{id}/history"));
        q.push(format!("/api/v1/actions/{id}?as_of=3"));
        q.push(format!("/api/v1/actions/{id}?as_of=20"));
    }
    q.push("/api/v1/actions/batch-1".into());
    q
}

async fn answers(app: &Api, qs: &[String]) -> Vec<(u16, Value)> {
    let mut out = Vec::new();
    for q in qs {
        let (st, v) = app.get(q, ADMIN).await;
        out.push((st.as_u16(), v));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn export_import_answers_every_query_identically_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let app = serve_dir(&src).await;
    populate(&app).await;
    let (_, list) = app.get("/api/v1/actions?limit=1000", ADMIN).await;
    let n = list["total"].as_u64().unwrap();
    assert_eq!(n, 14);
    let qs = queries(n);
    let before = answers(&app, &qs).await;
    app.stop().await;

    let out = dir.path().join("export.jsonl");
    let o = run(&["export", "--data-dir", s(&src), "--out", s(&out)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let copy = dir.path().join("copy");
    let o = run(&["import", "--data-dir", s(&copy), s(&out)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v_src = run(&["verify", "--data-dir", s(&src)]);
    let v_copy = run(&["verify", "--data-dir", s(&copy)]);
    assert_eq!(code(&v_copy), 0, "{}", stdout(&v_copy));
    // Same record count, last position and head digest: the chain was reproduced.
    let head = |o: &Output| stdout(o).lines().next().unwrap().to_string();
    assert_eq!(head(&v_src), head(&v_copy));
    assert!(stdout(&o).contains(head(&v_src).rsplit(' ').next().unwrap()));

    let app = serve_dir(&copy).await;
    let after = answers(&app, &qs).await;
    app.stop().await;
    for ((q, b), a) in qs.iter().zip(&before).zip(&after) {
        assert_eq!(b, a, "{q} answers differently after export/import");
    }
    // A second export of the copy is byte-identical.
    let again = run(&["export", "--data-dir", s(&copy)]);
    assert_eq!(stdout(&again), std::fs::read_to_string(&out).unwrap());

    // Import refuses a non-empty ledger, a tampered export, and garbage, naming the line.
    assert_error(
        &run(&["import", "--data-dir", s(&copy), s(&out)]),
        &["already holds"],
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let tampered = dir.path().join("tampered.jsonl");
    std::fs::write(&tampered, text.replacen("\"u1\"", "\"u9\"", 1)).unwrap();
    let o = run(&[
        "import",
        "--data-dir",
        s(&dir.path().join("t")),
        s(&tampered),
    ]);
    assert_error(&o, &["line", "digest"]);
    assert!(
        !dir.path().join("t/log").exists(),
        "a failed import leaves no log"
    );
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"position\": 1}\n").unwrap();
    assert_error(
        &run(&["import", "--data-dir", s(&dir.path().join("b")), s(&bad)]),
        &["bad.jsonl line 1"],
    );
    let skip = dir.path().join("skip.jsonl");
    std::fs::write(&skip, text.lines().skip(1).collect::<Vec<_>>().join("\n")).unwrap();
    assert_error(
        &run(&["import", "--data-dir", s(&dir.path().join("c")), s(&skip)]),
        &["line 1", "position 2"],
    );
    assert_error(
        &run(&[
            "import",
            "--data-dir",
            s(&dir.path().join("d")),
            "/nonexistent.jsonl",
        ]),
        &["/nonexistent.jsonl"],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_until_gives_the_as_of_states() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let app = serve_dir(&data).await;
    populate(&app).await;
    let (_, log) = app.get("/api/v1/log?after=0&limit=1000", ADMIN).await;
    let records = log["records"].as_array().unwrap().clone();
    let last = records.last().unwrap()["position"].as_u64().unwrap();
    let mut checks = Vec::new();
    for p in [1, 7, last / 2, last - 1, last] {
        let mut want = Vec::new();
        for id in 1..=14 {
            let (st, v) = app
                .get(&format!("/api/v1/actions/{id}?as_of={p}"), ADMIN)
                .await;
            if st == 200 {
                want.push(v);
            }
        }
        checks.push((vec!["--until-position".to_string(), p.to_string()], want));
    }
    // By time: the recorded_at of a record in the middle.
    let mid = &records[records.len() / 2];
    let at = mid["recorded_at"].as_str().unwrap().to_string();
    let mut want = Vec::new();
    for id in 1..=14 {
        let (st, v) = app
            .get(&format!("/api/v1/actions/{id}?as_of={at}"), ADMIN)
            .await;
        if st == 200 {
            want.push(v);
        }
    }
    assert!(!want.is_empty());
    checks.push((vec!["--until".to_string(), at], want));
    let (_, d1) = app
        .get(
            "/api/v1/actions?resource_type=droplet&resource_id=d1",
            ADMIN,
        )
        .await;
    app.stop().await;

    for (args, want) in checks {
        let mut a = vec!["replay", "--data-dir", s(&data), "--snapshots"];
        a.extend(args.iter().map(String::as_str));
        let o = run(&a);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let got: Vec<Value> = stdout(&o)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(got, want, "replay {args:?}");
    }
    // Records: one line per operation, filtered by action and resource.
    let o = run(&["replay", "--data-dir", s(&data), "--action", "2"]);
    let lines: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines.len() >= 4 && lines.iter().all(|l| l["event"]["action"] == 2),
        "{lines:?}"
    );
    assert_eq!(lines[0]["event"]["type"], "created");
    let o = run(&[
        "replay",
        "--data-dir",
        s(&data),
        "--resource",
        "droplet/d1",
        "--snapshots",
    ]);
    let got: Vec<u64> = stdout(&o)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let mut want: Vec<u64> = d1["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_u64().unwrap())
        .collect();
    want.sort();
    assert_eq!(got, want);
    // Bad arguments.
    assert_error(
        &run(&["replay", "--data-dir", s(&data), "--until", "yesterday"]),
        &["--until", "RFC 3339"],
    );
    assert_error(
        &run(&["replay", "--data-dir", s(&data), "--resource", "droplet"]),
        &["TYPE/ID"],
    );
    let o = run(&[
        "replay",
        "--data-dir",
        s(&data),
        "--until",
        "2020-01-01T00:00:00Z",
        "--until-position",
        "3",
    ]);
    assert_eq!(code(&o), 2);

    // A reader that closed its end: exit 0, nothing on stderr.
    let mut child = Command::new(bin())
        .args(["replay", "--data-dir", s(&data)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!((status.code(), err.as_str()), (Some(0), ""));
}

/// An `Idempotency-Key` stamp recorded when digests hashed the body's bytes (before they
/// hashed its JSON value) still answers a repeat of those very bytes with the first answer;
/// it compares other spellings by bytes, as it did (422).
#[tokio::test(flavor = "multi_thread")]
async fn idempotency_stamps_of_body_bytes_still_answer_their_repeats() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let body = "{ \"type\": \"snapshot\", \"resource\": {\"type\": \"droplet\", \"id\": \"1\"} }";
    let mut h = Sha256::new();
    h.update(b"POST /api/v1/actions\0");
    h.update(body.as_bytes());
    let mut create = new_action(1, "al-1", "default", "snapshot", ("droplet", "1"));
    create.status = InitialStatus::Queued;
    write_log(
        &data.join("log"),
        vec![vec![Entry {
            recorded_at: t("2025-01-10T12:00:00Z"),
            principal: "admin-token".into(),
            idempotency: Some(IdempotencyStamp {
                tenant: "default".into(),
                key: "k-1".into(),
                request_digest: h.finalize().into(),
            }),
            ops: vec![Op::Create(create)],
        }]],
    );
    let app = serve_dir(&data).await;
    let send = |body: &'static str| {
        app.client
            .post(format!("{}/api/v1/actions", app.base))
            .bearer_auth(ADMIN)
            .header("Idempotency-Key", "k-1")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let r = send(body).await.unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!((status.as_u16(), &v["id"]), (201, &json!(1)), "{v}");
    let r = send(r#"{"type":"snapshot","resource":{"type":"droplet","id":"1"}}"#)
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);
    let (_, l) = app.get("/api/v1/actions", ADMIN).await;
    assert_eq!(l["total"], 1, "the repeats recorded nothing: {l}");
    app.stop().await;
}

/// `--action` names one action: unknown, it is an error naming it (exit 2). `--resource` is
/// a filter: no action on it prints nothing and exits 0, noting it on stderr.
#[test]
fn replay_refuses_an_unknown_action_and_filters_an_empty_resource() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let o = run(&["import", "--data-dir", s(&data), s(&sample_path())]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    for action in ["999", "no-such-uid"] {
        for extra in [&[][..], &["--snapshots"][..]] {
            let mut a = vec!["replay", "--data-dir", s(&data), "--action", action];
            a.extend(extra);
            let o = run(&a);
            assert_error(&o, &["--action", action, "no such action"]);
            assert_eq!(stdout(&o), "");
        }
    }
    // Created after the stopping point: unknown up to there.
    assert_error(
        &run(&[
            "replay",
            "--data-dir",
            s(&data),
            "--action",
            "7",
            "--until-position",
            "3",
        ]),
        &["--action 7", "up to position 3"],
    );
    let o = run(&["replay", "--data-dir", s(&data), "--action", "ecs-709-new"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 2, "{}", stdout(&o));
    for args in [
        &["--resource", "droplet/nosuch"][..],
        &["--resource", "droplet/nosuch", "--snapshots"][..],
        // The action exists, but not on this resource.
        &["--resource", "ECS/ec200285", "--action", "7"][..],
    ] {
        let mut a = vec!["replay", "--data-dir", s(&data)];
        a.extend(args);
        let o = run(&a);
        assert_eq!((code(&o), stdout(&o).as_str()), (0, ""), "{args:?}");
        assert!(
            stderr(&o).starts_with("note: no action on "),
            "{}",
            stderr(&o)
        );
    }
}

/// `verify` on a data directory a running server owns checks the log, says the projection
/// was not checked and why, and does not wait for the server's lock.
#[tokio::test(flavor = "multi_thread")]
async fn verify_while_a_server_runs_checks_the_log_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let o = run(&["import", "--data-dir", s(&data), s(&sample_path())]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let app = serve_dir(&data).await;
    let d = data.clone();
    let o = tokio::task::spawn_blocking(move || run(&["verify", "--data-dir", s(&d)]))
        .await
        .unwrap();
    app.stop().await;
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("log ok: 15 records in 1 segments"), "{out}");
    assert!(
        out.contains("projection: in use by a running server, not checked (the log was)"),
        "{out}"
    );
}

// ---------------------------------------------------------------------------------------
// verify, rebuild, bad input

#[test]
fn verify_finds_damage_and_names_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let o = run(&["import", "--data-dir", s(&data), s(&sample_path())]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = run(&["rebuild", "--data-dir", s(&data)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("rebuilt: 15 records, 7 actions"),
        "{}",
        stdout(&o)
    );
    assert_eq!(stderr(&o), "", "no progress bar in a pipe");

    // One flipped byte in the first record's payload: its CRC fails, later batches follow,
    // so it is corruption (not a torn tail).
    let seg = data
        .join("log")
        .join(action_ledger::log::format::segment_file_name(1));
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[HEADER_LEN + 70] ^= 0x40;
    std::fs::write(&seg, &bytes).unwrap();
    let o = run(&["verify", "--data-dir", s(&data)]);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    let name = seg.file_name().unwrap().to_str().unwrap();
    let report = stdout(&o);
    assert!(
        report.contains(name) && report.contains(&format!("offset {HEADER_LEN}")),
        "{report}"
    );
    assert!(stderr(&o).starts_with("damaged: "), "{}", stderr(&o));
    // Other commands refuse the damaged log with exit 2, naming the offset too; a rebuild
    // (whose scan runs on a thread of its own) among them.
    for cmd in ["export", "rebuild"] {
        let o = run(&[cmd, "--data-dir", s(&data)]);
        assert_error(&o, &[name, &format!("offset {HEADER_LEN}")]);
    }
}

#[test]
fn commands_exit_2_on_a_missing_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let m = s(&missing);
    for args in [
        vec!["verify", "--data-dir", m],
        vec!["rebuild", "--data-dir", m],
        vec!["replay", "--data-dir", m],
        vec!["export", "--data-dir", m],
        vec!["token", "list", "--data-dir", m],
        vec![
            "token",
            "create",
            "--data-dir",
            m,
            "--tenant",
            "a",
            "--role",
            "reader",
        ],
    ] {
        assert_error(&run(&args), &[m]);
    }
    // Not a ledger directory.
    assert_error(
        &run(&["verify", "--data-dir", s(dir.path())]),
        &["not a ledger data directory"],
    );
    // Usage errors are clap's, exit 2.
    assert_eq!(code(&run(&["verify"])), 2);
    assert_eq!(code(&run(&["frobnicate"])), 2);
    assert_eq!(code(&run(&["--help"])), 0);
}

#[test]
fn serve_validates_configuration_once_naming_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:0\"\nsegment_bytes = 10\n").unwrap();
    let o = run(&["serve", "--config", s(&file), "--data-dir", s(&data)]);
    assert_error(&o, &["segment_bytes", "c.toml", "at least 4096"]);
    std::fs::write(&file, "bogus_key = 1\n").unwrap();
    assert_error(
        &run(&["serve", "--config", s(&file)]),
        &["bogus_key", "unknown key"],
    );
    std::fs::write(&file, "listen = [1]\n").unwrap();
    assert_error(&run(&["serve", "--config", s(&file)]), &["listen"]);
    std::fs::write(&file, "not toml = = \n").unwrap();
    assert_error(&run(&["serve", "--config", s(&file)]), &["not valid TOML"]);
    assert_error(
        &run(&["serve", "--config", "/nonexistent.toml"]),
        &["/nonexistent.toml"],
    );
    let o = run_env(
        &["serve", "--data-dir", s(&data)],
        &[("ACTION_LEDGER_LISTEN", "nowhere")],
    );
    assert_error(&o, &["listen", "ACTION_LEDGER_LISTEN", "nowhere"]);
    assert_error(
        &run(&["serve", "--listen", "1.2.3"]),
        &["listen", "--listen"],
    );
    assert_error(
        &run(&["serve", "--set", "wait_ms_max=soon"]),
        &["wait_ms_max", "--set"],
    );
    assert_error(&run(&["serve", "--set", "nokey"]), &["KEY=VALUE"]);
    assert_error(
        &run(&["serve", "--admin-token", "short"]),
        &["admin_token", "16"],
    );
    assert!(
        !data.exists(),
        "nothing is created before the configuration is valid"
    );

    // --help lists every key with its environment variable.
    let o = run(&["serve", "--help"]);
    assert_eq!(code(&o), 0);
    let help = stdout(&o);
    for (key, _, _) in action_ledger::config::KEYS {
        assert!(help.contains(key), "{key} missing from serve --help");
        assert!(
            help.contains(&format!("ACTION_LEDGER_{}", key.to_uppercase())),
            "{key} env"
        );
    }
    // And deploy/action-ledger.toml documents every key and is itself a valid config.
    let example = std::fs::read_to_string(repo().join("deploy/action-ledger.toml")).unwrap();
    for (key, _, _) in action_ledger::config::KEYS {
        assert!(
            example.contains(&format!("{key} =")),
            "{key} missing from deploy/action-ledger.toml"
        );
    }
    let uncommented: String = example
        .lines()
        .map(|l| {
            l.strip_prefix("# ")
                .filter(|r| r.contains(" = "))
                .unwrap_or(l)
        })
        .filter(|l| !l.starts_with("admin_token"))
        // A build without the feature `otlp` refuses the key (tests/it/otlp.rs).
        .filter(|l| cfg!(feature = "otlp") || !l.starts_with("otlp_endpoint"))
        .collect::<Vec<_>>()
        .join("\n");
    let all = dir.path().join("all.toml");
    std::fs::write(&all, uncommented).unwrap();
    let settings = action_ledger::config::Settings::load(Some(&all), |_| None, &[]);
    assert!(settings.is_ok(), "{:?}", settings.err());
}

#[test]
fn token_commands() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let d = s(&data);
    let o = run(&[
        "token",
        "create",
        "--data-dir",
        d,
        "--tenant",
        "acme",
        "--role",
        "writer",
        "--name",
        "ci",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let secret = stdout(&o);
    assert_eq!(secret.lines().count(), 1, "the token alone: {secret:?}");
    assert!(
        secret.starts_with("alt_") && secret.trim().len() > 40,
        "{secret}"
    );
    let o = run(&[
        "token",
        "create",
        "--data-dir",
        d,
        "--tenant",
        "acme",
        "--role",
        "reader",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let list = stdout(&run(&["token", "list", "--data-dir", d]));
    let names: Vec<String> = list
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(names, ["ci", "acme-reader-1"]);
    assert!(
        !list.contains(secret.trim())
            && !std::fs::read_to_string(data.join("tokens.json"))
                .unwrap()
                .contains(secret.trim())
    );
    assert_error(
        &run(&[
            "token",
            "create",
            "--data-dir",
            d,
            "--tenant",
            "acme",
            "--role",
            "writer",
            "--name",
            "ci",
        ]),
        &["ci", "already exists"],
    );
    assert_error(
        &run(&[
            "token",
            "create",
            "--data-dir",
            d,
            "--tenant",
            "acme",
            "--role",
            "boss",
        ]),
        &["--role", "reader, writer or admin"],
    );
    assert_error(
        &run(&[
            "token",
            "create",
            "--data-dir",
            d,
            "--tenant",
            "a b",
            "--role",
            "reader",
            "--name",
            "x",
        ]),
        &["tenant"],
    );
    assert_error(
        &run(&["token", "revoke", "--data-dir", d, "nobody"]),
        &["nobody"],
    );
    let o = run(&["token", "revoke", "--data-dir", d, "ci"]);
    assert_eq!(code(&o), 0);
    let list = stdout(&run(&["token", "list", "--data-dir", d]));
    assert_eq!(list.lines().count(), 1);
}

// ---------------------------------------------------------------------------------------
// README's run command, as written.

/// The fenced block under "## The two commands" in README.md: (run command, test command).
fn readme_commands() -> (String, String) {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let section = readme
        .split("## The two commands")
        .nth(1)
        .expect("README has the section");
    let block = section.split("```").nth(1).expect("a fenced block");
    let cmds: Vec<String> = block
        .lines()
        .skip(1)
        .map(|l| l.split('#').next().unwrap().trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(cmds.len(), 2, "two commands: {cmds:?}");
    (cmds[0].clone(), cmds[1].clone())
}

/// Runs a printed `curl` line with bash and curl, after the banner's line that sets `T`;
/// the HTTP status and the JSON answer.
fn run_curl(set_token: &str, line: &str) -> (u16, Value) {
    let script = format!(
        "set -eu\n{}\n{} -w '\\n%{{http_code}}'\n",
        set_token.trim(),
        line.trim()
    );
    let o = Command::new("bash").args(["-c", &script]).output().unwrap();
    assert!(
        o.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8(o.stdout).unwrap();
    let (body, status) = out.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), serde_json::from_str(body).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn readme_run_command_starts_prints_token_and_working_curls() {
    let (serve_cmd, test_cmd) = readme_commands();
    assert_eq!(serve_cmd, "cargo run --release -- serve");
    // .ci/run runs README's test command (with --locked).
    let ci = std::fs::read_to_string(repo().join(".ci/run")).unwrap();
    assert!(
        ci.lines()
            .any(|l| l.trim() == test_cmd || l.trim().starts_with(&format!("{test_cmd} "))),
        ".ci/run must run {test_cmd:?}"
    );
    // The arguments after `--` are what the binary gets; the data dir and addresses come
    // from the environment so the command line stays exactly README's.
    let args: Vec<&str> = serve_cmd.split(" -- ").nth(1).unwrap().split(' ').collect();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("fresh");
    let mut child = Command::new(bin())
        .args(&args)
        .env("ACTION_LEDGER_DATA_DIR", &data)
        .env("ACTION_LEDGER_LISTEN", "127.0.0.1:0")
        .env("ACTION_LEDGER_REDIS_LISTEN", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    while lines.len() < 5 {
        let mut l = String::new();
        if out.read_line(&mut l).unwrap() == 0 {
            break;
        }
        lines.push(l);
    }
    assert_eq!(lines.len(), 5, "first-run banner: {lines:?}");
    assert!(data.is_dir(), "the data directory was created");
    // The banner names the token's file and never shows the secret.
    let file = data.join("first-admin-token");
    assert!(lines[0].contains(s(&file)), "{lines:?}");
    let token = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert!(token.starts_with("alt_"), "{token:?}");
    assert!(!lines.concat().contains(&token), "{lines:?}");
    let (st, created) = run_curl(&lines[2], &lines[3]);
    assert_eq!(st, 201, "{created}");
    let (st, read) = run_curl(&lines[2], &lines[4]);
    assert_eq!(st, 200, "{read}");
    assert_eq!(read["id"], created["id"]);
    assert_eq!(read["resource"]["id"], "3164450");

    // SIGTERM: a clean stop, exit 0; the write is in the log.
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let o = run(&["verify", "--data-dir", s(&data)]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert!(stdout(&o).contains("1 records"), "{}", stdout(&o));
    // A second start prints no token.
    let child = Command::new(bin())
        .args(&args)
        .env("ACTION_LEDGER_DATA_DIR", &data)
        .env("ACTION_LEDGER_LISTEN", "127.0.0.1:0")
        .env("ACTION_LEDGER_REDIS_LISTEN", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rest = crate::binserver::until_listening_then_stop(child);
    assert_eq!(rest, "", "no token on a second start");
}

// ---------------------------------------------------------------------------------------
// Offline commands next to a running server (docs/operations.md, "Backup").

#[tokio::test(flavor = "multi_thread")]
async fn online_backup_by_export_and_by_copying_segments() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("live");
    let app = serve_dir(&data).await;
    populate(&app).await;
    let (_, log) = app.get("/api/v1/log?after=0&limit=1000", ADMIN).await;
    let last = log["records"].as_array().unwrap().last().unwrap()["position"]
        .as_u64()
        .unwrap();

    // While serving: verify checks the log (the projection is in use), export works,
    // rebuild and import refuse, each with exit 2 naming why.
    let o = run(&["verify", "--data-dir", s(&data)]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("in use by a running server"),
        "{}",
        stdout(&o)
    );
    assert_error(
        &run(&["rebuild", "--data-dir", s(&data)]),
        &["in use by a running server"],
    );
    let export = dir.path().join("online.jsonl");
    let o = run(&["export", "--data-dir", s(&data), "--out", s(&export)]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_error(
        &run(&["import", "--data-dir", s(&data), s(&export)]),
        &["running server"],
    );

    // Copy the segments as documented (the active one last, while a write may be going on),
    // plus a torn copy of the active segment's last bytes.
    let copy = dir.path().join("copy");
    std::fs::create_dir_all(copy.join("log")).unwrap();
    let mut segs: Vec<PathBuf> = std::fs::read_dir(data.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    for p in &segs {
        std::fs::copy(p, copy.join("log").join(p.file_name().unwrap())).unwrap();
    }
    let (st, _) = app
        .post(
            "/api/v1/actions",
            ADMIN,
            json!({"type": "late", "resource": {"type": "x", "id": "1"}}),
        )
        .await;
    assert_eq!(st, 201);
    app.stop().await;
    let active = copy
        .join("log")
        .join(segs.last().unwrap().file_name().unwrap());
    let whole = std::fs::read(segs.last().unwrap()).unwrap();
    let copied = std::fs::metadata(&active).unwrap().len() as usize;
    assert!(whole.len() > copied, "the late write landed after the copy");
    // As if the copy had caught the late write half-way.
    let half = copied + (whole.len() - copied) / 2;
    std::fs::write(&active, &whole[..half]).unwrap();

    let o = run(&["verify", "--data-dir", s(&copy)]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let report = stdout(&o);
    assert!(
        report.contains(&format!("last position {last},")),
        "{report}"
    );
    assert!(report.contains("torn tail"), "{report}");
    // The copy exports exactly what the online export had.
    let o = run(&["export", "--data-dir", s(&copy)]);
    assert_eq!(stdout(&o), std::fs::read_to_string(&export).unwrap());
    // Restore by placing segments: serving the copy cuts the torn tail and answers.
    let app = serve_dir(&copy).await;
    let (st, v) = app.get("/api/v1/actions?limit=1000", ADMIN).await;
    assert_eq!(st, 200);
    assert_eq!(v["total"], 14);
    app.stop().await;
    let o = run(&["verify", "--data-dir", s(&copy)]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert!(!stdout(&o).contains("torn tail"), "{}", stdout(&o));
    assert!(
        copy.join("log/torn").is_dir(),
        "the cut bytes are kept aside"
    );
}
