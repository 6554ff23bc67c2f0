//! OpenTelemetry export (cargo feature `otlp`), through the real binary: a fake collector
//! receives the request spans as OTLP/HTTP JSON, with the caller's trace id and parent span
//! id, the route template (never the raw path) and the other attributes; the graceful stop
//! sends the last ones; a collector that is down never fails a request. Without the feature,
//! `otlp_endpoint` is refused (exit 2). Run with `cargo test --features otlp --test it otlp::`.

#[cfg(feature = "otlp")]
mod exported {
    use crate::access_log::{field, Server};
    use crate::app::ADMIN;
    use reqwest::StatusCode;
    use serde_json::Value;
    use std::sync::{Arc, Mutex};

    /// A collector on 127.0.0.1 that keeps the JSON body of every `POST /v1/traces`.
    async fn collector() -> (String, Arc<Mutex<Vec<Value>>>) {
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let kept = bodies.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                let kept = kept.clone();
                async move {
                    let v: Value = serde_json::from_slice(&body).expect("an OTLP JSON body");
                    kept.lock().unwrap().push(v);
                    "{}"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), bodies)
    }

    /// Every span of the bodies, with its resource's attributes.
    fn spans(bodies: &[Value]) -> Vec<(Value, Value)> {
        let mut out = Vec::new();
        for body in bodies {
            for rs in body["resourceSpans"].as_array().unwrap() {
                for ss in rs["scopeSpans"].as_array().unwrap() {
                    for span in ss["spans"].as_array().unwrap() {
                        out.push((rs["resource"].clone(), span.clone()));
                    }
                }
            }
        }
        out
    }

    /// The value of attribute `key` (a string, or an integer as text).
    fn attribute(attributes: &Value, key: &str) -> Option<String> {
        let a = attributes.as_array()?.iter().find(|a| a["key"] == key)?;
        let v = &a["value"];
        v["stringValue"]
            .as_str()
            .map(str::to_string)
            .or_else(|| match &v["intValue"] {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
    }

    // Multi-threaded: the collector answers while the test waits for the server to stop.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn request_spans_reach_the_collector_with_the_callers_trace() {
        let (endpoint, bodies) = collector().await;
        let s = Server::start(&["--set", &format!("otlp_endpoint={endpoint}")]).await;
        let auth = format!("Bearer {ADMIN}");
        let (trace, parent) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
        let traceparent = format!("00-{trace}-{parent}-01");
        let raw = "otlp-uid-in-the-path-42";
        let (st, _, _) = s
            .request(
                reqwest::Method::GET,
                &format!("/api/v1/actions/{raw}"),
                &[
                    ("authorization", &auth),
                    ("traceparent", &traceparent),
                    ("x-request-id", "otlp-request-1"),
                ],
                None,
            )
            .await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        // The caller decided not to sample: no span.
        let unsampled = "5bf92f3577b34da6a3ce929d0e0e4736";
        let (st, _, _) = s
            .request(
                reqwest::Method::GET,
                "/healthz",
                &[("traceparent", &format!("00-{unsampled}-{parent}-00"))],
                None,
            )
            .await;
        assert_eq!(st, StatusCode::OK);
        // No traceparent: a new trace, whose root span has the trace id the access log names.
        let (st, _, _) = s
            .request(
                reqwest::Method::GET,
                "/healthz",
                &[("x-request-id", "otlp-request-2")],
                None,
            )
            .await;
        assert_eq!(st, StatusCode::OK);
        let logged_trace = field(&s.line("otlp-request-2").await, "trace_id").unwrap();

        // The graceful stop sends what is queued.
        let out = s.stop();
        let bodies = bodies.lock().unwrap().clone();
        let spans = spans(&bodies);
        assert!(!spans.is_empty(), "no span exported; output: {out}");
        let all = serde_json::to_string(&bodies).unwrap();
        assert!(!all.contains(raw), "a raw path was exported: {all}");
        assert!(!all.contains(unsampled), "an unsampled trace was exported");

        let (resource, span) = spans
            .iter()
            .find(|(_, s)| s["traceId"] == trace)
            .unwrap_or_else(|| panic!("no span of trace {trace}: {all}"));
        assert_eq!(span["parentSpanId"], parent, "{span}");
        let a = &span["attributes"];
        assert_eq!(
            attribute(a, "http.route").as_deref(),
            Some("/api/v1/actions/{id}"),
            "{span}"
        );
        assert_eq!(attribute(a, "http.request.method").as_deref(), Some("GET"));
        assert_eq!(
            attribute(a, "http.response.status_code").as_deref(),
            Some("404")
        );
        assert_eq!(
            attribute(a, "request_id").as_deref(),
            Some("otlp-request-1")
        );
        assert_eq!(span["name"], "GET /api/v1/actions/{id}", "{span}");
        assert_eq!(
            attribute(&resource["attributes"], "service.name").as_deref(),
            Some("action-ledger")
        );

        let (_, span) = spans
            .iter()
            .find(|(_, s)| s["traceId"] == logged_trace.as_str())
            .unwrap_or_else(|| panic!("no span of the logged trace {logged_trace}: {all}"));
        assert_eq!(
            attribute(&span["attributes"], "request_id").as_deref(),
            Some("otlp-request-2")
        );
        // A root span: the trace is this server's.
        assert!(
            span["parentSpanId"].as_str().unwrap_or_default().is_empty(),
            "{span}"
        );
    }

    #[tokio::test]
    async fn a_collector_that_is_down_fails_no_request() {
        // A port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let s = Server::start(&[
            "--set",
            &format!("otlp_endpoint=http://127.0.0.1:{port}"),
            "--set",
            "otlp_service_name=ledger-under-test",
        ])
        .await;
        let auth = format!("Bearer {ADMIN}");
        for i in 0..20 {
            let (st, _, _) = s
                .request(
                    reqwest::Method::GET,
                    &format!("/api/v1/actions/missing-{i}"),
                    &[("authorization", &auth)],
                    None,
                )
                .await;
            assert_eq!(st, StatusCode::NOT_FOUND);
        }
        // The stop still ends well, and says the export failed.
        let out = s.stop();
        assert!(out.contains("OTLP export to"), "{out}");
        assert!(out.contains(" WARN "), "{out}");
    }
}

