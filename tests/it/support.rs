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

/// Submits one command as the admin (no tenant scope).
pub fn submit(ledger: &Ledger, command: Command) -> Result<Committed, LedgerError> {
    ledger.submit_blocking(submission(None, vec![command]))
}

/// The rejection code of a failed submission.
pub fn code(result: Result<Committed, LedgerError>) -> &'static str {
    match result {
        Err(LedgerError::Rejected(r)) => r.code(),
        Err(e) => panic!("expected a rejection, got error {e}"),
        Ok(c) => panic!("expected a rejection, got {c:?}"),
    }
}
