//! Snapshots as files streamed in chunks: `VACUUM INTO` a temporary file beside the database
//! (a consistent copy taken by SQLite without holding the writer), then read in chunks; on the
//! receiving side, chunks go to a temporary file that is attached and copied into the live
//! database in one transaction. Neither side holds the database in memory.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use tempfile::{NamedTempFile, TempPath};

use crate::error::StoreError;
use crate::model::{epoch_from_sql, epoch_to_sql, Epoch};
use crate::operation::EntryId;
use crate::store::{establish, Store};

/// The tables a snapshot carries, parents before children (the order of inserts; deletes go
/// the other way). The log is not carried: the snapshot's id becomes the receiver's log base.
const TABLES: [&str; 7] = [
    "users",
    "user_secrets",
    "chat_groups",
    "group_members",
    "messages",
    "applied_requests",
    "chat_reads",
];

/// A snapshot being sent: a consistent copy of the database at [`SnapshotReader::id`], read
/// in chunks. The temporary file is deleted when the reader is dropped.
#[derive(Debug)]
pub struct SnapshotReader {
    id: EntryId,
    size: u64,
    file: File,
    _path: TempPath,
}

impl SnapshotReader {
    /// The (term, epoch) the snapshot holds the database at.
    pub fn id(&self) -> EntryId {
        self.id
    }

    /// Total bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The next chunk of at most `max` bytes; None at the end.
    pub fn next_chunk(&mut self, max: usize) -> Result<Option<Vec<u8>>, StoreError> {
        let mut chunk = vec![0u8; max.max(1)];
        let mut filled = 0;
        while filled < chunk.len() {
            let read = self.file.read(&mut chunk[filled..])?;
            if read == 0 {
                break;
            }
            filled += read;
        }
        if filled == 0 {
            return Ok(None);
        }
        chunk.truncate(filled);
        Ok(Some(chunk))
    }
}

impl Read for SnapshotReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.file.read(buf)
    }
}

/// A snapshot being received: chunks appended to a temporary file beside the database, then
/// [`Store::restore_from`].
#[derive(Debug)]
pub struct SnapshotWriter {
    file: NamedTempFile,
    written: u64,
}

impl SnapshotWriter {
    /// Appends the next chunk.
    pub fn write_chunk(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        self.file.write_all(chunk)?;
        self.written += chunk.len() as u64;
        Ok(())
    }

    /// Bytes received so far.
    pub fn written(&self) -> u64 {
        self.written
    }
}

impl Write for SnapshotWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// What a temporary snapshot file is for; its name says so, and which database it belongs to.
#[derive(Debug, Clone, Copy)]
enum Temp {
    Outgoing,
    Incoming,
}

impl Temp {
    const ALL: [Temp; 2] = [Temp::Outgoing, Temp::Incoming];

    /// `.chat.db.snapshot-out-` for `chat.db`: hidden, and named after its database, so that
    /// another database's files in the same directory are never taken for its own.
    fn prefix(self, db: &Path) -> String {
        let name = db.file_name().unwrap_or_default().to_string_lossy();
        let kind = match self {
            Temp::Outgoing => "out",
            Temp::Incoming => "in",
        };
        format!(".{name}.snapshot-{kind}-")
    }
}

const TEMP_SUFFIX: &str = ".db";

fn directory_of(db: &Path) -> &Path {
    let dir = db.parent().filter(|d| !d.as_os_str().is_empty());
    dir.unwrap_or_else(|| Path::new("."))
}

fn temp_beside(db: &Path, kind: Temp) -> Result<NamedTempFile, StoreError> {
    Ok(tempfile::Builder::new()
        .prefix(&kind.prefix(db))
        .suffix(TEMP_SUFFIX)
        .tempfile_in(directory_of(db))?)
}

