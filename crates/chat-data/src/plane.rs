//! [`DataPlane`]: one node's data-plane state machine (sans-IO).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::frame::{
    Body, Change, Entry, Epoch, Frame, Outcome, Position, Request, RequestId, RequestKind,
    Response, RetryableError, SnapshotChunk, Term, TermRun, WriterSeen,
};
use crate::log::{term_in_runs, LocalLog, LogIndex};
use crate::NodeId;

/// Timings and limits of the data plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataConfig {
    /// This node's id.
    pub node: NodeId,
    /// Differs on every process start (the control plane's incarnation is fine): request ids
    /// start from it, so a restarted input node never matches an answer meant for its
    /// previous life.
    pub incarnation: u64,
    /// How long an input node waits for an answer before answering `Unavailable`; also how
    /// long any node holds an answer waiting for its epoch to become majority-durable.
    pub request_timeout: Duration,
    /// How long a replica waits for the client's epoch to arrive before passing a read up.
    pub read_wait: Duration,
    /// Whether a replica answers reads itself; false passes every read up to the root.
    pub replica_reads: bool,
    /// Heartbeats down, durable reports up, catch-up and snapshot retries.
    pub resend_interval: Duration,
    /// An input node without recent answers from the root probes it this often.
    pub probe_interval: Duration,
    /// How long one answer from a writable root keeps `writer_reachable` true.
    pub writer_reachable_for: Duration,
    /// Recent entries kept in memory to serve children's catch-ups; a child further behind
    /// gets a snapshot.
    pub cache_entries: usize,
    /// Entries per `Entries` frame at most when catching a child up.
    pub max_entries_per_frame: usize,
}

impl DataConfig {
    /// Defaults for a loopback or LAN cluster.
    pub fn new(node: NodeId) -> Self {
        DataConfig {
            node,
            incarnation: 0,
            request_timeout: Duration::from_secs(5),
            read_wait: Duration::from_millis(50),
            replica_reads: true,
            resend_interval: Duration::from_millis(100),
            probe_interval: Duration::from_millis(500),
            writer_reachable_for: Duration::from_millis(1500),
            cache_entries: 100_000,
            max_entries_per_frame: 256,
        }
    }
}

/// Where the node stands in the current tree, from the control plane. Given to
/// [`DataPlane::set_place`] on every role or term change.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Place {
    /// The tree's term (0: no tree yet).
    pub term: Term,
    /// This node is the tree's root (the writer).
    pub is_root: bool,
    /// The root may accept writes (the control plane's `quorum.writable`).
    pub writable: bool,
    /// This node answers reads itself (the root's children).
    pub replica: bool,
    /// This node takes client requests (probes the writer for `writer_reachable`).
    pub input: bool,
    /// The parent in the tree (`None` for the root or a detached node).
    pub parent: Option<NodeId>,
    /// The children in the tree.
    pub children: Vec<NodeId>,
    /// Input node → the child leading to it.
    pub routes: BTreeMap<NodeId, NodeId>,
    /// The cluster's `[cluster] size`; a write needs more than half of it durable.
    pub cluster_size: usize,
}

/// A client request as the input node's HTTP layer hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRequest {
    /// `true` for a write (executed by the writer), `false` for a read.
    pub is_write: bool,
    /// The client's last seen epoch: the answer reflects at least this.
    pub min_epoch: Epoch,
    /// The encoded request.
    pub payload: Vec<u8>,
}

/// One request's result from the writer's group commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteResult {
    /// The request.
    pub id: RequestId,
    /// The epoch its answer reflects: its entry's, or the batch's tail for a refused write.
    pub epoch: Epoch,
    /// The encoded answer (user-facing errors included) or a retryable error.
    pub outcome: Outcome,
}

/// A batch the writer committed locally.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommittedBatch {
    /// The term the batch was executed in (from [`Action::ExecuteWrite`]).
    pub term: Term,
    /// The log entries it wrote, consecutive after the previous tail, all in `term`.
    pub entries: Vec<Entry>,
    /// One result per request of the batch.
    pub results: Vec<WriteResult>,
    /// Change notifications to send once the batch is majority-durable.
    pub changes: Vec<Change>,
}

/// A local read's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResult {
    /// The log position the database reflected (its applied tail).
    pub position: Position,
    /// The answer was "not found": below the root it is confirmed upstream first.
    pub not_found: bool,
    /// The encoded answer, or a retryable error.
    pub outcome: Outcome,
}

/// Bytes to send to a peer on the data port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The peer.
    pub to: NodeId,
    /// An encoded [`Frame`].
    pub payload: Vec<u8>,
}

