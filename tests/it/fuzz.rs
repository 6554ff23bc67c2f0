//! Fuzzing with long proptest runs (no nightly toolchain here, so no cargo-fuzz):
//!
//! - `decode_fuzz`: mutated real segments, records and entries (bit flips, truncations,
//!   splices, inserted and overwritten bytes) through every decoder — segment header,
//!   record frame, entry payload, projection snapshot — and the scanner that recovery and
//!   `verify` share. No panic, ever; a damaged segment never verifies with a record the
//!   original did not have.
//! - `json_command_fuzz`: generated and mutated JSON bodies through the command parsers,
//!   then through the whole router (`tower::ServiceExt::oneshot`, no sockets) on every
//!   POST route of every API: no panic, no 5xx.
//!
//! `FUZZ_CASES=N` sets the case count of each (small by default, for CI); docs/testing.md "Fuzzing
//! and security" has the long-run commands. The HTTP fuzzing over real sockets is in
//! `schemathesis.rs`.

use crate::app::ADMIN;
use action_ledger::event::codec::{decode_bounded, decode_entry, ENTRY_SCHEMA_V1, KIND_ENTRY};
use action_ledger::event::*;
use action_ledger::http::wire::{BatchBody, CreateBody, EventJson};
use action_ledger::http::{AppState, HttpLimits, Shared};
use action_ledger::log::format::{decode_frame, SegmentHeader, HEADER_LEN};
use action_ledger::log::{SimStorage, Storage};
use axum::body::Body;
use axum::http::Request;
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use tower::ServiceExt as _;

/// Cases per fuzz target: `FUZZ_CASES`, default `default`.
fn cases(default: u32) -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------
// Decoding

/// A real segment written by the ledger: creates, every event type, batches, pending ops,
/// sub-events, failures, idempotency stamps.
fn corpus_segment() -> &'static Vec<u8> {
    static SEG: OnceLock<Vec<u8>> = OnceLock::new();
    SEG.get_or_init(|| {
        use crate::support::*;
        let sim = SimStorage::new();
        let ledger = open_sim(&sim, 1 << 30).unwrap();
        let mut pending = std::collections::BTreeMap::new();
        pending.insert(
            "shard-1".to_string(),
            Some(PendingOp {
                op_name: Some("SetBDB".into()),
                progress: Some(12.5),
                status_code: Some("ok".into()),
                status_description: Some("déjà".into()),
                heartbeat: Some(17),
                last_sample_time: Some(-3),
                snapshot: Some("{\"a\":1}".into()),
            }),
        );
        let bodies = [
            EventBody::Started,
            EventBody::Progress(ProgressUpdate {
                progress: Some(40.0),
                state: Some("copying".into()),
                message: Some("m".into()),
                pending_ops: pending,
            }),
            EventBody::EventStarted {
                name: "compute_reboot".into(),
                host: Some("h1".into()),
            },
            EventBody::EventFinished {
                name: "compute_reboot".into(),
                result: SubResult::Error,
                traceback: Some("Traceback...".into()),
                details: Some("d".into()),
            },
            EventBody::Heartbeat,
        ];
        for i in 0..4u64 {
            let id = submit(&ledger, create("acme", &format!("r{i}")))
                .unwrap()
                .actions[0]
                .id;
            for b in bodies.iter().cloned() {
                submit(&ledger, event(id, b)).unwrap();
            }
            let last = match i {
                0 => EventBody::Completed {
                    message: Some("ok".into()),
                },
                1 => EventBody::Failed {
                    error: ErrorInfo {
                        code: "E1".into(),
                        message: "boom".into(),
                    },
                },
                2 => EventBody::CancelRequested,
                _ => EventBody::Cancelled { message: None },
            };
            submit(&ledger, event(id, last)).unwrap();
        }
        let mut s = submission(
            Some("acme"),
            vec![create("acme", "b1"), create("acme", "b2")],
        );
        s.idempotency = Some(IdempotencyStamp {
            tenant: "acme".into(),
            key: "k-1".into(),
            request_digest: [7; 32],
        });
        ledger.submit_blocking(s).unwrap();
        ledger.close();
        let names = sim.list(&log_dir()).unwrap();
        let seg = names
            .iter()
            .find(|n| n.ends_with(".seg"))
            .expect("a segment");
        sim.read(&log_dir().join(seg)).unwrap()
    })
}

