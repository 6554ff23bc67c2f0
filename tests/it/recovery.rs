//! Recovery and verify against damaged logs: torn tails at every offset, single-byte flips,
//! rewritten records with fresh checksums, missing and swapped segments.

use action_ledger::log::format::*;
use action_ledger::log::scan::{scan, ScanMode};
use action_ledger::log::storage::{SimStorage, Storage};
use action_ledger::log::writer::NewRecord;
use action_ledger::log::{LogConfig, LogError, LogWriter};
use rand::{rngs::SmallRng, Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const PAYLOAD_MAX: usize = 4 << 20;

fn dir() -> PathBuf {
    PathBuf::from("/sim/log")
}

/// A record as written: segment, offset, length, batch.
#[derive(Clone, Copy, Debug)]
struct Placed {
    segment: u64,
    offset: u64,
    len: u64,
    batch: usize,
}

/// Writes `batches` batches of 1-5 random records; returns where each record went.
fn write_log(sim: &SimStorage, segment_bytes: u64, batches: usize, seed: u64) -> Vec<Placed> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let (mut w, summary) = LogWriter::open(
        Arc::new(sim.clone()),
        LogConfig {
            dir: dir(),
            segment_bytes,
        },
        &mut |_| Ok(()),
    )
    .unwrap();
    let mut placed = Vec::new();
    let base_batch = summary.last_position as usize; // distinct batch ids across reopenings
    for b in 0..batches {
        let payloads: Vec<Vec<u8>> = (0..rng.random_range(1..=5))
            .map(|_| {
                (0..rng.random_range(0..400))
                    .map(|_| rng.random())
                    .collect()
            })
            .collect();
        let records: Vec<NewRecord<'_>> = payloads
            .iter()
            .map(|p| NewRecord {
                kind: 1,
                schema: 1,
                payload: p,
            })
            .collect();
        for (a, p) in w.append(&records).unwrap().into_iter().zip(&payloads) {
            placed.push(Placed {
                segment: a.segment,
                offset: a.offset,
                len: record_len(p.len()) as u64,
                batch: base_batch + b,
            });
        }
    }
    placed
}

fn seg_path(seq: u64) -> PathBuf {
    dir().join(segment_file_name(seq))
}

fn scan_sim(sim: &SimStorage, mode: ScanMode) -> Result<action_ledger::log::ScanSummary, LogError> {
    scan(sim, &dir(), mode, PAYLOAD_MAX, &mut |_| Ok(()))
}

/// Three small sealed segments, then a last segment of more than 64 KiB.
fn layered_log(sim: &SimStorage) -> Vec<Placed> {
    let mut placed = write_log(sim, 4096, 40, 1);
    let sealed_max = placed.last().unwrap().segment;
    placed.extend(write_log(sim, 1 << 30, 160, 2));
    let last = placed.last().unwrap().segment;
    assert!(sealed_max >= 3 && last == sealed_max, "{sealed_max} {last}");
    assert!(sim.file_len(&seg_path(last)).unwrap() > 66_000);
    placed
}

#[test]
fn truncation_at_every_offset_of_the_last_64k_recovers_the_prefix() {
    // Goal: a cut anywhere in the last 64 KiB recovers exactly the records wholly before it.
    let sim = SimStorage::new();
    let placed = layered_log(&sim);
    let last_seg = placed.last().unwrap().segment;
    let path = seg_path(last_seg);
    let full = sim.read(&path).unwrap();
    let in_earlier = placed.iter().filter(|p| p.segment < last_seg).count() as u64;
    let last_records: Vec<&Placed> = placed.iter().filter(|p| p.segment == last_seg).collect();
    let from = full.len() - 64 * 1024;
    for cut in from..=full.len() {
        sim.overwrite(&path, full[..cut].to_vec());
        let summary =
            scan_sim(&sim, ScanMode::Recover).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        let whole: Vec<&&Placed> = last_records
            .iter()
            .filter(|p| p.offset + p.len <= cut as u64)
            .collect();
        assert_eq!(
            summary.last_position,
            in_earlier + whole.len() as u64,
            "cut at {cut}"
        );
        let boundary = whole.last().map_or(HEADER_LEN as u64, |p| p.offset + p.len);
        assert_eq!(
            summary.torn_tail.is_some(),
            boundary != cut as u64,
            "cut at {cut}"
        );
        assert_eq!(
            sim.file_len(&path).unwrap(),
            boundary,
            "cut at {cut}: truncated to the boundary"
        );
    }
    // The torn bytes were kept aside, not thrown away.
    assert!(!sim.list(&dir().join("torn")).unwrap().is_empty());
}