/// What the node must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Queue the request on the local writer's group commit, tagging its entries with `term`;
    /// report with [`DataPlane::committed`]. Only on a writable root.
    ExecuteWrite {
        /// The term to write the entries in.
        term: Term,
        /// The request.
        request: Request,
    },
    /// Run the read on the local database; report with [`DataPlane::read_done`].
    ExecuteRead(Request),
    /// Append these entries (consecutive after the local tail) to the local log, apply them,
    /// then report with [`DataPlane::local_durable`].
    AppendEntries(Vec<Entry>),
    /// Drop every entry above this epoch (a history a deposed writer wrote) and undo its
    /// effects (or restore a snapshot and re-apply).
    DropSuffixAfter(Epoch),
    /// Entries up to this epoch are majority-durable: they may be trimmed from the log once
    /// every node has them, and will never be dropped.
    CommitAdvanced(Epoch),
    /// Read the chunk at `offset` of snapshot `snapshot_id` (0: start a new snapshot) and
    /// hand it to [`DataPlane::snapshot_chunk_read`] for `peer`.
    ReadSnapshotChunk {
        /// The child asking.
        peer: NodeId,
        /// The snapshot (0: start one).
        snapshot_id: u64,
        /// The byte offset.
        offset: u64,
    },
    /// Store this chunk of the snapshot being received (offset 0 starts a new one); after the
    /// chunk with `done`, replace the database and log by it and call
    /// [`DataPlane::snapshot_installed`].
    InstallSnapshotChunk(SnapshotChunk),
    /// The answer to a request [`DataPlane::submit`] took.
    Answer {
        /// The correlation `submit` returned.
        id: RequestId,
        /// The epoch the answer reflects (the client's new last seen).
        epoch: Epoch,
        /// The answer.
        outcome: Outcome,
    },
    /// A change to push to the local live-update feed.
    Notify(Change),
    /// A safety rule would have been broken; the data plane refused. A bug: log and alert.
    SafetyViolation(String),
}

/// Counters for `/metrics`: every frame dropped and why, and the request paths taken.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames sent.
    pub frames_sent: u64,
    /// Frames received and accepted.
    pub frames_received: u64,
    /// Bytes that did not decode as a frame.
    pub frames_malformed: u64,
    /// Frames of an older term, refused.
    pub frames_stale_term: u64,
    /// Frames of a newer term (the control plane has not told us yet), refused.
    pub frames_newer_term: u64,
    /// Frames that made no sense in this role (entries at the root, a chunk not asked for).
    pub frames_ignored: u64,
    /// Requests passed to the parent.
    pub requests_forwarded: u64,
    /// Requests that found no tree or no parent.
    pub requests_no_writer: u64,
    /// Writes refused by a root that is not writable.
    pub writes_refused: u64,
    /// Writes handed to the local writer.
    pub writes_executed: u64,
    /// Reads run on the local database.
    pub reads_local: u64,
    /// Reads a replica passed up because it stayed behind the client's epoch.
    pub reads_passed_up: u64,
    /// "Not found" answers of a replica confirmed upstream.
    pub reads_confirmed_upstream: u64,
    /// Answers that could not be routed towards their origin.
    pub responses_unroutable: u64,
    /// Answers that came after their request had been answered (duplicates, late).
    pub responses_late: u64,
    /// Requests answered `Unavailable` at the input node's deadline.
    pub requests_timed_out: u64,
    /// Answers dropped because their epoch lost its term (a deposed writer's history).
    pub answers_lost_term: u64,
    /// Catch-up requests sent.
    pub catch_ups_sent: u64,
    /// Suffixes dropped.
    pub suffix_drops: u64,
    /// Snapshots offered to children.
    pub snapshots_offered: u64,
    /// Snapshots installed.
    pub snapshots_installed: u64,
    /// Safety rules that would have been broken (see [`Action::SafetyViolation`]).
    pub safety_violations: u64,
}

/// A snapshot this node is receiving.
#[derive(Debug, Clone)]
struct IncomingSnapshot {
    from: NodeId,
    snapshot_id: u64,
    next_offset: u64,
    last_request: Instant,
    complete: bool,
}

/// An answer waiting for its epoch to become majority-durable.
#[derive(Debug, Clone)]
struct Held {
    position: Position,
    response: Response,
    deadline: Instant,
}

#[derive(Debug, Clone)]
struct Pending {
    deadline: Instant,
    probe: bool,
}

#[derive(Debug, Clone)]
struct WaitingRead {
    request: Request,
    deadline: Instant,
}

/// One node's data plane. See the crate docs for the driver contract.
#[derive(Debug)]
pub struct DataPlane {
    config: DataConfig,
    place: Place,
    log: LogIndex,
    /// The local tail known durable (and applied).
    durable: Epoch,
    /// Entries up to here are known to match this term's writer's log.
    matched: Epoch,
    /// Known majority-durable position (a fact; never decreases except by a snapshot).
    commit: Epoch,
    /// Durable positions matching this term's log: this node and its subtree.
    positions: BTreeMap<NodeId, Epoch>,
    positions_dirty: bool,
    commit_dirty: bool,
    pending: HashMap<u64, Pending>,
    deadlines: BTreeSet<(Instant, u64)>,
    next_seq: u64,
    waiting_reads: Vec<WaitingRead>,
    local_reads: HashMap<RequestId, Request>,
    held: BTreeMap<(Epoch, u64), Held>,
    held_seq: u64,
    held_changes: BTreeMap<Epoch, Vec<Change>>,
    last_catch_up: Option<Instant>,
    next_tick: Instant,
    root_seen: Option<(Instant, bool)>,
    last_probe: Option<Instant>,
    snapshot_in: Option<IncomingSnapshot>,
    transmits: VecDeque<Transmit>,
    actions: VecDeque<Action>,
    counters: Counters,
}

