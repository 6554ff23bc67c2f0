//! The native API's one error type and its JSON body:
//! `{"error": {"code": "...", "message": "...", ...details}}`.
//!
//! Every core error maps here exactly once. 5xx bodies are opaque ("internal error") and the
//! cause is logged; 4xx bodies say precisely what was wrong and, for a limit, which limit.

use crate::event::fold::Rejection;
use crate::ledger::LedgerError;
use crate::log::LogError;
use crate::projection::query::QueryError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Map<String, Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Map::new(),
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> ApiError {
        self.details.insert(key.to_string(), value.into());
        self
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn field(field: &str, reason: &str) -> ApiError {
        ApiError::bad_request(format!("{field}: {reason}")).with("field", field)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid token is required (Authorization: Bearer, X-Auth-Token, X-APITOKEN or HTTP Basic)",
        )
    }

    pub fn forbidden(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this token's role may not {what}"),
        )
    }

    pub fn not_found(what: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn limit(limit: &'static str, max: u64, actual: u64, field: &str) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "limit_exceeded",
            format!("{field}: limit {limit} is {max}, got {actual}"),
        )
        .with("field", field)
        .with("limit", limit)
        .with("max", max)
        .with("actual", actual)
    }

    /// This error as the refusal of command `index` (from 0) of a batch: the body names
    /// it (`"index"`) and the message starts with `command {index}: `.
    pub fn in_command(mut self, index: usize) -> ApiError {
        self.message = format!("command {index}: {}", self.message);
        self.with("index", index)
    }

    /// A 5xx whose cause is logged, never shown.
    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        tracing::error!(%cause, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// The JSON body: `{"error": {"code", "message", details...}}`.
    pub fn body(self) -> Value {
        let mut body = self.details;
        body.insert("code".into(), json!(self.code));
        body.insert("message".into(), json!(self.message));
        json!({ "error": body })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        let mut response = (status, axum::Json(self.body())).into_response();
        // Every 503 is temporary (starting, stopping, no leader known, a commit not made):
        // tell clients when to come back.
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> ApiError {
        let message = r.to_string();
        let code = r.code();
        match r {
            Rejection::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, code, message),
            Rejection::InvalidTransition {
                action,
                status,
                event,
                ..
            } => ApiError::new(StatusCode::CONFLICT, code, message)
                .with("action", action)
                .with("status", status)
                .with("event", event),
            Rejection::VersionConflict {
                expected, actual, ..
            } => ApiError::new(StatusCode::CONFLICT, code, message)
                .with("expected_version", expected)
                .with("version", actual),
            Rejection::UidTaken { existing, .. } => {
                let e = ApiError::new(StatusCode::CONFLICT, code, message);
                match existing {
                    Some(id) => e.with("existing_action", id),
                    None => e,
                }
            }
            Rejection::ResourceBusy { blocking, .. } => {
                ApiError::new(StatusCode::CONFLICT, code, message).with("blocking_action", blocking)
            }
            Rejection::BadRequest { field, .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, code, message).with("field", field)
            }
            Rejection::Limit {
                limit,
                field,
                max,
                actual,
            } => ApiError::limit(limit, max, actual, &field),
            Rejection::IdempotencyKeyReused { .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
            }
        }
    }
}

/// 507: a file of the ledger (log or projection) could not grow. Writes stay refused until
/// a restart, which catches the projection up from the log.
fn disk_full() -> ApiError {
    ApiError::new(
        StatusCode::INSUFFICIENT_STORAGE,
        "insufficient_storage",
        "the ledger's disk is full (no space left, or a file size or quota limit reached); nothing was recorded. Free space, then restart the server",
    )
}

