//! The data-plane task: owns the [`DataPlane`] state machine and moves its inputs and outputs
//! (see the crate docs of `chat-data` for the contract it follows).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chat_data::{
    Action, ClientRequest, CommittedBatch, Counters, DataConfig, DataPlane, Epoch, LocalLog,
    Outcome, Place, Position, ReadResult, RequestId, RetryableError, Term, WriteResult,
};
use chat_service::{CommitterConfig, ServiceConfig, ServiceError};
use chat_store::{ChangeNotice, Store, User};
use chat_transport::{Transport, TransportConfig, TransportEvent, TransportHandle};
use chat_web::{ChangeFeed, ChatChange};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use super::entries;
use super::storage::{encode_result, local_log, Storage, StoreJob, StoreReport};
use super::TreeView;
use crate::durable::{DurableKey, DurableKeyHandle};

/// Requests waiting for the data-plane task at most; a proxy beyond it waits for room.
const SUBMIT_QUEUE: usize = 8192;
/// How long a change notice waits for the local rows to reflect it before it is skipped.
const NOTIFY_WAIT: Duration = Duration::from_secs(2);

/// A client request and where its answer goes.
struct Submit {
    request: ClientRequest,
    answer: oneshot::Sender<(Epoch, Outcome)>,
}

/// What the data plane shows in `/status` (under `data`) and drives the lease with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DataStatus {
    /// A request from this node reaches a writable root now.
    pub(crate) writer_reachable: bool,
    /// The newest epoch known durable on a majority.
    pub(crate) commit: u64,
    /// The local log's last entry (term, epoch).
    pub(crate) last_term: u64,
    pub(crate) last_epoch: u64,
    /// The local durable epoch.
    pub(crate) durable: u64,
    /// Counters: frames dropped and why, request paths taken.
    pub(crate) counters: DataCounters,
}

/// [`Counters`] as JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DataCounters {
    pub(crate) frames_sent: u64,
    pub(crate) frames_received: u64,
    pub(crate) frames_malformed: u64,
    pub(crate) frames_stale_term: u64,
    pub(crate) frames_newer_term: u64,
    pub(crate) frames_ignored: u64,
    pub(crate) requests_forwarded: u64,
    pub(crate) requests_no_writer: u64,
    pub(crate) writes_refused: u64,
    pub(crate) writes_executed: u64,
    pub(crate) reads_local: u64,
    pub(crate) reads_passed_up: u64,
    pub(crate) reads_confirmed_upstream: u64,
    pub(crate) responses_unroutable: u64,
    pub(crate) responses_late: u64,
    pub(crate) requests_timed_out: u64,
    pub(crate) answers_lost_term: u64,
    pub(crate) catch_ups_sent: u64,
    pub(crate) suffix_drops: u64,
    pub(crate) snapshots_offered: u64,
    pub(crate) snapshots_installed: u64,
    pub(crate) safety_violations: u64,
    /// Frames from peers the transport refused, whatever the reason: bad framing, no proof
    /// of the cluster secret, altered, replayed, oversized (the sum of the next four and of
    /// the framing errors).
    pub(crate) transport_bad_frames: u64,
    /// Of those: from peers that did not prove they hold the cluster secret.
    pub(crate) transport_unauthenticated: u64,
    /// Of those: altered in flight (an established session's frame that did not open).
    pub(crate) transport_tampered: u64,
    /// Of those: replayed (a counter the session had already accepted).
    pub(crate) transport_replayed: u64,
    /// Of those: payloads over the data plane's size bound.
    pub(crate) transport_oversized: u64,
    /// Sends the transport dropped (queue or pipe full, unroutable, oversized, waiting for a
    /// handshake, refused by ZeroMQ).
    pub(crate) transport_dropped: u64,
}

