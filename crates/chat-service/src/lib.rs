//! The chat domain: users, auth, groups and messages, with authorisation and validation.
//!
//! # Shape
//! - [`Request`] / [`Response`] / [`ServiceError`]: one typed enum each, serde, carried as
//!   bytes over the data plane ([`encode`], [`decode`]; bad bytes, invalid UTF-8 included,
//!   decode to [`ServiceError::InvalidInput`]). [`Request::is_write`] says which requests only
//!   the writer may serve. Every answer is a [`Reply`]: the value plus the epoch it reflects.
//! - [`LocalService::handle`]`(request, min_epoch)`: the one dispatcher over this node's
//!   [`chat_store::Store`]. SQLite and bcrypt run on tokio's blocking pool.
//! - [`Dispatcher`]: anything that answers a request. [`AuthService`], [`UserService`],
//!   [`GroupService`] and [`MessageService`] are implemented once for every dispatcher, so the
//!   data-plane proxy gets them by implementing `dispatch` alone.
//!
//! # Consistency
//! A read is refused with [`ServiceError::Unavailable`] when the local database is behind the
//! client's `min_epoch` (so the request can go on towards the writer); a write on a node
//! configured with `accepts_writes = false` likewise. Reads run in one SQLite transaction, so a
//! reply's epoch matches its rows.
//!
//! # Authorisation (module `authz`, decided here and nowhere else)
//! The acting user is named in each request by the input node and must still exist (a session
//! can outlive its account). Only members see a group, its members and its chat, and only
//! members post to it or add members. Anyone may leave; only the owner (the creator, then the
//! longest-standing member once the owner leaves) removes others or deletes the group. A user
//! deletes only their own account, which ends their memberships and frees `username#tag`.
//! Checks and the write they guard run under the store's writer lock, so no other write can
//! slip in between.
//!
//! # Retries
//! Writes carry a client-chosen id (`request_id`, or `message_id` for sends). A repeated id
//! returns the first result at the first epoch and writes nothing; an id reused for another
//! kind of request is a [`ServiceError::Conflict`].
//!
//! # Validation (module [`validate`])
//! Username: 1 to 32 letters, digits, `_ - .`. Tag: 3 to 6 ASCII digits, the whole string.
//! Password: 8 to 72 bytes. Group name: 1 to 64 characters after trimming. Message: 1 to 4096
//! characters, not blank. Page: 1 to 500 messages.
//!
//! # Secrets
//! Passwords travel as [`Password`] (redacted `Debug`), are hashed with bcrypt (cost
//! [`ServiceConfig::bcrypt_cost`], default 12) and the hash goes only into the store. No
//! [`Response`] carries a hash. A login for an unknown name verifies against a decoy hash so
//! timing does not reveal which accounts exist.

mod authz;
mod error;
mod local;
mod protocol;
mod traits;
pub mod validate;

pub use error::ServiceError;
pub use local::{LocalService, ServiceConfig};
pub use protocol::{decode, encode, ChatPage, Members, Password, Reply, Request, Response};
pub use traits::{AuthService, Dispatcher, GroupService, MessageService, UserService};

pub use chat_store::{Epoch, Group, Membership, Message, Page, Recipient, User};
