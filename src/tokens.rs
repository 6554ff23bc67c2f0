//! API tokens: name, tenant, role, and the SHA-256 of the secret — never the secret itself.
//!
//! Stored in `<data-dir>/tokens.json`, rewritten atomically (temp file, fsync, rename,
//! directory fsync) on every change. A presented token is hashed and compared against every
//! stored hash in constant time, so response timing says nothing about which bytes matched.
//! Tokens are not log records on purpose: revoking one must really forget it, and they are
//! credentials, not audit history.
//!
//! Revoking is immediate: every [`Principal`] carries a [`Revocation`] signal of the token
//! that authenticated it, so the streams and waits it holds open end at once, and a request
//! still in flight can ask whether its token is still valid before it writes.
//!
//! The last admin token cannot be revoked ([`TokenError::LastAdmin`]): with none left, no one
//! could manage tokens over HTTP again. Tokens given with `--admin-token` do not count, since
//! they are gone at the next start without the flag.

use crate::hex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use thiserror::Error;

/// What a token may do. Ordered: each role includes the ones before it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read its tenant's actions (Redis's `view_status_of_cluster_action`).
    Reader,
    /// Reader + record actions and events for its tenant.
    Writer,
    /// Everything, every tenant, token management.
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "reader" => Some(Role::Reader),
            "writer" => Some(Role::Writer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
        }
    }
}

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Principal {
    /// The token's name (recorded in the log as the entry's principal).
    pub name: String,
    pub tenant: String,
    pub role: Role,
    /// Fires when the token that authenticated this caller is revoked.
    pub revocation: Revocation,
}

/// The revocation signal of one token: a watch channel whose sender lives in the store's
/// entry for the token and is dropped when the token is revoked (nothing is ever sent on
/// it; its closing is the signal). A token revoked and then re-created under the same name
/// gets a new channel, so the old one stays revoked.
#[derive(Clone, Debug)]
pub struct Revocation(tokio::sync::watch::Receiver<()>);

impl Revocation {
    /// True once the token has been revoked.
    pub fn is_revoked(&self) -> bool {
        self.0.has_changed().is_err()
    }

    /// Resolves when the token is revoked (at once if it already is).
    pub fn revoked(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.0.clone();
        async move {
            // Nothing is ever sent: `changed` returns only when the sender is dropped.
            while rx.changed().await.is_ok() {}
        }
    }
}

impl Principal {
    /// True once the caller's token has been revoked: a request still in flight must not
    /// act on its behalf any more.
    pub fn is_revoked(&self) -> bool {
        self.revocation.is_revoked()
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// The tenant scope of the caller's reads and writes: `None` for admins (every tenant).
    pub fn scope(&self) -> Option<&str> {
        (!self.is_admin()).then_some(self.tenant.as_str())
    }
}

/// A stored token (public: name, tenant, role, creation time; private: the hash).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    pub name: String,
    pub tenant: String,
    pub role: Role,
    /// RFC 3339.
    pub created_at: String,
    /// Hex SHA-256 of the secret.
    pub sha256: String,
}

#[derive(Serialize, Deserialize, Default)]
struct TokenFile {
    tokens: Vec<TokenRecord>,
}

#[derive(Debug, Error)]
pub enum TokenError {
    #[error("a token named {0:?} already exists")]
    NameTaken(String),
    #[error("no token named {0:?}")]
    NotFound(String),
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("token file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error(
        "token {0:?} is the last admin token; revoking it would leave no admin to manage tokens \
         (create another admin token first, then revoke this one)"
    )]
    LastAdmin(String),
}

pub use crate::limits::{TOKENS_MAX, TOKEN_NAME_BYTES_MAX};

pub struct TokenStore {
    path: PathBuf,
    tokens: RwLock<Vec<Entry>>,
    /// Tokens given on the command line (`--admin-token`): valid for this run, never stored.
    ephemeral: Vec<Entry>,
}

/// A token in memory: its record, its hash, and the sender of its [`Revocation`] (dropped
/// with the entry when the token is revoked).
struct Entry {
    record: TokenRecord,
    hash: [u8; 32],
    alive: tokio::sync::watch::Sender<()>,
}