impl DataCounters {
    fn from_plane(c: &Counters, transport: &chat_transport::TransportStats) -> Self {
        DataCounters {
            frames_sent: c.frames_sent,
            frames_received: c.frames_received,
            frames_malformed: c.frames_malformed,
            frames_stale_term: c.frames_stale_term,
            frames_newer_term: c.frames_newer_term,
            frames_ignored: c.frames_ignored,
            requests_forwarded: c.requests_forwarded,
            requests_no_writer: c.requests_no_writer,
            writes_refused: c.writes_refused,
            writes_executed: c.writes_executed,
            reads_local: c.reads_local,
            reads_passed_up: c.reads_passed_up,
            reads_confirmed_upstream: c.reads_confirmed_upstream,
            responses_unroutable: c.responses_unroutable,
            responses_late: c.responses_late,
            requests_timed_out: c.requests_timed_out,
            answers_lost_term: c.answers_lost_term,
            catch_ups_sent: c.catch_ups_sent,
            suffix_drops: c.suffix_drops,
            snapshots_offered: c.snapshots_offered,
            snapshots_installed: c.snapshots_installed,
            safety_violations: c.safety_violations,
            transport_bad_frames: transport.bad_frames
                + transport.refused_unauthenticated
                + transport.refused_tampered
                + transport.refused_replayed
                + transport.refused_oversized,
            transport_unauthenticated: transport.refused_unauthenticated,
            transport_tampered: transport.refused_tampered,
            transport_replayed: transport.refused_replayed,
            transport_oversized: transport.refused_oversized,
            transport_dropped: transport.dropped_queue_full
                + transport.dropped_unroutable
                + transport.dropped_pipe_full
                + transport.send_errors
                + transport.dropped_oversized
                + transport.dropped_handshake_pending,
        }
    }
}

/// The proxies' way in, and the plane's status out. Cheap to clone.
#[derive(Clone)]
pub(crate) struct DataHandle {
    submits: mpsc::Sender<Submit>,
    pub(crate) status: watch::Receiver<DataStatus>,
    /// The data port's transport (its counters feed `/metrics`).
    pub(crate) transport: TransportHandle,
}

impl std::fmt::Debug for DataHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataHandle").finish_non_exhaustive()
    }
}

impl DataHandle {
    /// Sends a request into the plane and waits for its answer (the plane answers every
    /// request, at the latest with `Unavailable` at its deadline).
    pub(crate) async fn request(
        &self,
        request: ClientRequest,
    ) -> Result<(Epoch, Outcome), ServiceError> {
        let (answer, answered) = oneshot::channel();
        self.submits
            .send(Submit { request, answer })
            .await
            .map_err(|_| ServiceError::Unavailable("The node is stopping.".to_owned()))?;
        answered
            .await
            .map_err(|_| ServiceError::Unavailable("The node is stopping.".to_owned()))
    }
}

/// Settings of the data plane, from the node's configuration.
pub(crate) struct DataSettings {
    pub(crate) id: u64,
    pub(crate) bind: String,
    /// The cluster secret's wire keys: every data-plane frame is sealed with them.
    pub(crate) wire_keys: chat_secret::KeyRing,
    pub(crate) service: ServiceConfig,
    pub(crate) committer: CommitterConfig,
    pub(crate) request_timeout: Duration,
    pub(crate) read_wait: Duration,
    pub(crate) replica_reads: bool,
}

