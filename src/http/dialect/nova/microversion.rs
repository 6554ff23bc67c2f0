//! Nova's API microversions: which one a request asks for ([`negotiate`]), the range the
//! dialect supports ([`MIN_VERSION`] ..= [`MAX_VERSION`]), the headers that echo it on
//! every answer ([`stamp`]), and what each one changes (below; docs/dialects.md "OpenStack
//! Nova" has the same table). The changes themselves are [`Microversion::at_least`] gates
//! where the parent module parses a list's parameters and renders actions and events.
//!
//! # Negotiation (2.1 ..= 2.104)
//! From `OpenStack-API-Version: compute X.Y` (preferred) or `X-OpenStack-Nova-API-Version:
//! X.Y`; `latest` = 2.104; none = 2.1. Every answer of an actions route carries both
//! headers and `Vary`. A well-formed version outside the range → 406 (`computeFault`, as
//! Nova's `InvalidGlobalAPIVersion`); a malformed one (`abc`, `2.05`) → 400 (`badRequest`,
//! as Nova's `InvalidAPIVersionString`).
//! - < 2.51: events only for admins. 2.51+: events for every reader; `traceback` stays
//!   admin-only (the key is absent, not null, for others).
//! - 2.58: list `limit` (clamped to [`NOVA_LIMIT_MAX`](super::NOVA_LIMIT_MAX), as Nova's
//!   `max_limit`), `marker` (a request_id; unknown → 400), `changes-since`; list and show
//!   gain `updated_at`; the list gains `links: [{"rel": "next", ...}]` when the page is
//!   full; unknown or repeated list parameters → 400.
//! - 2.62: events gain `hostId` (sha224 hex of project_id + host, `""` without a host,
//!   exactly like `nova.utils.generate_hostid`); admins also see `host`.
//! - 2.66: `changes-before` (earlier than `changes-since` → 400).
//! - 2.84: events gain `details` (admins only).
//! - 2.102: show rejects every query parameter (400); before, they are ignored.

use super::Fault;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;

/// Lowest and highest supported microversions (2.1 ..= 2.104).
pub const MIN_VERSION: Microversion = Microversion { major: 2, minor: 1 };
pub const MAX_VERSION: Microversion = Microversion {
    major: 2,
    minor: 104,
};

pub(super) const HEADER: &str = "openstack-api-version";
pub(super) const LEGACY_HEADER: &str = "x-openstack-nova-api-version";
const VARY: &str = "OpenStack-API-Version, X-OpenStack-Nova-API-Version";

/// A requested API microversion `major.minor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Microversion {
    pub major: u32,
    pub minor: u32,
}

impl Microversion {
    /// Parses `X.Y` the way Nova's `APIVersionRequest` does: `^([1-9]\d*)\.([1-9]\d*|0)$`.
    pub fn parse(s: &str) -> Option<Microversion> {
        let (major, minor) = s.split_once('.')?;
        let number = |n: &str, zero_ok: bool| -> Option<u32> {
            let ok = !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_digit())
                && (!n.starts_with('0') || (zero_ok && n == "0"));
            ok.then(|| n.parse().ok()).flatten()
        };
        Some(Microversion {
            major: number(major, false)?,
            minor: number(minor, true)?,
        })
    }

    /// True from `2.minor` on.
    pub fn at_least(self, minor: u32) -> bool {
        self >= Microversion { major: 2, minor }
    }
}

impl std::fmt::Display for Microversion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The version string the request asks for: the `compute` entry of `OpenStack-API-Version`
/// if there is one, else `X-OpenStack-Nova-API-Version` (as `microversion_parse` reads them).
fn requested_version(headers: &HeaderMap) -> Option<String> {
    for value in headers.get_all(HEADER) {
        let Ok(value) = value.to_str() else { continue };
        for entry in value.split(',') {
            let mut words = entry.split_whitespace();
            if words
                .next()
                .is_some_and(|s| s.eq_ignore_ascii_case("compute"))
            {
                return Some(words.next().unwrap_or("").to_string());
            }
        }
    }
    headers
        .get(LEGACY_HEADER)
        .map(|v| v.to_str().unwrap_or("").trim().to_string())
}

