//! The on-disk layout of segments and records, byte by byte. docs/format.md draws the same
//! thing for people; keep them in step.
//!
//! ```text
//! segment file  log/SSSSSSSSSSSSSSSSSSSS.seg   (S = segment sequence, 20 decimal digits)
//! ┌──────────────────────────── header, 72 bytes ────────────────────────────┐
//! │ 0  magic            8  b"ACTLEDG\x00"                                      │
//! │ 8  format_version   u32 LE (1)                                             │
//! │ 12 reserved         u32 (0)                                                │
//! │ 16 sequence         u64 LE (1 for the first segment, +1 each)              │
//! │ 24 first_position   u64 LE (position of the first record it may hold)      │
//! │ 32 prev_digest      32 bytes (chain digest of the record before it)        │
//! │ 64 header_crc       u32 LE, CRC-32/IEEE of bytes 0..64                     │
//! │ 68 reserved         u32 (0)                                                │
//! └───────────────────────────────────────────────────────────────────────────┘
//! then records, each starting at an 8-byte aligned offset:
//! ┌──────────────────────────── record ──────────────────────────────────────┐
//! │ 0  body_len         u32 LE: bytes from offset 8 to the end of the payload  │
//! │ 4  crc              u32 LE: CRC-32/IEEE of those body_len bytes            │
//! │ 8  position         u64 LE (previous + 1)                                  │
//! │ 16 batch_offset     u32 LE (position − first position of its fsync batch)  │
//! │ 20 kind             u8  (1 = entry)                                        │
//! │ 21 reserved         u8  (0)                                                │
//! │ 22 schema_version   u16 LE                                                 │
//! │ 24 digest           32 bytes: SHA-256(prev digest ‖ bytes 8..24 ‖ payload) │
//! │ 56 payload          body_len − 48 bytes                                    │
//! │ .. padding          zero bytes up to the next multiple of 8                │
//! └───────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! `batch_offset` is what lets recovery tell a torn tail from corruption: everything after
//! the last fdatasync belongs to one batch, so a damaged record followed by a valid record of
//! a *later* batch was acknowledged and is corruption, while one followed only by records of
//! its own batch is a torn write.

use sha2::{Digest as _, Sha256};

pub const SEGMENT_MAGIC: [u8; 8] = *b"ACTLEDG\x00";
pub const FORMAT_VERSION: u32 = 1;

pub const HDR_MAGIC: usize = 0;
pub const HDR_VERSION: usize = HDR_MAGIC + 8;
pub const HDR_RESERVED0: usize = HDR_VERSION + 4;
pub const HDR_SEQUENCE: usize = HDR_RESERVED0 + 4;
pub const HDR_FIRST_POSITION: usize = HDR_SEQUENCE + 8;
pub const HDR_PREV_DIGEST: usize = HDR_FIRST_POSITION + 8;
pub const HDR_CRC: usize = HDR_PREV_DIGEST + 32;
pub const HDR_RESERVED1: usize = HDR_CRC + 4;
pub const HEADER_LEN: usize = HDR_RESERVED1 + 4;
const _: () = assert!(HEADER_LEN == 72 && HEADER_LEN % 8 == 0);

pub const REC_BODY_LEN: usize = 0;
pub const REC_CRC: usize = REC_BODY_LEN + 4;
pub const REC_POSITION: usize = REC_CRC + 4;
pub const REC_BATCH_OFFSET: usize = REC_POSITION + 8;
pub const REC_KIND: usize = REC_BATCH_OFFSET + 4;
pub const REC_RESERVED: usize = REC_KIND + 1;
pub const REC_SCHEMA: usize = REC_RESERVED + 1;
pub const REC_DIGEST: usize = REC_SCHEMA + 2;
pub const REC_PAYLOAD: usize = REC_DIGEST + 32;
const _: () = assert!(REC_PAYLOAD == 56);
/// Bytes of a record covered by `body_len` and the CRC, not counting the payload.
pub const REC_BODY_FIXED: usize = REC_PAYLOAD - REC_POSITION;

/// A chain digest (SHA-256).
pub type Digest = [u8; 32];
/// The digest that precedes position 1.
pub const GENESIS_DIGEST: Digest = [0; 32];

pub fn align8(n: usize) -> usize {
    (n + 7) & !7
}

/// Total on-disk size of a record with a payload of `payload_len` bytes.
pub fn record_len(payload_len: usize) -> usize {
    align8(REC_PAYLOAD + payload_len)
}