/// Opens the data port and starts the task. Returns the handle and the task, which ends when
/// `shutdown` completes.
pub(crate) async fn start(
    settings: DataSettings,
    store: Arc<Store>,
    tree: watch::Receiver<TreeView>,
    durable_keys: DurableKeyHandle,
    feed: ChangeFeed,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(DataHandle, tokio::task::JoinHandle<()>)> {
    let (reports_tx, reports) = mpsc::unbounded_channel();
    let storage = Storage::start(
        Arc::clone(&store),
        settings.service,
        settings.committer,
        reports_tx.clone(),
    )?;
    let log = {
        let store = Arc::clone(&store);
        tokio::task::spawn_blocking(move || local_log(&store))
            .await
            .context("the start-up read of the log failed")??
    };
    let mut transport_config = TransportConfig::new(settings.id, settings.bind.clone())
        .with_security(Some(settings.wire_keys));
    // The data plane's own bound: a frame (a catch-up batch, a snapshot chunk) never exceeds
    // it, and a peer cannot make the node buffer larger ones.
    transport_config.max_message_bytes = i64::try_from(chat_data::MAX_FRAME_BYTES)
        .expect("the data plane's frame bound fits an i64");
    // Chat traffic is bursty: room for a burst of group-commit answers and entries.
    transport_config.send_queue = 65_536;
    transport_config.event_queue = 65_536;
    transport_config.send_hwm = 50_000;
    transport_config.recv_hwm = 50_000;
    let (transport, events) = Transport::start(transport_config)
        .with_context(|| format!("cannot open the data-plane socket {}", settings.bind))?;
    let mut config = DataConfig::new(settings.id);
    config.incarnation = uuid::Uuid::new_v4().as_u64_pair().0;
    config.request_timeout = settings.request_timeout;
    config.read_wait = settings.read_wait;
    config.replica_reads = settings.replica_reads;
    let read_wait = config.read_wait;
    let now = Instant::now();
    let plane = DataPlane::new(now, config.clone(), log);
    let (status_tx, status) = watch::channel(DataStatus::default());
    let (submits_tx, submits) = mpsc::channel(SUBMIT_QUEUE);
    let (notices_tx, notices) = mpsc::unbounded_channel();
    tokio::spawn(notify_loop(notices, storage.clone(), feed));
    tracing::info!(target: "data", subsystem = "data", bind = %settings.bind, "data plane listening");
    let task = Task {
        plane,
        config,
        resyncing: false,
        transport: transport.clone(),
        storage,
        reports_tx,
        waiting: HashMap::new(),
        write_terms: HashMap::new(),
        early: Vec::new(),
        view: TreeView::default(),
        parent_endpoint: None,
        status: status_tx,
        notices: notices_tx,
        read_wait,
        durable_keys,
    };
    let handle = DataHandle {
        submits: submits_tx,
        status,
        transport,
    };
    let join = tokio::spawn(task.run(tree, events, submits, reports, shutdown));
    Ok((handle, join))
}

struct Task {
    plane: DataPlane,
    /// What the plane was started with, to start it again (see [`Task::resync`]).
    config: DataConfig,
    /// A root waiting for the store worker to come back in step (see [`Task::resync`]):
    /// it takes no writes meanwhile.
    resyncing: bool,
    transport: TransportHandle,
    storage: Storage,
    reports_tx: mpsc::UnboundedSender<StoreReport>,
    waiting: HashMap<RequestId, oneshot::Sender<(Epoch, Outcome)>>,
    /// The term each queued write executes in (its answer is released in that term only).
    write_terms: HashMap<RequestId, Term>,
    /// Write answers that overtook their batch's report.
    early: Vec<(RequestId, Epoch, Outcome)>,
    view: TreeView,
    parent_endpoint: Option<String>,
    status: watch::Sender<DataStatus>,
    notices: mpsc::UnboundedSender<chat_data::Change>,
    read_wait: Duration,
    durable_keys: DurableKeyHandle,
}

impl Task {
    async fn run(
        mut self,
        mut tree: watch::Receiver<TreeView>,
        mut events: mpsc::Receiver<TransportEvent>,
        mut submits: mpsc::Receiver<Submit>,
        mut reports: mpsc::UnboundedReceiver<StoreReport>,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let view = tree.borrow_and_update().clone();
        self.set_view(Instant::now(), view);
        loop {
            self.drain();
            let now = Instant::now();
            let mut deadline = self
                .plane
                .poll_timeout()
                .unwrap_or(now + Duration::from_millis(100));
            if let Some(until) = self
                .view
                .writable_until
                .filter(|_| self.plane.place().writable)
            {
                deadline = deadline.min(until);
            }
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                report = reports.recv() => {
                    if let Some(report) = report {
                        self.handle_report(Instant::now(), report);
                    }
                }
                changed = tree.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let view = tree.borrow_and_update().clone();
                    self.set_view(Instant::now(), view);
                }
                event = events.recv() => match event {
                    Some(TransportEvent::Received { from, payload }) => {
                        self.plane.handle_frame(Instant::now(), from, &payload);
                    }
                    Some(_) => {}
                    None => {
                        tracing::error!(target: "data", subsystem = "data", "the data-plane transport stopped");
                        break;
                    }
                },
                submit = submits.recv() => {
                    let Some(Submit { request, answer }) = submit else { break };
                    let id = self.plane.submit(Instant::now(), request);
                    self.waiting.insert(id, answer);
                }
                () = tokio::time::sleep_until(deadline.into()) => {
                    let now = Instant::now();
                    // The lease ran out and nothing renewed it: stop taking writes now, even
                    // if the control loop's next turn comes late.
                    if self.plane.place().writable && self.view.writable_until.is_none_or(|until| until <= now) {
                        let place = self.place(now);
                        self.plane.set_place(now, place);
                    }
                    self.plane.handle_timeout(now);
                }
            }
        }
        self.transport.shutdown().await;
    }

    fn place(&self, now: Instant) -> Place {
        let view = &self.view;
        Place {
            term: view.term,
            is_root: view.writer,
            writable: self.writer_lease().is_some_and(|until| until > now),
            replica: view.replica,
            input: view.input,
            parent: view.parent,
            children: view.children.clone(),
            routes: view.routes.clone(),
            cluster_size: view.cluster_size,
        }
    }

    fn set_view(&mut self, now: Instant, view: TreeView) {
        if view.parent_endpoint != self.parent_endpoint {
            if let (Some(parent), Some(endpoint)) = (view.parent, view.parent_endpoint.clone()) {
                if let Err(error) = self.transport.connect(parent, endpoint.clone()) {
                    tracing::warn!(target: "data", subsystem = "data", parent, %endpoint, %error, "cannot connect to the parent's data port");
                }
            }
            self.parent_endpoint = view.parent_endpoint.clone();
        }
        self.view = view;
        self.resync_if_stuck();
        self.update_place(now);
    }

    /// Until when this node may write: a root's lease from the control plane, unless it is
    /// starting its plane again; anyone else never. The plane writes under it and the group
    /// commit checks it.
    fn writer_lease(&self) -> Option<Instant> {
        self.view
            .writable_until
            .filter(|_| self.view.writer && !self.resyncing)
    }

    /// The plane's place and the group commit's lease, from the view and the resync state.
    fn update_place(&mut self, now: Instant) {
        let place = self.place(now);
        self.storage.lease.set(self.writer_lease());
        if *self.plane.place() != place {
            self.plane.set_place(now, place);
        }
    }

    /// A node whose store fell out of step waits for a snapshot from its parent; a root has
    /// none. The election chose it on its store's log (the key is fed from the store), so
    /// that log holds everything a majority acknowledged: the worker comes back in step with
    /// it and the plane starts again from it, as after a restart. The caller updates the
    /// place: a resyncing root takes no writes.
    fn resync_if_stuck(&mut self) {
        if self.view.writer && !self.resyncing && self.storage.is_out_of_step() {
            tracing::warn!(target: "data", subsystem = "data", term = self.view.term, "root with a store out of step: starting the data plane again from the store's log");
            self.resyncing = true;
            self.storage.submit(StoreJob::Resync);
        }
    }

    /// The worker is in step with `log`: a new plane (a new incarnation, so no answer meant
    /// for the old one matches) starts from it. The old plane's requests end retryable.
    fn resync(&mut self, now: Instant, log: LocalLog) {
        for (_, waiter) in self.waiting.drain() {
            let _ = waiter.send((0, Err(RetryableError::Unavailable)));
        }
        self.write_terms.clear();
        self.early.clear();
        self.config.incarnation = Uuid::new_v4().as_u64_pair().0;
        self.plane = DataPlane::new(now, self.config.clone(), log);
        self.resyncing = false;
        self.update_place(now);
    }

    /// Carries every output of the plane out, then publishes the status.
    fn drain(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(transmit) = self.plane.poll_transmit() {
                progressed = true;
                // A failed send needs no report: the plane resends what matters.
                let _ = self.transport.send(transmit.to, transmit.payload);
            }
            while let Some(action) = self.plane.poll_action() {
                progressed = true;
                self.handle_action(action);
            }
            if !progressed {
                break;
            }
        }
        self.publish();
    }

    fn publish(&self) {
        let now = Instant::now();
        let last = self.plane.last();
        let next = DataStatus {
            writer_reachable: self.plane.writer_reachable(now),
            commit: self.plane.commit(),
            last_term: last.term,
            last_epoch: last.epoch,
            durable: self.plane.durable(),
            counters: DataCounters::from_plane(self.plane.counters(), &self.transport.stats()),
        };
        self.status.send_if_modified(|status| {
            let changed = *status != next;
            if changed {
                *status = next;
            }
            changed
        });
    }

    fn handle_action(&mut self, action: Action) {
        match action {
            Action::ExecuteWrite { term, request } => {
                match chat_service::decode::<chat_service::Request>(&request.payload) {
                    Ok(decoded) => {
                        self.write_terms.insert(request.id, term);
                        self.storage.submit(StoreJob::Write {
                            id: request.id,
                            term,
                            request: decoded,
                            min_epoch: request.min_epoch,
                        });
                    }
                    Err(error) => {
                        let epoch = self.plane.last().epoch;
                        self.plane.committed(
                            Instant::now(),
                            CommittedBatch {
                                term,
                                results: vec![WriteResult {
                                    id: request.id,
                                    epoch,
                                    outcome: Ok(encode_result(&Err(error))),
                                }],
                                ..CommittedBatch::default()
                            },
                        );
                    }
                }
            }
            Action::ExecuteRead(request) => {
                let storage = self.storage.clone();
                let reports = self.reports_tx.clone();
                let wait = self.read_wait;
                tokio::spawn(async move {
                    let report = storage
                        .read(request.id, request.payload, request.min_epoch, wait)
                        .await;
                    let _ = reports.send(report);
                });
            }
            Action::AppendEntries(entries) => self.storage.submit(StoreJob::Append(entries)),
            Action::DropSuffixAfter(epoch) => {
                tracing::warn!(target: "data", subsystem = "data", epoch, "dropping a stale log suffix");
                self.storage.submit(StoreJob::DropSuffixAfter(epoch));
            }
            Action::CommitAdvanced(epoch) => self.storage.submit(StoreJob::CommitAdvanced(epoch)),
            Action::ReadSnapshotChunk {
                peer,
                snapshot_id,
                offset,
            } => self.storage.submit(StoreJob::ReadSnapshotChunk {
                peer,
                snapshot_id,
                offset,
            }),
            Action::InstallSnapshotChunk(chunk) => {
                self.storage.submit(StoreJob::InstallSnapshotChunk(chunk));
            }
            Action::Answer { id, epoch, outcome } => {
                self.write_terms.remove(&id);
                if let Some(waiter) = self.waiting.remove(&id) {
                    let _ = waiter.send((epoch, outcome));
                }
            }
            Action::Notify(change) => {
                if self.view.input {
                    let _ = self.notices.send(change);
                }
            }
            Action::SafetyViolation(what) => {
                tracing::error!(target: "data", subsystem = "data", violation = %what, "data-plane safety rule refused");
            }
        }
    }

    fn handle_report(&mut self, now: Instant, report: StoreReport) {
        match report {
            StoreReport::Durable(position) => self.durable(now, position),
            StoreReport::Committed { entry, notices } => {
                let term = entry.term;
                let tail = Position::new(term, entry.epoch);
                self.plane.committed(
                    now,
                    CommittedBatch {
                        term,
                        entries: entries::split_batch(&entry),
                        results: Vec::new(),
                        changes: notices.iter().map(entries::change).collect(),
                    },
                );
                self.durable(now, tail);
                let early = std::mem::take(&mut self.early);
                for (id, epoch, outcome) in early {
                    self.write_done(now, id, epoch, outcome);
                }
            }
            StoreReport::WriteDone { id, result } => {
                let epoch = match &result {
                    Ok(reply) => reply.epoch,
                    Err(_) => self.plane.last().epoch,
                };
                self.write_done(now, id, epoch, Ok(encode_result(&result)));
            }
            StoreReport::ReadDone {
                id,
                epoch,
                not_found,
                payload,
            } => {
                let position = self
                    .plane
                    .position_at(epoch)
                    .unwrap_or(Position::new(0, epoch));
                self.plane.read_done(
                    now,
                    id,
                    ReadResult {
                        position,
                        not_found,
                        outcome: Ok(payload),
                    },
                );
            }
            StoreReport::SnapshotChunkRead { peer, chunk } => {
                self.plane.snapshot_chunk_read(now, peer, chunk);
            }
            StoreReport::SnapshotInstalled(base) => {
                self.plane.snapshot_installed(now, base);
                self.record_key(base);
            }
            StoreReport::NeedSnapshot => {
                self.plane.request_snapshot(now);
                self.resync_if_stuck();
                self.update_place(now);
            }
            StoreReport::Resynced(Some(log)) => self.resync(now, log),
            StoreReport::Resynced(None) => {
                // In step already, or the log could not be read (asked again at the next
                // tree change or snapshot request).
                self.resyncing = false;
                self.update_place(now);
            }
        }
    }

    fn write_done(&mut self, now: Instant, id: RequestId, epoch: Epoch, outcome: Outcome) {
        if epoch > self.plane.last().epoch {
            // Its batch's report is still on its way (another task carried it).
            self.early.push((id, epoch, outcome));
            return;
        }
        let term = self
            .write_terms
            .remove(&id)
            .unwrap_or(self.plane.place().term);
        self.plane.committed(
            now,
            CommittedBatch {
                term,
                results: vec![WriteResult { id, epoch, outcome }],
                ..CommittedBatch::default()
            },
        );
    }

    fn durable(&mut self, now: Instant, position: Position) {
        self.plane.local_durable(now, position);
        self.record_key(position);
    }

    /// The election compares the node's current durable key.
    fn record_key(&self, position: Position) {
        self.durable_keys.record(DurableKey {
            last_term: position.term,
            epoch: position.epoch,
        });
    }
}

