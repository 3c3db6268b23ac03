//! A deterministic simulator: many nodes' [`ControlPlane`]s in one process over a seeded
//! network (raft-rs's `Network` faults with quinn's `Pair` virtual time).
//!
//! Time is virtual and jumps to the next event. Every message gets a random delay, so
//! messages on one link overtake each other. A link is up while both ends are alive, they are
//! configured neighbours and no partition cuts them; a message in flight when its link goes
//! down is lost (as with the real transport). Liveness is modelled, not run: when a link comes
//! up each end sees the other ON after a random handshake delay; when it goes down each
//! surviving end sees the other OFF after a random detection delay (between the link-drop
//! grace and the liveness timeout). Everything random comes from one `SmallRng` seeded by
//! [`SimConfig::seed`], so a seed replays exactly.
//!
//! Faults: crashes (with or without the node's durable state: its log and its term), a
//! node's host closing its connections when it dies (`handle_link_down`), pauses (SIGSTOP:
//! the node keeps its state, runs nothing, messages to it wait in its socket buffer and
//! are delivered when it resumes; nobody sees a link close), cuts, partitions, flaps, and
//! loss and duplication of messages on live links ([`SimConfig::loss`],
//! [`SimConfig::duplicate`]).
//!
//! Safety is checked after **every** step, not only once the network is quiet (the first
//! violation is kept, see [`Sim::safety_violation`]): at most one writable root at any
//! instant (each root's lease judged at that instant, paused roots included); a node's term
//! never decreases (across restarts with its state too); no cycle of parent pointers; a
//! writable root's key is never below that of a member of its tree; and, with the data
//! model on ([`Sim::enable_writes`]), no acknowledged write is missing from a writable root. A
//! write stays required while more than half the cluster's logs hold it: a node that loses
//! its disk can leave a majority that never saw it.
//!
//! The data model: every `write_every` the writable root (if any) appends an entry of its
//! term to its log and copies its log to the members of its tree it can reach (not paused,
//! in its component); the write is acknowledged when more than half the cluster holds it.
//! Each node's election key is (term of its last entry, length of its log).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::{Duration, Instant};

use chat_wire::{Body, NodeId};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::clock::LamportClock;
use crate::node::{Node, NodeConfig};
use crate::plane::{ControlConfig, ControlPlane, ElectionKey, Status};
use crate::roles::{roles_for, Place};
use crate::{NodeEvent, Transmit};

/// Network and timing of a simulation.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seeds every random choice.
    pub seed: u64,
    /// Message delay range.
    pub delay: (Duration, Duration),
    /// Time from a link coming up to each end seeing the other ON.
    pub handshake: (Duration, Duration),
    /// Time from a link going down to each end seeing the other OFF.
    pub detection: (Duration, Duration),
    /// The nodes' control-plane settings.
    pub control: ControlConfig,
    /// Run whole [`Node`]s (A's topology handshake, heartbeats and liveness included) instead
    /// of modelling liveness: a crashed peer's links drop at once (the transport's link-down),
    /// a partition is only silence, which the liveness timeout must notice.
    pub full_stack: bool,
    /// Probability that a message on a live link is lost.
    pub loss: f64,
    /// Probability that a message on a live link is delivered twice.
    pub duplicate: f64,
}

