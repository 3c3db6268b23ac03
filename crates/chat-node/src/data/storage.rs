//! The store side of the data plane: one worker thread applies the plane's log actions in the
//! order they were polled, the writer's group commit executes writes, and reads run on
//! tokio's blocking pool. Everything reports back to the driver as a [`StoreReport`].

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::Duration;

use anyhow::Context;
use chat_data::{
    Entry as DataEntry, Epoch, LocalLog, Position, RequestId, SnapshotChunk, Term, TermRun,
};
use chat_service::{
    CommitterConfig, GroupCommitter, LocalService, Reply, Request, ServiceConfig, ServiceError,
    WriterLease,
};
use chat_store::{
    ChangeNotice, Entry as StoreEntry, SnapshotReader, SnapshotWriter, Store, StoreError,
};
use tokio::sync::{mpsc, watch};

use super::entries;

/// Bytes per snapshot chunk: well under the data plane's frame limit, big enough that a
/// database of a few hundred megabytes streams in a few thousand frames.
const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;
/// Jobs the worker takes from its queue at once; a run of appends among them shares one
/// transaction and one fsync.
const MAX_JOBS_PER_TURN: usize = 1024;
/// Entries read per page when the plane's cache is rebuilt from the log.
const START_PAGE: u32 = 10_000;

/// What the driver asks of the store worker, in the data plane's order.
#[derive(Debug)]
pub(crate) enum StoreJob {
    Append(Vec<DataEntry>),
    DropSuffixAfter(Epoch),
    CommitAdvanced(Epoch),
    ReadSnapshotChunk {
        peer: u64,
        snapshot_id: u64,
        offset: u64,
    },
    InstallSnapshotChunk(SnapshotChunk),
    Write {
        id: RequestId,
        term: Term,
        request: Request,
        min_epoch: Epoch,
    },
    /// Back in step with the store's own log, whatever the plane held: for a node that became
    /// the root while out of step (a root has no parent to take a snapshot from). Reported
    /// with [`StoreReport::Resynced`].
    Resync,
}

/// What the store did, for the driver.
#[derive(Debug)]
pub(crate) enum StoreReport {
    /// The log is durable up to here (after an append or a suffix drop).
    Durable(Position),
    /// The writer committed a batch (before any of its answers is reported).
    Committed {
        entry: StoreEntry,
        notices: Vec<ChangeNotice>,
    },
    /// A write's answer from the group commit.
    WriteDone {
        id: RequestId,
        result: Result<Reply, ServiceError>,
    },
    /// A local read's answer.
    ReadDone {
        id: RequestId,
        epoch: Epoch,
        not_found: bool,
        payload: Vec<u8>,
    },
    SnapshotChunkRead {
        peer: u64,
        chunk: SnapshotChunk,
    },
    SnapshotInstalled(Position),
    /// A suffix could not be dropped (it was applied here): take a snapshot.
    NeedSnapshot,
    /// The answer to [`StoreJob::Resync`]: the store's log, read as the worker came back in
    /// step with it (the plane starts again from it, as after a restart); None when the
    /// worker was in step already (a snapshot came first) or could not read the log (it stays
    /// out of step; the driver asks again later).
    Resynced(Option<LocalLog>),
}

/// The store and what serves from it; cheap to clone.
#[derive(Clone)]
pub(crate) struct Storage {
    pub(crate) store: Arc<Store>,
    /// Reads only (writes go through the worker and the committer).
    pub(crate) reads: LocalService,
    /// The epoch the rows reflect, for reads that wait for a client's epoch.
    pub(crate) applied: watch::Receiver<Epoch>,
    /// See [`Worker::out_of_step`]: while set, reads are passed up.
    out_of_step: Arc<AtomicBool>,
    /// The writer lease the group commit checks before each batch; the driver keeps it.
    pub(crate) lease: WriterLease,
    jobs: std_mpsc::Sender<StoreJob>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").finish_non_exhaustive()
    }
}