/// Change notices read from the store in one go at most.
const NOTIFY_BATCH: usize = 256;

/// Message authors the live-update feed remembers. Names and tags never change, so a
/// remembered author never goes stale; past this many the map starts again empty (a bound on
/// memory: a miss costs one read).
const SENDERS_KEPT: usize = 65_536;

/// Pushes committed messages to this input node's live-update streams, in epoch order, once
/// the local rows hold them. A notice carries its message; what must still be read (a new
/// author, a notice from an older writer) for the notices queued meanwhile is read in one read
/// transaction on one blocking task: reading each message back had cost an input node a sixth
/// of its CPU under a stream of writes.
async fn notify_loop(
    mut notices: mpsc::UnboundedReceiver<chat_data::Change>,
    storage: Storage,
    feed: ChangeFeed,
) {
    let mut changes = Vec::with_capacity(NOTIFY_BATCH);
    let mut senders: HashMap<Uuid, User> = HashMap::new();
    while notices.recv_many(&mut changes, NOTIFY_BATCH).await > 0 {
        let batch: Vec<ChangeNotice> = changes
            .drain(..)
            .filter_map(|c| entries::notice(&c))
            .collect();
        let Some(newest) = batch.iter().map(|n| n.epoch).max() else {
            continue;
        };
        let mut applied = storage.applied.clone();
        let batch = if tokio::time::timeout(NOTIFY_WAIT, applied.wait_for(|e| *e >= newest))
            .await
            .is_ok()
        {
            batch
        } else {
            // Publish what the rows already hold; skip the rest.
            let have = *applied.borrow();
            tracing::debug!(target: "data", subsystem = "data", epoch = newest, have, "change notices outran the local rows; skipped");
            batch.into_iter().filter(|n| n.epoch <= have).collect()
        };
        for change in changes_of(batch, &mut senders, &storage).await {
            feed.publish(change);
        }
    }
}

