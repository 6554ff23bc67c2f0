//! The damage corpus, on a ledger produced by a real run (the HTTP server over real files,
//! small segments so there are several): each kind of damage gives its documented outcome
//! (docs/format.md, "Recovery").
//!
//! - truncation of the last segment at every offset: recovers the prefix of whole records
//!   (a cut inside the 72-byte header is refused: headers are never torn);
//! - a flipped bit anywhere in a sealed segment: `log::verify` and the server refuse,
//!   naming the file and the offset of the damaged header field or record;
//! - a deleted middle segment, swapped segments: refused, naming the file;
//! - a deleted projection store: rebuilt at start with identical answers.
//!
//! The tests on many offsets use the library's scan (the one policy recovery and `verify`
//! share); a sample of each kind also goes through the real binary's start.

use super::binserver::{self, Options};
use crate::app::{Api, ADMIN};
use crate::support::copy_dir;
use action_ledger::log::format::{HDR_PREV_DIGEST, HEADER_LEN};
use action_ledger::log::{self, FsStorage, LogError, ScanSummary};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const SEGMENT_BYTES: u64 = 4096;

/// A finished ledger and the answers its server gave before it stopped.
struct Template {
    dir: tempfile::TempDir,
    /// (segment file, offset, position, record length) of every record, in order.
    records: Vec<(PathBuf, u64, u64, u64)>,
    /// Every segment file, in order.
    segments: Vec<PathBuf>,
    answers: Answers,
}

#[derive(Debug, PartialEq, Clone)]
struct Answers {
    log: Vec<Value>,
    actions: Value,
    each: Vec<(Value, Value)>,
}

impl Template {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

fn template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| {
        std::thread::spawn(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
                .block_on(produce())
        })
        .join()
        .expect("producing the template ledger")
    })
}

async fn post(api: &Api, path: &str, body: Value) -> Value {
    let (status, v) = api.post(path, ADMIN, body.clone()).await;
    assert!(status.is_success(), "POST {path} {body} -> {status} {v}");
    v
}

async fn get(api: &Api, path: &str) -> Value {
    let (status, v) = api.get(path, ADMIN).await;
    assert!(status.is_success(), "GET {path} -> {status} {v}");
    v
}

/// Every record of the log, page by page.
async fn whole_log(api: &Api) -> Vec<Value> {
    let mut log = Vec::new();
    let mut after = 0;
    loop {
        let page = get(api, &format!("/api/v1/log?after={after}&limit=1000")).await;
        log.extend(page["records"].as_array().unwrap().iter().cloned());
        match page["next_after"].as_u64() {
            Some(n) => after = n,
            None => break,
        }
    }
    log
}

/// Every answer a reader could get about the ledger.
async fn answers(api: &Api) -> Answers {
    let log = whole_log(api).await;
    let actions = get(api, "/api/v1/actions?limit=1000").await;
    let mut each = Vec::new();
    for a in actions["actions"]
        .as_array()
        .or_else(|| actions["items"].as_array())
        .unwrap_or_else(|| panic!("list answer without actions: {actions}"))
    {
        let id = a["id"].as_u64().unwrap();
        each.push((
            get(api, &format!("/api/v1/actions/{id}")).await,
            get(api, &format!("/api/v1/actions/{id}/history")).await,
        ));
    }
    Answers { log, actions, each }
}

