//! The store's public value types and their row forms.

use std::fmt;

use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::StoreError;
use crate::schema::{chat_groups, group_members, messages, users};

/// The number of writes applied to a database. Each write adds exactly one.
pub type Epoch = u64;

/// The election term a log entry was written in: it only grows along a log.
pub type Term = u64;

/// A registered account. Never carries the password hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Chosen by the writer at registration.
    pub uuid: Uuid,
    /// The name part of `username#tag`.
    pub username: String,
    /// The 3 to 6 digit part of `username#tag`.
    pub tag: String,
    /// Registration time, unix milliseconds.
    pub created_at_ms: i64,
    /// Set when the account was deleted; a deleted account frees its `username#tag`.
    pub deleted_at_ms: Option<i64>,
    /// Epoch of the last write that touched this row.
    pub epoch: Epoch,
    /// Raised by every logout ([`crate::Change::EndSessions`]): a token or cookie issued
    /// under an older version is ended. 0 for an account that never logged out.
    #[serde(default)]
    pub session_version: u64,
}

/// A chat group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// Chosen by the writer at creation.
    pub uuid: Uuid,
    /// Display name; not unique.
    pub name: String,
    /// The user who created the group.
    pub creator_uuid: Uuid,
    /// The member who may remove others and delete the group: the creator until they leave,
    /// then the longest-standing remaining member.
    pub owner_uuid: Uuid,
    /// Creation time, unix milliseconds.
    pub created_at_ms: i64,
    /// Set when the group was deleted (explicitly, or when its last member left).
    pub deleted_at_ms: Option<i64>,
    /// Epoch of the last write that touched this group or its membership.
    pub epoch: Epoch,
}

/// One user's membership of one group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The group.
    pub group_uuid: Uuid,
    /// The member.
    pub user_uuid: Uuid,
    /// When the user joined (or was added), unix milliseconds.
    pub joined_at_ms: i64,
    /// Epoch of the write that added the membership.
    pub epoch: Epoch,
}

/// Who a message is addressed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "uuid", rename_all = "snake_case")]
pub enum Recipient {
    /// A private message to one user.
    User(Uuid),
    /// A message to every member of a group.
    Group(Uuid),
}

/// A chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Chosen by the client, so a retried send is recognised.
    pub uuid: Uuid,
    /// The chat the message belongs to: [`private_chat_id`] or the group uuid.
    pub chat_id: String,
    /// The author.
    pub sender_uuid: Uuid,
    /// The other user, or the group.
    pub recipient: Recipient,
    /// The text, as sent.
    pub content: String,
    /// Send time chosen by the writer, unix milliseconds.
    pub created_at_ms: i64,
    /// Epoch of the write that stored it; orders a chat exactly as committed.
    pub epoch: Epoch,
}

impl Message {
    /// The fingerprint of the request that sent it ([`Fingerprint::of_message`]).
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of_message(self.sender_uuid, &self.recipient, &self.content)
    }
}

/// Which part of a chat to read. Results are always oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Page {
    /// The newest `limit` messages.
    Newest {
        /// How many messages at most.
        limit: u32,
    },
    /// The newest `limit` messages older than `epoch` (scrolling back).
    Before {
        /// Exclusive upper bound.
        epoch: Epoch,
        /// How many messages at most.
        limit: u32,
    },
    /// The oldest `limit` messages newer than `epoch` (live updates).
    Since {
        /// Exclusive lower bound.
        epoch: Epoch,
        /// How many messages at most.
        limit: u32,
    },
    /// The newest `limit` messages older than the message `message` of the same chat
    /// (scrolling back by message id). An id not in the chat is
    /// [`StoreError::UnknownMessage`].
    BeforeMessage {
        /// Exclusive upper bound: a message of this chat.
        message: Uuid,
        /// How many messages at most.
        limit: u32,
    },
}

impl Page {
    /// The page size asked for.
    pub fn limit(&self) -> u32 {
        match *self {
            Page::Newest { limit }
            | Page::Before { limit, .. }
            | Page::Since { limit, .. }
            | Page::BeforeMessage { limit, .. } => limit,
        }
    }

    /// The same page with another size.
    pub fn with_limit(self, limit: u32) -> Page {
        match self {
            Page::Newest { .. } => Page::Newest { limit },
            Page::Before { epoch, .. } => Page::Before { epoch, limit },
            Page::Since { epoch, .. } => Page::Since { epoch, limit },
            Page::BeforeMessage { message, .. } => Page::BeforeMessage { message, limit },
        }
    }
}

/// A digest of a write request's kind, acting user and parameters (SHA-256, first 16 bytes,
/// hex). A replayed request id answers with the stored result only when the fingerprints
/// match; the caller chooses what goes in (never a salted hash, which differs on every retry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Fingerprint(pub [u8; 16]);

