//! The query benchmarks' workload (`query` and `query_pg` include it with `#[path]`): a log
//! of N actions written directly with [`LogWriter`] and [`codec::encode_entry`] in batches
//! of 4096 records (not N submissions). Each action is one create record, then a `started`
//! record 20 records later and, for 90% of them, a terminal record ~200 records later —
//! about 2.9 records per action. Ten tenants; N/100 resources (each resource belongs to one
//! tenant and gets ~100 actions spread over the whole id range, the worst case for the
//! resource index); 4 types, 5 users. The log depends only on N (the generator is seeded
//! with it).

use action_ledger::event::codec;
use action_ledger::event::*;
use action_ledger::log::writer::NewRecord;
use action_ledger::log::{FsStorage, LogConfig, LogWriter};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

pub const TENANTS: u64 = 10;
pub const ACTIONS_PER_RESOURCE: u64 = 100;
pub const TYPES: [&str; 4] = ["snapshot", "reboot", "resize", "backup"];
pub const USERS: [&str; 5] = ["alice", "bob", "carol", "dave", "erin"];
const APPEND_BATCH_RECORDS: usize = 4096;
const STARTED_LAG_RECORDS: u64 = 20;
const FINISHED_LAG_RECORDS: u64 = 200;

/// A `kB` field (`VmRSS:`, `VmHWM:`) of this process's `/proc/self/status`.
pub fn status_kb(field: &str) -> u64 {
    proc_status_kb("self", field)
}

/// A `kB` field of `/proc/<pid>/status` (`pid` may be `self`); 0 when unreadable.
#[allow(dead_code)] // the query bench reads only its own
pub fn proc_status_kb(pid: &str, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// How many resources a log of `n` actions spreads them over.
pub fn resources(n: u64) -> u64 {
    (n / ACTIONS_PER_RESOURCE).max(1)
}

/// The tenant a resource belongs to.
pub fn tenant_of(resource: u64) -> String {
    format!("tenant-{}", resource % TENANTS)
}

/// Writes the benchmark log for `n` actions into `log_dir`. Returns the record count.
pub fn generate(log_dir: &Path, n: u64) -> u64 {
    let _ = std::fs::remove_dir_all(log_dir);
    let storage = Arc::new(FsStorage);
    let (mut writer, _) =
        LogWriter::open(storage, LogConfig::new(log_dir), &mut |_| Ok(())).expect("open log");
    let mut rng = SmallRng::seed_from_u64(n);
    let base: Micros = 1_700_000_000_000_000;
    // Pending events: due record number → (action, body).
    let mut due: BTreeMap<u64, Vec<(ActionId, EventBody)>> = BTreeMap::new();
    let mut payloads: Vec<Vec<u8>> = Vec::with_capacity(APPEND_BATCH_RECORDS);
    let mut records = 0u64;
    let mut next_id = 1u64;
    let flush = |writer: &mut LogWriter, payloads: &mut Vec<Vec<u8>>| {
        let batch: Vec<NewRecord<'_>> = payloads.iter().map(|p| codec::entry_record(p)).collect();
        writer.append(&batch).expect("append");
        payloads.clear();
    };
    loop {
        let creating = next_id <= n;
        if !creating && due.is_empty() {
            break;
        }
        let at = base + records as Micros * 1000;
        let event_due = due.first_key_value().is_some_and(|(w, _)| *w <= records);
        let ops = if event_due {
            let (_, mut list) = due.pop_first().expect("non-empty");
            let (action, body) = list.pop().expect("non-empty");
            if !list.is_empty() {
                // Older events go last, so they are popped first.
                due.entry(records + 1).or_default().extend(list);
            }
            vec![Op::Event { action, body }]
        } else if creating {
            let id = next_id;
            next_id += 1;
            let r = rng.random_range(0..resources(n));
            let new = NewAction {
                id,
                uid: format!("al-{id}"),
                tenant: tenant_of(r),
                user: Some(USERS[rng.random_range(0..USERS.len())].into()),
                action_type: TYPES[rng.random_range(0..TYPES.len())].into(),
                kind: Kind::Task,
                resource: ResourceRef {
                    resource_type: "droplet".into(),
                    id: r.to_string(),
                },
                related: Vec::new(),
                node: None,
                region: Some("fra1".into()),
                description: None,
                labels: Default::default(),
                status: InitialStatus::Queued,
                exclusive: false,
            };
            due.entry(records + STARTED_LAG_RECORDS)
                .or_default()
                .push((id, EventBody::Started));
            let finish = match rng.random_range(0..20) {
                0 | 1 => None, // stays running
                2 => Some(EventBody::Failed {
                    error: ErrorInfo {
                        code: "timeout".into(),
                        message: "the hypervisor did not answer".into(),
                    },
                }),
                _ => Some(EventBody::Completed { message: None }),
            };
            if let Some(body) = finish {
                due.entry(records + FINISHED_LAG_RECORDS + rng.random_range(0..50))
                    .or_default()
                    .push((id, body));
            }
            vec![Op::Create(new)]
        } else {
            // Only future events remain: let time pass.
            let (&when, _) = due.first_key_value().expect("non-empty");
            records = records.max(when);
            continue;
        };
        let entry = Entry {
            recorded_at: at,
            principal: "bench".into(),
            idempotency: None,
            ops,
        };
        payloads.push(codec::encode_entry(&entry).expect("encode"));
        records += 1;
        if payloads.len() >= APPEND_BATCH_RECORDS {
            flush(&mut writer, &mut payloads);
        }
    }
    if !payloads.is_empty() {
        flush(&mut writer, &mut payloads);
    }
    writer.next_position() - 1
}

/// The sizes to run: `var` (comma-separated action counts), else `default` under
/// `cargo bench` (which passes `--bench`), else a tiny smoke run of 2000 (e.g.
/// `cargo test --benches`).
pub fn sizes(var: &str, default: &str) -> Vec<u64> {
    let benching = std::env::args().any(|a| a == "--bench");
    std::env::var(var)
        .unwrap_or_else(|_| if benching { default } else { "2000" }.to_string())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{var}: comma-separated numbers"))
        })
        .collect()
}
