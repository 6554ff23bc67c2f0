//! The public action dialects: one module per API, each only *translating* its wire format
//! into the core's queries and commands and rendering the answers back (STYLE.md). No
//! dialect touches the log or sled; each status mapping lives once, in its module's
//! `status` function (shared/DIALECTS.md's table).
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

use super::AppState;
use axum::Router;

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
