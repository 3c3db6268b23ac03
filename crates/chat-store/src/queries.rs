//! Reads shared by the read views, the write session and operation application. "Live" means
//! not soft-deleted.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;
use uuid::Uuid;

use crate::error::StoreError;
use crate::model::{
    epoch_from_sql, epoch_to_sql, uuid_from_sql, ChatSummary, ChatWith, Epoch, Fingerprint, Group,
    GroupRow, Message, MessageRow, Page, SecretHash, User, UserRow,
};
use crate::operation::{Committed, Remembered, Written};
use crate::schema::{
    applied_requests, chat_groups, chat_reads, group_members, messages, private_chats,
    system_state, user_secrets, users,
};

pub(crate) fn current_epoch(conn: &mut SqliteConnection) -> Result<Epoch, StoreError> {
    let epoch: i64 = system_state::table
        .find(1)
        .select(system_state::current_epoch)
        .first(conn)?;
    epoch_from_sql(epoch)
}

pub(crate) fn set_epoch(conn: &mut SqliteConnection, epoch: Epoch) -> Result<(), StoreError> {
    diesel::update(system_state::table.find(1))
        .set(system_state::current_epoch.eq(epoch_to_sql(epoch)?))
        .execute(conn)?;
    Ok(())
}

fn convert_all<R, T>(rows: Vec<R>) -> Result<Vec<T>, StoreError>
where
    T: TryFrom<R, Error = StoreError>,
{
    rows.into_iter().map(T::try_from).collect()
}

pub(crate) fn user_any(
    conn: &mut SqliteConnection,
    uuid: Uuid,
) -> Result<Option<User>, StoreError> {
    users::table
        .find(uuid.to_string())
        .select(UserRow::as_select())
        .first(conn)
        .optional()?
        .map(User::try_from)
        .transpose()
}

pub(crate) fn user(conn: &mut SqliteConnection, uuid: Uuid) -> Result<Option<User>, StoreError> {
    Ok(user_any(conn, uuid)?.filter(|user| user.deleted_at_ms.is_none()))
}

pub(crate) fn user_by_name_tag(
    conn: &mut SqliteConnection,
    username: &str,
    tag: &str,
) -> Result<Option<User>, StoreError> {
    users::table
        .filter(users::username.eq(username))
        .filter(users::tag.eq(tag))
        .filter(users::deleted_at_ms.is_null())
        .select(UserRow::as_select())
        .first(conn)
        .optional()?
        .map(User::try_from)
        .transpose()
}

pub(crate) fn users_by_name(
    conn: &mut SqliteConnection,
    username: &str,
    limit: u32,
) -> Result<Vec<User>, StoreError> {
    convert_all(
        users::table
            .filter(users::username.eq(username))
            .filter(users::deleted_at_ms.is_null())
            .order(users::tag.asc())
            .limit(i64::from(limit))
            .select(UserRow::as_select())
            .load(conn)?,
    )
}

pub(crate) fn users_by_uuids(
    conn: &mut SqliteConnection,
    uuids: &[Uuid],
) -> Result<Vec<User>, StoreError> {
    let keys: Vec<String> = uuids.iter().map(Uuid::to_string).collect();
    convert_all(
        users::table
            .filter(users::uuid.eq_any(keys))
            .order(users::uuid.asc())
            .select(UserRow::as_select())
            .load(conn)?,
    )
}

pub(crate) fn secret(
    conn: &mut SqliteConnection,
    user_uuid: Uuid,
) -> Result<Option<SecretHash>, StoreError> {
    Ok(user_secrets::table
        .find(user_uuid.to_string())
        .select(user_secrets::bcrypt_hash)
        .first::<String>(conn)
        .optional()?
        .map(SecretHash::new))
}

pub(crate) fn group_any(
    conn: &mut SqliteConnection,
    uuid: Uuid,
) -> Result<Option<Group>, StoreError> {
    chat_groups::table
        .find(uuid.to_string())
        .select(GroupRow::as_select())
        .first(conn)
        .optional()?
        .map(Group::try_from)
        .transpose()
}

pub(crate) fn group(conn: &mut SqliteConnection, uuid: Uuid) -> Result<Option<Group>, StoreError> {
    Ok(group_any(conn, uuid)?.filter(|group| group.deleted_at_ms.is_none()))
}

pub(crate) fn group_uuids_of_member(
    conn: &mut SqliteConnection,
    user_uuid: Uuid,
) -> Result<Vec<Uuid>, StoreError> {
    group_members::table
        .filter(group_members::user_uuid.eq(user_uuid.to_string()))
        .order(group_members::group_uuid.asc())
        .select(group_members::group_uuid)
        .load::<String>(conn)?
        .iter()
        .map(|text| crate::model::uuid_from_sql(text))
        .collect()
}

