//! `GET /api/v1/log`: pages of the raw log, each operation as JSON; a tenant sees only
//! its own actions' operations.

use crate::http::error::ApiError;
use crate::http::wire::*;
use crate::http::{blocking, AppState, Caller};
use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;

#[derive(Deserialize)]
pub struct LogParams {
    after: Option<String>,
    limit: Option<String>,
}

pub use crate::limits::LOG_PAGE_MAX;

#[utoipa::path(get, path = "/api/v1/log",
    params(("after" = Option<u64>, Query), ("limit" = Option<u64>, Query, description = "max LOG_PAGE_MAX (1000)")),
    responses((status = 200, body = RecordsOut)))]
pub async fn log_page(
    State(state): State<AppState>,
    Caller(p): Caller,
    Query(params): Query<LogParams>,
) -> Result<Json<RecordsOut>, ApiError> {
    let after: u64 = match params.after.as_deref() {
        None => 0,
        Some(s) => s
            .parse()
            .map_err(|_| ApiError::field("after", "must be a log position"))?,
    };
    let limit: usize = match params.limit.as_deref() {
        None => crate::limits::LOG_PAGE_DEFAULT,
        Some(s) => {
            let n: usize = s
                .parse()
                .map_err(|_| ApiError::field("limit", "must be a positive integer"))?;
            if n == 0 || n > LOG_PAGE_MAX {
                return Err(ApiError::limit(
                    "LOG_PAGE_MAX",
                    LOG_PAGE_MAX as u64,
                    n as u64,
                    "limit",
                ));
            }
            n
        }
    };
    let st = state.clone();
    blocking(move || {
        let records = st
            .ledger
            .read_records(after, limit)
            .map_err(ApiError::internal)?;
        let full = records.len() == limit;
        let last = records.last().map(|(r, _)| r.position);
        let mut out = Vec::new();
        for (rec, entry) in records {
            for op in &entry.ops {
                // Tenants see only their own actions' operations.
                if let Some(t) = p.scope() {
                    let visible = st
                        .ledger
                        .store()
                        .action(op.action_id())
                        .map_err(ApiError::internal)?
                        .is_some_and(|a| a.tenant == t);
                    if !visible {
                        continue;
                    }
                }
                out.push(RecordOut {
                    position: rec.position,
                    recorded_at: rfc3339(entry.recorded_at),
                    principal: entry.principal.clone(),
                    event: op_json(op),
                });
            }
        }
        Ok(Json(RecordsOut {
            records: out,
            next_after: if full { last } else { None },
        }))
    })
    .await
}