impl SimConfig {
    /// Loopback-like delays and the shipped control settings ([`crate::defaults`]), without
    /// trace events.
    pub fn new(seed: u64) -> Self {
        SimConfig {
            seed,
            delay: (Duration::from_micros(100), Duration::from_millis(5)),
            handshake: (Duration::from_millis(1), Duration::from_millis(30)),
            detection: (
                crate::defaults::LINK_DOWN_GRACE,
                crate::defaults::LIVENESS_TIMEOUT,
            ),
            control: ControlConfig {
                trace: false,
                ..ControlConfig::default()
            },
            full_stack: false,
            loss: 0.0,
            duplicate: 0.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Item {
    /// A message; `generation` is the link's at send time.
    Deliver {
        from: NodeId,
        to: NodeId,
        generation: u64,
        lamport: u64,
        body: BodyKey,
    },
    /// `at` decides whether it sees `peer` ON or OFF, from the link state then.
    Liveness { at: NodeId, peer: NodeId },
    /// The transport reconnected a dropped link.
    LinkUp { at: NodeId, peer: NodeId },
    /// The transport saw a link drop (full-stack mode).
    LinkDown { at: NodeId, peer: NodeId },
    /// A node's timer.
    Wake { node: NodeId, incarnation: u64 },
    /// The data model's writer writes.
    Write,
}

/// Bodies are not `Ord`; the queue orders by time and sequence number, so the body is kept
/// aside and referenced by index.
type BodyKey = usize;

/// What runs at a simulated node.
enum Machine {
    /// Election and tree, with liveness modelled by the simulator.
    Plane(Box<ControlPlane>),
    /// The whole node.
    Node(Box<Node>),
}

impl Machine {
    fn handle_neighbor_on(&mut self, now: Instant, peer: NodeId) {
        if let Machine::Plane(p) = self {
            p.handle_neighbor_on(now, peer);
        }
    }

    fn handle_neighbor_off(&mut self, now: Instant, peer: NodeId) {
        if let Machine::Plane(p) = self {
            p.handle_neighbor_off(now, peer);
        }
    }

    fn handle_link_up(&mut self, now: Instant, peer: NodeId) {
        match self {
            Machine::Plane(p) => p.handle_link_up(now, peer),
            Machine::Node(n) => n.handle_link_up(now, peer),
        }
    }

    fn handle_link_down(&mut self, now: Instant, peer: NodeId) {
        match self {
            Machine::Plane(p) => p.handle_link_down(now, peer),
            Machine::Node(n) => n.handle_link_down(now, peer),
        }
    }

    fn handle_message(&mut self, now: Instant, from: NodeId, lamport: u64, body: &Body) {
        match self {
            Machine::Plane(p) => p.handle_message(now, from, lamport, body),
            Machine::Node(n) => n.handle_message(now, from, lamport, body),
        }
    }

    fn plane(&self) -> &ControlPlane {
        match self {
            Machine::Plane(p) => p,
            Machine::Node(n) => n.plane(),
        }
    }

    fn set_election_key(&mut self, now: Instant, key: ElectionKey) {
        match self {
            Machine::Plane(p) => p.set_election_key(now, key),
            Machine::Node(n) => n.set_election_key(now, key),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        match self {
            Machine::Plane(p) => p.handle_timeout(now),
            Machine::Node(n) => n.handle_timeout(now),
        }
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        match self {
            Machine::Plane(p) => p.poll_transmit(),
            Machine::Node(n) => n.poll_transmit(),
        }
    }

    fn poll_event(&mut self) -> Option<NodeEvent> {
        match self {
            Machine::Plane(p) => p.poll_event(),
            Machine::Node(n) => n.poll_event(),
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Machine::Plane(p) => p.poll_timeout(),
            Machine::Node(n) => n.poll_timeout(),
        }
    }

    fn status(&self) -> Status {
        match self {
            Machine::Plane(p) => p.status(),
            Machine::Node(n) => n.status(),
        }
    }
}

struct SimNode {
    plane: Machine,
    incarnation: u64,
    /// Who this node currently believes ON, with the incarnation it met.
    view: BTreeMap<NodeId, u64>,
    wake: Option<Instant>,
    /// Paused (SIGSTOP): messages wait here, in order, until it resumes.
    paused: Option<Vec<(NodeId, u64, Body)>>,
}

impl SimNode {
    /// `peer` (in `incarnation`) is alive. A peer that restarted since we met it was gone:
    /// the topology layer re-handshakes it, which reads as OFF then ON.
    fn see(&mut self, now: Instant, peer: NodeId, incarnation: u64) {
        match self.view.insert(peer, incarnation) {
            Some(known) if known == incarnation => {}
            Some(_) => {
                self.plane.handle_neighbor_off(now, peer);
                self.plane.handle_neighbor_on(now, peer);
            }
            None => self.plane.handle_neighbor_on(now, peer),
        }
    }
}

/// Counters of a simulation.
#[derive(Debug, Clone, Default)]
pub struct SimStats {
    /// Messages sent, per scope.
    pub messages: BTreeMap<&'static str, u64>,
    /// Runs started by any node.
    pub runs_started: u64,
    /// Role changes across all nodes.
    pub role_changes: u64,
    /// Simulated time (since the start) of the first election message.
    pub first_election_message: Option<Duration>,
    /// Simulated time (since the start) of the last role change anywhere.
    pub last_role_change: Option<Duration>,
    /// Why runs were started (only counted with trace events on).
    pub start_reasons: BTreeMap<String, u64>,
    /// Messages lost by the network model.
    pub lost: u64,
    /// Messages delivered twice by the network model.
    pub duplicated: u64,
    /// Writes the data model made.
    pub writes: u64,
    /// Writes a majority held (acknowledged).
    pub acknowledged: u64,
    /// Simulated time (since the start) of each change of writability: (node, writable).
    pub writable_changes: Vec<(Duration, NodeId, bool)>,
}

/// Many nodes over one simulated network.
pub struct Sim {
    config: SimConfig,
    rng: SmallRng,
    base: Instant,
    now: Instant,
    seq: u64,
    queue: BinaryHeap<Reverse<(Instant, u64, Item)>>,
    bodies: BTreeMap<BodyKey, Body>,
    next_body: BodyKey,
    nodes: BTreeMap<NodeId, SimNode>,
    /// Each node's durable log: the term of every entry (kept across restarts with state).
    logs: BTreeMap<NodeId, Vec<u64>>,
    /// Each node's persisted term (kept across restarts with state).
    terms: BTreeMap<NodeId, u64>,
    /// Acknowledged writes: (index, term).
    acked: Vec<(usize, u64)>,
    write_every: Option<Duration>,
    /// Nodes that were roots after their last step.
    roots: BTreeSet<NodeId>,
    violation: Option<String>,
    edges: BTreeMap<NodeId, BTreeSet<NodeId>>,
    cut: BTreeSet<(NodeId, NodeId)>,
    generations: BTreeMap<(NodeId, NodeId), u64>,
    next_incarnation: u64,
    runs: BTreeSet<chat_wire::RunId>,
    fifo: BTreeMap<(NodeId, NodeId), Instant>,
    /// Every trace step, when `keep_log` is set (and tracing is on).
    pub log: Vec<String>,
    /// Keep a log of trace steps.
    pub keep_log: bool,
    /// Counters.
    pub stats: SimStats,
}

/// A made-up control port per node id (the simulator needs no sockets).
fn port_of(id: NodeId) -> u16 {
    u16::try_from(40_000 + id % 20_000).unwrap_or(u16::MAX)
}

fn key(a: NodeId, b: NodeId) -> (NodeId, NodeId) {
    (a.min(b), a.max(b))
}

impl Sim {
    /// An empty network.
    pub fn new(config: SimConfig) -> Self {
        let base = Instant::now();
        Sim {
            rng: SmallRng::seed_from_u64(config.seed),
            config,
            base,
            now: base,
            seq: 0,
            queue: BinaryHeap::new(),
            bodies: BTreeMap::new(),
            next_body: 0,
            nodes: BTreeMap::new(),
            logs: BTreeMap::new(),
            terms: BTreeMap::new(),
            acked: Vec::new(),
            write_every: None,
            roots: BTreeSet::new(),
            violation: None,
            edges: BTreeMap::new(),
            cut: BTreeSet::new(),
            generations: BTreeMap::new(),
            next_incarnation: 1,
            runs: BTreeSet::new(),
            fifo: BTreeMap::new(),
            log: Vec::new(),
            keep_log: false,
            stats: SimStats::default(),
        }
    }

    /// The seeded generator, for scenario choices that must replay with the seed.
    pub fn rng(&mut self) -> &mut SmallRng {
        &mut self.rng
    }

    /// Simulated time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.base
    }

    /// Configured neighbour links (whether or not the nodes run).
    pub fn add_edge(&mut self, a: NodeId, b: NodeId) {
        if a == b {
            return;
        }
        self.edges.entry(a).or_default().insert(b);
        self.edges.entry(b).or_default().insert(a);
        self.link_changed(a, b);
    }

    /// The control settings for nodes started afterwards.
    pub fn control_config_mut(&mut self) -> &mut ControlConfig {
        &mut self.config.control
    }

    /// Turns trace events on for nodes started afterwards (counts why runs start).
    pub fn set_trace(&mut self, on: bool) {
        self.config.control.trace = on;
    }

    /// Scales the election timeout to a graph of `n` nodes: a Yo-Yo round on a long chain
    /// takes a sweep of the chain, so a node may legitimately hear nothing for that long.
    /// Applies to nodes started afterwards.
    pub fn scale_timeouts_for(&mut self, n: usize) {
        let sweep = self.config.delay.1 * 4 * u32::try_from(n).unwrap_or(u32::MAX);
        self.config.control.election_timeout = self.config.control.election_timeout.max(sweep);
    }

    /// Gives a node a durable log of `epoch` entries (term 0), kept across restarts with
    /// memory.
    pub fn set_data_epoch(&mut self, id: NodeId, epoch: u64) {
        self.logs
            .insert(id, vec![0; usize::try_from(epoch).unwrap_or(0)]);
        self.feed_key(id);
    }

    /// The cluster size nodes started afterwards are configured with.
    pub fn set_cluster_size(&mut self, size: usize) {
        self.config.control.cluster_size = size;
    }

    /// Turns the data model on: the writable root writes every `every`.
    pub fn enable_writes(&mut self, every: Duration) {
        if self.write_every.is_none() {
            self.push(self.now + every, Item::Write);
        }
        self.write_every = Some(every);
    }

    /// The first safety violation seen after any step, if any.
    pub fn safety_violation(&self) -> Option<&str> {
        self.violation.as_deref()
    }

    /// Nodes that are writable roots now (leases judged now; paused nodes included).
    pub fn writable_roots(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.plane.plane().writable_at(self.now))
            .map(|(&id, _)| id)
            .collect()
    }

    /// Pauses a node (SIGSTOP): it keeps its state and its connections but runs nothing.
    pub fn pause(&mut self, id: NodeId) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if node.paused.is_some() {
            return;
        }
        node.paused = Some(Vec::new());
        if !self.config.full_stack {
            // Its neighbours hear nothing more: they see it OFF after a detection delay.
            for peer in self.neighbours(id) {
                if self.nodes.contains_key(&peer) {
                    let delay = self.random_duration(self.config.detection);
                    self.push(self.now + delay, Item::Liveness { at: peer, peer: id });
                }
            }
        }
    }

    /// Resumes a paused node (SIGCONT): what was sent to it meanwhile arrives, its overdue
    /// timers fire.
    pub fn resume(&mut self, id: NodeId) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        let Some(inbox) = node.paused.take() else {
            return;
        };
        let now = self.now;
        for (from, lamport, body) in inbox {
            node.plane.handle_message(now, from, lamport, &body);
        }
        node.plane.handle_timeout(now);
        node.wake = None;
        self.drain(id);
        self.after_step(id);
        if !self.config.full_stack {
            for peer in self.neighbours(id) {
                if self.link_up(id, peer) {
                    for (at, other) in [(id, peer), (peer, id)] {
                        let delay = self.random_duration(self.config.handshake);
                        self.push(self.now + delay, Item::Liveness { at, peer: other });
                    }
                } else if self
                    .nodes
                    .get(&id)
                    .is_some_and(|n| n.view.contains_key(&peer))
                {
                    // A neighbour lost while this node was stopped (cut off, crashed): the
                    // news was dropped then, so it would stay ON here for ever (seed 50005:
                    // every election waited for its START). Its silence is noticed after
                    // the usual detection delay, as by a node that never stopped.
                    let delay = self.random_duration(self.config.detection);
                    self.push(self.now + delay, Item::Liveness { at: id, peer });
                }
            }
        }
    }

