//! [`LogWriter`]: the only code that appends to the log.
//!
//! It owns the active segment. [`LogWriter::append`] frames a batch of records into one
//! buffer, writes it with one call, calls fdatasync once, and only then reports the records
//! as appended — the caller acknowledges nothing before that returns. Any I/O error poisons
//! the writer for good: a failed fsync cannot be retried safely (the kernel may have dropped
//! the dirty pages and a second fsync would "succeed"), and a failed write may have left a
//! partial frame. Restarting runs recovery against what is really on disk.
//!
//! Segments rotate at the first batch boundary past [`LogConfig::segment_bytes`], so a batch
//! never spans two segments (recovery relies on that). A new segment is written under a
//! temporary name, synced, renamed into place, and the directory is synced.

use super::format::*;
use super::scan::{self, ScanMode, ScanSummary, ScannedRecord};
use super::storage::{LogFile, Storage};
use super::LogError;
use crate::limits::{RECORD_PAYLOAD_BYTES_MAX, SEGMENT_BYTES_DEFAULT};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct LogConfig {
    /// The log directory (`<data-dir>/log`).
    pub dir: PathBuf,
    /// Rotate to a new segment at the first batch boundary past this size.
    pub segment_bytes: u64,
}

impl LogConfig {
    pub fn new(dir: impl Into<PathBuf>) -> LogConfig {
        LogConfig {
            dir: dir.into(),
            segment_bytes: SEGMENT_BYTES_DEFAULT,
        }
    }
}

/// Where a committed record landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub position: u64,
    pub digest: Digest,
    pub segment: u64,
    pub offset: u64,
}

/// One record to append: kind, schema version, payload.
#[derive(Clone, Copy, Debug)]
pub struct NewRecord<'a> {
    pub kind: u8,
    pub schema: u16,
    pub payload: &'a [u8],
}

pub struct LogWriter {
    storage: Arc<dyn Storage>,
    config: LogConfig,
    /// The active segment, open for appending; `None` only while poisoned mid-rotation.
    file: Option<Box<dyn LogFile>>,
    sequence: u64,
    /// Bytes in the active segment (all of them synced after every `append`).
    segment_len: u64,
    next_position: u64,
    last_digest: Digest,
    /// The first I/O error; from then on every append fails with it as the cause.
    poisoned: Option<LogError>,
    /// Reused frame buffer, so appends do not allocate once warm.
    buf: Vec<u8>,
}

