//! A deterministic, seeded simulator of whole clusters' data planes.
//!
//! Each node runs a real [`DataPlane`] over a model store (a log of `(term, epoch, write id)`
//! entries with a durable prefix and a group-commit writer that replays a known write id) on a
//! virtual clock and a network that delays, reorders, loses and duplicates frames. The test
//! plays the control plane: it changes terms, choosing each new root as the member with the
//! highest (last durable term, epoch) among the new tree's members, as the election does, and
//! marks it writable only when the tree holds a majority; it crashes nodes (they lose what was
//! not durable) and restarts them.
//!
//! Invariants, checked as the run goes: every acknowledged write is in every later writable
//! root's log exactly once; no two different entries share a (term, epoch) anywhere; a write is
//! answered, and a commit position advanced, only when a majority holds it durably; reads reflect
//! at least the client's epoch and see the client's own acknowledged writes; no safety violation
//! is reported. After the faults stop and one tree spans every node, writes from every input
//! node succeed and every node's log converges to the writer's.
//!
//! `CHAT_SIM_SEEDS=N` runs N seeds per scenario; `CHAT_SIM_SEED=S` replays one. A failure
//! prints its replay command.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use chat_data::{
    Action, Body, ClientRequest, CommittedBatch, DataConfig, DataPlane, Entry, Epoch, Frame,
    LocalLog, NodeId, Place, Position, ReadResult, RequestId, RetryableError, SnapshotChunk, Term,
    TermRun, WriteResult,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

#[derive(Debug, Clone, Copy)]
enum Shape {
    Line,
    Star,
    Random,
}

#[derive(Debug, Clone)]
struct Scenario {
    nodes: usize,
    shape: Shape,
    loss: f64,
    duplicate: f64,
    delay_ms: (u64, u64),
    /// Term changes, crashes and minority trees while the workload runs.
    faults: bool,
    cache_entries: usize,
    duration: Duration,
    /// After healing, require every write answered and every log equal to the writer's.
    converge: bool,
}

#[derive(Debug)]
enum Event {
    Deliver {
        from: NodeId,
        to: NodeId,
        payload: Vec<u8>,
    },
    Timer {
        node: NodeId,
    },
    Fsync {
        node: NodeId,
        incarnation: u64,
        generation: u64,
        upto: Epoch,
    },
    WriterBatch {
        node: NodeId,
        incarnation: u64,
    },
    ReadDone {
        node: NodeId,
        incarnation: u64,
        id: RequestId,
        result: ReadResult,
    },
    ChunkRead {
        node: NodeId,
        incarnation: u64,
        peer: NodeId,
        chunk: SnapshotChunk,
    },
    Installed {
        node: NodeId,
        incarnation: u64,
        base: Position,
    },
    ClientWrite {
        node: NodeId,
    },
    ClientRead {
        node: NodeId,
    },
    TermChange {
        all: bool,
    },
    Crash {
        node: NodeId,
    },
    Restart {
        node: NodeId,
    },
}

#[derive(Debug, Default)]
struct Store {
    /// Entry i has epoch i + 1.
    log: Vec<Entry>,
    durable: usize,
    /// Bumped when the log is truncated, so an older fsync cannot mark newer entries durable.
    generation: u64,
    writer_queue: Vec<(Term, chat_data::Request)>,
    batch_scheduled: bool,
    snapshots: HashMap<u64, (Position, Vec<u8>)>,
    next_snapshot: u64,
    receiving: Vec<u8>,
    /// The last `CommitAdvanced`: snapshots reflect the state at or below it.
    commit: usize,
}

impl Store {
    fn position(&self, len: usize) -> Position {
        if len == 0 {
            Position::default()
        } else {
            self.log[len - 1].position
        }
    }

    fn durable_position(&self) -> Position {
        self.position(self.durable)
    }

    fn holds_durably(&self, position: Position) -> bool {
        position.epoch == 0
            || (position.epoch as usize <= self.durable
                && self.log[position.epoch as usize - 1].position == position)
    }

    fn local_log(&self) -> LocalLog {
        let mut runs: Vec<TermRun> = Vec::new();
        for entry in &self.log[..self.durable] {
            if runs.last().map(|r| r.term) != Some(entry.position.term) {
                runs.push(TermRun {
                    term: entry.position.term,
                    first_epoch: entry.position.epoch,
                });
            }
        }
        LocalLog {
            base: Position::default(),
            runs,
            last: self.durable as Epoch,
            recent: self.log[..self.durable].to_vec(),
        }
    }
}

struct SimNode {
    plane: Option<DataPlane>,
    store: Store,
    incarnation: u64,
    timer_at: Option<Instant>,
    /// The client's last seen epoch on this input node.
    seen_epoch: Epoch,
    /// Write ids this node's clients are waiting for, by request.
    waiting_writes: HashMap<RequestId, u64>,
    waiting_reads: HashMap<RequestId, (u64, Epoch)>,
    /// Writes to retry (their earlier attempt failed retryably).
    retry: Vec<u64>,
    place: Place,
}