impl Storage {
    /// Starts the worker thread and the group committer over `store`.
    pub(crate) fn start(
        store: Arc<Store>,
        config: ServiceConfig,
        committer: CommitterConfig,
        reports: mpsc::UnboundedSender<StoreReport>,
    ) -> anyhow::Result<Self> {
        // This node owns its state directory: what a killed predecessor left is nobody's.
        match store.remove_stale_snapshot_files() {
            Ok(0) => {}
            Ok(removed) => {
                tracing::info!(target: "storage", subsystem = "storage", removed, "removed snapshot files a previous run left");
            }
            Err(error) => {
                tracing::warn!(target: "storage", subsystem = "storage", %error, "cannot look for snapshot files a previous run left");
            }
        }
        let (applied_tx, applied) = watch::channel(store.applied_epoch());
        let (batches_tx, mut batches) = mpsc::channel::<chat_service::CommittedBatch>(64);
        let lease = WriterLease::default();
        let group = GroupCommitter::start_leased(
            Arc::clone(&store),
            committer,
            Some(batches_tx),
            lease.clone(),
        )
        .map_err(|e| anyhow::anyhow!("cannot start the group commit: {e}"))?;
        let reads = LocalService::new(
            Arc::clone(&store),
            ServiceConfig {
                accepts_writes: false,
                ..config
            },
        )
        .map_err(|e| anyhow::anyhow!("cannot start the local service: {e}"))?;
        {
            let reports = reports.clone();
            let applied_tx = applied_tx.clone();
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                while let Some(batch) = batches.recv().await {
                    applied_tx.send_replace(store.applied_epoch());
                    let _ = reports.send(StoreReport::Committed {
                        entry: batch.entry,
                        notices: batch.notices,
                    });
                }
            });
        }
        let (jobs, queue) = std_mpsc::channel();
        let out_of_step = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            store: Arc::clone(&store),
            group,
            runtime: tokio::runtime::Handle::current(),
            reports,
            applied: applied_tx,
            commit: 0,
            out_of_step: Arc::clone(&out_of_step),
            readers: HashMap::new(),
            next_snapshot: 0,
            incoming: None,
        };
        std::thread::Builder::new()
            .name("store-worker".to_owned())
            .spawn(move || worker.run(queue))?;
        Ok(Storage {
            store,
            reads,
            applied,
            out_of_step,
            lease,
            jobs,
        })
    }

    /// See [`Worker::out_of_step`].
    pub(crate) fn is_out_of_step(&self) -> bool {
        self.out_of_step.load(Ordering::Acquire)
    }

    /// Queues a job; the worker runs them one at a time, in order.
    pub(crate) fn submit(&self, job: StoreJob) {
        if self.jobs.send(job).is_err() {
            tracing::error!(target: "storage", subsystem = "storage", "the store worker has stopped");
        }
    }

    /// Runs a read once the rows reflect `min_epoch` (waiting at most `wait`), and reports.
    pub(crate) async fn read(
        &self,
        id: RequestId,
        payload: Vec<u8>,
        min_epoch: Epoch,
        wait: Duration,
    ) -> StoreReport {
        let result = match chat_service::decode::<Request>(&payload) {
            Ok(request) => {
                let mut applied = self.applied.clone();
                // The data plane runs a read once the log holds the epoch; the rows follow
                // once it is committed, a moment later.
                let _ = tokio::time::timeout(wait, applied.wait_for(|e| *e >= min_epoch)).await;
                if self.out_of_step.load(Ordering::Acquire) {
                    // The rows may hold writes no majority has: the read goes up.
                    Err(ServiceError::ReplicaBehind {
                        have: 0,
                        want: min_epoch.max(1),
                    })
                } else {
                    self.reads.handle(request, min_epoch).await
                }
            }
            Err(error) => Err(error),
        };
        let epoch = match &result {
            Ok(reply) => reply.epoch,
            Err(_) => self.store.applied_epoch(),
        };
        let not_found = matches!(result, Err(ServiceError::NotFound(_)));
        StoreReport::ReadDone {
            id,
            epoch,
            not_found,
            payload: encode_result(&result),
        }
    }
}

/// The store's log as the plane's [`LocalLog`]: its base, term runs, tail, and every entry
/// still logged (the store keeps the log trimmed).
pub(crate) fn local_log(store: &Store) -> anyhow::Result<LocalLog> {
    let base = entries::position(store.log_base());
    let last = store.election_key();
    let mut recent = Vec::new();
    let mut runs: Vec<TermRun> = Vec::new();
    let mut after = base.epoch;
    loop {
        let page = store
            .entries_after(after, START_PAGE)
            .context("cannot read the log")?;
        let Some(tail) = page.last() else { break };
        after = tail.epoch;
        for batch in &page {
            for entry in entries::split_batch(batch) {
                if runs.last().map(|r| r.term) != Some(entry.position.term) {
                    runs.push(TermRun {
                        term: entry.position.term,
                        first_epoch: entry.position.epoch,
                    });
                }
                recent.push(entry);
            }
        }
    }
    Ok(LocalLog {
        base,
        runs,
        last: last.epoch.max(base.epoch),
        recent,
    })
}

