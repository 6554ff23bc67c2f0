//! Token management routes (`/api/v1/tokens`, admin only): create (the secret is shown
//! once), list, rotate (a new secret, shown once), revoke.

use super::require;
use crate::http::error::ApiError;
use crate::http::{blocking, parse_json, AppState, Body, Caller};
use crate::tokens::Role;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenCreate {
    name: String,
    tenant: String,
    /// `reader`, `writer` or `admin`.
    role: String,
    /// RFC 3339; from then on the token is refused (401 `token_expired`). Absent: never.
    #[serde(default)]
    expires_at: Option<String>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct TokenOut {
    name: String,
    tenant: String,
    role: String,
    created_at: String,
    /// RFC 3339, or null: the token does not expire.
    expires_at: Option<String>,
    /// RFC 3339 (to the minute), or null: never used. Each node notes uses in memory and
    /// stores them about once a minute.
    last_used_at: Option<String>,
    /// Only in the answer to a create or a rotate: the secret, shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

fn token_out(t: &crate::tokens::TokenRecord, secret: Option<String>) -> TokenOut {
    TokenOut {
        name: t.name.clone(),
        tenant: t.tenant.clone(),
        role: t.role.as_str().into(),
        created_at: t.created_at.clone(),
        expires_at: t.expires_at.clone(),
        last_used_at: t.last_used_at.clone(),
        token: secret,
    }
}

fn token_error(e: crate::tokens::TokenError) -> ApiError {
    use crate::tokens::TokenError as E;
    match e {
        E::NameTaken(_) => ApiError::new(StatusCode::CONFLICT, "name_taken", e.to_string()),
        E::NotFound(name) => ApiError::not_found(format!("token {name:?}")),
        E::Invalid { field, reason } => ApiError::field(field, &reason),
        E::LastAdmin(_) => ApiError::new(StatusCode::CONFLICT, "last_admin_token", e.to_string()),
        E::Unavailable(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "tokens_unavailable",
            e.to_string(),
        ),
        E::File { .. } | E::Damaged(_) => ApiError::internal(e),
    }
}

#[utoipa::path(post, path = "/api/v1/tokens", request_body = TokenCreate,
    responses((status = 201, body = TokenOut), (status = 403), (status = 409)))]
pub async fn create_token(
    State(state): State<AppState>,
    Caller(p): Caller,
    Body(body): Body,
) -> Result<Response, ApiError> {
    require(&p, Role::Admin, "manage tokens")?;
    let req: TokenCreate = parse_json(&body)?;
    let role = Role::parse(&req.role)
        .ok_or_else(|| ApiError::field("role", "must be reader, writer or admin"))?;
    let st = state.clone();
    blocking(move || {
        let (record, secret) = st
            .tokens
            .create(&req.name, &req.tenant, role, req.expires_at.as_deref())
            .map_err(token_error)?;
        Ok((StatusCode::CREATED, Json(token_out(&record, Some(secret)))).into_response())
    })
    .await
}

#[utoipa::path(get, path = "/api/v1/tokens", responses((status = 200, body = [TokenOut]), (status = 403)))]
pub async fn list_tokens(
    State(state): State<AppState>,
    Caller(p): Caller,
) -> Result<Json<Vec<TokenOut>>, ApiError> {
    require(&p, Role::Admin, "manage tokens")?;
    Ok(Json(
        state
            .tokens
            .list()
            .iter()
            .map(|t| token_out(t, None))
            .collect(),
    ))
}

#[utoipa::path(delete, path = "/api/v1/tokens/{name}",
    params(("name" = String, Path)), responses((status = 204), (status = 403), (status = 404),
        (status = 409, description = "last_admin_token: the last admin token cannot be revoked")))]
pub async fn revoke_token(
    State(state): State<AppState>,
    Caller(p): Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    require(&p, Role::Admin, "manage tokens")?;
    let st = state.clone();
    blocking(move || {
        st.tokens.revoke(&name).map_err(token_error)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

#[utoipa::path(post, path = "/api/v1/tokens/{name}/rotate",
    params(("name" = String, Path)), responses((status = 200, body = TokenOut), (status = 403), (status = 404)))]
pub async fn rotate_token(
    State(state): State<AppState>,
    Caller(p): Caller,
    Path(name): Path<String>,
) -> Result<Json<TokenOut>, ApiError> {
    require(&p, Role::Admin, "manage tokens")?;
    let st = state.clone();
    blocking(move || {
        let (record, secret) = st.tokens.rotate(&name).map_err(token_error)?;
        Ok(Json(token_out(&record, Some(secret))))
    })
    .await
}
