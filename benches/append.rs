//! Durable-append benchmark (issue 2, "Speed"): how many acknowledged, fdatasync'ed appends
//! per second the [`Ledger`] sustains at a fixed number of concurrent appenders, with which
//! acknowledgement latency, next to a plain write + fdatasync loop measured in the same run.
//!
//! A plain `main` rather than criterion: the questions are throughput at a *fixed
//! concurrency* and latency *percentiles* over every acknowledgement, which criterion's
//! per-iteration timing model does not express.
//!
//! For each concurrency level N (default 1, 8, 64, 512):
//! 1. open a fresh ledger on the real filesystem (a temp dir under `target/tmp`, the same
//!    filesystem as the checkout; `/tmp` may be a tmpfs where fdatasync is free) with a
//!    [`MemoryStore`], create N actions, and run N tokio tasks that each loop `submit` of
//!    one ~200-byte progress event against their own action;
//! 2. after a warm-up, measure for a fixed window: durable appends/s (committed positions),
//!    every acknowledgement latency, and the number of fdatasyncs (counted by a [`Storage`]
//!    wrapper), hence the mean fsync batch size;
//! 3. baseline: a loop that appends the same on-disk bytes (same record size, the ledger's
//!    mean batch size rounded) to a plain file with one `File::sync_data` per batch, for the
//!    same window → records/s. The ratio ledger / baseline is the figure of merit: it is the
//!    share of the disk's group-commit capacity the ledger's own work leaves.
//!
//! Reading the numbers: the writer's own time per batch (validation, encoding) does not
//! overlap its fdatasync (the store apply and the answers do: they run on the applier
//! thread), so at high N the ratio falls as that CPU time grows with the batch; `wrCPU` and
//! `fsync%` show which side dominates. Where fdatasync is nearly free (a disk with a
//! write-back cache: 0.05–0.1 ms per batch was seen) the baseline is a CPU-bound write loop
//! of hundreds of thousands of records/s and the ratio measures CPU per record, not the
//! share of the disk's group-commit capacity. On a VM whose CPUs are saturated,
//! fdatasync completions were seen to land on the 4 ms kernel tick (HZ=250): a tight loop
//! then pays a full tick per batch while the ledger, which pauses between batches, pays
//! less — so ratios above 100% at low N are real but flattered. `host` shows the load.
//!
//! Environment:
//! - `APPEND_BENCH_CONCURRENCY=1,8,64` — the levels (default `1,8,64,512`);
//! - `APPEND_BENCH_SECS=5` — measured window per ledger run and per baseline run;
//! - `APPEND_BENCH_WARMUP_SECS=1` — unmeasured warm-up before each window;
//! - `APPEND_BENCH_NO_FSYNC=1` — diagnostics: the ledger's log skips fdatasync, so its rows
//!   show the CPU ceiling of the write path (validation, encoding, apply, wake-ups), not
//!   durable appends.
//!
//! Run with `cargo bench --bench append` (about 50 s with the defaults). Plain `cargo test`
//! does not build or run it; `cargo test --benches` (no `--bench` argument) runs a
//! sub-second smoke pass.

mod common;

use action_ledger::event::codec;
use action_ledger::event::*;
use action_ledger::ledger::memory::MemoryStore;
use action_ledger::ledger::{Ledger, LedgerConfig};
use action_ledger::log::format::record_len;
use action_ledger::log::storage::LogFile;
use action_ledger::log::{FsStorage, Storage};
use common::percentile;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Encoded size of one benchmark event (the record payload), in bytes.
const PAYLOAD_BYTES_TARGET: usize = 200;
/// Single-fsync probe: this many `write(4 KiB) + fdatasync` rounds.
const FSYNC_PROBE_ROUNDS: usize = 200;
const FSYNC_PROBE_WRITE_BYTES: usize = 4096;
/// Guards against a typo turning the benchmark into an hour-long run.
const CONCURRENCY_MAX: usize = 16 * 1024;
const SECS_MAX: u64 = 600;

const PHASE_WARMUP: u8 = 0;
const PHASE_MEASURE: u8 = 1;
const PHASE_STOP: u8 = 2;

// ---------------------------------------------------------------------------------------
// A Storage that counts what the log writer does to the disk.