    /// Whether a node is paused.
    pub fn is_paused(&self, id: NodeId) -> bool {
        self.nodes.get(&id).is_some_and(|n| n.paused.is_some())
    }

    /// A node's election key (from its durable log).
    pub fn key(&self, id: NodeId) -> ElectionKey {
        self.key_of(id)
    }

    /// The node's election key from its log.
    fn key_of(&self, id: NodeId) -> ElectionKey {
        let log = self.logs.get(&id).map(Vec::as_slice).unwrap_or_default();
        ElectionKey {
            last_term: log.last().copied().unwrap_or(0),
            epoch: log.len() as u64,
        }
    }

    fn feed_key(&mut self, id: NodeId) {
        let key = self.key_of(id);
        let now = self.now;
        if let Some(node) = self.nodes.get_mut(&id) {
            node.plane.set_election_key(now, key);
        }
    }

    /// Starts (or restarts) node `id` as a fresh process.
    pub fn start(&mut self, id: NodeId) {
        let incarnation = self.next_incarnation;
        self.next_incarnation += 1;
        let mut control = self.config.control.clone();
        control.initial_term = self.terms.get(&id).copied().unwrap_or(0);
        let mut plane = if self.config.full_stack {
            let c = &control;
            let mut config = NodeConfig::new(id, "127.0.0.1".into(), port_of(id), incarnation);
            config.election_timeout = c.election_timeout;
            config.join_wait = c.join_wait;
            config.epoch_tick = c.epoch_tick;
            config.heal_timeout = c.heal_timeout;
            config.trace = c.trace;
            config.cluster_size = c.cluster_size;
            config.writer_lease = c.writer_lease;
            config.retransmit = c.retransmit;
            config.initial_term = c.initial_term;
            let mut node = Node::new(config, self.now);
            for peer in self.neighbours(id) {
                node.add_neighbor(self.now, peer, "127.0.0.1".into(), port_of(peer));
            }
            Machine::Node(Box::new(node))
        } else {
            let plane = ControlPlane::new(id, control, LamportClock::new(), self.now);
            Machine::Plane(Box::new(plane))
        };
        plane.set_election_key(self.now, self.key_of(id));
        self.nodes.insert(
            id,
            SimNode {
                plane,
                incarnation,
                view: BTreeMap::new(),
                wake: None,
                paused: None,
            },
        );
        self.schedule_wake(id);
        let peers: Vec<NodeId> = self.neighbours(id);
        for peer in peers {
            self.link_changed(id, peer);
        }
    }

