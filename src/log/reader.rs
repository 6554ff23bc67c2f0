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
use std::path::PathBuf;
use std::sync::Arc;

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

#[derive(Clone)]
pub struct LogReader {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
}

impl LogReader {
    pub fn new(storage: Arc<dyn Storage>, dir: PathBuf) -> LogReader {
        LogReader { storage, dir }
    }

    /// Reads the record at `offset` of segment `segment` (as reported by the writer).
    pub fn read_at(&self, segment: u64, offset: u64) -> Result<OwnedRecord, LogError> {
        let path = self.dir.join(segment_file_name(segment));
        let head = self
            .storage
            .read_at(&path, offset, REC_PAYLOAD)
            .map_err(|e| LogError::io(&path, e))?;
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
            .map_err(|e| LogError::io(&path, e))?;
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
        if after >= upto {
            return Ok(());
        }
        let segments = list_segments(&*self.storage, &self.dir)?;
        // Find the last segment whose first position is <= after + 1.
        let mut start = 0;
        for (i, (_, path)) in segments.iter().enumerate() {
            let head = self
                .storage
                .read_at(path, 0, HEADER_LEN)
                .map_err(|e| LogError::io(path, e))?;
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
        for (seq, path) in &segments[start..] {
            let bytes = self.storage.read(path).map_err(|e| LogError::io(path, e))?;
            let mut off = HEADER_LEN;
            while off < bytes.len() {
                let frame =
                    decode_frame(&bytes[off..], RECORD_PAYLOAD_BYTES_MAX).map_err(|reason| {
                        LogError::Corrupt {
                            file: path.clone(),
                            offset: off as u64,
                            reason,
                        }
                    })?;
                let position = frame.meta.position;
                if position > upto {
                    return Ok(());
                }
                if position > after {
                    let record = OwnedRecord {
                        position,
                        segment: *seq,
                        offset: off as u64,
                        kind: frame.meta.kind,
                        schema: frame.meta.schema,
                        digest: frame.digest,
                        payload: frame.payload.to_vec(),
                    };
                    if !visit(record) {
                        return Ok(());
                    }
                }
                off += frame.total_len;
            }
        }
        Ok(())
    }
}
