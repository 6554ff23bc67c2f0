//! Random and sequential access to committed records while the writer keeps appending.
//!
//! Readers only look at records up to a position the caller knows is committed (the writer
//! may be in the middle of writing the next batch), and they trust what recovery already
//! checked at open: frames are re-checked (CRC) but the chain is not re-hashed.

use super::format::*;
use super::scan::list_segments;
use super::storage::Storage;
use super::LogError;
use crate::limits::RECORD_PAYLOAD_BYTES_MAX;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// A committed record, copied out of its segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedRecord {
    pub position: u64,
    pub segment: u64,
    pub offset: u64,
    pub kind: u8,
    pub schema: u16,
    pub digest: Digest,
    pub payload: Vec<u8>,
}

/// Where a sequential read stopped: just after the record at `position`, which ends at
/// byte `offset` of segment `segment` (see [`LogReader::for_each_from`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadMark {
    pub position: u64,
    pub segment: u64,
    pub offset: u64,
}

/// Bytes read at a time when walking a segment (a record larger than this is read whole).
pub const READ_CHUNK_BYTES: usize = 1024 * 1024;
/// A reader remembers where the record at every multiple of this position ends, as it
/// walks past it (see [`LogReader::for_each_from`]).
pub const MARK_EVERY_RECORDS: u64 = 1024;
/// Most positions a reader remembers (32 bytes each); past it the oldest are forgotten.
pub const MARKS_MAX: usize = 65_536;

struct Walk<'v> {
    after: u64,
    upto: u64,
    mark: Option<ReadMark>,
    visit: &'v mut dyn FnMut(OwnedRecord) -> bool,
}

/// Clones share their remembered read marks.
#[derive(Clone)]
pub struct LogReader {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    chunk_bytes: usize,
    mark_every: u64,
    /// Sparse position index: position → where its record ends. Only ever filled from
    /// records read and checked, and the log only grows while a process has it open.
    marks: Arc<Mutex<BTreeMap<u64, ReadMark>>>,
}

impl LogReader {
    pub fn new(storage: Arc<dyn Storage>, dir: PathBuf) -> LogReader {
        LogReader {
            storage,
            dir,
            chunk_bytes: READ_CHUNK_BYTES,
            mark_every: MARK_EVERY_RECORDS,
            marks: Arc::default(),
        }
    }

    /// The same reader, remembering a mark every `records` positions (tests use small ones).
    #[doc(hidden)]
    pub fn with_mark_every(mut self, records: u64) -> LogReader {
        self.mark_every = records.max(1);
        self
    }

    fn remember(&self, mark: ReadMark) {
        let mut marks = self.marks.lock().unwrap_or_else(|e| e.into_inner());
        marks.insert(mark.position, mark);
        if marks.len() > MARKS_MAX {
            marks.pop_first();
        }
    }

    /// The remembered mark closest before `after + 1`.
    fn remembered(&self, after: u64) -> Option<ReadMark> {
        let marks = self.marks.lock().unwrap_or_else(|e| e.into_inner());
        marks.range(..=after).next_back().map(|(_, m)| *m)
    }

    /// The same reader, walking segments `bytes` at a time (tests use tiny chunks).
    #[doc(hidden)]
    pub fn with_chunk_bytes(mut self, bytes: usize) -> LogReader {
        self.chunk_bytes = bytes.max(1);
        self
    }

