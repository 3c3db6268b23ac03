//! Storage for the chat domain: SQLite through diesel, with epochs, a replicated log of
//! (term, epoch) entries, group commit and streamed snapshots.
//!
//! # Schema
//! `migrations/` at the workspace root, embedded ([`MIGRATIONS`]) and applied by
//! [`Store::open`]. Tables: `users`, `user_secrets` (bcrypt hashes, kept apart from users),
//! `chat_groups`, `group_members`, `messages`, `chat_reads` (each user's read position per
//! chat), `system_state` (the applied epoch and the log's base `(term, epoch)`),
//! `replication_log` (`epoch INTEGER PRIMARY KEY`: one row per entry, keyed by its last
//! epoch) and `applied_requests` (`epoch INTEGER PRIMARY KEY`, unique request id, fingerprint,
//! small answer). `username#tag` is unique among live users only. Deletes of users and groups
//! are soft.
//!
//! # Epochs, entries, terms
//! Every write is one epoch; every row a write touches carries it. The writer commits writes
//! in batches ([`Store::commit_batch`]): one transaction, one fsync, one log [`Entry`] holding
//! the batch's [`Operation`]s at consecutive epochs, stamped with the writer's [`Term`]. The
//! id of the last durable entry, `(term, epoch)` ([`EntryId`], ordered by term then epoch), is
//! the node's election key ([`Store::election_key`]).
//!
//! # The writer: group commit
//! [`Store::commit_batch`]`(term, at_ms, requests)` takes anything implementing
//! [`WriteRequest`] (a request id, a [`Fingerprint`], and a decision against the rows). Each
//! request is decided in its own SAVEPOINT, so a refusal rolls back that request only. Per
//! write: one look-up of the request id, the request's own reads, its rows and one
//! remembered-answer row; per batch: one log row, one epoch update. It returns per-request
//! answers, the batch's entry (to replicate) and [`ChangeNotice`]s `(chat id, epoch,
//! audience)` with each chat's members at commit time. [`Store::writer_statements`] counts
//! the statements (the bench divides by writes).
//!
//! # Followers
//! - [`Store::append_entries`]`(entries, commit)`: appends in order (entries already held are
//!   skipped; a gap is [`StoreError::Gap`]; an entry held in another term is
//!   [`StoreError::Diverged`]), then applies the log up to `commit` (the writer's
//!   majority-acknowledged epoch), in one fsynced transaction, so the returned
//!   [`AppendOutcome::durable`] may be reported upward. Rows only ever hold committed entries
//!   on a follower; [`Store::apply_committed`] moves the commit point alone.
//! - [`Store::entries_after`]`(epoch, n)`: catch-up for the node below
//!   ([`StoreError::LogTrimmed`] when gone: send a snapshot).
//! - [`Store::last_common_epoch`] / [`Store::term_at`] find where two logs part;
//!   [`Store::truncate_after`]`(keep_through, committed_floor)` drops a deposed writer's
//!   suffix, refusing below the floor ([`StoreError::BelowCommitted`]) and below the applied
//!   rows ([`StoreError::SnapshotNeeded`]: a deposed writer's own applied suffix needs a
//!   snapshot).
//!
//! # Snapshots
//! [`Store::snapshot_reader`] takes a consistent copy with `VACUUM INTO` a temporary file
//! beside the database and streams it in chunks ([`SnapshotReader::next_chunk`]);
//! [`Store::snapshot_writer`] + [`Store::restore_from`] receive chunks into a file, check it
//! (`quick_check`, schema version), attach it and copy it in one transaction. The log base
//! becomes the snapshot's id. Nothing holds the whole database in memory. ([`Store::snapshot`]
//! is an in-memory comparison of contents for tests.)
//!
//! # Trimming and retries
//! The log trims itself: once it holds more than twice [`StoreOptions::log_retention`]
//! epochs, the applied entries older than the retention go (never unapplied ones, so a node
//! can always continue). Remembered request ids are independent of the log: the writer
//! forgets them after [`StoreOptions::request_retention`] and says so in an entry
//! (`forget_requests_through`), so every node forgets the same ones and a retry replays as
//! long as its id is remembered anywhere. A send whose request id is its message's uuid (as
//! the service sends every message) writes no row there: the message row remembers it, for as
//! long as the message exists, and [`Fingerprint::of_message`] is what a replay must match.
//! A replay answers the first result only when the request's [`Fingerprint`] (kind, acting
//! user, parameters) matches; otherwise [`StoreError::RequestIdReused`].
//!
//! # Connections
//! WAL journal, a busy timeout, foreign keys on. One writer connection behind a mutex with the
//! log's position cached beside it; reads use a small pool of `query_only` connections, each
//! read in one transaction so its rows and its epoch agree ([`Store::read`]). Every call
//! blocks: async callers go through `spawn_blocking` or a thread of their own.
//!
//! # Secrets
//! Password hashes are a [`SecretHash`] (redacted `Debug`). They leave this crate only in
//! [`Change::RegisterUser`], in snapshots and through [`ReadView::credentials`].
//!
//! Authorisation is not decided here (see `chat-service`); the store applies decided changes,
//! and the schema's constraints catch what a decision missed.

mod error;
mod model;
mod operation;
mod queries;
mod schema;
mod snapshot;
mod store;

pub use error::StoreError;
pub use model::{
    private_chat_id, ChatSummary, ChatWith, Epoch, Fingerprint, Group, Membership, Message, Page,
    ReadPosition, Recipient, SecretHash, Term, User,
};
pub use operation::{Change, ChangeNotice, Committed, Entry, EntryId, Operation, Written};
pub use snapshot::{SnapshotReader, SnapshotWriter};
pub use store::{
    AppendOutcome, AppliedRequest, BatchOutcome, Durability, ReadView, Snapshot, Store,
    StoreOptions, StoredReadPosition, UserSecret, WriteRequest, MIGRATIONS,
};
