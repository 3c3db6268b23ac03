//! The store: one writer connection (with the log's position cached beside it) behind a
//! mutex, a small pool of read-only connections.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
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
    epoch_from_sql, epoch_to_sql, uuid_from_sql, ChatSummary, Epoch, Fingerprint, Group, GroupRow,
    Membership, MembershipRow, Message, MessageRow, Page, ReadPosition, Recipient, SecretHash,
    Term, User, UserRow,
};
use crate::operation::{apply_change, ChangeNotice, Committed, Entry, EntryId, Operation, Written};
use crate::queries;
use crate::schema::{
    applied_requests, chat_groups, chat_reads, group_members, messages, replication_log,
    system_state, user_secrets, users,
};

/// The schema, compiled into the binary and applied by [`Store::open`].
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");

/// Rows per INSERT when restoring an in-memory snapshot: well under SQLite's bound-parameter
/// limit.
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
    /// Epochs of applied log kept for followers catching up. Once the log holds twice this
    /// many, the older half is trimmed (only entries this node has applied); a follower
    /// further behind takes a snapshot.
    pub log_retention: u64,
    /// How long a request id is remembered for replays. The writer decides when ids are
    /// forgotten and says so in an entry, so every node forgets the same ones, independently
    /// of log trimming.
    pub request_retention: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Full,
            busy_timeout: Duration::from_secs(5),
            idle_readers: 4,
            log_retention: 100_000,
            request_retention: Duration::from_secs(24 * 3600),
        }
    }
}

/// A user's password hash, as carried in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSecret {
    /// The account.
    pub user_uuid: Uuid,
    /// Its bcrypt hash.
    pub hash: SecretHash,
}

/// A request id the database remembers, with what a replay must match and gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedRequest {
    /// Client-chosen id.
    pub request_id: Uuid,
    /// Epoch of the application.
    pub epoch: Epoch,
    /// What the request was.
    pub fingerprint: Fingerprint,
    /// The stored answer (JSON, small).
    pub answer: String,
}

/// A read-position row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredReadPosition {
    /// The position.
    pub position: ReadPosition,
    /// Epoch of the write that last moved it.
    pub epoch: Epoch,
}

/// The full contents of a database at one epoch (soft-deleted rows included, the replication
/// log excluded), every list sorted by primary key, so two snapshots compare equal exactly
/// when two databases hold the same data. Held in memory: for tests and comparisons;
/// replication streams files ([`Store::snapshot_reader`]).
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
    /// Read positions.
    pub read_positions: Vec<StoredReadPosition>,
}

/// A write request as the writer's batch sees it: an id and fingerprint for replays, and a
/// decision taken against the rows as they are inside the batch (earlier requests of the same
/// batch included).
pub trait WriteRequest {
    /// What a refusal is; store failures convert into it.
    type Error: From<StoreError>;
    /// The client's retry key.
    fn request_id(&self) -> Uuid;
    /// The request's kind, acting user and parameters, digested.
    fn fingerprint(&self) -> Fingerprint;
    /// Checks the rules and picks the change, or refuses.
    fn decide(&self, view: &mut ReadView<'_>) -> Result<crate::Change, Self::Error>;
}

/// An already-decided operation commits as itself (tests, tools, migrations of data).
impl WriteRequest for Operation {
    type Error = StoreError;
    fn request_id(&self) -> Uuid {
        self.request_id
    }
    fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }
    fn decide(&self, _view: &mut ReadView<'_>) -> Result<crate::Change, StoreError> {
        Ok(self.change.clone())
    }
}

/// What [`Store::commit_batch`] did.
#[derive(Debug)]
pub struct BatchOutcome<E> {
    /// One answer per request, in order: committed (or replayed), or refused. A refused
    /// request changed nothing; the others are durable.
    pub answers: Vec<Result<Committed, E>>,
    /// The log entry of the batch, to replicate (None when nothing was written).
    pub entry: Option<Entry>,
    /// One notice per new message, for input nodes to push.
    pub notices: Vec<ChangeNotice>,
}

/// What [`Store::append_entries`] left durable and applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    /// The last durable entry (fsynced): the position to report and the election key.
    pub durable: EntryId,
    /// The last epoch applied to the rows (what reads see).
    pub applied: Epoch,
}

/// The log's position, kept beside the writer connection so no write looks it up.
#[derive(Debug, Clone, Copy, Default)]
struct LogState {
    /// Last epoch applied to the rows.
    applied: Epoch,
    /// Last durable entry (or the base when the log is empty).
    last: EntryId,
    /// Last entry no longer in the log.
    base: EntryId,
    /// Key of the oldest entry in the log.
    first_key: Option<Epoch>,
}

/// When the writer lets request ids go: samples of (time, epoch) taken as batches commit.
#[derive(Debug, Default)]
struct ForgetClock {
    samples: VecDeque<(i64, Epoch)>,
    forgotten: Epoch,
}

struct Writer {
    conn: SqliteConnection,
    state: LogState,
    forget: ForgetClock,
    /// Logged entries not yet applied, as they were appended: the front follows the applied
    /// epoch. A follower applies an entry a transaction or two after appending it (once the
    /// writer says it is majority-durable); with it in hand it need not read its row back
    /// and parse it. Only a shortcut: an entry not found here is read from the log.
    held: HeldEntries,
}

