//! Cluster mode's API tokens: one table in PostgreSQL (`ledger_tokens`, hashes only) shared
//! by every node, so a token created, rotated or revoked on any node works (or stops working)
//! on all of them.
//!
//! - **Changes** ([`ClusterTokens`] as a [`TokenBackend`]): one transaction that locks the
//!   table against other writers (`SHARE ROW EXCLUSIVE`, which still lets readers read),
//!   reads every token, applies the change the token store decided, writes the rows that
//!   differ, bumps the table's version (`ledger_tokens_version`) and sends `NOTIFY
//!   ledger_tokens`, which PostgreSQL delivers at COMMIT. The node that made the change takes
//!   the table it wrote as its own copy at once. Every read returns the version with the
//!   tokens (one statement), and a node keeps the newest version it has seen, so a read that
//!   a change overtook cannot bring back a token the change revoked.
//! - **Following** ([`follow`]): every node `LISTEN`s on [`TOKENS_CHANNEL`] and re-reads the
//!   whole table on each notification and at least every [`CLUSTER_TOKENS_POLL_MS`], so a
//!   lost notification costs at most one poll interval.
//! - **The bound**: a node whose last successful read is older than
//!   [`CLUSTER_TOKENS_STALE_MS`] refuses every stored token (503 `tokens_unavailable`) until
//!   it reads the table again. A token revoked anywhere therefore authenticates nowhere after
//!   at most that long, even on a node cut off from PostgreSQL.

use super::replica::Listener;
use super::{ClusterError, ClusterOptions};
use crate::limits::{CLUSTER_TOKENS_POLL_MS, CLUSTER_TOKENS_STALE_MS};
use crate::tokens::{
    format_time, parse_time, Change, Role, Stored, TokenBackend, TokenError, TokenRecord,
    TokenStore,
};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, Notify};
use tokio_postgres::Client;

/// The channel a change of the token table notifies.
pub const TOKENS_CHANNEL: &str = "ledger_tokens";

/// How long a node trusts its copy of the token table without reading it again.
pub const STALE_AFTER: Duration = Duration::from_millis(CLUSTER_TOKENS_STALE_MS);

/// The version and every token, in one statement (one snapshot): no token row means an
/// empty table.
const SELECT_SQL: &str = "SELECT v.version, t.name, t.tenant, t.role, t.created_at, \
     t.expires_at, t.last_used_at, t.sha256 FROM ledger_tokens_version v \
     LEFT JOIN ledger_tokens t ON true WHERE v.id = 1 ORDER BY t.created_at, t.name";

const UPSERT_SQL: &str = "INSERT INTO ledger_tokens \
     (name, tenant, role, created_at, expires_at, last_used_at, sha256) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) \
     ON CONFLICT (name) DO UPDATE SET tenant = EXCLUDED.tenant, role = EXCLUDED.role, \
     created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at, \
     last_used_at = EXCLUDED.last_used_at, sha256 = EXCLUDED.sha256";

/// The token table of a cluster, over a connection of its own (opened on first use and again
/// after it breaks).
pub struct ClusterTokens {
    options: ClusterOptions,
    client: Mutex<Option<Client>>,
    /// The runtime the blocking [`TokenBackend`] calls run their statements on.
    runtime: tokio::runtime::Handle,
}

fn unavailable(e: ClusterError) -> TokenError {
    TokenError::Unavailable(e.to_string())
}

fn time(s: &str, what: &str) -> Result<DateTime<Utc>, TokenError> {
    parse_time(s)
        .and_then(|t| DateTime::<Utc>::from_timestamp(t, 0))
        .ok_or_else(|| TokenError::Damaged(format!("{what} {s:?} is not an RFC 3339 time")))
}