/// An answer as it travels the data plane.
pub(crate) fn encode_result(result: &Result<Reply, ServiceError>) -> Vec<u8> {
    chat_service::encode(result).unwrap_or_default()
}

struct Worker {
    store: Arc<Store>,
    group: GroupCommitter,
    runtime: tokio::runtime::Handle,
    reports: mpsc::UnboundedSender<StoreReport>,
    applied: watch::Sender<Epoch>,
    /// The newest majority-durable epoch the plane announced: appends apply up to it.
    commit: Epoch,
    /// The store's log no longer matches the plane's, or its rows hold a suffix no majority
    /// committed (this node wrote it as a deposed writer, or its group commit ran a batch
    /// of the old term after the plane had moved on). Until a snapshot replaces both, the
    /// worker appends and applies nothing (a durable position reported from such a log
    /// would count toward a majority it does not hold), serves no snapshot (it would spread
    /// those rows) and the node answers no read. Set on a refused append or suffix drop,
    /// cleared by an installed snapshot.
    out_of_step: Arc<AtomicBool>,
    readers: HashMap<u64, (SnapshotReader, u64, Option<SnapshotChunk>)>,
    next_snapshot: u64,
    incoming: Option<SnapshotWriter>,
}

impl Worker {
    fn run(mut self, queue: std_mpsc::Receiver<StoreJob>) {
        let mut ready: VecDeque<StoreJob> = VecDeque::new();
        loop {
            if ready.is_empty() {
                match queue.recv() {
                    Ok(job) => ready.push_back(job),
                    Err(_) => return,
                }
            }
            // What queued up while the last job ran (an fsync takes milliseconds) is taken
            // together: a run of appends and commit advances becomes one transaction.
            while ready.len() < MAX_JOBS_PER_TURN {
                match queue.try_recv() {
                    Ok(job) => ready.push_back(job),
                    Err(_) => break,
                }
            }
            let run = ready
                .iter()
                .take_while(|job| matches!(job, StoreJob::Append(_) | StoreJob::CommitAdvanced(_)))
                .count();
            if run == 0 {
                if let Some(job) = ready.pop_front() {
                    self.handle(job);
                }
            } else {
                let jobs: Vec<StoreJob> = ready.drain(..run).collect();
                self.append_run(jobs);
            }
        }
    }