/// Counters shared by every file the [`CountingStorage`] hands out.
#[derive(Default)]
struct IoCounters {
    syncs: AtomicU64,
    sync_ns: AtomicU64,
    writes: AtomicU64,
    write_ns: AtomicU64,
    write_bytes: AtomicU64,
}

/// Delegates to [`FsStorage`], counting and timing `append` and `sync_data` of log files.
/// The writer does exactly one `append` and one `sync_data` per batch (plus one of each per
/// new segment header, which the benchmark's segment size makes rare).
struct CountingStorage {
    inner: FsStorage,
    counters: Arc<IoCounters>,
    /// Diagnostics only (`APPEND_BENCH_NO_FSYNC=1`): skip fdatasync to measure the
    /// ledger's CPU ceiling. Nothing is durable then, and the output says so.
    skip_sync: bool,
}

struct CountingFile {
    inner: Box<dyn LogFile>,
    counters: Arc<IoCounters>,
    skip_sync: bool,
}

impl LogFile for CountingFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        let t = Instant::now();
        let r = self.inner.append(buf);
        let c = &self.counters;
        c.write_ns
            .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        c.writes.fetch_add(1, Ordering::Relaxed);
        c.write_bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
        r
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let t = Instant::now();
        let r = if self.skip_sync {
            Ok(())
        } else {
            self.inner.sync_data()
        };
        let c = &self.counters;
        c.sync_ns
            .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        c.syncs.fetch_add(1, Ordering::Relaxed);
        r
    }
}

impl CountingStorage {
    fn wrap(&self, file: Box<dyn LogFile>) -> Box<dyn LogFile> {
        Box::new(CountingFile {
            inner: file,
            counters: self.counters.clone(),
            skip_sync: self.skip_sync,
        })
    }
}

impl Storage for CountingStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.inner.read(path)
    }
    fn read_at(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.inner.read_at(path, offset, len)
    }
    fn file_len(&self, path: &Path) -> io::Result<u64> {
        self.inner.file_len(path)
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        Ok(self.wrap(self.inner.create(path)?))
    }
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        Ok(self.wrap(self.inner.open_append(path)?))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path)
    }
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        self.inner.truncate(path, len)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }
}

/// A point-in-time copy of the counters.
#[derive(Clone, Copy, Default)]
struct IoSnapshot {
    syncs: u64,
    sync_ns: u64,
    writes: u64,
    write_ns: u64,
    write_bytes: u64,
}

impl IoCounters {
    fn snapshot(&self) -> IoSnapshot {
        IoSnapshot {
            syncs: self.syncs.load(Ordering::Relaxed),
            sync_ns: self.sync_ns.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            write_ns: self.write_ns.load(Ordering::Relaxed),
            write_bytes: self.write_bytes.load(Ordering::Relaxed),
        }
    }
}

impl IoSnapshot {
    fn since(self, earlier: IoSnapshot) -> IoSnapshot {
        IoSnapshot {
            syncs: self.syncs - earlier.syncs,
            sync_ns: self.sync_ns - earlier.sync_ns,
            writes: self.writes - earlier.writes,
            write_ns: self.write_ns - earlier.write_ns,
            write_bytes: self.write_bytes - earlier.write_bytes,
        }
    }
}

// ---------------------------------------------------------------------------------------
// CPU accounting from /proc, to tell "the disk is the limit" from "the CPU is the limit".

/// CPU time (user + system, in clock ticks) of this process's threads, by role, and of the
/// whole machine.
#[derive(Clone, Copy, Default)]
struct CpuSnapshot {
    writer_ticks: u64,
    runtime_ticks: u64,
    process_ticks: u64,
    /// Machine-wide: busy and total ticks summed over all CPUs (`/proc/stat`).
    host_busy_ticks: u64,
    host_total_ticks: u64,
}

/// Linux's USER_HZ; `/proc` reports thread times in these units.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