struct Sim {
    scenario: Scenario,
    rng: SmallRng,
    start: Instant,
    now: Instant,
    queue: BinaryHeap<Reverse<(Instant, u64, usize)>>,
    events: HashMap<usize, Event>,
    next_event: usize,
    seq: u64,
    nodes: BTreeMap<NodeId, SimNode>,
    term: Term,
    /// Every (term, epoch) ever written, and what.
    written: HashMap<(Term, Epoch), Vec<u8>>,
    /// Every position each write id was ever written at.
    positions_of: HashMap<u64, Vec<Position>>,
    /// Acknowledged write ids and the position that holds each.
    acknowledged: BTreeMap<u64, Position>,
    next_write: u64,
    failure: Option<String>,
    faults_on: bool,
    stats: Stats,
}

#[derive(Debug, Default)]
struct Stats {
    acked: u64,
    retryable: u64,
    reads_ok: u64,
    term_changes: u64,
    crashes: u64,
}

/// The write id an entry carries (0 for a term barrier, which carries nothing).
fn write_id(payload: &[u8]) -> u64 {
    payload.try_into().map_or(0, u64::from_le_bytes)
}

impl Sim {
    fn new(seed: u64, scenario: Scenario) -> Self {
        let start = Instant::now();
        let mut sim = Sim {
            rng: SmallRng::seed_from_u64(seed),
            start,
            now: start,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            next_event: 0,
            seq: 0,
            nodes: BTreeMap::new(),
            term: 0,
            written: HashMap::new(),
            positions_of: HashMap::new(),
            acknowledged: BTreeMap::new(),
            next_write: 1,
            failure: None,
            faults_on: scenario.faults,
            stats: Stats::default(),
            scenario,
        };
        for id in 1..=sim.scenario.nodes as NodeId {
            let plane = DataPlane::new(start, sim.config(id), LocalLog::default());
            sim.nodes.insert(
                id,
                SimNode {
                    plane: Some(plane),
                    store: Store::default(),
                    incarnation: 0,
                    timer_at: None,
                    seen_epoch: 0,
                    waiting_writes: HashMap::new(),
                    waiting_reads: HashMap::new(),
                    retry: Vec::new(),
                    place: Place::default(),
                },
            );
        }
        sim
    }

    fn config(&self, node: NodeId) -> DataConfig {
        DataConfig {
            incarnation: self.nodes.get(&node).map_or(0, |n| n.incarnation),
            cache_entries: self.scenario.cache_entries,
            max_entries_per_frame: 16,
            request_timeout: Duration::from_millis(1500),
            ..DataConfig::new(node)
        }
    }

    fn fail(&mut self, message: String) {
        if self.failure.is_none() {
            self.failure = Some(format!("at {:?}: {message}", self.now - self.start));
        }
    }

    fn schedule(&mut self, after: Duration, event: Event) {
        self.seq += 1;
        let key = self.next_event;
        self.next_event += 1;
        self.events.insert(key, event);
        self.queue.push(Reverse((self.now + after, self.seq, key)));
    }

    fn random_ms(&mut self, range: (u64, u64)) -> Duration {
        Duration::from_micros(self.rng.random_range(range.0 * 1000..=range.1 * 1000))
    }

    fn majority(&self) -> usize {
        self.scenario.nodes / 2 + 1
    }

    fn alive(&self, node: NodeId) -> bool {
        self.nodes[&node].plane.is_some()
    }

    // ---- the control plane's part -------------------------------------------------------

