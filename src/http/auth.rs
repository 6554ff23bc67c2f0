//! Who is calling: the token in any of the four header forms (docs/api.md), resolved to a
//! [`Principal`] by the token store. Each API maps an [`AuthFailure`] to its own error body.

use super::error::ApiError;
use crate::tokens::{Principal, Role, TokenStore};
use axum::http::HeaderMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No credentials at all.
    Missing,
    /// Credentials that match no token (or are malformed).
    Unknown,
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
    if secret.is_empty() || secret.len() > crate::limits::TOKEN_SECRET_BYTES_MAX {
        return Err(AuthFailure::Unknown);
    }
    let principal = tokens.authenticate(&secret).ok_or(AuthFailure::Unknown)?;
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
        axum::http::StatusCode::UNAUTHORIZED,
        "unauthorized",
        format!("token {:?} was revoked", p.name),
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
