//! API tokens: name, tenant, role, expiry, and the SHA-256 of the secret — never the secret.
//!
//! Where the tokens are stored is a [`TokenBackend`]: the token file of a single node
//! (`<data-dir>/tokens.json`, [`FileTokens`], rewritten atomically on every change), or the
//! cluster's token table in PostgreSQL (`crate::cluster::tokens`), shared by every node. The
//! store keeps the tokens in memory for authentication and replaces that copy whole whenever
//! the backend answers with the stored list: after each change made here, and in cluster mode
//! after each change another node made (see `crate::cluster::tokens`).
//!
//! A presented token is hashed and compared against every stored hash in constant time, so
//! response timing says nothing about which bytes matched. Tokens are not log records on
//! purpose: revoking one must really forget it, and they are credentials, not audit history.
//!
//! Revoking is immediate: every [`Principal`] carries a [`Revocation`] signal of the token
//! that authenticated it, so the streams and waits it holds open end at once, and a request
//! still in flight can ask whether its token is still valid before it writes. An expired
//! token is refused from its `expires_at` on, and its signal fires then too. Rotating a token
//! gives it a new secret and revokes the old one.
//!
//! The last live admin token cannot be revoked ([`TokenError::LastAdmin`]): with none left, no
//! one could manage tokens over HTTP again. Tokens given with `--admin-token` do not count,
//! since they are gone at the next start without the flag.

use crate::hex;
use crate::limits::{TOKEN_LAST_USED_RESOLUTION_SECS, TOKEN_TTL_SECS_MAX};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};
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
    /// Fires when the token that authenticated this caller is revoked, rotated or expires.
    pub revocation: Revocation,
}

/// The end of one token's validity: a watch channel whose sender lives in the store's entry
/// for the token and is dropped when the token is revoked or rotated (nothing is ever sent
/// on it; its closing is the signal), and the token's expiry, if it has one. A token revoked
/// and then re-created under the same name gets a new channel, so the old one stays revoked.
#[derive(Clone, Debug)]
pub struct Revocation {
    alive: tokio::sync::watch::Receiver<()>,
    /// Unix seconds from which the token is expired.
    expires: Option<i64>,
}

impl Revocation {
    /// True once the token has been revoked, rotated, or has expired.
    pub fn is_revoked(&self) -> bool {
        self.alive.has_changed().is_err() || self.expires.is_some_and(|e| now_secs() >= e)
    }

    /// Resolves when the token is revoked or expires (at once if it already is).
    pub fn revoked(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.alive.clone();
        let expires = self.expires;
        async move {
            let expiry = async move {
                match expires {
                    Some(at) => {
                        let left = u64::try_from(at.saturating_sub(now_secs())).unwrap_or(0);
                        tokio::time::sleep(Duration::from_secs(left)).await
                    }
                    None => std::future::pending().await,
                }
            };
            // Nothing is ever sent: `changed` returns only when the sender is dropped.
            let closed = async move { while rx.changed().await.is_ok() {} };
            tokio::select! {
                _ = closed => {}
                _ = expiry => {}
            }
        }
    }
}

impl Principal {
    /// True once the caller's token has been revoked or has expired: a request still in
    /// flight must not act on its behalf any more.
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

/// A stored token (public: name, tenant, role, times; private: the hash).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    pub name: String,
    pub tenant: String,
    pub role: Role,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; absent: the token does not expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// RFC 3339, to [`TOKEN_LAST_USED_RESOLUTION_SECS`]; absent: never used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<String>,
    /// Hex SHA-256 of the secret.
    pub sha256: String,
}

impl TokenRecord {
    /// Whether the token has expired at `now` (unix seconds).
    pub fn is_expired(&self, now: i64) -> bool {
        self.expires_at
            .as_deref()
            .and_then(parse_time)
            .is_some_and(|e| now >= e)
    }
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
    #[error("the token table cannot be reached ({0}); retry")]
    Unavailable(String),
    #[error("the token table is damaged: {0}")]
    Damaged(String),
    #[error(
        "token {0:?} is the last admin token that has not expired; revoking it would leave no admin to manage tokens \
         (create another admin token first, then revoke this one)"
    )]
    LastAdmin(String),
}