fn path_text(path: &Path) -> Result<&str, StoreError> {
    path.to_str().ok_or_else(|| {
        StoreError::SnapshotIo(std::io::Error::other(format!(
            "path {} is not UTF-8",
            path.display()
        )))
    })
}

#[derive(QueryableByName)]
struct SnapshotState {
    #[diesel(sql_type = BigInt)]
    current_epoch: i64,
    #[diesel(sql_type = BigInt)]
    log_base_epoch: i64,
    #[diesel(sql_type = BigInt)]
    log_base_term: i64,
}

#[derive(QueryableByName)]
struct Version {
    #[diesel(sql_type = Text)]
    version: String,
}

fn schema_version(conn: &mut SqliteConnection, schema: &str) -> Result<String, StoreError> {
    let version: Option<Version> = diesel::sql_query(format!(
        "SELECT max(version) AS version FROM {schema}.__diesel_schema_migrations"
    ))
    .get_result(conn)
    .optional()?;
    Ok(version.map(|v| v.version).unwrap_or_default())
}

impl Store {
    /// Takes a snapshot of the applied state: `VACUUM INTO` a temporary file beside the
    /// database (consistent, and the writer keeps writing meanwhile), with the log replaced
    /// by its base `(term, applied epoch)`.
    pub fn snapshot_reader(&self) -> Result<SnapshotReader, StoreError> {
        let temp = temp_beside(self.path(), Temp::Outgoing)?;
        let path = temp.into_temp_path();
        // VACUUM INTO wants a missing or empty file; the temp file is empty.
        let mut conn = self.open_plain()?;
        diesel::sql_query("VACUUM INTO ?")
            .bind::<Text, _>(path_text(&path)?)
            .execute(&mut conn)?;
        drop(conn);
        let mut copy = establish(&path)?;
        copy.batch_execute("PRAGMA journal_mode = DELETE;")?;
        let state: SnapshotState = diesel::sql_query(
            "SELECT current_epoch, log_base_epoch, log_base_term FROM system_state WHERE id = 1",
        )
        .get_result(&mut copy)?;
        let epoch = epoch_from_sql(state.current_epoch)?;
        #[derive(QueryableByName)]
        struct Term {
            #[diesel(sql_type = BigInt)]
            term: i64,
        }
        let logged: Option<Term> =
            diesel::sql_query("SELECT term FROM replication_log WHERE epoch = ?")
                .bind::<BigInt, _>(state.current_epoch)
                .get_result(&mut copy)
                .optional()?;
        let term = match logged {
            Some(t) => epoch_from_sql(t.term)?,
            None if state.log_base_epoch == state.current_epoch => {
                epoch_from_sql(state.log_base_term)?
            }
            None => {
                return Err(StoreError::Corrupt(format!(
                    "no log entry ends at the applied epoch {epoch}"
                )))
            }
        };
        let id = EntryId { term, epoch };
        copy.batch_execute(&format!(
            "DELETE FROM replication_log; UPDATE system_state SET log_base_epoch = {}, \
             log_base_term = {} WHERE id = 1;",
            epoch_to_sql(epoch)?,
            epoch_to_sql(term)?
        ))?;
        // The log's pages are free now; rebuilding the copy leaves them out of what is sent.
        copy.batch_execute("VACUUM;")?;
        drop(copy);
        let file = File::open(&path)?;
        let size = file.metadata()?.len();
        Ok(SnapshotReader {
            id,
            size,
            file,
            _path: path,
        })
    }

