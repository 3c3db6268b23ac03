//! Replicated write operations and how they change the database.
//!
//! An [`Operation`] holds every value its effect depends on (uuids, times, the hash), so the
//! writer and every replica that applies it at the same epoch end with identical rows.

use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::StoreError;
use crate::model::{
    epoch_to_sql, private_chat_id, Epoch, Fingerprint, Group, GroupRow, Membership, MembershipRow,
    Message, MessageRow, ReadPosition, Recipient, SecretHash, Term, User, UserRow,
};
use crate::queries;
use crate::schema::{chat_groups, group_members, messages, user_secrets, users};

/// One write, as logged and replicated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// Client-chosen id: a second operation with the same id is not applied again.
    pub request_id: Uuid,
    /// The writer's clock when it accepted the write, unix milliseconds.
    pub at_ms: i64,
    /// What the request was (kind, acting user, parameters): a replay of `request_id` must
    /// match it.
    #[serde(default)]
    pub fingerprint: Fingerprint,
    /// What changes.
    pub change: Change,
}

/// The kinds of write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// Create an account. The hash travels here and in snapshots only.
    RegisterUser {
        /// New user's uuid.
        user_uuid: Uuid,
        /// Name part.
        username: String,
        /// Tag part.
        tag: String,
        /// bcrypt hash of the password.
        secret: SecretHash,
    },
    /// Soft-delete an account, drop its secret and end its memberships.
    DeleteUser {
        /// The account.
        user_uuid: Uuid,
    },
    /// End every session of a live account (logout): its session version goes up by one, so
    /// every token and cookie issued before is refused wherever the new version is read.
    EndSessions {
        /// The account.
        user_uuid: Uuid,
    },
    /// Create a group whose creator is its first member and owner.
    CreateGroup {
        /// New group's uuid.
        group_uuid: Uuid,
        /// Display name.
        name: String,
        /// Creator, first member, owner.
        creator_uuid: Uuid,
    },
    /// Soft-delete a group.
    DeleteGroup {
        /// The group.
        group_uuid: Uuid,
    },
    /// Add a user to a group.
    AddMember {
        /// The group.
        group_uuid: Uuid,
        /// The new member.
        user_uuid: Uuid,
    },
    /// Remove a member; the last one leaving deletes the group, the owner leaving hands the
    /// group to the longest-standing member.
    RemoveMember {
        /// The group.
        group_uuid: Uuid,
        /// The member leaving or removed.
        user_uuid: Uuid,
    },
    /// Store a message.
    SendMessage {
        /// Client-chosen message uuid.
        message_uuid: Uuid,
        /// Author.
        sender_uuid: Uuid,
        /// Other user or group.
        recipient: Recipient,
        /// Text.
        content: String,
    },
    /// Move a user's read position in a chat forward (never back).
    MarkRead {
        /// The reader.
        user_uuid: Uuid,
        /// The chat.
        chat_id: String,
        /// Epoch of the newest message seen.
        read_epoch: Epoch,
    },
    /// Nothing: the entry a new writer appends first when its log ends in an older term, so
    /// the older entries commit without waiting for a fresh write (the data plane's term
    /// barrier). Logged like any write, applied as nothing, never remembered.
    TermBarrier,
}

impl Change {
    /// Whether applying it changes some account's session version (or ends the account),
    /// so a session version read before it may be stale after it.
    pub fn changes_sessions(&self) -> bool {
        matches!(self, Change::DeleteUser { .. } | Change::EndSessions { .. })
    }
}

impl Operation {
    /// The message a send stores when applied at `epoch` (`None` for any other change): one
    /// rule for the row, the answer and the change notice.
    pub fn message(&self, epoch: Epoch) -> Option<Message> {
        let Change::SendMessage {
            message_uuid,
            sender_uuid,
            recipient,
            content,
        } = &self.change
        else {
            return None;
        };
        let chat_id = match *recipient {
            Recipient::User(receiver) => private_chat_id(*sender_uuid, receiver),
            Recipient::Group(group_uuid) => group_uuid.to_string(),
        };
        Some(Message {
            uuid: *message_uuid,
            chat_id,
            sender_uuid: *sender_uuid,
            recipient: *recipient,
            content: content.clone(),
            created_at_ms: self.at_ms,
            epoch,
        })
    }