/// The entry payloads of the corpus segment (and the frames' byte ranges).
fn corpus_records() -> &'static Vec<(usize, usize, Vec<u8>)> {
    static RECS: OnceLock<Vec<(usize, usize, Vec<u8>)>> = OnceLock::new();
    RECS.get_or_init(|| {
        let seg = corpus_segment();
        let mut out = Vec::new();
        let mut off = HEADER_LEN;
        while off < seg.len() {
            let f = decode_frame(&seg[off..], 1 << 22).expect("corpus frame");
            out.push((off, f.total_len, f.payload.to_vec()));
            off += f.total_len;
        }
        assert!(out.len() > 20, "corpus has {} records", out.len());
        out
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    /// XOR a byte with a non-zero mask.
    Flip(Index, u8),
    /// Set a byte.
    Set(Index, u8),
    /// Cut everything from here on.
    Truncate(Index),
    /// Insert bytes here.
    Insert(Index, Vec<u8>),
    /// Remove a range.
    Remove(Index, u8),
    /// Copy a range of the input over another place (length prefixes, duplicated records).
    Splice(Index, Index, u16),
    /// Overwrite 8 bytes with an interesting little-endian integer.
    Int(Index, u64),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let interesting = prop_oneof![
        Just(0u64),
        Just(1),
        Just(u64::MAX),
        Just(u32::MAX as u64),
        Just(i64::MAX as u64),
        Just(1 << 22),
        Just((1 << 22) + 1),
        any::<u64>(),
    ];
    prop_oneof![
        3 => (any::<Index>(), 1..=255u8).prop_map(|(i, m)| Mutation::Flip(i, m)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => (any::<Index>(), proptest::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => (any::<Index>(), 1..64u8).prop_map(|(i, n)| Mutation::Remove(i, n)),
        1 => (any::<Index>(), any::<Index>(), 1..512u16)
            .prop_map(|(a, b, n)| Mutation::Splice(a, b, n)),
        2 => (any::<Index>(), interesting).prop_map(|(i, v)| Mutation::Int(i, v)),
    ]
}

fn apply(bytes: &mut Vec<u8>, muts: &[Mutation]) {
    for m in muts {
        if bytes.is_empty() {
            return;
        }
        let n = bytes.len();
        match m {
            Mutation::Flip(i, mask) => bytes[i.index(n)] ^= mask,
            Mutation::Set(i, b) => bytes[i.index(n)] = *b,
            Mutation::Truncate(i) => bytes.truncate(i.index(n)),
            Mutation::Insert(i, b) => {
                let at = i.index(n);
                bytes.splice(at..at, b.iter().copied());
            }
            Mutation::Remove(i, k) => {
                let at = i.index(n);
                let end = (at + *k as usize).min(n);
                bytes.drain(at..end);
            }
            Mutation::Splice(from, to, len) => {
                let (from, to) = (from.index(n), to.index(n));
                let len = (*len as usize).min(n - from).min(n - to);
                let chunk = bytes[from..from + len].to_vec();
                bytes[to..to + len].copy_from_slice(&chunk);
            }
            Mutation::Int(i, v) => {
                let at = i.index(n);
                let end = (at + 8).min(n);
                bytes[at..end].copy_from_slice(&v.to_le_bytes()[..end - at]);
            }
        }
    }
}

/// Decoder calls made by `decode_fuzz` (the "executions" of the long run).
static EXECUTIONS: AtomicU64 = AtomicU64::new(0);

/// Every decoder on `bytes`; returns nothing, must not panic.
fn decode_everything(bytes: &[u8]) {
    let _ = decode_entry(KIND_ENTRY, ENTRY_SCHEMA_V1, bytes);
    let _ = decode_bounded::<Action>(bytes, 1 << 20);
    let _ = SegmentHeader::decode(bytes);
    let _ = decode_frame(bytes, 1 << 22);
    EXECUTIONS.fetch_add(4, Ordering::Relaxed);
}

fn verify_segment(bytes: &[u8]) -> Result<u64, String> {
    let sim = SimStorage::new();
    let dir = Path::new("/f/log");
    let mut f = sim
        .create(&dir.join("00000000000000000001.seg"))
        .map_err(|e| e.to_string())?;
    f.append(bytes).map_err(|e| e.to_string())?;
    let summary = action_ledger::log::verify(&sim, dir, &mut |r| {
        EXECUTIONS.fetch_add(1, Ordering::Relaxed);
        decode_entry(r.meta.kind, r.meta.schema, r.payload)
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .map_err(|e| e.to_string())?;
    EXECUTIONS.fetch_add(1, Ordering::Relaxed);
    Ok(summary.last_position)
}

#[derive(Debug, Clone)]
enum Target {
    Segment,
    Record(Index),
    Payload(Index),
    Raw(Vec<u8>),
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        3 => Just(Target::Segment),
        3 => any::<Index>().prop_map(Target::Record),
        3 => any::<Index>().prop_map(Target::Payload),
        1 => proptest::collection::vec(any::<u8>(), 0..1024).prop_map(Target::Raw),
    ]
}

#[test]
fn decode_fuzz() {
    let n = cases(20_000);
    let start = std::time::Instant::now();
    let seg = corpus_segment();
    let recs = corpus_records();
    let intact = verify_segment(seg).expect("the corpus segment verifies");
    assert_eq!(intact as usize, recs.len());
    let mut config = ProptestConfig::with_cases(n);
    config.failure_persistence = None;
    proptest!(config, |(t in target(), muts in proptest::collection::vec(mutation(), 1..6))| {
        match t {
            Target::Segment => {
                let mut bytes = seg.clone();
                apply(&mut bytes, &muts);
                decode_everything(&bytes);
                // Damage never adds records: whatever verifies is at most the original
                // log, and a mutated segment that verifies whole must decode whole.
                if let Ok(last) = verify_segment(&bytes) {
                    prop_assert!(last <= intact, "{last} > {intact}");
                }
            }
            Target::Record(i) => {
                let (off, len, _) = &recs[i.index(recs.len())];
                let mut bytes = seg[*off..off + len].to_vec();
                apply(&mut bytes, &muts);
                decode_everything(&bytes);
            }
            Target::Payload(i) => {
                let mut bytes = recs[i.index(recs.len())].2.clone();
                apply(&mut bytes, &muts);
                decode_everything(&bytes);
            }
            Target::Raw(mut bytes) => {
                apply(&mut bytes, &muts);
                decode_everything(&bytes);
                let _ = verify_segment(&bytes);
            }
        }
    });
    eprintln!(
        "decode_fuzz: {n} cases, {} decoder executions in {:.1?}",
        EXECUTIONS.load(Ordering::Relaxed),
        start.elapsed()
    );
}

// ---------------------------------------------------------------------------------------
// The JSON command path

/// Field names of every command body (native and dialects), so generated objects hit the
/// parsers' interesting paths rather than `unknown field` every time.
const KEYS: &[&str] = &[
    "type",
    "resource",
    "id",
    "uid",
    "kind",
    "related",
    "node",
    "region",
    "description",
    "labels",
    "user",
    "status",
    "exclusive",
    "tenant",
    "action",
    "expected_version",
    "progress",
    "state",
    "message",
    "pending_ops",
    "name",
    "host",
    "result",
    "traceback",
    "details",
    "error",
    "code",
    "commands",
    "create",
    "event",
    "role",
    "op_name",
    "status_code",
    "status_description",
    "heartbeat",
    "last_sample_time",
    "snapshot",
];

/// Strings with meaning somewhere (event types, statuses, kinds, roles, ids), and hostile
/// ones.
const WORDS: &[&str] = &[
    "started",
    "progress",
    "event_started",
    "event_finished",
    "heartbeat",
    "completed",
    "failed",
    "cancel_requested",
    "cancelled",
    "queued",
    "running",
    "task",
    "state-machine",
    "other",
    "success",
    "error",
    "reader",
    "writer",
    "admin",
    "droplet",
    "server",
    "ECS",
    "bdb",
    "1",
    "2",
    "0",
    "-1",
    "18446744073709551616",
    "acme",
    "",
    " ",
    "\u{0}",
    "é",
    "\u{202e}",
    "../../etc/passwd",
    "%00",
    "null",
    "NaN",
    "1e309",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        prop_oneof![
            Just(0.0f64),
            Just(-0.0),
            Just(100.0),
            Just(100.000001),
            Just(-1e-300),
            Just(1e308),
            Just(f64::MIN_POSITIVE),
            any::<f64>().prop_filter("finite", |f| f.is_finite()),
        ]
        .prop_map(|f| json!(f)),
        proptest::sample::select(WORDS).prop_map(|s| json!(s)),
        "\\PC{0,40}".prop_map(Value::String),
        (1usize..600).prop_map(|n| json!("x".repeat(n))),
    ];
    leaf.prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    4 => proptest::sample::select(KEYS).prop_map(str::to_string),
                    1 => "\\PC{0,8}",
                ],
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Valid bodies of every POST route, the seeds of mutation.
fn seeds() -> Vec<Value> {
    vec![
        json!({"type": "snapshot", "resource": {"type": "droplet", "id": "1"}, "status": "running",
               "uid": "u-1", "kind": "state-machine", "related": [{"type": "bdb", "id": "2"}],
               "labels": {"a": "b"}, "exclusive": true, "node": "n1", "region": "nyc3",
               "description": "d", "user": "bob"}),
        json!({"type": "progress", "progress": 40, "state": "s", "message": "m",
               "pending_ops": {"shard-1": {"op_name": "SetBDB", "progress": 50.5}, "shard-2": null}}),
        json!({"type": "event_finished", "name": "compute_reboot", "result": "error",
               "traceback": "tb", "details": "d", "host": "h"}),
        json!({"type": "failed", "error": {"code": "E", "message": "m"}, "expected_version": 3}),
        json!({"commands": [
            {"create": {"type": "t", "resource": {"type": "droplet", "id": "9"}, "uid": "b-1"}},
            {"event": {"action": "b-1", "type": "started"}},
            {"event": {"action": 1, "type": "heartbeat"}}]}),
        json!({"name": "tok", "tenant": "acme", "role": "reader"}),
        json!({"type": "reboot", "snapshot": "s"}),
    ]
}

/// A body: generated JSON, a seed with a field replaced, or a seed's bytes mutated.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let seeds = seeds();
    let n = seeds.len();
    let s2 = seeds.clone();
    prop_oneof![
        2 => json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        3 => (0..n, proptest::sample::select(KEYS), json_value()).prop_map(move |(i, k, v)| {
            let mut s = seeds[i].clone();
            // Replace or add a field, at the top or in the first nested object.
            let obj = s.as_object_mut().unwrap();
            match obj.values_mut().find(|v| v.is_object()) {
                Some(inner) if k.len() % 2 == 0 => {
                    inner.as_object_mut().unwrap().insert(k.to_string(), v);
                }
                _ => {
                    obj.insert(k.to_string(), v);
                }
            }
            serde_json::to_vec(&s).unwrap()
        }),
        2 => (0..n, proptest::collection::vec(mutation(), 1..4)).prop_map(move |(i, m)| {
            let mut b = serde_json::to_vec(&s2[i]).unwrap();
            apply(&mut b, &m);
            b
        }),
    ]
}

struct App {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
    writer: String,
    reader: String,
    _dir: tempfile::TempDir,
}

/// The real router over a ledger on the simulated disk (fast fsyncs) and a sled projection.
fn app() -> App {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimStorage::new();
    let projection = crate::support::open_projection(&dir.path().join("projection"));
    let mut config = action_ledger::ledger::LedgerConfig::new("/sim/log");
    config.segment_bytes = 1 << 20;
    let ledger =
        action_ledger::ledger::Ledger::open(Arc::new(sim), config, projection.clone()).unwrap();
    let mut tokens =
        action_ledger::tokens::TokenStore::open(dir.path().join("tokens.json")).unwrap();
    tokens.add_ephemeral_admin(ADMIN);
    let (_, writer) = tokens
        .create("w", "acme", action_ledger::tokens::Role::Writer, None)
        .unwrap();
    let (_, reader) = tokens
        .create("r", "acme", action_ledger::tokens::Role::Reader, None)
        .unwrap();
    let (_tx, shutdown) = tokio::sync::watch::channel(false);
    std::mem::forget(_tx); // never shuts down during the fuzz run
    let limits = HttpLimits {
        body_bytes_max: 64 * 1024,
        ..HttpLimits::default()
    };
    let state = AppState::new(Shared {
        ledger: Arc::new(ledger),
        projection,
        tokens: Arc::new(tokens),
        limits: Arc::new(limits),
        metrics: Arc::new(action_ledger::http::metrics::Metrics::default()),
        ready: Arc::new(AtomicBool::new(true)),
        watchers: Arc::new(AtomicUsize::new(0)),
        public_metrics: false,
        console: None,
        shutdown,
        rendered: Arc::default(),
        cluster: None,
        reads: action_ledger::http::reads::ReadPool::start(2).unwrap(),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    App {
        rt,
        router: action_ledger::http::server::router(state),
        writer,
        reader,
        _dir: dir,
    }
}

/// POST routes taking a JSON body; `{id}` is replaced by a generated action reference.
const POST_ROUTES: &[&str] = &[
    "/api/v1/actions",
    "/api/v1/actions/{id}/events",
    "/api/v1/actions/{id}/cancel",
    "/api/v1/batch",
    "/api/v1/tokens",
    "/ecs/v2/servers/{id}/actions",
    "/v2/droplets/{id}/actions",
];

#[test]
fn json_command_fuzz() {
    let n = cases(2_000);
    let app = app();
    // A few actions to aim events at.
    for i in 0..3 {
        let req = Request::post("/api/v1/actions")
            .header("authorization", format!("Bearer {}", app.writer))
            .body(Body::from(
                json!({"type": "t", "resource": {"type": "droplet", "id": i.to_string()}, "uid": format!("u-{i}")})
                    .to_string(),
            ))
            .unwrap();
        let resp = app.rt.block_on(app.router.clone().oneshot(req)).unwrap();
        assert_eq!(resp.status(), 201);
    }
    let statuses = std::sync::Mutex::new(std::collections::BTreeMap::<u16, u64>::new());
    let mut config = ProptestConfig::with_cases(n);
    config.failure_persistence = None;
    proptest!(config, |(
        route in proptest::sample::select(POST_ROUTES),
        id in prop_oneof![Just("1".to_string()), Just("u-2".to_string()), Just("999".to_string()),
                          Just("0".to_string()), Just("-1".to_string()), Just("%20".to_string()),
                          Just("18446744073709551616".to_string()), "[a-z0-9%._-]{1,12}"],
        who in 0..4u8,
        idem in proptest::option::of("[ -~]{0,20}"),
        content_type in proptest::option::of(proptest::sample::select(vec!["application/json", "text/plain", "application/json; charset=utf-8"])),
        body in body(),
    )| {
        // Parsers alone: every body either parses or is refused; none panics.
        let _ = serde_json::from_slice::<CreateBody>(&body).map(|b| b.into_command("acme".into()));
        let _ = serde_json::from_slice::<EventJson>(&body).map(|e| e.into_body());
        if let Ok(b) = serde_json::from_slice::<BatchBody>(&body) {
            for e in b.commands.into_iter().filter_map(|c| c.event) {
                let _ = e.into_body();
            }
        }

        let path = route.replace("{id}", &id);
        let mut req = Request::post(path.as_str());
        match who {
            0 => req = req.header("authorization", format!("Bearer {ADMIN}")),
            1 => req = req.header("authorization", format!("Bearer {}", app.writer)),
            2 => req = req.header("x-auth-token", app.reader.as_str()),
            _ => {}
        }
        if let Some(k) = &idem {
            req = req.header("idempotency-key", k.as_str());
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let Ok(req) = req.body(Body::from(body.clone())) else {
            return Ok(()); // not a valid URI or header: never reaches a server
        };
        let resp = app.rt.block_on(app.router.clone().oneshot(req)).unwrap();
        let status = resp.status();
        *statuses.lock().unwrap().entry(status.as_u16()).or_default() += 1;
        prop_assert!(
            !status.is_server_error(),
            "POST {} -> {}: {}",
            path,
            status,
            String::from_utf8_lossy(&body)
        );
        if who == 3 {
            prop_assert_eq!(status.as_u16(), 401);
        }
    });
    let statuses = statuses.into_inner().unwrap();
    eprintln!("json_command_fuzz: {n} cases, statuses {statuses:?}");
    // The generator reaches past the parsers: some bodies were accepted.
    assert!(
        statuses.keys().any(|s| (200..300).contains(s)) || n < 100,
        "{statuses:?}"
    );
}