async fn produce() -> Template {
    let mut config = crate::app::config();
    config.segment_bytes = SEGMENT_BYTES;
    let mut app = crate::app::spawn_app_with(config).await;
    // Concurrent writers so some fsync batches hold several records.
    let mut tasks = Vec::new();
    for w in 0..4 {
        let api = app.api.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..12 {
                let a = post(&api, "/api/v1/actions",
                    json!({"type": "snapshot", "resource": {"type": "droplet", "id": format!("{w}-{i}")},
                           "status": "running", "description": format!("writer {w} action {i}")}),
                )
                .await;
                let id = a["id"].as_u64().unwrap();
                for p in [10, 50, 90] {
                    post(&api, &format!("/api/v1/actions/{id}/events"),
                        json!({"type": "progress", "progress": p, "message": format!("at {p}")}),
                    )
                    .await;
                }
                let last = if i % 3 == 0 {
                    json!({"type": "failed", "error": {"code": "E1", "message": "boom"}})
                } else {
                    json!({"type": "completed", "message": "done"})
                };
                if i % 2 == 0 {
                    post(&api, "/api/v1/batch",
                        json!({"commands": [
                            {"event": {"action": id, "type": "event_started", "name": "step"}},
                            {"event": {"action": id, "type": "event_finished", "name": "step", "result": "success"}},
                            {"create": {"type": "follow-up", "resource": {"type": "volume", "id": format!("{w}-{i}")}}},
                        ]}),
                    )
                    .await;
                }
                post(&api, &format!("/api/v1/actions/{id}/events"), last).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let answers = answers(&app).await;
    app.stop().await;
    let dir = app.dir;

    let data = dir.path().join("data");
    let mut records = Vec::new();
    let summary = log::verify(&FsStorage, &data.join("log"), &mut |r| {
        records.push((r.segment, r.offset, r.meta.position));
        Ok(())
    })
    .unwrap();
    assert!(summary.torn_tail.is_none());
    let segments: Vec<PathBuf> = summary.segments.iter().map(|s| s.path.clone()).collect();
    assert!(
        segments.len() >= 5,
        "want several segments, got {}",
        segments.len()
    );
    let mut placed = Vec::new();
    for (i, &(seg, off, pos)) in records.iter().enumerate() {
        let end = match records.get(i + 1) {
            Some(&(s, o, _)) if s == seg => o,
            _ => summary.segments[seg as usize - 1].len,
        };
        placed.push((segments[seg as usize - 1].clone(), off, pos, end - off));
    }
    assert_eq!(
        answers.log.last().unwrap()["position"],
        json!(records.len())
    );
    Template {
        dir,
        records: placed,
        segments,
        answers,
    }
}

/// A copy of the template's data directory.
fn copy_template(t: &Template) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&t.data(), &dir.path().join("data"));
    dir
}

/// `path` of the template, moved into `data` (a copy).
fn rebase(t: &Template, path: &Path, data: &Path) -> PathBuf {
    data.join(path.strip_prefix(t.data()).unwrap())
}

fn verify(data: &Path) -> Result<ScanSummary, LogError> {
    log::verify(&FsStorage, &data.join("log"), &mut |_| Ok(()))
}

fn corrupt_at(r: Result<ScanSummary, LogError>) -> (PathBuf, u64, String) {
    match r {
        Err(LogError::Corrupt {
            file,
            offset,
            reason,
        }) => (file, offset, reason),
        Err(e) => panic!("expected corruption, got error {e}"),
        Ok(s) => panic!(
            "expected corruption, got an intact log ending at {} (torn tail {:?})",
            s.last_position, s.torn_tail
        ),
    }
}

/// Starts the real binary on `data`, which must refuse: exit status 2 and an error naming
/// `file` and `offset`.
async fn binary_refuses(data: &Path, file: &Path, offset: u64) {
    let out = data.parent().unwrap().join("refused.out");
    match binserver::start(data, &out, &Options::default()).await {
        Ok(mut s) => {
            s.kill();
            panic!(
                "the server started on a damaged log ({} offset {offset})",
                file.display()
            )
        }
        Err(e) => {
            assert!(e.contains("exit status: 2"), "{e}");
            let name = file.file_name().unwrap().to_string_lossy();
            assert!(
                e.contains(&*name) && e.contains(&format!("offset {offset}")),
                "the refusal does not name {name} offset {offset}:\n{e}"
            );
        }
    }
}

