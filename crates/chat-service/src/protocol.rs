//! The typed request and response that cross the data plane, and their byte encoding.

use std::fmt;

use chat_store::{
    ChatSummary, Epoch, Fingerprint, Group, Membership, Message, Page, ReadPosition, Recipient,
    SecretHash, User,
};
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
    /// Create an account. The password was hashed by the node the user talks to (bcrypt
    /// never runs on the writer); a retry carries another salt, so the hash is not part of
    /// the request's fingerprint.
    Register {
        /// Retry key.
        request_id: Uuid,
        /// Name part.
        username: String,
        /// Tag part.
        tag: String,
        /// bcrypt hash of the password.
        password_hash: SecretHash,
    },
    /// The live user `username#tag` with their password hash, for the caller to verify a
    /// login ([`Response::Credentials`]); no such user is [`ServiceError::NotFound`].
    Credentials {
        /// Name part.
        username: String,
        /// Tag part.
        tag: String,
    },
    /// A user by `username#tag` with the groups the caller shares with them.
    UserProfile {
        /// Caller.
        acting_user: Uuid,
        /// Name part.
        username: String,
        /// Tag part.
        tag: String,
    },
    /// The caller's chats (private and groups), each with its newest message and unread count.
    Chats {
        /// Caller.
        acting_user: Uuid,
    },
    /// Moves the caller's read position in a chat forward.
    MarkRead {
        /// Retry key.
        request_id: Uuid,
        /// Caller.
        acting_user: Uuid,
        /// The chat.
        chat: ChatRef,
        /// Epoch of the newest message the caller has seen there.
        read_epoch: Epoch,
    },
    /// The live account `user` with its session version, for the input node that checks a
    /// token or cookie naming it; a deleted or unknown account is
    /// [`ServiceError::Unauthenticated`]. Any fresh-enough replica answers.
    Session {
        /// The account a token or cookie names.
        user: Uuid,
    },
    /// End every session of the caller (logout): their session version goes up by one, so
    /// tokens and cookies issued before are refused on every input node that reads it.
    EndSessions {
        /// Retry key.
        request_id: Uuid,
        /// Caller, whose sessions end.
        acting_user: Uuid,
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

/// A chat, as the caller names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum ChatRef {
    /// The private chat with this user.
    User(Uuid),
    /// This group's chat.
    Group(Uuid),
}

impl Request {
    /// Whether the request changes data, so only the writer may serve it. Reads may be served
    /// by any replica that has reached the caller's `min_epoch`.
    pub fn is_write(&self) -> bool {
        match self {
            Request::Register { .. }
            | Request::MarkRead { .. }
            | Request::EndSessions { .. }
            | Request::DeleteAccount { .. }
            | Request::CreateGroup { .. }
            | Request::AddMember { .. }
            | Request::RemoveMember { .. }
            | Request::DeleteGroup { .. }
            | Request::SendPrivate { .. }
            | Request::SendToGroup { .. } => true,
            Request::Credentials { .. }
            | Request::Session { .. }
            | Request::UserProfile { .. }
            | Request::Chats { .. }
            | Request::GetUser { .. }
            | Request::SearchUsers { .. }
            | Request::GetGroup { .. }
            | Request::MyGroups { .. }
            | Request::GroupMembers { .. }
            | Request::ReadPrivate { .. }
            | Request::ReadGroup { .. } => false,
        }
    }

    /// A write's retry key (`request_id`, or `message_id` for sends); None for reads.
    pub fn request_id(&self) -> Option<Uuid> {
        match *self {
            Request::Register { request_id, .. }
            | Request::MarkRead { request_id, .. }
            | Request::EndSessions { request_id, .. }
            | Request::DeleteAccount { request_id, .. }
            | Request::CreateGroup { request_id, .. }
            | Request::AddMember { request_id, .. }
            | Request::RemoveMember { request_id, .. }
            | Request::DeleteGroup { request_id, .. } => Some(request_id),
            Request::SendPrivate { message_id, .. } | Request::SendToGroup { message_id, .. } => {
                Some(message_id)
            }
            _ => None,
        }
    }