impl Writer {
    /// The rows now stand at `base` (a snapshot was installed) and the log is empty.
    fn restart_at(&mut self, base: EntryId) {
        self.state = LogState {
            applied: base.epoch,
            last: base,
            base,
            first_key: None,
        };
        self.held.0.clear();
    }
}

/// Entries appended but not applied, oldest first, contiguous and ending at the log's tail
/// (or empty). Bounded: past [`HeldEntries::MAX`] it empties, and refills only once applying
/// has caught up with the tail.
#[derive(Debug, Default)]
struct HeldEntries(VecDeque<Entry>);

impl HeldEntries {
    const MAX: usize = 16_384;

    /// Keeps entries appended after `previous_last` (the tail before them), if the held run
    /// reached that tail.
    fn appended(&mut self, state: &LogState, previous_last: Epoch, entries: Vec<Entry>) {
        let reaches_tail = match self.0.back() {
            Some(back) => back.epoch == previous_last,
            None => state.applied >= previous_last,
        };
        if !reaches_tail || self.0.len() + entries.len() > Self::MAX {
            self.0.clear();
            return;
        }
        self.0.extend(entries);
        self.applied_through(state.applied);
    }

    fn applied_through(&mut self, applied: Epoch) {
        while self.0.front().is_some_and(|entry| entry.epoch <= applied) {
            self.0.pop_front();
        }
    }

    fn dropped_after(&mut self, keep_through: Epoch) {
        while self
            .0
            .back()
            .is_some_and(|entry| entry.epoch > keep_through)
        {
            self.0.pop_back();
        }
    }
}