#[test]
fn truncating_the_last_segment_at_every_offset_recovers_the_prefix() {
    let t = template();
    let copy = copy_template(t);
    let data = copy.path().join("data");
    let last = rebase(t, t.segments.last().unwrap(), &data);
    let original = std::fs::read(&last).unwrap();
    let in_last: Vec<_> = t
        .records
        .iter()
        .filter(|r| r.0 == *t.segments.last().unwrap())
        .collect();
    let before = t.records.len() - in_last.len();
    assert!(
        in_last.len() >= 3,
        "{} records in the last segment",
        in_last.len()
    );
    let (mut at_boundary, mut torn_tails) = (0, 0);
    for cut in 0..=original.len() as u64 {
        std::fs::write(&last, &original[..cut as usize]).unwrap();
        let result = verify(&data);
        if cut < HEADER_LEN as u64 {
            let (file, offset, reason) = corrupt_at(result);
            assert_eq!((file.as_path(), offset), (last.as_path(), 0), "{reason}");
            continue;
        }
        let whole = in_last.iter().filter(|r| r.1 + r.3 <= cut).count();
        let summary = result.unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert_eq!(
            summary.last_position,
            (before + whole) as u64,
            "cut at {cut}"
        );
        let boundary = cut == HEADER_LEN as u64 || in_last.iter().any(|r| r.1 + r.3 == cut);
        match &summary.torn_tail {
            None => {
                assert!(boundary, "cut at {cut} inside a record, no torn tail");
                at_boundary += 1;
            }
            Some(torn) => {
                assert!(!boundary, "cut at {cut} on a record boundary: {torn:?}");
                let start = in_last[whole].1;
                assert_eq!(
                    (torn.offset, torn.len),
                    (start, cut - start),
                    "cut at {cut}"
                );
                torn_tails += 1;
            }
        }
    }
    // The segment's size depends on the run that produced it; what matters is that every
    // offset past the header was tried and both outcomes were seen for each whole record.
    assert_eq!(
        at_boundary,
        in_last.len() + 1,
        "one clean cut per record boundary"
    );
    assert_eq!(
        at_boundary + torn_tails,
        original.len() + 1 - HEADER_LEN,
        "every offset past the header was checked"
    );

    // Opening for writing cuts the torn bytes (kept in log/torn/) and appends after them.
    let cut = in_last[1].1 + 13;
    std::fs::write(&last, &original[..cut as usize]).unwrap();
    let mut config = action_ledger::ledger::LedgerConfig::new(data.join("log"));
    config.segment_bytes = SEGMENT_BYTES;
    let ledger = action_ledger::ledger::Ledger::open(
        std::sync::Arc::new(FsStorage),
        config,
        std::sync::Arc::new(action_ledger::ledger::memory::MemoryStore::new()),
    )
    .unwrap();
    let torn = ledger.recovery().torn_tail.clone().unwrap();
    assert_eq!(torn.offset, in_last[1].1);
    let saved = std::fs::read(torn.saved_to.unwrap()).unwrap();
    assert_eq!(saved, original[in_last[1].1 as usize..cut as usize]);
    assert_eq!(
        std::fs::metadata(&last).unwrap().len(),
        in_last[1].1,
        "the segment is cut back to its last whole record"
    );
    ledger.close();
    drop(ledger);
    assert_eq!(
        verify(&data).unwrap().last_position,
        (before + 1) as u64,
        "a second look finds nothing more to cut"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_the_prefix_after_a_cut_and_a_rebuild() {
    let t = template();
    let copy = copy_template(t);
    let data = copy.path().join("data");
    let last = rebase(t, t.segments.last().unwrap(), &data);
    let in_last: Vec<_> = t
        .records
        .iter()
        .filter(|r| r.0 == *t.segments.last().unwrap())
        .collect();
    // Cut in the middle of the last segment's second record.
    let cut = in_last[1].1 + in_last[1].3 / 2;
    let f = std::fs::OpenOptions::new().write(true).open(&last).unwrap();
    f.set_len(cut).unwrap();
    drop(f);
    let kept = t.records.len() - in_last.len() + 1;

    // The projection has applied records the log no longer holds: refused, saying so.
    let out = copy.path().join("ahead.out");
    let e = match binserver::start(&data, &out, &Options::default()).await {
        Ok(_) => panic!("started with a projection ahead of the log"),
        Err(e) => e,
    };
    assert!(
        e.contains("exit status: 2") && e.contains("rebuild"),
        "refusal should say the projection must be rebuilt:\n{e}"
    );

    // Without the projection: it is rebuilt from the prefix, which the server serves.
    std::fs::remove_dir_all(data.join("projection")).unwrap();
    let out = copy.path().join("prefix.out");
    let mut s = binserver::start(&data, &out, &Options::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let log = whole_log(&s).await;
    let expected: Vec<Value> = t
        .answers
        .log
        .iter()
        .filter(|r| r["position"].as_u64().unwrap() <= kept as u64)
        .cloned()
        .collect();
    assert_eq!(log, expected);
    // And it accepts writes again, at the next position.
    let a = post(
        &s,
        "/api/v1/actions",
        json!({"type": "after-cut", "resource": {"type": "vm", "id": "1"}}),
    )
    .await;
    s.kill();
    assert!(a["id"].as_u64().is_some());
    assert_eq!(verify(&data).unwrap().last_position, kept as u64 + 1);
}

/// (offset of the first byte of the header field or record holding `byte`, a sealed segment)
fn damaged_unit(t: &Template, segment: &Path, byte: u64) -> u64 {
    if byte < HEADER_LEN as u64 {
        // The header: its checksum covers it all, so the scan names offset 0; the chain
        // digest field is named by its offset when only the digest check fails.
        return 0;
    }
    t.records
        .iter()
        .find(|r| r.0 == segment && r.1 <= byte && byte < r.1 + r.3)
        .map(|r| r.1)
        .unwrap_or_else(|| panic!("byte {byte} of {} is in no record", segment.display()))
}

#[test]
fn a_flipped_bit_anywhere_in_a_sealed_segment_is_refused_with_file_and_offset() {
    let t = template();
    let copy = copy_template(t);
    let data = copy.path().join("data");
    let (mut flips, mut bytes_in_both) = (0, 0);
    // Every byte of two sealed segments (the first and a middle one), one bit each.
    for (k, seg) in [&t.segments[0], &t.segments[t.segments.len() / 2]]
        .into_iter()
        .enumerate()
    {
        let path = rebase(t, seg, &data);
        let original = std::fs::read(&path).unwrap();
        assert!(
            t.records.iter().filter(|r| r.0 == *seg).count() >= 2,
            "{} holds fewer than two records",
            seg.display()
        );
        bytes_in_both += original.len();
        for byte in 0..original.len() {
            let mut bytes = original.clone();
            bytes[byte] ^= 1 << ((byte + k) % 8);
            std::fs::write(&path, &bytes).unwrap();
            let (file, offset, reason) = corrupt_at(verify(&data));
            assert_eq!(file, path, "flip at {byte}: {reason}");
            let unit = damaged_unit(t, seg, byte as u64);
            assert!(
                offset == unit || (unit == 0 && offset == HDR_PREV_DIGEST as u64),
                "flip at {} byte {byte}: named offset {offset} ({reason}), expected {unit}",
                seg.display()
            );
            flips += 1;
        }
        std::fs::write(&path, &original).unwrap();
    }
    assert_eq!(
        flips, bytes_in_both,
        "every byte of both segments was flipped"
    );
    verify(&data).expect("the undamaged copy is intact again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_refuses_flipped_bits_naming_file_and_offset() {
    let t = template();
    // A record in the middle of a sealed segment, a header, and a record of the last segment
    // that a later commit follows (so it was acknowledged: not a torn tail).
    let mid = &t.segments[t.segments.len() / 2];
    let in_mid: Vec<_> = t.records.iter().filter(|r| r.0 == *mid).collect();
    let last = t.segments.last().unwrap();
    let in_last: Vec<_> = t.records.iter().filter(|r| r.0 == *last).collect();
    let cases = [
        (
            mid.clone(),
            in_mid[in_mid.len() / 2].1 + 60,
            in_mid[in_mid.len() / 2].1,
        ),
        (t.segments[1].clone(), 20, 0),
        (last.clone(), in_last[0].1 + 70, in_last[0].1),
    ];
    for (seg, byte, named) in cases {
        let copy = copy_template(t);
        let data = copy.path().join("data");
        let path = rebase(t, &seg, &data);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[byte as usize] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        let (file, offset, _) = corrupt_at(verify(&data));
        assert_eq!((file.as_path(), offset), (path.as_path(), named));
        binary_refuses(&data, &path, named).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_middle_segment_is_refused() {
    let t = template();
    let copy = copy_template(t);
    let data = copy.path().join("data");
    let middle = rebase(t, &t.segments[t.segments.len() / 2], &data);
    std::fs::remove_file(&middle).unwrap();
    let (file, offset, reason) = corrupt_at(verify(&data));
    assert_eq!((file.as_path(), offset), (middle.as_path(), 0));
    assert!(reason.contains("missing"), "{reason}");
    binary_refuses(&data, &middle, 0).await;
    // The first and the last are needed just as much.
    for which in [0, t.segments.len() - 1] {
        let copy = copy_template(t);
        let data = copy.path().join("data");
        let seg = rebase(t, &t.segments[which], &data);
        std::fs::remove_file(&seg).unwrap();
        match verify(&data) {
            Err(LogError::Corrupt { .. }) => {}
            other if which == t.segments.len() - 1 => {
                // Losing the whole last segment is indistinguishable from never having
                // written it, except that the projection has applied its records.
                let summary = other.unwrap();
                assert!(summary.last_position < t.records.len() as u64);
                let out = copy.path().join("nolast.out");
                let e = match binserver::start(&data, &out, &Options::default()).await {
                    Ok(_) => panic!("started with the last segment missing"),
                    Err(e) => e,
                };
                assert!(e.contains("rebuild"), "{e}");
            }
            other => panic!("segment {which} deleted: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapped_segments_are_refused() {
    let t = template();
    for (a, b) in [(1, 2), (0, t.segments.len() - 1)] {
        let copy = copy_template(t);
        let data = copy.path().join("data");
        let (pa, pb) = (
            rebase(t, &t.segments[a], &data),
            rebase(t, &t.segments[b], &data),
        );
        let tmp = data.join("swap");
        std::fs::rename(&pa, &tmp).unwrap();
        std::fs::rename(&pb, &pa).unwrap();
        std::fs::rename(&tmp, &pb).unwrap();
        let (file, offset, reason) = corrupt_at(verify(&data));
        // The first of the two no longer carries its own sequence number.
        assert_eq!(file, pa, "{reason}");
        assert_eq!(
            offset,
            action_ledger::log::format::HDR_SEQUENCE as u64,
            "{reason}"
        );
        binary_refuses(&data, &pa, offset).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_projection_is_rebuilt_with_identical_answers() {
    let t = template();
    let copy = copy_template(t);
    let data = copy.path().join("data");
    std::fs::remove_dir_all(data.join("projection")).unwrap();
    let out = copy.path().join("rebuilt.out");
    let mut s = binserver::start(&data, &out, &Options::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let rebuilt = answers(&s).await;
    s.kill();
    assert_eq!(rebuilt.log.len(), t.answers.log.len());
    assert_eq!(rebuilt.actions, t.answers.actions);
    assert_eq!(rebuilt.each.len(), t.answers.each.len());
    for (got, want) in rebuilt.each.iter().zip(&t.answers.each) {
        assert_eq!(got, want);
    }
    assert_eq!(rebuilt, t.answers);
    assert!(data.join("projection").is_dir());
}