    /// A new term over `members`: the root is the member with the highest durable key.
    fn new_tree(&mut self, mut members: Vec<NodeId>, shape: Shape) {
        self.term += 1;
        self.stats.term_changes += 1;
        let term = self.term;
        // The previous writer's lease runs out before anyone else can be writable.
        for node in self.nodes.values_mut() {
            if node.place.writable {
                node.place.writable = false;
                if let Some(plane) = node.plane.as_mut() {
                    plane.set_place(self.now, node.place.clone());
                }
            }
        }
        members.sort_by_key(|&m| {
            let key = self.nodes[&m].store.durable_position();
            Reverse((key.term, key.epoch, Reverse(m)))
        });
        let root = members[0];
        let mut order = members.clone();
        let rest = &mut order[1..];
        for i in (1..rest.len()).rev() {
            let j = self.rng.random_range(0..=i);
            rest.swap(i, j);
        }
        let mut parent: BTreeMap<NodeId, NodeId> = BTreeMap::new();
        for (i, &node) in order.iter().enumerate().skip(1) {
            let p = match shape {
                Shape::Line => order[i - 1],
                Shape::Star => root,
                Shape::Random => order[self.rng.random_range(0..i)],
            };
            parent.insert(node, p);
        }
        let writable = members.len() >= self.majority();
        if std::env::var("CHAT_SIM_TRACE").is_ok() {
            eprintln!(
                "{:?} term {term}: root {root} writable {writable} parents {parent:?}",
                self.now - self.start
            );
        }
        for &node in &members {
            let children: Vec<NodeId> = parent
                .iter()
                .filter(|(_, &p)| p == node)
                .map(|(&c, _)| c)
                .collect();
            let mut routes = BTreeMap::new();
            for &other in &members {
                // The child of `node` on the way to `other`, if `other` is below `node`.
                let mut at = other;
                while let Some(&p) = parent.get(&at) {
                    if p == node {
                        routes.insert(other, at);
                        break;
                    }
                    at = p;
                }
            }
            let place = Place {
                term,
                is_root: node == root,
                writable: node == root && writable,
                replica: parent.get(&node) == Some(&root),
                input: true,
                parent: parent.get(&node).copied(),
                children,
                routes,
                cluster_size: self.scenario.nodes,
            };
            let entry = self.nodes.get_mut(&node).expect("member");
            entry.place = place.clone();
            if let Some(plane) = entry.plane.as_mut() {
                plane.set_place(self.now, place);
            }
        }
        if writable {
            self.check_writer_holds_acknowledged(root);
        }
        for &node in &members {
            self.drain(node);
        }
    }

    fn check_writer_holds_acknowledged(&mut self, root: NodeId) {
        let log = &self.nodes[&root].store.log;
        let mut counts: HashMap<u64, usize> = HashMap::new();
        for entry in log.iter().filter(|e| !e.payload.is_empty()) {
            *counts.entry(write_id(&entry.payload)).or_default() += 1;
        }
        let bad: Vec<_> = self
            .acknowledged
            .keys()
            .filter(|id| counts.get(id) != Some(&1))
            .map(|id| (*id, counts.get(id).copied().unwrap_or(0)))
            .collect();
        if !bad.is_empty() {
            self.fail(format!(
                "new writer {root} (term {}) lacks or repeats acknowledged writes (id, copies): {bad:?}",
                self.term
            ));
        }
    }

    // ---- running ------------------------------------------------------------------------

    fn drain(&mut self, id: NodeId) {
        loop {
            let node = self.nodes.get_mut(&id).expect("node");
            let Some(plane) = node.plane.as_mut() else {
                return;
            };
            if let Some(transmit) = plane.poll_transmit() {
                self.transmit(id, transmit.to, transmit.payload);
                continue;
            }
            if let Some(action) = plane.poll_action() {
                self.act(id, action);
                continue;
            }
            let due = plane.poll_timeout();
            if let Some(due) = due {
                if node.timer_at.is_none_or(|at| due < at || at <= self.now) {
                    node.timer_at = Some(due);
                    let after = due.saturating_duration_since(self.now);
                    self.schedule(after, Event::Timer { node: id });
                }
            }
            return;
        }
    }

    fn transmit(&mut self, from: NodeId, to: NodeId, payload: Vec<u8>) {
        if !self.nodes.contains_key(&to) {
            self.fail(format!("{from} sent to unknown node {to}"));
            return;
        }
        if self.rng.random_bool(self.scenario.loss) {
            return;
        }
        let copies = if self.rng.random_bool(self.scenario.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self.random_ms(self.scenario.delay_ms);
            self.schedule(
                delay,
                Event::Deliver {
                    from,
                    to,
                    payload: payload.clone(),
                },
            );
        }
    }