/// The chat database. `Send + Sync`; every method blocks (call it from `spawn_blocking` in
/// async code, or own it from one thread as the group committer does).
pub struct Store {
    path: PathBuf,
    options: StoreOptions,
    writer: Mutex<Writer>,
    idle_readers: Mutex<Vec<SqliteConnection>>,
    /// SQL statements run on the writer connection (transaction control included).
    writer_statements: Arc<AtomicU64>,
    /// At or above the epoch of the last applied change to any session version (see
    /// [`Store::sessions_changed`]).
    sessions_changed: AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

pub(crate) fn establish(path: &Path) -> Result<SqliteConnection, StoreError> {
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

/// A logged entry's row.
type LogRow = (i64, i64, i64, String);

/// The entry's JSON keeps `forget_requests_through` with the ops: stored as one object.
/// Written from borrowed ops (`&[Operation]`: appending an entry copies nothing), read into
/// owned ones.
#[derive(Serialize, Deserialize)]
struct StoredOps<Ops> {
    ops: Ops,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    forget_requests_through: Option<Epoch>,
}

fn load_entry((epoch, term, first, body): LogRow) -> Result<Entry, StoreError> {
    let stored: StoredOps<Vec<Operation>> = serde_json::from_str(&body)
        .map_err(|e| StoreError::Corrupt(format!("log entry {epoch}: {e}")))?;
    let entry = Entry {
        term: epoch_from_sql(term)?,
        epoch: epoch_from_sql(epoch)?,
        ops: stored.ops,
        forget_requests_through: stored.forget_requests_through,
    };
    if entry.ops.is_empty() || entry.first_epoch() != epoch_from_sql(first)? {
        return Err(StoreError::Corrupt(format!(
            "log entry {epoch} is malformed"
        )));
    }
    Ok(entry)
}

fn insert_entry(conn: &mut SqliteConnection, entry: &Entry) -> Result<(), StoreError> {
    let body = serde_json::to_string(&StoredOps {
        ops: entry.ops.as_slice(),
        forget_requests_through: entry.forget_requests_through,
    })
    .map_err(|e| StoreError::Corrupt(format!("cannot encode an entry: {e}")))?;
    diesel::insert_into(replication_log::table)
        .values((
            replication_log::epoch.eq(epoch_to_sql(entry.epoch)?),
            replication_log::term.eq(epoch_to_sql(entry.term)?),
            replication_log::first_epoch.eq(epoch_to_sql(entry.first_epoch())?),
            replication_log::body.eq(body),
        ))
        .execute(conn)?;
    Ok(())
}

fn log_rows_after(
    conn: &mut SqliteConnection,
    after: Epoch,
    limit: i64,
) -> Result<Vec<LogRow>, StoreError> {
    Ok(replication_log::table
        .filter(replication_log::epoch.gt(epoch_to_sql(after)?))
        .order(replication_log::epoch.asc())
        .limit(limit)
        .select((
            replication_log::epoch,
            replication_log::term,
            replication_log::first_epoch,
            replication_log::body,
        ))
        .load(conn)?)
}

fn logged_term(conn: &mut SqliteConnection, epoch: Epoch) -> Result<Option<Term>, StoreError> {
    replication_log::table
        .find(epoch_to_sql(epoch)?)
        .select(replication_log::term)
        .first::<i64>(conn)
        .optional()?
        .map(epoch_from_sql)
        .transpose()
}

fn set_base(conn: &mut SqliteConnection, base: EntryId) -> Result<(), StoreError> {
    diesel::update(system_state::table.find(1))
        .set((
            system_state::log_base_epoch.eq(epoch_to_sql(base.epoch)?),
            system_state::log_base_term.eq(epoch_to_sql(base.term)?),
        ))
        .execute(conn)?;
    Ok(())
}

fn load_state(conn: &mut SqliteConnection) -> Result<LogState, StoreError> {
    let (applied, base_epoch, base_term): (i64, i64, i64) = system_state::table
        .find(1)
        .select((
            system_state::current_epoch,
            system_state::log_base_epoch,
            system_state::log_base_term,
        ))
        .first(conn)?;
    let base = EntryId {
        term: epoch_from_sql(base_term)?,
        epoch: epoch_from_sql(base_epoch)?,
    };
    let last: Option<(i64, i64)> = replication_log::table
        .order(replication_log::epoch.desc())
        .select((replication_log::epoch, replication_log::term))
        .first(conn)
        .optional()?;
    let first_key: Option<i64> = replication_log::table
        .order(replication_log::epoch.asc())
        .select(replication_log::epoch)
        .first(conn)
        .optional()?;
    let last = match last {
        Some((epoch, term)) => EntryId {
            term: epoch_from_sql(term)?,
            epoch: epoch_from_sql(epoch)?,
        },
        None => base,
    };
    Ok(LogState {
        applied: epoch_from_sql(applied)?,
        last,
        base,
        first_key: first_key.map(epoch_from_sql).transpose()?,
    })
}

/// Applies one entry's ops at their epochs (the rows, the remembered ids, the forgetting);
/// the caller moves `current_epoch`.
/// Returns the epoch of the entry's last change to a session version, if any.
fn apply_entry(conn: &mut SqliteConnection, entry: &Entry) -> Result<Option<Epoch>, StoreError> {
    let mut sessions_changed = None;
    for (epoch, op) in (entry.first_epoch()..).zip(&entry.ops) {
        if op.change == crate::Change::TermBarrier {
            continue;
        }
        let written = apply_change(conn, epoch, op)?;
        queries::remember(conn, epoch, op.request_id, op.fingerprint, &written)?;
        if op.change.changes_sessions() {
            sessions_changed = Some(epoch);
        }
    }
    if let Some(through) = entry.forget_requests_through {
        queries::forget_requests_through(conn, through)?;
    }
    Ok(sessions_changed)
}

/// Applies logged entries after `state.applied` up to `target` (whole entries only); returns
/// the epoch of the last change to a session version among them, if any. Entries in `held`
/// (appended earlier, in order) are applied as they are; any other is read from the log.
fn apply_logged<'e>(
    conn: &mut SqliteConnection,
    state: &mut LogState,
    target: Epoch,
    held: impl Iterator<Item = &'e Entry>,
) -> Result<Option<Epoch>, StoreError> {
    let target = target.min(state.last.epoch);
    let before = state.applied;
    let mut sessions_changed = None;
    let mut held = held.peekable();
    'apply: while state.applied < target {
        while held.next_if(|entry| entry.epoch <= state.applied).is_some() {}
        if let Some(entry) = held.next_if(|entry| entry.first_epoch() == state.applied + 1) {
            if entry.epoch > target {
                break;
            }
            sessions_changed = apply_entry(conn, entry)?.or(sessions_changed);
            state.applied = entry.epoch;
            continue;
        }
        let rows = log_rows_after(conn, state.applied, 64)?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            let entry = load_entry(row)?;
            if entry.epoch > target {
                break 'apply;
            }
            if entry.first_epoch() != state.applied + 1 {
                return Err(StoreError::Corrupt(format!(
                    "log entry {} does not follow applied epoch {}",
                    entry.epoch, state.applied
                )));
            }
            sessions_changed = apply_entry(conn, &entry)?.or(sessions_changed);
            state.applied = entry.epoch;
        }
    }
    if state.applied != before {
        queries::set_epoch(conn, state.applied)?;
    }
    Ok(sessions_changed)
}

/// Keeps the log bounded: once it holds more than twice the retention, drops the entries
/// older than `applied - retention`. Only applied entries go (the node needs nothing else to
/// continue), and the base remembers the last one's id for the election key.
fn trim_if_long(
    conn: &mut SqliteConnection,
    state: &mut LogState,
    retention: u64,
) -> Result<(), StoreError> {
    let Some(first) = state.first_key else {
        return Ok(());
    };
    let retention = retention.max(1);
    if state.applied.saturating_sub(first) <= retention.saturating_mul(2) {
        return Ok(());
    }
    trim_through(conn, state, state.applied - retention)
}

