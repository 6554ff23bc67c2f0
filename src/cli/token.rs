//! `token create|list|revoke`: the token file (`<data-dir>/tokens.json`, hashes only).
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
    },
    /// List tokens (name, tenant, role, created) as JSON lines; never the secrets.
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
        } => {
            let role = Role::parse(&role).ok_or_else(|| {
                Failure::error(format!("--role {role:?}: must be reader, writer or admin"))
            })?;
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
                .create(&name, &tenant, role)
                .map_err(|e| Failure::error(e.to_string()))?;
            line(out, &secret)
        }
        TokenCmd::List { data } => {
            let store = open(&data)?;
            for t in store.list() {
                let v = serde_json::json!({
                    "name": t.name, "tenant": t.tenant, "role": t.role.as_str(),
                    "created_at": t.created_at,
                });
                line(out, &v.to_string())?;
            }
            Ok(())
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