impl Entry {
    fn new(record: TokenRecord, hash: [u8; 32]) -> Entry {
        Entry {
            record,
            hash,
            alive: tokio::sync::watch::Sender::new(()),
        }
    }

    fn principal(&self) -> Principal {
        Principal {
            name: self.record.name.clone(),
            tenant: self.record.tenant.clone(),
            role: self.record.role,
            revocation: Revocation(self.alive.subscribe()),
        }
    }
}

fn sha256(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// Equality whose running time does not depend on where the inputs differ.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A fresh secret: 32 random bytes from the OS, hex, with a recognisable prefix.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    format!("alt_{}", hex(&bytes))
}

fn validate_name(field: &'static str, value: &str) -> Result<(), TokenError> {
    let ok = !value.is_empty()
        && value.len() <= TOKEN_NAME_BYTES_MAX
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
    if !ok {
        return Err(TokenError::Invalid {
            field,
            reason: format!("must be 1-{TOKEN_NAME_BYTES_MAX} characters of A-Z a-z 0-9 - _ . @"),
        });
    }
    Ok(())
}

impl TokenStore {
    /// Opens (or starts empty) the token file at `path`.
    pub fn open(path: impl Into<PathBuf>) -> Result<TokenStore, TokenError> {
        let path = path.into();
        let records = match std::fs::read(&path) {
            Ok(bytes) => {
                let file: TokenFile =
                    serde_json::from_slice(&bytes).map_err(|e| TokenError::File {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                file.tokens
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(TokenError::File {
                    path,
                    reason: e.to_string(),
                })
            }
        };
        let mut tokens = Vec::with_capacity(records.len());
        for t in records {
            let Some(hash) = unhex(&t.sha256) else {
                return Err(TokenError::File {
                    path: path.clone(),
                    reason: format!("token {:?} has a malformed hash", t.name),
                });
            };
            tokens.push(Entry::new(t, hash));
        }
        Ok(TokenStore {
            path,
            tokens: RwLock::new(tokens),
            ephemeral: Vec::new(),
        })
    }

    /// Accepts `secret` as an admin token for this run only (`--admin-token`).
    pub fn add_ephemeral_admin(&mut self, secret: &str) {
        let hash = sha256(secret);
        let record = TokenRecord {
            name: "admin-token".into(),
            tenant: "default".into(),
            role: Role::Admin,
            created_at: String::new(),
            sha256: hex(&hash),
        };
        self.ephemeral.push(Entry::new(record, hash));
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty() && self.ephemeral.is_empty()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Entry>> {
        self.tokens.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The principal a presented secret belongs to. Compares against every token.
    pub fn authenticate(&self, secret: &str) -> Option<Principal> {
        let presented = sha256(secret);
        let mut found = None;
        let stored = self.read();
        for t in stored.iter().chain(&self.ephemeral) {
            if constant_time_eq(&t.hash, &presented) && found.is_none() {
                found = Some(t.principal());
            }
        }
        found
    }

    pub fn list(&self) -> Vec<TokenRecord> {
        self.read().iter().map(|t| t.record.clone()).collect()
    }

    /// Creates a token and returns its secret (shown once, never stored).
    pub fn create(
        &self,
        name: &str,
        tenant: &str,
        role: Role,
    ) -> Result<(TokenRecord, String), TokenError> {
        validate_name("name", name)?;
        validate_name("tenant", tenant)?;
        let mut tokens = self.tokens.write().unwrap_or_else(|e| e.into_inner());
        if tokens.iter().any(|t| t.record.name == name) {
            return Err(TokenError::NameTaken(name.to_string()));
        }
        if tokens.len() >= TOKENS_MAX {
            return Err(TokenError::Invalid {
                field: "name",
                reason: format!("TOKENS_MAX ({TOKENS_MAX}) tokens already exist"),
            });
        }
        let secret = generate_secret();
        let hash = sha256(&secret);
        let record = TokenRecord {
            name: name.to_string(),
            tenant: tenant.to_string(),
            role,
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            sha256: hex(&hash),
        };
        let mut next: Vec<TokenRecord> = tokens.iter().map(|t| t.record.clone()).collect();
        next.push(record.clone());
        self.persist(&next)?;
        tokens.push(Entry::new(record.clone(), hash));
        Ok((record, secret))
    }

    /// Forgets the token named `name`: it authenticates nothing from now on, and every
    /// [`Revocation`] of it fires. The last stored admin token is refused
    /// ([`TokenError::LastAdmin`]).
    pub fn revoke(&self, name: &str) -> Result<(), TokenError> {
        let mut tokens = self.tokens.write().unwrap_or_else(|e| e.into_inner());
        let Some(at) = tokens.iter().position(|t| t.record.name == name) else {
            return Err(TokenError::NotFound(name.to_string()));
        };
        let admins = tokens
            .iter()
            .filter(|t| t.record.role == Role::Admin)
            .count();
        if tokens[at].record.role == Role::Admin && admins == 1 {
            return Err(TokenError::LastAdmin(name.to_string()));
        }
        let next: Vec<TokenRecord> = tokens
            .iter()
            .filter(|t| t.record.name != name)
            .map(|t| t.record.clone())
            .collect();
        self.persist(&next)?;
        // Dropping the entry drops its sender: every principal of the token sees it revoked.
        tokens.remove(at);
        Ok(())
    }

    fn persist(&self, tokens: &[TokenRecord]) -> Result<(), TokenError> {
        let file_err = |e: std::io::Error| TokenError::File {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let body = serde_json::to_vec_pretty(&TokenFile {
            tokens: tokens.to_vec(),
        })
        .expect("token records serialize");
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let tmp = self.path.with_extension("json.tmp");
        {
            use std::io::Write;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts.open(&tmp).map_err(file_err)?;
            f.write_all(&body).map_err(file_err)?;
            f.sync_all().map_err(file_err)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(file_err)?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(file_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, TokenStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::open(dir.path().join("tokens.json")).unwrap();
        (dir, store)
    }

    #[test]
    fn revoking_signals_the_principals_of_that_token_only() {
        let (_dir, store) = store();
        store.create("admin", "default", Role::Admin).unwrap();
        let (_, w) = store.create("w", "acme", Role::Writer).unwrap();
        let (_, r) = store.create("r", "acme", Role::Reader).unwrap();
        let pw = store.authenticate(&w).unwrap();
        let pr = store.authenticate(&r).unwrap();
        assert!(!pw.is_revoked() && !pr.is_revoked());
        store.revoke("w").unwrap();
        assert!(pw.is_revoked(), "the revoked token's principal knows");
        assert!(!pr.is_revoked(), "another token's does not");
        assert!(store.authenticate(&w).is_none());
        // The revocation future is ready at once for an already revoked token.
        futures_util::FutureExt::now_or_never(pw.revocation.revoked()).expect("resolved at once");
        // A new token under the old name is a new token: the old principal stays revoked.
        let (_, w2) = store.create("w", "acme", Role::Writer).unwrap();
        assert!(pw.is_revoked());
        assert!(!store.authenticate(&w2).unwrap().is_revoked());
    }

    #[test]
    fn the_last_stored_admin_token_is_kept() {
        let (dir, mut store) = store();
        store.add_ephemeral_admin("flag-token");
        store.create("a1", "default", Role::Admin).unwrap();
        // The --admin-token of this run does not count.
        assert!(matches!(store.revoke("a1"), Err(TokenError::LastAdmin(n)) if n == "a1"));
        store.create("a2", "default", Role::Admin).unwrap();
        store.revoke("a1").unwrap();
        assert!(matches!(store.revoke("a2"), Err(TokenError::LastAdmin(_))));
        // Refused means unchanged, on disk too.
        let reopened = TokenStore::open(dir.path().join("tokens.json")).unwrap();
        let names: Vec<String> = reopened.list().into_iter().map(|t| t.name).collect();
        assert_eq!(names, ["a2"]);
    }
}