fn trim_through(
    conn: &mut SqliteConnection,
    state: &mut LogState,
    through: Epoch,
) -> Result<(), StoreError> {
    let through = through.min(state.applied);
    let newest_dropped: Option<(i64, i64)> = replication_log::table
        .filter(replication_log::epoch.le(epoch_to_sql(through)?))
        .order(replication_log::epoch.desc())
        .select((replication_log::epoch, replication_log::term))
        .first(conn)
        .optional()?;
    let Some((epoch, term)) = newest_dropped else {
        return Ok(());
    };
    diesel::delete(replication_log::table.filter(replication_log::epoch.le(epoch)))
        .execute(conn)?;
    let base = EntryId {
        term: epoch_from_sql(term)?,
        epoch: epoch_from_sql(epoch)?,
    };
    set_base(conn, base)?;
    state.base = base;
    state.first_key = replication_log::table
        .order(replication_log::epoch.asc())
        .select(replication_log::epoch)
        .first::<i64>(conn)
        .optional()?
        .map(epoch_from_sql)
        .transpose()?;
    if state.first_key.is_none() {
        state.last = base;
    }
    Ok(())
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

impl<E> From<StoreError> for ReadError<E> {
    fn from(e: StoreError) -> Self {
        ReadError::Store(e)
    }
}

/// One request's fate inside a batch.
enum Step {
    Applied(Operation, Written),
    Replayed(Committed),
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
        let mut conn = establish(&path)?;
        let synchronous = match options.durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        conn.batch_execute(&format!(
            "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; \
             PRAGMA foreign_keys = ON;",
            options.busy_timeout.as_millis()
        ))?;
        conn.run_pending_migrations(MIGRATIONS)
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        let state = load_state(&mut conn)?;
        let writer_statements = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&writer_statements);
        conn.set_instrumentation(move |event: diesel::connection::InstrumentationEvent<'_>| {
            if matches!(
                event,
                diesel::connection::InstrumentationEvent::StartQuery { .. }
            ) {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
        tracing::debug!(subsystem = "store", path = %path.display(), ?state, "database open");
        Ok(Self {
            path,
            options,
            writer: Mutex::new(Writer {
                conn,
                state,
                forget: ForgetClock::default(),
                held: HeldEntries::default(),
            }),
            idle_readers: Mutex::new(Vec::new()),
            writer_statements,
            // What the rows already hold is not looked into: any of it may have changed one.
            sessions_changed: AtomicU64::new(state.applied),
        })
    }

    /// How many SQL statements the writer connection has run (transaction control
    /// included): benchmarks divide it by the writes.
    pub fn writer_statements(&self) -> u64 {
        self.writer_statements.load(Ordering::Relaxed)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The options it was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    fn open_reader(&self) -> Result<SqliteConnection, StoreError> {
        let mut conn = establish(&self.path)?;
        conn.batch_execute(&format!(
            "PRAGMA busy_timeout = {}; PRAGMA foreign_keys = ON; PRAGMA query_only = ON;",
            self.options.busy_timeout.as_millis()
        ))?;
        Ok(conn)
    }

    pub(crate) fn open_plain(&self) -> Result<SqliteConnection, StoreError> {
        let mut conn = establish(&self.path)?;
        conn.batch_execute(&format!(
            "PRAGMA busy_timeout = {};",
            self.options.busy_timeout.as_millis()
        ))?;
        Ok(conn)
    }

    /// Runs `f` on a consistent view of the database (one read transaction) and returns its
    /// result with the epoch that view is at (the applied epoch).
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

    /// The last epoch applied to the rows (what reads see).
    pub fn current_epoch(&self) -> Result<Epoch, StoreError> {
        Ok(lock(&self.writer).state.applied)
    }

    /// An epoch at or above that of the last applied change to any session version (a logout
    /// or an account deleted; at open, the applied epoch, since the rows are not looked into);
    /// no I/O. It is raised before the change commits, so a read that sees the change and
    /// then asks gets at least its epoch: a session version read at an epoch at or above
    /// this value is still current.
    pub fn sessions_changed(&self) -> Epoch {
        self.sessions_changed.load(Ordering::Acquire)
    }

    pub(crate) fn raise_sessions_changed(&self, epoch: Option<Epoch>) {
        if let Some(epoch) = epoch {
            self.sessions_changed.fetch_max(epoch, Ordering::AcqRel);
        }
    }

    /// The last epoch applied to the rows; no I/O.
    pub fn applied_epoch(&self) -> Epoch {
        lock(&self.writer).state.applied
    }

    /// The election key of the durable state: the id `(term, epoch)` of the last fsynced
    /// entry (or of the snapshot / trimmed prefix when the log is empty); no I/O.
    pub fn election_key(&self) -> EntryId {
        lock(&self.writer).state.last
    }

    /// The id of the last entry no longer in the log (0 when nothing was trimmed).
    pub fn log_base(&self) -> EntryId {
        lock(&self.writer).state.base
    }

    /// Commits one already-decided operation in a batch of its own, in the log's current
    /// term. A replayed request id answers with the first result; another request reusing
    /// the id is [`StoreError::RequestIdReused`].
    pub fn execute(&self, op: &Operation) -> Result<Committed, StoreError> {
        let term = self.election_key().term;
        let mut outcome = self.commit_batch(term, op.at_ms, vec![op.clone()])?;
        outcome.answers.pop().unwrap_or_else(|| {
            Err(StoreError::Corrupt(
                "a batch of one gave no answer".to_owned(),
            ))
        })
    }

    /// The writer's group commit: decides each request in its own savepoint (a refusal rolls
    /// back that request only), all inside one transaction and one fsync, stamping `term` on
    /// the batch's log entry. Per write: one look-up of the request id, the request's own
    /// reads, its rows and one remembered-answer row; per batch: one log row and one epoch
    /// update. Logged entries this node holds but had not applied (it was a follower) are
    /// applied first: as writer, its log is the history.
    ///
    /// `Err` only when the batch as a whole failed (nothing of it is durable).
    pub fn commit_batch<R: WriteRequest>(
        &self,
        term: Term,
        at_ms: i64,
        requests: Vec<R>,
    ) -> Result<BatchOutcome<R::Error>, StoreError> {
        let mut guard = lock(&self.writer);
        let writer = &mut *guard;
        if term < writer.state.last.term {
            return Err(StoreError::StaleTerm {
                ours: writer.state.last.term,
                given: term,
            });
        }
        let mut state = writer.state;
        let retention_ms =
            i64::try_from(self.options.request_retention.as_millis()).unwrap_or(i64::MAX);
        let forget_through = writer.forget.plan(at_ms, state.applied, retention_ms);
        let log_retention = self.options.log_retention;
        let held = &writer.held.0;
        let outcome = writer.conn.immediate_transaction(|conn| {
            let durable = state.last.epoch;
            let mut sessions_changed = apply_logged(conn, &mut state, durable, held.iter())?;
            let mut epoch = state.applied;
            let mut ops = Vec::new();
            let mut answers = Vec::with_capacity(requests.len());
            for request in requests {
                let next = epoch + 1;
                let step = conn.transaction::<Step, ReadError<R::Error>, _>(|conn| {
                    let (request_id, fingerprint) = (request.request_id(), request.fingerprint());
                    if let Some(first) = queries::remembered(conn, request_id)? {
                        if first.fingerprint != fingerprint {
                            return Err(ReadError::Store(StoreError::RequestIdReused(request_id)));
                        }
                        return Ok(Step::Replayed(first.committed(conn)?));
                    }
                    let change = request
                        .decide(&mut ReadView { conn })
                        .map_err(ReadError::Caller)?;
                    let op = Operation {
                        request_id,
                        at_ms,
                        fingerprint,
                        change,
                    };
                    let written = apply_change(conn, next, &op)?;
                    queries::remember(conn, next, request_id, fingerprint, &written)?;
                    Ok(Step::Applied(op, written))
                });
                answers.push(match step {
                    Ok(Step::Applied(op, written)) => {
                        epoch = next;
                        if op.change.changes_sessions() {
                            sessions_changed = Some(epoch);
                        }
                        ops.push(op);
                        Ok(Committed {
                            epoch,
                            written,
                            replayed: false,
                        })
                    }
                    Ok(Step::Replayed(first)) => Ok(first),
                    Err(ReadError::Caller(e)) => Err(e),
                    Err(ReadError::Store(e)) => Err(R::Error::from(constraint_as_conflict(e))),
                });
            }
            self.raise_sessions_changed(sessions_changed);
            if ops.is_empty() {
                return Ok((answers, None, Vec::new()));
            }
            let entry = Entry {
                term,
                epoch,
                ops,
                forget_requests_through: forget_through,
            };
            insert_entry(conn, &entry)?;
            if let Some(through) = forget_through {
                queries::forget_requests_through(conn, through)?;
            }
            queries::set_epoch(conn, epoch)?;
            let notices = notices(conn, &entry)?;
            state.applied = epoch;
            state.last = entry.id();
            state.first_key.get_or_insert(entry.epoch);
            trim_if_long(conn, &mut state, log_retention)?;
            Ok::<_, StoreError>((answers, Some(entry), notices))
        });
        let (answers, entry, notices) = outcome?;
        writer.state = state;
        // As writer it has applied its whole log.
        writer.held.0.clear();
        if let Some(through) = entry.as_ref().and_then(|e| e.forget_requests_through) {
            writer.forget.forgotten = through;
        }
        Ok(BatchOutcome {
            answers,
            entry,
            notices,
        })
    }

    /// Follower side: appends the writer's entries (in order; entries it already holds are
    /// skipped), then applies the log up to `commit` (the majority-acknowledged epoch the
    /// writer announced; whole entries only), all in one transaction, fsynced before it
    /// returns, so the returned position may be reported as durable.
    ///
    /// Errors change nothing: [`StoreError::Gap`] (ask for the entries after the log's end),
    /// [`StoreError::Diverged`] (drop the stale suffix with [`Store::truncate_after`], or
    /// take a snapshot), [`StoreError::StaleTerm`], [`StoreError::NotABoundary`].
    pub fn append_entries(
        &self,
        entries: &[Entry],
        commit: Epoch,
    ) -> Result<AppendOutcome, StoreError> {
        let mut guard = lock(&self.writer);
        let writer = &mut *guard;
        let mut state = writer.state;
        let previous_last = state.last.epoch;
        let log_retention = self.options.log_retention;
        let held = &writer.held.0;
        let mut appended: Vec<&Entry> = Vec::new();
        writer.conn.immediate_transaction(|conn| {
            for entry in entries {
                if entry.ops.is_empty() || entry.epoch < entry.ops.len() as Epoch {
                    return Err(StoreError::Corrupt(format!(
                        "entry {} has no ops or starts before epoch 1",
                        entry.epoch
                    )));
                }
                let first = entry.first_epoch();
                if entry.epoch <= state.base.epoch {
                    continue;
                }
                if first <= state.base.epoch {
                    return Err(StoreError::NotABoundary(state.base.epoch));
                }
                if first <= state.last.epoch {
                    match logged_term(conn, entry.epoch)? {
                        Some(term) if term == entry.term => continue,
                        _ => return Err(divergence(conn, entry)?),
                    }
                }
                if first != state.last.epoch + 1 {
                    return Err(StoreError::Gap {
                        current: state.last.epoch,
                        received: first,
                    });
                }
                if entry.term < state.last.term {
                    return Err(StoreError::StaleTerm {
                        ours: state.last.term,
                        given: entry.term,
                    });
                }
                insert_entry(conn, entry)?;
                appended.push(entry);
                state.last = entry.id();
                state.first_key.get_or_insert(entry.epoch);
            }
            let in_hand = held.iter().chain(appended.iter().copied());
            let sessions_changed = apply_logged(conn, &mut state, commit, in_hand)?;
            self.raise_sessions_changed(sessions_changed);
            trim_if_long(conn, &mut state, log_retention)?;
            Ok(())
        })?;
        let appended = appended.into_iter().cloned().collect();
        writer.held.appended(&state, previous_last, appended);
        writer.state = state;
        Ok(AppendOutcome {
            durable: state.last,
            applied: state.applied,
        })
    }

    /// Applies the durable log up to `commit` (whole entries); returns the applied epoch.
    pub fn apply_committed(&self, commit: Epoch) -> Result<Epoch, StoreError> {
        Ok(self.append_entries(&[], commit)?.applied)
    }

    /// Up to `limit` entries after epoch `after`, oldest first, for a follower whose log ends
    /// there (entries this node holds but has not applied included). Empty when `after` is
    /// at or past the end. [`StoreError::LogTrimmed`] when they are gone (take a snapshot);
    /// [`StoreError::NotABoundary`] when `after` falls inside an entry (the follower's log
    /// diverged).
    pub fn entries_after(&self, after: Epoch, limit: u32) -> Result<Vec<Entry>, StoreError> {
        let base = self.log_base();
        if after < base.epoch {
            return Err(StoreError::LogTrimmed { requested: after });
        }
        let mut conn = self.open_pooled()?;
        let rows = log_rows_after(&mut conn, after, i64::from(limit));
        self.return_pooled(conn);
        let entries = rows?
            .into_iter()
            .map(load_entry)
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(first) = entries.first() {
            match first.first_epoch().cmp(&(after + 1)) {
                std::cmp::Ordering::Equal => {}
                std::cmp::Ordering::Greater => {
                    return Err(StoreError::LogTrimmed { requested: after })
                }
                std::cmp::Ordering::Less => return Err(StoreError::NotABoundary(after)),
            }
        }
        Ok(entries)
    }

    /// The term of the entry whose last epoch is `epoch` (the base's term for the base, 0 for
    /// epoch 0); None when no entry of this log ends there.
    pub fn term_at(&self, epoch: Epoch) -> Result<Option<Term>, StoreError> {
        let mut guard = lock(&self.writer);
        let writer = &mut *guard;
        if epoch == writer.state.base.epoch {
            return Ok(Some(writer.state.base.term));
        }
        if epoch == 0 {
            return Ok(Some(0));
        }
        logged_term(&mut writer.conn, epoch)
    }

    /// Given the other log's entry ids (ascending), the last epoch up to which both logs
    /// agree: every id of theirs at or below it that falls in our log has our term, and the
    /// first that does not marks the divergence. The first entry to drop is the one after.
    pub fn last_common_epoch(&self, theirs: &[EntryId]) -> Result<Epoch, StoreError> {
        let mut common = self.log_base().epoch;
        for id in theirs {
            if id.epoch <= common {
                continue;
            }
            match self.term_at(id.epoch)? {
                Some(term) if term == id.term => common = id.epoch,
                _ => break,
            }
        }
        Ok(common.min(self.election_key().epoch))
    }

    /// Drops the log's entries after `keep_through` (a suffix written by a deposed writer),
    /// fsynced. Refuses, dropping nothing, below `committed_floor`
    /// ([`StoreError::BelowCommitted`]), below the applied epoch (rows cannot be rolled
    /// back: [`StoreError::SnapshotNeeded`]) and between entry boundaries
    /// ([`StoreError::NotABoundary`]). Returns the new last entry.
    pub fn truncate_after(
        &self,
        keep_through: Epoch,
        committed_floor: Epoch,
    ) -> Result<EntryId, StoreError> {
        let mut guard = lock(&self.writer);
        let writer = &mut *guard;
        if keep_through < committed_floor {
            return Err(StoreError::BelowCommitted {
                floor: committed_floor,
                requested: keep_through,
            });
        }
        if keep_through >= writer.state.last.epoch {
            return Ok(writer.state.last);
        }
        if keep_through < writer.state.applied {
            return Err(StoreError::SnapshotNeeded {
                applied: writer.state.applied,
                requested: keep_through,
            });
        }
        let term = if keep_through == writer.state.base.epoch {
            writer.state.base.term
        } else {
            logged_term(&mut writer.conn, keep_through)?
                .ok_or(StoreError::NotABoundary(keep_through))?
        };
        let bound = epoch_to_sql(keep_through)?;
        writer.conn.immediate_transaction(|conn| {
            diesel::delete(replication_log::table.filter(replication_log::epoch.gt(bound)))
                .execute(conn)?;
            Ok::<_, StoreError>(())
        })?;
        writer.state.last = EntryId {
            term,
            epoch: keep_through,
        };
        writer.held.dropped_after(keep_through);
        if keep_through == writer.state.base.epoch {
            writer.state.first_key = None;
        }
        tracing::warn!(
            subsystem = "store",
            keep_through,
            "dropped a stale log suffix"
        );
        Ok(writer.state.last)
    }

    /// Forgets applied log entries at or below `keep_after` (entries not yet applied stay).
    /// Followers behind that point take a snapshot. Remembered request ids are not touched:
    /// they live as long as [`StoreOptions::request_retention`] says, whatever the log keeps.
    pub fn trim_log(&self, keep_after: Epoch) -> Result<(), StoreError> {
        let mut guard = lock(&self.writer);
        let writer = &mut *guard;
        let mut state = writer.state;
        writer
            .conn
            .immediate_transaction(|conn| trim_through(conn, &mut state, keep_after))?;
        writer.state = state;
        Ok(())
    }

    /// The full contents at the applied epoch, in memory (tests and comparisons).
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let (snapshot, _) = self.read(|view| read_snapshot(view.conn))?;
        Ok(snapshot)
    }

    /// Replaces the whole contents with an in-memory `snapshot` (one transaction) and empties
    /// the log; the snapshot's epoch becomes the log's base, in `term`.
    pub fn restore_snapshot(&self, snapshot: &Snapshot, term: Term) -> Result<(), StoreError> {
        let mut guard = lock(&self.writer);
        let writer = &mut *guard;
        let base = EntryId {
            term,
            epoch: snapshot.epoch,
        };
        writer.conn.immediate_transaction(|conn| {
            write_snapshot(conn, snapshot)?;
            set_base(conn, base)
        })?;
        writer.restart_at(base);
        Ok(())
    }

    fn open_pooled(&self) -> Result<SqliteConnection, StoreError> {
        let pooled = lock(&self.idle_readers).pop();
        match pooled {
            Some(conn) => Ok(conn),
            None => self.open_reader(),
        }
    }

    fn return_pooled(&self, conn: SqliteConnection) {
        let mut idle = lock(&self.idle_readers);
        if idle.len() < self.options.idle_readers {
            idle.push(conn);
        }
    }

    /// Runs `f` on the writer connection with the log state (snapshot restore).
    pub(crate) fn with_writer<T>(
        &self,
        f: impl FnOnce(&mut SqliteConnection) -> Result<(T, EntryId), StoreError>,
    ) -> Result<T, StoreError> {
        let mut guard = lock(&self.writer);
        let writer = &mut *guard;
        let (value, base) = f(&mut writer.conn)?;
        writer.restart_at(base);
        writer.forget = ForgetClock::default();
        Ok(value)
    }
}

impl ForgetClock {
    /// Samples the epoch now and then, and says which remembered ids this batch forgets:
    /// those applied before the newest sample older than the retention.
    fn plan(&mut self, at_ms: i64, epoch: Epoch, retention_ms: i64) -> Option<Epoch> {
        let interval = (retention_ms / 1000).max(1);
        if self
            .samples
            .back()
            .is_none_or(|&(sampled, _)| at_ms.saturating_sub(sampled) >= interval)
        {
            self.samples.push_back((at_ms, epoch));
        }
        let cutoff = at_ms.saturating_sub(retention_ms);
        let mut through = None;
        while let Some(&(sampled, sampled_epoch)) = self.samples.front() {
            if sampled > cutoff {
                break;
            }
            through = Some(sampled_epoch);
            self.samples.pop_front();
        }
        through.filter(|&t| t > self.forgotten)
    }
}

/// The [`StoreError::Diverged`] for an entry that overlaps our log in another term: the
/// common prefix ends where our overlapping entry begins.
fn divergence(conn: &mut SqliteConnection, entry: &Entry) -> Result<StoreError, StoreError> {
    let ours: Option<(i64, i64, i64)> = replication_log::table
        .filter(replication_log::epoch.ge(epoch_to_sql(entry.first_epoch())?))
        .order(replication_log::epoch.asc())
        .select((
            replication_log::epoch,
            replication_log::term,
            replication_log::first_epoch,
        ))
        .first(conn)
        .optional()?;
    let (_, term, first) = ours.ok_or_else(|| {
        StoreError::Corrupt(format!("no entry overlaps epoch {}", entry.first_epoch()))
    })?;
    let first = epoch_from_sql(first)?;
    Ok(StoreError::Diverged {
        epoch: first,
        ours: epoch_from_sql(term)?,
        theirs: entry.term,
        keep_through: first - 1,
    })
}

/// The notices of a committed entry: each new message with its chat's audience now (both
/// users of a private chat; a group's members, looked up once per group per batch).
fn notices(conn: &mut SqliteConnection, entry: &Entry) -> Result<Vec<ChangeNotice>, StoreError> {
    let mut members: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    let mut notices = Vec::new();
    for (epoch, op) in (entry.first_epoch()..).zip(&entry.ops) {
        let Some(message) = op.message(epoch) else {
            continue;
        };
        let sender_uuid = message.sender_uuid;
        let audience = match message.recipient {
            Recipient::User(receiver) => {
                let mut audience = vec![sender_uuid, receiver];
                audience.sort_unstable();
                audience
            }
            Recipient::Group(group) => {
                let audience = match members.get(&group) {
                    Some(audience) => audience.clone(),
                    None => {
                        let mut audience = group_members::table
                            .filter(group_members::group_uuid.eq(group.to_string()))
                            .select(group_members::user_uuid)
                            .load::<String>(conn)?
                            .iter()
                            .map(|text| uuid_from_sql(text))
                            .collect::<Result<Vec<_>, _>>()?;
                        audience.sort_unstable();
                        members.insert(group, audience.clone());
                        audience
                    }
                };
                audience
            }
        };
        notices.push(ChangeNotice {
            chat_id: message.chat_id.clone(),
            epoch,
            message_uuid: message.uuid,
            audience,
            message: Some(message),
        });
    }
    Ok(notices)
}

/// Read queries over one consistent view. Deleted users and groups are invisible unless a
/// method says otherwise.
pub struct ReadView<'a> {
    pub(crate) conn: &'a mut SqliteConnection,
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

    /// The stored answer of a remembered request id, with the fingerprint it was bound to.
    pub fn applied(
        &mut self,
        request_id: Uuid,
    ) -> Result<Option<(Committed, Fingerprint)>, StoreError> {
        match queries::remembered(self.conn, request_id)? {
            Some(first) => {
                let fingerprint = first.fingerprint;
                Ok(Some((first.committed(self.conn)?, fingerprint)))
            }
            None => Ok(None),
        }
    }

    /// Live groups both users belong to, in `a`'s joining order.
    pub fn shared_groups(&mut self, a: Uuid, b: Uuid) -> Result<Vec<Group>, StoreError> {
        queries::shared_groups(self.conn, a, b)
    }

    /// The user's private chats and live groups, each with its newest message, its author
    /// and the count of messages from others after the user's read position; most recent
    /// activity first.
    pub fn chats(&mut self, user_uuid: Uuid) -> Result<Vec<ChatSummary>, StoreError> {
        queries::chats(self.conn, user_uuid)
    }

    /// The user's read position in a chat (0: never read).
    pub fn read_epoch(&mut self, user_uuid: Uuid, chat_id: &str) -> Result<Epoch, StoreError> {
        queries::read_epoch(self.conn, user_uuid, chat_id)
    }
}

