//! The public action dialects: one module per API, each only *translating* its wire format
//! into the core's queries and commands and rendering the answers back. No
//! dialect touches the log or sled; each status mapping lives once, in its module's
//! `status` function (docs/dialects.md's table). What every dialect does the same way
//! lives here once: [`list`] and [`one`] (queries in the caller's tenant scope),
//! [`require_writer`], and [`record_task`] (a dialect POST: Idempotency-Key, `{"type"}`
//! body, one running task by the token's name).
//!
//! | module | main listener | own listener |
//! |---|---|---|
//! | [`ecs`] | `/ecs/v2/actions[/{id}]`, `POST /ecs/v2/servers/{name}/actions` | |
//! | [`digitalocean`] | `/v2/actions[/{id}]`, `/v2/droplets/{droplet_id}/actions[/{id}]` | |
//! | [`nova`] | `/v2.1[/{project_id}]/servers/{server_id}/os-instance-actions[/{request_id}]`, the same under `/v2/{tenant_id}`; version documents `/`, `/v2.1[/]`, `/v2[/]` | |
//! | [`redis`] | under `/redis`: `/redis/v1/actions...`, `/redis/v2/actions...` | `--redis-listen` (default `127.0.0.1:9443`) at the documented root paths |
//!
//! `/v2/actions` is DigitalOcean's on the main listener and Redis v2's on the Redis
//! listener; neither shadows the other. Nova's legacy `/v2/{tenant_id}/servers/...` differs
//! from every DigitalOcean route in its static segments (`servers`, `os-instance-actions`);
//! the router prefers static segments and falls back to `{tenant_id}`, so neither dialect
//! shadows the other (tests/it/dialect_nova.rs checks both, and a tenant named `droplets`).

use super::error::ApiError;
use super::{load_action, native, parse_json, AppState};
use crate::event::{Action, Command, CreateAction, InitialStatus, ResourceRef};
use crate::projection::query::{ActionQuery, Page};
use crate::tokens::{Principal, Role};
use axum::http::HeaderMap;
use axum::Router;
use serde::Deserialize;

pub mod digitalocean;
pub mod ecs;
pub mod nova;
pub mod redis;

/// The dialect routes of the main listener: ECS, DigitalOcean, Nova, and Redis under
/// `/redis`.
pub fn main_routes() -> Router<AppState> {
    Router::new()
        .merge(ecs::routes())
        .merge(digitalocean::routes())
        .merge(nova::routes())
        .nest("/redis", redis::routes())
}

/// The routes of the Redis listener: Redis Enterprise at its documented root paths.
pub fn redis_routes() -> Router<AppState> {
    redis::routes()
}

/// One page of actions (the core's query, off the async workers). Every dialect list goes
/// through here; the query carries the caller's tenant scope.
pub async fn list(state: &AppState, q: ActionQuery) -> Result<Page, ApiError> {
    state.read(move |st| Ok(st.projection.list(&q)?)).await
}

/// One action the caller may see, by id or uid (another tenant's is "not found").
pub async fn one(state: &AppState, p: &Principal, id: &str) -> Result<Action, ApiError> {
    let (p, id) = (p.clone(), id.to_string());
    state.read(move |st| load_action(st, &p, &id)).await
}

/// Writing through a dialect needs the writer role (403 otherwise, in the dialect's shape).
pub fn require_writer(p: &Principal) -> Result<(), ApiError> {
    if super::auth::allows(p, Role::Writer) {
        Ok(())
    } else {
        Err(ApiError::forbidden("record actions"))
    }
}

/// The body of every dialect POST: `{"type": T, ...}`; other fields (DO's snapshot `name`,
/// ECS rollback's `snapshot`) are accepted and not recorded.
#[derive(Deserialize)]
struct TypeBody {
    #[serde(rename = "type")]
    action_type: String,
}

/// A dialect POST after its own checks: `Idempotency-Key` (keyed by `route`), the
/// `{"type"}` body, then one *running* task on `resource` by the token's name in its
/// tenant, adjusted by `adjust` (exclusivity, region), submitted to the ledger.
pub async fn record_task(
    state: &AppState,
    headers: &HeaderMap,
    p: &Principal,
    route: &str,
    body: &[u8],
    resource: ResourceRef,
    adjust: impl FnOnce(&mut CreateAction),
) -> Result<Action, ApiError> {
    let idem = native::idempotency(headers, p, route, body)?;
    let req: TypeBody = parse_json(body)?;
    let mut c = CreateAction::new(
        &p.tenant,
        &req.action_type,
        &resource.resource_type,
        &resource.id,
    );
    c.user = Some(p.name.clone());
    c.status = InitialStatus::Running;
    adjust(&mut c);
    let mut committed = native::submit(state, p, idem, vec![Command::Create(c)]).await?;
    Ok(committed.actions.swap_remove(0))
}