    /// Appends and commit advances polled one after the other, in one fsynced transaction:
    /// every entry in order, then the rows applied up to the newest commit. The outcome is
    /// the one the jobs would have left one by one (a commit advance only says what is
    /// majority-durable; applying stops at the log's end either way), reported once. If the
    /// transaction fails they run one by one, so a bad entry costs only what follows it.
    fn append_run(&mut self, jobs: Vec<StoreJob>) {
        if jobs.len() == 1 || self.is_out_of_step() {
            if let Some(job) = jobs.into_iter().next() {
                self.handle(job);
            }
            return;
        }
        let mut batch = Vec::new();
        let mut appends = false;
        let mut commit = self.commit;
        'jobs: for job in &jobs {
            match job {
                StoreJob::Append(data_entries) => {
                    appends = true;
                    for entry in data_entries {
                        match entries::to_store(entry) {
                            Ok(entry) => batch.push(entry),
                            // Handled (and logged) one by one below.
                            Err(_) => break 'jobs,
                        }
                    }
                }
                StoreJob::CommitAdvanced(epoch) => commit = commit.max(*epoch),
                _ => {}
            }
        }
        if !appends {
            self.advance_commit(commit);
            return;
        }
        match self.store.append_entries(&batch, commit) {
            Ok(outcome) => {
                self.commit = commit;
                self.applied.send_replace(outcome.applied);
                self.report(StoreReport::Durable(entries::position(outcome.durable)));
            }
            Err(_) => {
                for job in jobs {
                    self.handle(job);
                }
            }
        }
    }

    /// Applies the durable log up to a newly majority-durable epoch. The writer's rows are
    /// applied as it commits, so there it skips the (empty) transaction; the watch is
    /// checked rather than the store, whose lock the group commit holds through its fsync.
    fn advance_commit(&mut self, epoch: Epoch) {
        self.commit = self.commit.max(epoch);
        if self.commit <= *self.applied.borrow() {
            return;
        }
        match self.store.apply_committed(self.commit) {
            Ok(applied) => {
                self.applied.send_replace(applied);
            }
            Err(error) => {
                tracing::error!(target: "storage", subsystem = "storage", epoch, %error, "cannot apply committed entries");
            }
        }
    }

    fn report(&self, report: StoreReport) {
        let _ = self.reports.send(report);
    }

    /// What an out-of-step worker still does with `job` (see [`Worker::out_of_step`]):
    /// it keeps the commit and takes writes and snapshot chunks; the log actions and
    /// snapshot requests are dropped (the child asks again later).
    fn while_out_of_step(&mut self, job: StoreJob) -> Option<StoreJob> {
        if !self.is_out_of_step() {
            return Some(job);
        }
        match job {
            StoreJob::CommitAdvanced(epoch) => {
                self.commit = self.commit.max(epoch);
                None
            }
            StoreJob::Append(_)
            | StoreJob::DropSuffixAfter(_)
            | StoreJob::ReadSnapshotChunk { .. } => None,
            job @ (StoreJob::InstallSnapshotChunk(_)
            | StoreJob::Write { .. }
            | StoreJob::Resync) => Some(job),
        }
    }

    fn handle(&mut self, job: StoreJob) {
        let Some(job) = self.while_out_of_step(job) else {
            return;
        };
        match job {
            StoreJob::Append(data_entries) => self.append(&data_entries),
            StoreJob::DropSuffixAfter(epoch) => match self.store.truncate_after(epoch, 0) {
                Ok(last) => self.report(StoreReport::Durable(entries::position(last))),
                Err(StoreError::SnapshotNeeded { .. } | StoreError::NotABoundary(_)) => {
                    self.fall_out_of_step(
                        epoch,
                        "a stale suffix was applied here; taking a snapshot from the parent",
                    );
                }
                Err(error) => {
                    tracing::error!(target: "storage", subsystem = "storage", epoch, %error, "cannot drop a stale suffix");
                    self.fall_out_of_step(epoch, "taking a snapshot from the parent");
                }
            },
            StoreJob::CommitAdvanced(epoch) => self.advance_commit(epoch),
            StoreJob::ReadSnapshotChunk {
                peer,
                snapshot_id,
                offset,
            } => self.read_snapshot_chunk(peer, snapshot_id, offset),
            StoreJob::InstallSnapshotChunk(chunk) => self.install_snapshot_chunk(chunk),
            StoreJob::Resync => self.resync(),
            StoreJob::Write {
                id,
                term,
                request,
                min_epoch,
            } => {
                let group = self.group.clone();
                let reports = self.reports.clone();
                // Queued after every log action polled before it (this thread ran them), so
                // the write sees the log they left.
                self.runtime.spawn(async move {
                    let result = group.submit(term, request, min_epoch).await;
                    let _ = reports.send(StoreReport::WriteDone { id, result });
                });
            }
        }
    }

    fn append(&mut self, data_entries: &[DataEntry]) {
        let mut batch = Vec::with_capacity(data_entries.len());
        for entry in data_entries {
            match entries::to_store(entry) {
                Ok(entry) => batch.push(entry),
                Err(error) => {
                    // The writer made it; a bad one means a bug or a corrupted frame that
                    // decoded. Stop here: what follows cannot be appended past a hole.
                    tracing::error!(target: "storage", subsystem = "storage", %error, "refused a log entry");
                    break;
                }
            }
        }
        match self.store.append_entries(&batch, self.commit) {
            Ok(outcome) => {
                self.applied.send_replace(outcome.applied);
                self.report(StoreReport::Durable(entries::position(outcome.durable)));
            }
            Err(
                error @ (StoreError::Diverged { .. }
                | StoreError::Gap { .. }
                | StoreError::StaleTerm { .. }
                | StoreError::NotABoundary(_)),
            ) => {
                // The plane holds these entries as appended; the store's log says otherwise.
                // Neither can be trusted against the other any more: start again from the
                // parent's state.
                tracing::warn!(target: "storage", subsystem = "storage", %error, "cannot append entries");
                let first = data_entries.first().map_or(0, |e| e.position.epoch);
                self.fall_out_of_step(
                    first,
                    "the log parted from the plane's; taking a snapshot from the parent",
                );
            }
            Err(error) => {
                tracing::warn!(target: "storage", subsystem = "storage", %error, "cannot append entries");
            }
        }
    }

    fn is_out_of_step(&self) -> bool {
        self.out_of_step.load(Ordering::Acquire)
    }

    /// See [`Worker::out_of_step`].
    fn fall_out_of_step(&mut self, epoch: Epoch, why: &'static str) {
        tracing::warn!(target: "storage", subsystem = "storage", epoch, "{why}");
        self.out_of_step.store(true, Ordering::Release);
        self.readers.clear();
        self.report(StoreReport::NeedSnapshot);
    }

    /// The store's log is consistent in itself; only its agreement with the plane (and with
    /// a parent's history) was lost. The election judged that log the most complete of a
    /// majority, so a root carries on from it, as it would after a restart.
    fn resync(&mut self) {
        if !self.is_out_of_step() {
            self.report(StoreReport::Resynced(None));
            return;
        }
        match local_log(&self.store) {
            Ok(log) => {
                tracing::warn!(target: "storage", subsystem = "storage", last = log.last, "back in step with the store's own log");
                self.out_of_step.store(false, Ordering::Release);
                self.incoming = None;
                self.applied.send_replace(self.store.applied_epoch());
                self.report(StoreReport::Resynced(Some(log)));
            }
            Err(error) => {
                tracing::error!(target: "storage", subsystem = "storage", error = %format!("{error:#}"), "cannot read the log to start again from it");
                self.report(StoreReport::Resynced(None));
            }
        }
    }

    fn read_snapshot_chunk(&mut self, peer: u64, snapshot_id: u64, offset: u64) {
        // A snapshot taken but not sent yet (it was ahead of the commit) is offered first.
        let unsent = self
            .readers
            .iter()
            .find(|(_, (_, position, last))| *position == 0 && last.is_none())
            .map(|(id, _)| *id);
        let id = if let Some(unsent) = unsent.filter(|_| snapshot_id == 0 && offset == 0) {
            unsent
        } else if snapshot_id == 0 || !self.readers.contains_key(&snapshot_id) {
            if offset != 0 {
                return;
            }
            let reader = match self.store.snapshot_reader() {
                Ok(reader) => reader,
                Err(error) => {
                    tracing::error!(target: "storage", subsystem = "storage", %error, "cannot take a snapshot");
                    return;
                }
            };
            self.next_snapshot += 1;
            // A child takes one snapshot at a time: older readers of the same child are done.
            self.readers.clear();
            self.readers.insert(self.next_snapshot, (reader, 0, None));
            self.next_snapshot
        } else {
            snapshot_id
        };
        let Some((reader, position, last)) = self.readers.get_mut(&id) else {
            return;
        };
        // The child asks again for the chunk it did not get: send the same one.
        if let Some(previous) = last.as_ref().filter(|c| c.offset == offset) {
            let chunk = previous.clone();
            self.report(StoreReport::SnapshotChunkRead { peer, chunk });
            return;
        }
        if offset != *position {
            return;
        }
        if reader.id().epoch > self.commit {
            // The writer's rows run ahead of what a majority holds. A snapshot carries only
            // committed writes: this one waits for the commit (the child asks again).
            return;
        }
        let base = entries::position(reader.id());
        let chunk = match reader.next_chunk(SNAPSHOT_CHUNK_BYTES) {
            Ok(Some(data)) => {
                *position += data.len() as u64;
                let done = *position >= reader.size();
                SnapshotChunk {
                    snapshot_id: id,
                    base,
                    offset,
                    data,
                    done,
                }
            }
            Ok(None) => SnapshotChunk {
                snapshot_id: id,
                base,
                offset,
                data: Vec::new(),
                done: true,
            },
            Err(error) => {
                tracing::error!(target: "storage", subsystem = "storage", %error, "cannot read a snapshot chunk");
                return;
            }
        };
        *last = Some(chunk.clone());
        self.report(StoreReport::SnapshotChunkRead { peer, chunk });
    }

    fn install_snapshot_chunk(&mut self, chunk: SnapshotChunk) {
        if chunk.offset == 0 {
            match self.store.snapshot_writer() {
                Ok(writer) => self.incoming = Some(writer),
                Err(error) => {
                    tracing::error!(target: "storage", subsystem = "storage", %error, "cannot receive a snapshot");
                    return;
                }
            }
        }
        let Some(writer) = self.incoming.as_mut() else {
            return;
        };
        if let Err(error) = writer.write_chunk(&chunk.data) {
            tracing::error!(target: "storage", subsystem = "storage", %error, "cannot store a snapshot chunk");
            self.incoming = None;
            return;
        }
        if !chunk.done {
            return;
        }
        let Some(writer) = self.incoming.take() else {
            return;
        };
        match self.store.restore_from(writer) {
            Ok(base) => {
                tracing::info!(target: "storage", subsystem = "storage", term = base.term, epoch = base.epoch, "snapshot installed");
                self.out_of_step.store(false, Ordering::Release);
                self.commit = base.epoch;
                self.applied.send_replace(self.store.applied_epoch());
                self.report(StoreReport::SnapshotInstalled(entries::position(base)));
            }
            Err(error) => {
                tracing::error!(target: "storage", subsystem = "storage", %error, "cannot install a snapshot");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(store: Arc<Store>) -> (Worker, mpsc::UnboundedReceiver<StoreReport>) {
        let (reports, received) = mpsc::unbounded_channel();
        let (applied, _) = watch::channel(0);
        let group = GroupCommitter::start(Arc::clone(&store), CommitterConfig::default(), None)
            .expect("the group commit starts");
        let worker = Worker {
            store,
            group,
            runtime: tokio::runtime::Handle::current(),
            reports,
            applied,
            commit: 0,
            out_of_step: Arc::new(AtomicBool::new(false)),
            readers: HashMap::new(),
            next_snapshot: 0,
            incoming: None,
        };
        (worker, received)
    }

    /// An empty data-plane entry: the store's term barrier, which any log takes.
    fn barrier(epoch: Epoch) -> DataEntry {
        barrier_in(1, epoch)
    }

    fn barrier_in(term: Term, epoch: Epoch) -> DataEntry {
        DataEntry {
            position: Position::new(term, epoch),
            payload: Vec::new(),
        }
    }

    /// Every report queued so far.
    fn drain(reports: &mut mpsc::UnboundedReceiver<StoreReport>) -> Vec<StoreReport> {
        std::iter::from_fn(|| reports.try_recv().ok()).collect()
    }

    fn snapshot_chunks(reports: &mut mpsc::UnboundedReceiver<StoreReport>) -> Vec<SnapshotChunk> {
        drain(reports)
            .into_iter()
            .filter_map(|report| match report {
                StoreReport::SnapshotChunkRead { chunk, .. } => Some(chunk),
                _ => None,
            })
            .collect()
    }

    /// A child's first request for a new snapshot.
    fn snapshot_request(peer: u64) -> StoreJob {
        StoreJob::ReadSnapshotChunk {
            peer,
            snapshot_id: 0,
            offset: 0,
        }
    }

    fn resynced(reports: &mut mpsc::UnboundedReceiver<StoreReport>) -> Vec<Option<LocalLog>> {
        drain(reports)
            .into_iter()
            .filter_map(|report| match report {
                StoreReport::Resynced(log) => Some(log),
                _ => None,
            })
            .collect()
    }

    fn durable_reports(reports: &mut mpsc::UnboundedReceiver<StoreReport>) -> Vec<Position> {
        drain(reports)
            .into_iter()
            .filter_map(|report| match report {
                StoreReport::Durable(position) => Some(position),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn queued_appends_share_one_transaction_and_a_failed_run_goes_one_by_one() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = Arc::new(Store::open(dir.path().join("chat.db")).expect("the store opens"));
        let (mut worker, mut reports) = worker(Arc::clone(&store));

        worker.append_run(vec![
            StoreJob::Append(vec![barrier(1)]),
            StoreJob::Append(vec![barrier(2)]),
            StoreJob::CommitAdvanced(0),
            StoreJob::Append(vec![barrier(3)]),
        ]);
        assert_eq!(
            durable_reports(&mut reports),
            vec![Position::new(1, 3)],
            "three frames, one durable report"
        );
        assert_eq!(store.election_key().epoch, 3);

        // A gap sinks the merged transaction; one by one, the entry before it still lands.
        worker.append_run(vec![
            StoreJob::Append(vec![barrier(4)]),
            StoreJob::Append(vec![barrier(6)]),
        ]);
        assert_eq!(durable_reports(&mut reports), vec![Position::new(1, 4)]);
        assert_eq!(store.election_key().epoch, 4);
    }

    #[tokio::test]
    async fn a_refused_append_stops_the_worker_until_a_snapshot_and_snapshots_wait_for_the_commit()
    {
        let dir = tempfile::tempdir().expect("a temp dir");
        let parent_store =
            Arc::new(Store::open(dir.path().join("parent.db")).expect("the store opens"));
        let (mut parent, mut parent_reports) = worker(Arc::clone(&parent_store));
        let child_store =
            Arc::new(Store::open(dir.path().join("child.db")).expect("the store opens"));
        let (mut child, mut child_reports) = worker(Arc::clone(&child_store));

        // The parent's log: term 2 from epoch 1. Its rows run ahead of the commit.
        parent.handle(StoreJob::Append(
            (1..=3).map(|epoch| barrier_in(2, epoch)).collect(),
        ));
        parent.handle(StoreJob::CommitAdvanced(3));
        parent.commit = 2;
        parent.handle(snapshot_request(9));
        assert!(
            snapshot_chunks(&mut parent_reports).is_empty(),
            "a snapshot beyond the commit is not sent"
        );
        parent.handle(StoreJob::CommitAdvanced(3));
        parent.handle(snapshot_request(9));
        let chunks = snapshot_chunks(&mut parent_reports);
        assert_eq!(chunks.len(), 1, "sent once the commit reached it");
        assert_eq!(chunks[0].base, Position::new(2, 3));

        // The child wrote term 1 at epochs 1 and 2 (a deposed writer's history); term 2 at
        // epoch 2 parts from it.
        child.handle(StoreJob::Append(vec![barrier(1), barrier(2)]));
        child.handle(StoreJob::Append(vec![barrier_in(2, 2)]));
        assert!(child.is_out_of_step());
        assert!(
            drain(&mut child_reports)
                .iter()
                .any(|r| matches!(r, StoreReport::NeedSnapshot)),
            "it asks for a snapshot"
        );
        child.handle(StoreJob::Append(vec![barrier_in(2, 3)]));
        assert!(
            durable_reports(&mut child_reports).is_empty(),
            "appends nothing"
        );
        assert_eq!(
            child_store.election_key(),
            chat_store::EntryId { term: 1, epoch: 2 }
        );
        child.handle(snapshot_request(7));
        assert!(
            snapshot_chunks(&mut child_reports).is_empty(),
            "serves no snapshot of its rows"
        );

        for chunk in chunks {
            child.handle(StoreJob::InstallSnapshotChunk(chunk));
        }
        assert!(!child.is_out_of_step(), "the snapshot put it back in step");
        assert_eq!(
            child_store.election_key(),
            chat_store::EntryId { term: 2, epoch: 3 }
        );
        child.handle(StoreJob::Append(vec![barrier_in(2, 4)]));
        assert_eq!(
            durable_reports(&mut child_reports),
            vec![Position::new(2, 4)]
        );
    }

    #[tokio::test]
    async fn a_root_out_of_step_carries_on_from_its_stores_own_log() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = Arc::new(Store::open(dir.path().join("chat.db")).expect("the store opens"));
        let (mut node, mut reports) = worker(Arc::clone(&store));
        // A deposed writer's term 1 at epochs 1 to 3; a parent's term 2 at epoch 2 parts from
        // it, and that parent is gone before any snapshot came.
        node.handle(StoreJob::Append((1..=3).map(barrier).collect()));
        node.handle(StoreJob::CommitAdvanced(3));
        node.handle(StoreJob::Append(vec![barrier_in(2, 2)]));
        assert!(node.is_out_of_step());
        drain(&mut reports);

        node.handle(StoreJob::Resync);
        assert!(!node.is_out_of_step(), "in step with its own log again");
        let logs: Vec<LocalLog> = resynced(&mut reports).into_iter().flatten().collect();
        assert_eq!(logs.len(), 1, "reports the log the plane starts from");
        assert_eq!(logs[0].last, 3);
        assert_eq!(
            logs[0].runs,
            vec![TermRun {
                term: 1,
                first_epoch: 1
            }]
        );
        assert_eq!(logs[0].recent.len(), 3);

        // As the root of term 3 it appends again: its barrier follows its own history.
        node.handle(StoreJob::Append(vec![barrier_in(3, 4)]));
        assert_eq!(durable_reports(&mut reports), vec![Position::new(3, 4)]);
        // Asked again (a second tree change came first), it has nothing to start from.
        node.handle(StoreJob::Resync);
        assert_eq!(resynced(&mut reports), vec![None]);
    }
}
