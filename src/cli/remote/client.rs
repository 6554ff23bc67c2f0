//! HTTP for the remote CLI: one [`Client`] per command, the mapping of what went wrong to
//! an exit code ([`Failure::Refused`]: the server said no; [`Failure::Error`]: no usable
//! answer), and the parser of the watch route's Server-Sent Events ([`SseParser`]).
//!
//! reqwest without default features: HTTP/1.1 (and https through rustls, the TLS stack the
//! server already builds; no OpenSSL) over the hyper and tokio the server already builds.
//! `--cacert` replaces the system's trusted roots; `--cert`/`--key` present a client
//! certificate.

use super::RemoteOpts;
use crate::cli::Failure;
use crate::limits::REMOTE_SSE_EVENT_BYTES_MAX;
use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde_json::Value;
use std::time::Duration;

pub struct Client {
    http: reqwest::Client,
    base: Url,
    /// The server as named in messages: scheme, host, port and path, never credentials.
    shown: String,
    auth: Option<HeaderValue>,
    timeout: Duration,
    /// Whether a client certificate is presented (`--cert`).
    client_cert: bool,
}

impl Client {
    pub fn new(opts: &RemoteOpts) -> Result<Client, Failure> {
        let base = Url::parse(opts.server.trim())
            .map_err(|e| Failure::error(format!("--server {:?} is not a URL: {e}", opts.server)))?;
        let mut shown = base.clone();
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        let shown = shown.as_str().trim_end_matches('/').to_string();
        match base.scheme() {
            "http" | "https" => {}
            other => {
                return Err(Failure::error(format!(
                    "--server {shown}: the scheme must be http or https, not {other:?}"
                )))
            }
        }
        if base.cannot_be_a_base() || base.host_str().is_none_or(str::is_empty) {
            return Err(Failure::error(format!("--server {shown}: no host")));
        }
        let auth = match &opts.token {
            None => None,
            Some(t) => {
                // Never name the token in the error: it is a secret.
                let mut v =
                    HeaderValue::from_str(&format!("Bearer {}", t.trim())).map_err(|_| {
                        Failure::error("the token holds characters an HTTP header cannot carry")
                    })?;
                v.set_sensitive(true);
                Some(v)
            }
        };
        let timeout = opts.timeout();
        let http = tls_options(
            reqwest::Client::builder()
                .connect_timeout(timeout)
                .user_agent(concat!("action-ledger/", env!("CARGO_PKG_VERSION"))),
            opts,
        )?
        .build()
        .map_err(|e| Failure::error(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Client {
            http,
            base,
            shown,
            auth,
            timeout,
            client_cert: opts.cert.is_some(),
        })
    }

    /// The URL of `segments` (each one escaped) under the server's base URL.
    pub fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url.set_query(None);
        if !query.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        url
    }