/// The explicit checks in a request's decision catch the expected conflicts with a clear
/// message; this keeps a constraint that still fires a request-level error, not a database
/// failure.
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
        .order(applied_requests::epoch)
        .select((
            applied_requests::request_id,
            applied_requests::epoch,
            applied_requests::fingerprint,
            applied_requests::answer,
        ))
        .load::<(String, i64, String, String)>(conn)?
        .into_iter()
        .map(|(request_id, epoch, fingerprint, answer)| {
            Ok(AppliedRequest {
                request_id: uuid_from_sql(&request_id)?,
                epoch: epoch_from_sql(epoch)?,
                fingerprint: Fingerprint::from_hex(&fingerprint).ok_or_else(|| {
                    StoreError::Corrupt(format!("fingerprint of {request_id} is malformed"))
                })?,
                answer,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    let read_positions = chat_reads::table
        .order((chat_reads::user_uuid, chat_reads::chat_id))
        .select((
            chat_reads::user_uuid,
            chat_reads::chat_id,
            chat_reads::read_epoch,
            chat_reads::epoch,
        ))
        .load::<(String, String, i64, i64)>(conn)?
        .into_iter()
        .map(|(user, chat_id, read_epoch, epoch)| {
            Ok(StoredReadPosition {
                position: ReadPosition {
                    user_uuid: uuid_from_sql(&user)?,
                    chat_id,
                    read_epoch: epoch_from_sql(read_epoch)?,
                },
                epoch: epoch_from_sql(epoch)?,
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
        read_positions,
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
    diesel::delete(chat_reads::table).execute(conn)?;
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
        diesel::insert_into(applied_requests::table)
            .values((
                applied_requests::request_id.eq(applied.request_id.to_string()),
                applied_requests::epoch.eq(epoch_to_sql(applied.epoch)?),
                applied_requests::fingerprint.eq(applied.fingerprint.to_hex()),
                applied_requests::answer.eq(&applied.answer),
            ))
            .execute(conn)?;
    }
    for read in &snapshot.read_positions {
        diesel::insert_into(chat_reads::table)
            .values((
                chat_reads::user_uuid.eq(read.position.user_uuid.to_string()),
                chat_reads::chat_id.eq(&read.position.chat_id),
                chat_reads::read_epoch.eq(epoch_to_sql(read.position.read_epoch)?),
                chat_reads::epoch.eq(epoch_to_sql(read.epoch)?),
            ))
            .execute(conn)?;
    }
    queries::rebuild_private_chats(conn)?;
    queries::set_epoch(conn, snapshot.epoch)?;
    Ok(())
}
