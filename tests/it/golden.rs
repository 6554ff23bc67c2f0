//! Golden byte fixtures of the on-disk format (data/fixtures/). They pin the format: if
//! these fail, the change broke every existing ledger. Regenerate only for a *new* format
//! version, keeping the old fixtures: `ACTION_LEDGER_WRITE_FIXTURES=1 cargo test golden`.

use action_ledger::event::codec::{decode_entry, encode_entry, ENTRY_SCHEMA_V1, KIND_ENTRY};
use action_ledger::event::*;
use action_ledger::log::format::*;
use action_ledger::log::scan::{scan, ScanMode};
use action_ledger::log::{FsStorage, LogConfig, LogWriter};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/fixtures")
}

/// One entry using every op and event variant of schema v1.
fn sample_entries() -> Vec<Entry> {
    let create = NewAction {
        id: 1,
        uid: "req-7f1c".into(),
        tenant: "acme".into(),
        user: Some("alice".into()),
        action_type: "snapshot".into(),
        kind: Kind::StateMachine,
        resource: ResourceRef {
            resource_type: "droplet".into(),
            id: "3164450".into(),
        },
        related: vec![ResourceRef {
            resource_type: "volume".into(),
            id: "v-9".into(),
        }],
        node: Some("n1".into()),
        region: Some("nyc3".into()),
        description: Some("nightly".into()),
        labels: BTreeMap::from([("env".into(), "prod".into())]),
        status: InitialStatus::Running,
        exclusive: true,
    };
    let events = vec![
        EventBody::Started,
        EventBody::Progress(ProgressUpdate {
            progress: Some(50.0),
            state: Some("copying".into()),
            message: Some("half".into()),
            pending_ops: BTreeMap::from([
                (
                    "3".into(),
                    Some(PendingOp {
                        op_name: Some("SMUpgradeBDB".into()),
                        progress: Some(50.0),
                        status_code: None,
                        status_description: None,
                        heartbeat: Some(1_650_378_874),
                        last_sample_time: None,
                        snapshot: Some("{\"a\":1}".into()),
                    }),
                ),
                ("4".into(), None),
            ]),
        }),
        EventBody::EventStarted {
            name: "compute_snapshot".into(),
            host: Some("cmp-1".into()),
        },
        EventBody::EventFinished {
            name: "compute_snapshot".into(),
            result: SubResult::Error,
            traceback: Some("Traceback".into()),
            details: Some("disk".into()),
        },
        EventBody::Heartbeat,
        EventBody::Completed {
            message: Some("done".into()),
        },
        EventBody::Failed {
            error: ErrorInfo {
                code: "E1".into(),
                message: "boom".into(),
            },
        },
        EventBody::CancelRequested,
        EventBody::Cancelled { message: None },
    ];
    vec![
        Entry {
            recorded_at: 1_700_000_000_123_456,
            principal: "ops-bot".into(),
            idempotency: Some(IdempotencyStamp {
                tenant: "acme".into(),
                key: "k-1".into(),
                request_digest: [7; 32],
            }),
            ops: vec![Op::Create(create)],
        },
        Entry {
            recorded_at: 1_700_000_001_000_000,
            principal: "ops-bot".into(),
            idempotency: None,
            ops: events
                .into_iter()
                .map(|body| Op::Event { action: 1, body })
                .collect(),
        },
    ]
}

#[test]
fn golden_entry_v1_decodes_and_reencodes_identically() {
    let path = fixtures().join("entry-v1.bin");
    let entry = &sample_entries()[1];
    if std::env::var_os("ACTION_LEDGER_WRITE_FIXTURES").is_some() {
        std::fs::create_dir_all(fixtures()).unwrap();
        std::fs::write(&path, encode_entry(entry).unwrap()).unwrap();
    }
    let bytes = std::fs::read(&path).expect("committed fixture data/fixtures/entry-v1.bin");
    assert_eq!(
        &decode_entry(KIND_ENTRY, ENTRY_SCHEMA_V1, &bytes).unwrap(),
        entry
    );
    assert_eq!(
        encode_entry(entry).unwrap(),
        bytes,
        "the v1 encoding changed"
    );
}

#[test]
fn golden_segment_v1_scans_and_decodes() {
    let dir = fixtures().join("log-v1");
    if std::env::var_os("ACTION_LEDGER_WRITE_FIXTURES").is_some() {
        let _ = std::fs::remove_dir_all(&dir);
        let (mut w, _) =
            LogWriter::open(Arc::new(FsStorage), LogConfig::new(&dir), &mut |_| Ok(())).unwrap();
        let payloads: Vec<Vec<u8>> = sample_entries()
            .iter()
            .map(|e| encode_entry(e).unwrap())
            .collect();
        let records: Vec<_> = payloads
            .iter()
            .map(|p| action_ledger::log::writer::NewRecord {
                kind: KIND_ENTRY,
                schema: ENTRY_SCHEMA_V1,
                payload: p,
            })
            .collect();
        w.append(&records).unwrap();
    }
    let mut decoded = Vec::new();
    let summary = scan(&FsStorage, &dir, ScanMode::ReadOnly, 1 << 20, &mut |r| {
        decoded
            .push(decode_entry(r.meta.kind, r.meta.schema, r.payload).map_err(|e| e.to_string())?);
        Ok(())
    })
    .expect("committed fixture data/fixtures/log-v1 scans clean");
    assert_eq!(decoded, sample_entries());
    assert_eq!(summary.last_position, 2);
    // The header bytes are pinned too.
    let seg = std::fs::read(dir.join(segment_file_name(1))).unwrap();
    assert_eq!(&seg[..8], b"ACTLEDG\0");
    assert_eq!(SegmentHeader::decode(&seg).unwrap().first_position, 1);
}
