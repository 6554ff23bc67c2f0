//! [`ClusterNode`]: one `serve` process in cluster mode — its leadership, and the replica
//! task that copies what other leaders committed into the node's ledger.
//!
//! Start-up, in order: connect to PostgreSQL (schema created or checked), check that the
//! local log is a prefix of the cluster log, copy everything it lacks (a node joining late
//! bootstraps here), and only then compete for the lease — so a node never leads from
//! behind. From then on the replica task tails the cluster log for good (LISTEN + polling;
//! while leading it only polls, for a batch whose commit the writer never heard confirmed).

use super::{
    ClusterLog, ClusterOptions, Leadership, Replica, ReplicaError, ReplicaOptions, ReplicaStats,
    Role,
};
use crate::ledger::Ledger;
use crate::limits::CLUSTER_LOG_STALE_MS;
use crate::log::LogConfig;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Cluster mode as configured (`cluster_log`, `node_id`, `advertise_url`,
/// `cluster_lease_ms`); `log: None` is the embedded default.
#[derive(Clone, Debug, Default)]
pub struct ClusterSettings {
    pub log: Option<String>,
    pub node_id: Option<String>,
    pub advertise_url: Option<String>,
    pub lease_ms: u64,
}

impl ClusterSettings {
    pub fn new() -> ClusterSettings {
        ClusterSettings {
            lease_ms: crate::limits::CLUSTER_LEASE_TTL_MS_DEFAULT,
            ..Default::default()
        }
    }

    /// The options of a node listening on `listen`: the advertise URL defaults to
    /// `http://LISTEN` (refused for an unspecified address such as 0.0.0.0, which other
    /// nodes cannot reach), the node id to the advertise URL.
    pub fn options(&self, listen: std::net::SocketAddr) -> Result<Option<ClusterOptions>, String> {
        let Some(url) = &self.log else {
            return Ok(None);
        };
        let advertise_url = match &self.advertise_url {
            Some(u) => u.clone(),
            None if listen.ip().is_unspecified() => {
                return Err(format!(
                    "advertise_url must be set when listening on {listen}: other nodes forward writes to it"
                ))
            }
            None => format!("http://{listen}"),
        };
        let mut options = ClusterOptions::new(
            url.clone(),
            self.node_id
                .clone()
                .unwrap_or_else(|| advertise_url.clone()),
        );
        options.advertise_url = advertise_url;
        options.lease_ttl = std::time::Duration::from_millis(self.lease_ms);
        Ok(Some(options))
    }
}

/// What `/readyz` and `/metrics` say about the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    pub role: Role,
    /// Last position applied to the projection.
    pub applied_position: u64,
    /// The highest committed position this node knows of.
    pub cluster_position: u64,
    /// From the commit of the last copied batch in PostgreSQL to its local append.
    pub lag_micros: u64,
    /// Whether the replica stopped for good (a broken chain, a divergence, a local failure)
    /// or the local ledger refuses writes after a storage failure ([`ClusterNode::failed`]).
    pub replica_failed: bool,
    /// Time since the node last heard from PostgreSQL ([`super::Contact`]).
    pub last_contact: Duration,
}

impl NodeStatus {
    /// Whether the node heard from PostgreSQL within [`CLUSTER_LOG_STALE_MS`].
    pub fn cluster_log_reachable(&self) -> bool {
        self.last_contact <= Duration::from_millis(CLUSTER_LOG_STALE_MS)
    }
}

/// A running cluster node.
pub struct ClusterNode {
    options: ClusterOptions,
    leadership: Arc<OnceLock<Leadership>>,
    role: watch::Receiver<Role>,
    stats: Arc<ReplicaStats>,
    ledger: Arc<Ledger>,
    replica: JoinHandle<Result<(), ReplicaError>>,
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        self.replica.abort();
    }
}

impl ClusterNode {
    /// Brings `ledger`'s local log up to the cluster log's head over `cluster` (the
    /// connection start-up opened first, to check PostgreSQL before the ledger opens; the
    /// replica keeps it), then starts leadership and the replica task. `leadership` is the slot the ledger's writer takes its term from
    /// ([`crate::ledger::ClusterLink`]).
    pub async fn start(
        cluster: ClusterLog,
        log: LogConfig,
        ledger: Arc<Ledger>,
        leadership: Arc<OnceLock<Leadership>>,
    ) -> Result<ClusterNode, ReplicaError> {
        let options = cluster.options().clone();
        let mut replica =
            Replica::for_ledger(cluster, ReplicaOptions::new(log), ledger.clone()).await?;
        let copied = replica.catch_up().await?;
        tracing::info!(
            records = copied,
            position = ledger.log_head().position,
            "replica caught up with the cluster log"
        );
        let stats = replica.stats();
        let started = Leadership::start_with(options.clone(), stats.contact.clone());
        let role = started.role();
        let _ = leadership.set(started);
        replica.follow_role(role.clone());
        let task = tokio::spawn(async move {
            let result = replica.run().await;
            replica.close().await;
            result
        });
        Ok(ClusterNode {
            options,
            leadership,
            role,
            stats,
            ledger,
            replica: task,
        })
    }

    pub fn options(&self) -> &ClusterOptions {
        &self.options
    }

    /// The role channel.
    pub fn role(&self) -> watch::Receiver<Role> {
        self.role.clone()
    }

    pub fn status(&self) -> NodeStatus {
        let applied = self.ledger.committed_position();
        NodeStatus {
            role: self.role.borrow().clone(),
            applied_position: applied,
            cluster_position: self.stats.seen_head.load(Ordering::Relaxed).max(applied),
            lag_micros: self.stats.lag_micros.load(Ordering::Relaxed),
            replica_failed: self.failed(),
            last_contact: self.stats.contact.age(),
        }
    }

    /// Whether this node failed for good: its replica stopped (a broken chain, a divergence,
    /// a local append that failed) or a local storage failure poisoned its ledger's writer
    /// (which also ended its leadership). Such a node is not ready and takes no writes until
    /// it is restarted.
    pub fn failed(&self) -> bool {
        self.replica.is_finished() || self.ledger.stats().poisoned.load(Ordering::Relaxed)
    }

    /// Stops leading and the replica task (a clean stop): the writer gets no term from now
    /// on, and a lease this node held is released, so another node takes over at once
    /// rather than after the lease time.
    pub async fn stop(&self) {
        self.replica.abort();
        let Some(l) = self.leadership.get() else {
            return;
        };
        let held = l.term();
        l.abort();
        if let Some(term) = held {
            let release = async {
                let log = ClusterLog::connect(self.options.clone()).await?;
                log.release_lease(&term.lease).await
            };
            match tokio::time::timeout(self.options.connect_timeout, release).await {
                Ok(Ok(())) => tracing::info!(epoch = term.lease.epoch, "released the lease"),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "could not release the lease; it expires on its own")
                }
                Err(_) => {
                    tracing::warn!("could not release the lease in time; it expires on its own")
                }
            }
        }
    }
}
