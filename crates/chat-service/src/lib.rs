//! The chat domain: users, auth, groups and messages, with authorisation and validation.
//!
//! # Shape
//! - [`Request`] / [`Response`] / [`ServiceError`]: one typed enum each, serde, carried as
//!   bytes over the data plane ([`encode`], [`decode`]; bad bytes decode to
//!   [`ServiceError::InvalidInput`]). [`Request::is_write`] says which requests only the writer
//!   serves; [`Request::request_id`] and [`Request::fingerprint`] bind a write's retry key to
//!   its kind, acting user and parameters. Every answer is a [`Reply`]: the value, the epoch it
//!   reflects, and `replayed` (a retried write's stored answer).
//! - [`Dispatcher`]: anything that answers a request. [`AuthService`], [`UserService`],
//!   [`GroupService`] and [`MessageService`] are implemented once for every dispatcher, so the
//!   data-plane proxy gets them by implementing `dispatch` alone. [`AtLeast`] makes any
//!   dispatcher's requests, writes included, carry the client's `min_epoch`.
//! - [`LocalService::handle`]`(request, min_epoch)`: reads from this node's store; writes
//!   through its [`GroupCommitter`] when it is the writer.
//! - [`GroupCommitter`]: the writer's thread. `submit(term, request, min_epoch)` queues a
//!   write on a bounded channel; the thread drains up to `max_batch`, commits them in one
//!   transaction ([`chat_store::Store::commit_batch`], one savepoint per request), sends the
//!   [`CommittedBatch`] (log entry + change notices) to the data plane, then answers.
//!
//! # Errors
//! [`ServiceError`] tells apart the node-level answers a proxy acts on
//! ([`ServiceError::NotWriter`]: pass on / retry; [`ServiceError::ReplicaBehind`]: pass up;
//! [`ServiceError::Storage`]) from the user-facing ones, each with one JSON code
//! ([`ServiceError::code`]) and HTTP status.
//!
//! # Consistency
//! A read on a node behind the client's `min_epoch` is [`ServiceError::ReplicaBehind`]; a
//! write on a non-writer is [`ServiceError::NotWriter`]. Reads run in one SQLite transaction,
//! so a reply's epoch matches its rows.
//!
//! # Authorisation (module `authz`, decided here and nowhere else)
//! The acting user must still exist (else [`ServiceError::Unauthenticated`]). Only members see
//! a group, its members and its chat, and only members post to it or add members. Anyone may
//! leave; only the owner removes others or deletes the group. A user deletes only their own
//! account. Decisions run on the writer inside the batch's transaction, so no other write can
//! slip in between a check and its change.
//!
//! # Validation (module [`validate`])
//! Username: 1 to 32 letters, digits, `_ - .`, not all dots. Tag: 3 to 6 ASCII digits, the
//! whole string, kept as text. Password: 8 to 72 bytes. Group name: 1 to 64 characters after
//! trimming. Message: 1 to 4000 characters after trimming (stored trimmed). Page: at least 1;
//! more than 200 reads as 200.
//!
//! # Passwords
//! bcrypt never runs on the writer: [`AuthService::register`] hashes where it is called (the
//! input node) and sends the hash; [`AuthService::login`] reads the user and hash
//! ([`Request::Credentials`]) and verifies where it is called, against a decoy hash when the
//! user does not exist, so timing does not tell. Both run on tokio's blocking pool, at most one
//! hash per CPU ([`PasswordHasher`], from [`Dispatcher::password_hasher`]).

mod authz;
mod committer;
mod decide;
mod error;
mod hasher;
mod local;
mod protocol;
mod traits;
pub mod validate;

pub use committer::{CommittedBatch, CommitterConfig, GroupCommitter, WriterLease};
pub use error::ServiceError;
pub use hasher::PasswordHasher;
pub use local::{LocalService, ServiceConfig};
pub use protocol::{
    decode, encode, ChatPage, ChatRef, Credentials, Members, Password, Reply, Request, Response,
    UserProfile,
};
pub use traits::{AtLeast, AuthService, Dispatcher, GroupService, MessageService, UserService};

pub use chat_store::{
    ChangeNotice, ChatSummary, ChatWith, Entry, EntryId, Epoch, Group, Membership, Message, Page,
    ReadPosition, Recipient, Term, User,
};
