//! Request ids, trace context and the access log, around every request of both listeners.
//!
//! - **`X-Request-Id`**: taken from the request when it is sane (1 to
//!   [`REQUEST_ID_BYTES_MAX`] bytes of visible ASCII), else generated (16 random bytes in
//!   hex); written back into the request (so a follower forwards it to the leader) and set on
//!   every answer, errors and refusals included.
//! - **`traceparent`** (W3C Trace Context): a valid one gives the request its trace id; an
//!   absent or invalid one is replaced by a new one (and an invalid one's `tracestate`
//!   dropped), which the request then carries on, e.g. when it is forwarded.
//! - **The access log**: one `tracing` event per request, target [`TARGET`], level info,
//!   when the answer's body is finished (or dropped): listener, method, route template,
//!   status, bytes of body sent, duration, tenant and token name of the caller, request id
//!   and trace id. Never a path with ids, a query string or a secret.
//! - **Retry-After**: every 503 answer carries `Retry-After: 1` unless it set its own.
//!
//! - **The request span** (`tracing`, target [`SPAN_TARGET`], name `request`): carries
//!   the request id and trace id into every line logged while the request is served. With
//!   OpenTelemetry export on (feature `otlp`, [`crate::telemetry`]) it becomes a server span
//!   whose parent is the caller's (from `traceparent`) and whose attributes are the method,
//!   route template, status and request id.
//!
//! The route template comes from the metrics middleware ([`super::metrics::Track`], which
//! sees axum's `MatchedPath`), the caller from [`super::auth::authenticate`]: both write
//! into the request's [`Info`], which the access log reads at the end.

use crate::limits::REQUEST_ID_BYTES_MAX;
use crate::tokens::Principal;
use axum::body::Body;
use axum::extract::MatchedPath;
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use axum::response::Response;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;
use tracing::Instrument as _;

/// The `tracing` target of the access log's lines (filter them with
/// `ACTION_LEDGER_LOG=info,access=off` and the like).
pub const TARGET: &str = "access";
/// The `tracing` target of the request spans.
pub const SPAN_TARGET: &str = "action_ledger::http::access";
/// The route of a request no route matched (404s, and requests answered while starting).
pub const UNMATCHED: &str = "<unmatched>";
/// The request id header.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The W3C Trace Context headers.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// What one request's access log line gathers while the request is served.
#[derive(Default)]
pub struct Info {
    route: OnceLock<MatchedPath>,
    /// Tenant and token name of the caller.
    caller: OnceLock<(String, String)>,
}

impl Info {
    /// Records the route template the router matched.
    pub fn set_route(&self, route: &MatchedPath) {
        let _ = self.route.set(route.clone());
    }
}

tokio::task_local! {
    /// The [`Info`] of the request being served (the authentication helpers see only
    /// headers, not the request's extensions).
    static CURRENT: Arc<Info>;
}

/// Records who the caller of the request being served is (its first authentication).
pub fn record_caller(p: &Principal) {
    let _ = CURRENT.try_with(|info| {
        if info.caller.get().is_none() {
            let _ = info.caller.set((p.tenant.clone(), p.name.clone()));
        }
    });
}

/// Whether the request spans carry the OpenTelemetry attributes ([`export_span_attributes`]).
static SPAN_ATTRIBUTES: AtomicBool = AtomicBool::new(false);

/// Gives the request spans from now on the attributes of an exported OpenTelemetry server span
/// (`otel.kind`, `otel.name`, `http.request.method`, `http.route`,
/// `http.response.status_code`): called when the OTLP exporter is installed.
pub fn export_span_attributes() {
    SPAN_ATTRIBUTES.store(true, Ordering::Relaxed);
}

/// Which listener, and whether its requests are logged.
#[derive(Clone, Copy, Debug)]
pub struct AccessLog {
    pub listener: &'static str,
    pub enabled: bool,
}

/// What [`begin`] settled for a request.
struct Begun {
    request_id: HeaderValue,
    trace_id: String,
    /// The request's `traceparent` (valid), and whether this server made it up (no valid one
    /// came with the request).
    #[cfg_attr(not(feature = "otlp"), allow(dead_code))]
    traceparent: (String, bool),
    info: Arc<Info>,
}

