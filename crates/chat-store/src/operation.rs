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
    epoch_to_sql, private_chat_id, Epoch, Group, GroupRow, Membership, MembershipRow, Message,
    MessageRow, Recipient, SecretHash, User, UserRow,
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
}

/// A committed write: its epoch and result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The epoch the write was applied at (for a retry: the first application's epoch).
    pub epoch: Epoch,
    /// The result.
    pub written: Written,
}

/// Applies `op`'s change at `epoch`. Runs inside the caller's transaction, which also moves
/// the epoch and appends the log row.
pub(crate) fn apply_change(
    conn: &mut SqliteConnection,
    epoch: Epoch,
    op: &Operation,
) -> Result<Written, StoreError> {
    let at = op.at_ms;
    let epoch_sql = epoch_to_sql(epoch)?;
    match &op.change {
        Change::RegisterUser {
            user_uuid,
            username,
            tag,
            secret,
        } => {
            if queries::user_any(conn, *user_uuid)?.is_some() {
                return Err(StoreError::Conflict(format!(
                    "user uuid {user_uuid} exists"
                )));
            }
            if queries::user_by_name_tag(conn, username, tag)?.is_some() {
                return Err(StoreError::Conflict(format!("{username}#{tag} is taken")));
            }
            let user = User {
                uuid: *user_uuid,
                username: username.clone(),
                tag: tag.clone(),
                created_at_ms: at,
                deleted_at_ms: None,
                epoch,
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
            let mut user = queries::user(conn, *user_uuid)?.ok_or(StoreError::NotFound("user"))?;
            diesel::update(users::table.find(user_uuid.to_string()))
                .set((
                    users::deleted_at_ms.eq(Some(at)),
                    users::epoch.eq(epoch_sql),
                ))
                .execute(conn)?;
            diesel::delete(user_secrets::table.find(user_uuid.to_string())).execute(conn)?;
            for group_uuid in queries::group_uuids_of_member(conn, *user_uuid)? {
                leave_group(conn, group_uuid, *user_uuid, epoch, at)?;
            }
            user.deleted_at_ms = Some(at);
            user.epoch = epoch;
            Ok(Written::User(user))
        }
        Change::CreateGroup {
            group_uuid,
            name,
            creator_uuid,
        } => {
            if queries::user(conn, *creator_uuid)?.is_none() {
                return Err(StoreError::NotFound("user"));
            }
            if queries::group_any(conn, *group_uuid)?.is_some() {
                return Err(StoreError::Conflict(format!(
                    "group uuid {group_uuid} exists"
                )));
            }
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
            let mut group =
                queries::group(conn, *group_uuid)?.ok_or(StoreError::NotFound("group"))?;
            diesel::update(chat_groups::table.find(group_uuid.to_string()))
                .set((
                    chat_groups::deleted_at_ms.eq(Some(at)),
                    chat_groups::epoch.eq(epoch_sql),
                ))
                .execute(conn)?;
            group.deleted_at_ms = Some(at);
            group.epoch = epoch;
            Ok(Written::Group(group))
        }
        Change::AddMember {
            group_uuid,
            user_uuid,
        } => {
            if queries::group(conn, *group_uuid)?.is_none() {
                return Err(StoreError::NotFound("group"));
            }
            if queries::user(conn, *user_uuid)?.is_none() {
                return Err(StoreError::NotFound("user"));
            }
            if queries::is_member(conn, *group_uuid, *user_uuid)? {
                return Err(StoreError::Conflict("already a member".to_owned()));
            }
            let membership = Membership {
                group_uuid: *group_uuid,
                user_uuid: *user_uuid,
                joined_at_ms: at,
                epoch,
            };
            diesel::insert_into(group_members::table)
                .values(MembershipRow::try_from(&membership)?)
                .execute(conn)?;
            stamp_group(conn, *group_uuid, epoch)?;
            Ok(Written::Membership(membership))
        }
        Change::RemoveMember {
            group_uuid,
            user_uuid,
        } => {
            if queries::group(conn, *group_uuid)?.is_none() {
                return Err(StoreError::NotFound("group"));
            }
            if !queries::is_member(conn, *group_uuid, *user_uuid)? {
                return Err(StoreError::NotFound("membership"));
            }
            let group = leave_group(conn, *group_uuid, *user_uuid, epoch, at)?;
            Ok(Written::Group(group))
        }
        Change::SendMessage {
            message_uuid,
            sender_uuid,
            recipient,
            content,
        } => {
            if queries::message_exists(conn, *message_uuid)? {
                return Err(StoreError::Conflict(format!(
                    "message uuid {message_uuid} exists"
                )));
            }
            if queries::user(conn, *sender_uuid)?.is_none() {
                return Err(StoreError::NotFound("user"));
            }
            let chat_id = match *recipient {
                Recipient::User(receiver) => {
                    if queries::user(conn, receiver)?.is_none() {
                        return Err(StoreError::NotFound("user"));
                    }
                    private_chat_id(*sender_uuid, receiver)
                }
                Recipient::Group(group_uuid) => {
                    if queries::group(conn, group_uuid)?.is_none() {
                        return Err(StoreError::NotFound("group"));
                    }
                    group_uuid.to_string()
                }
            };
            let message = Message {
                uuid: *message_uuid,
                chat_id,
                sender_uuid: *sender_uuid,
                recipient: *recipient,
                content: content.clone(),
                created_at_ms: at,
                epoch,
            };
            diesel::insert_into(messages::table)
                .values(MessageRow::try_from(&message)?)
                .execute(conn)?;
            Ok(Written::Message(message))
        }
    }
}

fn stamp_group(
    conn: &mut SqliteConnection,
    group_uuid: Uuid,
    epoch: Epoch,
) -> Result<(), StoreError> {
    diesel::update(chat_groups::table.find(group_uuid.to_string()))
        .set(chat_groups::epoch.eq(epoch_to_sql(epoch)?))
        .execute(conn)?;
    Ok(())
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
    diesel::delete(group_members::table.find((group_uuid.to_string(), user_uuid.to_string())))
        .execute(conn)?;
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
        _ => stamp_group(conn, group_uuid, epoch)?,
    }
    Ok(group)
}
