//! The scanner: reads every segment in order, checks every byte, and decides what damage
//! means. Opening the log (recovery) and `verify` both call [`scan`], so they can never
//! disagree about what is intact.
//!
//! Policy (docs/format.md, "Recovery"):
//! - Segments must be numbered 1, 2, 3 … with no gap; each header must be intact, carry its
//!   file's sequence, start at the position after the previous segment's last record, and
//!   carry the chain digest of that record.
//! - Records must have a valid frame (length, CRC, zero padding), positions +1 each, and a
//!   chain digest that matches SHA-256(previous digest ‖ record).
//! - A bad frame in the **last** segment, after which no record of a *later* fsync batch is
//!   found, is a torn tail: those bytes were never acknowledged. [`ScanMode::Recover`] copies
//!   them to `log/torn/`, truncates the segment to the last good record and syncs;
//!   [`ScanMode::ReadOnly`] only reports them.
//! - Anything else is corruption: the scan stops with [`LogError::Corrupt`] naming the file
//!   and byte offset. Nothing after it is ever silently dropped.

use super::format::*;
use super::storage::Storage;
use super::LogError;
use std::path::{Path, PathBuf};

/// Name of the directory, inside the log directory, where torn tails are kept.
pub const TORN_DIR: &str = "torn";
const TEMP_SUFFIX: &str = ".tmp";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanMode {
    /// Opening for writing: repair a torn tail, remove stray temporary segment files.
    Recover,
    /// `verify`: change nothing, report what recovery would do.
    ReadOnly,
}

/// One intact record, handed to the scan's visitor.
#[derive(Debug, Clone, Copy)]
pub struct ScannedRecord<'a> {
    pub segment: u64,
    /// Byte offset of the record in its segment file.
    pub offset: u64,
    pub meta: RecordMeta,
    pub digest: Digest,
    pub payload: &'a [u8],
}

/// A torn tail found in the last segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub file: PathBuf,
    pub offset: u64,
    pub len: u64,
    /// Why the first bad record was bad.
    pub reason: String,
    /// Where the bytes were kept (Recover mode only).
    pub saved_to: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct SegmentInfo {
    pub sequence: u64,
    pub path: PathBuf,
    pub first_position: u64,
    /// Records in the segment (after any torn-tail repair).
    pub records: u64,
    /// Length of its valid part in bytes.
    pub len: u64,
}

#[derive(Debug, Clone)]
pub struct ScanSummary {
    pub segments: Vec<SegmentInfo>,
    /// Position of the last intact record; 0 for an empty log.
    pub last_position: u64,
    /// Chain digest of the last intact record ([`GENESIS_DIGEST`] for an empty log): what an
    /// auditor writes down to detect a later rewrite of history.
    pub last_digest: Digest,
    pub torn_tail: Option<TornTail>,
    /// Temporary segment files of an interrupted rotation (removed in Recover mode).
    pub stray_temp_files: Vec<PathBuf>,
}

/// The segments of `log_dir`, in order, with gaps refused.
pub fn list_segments(
    storage: &dyn Storage,
    log_dir: &Path,
) -> Result<Vec<(u64, PathBuf)>, LogError> {
    let names = storage
        .list(log_dir)
        .map_err(|e| LogError::io(log_dir, e).during("list"))?;
    let mut seqs: Vec<u64> = names
        .iter()
        .filter_map(|n| parse_segment_file_name(n))
        .collect();
    seqs.sort_unstable();
    for (i, &seq) in seqs.iter().enumerate() {
        let expected = i as u64 + 1;
        if seq != expected {
            let path = log_dir.join(segment_file_name(expected));
            return Err(LogError::Corrupt {
                file: path,
                offset: 0,
                reason: format!(
                    "segment {expected} is missing (found segment {seq} after it); refusing to skip records"
                ),
            });
        }
    }
    Ok(seqs
        .into_iter()
        .map(|s| (s, log_dir.join(segment_file_name(s))))
        .collect())
}

