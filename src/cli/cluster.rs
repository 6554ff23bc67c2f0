//! `cluster status` (what the cluster log says: head, lease, leader) and `cluster init`
//! (copy a single-node ledger's log into an empty cluster log, keeping every position,
//! batch and digest, and its tokens into the cluster's token table, so the data directory
//! can then serve as a cluster node).

use super::{hex, line, CliResult, DataDir, Failure};
use crate::cluster::tokens::ClusterTokens;
use crate::cluster::{Acquire, ClusterLog, ClusterOptions, Head, Lease};
use crate::log::format::Digest;
use crate::log::writer::NewRecord;
use crate::log::FsStorage;
use clap::{Args, Subcommand};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Subcommand)]
pub enum ClusterCmd {
    /// Print the cluster log's head (position, digest, epoch) and lease (leader, expiry).
    /// Exit 0, or 2 when PostgreSQL cannot be reached.
    Status(ClusterLogArg),
    /// Copy a single-node ledger's log into an empty cluster log, keeping every position,
    /// batch and digest; then serve the data directory with --cluster-log. The server must be
    /// stopped. Exit 0, or 2 (a cluster log that is not empty, a running cluster, an error).
    Init(InitArgs),
}

#[derive(Args, Clone, Debug)]
pub struct ClusterLogArg {
    /// PostgreSQL URL of the cluster log.
    #[arg(long, env = "ACTION_LEDGER_CLUSTER_LOG", value_name = "URL")]
    pub cluster_log: String,
}

#[derive(Args, Clone, Debug)]
pub struct InitArgs {
    #[command(flatten)]
    pub data: DataDir,
    #[command(flatten)]
    pub log: ClusterLogArg,
}

/// The lease `cluster init` holds while it copies: long enough for slow batches, renewed
/// every third of it, released at the end.
const INIT_LEASE: Duration = Duration::from_secs(30);
/// Batches read ahead of the copy.
const INIT_READ_AHEAD_BATCHES: usize = 64;

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::error(format!("cannot start the async runtime: {e}")))
}

async fn connect(url: &str, node_id: &str, ttl: Duration) -> Result<ClusterLog, Failure> {
    let mut options = ClusterOptions::new(url, node_id);
    options.lease_ttl = ttl;
    ClusterLog::connect(options)
        .await
        .map_err(|e| Failure::error(e.to_string()))
}

pub fn status(args: &ClusterLogArg, out: &mut dyn Write) -> CliResult {
    runtime()?.block_on(async {
        let log = connect(&args.cluster_log, "status", INIT_LEASE).await?;
        let err = |e: crate::cluster::ClusterError| Failure::error(e.to_string());
        let head = log.head().await.map_err(err)?;
        let lease = log.lease().await.map_err(err)?;
        line(
            out,
            &format!(
                "head: position {}, epoch {}, digest {}",
                head.position,
                head.epoch,
                hex(&head.digest)
            ),
        )?;
        let leader = match (&lease.holder, lease.valid) {
            (Some(h), true) => format!(
                "{h} ({})",
                lease.advertise_url.as_deref().unwrap_or("no advertise URL")
            ),
            _ => "none".into(),
        };
        line(out, &format!("leader: {leader}"))?;
        let expires = lease
            .expires_at
            .map_or("never taken".into(), |t| t.to_rfc3339());
        line(
            out,
            &format!(
                "lease: epoch {}, expires {expires} ({})",
                lease.epoch,
                if lease.valid { "valid" } else { "expired" }
            ),
        )?;
        line(
            out,
            &format!("schema version: {}", crate::cluster::schema::SCHEMA_VERSION),
        )
    })
}

/// A local record, as read, with where it is in the local log.
struct LocalRecord {
    position: u64,
    digest: Digest,
    kind: u8,
    schema: u16,
    payload: Vec<u8>,
}

/// One local batch (batch offsets 0, 1, 2, …).
type Batch = Vec<LocalRecord>;

pub fn init(args: &InitArgs, out: &mut dyn Write) -> CliResult {
    let data_dir = args.data.existing()?;
    let _lock = super::lock_unserved(data_dir, "running cluster init")?;
    let log_dir = args.data.log_dir();
    runtime()?.block_on(async {
        let log = connect(&args.log.cluster_log, "cluster-init", INIT_LEASE).await?;
        let err = |e: crate::cluster::ClusterError| Failure::error(e.to_string());
        let head = log.head().await.map_err(err)?;
        if head.position != 0 {
            return Err(Failure::error(format!(
                "the cluster log already holds {} records; cluster init only fills an empty one (a node joins a cluster by serving with --cluster-log and an empty data directory)",
                head.position
            )));
        }
        let (mut lease, head) = match log.acquire_lease().await.map_err(err)? {
            Acquire::Acquired { lease, head } => (lease, head),
            Acquire::HeldBy(info) => {
                return Err(Failure::error(format!(
                    "node {} holds the cluster log's lease: stop the cluster before cluster init",
                    info.holder.unwrap_or_default()
                )))
            }
        };
        let copied = copy(&log, &mut lease, head, log_dir).await;
        // Released whatever happened, so a node can lead at once.
        let _ = log.release_lease(&lease).await;
        let (records, digest) = copied?;
        line(
            out,
            &format!(
                "cluster init: copied {records} records (positions 1..={records}); head digest {}",
                hex(&digest)
            ),
        )?;
        let (tokens, kept) = copy_tokens(&log, data_dir).await?;
        let kept = if kept.is_empty() {
            String::new()
        } else {
            format!(
                "; not copied, the cluster already has tokens of these names: {}",
                kept.join(", ")
            )
        };
        line(out, &format!("cluster init: copied {tokens} tokens{kept}"))
    })
}

