//! The one way the topic modules start an in-process server and talk HTTP to a server:
//! [`spawn_app_with`] (a server on port 0 over a fresh data directory, from a config value),
//! [`Api`] (requests with a token, answered as status, headers and JSON body) and [`ADMIN`],
//! the admin token of every test server, in-process or the binary.

use action_ledger::http::server::{self, Running, ServeConfig};
use reqwest::header::HeaderMap;
use reqwest::{Client, Method, RequestBuilder, StatusCode};
use serde_json::{json, Value};
use std::path::Path;

/// The admin token of every server the tests start.
pub const ADMIN: &str = "test-admin-token";

/// An answer: status, headers, and the body as JSON (a body that is not JSON is kept as a
/// JSON string, so a test can show it).
pub type Answer = (StatusCode, HeaderMap, Value);

/// Sends `req` and returns its answer; `Err` when no answer came (the connection failed).
pub async fn try_send(req: RequestBuilder) -> Result<Answer, reqwest::Error> {
    let resp = req.send().await?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await?;
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, headers, value))
}

/// Sends `req` and returns its answer; panics when no answer came.
pub async fn send(req: RequestBuilder) -> Answer {
    try_send(req)
        .await
        .unwrap_or_else(|e| panic!("no answer: {e}"))
}

/// A server's base URL (`http://host:port`) and a client for it.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub client: Client,
}

impl Api {
    pub fn new(base: impl Into<String>) -> Api {
        Api {
            base: base.into(),
            client: Client::new(),
        }
    }

    /// `target` as a URL: a path on this server, or an absolute URL as is (a link an
    /// answer gave).
    pub fn url(&self, target: &str) -> String {
        if target.starts_with("http://") || target.starts_with("https://") {
            target.to_string()
        } else {
            format!("{}{target}", self.base)
        }
    }

    /// The server's `/metrics` text, read as the admin.
    pub async fn metrics_text(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of the unlabelled series `name` in a `/metrics` text (panics, showing the
    /// text, when it has none).
    pub fn metric(text: &str, name: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
            .parse()
            .unwrap()
    }

    /// `method target` with the given headers and `body` as JSON: the one request helper.
    pub async fn request(
        &self,
        method: Method,
        target: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Answer {
        let mut req = self.client.request(method, self.url(target));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        send(req).await
    }

    /// `method target` with `token` as `Authorization: Bearer` and `body` as JSON.
    pub async fn request_as(
        &self,
        method: Method,
        target: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| ("authorization", a))
            .into_iter()
            .collect();
        self.request(method, target, &headers, body).await
    }

    /// [`Api::request_as`]'s status and body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (status, _, body) = self.request_as(method, path, token, body).await;
        (status, body)
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    /// Creates a token as [`ADMIN`] and returns its secret.
    pub async fn token(&self, name: &str, tenant: &str, role: &str) -> String {
        let (s, v) = self
            .post(
                "/api/v1/tokens",
                ADMIN,
                json!({"name": name, "tenant": tenant, "role": role}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["token"].as_str().unwrap().to_string()
    }

    pub async fn create(&self, token: &str, resource_id: &str) -> Value {
        let (s, v) = self
            .post(
                "/api/v1/actions",
                token,
                json!({"type": "snapshot", "resource": {"type": "droplet", "id": resource_id}}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v
    }
}

/// The configuration [`spawn_app`] uses: port 0, [`ADMIN`], 64 KiB bodies, the Redis
/// listener on port 0. Its `data_dir` is a placeholder: the spawn functions set it.
pub fn config() -> ServeConfig {
    let mut config = ServeConfig::new("", "127.0.0.1:0".parse().unwrap());
    config.admin_token = Some(ADMIN.into());
    config.limits.body_bytes_max = 64 * 1024;
    config.redis_listen = Some("127.0.0.1:0".parse().unwrap());
    config
}

/// An in-process server; its data directory is `dir/data`.
pub struct TestApp {
    pub api: Api,
    pub dir: tempfile::TempDir,
    pub running: Option<Running>,
}

impl std::ops::Deref for TestApp {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl TestApp {
    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("the server runs")
    }

    pub async fn stop(&mut self) {
        self.running.take().unwrap().stop().await.unwrap();
    }
}

/// A server with [`config`] on a fresh data directory.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(config()).await
}

/// A server with `config` on a fresh data directory.
pub async fn spawn_app_with(config: ServeConfig) -> TestApp {
    spawn_in(tempfile::tempdir().unwrap(), config).await
}

/// A server with [`config`] on `dir/data` (a restart on the data of a stopped [`TestApp`]).
pub async fn spawn_on(dir: tempfile::TempDir) -> TestApp {
    spawn_in(dir, config()).await
}

/// A server with `config` on `dir/data`.
pub async fn spawn_in(dir: tempfile::TempDir, config: ServeConfig) -> TestApp {
    let running = start(&dir.path().join("data"), config).await;
    TestApp {
        api: Api::new(format!("http://{}", running.addr)),
        dir,
        running: Some(running),
    }
}

/// Starts `config` on the data directory `data` (one the caller owns).
pub async fn start(data: &Path, mut config: ServeConfig) -> Running {
    config.data_dir = data.to_path_buf();
    server::start(config, std::future::pending()).await.unwrap()
}