fn cpu_snapshot() -> CpuSnapshot {
    let mut snap = CpuSnapshot::default();
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            // "tid (comm) state ppid ...": comm may hold spaces, so split at the last ')'.
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let comm = &stat[open + 1..close];
            let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            // utime and stime are fields 14 and 15 of stat(5); fields[0] is field 3.
            let ticks = fields
                .get(11)
                .and_then(|x| x.parse::<u64>().ok())
                .unwrap_or(0)
                + fields
                    .get(12)
                    .and_then(|x| x.parse::<u64>().ok())
                    .unwrap_or(0);
            snap.process_ticks += ticks;
            if comm == "ledger-writer" {
                snap.writer_ticks += ticks;
            } else if comm.starts_with("tokio-") {
                snap.runtime_ticks += ticks;
            }
        }
    }
    if let Ok(stat) = std::fs::read_to_string("/proc/stat") {
        if let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) {
            let v: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal ...
            let total: u64 = v.iter().take(8).sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            snap.host_total_ticks = total;
            snap.host_busy_ticks = total - idle;
        }
    }
    snap
}

/// CPU use over a window, in percent of one core (so 200% = both cores of a 2-CPU box).
#[derive(Clone, Copy, Default)]
struct CpuUse {
    writer_pct: f64,
    runtime_pct: f64,
    process_pct: f64,
    /// Machine-wide busy share, in percent of *all* CPUs; minus our process, it is what
    /// other work on the machine took from the benchmark.
    host_busy_pct: f64,
}