    fn act(&mut self, id: NodeId, action: Action) {
        if std::env::var("CHAT_SIM_TRACE").is_ok() {
            let shown = match &action {
                Action::AppendEntries(e) => format!(
                    "append {:?}..{:?}",
                    e.first().map(|e| e.position),
                    e.last().map(|e| e.position)
                ),
                other => format!("{other:?}"),
            };
            eprintln!("{:?} node {id}: {shown}", self.now - self.start);
        }
        match action {
            Action::ExecuteWrite { term, request } => {
                let node = self.nodes.get_mut(&id).expect("node");
                node.store.writer_queue.push((term, request));
                if !node.store.batch_scheduled {
                    node.store.batch_scheduled = true;
                    let incarnation = node.incarnation;
                    let delay = self.random_ms((0, 2));
                    self.schedule(
                        delay,
                        Event::WriterBatch {
                            node: id,
                            incarnation,
                        },
                    );
                }
            }
            Action::ExecuteRead(request) => {
                let store = &self.nodes[&id].store;
                let wanted = write_id(&request.payload);
                let found = store.log[..store.durable]
                    .iter()
                    .any(|e| write_id(&e.payload) == wanted);
                let result = ReadResult {
                    position: store.durable_position(),
                    not_found: !found,
                    outcome: Ok(vec![u8::from(found)]),
                };
                let incarnation = self.nodes[&id].incarnation;
                let delay = self.random_ms((0, 1));
                self.schedule(
                    delay,
                    Event::ReadDone {
                        node: id,
                        incarnation,
                        id: request.id,
                        result,
                    },
                );
            }
            Action::AppendEntries(entries) => {
                let store = &mut self.nodes.get_mut(&id).expect("node").store;
                let first = entries.first().map_or(0, |e| e.position.epoch);
                if first != store.log.len() as Epoch + 1 {
                    let len = store.log.len();
                    self.fail(format!(
                        "node {id}: append at epoch {first} onto a log of {len} entries"
                    ));
                    return;
                }
                store.log.extend(entries.iter().cloned());
                let upto = store.log.len() as Epoch;
                self.record_written(id, &entries);
                self.schedule_fsync(id, upto);
            }
            Action::DropSuffixAfter(epoch) => {
                let store = &mut self.nodes.get_mut(&id).expect("node").store;
                store.log.truncate(epoch as usize);
                store.durable = store.durable.min(epoch as usize);
                store.commit = store.commit.min(epoch as usize);
                store.generation += 1;
            }
            Action::CommitAdvanced(epoch) => {
                let store = &mut self.nodes.get_mut(&id).expect("node").store;
                store.commit = store.commit.max(epoch as usize);
                let store = &self.nodes[&id].store;
                if epoch as usize > store.log.len() {
                    self.fail(format!("node {id}: commit {epoch} beyond its log"));
                    return;
                }
                let position = store.position(epoch as usize);
                self.check_majority(id, position, "commit");
            }
            Action::ReadSnapshotChunk {
                peer,
                snapshot_id,
                offset,
            } => {
                let node = self.nodes.get_mut(&id).expect("node");
                let store = &mut node.store;
                let snapshot_id = if snapshot_id == 0 {
                    store.next_snapshot += 1;
                    let upto = store.durable.min(store.commit);
                    let base = store.position(upto);
                    let bytes = Frame::new(
                        0,
                        Body::Entries {
                            prev: Position::default(),
                            entries: store.log[..upto].to_vec(),
                            commit: 0,
                        },
                    )
                    .encode();
                    store.snapshots.insert(store.next_snapshot, (base, bytes));
                    store.next_snapshot
                } else {
                    snapshot_id
                };
                let Some((base, bytes)) = store.snapshots.get(&snapshot_id) else {
                    return;
                };
                let offset = (offset as usize).min(bytes.len());
                let end = (offset + 700).min(bytes.len());
                let chunk = SnapshotChunk {
                    snapshot_id,
                    base: *base,
                    offset: offset as u64,
                    data: bytes[offset..end].to_vec(),
                    done: end == bytes.len(),
                };
                let incarnation = node.incarnation;
                self.schedule(
                    Duration::from_micros(200),
                    Event::ChunkRead {
                        node: id,
                        incarnation,
                        peer,
                        chunk,
                    },
                );
            }
            Action::InstallSnapshotChunk(chunk) => {
                let node = self.nodes.get_mut(&id).expect("node");
                if chunk.offset == 0 {
                    node.store.receiving.clear();
                }
                node.store.receiving.extend_from_slice(&chunk.data);
                if chunk.done {
                    let bytes = std::mem::take(&mut node.store.receiving);
                    let Ok(Frame {
                        body: Body::Entries { entries, .. },
                        ..
                    }) = Frame::decode(&bytes)
                    else {
                        self.fail(format!("node {id}: snapshot did not decode"));
                        return;
                    };
                    if entries.last().map_or(Position::default(), |e| e.position) != chunk.base {
                        self.fail(format!("node {id}: snapshot base mismatch"));
                        return;
                    }
                    let store = &mut node.store;
                    store.log = entries;
                    store.durable = store.log.len();
                    store.commit = store.log.len();
                    store.generation += 1;
                    let incarnation = node.incarnation;
                    self.schedule(
                        Duration::from_micros(300),
                        Event::Installed {
                            node: id,
                            incarnation,
                            base: chunk.base,
                        },
                    );
                }
            }
            Action::Answer {
                id: request,
                epoch,
                outcome,
            } => self.on_answer(id, request, epoch, outcome),
            Action::Notify(_) => {}
            Action::SafetyViolation(detail) => self.fail(format!("node {id}: {detail}")),
        }
    }

    fn record_written(&mut self, node: NodeId, entries: &[Entry]) {
        for entry in entries {
            let key = (entry.position.term, entry.position.epoch);
            match self.written.get(&key) {
                Some(payload) if *payload != entry.payload => {
                    self.fail(format!(
                        "node {node}: two different entries at term {} epoch {}",
                        key.0, key.1
                    ));
                }
                Some(_) => {}
                None => {
                    self.written.insert(key, entry.payload.clone());
                    self.positions_of
                        .entry(write_id(&entry.payload))
                        .or_default()
                        .push(entry.position);
                }
            }
        }
    }