    /// The term barrier's one operation (see [`Change::TermBarrier`]).
    pub fn term_barrier() -> Self {
        Operation {
            request_id: Uuid::nil(),
            at_ms: 0,
            fingerprint: Fingerprint::default(),
            change: Change::TermBarrier,
        }
    }
}

/// What a write produced; kept per request id so a retry gets the same answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Written {
    /// A registered or deleted user.
    User(User),
    /// A created, deleted or changed group.
    Group(Group),
    /// A new membership.
    Membership(Membership),
    /// A stored message.
    Message(Message),
    /// A read position after the change.
    ReadPosition(ReadPosition),
}

/// A committed write: its epoch and result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The epoch the write was applied at (for a retry: the first application's epoch).
    pub epoch: Epoch,
    /// The result.
    pub written: Written,
    /// True when this is the stored answer of an earlier application of the same request
    /// (nothing was written now).
    pub replayed: bool,
}

/// A log entry's identity. Ordered by term, then epoch: the election key of a log is the id
/// of its last durable entry, and the higher key holds every majority-acknowledged write.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct EntryId {
    /// The term the entry was written in.
    pub term: Term,
    /// The entry's last epoch.
    pub epoch: Epoch,
}

/// One replicated log entry: the writes of one group-commit batch, at consecutive epochs
/// `first_epoch()..=epoch`, written in `term`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The writer's term.
    pub term: Term,
    /// The epoch of the last op (the entry's key).
    pub epoch: Epoch,
    /// The writes, oldest first; never empty.
    pub ops: Vec<Operation>,
    /// Remembered request ids at or below this epoch are forgotten when the entry is applied
    /// (the writer decides, so every node forgets the same ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forget_requests_through: Option<Epoch>,
}

impl Entry {
    /// The entry's id.
    pub fn id(&self) -> EntryId {
        EntryId {
            term: self.term,
            epoch: self.epoch,
        }
    }

    /// The epoch of the first op.
    pub fn first_epoch(&self) -> Epoch {
        (self.epoch + 1).saturating_sub(self.ops.len() as Epoch)
    }
}

/// What a committed batch tells input nodes: a chat changed at `epoch`, and who may see it
/// (the chat's members when the batch committed, so a lagging input node need not look it up).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeNotice {
    /// The chat.
    pub chat_id: String,
    /// The epoch of the new message.
    pub epoch: Epoch,
    /// The message's uuid.
    pub message_uuid: Uuid,
    /// Users allowed to see it, sorted.
    pub audience: Vec<Uuid>,
    /// The message as committed, so an input node pushes it without reading it back. Absent
    /// in notices from writers older than this field: then it is read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
}

/// The answer remembered for a request id: small. A send is remembered by its message row
/// alone; `Message` is how databases from before that named the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Remembered {
    /// The stored message with this uuid.
    Message(Uuid),
    /// Anything else, as written.
    Written(Written),
}

impl Remembered {
    pub(crate) fn of(written: &Written) -> Self {
        match written {
            Written::Message(message) => Remembered::Message(message.uuid),
            other => Remembered::Written(other.clone()),
        }
    }
}