/// The offset recovery must name for a flip at `byte` of segment `seq`.
fn record_start(placed: &[Placed], seq: u64, byte: u64) -> u64 {
    if byte < HEADER_LEN as u64 {
        return 0;
    }
    placed
        .iter()
        .find(|p| p.segment == seq && p.offset <= byte && byte < p.offset + p.len)
        .map(|p| p.offset)
        .expect("every byte after the header belongs to a record")
}

#[test]
fn any_flipped_byte_of_a_sealed_record_is_refused_with_its_offset() {
    // Goal: damage to acknowledged records is never mistaken for a torn tail.
    let sim = SimStorage::new();
    let placed = layered_log(&sim);
    let last_seg = placed.last().unwrap().segment;
    let last_batch = placed.last().unwrap().batch;
    let mut rng = SmallRng::seed_from_u64(7);
    let mut checked = 0;
    for seq in 1..=last_seg {
        let path = seg_path(seq);
        let len = sim.file_len(&path).unwrap();
        // Every byte of the sealed segments; in the last segment every byte of records
        // before the final batch (the final batch may legitimately read as torn).
        let end = if seq == last_seg {
            placed
                .iter()
                .find(|p| p.segment == seq && p.batch == last_batch)
                .unwrap()
                .offset
        } else {
            len
        };
        for byte in 0..end {
            let mask = rng.random_range(1..=255u8);
            sim.corrupt(&path, byte as usize, mask);
            let result = scan_sim(&sim, ScanMode::ReadOnly);
            sim.corrupt(&path, byte as usize, mask);
            match result {
                Err(LogError::Corrupt { file, offset, .. }) => {
                    assert_eq!(file, path, "flip at {seq}:{byte}");
                    assert_eq!(
                        offset,
                        record_start(&placed, seq, byte),
                        "flip at {seq}:{byte}"
                    );
                }
                other => panic!("flip at segment {seq} byte {byte}: {other:?}"),
            }
            checked += 1;
        }
    }
    assert!(checked > 60_000, "{checked}");
    // Every flip was undone: the log is intact again.
    assert!(scan_sim(&sim, ScanMode::ReadOnly)
        .unwrap()
        .torn_tail
        .is_none());
}

