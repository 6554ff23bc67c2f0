//! Packs: the snapshot values of finished actions, [`keys::PACK_IDS`] consecutive ids to a
//! sled key, compressed (the layout is drawn in `keys`).
//!
//! A finished action (completed, failed, cancelled — most of a year's store) rarely changes
//! again, so keeping it under a key of its own costs sled's per-key bookkeeping (~35 bytes
//! of memory per key, cached or not) for nothing. A pack holds the finished actions of one
//! id range; an action that is not finished keeps its own snapshot key, where the many
//! events of a running action rewrite only it.
//!
//! Value: `codec u8 ‖ raw length u32 BE ‖ body`, where the raw bytes are the entries in
//! ascending id order, each `offset u8 (id % PACK_IDS) ‖ length u32 BE ‖ snapshot value`,
//! and the body is the raw bytes themselves (codec [`CODEC_RAW`]) or one zstd frame of them
//! (codec [`CODEC_ZSTD`], level [`ZSTD_LEVEL`]; written only when it is smaller). The layout
//! depends only on which actions of the range are finished and their values, so a rebuilt
//! projection holds the same packs as a live one. A pack key's value may instead be a
//! pointer (codec [`super::values::CODEC_SEALED`]) to these very bytes in the value file;
//! readers resolve it first (`values::ValueFile::resolve`).
//!
//! Reading one action decompresses its whole pack. A newest-first walk over a dense index
//! reads the same pack for up to 16 actions in a row, so each thread keeps the last pack it
//! decompressed, keyed by the compressed bytes themselves: a pack that changed since can
//! never be mistaken for the one kept.

use super::keys;
use crate::event::ActionId;
use crate::ledger::StoreError;
use std::cell::RefCell;
use std::io::Read;

pub const CODEC_RAW: u8 = 0;
pub const CODEC_ZSTD: u8 = 1;
/// zstd's fastest levels compress snapshots of one id range ~3–4× at a few µs per pack.
pub const ZSTD_LEVEL: i32 = 1;
const HEADER_BYTES: usize = 5;
/// An entry's `offset u8 ‖ length u32 BE` before its value.
const ENTRY_HEADER_BYTES: usize = 5;
/// Packs up to this many raw bytes (nearly all) decompress in one call into a buffer of
/// their stated length, with this thread's reused zstd context; larger ones stream.
const BULK_RAW_BYTES_MAX: usize = 1024 * 1024;

thread_local! {
    /// zstd contexts, made once per thread: making one costs more than a pack.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// A decoded pack: its raw bytes and where each entry's value lies in them.
#[derive(Clone, Debug, Default)]
pub struct Pack {
    raw: Vec<u8>,
    /// (offset, start, end) of each entry's snapshot value in `raw`, offsets ascending.
    entries: Vec<(u8, usize, usize)>,
}

impl Pack {
    /// The snapshot value of the entry at `offset`.
    pub fn get(&self, offset: u8) -> Option<&[u8]> {
        let i = self.entries.binary_search_by_key(&offset, |e| e.0).ok()?;
        let (_, s, e) = self.entries[i];
        Some(&self.raw[s..e])
    }

    /// Every entry: (offset, snapshot value), ascending.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (u8, &[u8])> + '_ {
        self.entries.iter().map(|&(o, s, e)| (o, &self.raw[s..e]))
    }
}

/// The value of a pack holding `entries` (offset → snapshot value, at least one):
/// compressed when that makes it smaller.
pub fn encode<'a>(entries: impl IntoIterator<Item = (u8, &'a [u8])>) -> Result<Vec<u8>, String> {
    encode_as(entries, true)
}

/// [`encode`], or with `compress` false the raw bytes whatever their size.
pub fn encode_as<'a>(
    entries: impl IntoIterator<Item = (u8, &'a [u8])>,
    compress: bool,
) -> Result<Vec<u8>, String> {
    let mut raw = Vec::new();
    for (offset, value) in entries {
        push_entry(&mut raw, offset, value)?;
    }
    let raw_len = u32::try_from(raw.len())
        .map_err(|_| format!("a pack of {} bytes is too large", raw.len()))?;
    let compressed = match compress {
        false => None,
        true => Some(
            COMPRESSOR
                .with(|c| {
                    let mut c = c.borrow_mut();
                    if c.is_none() {
                        *c = Some(zstd::bulk::Compressor::new(ZSTD_LEVEL)?);
                    }
                    c.as_mut().expect("just made").compress(&raw)
                })
                .map_err(|e| format!("cannot compress a pack: {e}"))?,
        ),
    };
    let (codec, body) = match &compressed {
        Some(c) if c.len() < raw.len() => (CODEC_ZSTD, &c[..]),
        _ => (CODEC_RAW, &raw[..]),
    };
    let mut v = Vec::with_capacity(HEADER_BYTES + body.len());
    v.push(codec);
    v.extend_from_slice(&raw_len.to_be_bytes());
    v.extend_from_slice(body);
    Ok(v)
}

