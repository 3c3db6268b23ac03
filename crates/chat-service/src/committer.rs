//! The writer's group commit: one thread owns the writing, drains a bounded queue, commits
//! each batch in one transaction (one fsync) and hands back the answers, the batch's log entry
//! and its change notices.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use chat_store::{ChangeNotice, Entry, Epoch, Store, Term};
use tokio::sync::{mpsc, oneshot};

use crate::decide::{written_response, PendingWrite};
use crate::error::ServiceError;
use crate::protocol::{Reply, Request};

/// Settings of a [`GroupCommitter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitterConfig {
    /// Requests waiting for the writer at most; `submit` waits for room beyond that.
    pub queue: usize,
    /// Requests per batch at most.
    pub max_batch: usize,
}

impl Default for CommitterConfig {
    fn default() -> Self {
        Self {
            queue: 4096,
            max_batch: 512,
        }
    }
}

/// A committed batch, for the data plane: its log entry to replicate, and one notice per new
/// message to send down the tree. Sent before the batch's answers, so a write's entry is on its
/// way before its submitter hears back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedBatch {
    /// The entry (term, epochs, ops).
    pub entry: Entry,
    /// The notices.
    pub notices: Vec<ChangeNotice>,
}

/// Until when this node may commit as the writer: the control plane's writer lease, shared
/// with the group committer, which looks at it right before each batch's transaction. A
/// writer frozen with writes queued (SIGSTOP, a long pause) resumes with its lease long run
/// out; without this look its committer would run the queued batch before the node heard of
/// the new term, leaving rows of the old term that no majority holds and that only a
/// snapshot can take back. Cheap to clone; every clone is the same lease.
#[derive(Debug, Clone, Default)]
pub struct WriterLease(Arc<Mutex<Option<Instant>>>);

impl WriterLease {
    /// Held until `until`; None: not the writer (no lease).
    pub fn set(&self, until: Option<Instant>) {
        *self.until() = until;
    }

    /// Whether the lease still holds at `now`.
    pub fn holds(&self, now: Instant) -> bool {
        self.until().is_some_and(|until| now < until)
    }

