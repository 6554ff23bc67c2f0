//! Shared helpers: ledgers on a simulated or real disk, and short-hand commands.

use action_ledger::event::*;
use action_ledger::ledger::memory::MemoryStore;
use action_ledger::ledger::{Committed, Ledger, LedgerConfig, LedgerError};
use action_ledger::log::{SimStorage, Storage};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub fn log_dir() -> PathBuf {
    PathBuf::from("/sim/log")
}

pub fn open_sim(sim: &SimStorage, segment_bytes: u64) -> Result<Ledger, LedgerError> {
    open_on(Arc::new(sim.clone()), &log_dir(), segment_bytes)
}

pub fn open_on(
    storage: Arc<dyn Storage>,
    dir: &Path,
    segment_bytes: u64,
) -> Result<Ledger, LedgerError> {
    let mut config = LedgerConfig::new(dir);
    config.segment_bytes = segment_bytes;
    Ledger::open(storage, config, Arc::new(MemoryStore::new()))
}

pub fn submission(tenant: Option<&str>, commands: Vec<Command>) -> Submission {
    Submission {
        principal: "test".into(),
        tenant_scope: tenant.map(str::to_string),
        idempotency: None,
        commands,
    }
}

pub fn create(tenant: &str, resource_id: &str) -> Command {
    Command::Create(CreateAction::new(
        tenant,
        "snapshot",
        "droplet",
        resource_id,
    ))
}

pub fn event(id: ActionId, body: EventBody) -> Command {
    Command::Event(RecordEvent {
        action: ActionRef::Id(id),
        expected_version: None,
        body,
    })
}

pub fn progress(p: f64) -> EventBody {
    EventBody::Progress(ProgressUpdate {
        progress: Some(p),
        ..Default::default()
    })
}

/// A committed entry of one operation at `position`, as the writer hands it to a store
/// (segment 1, a made-up offset).
pub fn committed(position: u64, at: Micros, op: Op) -> action_ledger::ledger::CommittedEntry {
    action_ledger::ledger::CommittedEntry {
        position,
        segment: 1,
        offset: position * 64,
        entry: Entry {
            recorded_at: at,
            principal: "test".into(),
            idempotency: None,
            ops: vec![op],
        },
    }
}

/// Submits one command as the admin (no tenant scope).
pub fn submit(ledger: &Ledger, command: Command) -> Result<Committed, LedgerError> {
    ledger.submit_blocking(submission(None, vec![command]))
}

/// The rejection code of a failed submission (of one command, or of any command of several).
pub fn code(result: Result<Committed, LedgerError>) -> &'static str {
    match result {
        Err(LedgerError::Rejected(r)) | Err(LedgerError::CommandRejected { rejection: r, .. }) => {
            r.code()
        }
        Err(e) => panic!("expected a rejection, got error {e}"),
        Ok(c) => panic!("expected a rejection, got {c:?}"),
    }
}

/// A ledger on the simulated disk backed by `store` (e.g. a sled projection).
pub fn open_sim_with(
    sim: &SimStorage,
    segment_bytes: u64,
    store: Arc<dyn action_ledger::ledger::StateStore>,
) -> Result<Ledger, LedgerError> {
    let mut config = LedgerConfig::new(log_dir());
    config.segment_bytes = segment_bytes;
    Ledger::open(Arc::new(sim.clone()), config, store)
}

/// A sled projection in `dir` with a small cache (tests open many).
pub fn open_projection(dir: &Path) -> Arc<action_ledger::projection::Projection> {
    Arc::new(
        action_ledger::projection::Projection::open(dir, projection_config())
            .unwrap_or_else(|e| panic!("open projection {}: {e}", dir.display())),
    )
}

pub fn projection_config() -> action_ledger::projection::ProjectionConfig {
    action_ledger::projection::ProjectionConfig {
        cache_capacity_bytes: 8 * 1024 * 1024,
        // Small batches so tests cross batch boundaries.
        batch_writes_max: 64,
        flush_every_ms: None,
        // Small, so tests cross the snapshot memo's evictions (~10 actions per shard).
        snapshot_cache_bytes: 256 * 1024,
        written_memo_bytes: action_ledger::projection::WRITTEN_MEMO_BYTES,
        // Small, so rebuilds cross the flush of the chunks they hold between windows.
        rebuild_held_bytes_max: 4 * 1024,
        // Small, so nearly every test's older packs are sealed into the value file, one
        // pack at a time, and some finishes land in sealed packs.
        seal_distance_ids: 24,
        seal_step_packs: 1,
    }
}

/// Sends only the head of a POST declaring a `len`-byte JSON body to `addr` (`host:port`),
/// with `Expect: 100-continue` (a client that waits to be told to send), and returns the
/// raw answer, read until the server closes the connection (a reset after the answer counts
/// as closed). An oversized body is refused from its declared length, and a client that
/// never sends it is not waited for. (A client that writes its whole body before reading:
/// tests/it/edges.rs.)
pub async fn post_head_only(addr: &str, path: &str, token: &str, len: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {len}\r\nexpect: 100-continue\r\nconnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("{path}: {e}"),
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), read)
        .await
        .unwrap_or_else(|_| panic!("{path}: no answer to an oversized declared body"));
    String::from_utf8_lossy(&out).into_owned()
}

/// Copies the directory tree `from` to `to` (created), files and subdirectories.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}