/// Reads and checks the whole log, calling `visit` for every intact record in order. A
/// visitor error stops the scan as corruption at that record (a record whose payload does
/// not decode is damage the CRC could not see).
pub fn scan(
    storage: &dyn Storage,
    log_dir: &Path,
    mode: ScanMode,
    payload_max: usize,
    visit: &mut dyn FnMut(&ScannedRecord<'_>) -> Result<(), String>,
) -> Result<ScanSummary, LogError> {
    let segments = list_segments(storage, log_dir)?;
    let mut summary = ScanSummary {
        segments: Vec::with_capacity(segments.len()),
        last_position: 0,
        last_digest: GENESIS_DIGEST,
        torn_tail: None,
        stray_temp_files: Vec::new(),
    };
    let names = storage
        .list(log_dir)
        .map_err(|e| LogError::io(log_dir, e).during("list"))?;
    for name in names.iter().filter(|n| n.ends_with(TEMP_SUFFIX)) {
        let path = log_dir.join(name);
        if mode == ScanMode::Recover {
            // A temporary segment was never renamed into place, so it never held an
            // acknowledged record.
            storage
                .remove(&path)
                .map_err(|e| LogError::io(&path, e).during("remove"))?;
        }
        summary.stray_temp_files.push(path);
    }
    if mode == ScanMode::Recover && !summary.stray_temp_files.is_empty() {
        storage
            .sync_dir(log_dir)
            .map_err(|e| LogError::io(log_dir, e).during("directory fsync"))?;
    }

    let count = segments.len();
    // One buffer for every segment: a fresh one per segment costs a page fault per 4 KiB.
    let mut bytes = Vec::new();
    for (i, (seq, path)) in segments.into_iter().enumerate() {
        let is_last = i + 1 == count;
        storage
            .read_into(&path, &mut bytes)
            .map_err(|e| LogError::io(&path, e).during("read"))?;
        let corrupt = |offset: usize, reason: String| LogError::Corrupt {
            file: path.clone(),
            offset: offset as u64,
            reason,
        };
        let header = SegmentHeader::decode(&bytes).map_err(|r| corrupt(0, r))?;
        if header.sequence != seq {
            return Err(corrupt(
                HDR_SEQUENCE,
                format!(
                    "header says segment {} but the file is segment {seq}",
                    header.sequence
                ),
            ));
        }
        let expected_first = summary.last_position + 1;
        if header.first_position != expected_first {
            return Err(corrupt(
                HDR_FIRST_POSITION,
                format!(
                    "segment starts at position {} but the previous record was {}",
                    header.first_position, summary.last_position
                ),
            ));
        }
        if header.prev_digest != summary.last_digest {
            return Err(corrupt(
                HDR_PREV_DIGEST,
                "segment header does not carry the chain digest of the record before it".into(),
            ));
        }

        let mut info = SegmentInfo {
            sequence: seq,
            path: path.clone(),
            first_position: header.first_position,
            records: 0,
            len: HEADER_LEN as u64,
        };
        let mut off = HEADER_LEN;
        while off < bytes.len() {
            let expected = summary.last_position + 1;
            let frame = match decode_frame(&bytes[off..], payload_max) {
                Ok(frame) => frame,
                Err(reason) => {
                    if !is_last {
                        return Err(corrupt(off, reason));
                    }
                    if let Some((later_off, later_pos)) =
                        later_commit(&bytes, off, expected, payload_max)
                    {
                        return Err(corrupt(
                            off,
                            format!(
                                "{reason}; record {later_pos} of a later commit follows at offset {later_off}, so this one was acknowledged"
                            ),
                        ));
                    }
                    let tail = &bytes[off..];
                    let mut torn = TornTail {
                        file: path.clone(),
                        offset: off as u64,
                        len: tail.len() as u64,
                        reason,
                        saved_to: None,
                    };
                    if mode == ScanMode::Recover {
                        torn.saved_to =
                            Some(save_and_truncate(storage, log_dir, &path, off, tail)?);
                    }
                    summary.torn_tail = Some(torn);
                    break;
                }
            };
            let record_bytes = &bytes[off..off + frame.total_len];
            if frame.meta.position != expected {
                return Err(corrupt(
                    off + REC_POSITION,
                    format!(
                        "record has position {} where {expected} was expected",
                        frame.meta.position
                    ),
                ));
            }
            let digest = chain_digest(
                &summary.last_digest,
                Frame::fixed_bytes(record_bytes),
                frame.payload,
            );
            if digest != frame.digest {
                return Err(corrupt(
                    off,
                    format!(
                        "record {expected} breaks the digest chain: its bytes were rewritten after it was written"
                    ),
                ));
            }
            visit(&ScannedRecord {
                segment: seq,
                offset: off as u64,
                meta: frame.meta,
                digest,
                payload: frame.payload,
            })
            .map_err(|reason| corrupt(off, format!("record {expected}: {reason}")))?;
            summary.last_position = expected;
            summary.last_digest = digest;
            info.records += 1;
            off += frame.total_len;
            info.len = off as u64;
        }
        summary.segments.push(info);
    }
    Ok(summary)
}

/// Looks past a bad record at `bad_off` for an intact record of a later fsync batch than the
/// one holding position `expected`. Finding one proves the bad record was acknowledged.
fn later_commit(
    bytes: &[u8],
    bad_off: usize,
    expected: u64,
    payload_max: usize,
) -> Option<(usize, u64)> {
    // Cheap plausibility checks before the CRC keep this linear in practice: a record after
    // the bad one has a position above it and below what the remaining bytes could hold.
    let max_pos = expected + (bytes.len() - bad_off) as u64 / REC_PAYLOAD as u64 + 1;
    let mut off = bad_off + 8;
    while off + REC_PAYLOAD <= bytes.len() {
        let pos = u64::from_le_bytes(
            bytes[off + REC_POSITION..off + REC_POSITION + 8]
                .try_into()
                .ok()?,
        );
        if pos > expected && pos <= max_pos {
            if let Ok(frame) = decode_frame(&bytes[off..], payload_max) {
                let batch_first = pos.checked_sub(u64::from(frame.meta.batch_offset));
                if batch_first.is_none_or(|first| first > expected) {
                    return Some((off, pos));
                }
            }
        }
        off += 8;
    }
    None
}

/// Keeps a torn tail's bytes aside, then cuts the segment back to its last good record.
fn save_and_truncate(
    storage: &dyn Storage,
    log_dir: &Path,
    segment: &Path,
    off: usize,
    tail: &[u8],
) -> Result<PathBuf, LogError> {
    let torn_dir = log_dir.join(TORN_DIR);
    storage
        .create_dir_all(&torn_dir)
        .map_err(|e| LogError::io(&torn_dir, e).during("create directory"))?;
    let name = segment
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let saved = torn_dir.join(format!("{name}.{off}.torn"));
    let mut f = storage
        .create(&saved)
        .map_err(|e| LogError::io(&saved, e).during("create"))?;
    f.append(tail)
        .map_err(|e| LogError::io(&saved, e).during("write").at(0))?;
    f.sync_data()
        .map_err(|e| LogError::io(&saved, e).during("fdatasync"))?;
    storage
        .sync_dir(&torn_dir)
        .map_err(|e| LogError::io(&torn_dir, e).during("directory fsync"))?;
    storage
        .truncate(segment, off as u64)
        .map_err(|e| LogError::io(segment, e).during("truncate").at(off as u64))?;
    tracing::warn!(
        file = %segment.display(),
        offset = off,
        bytes = tail.len(),
        saved_to = %saved.display(),
        "truncated a torn tail (never acknowledged) from the last segment"
    );
    Ok(saved)
}