/// Appends one entry, `offset u8 ‖ length u32 BE ‖ value`, to raw pack bytes.
fn push_entry(raw: &mut Vec<u8>, offset: u8, value: &[u8]) -> Result<(), String> {
    let len = u32::try_from(value.len())
        .map_err(|_| format!("a snapshot of {} bytes does not fit a pack", value.len()))?;
    raw.push(offset);
    raw.extend_from_slice(&len.to_be_bytes());
    raw.extend_from_slice(value);
    Ok(())
}

/// A pack value's codec, stated raw length and body.
fn split_header(value: &[u8]) -> Result<(u8, usize, &[u8]), String> {
    let header = value
        .get(..HEADER_BYTES)
        .ok_or_else(|| format!("pack value of {} bytes", value.len()))?;
    let raw_len = u32::from_be_bytes(header[1..5].try_into().expect("4 bytes")) as usize;
    Ok((header[0], raw_len, &value[HEADER_BYTES..]))
}

/// `Err` unless the raw bytes are as long as the header says.
fn check_raw_len(raw: &[u8], raw_len: usize) -> Result<(), String> {
    match raw.len() == raw_len {
        true => Ok(()),
        false => Err(format!(
            "pack holds {} bytes where its header says {raw_len}",
            raw.len()
        )),
    }
}

/// Where each entry of raw pack bytes lies: (offset, start, end) of its value, checked to
/// be whole and in ascending offsets below [`keys::PACK_IDS`].
fn entries_of(raw: &[u8]) -> Result<Vec<(u8, usize, usize)>, String> {
    let mut entries: Vec<(u8, usize, usize)> = Vec::new();
    let mut at = 0;
    while at < raw.len() {
        let offset = raw[at];
        let len = raw
            .get(at + 1..at + ENTRY_HEADER_BYTES)
            .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize)
            .ok_or("pack entry header is cut short")?;
        let (start, end) = (at + ENTRY_HEADER_BYTES, at + ENTRY_HEADER_BYTES + len);
        if end > raw.len() {
            return Err(format!("pack entry at byte {at} runs past the pack"));
        }
        if u64::from(offset) >= keys::PACK_IDS
            || entries.last().is_some_and(|&(o, _, _)| o >= offset)
        {
            return Err(format!(
                "pack entry offsets are not ascending below {}",
                keys::PACK_IDS
            ));
        }
        entries.push((offset, start, end));
        at = end;
    }
    Ok(entries)
}

/// True when `value` is a raw pack (or empty: no pack), which [`splice_raw`] can edit.
pub fn is_raw(value: &[u8]) -> bool {
    value.first().is_none_or(|&codec| codec == CODEC_RAW)
}

/// The raw pack value `value` (empty: no pack) with its entry at `offset` set to `entry`
/// (`None`: removed), spliced in place — no decode, no encode; empty when no entry is left.
/// The very bytes [`encode_as`] gives for the resulting entries uncompressed.
pub fn splice_raw(value: &[u8], offset: u8, entry: Option<&[u8]>) -> Result<Vec<u8>, String> {
    let raw = match value.is_empty() {
        true => &[][..],
        false => {
            let (codec, raw_len, raw) = split_header(value)?;
            if codec != CODEC_RAW {
                return Err(format!("pack codec {codec} is not raw"));
            }
            check_raw_len(raw, raw_len)?;
            raw
        }
    };
    // The entries below `offset` are kept before the new one, those above after it.
    let entries = entries_of(raw)?;
    let next = entries.partition_point(|&(o, _, _)| o < offset);
    let below = entries
        .get(next)
        .map_or(raw.len(), |&(_, start, _)| start - ENTRY_HEADER_BYTES);
    let above = match entries.get(next) {
        Some(&(o, _, end)) if o == offset => end,
        _ => below,
    };
    // The header's length is written once the entries are in place.
    let mut v = Vec::with_capacity(
        HEADER_BYTES + raw.len() + entry.map_or(0, <[u8]>::len) + ENTRY_HEADER_BYTES,
    );
    v.push(CODEC_RAW);
    v.extend_from_slice(&[0; 4]);
    v.extend_from_slice(&raw[..below]);
    if let Some(e) = entry {
        push_entry(&mut v, offset, e)?;
    }
    v.extend_from_slice(&raw[above..]);
    let raw_len = v.len() - HEADER_BYTES;
    if raw_len == 0 {
        return Ok(Vec::new());
    }
    let stated =
        u32::try_from(raw_len).map_err(|_| format!("a pack of {raw_len} bytes is too large"))?;
    v[1..HEADER_BYTES].copy_from_slice(&stated.to_be_bytes());
    Ok(v)
}