/// The feed's changes for `batch`, in its order. A notice carries its message; its author
/// comes from `senders`, read once per user. Only notices from an older writer, which name
/// their message, are read whole.
async fn changes_of(
    batch: Vec<ChangeNotice>,
    senders: &mut HashMap<Uuid, User>,
    storage: &Storage,
) -> Vec<ChatChange> {
    let mut unknown: Vec<Uuid> = batch
        .iter()
        .filter_map(|notice| notice.message.as_ref())
        .map(|message| message.sender_uuid)
        .filter(|uuid| !senders.contains_key(uuid))
        .collect();
    unknown.sort_unstable();
    unknown.dedup();
    let older: Vec<ChangeNotice> = batch
        .iter()
        .filter(|notice| notice.message.is_none())
        .cloned()
        .collect();
    let mut read_back: HashMap<u64, ChatChange> = HashMap::new();
    if !unknown.is_empty() || !older.is_empty() {
        let store = Arc::clone(&storage.store);
        let read = tokio::task::spawn_blocking(move || {
            store.read(|view| -> Result<_, chat_store::StoreError> {
                let users = if unknown.is_empty() {
                    Vec::new()
                } else {
                    view.users_by_uuids(&unknown)?
                };
                let mut found = Vec::with_capacity(older.len());
                for notice in older {
                    if let Some(change) = read_change(view, notice)? {
                        found.push(change);
                    }
                }
                Ok((users, found))
            })
        })
        .await;
        if let Ok(Ok(((users, found), _))) = read {
            if senders.len() + users.len() > SENDERS_KEPT {
                senders.clear();
            }
            senders.extend(users.into_iter().map(|user| (user.uuid, user)));
            read_back.extend(found.into_iter().map(|change| (change.epoch, change)));
        }
    }
    batch
        .into_iter()
        .filter_map(|notice| match notice.message {
            Some(message) => senders
                .get(&message.sender_uuid)
                .cloned()
                .map(|sender| ChatChange {
                    chat_id: notice.chat_id,
                    epoch: notice.epoch,
                    audience: notice.audience,
                    message,
                    sender,
                }),
            None => read_back.remove(&notice.epoch),
        })
        .collect()
}

/// The message a notice names, with its sender, as the live-update feed carries it.
fn read_change(
    view: &mut chat_store::ReadView<'_>,
    notice: ChangeNotice,
) -> Result<Option<ChatChange>, chat_store::StoreError> {
    let messages = view.messages(
        &notice.chat_id,
        chat_store::Page::Since {
            epoch: notice.epoch.saturating_sub(1),
            limit: 1,
        },
    )?;
    let Some(message) = messages.into_iter().find(|m| m.uuid == notice.message_uuid) else {
        return Ok(None);
    };
    let sender = view
        .users_by_uuids(&[message.sender_uuid])?
        .into_iter()
        .next();
    Ok(sender.map(|sender| ChatChange {
        chat_id: notice.chat_id,
        epoch: notice.epoch,
        audience: notice.audience,
        message,
        sender,
    }))
}
