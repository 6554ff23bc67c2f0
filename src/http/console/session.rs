//! Signing in and out of the console: the sign-in form, the cookie that carries the token
//! (see the module documentation of [`super`] for why the token and not a session id), the
//! safe `next` to return to, and the same-site check of every state-changing request.

use super::pages::login_page;
use super::{cross_site, see_other, Console, PageError};
use crate::http::AppState;
use crate::limits::{CONSOLE_COOKIE_MAX_AGE_S, CONSOLE_NEXT_BYTES_MAX, TOKEN_SECRET_BYTES_MAX};
use axum::extract::rejection::FormRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::Response;
use axum::Form;
use serde::Deserialize;

/// The sign-in cookie's name.
pub const COOKIE: &str = "ledger_console";

/// Where to go after signing in when no (safe) `next` was given.
pub const HOME: &str = "/console/actions";

#[derive(Deserialize, Default)]
pub struct NextParam {
    next: Option<String>,
}

/// `GET /console/login`: the form (public: it shows nothing of the ledger).
pub async fn login_form(Query(q): Query<NextParam>) -> Response {
    let next = q.next.as_deref().and_then(safe_next);
    login_page(StatusCode::OK, next, None)
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
    next: Option<String>,
}

/// `POST /console/login`: checks the token exactly as the API does (same store, expiry,
/// revocation); a good one is set as the cookie and the browser sent on to `next`; a bad one
/// gets the form again, 401, saying why (never repeating the token).
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Result<Response, PageError> {
    if !same_origin(&headers, &uri) {
        return Err(cross_site());
    }
    let console = state.console.as_ref().ok_or_else(not_here)?;
    let Form(form) = form.map_err(|e| PageError {
        status: StatusCode::BAD_REQUEST,
        message: format!("the sign-in form is not valid: {}", e.body_text()),
        viewer: None,
    })?;
    let next = form.next.as_deref().and_then(safe_next);
    let token = form.token.trim();
    if token.is_empty() || token.len() > TOKEN_SECRET_BYTES_MAX {
        let why = format!("enter a token (1 to {TOKEN_SECRET_BYTES_MAX} bytes)");
        return Ok(login_page(StatusCode::UNAUTHORIZED, next, Some(&why)));
    }
    match crate::http::auth::authenticate_secret(token, &state.tokens) {
        Ok(_) => {
            let mut resp = see_other(next.unwrap_or(HOME));
            set_cookie(console, resp.headers_mut(), token);
            Ok(resp)
        }
        Err(f) => Ok(login_page(f.status(), next, Some(&f.message()))),
    }
}

/// `POST /console/logout`: clears the cookie and shows the sign-in form.
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, PageError> {
    if !same_origin(&headers, &uri) {
        return Err(cross_site());
    }
    let console = state.console.as_ref().ok_or_else(not_here)?;
    let mut resp = see_other("/console/login");
    clear_cookie(console, resp.headers_mut());
    Ok(resp)
}

fn not_here() -> PageError {
    PageError {
        status: StatusCode::NOT_FOUND,
        message: "the console is off".into(),
        viewer: None,
    }
}

/// The token in the request's sign-in cookie, if there is one that decodes.
pub fn cookie_secret(headers: &HeaderMap) -> Option<String> {
    for v in headers.get_all(header::COOKIE) {
        let Ok(v) = v.to_str() else { continue };
        for pair in v.split(';') {
            if let Some((name, value)) = pair.trim().split_once('=') {
                if name == COOKIE {
                    return hex_decode(value.trim_matches('"'));
                }
            }
        }
    }
    None
}

/// Sets the sign-in cookie (the token, hex-encoded: any token is a valid cookie value).
pub fn set_cookie(console: &Console, headers: &mut HeaderMap, token: &str) {
    let value = format!(
        "{COOKIE}={}; Path=/console; Max-Age={CONSOLE_COOKIE_MAX_AGE_S}; HttpOnly; SameSite=Strict{}",
        hex_encode(token.as_bytes()),
        if console.secure_cookie { "; Secure" } else { "" }
    );
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.append(header::SET_COOKIE, v);
    }
}