pub fn segment_file_name(sequence: u64) -> String {
    format!("{sequence:020}.seg")
}

/// Parses `SSSSSSSSSSSSSSSSSSSS.seg`; anything else is not a segment.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// A decoded segment header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub sequence: u64,
    pub first_position: u64,
    pub prev_digest: Digest,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[HDR_MAGIC..HDR_MAGIC + 8].copy_from_slice(&SEGMENT_MAGIC);
        b[HDR_VERSION..HDR_VERSION + 4].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[HDR_SEQUENCE..HDR_SEQUENCE + 8].copy_from_slice(&self.sequence.to_le_bytes());
        b[HDR_FIRST_POSITION..HDR_FIRST_POSITION + 8]
            .copy_from_slice(&self.first_position.to_le_bytes());
        b[HDR_PREV_DIGEST..HDR_PREV_DIGEST + 32].copy_from_slice(&self.prev_digest);
        let crc = crc32fast::hash(&b[..HDR_CRC]);
        b[HDR_CRC..HDR_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a header; the error says what is wrong with it.
    pub fn decode(b: &[u8]) -> Result<SegmentHeader, String> {
        if b.len() < HEADER_LEN {
            return Err(format!(
                "segment is {} bytes, shorter than its {HEADER_LEN}-byte header",
                b.len()
            ));
        }
        if b[HDR_MAGIC..HDR_MAGIC + 8] != SEGMENT_MAGIC {
            return Err("bad segment magic (not an action-ledger segment)".into());
        }
        let crc = u32_at(b, HDR_CRC);
        if crc != crc32fast::hash(&b[..HDR_CRC]) {
            return Err("segment header checksum mismatch".into());
        }
        let version = u32_at(b, HDR_VERSION);
        if version != FORMAT_VERSION {
            return Err(format!(
                "segment format version {version} is not supported (this build reads {FORMAT_VERSION})"
            ));
        }
        if u32_at(b, HDR_RESERVED0) != 0 || u32_at(b, HDR_RESERVED1) != 0 {
            return Err("reserved header bytes are not zero".into());
        }
        Ok(SegmentHeader {
            sequence: u64_at(b, HDR_SEQUENCE),
            first_position: u64_at(b, HDR_FIRST_POSITION),
            prev_digest: b[HDR_PREV_DIGEST..HDR_PREV_DIGEST + 32]
                .try_into()
                .expect("32 bytes"),
        })
    }
}

/// The fields of a record other than its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordMeta {
    pub position: u64,
    pub batch_offset: u32,
    pub kind: u8,
    pub schema: u16,
}

/// The chain digest of a record: SHA-256(prev ‖ position..schema bytes ‖ payload).
pub fn chain_digest(prev: &Digest, fixed: &[u8], payload: &[u8]) -> Digest {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(fixed);
    h.update(payload);
    h.finalize().into()
}

/// Bytes `position..schema` of a record (offsets 8..24): the fields the chain digest covers
/// besides the previous digest and the payload.
pub const REC_FIXED_LEN: usize = REC_DIGEST - REC_POSITION;

/// The fixed fields of a record, as they sit at offsets 8..24 of its frame.
pub fn encode_fixed(meta: RecordMeta) -> [u8; REC_FIXED_LEN] {
    let mut f = [0u8; REC_FIXED_LEN];
    let at = |off: usize| off - REC_POSITION;
    f[at(REC_POSITION)..at(REC_POSITION) + 8].copy_from_slice(&meta.position.to_le_bytes());
    f[at(REC_BATCH_OFFSET)..at(REC_BATCH_OFFSET) + 4]
        .copy_from_slice(&meta.batch_offset.to_le_bytes());
    f[at(REC_KIND)] = meta.kind;
    f[at(REC_SCHEMA)..at(REC_SCHEMA) + 2].copy_from_slice(&meta.schema.to_le_bytes());
    f
}

/// The chain digest a record with `meta` and `payload` gets after `prev`, without framing it:
/// the same value [`encode_record`] writes. Cluster mode stores it beside each record in
/// PostgreSQL, so every node's replica carries the embedded log's exact digests.
pub fn record_digest(prev: &Digest, meta: RecordMeta, payload: &[u8]) -> Digest {
    chain_digest(prev, &encode_fixed(meta), payload)
}

