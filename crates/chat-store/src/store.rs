//! The store: one writer connection behind a mutex, a small pool of read-only connections.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::result::DatabaseErrorKind;
use diesel::sqlite::SqliteConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::StoreError;
use crate::model::{
    epoch_from_sql, epoch_to_sql, uuid_from_sql, Epoch, Group, GroupRow, Membership, MembershipRow,
    Message, MessageRow, Page, SecretHash, User, UserRow,
};
use crate::operation::{apply_change, Committed, Operation, Written};
use crate::queries;
use crate::schema::{
    applied_requests, chat_groups, group_members, messages, replication_log, user_secrets, users,
};

/// The schema, compiled into the binary and applied by [`Store::open`].
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");

/// Rows per INSERT when restoring a snapshot: well under SQLite's bound-parameter limit.
const RESTORE_CHUNK: usize = 500;

/// How hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// fsync on every commit (`synchronous = FULL`): an acknowledged write survives power loss.
    #[default]
    Full,
    /// fsync at checkpoints only (`synchronous = NORMAL`): survives a process crash, may lose
    /// the last commits on power loss. Faster; for tests and benchmarks.
    Normal,
}

/// Settings for [`Store::open_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// Commit durability.
    pub durability: Durability,
    /// How long a connection waits for a lock held by another connection before failing.
    pub busy_timeout: Duration,
    /// Read connections kept open between reads (more are opened under load and then closed).
    pub idle_readers: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Full,
            busy_timeout: Duration::from_secs(5),
            idle_readers: 4,
        }
    }
}

/// Result of [`Store::apply`] on a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The replica was already at or past that epoch; nothing changed.
    AlreadyApplied,
    /// The operation was applied at the given epoch.
    Committed(Committed),
}

/// A user's password hash, as carried in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSecret {
    /// The account.
    pub user_uuid: Uuid,
    /// Its bcrypt hash.
    pub hash: SecretHash,
}

/// A request id the database has applied, with the result a retry gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedRequest {
    /// Client-chosen id.
    pub request_id: Uuid,
    /// Epoch of the first application.
    pub epoch: Epoch,
    /// Its result.
    pub outcome: Written,
}

/// The full contents of a database at one epoch (soft-deleted rows included, the replication
/// log excluded), every list sorted by primary key, so two snapshots compare equal exactly
/// when two databases hold the same data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The epoch the contents belong to.
    pub epoch: Epoch,
    /// Every user.
    pub users: Vec<User>,
    /// Hashes of live users. Only snapshots and `RegisterUser` operations carry them.
    pub secrets: Vec<UserSecret>,
    /// Every group.
    pub groups: Vec<Group>,
    /// Every membership.
    pub memberships: Vec<Membership>,
    /// Every message.
    pub messages: Vec<Message>,
    /// Applied request ids still remembered.
    pub applied_requests: Vec<AppliedRequest>,
}

