//! `token create|list|rotate|revoke`: the token file (`<data-dir>/tokens.json`, hashes only).
//! In cluster mode the tokens live in the cluster's token table instead, and these commands
//! do not reach them: use `POST/DELETE /api/v1/tokens` (or `action-ledger tokens …`) on any
//! node.
//!
//! The server reads the file when it starts and rewrites it when tokens change over HTTP, so
//! `create` and `revoke` refuse a data directory a running server owns (the change would
//! never reach it, and its next change over HTTP would overwrite the file): while it runs,
//! use `POST/DELETE /api/v1/tokens` instead. They hold the server's lock while they write,
//! so a server cannot start in between. `list` stays allowed: it only reads, and the file
//! is always replaced whole (rename), so it sees a complete file.

use super::{line, CliResult, DataDir, Failure};
use crate::tokens::{Role, TokenStore};
use clap::Subcommand;
use std::io::Write;

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Create a token and print it, alone on stdout (shown once; only its hash is stored).
    Create {
        #[command(flatten)]
        data: DataDir,
        /// The tenant whose actions the token reads (and writes).
        #[arg(long)]
        tenant: String,
        /// reader, writer or admin.
        #[arg(long)]
        role: String,
        /// A name for the token (default: <tenant>-<role>-<n>); used by `revoke`.
        #[arg(long)]
        name: Option<String>,
        /// Expire the token after this long: a number and s, m, h, d or w (30d). Default:
        /// never.
        #[arg(long, value_name = "TTL")]
        ttl: Option<String>,
    },
    /// Give a token a new secret and print it, alone on stdout; the old secret stops working.
    Rotate {
        #[command(flatten)]
        data: DataDir,
        /// The token's name.
        name: String,
    },
    /// List tokens (name, tenant, role, created, expires, last used) as JSON lines; never
    /// the secrets.
    List {
        #[command(flatten)]
        data: DataDir,
    },
    /// Delete a token by name.
    Revoke {
        #[command(flatten)]
        data: DataDir,
        /// The token's name.
        name: String,
    },
}

fn open(data: &DataDir) -> Result<TokenStore, Failure> {
    let dir = &data.data_dir;
    if !dir.is_dir() {
        return Err(Failure::error(format!(
            "data directory {} does not exist",
            dir.display()
        )));
    }
    TokenStore::open(dir.join("tokens.json")).map_err(|e| Failure::error(e.to_string()))
}

pub fn run(cmd: TokenCmd, out: &mut dyn Write) -> CliResult {
    match cmd {
        TokenCmd::Create {
            data,
            tenant,
            role,
            name,
            ttl,
        } => {
            let role = Role::parse(&role).ok_or_else(|| {
                Failure::error(format!("--role {role:?}: must be reader, writer or admin"))
            })?;
            let expires_at = ttl
                .map(|t| crate::tokens::parse_ttl(&t).map(crate::tokens::expiry_after))
                .transpose()
                .map_err(|e| Failure::error(format!("--ttl {e}")))?;
            let _lock = super::lock_unserved(&data.data_dir, "creating tokens")?;
            let store = open(&data)?;
            let name = match name {
                Some(n) => n,
                None => {
                    let taken: Vec<String> = store.list().into_iter().map(|t| t.name).collect();
                    (1..)
                        .map(|n| format!("{tenant}-{}-{n}", role.as_str()))
                        .find(|n| !taken.contains(n))
                        .expect("a free name")
                }
            };
            let (_, secret) = store
                .create(&name, &tenant, role, expires_at.as_deref())
                .map_err(|e| Failure::error(e.to_string()))?;
            line(out, &secret)
        }
        TokenCmd::List { data } => {
            let store = open(&data)?;
            for t in store.list() {
                let v = serde_json::json!({
                    "name": t.name, "tenant": t.tenant, "role": t.role.as_str(),
                    "created_at": t.created_at, "expires_at": t.expires_at,
                    "last_used_at": t.last_used_at,
                });
                line(out, &v.to_string())?;
            }
            Ok(())
        }
        TokenCmd::Rotate { data, name } => {
            let _lock = super::lock_unserved(&data.data_dir, "rotating tokens")?;
            let store = open(&data)?;
            let (_, secret) = store
                .rotate(&name)
                .map_err(|e| Failure::error(e.to_string()))?;
            line(out, &secret)
        }
        TokenCmd::Revoke { data, name } => {
            let _lock = super::lock_unserved(&data.data_dir, "revoking tokens")?;
            let store = open(&data)?;
            store
                .revoke(&name)
                .map_err(|e| Failure::error(e.to_string()))?;
            line(out, &format!("revoked {name}"))
        }
    }
}
