//! Cluster mode's log of record in PostgreSQL (docs/cluster.md).
//!
//! Several ledger nodes share one log kept in PostgreSQL. One node at a time holds the
//! **lease** and is the leader, the only writer; every append it makes is **fenced** by the
//! lease's epoch inside the very statement that appends, so a deposed or paused leader
//! appends nothing and is told so ([`ClusterError::Deposed`], [`ClusterError::LeaseExpired`]).
//! Positions are gapless and in commit order: they come from a row-locked head row, not a
//! sequence. Each record is stored with the exact position, batch offset and chain digest
//! the embedded log writer gives it ([`crate::log::format::record_digest`]), so a node's local
//! replica is byte-for-byte the log a single node would have written.
//!
//! - [`schema`]: the tables, their creation and the schema version.
//! - [`store`]: [`ClusterLog`], the connection: lease, fenced append, reads.
//! - [`leader`]: [`Leadership`], the task that acquires, renews and gives up the lease and
//!   publishes the node's [`Role`].
//! - [`replica`]: [`Replica`], a follower's verified local copy of the log (LISTEN + polling).
//!
//! - [`tokens`]: the cluster's API tokens in PostgreSQL, and each node's following of them.
//!
//! - [`node`]: [`ClusterNode`], a `serve` process in cluster mode: start-up order,
//!   leadership, the replica task copying into the node's ledger, and its status.
//!
//! The ledger's writer commits a leader's batches here first
//! (`crate::ledger::ClusterLink`); HTTP forwards a follower's writes to the leader
//! (`crate::http::cluster`).

pub mod leader;
pub mod node;
pub mod replica;
pub mod schema;
pub mod store;
pub mod tokens;

pub use leader::{Leadership, Role, StepDown, StepDownReason, Term};
pub use node::{ClusterNode, ClusterSettings, NodeStatus};
pub use replica::{Replica, ReplicaError, ReplicaHead, ReplicaOptions, ReplicaStats};
pub use store::{
    check_chain, Acquire, Appended, ClusterLog, ClusterOptions, ClusterRecord, Head, Lease,
    LeaseInfo, NOTIFY_CHANNEL,
};

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use thiserror::Error;

/// When this node last heard from PostgreSQL: a replica read, a notification, a lease
/// acquisition, renewal or the lease holder's answer. `/readyz` and `/metrics` report it, and
/// past [`crate::limits::CLUSTER_LOG_STALE_MS`] the node is not ready.
#[derive(Debug)]
pub struct Contact {
    origin: Instant,
    /// Milliseconds from `origin` to the last contact.
    last_ms: AtomicU64,
}

impl Default for Contact {
    /// Heard from just now (a node starts only after reaching PostgreSQL).
    fn default() -> Contact {
        Contact {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
}

impl Contact {
    /// Notes a successful exchange with PostgreSQL, now.
    pub fn touch(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Time since the last successful exchange.
    pub fn age(&self) -> Duration {
        self.origin
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Errors of the cluster log. The `Deposed`/`LeaseExpired`/`HeadMoved` family means "this
/// node's append inserted nothing and it must stop acting as leader"
/// ([`ClusterError::is_step_down`]).
#[derive(Debug, Error)]
pub enum ClusterError {
    /// The cluster log URL does not parse.
    #[error("bad cluster log URL: {0}")]
    BadUrl(String),
    /// PostgreSQL could not be reached or refused the connection.
    #[error("cannot connect to the cluster log at {target}: {source}")]
    Connect {
        /// host:port/database, without any password.
        target: String,
        #[source]
        source: tokio_postgres::Error,
    },
    /// Connecting took longer than the connect timeout.
    #[error("cannot connect to the cluster log at {target}: no answer within {timeout_ms} ms")]
    ConnectTimeout { target: String, timeout_ms: u64 },
    /// The database holds a schema written by a newer version of the ledger.
    #[error(
        "the cluster log's schema is version {found}, newer than this build supports \
         ({supported}); upgrade this node"
    )]
    SchemaTooNew { found: i32, supported: i32 },
    /// The database holds tables of our names that are not a ledger schema we know.
    #[error("the cluster log's schema is not usable: {0}")]
    SchemaInvalid(String),
    /// Another node acquired the lease: this node's epoch is over.
    #[error("deposed: this node's epoch {epoch} is over; epoch {current_epoch} is the leader's")]
    Deposed { epoch: u64, current_epoch: u64 },
    /// This node's lease ran out (it paused, or could not renew in time). Still no other
    /// leader, but its epoch may not append again: it must acquire a new lease (a new epoch).
    #[error("lease of epoch {epoch} expired; this node is no longer the leader")]
    LeaseExpired { epoch: u64 },
    /// The head is not where this leader believed (another writer of the same epoch appended,
    /// or the leader's view is stale): nothing appended; re-read the head.
    #[error(
        "the log head moved: expected position {expected_position}, the log is at {head_position}"
    )]
    HeadMoved {
        expected_position: u64,
        head_position: u64,
    },
    /// A batch breaks a limit (too many records, a record too large).
    #[error("{0}")]
    Limit(String),
    /// Records read from PostgreSQL do not continue the chain (gap, wrong digest).
    #[error("cluster log chain broken at position {position}: {reason}")]
    ChainBroken { position: u64, reason: String },
    /// Any other PostgreSQL error (connection lost, statement failed).
    #[error("cluster log: {context}: {source}")]
    Postgres {
        context: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
}

impl ClusterError {
    /// True when the append inserted nothing because this node is not (or no longer) the
    /// leader at the head it believed: it must step down, catch up, and maybe re-acquire.
    pub fn is_step_down(&self) -> bool {
        matches!(
            self,
            ClusterError::Deposed { .. }
                | ClusterError::LeaseExpired { .. }
                | ClusterError::HeadMoved { .. }
        )
    }

    pub(crate) fn pg(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> ClusterError {
        move |source| ClusterError::Postgres { context, source }
    }
}