/// Applies `op`'s change at `epoch`. Runs inside the caller's transaction, which also moves
/// the epoch and appends the log row. The writer decided the change against the current rows
/// before (so nothing is looked up twice); what is left to catch is caught by the schema's
/// constraints (a taken name, a missing row, a duplicate) or by counting the rows changed.
pub(crate) fn apply_change(
    conn: &mut SqliteConnection,
    epoch: Epoch,
    op: &Operation,
) -> Result<Written, StoreError> {
    let at = op.at_ms;
    let epoch_sql = epoch_to_sql(epoch)?;
    match &op.change {
        Change::TermBarrier => Err(StoreError::Corrupt(
            "a term barrier has nothing to apply".to_owned(),
        )),
        Change::RegisterUser {
            user_uuid,
            username,
            tag,
            secret,
        } => {
            let user = User {
                uuid: *user_uuid,
                username: username.clone(),
                tag: tag.clone(),
                created_at_ms: at,
                deleted_at_ms: None,
                epoch,
                session_version: 0,
            };
            diesel::insert_into(users::table)
                .values(UserRow::try_from(&user)?)
                .execute(conn)?;
            diesel::insert_into(user_secrets::table)
                .values((
                    user_secrets::user_uuid.eq(user_uuid.to_string()),
                    user_secrets::bcrypt_hash.eq(secret.expose()),
                ))
                .execute(conn)?;
            Ok(Written::User(user))
        }
        Change::DeleteUser { user_uuid } => {
            let user: Option<UserRow> = diesel::update(
                users::table
                    .find(user_uuid.to_string())
                    .filter(users::deleted_at_ms.is_null()),
            )
            .set((
                users::deleted_at_ms.eq(Some(at)),
                users::epoch.eq(epoch_sql),
            ))
            .returning(UserRow::as_returning())
            .get_result(conn)
            .optional()?;
            let user = User::try_from(user.ok_or(StoreError::NotFound("user"))?)?;
            diesel::delete(user_secrets::table.find(user_uuid.to_string())).execute(conn)?;
            for group_uuid in queries::group_uuids_of_member(conn, *user_uuid)? {
                leave_group(conn, group_uuid, *user_uuid, epoch, at)?;
            }
            Ok(Written::User(user))
        }
        Change::EndSessions { user_uuid } => {
            let user: Option<UserRow> = diesel::update(
                users::table
                    .find(user_uuid.to_string())
                    .filter(users::deleted_at_ms.is_null()),
            )
            .set((
                users::session_version.eq(users::session_version + 1),
                users::epoch.eq(epoch_sql),
            ))
            .returning(UserRow::as_returning())
            .get_result(conn)
            .optional()?;
            Ok(Written::User(User::try_from(
                user.ok_or(StoreError::NotFound("user"))?,
            )?))
        }
        Change::CreateGroup {
            group_uuid,
            name,
            creator_uuid,
        } => {
            let group = Group {
                uuid: *group_uuid,
                name: name.clone(),
                creator_uuid: *creator_uuid,
                owner_uuid: *creator_uuid,
                created_at_ms: at,
                deleted_at_ms: None,
                epoch,
            };
            diesel::insert_into(chat_groups::table)
                .values(GroupRow::try_from(&group)?)
                .execute(conn)?;
            let membership = Membership {
                group_uuid: *group_uuid,
                user_uuid: *creator_uuid,
                joined_at_ms: at,
                epoch,
            };
            diesel::insert_into(group_members::table)
                .values(MembershipRow::try_from(&membership)?)
                .execute(conn)?;
            Ok(Written::Group(group))
        }
        Change::DeleteGroup { group_uuid } => {
            let group: Option<GroupRow> = diesel::update(
                chat_groups::table
                    .find(group_uuid.to_string())
                    .filter(chat_groups::deleted_at_ms.is_null()),
            )
            .set((
                chat_groups::deleted_at_ms.eq(Some(at)),
                chat_groups::epoch.eq(epoch_sql),
            ))
            .returning(GroupRow::as_returning())
            .get_result(conn)
            .optional()?;
            Ok(Written::Group(Group::try_from(
                group.ok_or(StoreError::NotFound("group"))?,
            )?))
        }
        Change::AddMember {
            group_uuid,
            user_uuid,
        } => {
            let membership = Membership {
                group_uuid: *group_uuid,
                user_uuid: *user_uuid,
                joined_at_ms: at,
                epoch,
            };
            diesel::insert_into(group_members::table)
                .values(MembershipRow::try_from(&membership)?)
                .execute(conn)?;
            if stamp_group(conn, *group_uuid, epoch)? == 0 {
                return Err(StoreError::NotFound("group"));
            }
            Ok(Written::Membership(membership))
        }
        Change::RemoveMember {
            group_uuid,
            user_uuid,
        } => {
            let group = leave_group(conn, *group_uuid, *user_uuid, epoch, at)?;
            Ok(Written::Group(group))
        }
        Change::SendMessage { .. } => {
            let Some(message) = op.message(epoch) else {
                return Err(StoreError::Corrupt("a send made no message".to_owned()));
            };
            diesel::insert_into(messages::table)
                .values(MessageRow::try_from(&message)?)
                .execute(conn)?;
            if let Recipient::User(receiver) = message.recipient {
                queries::note_private_chat(conn, &message.chat_id, message.sender_uuid, receiver)?;
            }
            Ok(Written::Message(message))
        }
        Change::MarkRead {
            user_uuid,
            chat_id,
            read_epoch,
        } => {
            let read_epoch = queries::mark_read(conn, *user_uuid, chat_id, *read_epoch, epoch)?;
            Ok(Written::ReadPosition(ReadPosition {
                user_uuid: *user_uuid,
                chat_id: chat_id.clone(),
                read_epoch,
            }))
        }
    }
}