    /// Deletes the temporary snapshot files of this database that a previous process left
    /// (they are deleted when dropped, so only a killed process leaves them; each can be as
    /// large as the database). Only for the database's one owner, at start: another store
    /// open on the same file could be sending or receiving through them. Returns how many.
    pub fn remove_stale_snapshot_files(&self) -> Result<usize, StoreError> {
        let prefixes = Temp::ALL.map(|kind| kind.prefix(self.path()));
        let mut removed = 0;
        for entry in std::fs::read_dir(directory_of(self.path()))? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(TEMP_SUFFIX)
                && prefixes
                    .iter()
                    .any(|prefix| name.starts_with(prefix.as_str()))
                && entry.file_type()?.is_file()
            {
                std::fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Starts receiving a snapshot into a temporary file beside the database.
    pub fn snapshot_writer(&self) -> Result<SnapshotWriter, StoreError> {
        Ok(SnapshotWriter {
            file: temp_beside(self.path(), Temp::Incoming)?,
            written: 0,
        })
    }

    /// Replaces this database's contents with the received snapshot in one transaction
    /// (fsynced): every table copied from it, the log emptied, its id the new log base.
    /// Checks the file first (SQLite's `quick_check`, the same schema version); a bad file
    /// changes nothing. Returns the snapshot's id: the new election key and applied epoch.
    pub fn restore_from(&self, mut received: SnapshotWriter) -> Result<EntryId, StoreError> {
        received.file.flush()?;
        received.file.as_file().sync_all()?;
        let path = received.file.into_temp_path();
        let path_str = path_text(&path)?.to_owned();
        self.with_writer(|conn| {
            diesel::sql_query("ATTACH DATABASE ? AS snap")
                .bind::<Text, _>(&path_str)
                .execute(conn)?;
            // A read of the restored rows must not find a lower mark than the changes they
            // hold: the mark goes up before the copy commits.
            let result = copy_attached(conn, |epoch| self.raise_sessions_changed(Some(epoch)));
            let detached = conn.batch_execute("DETACH DATABASE snap");
            let id = result?;
            detached?;
            Ok(((), id))
        })?;
        let id = self.election_key();
        tracing::info!(subsystem = "store", ?id, "snapshot restored");
        Ok(id)
    }
}

fn copy_attached(
    conn: &mut SqliteConnection,
    before_commit: impl FnOnce(Epoch),
) -> Result<EntryId, StoreError> {
    #[derive(QueryableByName)]
    struct Check {
        #[diesel(sql_type = Text)]
        quick_check: String,
    }
    let check: Check = diesel::sql_query("PRAGMA snap.quick_check").get_result(conn)?;
    if check.quick_check != "ok" {
        return Err(StoreError::Corrupt(format!(
            "received snapshot fails its check: {}",
            check.quick_check
        )));
    }
    if schema_version(conn, "snap")? != schema_version(conn, "main")? {
        return Err(StoreError::Corrupt(
            "received snapshot has another schema version".to_owned(),
        ));
    }
    let state: SnapshotState = diesel::sql_query(
        "SELECT current_epoch, log_base_epoch, log_base_term FROM snap.system_state WHERE id = 1",
    )
    .get_result(conn)?;
    if state.current_epoch != state.log_base_epoch {
        return Err(StoreError::Corrupt(
            "received snapshot's base is not its epoch".to_owned(),
        ));
    }
    let id = EntryId {
        term: epoch_from_sql(state.log_base_term)?,
        epoch: epoch_from_sql(state.current_epoch)?,
    };
    before_commit(id.epoch);
    conn.immediate_transaction(|conn| {
        for table in TABLES.iter().rev() {
            conn.batch_execute(&format!("DELETE FROM main.{table};"))?;
        }
        conn.batch_execute("DELETE FROM main.replication_log;")?;
        for table in TABLES {
            conn.batch_execute(&format!(
                "INSERT INTO main.{table} SELECT * FROM snap.{table};"
            ))?;
        }
        crate::queries::rebuild_private_chats(conn)?;
        conn.batch_execute(&format!(
            "UPDATE main.system_state SET current_epoch = {epoch}, log_base_epoch = {epoch}, \
             log_base_term = {term} WHERE id = 1;",
            epoch = epoch_to_sql(id.epoch)?,
            term = epoch_to_sql(id.term)?,
        ))?;
        Ok::<_, StoreError>(())
    })?;
    Ok(id)
}