    /// A request with the token, without a time limit yet.
    pub fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let req = self.http.request(method, url);
        match &self.auth {
            Some(v) => req.header(AUTHORIZATION, v.clone()),
            None => req,
        }
    }

    /// `--timeout`.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends `req` (its whole exchange within `--timeout` plus `extra`) and returns the
    /// answer's JSON (`null` for an empty body) when the status is a success.
    pub async fn call(&self, req: RequestBuilder, extra: Duration) -> Result<Value, Failure> {
        let resp = req
            .timeout(self.timeout + extra)
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| self.transport(e))?;
        if !status.is_success() {
            return Err(self.refusal(status, &text));
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| {
            Failure::error(format!(
                "{} answered {status} with a body that is not JSON: {e}",
                self.shown
            ))
        })
    }

    /// `GET segments?query`.
    pub async fn get(&self, segments: &[&str], query: &[(&str, String)]) -> Result<Value, Failure> {
        self.call(
            self.request(Method::GET, self.url(segments, query)),
            Duration::ZERO,
        )
        .await
    }

    /// Sends a streaming request: only the head must arrive within `--timeout`; the body
    /// is read by the caller, as slowly as it comes. A failure status is read and mapped
    /// like [`Client::call`]'s.
    pub async fn open(&self, req: RequestBuilder) -> Result<Response, Failure> {
        let resp = match tokio::time::timeout(self.timeout, req.send()).await {
            Err(_) => return Err(self.timed_out()),
            Ok(r) => r.map_err(|e| self.transport(e))?,
        };
        let status = resp.status();
        if !status.is_success() {
            let text = tokio::time::timeout(self.timeout, resp.text())
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            return Err(self.refusal(status, &text));
        }
        Ok(resp)
    }

    /// No answer within `--timeout`.
    pub fn timed_out(&self) -> Failure {
        Failure::error(format!(
            "no answer from {} within {:?} (--timeout)",
            self.shown, self.timeout
        ))
    }

    /// A request that got no (complete) answer: exit 2, naming the server and the cause.
    pub fn transport(&self, e: reqwest::Error) -> Failure {
        if e.is_timeout() {
            return self.timed_out();
        }
        let mut cause = root_cause(&e);
        let refused_without_cert = self.base.scheme() == "https"
            && !self.client_cert
            && may_be_a_refused_client_certificate(&cause);
        if refused_without_cert {
            cause
                .push_str(" (if the server requires a client certificate: --cert FILE --key FILE)");
        } else if cause.contains("certificate") {
            cause.push_str(" (for a server with a private CA, --cacert FILE trusts it)");
        }
        if e.is_connect() {
            Failure::error(format!("cannot connect to {}: {cause}", self.shown))
        } else {
            Failure::error(format!("request to {} failed: {cause}", self.shown))
        }
    }

    /// A failure status: the server's own message (`{"error": {"code", "message"}}`) when it
    /// sent one. 4xx: refused (exit 1); anything else: an error (exit 2).
    pub fn refusal(&self, status: StatusCode, body: &str) -> Failure {
        let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let code = v["error"]["code"].as_str();
        let msg = match (v["error"]["message"].as_str(), code) {
            (Some(m), Some(c)) => format!("{m} ({} {c})", status.as_u16()),
            (Some(m), None) => format!("{m} ({})", status.as_u16()),
            _ => format!("{} answered {status}", self.shown),
        };
        let msg = if status == StatusCode::UNAUTHORIZED && self.auth.is_none() {
            format!("{msg}; no token given (--token or ACTION_LEDGER_TOKEN)")
        } else {
            msg
        };
        if status.is_client_error() {
            Failure::Refused(msg)
        } else {
            Failure::Error(msg)
        }
    }
}

/// `--cacert` (the only roots trusted) and `--cert`/`--key` (the client certificate), each
/// read and checked now, so a bad file is named before any connection.
fn tls_options(
    mut builder: reqwest::ClientBuilder,
    opts: &RemoteOpts,
) -> Result<reqwest::ClientBuilder, Failure> {
    use crate::http::tls::{read_certs, read_key, read_pem};
    if let Some(path) = &opts.cacert {
        let certs = read_certs("--cacert", path).map_err(Failure::error)?;
        let mut roots = Vec::new();
        for der in certs {
            roots.push(
                reqwest::Certificate::from_der(&der)
                    .map_err(|e| Failure::error(format!("--cacert {}: {e}", path.display())))?,
            );
        }
        builder = builder.tls_certs_only(roots);
    }
    if let (Some(cert), Some(key)) = (&opts.cert, &opts.key) {
        read_certs("--cert", cert).map_err(Failure::error)?;
        read_key("--key", key).map_err(Failure::error)?;
        let mut pem = read_pem("--cert", cert).map_err(Failure::error)?;
        pem.push(b'\n');
        pem.extend(read_pem("--key", key).map_err(Failure::error)?);
        let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
            Failure::error(format!(
                "--cert {} and --key {}: {}",
                cert.display(),
                key.display(),
                root_cause(&e)
            ))
        })?;
        builder = builder.identity(identity);
    }
    Ok(builder)
}

