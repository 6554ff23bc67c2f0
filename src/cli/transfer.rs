//! `export` and `import`: the whole log as JSON lines, and back.
//!
//! One line per log record, in position order ([`ExportRecord`]): the position, the fsync
//! batch offset, the time, the principal, the idempotency stamp, the operations (the log's
//! own types, serialized by serde), and the record's chain digest. `import` re-encodes each
//! entry, appends the records in the same fsync batches (the batch offset is part of what the
//! digest covers), checks every digest against the export's, and only then moves the new log
//! into place and builds the projection. So an import either reproduces the exported log's
//! digest chain exactly — same head digest, same ids, positions, times and record
//! boundaries, hence the same answers to every query — or leaves the ledger untouched.

use super::check::{bytes_before, log_error, segment_sizes};
use super::{hex, line, progress_bar, CliResult, DataDir, Failure};
use crate::event::codec::{self, ENTRY_SCHEMA_CURRENT};
use crate::event::{fold, Action, ActionId, Entry, IdempotencyStamp, Op};
use crate::json::{parse_time, rfc3339};
use crate::log::writer::NewRecord;
use crate::log::{self, FsStorage, LogConfig, LogWriter, Storage};
use crate::projection::{self, ProjectionConfig};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    pub data: DataDir,
    /// Write to this file (atomically: FILE.tmp, fsync, rename) instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The ledger's data directory; created if missing; its log must be empty.
    #[arg(long = "data-dir", env = "ACTION_LEDGER_DATA_DIR", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// An export (JSON lines); `-` reads stdin.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// One line of an export: one log record.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExportRecord {
    pub position: u64,
    /// Index of the record in its fsync batch (0 starts a batch).
    pub batch_offset: u32,
    /// RFC 3339 UTC with microseconds.
    pub recorded_at: String,
    pub principal: String,
    pub idempotency: Option<IdempotencyStamp>,
    pub ops: Vec<Op>,
    /// Entry schema version of the record in the exported log.
    pub schema: u16,
    /// The record's chain digest (hex): SHA-256(previous digest ‖ header ‖ payload).
    pub digest: String,
}

impl ExportRecord {
    pub fn entry(&self) -> Result<Entry, String> {
        let recorded_at = parse_time(&self.recorded_at)
            .ok_or_else(|| format!("recorded_at {:?} is not an RFC 3339 time", self.recorded_at))?;
        Ok(Entry {
            recorded_at,
            principal: self.principal.clone(),
            idempotency: self.idempotency.clone(),
            ops: self.ops.clone(),
        })
    }
}

pub fn export(args: &ExportArgs, out: &mut dyn Write) -> CliResult {
    args.data.existing()?;
    let log_dir = args.data.log_dir();
    match &args.out {
        None => export_to(&log_dir, out),
        Some(path) => {
            let mut tmp = path.clone().into_os_string();
            tmp.push(".tmp");
            let tmp = PathBuf::from(tmp);
            let err = |what: &str, e: std::io::Error| {
                Failure::error(format!("{what} {}: {e}", tmp.display()))
            };
            let file = std::fs::File::create(&tmp).map_err(|e| err("cannot create", e))?;
            let mut w = std::io::BufWriter::new(file);
            let result = export_to(&log_dir, &mut w).and_then(|()| {
                let file = w
                    .into_inner()
                    .map_err(|e| err("cannot write", e.into_error()))?;
                file.sync_all().map_err(|e| err("cannot fsync", e))?;
                std::fs::rename(&tmp, path).map_err(|e| err("cannot rename", e))
            });
            if result.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            result?;
            Ok(())
        }
    }
}

/// Writes every intact record of the log in `log_dir` as a JSON line.
pub fn export_to(log_dir: &Path, out: &mut dyn Write) -> CliResult {
    let sizes = segment_sizes(log_dir).map_err(log_error)?;
    let bar = progress_bar(sizes.iter().map(|(_, l)| l).sum(), "exporting");
    let mut failure: Option<Failure> = None;
    let mut n = 0u64;
    let scanned = log::verify(&FsStorage, log_dir, &mut |rec| {
        n += 1;
        if n % 4096 == 0 {
            bar.set_position(bytes_before(&sizes, rec.segment, rec.offset));
        }
        let entry = codec::decode_entry(rec.meta.kind, rec.meta.schema, rec.payload)
            .map_err(|e| e.to_string())?;
        let line_out = ExportRecord {
            position: rec.meta.position,
            batch_offset: rec.meta.batch_offset,
            recorded_at: rfc3339(entry.recorded_at),
            principal: entry.principal,
            idempotency: entry.idempotency,
            ops: entry.ops,
            schema: rec.meta.schema,
            digest: hex(&rec.digest),
        };
        let text = serde_json::to_string(&line_out).expect("records serialize");
        if let Err(e) = line(out, &text) {
            failure = Some(e);
            return Err("output closed".into());
        }
        Ok(())
    });
    bar.finish_and_clear();
    if let Some(f) = failure {
        return Err(f);
    }
    let summary = scanned.map_err(log_error)?;
    if let Some(t) = summary.torn_tail {
        eprintln!(
            "note: a torn tail of {} bytes at {} offset {} was not exported (never acknowledged)",
            t.len,
            t.file.display(),
            t.offset
        );
    }
    Ok(())
}

