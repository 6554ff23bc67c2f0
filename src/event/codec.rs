//! The versioned binary codec of on-disk values.
//!
//! One bincode 1.3.3 configuration is used for everything the ledger stores: fixed-width
//! little-endian integers, trailing bytes rejected, and a size limit so a corrupt length
//! prefix cannot make the decoder allocate more than [`RECORD_PAYLOAD_BYTES_MAX`]. The byte
//! layout this produces is written out in docs/format.md; golden fixtures in `data/fixtures/`
//! pin it (tests/golden.rs).

use super::Entry;
use crate::limits::RECORD_PAYLOAD_BYTES_MAX;
use bincode::Options;
use serde::{de::DeserializeOwned, Serialize};
use thiserror::Error;

/// Record kind byte of a log record holding an [`Entry`].
pub const KIND_ENTRY: u8 = 1;
/// Schema version of [`Entry`] as written today. Older versions must keep decoding.
pub const ENTRY_SCHEMA_V1: u16 = 1;
/// The schema version new records are written with.
pub const ENTRY_SCHEMA_CURRENT: u16 = ENTRY_SCHEMA_V1;

/// The log record of an encoded [`Entry`] (from [`encode_entry`]), as written today.
pub fn entry_record(payload: &[u8]) -> crate::log::writer::NewRecord<'_> {
    crate::log::writer::NewRecord {
        kind: KIND_ENTRY,
        schema: ENTRY_SCHEMA_CURRENT,
        payload,
    }
}

#[derive(Debug, Error)]
pub enum CodecError {
    #[error("unknown record kind {kind} / schema version {schema}")]
    UnknownSchema { kind: u8, schema: u16 },
    #[error("payload of {actual} bytes exceeds RECORD_PAYLOAD_BYTES_MAX ({max})")]
    TooLarge { actual: usize, max: usize },
    #[error("payload does not decode: {0}")]
    Decode(String),
}

fn options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .reject_trailing_bytes()
        .with_limit(RECORD_PAYLOAD_BYTES_MAX as u64)
}

/// Encodes any plain on-disk value with the ledger's one bincode configuration.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    options().serialize(value).map_err(|e| match *e {
        bincode::ErrorKind::SizeLimit => CodecError::TooLarge {
            actual: options()
                .with_no_limit()
                .serialized_size(value)
                .unwrap_or(u64::MAX) as usize,
            max: RECORD_PAYLOAD_BYTES_MAX,
        },
        other => CodecError::Decode(other.to_string()),
    })
}

/// Decodes a value written by [`encode`]. Never panics on arbitrary bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    if bytes.len() > RECORD_PAYLOAD_BYTES_MAX {
        return Err(CodecError::TooLarge {
            actual: bytes.len(),
            max: RECORD_PAYLOAD_BYTES_MAX,
        });
    }
    options()
        .deserialize(bytes)
        .map_err(|e| CodecError::Decode(e.to_string()))
}

/// [`encode`] for derived values that are not log records (projection snapshots, stored
/// idempotent answers): the same byte format, without the record size limit. An action's
/// snapshot may legally outgrow [`RECORD_PAYLOAD_BYTES_MAX`] (1024 sub-events with 16 KiB
/// tracebacks each), and a store that refused to hold it would stop the ledger.
pub fn encode_unbounded<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    options()
        .with_no_limit()
        .serialize(value)
        .map_err(|e| CodecError::Decode(e.to_string()))
}

/// [`decode`] of a derived value written by [`encode_unbounded`], with the caller's size
/// limit (so damaged bytes still cannot make the decoder allocate without bound).
pub fn decode_bounded<T: DeserializeOwned>(bytes: &[u8], max: usize) -> Result<T, CodecError> {
    if bytes.len() > max {
        return Err(CodecError::TooLarge {
            actual: bytes.len(),
            max,
        });
    }
    options()
        .with_limit(max as u64)
        .deserialize(bytes)
        .map_err(|e| CodecError::Decode(e.to_string()))
}

/// Encodes an entry as the payload of a record of kind [`KIND_ENTRY`], schema
/// [`ENTRY_SCHEMA_CURRENT`].
pub fn encode_entry(entry: &Entry) -> Result<Vec<u8>, CodecError> {
    encode(entry)
}

/// Decodes the payload of a record, dispatching on its kind and schema version.
pub fn decode_entry(kind: u8, schema: u16, payload: &[u8]) -> Result<Entry, CodecError> {
    match (kind, schema) {
        (KIND_ENTRY, ENTRY_SCHEMA_V1) => decode(payload),
        _ => Err(CodecError::UnknownSchema { kind, schema }),
    }
}
