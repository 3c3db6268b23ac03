//! The one error type of the chat domain; it crosses the data plane as a value.

use serde::{Deserialize, Serialize};

/// A failed request. Every variant carries a message fit to show the user as is; internal
/// details (SQL errors, paths) are logged where they happen and never put here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum ServiceError {
    /// The user, group, membership or chat does not exist (or was deleted).
    #[error("{0}")]
    NotFound(String),
    /// The caller may not do this (not a member, not the owner, someone else's account,
    /// wrong credentials).
    #[error("{0}")]
    Forbidden(String),
    /// The request contradicts the current state (name taken, already a member).
    #[error("{0}")]
    Conflict(String),
    /// A field is malformed (bad tag, empty or too long message, undecodable bytes).
    #[error("{0}")]
    InvalidInput(String),
    /// This node cannot answer now (not the writer, replica behind, storage failure); the
    /// request may succeed elsewhere or later.
    #[error("{0}")]
    Unavailable(String),
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
            other => {
                tracing::error!(subsystem = "data", error = %other, "storage failure");
                Self::unavailable("Storage is unavailable; try again later.")
            }
        }
    }
}