/// The summary of a finished import.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportSummary {
    pub records: u64,
    pub actions: u64,
    pub head_digest: String,
}

pub fn import(args: &ImportArgs, out: &mut dyn Write) -> CliResult {
    let summary = if args.file.as_os_str() == "-" {
        let stdin = std::io::stdin();
        import_from(&args.data_dir, "stdin", stdin.lock())?
    } else {
        let file = std::fs::File::open(&args.file)
            .map_err(|e| Failure::error(format!("cannot open {}: {e}", args.file.display())))?;
        let name = args.file.display().to_string();
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let bar = progress_bar(len, "importing");
        let counting = Counting {
            inner: file,
            bar: bar.clone(),
        };
        let r = import_from(&args.data_dir, &name, std::io::BufReader::new(counting));
        bar.finish_and_clear();
        r?
    };
    line(
        out,
        &format!(
            "imported: {} records, {} actions, head digest {}",
            summary.records, summary.actions, summary.head_digest
        ),
    )
}

/// A reader that advances a progress bar by the bytes read.
struct Counting<R> {
    inner: R,
    bar: indicatif::ProgressBar,
}

impl<R: std::io::Read> std::io::Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

/// Refuses unless `data_dir`'s log holds no record and no server uses it; the data
/// directory's lock when it exists already (the caller keeps it while it imports).
fn check_empty(data_dir: &Path) -> Result<Option<crate::datadir::DataDirLock>, Failure> {
    let lock = super::lock_unserved(data_dir, "importing")?;
    let log_dir = data_dir.join("log");
    if log_dir.exists() {
        let summary = log::verify(&FsStorage, &log_dir, &mut |_| Ok(())).map_err(log_error)?;
        if summary.last_position > 0 {
            return Err(Failure::error(format!(
                "{} already holds {} log records; import only loads into an empty ledger (use a new --data-dir)",
                data_dir.display(),
                summary.last_position
            )));
        }
    }
    Ok(lock)
}

/// Imports JSON lines from `input` into the empty ledger at `data_dir` (created if missing).
/// `name` names the input in errors (`FILE line N: …`).
pub fn import_from(
    data_dir: &Path,
    name: &str,
    input: impl BufRead,
) -> Result<ImportSummary, Failure> {
    let lock = check_empty(data_dir)?;
    // Owner-only, like `serve` creates it.
    crate::log::storage::create_private_dir_all(data_dir)
        .map_err(|e| Failure::error(format!("cannot create {}: {e}", data_dir.display())))?;
    // Held until the import is done, so no server starts on a half-imported log.
    let _lock = match lock {
        Some(lock) => Some(lock),
        None => super::lock_unserved(data_dir, "importing")?,
    };
    let staging = data_dir.join("import.tmp");
    let _ = std::fs::remove_dir_all(&staging);
    let staged_log = staging.join("log");
    let result = write_staged(&staged_log, name, input);
    let (records, actions, head) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    // The staged log is complete and checked: move it into place.
    let log_dir = data_dir.join("log");
    let io = |what: &str, p: &Path, e: std::io::Error| {
        Failure::error(format!("cannot {what} {}: {e}", p.display()))
    };
    if log_dir.exists() {
        std::fs::remove_dir_all(&log_dir).map_err(|e| io("remove the empty log", &log_dir, e))?;
    }
    std::fs::rename(&staged_log, &log_dir)
        .map_err(|e| io("move the imported log to", &log_dir, e))?;
    FsStorage
        .sync_dir(data_dir)
        .map_err(|e| io("fsync", data_dir, e))?;
    let _ = std::fs::remove_dir_all(&staging);

    let (projection, _) = projection::rebuild(
        &FsStorage,
        &log_dir,
        &projection::projection_dir(data_dir),
        &ProjectionConfig::default(),
        &mut |_| {},
    )
    .map_err(|e| {
        Failure::error(format!(
            "the log was imported but building the projection failed ({e}); run `rebuild`"
        ))
    })?;
    drop(projection);
    Ok(ImportSummary {
        records,
        actions,
        head_digest: head,
    })
}

