//! The typed request and response that cross the data plane, and their byte encoding.

use std::fmt;

use chat_store::{Epoch, Group, Membership, Message, Page, User};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ServiceError;

/// A password in transit. Its `Debug` is redacted so a logged request shows no secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Password(String);

impl Password {
    /// Wraps a password typed by a user.
    pub fn new(password: impl Into<String>) -> Self {
        Self(password.into())
    }

    /// The text, for hashing or verifying.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// Every chat operation. `acting_user` is the logged-in user the input node vouches for;
/// `request_id` / `message_id` are chosen by the client so that a retry is recognised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Create an account.
    Register {
        /// Retry key.
        request_id: Uuid,
        /// Name part.
        username: String,
        /// Tag part.
        tag: String,
        /// Plain password, hashed by the writer.
        password: Password,
    },
    /// Check credentials.
    Login {
        /// Name part.
        username: String,
        /// Tag part.
        tag: String,
        /// Plain password.
        password: Password,
    },
    /// Look up one live user by `username#tag`.
    GetUser {
        /// Caller.
        acting_user: Uuid,
        /// Name part.
        username: String,
        /// Tag part.
        tag: String,
    },
    /// Live users with exactly this username.
    SearchUsers {
        /// Caller.
        acting_user: Uuid,
        /// The name searched for.
        username: String,
    },
    /// Delete the caller's own account, ending their memberships.
    DeleteAccount {
        /// Retry key.
        request_id: Uuid,
        /// Caller.
        acting_user: Uuid,
        /// The account to delete; must be the caller's.
        user: Uuid,
    },
    /// Create a group with the caller as first member and owner.
    CreateGroup {
        /// Retry key.
        request_id: Uuid,
        /// Caller.
        acting_user: Uuid,
        /// Display name.
        name: String,
    },
    /// A group's details (members only).
    GetGroup {
        /// Caller.
        acting_user: Uuid,
        /// The group.
        group: Uuid,
    },
    /// The caller's own groups.
    MyGroups {
        /// Caller.
        acting_user: Uuid,
    },
    /// A group's members (members only).
    GroupMembers {
        /// Caller.
        acting_user: Uuid,
        /// The group.
        group: Uuid,
    },
    /// Add `username#tag` to a group (members only).
    AddMember {
        /// Retry key.
        request_id: Uuid,
        /// Caller.
        acting_user: Uuid,
        /// The group.
        group: Uuid,
        /// New member's name part.
        username: String,
        /// New member's tag part.
        tag: String,
    },
    /// Remove a member: oneself (leave) or, for the owner, anyone.
    RemoveMember {
        /// Retry key.
        request_id: Uuid,
        /// Caller.
        acting_user: Uuid,
        /// The group.
        group: Uuid,
        /// The member to remove.
        user: Uuid,
    },
    /// Delete a group (owner only).
    DeleteGroup {
        /// Retry key.
        request_id: Uuid,
        /// Caller.
        acting_user: Uuid,
        /// The group.
        group: Uuid,
    },
    /// Send a private message.
    SendPrivate {
        /// The new message's uuid, also its retry key.
        message_id: Uuid,
        /// Caller, the author.
        acting_user: Uuid,
        /// The other user.
        to: Uuid,
        /// Text.
        content: String,
    },
    /// Send a message to a group (members only).
    SendToGroup {
        /// The new message's uuid, also its retry key.
        message_id: Uuid,
        /// Caller, the author.
        acting_user: Uuid,
        /// The group.
        group: Uuid,
        /// Text.
        content: String,
    },
    /// A page of the private chat between the caller and `other`.
    ReadPrivate {
        /// Caller.
        acting_user: Uuid,
        /// The other user (may be deleted: the history stays readable).
        other: Uuid,
        /// Which messages.
        page: Page,
    },
    /// A page of a group's chat (members only).
    ReadGroup {
        /// Caller.
        acting_user: Uuid,
        /// The group.
        group: Uuid,
        /// Which messages.
        page: Page,
    },
}

impl Request {
    /// Whether the request changes data, so only the writer may serve it. Reads may be served
    /// by any replica that has reached the caller's `min_epoch`.
    pub fn is_write(&self) -> bool {
        match self {
            Request::Register { .. }
            | Request::DeleteAccount { .. }
            | Request::CreateGroup { .. }
            | Request::AddMember { .. }
            | Request::RemoveMember { .. }
            | Request::DeleteGroup { .. }
            | Request::SendPrivate { .. }
            | Request::SendToGroup { .. } => true,
            Request::Login { .. }
            | Request::GetUser { .. }
            | Request::SearchUsers { .. }
            | Request::GetGroup { .. }
            | Request::MyGroups { .. }
            | Request::GroupMembers { .. }
            | Request::ReadPrivate { .. }
            | Request::ReadGroup { .. } => false,
        }
    }
}

/// A group with its members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Members {
    /// The group.
    pub group: Group,
    /// Its members, in joining order.
    pub members: Vec<User>,
}

/// A page of a chat with the users who wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatPage {
    /// Messages, oldest first.
    pub messages: Vec<Message>,
    /// Each distinct author of `messages` (deleted accounts included, so old messages keep a
    /// name), sorted by uuid.
    pub authors: Vec<User>,
}

/// A successful answer. Which variant answers which request is fixed (see the service
/// traits); a password hash is never part of any variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Response {
    /// Register, Login, GetUser, DeleteAccount.
    User(User),
    /// SearchUsers.
    Users(Vec<User>),
    /// CreateGroup, GetGroup, RemoveMember, DeleteGroup (the group after the change).
    Group(Group),
    /// MyGroups.
    Groups(Vec<Group>),
    /// GroupMembers.
    Members(Members),
    /// AddMember.
    Membership(Membership),
    /// SendPrivate, SendToGroup.
    Message(Message),
    /// ReadPrivate, ReadGroup.
    Chat(ChatPage),
}

/// An answer with the database epoch it reflects: the epoch a write committed at, or the
/// epoch a read saw. Clients keep the largest they have seen and ask later reads for at
/// least that (`min_epoch`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply<T = Response> {
    /// The answer.
    pub value: T,
    /// Its epoch.
    pub epoch: Epoch,
}

impl Reply {
    /// Takes out the expected variant; anything else means the two sides disagree about the
    /// protocol, which the caller cannot fix.
    pub(crate) fn expect<T>(
        self,
        pick: impl FnOnce(Response) -> Option<T>,
    ) -> Result<Reply<T>, ServiceError> {
        let epoch = self.epoch;
        match pick(self.value) {
            Some(value) => Ok(Reply { value, epoch }),
            None => {
                tracing::error!(
                    subsystem = "data",
                    "response of the wrong kind for its request"
                );
                Err(ServiceError::unavailable(
                    "The server sent an unexpected answer.",
                ))
            }
        }
    }
}

/// Encodes a request, reply or error for the data plane (JSON bytes).
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, ServiceError> {
    serde_json::to_vec(value).map_err(|e| {
        tracing::error!(subsystem = "data", error = %e, "cannot encode a data-plane value");
        ServiceError::unavailable("The request could not be encoded.")
    })
}

/// Decodes bytes from the data plane. Malformed JSON, invalid UTF-8 and unknown variants are
/// an [`ServiceError::InvalidInput`], never a panic.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ServiceError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ServiceError::invalid(format!("Malformed request or response: {e}")))
}