/// The chat database. `Send + Sync`; every method blocks (call it from `spawn_blocking` in
/// async code).
pub struct Store {
    path: PathBuf,
    options: StoreOptions,
    writer: Mutex<SqliteConnection>,
    idle_readers: Mutex<Vec<SqliteConnection>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn establish(path: &Path) -> Result<SqliteConnection, StoreError> {
    let url = path.to_str().ok_or_else(|| {
        diesel::ConnectionError::InvalidConnectionUrl(format!(
            "database path {} is not UTF-8",
            path.display()
        ))
    })?;
    Ok(SqliteConnection::establish(url)?)
}

/// Poisoning only says that another thread panicked while holding the lock. The connection
/// itself stays usable: diesel rolls back an interrupted transaction on its next use, and the
/// transaction boundaries are what keep the data consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Store {
    /// Opens (creating if needed) the database at `path` with default options and applies the
    /// pending migrations.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, StoreOptions::default())
    }

    /// Opens the database at `path` with `options` and applies the pending migrations.
    pub fn open_with(path: impl AsRef<Path>, options: StoreOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let mut writer = establish(&path)?;
        let synchronous = match options.durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        writer.batch_execute(&format!(
            "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; \
             PRAGMA foreign_keys = ON;",
            options.busy_timeout.as_millis()
        ))?;
        writer
            .run_pending_migrations(MIGRATIONS)
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        tracing::debug!(subsystem = "store", path = %path.display(), "database open");
        Ok(Self {
            path,
            options,
            writer: Mutex::new(writer),
            idle_readers: Mutex::new(Vec::new()),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open_reader(&self) -> Result<SqliteConnection, StoreError> {
        let mut conn = establish(&self.path)?;
        conn.batch_execute(&format!(
            "PRAGMA busy_timeout = {}; PRAGMA foreign_keys = ON; PRAGMA query_only = ON;",
            self.options.busy_timeout.as_millis()
        ))?;
        Ok(conn)
    }

    /// Runs `f` on a consistent view of the database (one read transaction) and returns its
    /// result with the epoch that view is at.
    pub fn read<T, E>(
        &self,
        f: impl FnOnce(&mut ReadView<'_>) -> Result<T, E>,
    ) -> Result<(T, Epoch), E>
    where
        E: From<StoreError>,
    {
        let pooled = lock(&self.idle_readers).pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => self.open_reader()?,
        };
        let result = conn.transaction::<_, ReadError<E>, _>(|conn| {
            let epoch = queries::current_epoch(conn).map_err(ReadError::Store)?;
            let value = f(&mut ReadView { conn }).map_err(ReadError::Caller)?;
            Ok((value, epoch))
        });
        let mut idle = lock(&self.idle_readers);
        if idle.len() < self.options.idle_readers {
            idle.push(conn);
        }
        drop(idle);
        result.map_err(|e| match e {
            ReadError::Caller(e) => e,
            ReadError::Store(e) => E::from(e),
        })
    }

    /// Runs `f` while holding the writer: no other write can happen between the checks `f`
    /// makes and the operations it commits.
    pub fn write<T, E>(&self, f: impl FnOnce(&mut WriteSession<'_>) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        let mut conn = lock(&self.writer);
        f(&mut WriteSession { conn: &mut conn })
    }

    /// Commits one operation at the next epoch (or returns the first result if its request id
    /// was applied before).
    pub fn execute(&self, op: &Operation) -> Result<Committed, StoreError> {
        self.write(|session| session.commit(op))
    }

    /// The number of writes applied.
    pub fn current_epoch(&self) -> Result<Epoch, StoreError> {
        Ok(self.read(|_| Ok::<_, StoreError>(()))?.1)
    }

    /// Replica side: applies the writer's operation for `epoch`. Idempotent: an epoch at or
    /// below the current one changes nothing; an epoch beyond the next one is a
    /// [`StoreError::Gap`].
    pub fn apply(&self, epoch: Epoch, op: &Operation) -> Result<Applied, StoreError> {
        let mut conn = lock(&self.writer);
        conn.immediate_transaction(|conn| {
            let current = queries::current_epoch(conn)?;
            if epoch <= current {
                return Ok(Applied::AlreadyApplied);
            }
            if epoch != current + 1 {
                return Err(StoreError::Gap {
                    current,
                    received: epoch,
                });
            }
            apply_at(conn, epoch, op).map(Applied::Committed)
        })
    }

    /// Up to `limit` logged operations after `after`, oldest first, for a replica at `after`.
    /// [`StoreError::LogTrimmed`] when the log no longer reaches back that far. A replica
    /// ahead of this database gets an empty list.
    pub fn operations_since(
        &self,
        after: Epoch,
        limit: u32,
    ) -> Result<Vec<(Epoch, Operation)>, StoreError> {
        let (rows, current) = self.read(|view| {
            let rows: Vec<(i64, String)> = replication_log::table
                .filter(replication_log::epoch.gt(epoch_to_sql(after)?))
                .order(replication_log::epoch.asc())
                .limit(i64::from(limit))
                .load(view.conn)?;
            Ok::<_, StoreError>(rows)
        })?;
        let operations = rows
            .into_iter()
            .map(|(epoch, text)| {
                let op = serde_json::from_str(&text)
                    .map_err(|e| StoreError::Corrupt(format!("log entry {epoch}: {e}")))?;
                Ok((epoch_from_sql(epoch)?, op))
            })
            .collect::<Result<Vec<(Epoch, Operation)>, StoreError>>()?;
        let continues = match operations.first() {
            Some((first, _)) => *first == after + 1,
            None => after >= current || limit == 0,
        };
        if !continues {
            return Err(StoreError::LogTrimmed { requested: after });
        }
        Ok(operations)
    }

    /// Forgets logged operations and remembered request ids at or below `keep_after`. Replicas
    /// behind that point must use a snapshot; retries of requests that old apply again.
    pub fn trim_log(&self, keep_after: Epoch) -> Result<(), StoreError> {
        let bound = epoch_to_sql(keep_after)?;
        let mut conn = lock(&self.writer);
        conn.immediate_transaction(|conn| {
            diesel::delete(replication_log::table.filter(replication_log::epoch.le(bound)))
                .execute(conn)?;
            diesel::delete(applied_requests::table.filter(applied_requests::epoch.le(bound)))
                .execute(conn)?;
            Ok(())
        })
    }

    /// The full contents at the current epoch.
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let (snapshot, _) = self.read(|view| read_snapshot(view.conn))?;
        Ok(snapshot)
    }

    /// Replaces the whole contents with `snapshot` (one transaction) and empties the
    /// replication log, which described the old contents.
    pub fn restore_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        let mut conn = lock(&self.writer);
        conn.immediate_transaction(|conn| write_snapshot(conn, snapshot))
    }
}

enum ReadError<E> {
    Store(StoreError),
    Caller(E),
}

impl<E> From<diesel::result::Error> for ReadError<E> {
    fn from(e: diesel::result::Error) -> Self {
        ReadError::Store(StoreError::Database(e))
    }
}

/// Read queries over one consistent view. Deleted users and groups are invisible unless a
/// method says otherwise.
pub struct ReadView<'a> {
    conn: &'a mut SqliteConnection,
}