/// Records of one fsync batch waiting to be appended.
struct PendingBatch {
    payloads: Vec<Vec<u8>>,
    digests: Vec<(u64, String)>,
}

/// Validates every line and writes the staged log. Returns (records, actions, head digest).
fn write_staged(
    log_dir: &Path,
    name: &str,
    input: impl BufRead,
) -> Result<(u64, u64, String), Failure> {
    let storage: Arc<dyn Storage> = Arc::new(FsStorage);
    let (mut writer, _) =
        LogWriter::open(storage, LogConfig::new(log_dir), &mut |_| Ok(())).map_err(log_error)?;
    let mut states: HashMap<ActionId, Action> = HashMap::new();
    let mut uids: HashSet<String> = HashSet::new();
    let mut batch = PendingBatch {
        payloads: Vec::new(),
        digests: Vec::new(),
    };
    let mut last_time = i64::MIN;
    let mut expected_position = 1u64;
    let mut head = hex(&writer.last_digest());

    let flush = |writer: &mut LogWriter,
                 batch: &mut PendingBatch,
                 head: &mut String|
     -> Result<(), Failure> {
        if batch.payloads.is_empty() {
            return Ok(());
        }
        let records: Vec<NewRecord<'_>> = batch
            .payloads
            .iter()
            .map(|p| codec::entry_record(p))
            .collect();
        let appended = writer.append(&records).map_err(log_error)?;
        for (a, (line_no, want)) in appended.iter().zip(&batch.digests) {
            let got = hex(&a.digest);
            if &got != want {
                return Err(Failure::error(format!(
                    "{name} line {line_no}: record {} re-encodes to digest {got}, the export says {want}; the export was altered or comes from an incompatible version",
                    a.position
                )));
            }
            *head = got;
        }
        batch.payloads.clear();
        batch.digests.clear();
        Ok(())
    };

    for (i, text) in input.lines().enumerate() {
        let line_no = i as u64 + 1;
        let bad = |reason: String| Failure::error(format!("{name} line {line_no}: {reason}"));
        let text = text.map_err(|e| bad(format!("cannot read: {e}")))?;
        if text.trim().is_empty() {
            continue;
        }
        let rec: ExportRecord =
            serde_json::from_str(&text).map_err(|e| bad(format!("not an export record: {e}")))?;
        if rec.position != expected_position {
            return Err(bad(format!(
                "position {} where {expected_position} was expected (positions are 1, 2, 3 …)",
                rec.position
            )));
        }
        let entry = rec.entry().map_err(&bad)?;
        if entry.recorded_at < last_time {
            return Err(bad(format!(
                "recorded_at {} is earlier than the record before it",
                rec.recorded_at
            )));
        }
        if entry.ops.is_empty() {
            return Err(bad("a record without operations".into()));
        }
        for op in &entry.ops {
            if let Op::Create(new) = op {
                if !uids.insert(new.uid.clone()) {
                    return Err(bad(format!("uid {:?} is created twice", new.uid)));
                }
            }
        }
        let after = fold::apply_entry(&entry, rec.position, |id| states.get(&id).cloned())
            .map_err(|e| bad(format!("does not apply to the actions before it: {e}")))?;
        for a in after {
            states.insert(a.id, a);
        }
        let payload = codec::encode_entry(&entry).map_err(|e| bad(e.to_string()))?;
        if rec.batch_offset == 0 {
            flush(&mut writer, &mut batch, &mut head)?;
        } else if rec.batch_offset as usize != batch.payloads.len() {
            return Err(bad(format!(
                "batch_offset {} does not follow the record before it",
                rec.batch_offset
            )));
        }
        batch.payloads.push(payload);
        // Digests of records of another schema cannot be reproduced by re-encoding.
        if rec.schema == ENTRY_SCHEMA_CURRENT {
            batch.digests.push((line_no, rec.digest.clone()));
        } else {
            return Err(bad(format!(
                "entry schema {} cannot be imported by this version (it writes schema {ENTRY_SCHEMA_CURRENT})",
                rec.schema
            )));
        }
        last_time = entry.recorded_at;
        expected_position += 1;
    }
    flush(&mut writer, &mut batch, &mut head)?;
    drop(writer);
    Ok((expected_position - 1, states.len() as u64, head))
}