/// Without the feature `otlp`, the key is refused with what to do about it, from a flag or
/// the environment (exit 2, before anything starts).
#[cfg(not(feature = "otlp"))]
#[test]
fn a_build_without_the_feature_refuses_otlp_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let run = |args: &[&str], env: Option<&str>| {
        let mut c = std::process::Command::new(crate::binserver::bin());
        c.args(["serve", "--data-dir"]).arg(&data).args(args);
        c.env_remove("ACTION_LEDGER_OTLP_ENDPOINT");
        if let Some(v) = env {
            c.env("ACTION_LEDGER_OTLP_ENDPOINT", v);
        }
        c.stdin(std::process::Stdio::null()).output().unwrap()
    };
    for (args, env, origin) in [
        (
            &["--set", "otlp_endpoint=http://127.0.0.1:4318"][..],
            None,
            "--set otlp_endpoint=",
        ),
        (
            &[][..],
            Some("http://collector:4318"),
            "ACTION_LEDGER_OTLP_ENDPOINT",
        ),
    ] {
        let o = run(args, env);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(
            err.contains("this build has no OTLP support: rebuild with --features otlp"),
            "{err}"
        );
        assert!(err.contains(origin), "{err}");
    }
    assert!(!data.exists(), "nothing started");
    // An empty value is no endpoint: still fine to have in a file or the environment.
    let mut s = action_ledger::config::Settings::default();
    assert!(s.set("otlp_endpoint", "").is_ok());
}