impl ReadView<'_> {
    /// A live user.
    pub fn user(&mut self, uuid: Uuid) -> Result<Option<User>, StoreError> {
        queries::user(self.conn, uuid)
    }

    /// A user, deleted or not (old messages still name their authors).
    pub fn user_including_deleted(&mut self, uuid: Uuid) -> Result<Option<User>, StoreError> {
        queries::user_any(self.conn, uuid)
    }

    /// The live user called `username#tag`.
    pub fn user_by_name_tag(
        &mut self,
        username: &str,
        tag: &str,
    ) -> Result<Option<User>, StoreError> {
        queries::user_by_name_tag(self.conn, username, tag)
    }

    /// Live users with exactly this username, by tag, at most `limit`.
    pub fn users_by_name(&mut self, username: &str, limit: u32) -> Result<Vec<User>, StoreError> {
        queries::users_by_name(self.conn, username, limit)
    }

    /// The users with these uuids, deleted ones included, sorted by uuid.
    pub fn users_by_uuids(&mut self, uuids: &[Uuid]) -> Result<Vec<User>, StoreError> {
        queries::users_by_uuids(self.conn, uuids)
    }

    /// The live user `username#tag` with their password hash, for checking a login. The hash
    /// must not leave the service layer.
    pub fn credentials(
        &mut self,
        username: &str,
        tag: &str,
    ) -> Result<Option<(User, SecretHash)>, StoreError> {
        let Some(user) = queries::user_by_name_tag(self.conn, username, tag)? else {
            return Ok(None);
        };
        Ok(queries::secret(self.conn, user.uuid)?.map(|secret| (user, secret)))
    }

    /// A live group.
    pub fn group(&mut self, uuid: Uuid) -> Result<Option<Group>, StoreError> {
        queries::group(self.conn, uuid)
    }

    /// Live groups `user_uuid` belongs to, in joining order.
    pub fn groups_of_member(&mut self, user_uuid: Uuid) -> Result<Vec<Group>, StoreError> {
        queries::groups_of_member(self.conn, user_uuid)
    }

    /// Whether `user_uuid` is a member of `group_uuid`.
    pub fn is_member(&mut self, group_uuid: Uuid, user_uuid: Uuid) -> Result<bool, StoreError> {
        queries::is_member(self.conn, group_uuid, user_uuid)
    }

    /// Members of a group, in joining order.
    pub fn members(&mut self, group_uuid: Uuid) -> Result<Vec<User>, StoreError> {
        queries::members(self.conn, group_uuid)
    }

    /// A page of one chat, oldest first.
    pub fn messages(&mut self, chat_id: &str, page: Page) -> Result<Vec<Message>, StoreError> {
        queries::messages(self.conn, chat_id, page)
    }

    /// The first result of an applied request id, if remembered.
    pub fn applied(&mut self, request_id: Uuid) -> Result<Option<Committed>, StoreError> {
        queries::applied(self.conn, request_id)
    }
}