    /// Kills node `id` (SIGKILL: its host closes its connections, which its neighbours'
    /// transports report); with `keep_data` false its durable state (log, term) is lost too.
    pub fn crash(&mut self, id: NodeId, keep_data: bool) {
        if self.nodes.remove(&id).is_none() {
            return;
        }
        self.roots.remove(&id);
        if !keep_data {
            self.logs.remove(&id);
            self.terms.remove(&id);
            // Majorities intersect, so a write held by more than half the cluster is in every
            // majority's logs; that is the whole promise of acknowledging it. A lost disk
            // breaks the promise for the writes whose copies it drops to half or fewer: a
            // majority without any of them can form and rightly elect a leader (seed 50143:
            // 3 nodes, writes held by 2 and 6; 6 lost its disk and 2 was cut off, and 3 with
            // the empty 6 was a majority). No protocol keeps those, so only writes a majority
            // of logs still holds stay required. (A one-node cluster losing its disk loses
            // everything.)
            let logs = &self.logs;
            let size = self.config.control.cluster_size;
            self.acked.retain(|&(index, term)| {
                let holders = logs
                    .values()
                    .filter(|log| log.get(index - 1) == Some(&term))
                    .count();
                holders > size / 2
            });
        }
        for peer in self.neighbours(id) {
            self.link_changed(id, peer);
            if !self.config.full_stack && self.nodes.contains_key(&peer) {
                self.push(self.now, Item::LinkDown { at: peer, peer: id });
            }
        }
    }

    /// Cuts the link between `a` and `b` (both directions).
    pub fn cut(&mut self, a: NodeId, b: NodeId) {
        if self.cut.insert(key(a, b)) {
            self.link_changed(a, b);
        }
    }

    /// Repairs a cut link.
    pub fn repair(&mut self, a: NodeId, b: NodeId) {
        if self.cut.remove(&key(a, b)) {
            self.link_changed(a, b);
        }
    }