/// Stamps `epoch` on a group; returns the rows changed (0: no such group).
fn stamp_group(
    conn: &mut SqliteConnection,
    group_uuid: Uuid,
    epoch: Epoch,
) -> Result<usize, StoreError> {
    Ok(
        diesel::update(chat_groups::table.find(group_uuid.to_string()))
            .set(chat_groups::epoch.eq(epoch_to_sql(epoch)?))
            .execute(conn)?,
    )
}

/// Ends one membership and keeps the group consistent: an empty group is deleted, and a group
/// whose owner left passes to the member who joined first (ties broken by uuid, so every
/// replica picks the same one).
fn leave_group(
    conn: &mut SqliteConnection,
    group_uuid: Uuid,
    user_uuid: Uuid,
    epoch: Epoch,
    at: i64,
) -> Result<Group, StoreError> {
    let epoch_sql = epoch_to_sql(epoch)?;
    let removed =
        diesel::delete(group_members::table.find((group_uuid.to_string(), user_uuid.to_string())))
            .execute(conn)?;
    if removed == 0 {
        return Err(StoreError::NotFound("membership"));
    }
    let mut group = queries::group_any(conn, group_uuid)?.ok_or(StoreError::NotFound("group"))?;
    group.epoch = epoch;
    let successor: Option<String> = group_members::table
        .filter(group_members::group_uuid.eq(group_uuid.to_string()))
        .order((group_members::epoch.asc(), group_members::user_uuid.asc()))
        .select(group_members::user_uuid)
        .first(conn)
        .optional()?;
    match successor {
        None if group.deleted_at_ms.is_none() => {
            group.deleted_at_ms = Some(at);
            diesel::update(chat_groups::table.find(group_uuid.to_string()))
                .set((
                    chat_groups::deleted_at_ms.eq(Some(at)),
                    chat_groups::epoch.eq(epoch_sql),
                ))
                .execute(conn)?;
        }
        Some(successor) if group.owner_uuid == user_uuid => {
            group.owner_uuid = crate::model::uuid_from_sql(&successor)?;
            diesel::update(chat_groups::table.find(group_uuid.to_string()))
                .set((
                    chat_groups::owner_uuid.eq(successor),
                    chat_groups::epoch.eq(epoch_sql),
                ))
                .execute(conn)?;
        }
        _ => {
            stamp_group(conn, group_uuid, epoch)?;
        }
    }
    Ok(group)
}