impl DataPlane {
    /// A node's data plane over the local log as the store has it (durable and applied).
    pub fn new(now: Instant, config: DataConfig, log: LocalLog) -> Self {
        let mut index = LogIndex::new(log, config.cache_entries);
        index.set_commit(index.base().epoch);
        let durable = index.last();
        let commit = index.base().epoch;
        DataPlane {
            next_seq: config.incarnation.wrapping_shl(32),
            next_tick: now + config.resend_interval,
            config,
            place: Place::default(),
            log: index,
            durable,
            matched: 0,
            commit,
            positions: BTreeMap::new(),
            positions_dirty: false,
            commit_dirty: false,
            pending: HashMap::new(),
            deadlines: BTreeSet::new(),
            waiting_reads: Vec::new(),
            local_reads: HashMap::new(),
            held: BTreeMap::new(),
            held_seq: 0,
            held_changes: BTreeMap::new(),
            last_catch_up: None,
            root_seen: None,
            last_probe: None,
            snapshot_in: None,
            transmits: VecDeque::new(),
            actions: VecDeque::new(),
            counters: Counters::default(),
        }
    }

    // ---- queries -----------------------------------------------------------------------

    /// The current place.
    pub fn place(&self) -> &Place {
        &self.place
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The known majority-durable epoch.
    pub fn commit(&self) -> Epoch {
        self.commit
    }

    /// The local log's tail.
    pub fn last(&self) -> Position {
        self.log.last_position()
    }

    /// The local durable (and applied) epoch.
    pub fn durable(&self) -> Epoch {
        self.durable
    }

    /// The election key's log part: the position of the last durable entry.
    pub fn durable_position(&self) -> Position {
        self.log
            .position_at(self.durable)
            .unwrap_or(self.log.base())
    }

    /// The position of the local log's entry at `epoch` (the base for the base), if the log
    /// holds it: the term a read's epoch reflects, for [`ReadResult::position`].
    pub fn position_at(&self, epoch: Epoch) -> Option<Position> {
        self.log.position_at(epoch)
    }

    /// Whether a request from this node reaches a writable root: this node is one, or one
    /// answered within [`DataConfig::writer_reachable_for`].
    pub fn writer_reachable(&self, now: Instant) -> bool {
        if self.place.is_root {
            return self.place.writable;
        }
        self.root_seen.is_some_and(|(at, writable)| {
            writable && now.saturating_duration_since(at) <= self.config.writer_reachable_for
        })
    }

    // ---- outputs -----------------------------------------------------------------------

    /// The next frame to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next action, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When to call [`DataPlane::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = self.next_tick;
        if let Some(&(deadline, _)) = self.deadlines.first() {
            next = next.min(deadline);
        }
        if let Some(read) = self.waiting_reads.iter().map(|w| w.deadline).min() {
            next = next.min(read);
        }
        Some(next)
    }

    // ---- inputs ------------------------------------------------------------------------

    /// The control plane's view of this node changed (role, tree or term).
    pub fn set_place(&mut self, now: Instant, place: Place) {
        if place.term < self.place.term {
            self.counters.frames_ignored += 1;
            return;
        }
        let new_term = place.term != self.place.term;
        if new_term {
            self.positions.clear();
            self.matched = 0;
            self.last_catch_up = None;
            self.snapshot_in = None;
        } else if self
            .snapshot_in
            .as_ref()
            .is_some_and(|s| Some(s.from) != place.parent)
        {
            self.snapshot_in = None;
        }
        self.place = place;
        if self.place.is_root {
            self.matched = self.log.last();
            self.append_term_barrier();
        }
        self.update_own_position(now);
        self.positions_dirty = true;
        self.commit_dirty = true;
        self.next_tick = now;
        self.flush();
    }

    /// A frame from a peer on the data port.
    pub fn handle_frame(&mut self, now: Instant, from: NodeId, bytes: &[u8]) {
        let frame = match Frame::decode(bytes) {
            Ok(frame) => frame,
            Err(_) => {
                self.counters.frames_malformed += 1;
                return;
            }
        };
        if self.place.term == 0 || frame.term < self.place.term {
            self.counters.frames_stale_term += 1;
            return;
        }
        if frame.term > self.place.term {
            self.counters.frames_newer_term += 1;
            return;
        }
        self.counters.frames_received += 1;
        match frame.body {
            Body::Request(request) => self.route_request(now, request),
            Body::Response(response) => self.deliver_response(now, response),
            Body::Entries {
                prev,
                entries,
                commit,
            } => self.on_entries(now, prev, entries, commit),
            Body::Durable(positions) => self.on_durable_report(now, positions),
            Body::CatchUp { last, commit, runs } => self.serve_catch_up(from, last, commit, &runs),
            Body::SnapshotOffer { .. } => self.on_snapshot_offer(now, from),
            Body::SnapshotRequest {
                snapshot_id,
                offset,
            } => self.actions.push_back(Action::ReadSnapshotChunk {
                peer: from,
                snapshot_id,
                offset,
            }),
            Body::SnapshotChunk(chunk) => self.on_snapshot_chunk(now, from, chunk),
            Body::Changes(changes) => self.spread_changes(changes),
        }
        self.flush();
    }