    /// What a replay of this write's id must match: its kind, acting user and parameters
    /// (not the retry key itself, and not a password hash, whose salt differs on every try).
    pub fn fingerprint(&self) -> Fingerprint {
        fn id(uuid: &Uuid) -> &[u8] {
            uuid.as_bytes()
        }
        let epoch_bytes;
        let parts: Vec<&[u8]> = match self {
            Request::Register { username, tag, .. } => {
                vec![b"register", username.as_bytes(), tag.as_bytes()]
            }
            Request::MarkRead {
                acting_user,
                chat,
                read_epoch,
                ..
            } => {
                epoch_bytes = read_epoch.to_le_bytes();
                let (kind, target): (&[u8], &Uuid) = match chat {
                    ChatRef::User(user) => (b"user", user),
                    ChatRef::Group(group) => (b"group", group),
                };
                vec![
                    b"mark_read",
                    id(acting_user),
                    kind,
                    id(target),
                    &epoch_bytes,
                ]
            }
            Request::EndSessions { acting_user, .. } => vec![b"end_sessions", id(acting_user)],
            Request::DeleteAccount {
                acting_user, user, ..
            } => vec![b"delete_account", id(acting_user), id(user)],
            Request::CreateGroup {
                acting_user, name, ..
            } => vec![b"create_group", id(acting_user), name.as_bytes()],
            Request::AddMember {
                acting_user,
                group,
                username,
                tag,
                ..
            } => vec![
                b"add_member",
                id(acting_user),
                id(group),
                username.as_bytes(),
                tag.as_bytes(),
            ],
            Request::RemoveMember {
                acting_user,
                group,
                user,
                ..
            } => vec![b"remove_member", id(acting_user), id(group), id(user)],
            Request::DeleteGroup {
                acting_user, group, ..
            } => vec![b"delete_group", id(acting_user), id(group)],
            Request::SendPrivate {
                acting_user,
                to,
                content,
                ..
            } => return Fingerprint::of_message(*acting_user, &Recipient::User(*to), content),
            Request::SendToGroup {
                acting_user,
                group,
                content,
                ..
            } => return Fingerprint::of_message(*acting_user, &Recipient::Group(*group), content),
            _ => vec![b"read"],
        };
        Fingerprint::of(&parts)
    }
}

/// A user's login data, for the node that verifies the password (never shown to users).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// The account.
    pub user: User,
    /// Its bcrypt hash (redacted in `Debug`).
    pub hash: SecretHash,
}

/// A user with the groups the caller shares with them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserProfile {
    /// The user.
    pub user: User,
    /// Live groups both the caller and the user belong to, in the caller's joining order.
    pub shared_groups: Vec<Group>,
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
    /// The caller's read position in this chat (the epoch of the newest message they were
    /// shown; 0: never), read in the same transaction, so a reader can tell whether showing
    /// this page moves it without another read.
    #[serde(default)]
    pub read_epoch: Epoch,
}

/// A successful answer. Which variant answers which request is fixed (see the service
/// traits); only [`Response::Credentials`] carries a password hash, and only between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Response {
    /// Register, Login, GetUser, DeleteAccount, Session, EndSessions.
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
    /// Credentials.
    Credentials(Credentials),
    /// UserProfile.
    Profile(UserProfile),
    /// Chats.
    Chats(Vec<ChatSummary>),
    /// MarkRead.
    ReadPosition(ReadPosition),
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
    /// True when a write's request id had been applied before: this is the stored answer and
    /// nothing was written now (the JSON API answers 200 instead of 201).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
    /// At or above the epoch of the last change to any session version (a logout, an account
    /// deleted) that the answering database held: a session version read at or after it is
    /// still current at `epoch`, which spares input nodes a read per request. `None` (a node
    /// that does not say) means any change up to `epoch` must be assumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions_changed: Option<Epoch>,
}

impl<T> Reply<T> {
    /// A fresh answer (not a replay).
    pub fn new(value: T, epoch: Epoch) -> Self {
        Self {
            value,
            epoch,
            replayed: false,
            sessions_changed: None,
        }
    }

    /// The same answer, saying where session versions last changed.
    pub fn with_sessions_changed(self, at: Epoch) -> Self {
        Self {
            sessions_changed: Some(at),
            ..self
        }
    }

    /// The epoch a cached session version must be read at, at least, to be current at this
    /// answer's epoch: [`Reply::sessions_changed`], or the epoch itself when not said.
    pub fn sessions_mark(&self) -> Epoch {
        self.sessions_changed.unwrap_or(self.epoch)
    }
}

impl Reply {
    /// Takes out the expected variant; anything else means the two sides disagree about the
    /// protocol, which the caller cannot fix.
    pub(crate) fn expect<T>(
        self,
        pick: impl FnOnce(Response) -> Option<T>,
    ) -> Result<Reply<T>, ServiceError> {
        let (epoch, replayed, sessions_changed) =
            (self.epoch, self.replayed, self.sessions_changed);
        match pick(self.value) {
            Some(value) => Ok(Reply {
                value,
                epoch,
                replayed,
                sessions_changed,
            }),
            None => {
                tracing::error!(
                    subsystem = "data",
                    "response of the wrong kind for its request"
                );
                Err(ServiceError::Storage(
                    "The server sent an unexpected answer.".to_owned(),
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