/// The writer, held for the duration of [`Store::write`].
pub struct WriteSession<'a> {
    conn: &'a mut SqliteConnection,
}

impl WriteSession<'_> {
    /// Reads through the writer connection: they see every committed write, and nothing can
    /// change before this session commits.
    pub fn view(&mut self) -> ReadView<'_> {
        ReadView { conn: self.conn }
    }

    /// Commits `op` at the next epoch in one transaction: the change, its epoch stamps, the new
    /// epoch, a log row and the request id. If the request id was applied before, returns that
    /// first result and changes nothing.
    pub fn commit(&mut self, op: &Operation) -> Result<Committed, StoreError> {
        self.conn.immediate_transaction(|conn| commit_new(conn, op))
    }

    /// Commits several operations in one transaction (one fsync), each at its own epoch.
    /// All or nothing: if one fails, none is applied.
    pub fn commit_batch(&mut self, ops: &[Operation]) -> Result<Vec<Committed>, StoreError> {
        self.conn
            .immediate_transaction(|conn| ops.iter().map(|op| commit_new(conn, op)).collect())
    }
}

fn commit_new(conn: &mut SqliteConnection, op: &Operation) -> Result<Committed, StoreError> {
    if let Some(first) = queries::applied(conn, op.request_id)? {
        return Ok(first);
    }
    let epoch = queries::current_epoch(conn)? + 1;
    apply_at(conn, epoch, op)
}

fn apply_at(
    conn: &mut SqliteConnection,
    epoch: Epoch,
    op: &Operation,
) -> Result<Committed, StoreError> {
    let written = apply_change(conn, epoch, op).map_err(constraint_as_conflict)?;
    let epoch_sql = epoch_to_sql(epoch)?;
    queries::set_epoch(conn, epoch)?;
    let logged = serde_json::to_string(op)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode operation: {e}")))?;
    diesel::insert_into(replication_log::table)
        .values((
            replication_log::epoch.eq(epoch_sql),
            replication_log::operation.eq(logged),
        ))
        .execute(conn)?;
    let outcome = serde_json::to_string(&written)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode outcome: {e}")))?;
    diesel::insert_into(applied_requests::table)
        .values((
            applied_requests::request_id.eq(op.request_id.to_string()),
            applied_requests::epoch.eq(epoch_sql),
            applied_requests::outcome.eq(outcome),
        ))
        .execute(conn)
        .map_err(|e| constraint_as_conflict(e.into()))?;
    Ok(Committed { epoch, written })
}

/// The explicit checks in `apply_change` catch the expected conflicts with a clear message;
/// this keeps a constraint that still fires a request-level error, not a database failure.
fn constraint_as_conflict(error: StoreError) -> StoreError {
    match error {
        StoreError::Database(diesel::result::Error::DatabaseError(
            kind @ (DatabaseErrorKind::UniqueViolation
            | DatabaseErrorKind::ForeignKeyViolation
            | DatabaseErrorKind::CheckViolation),
            info,
        )) => StoreError::Conflict(format!("{kind:?}: {}", info.message())),
        other => other,
    }
}

