//! The query interface every read route and dialect uses. Implemented by the sled
//! projection ([`super`]); HTTP handlers and dialect modules only build an [`ActionQuery`]
//! and render the [`Page`].

use crate::event::{Action, ActionId, Kind, Micros, ResourceRef, Status};
use crate::ledger::StoreError;
use crate::log::LogError;
use std::sync::Arc;
use thiserror::Error;

/// Largest accepted [`ActionQuery::limit`]; a larger page is refused with
/// [`QueryError::BadRequest`] naming this limit (callers clamp to it or below). Most ids in
/// one batch get ([`ActionQuery::ids`]).
pub use crate::limits::{LIST_IDS_MAX, LIST_LIMIT_MAX};

/// Which actions, in which order, how many.
///
/// Results are newest first: descending by `id` (ids are assigned in log order, so this is
/// creation order). Every filter that is set must hold (AND); `statuses` and `ids` match any
/// of their values (OR within the field).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ActionQuery {
    /// `Some(t)`: only tenant `t` (every non-admin caller). `None`: every tenant (admin).
    pub tenant: Option<String>,
    /// Primary resource **or** a related resource equals this.
    pub resource: Option<ResourceRef>,
    /// Only the resource type (any id).
    pub resource_type: Option<String>,
    pub statuses: Vec<Status>,
    pub action_type: Option<String>,
    pub user: Option<String>,
    pub kind: Option<Kind>,
    /// `created_at >= since`.
    pub created_since: Option<Micros>,
    /// `created_at < until`.
    pub created_until: Option<Micros>,
    /// `updated_at >= updated_since`.
    pub updated_since: Option<Micros>,
    /// `updated_at < updated_until`.
    pub updated_until: Option<Micros>,
    /// Batch get: only these ids (still filtered by tenant and the rest).
    pub ids: Vec<ActionId>,
    /// Page size (callers clamp to their own maximum; the projection refuses 0).
    pub limit: usize,
    /// Keyset paging: the opaque cursor from a previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Offset paging for dialects that need it (`start`, `page`): skip this many matches.
    /// Cost grows with the offset; documented in README.
    pub offset: u64,
}

/// One page of results.
#[derive(Clone, Debug, PartialEq)]
pub struct Page {
    /// Shared with the projection's snapshot memo.
    pub actions: Vec<Arc<Action>>,
    /// Cursor for the next page, `None` when this page is the last.
    pub next_cursor: Option<String>,
    /// Number of actions matching the filters (ignoring paging).
    pub total: u64,
}

#[derive(Debug, Error)]
pub enum QueryError {
    /// The cursor does not decode, or was issued for other filters.
    #[error("bad cursor: {0}")]
    BadCursor(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("projection store: {0}")]
    Store(#[from] StoreError),
    /// Reading the log (an action's history) failed.
    #[error("log: {0}")]
    Log(#[from] LogError),
}

/// Equal when of the same variant with the same text (an I/O cause compares by its
/// message), so answers with their errors can be compared whole.
impl PartialEq for QueryError {
    fn eq(&self, other: &QueryError) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
            && self.to_string() == other.to_string()
    }
}

impl QueryError {
    /// Whether the store failed because its disk is full.
    pub fn is_disk_full(&self) -> bool {
        match self {
            QueryError::Store(e) => e.is_disk_full(),
            QueryError::Log(e) => e.is_disk_full(),
            _ => false,
        }
    }
}
