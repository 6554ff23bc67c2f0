//! The floor sled 0.34 puts under any projection write: inserts per second into a fresh
//! database with the projection's own settings (HighThroughput mode, explicit cache, no
//! periodic flush), in sled batches of 1024, for sequential and scattered 9-byte keys and a
//! few value sizes. A rebuild that writes K keys per action cannot beat
//! `actions × K / (this rate)`, whatever the ledger does around it; the figures explain the
//! rebuild ratio reported by `cargo bench --bench query`.
//!
//! Environment: `SLED_FLOOR_KEYS=1000000` keys per case, `SLED_FLOOR_CACHE_MB=64`.
//! Run with `cargo bench --bench sled_floor`.

mod common;

use common::env_or;
use std::time::Instant;

fn main() {
    let n: u64 = env_or("SLED_FLOOR_KEYS", 1_000_000);
    let cache_mb: u64 = env_or("SLED_FLOOR_CACHE_MB", 64);
    let tmp = tempfile::tempdir().expect("temp dir");
    println!("sled floor: {n} keys per case, cache {cache_mb} MiB, batches of 1024");
    for (value_len, scattered) in [(16, false), (16, true), (300, false), (300, true)] {
        let dir = tmp.path().join(format!("{value_len}-{scattered}"));
        let db = sled::Config::new()
            .path(&dir)
            .cache_capacity(cache_mb << 20)
            .flush_every_ms(None)
            .mode(sled::Mode::HighThroughput)
            .open()
            .expect("open sled");
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
            let mut key = vec![1u8];
            key.extend_from_slice(&k.to_be_bytes());
            batch.insert(key, value.clone());
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