impl Fingerprint {
    /// The fingerprint of `parts`, each length-prefixed so `["ab", "c"]` and `["a", "bc"]`
    /// differ.
    pub fn of(parts: &[&[u8]]) -> Self {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        for part in parts {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        let digest = hasher.finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        Self(bytes)
    }

    /// The fingerprint of sending `content` from `sender` to `recipient`. A stored message
    /// is its own remembered request (its uuid is the request id), so a replay is checked
    /// against the row itself; the service fingerprints a send request with this too.
    pub fn of_message(sender: Uuid, recipient: &Recipient, content: &str) -> Self {
        let (kind, target): (&[u8], &Uuid) = match recipient {
            Recipient::User(user) => (b"send_private", user),
            Recipient::Group(group) => (b"send_to_group", group),
        };
        Self::of(&[
            kind,
            sender.as_bytes(),
            target.as_bytes(),
            content.as_bytes(),
        ])
    }

    /// Lower-case hex, as stored.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses [`Fingerprint::to_hex`] output.
    pub fn from_hex(text: &str) -> Option<Self> {
        if text.len() != 32 || !text.is_ascii() {
            return None;
        }
        let mut bytes = [0u8; 16];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Self(bytes))
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Fingerprint::from_hex(&text)
            .ok_or_else(|| serde::de::Error::custom("a fingerprint is 32 hex digits"))
    }
}

/// Where a user has read a chat up to, and how much is new.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadPosition {
    /// The reader.
    pub user_uuid: Uuid,
    /// The chat ([`private_chat_id`] or a group uuid).
    pub chat_id: String,
    /// Epoch of the newest message the user has seen in it.
    pub read_epoch: Epoch,
}

/// Which chat a [`ChatSummary`] is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum ChatWith {
    /// A private chat with this user (deleted accounts included: their history stays).
    User(User),
    /// A group chat.
    Group(Group),
}

/// One entry of a user's chat list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatSummary {
    /// The chat id.
    pub chat_id: String,
    /// The other user or the group.
    pub with: ChatWith,
    /// The newest message, if any.
    pub newest: Option<Message>,
    /// Its author.
    pub newest_author: Option<User>,
    /// Messages from others newer than the user's read position.
    pub unread: u64,
    /// The user's read position in this chat (0: never read).
    pub read_epoch: Epoch,
}

/// The chat id of the private chat between two users: both uuids in lexicographic order joined
/// by `:`, the same for either direction (as in the prototype).
pub fn private_chat_id(a: Uuid, b: Uuid) -> String {
    let (a, b) = (a.to_string(), b.to_string());
    if a <= b {
        format!("{a}:{b}")
    } else {
        format!("{b}:{a}")
    }
}

/// A bcrypt hash. Its `Debug` output is redacted so it cannot reach a log line by accident;
/// only [`SecretHash::expose`] gives the text.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretHash(String);

impl SecretHash {
    /// Wraps a hash produced by bcrypt.
    pub fn new(hash: String) -> Self {
        Self(hash)
    }

    /// The hash text, for verifying a password.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretHash(<redacted>)")
    }
}

pub(crate) fn epoch_to_sql(epoch: Epoch) -> Result<i64, StoreError> {
    i64::try_from(epoch).map_err(|_| StoreError::Corrupt(format!("epoch {epoch} out of range")))
}

pub(crate) fn epoch_from_sql(epoch: i64) -> Result<Epoch, StoreError> {
    Epoch::try_from(epoch).map_err(|_| StoreError::Corrupt(format!("negative epoch {epoch}")))
}

pub(crate) fn uuid_from_sql(text: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(text).map_err(|_| StoreError::Corrupt(format!("bad uuid {text:?} in a row")))
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = users, check_for_backend(diesel::sqlite::Sqlite))]
pub(crate) struct UserRow {
    pub(crate) uuid: String,
    pub(crate) username: String,
    pub(crate) tag: String,
    pub(crate) created_at_ms: i64,
    pub(crate) deleted_at_ms: Option<i64>,
    pub(crate) epoch: i64,
    pub(crate) session_version: i64,
}

impl TryFrom<UserRow> for User {
    type Error = StoreError;
    fn try_from(row: UserRow) -> Result<Self, StoreError> {
        Ok(User {
            uuid: uuid_from_sql(&row.uuid)?,
            username: row.username,
            tag: row.tag,
            created_at_ms: row.created_at_ms,
            deleted_at_ms: row.deleted_at_ms,
            epoch: epoch_from_sql(row.epoch)?,
            session_version: u64::try_from(row.session_version).map_err(|_| {
                StoreError::Corrupt(format!("negative session version of {}", row.uuid))
            })?,
        })
    }
}

