//! The store's error type.

use uuid::Uuid;

use crate::model::{Epoch, Term};

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
    /// A follower was given an entry that does not follow its log: ask for the entries after
    /// `current`.
    #[error("replication gap: log ends at epoch {current}, entry starts at epoch {received}")]
    Gap {
        /// The last epoch of the follower's log.
        current: Epoch,
        /// The first epoch of the entry it was given.
        received: Epoch,
    },
    /// The log no longer holds the entries after `requested`: use a snapshot.
    #[error("replication log trimmed: entries after epoch {requested} are gone")]
    LogTrimmed {
        /// The epoch the caller wanted to continue from.
        requested: Epoch,
    },
    /// A request id was replayed with another request (kind, user or parameters differ).
    #[error("request id {0} was already used for a different request")]
    RequestIdReused(Uuid),
    /// A page asked for messages before a message that is not in that chat.
    #[error("message {0} is not in this chat")]
    UnknownMessage(Uuid),
    /// An entry received for an epoch this log holds in another term: the suffix from
    /// `keep_through + 1` on was written by a deposed writer and must be dropped
    /// ([`crate::Store::truncate_after`]) before the entry can be appended.
    #[error("log diverges at epoch {epoch}: ours is term {ours}, theirs term {theirs}")]
    Diverged {
        /// First epoch whose entry differs.
        epoch: Epoch,
        /// Our entry's term.
        ours: Term,
        /// The received entry's term.
        theirs: Term,
        /// The last epoch of the common prefix (an entry boundary): truncate after it.
        keep_through: Epoch,
    },
    /// Asked to drop log entries at or below the majority-acknowledged floor: they hold
    /// acknowledged writes, so this is a bug in the caller, and nothing was dropped.
    #[error("refusing to drop entries after epoch {requested}: epoch {floor} is committed")]
    BelowCommitted {
        /// The committed floor.
        floor: Epoch,
        /// The truncation point asked for.
        requested: Epoch,
    },
    /// The suffix to drop is already applied to the rows, which cannot be rolled back: take a
    /// snapshot from the writer instead. Nothing was dropped.
    #[error(
        "entries up to epoch {applied} are applied; cannot drop after {requested}: take a snapshot"
    )]
    SnapshotNeeded {
        /// The applied epoch.
        applied: Epoch,
        /// The truncation point asked for.
        requested: Epoch,
    },
    /// A truncation point or entry that does not fall on an entry boundary of this log.
    #[error("epoch {0} is not an entry boundary of this log")]
    NotABoundary(Epoch),
    /// A write or entry in a term older than the log's newest: it comes from a deposed writer.
    #[error("term {given} is older than the log's term {ours}")]
    StaleTerm {
        /// The log's newest term.
        ours: Term,
        /// The term given.
        given: Term,
    },
    /// Reading or writing a snapshot file failed.
    #[error("snapshot file: {0}")]
    SnapshotIo(#[from] std::io::Error),
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