/// Why a presented secret authenticates nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No token has that secret.
    Unknown,
    /// The token `name` expired at `at` (RFC 3339).
    Expired { name: String, at: String },
    /// Cluster mode: this node's copy of the token table is too old to trust (PostgreSQL
    /// has been unreachable for longer than `CLUSTER_TOKENS_STALE_MS`).
    Stale,
}

pub use crate::limits::{TOKENS_MAX, TOKEN_NAME_BYTES_MAX};

/// Where tokens are stored. `update` is one atomic step: it reads the stored tokens, lets
/// `change` edit them (an error leaves them unchanged), stores the result, and returns it.
pub trait TokenBackend: Send + Sync {
    fn load(&self) -> Result<Stored, TokenError>;
    fn update(&self, change: &mut Change<'_>) -> Result<Stored, TokenError>;
}

/// The stored tokens as one read saw them, and the version of the store they are: every
/// change makes a higher version, so of two reads the store keeps the newer even when
/// their answers arrive in the other order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub version: u64,
    pub tokens: Vec<TokenRecord>,
}

/// An edit of the stored tokens, run by [`TokenBackend::update`].
pub type Change<'a> = dyn FnMut(&mut Vec<TokenRecord>) -> Result<(), TokenError> + 'a;

/// The token file of a single node: JSON, replaced whole (temp file, fsync, rename,
/// directory fsync), readable by its owner only.
pub struct FileTokens {
    path: PathBuf,
    /// Serialises this process's changes (other processes are kept out by the data
    /// directory's lock).
    writing: Mutex<()>,
    /// The version of the last read or change (this process's count).
    version: AtomicU64,
}

impl FileTokens {
    pub fn new(path: impl Into<PathBuf>) -> FileTokens {
        FileTokens {
            path: path.into(),
            writing: Mutex::new(()),
            version: AtomicU64::new(0),
        }
    }

    fn error(&self, reason: impl std::fmt::Display) -> TokenError {
        TokenError::File {
            path: self.path.clone(),
            reason: reason.to_string(),
        }
    }

    fn persist(&self, tokens: &[TokenRecord]) -> Result<(), TokenError> {
        let body = serde_json::to_vec_pretty(&TokenFile {
            tokens: tokens.to_vec(),
        })
        .expect("token records serialize");
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let tmp = self.path.with_extension("json.tmp");
        write_private(&tmp, &body).map_err(|e| self.error(e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| self.error(e))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.error(e))
    }
}

/// Writes `body` to a new file at `path` readable by its owner only (a file already there
/// is replaced), and syncs it.
pub fn write_private(path: &Path, body: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(body)?;
    f.sync_all()
}

impl FileTokens {
    fn read(&self) -> Result<Vec<TokenRecord>, TokenError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice::<TokenFile>(&bytes)
                .map(|f| f.tokens)
                .map_err(|e| self.error(e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(self.error(e)),
        }
    }

    fn stored(&self, tokens: Vec<TokenRecord>) -> Stored {
        Stored {
            version: self.version.fetch_add(1, Ordering::SeqCst) + 1,
            tokens,
        }
    }
}

impl TokenBackend for FileTokens {
    fn load(&self) -> Result<Stored, TokenError> {
        let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        let tokens = self.read()?;
        Ok(self.stored(tokens))
    }

    fn update(&self, change: &mut Change<'_>) -> Result<Stored, TokenError> {
        let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        let mut tokens = self.read()?;
        change(&mut tokens)?;
        self.persist(&tokens)?;
        Ok(self.stored(tokens))
    }
}

pub struct TokenStore {
    backend: Box<dyn TokenBackend>,
    tokens: RwLock<Vec<Entry>>,
    /// The [`Stored::version`] the in-memory copy is (changed under `tokens`' write lock).
    version: AtomicU64,
    /// Tokens given on the command line (`--admin-token`): valid for this run, never stored.
    ephemeral: Vec<Entry>,
    /// Cluster mode: when the in-memory copy was last known to match the stored tokens.
    freshness: Option<Freshness>,
}

/// How fresh the in-memory copy of a shared token table is.
struct Freshness {
    base: Instant,
    /// Milliseconds after `base` of the last successful read (0: never).
    synced_ms: AtomicU64,
    stale_after: Duration,
}