/// Settles the request id and trace context of `req` (rewriting its headers) and gives it
/// its [`Info`] (as an extension).
fn begin<B>(req: &mut Request<B>) -> Begun {
    let headers = req.headers_mut();
    let request_id = match headers.get(REQUEST_ID).filter(|v| sane_request_id(v)) {
        Some(v) => v.clone(),
        None => {
            let v = HeaderValue::from_str(&random_hex::<16>()).expect("hex is a header value");
            headers.insert(REQUEST_ID, v.clone());
            v
        }
    };
    let given = headers.get(TRACEPARENT).and_then(|v| v.to_str().ok());
    let (trace_id, traceparent) = match given.and_then(trace_id_of) {
        Some(t) => (
            t.to_string(),
            (given.unwrap_or_default().trim().to_string(), false),
        ),
        None => {
            if headers.contains_key(TRACEPARENT) {
                // An invalid traceparent invalidates its tracestate.
                headers.remove(TRACESTATE);
            }
            let trace_id = random_hex::<16>();
            let parent = format!("00-{trace_id}-{}-00", random_hex::<8>());
            headers.insert(
                TRACEPARENT,
                HeaderValue::from_str(&parent).expect("hex is a header value"),
            );
            (trace_id, (parent, true))
        }
    };
    let info = Arc::new(Info::default());
    req.extensions_mut().insert(info.clone());
    Begun {
        request_id,
        trace_id,
        traceparent,
        info,
    }
}

/// 1 to [`REQUEST_ID_BYTES_MAX`] bytes of visible ASCII (`!` to `~`).
pub fn sane_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= REQUEST_ID_BYTES_MAX && b.iter().all(|c| (0x21..=0x7e).contains(c))
}

/// The trace id of a valid W3C `traceparent` (`version-traceid-parentid-flags`, lowercase
/// hex): version `00` is exactly 55 characters; a later version (not `ff`) may append
/// fields after a `-`. An all-zero trace id or parent id is invalid.
pub fn trace_id_of(traceparent: &str) -> Option<&str> {
    let s = traceparent.trim();
    let lower_hex = |t: &str| t.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    let nonzero = |t: &str| t.bytes().any(|c| c != b'0');
    if s.len() < 55 || !s.is_char_boundary(55) {
        return None;
    }
    let (head, rest) = s.split_at(55);
    let version = &head[..2];
    if !lower_hex(version) || version == "ff" {
        return None;
    }
    if version == "00" && !rest.is_empty() {
        return None;
    }
    if !rest.is_empty() && !rest.starts_with('-') {
        return None;
    }
    let b = head.as_bytes();
    if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let (trace, parent, flags) = (&head[3..35], &head[36..52], &head[53..55]);
    if !lower_hex(trace) || !lower_hex(parent) || !lower_hex(flags) {
        return None;
    }
    if !nonzero(trace) || !nonzero(parent) {
        return None;
    }
    Some(trace)
}

/// `N` random bytes in lowercase hex.
fn random_hex<const N: usize>() -> String {
    let mut bytes = [0u8; N];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness (never seen on a supported OS): still unique within the process.
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let n = NEXT.fetch_add(1, Ordering::Relaxed).to_be_bytes();
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = n[i % 8] ^ (i as u8);
        }
    }
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(N * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// Wraps a listener's service call: settles ids ([`begin`]), runs `call` in the request's
/// span and with its [`Info`] current, and finishes the answer ([`Answer`]).
pub fn serve<B, F: Future>(
    log: AccessLog,
    mut req: Request<B>,
    call: impl FnOnce(Request<B>) -> F,
) -> Answer<F> {
    #[cfg_attr(not(feature = "otlp"), allow(unused_mut))]
    let mut begun = begin(&mut req);
    let method = req.method().clone();
    let request_id = begun.request_id.to_str().unwrap_or("");
    let exported = SPAN_ATTRIBUTES.load(Ordering::Relaxed);
    let span = if exported {
        let span = tracing::info_span!(
            target: SPAN_TARGET,
            "request",
            request_id,
            trace_id = tracing::field::Empty,
            otel.kind = "server",
            otel.name = method.as_str(), // "GET /route/{template}" when matched
            otel.status_code = tracing::field::Empty,
            http.request.method = method.as_str(),
            http.route = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
        );
        #[cfg(feature = "otlp")]
        if begun.traceparent.1 {
            // A new trace, whose root is this span: its ids become the request's trace id and
            // the traceparent it carries on (to a leader), so the exported trace and the logs
            // agree, and a forwarded request's span is this one's child.
            if let Some((trace_id, traceparent)) = crate::telemetry::root_ids(&span) {
                if let Ok(v) = HeaderValue::from_str(&traceparent) {
                    req.headers_mut().insert(TRACEPARENT, v);
                    begun.trace_id = trace_id;
                }
            }
        } else {
            crate::telemetry::set_parent(&span, &begun.traceparent.0);
        }
        span.record("trace_id", begun.trace_id.as_str());
        span
    } else {
        tracing::info_span!(
            target: SPAN_TARGET,
            "request",
            request_id,
            trace_id = %begun.trace_id,
        )
    };
    let inner = CURRENT.scope(begun.info.clone(), call(req).instrument(span.clone()));
    Answer {
        inner,
        span: exported.then_some(span),
        line: Some(Line {
            listener: log.listener,
            enabled: log.enabled,
            method,
            request_id: begun.request_id,
            trace_id: begun.trace_id,
            info: begun.info,
            start: Instant::now(),
            status: StatusCode::OK,
        }),
    }
}

/// One request's access log line, until its answer is finished.
struct Line {
    listener: &'static str,
    enabled: bool,
    method: Method,
    request_id: HeaderValue,
    trace_id: String,
    info: Arc<Info>,
    start: Instant,
    status: StatusCode,
}

impl Line {
    fn emit(&self, bytes: u64) {
        let route = self.info.route.get().map_or(UNMATCHED, MatchedPath::as_str);
        let caller = self.info.caller.get();
        let duration_ms = (self.start.elapsed().as_secs_f64() * 1e6).round() / 1e3;
        tracing::info!(
            target: TARGET,
            listener = self.listener,
            method = self.method.as_str(),
            route,
            status = self.status.as_u16(),
            bytes,
            duration_ms,
            tenant = caller.map(|c| c.0.as_str()),
            token = caller.map(|c| c.1.as_str()),
            request_id = self.request_id.to_str().unwrap_or(""),
            trace_id = self.trace_id.as_str(),
            "request"
        );
    }
}

pin_project_lite::pin_project! {
    /// A request's answer: gets `X-Request-Id` (and `Retry-After` on a 503), and a body that
    /// writes the access log line when it is finished.
    pub struct Answer<F> {
        #[pin]
        inner: tokio::task::futures::TaskLocalFuture<Arc<Info>, tracing::instrument::Instrumented<F>>,
        // The request span, when it gets the answer's attributes (OpenTelemetry export).
        span: Option<tracing::Span>,
        line: Option<Line>,
    }
}

impl<F, E> Future for Answer<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        let Ok(mut resp) = out else {
            return Poll::Ready(out);
        };
        if let (Some(span), Some(line)) = (this.span.take(), this.line.as_ref()) {
            let status = resp.status();
            if let Some(route) = line.info.route.get() {
                span.record("http.route", route.as_str());
                #[cfg(feature = "otlp")]
                crate::telemetry::rename(&span, format!("{} {}", line.method, route.as_str()));
            }
            span.record("http.response.status_code", i64::from(status.as_u16()));
            if status.is_server_error() {
                span.record("otel.status_code", "error");
            }
        }
        let Some(mut line) = this.line.take() else {
            return Poll::Ready(Ok(resp));
        };
        let headers = resp.headers_mut();
        headers.insert(REQUEST_ID, line.request_id.clone());
        if resp.status() == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .entry(axum::http::header::RETRY_AFTER)
                .or_insert(HeaderValue::from_static("1"));
        }
        if line.enabled && tracing::enabled!(target: TARGET, tracing::Level::INFO) {
            line.status = resp.status();
            resp = resp.map(|body| {
                Body::new(Logged {
                    inner: body,
                    bytes: 0,
                    line: Some(line),
                })
            });
        }
        Poll::Ready(Ok(resp))
    }
}