pub(crate) fn groups_of_member(
    conn: &mut SqliteConnection,
    user_uuid: Uuid,
) -> Result<Vec<Group>, StoreError> {
    convert_all(
        chat_groups::table
            .inner_join(group_members::table)
            .filter(group_members::user_uuid.eq(user_uuid.to_string()))
            .filter(chat_groups::deleted_at_ms.is_null())
            .order((group_members::epoch.asc(), chat_groups::uuid.asc()))
            .select(GroupRow::as_select())
            .load(conn)?,
    )
}

pub(crate) fn is_member(
    conn: &mut SqliteConnection,
    group_uuid: Uuid,
    user_uuid: Uuid,
) -> Result<bool, StoreError> {
    let count: i64 = group_members::table
        .find((group_uuid.to_string(), user_uuid.to_string()))
        .count()
        .get_result(conn)?;
    Ok(count > 0)
}

pub(crate) fn members(
    conn: &mut SqliteConnection,
    group_uuid: Uuid,
) -> Result<Vec<User>, StoreError> {
    convert_all(
        users::table
            .inner_join(group_members::table)
            .filter(group_members::group_uuid.eq(group_uuid.to_string()))
            .order((group_members::epoch.asc(), users::uuid.asc()))
            .select(UserRow::as_select())
            .load(conn)?,
    )
}

pub(crate) fn messages(
    conn: &mut SqliteConnection,
    chat_id: &str,
    page: Page,
) -> Result<Vec<Message>, StoreError> {
    let in_chat = messages::table
        .filter(messages::chat_id.eq(chat_id))
        .select(MessageRow::as_select());
    let limit = i64::from(page.limit());
    let rows = match page {
        Page::Newest { .. } => {
            let mut rows = in_chat
                .order(messages::epoch.desc())
                .limit(limit)
                .load(conn)?;
            rows.reverse();
            rows
        }
        Page::Before { epoch, .. } => {
            let mut rows = in_chat
                .filter(messages::epoch.lt(epoch_to_sql(epoch)?))
                .order(messages::epoch.desc())
                .limit(limit)
                .load(conn)?;
            rows.reverse();
            rows
        }
        Page::Since { epoch, .. } => in_chat
            .filter(messages::epoch.gt(epoch_to_sql(epoch)?))
            .order(messages::epoch.asc())
            .limit(limit)
            .load(conn)?,
        Page::BeforeMessage { message, .. } => {
            let bound: i64 = messages::table
                .find(message.to_string())
                .filter(messages::chat_id.eq(chat_id))
                .select(messages::epoch)
                .first(conn)
                .optional()?
                .ok_or(StoreError::UnknownMessage(message))?;
            let mut rows = in_chat
                .filter(messages::epoch.lt(bound))
                .order(messages::epoch.desc())
                .limit(limit)
                .load(conn)?;
            rows.reverse();
            rows
        }
    };
    convert_all(rows)
}

/// A remembered request: its epoch, fingerprint and answer.
pub(crate) struct RememberedRequest {
    pub(crate) epoch: Epoch,
    pub(crate) fingerprint: Fingerprint,
    answer: Remembered,
}

impl RememberedRequest {
    /// The stored answer, the message read back from its row.
    pub(crate) fn committed(self, conn: &mut SqliteConnection) -> Result<Committed, StoreError> {
        let written = match self.answer {
            Remembered::Written(written) => written,
            Remembered::Message(uuid) => Written::Message(
                messages::table
                    .find(uuid.to_string())
                    .select(MessageRow::as_select())
                    .first(conn)
                    .optional()?
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!("remembered message {uuid} is gone"))
                    })?
                    .try_into()?,
            ),
        };
        Ok(Committed {
            epoch: self.epoch,
            written,
            replayed: true,
        })
    }
}

/// What a request id is remembered as: a row of `applied_requests`, or a stored message of
/// that uuid (a send is remembered by its message alone, so it dirties no page of a second
/// index keyed by a random id, and is never forgotten).
pub(crate) fn remembered(
    conn: &mut SqliteConnection,
    request_id: Uuid,
) -> Result<Option<RememberedRequest>, StoreError> {
    if let Some(remembered) = remembered_request(conn, request_id)? {
        return Ok(Some(remembered));
    }
    let message: Option<MessageRow> = messages::table
        .find(request_id.to_string())
        .select(MessageRow::as_select())
        .first(conn)
        .optional()?;
    message
        .map(|row| {
            let message = Message::try_from(row)?;
            Ok(RememberedRequest {
                epoch: message.epoch,
                fingerprint: message.fingerprint(),
                answer: Remembered::Written(Written::Message(message)),
            })
        })
        .transpose()
}