    /// Reads the record at `offset` of segment `segment` (as reported by the writer).
    pub fn read_at(&self, segment: u64, offset: u64) -> Result<OwnedRecord, LogError> {
        let path = self.dir.join(segment_file_name(segment));
        let head = self
            .storage
            .read_at(&path, offset, REC_PAYLOAD)
            .map_err(|e| LogError::io(&path, e).during("read").at(offset))?;
        let corrupt = |reason: String| LogError::Corrupt {
            file: path.clone(),
            offset,
            reason,
        };
        if head.len() < REC_PAYLOAD {
            return Err(corrupt(
                "record header runs past the end of the segment".into(),
            ));
        }
        let body_len = u32::from_le_bytes(head[0..4].try_into().expect("4 bytes")) as usize;
        let payload_len = body_len.saturating_sub(REC_BODY_FIXED);
        let total = record_len(payload_len.min(RECORD_PAYLOAD_BYTES_MAX));
        let bytes = self
            .storage
            .read_at(&path, offset, total)
            .map_err(|e| LogError::io(&path, e).during("read").at(offset))?;
        let frame = decode_frame(&bytes, RECORD_PAYLOAD_BYTES_MAX).map_err(corrupt)?;
        Ok(OwnedRecord {
            position: frame.meta.position,
            segment,
            offset,
            kind: frame.meta.kind,
            schema: frame.meta.schema,
            digest: frame.digest,
            payload: frame.payload.to_vec(),
        })
    }

    /// Calls `visit` for every record with `after < position <= upto`, in order, until it
    /// returns `false`.
    pub fn for_each(
        &self,
        after: u64,
        upto: u64,
        visit: &mut dyn FnMut(OwnedRecord) -> bool,
    ) -> Result<(), LogError> {
        self.for_each_from(None, after, upto, visit).map(|_| ())
    }

    /// Like [`LogReader::for_each`], and returns where the read stopped so a follower (a
    /// watch stream) can go on from there. With `mark` — returned by an earlier call, and
    /// whose `position` is `after` — reading starts at the mark's byte instead of the start
    /// of its segment: O(new records), not O(segment).
    ///
    /// Without a usable mark, reading starts from the closest position the reader remembers
    /// before `after` (every [`MARK_EVERY_RECORDS`]th record it has walked past): at most
    /// that many records are read and skipped. When it remembers none (nothing read there
    /// yet in this process), the segment holding `after + 1` is found from the segment
    /// headers (one small read per segment) and read from its start in chunks of
    /// [`READ_CHUNK_BYTES`] up to `after`: O(bytes before `after` in that segment), at most
    /// one segment. Reading stops at `upto` without touching bytes past it, so records the
    /// writer is still writing are never looked at.
    pub fn for_each_from(
        &self,
        mark: Option<ReadMark>,
        after: u64,
        upto: u64,
        visit: &mut dyn FnMut(OwnedRecord) -> bool,
    ) -> Result<Option<ReadMark>, LogError> {
        let mark = mark.filter(|m| m.position == after);
        if after >= upto {
            return Ok(mark);
        }
        let segments = list_segments(&*self.storage, &self.dir)?;
        let mut state = Walk {
            after,
            upto,
            mark,
            visit,
        };
        let resume = mark.or_else(|| self.remembered(after)).and_then(|m| {
            let i = segments.iter().position(|(seq, _)| *seq == m.segment)?;
            Some((i, m.offset))
        });
        let (start, from) = match resume {
            Some(at) => at,
            None => (self.segment_holding(&segments, after)?, HEADER_LEN as u64),
        };
        for (i, (seq, path)) in segments.iter().enumerate().skip(start) {
            let from = if i == start { from } else { HEADER_LEN as u64 };
            if self.walk_segment(*seq, path, from, &mut state)? {
                break;
            }
        }
        Ok(state.mark)
    }

    /// Index of the last segment whose first position is <= `after + 1`.
    fn segment_holding(&self, segments: &[(u64, PathBuf)], after: u64) -> Result<usize, LogError> {
        let mut start = 0;
        for (i, (_, path)) in segments.iter().enumerate() {
            let head = self
                .storage
                .read_at(path, 0, HEADER_LEN)
                .map_err(|e| LogError::io(path, e).during("read").at(0))?;
            let header = SegmentHeader::decode(&head).map_err(|reason| LogError::Corrupt {
                file: path.clone(),
                offset: 0,
                reason,
            })?;
            if header.first_position <= after + 1 {
                start = i;
            } else {
                break;
            }
        }
        Ok(start)
    }