/// Appends one framed record to `out` and returns its digest.
pub fn encode_record(out: &mut Vec<u8>, meta: RecordMeta, prev: &Digest, payload: &[u8]) -> Digest {
    let start = out.len();
    let total = record_len(payload.len());
    out.resize(start + total, 0);
    let b = &mut out[start..start + total];
    let body_len = (REC_BODY_FIXED + payload.len()) as u32;
    b[REC_BODY_LEN..REC_BODY_LEN + 4].copy_from_slice(&body_len.to_le_bytes());
    b[REC_POSITION..REC_DIGEST].copy_from_slice(&encode_fixed(meta));
    b[REC_PAYLOAD..REC_PAYLOAD + payload.len()].copy_from_slice(payload);
    let digest = chain_digest(prev, &b[REC_POSITION..REC_DIGEST], payload);
    b[REC_DIGEST..REC_DIGEST + 32].copy_from_slice(&digest);
    let crc = crc32fast::hash(&b[REC_POSITION..REC_PAYLOAD + payload.len()]);
    b[REC_CRC..REC_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    digest
}

/// A record frame that passed its own checks (length, CRC, padding). Whether it fits the
/// chain (position, digest) is the scanner's business.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    pub meta: RecordMeta,
    pub digest: Digest,
    pub payload: &'a [u8],
    /// Bytes the record occupies, padding included.
    pub total_len: usize,
}

impl Frame<'_> {
    pub fn fixed_bytes(bytes: &[u8]) -> &[u8] {
        &bytes[REC_POSITION..REC_DIGEST]
    }
}

/// Decodes the record frame starting at `bytes[0]`. The error says why it is not a valid
/// frame. Never panics on arbitrary input.
pub fn decode_frame(bytes: &[u8], payload_max: usize) -> Result<Frame<'_>, String> {
    if bytes.len() < REC_PAYLOAD {
        return Err(format!(
            "{} bytes left, fewer than a record header ({REC_PAYLOAD})",
            bytes.len()
        ));
    }
    let body_len = u32_at(bytes, REC_BODY_LEN) as usize;
    if body_len < REC_BODY_FIXED {
        return Err(format!(
            "record length {body_len} is below the minimum {REC_BODY_FIXED}"
        ));
    }
    let payload_len = body_len - REC_BODY_FIXED;
    if payload_len > payload_max {
        return Err(format!(
            "record payload length {payload_len} exceeds RECORD_PAYLOAD_BYTES_MAX ({payload_max})"
        ));
    }
    let total = record_len(payload_len);
    if total > bytes.len() {
        return Err(format!(
            "record of {total} bytes runs past the end of the segment ({} bytes left)",
            bytes.len()
        ));
    }
    let crc = u32_at(bytes, REC_CRC);
    let actual = crc32fast::hash(&bytes[REC_POSITION..REC_PAYLOAD + payload_len]);
    if crc != actual {
        return Err(format!(
            "record checksum mismatch (stored {crc:08x}, computed {actual:08x})"
        ));
    }
    if bytes[REC_RESERVED] != 0 {
        return Err("reserved record byte is not zero".into());
    }
    if bytes[REC_PAYLOAD + payload_len..total]
        .iter()
        .any(|&b| b != 0)
    {
        return Err("record padding is not zero".into());
    }
    Ok(Frame {
        meta: RecordMeta {
            position: u64_at(bytes, REC_POSITION),
            batch_offset: u32_at(bytes, REC_BATCH_OFFSET),
            kind: bytes[REC_KIND],
            schema: u16::from_le_bytes([bytes[REC_SCHEMA], bytes[REC_SCHEMA + 1]]),
        },
        digest: bytes[REC_DIGEST..REC_DIGEST + 32]
            .try_into()
            .expect("32 bytes"),
        payload: &bytes[REC_PAYLOAD..REC_PAYLOAD + payload_len],
        total_len: total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_digest_matches_the_framed_record() {
        let mut prev = GENESIS_DIGEST;
        let mut buf = Vec::new();
        for (i, payload) in [&b""[..], b"a", b"payload of some length"]
            .iter()
            .enumerate()
        {
            let meta = RecordMeta {
                position: 7 + i as u64,
                batch_offset: i as u32,
                kind: 1,
                schema: 3,
            };
            buf.clear();
            let framed = encode_record(&mut buf, meta, &prev, payload);
            assert_eq!(record_digest(&prev, meta, payload), framed);
            let frame = decode_frame(&buf, 1024).expect("valid frame");
            assert_eq!(frame.meta, meta);
            assert_eq!(frame.digest, framed);
            assert_eq!(Frame::fixed_bytes(&buf), &encode_fixed(meta)[..]);
            prev = framed;
        }
    }
}
