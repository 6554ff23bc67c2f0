//! The activity histogram (`GET /api/v1/histogram`): counts per creation-time bucket and
//! status that agree with the list of the same filters, from the indexes and from the
//! snapshots, per tenant and for an admin; its limits and bad input over HTTP.

use crate::app::{spawn_app, ADMIN};
use crate::support::*;
use action_ledger::event::*;
use action_ledger::ledger::StateStore;
use action_ledger::projection::{ActionQuery, Projection};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::{json, Value};

const TENANTS: [&str; 3] = ["acme", "globex", "initech"];
const TYPES: [&str; 3] = ["snapshot", "resize", "reboot"];
const USERS: [&str; 2] = ["ann", "bob"];

/// `n` actions over many minutes with every attribute varied and every status reached,
/// applied directly with chosen record times (0–20 s apart); `backwards_at` makes the
/// creation time of that id go backwards, as an imported log could. Returns the first
/// record time.
fn fill(p: &Projection, rng: &mut SmallRng, n: u64, backwards_at: Option<u64>) -> Micros {
    let t0: Micros = 1_700_000_000_000_000;
    let mut at = t0;
    let mut position = 0;
    let mut batch = Vec::new();
    for id in 1..=n {
        at += rng.random_range(0..20_000_000);
        position += 1;
        let mut create = CreateAction::new(
            TENANTS[rng.random_range(0..3)],
            TYPES[rng.random_range(0..3)],
            if rng.random_bool(0.5) {
                "droplet"
            } else {
                "volume"
            },
            &rng.random_range(0..5).to_string(),
        );
        create.user = rng
            .random_bool(0.7)
            .then(|| USERS[rng.random_range(0..2)].to_string());
        create.kind = [Kind::Task, Kind::StateMachine, Kind::Other][rng.random_range(0..3)];
        if rng.random_bool(0.2) {
            create.related.push(ResourceRef {
                resource_type: "image".into(),
                id: rng.random_range(0..2).to_string(),
            });
        }
        let queued = rng.random_bool(0.2);
        create.status = if queued {
            InitialStatus::Queued
        } else {
            InitialStatus::Running
        };
        let created_at = if backwards_at == Some(id) { t0 - 1 } else { at };
        batch.push(committed(
            position,
            created_at,
            Op::Create(NewAction::assign(&create, id, format!("u-{id}"))),
        ));
        if !queued {
            let end = match rng.random_range(0..4) {
                0 => None,
                1 => Some(EventBody::Completed { message: None }),
                2 => Some(EventBody::Failed {
                    error: ErrorInfo {
                        code: "x".into(),
                        message: "y".into(),
                    },
                }),
                _ => Some(EventBody::Cancelled { message: None }),
            };
            if let Some(body) = end {
                position += 1;
                batch.push(committed(position, at, Op::Event { action: id, body }));
            }
        }
        if batch.len() >= 50 {
            p.apply(&batch).unwrap();
            batch.clear();
        }
    }
    p.apply(&batch).unwrap();
    t0
}

/// Every match of `q`, through the list (paged with cursors).
fn listed(p: &Projection, q: &ActionQuery) -> Vec<std::sync::Arc<Action>> {
    let mut q = ActionQuery {
        limit: 1000,
        ..q.clone()
    };
    let mut out = Vec::new();
    loop {
        let page = p.list(&q).unwrap();
        out.extend(page.actions);
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => return out,
        }
    }
}

/// What the histogram must say: the list's matches counted by `created_at` bucket.
fn expected(p: &Projection, q: &ActionQuery, edges: &[Micros]) -> Vec<[u64; 5]> {
    let mut counts = vec![[0u64; 5]; edges.len() - 1];
    for a in listed(p, q) {
        if a.created_at < edges[0] || a.created_at >= edges[edges.len() - 1] {
            continue;
        }
        let b = edges.partition_point(|e| *e <= a.created_at) - 1;
        let s = Status::ALL.iter().position(|s| *s == a.status).unwrap();
        counts[b][s] += 1;
    }
    counts
}

