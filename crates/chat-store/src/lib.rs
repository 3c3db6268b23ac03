//! Storage for the chat domain: SQLite through diesel, with epochs and a replication log.
//!
//! # Schema
//! `migrations/` at the workspace root, embedded ([`MIGRATIONS`]) and applied by
//! [`Store::open`]. Tables: `users` (uuid, username, tag, created/deleted time, epoch),
//! `user_secrets` (bcrypt hash, kept apart from users), `chat_groups` (uuid, name, creator,
//! owner, created/deleted time, epoch), `group_members` (group, user, joined time, epoch),
//! `messages` (uuid, chat id, sender, receiver user *or* group, content, time, epoch),
//! `system_state` (the single row holding `current_epoch`), `replication_log` (epoch →
//! serialised [`Operation`]) and `applied_requests` (request id → epoch and first result).
//! `username#tag` is unique among live users only, so deleting an account frees its name.
//! Deletes of users and groups are soft (rows stay, `deleted_at_ms` is set); reads hide them.
//!
//! # Connections
//! WAL journal, a busy timeout, foreign keys on. One writer connection behind a mutex
//! ([`Store::write`] holds it for a whole check-then-commit sequence, so checks cannot go
//! stale); reads use a small pool of `query_only` connections, each read in one transaction so
//! its rows and its epoch agree ([`Store::read`]). Every call blocks: async callers go through
//! `spawn_blocking`.
//!
//! # Epochs
//! `current_epoch` is the number of writes applied. A write is one transaction that
//! 1. computes `epoch = current + 1`,
//! 2. applies its [`Change`], stamping `epoch` on every row it creates or modifies (a user on
//!    register/delete; a group on create/delete/member change/owner change; a membership on
//!    add; a message on send),
//! 3. sets `current_epoch = epoch`,
//! 4. appends `(epoch, operation)` to `replication_log` and `(request id, epoch, result)` to
//!    `applied_requests`.
//!
//! The writer puts every value the change needs into the [`Operation`] (uuids, time, hash), so
//! applying it elsewhere gives identical rows.
//!
//! # Replication
//! - Catch-up: a replica at epoch E calls the writer's [`Store::operations_since`]`(E, n)`
//!   and applies each with [`Store::apply`]`(epoch, op)`, which is idempotent (an epoch at or
//!   below the replica's does nothing) and refuses to skip ([`StoreError::Gap`]).
//! - Full: when the log no longer reaches back ([`StoreError::LogTrimmed`], after
//!   [`Store::trim_log`]) or the replica is new, [`Store::snapshot`] →
//!   [`Store::restore_snapshot`]. A [`Snapshot`] is the whole contents and compares equal
//!   exactly when two databases hold the same data.
//!
//! # Retries
//! Every operation carries a client-chosen `request_id` (a message's uuid for sends). A second
//! commit with an applied id returns the first [`Committed`] and does not move the epoch. Ids
//! are remembered as long as the log is (trimming forgets both).
//!
//! # Secrets
//! Password hashes are a [`SecretHash`] (redacted `Debug`). They leave this crate only in
//! [`Change::RegisterUser`], in [`Snapshot::secrets`] (replication to replicas) and through
//! [`ReadView::credentials`] for the service to verify a login; [`User`] has no hash field.
//!
//! Authorisation is not decided here (see `chat-service`); the store checks only that the rows
//! an operation needs exist and that it breaks no uniqueness rule.

mod error;
mod model;
mod operation;
mod queries;
mod schema;
mod store;

pub use error::StoreError;
pub use model::{
    private_chat_id, Epoch, Group, Membership, Message, Page, Recipient, SecretHash, User,
};
pub use operation::{Change, Committed, Operation, Written};
pub use store::{
    Applied, AppliedRequest, Durability, ReadView, Snapshot, Store, StoreOptions, UserSecret,
    WriteSession, MIGRATIONS,
};