    /// Cuts every link between `side` and the other nodes.
    pub fn partition(&mut self, side: &BTreeSet<NodeId>) {
        let crossing: Vec<(NodeId, NodeId)> = self
            .edges
            .iter()
            .flat_map(|(&a, bs)| bs.iter().map(move |&b| (a, b)))
            .filter(|(a, b)| a < b && side.contains(a) != side.contains(b))
            .collect();
        for (a, b) in crossing {
            self.cut(a, b);
        }
    }

    /// Repairs every cut link.
    pub fn heal_all(&mut self) {
        let cut: Vec<_> = self.cut.iter().copied().collect();
        for (a, b) in cut {
            self.repair(a, b);
        }
    }

    /// The network drops the link silently and the transport reconnects after `down_for`:
    /// messages in flight are lost, both ends get a link-up afterwards (a short drop is not
    /// a neighbour loss). No host closed anything, so no link-down is reported.
    pub fn flap(&mut self, a: NodeId, b: NodeId, down_for: Duration) {
        *self.generations.entry(key(a, b)).or_default() += 1;
        for (at, peer) in [(a, b), (b, a)] {
            self.push(self.now + down_for, Item::LinkUp { at, peer });
        }
    }

    /// Configured neighbours of a node (up or not).
    pub fn configured_neighbours(&self, id: NodeId) -> Vec<NodeId> {
        self.neighbours(id)
    }

