//! `verify` and `rebuild`.

use super::{hex, line, progress_bar, CliResult, DataDir, Failure};
use crate::ledger::StateStore;
use crate::log::{self, FsStorage, LogError, Storage};
use crate::projection::{self, Projection, ProjectionConfig, ProjectionError};
use std::io::Write;
use std::path::Path;

/// Sizes of the log's segments in order, for progress bars: `(sequence, bytes)`.
pub fn segment_sizes(log_dir: &Path) -> Result<Vec<(u64, u64)>, LogError> {
    let storage = FsStorage;
    let mut out = Vec::new();
    for (seq, path) in log::scan::list_segments(&storage, log_dir)? {
        let len = storage
            .file_len(&path)
            .map_err(|e| LogError::io(&path, e))?;
        out.push((seq, len));
    }
    Ok(out)
}

/// Bytes of the log before `(segment, offset)`, given [`segment_sizes`].
pub fn bytes_before(sizes: &[(u64, u64)], segment: u64, offset: u64) -> u64 {
    sizes
        .iter()
        .take_while(|(s, _)| *s < segment)
        .map(|(_, l)| l)
        .sum::<u64>()
        + offset
}

/// A log error as a command failure: corruption is damage (exit 1), the rest errors (2).
pub fn log_failure(e: LogError) -> Failure {
    match e {
        e @ LogError::Corrupt { .. } => Failure::Damage(e.to_string()),
        e => Failure::error(e.to_string()),
    }
}

/// A log error of a command other than verify: always exit 2, corruption named.
pub fn log_error(e: LogError) -> Failure {
    Failure::error(e.to_string())
}

pub fn verify(args: &DataDir, out: &mut dyn Write) -> CliResult {
    let data_dir = args.existing()?;
    let log_dir = args.log_dir();
    let sizes = segment_sizes(&log_dir).map_err(log_failure)?;
    let bar = progress_bar(sizes.iter().map(|(_, l)| l).sum(), "verifying the log");
    let mut records = 0u64;
    let result = log::verify(&FsStorage, &log_dir, &mut |rec| {
        records += 1;
        if records % 4096 == 0 {
            bar.set_position(bytes_before(&sizes, rec.segment, rec.offset));
        }
        Ok(())
    });
    bar.finish_and_clear();
    let summary = match result {
        Ok(s) => s,
        Err(e @ LogError::Corrupt { .. }) => {
            let msg = e.to_string();
            line(out, &format!("damaged: {msg}"))?;
            return Err(Failure::Damage(msg));
        }
        Err(e) => return Err(Failure::error(e.to_string())),
    };
    line(
        out,
        &format!(
            "log ok: {} records in {} segments, last position {}, head digest {}",
            records,
            summary.segments.len(),
            summary.last_position,
            hex(&summary.last_digest)
        ),
    )?;
    if let Some(t) = &summary.torn_tail {
        line(
            out,
            &format!(
                "note: torn tail of {} bytes at {} offset {} ({}); never acknowledged, the next start cuts it and keeps a copy in log/torn/",
                t.len,
                t.file.display(),
                t.offset,
                t.reason
            ),
        )?;
    }

    let projection_dir = projection::projection_dir(data_dir);
    if !projection_dir.exists() {
        line(
            out,
            "projection: none yet (the next serve or rebuild builds it from the log)",
        )?;
        return Ok(());
    }
    let config = ProjectionConfig {
        cache_capacity_bytes: 16 * 1024 * 1024,
        flush_every_ms: None,
        ..Default::default()
    };
    let projection = match Projection::open(&projection_dir, config) {
        Ok(p) => p,
        Err(ProjectionError::Locked { .. }) => {
            line(
                out,
                "projection: in use by a running server, not checked (the log was)",
            )?;
            return Ok(());
        }
        Err(e) => return Err(Failure::error(e.to_string())),
    };
    if let Some(reason) = &projection.open_report().reset {
        line(
            out,
            &format!("projection: was unusable ({reason}); reset, the next serve rebuilds it"),
        )?;
        return Ok(());
    }
    let report = projection::verify_projection(&FsStorage, &log_dir, &projection)
        .map_err(|e| Failure::error(e.to_string()))?;
    if !report.is_consistent() {
        for d in &report.differences {
            line(out, &format!("projection differs: {d}"))?;
        }
        let msg = format!(
            "{}: the projection differs from the log in {} places; `rebuild` recreates it from the log",
            projection_dir.display(),
            report.differences_total
        );
        line(out, &format!("damaged: {msg}"))?;
        return Err(Failure::Damage(msg));
    }
    let applied = projection.applied_position();
    if applied < report.log_position {
        line(
            out,
            &format!(
                "projection ok: {} actions, applied up to position {applied} of {} (the next serve catches up)",
                report.actions, report.log_position
            ),
        )?;
    } else {
        line(
            out,
            &format!(
                "projection ok: {} actions, applied up to position {applied}",
                report.actions
            ),
        )?;
    }
    Ok(())
}

pub fn rebuild(args: &DataDir, out: &mut dyn Write) -> CliResult {
    let data_dir = args.existing()?;
    let log_dir = args.log_dir();
    let sizes = segment_sizes(&log_dir).map_err(log_error)?;
    let bar = progress_bar(sizes.iter().map(|(_, l)| l).sum(), "rebuilding");
    let result = projection::rebuild(
        &FsStorage,
        &log_dir,
        &projection::projection_dir(data_dir),
        &ProjectionConfig::default(),
        &mut |p| bar.set_position(p.bytes_done),
    );
    bar.finish_and_clear();
    let (projection, summary) = result.map_err(|e| match e {
        projection::rebuild::RebuildError::Projection(ProjectionError::Locked { dir, .. }) => {
            Failure::error(format!(
                "{} is in use by a running server; stop it before rebuilding",
                dir.display()
            ))
        }
        e => Failure::error(e.to_string()),
    })?;
    drop(projection);
    line(
        out,
        &format!(
            "rebuilt: {} records, {} actions, last position {}, in {:.1}s",
            summary.records,
            summary.actions,
            summary.last_position,
            summary.elapsed.as_secs_f64()
        ),
    )?;
    if let Some(t) = summary.torn_tail {
        line(
            out,
            &format!(
                "note: torn tail of {} bytes at {} offset {} left in place; the next start cuts it",
                t.len,
                t.file.display(),
                t.offset
            ),
        )?;
    }
    Ok(())
}