    fn schedule_fsync(&mut self, id: NodeId, upto: Epoch) {
        let node = &self.nodes[&id];
        let (incarnation, generation) = (node.incarnation, node.store.generation);
        let delay = self.random_ms((0, 3));
        self.schedule(
            delay,
            Event::Fsync {
                node: id,
                incarnation,
                generation,
                upto,
            },
        );
    }

    fn check_majority(&mut self, at: NodeId, position: Position, what: &str) {
        let holders = self
            .nodes
            .values()
            .filter(|n| n.store.holds_durably(position))
            .count();
        if holders < self.majority() {
            self.fail(format!(
                "node {at}: {what} at {position:?} held durably by {holders} nodes, fewer than a majority"
            ));
        }
    }

    fn on_answer(
        &mut self,
        id: NodeId,
        request: RequestId,
        epoch: Epoch,
        outcome: Result<Vec<u8>, RetryableError>,
    ) {
        let node = self.nodes.get_mut(&id).expect("node");
        if let Some(write) = node.waiting_writes.remove(&request) {
            match outcome {
                Ok(_) => {
                    node.seen_epoch = node.seen_epoch.max(epoch);
                    let position = self.find(write, epoch);
                    match position {
                        Some(position) => {
                            self.check_majority(id, position, "write answer");
                            self.acknowledged.insert(write, position);
                            self.stats.acked += 1;
                        }
                        None => {
                            let known = self.positions_of.get(&write).cloned();
                            self.fail(format!(
                                "node {id}: write {write} answered at epoch {epoch} but was written at {known:?}"
                            ))
                        }
                    }
                }
                Err(_) => {
                    self.stats.retryable += 1;
                    node.retry.push(write);
                }
            }
        } else if let Some((wanted, min_epoch)) = node.waiting_reads.remove(&request) {
            if let Ok(found) = outcome {
                self.stats.reads_ok += 1;
                node.seen_epoch = node.seen_epoch.max(epoch);
                if epoch < min_epoch {
                    self.fail(format!(
                        "node {id}: read answered at epoch {epoch} below the client's {min_epoch}"
                    ));
                }
                if found != [1] {
                    self.fail(format!(
                        "node {id}: read of acknowledged write {wanted} (min epoch {min_epoch}) answered not found at epoch {epoch}"
                    ));
                }
            }
        } else {
            self.fail(format!("node {id}: answer for unknown request {request:?}"));
        }
    }

    /// The position `write` was written at with this epoch.
    fn find(&self, write: u64, epoch: Epoch) -> Option<Position> {
        self.positions_of
            .get(&write)?
            .iter()
            .copied()
            .filter(|p| p.epoch == epoch)
            .max()
    }

    fn writer_batch(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("node");
        node.store.batch_scheduled = false;
        let queue = std::mem::take(&mut node.store.writer_queue);
        let Some(plane) = node.plane.as_ref() else {
            return;
        };
        let place = plane.place().clone();
        let mut batch = CommittedBatch {
            term: place.term,
            ..CommittedBatch::default()
        };
        let mut stale = CommittedBatch {
            term: place.term,
            ..CommittedBatch::default()
        };
        for (term, request) in queue {
            let write = write_id(&request.payload);
            if term != place.term || !place.is_root {
                // The store refuses writes queued in an older term.
                stale.results.push(WriteResult {
                    id: request.id,
                    epoch: 0,
                    outcome: Err(RetryableError::Unavailable),
                });
                continue;
            }
            let store = &mut node.store;
            let existing = store.log.iter().find(|e| write_id(&e.payload) == write);
            let epoch = match existing {
                Some(entry) => entry.position.epoch,
                None => {
                    let entry = Entry {
                        position: Position::new(term, store.log.len() as Epoch + 1),
                        payload: request.payload.clone(),
                    };
                    store.log.push(entry.clone());
                    batch.entries.push(entry);
                    store.log.len() as Epoch
                }
            };
            batch.results.push(WriteResult {
                id: request.id,
                epoch,
                outcome: Ok(Vec::new()),
            });
        }
        let entries = batch.entries.clone();
        self.record_written(id, &entries);
        let upto = self.nodes[&id].store.log.len() as Epoch;
        let now = self.now;
        let plane = self
            .nodes
            .get_mut(&id)
            .and_then(|n| n.plane.as_mut())
            .expect("alive");
        if !stale.results.is_empty() {
            plane.committed(now, stale);
        }
        if !batch.results.is_empty() {
            plane.committed(now, batch);
        }
        if !entries.is_empty() {
            self.schedule_fsync(id, upto);
        }
    }