    /// Timers: call at [`DataPlane::poll_timeout`] (earlier or later is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.expire_pending(now);
        self.expire_waiting_reads(now);
        if now >= self.next_tick {
            self.next_tick = now + self.config.resend_interval;
            self.expire_held(now);
            self.positions_dirty = true;
            self.commit_dirty = true;
            self.maybe_probe(now);
            self.retry_snapshot(now);
        }
        self.flush();
    }

    /// A client request from the local HTTP layer; the answer comes as [`Action::Answer`]
    /// with the returned id.
    pub fn submit(&mut self, now: Instant, request: ClientRequest) -> RequestId {
        let kind = if request.is_write {
            RequestKind::Write
        } else {
            RequestKind::Read
        };
        let id = self.new_pending(now, false);
        self.route_request(
            now,
            Request {
                id,
                min_epoch: request.min_epoch,
                kind,
                confirm: false,
                payload: request.payload,
            },
        );
        self.flush();
        id
    }

    /// The store made the local log durable (and applied) up to `position`.
    pub fn local_durable(&mut self, now: Instant, position: Position) {
        if position.epoch > self.durable && self.log.term_at(position.epoch) == Some(position.term)
        {
            self.durable = position.epoch;
            self.update_own_position(now);
            self.run_ready_reads(now);
        }
        self.flush();
    }

    /// The local writer committed a batch (its entries are in the local log).
    pub fn committed(&mut self, now: Instant, batch: CommittedBatch) {
        let prev = self.log.last_position();
        let follows = batch.entries.iter().enumerate().all(|(i, e)| {
            e.position.epoch == prev.epoch + 1 + i as u64 && e.position.term == batch.term
        });
        if !follows {
            self.violation(format!(
                "the writer's batch (term {}) does not follow the log tail {prev:?}",
                batch.term
            ));
            for result in batch.results {
                self.route_response(now, self.error_response(result.id, RetryableError::Storage));
            }
            self.flush();
            return;
        }
        self.log.append(&batch.entries);
        let still_writer = self.place.is_root && batch.term == self.place.term;
        if self.place.is_root {
            self.matched = self.log.last();
        }
        if !batch.entries.is_empty() {
            self.send_to_children(Body::Entries {
                prev,
                entries: batch.entries,
                commit: self.commit,
            });
        }
        let writer = self.writer_seen();
        for result in batch.results {
            if !still_writer {
                self.route_response(
                    now,
                    self.error_response(result.id, RetryableError::Unavailable),
                );
                continue;
            }
            let position = self
                .log
                .position_at(result.epoch)
                .unwrap_or(self.log.base());
            let response = Response {
                id: result.id,
                epoch: result.epoch,
                writer,
                outcome: result.outcome,
            };
            self.answer_when_committed(now, position, response);
        }
        if still_writer {
            for change in batch.changes {
                self.held_changes
                    .entry(change.epoch)
                    .or_default()
                    .push(change);
            }
        }
        self.update_own_position(now);
        self.release_changes();
        self.flush();
    }

    /// A local read finished.
    pub fn read_done(&mut self, now: Instant, id: RequestId, result: ReadResult) {
        let Some(mut request) = self.local_reads.remove(&id) else {
            self.counters.responses_late += 1;
            return;
        };
        if result.not_found && !self.place.is_root && self.place.parent.is_some() {
            self.counters.reads_confirmed_upstream += 1;
            request.confirm = true;
            self.forward(now, request);
        } else {
            let response = Response {
                id,
                epoch: result.position.epoch,
                writer: self.writer_seen(),
                outcome: result.outcome,
            };
            self.answer_when_committed(now, result.position, response);
        }
        self.flush();
    }

    /// The chunk the driver read for [`Action::ReadSnapshotChunk`].
    pub fn snapshot_chunk_read(&mut self, _now: Instant, peer: NodeId, chunk: SnapshotChunk) {
        self.send(peer, Body::SnapshotChunk(chunk));
    }

    /// The store could not drop a suffix [`Action::DropSuffixAfter`] asked for (it had
    /// already applied those entries: this node wrote them as a deposed writer): ask the
    /// parent for a snapshot, which replaces the database and the log.
    pub fn request_snapshot(&mut self, now: Instant) {
        let Some(parent) = self.place.parent else {
            return;
        };
        if self.place.is_root || self.snapshot_in.is_some() {
            return;
        }
        self.snapshot_in = Some(IncomingSnapshot {
            from: parent,
            snapshot_id: 0,
            next_offset: 0,
            last_request: now,
            complete: false,
        });
        self.send(
            parent,
            Body::SnapshotRequest {
                snapshot_id: 0,
                offset: 0,
            },
        );
        self.flush();
    }

    /// The snapshot received was installed: the database and log now reflect `base`.
    pub fn snapshot_installed(&mut self, now: Instant, base: Position) {
        self.log.reset_to(base);
        self.durable = base.epoch;
        self.matched = if self.place.is_root { base.epoch } else { 0 };
        self.commit = self.commit.min(base.epoch);
        self.log.set_commit(self.commit);
        self.snapshot_in = None;
        self.counters.snapshots_installed += 1;
        self.update_own_position(now);
        self.run_ready_reads(now);
        self.flush();
    }

    /// A writable root whose log ends in an older term appends an empty entry of its own
    /// term: the commit rule counts only current-term entries, so without it the older
    /// entries (and any retried write that finds its id among them) would wait for the next
    /// fresh write, possibly forever.
    fn append_term_barrier(&mut self) {
        let tail = self.log.last_position();
        if !self.place.writable || tail.term >= self.place.term {
            return;
        }
        let barrier = Entry {
            position: Position::new(self.place.term, tail.epoch + 1),
            payload: Vec::new(),
        };
        self.log.append(std::slice::from_ref(&barrier));
        self.matched = self.log.last();
        self.actions
            .push_back(Action::AppendEntries(vec![barrier.clone()]));
        self.send_to_children(Body::Entries {
            prev: tail,
            entries: vec![barrier],
            commit: self.commit,
        });
    }

    // ---- requests and responses ----------------------------------------------------------

    fn new_pending(&mut self, now: Instant, probe: bool) -> RequestId {
        self.next_seq += 1;
        let deadline = now + self.config.request_timeout;
        self.pending
            .insert(self.next_seq, Pending { deadline, probe });
        self.deadlines.insert((deadline, self.next_seq));
        RequestId {
            origin: self.config.node,
            seq: self.next_seq,
        }
    }

    fn route_request(&mut self, now: Instant, request: Request) {
        let attached = self.place.term != 0 && (self.place.is_root || self.place.parent.is_some());
        if !attached {
            self.counters.requests_no_writer += 1;
            self.route_response(
                now,
                self.error_response(request.id, RetryableError::NoWriter),
            );
            return;
        }
        match request.kind {
            RequestKind::Probe if self.place.is_root => {
                let response = Response {
                    id: request.id,
                    epoch: self.commit,
                    writer: self.writer_seen(),
                    outcome: Ok(Vec::new()),
                };
                self.route_response(now, response);
            }
            RequestKind::Write if self.place.is_root => {
                if self.place.writable {
                    self.counters.writes_executed += 1;
                    self.actions.push_back(Action::ExecuteWrite {
                        term: self.place.term,
                        request,
                    });
                } else {
                    self.counters.writes_refused += 1;
                    self.route_response(
                        now,
                        self.error_response(request.id, RetryableError::NotWritable),
                    );
                }
            }
            RequestKind::Read
                if self.place.is_root
                    || (self.place.replica && self.config.replica_reads && !request.confirm) =>
            {
                self.read_locally(now, request);
            }
            _ => self.forward(now, request),
        }
    }

    fn forward(&mut self, now: Instant, request: Request) {
        match self.place.parent {
            Some(parent) if !self.place.is_root => {
                self.counters.requests_forwarded += 1;
                self.send(parent, Body::Request(request));
            }
            _ => {
                self.counters.requests_no_writer += 1;
                self.route_response(
                    now,
                    self.error_response(request.id, RetryableError::NoWriter),
                );
            }
        }
    }

    fn read_locally(&mut self, now: Instant, request: Request) {
        if self.durable >= request.min_epoch && self.snapshot_in.is_none() {
            self.counters.reads_local += 1;
            self.local_reads.insert(request.id, request.clone());
            self.actions.push_back(Action::ExecuteRead(request));
        } else {
            self.waiting_reads.push(WaitingRead {
                request,
                deadline: now + self.config.read_wait,
            });
        }
    }

    fn run_ready_reads(&mut self, now: Instant) {
        if self.waiting_reads.is_empty() || self.snapshot_in.is_some() {
            return;
        }
        let durable = self.durable;
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting_reads)
            .into_iter()
            .partition(|w| w.request.min_epoch <= durable);
        self.waiting_reads = waiting;
        for read in ready {
            self.read_locally(now, read.request);
        }
    }

    fn expire_waiting_reads(&mut self, now: Instant) {
        if self.waiting_reads.iter().all(|w| w.deadline > now) {
            return;
        }
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting_reads)
            .into_iter()
            .partition(|w| w.deadline <= now);
        self.waiting_reads = waiting;
        for read in due {
            if self.place.is_root {
                let error = RetryableError::Behind {
                    have: self.durable,
                    want: read.request.min_epoch,
                };
                self.route_response(now, self.error_response(read.request.id, error));
            } else {
                self.counters.reads_passed_up += 1;
                self.forward(now, read.request);
            }
        }
    }

    fn writer_seen(&self) -> WriterSeen {
        match (self.place.is_root, self.place.writable) {
            (false, _) => WriterSeen::Unknown,
            (true, true) => WriterSeen::Writable,
            (true, false) => WriterSeen::NotWritable,
        }
    }

    fn error_response(&self, id: RequestId, error: RetryableError) -> Response {
        Response {
            id,
            epoch: self.durable,
            writer: self.writer_seen(),
            outcome: Err(error),
        }
    }

    /// Releases an answer only once its position is majority-durable and still in the log, so
    /// no client sees an epoch that a failover could take back.
    fn answer_when_committed(&mut self, now: Instant, position: Position, response: Response) {
        if position.epoch <= self.commit {
            self.release(now, position, response);
        } else {
            self.held_seq += 1;
            self.held.insert(
                (position.epoch, self.held_seq),
                Held {
                    position,
                    response,
                    deadline: now + self.config.request_timeout,
                },
            );
        }
    }

    fn release(&mut self, now: Instant, position: Position, mut response: Response) {
        // Below a snapshot's base the entry can no longer be checked: say "retry".
        let intact = self.log.term_at(position.epoch) == Some(position.term);
        if !intact {
            self.counters.answers_lost_term += 1;
            response.outcome = Err(RetryableError::Unavailable);
        }
        self.route_response(now, response);
    }

    fn release_held(&mut self, now: Instant) {
        while let Some(entry) = self.held.first_entry() {
            if entry.key().0 > self.commit {
                break;
            }
            let held = entry.remove();
            self.release(now, held.position, held.response);
        }
    }

    fn expire_held(&mut self, now: Instant) {
        let expired: Vec<_> = self
            .held
            .iter()
            .filter(|(_, h)| h.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            if let Some(held) = self.held.remove(&key) {
                let response = self.error_response(held.response.id, RetryableError::Unavailable);
                self.route_response(now, response);
            }
        }
    }

    fn route_response(&mut self, now: Instant, response: Response) {
        if response.id.origin == self.config.node {
            self.complete(now, response);
        } else if let Some(&hop) = self.place.routes.get(&response.id.origin) {
            self.send(hop, Body::Response(response));
        } else {
            self.counters.responses_unroutable += 1;
        }
    }

    fn deliver_response(&mut self, now: Instant, response: Response) {
        self.route_response(now, response);
    }

    fn complete(&mut self, now: Instant, response: Response) {
        let Some(pending) = self.pending.remove(&response.id.seq) else {
            self.counters.responses_late += 1;
            return;
        };
        self.deadlines.remove(&(pending.deadline, response.id.seq));
        if response.writer != WriterSeen::Unknown {
            self.root_seen = Some((now, response.writer == WriterSeen::Writable));
        }
        if !pending.probe {
            self.actions.push_back(Action::Answer {
                id: response.id,
                epoch: response.epoch,
                outcome: response.outcome,
            });
        }
    }

    fn expire_pending(&mut self, now: Instant) {
        while let Some(&(deadline, seq)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(pending) = self.pending.remove(&seq) {
                if !pending.probe {
                    self.counters.requests_timed_out += 1;
                    self.actions.push_back(Action::Answer {
                        id: RequestId {
                            origin: self.config.node,
                            seq,
                        },
                        epoch: self.durable,
                        outcome: Err(RetryableError::Unavailable),
                    });
                }
            }
        }
    }

    fn maybe_probe(&mut self, now: Instant) {
        if !self.place.input || self.place.is_root || self.place.parent.is_none() {
            return;
        }
        let stale = |at: Option<Instant>| {
            at.is_none_or(|at| now.saturating_duration_since(at) >= self.config.probe_interval)
        };
        if stale(self.root_seen.map(|(at, _)| at)) && stale(self.last_probe) {
            self.last_probe = Some(now);
            let id = self.new_pending(now, true);
            self.route_request(
                now,
                Request {
                    id,
                    min_epoch: 0,
                    kind: RequestKind::Probe,
                    confirm: false,
                    payload: Vec::new(),
                },
            );
        }
    }

    // ---- replication -------------------------------------------------------------------

    fn on_entries(&mut self, now: Instant, prev: Position, entries: Vec<Entry>, commit: Epoch) {
        if self.place.is_root || self.snapshot_in.is_some() {
            self.counters.frames_ignored += 1;
            return;
        }
        let base = self.log.base();
        let (prev, entries) = if prev.epoch < base.epoch {
            // Entries the snapshot already reflects (committed) are skipped.
            let skip = (base.epoch - prev.epoch) as usize;
            if skip > entries.len() {
                return;
            }
            (base, entries[skip..].to_vec())
        } else {
            (prev, entries)
        };
        if prev.epoch > self.log.last() || self.log.term_at(prev.epoch) != Some(prev.term) {
            self.request_catch_up(now);
            return;
        }
        let mut new_from = entries.len();
        for (i, entry) in entries.iter().enumerate() {
            let epoch = entry.position.epoch;
            if epoch > self.log.last() {
                new_from = i;
                break;
            }
            if self.log.term_at(epoch) == Some(entry.position.term) {
                continue;
            }
            // A different entry at this epoch: our suffix from here is an older term's.
            if !self.drop_suffix_after(epoch - 1) {
                return;
            }
            new_from = i;
            break;
        }
        let fresh = &entries[new_from..];
        if !fresh.is_empty() {
            let before = self.log.last_position();
            self.log.append(fresh);
            self.actions
                .push_back(Action::AppendEntries(fresh.to_vec()));
            self.send_to_children(Body::Entries {
                prev: before,
                entries: fresh.to_vec(),
                commit: self.commit.max(commit),
            });
        }
        let verified = prev.epoch + entries.len() as u64;
        self.matched = self.matched.max(verified);
        let commit = commit.min(self.matched);
        if commit > self.commit {
            self.advance_commit(now, commit);
        }
        self.update_own_position(now);
    }

    /// Drops the local suffix above `epoch`; refuses (and reports) below the commit position.
    fn drop_suffix_after(&mut self, epoch: Epoch) -> bool {
        if epoch < self.commit {
            self.violation(format!(
                "asked to drop entries above {epoch}, below the majority-durable {}",
                self.commit
            ));
            return false;
        }
        self.counters.suffix_drops += 1;
        self.log.truncate_after(epoch);
        self.durable = self.durable.min(epoch);
        self.matched = self.matched.min(epoch);
        self.actions.push_back(Action::DropSuffixAfter(epoch));
        true
    }

    fn request_catch_up(&mut self, now: Instant) {
        let Some(parent) = self.place.parent else {
            return;
        };
        if self
            .last_catch_up
            .is_some_and(|at| now.saturating_duration_since(at) < self.config.resend_interval)
        {
            return;
        }
        self.last_catch_up = Some(now);
        self.counters.catch_ups_sent += 1;
        let commit = self.commit.max(self.log.base().epoch);
        self.send(
            parent,
            Body::CatchUp {
                last: self.log.last(),
                commit,
                runs: self.log.runs_from(commit),
            },
        );
    }

    /// Sends a child what follows the point where its log and this node's verified log part.
    fn serve_catch_up(&mut self, child: NodeId, last: Epoch, commit: Epoch, runs: &[TermRun]) {
        if !self.place.is_root && self.matched == 0 {
            // Not yet verified against this term's writer: nothing trustworthy to serve.
            self.counters.frames_ignored += 1;
            return;
        }
        let tail = self.verified_tail().epoch;
        let base = self.log.base().epoch;
        let child_base = Position::new(0, commit);
        let mut common = last.min(tail);
        loop {
            if common <= commit || common <= base {
                break;
            }
            let child_term = term_in_runs(runs, child_base, last, common);
            if child_term.is_some() && child_term == self.log.term_at(common) {
                break;
            }
            let child_start = runs
                .iter()
                .rev()
                .find(|r| r.first_epoch <= common)
                .map_or(commit, |r| r.first_epoch);
            common = child_start
                .max(self.log.run_start(common))
                .saturating_sub(1);
        }
        let Some(prev) = self.log.position_at(common) else {
            self.offer_snapshot(child);
            return;
        };
        let until = tail.min(common + (self.config.max_entries_per_frame as u64) * 8);
        let Some(entries) = self.log.cached(common + 1, until) else {
            self.offer_snapshot(child);
            return;
        };
        if entries.is_empty() {
            self.send(
                child,
                Body::Entries {
                    prev,
                    entries,
                    commit: self.commit,
                },
            );
            return;
        }
        let mut prev = prev;
        for chunk in entries.chunks(self.config.max_entries_per_frame.max(1)) {
            let next = chunk.last().map_or(prev, |e| e.position);
            self.send(
                child,
                Body::Entries {
                    prev,
                    entries: chunk.to_vec(),
                    commit: self.commit,
                },
            );
            prev = next;
        }
    }

    fn offer_snapshot(&mut self, child: NodeId) {
        self.counters.snapshots_offered += 1;
        self.send(
            child,
            Body::SnapshotOffer {
                base: self.verified_tail(),
            },
        );
    }

    fn on_snapshot_offer(&mut self, now: Instant, from: NodeId) {
        if self.place.is_root || self.place.parent != Some(from) || self.snapshot_in.is_some() {
            self.counters.frames_ignored += 1;
            return;
        }
        self.snapshot_in = Some(IncomingSnapshot {
            from,
            snapshot_id: 0,
            next_offset: 0,
            last_request: now,
            complete: false,
        });
        self.send(
            from,
            Body::SnapshotRequest {
                snapshot_id: 0,
                offset: 0,
            },
        );
    }

    fn on_snapshot_chunk(&mut self, now: Instant, from: NodeId, chunk: SnapshotChunk) {
        let Some(incoming) = self.snapshot_in.as_mut() else {
            self.counters.frames_ignored += 1;
            return;
        };
        let expected = incoming.from == from
            && !incoming.complete
            && chunk.offset == incoming.next_offset
            && (incoming.snapshot_id == 0 || incoming.snapshot_id == chunk.snapshot_id)
            && chunk.snapshot_id != 0;
        if !expected {
            self.counters.frames_ignored += 1;
            return;
        }
        incoming.snapshot_id = chunk.snapshot_id;
        incoming.next_offset += chunk.data.len() as u64;
        incoming.last_request = now;
        incoming.complete = chunk.done;
        let request = (!chunk.done).then_some(Body::SnapshotRequest {
            snapshot_id: chunk.snapshot_id,
            offset: incoming.next_offset,
        });
        self.actions.push_back(Action::InstallSnapshotChunk(chunk));
        if let Some(request) = request {
            self.send(from, request);
        }
    }

    fn retry_snapshot(&mut self, now: Instant) {
        let parent = self.place.parent;
        let Some(incoming) = self.snapshot_in.as_mut() else {
            return;
        };
        if incoming.complete
            || now.saturating_duration_since(incoming.last_request)
                < self.config.resend_interval * 5
        {
            return;
        }
        // The tree changed under the transfer (or the old parent would not send: it was out
        // of step itself): start again from the parent there is now.
        if let Some(parent) = parent.filter(|p| *p != incoming.from) {
            incoming.from = parent;
            incoming.snapshot_id = 0;
            incoming.next_offset = 0;
        }
        incoming.last_request = now;
        let (to, body) = (
            incoming.from,
            Body::SnapshotRequest {
                snapshot_id: incoming.snapshot_id,
                offset: incoming.next_offset,
            },
        );
        self.send(to, body);
    }

    fn on_durable_report(&mut self, now: Instant, positions: Vec<(NodeId, Epoch)>) {
        for (node, epoch) in positions {
            if node == self.config.node {
                continue;
            }
            let known = self.positions.entry(node).or_insert(0);
            if epoch > *known {
                *known = epoch;
                self.positions_dirty = true;
            }
        }
        if self.place.is_root {
            self.recompute_commit(now);
        }
    }

    fn update_own_position(&mut self, now: Instant) {
        if self.place.term == 0 {
            return;
        }
        let position = self.durable.min(self.matched);
        let known = self.positions.entry(self.config.node).or_insert(0);
        if position > *known {
            *known = position;
            self.positions_dirty = true;
        }
        if self.place.is_root {
            self.recompute_commit(now);
        }
    }

    /// The root: the largest epoch durable on a majority of the cluster, counted only when its
    /// entry is of the current term (older entries commit with it).
    fn recompute_commit(&mut self, now: Instant) {
        let majority = self.place.cluster_size / 2 + 1;
        let mut durable: Vec<Epoch> = self.positions.values().copied().collect();
        durable.sort_unstable_by(|a, b| b.cmp(a));
        let Some(&candidate) = durable.get(majority - 1) else {
            return;
        };
        if candidate > self.commit && self.log.term_at(candidate) == Some(self.place.term) {
            self.advance_commit(now, candidate);
        }
    }

    fn advance_commit(&mut self, now: Instant, commit: Epoch) {
        self.commit = commit;
        self.log.set_commit(commit);
        self.commit_dirty = true;
        self.actions.push_back(Action::CommitAdvanced(commit));
        self.release_held(now);
        self.release_changes();
    }

    fn release_changes(&mut self) {
        let mut ready = Vec::new();
        while let Some(entry) = self.held_changes.first_entry() {
            if *entry.key() > self.commit {
                break;
            }
            ready.extend(entry.remove());
        }
        if !ready.is_empty() {
            self.spread_changes(ready);
        }
    }

    fn spread_changes(&mut self, changes: Vec<Change>) {
        self.send_to_children(Body::Changes(changes.clone()));
        self.actions.extend(changes.into_iter().map(Action::Notify));
    }

    /// The part of the local log known to be this term's writer's.
    fn verified_tail(&self) -> Position {
        let epoch = self.matched.max(self.log.base().epoch).min(self.log.last());
        self.log.position_at(epoch).unwrap_or(self.log.base())
    }

    /// Sends what changed: durable positions up, the tail and commit down (heartbeats).
    fn flush(&mut self) {
        if self.place.term == 0 {
            return;
        }
        if std::mem::take(&mut self.positions_dirty) && !self.place.is_root {
            if let Some(parent) = self.place.parent {
                let positions = self.positions.iter().map(|(&n, &e)| (n, e)).collect();
                self.send(parent, Body::Durable(positions));
            }
        }
        if std::mem::take(&mut self.commit_dirty) {
            let prev = self.verified_tail();
            self.send_to_children(Body::Entries {
                prev,
                entries: Vec::new(),
                commit: self.commit,
            });
        }
    }

    fn send_to_children(&mut self, body: Body) {
        if self.place.children.is_empty() {
            return;
        }
        let payload = Frame::new(self.place.term, body).encode();
        for i in 0..self.place.children.len() {
            let to = self.place.children[i];
            self.counters.frames_sent += 1;
            self.transmits.push_back(Transmit {
                to,
                payload: payload.clone(),
            });
        }
    }

    fn send(&mut self, to: NodeId, body: Body) {
        self.counters.frames_sent += 1;
        self.transmits.push_back(Transmit {
            to,
            payload: Frame::new(self.place.term, body).encode(),
        });
    }

    fn violation(&mut self, detail: String) {
        self.counters.safety_violations += 1;
        self.actions.push_back(Action::SafetyViolation(detail));
    }
}