/// The microversion of a request, or the fault Nova answers with.
pub fn negotiate(headers: &HeaderMap) -> Result<Microversion, Fault> {
    let Some(s) = requested_version(headers) else {
        return Ok(MIN_VERSION);
    };
    if s.eq_ignore_ascii_case("latest") {
        return Ok(MAX_VERSION);
    }
    let v = Microversion::parse(&s).ok_or_else(|| {
        Fault::new(
            StatusCode::BAD_REQUEST,
            format!(
                "API Version String {s} is of invalid format. Must be of format MajorNum.MinorNum."
            ),
        )
    })?;
    if !(MIN_VERSION..=MAX_VERSION).contains(&v) {
        return Err(Fault::new(
            StatusCode::NOT_ACCEPTABLE,
            format!("Version {s} is not supported by the API. Minimum is {MIN_VERSION} and maximum is {MAX_VERSION}."),
        ));
    }
    Ok(v)
}

/// Adds the negotiated version (both headers), `Vary`, and a request id to an answer.
pub(super) fn stamp(mut resp: Response, v: Option<Microversion>) -> Response {
    let h = resp.headers_mut();
    if let Some(v) = v {
        let set = |h: &mut HeaderMap, name: &'static str, value: String| {
            if let Ok(value) = HeaderValue::from_str(&value) {
                h.insert(HeaderName::from_static(name), value);
            }
        };
        set(h, HEADER, format!("compute {v}"));
        set(h, LEGACY_HEADER, v.to_string());
        h.insert(axum::http::header::VARY, HeaderValue::from_static(VARY));
    }
    if let Ok(id) = HeaderValue::from_str(&request_id()) {
        h.insert(
            HeaderName::from_static("x-openstack-request-id"),
            id.clone(),
        );
        h.insert(HeaderName::from_static("x-compute-request-id"), id);
    }
    resp
}

/// `req-<uuid4>`, the shape of Nova's request ids (only for logs; never stored).
fn request_id() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        return "req-00000000-0000-4000-8000-000000000000".into();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "req-{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microversions_parse_like_nova() {
        let v = |s| Microversion::parse(s);
        assert_eq!(v("2.1"), Some(Microversion { major: 2, minor: 1 }));
        assert_eq!(v("2.104"), Some(MAX_VERSION));
        assert_eq!(v("2.0"), Some(Microversion { major: 2, minor: 0 }));
        for bad in [
            "abc", "2", "2.", ".1", "2.05", "02.1", "2.1.1", "2.x", "", " 2.1", "-2.1",
        ] {
            assert_eq!(v(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn negotiation_prefers_the_new_header_and_reports_nova_faults() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, val) in pairs {
                m.append(*k, HeaderValue::from_static(val));
            }
            m
        };
        assert_eq!(negotiate(&h(&[])).unwrap(), MIN_VERSION);
        assert_eq!(
            negotiate(&h(&[(HEADER, "compute latest")])).unwrap(),
            MAX_VERSION
        );
        assert_eq!(
            negotiate(&h(&[
                (HEADER, "volume 3.0, compute 2.60"),
                (LEGACY_HEADER, "2.3")
            ]))
            .unwrap(),
            Microversion {
                major: 2,
                minor: 60
            }
        );
        // No compute entry: the legacy header decides.
        assert_eq!(
            negotiate(&h(&[(HEADER, "volume 3.0"), (LEGACY_HEADER, "2.3")])).unwrap(),
            Microversion { major: 2, minor: 3 }
        );
        assert_eq!(
            negotiate(&h(&[(LEGACY_HEADER, "2.105")]))
                .unwrap_err()
                .status,
            StatusCode::NOT_ACCEPTABLE
        );
        assert_eq!(
            negotiate(&h(&[(LEGACY_HEADER, "2.0")])).unwrap_err().status,
            StatusCode::NOT_ACCEPTABLE
        );
        assert_eq!(
            negotiate(&h(&[(HEADER, "compute abc")]))
                .unwrap_err()
                .status,
            StatusCode::BAD_REQUEST
        );
    }
}