/// Copies the data directory's tokens (hashes, expiries, last uses) into the cluster's token
/// table, except those whose name the table already has. Returns how many it copied and the
/// names it left out.
async fn copy_tokens(log: &ClusterLog, data_dir: &Path) -> Result<(usize, Vec<String>), Failure> {
    use crate::tokens::TokenBackend;
    let err = |e: crate::tokens::TokenError| Failure::error(e.to_string());
    let local = crate::tokens::FileTokens::new(data_dir.join("tokens.json"))
        .load()
        .map_err(err)?
        .tokens;
    let table = ClusterTokens::new(log.options().clone(), tokio::runtime::Handle::current());
    let (mut copied, mut kept) = (0, Vec::new());
    table
        .change(&mut |tokens| {
            for t in &local {
                if tokens.iter().any(|c| c.name == t.name) {
                    kept.push(t.name.clone());
                } else if tokens.len() >= crate::tokens::TOKENS_MAX {
                    return Err(crate::tokens::TokenError::Invalid {
                        field: "tokens",
                        reason: format!(
                            "the cluster would hold more than TOKENS_MAX ({}) tokens",
                            crate::tokens::TOKENS_MAX
                        ),
                    });
                } else {
                    tokens.push(t.clone());
                    copied += 1;
                }
            }
            Ok(())
        })
        .await
        .map_err(err)?;
    Ok((copied, kept))
}

/// Reads the local log batch by batch (on a blocking thread, read-only scan) and appends
/// each batch to the cluster log as one batch, checking that it gets the local digests.
async fn copy(
    log: &ClusterLog,
    lease: &mut Lease,
    mut head: Head,
    log_dir: std::path::PathBuf,
) -> Result<(u64, Digest), Failure> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Batch>(INIT_READ_AHEAD_BATCHES);
    let reader = tokio::task::spawn_blocking(move || {
        let mut batch = Batch::new();
        let summary = crate::log::verify(&FsStorage, &log_dir, &mut |rec| {
            if rec.meta.batch_offset == 0 && !batch.is_empty() {
                tx.blocking_send(std::mem::take(&mut batch))
                    .map_err(|_| "the copy stopped".to_string())?;
            }
            batch.push(LocalRecord {
                position: rec.meta.position,
                digest: rec.digest,
                kind: rec.meta.kind,
                schema: rec.meta.schema,
                payload: rec.payload.to_vec(),
            });
            Ok(())
        });
        if !batch.is_empty() {
            let _ = tx.blocking_send(batch);
        }
        summary
    });
    let mut renewed = Instant::now();
    while let Some(batch) = rx.recv().await {
        if renewed.elapsed() > INIT_LEASE / 3 {
            *lease = log
                .renew_lease(lease)
                .await
                .map_err(|e| Failure::error(e.to_string()))?;
            renewed = Instant::now();
        }
        let records: Vec<NewRecord<'_>> = batch
            .iter()
            .map(|r| NewRecord {
                kind: r.kind,
                schema: r.schema,
                payload: &r.payload,
            })
            .collect();
        let appended = log
            .append(lease, &head, &records)
            .await
            .map_err(|e| Failure::error(format!("copying position {}: {e}", head.position + 1)))?;
        for (a, r) in appended.iter().zip(&batch) {
            if (a.position, a.digest) != (r.position, r.digest) {
                return Err(Failure::error(format!(
                    "position {}: the cluster log computed another digest than the local log's; nothing after it was copied",
                    r.position
                )));
            }
        }
        let last = appended.last().expect("a batch is never empty");
        head.position = last.position;
        head.digest = last.digest;
    }
    let summary = reader
        .await
        .map_err(|e| Failure::error(format!("reading the local log failed: {e}")))?
        .map_err(|e| Failure::error(e.to_string()))?;
    if summary.last_position != head.position {
        return Err(Failure::error(format!(
            "copied up to position {} but the local log ends at {}",
            head.position, summary.last_position
        )));
    }
    // The cluster log was empty: positions 1..=head are the records copied.
    Ok((head.position, head.digest))
}