fn remembered_request(
    conn: &mut SqliteConnection,
    request_id: Uuid,
) -> Result<Option<RememberedRequest>, StoreError> {
    let row: Option<(i64, String, String)> = applied_requests::table
        .filter(applied_requests::request_id.eq(request_id.to_string()))
        .select((
            applied_requests::epoch,
            applied_requests::fingerprint,
            applied_requests::answer,
        ))
        .first(conn)
        .optional()?;
    row.map(|(epoch, fingerprint, answer)| {
        Ok(RememberedRequest {
            epoch: epoch_from_sql(epoch)?,
            fingerprint: Fingerprint::from_hex(&fingerprint).ok_or_else(|| {
                StoreError::Corrupt(format!("fingerprint of {request_id} is malformed"))
            })?,
            answer: serde_json::from_str(&answer)
                .map_err(|e| StoreError::Corrupt(format!("stored answer of {request_id}: {e}")))?,
        })
    })
    .transpose()
}

pub(crate) fn remember(
    conn: &mut SqliteConnection,
    epoch: Epoch,
    request_id: Uuid,
    fingerprint: Fingerprint,
    written: &Written,
) -> Result<(), StoreError> {
    if matches!(written, Written::Message(message) if message.uuid == request_id) {
        // The message row remembers it (see `remembered`).
        return Ok(());
    }
    let answer = serde_json::to_string(&Remembered::of(written))
        .map_err(|e| StoreError::Corrupt(format!("cannot encode an answer: {e}")))?;
    diesel::insert_into(applied_requests::table)
        .values((
            applied_requests::epoch.eq(epoch_to_sql(epoch)?),
            applied_requests::request_id.eq(request_id.to_string()),
            applied_requests::fingerprint.eq(fingerprint.to_hex()),
            applied_requests::answer.eq(answer),
        ))
        .execute(conn)?;
    Ok(())
}

pub(crate) fn forget_requests_through(
    conn: &mut SqliteConnection,
    through: Epoch,
) -> Result<(), StoreError> {
    diesel::delete(
        applied_requests::table.filter(applied_requests::epoch.le(epoch_to_sql(through)?)),
    )
    .execute(conn)?;
    Ok(())
}

/// Moves the read position forward only; returns the position after the change.
pub(crate) fn mark_read(
    conn: &mut SqliteConnection,
    user_uuid: Uuid,
    chat_id: &str,
    read_epoch: Epoch,
    epoch: Epoch,
) -> Result<Epoch, StoreError> {
    use diesel::sql_types::{BigInt, Text};
    #[derive(QueryableByName)]
    struct Position {
        #[diesel(sql_type = BigInt)]
        read_epoch: i64,
    }
    let position: Position = diesel::sql_query(
        "INSERT INTO chat_reads (user_uuid, chat_id, read_epoch, epoch) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (user_uuid, chat_id) DO UPDATE SET \
         read_epoch = max(read_epoch, excluded.read_epoch), epoch = excluded.epoch \
         RETURNING read_epoch",
    )
    .bind::<Text, _>(user_uuid.to_string())
    .bind::<Text, _>(chat_id)
    .bind::<BigInt, _>(epoch_to_sql(read_epoch)?)
    .bind::<BigInt, _>(epoch_to_sql(epoch)?)
    .get_result(conn)?;
    epoch_from_sql(position.read_epoch)
}

pub(crate) fn read_epoch(
    conn: &mut SqliteConnection,
    user_uuid: Uuid,
    chat_id: &str,
) -> Result<Epoch, StoreError> {
    let epoch: Option<i64> = chat_reads::table
        .find((user_uuid.to_string(), chat_id))
        .select(chat_reads::read_epoch)
        .first(conn)
        .optional()?;
    epoch_from_sql(epoch.unwrap_or(0))
}

/// Live groups both users belong to, in the first user's joining order.
pub(crate) fn shared_groups(
    conn: &mut SqliteConnection,
    a: Uuid,
    b: Uuid,
) -> Result<Vec<Group>, StoreError> {
    let theirs: Vec<String> = group_members::table
        .filter(group_members::user_uuid.eq(b.to_string()))
        .select(group_members::group_uuid)
        .load(conn)?;
    Ok(groups_of_member(conn, a)?
        .into_iter()
        .filter(|group| theirs.contains(&group.uuid.to_string()))
        .collect())
}