impl TryFrom<&User> for UserRow {
    type Error = StoreError;
    fn try_from(user: &User) -> Result<Self, StoreError> {
        Ok(UserRow {
            uuid: user.uuid.to_string(),
            username: user.username.clone(),
            tag: user.tag.clone(),
            created_at_ms: user.created_at_ms,
            deleted_at_ms: user.deleted_at_ms,
            epoch: epoch_to_sql(user.epoch)?,
            session_version: i64::try_from(user.session_version).map_err(|_| {
                StoreError::Corrupt(format!(
                    "session version {} out of range",
                    user.session_version
                ))
            })?,
        })
    }
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = chat_groups, check_for_backend(diesel::sqlite::Sqlite))]
pub(crate) struct GroupRow {
    pub(crate) uuid: String,
    pub(crate) name: String,
    pub(crate) creator_uuid: String,
    pub(crate) owner_uuid: String,
    pub(crate) created_at_ms: i64,
    pub(crate) deleted_at_ms: Option<i64>,
    pub(crate) epoch: i64,
}

impl TryFrom<GroupRow> for Group {
    type Error = StoreError;
    fn try_from(row: GroupRow) -> Result<Self, StoreError> {
        Ok(Group {
            uuid: uuid_from_sql(&row.uuid)?,
            name: row.name,
            creator_uuid: uuid_from_sql(&row.creator_uuid)?,
            owner_uuid: uuid_from_sql(&row.owner_uuid)?,
            created_at_ms: row.created_at_ms,
            deleted_at_ms: row.deleted_at_ms,
            epoch: epoch_from_sql(row.epoch)?,
        })
    }
}

impl TryFrom<&Group> for GroupRow {
    type Error = StoreError;
    fn try_from(group: &Group) -> Result<Self, StoreError> {
        Ok(GroupRow {
            uuid: group.uuid.to_string(),
            name: group.name.clone(),
            creator_uuid: group.creator_uuid.to_string(),
            owner_uuid: group.owner_uuid.to_string(),
            created_at_ms: group.created_at_ms,
            deleted_at_ms: group.deleted_at_ms,
            epoch: epoch_to_sql(group.epoch)?,
        })
    }
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = group_members, check_for_backend(diesel::sqlite::Sqlite))]
pub(crate) struct MembershipRow {
    pub(crate) group_uuid: String,
    pub(crate) user_uuid: String,
    pub(crate) joined_at_ms: i64,
    pub(crate) epoch: i64,
}

impl TryFrom<MembershipRow> for Membership {
    type Error = StoreError;
    fn try_from(row: MembershipRow) -> Result<Self, StoreError> {
        Ok(Membership {
            group_uuid: uuid_from_sql(&row.group_uuid)?,
            user_uuid: uuid_from_sql(&row.user_uuid)?,
            joined_at_ms: row.joined_at_ms,
            epoch: epoch_from_sql(row.epoch)?,
        })
    }
}

impl TryFrom<&Membership> for MembershipRow {
    type Error = StoreError;
    fn try_from(m: &Membership) -> Result<Self, StoreError> {
        Ok(MembershipRow {
            group_uuid: m.group_uuid.to_string(),
            user_uuid: m.user_uuid.to_string(),
            joined_at_ms: m.joined_at_ms,
            epoch: epoch_to_sql(m.epoch)?,
        })
    }
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = messages, check_for_backend(diesel::sqlite::Sqlite))]
pub(crate) struct MessageRow {
    pub(crate) uuid: String,
    pub(crate) chat_id: String,
    pub(crate) sender_uuid: String,
    pub(crate) receiver_user_uuid: Option<String>,
    pub(crate) receiver_group_uuid: Option<String>,
    pub(crate) content: String,
    pub(crate) created_at_ms: i64,
    pub(crate) epoch: i64,
}

impl TryFrom<MessageRow> for Message {
    type Error = StoreError;
    fn try_from(row: MessageRow) -> Result<Self, StoreError> {
        let recipient = match (row.receiver_user_uuid, row.receiver_group_uuid) {
            (Some(user), None) => Recipient::User(uuid_from_sql(&user)?),
            (None, Some(group)) => Recipient::Group(uuid_from_sql(&group)?),
            _ => {
                return Err(StoreError::Corrupt(format!(
                    "message {} has not exactly one receiver",
                    row.uuid
                )))
            }
        };
        Ok(Message {
            uuid: uuid_from_sql(&row.uuid)?,
            chat_id: row.chat_id,
            sender_uuid: uuid_from_sql(&row.sender_uuid)?,
            recipient,
            content: row.content,
            created_at_ms: row.created_at_ms,
            epoch: epoch_from_sql(row.epoch)?,
        })
    }
}

impl TryFrom<&Message> for MessageRow {
    type Error = StoreError;
    fn try_from(m: &Message) -> Result<Self, StoreError> {
        let (receiver_user_uuid, receiver_group_uuid) = match m.recipient {
            Recipient::User(user) => (Some(user.to_string()), None),
            Recipient::Group(group) => (None, Some(group.to_string())),
        };
        Ok(MessageRow {
            uuid: m.uuid.to_string(),
            chat_id: m.chat_id.clone(),
            sender_uuid: m.sender_uuid.to_string(),
            receiver_user_uuid,
            receiver_group_uuid,
            content: m.content.clone(),
            created_at_ms: m.created_at_ms,
            epoch: epoch_to_sql(m.epoch)?,
        })
    }
}
