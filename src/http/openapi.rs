//! The OpenAPI 3.1 document of the native API, generated from the handler annotations and
//! the wire types (never written by hand), served at `/api/v1/openapi.json`.

use super::native;
use super::wire::*;
use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// Every error body: `{"error": {"code": "...", "message": "...", ...}}`.
#[derive(serde::Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// Codes: bad_request, bad_cursor, unauthorized, forbidden, not_found, invalid_transition,
/// version_conflict, resource_busy (with `blocking_action`), uid_taken, name_taken,
/// idempotency_key_reused, limit_exceeded / payload_too_large (with `limit`, `max`,
/// `actual`), unavailable, insufficient_storage, internal.
#[derive(serde::Serialize, ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "action-ledger native API", description = "A persistent, event-sourced ledger of long-running cloud actions. Errors use the ErrorBody schema."),
    paths(
        native::create, native::record_event, native::cancel, native::batch,
        native::get_action, native::history, native::wait, native::list, native::histogram, native::watch,
        native::log_page, native::create_token, native::list_tokens, native::revoke_token, native::rotate_token,
    ),
    components(schemas(ErrorBody, ErrorDetail, ActionOut, ListOut, BatchOut, RecordsOut, RecordOut,
        CreateBody, EventJson, BatchBody, BatchCommandJson, ResourceJson, PendingOpJson,
        ErrorInfoJson, SubEventOut, IdOrUid, HistogramOut, HistogramBucketOut, StatusCounts, native::TokenCreate, native::TokenOut)),
    modifiers(&Security),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// `GET /api/v1/openapi.json`.
pub async fn document() -> impl IntoResponse {
    axum::Json(ApiDoc::openapi())
}