    fn neighbours(&self, id: NodeId) -> Vec<NodeId> {
        self.edges
            .get(&id)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Running nodes.
    pub fn alive(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// The link carries messages (a paused end buffers them): both running, neighbours,
    /// not cut.
    fn link_open(&self, a: NodeId, b: NodeId) -> bool {
        self.nodes.contains_key(&a)
            && self.nodes.contains_key(&b)
            && self.edges.get(&a).is_some_and(|s| s.contains(&b))
            && !self.cut.contains(&key(a, b))
    }

    /// The link is open and neither end is paused.
    fn link_up(&self, a: NodeId, b: NodeId) -> bool {
        self.link_open(a, b) && !self.is_paused(a) && !self.is_paused(b)
    }

    fn link_changed(&mut self, a: NodeId, b: NodeId) {
        *self.generations.entry(key(a, b)).or_default() += 1;
        let up = self.link_up(a, b);
        if self.config.full_stack {
            // The transport connects (link-up after a connect delay) or, when a peer process
            // died, sees its connection drop at once; a partition only goes silent.
            let peer_died = !self.nodes.contains_key(&a) || !self.nodes.contains_key(&b);
            for (at, peer) in [(a, b), (b, a)] {
                if !self.nodes.contains_key(&at) {
                    continue;
                }
                if up {
                    let delay = self.random_duration(self.config.handshake);
                    self.push(self.now + delay, Item::LinkUp { at, peer });
                } else if peer_died {
                    self.push(self.now, Item::LinkDown { at, peer });
                }
            }
            return;
        }
        let range = if up {
            self.config.handshake
        } else {
            self.config.detection
        };
        for (at, peer) in [(a, b), (b, a)] {
            if self.nodes.contains_key(&at) {
                let delay = self.random_duration(range);
                self.push(self.now + delay, Item::Liveness { at, peer });
                if up {
                    // The transport reconnects: its link-up reaches the node too.
                    self.push(self.now + delay, Item::LinkUp { at, peer });
                }
            }
        }
    }

    fn random_duration(&mut self, (lo, hi): (Duration, Duration)) -> Duration {
        if hi <= lo {
            return lo;
        }
        let span = (hi - lo).as_nanos() as u64;
        lo + Duration::from_nanos(self.rng.random_range(0..=span))
    }

    fn push(&mut self, at: Instant, item: Item) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, item)));
    }

    fn schedule_wake(&mut self, id: NodeId) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        let next = node.plane.poll_timeout();
        if next.is_some() && next != node.wake {
            node.wake = next;
            let incarnation = node.incarnation;
            if let Some(at) = next {
                self.push(
                    at,
                    Item::Wake {
                        node: id,
                        incarnation,
                    },
                );
            }
        }
    }

    /// Moves every output of node `id` into the network.
    fn drain(&mut self, id: NodeId) {
        let mut sends = Vec::new();
        let mut role_changes = 0;
        let mut writable_changes = Vec::new();
        let mut new_term = None;
        if let Some(node) = self.nodes.get_mut(&id) {
            while let Some(transmit) = node.plane.poll_transmit() {
                sends.push(transmit);
            }
            while let Some(event) = node.plane.poll_event() {
                match event {
                    NodeEvent::RolesChanged { .. } => role_changes += 1,
                    NodeEvent::TermChanged { term } => new_term = Some(term),
                    NodeEvent::WritableChanged { writable, .. } => {
                        writable_changes.push((self.now - self.base, id, writable));
                    }
                    NodeEvent::Trace(t) => {
                        if self.keep_log {
                            self.log.push(format!(
                                "{:>10.3?} node {id} {} run={:?} round={:?}: {:?}",
                                self.now - self.base,
                                t.subsystem.as_str(),
                                t.run.map(|r| r.to_string()),
                                t.round,
                                t.step
                            ));
                        }
                        if let crate::Step::RunStarted { reason } = t.step {
                            let name = format!("{reason:?}");
                            let name = name.split('(').next().unwrap_or_default().to_string();
                            *self.stats.start_reasons.entry(name).or_default() += 1;
                        }
                    }
                    _ => {}
                }
            }
        }
        if let Some(term) = new_term {
            // The driver persists it; a restart with state starts from it.
            self.terms.insert(id, term);
        }
        self.stats.writable_changes.extend(writable_changes);
        self.stats.role_changes += role_changes;
        if role_changes > 0 {
            self.stats.last_role_change = Some(self.now - self.base);
        }
        for Transmit { to, lamport, body } in sends {
            *self
                .stats
                .messages
                .entry(body.scope().as_str())
                .or_default() += 1;
            if let Body::Election(e) = &body {
                if self.stats.first_election_message.is_none() {
                    self.stats.first_election_message = Some(self.now - self.base);
                }
                if self.runs.insert(e.run) {
                    self.stats.runs_started += 1;
                }
            }
            if !self.link_open(id, to) {
                continue;
            }
            if self.config.loss > 0.0 && self.rng.random_bool(self.config.loss) {
                self.stats.lost += 1;
                continue;
            }
            let copies =
                if self.config.duplicate > 0.0 && self.rng.random_bool(self.config.duplicate) {
                    self.stats.duplicated += 1;
                    2
                } else {
                    1
                };
            for _ in 0..copies {
                self.send(id, to, lamport, body.clone());
            }
        }
        self.schedule_wake(id);
    }

    fn send(&mut self, from: NodeId, to: NodeId, lamport: u64, body: Body) {
        let generation = self.generations.get(&key(from, to)).copied().unwrap_or(0);
        // Links are FIFO, like the TCP connection under the real transport; messages on
        // different links overtake each other freely.
        let delay = self.random_duration(self.config.delay);
        let at = self
            .fifo
            .get(&(from, to))
            .map_or(self.now + delay, |&last| (self.now + delay).max(last));
        self.fifo.insert((from, to), at);
        let body_key = self.next_body;
        self.next_body += 1;
        self.bodies.insert(body_key, body);
        self.push(
            at,
            Item::Deliver {
                from,
                to,
                generation,
                lamport,
                body: body_key,
            },
        );
    }

    /// Processes events until simulated time `until` (or the queue empties).
    pub fn run_until(&mut self, until: Instant) {
        while let Some(Reverse((at, _, _))) = self.queue.peek() {
            if *at > until {
                break;
            }
            let Some(Reverse((at, _, item))) = self.queue.pop() else {
                break;
            };
            self.now = self.now.max(at);
            self.step(item);
        }
        self.now = self.now.max(until);
    }

    /// Runs for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    fn step(&mut self, item: Item) {
        let now = self.now;
        match item {
            Item::Deliver {
                from,
                to,
                generation,
                lamport,
                body,
            } => {
                let Some(body) = self.bodies.remove(&body) else {
                    return;
                };
                let current = self.generations.get(&key(from, to)).copied().unwrap_or(0);
                if current != generation || !self.link_open(from, to) {
                    return;
                }
                let Some(incarnation) = self.nodes.get(&from).map(|n| n.incarnation) else {
                    return;
                };
                let full_stack = self.config.full_stack;
                let Some(node) = self.nodes.get_mut(&to) else {
                    return;
                };
                if let Some(inbox) = &mut node.paused {
                    inbox.push((from, lamport, body));
                    return;
                }
                if !full_stack {
                    // Any message is a sign of life: a peer believed OFF is heard again.
                    node.see(now, from, incarnation);
                }
                node.plane.handle_message(now, from, lamport, &body);
                self.drain(to);
                self.after_step(to);
            }
            Item::Liveness { at, peer } => {
                let up = self.link_up(at, peer);
                let incarnation = self.nodes.get(&peer).map(|n| n.incarnation);
                let Some(node) = self.nodes.get_mut(&at) else {
                    return;
                };
                if node.paused.is_some() {
                    return;
                }
                match incarnation {
                    Some(incarnation) if up => node.see(now, peer, incarnation),
                    _ => {
                        if !up && node.view.remove(&peer).is_some() {
                            node.plane.handle_neighbor_off(now, peer);
                        }
                    }
                }
                self.drain(at);
                self.after_step(at);
            }
            Item::LinkDown { at, peer } => {
                let Some(node) = self.nodes.get_mut(&at) else {
                    return;
                };
                if node.paused.is_some() {
                    return;
                }
                node.plane.handle_link_down(now, peer);
                self.drain(at);
                self.after_step(at);
            }
            Item::LinkUp { at, peer } => {
                if !self.link_up(at, peer) {
                    return;
                }
                let Some(node) = self.nodes.get_mut(&at) else {
                    return;
                };
                node.plane.handle_link_up(now, peer);
                self.drain(at);
                self.after_step(at);
            }
            Item::Wake { node, incarnation } => {
                let Some(n) = self.nodes.get_mut(&node) else {
                    return;
                };
                if n.incarnation != incarnation || n.paused.is_some() {
                    return;
                }
                n.wake = None;
                n.plane.handle_timeout(now);
                self.drain(node);
                self.after_step(node);
            }
            Item::Write => {
                self.write();
                if let Some(every) = self.write_every {
                    self.push(self.now + every, Item::Write);
                }
            }
        }
    }

    /// The data model's write: the writable root appends and replicates to what it reaches.
    fn write(&mut self) {
        let writers = self.writable_roots();
        let Some(&writer) = writers.iter().find(|&&id| !self.is_paused(id)) else {
            return;
        };
        let Some(tree) = self.nodes[&writer].plane.plane().tree_id() else {
            return;
        };
        let term = tree.run.lamport;
        self.logs.entry(writer).or_default().push(term);
        self.stats.writes += 1;
        let log = self.logs[&writer].clone();
        let reach = self
            .components()
            .into_iter()
            .find(|c| c.contains(&writer))
            .unwrap_or_default();
        let members: Vec<NodeId> = reach
            .into_iter()
            .filter(|&id| id != writer && self.nodes[&id].plane.plane().tree_id() == Some(tree))
            .collect();
        for &id in &members {
            self.logs.insert(id, log.clone());
        }
        let holders = 1 + members.len();
        let size = self.config.control.cluster_size;
        if holders > size / 2 {
            self.acked.push((log.len(), term));
            self.stats.acknowledged += 1;
        }
        for id in std::iter::once(writer).chain(members) {
            self.feed_key(id);
            self.drain(id);
        }
        self.check_keys(writer);
    }

    fn violate(&mut self, what: String) {
        if self.violation.is_none() {
            self.violation = Some(format!("at {:?}: {what}", self.now - self.base));
        }
    }

    /// The safety invariants touched by a step of node `id` (see the module docs).
    fn after_step(&mut self, id: NodeId) {
        let Some(node) = self.nodes.get(&id) else {
            return;
        };
        let plane = node.plane.plane();
        let (term, tree, parent) = (plane.term(), plane.tree_id(), plane.parent_id());
        let writable = plane.writable_at(self.now);
        // A node's term never decreases (the persisted term is the floor after a restart).
        if let Some(&persisted) = self.terms.get(&id) {
            if term < persisted {
                self.violate(format!(
                    "node {id}'s term went from {persisted} down to {term}"
                ));
            }
        }
        // No cycle of parents.
        let mut at = id;
        let mut hops = 0;
        while let Some(next) = self
            .nodes
            .get(&at)
            .and_then(|n| n.plane.plane().parent_id())
        {
            at = next;
            hops += 1;
            if at == id || hops > self.nodes.len() {
                self.violate(format!("a cycle of parents through node {id}"));
                break;
            }
        }
        if tree.is_some() && parent.is_none() {
            self.roots.insert(id);
        } else {
            self.roots.remove(&id);
        }
        if writable {
            let others: Vec<NodeId> = self
                .roots
                .iter()
                .copied()
                .filter(|&r| r != id)
                .filter(|r| {
                    self.nodes
                        .get(r)
                        .is_some_and(|n| n.plane.plane().writable_at(self.now))
                })
                .collect();
            if !others.is_empty() {
                self.violate(format!("two writable roots at once: {id} and {others:?}"));
            }
            self.check_keys(id);
            self.check_acknowledged(id);
        } else if let Some(tree) = tree {
            // A member's key never beats its writable root's.
            let leader = tree.leader;
            let writable_leader = self.nodes.get(&leader).is_some_and(|n| {
                n.plane.plane().writable_at(self.now) && n.plane.plane().tree_id() == Some(tree)
            });
            if writable_leader && self.key_of(id) > self.key_of(leader) {
                self.violate(format!(
                    "member {id}'s key {:?} beats its writer {leader}'s {:?}",
                    self.key_of(id),
                    self.key_of(leader)
                ));
            }
        }
    }

    /// A writable root's key is not below that of any member of its tree.
    fn check_keys(&mut self, root: NodeId) {
        let Some(tree) = self
            .nodes
            .get(&root)
            .and_then(|n| n.plane.plane().tree_id())
        else {
            return;
        };
        let mine = self.key_of(root);
        let ahead: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(&id, n)| id != root && n.plane.plane().tree_id() == Some(tree))
            .map(|(&id, _)| id)
            .filter(|&id| self.key_of(id) > mine)
            .collect();
        if !ahead.is_empty() {
            self.violate(format!(
                "writable root {root} (key {mine:?}) has members with newer keys: {ahead:?}"
            ));
        }
    }

    /// Every acknowledged write is in a writable root's log.
    fn check_acknowledged(&mut self, root: NodeId) {
        let log = self.logs.get(&root).map(Vec::as_slice).unwrap_or_default();
        let missing = self
            .acked
            .iter()
            .find(|&&(index, term)| log.get(index - 1) != Some(&term))
            .copied();
        if let Some((index, term)) = missing {
            self.violate(format!(
                "writable root {root} lacks acknowledged write #{index} of term {term}"
            ));
        }
    }

    /// Current time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The connected components of running nodes over up links.
    pub fn components(&self) -> Vec<BTreeSet<NodeId>> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for &start in self.nodes.keys() {
            if !seen.insert(start) {
                continue;
            }
            if self.is_paused(start) {
                continue;
            }
            let mut comp = BTreeSet::from([start]);
            let mut stack = vec![start];
            while let Some(x) = stack.pop() {
                for y in self.neighbours(x) {
                    if self.link_up(x, y) && seen.insert(y) {
                        comp.insert(y);
                        stack.push(y);
                    }
                }
            }
            out.push(comp);
        }
        out
    }

    /// The status of a running node.
    pub fn status(&self, id: NodeId) -> Option<Status> {
        self.nodes.get(&id).map(|n| n.plane.status())
    }

    /// Runs until the invariants hold at two checks `check_every` apart, or `limit` passes.
    /// Returns the violation found last when they never held.
    pub fn settle(&mut self, limit: Duration, check_every: Duration) -> Result<Duration, String> {
        let start = self.now;
        let deadline = self.now + limit;
        let mut held_once = false;
        loop {
            if let Some(violation) = &self.violation {
                return Err(format!("safety: {violation}"));
            }
            match self.check_invariants() {
                Ok(()) if held_once => return Ok(self.now - start),
                Ok(()) => held_once = true,
                Err(e) => {
                    held_once = false;
                    if self.now >= deadline {
                        return Err(e);
                    }
                }
            }
            let next = self.now + check_every;
            self.run_until(next);
        }
    }

    /// The invariants of a quiet network (see the module docs of `tests/sim.rs`).
    pub fn check_invariants(&self) -> Result<(), String> {
        for comp in self.components() {
            self.check_component(&comp)?;
        }
        Ok(())
    }

    fn check_component(&self, comp: &BTreeSet<NodeId>) -> Result<(), String> {
        let status: BTreeMap<NodeId, Status> = comp
            .iter()
            .filter_map(|&id| self.status(id).map(|s| (id, s)))
            .collect();
        for (id, s) in &status {
            if let Some((run, round)) = s.election {
                return Err(format!(
                    "node {id} still in election run {run} round {round}"
                ));
            }
            if s.orphaned {
                return Err(format!("node {id} is an orphan"));
            }
            if s.leader.is_none() {
                return Err(format!("node {id} knows no leader"));
            }
            if !s.settled {
                return Err(format!("node {id} awaits SHOUT answers"));
            }
        }
        let leaders: BTreeSet<_> = status.values().map(|s| (s.leader, s.tree_run)).collect();
        if leaders.len() != 1 {
            return Err(format!(
                "component {comp:?} disagrees on the leader: {leaders:?}"
            ));
        }
        let Some(&(Some(leader), _)) = leaders.iter().next() else {
            return Err("no leader".into());
        };
        if !comp.contains(&leader) {
            return Err(format!("leader {leader} is outside its component {comp:?}"));
        }
        // Tree: parents are up neighbours that list the node as a child, every chain ends at
        // the leader, and depth matches what each node believes.
        let mut depth = BTreeMap::new();
        for (&id, s) in &status {
            match s.parent {
                None if id != leader => return Err(format!("node {id} has no parent")),
                None => {}
                Some(p) => {
                    if !self.link_up(id, p) {
                        return Err(format!("node {id}'s parent {p} is not an up neighbour"));
                    }
                    let Some(ps) = status.get(&p) else {
                        return Err(format!("node {id}'s parent {p} is outside its component"));
                    };
                    if !ps.children.contains(&id) {
                        return Err(format!("node {id}'s parent {p} does not list it"));
                    }
                }
            }
            for &c in &s.children {
                if status.get(&c).and_then(|cs| cs.parent) != Some(id) {
                    return Err(format!("node {id} lists {c} as child, which disagrees"));
                }
            }
            let mut hops = 0u32;
            let mut at = id;
            while at != leader {
                at = status
                    .get(&at)
                    .and_then(|s| s.parent)
                    .ok_or(format!("chain from {id} breaks at {at}"))?;
                hops += 1;
                if hops as usize > comp.len() {
                    return Err(format!("cycle above node {id}"));
                }
            }
            depth.insert(id, hops);
        }
        // Roles and routes.
        for (&id, s) in &status {
            let expected = roles_for(Place::InTree {
                hops: depth[&id],
                has_children: !s.children.is_empty(),
            });
            if s.roles != expected {
                return Err(format!(
                    "node {id} has roles {} but its place says {expected}",
                    s.roles
                ));
            }
        }
        for (&id, s) in &status {
            if !s.roles.input {
                continue;
            }
            let mut at = leader;
            let mut steps = 0;
            while at != id {
                at = status
                    .get(&at)
                    .and_then(|s| s.routes.next_hop_down(id))
                    .ok_or(format!("input {id} not routable from {at}"))?;
                steps += 1;
                if steps > comp.len() {
                    return Err(format!("routing loop towards input {id}"));
                }
            }
        }
        Ok(())
    }

    /// The best candidate (best key, then smallest id) of a component.
    pub fn best_candidate(&self, comp: &BTreeSet<NodeId>) -> Option<NodeId> {
        comp.iter()
            .map(|&id| {
                let key = self.key_of(id);
                chat_wire::Candidate {
                    last_term: key.last_term,
                    data_epoch: key.epoch,
                    node: id,
                }
            })
            .min()
            .map(|c| c.node)
    }

    /// Writes acknowledged so far by the data model.
    pub fn acknowledged_writes(&self) -> usize {
        self.acked.len()
    }

    /// Simulated time since the start.
    pub fn since_start(&self, at: Instant) -> Duration {
        at - self.base
    }
}