    /// A plain value: a panic elsewhere while holding the lock leaves nothing half-written.
    fn until(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

struct Job {
    term: Term,
    min_epoch: Epoch,
    write: PendingWrite,
    answer: oneshot::Sender<Result<Reply, ServiceError>>,
}

/// The writer's group committer. Dropping every handle stops its thread after the queued
/// requests are answered.
#[derive(Debug, Clone)]
pub struct GroupCommitter {
    queue: mpsc::Sender<Job>,
    thread: Arc<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("term", &self.term)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

impl GroupCommitter {
    /// Starts the thread that owns writing to `store`. Each committed batch goes to
    /// `batches` (if given) before its answers; the thread waits when that channel is full,
    /// so replication holds the writer back rather than falling behind without bound.
    pub fn start(
        store: Arc<Store>,
        config: CommitterConfig,
        batches: Option<mpsc::Sender<CommittedBatch>>,
    ) -> Result<Self, ServiceError> {
        Self::start_with(store, config, batches, None)
    }

    /// [`GroupCommitter::start`] for a cluster's writer: a batch is committed only while
    /// `lease` holds; otherwise its requests are refused ([`ServiceError::NotWriter`]) and
    /// nothing is written.
    pub fn start_leased(
        store: Arc<Store>,
        config: CommitterConfig,
        batches: Option<mpsc::Sender<CommittedBatch>>,
        lease: WriterLease,
    ) -> Result<Self, ServiceError> {
        Self::start_with(store, config, batches, Some(lease))
    }

    fn start_with(
        store: Arc<Store>,
        config: CommitterConfig,
        batches: Option<mpsc::Sender<CommittedBatch>>,
        lease: Option<WriterLease>,
    ) -> Result<Self, ServiceError> {
        let (queue, jobs) = mpsc::channel(config.queue.max(1));
        let max_batch = config.max_batch.max(1);
        let thread = std::thread::Builder::new()
            .name("group-commit".to_owned())
            .spawn(move || run(&store, jobs, max_batch, batches.as_ref(), lease.as_ref()))
            .map_err(|e| {
                tracing::error!(subsystem = "writer", error = %e, "cannot start the writer thread");
                ServiceError::Storage("The writer could not start.".to_owned())
            })?;
        Ok(Self {
            queue,
            thread: Arc::new(Some(thread)),
        })
    }

    /// Queues a write to be committed in `term` (the writer's term, stamped on its log entry)
    /// and waits for its answer: the committed (or replayed) reply with its epoch, or the
    /// refusal. Reads are [`ServiceError::InvalidInput`]. A writer behind the client's
    /// `min_epoch` answers [`ServiceError::ReplicaBehind`]; a term older than the log's
    /// [`ServiceError::NotWriter`].
    ///
    /// The answer means durable here; the data plane still waits for a majority before it
    /// acknowledges the write to the user.
    pub async fn submit(
        &self,
        term: Term,
        request: Request,
        min_epoch: Epoch,
    ) -> Result<Reply, ServiceError> {
        let write = PendingWrite::new(request)?;
        let (answer, answered) = oneshot::channel();
        let job = Job {
            term,
            min_epoch,
            write,
            answer,
        };
        self.queue
            .send(job)
            .await
            .map_err(|_| ServiceError::NotWriter("The writer has stopped.".to_owned()))?;
        answered
            .await
            .map_err(|_| ServiceError::Storage("The writer stopped before answering.".to_owned()))?
    }

    /// Whether the writer thread is still running.
    pub fn is_running(&self) -> bool {
        self.thread
            .as_ref()
            .as_ref()
            .is_some_and(|thread| !thread.is_finished())
    }
}

/// The thread: take what is queued (up to `max_batch`, one term per batch), commit, answer.
fn run(
    store: &Store,
    mut jobs: mpsc::Receiver<Job>,
    max_batch: usize,
    batches: Option<&mpsc::Sender<CommittedBatch>>,
    lease: Option<&WriterLease>,
) {
    let mut waiting: VecDeque<Job> = VecDeque::new();
    loop {
        if waiting.is_empty() {
            match jobs.blocking_recv() {
                Some(job) => waiting.push_back(job),
                None => return,
            }
        }
        while waiting.len() < max_batch {
            match jobs.try_recv() {
                Ok(job) => waiting.push_back(job),
                Err(_) => break,
            }
        }
        let term = waiting.front().map_or(0, |job| job.term);
        let mut batch = Vec::with_capacity(waiting.len().min(max_batch));
        while batch.len() < max_batch && waiting.front().is_some_and(|job| job.term == term) {
            if let Some(job) = waiting.pop_front() {
                batch.push(job);
            }
        }
        if lease.is_some_and(|lease| !lease.holds(Instant::now())) {
            for job in batch {
                let _ = job.answer.send(Err(ServiceError::NotWriter(
                    "The writer's lease ran out before the write was committed.".to_owned(),
                )));
            }
            continue;
        }
        commit(store, term, batch, batches);
    }
}

fn commit(
    store: &Store,
    term: Term,
    batch: Vec<Job>,
    batches: Option<&mpsc::Sender<CommittedBatch>>,
) {
    let applied = store.applied_epoch();
    let mut answers = Vec::with_capacity(batch.len());
    let mut writes = Vec::with_capacity(batch.len());
    for job in batch {
        if job.min_epoch > applied {
            let _ = job.answer.send(Err(ServiceError::ReplicaBehind {
                have: applied,
                want: job.min_epoch,
            }));
            continue;
        }
        answers.push(job.answer);
        writes.push(job.write);
    }
    if writes.is_empty() {
        return;
    }
    match store.commit_batch(term, now_ms(), writes) {
        Ok(outcome) => {
            if let (Some(entry), Some(batches)) = (outcome.entry, batches) {
                let batch = CommittedBatch {
                    entry,
                    notices: outcome.notices,
                };
                if batches.blocking_send(batch).is_err() {
                    tracing::debug!(subsystem = "writer", "no one takes committed batches");
                }
            }
            let sessions_changed = Some(store.sessions_changed());
            for (answer, result) in answers.into_iter().zip(outcome.answers) {
                let reply = result.map(|committed| Reply {
                    value: written_response(committed.written),
                    epoch: committed.epoch,
                    replayed: committed.replayed,
                    sessions_changed,
                });
                let _ = answer.send(reply);
            }
        }
        Err(error) => {
            let error = ServiceError::from(error);
            for answer in answers {
                let _ = answer.send(Err(error.clone()));
            }
        }
    }
}
