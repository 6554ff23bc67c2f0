//! Who is calling: the token in any of the four header forms (docs/api.md), resolved to a
//! [`Principal`] by the token store. Each API maps an [`AuthFailure`] to its own error body.

use super::error::ApiError;
use crate::tokens::{Principal, Refusal, Role, TokenStore};
use axum::http::{HeaderMap, StatusCode};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// No credentials at all.
    Missing,
    /// Credentials that match no token (or are malformed).
    Unknown,
    /// The token has expired (its name and `expires_at`): 401, saying so.
    Expired { name: String, at: String },
    /// Cluster mode: this node cannot vouch for its tokens now (PostgreSQL unreachable for
    /// longer than `CLUSTER_TOKENS_STALE_MS`): 503, retry.
    Unavailable,
}

impl AuthFailure {
    /// The HTTP status every dialect answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthFailure::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// A sentence for the dialects' own error bodies.
    pub fn message(&self) -> String {
        match self {
            AuthFailure::Missing => "a token is required".into(),
            AuthFailure::Unknown => "the token is not valid".into(),
            AuthFailure::Expired { name, at } => format!("token {name:?} expired at {at}"),
            AuthFailure::Unavailable => UNAVAILABLE.into(),
        }
    }
}

const UNAVAILABLE: &str = "this node cannot check tokens now: its copy of the cluster's token table is older than CLUSTER_TOKENS_STALE_MS (PostgreSQL unreachable); retry, or use another node";

/// The native answer to a failed authentication.
pub fn refused(f: AuthFailure) -> ApiError {
    match f {
        AuthFailure::Missing | AuthFailure::Unknown => ApiError::unauthorized(),
        AuthFailure::Expired { .. } => {
            ApiError::new(StatusCode::UNAUTHORIZED, "token_expired", f.message())
        }
        AuthFailure::Unavailable => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "tokens_unavailable",
            UNAVAILABLE,
        )
        .with("limit", "CLUSTER_TOKENS_STALE_MS"),
    }
}

/// The presented secret: `Authorization: Bearer`, `X-Auth-Token` (Nova), `X-APITOKEN`
/// (ECS), or the password of `Authorization: Basic` (Redis).
pub fn presented_secret(headers: &HeaderMap) -> Result<String, AuthFailure> {
    if let Some(v) = headers.get("authorization") {
        let v = v.to_str().map_err(|_| AuthFailure::Unknown)?.trim();
        let (scheme, rest) = v.split_once(' ').ok_or(AuthFailure::Unknown)?;
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return Ok(rest.to_string());
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64_decode(rest).ok_or(AuthFailure::Unknown)?;
            let decoded = String::from_utf8(decoded).map_err(|_| AuthFailure::Unknown)?;
            let (_user, password) = decoded.split_once(':').ok_or(AuthFailure::Unknown)?;
            return Ok(password.to_string());
        }
        return Err(AuthFailure::Unknown);
    }
    for name in ["x-auth-token", "x-apitoken"] {
        if let Some(v) = headers.get(name) {
            return v
                .to_str()
                .map(|s| s.trim().to_string())
                .map_err(|_| AuthFailure::Unknown);
        }
    }
    Err(AuthFailure::Missing)
}

pub fn authenticate(headers: &HeaderMap, tokens: &TokenStore) -> Result<Principal, AuthFailure> {
    let secret = presented_secret(headers)?;
    authenticate_secret(&secret, tokens)
}

/// The principal of a presented secret, however it was presented (a header here, the
/// console's cookie in [`super::console`]): one check for every way in.
pub fn authenticate_secret(secret: &str, tokens: &TokenStore) -> Result<Principal, AuthFailure> {
    if secret.is_empty() || secret.len() > crate::limits::TOKEN_SECRET_BYTES_MAX {
        return Err(AuthFailure::Unknown);
    }
    let principal = tokens.authenticate(secret).map_err(|r| match r {
        Refusal::Unknown => AuthFailure::Unknown,
        Refusal::Expired { name, at } => AuthFailure::Expired { name, at },
        Refusal::Stale => AuthFailure::Unavailable,
    })?;
    super::access::record_caller(&principal);
    Ok(principal)
}

/// Refuses (401, as an unknown token is) a request whose token was revoked after it
/// authenticated: a request still in flight asks this before it acts, e.g. before it
/// submits a write or answers with what it read.
pub fn still_valid(p: &Principal) -> Result<(), ApiError> {
    if p.is_revoked() {
        Err(revoked(p))
    } else {
        Ok(())
    }
}

/// The answer to a request whose token was revoked while it was in flight.
pub fn revoked(p: &Principal) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        format!("token {:?} was revoked or has expired", p.name),
    )
}

/// True when `principal` has at least `role`.
pub fn allows(principal: &Principal, role: Role) -> bool {
    principal.role >= role
}

/// Standard base64 (RFC 4648) with optional padding; `None` on any invalid input.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let s = s.trim_end_matches('=').as_bytes();
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_known_vectors() {
        assert_eq!(base64_decode("YWxpY2U6c2VjcmV0").unwrap(), b"alice:secret");
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert_eq!(base64_decode("YWI=").unwrap(), b"ab");
        assert!(base64_decode("Y").is_none());
        assert!(base64_decode("!!!!").is_none());
    }
}