fn random_query(rng: &mut SmallRng, t0: Micros) -> ActionQuery {
    let mut q = ActionQuery {
        tenant: rng
            .random_bool(0.8)
            .then(|| TENANTS[rng.random_range(0..3)].to_string()),
        limit: 1,
        ..Default::default()
    };
    let resource = |rng: &mut SmallRng| ResourceRef {
        resource_type: ["droplet", "volume", "image"][rng.random_range(0..3)].into(),
        id: rng.random_range(0..5).to_string(),
    };
    if rng.random_bool(0.2) {
        q.resource = Some(resource(rng));
    }
    if rng.random_bool(0.1) {
        q.resource_type = Some("image".into());
    }
    if rng.random_bool(0.3) {
        for _ in 0..rng.random_range(1..3) {
            q.statuses.push(Status::ALL[rng.random_range(0..5)]);
        }
    }
    if rng.random_bool(0.3) {
        q.action_type = Some(TYPES[rng.random_range(0..3)].into());
    }
    if rng.random_bool(0.2) {
        q.user = Some(USERS[rng.random_range(0..2)].into());
    }
    if rng.random_bool(0.2) {
        q.kind = Some([Kind::Task, Kind::StateMachine, Kind::Other][rng.random_range(0..3)]);
    }
    if rng.random_bool(0.2) {
        q.created_since = Some(t0 + rng.random_range(0..3_000_000_000));
    }
    if rng.random_bool(0.2) {
        q.created_until = Some(t0 + rng.random_range(0..6_000_000_000));
    }
    if rng.random_bool(0.1) {
        q.updated_since = Some(t0 + rng.random_range(0..6_000_000_000));
    }
    if rng.random_bool(0.05) {
        q.ids = (0..5).map(|_| rng.random_range(1..400)).collect();
    }
    q
}

fn random_edges(rng: &mut SmallRng, t0: Micros) -> Vec<Micros> {
    let mut edges: Vec<Micros> = (0..rng.random_range(2..12))
        .map(|_| t0 + rng.random_range(-60_000_000..7_000_000_000))
        .collect();
    edges.sort_unstable();
    edges.dedup();
    if edges.len() < 2 {
        edges.push(edges[0] + 1);
    }
    edges
}

#[test]
fn histogram_counts_what_the_list_of_the_same_filters_holds() {
    // Goal: for random filters (each tenant and every tenant; resource, statuses, type,
    // user, kind, created and updated ranges, ids) and random bucket edges, the histogram
    // counts exactly the list's matches per created_at bucket and status — from the
    // indexes where the filters allow, from the snapshots otherwise, and when an imported
    // log's creation times go backwards.
    for (seed, backwards) in [(1u64, None), (2, Some(77))] {
        let tmp = tempfile::tempdir().unwrap();
        let p = open_projection(&tmp.path().join("p"));
        let mut rng = SmallRng::seed_from_u64(seed);
        let t0 = fill(&p, &mut rng, 400, backwards);
        assert_eq!(p.max_action_id().unwrap(), 400);
        let mut nonzero = 0;
        for _ in 0..300 {
            let q = random_query(&mut rng, t0);
            let edges = random_edges(&mut rng, t0);
            let h = p.histogram(&q, &edges).unwrap();
            assert!(h.complete);
            let want = expected(&p, &q, &edges);
            assert_eq!(h.counts, want, "{q:?} over {edges:?}");
            nonzero += usize::from(want.iter().flatten().any(|c| *c > 0));
        }
        assert!(nonzero > 100, "only {nonzero} queries counted anything");
    }
}