/// 503: a storage failure stopped the writer (logged with its first cause).
fn poisoned(cause: &dyn std::fmt::Display) -> ApiError {
    tracing::error!(%cause, "write refused: writer poisoned");
    ApiError::unavailable(
        "the ledger refuses writes after a storage failure; an operator must restart it",
    )
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> ApiError {
        match e {
            LedgerError::Rejected(r) => r.into(),
            LedgerError::CommandRejected { index, rejection } => {
                ApiError::from(rejection).in_command(index)
            }
            ref e if e.is_disk_full() => {
                tracing::error!(error = %e, "write refused: disk full");
                disk_full()
            }
            LedgerError::Poisoned(cause) => poisoned(&cause),
            LedgerError::Log(LogError::Poisoned(cause)) => poisoned(&cause),
            LedgerError::Closed => ApiError::unavailable("the ledger is shutting down"),
            e @ LedgerError::NotCommitted { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_committed",
                e.to_string(),
            ),
            e @ LedgerError::OutcomeUnknown { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "outcome_unknown",
                e.to_string(),
            ),
            other @ (LedgerError::Log(_)
            | LedgerError::Store(_)
            | LedgerError::BadRecord { .. }) => ApiError::internal(other),
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> ApiError {
        match e {
            QueryError::BadCursor(m) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_cursor",
                format!("bad cursor: {m}"),
            )
            .with("field", "cursor"),
            QueryError::BadRequest(m) => ApiError::bad_request(m),
            ref e if e.is_disk_full() => {
                tracing::error!(error = %e, "read refused: the projection's disk is full");
                disk_full()
            }
            e @ (QueryError::Store(_) | QueryError::Log(_)) => ApiError::internal(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Poison, StoreError};
    use std::io;
    use std::path::Path;

    fn full() -> io::Error {
        io::Error::from_raw_os_error(28) // ENOSPC
    }

    fn status(e: impl Into<ApiError>) -> (StatusCode, Value) {
        let e = e.into();
        (e.status, e.body())
    }

    #[test]
    fn a_full_disk_is_507_whichever_file_and_however_late() {
        let log = LogError::io(Path::new("/d/log/1.seg"), full())
            .during("write")
            .at(4096);
        assert!(matches!(
            log,
            LogError::DiskFull {
                offset: Some(4096),
                ..
            }
        ));
        let text = log.to_string();
        assert!(
            text.contains("/d/log/1.seg at offset 4096: write failed, the disk is full"),
            "{text}"
        );
        let store = StoreError::from(sled::Error::Io(io::Error::from(
            io::ErrorKind::FileTooLarge,
        )));
        assert!(matches!(store, StoreError::DiskFull { .. }));
        for e in [
            LedgerError::Log(log.clone()),
            LedgerError::Log(LogError::Poisoned(Box::new(log.clone()))),
            LedgerError::Poisoned(Poison::Log(log)),
            LedgerError::Store(store.clone()),
            LedgerError::Poisoned(Poison::Store(StoreError::Failed(Box::new(store.clone())))),
        ] {
            let (s, body) = status(e);
            assert_eq!(s, StatusCode::INSUFFICIENT_STORAGE, "{body}");
            assert_eq!(body["error"]["code"], "insufficient_storage");
        }
        let (s, _) = status(QueryError::Store(StoreError::Failed(Box::new(store))));
        assert_eq!(s, StatusCode::INSUFFICIENT_STORAGE);
    }

    #[test]
    fn other_storage_failures_are_opaque_503_or_500() {
        let eio = || io::Error::from_raw_os_error(5);
        let log = LogError::io(Path::new("/d/log/1.seg"), eio()).during("fdatasync");
        assert!(matches!(&log, LogError::Io { kind, .. } if *kind == eio().kind()));
        for e in [
            LedgerError::Log(LogError::Poisoned(Box::new(log.clone()))),
            LedgerError::Poisoned(Poison::Log(log.clone())),
            LedgerError::Poisoned(Poison::Store(StoreError::io(eio()))),
        ] {
            let (s, body) = status(e);
            assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
            assert!(!body.to_string().contains("/d/log"), "{body}");
        }
        for e in [
            ApiError::from(LedgerError::Store(StoreError::Damaged("bad bytes".into()))),
            ApiError::from(QueryError::Store(StoreError::io(eio()))),
            ApiError::from(QueryError::Log(log)),
        ] {
            assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(e.message, "internal error");
        }
    }
}