fn read_snapshot(conn: &mut SqliteConnection) -> Result<Snapshot, StoreError> {
    fn convert<R, T: TryFrom<R, Error = StoreError>>(rows: Vec<R>) -> Result<Vec<T>, StoreError> {
        rows.into_iter().map(T::try_from).collect()
    }
    let epoch = queries::current_epoch(conn)?;
    let users = convert(
        users::table
            .order(users::uuid)
            .select(UserRow::as_select())
            .load(conn)?,
    )?;
    let secrets = user_secrets::table
        .order(user_secrets::user_uuid)
        .select((user_secrets::user_uuid, user_secrets::bcrypt_hash))
        .load::<(String, String)>(conn)?
        .into_iter()
        .map(|(user, hash)| {
            Ok(UserSecret {
                user_uuid: uuid_from_sql(&user)?,
                hash: SecretHash::new(hash),
            })
        })
        .collect::<Result<_, StoreError>>()?;
    let groups = convert(
        chat_groups::table
            .order(chat_groups::uuid)
            .select(GroupRow::as_select())
            .load(conn)?,
    )?;
    let memberships = convert(
        group_members::table
            .order((group_members::group_uuid, group_members::user_uuid))
            .select(MembershipRow::as_select())
            .load(conn)?,
    )?;
    let messages = convert(
        messages::table
            .order(messages::uuid)
            .select(MessageRow::as_select())
            .load(conn)?,
    )?;
    let applied_requests = applied_requests::table
        .order(applied_requests::request_id)
        .select((
            applied_requests::request_id,
            applied_requests::epoch,
            applied_requests::outcome,
        ))
        .load::<(String, i64, String)>(conn)?
        .into_iter()
        .map(|(request_id, epoch, outcome)| {
            Ok(AppliedRequest {
                request_id: uuid_from_sql(&request_id)?,
                epoch: epoch_from_sql(epoch)?,
                outcome: serde_json::from_str(&outcome).map_err(|e| {
                    StoreError::Corrupt(format!("stored outcome of {request_id}: {e}"))
                })?,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(Snapshot {
        epoch,
        users,
        secrets,
        groups,
        memberships,
        messages,
        applied_requests,
    })
}

fn insert_chunked<R, T>(
    conn: &mut SqliteConnection,
    items: &[T],
    insert: impl Fn(&mut SqliteConnection, Vec<R>) -> QueryResult<usize>,
) -> Result<(), StoreError>
where
    R: for<'t> TryFrom<&'t T, Error = StoreError>,
{
    for chunk in items.chunks(RESTORE_CHUNK) {
        let rows = chunk
            .iter()
            .map(R::try_from)
            .collect::<Result<Vec<R>, StoreError>>()?;
        insert(conn, rows)?;
    }
    Ok(())
}

fn write_snapshot(conn: &mut SqliteConnection, snapshot: &Snapshot) -> Result<(), StoreError> {
    // Children before parents, so foreign keys hold at every step.
    diesel::delete(messages::table).execute(conn)?;
    diesel::delete(group_members::table).execute(conn)?;
    diesel::delete(chat_groups::table).execute(conn)?;
    diesel::delete(user_secrets::table).execute(conn)?;
    diesel::delete(users::table).execute(conn)?;
    diesel::delete(applied_requests::table).execute(conn)?;
    diesel::delete(replication_log::table).execute(conn)?;

    insert_chunked::<UserRow, _>(conn, &snapshot.users, |c, rows| {
        diesel::insert_into(users::table).values(rows).execute(c)
    })?;
    for secret in &snapshot.secrets {
        diesel::insert_into(user_secrets::table)
            .values((
                user_secrets::user_uuid.eq(secret.user_uuid.to_string()),
                user_secrets::bcrypt_hash.eq(secret.hash.expose()),
            ))
            .execute(conn)?;
    }
    insert_chunked::<GroupRow, _>(conn, &snapshot.groups, |c, rows| {
        diesel::insert_into(chat_groups::table)
            .values(rows)
            .execute(c)
    })?;
    insert_chunked::<MembershipRow, _>(conn, &snapshot.memberships, |c, rows| {
        diesel::insert_into(group_members::table)
            .values(rows)
            .execute(c)
    })?;
    insert_chunked::<MessageRow, _>(conn, &snapshot.messages, |c, rows| {
        diesel::insert_into(messages::table).values(rows).execute(c)
    })?;
    for applied in &snapshot.applied_requests {
        let outcome = serde_json::to_string(&applied.outcome)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode outcome: {e}")))?;
        diesel::insert_into(applied_requests::table)
            .values((
                applied_requests::request_id.eq(applied.request_id.to_string()),
                applied_requests::epoch.eq(epoch_to_sql(applied.epoch)?),
                applied_requests::outcome.eq(outcome),
            ))
            .execute(conn)?;
    }
    queries::set_epoch(conn, snapshot.epoch)?;
    Ok(())
}