#[test]
fn a_histogram_past_its_read_budget_says_it_is_incomplete() {
    // Goal: the read budget stops the count (lower bounds, marked incomplete), on both
    // paths; a budget large enough counts everything.
    let tmp = tempfile::tempdir().unwrap();
    let p = open_projection(&tmp.path().join("p"));
    let mut rng = SmallRng::seed_from_u64(3);
    let t0 = fill(&p, &mut rng, 600, None);
    let edges = [t0, t0 + 3_000_000_000, t0 + 7_000_000_000];
    for q in [
        ActionQuery {
            tenant: Some("acme".into()),
            limit: 1,
            ..Default::default()
        },
        ActionQuery {
            resource_type: Some("droplet".into()),
            limit: 1,
            ..Default::default()
        },
    ] {
        let full = p.histogram(&q, &edges).unwrap();
        let all: u64 = full.counts.iter().flatten().sum();
        assert!(full.complete && all > 100, "{all}");
        let cut = p.histogram_with_scan_max(&q, &edges, 3).unwrap();
        assert!(!cut.complete, "{q:?}");
        let some: u64 = cut.counts.iter().flatten().sum();
        assert!(some < all, "{some} of {all}");
        for (c, f) in cut
            .counts
            .iter()
            .flatten()
            .zip(full.counts.iter().flatten())
        {
            assert!(c <= f, "an incomplete count is a lower bound");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Over HTTP

async fn create(app: &crate::app::TestApp, token: &str, ty: &str, rid: &str) -> u64 {
    let (s, v) = app
        .post(
            "/api/v1/actions",
            token,
            json!({"type": ty, "resource": {"type": "droplet", "id": rid}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["id"].as_u64().unwrap()
}

fn sum(h: &Value, status: &str) -> u64 {
    h["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["counts"][status].as_u64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_histogram_route_counts_by_status_within_the_callers_tenant() {
    // Goal: GET /api/v1/histogram answers per-status counts equal to the list's totals for
    // the same filters, sees only the caller's tenant (an admin sees all, or one), and
    // needs only the reader role.
    let app = spawn_app().await;
    let acme_w = app.token("acme-w", "acme", "writer").await;
    let acme_r = app.token("acme-r", "acme", "reader").await;
    let globex_r = app.token("globex-r", "globex", "reader").await;
    let globex_w = app.token("globex-w", "globex", "writer").await;
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(
            create(
                &app,
                &acme_w,
                if i % 2 == 0 { "resize" } else { "reboot" },
                "1",
            )
            .await,
        );
    }
    for id in &ids[..3] {
        let (s, v) = app
            .post(
                &format!("/api/v1/actions/{id}/events"),
                &acme_w,
                json!({"type": "started"}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let (s, _) = app
        .post(
            &format!("/api/v1/actions/{}/events", ids[0]),
            &acme_w,
            json!({"type": "completed"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    create(&app, &globex_w, "resize", "1").await;

    let range = "from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z&interval=day";
    // 100 years of days is past the bucket limit: named in the 400.
    let (s, e) = app
        .get(&format!("/api/v1/histogram?{range}"), &acme_r)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(e["error"]["limit"], "HISTOGRAM_BUCKETS_MAX", "{e}");

    let now = chrono::Utc::now();
    let from = (now - chrono::Duration::hours(2)).to_rfc3339();
    let to = (now + chrono::Duration::hours(1)).to_rfc3339();
    let range = format!(
        "from={}&to={}&interval=minute",
        urlencode(&from),
        urlencode(&to)
    );
    for filter in [
        "",
        "&type=resize",
        "&status=running",
        "&status=queued,completed",
    ] {
        let (s, h) = app
            .get(&format!("/api/v1/histogram?{range}{filter}"), &acme_r)
            .await;
        assert_eq!(s, StatusCode::OK, "{h}");
        assert_eq!(h["interval"], "minute");
        assert_eq!(h["complete"], true);
        assert_eq!(h["buckets"].as_array().unwrap().len(), 181);
        let (_, l) = app
            .get(&format!("/api/v1/actions?limit=1{filter}"), &acme_r)
            .await;
        assert_eq!(h["total"], l["total"], "{filter}: {h} vs {l}");
        for status in ["queued", "running", "completed", "failed", "cancelled"] {
            // The list of this status alone (with the filter's other parts).
            let (in_filter, rest) = match filter.strip_prefix("&status=") {
                Some(statuses) => (statuses.split(',').any(|s| s == status), ""),
                None => (true, filter),
            };
            let (_, l) = app
                .get(
                    &format!("/api/v1/actions?limit=1{rest}&status={status}"),
                    &acme_r,
                )
                .await;
            let want = if in_filter {
                l["total"].as_u64().unwrap()
            } else {
                0
            };
            assert_eq!(sum(&h, status), want, "{filter} {status}: {}", h["total"]);
        }
    }
    let acme_all = app
        .get(&format!("/api/v1/histogram?{range}"), &acme_r)
        .await
        .1;
    assert_eq!(acme_all["total"], 7);
    assert_eq!(sum(&acme_all, "completed"), 1);
    assert_eq!(sum(&acme_all, "running"), 2);
    assert_eq!(sum(&acme_all, "queued"), 4);
    // Tenant isolation: globex sees its one action; asking for acme is refused.
    let (_, g) = app
        .get(&format!("/api/v1/histogram?{range}"), &globex_r)
        .await;
    assert_eq!(g["total"], 1, "{g}");
    let (s, _) = app
        .get(&format!("/api/v1/histogram?{range}&tenant=acme"), &globex_r)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // The admin sees every tenant, or one.
    let (_, a) = app.get(&format!("/api/v1/histogram?{range}"), ADMIN).await;
    assert_eq!(a["total"], 8, "{a}");
    let (_, a) = app
        .get(&format!("/api/v1/histogram?{range}&tenant=globex"), ADMIN)
        .await;
    assert_eq!(a["total"], 1, "{a}");
    // The buckets tile the range: first starts at from, last ends at to, aligned between.
    let b = acme_all["buckets"].as_array().unwrap();
    assert_eq!(b[0]["start"], acme_all["from"]);
    assert_eq!(b[b.len() - 1]["end"], acme_all["to"]);
    for w in b.windows(2) {
        assert_eq!(w[0]["end"], w[1]["start"]);
        assert!(
            w[1]["start"].as_str().unwrap().ends_with(":00.000000Z"),
            "{}",
            w[1]
        );
    }
    // Defaults: hour buckets ending now, 60 of them (61 when now is not on the hour).
    let (s, d) = app.get("/api/v1/histogram", &acme_r).await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["interval"], "hour");
    assert_eq!(d["total"], 7);
    let n = d["buckets"].as_array().unwrap().len();
    assert!(n == 60 || n == 61, "{n}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_histogram_requests_are_400() {
    // Goal: a bad interval, time, range or filter is a 400 naming the field.
    let app = spawn_app().await;
    for (query, field) in [
        ("interval=week", "interval"),
        ("interval=", "interval"),
        ("from=yesterday", "from"),
        ("to=2024-13-01T00:00:00Z", "to"),
        ("from=2024-01-02T00:00:00Z&to=2024-01-01T00:00:00Z", "from"),
        ("from=2024-01-01T00:00:00Z&to=2024-01-01T00:00:00Z", "from"),
        ("status=sleeping", "status"),
        ("kind=job", "kind"),
        ("resource_id=1", "resource_id"),
        ("since=soon", "since"),
        ("id=x", "id"),
        (
            "from=2024-01-01T00:00:00Z&to=2024-03-01T00:00:00Z&interval=minute",
            "from",
        ),
    ] {
        let (s, e) = app.get(&format!("/api/v1/histogram?{query}"), ADMIN).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{query}: {e}");
        assert_eq!(e["error"]["field"], field, "{query}: {e}");
    }
    // Paging parameters and unknown ones are ignored, as by the list.
    let (s, e) = app
        .get("/api/v1/histogram?limit=0&cursor=zz&whatever=1", ADMIN)
        .await;
    assert_eq!(s, StatusCode::OK, "{e}");
    // Without a token: 401.
    let (s, _) = app
        .call(reqwest::Method::GET, "/api/v1/histogram", None, None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}
