//! The store's error type.

use crate::model::Epoch;

/// Everything a store call can fail with. `NotFound` and `Conflict` are about the request;
/// the rest are about the database or replication and are not the caller's fault.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A row the operation needs does not exist (or is deleted).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The operation contradicts the current state (a taken name, an existing membership, a
    /// reused uuid).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A replica was given an operation that does not follow its current epoch.
    #[error("replication gap: database is at epoch {current}, operation is for epoch {received}")]
    Gap {
        /// The replica's epoch.
        current: Epoch,
        /// The epoch of the operation it was given.
        received: Epoch,
    },
    /// The log no longer holds the operations after `requested`: use a snapshot.
    #[error("replication log trimmed: operations after epoch {requested} are gone")]
    LogTrimmed {
        /// The epoch the caller wanted to continue from.
        requested: Epoch,
    },
    /// A row or a logged operation that this code cannot have written.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// Opening the database file failed.
    #[error("cannot open database: {0}")]
    Connection(#[from] diesel::ConnectionError),
    /// Applying the embedded migrations failed.
    #[error("migration failed: {0}")]
    Migration(String),
    /// Any other SQLite error.
    #[error("database error: {0}")]
    Database(#[from] diesel::result::Error),
}
