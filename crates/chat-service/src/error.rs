//! The one error type of the chat domain; it crosses the data plane as a value.

use chat_store::Epoch;
use serde::{Deserialize, Serialize};

/// A failed request. The user-facing variants carry a message fit to show as is; internal
/// details (SQL errors, paths) are logged where they happen and never put here.
///
/// Three variants are about where the request was served, not about the request, and tell a
/// proxy what to do: [`ServiceError::NotWriter`] (pass it on towards the writer, or retry),
/// [`ServiceError::ReplicaBehind`] (pass it up to a fresher node), [`ServiceError::Storage`]
/// (this node's database failed). Every variant maps to one JSON error code
/// ([`ServiceError::code`]) and HTTP status ([`ServiceError::http_status`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum ServiceError {
    /// A field is malformed (bad tag, empty or too long message, undecodable bytes).
    #[error("{0}")]
    InvalidInput(String),
    /// No valid session, wrong credentials, or the account is gone.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller may not do this (not a member, not the owner, someone else's account).
    #[error("{0}")]
    Forbidden(String),
    /// The user, group, membership or chat does not exist (or was deleted).
    #[error("{0}")]
    NotFound(String),
    /// The request contradicts the current state (name taken, already a member, a request
    /// id reused for another request).
    #[error("{0}")]
    Conflict(String),
    /// A body or field beyond its limit.
    #[error("{0}")]
    TooLarge(String),
    /// Too many attempts; retry later.
    #[error("{0}")]
    RateLimited(String),
    /// The service cannot answer now; retry later.
    #[error("{0}")]
    Unavailable(String),
    /// This node does not take writes (it is not the writer, or there is no writer now):
    /// retryable; a proxy passes the request on towards the writer.
    #[error("not the writer: {0}")]
    NotWriter(String),
    /// This node's database is behind what the client has seen: a proxy passes the request
    /// up to a fresher node.
    #[error("replica at epoch {have}, request needs {want}")]
    ReplicaBehind {
        /// The epoch this node has applied.
        have: Epoch,
        /// The epoch the client has seen.
        want: Epoch,
    },
    /// This node's storage failed; the request may succeed elsewhere or later.
    #[error("storage failure: {0}")]
    Storage(String),
}

impl ServiceError {
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound(message.into())
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::Forbidden(message.into())
    }

    pub(crate) fn conflict(message: impl Into<String>) -> Self {
        Self::Conflict(message.into())
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidInput(message.into())
    }

    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self::Unavailable(message.into())
    }

    pub(crate) fn unauthenticated(message: impl Into<String>) -> Self {
        Self::Unauthenticated(message.into())
    }

    /// The JSON API's error code: `invalid_input`, `unauthenticated`, `forbidden`,
    /// `not_found`, `conflict`, `too_large`, `rate_limited` or `unavailable` (the three
    /// node-level variants are `unavailable` to a user).
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidInput(_) => "invalid_input",
            Self::Unauthenticated(_) => "unauthenticated",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::TooLarge(_) => "too_large",
            Self::RateLimited(_) => "rate_limited",
            Self::Unavailable(_)
            | Self::NotWriter(_)
            | Self::ReplicaBehind { .. }
            | Self::Storage(_) => "unavailable",
        }
    }

    /// The HTTP status of [`ServiceError::code`].
    pub fn http_status(&self) -> u16 {
        match self.code() {
            "invalid_input" => 400,
            "unauthenticated" => 401,
            "forbidden" => 403,
            "not_found" => 404,
            "conflict" => 409,
            "too_large" => 413,
            "rate_limited" => 429,
            _ => 503,
        }
    }

    /// Whether the same request may succeed if retried later or elsewhere (429 and 503, which
    /// carry `Retry-After`).
    pub fn is_retryable(&self) -> bool {
        matches!(self.http_status(), 429 | 503)
    }

    /// Whether a proxy should pass the request on towards the writer (or a fresher node)
    /// rather than answer the user with this error.
    pub fn should_pass_on(&self) -> bool {
        matches!(self, Self::NotWriter(_) | Self::ReplicaBehind { .. })
    }

    /// The text for the user: node-level details are replaced by a generic message.
    pub fn user_message(&self) -> String {
        match self {
            Self::NotWriter(_) | Self::ReplicaBehind { .. } | Self::Storage(_) => {
                "The service is busy; try again shortly.".to_owned()
            }
            other => other.to_string(),
        }
    }
}

impl From<chat_store::StoreError> for ServiceError {
    fn from(error: chat_store::StoreError) -> Self {
        use chat_store::StoreError as E;
        match error {
            E::NotFound(what) => Self::not_found(format!("The {what} was not found.")),
            E::Conflict(reason) => {
                tracing::debug!(subsystem = "data", %reason, "store conflict");
                Self::conflict("The request conflicts with the current data; reload and retry.")
            }
            E::RequestIdReused(_) => {
                Self::conflict("This request id was already used for a different request.")
            }
            E::UnknownMessage(_) => Self::invalid("The message to page from is not in this chat."),
            E::StaleTerm { ours, given } => Self::NotWriter(format!(
                "this writer's term {given} is older than the log's {ours}"
            )),
            other => {
                tracing::error!(subsystem = "data", error = %other, "storage failure");
                Self::Storage("Storage is unavailable; try again later.".to_owned())
            }
        }
    }
}