/// Clears the sign-in cookie.
pub fn clear_cookie(console: &Console, headers: &mut HeaderMap) {
    let value = format!(
        "{COOKIE}=; Path=/console; Max-Age=0; HttpOnly; SameSite=Strict{}",
        if console.secure_cookie {
            "; Secure"
        } else {
            ""
        }
    );
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.append(header::SET_COOKIE, v);
    }
}

/// The sign-in page's URL that returns to `target` (a path and query of the console).
pub fn login_url(target: &str) -> String {
    match safe_next(target) {
        Some(next) if next != HOME => format!("/console/login?next={}", super::pages::enc(next)),
        _ => "/console/login".to_string(),
    }
}

/// `next` if it is a path of this console — same origin, so never absolute, never
/// `//host` or `/\host` (which browsers take for another host), no control characters,
/// at most [`CONSOLE_NEXT_BYTES_MAX`] bytes — else `None` (the caller goes to [`HOME`]).
pub fn safe_next(next: &str) -> Option<&str> {
    let ok = next.len() <= CONSOLE_NEXT_BYTES_MAX
        && (next == "/console" || next.starts_with("/console/") || next.starts_with("/console?"))
        && !next.contains('\\')
        && !next.contains("//")
        && !next.split(['?', '#']).next().unwrap_or("").contains("/../")
        && !next.chars().any(|c| c.is_control())
        && !next.starts_with("/console/login")
        && !next.starts_with("/console/logout");
    ok.then_some(next)
}

/// True when a state-changing request comes from this console's own origin: the browser's
/// `Sec-Fetch-Site` says `same-origin`, or (older browsers) its `Origin` names the host the
/// request was sent to. A request with neither is refused: the console's forms are only
/// ever sent by browsers, which send one or both.
pub fn same_origin(headers: &HeaderMap, uri: &Uri) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return site.as_bytes() == b"same-origin";
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return false;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()));
    let Some(host) = host else { return false };
    let Some((_scheme, authority)) = origin.split_once("://") else {
        return false; // "null" and the like
    };
    authority.eq_ignore_ascii_case(host)
}

fn hex_encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from_digit(u32::from(b >> 4), 16).expect("nibble"));
        s.push(char::from_digit(u32::from(b & 0xf), 16).expect("nibble"));
    }
    s
}

fn hex_decode(s: &str) -> Option<String> {
    if s.is_empty() || s.len() % 2 != 0 || s.len() > 2 * TOKEN_SECRET_BYTES_MAX {
        return None;
    }
    let bytes = s
        .as_bytes()
        .chunks(2)
        .map(|pair| {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            Some((hi << 4 | lo) as u8)
        })
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_inside_the_console() {
        for ok in [
            "/console",
            "/console/actions",
            "/console/actions?status=running&type=a%2Fb",
            "/console/actions/42",
        ] {
            assert_eq!(safe_next(ok), Some(ok), "{ok}");
        }
        for bad in [
            "https://evil.example/console/actions",
            "//evil.example/console",
            "/console//evil.example",
            "/\\evil.example",
            "/console\\..\\api",
            "/api/v1/actions",
            "/consolex",
            "/console/../api/v1/actions",
            "/console/login?next=/console",
            "/console/actions\n",
            "",
        ] {
            assert_eq!(safe_next(bad), None, "{bad:?}");
        }
        assert!(safe_next(&format!("/console/{}", "a".repeat(CONSOLE_NEXT_BYTES_MAX))).is_none());
    }

    #[test]
    fn the_cookie_round_trips_any_token() {
        for token in ["abc", "with space;and=semi\"quote", "ünïcode"] {
            let mut h = HeaderMap::new();
            set_cookie(
                &Console {
                    secure_cookie: true,
                },
                &mut h,
                token,
            );
            let set = h.get(header::SET_COOKIE).unwrap().to_str().unwrap();
            assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"));
            assert!(set.contains("Path=/console") && set.ends_with("; Secure"));
            let value = set.split(';').next().unwrap();
            let mut req = HeaderMap::new();
            req.insert(
                header::COOKIE,
                HeaderValue::from_str(&format!("other=1; {value}")).unwrap(),
            );
            assert_eq!(cookie_secret(&req).as_deref(), Some(token));
        }
    }
}