/// The innermost cause of `e` ("Connection refused (os error 111)"), which says more than
/// reqwest's outer "error sending request".
/// Whether a failed https request's root cause may be a server refusing a missing client
/// certificate. TLS 1.3 refuses it after the handshake, while the client is already sending
/// its request, so the client sees whichever comes first: the server's CertificateRequired
/// alert, the connection closing, or (when the server closed with the request still unread)
/// a reset or a broken pipe that discards the alert.
fn may_be_a_refused_client_certificate(cause: &str) -> bool {
    let c = cause.to_ascii_lowercase();
    [
        "certificaterequired",
        "connection closed",
        "connection reset",
        "broken pipe",
    ]
    .iter()
    .any(|s| c.contains(s))
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// The `Idempotency-Key` header of `key` (sent as given).
pub fn idempotency_key(req: RequestBuilder, key: Option<&str>) -> Result<RequestBuilder, Failure> {
    match key {
        None => Ok(req),
        Some(k) => {
            let v = HeaderValue::from_str(k).map_err(|_| {
                Failure::error("--idempotency-key must be visible ASCII characters")
            })?;
            Ok(req.header("idempotency-key", v))
        }
    }
}

/// One server-sent event.
#[derive(Debug, Default, PartialEq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// Turns the bytes of an event stream into events (the subset of the SSE format the server
/// writes and proxies keep: `id`, `event`, `data` lines, comments, CRLF or LF), holding at
/// most [`REMOTE_SSE_EVENT_BYTES_MAX`] bytes of one unfinished event.
#[derive(Default)]
pub struct SseParser {
    line: Vec<u8>,
    pending: SseEvent,
    has_data: bool,
    held: usize,
}

impl SseParser {
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, String> {
        let mut out = Vec::new();
        for &b in bytes {
            if b != b'\n' {
                self.line.push(b);
                self.held += 1;
                if self.held > REMOTE_SSE_EVENT_BYTES_MAX {
                    return Err(format!(
                        "an event of the watch stream passed {REMOTE_SSE_EVENT_BYTES_MAX} bytes \
                         (REMOTE_SSE_EVENT_BYTES_MAX)"
                    ));
                }
                continue;
            }
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line);
            if line.is_empty() {
                let ev = std::mem::take(&mut self.pending);
                // An `id:`-only frame (the server's mark past events that matched no
                // filter) is kept too: it moves the resume point.
                if self.has_data || ev.event.is_some() || ev.id.is_some() {
                    out.push(ev);
                }
                self.has_data = false;
                self.held = 0;
                continue;
            }
            if line.starts_with(':') {
                continue; // a comment: the keep-alive
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (&*line, ""),
            };
            match field {
                "id" => self.pending.id = Some(value.to_string()),
                "event" => self.pending.event = Some(value.to_string()),
                "data" => {
                    if self.has_data {
                        self.pending.data.push('\n');
                    }
                    self.pending.data.push_str(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_way_a_missing_client_certificate_shows_gets_the_hint() {
        for cause in [
            "received fatal alert: CertificateRequired",
            "connection closed",
            "connection closed before message completed",
            "Connection reset by peer (os error 104)",
            "Broken pipe (os error 32)",
        ] {
            assert!(may_be_a_refused_client_certificate(cause), "{cause}");
        }
        for cause in [
            "invalid peer certificate: UnknownIssuer",
            "Connection refused (os error 111)",
        ] {
            assert!(!may_be_a_refused_client_certificate(cause), "{cause}");
        }
    }

    #[test]
    fn sse_events_split_anywhere() {
        let stream = b": keep-alive\n\nid: 5\nevent: progress\ndata: {\"a\":1}\n\n\
                       id: 6\r\nevent: completed\r\ndata: x\r\ndata: y\r\n\r\nid: 7\n";
        for cut in 0..stream.len() {
            let mut p = SseParser::default();
            let mut got = p.feed(&stream[..cut]).unwrap();
            got.extend(p.feed(&stream[cut..]).unwrap());
            assert_eq!(
                got,
                vec![
                    SseEvent {
                        id: Some("5".into()),
                        event: Some("progress".into()),
                        data: "{\"a\":1}".into()
                    },
                    SseEvent {
                        id: Some("6".into()),
                        event: Some("completed".into()),
                        data: "x\ny".into()
                    },
                ],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn sse_event_size_is_bounded() {
        let mut p = SseParser::default();
        let chunk = vec![b'a'; 1024 * 1024];
        let mut failed = false;
        for _ in 0..=(REMOTE_SSE_EVENT_BYTES_MAX / chunk.len()) {
            if p.feed(&chunk).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed);
    }
}
