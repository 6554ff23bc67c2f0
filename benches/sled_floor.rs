//! The floor sled 0.34 puts under any projection write: inserts per second into a fresh
//! database with the projection's own settings (HighThroughput mode, explicit cache, no
//! periodic flush), in sled batches of 1024, for sequential and scattered 9-byte keys and a
//! few value sizes. A rebuild that writes K keys per action cannot beat
//! `actions × K / (this rate)`, whatever the ledger does around it; the figures explain the
//! rebuild ratio reported by `cargo bench --bench query`.
//!
//! Environment: `SLED_FLOOR_KEYS=1000000` keys per case, `SLED_FLOOR_CACHE_MB=64`.
//! Run with `cargo bench --bench sled_floor`.
//!
//! **Memory mode** (`SLED_FLOOR_MEMORY=1000000,10000000`): for each count, a store of that
//! many sequential keys with 300-byte values (a snapshot's size) is written and closed, then
//! a fresh child process opens it with the same settings and reports its VmRSS after the
//! open and after `SLED_FLOOR_READS` (200000) random reads. sled 0.34 keeps an in-memory
//! record of every page, cached or not, and a leaf page holds at most 16 keys, so this is the
//! part of a server's memory that grows with the number of keys whatever the cache size.

mod common;

use common::env_or;
use std::time::Instant;

fn main() {
    if let Ok(dir) = std::env::var("SLED_FLOOR_CHILD_DIR") {
        return memory_child(&dir);
    }
    if let Ok(sizes) = std::env::var("SLED_FLOOR_MEMORY") {
        return memory(&sizes);
    }
    let n: u64 = env_or("SLED_FLOOR_KEYS", 1_000_000);
    let cache_mb: u64 = env_or("SLED_FLOOR_CACHE_MB", 64);
    let tmp = tempfile::tempdir().expect("temp dir");
    println!("sled floor: {n} keys per case, cache {cache_mb} MiB, batches of 1024");
    for (value_len, scattered) in [(16, false), (16, true), (300, false), (300, true)] {
        let dir = tmp.path().join(format!("{value_len}-{scattered}"));
        let db = open(&dir, cache_mb);
        let value = vec![7u8; value_len];
        let started = Instant::now();
        let mut batch = sled::Batch::default();
        for i in 0..n {
            // A multiplicative hash scatters consecutive numbers over the key space.
            let k = if scattered {
                i.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            } else {
                i
            };
            batch.insert(key(k), value.clone());
            if (i + 1) % 1024 == 0 {
                db.apply_batch(std::mem::take(&mut batch)).expect("batch");
            }
        }
        db.apply_batch(batch).expect("batch");
        let elapsed = started.elapsed();
        assert_eq!(db.len() as u64, n);
        println!(
            "{:>3}-byte values, {:<10} keys: {:>8.0} inserts/s ({:.1} µs each)",
            value_len,
            if scattered { "scattered" } else { "sequential" },
            n as f64 / elapsed.as_secs_f64(),
            elapsed.as_secs_f64() * 1e6 / n as f64
        );
    }
}

/// sled with the projection's settings.
fn open(dir: &std::path::Path, cache_mb: u64) -> sled::Db {
    sled::Config::new()
        .path(dir)
        .cache_capacity(cache_mb << 20)
        .flush_every_ms(None)
        .mode(sled::Mode::HighThroughput)
        .open()
        .expect("open sled")
}

fn key(i: u64) -> Vec<u8> {
    let mut key = vec![1u8];
    key.extend_from_slice(&i.to_be_bytes());
    key
}

fn rss_mb() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn dir_mb(dir: &std::path::Path) -> f64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let meta = entry.metadata().expect("metadata");
        total += if meta.is_dir() {
            (dir_mb(&entry.path()) * 1048576.0) as u64
        } else {
            meta.len()
        };
    }
    total as f64 / 1048576.0
}

/// Writes a store per size, then measures a fresh process serving it (see the module doc).
fn memory(sizes: &str) {
    let cache_mb: u64 = env_or("SLED_FLOOR_CACHE_MB", 64);
    let reads: u64 = env_or("SLED_FLOOR_READS", 200_000);
    let tmp = tempfile::tempdir().expect("temp dir");
    println!("sled memory: cache {cache_mb} MiB, 300-byte values, {reads} random reads");
    for n in sizes
        .split(',')
        .map(|s| s.trim().parse::<u64>().expect("a size"))
    {
        let dir = tmp.path().join(n.to_string());
        let started = Instant::now();
        {
            let db = open(&dir, cache_mb);
            let value = vec![7u8; 300];
            let mut batch = sled::Batch::default();
            for i in 0..n {
                batch.insert(key(i), value.clone());
                if (i + 1) % 1024 == 0 {
                    db.apply_batch(std::mem::take(&mut batch)).expect("batch");
                }
            }
            db.apply_batch(batch).expect("batch");
            db.flush().expect("flush");
        }
        let written = started.elapsed();
        let out = std::process::Command::new(std::env::current_exe().expect("own path"))
            .env("SLED_FLOOR_CHILD_DIR", &dir)
            .env("SLED_FLOOR_CHILD_KEYS", n.to_string())
            .output()
            .expect("child");
        assert!(out.status.success(), "child failed: {out:?}");
        let child = String::from_utf8_lossy(&out.stdout);
        println!(
            "{n:>9} keys: written in {:.0} s, {:.0} MB on disk; {}",
            written.as_secs_f64(),
            dir_mb(&dir),
            child.trim()
        );
        std::fs::remove_dir_all(&dir).expect("remove store");
    }
}

fn memory_child(dir: &str) {
    let cache_mb: u64 = env_or("SLED_FLOOR_CACHE_MB", 64);
    let reads: u64 = env_or("SLED_FLOOR_READS", 200_000);
    let n: u64 = env_or("SLED_FLOOR_CHILD_KEYS", 1);
    let before = rss_mb();
    let started = Instant::now();
    let db = open(std::path::Path::new(dir), cache_mb);
    let opened = started.elapsed();
    let after_open = rss_mb();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for _ in 0..reads {
        // xorshift: random keys over the whole store, so most reads page a leaf in.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        assert!(db.get(key(x % n)).expect("get").is_some());
    }
    println!(
        "open {:.1} s; VmRSS before open {before:.0} MB, after open {after_open:.0} MB, after the reads {:.0} MB",
        opened.as_secs_f64(),
        rss_mb()
    );
}