/// A token in memory: its record, its hash, the sender of its [`Revocation`] (dropped with
/// the entry when the token is revoked or rotated), and its last use as seen by this process.
struct Entry {
    record: TokenRecord,
    hash: [u8; 32],
    expires: Option<i64>,
    alive: tokio::sync::watch::Sender<()>,
    /// Unix seconds of the last authentication through this process (0: none).
    used: AtomicI64,
}

impl Entry {
    fn new(record: TokenRecord) -> Result<Entry, TokenError> {
        let hash = unhex(&record.sha256).ok_or_else(|| {
            TokenError::Damaged(format!("token {:?} has a malformed hash", record.name))
        })?;
        let expires = match &record.expires_at {
            None => None,
            Some(s) => Some(parse_time(s).ok_or_else(|| {
                TokenError::Damaged(format!(
                    "token {:?} has a malformed expires_at {s:?}",
                    record.name
                ))
            })?),
        };
        Ok(Entry {
            record,
            hash,
            expires,
            alive: tokio::sync::watch::Sender::new(()),
            used: AtomicI64::new(0),
        })
    }

    fn principal(&self) -> Principal {
        Principal {
            name: self.record.name.clone(),
            tenant: self.record.tenant.clone(),
            role: self.record.role,
            revocation: Revocation {
                alive: self.alive.subscribe(),
                expires: self.expires,
            },
        }
    }

    /// The record with this process's newer last use, if any.
    fn current(&self) -> TokenRecord {
        let mut r = self.record.clone();
        let stored = r.last_used_at.as_deref().and_then(parse_time).unwrap_or(0);
        let used = self.used.load(Ordering::Relaxed);
        if used > stored {
            r.last_used_at = Some(format_time(used));
        }
        r
    }
}

fn now_secs() -> i64 {
    Utc::now().timestamp()
}

/// Unix seconds of an RFC 3339 time.
pub fn parse_time(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp())
}