    /// Visits the records of one segment from byte `from`, reading it in chunks. Returns
    /// true when the walk is over (visitor said stop, or `upto` reached).
    fn walk_segment(
        &self,
        seq: u64,
        path: &std::path::Path,
        from: u64,
        w: &mut Walk<'_>,
    ) -> Result<bool, LogError> {
        let len = self
            .storage
            .file_len(path)
            .map_err(|e| LogError::io(path, e).during("stat"))?;
        let mut off = from;
        let mut want = self.chunk_bytes;
        while off < len {
            let buf = self
                .storage
                .read_at(path, off, want.min((len - off) as usize))
                .map_err(|e| LogError::io(path, e).during("read").at(off))?;
            if buf.is_empty() {
                break;
            }
            let mut i = 0usize;
            while i < buf.len() {
                let rest = &buf[i..];
                // Bytes this frame needs, as far as its header tells.
                let need = if rest.len() < REC_PAYLOAD {
                    REC_PAYLOAD
                } else {
                    let body_len =
                        u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
                    record_len(
                        body_len
                            .saturating_sub(REC_BODY_FIXED)
                            .min(RECORD_PAYLOAD_BYTES_MAX),
                    )
                };
                if need > rest.len() && off + (i + need) as u64 <= len {
                    // The frame goes on past this chunk: read again from its start.
                    want = want.max(need);
                    break;
                }
                let at = off + i as u64;
                let frame = decode_frame(rest, RECORD_PAYLOAD_BYTES_MAX).map_err(|reason| {
                    LogError::Corrupt {
                        file: path.to_path_buf(),
                        offset: at,
                        reason,
                    }
                })?;
                let position = frame.meta.position;
                if position > w.upto {
                    return Ok(true);
                }
                let end = at + frame.total_len as u64;
                let here = ReadMark {
                    position,
                    segment: seq,
                    offset: end,
                };
                if position >= w.after {
                    w.mark = Some(here);
                }
                if position % self.mark_every == 0 {
                    self.remember(here);
                }
                if position > w.after {
                    let record = OwnedRecord {
                        position,
                        segment: seq,
                        offset: at,
                        kind: frame.meta.kind,
                        schema: frame.meta.schema,
                        digest: frame.digest,
                        payload: frame.payload.to_vec(),
                    };
                    if !(w.visit)(record) {
                        return Ok(true);
                    }
                }
                if position >= w.upto {
                    return Ok(true);
                }
                i += frame.total_len;
            }
            off += i as u64;
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::writer::{LogConfig, LogWriter, NewRecord};
    use crate::log::FsStorage;

    /// 200 records of 1..700 bytes in batches of 3, over many 2 KiB segments.
    fn write_log(dir: &std::path::Path) -> Vec<(u64, u64, u64, Vec<u8>)> {
        let mut config = LogConfig::new(dir);
        config.segment_bytes = 2048;
        let (mut w, _) = LogWriter::open(Arc::new(FsStorage), config, &mut |_| Ok(())).unwrap();
        let payloads: Vec<Vec<u8>> = (0..200u32)
            .map(|i| vec![i as u8; (i as usize * 37) % 700 + 1])
            .collect();
        let mut out = Vec::new();
        for chunk in payloads.chunks(3) {
            let batch: Vec<NewRecord<'_>> = chunk
                .iter()
                .map(|p| NewRecord {
                    kind: 1,
                    schema: 1,
                    payload: p,
                })
                .collect();
            for (a, p) in w.append(&batch).unwrap().into_iter().zip(chunk) {
                out.push((a.position, a.segment, a.offset, p.clone()));
            }
        }
        out
    }

    #[test]
    fn chunked_reads_and_marks_see_every_record_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_log(dir.path());
        assert!(written.last().unwrap().1 > 10, "spans many segments");
        // Chunks smaller than any record: every frame needs a re-read.
        for chunk in [16, 100, READ_CHUNK_BYTES] {
            let r = LogReader::new(Arc::new(FsStorage), dir.path().to_path_buf())
                .with_chunk_bytes(chunk);
            let mut all = Vec::new();
            r.for_each(0, 200, &mut |rec| {
                all.push((rec.position, rec.segment, rec.offset, rec.payload));
                true
            })
            .unwrap();
            assert_eq!(all, written, "chunk {chunk}");
            for (after, upto) in [(0, 1), (5, 9), (37, 120), (199, 200), (150, 150)] {
                let mut got = Vec::new();
                r.for_each(after, upto, &mut |rec| {
                    got.push(rec.position);
                    true
                })
                .unwrap();
                assert_eq!(
                    got,
                    (after + 1..=upto).collect::<Vec<_>>(),
                    "{after}..{upto}"
                );
            }
            // A follower: the committed position grows, each read takes at most 7 records
            // and starts from the previous mark.
            let (mut after, mut mark, mut seen) = (0u64, None, Vec::new());
            while after < 200 {
                let upto = (after + 10).min(200);
                let mut n = 0;
                let m = r
                    .for_each_from(mark, after, upto, &mut |rec| {
                        seen.push(rec.position);
                        n += 1;
                        n < 7
                    })
                    .unwrap()
                    .expect("a mark after reading");
                after = *seen.last().unwrap();
                assert_eq!(m.position, after);
                let (_, seg, off, p) = &written[after as usize - 1];
                assert_eq!(
                    (m.segment, m.offset),
                    (*seg, off + crate::log::format::record_len(p.len()) as u64)
                );
                mark = Some(m);
            }
            assert_eq!(seen, (1..=200).collect::<Vec<_>>());
            // A mark for another position is not used.
            let stale = mark;
            let mut got = Vec::new();
            r.for_each_from(stale, 100, 103, &mut |rec| {
                got.push(rec.position);
                true
            })
            .unwrap();
            assert_eq!(got, [101, 102, 103]);
        }
    }

    #[test]
    fn remembered_marks_bound_a_read_without_a_mark() {
        // Goal: once a reader has walked past a stretch of the log, a read starting there
        // without a mark of its own (a fresh watch, a resume by Last-Event-ID) starts from the
        // closest remembered position instead of the start of the segment — and clones share
        // what was remembered.
        let sim = crate::log::SimStorage::new();
        let dir = std::path::Path::new("/sim/log");
        let (mut w, _) =
            LogWriter::open(Arc::new(sim.clone()), LogConfig::new(dir), &mut |_| Ok(())).unwrap();
        let payload = [7u8; 100];
        for _ in 0..40 {
            let batch: Vec<NewRecord<'_>> = (0..50)
                .map(|_| NewRecord {
                    kind: 1,
                    schema: 1,
                    payload: &payload,
                })
                .collect();
            w.append(&batch).unwrap();
        }
        let r = LogReader::new(Arc::new(sim.clone()), dir.to_path_buf())
            .with_chunk_bytes(4096)
            .with_mark_every(100);
        let read = |r: &LogReader, after: u64| -> (Vec<u64>, u64) {
            let before = sim.bytes_read();
            let mut got = Vec::new();
            r.for_each(after, after + 5, &mut |rec| {
                got.push(rec.position);
                true
            })
            .unwrap();
            (got, sim.bytes_read() - before)
        };
        let (got, cold) = read(&r, 1900);
        assert_eq!(got, (1901..=1905).collect::<Vec<_>>());
        let (got, warm) = read(&r, 1850);
        assert_eq!(got, (1851..=1855).collect::<Vec<_>>());
        let (got, shared) = read(&r.clone(), 1250);
        assert_eq!(got, (1251..=1255).collect::<Vec<_>>());
        assert!(
            cold > 250_000,
            "the first read walked the segment: {cold} bytes"
        );
        assert!(warm < 30_000, "from the mark at 1800: {warm} bytes");
        assert!(
            shared < 30_000,
            "a clone uses the same marks: {shared} bytes"
        );
    }
}