impl CpuSnapshot {
    fn since(self, earlier: CpuSnapshot, secs: f64) -> CpuUse {
        let pct = |a: u64, b: u64| 100.0 * (a - b) as f64 / CLOCK_TICKS_PER_SEC / secs;
        CpuUse {
            writer_pct: pct(self.writer_ticks, earlier.writer_ticks),
            runtime_pct: pct(self.runtime_ticks, earlier.runtime_ticks),
            process_pct: pct(self.process_ticks, earlier.process_ticks),
            host_busy_pct: 100.0 * (self.host_busy_ticks - earlier.host_busy_ticks) as f64
                / (self.host_total_ticks - earlier.host_total_ticks).max(1) as f64,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The workload.

struct Settings {
    levels: Vec<usize>,
    window: Duration,
    warmup: Duration,
    no_fsync: bool,
    /// Run without `--bench` (by `cargo test --benches`): a short smoke run only.
    smoke: bool,
}

fn env_settings() -> Settings {
    // `cargo bench` passes `--bench`; `cargo test --benches` / `--all-targets` does not, and
    // then one short level is enough to show the benchmark still works.
    if !std::env::args().any(|a| a == "--bench") {
        return Settings {
            levels: vec![8],
            window: Duration::from_millis(300),
            warmup: Duration::from_millis(100),
            no_fsync: false,
            smoke: true,
        };
    }
    let levels = match std::env::var("APPEND_BENCH_CONCURRENCY") {
        Ok(s) => {
            s.split(',')
                .map(|x| {
                    let n: usize = x.trim().parse().unwrap_or_else(|_| {
                        panic!("APPEND_BENCH_CONCURRENCY: {x:?} is not a number")
                    });
                    assert!(
                        (1..=CONCURRENCY_MAX).contains(&n),
                        "APPEND_BENCH_CONCURRENCY: {n} is outside 1..={CONCURRENCY_MAX}"
                    );
                    n
                })
                .collect()
        }
        Err(_) => vec![1, 8, 64, 512],
    };
    let secs = |name: &str, default: f64| -> Duration {
        let v: f64 = common::env_or(name, default);
        assert!(
            v >= 0.0 && v <= SECS_MAX as f64,
            "{name}: {v} is outside 0..={SECS_MAX}"
        );
        Duration::from_secs_f64(v)
    };
    Settings {
        levels,
        window: secs("APPEND_BENCH_SECS", 5.0),
        warmup: secs("APPEND_BENCH_WARMUP_SECS", 1.0),
        no_fsync: std::env::var("APPEND_BENCH_NO_FSYNC").is_ok_and(|v| v == "1"),
        smoke: false,
    }
}

/// The event every appender sends: a progress report whose message pads the encoded entry
/// to exactly [`PAYLOAD_BYTES_TARGET`] bytes.
fn progress_body(message_len: usize) -> EventBody {
    EventBody::Progress(ProgressUpdate {
        progress: Some(42.0),
        state: None,
        message: Some("m".repeat(message_len)),
        pending_ops: Default::default(),
    })
}

/// The encoded size of the record payload the writer will produce for one benchmark event.
/// Integers are fixed-width (codec uses fixint), so the size does not depend on ids or time.
fn payload_len(principal: &str, message_len: usize) -> usize {
    let entry = Entry {
        recorded_at: 0,
        principal: principal.to_string(),
        idempotency: None,
        ops: vec![Op::Event {
            action: 1,
            body: progress_body(message_len),
        }],
    };
    codec::encode_entry(&entry).expect("encode").len()
}

fn submission(commands: Vec<Command>) -> Submission {
    Submission {
        principal: "bench".into(),
        tenant_scope: None,
        idempotency: None,
        commands,
    }
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

struct LedgerRun {
    appends: u64,
    secs: f64,
    lat_sorted_ns: Vec<u64>,
    io: IoSnapshot,
    cpu: CpuUse,
}

impl LedgerRun {
    fn rate(&self) -> f64 {
        self.appends as f64 / self.secs
    }
    fn mean_batch(&self) -> f64 {
        self.appends as f64 / self.io.syncs.max(1) as f64
    }
}

fn run_ledger(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    appenders: usize,
    message_len: usize,
    s: &Settings,
) -> LedgerRun {
    let counters = Arc::new(IoCounters::default());
    let storage = Arc::new(CountingStorage {
        inner: FsStorage,
        counters: counters.clone(),
        skip_sync: s.no_fsync,
    });
    let ledger = Arc::new(
        Ledger::open(
            storage,
            LedgerConfig::new(dir.join("log")),
            Arc::new(MemoryStore::new()),
        )
        .expect("open ledger"),
    );
    // One action per appender, created up front in one submission, so appenders never
    // contend on an action and every measured record is the same 200-byte progress event.
    let creates = (0..appenders)
        .map(|i| {
            Command::Create(CreateAction::new(
                "bench",
                "snapshot",
                "droplet",
                &i.to_string(),
            ))
        })
        .collect::<Vec<_>>();
    let mut ids = Vec::with_capacity(appenders);
    for chunk in creates.chunks(action_ledger::limits::BATCH_COMMANDS_MAX) {
        let done = ledger
            .submit_blocking(submission(chunk.to_vec()))
            .expect("create actions");
        ids.extend(done.actions.iter().map(|a| a.id));
    }

    let phase = Arc::new(AtomicU8::new(PHASE_WARMUP));
    let body = progress_body(message_len);
    let (appends, secs, io, cpu, lat) = rt.block_on(async {
        let tasks = ids
            .iter()
            .map(|&id| {
                let ledger = ledger.clone();
                let phase = phase.clone();
                let sub = submission(vec![Command::Event(RecordEvent {
                    action: ActionRef::Id(id),
                    expected_version: None,
                    body: body.clone(),
                })]);
                tokio::spawn(async move {
                    let mut lat_ns = Vec::new();
                    loop {
                        if phase.load(Ordering::Relaxed) == PHASE_STOP {
                            break;
                        }
                        let t = Instant::now();
                        ledger.submit(sub.clone()).await.expect("durable append");
                        let dt = t.elapsed().as_nanos() as u64;
                        // Every acknowledgement that arrives inside the window counts.
                        if phase.load(Ordering::Relaxed) == PHASE_MEASURE {
                            lat_ns.push(dt);
                        }
                    }
                    lat_ns
                })
            })
            .collect::<Vec<_>>();
        tokio::time::sleep(s.warmup).await;
        let (p0, io0, cpu0, t0) = (
            ledger.committed_position(),
            counters.snapshot(),
            cpu_snapshot(),
            Instant::now(),
        );
        phase.store(PHASE_MEASURE, Ordering::Relaxed);
        tokio::time::sleep(s.window).await;
        phase.store(PHASE_STOP, Ordering::Relaxed);
        let (p1, io1, cpu1, secs) = (
            ledger.committed_position(),
            counters.snapshot(),
            cpu_snapshot(),
            t0.elapsed().as_secs_f64(),
        );
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await.expect("appender task"));
        }
        (p1 - p0, secs, io1.since(io0), cpu1.since(cpu0, secs), lat)
    });
    // Joins the writer thread (blocking), so outside the runtime.
    ledger.close();
    let mut lat_sorted_ns = lat;
    lat_sorted_ns.sort_unstable();
    LedgerRun {
        appends,
        secs,
        lat_sorted_ns,
        io,
        cpu,
    }
}

struct BaselineRun {
    records: u64,
    secs: f64,
    batch_p50_ns: u64,
    batch_p99_ns: u64,
}

/// Appends `batch` records of `record_bytes` each with one `write` + one `sync_data` per
/// batch to a fresh file, for `window` (after `warmup`).
fn run_baseline(
    path: &Path,
    batch: usize,
    record_bytes: usize,
    warmup: Duration,
    window: Duration,
) -> io::Result<BaselineRun> {
    let mut f = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(path)?;
    let buf: Vec<u8> = (0..batch * record_bytes).map(|i| (i % 251) as u8).collect();
    let warm_end = Instant::now() + warmup;
    while Instant::now() < warm_end {
        f.write_all(&buf)?;
        f.sync_data()?;
    }
    let mut lat = Vec::new();
    let t0 = Instant::now();
    let mut records = 0u64;
    while t0.elapsed() < window {
        let t = Instant::now();
        f.write_all(&buf)?;
        f.sync_data()?;
        lat.push(t.elapsed().as_nanos() as u64);
        records += batch as u64;
    }
    let secs = t0.elapsed().as_secs_f64();
    lat.sort_unstable();
    Ok(BaselineRun {
        records,
        secs,
        batch_p50_ns: percentile(&lat, 0.50),
        batch_p99_ns: percentile(&lat, 0.99),
    })
}

/// p50 and p99 of `write(4 KiB) + fdatasync` on a fresh file (after one unmeasured round).
fn fsync_probe(path: &Path) -> io::Result<(u64, u64)> {
    let mut f = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(path)?;
    let buf = vec![0xA5u8; FSYNC_PROBE_WRITE_BYTES];
    f.write_all(&buf)?;
    f.sync_data()?;
    let mut lat = Vec::with_capacity(FSYNC_PROBE_ROUNDS);
    for _ in 0..FSYNC_PROBE_ROUNDS {
        f.write_all(&buf)?;
        let t = Instant::now();
        f.sync_data()?;
        lat.push(t.elapsed().as_nanos() as u64);
    }
    lat.sort_unstable();
    Ok((percentile(&lat, 0.50), percentile(&lat, 0.99)))
}

fn filesystem_of(path: &Path) -> String {
    // `stat -f` names the filesystem type (ext4 shows as "ext2/ext3"); best effort.
    std::process::Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(path)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn main() {
    let settings = env_settings();
    let base_dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(base_dir).expect("create CARGO_TARGET_TMPDIR");

    let principal = "bench";
    let fixed = payload_len(principal, 0);
    assert!(fixed < PAYLOAD_BYTES_TARGET, "event overhead {fixed} B");
    let message_len = PAYLOAD_BYTES_TARGET - fixed;
    let payload = payload_len(principal, message_len);
    assert_eq!(payload, PAYLOAD_BYTES_TARGET);
    let record_bytes = record_len(payload);

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("durable-append benchmark (issue 2)");
    if settings.smoke {
        println!(
            "  smoke run (no --bench argument): one short level; use `cargo bench --bench append`"
        );
    }
    println!(
        "  bench dir      {} (filesystem: {})",
        base_dir.display(),
        filesystem_of(base_dir)
    );
    println!("  cpus           {cores}");
    if settings.no_fsync {
        println!("  !! APPEND_BENCH_NO_FSYNC=1: the ledger skips fdatasync; its rows show the CPU");
        println!("  !! ceiling of the write path, NOT durable appends. The baseline still syncs.");
    }
    println!(
        "  event          progress, record payload {payload} B, on-disk record {record_bytes} B"
    );
    println!(
        "  window         {:.1} s measured after {:.1} s warm-up, per ledger run and per baseline run",
        settings.window.as_secs_f64(),
        settings.warmup.as_secs_f64()
    );
    let probe_dir = tempfile::tempdir_in(base_dir).expect("temp dir");
    let (fsync_p50, fsync_p99) = fsync_probe(&probe_dir.path().join("probe")).expect("probe");
    drop(probe_dir);
    println!(
        "  fdatasync      p50 {:.3} ms, p99 {:.3} ms (after a {FSYNC_PROBE_WRITE_BYTES} B append, {FSYNC_PROBE_ROUNDS} rounds)",
        ms(fsync_p50),
        ms(fsync_p99)
    );
    println!();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");

    println!(
        "{:>4} {:>9} {:>7} {:>7} {:>7} {:>6} {:>7} {:>6} {:>6} {:>5} {:>5} {:>5} {:>10} {:>7} {:>6}",
        "N",
        "appends/s",
        "p50 ms",
        "p99 ms",
        "p999 ms",
        "batch",
        "fsync/s",
        "fsync%",
        "fs ms",
        "wrCPU",
        "rtCPU",
        "host",
        "base rec/s",
        "b.p50ms",
        "ratio"
    );
    let mut notes = Vec::new();
    for &n in &settings.levels {
        let dir = tempfile::tempdir_in(base_dir).expect("temp dir");
        let l = run_ledger(&rt, dir.path(), n, message_len, &settings);
        let batch = (l.mean_batch().round() as usize).max(1);
        let b = run_baseline(
            &dir.path().join("baseline"),
            batch,
            record_bytes,
            settings.warmup.min(Duration::from_millis(500)),
            settings.window,
        )
        .expect("baseline");
        drop(dir);
        let b_rate = b.records as f64 / b.secs;
        let io = l.io;
        println!(
            "{:>4} {:>9.0} {:>7.2} {:>7.2} {:>7.2} {:>6.1} {:>7.0} {:>5.0}% {:>6.2} {:>4.0}% {:>4.0}% {:>4.0}% {:>10.0} {:>7.2} {:>5.0}%",
            n,
            l.rate(),
            ms(percentile(&l.lat_sorted_ns, 0.50)),
            ms(percentile(&l.lat_sorted_ns, 0.99)),
            ms(percentile(&l.lat_sorted_ns, 0.999)),
            l.mean_batch(),
            io.syncs as f64 / l.secs,
            100.0 * io.sync_ns as f64 / (l.secs * 1e9),
            ms(io.sync_ns / io.syncs.max(1)),
            l.cpu.writer_pct,
            l.cpu.runtime_pct,
            l.cpu.host_busy_pct,
            b_rate,
            ms(b.batch_p50_ns),
            100.0 * l.rate() / b_rate,
        );
        notes.push(format!(
            "  N={n}: {} acks sampled, {} appends in {:.2} s; {} writes / {} fdatasyncs / {} B \
             written (records: {} B); write() {:.1}% of window; baseline: batch {batch}, p99 {:.3} ms per batch; \
             whole bench process CPU {:.0}% of one core",
            l.lat_sorted_ns.len(),
            l.appends,
            l.secs,
            io.writes,
            io.syncs,
            io.write_bytes,
            l.appends * record_bytes as u64,
            100.0 * io.write_ns as f64 / (l.secs * 1e9),
            ms(b.batch_p99_ns),
            l.cpu.process_pct,
        ));
    }
    println!();
    println!("  N          concurrent appenders (tokio tasks, each looping submit().await)");
    println!("  appends/s  durable appends per second (committed positions / window)");
    println!("  p50..p999  acknowledgement latency of submit(), every ack in the window");
    println!("  batch      mean fsync batch = appends / fdatasyncs in the window");
    println!("  fsync%     share of the window the writer spent inside fdatasync");
    println!("  fs ms      mean fdatasync duration inside the ledger");
    println!("  wrCPU      CPU of the ledger-writer thread, % of one core (from /proc)");
    println!("  rtCPU      CPU of the tokio worker threads (the appenders), % of one core");
    println!("  host       whole machine busy, % of all cores (other work competes here)");
    println!("  base rec/s plain write + fdatasync loop, same record bytes, batch = ledger");
    println!("             mean batch rounded");
    println!("  b.p50ms    baseline write+fdatasync p50 per batch");
    println!("  ratio      ledger appends/s / baseline records/s (target >= 70% at N >= 64)");
    println!();
    for note in notes {
        println!("{note}");
    }
}