/// Decodes a pack value; `Err` names what is wrong with it.
pub fn decode(value: &[u8]) -> Result<Pack, String> {
    let (codec, raw_len, body) = split_header(value)?;
    let raw = match codec {
        CODEC_RAW => body.to_vec(),
        CODEC_ZSTD if raw_len <= BULK_RAW_BYTES_MAX => DECOMPRESSOR
            .with(|d| {
                let mut d = d.borrow_mut();
                if d.is_none() {
                    *d = Some(zstd::bulk::Decompressor::new()?);
                }
                d.as_mut().expect("just made").decompress(body, raw_len)
            })
            .map_err(|e| format!("pack does not decompress: {e}"))?,
        CODEC_ZSTD => {
            // A large pack is read through a bound rather than by allocating the stated
            // length up front: a damaged length must not become a huge allocation.
            let mut raw = Vec::new();
            zstd::stream::read::Decoder::new(body)
                .map_err(|e| format!("pack: {e}"))?
                .take(raw_len as u64 + 1)
                .read_to_end(&mut raw)
                .map_err(|e| format!("pack does not decompress: {e}"))?;
            raw
        }
        other => return Err(format!("pack codec {other} is unknown")),
    };
    check_raw_len(&raw, raw_len)?;
    let entries = entries_of(&raw)?;
    if entries.is_empty() {
        return Err("pack holds no entry".into());
    }
    Ok(Pack { raw, entries })
}

/// [`decode`], where an empty value (a resource list chunk with no finished member) is a
/// pack of no entries.
pub fn decode_or_empty(value: &[u8]) -> Result<Pack, String> {
    match value.is_empty() {
        true => Ok(Pack::default()),
        false => decode(value),
    }
}

/// The pack number and the decoded pack of a stored pack key and value (a pointer is read
/// from `values` first); damage is a [`StoreError::Damaged`] naming the pack.
pub fn decode_stored(
    values: &super::values::ValueFile,
    key: &[u8],
    value: &[u8],
) -> Result<(u64, Pack), StoreError> {
    let pack = key
        .get(1..)
        .and_then(keys::read_u64)
        .ok_or_else(|| StoreError::Damaged(format!("pack key {key:?} is malformed")))?;
    let decoded = decode(&values.resolve(pack, value)?)
        .map_err(|e| StoreError::Damaged(format!("pack {pack}: {e}")))?;
    Ok((pack, decoded))
}

thread_local! {
    /// The last pack this thread decoded, with the value it came from.
    static LAST: RefCell<Option<(Vec<u8>, std::rc::Rc<Pack>)>> = const { RefCell::new(None) };
}

/// [`decode`], answered from this thread's last decoded pack when `value` is the very
/// same bytes.
pub fn decode_cached(value: &[u8]) -> Result<std::rc::Rc<Pack>, String> {
    if let Some(hit) = LAST.with(|l| {
        l.borrow()
            .as_ref()
            .filter(|(v, _)| v.as_slice() == value)
            .map(|(_, p)| p.clone())
    }) {
        return Ok(hit);
    }
    let pack = std::rc::Rc::new(decode(value)?);
    LAST.with(|l| *l.borrow_mut() = Some((value.to_vec(), pack.clone())));
    Ok(pack)
}

