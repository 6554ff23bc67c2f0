//! Console benchmark (issue 20, "How it must feel"): the server time of the console's list,
//! resource and action pages against the API call each page is built on, at
//! `CONSOLE_BENCH_ACTIONS` actions (1M under `cargo bench`).
//!
//! Seed: the actions are created through `POST /api/v1/batch` (`BATCH_COMMANDS_MAX` per
//! request), spread over `actions / 100` resources; every tenth is started and given a
//! sub-event. Then, over one connection each, `CONSOLE_BENCH_OPS` requests of each pair,
//! alternating API and console so both see the same machine:
//! - **list**: `GET /api/v1/actions?limit=50` and `GET /console/actions` (50 rows);
//! - **resource**: `GET /api/v1/actions?resource_type=droplet&resource_id=R&limit=50` and
//!   `GET /console/resources/droplet/R`, R random;
//! - **action**: `GET /api/v1/actions/ID` plus `GET /api/v1/actions/ID/history` and
//!   `GET /console/actions/ID` (which shows both), ID random.
//!
//! It prints p50/p99 of each and the console's p99 over the API's, against the target
//! (≤ 2×). Run with `cargo bench --bench console`; `cargo test --benches` gets a smoke run.

mod common;

use action_ledger::http::server::{self, ServeConfig};
use action_ledger::limits::BATCH_COMMANDS_MAX;
use common::{env_or, ms, percentile, runtime};
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use std::time::{Duration, Instant};

const ADMIN: &str = "console-bench-admin-token";
/// Actions per resource.
const ACTIONS_PER_RESOURCE: u64 = 100;
/// The target: the console's p99 at most this many times the API's.
const TARGET_RATIO: f64 = 2.0;

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let actions: u64 = env_or(
        "CONSOLE_BENCH_ACTIONS",
        if benching { 1_000_000 } else { 2_000 },
    );
    let ops: usize = env_or("CONSOLE_BENCH_OPS", if benching { 2_000 } else { 50 });
    assert!(actions >= ACTIONS_PER_RESOURCE && ops >= 1);
    let dir = tempfile::tempdir().expect("temp dir");
    let server_rt = runtime(2, "server");
    let client_rt = runtime(2, "client");
    let mut config = ServeConfig::new(dir.path().join("data"), "127.0.0.1:0".parse().unwrap());
    config.admin_token = Some(ADMIN.into());
    let running = server_rt
        .block_on(server::start(config, std::future::pending()))
        .expect("start the server");
    let base = format!("http://{}", running.addr);
    let resources = actions / ACTIONS_PER_RESOURCE;

    client_rt.block_on(async {
        let client = reqwest::Client::new();
        let started = Instant::now();
        let mut created = 0u64;
        while created < actions {
            let n = (actions - created).min(BATCH_COMMANDS_MAX as u64);
            let commands: Vec<_> = (created..created + n)
                .map(|i| {
                    let kind = ["snapshot", "resize", "reboot"][(i % 3) as usize];
                    serde_json::json!({"create": {"type": kind,
                        "user": format!("u{}", i % 5), "description": "console bench",
                        "resource": {"type": "droplet", "id": format!("r{}", i % resources)}}})
                })
                .collect();
            let r = client
                .post(format!("{base}/api/v1/batch"))
                .bearer_auth(ADMIN)
                .json(&serde_json::json!({ "commands": commands }))
                .send()
                .await
                .expect("batch");
            assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap_or_default());
            created += n;
        }
        // Some history to show: every tenth action runs a sub-event.
        let events: Vec<_> = (1..=actions)
            .step_by(10)
            .flat_map(|id| {
                [
                    serde_json::json!({"event": {"action": id, "type": "event_started", "name": "step", "host": "h1"}}),
                    serde_json::json!({"event": {"action": id, "type": "progress", "progress": 40}}),
                ]
            })
            .collect();
        for chunk in events.chunks(BATCH_COMMANDS_MAX) {
            let r = client
                .post(format!("{base}/api/v1/batch"))
                .bearer_auth(ADMIN)
                .json(&serde_json::json!({ "commands": chunk }))
                .send()
                .await
                .expect("batch");
            assert_eq!(r.status(), StatusCode::OK);
        }
        println!(
            "seeded {actions} actions over {resources} resources in {:.1} s",
            started.elapsed().as_secs_f64()
        );

        let console = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let r = console
            .post(format!("{base}/console/login"))
            .header("sec-fetch-site", "same-origin")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={ADMIN}"))
            .send()
            .await
            .expect("sign in");
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let cookie = r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();

        let mut rng = rand::rngs::SmallRng::seed_from_u64(20);
        for scenario in ["list", "resource", "action"] {
            let (mut api, mut page) = (Vec::with_capacity(ops), Vec::with_capacity(ops));
            for i in 0..ops + ops / 10 {
                let rid = rng.random_range(0..resources);
                let id = rng.random_range(1..=actions);
                let api_paths: Vec<String> = match scenario {
                    "list" => vec!["/api/v1/actions?limit=50".into()],
                    "resource" => vec![format!(
                        "/api/v1/actions?resource_type=droplet&resource_id=r{rid}&limit=50"
                    )],
                    _ => vec![
                        format!("/api/v1/actions/{id}"),
                        format!("/api/v1/actions/{id}/history"),
                    ],
                };
                let console_path = match scenario {
                    "list" => "/console/actions".to_string(),
                    "resource" => format!("/console/resources/droplet/r{rid}"),
                    _ => format!("/console/actions/{id}"),
                };
                let t = Instant::now();
                for p in &api_paths {
                    let r = client
                        .get(format!("{base}{p}"))
                        .bearer_auth(ADMIN)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), StatusCode::OK, "{p}");
                    r.bytes().await.unwrap();
                }
                let api_time = t.elapsed();
                let t = Instant::now();
                let r = console
                    .get(format!("{base}{console_path}"))
                    .header("cookie", &cookie)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::OK, "{console_path}");
                r.bytes().await.unwrap();
                let page_time = t.elapsed();
                if i >= ops / 10 {
                    // after the warm-up
                    api.push(api_time);
                    page.push(page_time);
                }
            }
            api.sort();
            page.sort();
            let p99 = |v: &[Duration]| percentile(v, 0.99);
            let ratio = p99(&page).as_secs_f64() / p99(&api).as_secs_f64().max(1e-9);
            println!(
                "{scenario:<9} API p50 {} ms p99 {} ms | console p50 {} ms p99 {} ms | p99 ratio {ratio:.2} (target <= {TARGET_RATIO}) {}",
                ms(percentile(&api, 0.5)),
                ms(p99(&api)),
                ms(percentile(&page, 0.5)),
                ms(p99(&page)),
                if ratio <= TARGET_RATIO { "ok" } else { "MISSED" }
            );
        }
    });
    server_rt.block_on(running.stop()).expect("stop the server");
}