/// The token of a row of [`SELECT_SQL`], `None` for the row of an empty table.
fn record(row: &tokio_postgres::Row) -> Result<Option<TokenRecord>, TokenError> {
    let Some(name) = row.get::<_, Option<String>>(1) else {
        return Ok(None);
    };
    let role: String = row.get(3);
    let role = Role::parse(&role)
        .ok_or_else(|| TokenError::Damaged(format!("token {name:?} has role {role:?}")))?;
    let text = |t: DateTime<Utc>| format_time(t.timestamp());
    Ok(Some(TokenRecord {
        tenant: row.get(2),
        role,
        created_at: text(row.get(4)),
        expires_at: row.get::<_, Option<DateTime<Utc>>>(5).map(text),
        last_used_at: row.get::<_, Option<DateTime<Utc>>>(6).map(text),
        sha256: row.get(7),
        name,
    }))
}

async fn read_all(client: &impl tokio_postgres::GenericClient) -> Result<Stored, TokenError> {
    let rows = client
        .query(SELECT_SQL, &[])
        .await
        .map_err(|e| unavailable(ClusterError::pg("read the token table")(e)))?;
    let version: i64 = rows
        .first()
        .ok_or_else(|| TokenError::Damaged("ledger_tokens_version has no row".into()))?
        .get(0);
    let tokens = rows
        .iter()
        .filter_map(|r| record(r).transpose())
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Stored {
        version: version as u64,
        tokens,
    })
}

impl ClusterTokens {
    /// The token table of the cluster `options` names. Connects on first use; call from
    /// inside `runtime`'s context or pass its handle.
    pub fn new(options: ClusterOptions, runtime: tokio::runtime::Handle) -> Arc<ClusterTokens> {
        Arc::new(ClusterTokens {
            options,
            client: Mutex::new(None),
            runtime,
        })
    }

    /// The connection, opened again if it broke.
    async fn client(&self) -> Result<tokio::sync::MutexGuard<'_, Option<Client>>, TokenError> {
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_none_or(Client::is_closed) {
            *guard = None;
            let (client, connection) = super::store::connect_raw(&self.options)
                .await
                .map_err(unavailable)?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(error = %e, "token table connection closed");
                }
            });
            client
                .batch_execute("SET synchronous_commit TO on")
                .await
                .map_err(|e| unavailable(ClusterError::pg("set synchronous_commit")(e)))?;
            *guard = Some(client);
        }
        Ok(guard)
    }

    /// Drops the connection (after a statement that did not answer in time): the next use
    /// opens a new one.
    async fn reset(&self) {
        *self.client.lock().await = None;
    }

    /// Every token in the table, and its version.
    pub async fn read(&self) -> Result<Stored, TokenError> {
        let guard = self.client().await?;
        read_all(guard.as_ref().expect("connected")).await
    }

    /// One change as one transaction (see the module's documentation).
    pub async fn change(&self, change: &mut Change<'_>) -> Result<Stored, TokenError> {
        let mut guard = self.client().await?;
        let client = guard.as_mut().expect("connected");
        let pg = |what: &'static str| move |e| unavailable(ClusterError::pg(what)(e));
        let tx = client
            .transaction()
            .await
            .map_err(pg("begin a token change"))?;
        tx.batch_execute("LOCK TABLE ledger_tokens IN SHARE ROW EXCLUSIVE MODE")
            .await
            .map_err(pg("lock the token table"))?;
        let before = read_all(&tx).await?.tokens;
        let mut after = before.clone();
        change(&mut after)?;
        let gone: Vec<&str> = before
            .iter()
            .filter(|b| !after.iter().any(|a| a.name == b.name))
            .map(|b| b.name.as_str())
            .collect();
        if !gone.is_empty() {
            tx.execute("DELETE FROM ledger_tokens WHERE name = ANY($1)", &[&gone])
                .await
                .map_err(pg("delete tokens"))?;
        }
        let mut changed = false;
        for t in after.iter().filter(|a| !before.contains(a)) {
            let expires = t
                .expires_at
                .as_deref()
                .map(|s| time(s, "expires_at"))
                .transpose()?;
            let used = t
                .last_used_at
                .as_deref()
                .map(|s| time(s, "last_used_at"))
                .transpose()?;
            tx.execute(
                UPSERT_SQL,
                &[
                    &t.name,
                    &t.tenant,
                    &t.role.as_str(),
                    &time(&t.created_at, "created_at")?,
                    &expires,
                    &used,
                    &t.sha256,
                ],
            )
            .await
            .map_err(pg("store a token"))?;
            changed = true;
        }
        let version: i64 = if changed || !gone.is_empty() {
            tx.batch_execute(&format!("NOTIFY {TOKENS_CHANNEL}"))
                .await
                .map_err(pg("notify the other nodes"))?;
            tx.query_one(
                "UPDATE ledger_tokens_version SET version = version + 1 WHERE id = 1 \
                 RETURNING version",
                &[],
            )
            .await
            .map_err(pg("count the change"))?
            .get(0)
        } else {
            tx.query_one(
                "SELECT version FROM ledger_tokens_version WHERE id = 1",
                &[],
            )
            .await
            .map_err(pg("read the version"))?
            .get(0)
        };
        tx.commit().await.map_err(pg("commit a token change"))?;
        Ok(Stored {
            version: version as u64,
            tokens: after,
        })
    }
}

