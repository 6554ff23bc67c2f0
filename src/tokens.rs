//! API tokens: name, tenant, role, and the SHA-256 of the secret — never the secret itself.
//!
//! Stored in `<data-dir>/tokens.json`, rewritten atomically (temp file, fsync, rename,
//! directory fsync) on every change. A presented token is hashed and compared against every
//! stored hash in constant time, so response timing says nothing about which bytes matched.
//! Tokens are not log records on purpose: revoking one must really forget it, and they are
//! credentials, not audit history.

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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The token's name (recorded in the log as the entry's principal).
    pub name: String,
    pub tenant: String,
    pub role: Role,
}

impl Principal {
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
}

pub use crate::limits::{TOKENS_MAX, TOKEN_NAME_BYTES_MAX};

pub struct TokenStore {
    path: PathBuf,
    tokens: RwLock<Vec<TokenRecord>>,
    /// Tokens given on the command line (`--admin-token`): valid for this run, never stored.
    ephemeral: Vec<(Principal, [u8; 32])>,
}

fn sha256(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
        let tokens = match std::fs::read(&path) {
            Ok(bytes) => {
                let file: TokenFile =
                    serde_json::from_slice(&bytes).map_err(|e| TokenError::File {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                for t in &file.tokens {
                    if unhex(&t.sha256).is_none() {
                        return Err(TokenError::File {
                            path: path.clone(),
                            reason: format!("token {:?} has a malformed hash", t.name),
                        });
                    }
                }
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
        Ok(TokenStore {
            path,
            tokens: RwLock::new(tokens),
            ephemeral: Vec::new(),
        })
    }

    /// Accepts `secret` as an admin token for this run only (`--admin-token`).
    pub fn add_ephemeral_admin(&mut self, secret: &str) {
        let principal = Principal {
            name: "admin-token".into(),
            tenant: "default".into(),
            role: Role::Admin,
        };
        self.ephemeral.push((principal, sha256(secret)));
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty() && self.ephemeral.is_empty()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<TokenRecord>> {
        self.tokens.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The principal a presented secret belongs to. Compares against every token.
    pub fn authenticate(&self, secret: &str) -> Option<Principal> {
        let presented = sha256(secret);
        let mut found = None;
        for t in self.read().iter() {
            let stored = unhex(&t.sha256).unwrap_or([0; 32]);
            if constant_time_eq(&stored, &presented) && found.is_none() {
                found = Some(Principal {
                    name: t.name.clone(),
                    tenant: t.tenant.clone(),
                    role: t.role,
                });
            }
        }
        for (p, stored) in &self.ephemeral {
            if constant_time_eq(stored, &presented) && found.is_none() {
                found = Some(p.clone());
            }
        }
        found
    }

    pub fn list(&self) -> Vec<TokenRecord> {
        self.read().clone()
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
        if tokens.iter().any(|t| t.name == name) {
            return Err(TokenError::NameTaken(name.to_string()));
        }
        if tokens.len() >= TOKENS_MAX {
            return Err(TokenError::Invalid {
                field: "name",
                reason: format!("TOKENS_MAX ({TOKENS_MAX}) tokens already exist"),
            });
        }
        let secret = generate_secret();
        let record = TokenRecord {
            name: name.to_string(),
            tenant: tenant.to_string(),
            role,
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            sha256: hex(&sha256(&secret)),
        };
        let mut next = tokens.clone();
        next.push(record.clone());
        self.persist(&next)?;
        *tokens = next;
        Ok((record, secret))
    }

    pub fn revoke(&self, name: &str) -> Result<(), TokenError> {
        let mut tokens = self.tokens.write().unwrap_or_else(|e| e.into_inner());
        if !tokens.iter().any(|t| t.name == name) {
            return Err(TokenError::NotFound(name.to_string()));
        }
        let next: Vec<TokenRecord> = tokens.iter().filter(|t| t.name != name).cloned().collect();
        self.persist(&next)?;
        *tokens = next;
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