/// An answer's body that counts what is sent and logs the request's line when it ends (or
/// is dropped: the client left, or the body was never read, as for HEAD).
struct Logged {
    inner: Body,
    bytes: u64,
    line: Option<Line>,
}

impl Logged {
    fn finish(&mut self) {
        if let Some(line) = self.line.take() {
            line.emit(self.bytes);
        }
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        self.finish();
    }
}

impl http_body::Body for Logged {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_per_the_w3c_rules() {
        let t = "4bf92f3577b34da6a3ce929d0e0e4736";
        let ok = format!("00-{t}-00f067aa0ba902b7-01");
        assert_eq!(trace_id_of(&ok), Some(t));
        // A later version may carry more fields.
        assert_eq!(
            trace_id_of(&format!("01-{t}-00f067aa0ba902b7-01-extra")),
            Some(t)
        );
        for bad in [
            String::new(),
            format!("ff-{t}-00f067aa0ba902b7-01"),
            format!("00-{t}-00f067aa0ba902b7-01-extra"),
            format!("00-{}-00f067aa0ba902b7-01", t.to_uppercase()),
            format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32)),
            format!("00-{t}-0000000000000000-01"),
            format!("00-{t}-00f067aa0ba902b7-0"),
            format!("00_{t}-00f067aa0ba902b7-01"),
            format!("0g-{t}-00f067aa0ba902b7-01"),
            format!("01-{t}-00f067aa0ba902b7-01x"),
            format!("00-{t}-00f067aa0ba902bé-1"),
        ] {
            assert_eq!(trace_id_of(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn request_ids_are_bounded_visible_ascii() {
        let ok = |s: &str| sane_request_id(&HeaderValue::from_str(s).unwrap());
        assert!(ok("abc-123_XYZ.:/="));
        assert!(ok(&"a".repeat(REQUEST_ID_BYTES_MAX)));
        assert!(!ok(&"a".repeat(REQUEST_ID_BYTES_MAX + 1)));
        assert!(!ok(""));
        assert!(!ok("has space"));
        assert!(!ok("tab\there"));
        assert!(!sane_request_id(
            &HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap()
        ));
        let (a, b) = (random_hex::<16>(), random_hex::<16>());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