impl ClusterTokens {
    /// `work`, bounded by `CLUSTER_APPEND_TIMEOUT_MS`: a PostgreSQL that stopped answering
    /// must not hold a request (or the server's stop) for ever. The connection is dropped
    /// after a timeout; a change that timed out may or may not have been committed.
    async fn bounded<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, TokenError>>,
    ) -> Result<T, TokenError> {
        let limit = Duration::from_millis(crate::limits::CLUSTER_APPEND_TIMEOUT_MS);
        match tokio::time::timeout(limit, work).await {
            Ok(r) => r,
            Err(_) => {
                self.reset().await;
                Err(TokenError::Unavailable(format!(
                    "no answer within CLUSTER_APPEND_TIMEOUT_MS ({} ms)",
                    limit.as_millis()
                )))
            }
        }
    }
}

impl TokenBackend for Arc<ClusterTokens> {
    fn load(&self) -> Result<Stored, TokenError> {
        self.runtime.block_on(self.bounded(self.read()))
    }

    fn update(&self, change: &mut Change<'_>) -> Result<Stored, TokenError> {
        self.runtime.block_on(self.bounded(self.change(change)))
    }
}

/// Opens the token store of a cluster node: the table as it is now (an error if PostgreSQL
/// cannot be read), trusted for [`STALE_AFTER`] after each read. Blocks: call it off the
/// async workers.
pub fn open_store(table: &Arc<ClusterTokens>) -> Result<TokenStore, TokenError> {
    TokenStore::with_backend(Box::new(table.clone()), Some(STALE_AFTER))
}

/// Keeps `store` in step with the table until cancelled: `LISTEN` (reconnected when it
/// breaks) plus a read at least every [`CLUSTER_TOKENS_POLL_MS`].
pub async fn follow(store: Arc<TokenStore>, table: Arc<ClusterTokens>) {
    let wake = Arc::new(Notify::new());
    let mut listener: Option<Listener> = None;
    loop {
        if listener.as_ref().is_none_or(Listener::is_finished) {
            let w = wake.clone();
            listener = Listener::start(&table.options, TOKENS_CHANNEL, move |_| w.notify_one())
                .await
                .inspect_err(|e| tracing::warn!(error = %e, "tokens: LISTEN failed; polling"))
                .ok();
        }
        match tokio::time::timeout(STALE_AFTER, table.read()).await {
            Ok(Ok(stored)) => {
                if let Err(e) = store.replace(stored) {
                    tracing::error!(error = %e, "tokens: the token table is damaged; keeping the copy read before");
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "tokens: reading the token table failed"),
            Err(_) => {
                tracing::warn!(
                    "tokens: reading the token table did not answer in time; reconnecting"
                );
                table.reset().await;
            }
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(CLUSTER_TOKENS_POLL_MS)) => {}
        }
    }
}

/// The [`follow`] task of a node; dropping it stops the task.
pub struct Following(tokio::task::JoinHandle<()>);

impl Following {
    pub fn spawn(store: Arc<TokenStore>, table: Arc<ClusterTokens>) -> Following {
        Following(tokio::spawn(follow(store, table)))
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        self.0.abort();
    }
}