/// Rewrites record `p`'s payload byte and recomputes its CRC (and, if asked, its digest), as
/// an editor who knows the format would.
fn rewrite(sim: &SimStorage, p: &Placed, prev_digest: Option<Digest>) {
    let path = seg_path(p.segment);
    let mut bytes = sim.read(&path).unwrap();
    let r = p.offset as usize;
    let body_len = u32::from_le_bytes(bytes[r..r + 4].try_into().unwrap()) as usize;
    let payload = r + REC_PAYLOAD;
    let payload_end = r + 8 + body_len;
    assert!(payload_end > payload, "pick a record with a payload");
    bytes[payload] ^= 0x20;
    if let Some(prev) = prev_digest {
        let d = chain_digest(
            &prev,
            &bytes[r + REC_POSITION..r + REC_DIGEST],
            &bytes[payload..payload_end],
        );
        bytes[r + REC_DIGEST..r + REC_DIGEST + 32].copy_from_slice(&d);
    }
    let crc = crc32fast::hash(&bytes[r + REC_POSITION..payload_end]);
    bytes[r + REC_CRC..r + REC_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    sim.overwrite(&path, bytes);
}

fn digest_before(sim: &SimStorage, target: u64) -> Digest {
    let mut prev = GENESIS_DIGEST;
    scan(sim, &dir(), ScanMode::ReadOnly, PAYLOAD_MAX, &mut |r| {
        if r.meta.position < target {
            prev = r.digest;
        }
        Ok(())
    })
    .unwrap();
    prev
}

#[test]
fn rewritten_record_with_fresh_crc_is_caught_by_verify() {
    // Goal: the digest chain makes the log tamper-evident, not only torn-write-safe.
    let sim = SimStorage::new();
    let placed = layered_log(&sim);
    let (i, victim) = placed
        .iter()
        .enumerate()
        .find(|(_, p)| p.segment == 2 && p.len > REC_PAYLOAD as u64 + 8)
        .unwrap();
    let original = sim.read(&seg_path(2)).unwrap();

    rewrite(&sim, victim, None);
    let err = action_ledger::log::verify(&sim, &dir(), &mut |_| Ok(())).unwrap_err();
    match &err {
        LogError::Corrupt {
            file,
            offset,
            reason,
        } => {
            assert_eq!((file, *offset), (&seg_path(2), victim.offset));
            assert!(reason.contains("digest chain"), "{reason}");
        }
        other => panic!("{other}"),
    }

    // Recomputing the victim's digest too only moves the break to the next record.
    sim.overwrite(&seg_path(2), original);
    rewrite(&sim, victim, Some(digest_before(&sim, i as u64 + 1)));
    let next = placed[i + 1];
    match action_ledger::log::verify(&sim, &dir(), &mut |_| Ok(())).unwrap_err() {
        LogError::Corrupt {
            file,
            offset,
            reason,
        } => {
            if next.segment == 2 {
                assert_eq!((file, offset), (seg_path(2), next.offset));
                assert!(reason.contains("digest chain"), "{reason}");
            } else {
                assert_eq!((file, offset), (seg_path(3), HDR_PREV_DIGEST as u64));
            }
        }
        other => panic!("{other}"),
    }
}

#[test]
fn missing_or_swapped_segments_are_refused() {
    let sim = SimStorage::new();
    write_log(&sim, 2048, 60, 3);
    let three = sim.read(&seg_path(3)).unwrap();
    let four = sim.read(&seg_path(4)).unwrap();

    // Swapped contents: the header names the other sequence.
    sim.overwrite(&seg_path(3), four.clone());
    sim.overwrite(&seg_path(4), three.clone());
    match scan_sim(&sim, ScanMode::ReadOnly).unwrap_err() {
        LogError::Corrupt { file, offset, .. } => {
            assert_eq!((file, offset), (seg_path(3), HDR_SEQUENCE as u64))
        }
        other => panic!("{other}"),
    }
    sim.overwrite(&seg_path(3), three);
    sim.overwrite(&seg_path(4), four);
    assert!(scan_sim(&sim, ScanMode::ReadOnly).is_ok());

    // A deleted middle segment.
    sim.remove(&seg_path(3)).unwrap();
    match scan_sim(&sim, ScanMode::Recover).unwrap_err() {
        LogError::Corrupt { file, reason, .. } => {
            assert_eq!(file, seg_path(3));
            assert!(reason.contains("missing"), "{reason}");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn torn_tail_with_a_hole_inside_the_last_batch_is_repaired() {
    // Goal: sectors of the last (unacknowledged) batch lost out of order is still a torn
    // tail, while the same damage before a later batch is corruption.
    let sim = SimStorage::new();
    let placed = write_log(&sim, 1 << 30, 50, 4);
    let path = seg_path(1);
    let last_batch = placed.last().unwrap().batch;
    let batch: Vec<&Placed> = placed.iter().filter(|p| p.batch == last_batch).collect();
    let original = sim.read(&path).unwrap();
    let mut bytes = original.clone();
    let hole = batch[0].offset as usize;
    bytes[hole..hole + 8].fill(0);
    sim.overwrite(&path, bytes.clone());
    let s = scan_sim(&sim, ScanMode::ReadOnly).unwrap();
    assert_eq!(s.torn_tail.unwrap().offset, batch[0].offset);

    // The same hole one batch earlier: a later batch follows, so it was acknowledged.
    let earlier: Vec<&Placed> = placed
        .iter()
        .filter(|p| p.batch == last_batch - 1)
        .collect();
    let mut bytes = original;
    let hole = earlier[0].offset as usize;
    bytes[hole..hole + 8].fill(0);
    sim.overwrite(&path, bytes);
    match scan_sim(&sim, ScanMode::Recover).unwrap_err() {
        LogError::Corrupt { offset, reason, .. } => {
            assert_eq!(offset, earlier[0].offset);
            assert!(reason.contains("later commit"), "{reason}");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn verify_on_a_real_directory_reports_the_head_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let storage: Arc<dyn Storage> = Arc::new(action_ledger::log::FsStorage);
    let (mut w, _) = LogWriter::open(
        storage.clone(),
        LogConfig::new(tmp.path().join("log")),
        &mut |_| Ok(()),
    )
    .unwrap();
    let a = w
        .append(&[NewRecord {
            kind: 1,
            schema: 1,
            payload: b"hello",
        }])
        .unwrap();
    drop(w);
    let s =
        action_ledger::log::verify(&*storage, &tmp.path().join("log"), &mut |_| Ok(())).unwrap();
    assert_eq!((s.last_position, s.last_digest), (1, a[0].digest));
    assert!(Path::new(&tmp.path().join("log").join(segment_file_name(1))).exists());
}