/// The snapshot value of action `id` in the pack value `value` (its pack), if it is there.
pub fn find(id: ActionId, value: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let pack = decode_cached(value)?;
    Ok(pack.get(keys::pack_offset(id)).map(<[u8]>::to_vec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splicing_a_raw_pack_gives_the_bytes_encoding_would() {
        let mut entries: std::collections::BTreeMap<u8, Vec<u8>> = Default::default();
        let mut spliced = Vec::new();
        // Inserts out of order, a replacement, removals down to nothing.
        let steps: [(u8, Option<&[u8]>); 9] = [
            (7, Some(b"seven")),
            (2, Some(b"two")),
            (15, Some(b"")),
            (7, Some(b"SEVEN!")),
            (0, Some(b"zero")),
            (2, None),
            (9, None),
            (0, None),
            (15, None),
        ];
        for (offset, entry) in steps {
            spliced = splice_raw(&spliced, offset, entry).unwrap();
            match entry {
                Some(e) => entries.insert(offset, e.to_vec()),
                None => entries.remove(&offset),
            };
            let expected = match entries.is_empty() {
                true => Vec::new(),
                false => encode_as(entries.iter().map(|(o, v)| (*o, &v[..])), false).unwrap(),
            };
            assert_eq!(spliced, expected, "after {offset} {entry:?}");
        }
        assert_eq!(entries.len(), 1, "7 is left");
        let compressed = encode([(1, &[7u8; 300][..])]).unwrap();
        assert!(
            splice_raw(&compressed, 1, None).is_err(),
            "only raw packs splice"
        );
        assert!(splice_raw(&[CODEC_RAW, 0, 0, 0, 9, 1], 1, None).is_err());
    }

    #[test]
    fn packs_round_trip_compressed_or_raw() {
        let a = vec![7u8; 300];
        let b: Vec<u8> = (0..200u32).map(|i| (i * 37 % 251) as u8).collect();
        let v = encode([(0, &a[..]), (5, &b[..]), (15, &[][..])]).unwrap();
        assert_eq!(v[0], CODEC_ZSTD, "repetitive snapshots compress");
        let p = decode(&v).unwrap();
        assert_eq!(p.iter().count(), 3);
        assert_eq!(p.get(0), Some(&a[..]));
        assert_eq!(p.get(5), Some(&b[..]));
        assert_eq!(p.get(15), Some(&[][..]));
        assert_eq!(p.get(1), None);
        assert_eq!(p.iter().map(|(o, _)| o).collect::<Vec<_>>(), vec![0, 5, 15]);
        // Incompressible: kept raw.
        let noise: Vec<u8> = (0..64u64)
            .map(|i| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8)
            .collect();
        let v = encode([(3, &noise[..])]).unwrap();
        assert_eq!(v[0], CODEC_RAW);
        assert_eq!(decode(&v).unwrap().get(3), Some(&noise[..]));
    }

    #[test]
    fn damaged_packs_are_refused_not_misread() {
        let v = encode([(1, &[1u8; 100][..]), (2, &[2u8; 100][..])]).unwrap();
        assert!(decode(&v[..3]).is_err());
        let mut bad = v.clone();
        bad[0] = 9;
        assert!(decode(&bad).unwrap_err().contains("codec"));
        let mut bad = v.clone();
        bad[4] ^= 1;
        assert!(decode(&bad).is_err(), "wrong raw length");
        let mut bad = v.clone();
        let n = bad.len();
        bad.truncate(n - 2);
        assert!(decode(&bad).is_err(), "cut short");
        // Offsets out of order or out of range.
        let raw = [2u8, 0, 0, 0, 0, 1, 0, 0, 0, 0];
        let mut v = vec![CODEC_RAW];
        v.extend_from_slice(&(raw.len() as u32).to_be_bytes());
        v.extend_from_slice(&raw);
        assert!(decode(&v).unwrap_err().contains("ascending"));
        let raw = [16u8, 0, 0, 0, 0];
        let mut v = vec![CODEC_RAW];
        v.extend_from_slice(&(raw.len() as u32).to_be_bytes());
        v.extend_from_slice(&raw);
        assert!(decode(&v).is_err());
    }

    #[test]
    fn the_thread_memo_never_answers_for_other_bytes() {
        let one = encode([(4, &[1u8; 50][..])]).unwrap();
        let two = encode([(4, &[2u8; 50][..])]).unwrap();
        assert_eq!(find(4, &one).unwrap(), Some(vec![1u8; 50]));
        assert_eq!(find(4, &two).unwrap(), Some(vec![2u8; 50]));
        assert_eq!(find(4, &one).unwrap(), Some(vec![1u8; 50]));
        assert_eq!(find(5, &one).unwrap(), None);
    }
}