    fn client_write(&mut self, id: NodeId) {
        let calm = self.now >= self.start + self.scenario.duration && !self.faults_on;
        let node = self.nodes.get_mut(&id).expect("node");
        let write = match node.retry.pop() {
            Some(write) => write,
            None if calm => return,
            None => {
                let write = self.next_write;
                self.next_write += 1;
                write
            }
        };
        let min_epoch = node.seen_epoch;
        let Some(plane) = node.plane.as_mut() else {
            return;
        };
        let request = plane.submit(
            self.now,
            ClientRequest {
                is_write: true,
                min_epoch,
                payload: write.to_le_bytes().to_vec(),
            },
        );
        node.waiting_writes.insert(request, write);
    }

    fn client_read(&mut self, id: NodeId) {
        // Read back one of this node's own acknowledged writes, with its last seen epoch.
        let node = &self.nodes[&id];
        let min_epoch = node.seen_epoch;
        let candidates: Vec<u64> = self
            .acknowledged
            .iter()
            .filter(|(_, p)| p.epoch <= min_epoch)
            .map(|(&w, _)| w)
            .collect();
        if candidates.is_empty() {
            return;
        }
        let wanted = candidates[self.rng.random_range(0..candidates.len())];
        let node = self.nodes.get_mut(&id).expect("node");
        let Some(plane) = node.plane.as_mut() else {
            return;
        };
        let request = plane.submit(
            self.now,
            ClientRequest {
                is_write: false,
                min_epoch,
                payload: wanted.to_le_bytes().to_vec(),
            },
        );
        node.waiting_reads.insert(request, (wanted, min_epoch));
    }

    fn crash(&mut self, id: NodeId) {
        self.stats.crashes += 1;
        let node = self.nodes.get_mut(&id).expect("node");
        node.plane = None;
        node.incarnation += 1;
        node.timer_at = None;
        let store = &mut node.store;
        store.log.truncate(store.durable);
        store.commit = store.commit.min(store.durable);
        store.generation += 1;
        store.writer_queue.clear();
        store.batch_scheduled = false;
        store.receiving.clear();
        // In-flight client requests die with the process.
        // Sorted: a HashMap's order would make the replay differ from the run.
        let mut lost: Vec<u64> = node.waiting_writes.drain().map(|(_, w)| w).collect();
        lost.sort_unstable();
        node.retry.extend(lost);
        node.waiting_reads.clear();
        node.place.writable = false;
    }