impl LogWriter {
    /// Recovers the log in `config.dir` (creating it if needed) and opens it for appending.
    /// `visit` sees every intact record, in order, as recovery checks it.
    pub fn open(
        storage: Arc<dyn Storage>,
        config: LogConfig,
        visit: &mut dyn FnMut(&ScannedRecord<'_>) -> Result<(), String>,
    ) -> Result<(LogWriter, ScanSummary), LogError> {
        storage
            .create_dir_all(&config.dir)
            .map_err(|e| LogError::io(&config.dir, e).during("create directory"))?;
        let summary = scan::scan(
            &*storage,
            &config.dir,
            ScanMode::Recover,
            RECORD_PAYLOAD_BYTES_MAX,
            visit,
        )?;
        let mut writer = LogWriter {
            storage,
            config,
            file: None,
            sequence: 0,
            segment_len: 0,
            next_position: summary.last_position + 1,
            last_digest: summary.last_digest,
            poisoned: None,
            buf: Vec::new(),
        };
        match summary.segments.last() {
            Some(last) => {
                let file = writer
                    .storage
                    .open_append(&last.path)
                    .map_err(|e| LogError::io(&last.path, e).during("open"))?;
                writer.file = Some(file);
                writer.sequence = last.sequence;
                writer.segment_len = last.len;
            }
            None => writer.start_segment(1)?,
        }
        Ok((writer, summary))
    }

    /// Position the next appended record will get.
    pub fn next_position(&self) -> u64 {
        self.next_position
    }

    /// Chain digest of the last record.
    pub fn last_digest(&self) -> Digest {
        self.last_digest
    }

    pub fn dir(&self) -> &Path {
        &self.config.dir
    }

    /// Poisons the writer because what it wrote diverged from the log of record at
    /// `position` (a cluster replica's check after an append): nothing more is appended
    /// until a restart. A writer already poisoned keeps its first cause.
    pub fn poison_diverged(&mut self, position: u64) {
        self.poisoned.get_or_insert(LogError::Diverged { position });
    }

    /// The failure that poisoned the writer, if one did.
    pub fn poisoned(&self) -> Option<&LogError> {
        self.poisoned.as_ref()
    }

    /// Appends `records` as one fsync batch: one write, one fdatasync. Returns only when they
    /// are durable. On error nothing in the batch may be acknowledged and the writer is
    /// poisoned.
    pub fn append(&mut self, records: &[NewRecord<'_>]) -> Result<Vec<Appended>, LogError> {
        self.append_batches(&[records])
    }

    /// Appends several batches (each with its own batch offsets 0, 1, 2, …, as if appended
    /// one by one) with one write and one fdatasync, except where a segment rotates between
    /// two of them. A replica copying committed batches uses it: one fdatasync per read, not
    /// per batch. Returns only when all are durable; on error none may be acknowledged.
    pub fn append_batches(
        &mut self,
        batches: &[&[NewRecord<'_>]],
    ) -> Result<Vec<Appended>, LogError> {
        if let Some(cause) = &self.poisoned {
            return Err(LogError::Poisoned(Box::new(cause.clone())));
        }
        for r in batches.iter().flat_map(|b| b.iter()) {
            if r.payload.len() > RECORD_PAYLOAD_BYTES_MAX {
                return Err(LogError::RecordTooLarge {
                    actual: r.payload.len(),
                    max: RECORD_PAYLOAD_BYTES_MAX,
                });
            }
        }
        let mut out = Vec::with_capacity(batches.iter().map(|b| b.len()).sum());
        self.buf.clear();
        // What the buffer holds, not yet written: records and their last digest.
        let (mut records, mut digest) = (0u64, self.last_digest);
        for batch in batches.iter().filter(|b| !b.is_empty()) {
            let full = self.segment_len + self.buf.len() as u64;
            if full >= self.config.segment_bytes && full > HEADER_LEN as u64 {
                self.flush(records, digest)?;
                records = 0;
                self.start_segment(self.sequence + 1)?;
            }
            for (i, r) in batch.iter().enumerate() {
                let offset = self.segment_len + self.buf.len() as u64;
                let position = self.next_position + records;
                let meta = RecordMeta {
                    position,
                    batch_offset: i as u32,
                    kind: r.kind,
                    schema: r.schema,
                };
                digest = encode_record(&mut self.buf, meta, &digest, r.payload);
                out.push(Appended {
                    position,
                    digest,
                    segment: self.sequence,
                    offset,
                });
                records += 1;
            }
        }
        self.flush(records, digest)?;
        Ok(out)
    }

    /// Writes the buffer (`records` records ending with `digest`) with one write and one
    /// fdatasync, then counts them as appended.
    fn flush(&mut self, records: u64, digest: Digest) -> Result<(), LogError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let file = self
            .file
            .as_mut()
            .expect("active segment while not poisoned");
        let path = self.config.dir.join(segment_file_name(self.sequence));
        if let Err(e) = file.append(&self.buf) {
            return Err(self.poison(&path, "write", Some(self.segment_len), e));
        }
        if let Err(e) = file.sync_data() {
            return Err(self.poison(&path, "fdatasync", None, e));
        }
        self.segment_len += self.buf.len() as u64;
        self.next_position += records;
        self.last_digest = digest;
        self.buf.clear();
        Ok(())
    }

    fn poison(
        &mut self,
        path: &Path,
        op: &'static str,
        offset: Option<u64>,
        e: std::io::Error,
    ) -> LogError {
        let mut err = LogError::io(path, e).during(op);
        if let Some(offset) = offset {
            err = err.at(offset);
        }
        tracing::error!(error = %err, "log writer poisoned; refusing all further appends");
        self.poisoned = Some(err.clone());
        self.file = None;
        err
    }

    /// Creates segment `sequence` starting at the next position: temp name, header, sync,
    /// rename, directory sync.
    fn start_segment(&mut self, sequence: u64) -> Result<(), LogError> {
        let dir = self.config.dir.clone();
        let name = segment_file_name(sequence);
        let path = dir.join(&name);
        let tmp = dir.join(format!("{name}.tmp"));
        let header = SegmentHeader {
            sequence,
            first_position: self.next_position,
            prev_digest: self.last_digest,
        }
        .encode();
        let result = (|| {
            let mut f = self.storage.create(&tmp).map_err(|e| ("create", e))?;
            f.append(&header).map_err(|e| ("write", e))?;
            f.sync_data().map_err(|e| ("fdatasync", e))?;
            drop(f);
            self.storage
                .rename(&tmp, &path)
                .map_err(|e| ("rename", e))?;
            self.storage
                .sync_dir(&dir)
                .map_err(|e| ("directory fsync", e))?;
            self.storage.open_append(&path).map_err(|e| ("open", e))
        })();
        match result {
            Ok(file) => {
                self.file = Some(file);
                self.sequence = sequence;
                self.segment_len = HEADER_LEN as u64;
                tracing::debug!(segment = %path.display(), "started a new segment");
                Ok(())
            }
            Err((op, e)) => Err(self.poison(&path, op, None, e)),
        }
    }
}