/// RFC 3339 (UTC, seconds) of unix seconds.
pub fn format_time(secs: i64) -> String {
    DateTime::<Utc>::from_timestamp(secs, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Checks a requested expiry: RFC 3339, in the future, at most [`TOKEN_TTL_SECS_MAX`] away.
/// Returns it normalised to UTC seconds.
pub fn check_expiry(expires_at: &str) -> Result<String, TokenError> {
    let invalid = |reason: String| TokenError::Invalid {
        field: "expires_at",
        reason,
    };
    let at = parse_time(expires_at).ok_or_else(|| {
        invalid(format!(
            "{expires_at:?} is not an RFC 3339 time (e.g. 2027-01-31T00:00:00Z)"
        ))
    })?;
    let now = now_secs();
    if at <= now {
        return Err(invalid(format!("{expires_at:?} is not in the future")));
    }
    if at - now > TOKEN_TTL_SECS_MAX {
        return Err(invalid(format!(
            "{expires_at:?} is further away than TOKEN_TTL_SECS_MAX ({TOKEN_TTL_SECS_MAX} s)"
        )));
    }
    Ok(format_time(at))
}

/// Parses a time to live such as `90s`, `45m`, `12h`, `30d` or `2w` into seconds, bounded by
/// [`TOKEN_TTL_SECS_MAX`].
pub fn parse_ttl(ttl: &str) -> Result<i64, String> {
    let bad = || format!("{ttl:?} is not a time to live (a number and s, m, h, d or w: 30d)");
    let unit = ttl.chars().last().ok_or_else(bad)?;
    let n: i64 = ttl[..ttl.len() - unit.len_utf8()]
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(bad)?;
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(scale)
        .filter(|s| *s <= TOKEN_TTL_SECS_MAX)
        .ok_or_else(|| {
            format!("{ttl:?} is longer than TOKEN_TTL_SECS_MAX ({TOKEN_TTL_SECS_MAX} s)")
        })
}

/// The expiry `ttl` seconds from now, as RFC 3339.
pub fn expiry_after(ttl_secs: i64) -> String {
    format_time(now_secs() + ttl_secs)
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

/// A new record for `secret` (its hash only).
fn new_record(
    name: &str,
    tenant: &str,
    role: Role,
    expires_at: Option<String>,
    secret: &str,
) -> TokenRecord {
    TokenRecord {
        name: name.to_string(),
        tenant: tenant.to_string(),
        role,
        created_at: format_time(now_secs()),
        expires_at,
        last_used_at: None,
        sha256: hex(&sha256(secret)),
    }
}

impl TokenStore {
    /// Opens (or starts empty) the token file at `path`.
    pub fn open(path: impl Into<PathBuf>) -> Result<TokenStore, TokenError> {
        TokenStore::with_backend(Box::new(FileTokens::new(path)), None)
    }

    /// A store over `backend`, loaded from it. `stale_after`: the store is shared with other
    /// processes, which change it behind this one's back; the owner must call [`sync`]
    /// regularly, and authentication is refused ([`Refusal::Stale`]) when the last successful
    /// [`sync`] is older than this.
    ///
    /// [`sync`]: TokenStore::sync
    pub fn with_backend(
        backend: Box<dyn TokenBackend>,
        stale_after: Option<Duration>,
    ) -> Result<TokenStore, TokenError> {
        let store = TokenStore {
            backend,
            tokens: RwLock::new(Vec::new()),
            version: AtomicU64::new(0),
            ephemeral: Vec::new(),
            freshness: stale_after.map(|stale_after| Freshness {
                base: Instant::now(),
                synced_ms: AtomicU64::new(0),
                stale_after,
            }),
        };
        store.sync()?;
        Ok(store)
    }

    /// Accepts `secret` as an admin token for this run only (`--admin-token`).
    pub fn add_ephemeral_admin(&mut self, secret: &str) {
        let record = TokenRecord {
            created_at: String::new(),
            ..new_record("admin-token", "default", Role::Admin, None, secret)
        };
        self.ephemeral
            .push(Entry::new(record).expect("a fresh record is well formed"));
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty() && self.ephemeral.is_empty()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Entry>> {
        self.tokens.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Re-reads the stored tokens and replaces the in-memory copy with them.
    pub fn sync(&self) -> Result<(), TokenError> {
        let stored = self.backend.load()?;
        self.replace(stored)
    }

    /// Replaces the in-memory copy with `stored`, the stored tokens as just read, unless the
    /// copy is already of a newer version (a read that was overtaken by a change). A token
    /// whose name and hash are unchanged keeps its entry (its open streams, its last use);
    /// every other entry is dropped, which revokes its principals. Either way the copy counts
    /// as fresh: the store was just read.
    pub fn replace(&self, stored: Stored) -> Result<(), TokenError> {
        // Every record is checked before anything changes: a damaged table changes nothing.
        let mut fresh = stored
            .tokens
            .into_iter()
            .map(Entry::new)
            .collect::<Result<Vec<Entry>, TokenError>>()?;
        let mut tokens = self.tokens.write().unwrap_or_else(|e| e.into_inner());
        if stored.version < self.version.load(Ordering::Relaxed) {
            drop(tokens);
            self.mark_fresh();
            return Ok(());
        }
        self.version.store(stored.version, Ordering::Relaxed);
        let mut old: Vec<Entry> = std::mem::take(&mut *tokens);
        for e in &mut fresh {
            let same =
                |o: &Entry| o.record.name == e.record.name && o.record.sha256 == e.record.sha256;
            if let Some(i) = old.iter().position(same) {
                let kept = old.swap_remove(i);
                e.alive = kept.alive;
                e.used = kept.used;
            }
        }
        *tokens = fresh;
        drop(tokens);
        // `old` now holds the revoked and rotated tokens: dropping it fires their signals.
        drop(old);
        self.mark_fresh();
        Ok(())
    }

    fn mark_fresh(&self) {
        if let Some(f) = &self.freshness {
            let ms = f.base.elapsed().as_millis() as u64;
            f.synced_ms.store(ms.max(1), Ordering::Relaxed);
        }
    }

    /// Whether a shared token table has not been read for too long to trust it.
    fn is_stale(&self) -> bool {
        self.freshness.as_ref().is_some_and(|f| {
            let synced = f.synced_ms.load(Ordering::Relaxed);
            let now = f.base.elapsed().as_millis() as u64;
            synced == 0 || now.saturating_sub(synced) > f.stale_after.as_millis() as u64
        })
    }

    /// The principal a presented secret belongs to. Compares against every token.
    pub fn authenticate(&self, secret: &str) -> Result<Principal, Refusal> {
        let presented = sha256(secret);
        let find = |entries: &[Entry]| {
            let mut found = None;
            for (i, t) in entries.iter().enumerate() {
                if constant_time_eq(&t.hash, &presented) && found.is_none() {
                    found = Some(i);
                }
            }
            found
        };
        if let Some(i) = find(&self.ephemeral) {
            return Ok(self.ephemeral[i].principal());
        }
        if self.is_stale() {
            return Err(Refusal::Stale);
        }
        let stored = self.read();
        let Some(t) = find(&stored).map(|i| &stored[i]) else {
            return Err(Refusal::Unknown);
        };
        let now = now_secs();
        if t.expires.is_some_and(|e| now >= e) {
            return Err(Refusal::Expired {
                name: t.record.name.clone(),
                at: t.record.expires_at.clone().unwrap_or_default(),
            });
        }
        let used = t.used.load(Ordering::Relaxed);
        if now - used >= TOKEN_LAST_USED_RESOLUTION_SECS {
            t.used.store(now, Ordering::Relaxed);
        }
        Ok(t.principal())
    }

    /// The stored tokens, with this process's latest use of each.
    pub fn list(&self) -> Vec<TokenRecord> {
        self.read().iter().map(Entry::current).collect()
    }

    /// Runs `change` through the backend and takes its answer as the new in-memory copy.
    fn update(&self, change: &mut Change<'_>) -> Result<(), TokenError> {
        let stored = self.backend.update(change)?;
        self.replace(stored)
    }

    /// Creates a token and returns its secret (shown once, never stored). `expires_at`:
    /// RFC 3339, checked by [`check_expiry`].
    pub fn create(
        &self,
        name: &str,
        tenant: &str,
        role: Role,
        expires_at: Option<&str>,
    ) -> Result<(TokenRecord, String), TokenError> {
        validate_name("name", name)?;
        validate_name("tenant", tenant)?;
        let expires_at = expires_at.map(check_expiry).transpose()?;
        let secret = generate_secret();
        let record = new_record(name, tenant, role, expires_at, &secret);
        self.update(&mut |tokens| {
            if tokens.iter().any(|t| t.name == record.name) {
                return Err(TokenError::NameTaken(record.name.clone()));
            }
            if tokens.len() >= TOKENS_MAX {
                return Err(TokenError::Invalid {
                    field: "name",
                    reason: format!("TOKENS_MAX ({TOKENS_MAX}) tokens already exist"),
                });
            }
            tokens.push(record.clone());
            Ok(())
        })?;
        Ok((record, secret))
    }

    /// Stores `secret` as the admin token `name` of tenant `default` if no token is stored
    /// at all (the first start of a ledger or a cluster), as one step of the backend, so of
    /// nodes starting together only one creates it. True when this call created it.
    pub fn create_first_admin(&self, name: &str, secret: &str) -> Result<bool, TokenError> {
        let record = new_record(name, "default", Role::Admin, None, secret);
        let mut created = false;
        self.update(&mut |tokens| {
            created = tokens.is_empty();
            if created {
                tokens.push(record.clone());
            }
            Ok(())
        })?;
        Ok(created)
    }

    /// Gives the token `name` a new secret (returned, shown once) and keeps its name, tenant,
    /// role and expiry; the old secret authenticates nothing from now on and every
    /// [`Revocation`] of it fires. An expired token cannot be rotated (create a new one).
    pub fn rotate(&self, name: &str) -> Result<(TokenRecord, String), TokenError> {
        let secret = generate_secret();
        let hash = hex(&sha256(&secret));
        let mut rotated = None;
        self.update(&mut |tokens| {
            let t = tokens
                .iter_mut()
                .find(|t| t.name == name)
                .ok_or_else(|| TokenError::NotFound(name.to_string()))?;
            if t.is_expired(now_secs()) {
                return Err(TokenError::Invalid {
                    field: "name",
                    reason: format!(
                        "token {name:?} has expired and cannot be rotated; create a new token"
                    ),
                });
            }
            t.sha256 = hash.clone();
            t.last_used_at = None;
            rotated = Some(t.clone());
            Ok(())
        })?;
        Ok((rotated.expect("set by a successful update"), secret))
    }

    /// Forgets the token named `name`: it authenticates nothing from now on, and every
    /// [`Revocation`] of it fires. The last live stored admin token is refused
    /// ([`TokenError::LastAdmin`]).
    pub fn revoke(&self, name: &str) -> Result<(), TokenError> {
        self.update(&mut |tokens| {
            let at = tokens
                .iter()
                .position(|t| t.name == name)
                .ok_or_else(|| TokenError::NotFound(name.to_string()))?;
            let now = now_secs();
            let live_admin = |t: &TokenRecord| t.role == Role::Admin && !t.is_expired(now);
            if live_admin(&tokens[at]) && tokens.iter().filter(|t| live_admin(t)).count() == 1 {
                return Err(TokenError::LastAdmin(name.to_string()));
            }
            tokens.remove(at);
            Ok(())
        })
    }

    /// Stores the uses this process saw since the last call (to
    /// [`TOKEN_LAST_USED_RESOLUTION_SECS`]); does nothing when there are none. A token's
    /// `last_used_at` only moves forward, whichever process stores it.
    pub fn store_last_used(&self) -> Result<(), TokenError> {
        let seen: Vec<(String, String, i64)> = self
            .read()
            .iter()
            .filter_map(|e| {
                let used = e.used.load(Ordering::Relaxed);
                let stored = e.record.last_used_at.as_deref().and_then(parse_time);
                (used > stored.unwrap_or(0))
                    .then(|| (e.record.name.clone(), e.record.sha256.clone(), used))
            })
            .collect();
        if seen.is_empty() {
            return Ok(());
        }
        self.update(&mut |tokens| {
            for t in tokens.iter_mut() {
                let Some((_, _, used)) = seen.iter().find(|s| s.0 == t.name && s.1 == t.sha256)
                else {
                    continue;
                };
                let stored = t.last_used_at.as_deref().and_then(parse_time).unwrap_or(0);
                if *used > stored {
                    t.last_used_at = Some(format_time(*used));
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stores `records` as another process sharing the store would, then reads them back.
    fn stored_elsewhere(store: &TokenStore, records: Vec<TokenRecord>) {
        store
            .backend
            .update(&mut |t| {
                *t = records.clone();
                Ok(())
            })
            .unwrap();
        store.sync().unwrap();
    }

    fn store() -> (tempfile::TempDir, TokenStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::open(dir.path().join("tokens.json")).unwrap();
        (dir, store)
    }

    #[test]
    fn revoking_signals_the_principals_of_that_token_only() {
        let (_dir, store) = store();
        store.create("admin", "default", Role::Admin, None).unwrap();
        let (_, w) = store.create("w", "acme", Role::Writer, None).unwrap();
        let (_, r) = store.create("r", "acme", Role::Reader, None).unwrap();
        let pw = store.authenticate(&w).unwrap();
        let pr = store.authenticate(&r).unwrap();
        assert!(!pw.is_revoked() && !pr.is_revoked());
        store.revoke("w").unwrap();
        assert!(pw.is_revoked(), "the revoked token's principal knows");
        assert!(!pr.is_revoked(), "another token's does not");
        assert!(store.authenticate(&w).is_err());
        // The revocation future is ready at once for an already revoked token.
        futures_util::FutureExt::now_or_never(pw.revocation.revoked()).expect("resolved at once");
        // A new token under the old name is a new token: the old principal stays revoked.
        let (_, w2) = store.create("w", "acme", Role::Writer, None).unwrap();
        assert!(pw.is_revoked());
        assert!(!store.authenticate(&w2).unwrap().is_revoked());
    }

    #[test]
    fn the_last_stored_admin_token_is_kept() {
        let (dir, mut store) = store();
        store.add_ephemeral_admin("flag-token");
        store.create("a1", "default", Role::Admin, None).unwrap();
        // The --admin-token of this run does not count.
        assert!(matches!(store.revoke("a1"), Err(TokenError::LastAdmin(n)) if n == "a1"));
        store.create("a2", "default", Role::Admin, None).unwrap();
        store.revoke("a1").unwrap();
        assert!(matches!(store.revoke("a2"), Err(TokenError::LastAdmin(_))));
        // Refused means unchanged, on disk too.
        let reopened = TokenStore::open(dir.path().join("tokens.json")).unwrap();
        let names: Vec<String> = reopened.list().into_iter().map(|t| t.name).collect();
        assert_eq!(names, ["a2"]);
    }

    #[test]
    fn an_expired_token_is_refused_and_its_signal_fires() {
        let (_dir, store) = store();
        store.create("admin", "default", Role::Admin, None).unwrap();
        let soon = format_time(now_secs() + 2);
        let (rec, secret) = store
            .create("t", "acme", Role::Reader, Some(&soon))
            .unwrap();
        assert_eq!(rec.expires_at.as_deref(), Some(soon.as_str()));
        assert!(!store.authenticate(&secret).unwrap().is_revoked());
        // Expire it by rewriting the stored record, as another node of a cluster might.
        let mut records = store.list();
        records[1].expires_at = Some(format_time(now_secs() - 1));
        store
            .replace(Stored {
                version: u64::MAX,
                tokens: records,
            })
            .unwrap();
        assert!(
            matches!(store.authenticate(&secret), Err(Refusal::Expired { name, .. }) if name == "t")
        );
        // Expiries in the past, malformed or too far away are refused.
        for bad in ["2001-01-01T00:00:00Z", "tomorrow", "9999-01-01T00:00:00Z"] {
            assert!(matches!(
                store.create("x", "acme", Role::Reader, Some(bad)),
                Err(TokenError::Invalid {
                    field: "expires_at",
                    ..
                })
            ));
        }
    }

    #[tokio::test]
    async fn an_open_stream_ends_when_its_token_expires() {
        let (_dir, store) = store();
        let soon = format_time(now_secs() + 1);
        let (_, secret) = store
            .create("t", "acme", Role::Reader, Some(&soon))
            .unwrap();
        let p = store.authenticate(&secret).unwrap();
        tokio::time::timeout(Duration::from_secs(10), p.revocation.revoked())
            .await
            .expect("the revocation future resolves at expiry");
        assert!(p.is_revoked());
    }

    #[test]
    fn the_last_admin_that_has_not_expired_is_kept() {
        let (_dir, store) = store();
        store.create("a1", "default", Role::Admin, None).unwrap();
        let soon = format_time(now_secs() + 3600);
        store
            .create("a2", "default", Role::Admin, Some(&soon))
            .unwrap();
        let mut records = store.list();
        records[1].expires_at = Some(format_time(now_secs() - 1));
        stored_elsewhere(&store, records);
        // a2 has expired, so a1 is the last live admin.
        assert!(matches!(store.revoke("a1"), Err(TokenError::LastAdmin(_))));
        store.revoke("a2").unwrap();
    }

    #[test]
    fn rotating_keeps_the_token_and_revokes_the_old_secret() {
        let (dir, store) = store();
        store.create("admin", "default", Role::Admin, None).unwrap();
        let (before, old) = store.create("w", "acme", Role::Writer, None).unwrap();
        let p = store.authenticate(&old).unwrap();
        let (after, new) = store.rotate("w").unwrap();
        assert_ne!(old, new);
        assert!(p.is_revoked(), "the old secret's principals are revoked");
        assert_eq!(store.authenticate(&old).unwrap_err(), Refusal::Unknown);
        let p2 = store.authenticate(&new).unwrap();
        assert_eq!(
            (p2.name.as_str(), p2.tenant.as_str(), p2.role),
            ("w", "acme", Role::Writer)
        );
        assert_eq!(
            (&after.created_at, &after.expires_at),
            (&before.created_at, &before.expires_at)
        );
        assert!(matches!(store.rotate("nope"), Err(TokenError::NotFound(_))));
        // Stored: a reopened store accepts the new secret only.
        let reopened = TokenStore::open(dir.path().join("tokens.json")).unwrap();
        assert!(reopened.authenticate(&new).is_ok() && reopened.authenticate(&old).is_err());
    }

    #[test]
    fn last_use_is_stored_and_only_moves_forward() {
        let (dir, store) = store();
        let (_, secret) = store.create("admin", "default", Role::Admin, None).unwrap();
        assert_eq!(store.list()[0].last_used_at, None);
        store.store_last_used().unwrap();
        store.authenticate(&secret).unwrap();
        let seen = store.list()[0]
            .last_used_at
            .clone()
            .expect("noted in memory");
        assert!(parse_time(&seen).unwrap() >= now_secs() - 5);
        store.store_last_used().unwrap();
        let reopened = TokenStore::open(dir.path().join("tokens.json")).unwrap();
        assert_eq!(
            reopened.list()[0].last_used_at.as_deref(),
            Some(seen.as_str())
        );
        // A later use stored by someone else is not moved back.
        let mut records = store.list();
        records[0].last_used_at = Some(format_time(now_secs() + 100));
        let later = records[0].last_used_at.clone();
        stored_elsewhere(&store, records);
        assert_eq!(store.list()[0].last_used_at, later);
        store.authenticate(&secret).unwrap();
        store.store_last_used().unwrap();
        assert_eq!(store.list()[0].last_used_at, later);
    }

    #[test]
    fn a_shared_table_changed_elsewhere_reaches_this_store_on_sync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        let here = TokenStore::open(&path).unwrap();
        let there = TokenStore::open(&path).unwrap();
        here.create("admin", "default", Role::Admin, None).unwrap();
        let (_, w) = here.create("w", "acme", Role::Writer, None).unwrap();
        assert!(there.authenticate(&w).is_err(), "not yet read");
        there.sync().unwrap();
        let p = there.authenticate(&w).unwrap();
        here.revoke("w").unwrap();
        assert!(!p.is_revoked(), "not yet read");
        there.sync().unwrap();
        assert!(p.is_revoked(), "the revocation reached the other store");
        // A damaged table changes nothing.
        let mut bad = here.list();
        bad[0].sha256 = "zz".into();
        let bad = Stored {
            version: u64::MAX,
            tokens: bad,
        };
        assert!(there.replace(bad).is_err());
        assert_eq!(there.list().len(), 1);
    }

    #[test]
    fn a_read_overtaken_by_a_change_does_not_undo_it() {
        let (_dir, store) = store();
        store.create("admin", "default", Role::Admin, None).unwrap();
        let before = store.backend.load().unwrap();
        let (_, w) = store.create("w", "acme", Role::Writer, None).unwrap();
        let p = store.authenticate(&w).unwrap();
        store.revoke("w").unwrap();
        // The read made before the create and the revoke answers last: it is older, ignored.
        let (_, r) = store.create("r", "acme", Role::Reader, None).unwrap();
        store.replace(before).unwrap();
        assert!(store.authenticate(&w).is_err() && p.is_revoked());
        assert!(store.authenticate(&r).is_ok(), "the newer copy stays");
    }

    #[test]
    fn a_shared_table_not_read_for_too_long_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        let (_, secret) = TokenStore::open(&path)
            .unwrap()
            .create("admin", "default", Role::Admin, None)
            .unwrap();
        let mut store =
            TokenStore::with_backend(Box::new(FileTokens::new(&path)), Some(Duration::ZERO))
                .unwrap();
        store.add_ephemeral_admin("flag-token");
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(store.authenticate(&secret).unwrap_err(), Refusal::Stale);
        assert!(
            store.authenticate("flag-token").is_ok(),
            "--admin-token is not stored"
        );
    }

    #[test]
    fn ttls_parse_with_their_units_and_bounds() {
        assert_eq!(parse_ttl("90s"), Ok(90));
        assert_eq!(parse_ttl("45m"), Ok(2700));
        assert_eq!(parse_ttl("12h"), Ok(43_200));
        assert_eq!(parse_ttl("30d"), Ok(2_592_000));
        assert_eq!(parse_ttl("2w"), Ok(1_209_600));
        for bad in [
            "",
            "d",
            "0d",
            "-1d",
            "10",
            "3y",
            "1.5d",
            "99999999999999999w",
            "5000d",
        ] {
            assert!(parse_ttl(bad).is_err(), "{bad:?}");
        }
    }
}
