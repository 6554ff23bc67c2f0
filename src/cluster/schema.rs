//! The cluster log's tables, created and versioned by the ledger itself.
//!
//! ```text
//! ledger_meta   (id = 1, schema_version, created_at)
//! ledger_head   (id = 1, position, digest, epoch, updated_at)        the row every append locks
//! ledger_lease  (id = 1, epoch, holder, advertise_url, acquired_at, expires_at)
//! ledger_log    (position PK, epoch, batch_offset, kind, schema_version, payload, digest,
//!                recorded_at)                                          one row per log record
//! ledger_tokens (name PK, tenant, role, created_at, expires_at, last_used_at, sha256)
//!                                                  the cluster's API tokens (version 2)
//! ledger_tokens_version (id = 1, version)          bumped by every change of the tokens
//! ```
//!
//! `ledger_head.epoch` is the fencing token: a new leader sets it in the same statement that
//! takes the lease, and every append updates the head only `WHERE epoch = <its epoch>`.

use super::ClusterError;
use tokio_postgres::Client;

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: i32 = 2;

const CREATE_V1: &str = r#"
CREATE TABLE IF NOT EXISTS ledger_meta (
    id             smallint PRIMARY KEY CHECK (id = 1),
    schema_version integer NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS ledger_head (
    id         smallint PRIMARY KEY CHECK (id = 1),
    position   bigint NOT NULL CHECK (position >= 0),
    digest     bytea NOT NULL CHECK (length(digest) = 32),
    epoch      bigint NOT NULL CHECK (epoch >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS ledger_lease (
    id            smallint PRIMARY KEY CHECK (id = 1),
    epoch         bigint NOT NULL CHECK (epoch >= 0),
    holder        text,
    advertise_url text,
    acquired_at   timestamptz,
    expires_at    timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger_log (
    position       bigint PRIMARY KEY CHECK (position >= 1),
    epoch          bigint NOT NULL,
    batch_offset   integer NOT NULL CHECK (batch_offset >= 0),
    kind           smallint NOT NULL,
    schema_version integer NOT NULL,
    payload        bytea NOT NULL,
    digest         bytea NOT NULL CHECK (length(digest) = 32),
    recorded_at    timestamptz NOT NULL DEFAULT now()
);
INSERT INTO ledger_head (id, position, digest, epoch)
    VALUES (1, 0, '\x0000000000000000000000000000000000000000000000000000000000000000', 0)
    ON CONFLICT (id) DO NOTHING;
INSERT INTO ledger_lease (id, epoch, expires_at)
    VALUES (1, 0, '-infinity')
    ON CONFLICT (id) DO NOTHING;
INSERT INTO ledger_meta (id, schema_version) VALUES (1, 1)
    ON CONFLICT (id) DO NOTHING;
"#;

/// Version 2: the cluster's API tokens (hashes only), shared by every node.
const MIGRATE_V2: &str = r#"
CREATE TABLE IF NOT EXISTS ledger_tokens (
    name         text PRIMARY KEY,
    tenant       text NOT NULL,
    role         text NOT NULL CHECK (role IN ('reader', 'writer', 'admin')),
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz,
    last_used_at timestamptz,
    sha256       text NOT NULL CHECK (length(sha256) = 64)
);
CREATE TABLE IF NOT EXISTS ledger_tokens_version (
    id      smallint PRIMARY KEY CHECK (id = 1),
    version bigint NOT NULL CHECK (version >= 0)
);
INSERT INTO ledger_tokens_version (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
UPDATE ledger_meta SET schema_version = 2 WHERE id = 1;
"#;

/// Creates the schema if the database has none, and checks its version either way.
/// Several nodes may start at once: creation runs in one transaction that first takes a
/// transaction-scoped advisory lock (released at commit; never a session lock).
pub async fn ensure(client: &mut Client) -> Result<(), ClusterError> {
    let tx = client
        .transaction()
        .await
        .map_err(ClusterError::pg("begin schema check"))?;
    tx.execute("SELECT pg_advisory_xact_lock(7468201935311)", &[])
        .await
        .map_err(ClusterError::pg("lock for schema creation"))?;
    let exists: bool = tx
        .query_one("SELECT to_regclass('ledger_meta') IS NOT NULL", &[])
        .await
        .map_err(ClusterError::pg("look for the schema"))?
        .get(0);
    if exists {
        let row = tx
            .query_opt("SELECT schema_version FROM ledger_meta WHERE id = 1", &[])
            .await
            .map_err(ClusterError::pg("read the schema version"))?;
        let Some(row) = row else {
            return Err(ClusterError::SchemaInvalid(
                "ledger_meta exists but has no version row".into(),
            ));
        };
        let found: i32 = row.get(0);
        if found > SCHEMA_VERSION {
            return Err(ClusterError::SchemaTooNew {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found < 1 {
            return Err(ClusterError::SchemaInvalid(format!(
                "schema version {found} is not one this build knows"
            )));
        }
        if found < 2 {
            tx.batch_execute(MIGRATE_V2)
                .await
                .map_err(ClusterError::pg("migrate the schema to version 2"))?;
        }
    } else {
        tx.batch_execute(CREATE_V1)
            .await
            .map_err(ClusterError::pg("create the schema"))?;
        tx.batch_execute(MIGRATE_V2)
            .await
            .map_err(ClusterError::pg("create the schema (version 2)"))?;
    }
    tx.commit()
        .await
        .map_err(ClusterError::pg("commit the schema"))?;
    Ok(())
}
