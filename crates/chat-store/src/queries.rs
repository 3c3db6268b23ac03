//! Reads shared by the read views, the write session and operation application. "Live" means
//! not soft-deleted.

use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;
use uuid::Uuid;

use crate::error::StoreError;
use crate::model::{
    epoch_from_sql, epoch_to_sql, Epoch, Group, GroupRow, Message, MessageRow, Page, SecretHash,
    User, UserRow,
};
use crate::operation::{Committed, Written};
use crate::schema::{
    applied_requests, chat_groups, group_members, messages, system_state, user_secrets, users,
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

pub(crate) fn message_exists(conn: &mut SqliteConnection, uuid: Uuid) -> Result<bool, StoreError> {
    let count: i64 = messages::table
        .find(uuid.to_string())
        .count()
        .get_result(conn)?;
    Ok(count > 0)
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
    };
    convert_all(rows)
}

pub(crate) fn applied(
    conn: &mut SqliteConnection,
    request_id: Uuid,
) -> Result<Option<Committed>, StoreError> {
    let row: Option<(i64, String)> = applied_requests::table
        .find(request_id.to_string())
        .select((applied_requests::epoch, applied_requests::outcome))
        .first(conn)
        .optional()?;
    row.map(|(epoch, outcome)| {
        let written: Written = serde_json::from_str(&outcome)
            .map_err(|e| StoreError::Corrupt(format!("stored outcome of {request_id}: {e}")))?;
        Ok(Committed {
            epoch: epoch_from_sql(epoch)?,
            written,
        })
    })
    .transpose()
}