    fn restart(&mut self, id: NodeId) {
        let config = self.config(id);
        let now = self.now;
        let term = self.term;
        let node = self.nodes.get_mut(&id).expect("node");
        let mut plane = DataPlane::new(now, config, node.store.local_log());
        // It rejoins its tree if that tree still stands (never as the root: a restarted root
        // waits for the next election).
        if node.place.term == term && !node.place.is_root && node.place.term != 0 {
            plane.set_place(now, node.place.clone());
        } else {
            node.place = Place::default();
        }
        node.plane = Some(plane);
        self.drain(id);
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Deliver { from, to, payload } => {
                let now = self.now;
                if let Some(plane) = self.nodes.get_mut(&to).and_then(|n| n.plane.as_mut()) {
                    plane.handle_frame(now, from, &payload);
                    self.drain(to);
                }
            }
            Event::Timer { node } => {
                let now = self.now;
                let entry = self.nodes.get_mut(&node).expect("node");
                if entry.timer_at.is_some_and(|at| at <= now) {
                    entry.timer_at = None;
                }
                if let Some(plane) = entry.plane.as_mut() {
                    if plane.poll_timeout().is_some_and(|at| at <= now) {
                        plane.handle_timeout(now);
                    }
                    self.drain(node);
                }
            }
            Event::Fsync {
                node,
                incarnation,
                generation,
                upto,
            } => {
                let now = self.now;
                let entry = self.nodes.get_mut(&node).expect("node");
                if entry.incarnation != incarnation || entry.store.generation != generation {
                    return;
                }
                let store = &mut entry.store;
                store.durable = store.durable.max((upto as usize).min(store.log.len()));
                let position = store.durable_position();
                if let Some(plane) = entry.plane.as_mut() {
                    plane.local_durable(now, position);
                    self.drain(node);
                }
            }
            Event::WriterBatch { node, incarnation } => {
                if self.nodes[&node].incarnation == incarnation && self.alive(node) {
                    self.writer_batch(node);
                    self.drain(node);
                }
            }
            Event::ReadDone {
                node,
                incarnation,
                id,
                result,
            } => {
                let now = self.now;
                let entry = self.nodes.get_mut(&node).expect("node");
                if entry.incarnation == incarnation {
                    if let Some(plane) = entry.plane.as_mut() {
                        plane.read_done(now, id, result);
                        self.drain(node);
                    }
                }
            }
            Event::ChunkRead {
                node,
                incarnation,
                peer,
                chunk,
            } => {
                let now = self.now;
                let entry = self.nodes.get_mut(&node).expect("node");
                if entry.incarnation == incarnation {
                    if let Some(plane) = entry.plane.as_mut() {
                        plane.snapshot_chunk_read(now, peer, chunk);
                        self.drain(node);
                    }
                }
            }
            Event::Installed {
                node,
                incarnation,
                base,
            } => {
                let now = self.now;
                let entry = self.nodes.get_mut(&node).expect("node");
                if entry.incarnation == incarnation {
                    if let Some(plane) = entry.plane.as_mut() {
                        plane.snapshot_installed(now, base);
                        self.drain(node);
                    }
                }
            }
            Event::ClientWrite { node } => {
                if self.alive(node) {
                    self.client_write(node);
                    self.drain(node);
                }
                let node_state = &self.nodes[&node];
                let outstanding =
                    !node_state.retry.is_empty() || !node_state.waiting_writes.is_empty();
                if self.faults_on || self.now < self.start + self.scenario.duration || outstanding {
                    let delay = self.random_ms((1, 30));
                    self.schedule(delay, Event::ClientWrite { node });
                }
            }
            Event::ClientRead { node } => {
                if self.alive(node) {
                    self.client_read(node);
                    self.drain(node);
                }
                if self.faults_on || self.now < self.start + self.scenario.duration {
                    let delay = self.random_ms((1, 40));
                    self.schedule(delay, Event::ClientRead { node });
                }
            }
            Event::TermChange { all } => {
                if self.faults_on {
                    self.term_change(all);
                }
            }
            Event::Crash { node } => {
                if self.faults_on && self.alive(node) {
                    self.crash(node);
                    let delay = self.random_ms((20, 400));
                    self.schedule(delay, Event::Restart { node });
                }
            }
            Event::Restart { node } => {
                if !self.alive(node) {
                    self.restart(node);
                }
            }
        }
    }

    fn term_change(&mut self, all: bool) {
        let alive: Vec<NodeId> = self
            .nodes
            .keys()
            .copied()
            .filter(|&n| self.alive(n))
            .collect();
        if alive.is_empty() {
            return;
        }
        let members = if all {
            alive
        } else {
            // Usually a majority (a healed partition), sometimes a minority side.
            let want = if self.rng.random_bool(0.8) {
                self.majority().min(alive.len()).max(1)
            } else {
                self.rng.random_range(1..=alive.len())
            };
            let want = self.rng.random_range(want..=alive.len());
            let mut pool = alive;
            let mut members = Vec::new();
            while members.len() < want {
                let i = self.rng.random_range(0..pool.len());
                members.push(pool.swap_remove(i));
            }
            members
        };
        let shape = match self.rng.random_range(0..3) {
            0 => Shape::Line,
            1 => Shape::Star,
            _ => Shape::Random,
        };
        self.new_tree(members, shape);
    }

    fn step(&mut self) -> bool {
        let Some(Reverse((at, _, key))) = self.queue.pop() else {
            return false;
        };
        self.now = self.now.max(at);
        let event = self.events.remove(&key).expect("scheduled event");
        self.handle(event);
        true
    }

    fn run_until(&mut self, until: Instant) {
        while self.failure.is_none() {
            match self.queue.peek() {
                Some(Reverse((at, _, _))) if *at <= until => {
                    self.step();
                }
                _ => break,
            }
        }
        self.now = self.now.max(until);
    }

    /// Writes from every input node succeed and every log equals the writer's.
    fn converged(&self) -> Result<(), String> {
        let root = self
            .nodes
            .iter()
            .find(|(_, n)| n.place.is_root && n.place.term == self.term)
            .map(|(&id, _)| id)
            .ok_or("no root")?;
        let reference = &self.nodes[&root].store;
        for (&id, node) in &self.nodes {
            if node.store.log != reference.log || node.store.durable != reference.log.len() {
                return Err(format!(
                    "node {id}'s log ({} entries, {} durable) differs from the writer {root}'s ({} entries)",
                    node.store.log.len(),
                    node.store.durable,
                    reference.log.len()
                ));
            }
            if !node.waiting_writes.is_empty() || !node.retry.is_empty() {
                return Err(format!("node {id} still waits for writes"));
            }
        }
        Ok(())
    }
}

