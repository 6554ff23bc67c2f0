//! OpenTelemetry export of the request spans (cargo feature `otlp`, key `otlp_endpoint`).
//!
//! Each request's span (see [`crate::http::access`]) goes to an OpenTelemetry collector as an
//! OTLP/HTTP request with a JSON body to `<otlp_endpoint>/v1/traces`, in batches, from a task
//! on the server's tokio runtime. The span's trace id is the request's W3C trace id, its parent
//! the caller's span (from `traceparent`), and the caller's sampling decision holds (a
//! `traceparent` with flags `00` is not exported). Export never delays a request: spans wait in
//! a bounded queue ([`OTLP_QUEUE_SPANS_MAX`], then they are dropped), a failed export is
//! dropped after [`OTLP_EXPORT_TIMEOUT_MS`] and logged at warn at most once per
//! [`OTLP_WARN_INTERVAL_MS`]. The graceful stop sends what is left ([`Otlp::shutdown`]).

use crate::limits::{
    OTLP_EXPORT_TIMEOUT_MS, OTLP_QUEUE_SPANS_MAX, OTLP_SHUTDOWN_TIMEOUT_MS, OTLP_WARN_INTERVAL_MS,
};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{BatchConfigBuilder, SdkTracerProvider, SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing_subscriber::Layer as _;

/// The `tracing` target of this module's warnings.
const TARGET: &str = "otlp";

/// The exporter of a running server: keep it until the graceful stop, then
/// [`Otlp::shutdown`].
pub struct Otlp {
    provider: SdkTracerProvider,
}

/// The `tracing` layer that turns the request spans into OpenTelemetry spans, and the
/// exporter behind it. Must be called on the tokio runtime that will run the server.
pub fn layer(endpoint: &str, service_name: &str) -> Result<(crate::cli::ExtraLayer, Otlp), String> {
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(&url)
        .with_timeout(Duration::from_millis(OTLP_EXPORT_TIMEOUT_MS))
        .build()
        .map_err(|e| format!("cannot set up the OTLP exporter to {url}: {e}"))?;
    let exporter = Warning {
        inner: exporter,
        url,
        failures: Mutex::new(Failures::default()),
    };
    let batch = BatchConfigBuilder::default()
        .with_max_queue_size(OTLP_QUEUE_SPANS_MAX)
        // A backstop: [`Warning`] gives up (and says so) after OTLP_EXPORT_TIMEOUT_MS.
        .with_max_export_timeout(Duration::from_millis(2 * OTLP_EXPORT_TIMEOUT_MS))
        .build();
    let processor = BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio)
        .with_batch_config(batch)
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(
            Resource::builder_empty()
                .with_service_name(service_name.to_string())
                .build(),
        )
        .build();
    let tracer = provider.tracer("action-ledger");
    // Only the request spans: no events (the access log has them), nothing of other crates.
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        .with_filter(tracing_subscriber::filter::filter_fn(|m| {
            m.is_span() && m.target() == crate::http::access::SPAN_TARGET
        }))
        .boxed();
    crate::http::access::export_span_attributes();
    Ok((layer, Otlp { provider }))
}

/// Makes the caller's span (a valid W3C `traceparent`) the OpenTelemetry parent of `span`,
/// so that it is exported with the caller's trace id and parent span id, and sampled as the
/// caller says.
pub fn set_parent(span: &tracing::Span, traceparent: &str) {
    use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId};
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let mut parts = traceparent.split('-').skip(1);
    let (Some(trace), Some(parent), Some(flags)) = (parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let (Ok(trace), Ok(parent), Ok(flags)) = (
        TraceId::from_hex(trace),
        SpanId::from_hex(parent),
        u8::from_str_radix(flags, 16),
    ) else {
        return;
    };
    let flags = if flags & 1 == 1 {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let remote = SpanContext::new(trace, parent, flags, true, Default::default());
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
}

/// Starts `span` as the root of a new trace: its trace id, and the `traceparent` that names
/// it as the parent (`None` if it is not exported after all).
pub fn root_ids(span: &tracing::Span) -> Option<(String, String)> {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if !sc.is_valid() {
        return None;
    }
    let (trace, id, flags) = (sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8());
    Some((trace.to_string(), format!("00-{trace}-{id}-{flags:02x}")))
}

/// Renames the OpenTelemetry span of `span` (already started: `otel.name` would not do).
pub fn rename(span: &tracing::Span, name: String) {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    span.context().span().update_name(name);
}

impl Otlp {
    /// Sends the spans still queued and stops the exporter, within
    /// [`OTLP_SHUTDOWN_TIMEOUT_MS`].
    pub async fn shutdown(self) {
        let provider = self.provider;
        let done = tokio::task::spawn_blocking(move || provider.shutdown());
        match tokio::time::timeout(Duration::from_millis(OTLP_SHUTDOWN_TIMEOUT_MS), done).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(target: TARGET, "OTLP exporter shutdown: {e}"),
            Ok(Err(e)) => tracing::warn!(target: TARGET, "OTLP exporter shutdown: {e}"),
            Err(_) => tracing::warn!(
                target: TARGET,
                "OTLP exporter shutdown: gave up after {OTLP_SHUTDOWN_TIMEOUT_MS} ms; spans were lost"
            ),
        }
    }
}

/// Export failures since the last warning.
#[derive(Default)]
struct Failures {
    last_warning: Option<Instant>,
    since: u64,
}

/// The OTLP exporter, warning about failed exports (rate-limited) and about the first success
/// after failures.
#[derive(Debug)]
struct Warning<E> {
    inner: E,
    url: String,
    failures: Mutex<Failures>,
}

impl std::fmt::Debug for Failures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Failures")
            .field("since", &self.since)
            .finish()
    }
}

impl<E: SpanExporter> SpanExporter for Warning<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let timeout = Duration::from_millis(OTLP_EXPORT_TIMEOUT_MS);
        let result = match tokio::time::timeout(timeout, self.inner.export(batch)).await {
            Ok(result) => result,
            Err(_) => Err(opentelemetry_sdk::error::OTelSdkError::Timeout(timeout)),
        };
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match &result {
            Ok(()) => {
                if f.last_warning.take().is_some() {
                    tracing::info!(
                        target: TARGET,
                        "OTLP export to {} works again ({} failed exports since the last warning)",
                        self.url,
                        f.since
                    );
                }
                f.since = 0;
            }
            Err(e) => {
                let due = f
                    .last_warning
                    .is_none_or(|t| t.elapsed() >= Duration::from_millis(OTLP_WARN_INTERVAL_MS));
                if due {
                    tracing::warn!(
                        target: TARGET,
                        "OTLP export to {} failed, {spans} spans dropped ({} more failed exports \
                    since the last warning; the next warning in {} s at the earliest): {e}",
                        self.url,
                        f.since,
                        OTLP_WARN_INTERVAL_MS / 1000
                    );
                    f.last_warning = Some(Instant::now());
                    f.since = 0;
                } else {
                    f.since += 1;
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