/// The users a member of private chats has written to or heard from, with the chat ids.
fn private_partners(
    conn: &mut SqliteConnection,
    user_uuid: Uuid,
) -> Result<Vec<(String, Uuid)>, StoreError> {
    let rows: Vec<(String, String)> = private_chats::table
        .filter(private_chats::user_uuid.eq(user_uuid.to_string()))
        .select((private_chats::chat_id, private_chats::other_uuid))
        .load(conn)?;
    rows.into_iter()
        .map(|(chat_id, other)| Ok((chat_id, uuid_from_sql(&other)?)))
        .collect()
}

/// Records that `sender` and `receiver` share the private chat `chat_id`: two rows the first
/// time, nothing after (`INSERT OR IGNORE` finds them and leaves the pages clean).
pub(crate) fn note_private_chat(
    conn: &mut SqliteConnection,
    chat_id: &str,
    sender: Uuid,
    receiver: Uuid,
) -> Result<(), StoreError> {
    let (sender, receiver) = (sender.to_string(), receiver.to_string());
    let sides = [
        (
            private_chats::user_uuid.eq(sender.clone()),
            private_chats::chat_id.eq(chat_id.to_owned()),
            private_chats::other_uuid.eq(receiver.clone()),
        ),
        (
            private_chats::user_uuid.eq(receiver),
            private_chats::chat_id.eq(chat_id.to_owned()),
            private_chats::other_uuid.eq(sender),
        ),
    ];
    diesel::insert_or_ignore_into(private_chats::table)
        .values(sides)
        .execute(conn)?;
    Ok(())
}

/// Fills `private_chats` again from the messages, after a snapshot replaced them: the table
/// is derived, so snapshots do not carry it (and one from a node without it still restores).
pub(crate) fn rebuild_private_chats(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    conn.batch_execute(
        "DELETE FROM main.private_chats; \
         INSERT OR IGNORE INTO main.private_chats (user_uuid, chat_id, other_uuid) \
             SELECT sender_uuid, chat_id, receiver_user_uuid FROM main.messages \
             WHERE receiver_user_uuid IS NOT NULL; \
         INSERT OR IGNORE INTO main.private_chats (user_uuid, chat_id, other_uuid) \
             SELECT receiver_user_uuid, chat_id, sender_uuid FROM main.messages \
             WHERE receiver_user_uuid IS NOT NULL;",
    )?;
    Ok(())
}

/// The user's private chats and live groups, each with its newest message and how many
/// messages from others came after the user's read position; newest activity first.
pub(crate) fn chats(
    conn: &mut SqliteConnection,
    user_uuid: Uuid,
) -> Result<Vec<ChatSummary>, StoreError> {
    let mut chats = Vec::new();
    for (chat_id, other) in private_partners(conn, user_uuid)? {
        let other = user_any(conn, other)?.ok_or(StoreError::NotFound("user"))?;
        chats.push((chat_id, ChatWith::User(other)));
    }
    for group in groups_of_member(conn, user_uuid)? {
        chats.push((group.uuid.to_string(), ChatWith::Group(group)));
    }
    let mut summaries = Vec::with_capacity(chats.len());
    for (chat_id, with) in chats {
        let newest = messages(conn, &chat_id, Page::Newest { limit: 1 })?.pop();
        let newest_author = match &newest {
            Some(message) => user_any(conn, message.sender_uuid)?,
            None => None,
        };
        let read_epoch = read_epoch(conn, user_uuid, &chat_id)?;
        let unread: i64 = messages::table
            .filter(messages::chat_id.eq(&chat_id))
            .filter(messages::epoch.gt(epoch_to_sql(read_epoch)?))
            .filter(messages::sender_uuid.ne(user_uuid.to_string()))
            .count()
            .get_result(conn)?;
        summaries.push(ChatSummary {
            chat_id,
            with,
            newest,
            newest_author,
            unread: u64::try_from(unread).unwrap_or(0),
            read_epoch,
        });
    }
    let activity = |summary: &ChatSummary| match (&summary.newest, &summary.with) {
        (Some(message), _) => message.epoch,
        (None, ChatWith::Group(group)) => group.epoch,
        (None, ChatWith::User(user)) => user.epoch,
    };
    summaries.sort_by(|a, b| {
        activity(b)
            .cmp(&activity(a))
            .then(a.chat_id.cmp(&b.chat_id))
    });
    Ok(summaries)
}