fn run(seed: u64, scenario: Scenario) -> Result<String, String> {
    let mut sim = Sim::new(seed, scenario.clone());
    let shape = scenario.shape;
    let all: Vec<NodeId> = sim.nodes.keys().copied().collect();
    sim.new_tree(all.clone(), shape);
    for &node in &all {
        let delay = sim.random_ms((0, 10));
        sim.schedule(delay, Event::ClientWrite { node });
        let delay = sim.random_ms((0, 10));
        sim.schedule(delay, Event::ClientRead { node });
    }
    let end = sim.start + scenario.duration;
    if scenario.faults {
        // Faults: term changes and crashes spread over the run.
        let mut at = Duration::ZERO;
        while at < scenario.duration {
            at += sim.random_ms((100, 700));
            let event = if sim.rng.random_bool(0.5) {
                Event::TermChange { all: false }
            } else {
                let node = sim.rng.random_range(1..=scenario.nodes as NodeId);
                Event::Crash { node }
            };
            sim.schedule(at, event);
        }
    }
    sim.run_until(end);
    // Heal: everyone back, one tree over all, no faults; the clients keep writing.
    sim.faults_on = false;
    for &node in &all {
        if !sim.alive(node) {
            sim.restart(node);
        }
    }
    sim.scenario.loss = 0.0;
    sim.new_tree(all.clone(), Shape::Random);
    // Stop new client requests after a while, then wait for every answer and every log.
    let calm = sim.now + Duration::from_secs(1);
    sim.scenario.duration = calm - sim.start;
    let deadline = calm + Duration::from_secs(20);
    let mut result = Err("did not converge".to_string());
    while sim.now < deadline && sim.failure.is_none() {
        let next = sim.now + Duration::from_millis(100);
        sim.run_until(next);
        if sim.now > calm {
            result = sim.converged();
            if result.is_ok() {
                break;
            }
        }
    }
    if let Some(failure) = sim.failure {
        return Err(failure);
    }
    if sim.now > calm && scenario.converge {
        // Every write still retried after healing must have been acknowledged.
        for (id, node) in &sim.nodes {
            if !node.retry.is_empty() {
                return Err(format!(
                    "node {id} still has writes to retry: {:?}",
                    node.retry
                ));
            }
        }
    }
    if scenario.converge {
        result?;
    }
    let root = sim
        .nodes
        .iter()
        .find(|(_, n)| n.place.is_root && n.place.term == sim.term)
        .map(|(&id, _)| id)
        .expect("a root");
    sim.check_writer_holds_acknowledged(root);
    if let Some(failure) = sim.failure {
        return Err(failure);
    }
    if sim.stats.acked == 0 {
        return Err("no write was acknowledged".into());
    }
    Ok(format!("{:?}", sim.stats))
}

fn seeds() -> Vec<u64> {
    if let Some(seed) = std::env::var("CHAT_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![seed];
    }
    let count = std::env::var("CHAT_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30u64);
    (0..count).collect()
}

fn check(name: &str, scenario: impl Fn(u64) -> Scenario) {
    let seeds = seeds();
    let mut failures = Vec::new();
    for &seed in &seeds {
        match run(seed, scenario(seed)) {
            Ok(stats) => {
                if std::env::var("CHAT_SIM_LOG").is_ok() {
                    eprintln!("{name} seed {seed}: {stats}");
                }
            }
            Err(failure) => failures.push(format!(
                "{name} failed for seed {seed}: {failure}\nreplay: CHAT_SIM_SEED={seed} cargo test -p chat-data --test sim -- {name}"
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn sized(seed: u64) -> usize {
    1 + (seed % 9) as usize
}

#[test]
fn static_trees_replicate_and_answer() {
    check("static_trees_replicate_and_answer", |seed| Scenario {
        nodes: sized(seed),
        shape: [Shape::Line, Shape::Star, Shape::Random][(seed / 9 % 3) as usize],
        loss: 0.0,
        duplicate: 0.0,
        delay_ms: (0, 3),
        faults: false,
        cache_entries: 10_000,
        duration: Duration::from_millis(800),
        converge: true,
    });
}

#[test]
fn lossy_network_loses_no_acknowledged_write() {
    check("lossy_network_loses_no_acknowledged_write", |seed| {
        Scenario {
            nodes: sized(seed),
            shape: [Shape::Line, Shape::Star, Shape::Random][(seed / 9 % 3) as usize],
            loss: 0.05,
            duplicate: 0.05,
            delay_ms: (0, 8),
            faults: false,
            cache_entries: 10_000,
            duration: Duration::from_millis(800),
            converge: true,
        }
    });
}

fn crashes(seed: u64, converge: bool) -> Scenario {
    Scenario {
        nodes: sized(seed).max(2),
        shape: Shape::Random,
        loss: 0.02,
        duplicate: 0.02,
        delay_ms: (0, 6),
        faults: true,
        cache_entries: 10_000,
        duration: Duration::from_millis(3000),
        converge,
    }
}

fn far_behind(seed: u64, converge: bool) -> Scenario {
    Scenario {
        nodes: sized(seed).max(3),
        shape: Shape::Random,
        loss: 0.02,
        duplicate: 0.0,
        delay_ms: (0, 5),
        faults: true,
        cache_entries: 8,
        duration: Duration::from_millis(2000),
        converge,
    }
}

#[test]
fn crashes_and_term_changes_lose_no_acknowledged_write() {
    check(
        "crashes_and_term_changes_lose_no_acknowledged_write",
        |seed| crashes(seed, true),
    );
}

#[test]
fn far_behind_nodes_take_snapshots() {
    check("far_behind_nodes_take_snapshots", |seed| {
        far_behind(seed, true)
    });
}
