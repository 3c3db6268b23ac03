//! The whole control plane of one node: neighbours ([`Topology`]) feeding the election and
//! the tree ([`ControlPlane`]), behind one quinn-like API.
//!
//! The driver loop (the real one lives in `chat-node`):
//!
//! ```text
//! let mut node = Node::new(config, now);  // config.initial_term: the term persisted last run
//! for (id, host, port) in bootstrap_neighbours { node.add_neighbor(now, id, host, port); }
//! loop {
//!     // One input: due timers first, then a received envelope or a link change.
//!     if node.poll_timeout() <= now { node.handle_timeout(now) }
//!     node.handle_message(now, header.source, header.lamport, &envelope.body);
//!     node.handle_link_down(now, peer);  // only for a connection its host closed
//!     // After every durable write or apply of the data plane:
//!     node.set_election_key(now, ElectionKey { last_term, epoch });
//!     // Then drain, events first: a Connect must reach the transport before the JOIN it
//!     // enables. TermChanged: persist the term. WritableChanged: the data plane may (not)
//!     // acknowledge writes.
//!     while let Some(event) = node.poll_event() { /* connect, persist, start/stop roles */ }
//!     while let Some(t) = node.poll_transmit() { /* Envelope::new(me, t.to, t.lamport, t.body) */ }
//!     sleep_until(node.poll_timeout());
//! }
//! ```
//!
//! The node owns its Lamport clock: [`Node::handle_message`] merges the header's time, every
//! [`Transmit`] carries the stamp for its header. [`Node::lamport`] reads it (for logs);
//! nothing outside the node ever advances it.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use chat_wire::{Body, NodeId};

use crate::clock::LamportClock;
use crate::defaults::{self, TimingError, Timings};
use crate::event::{NodeEvent, Step, Subsystem, Transmit};
use crate::plane::{ControlConfig, ControlPlane, ElectionKey, PlaneStats, Status};
use crate::topology::{NeighborView, Topology, TopologyConfig, TopologyEvent, TopologyStats};

/// Everything a node's control plane needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node.
    pub id: NodeId,
    /// The host it advertises to neighbours.
    pub host: String,
    /// Its control-plane port.
    pub control_port: u16,
    /// Its data-plane port, sent down the tree (0 while it serves none).
    pub data_port: u16,
    /// Random per process start.
    pub incarnation: u64,
    /// Handshake and liveness timings.
    pub topology: TopologyConfig,
    /// An election with no progress for this long restarts.
    pub election_timeout: Duration,
    /// How long a fresh node waits to be told a leader before electing.
    pub join_wait: Duration,
    /// The root's tree-epoch period.
    pub epoch_tick: Duration,
    /// How long an orphan waits for adoption before electing.
    pub heal_timeout: Duration,
    /// Produce [`NodeEvent::Trace`] events (cheap to leave off when nobody logs them).
    pub trace: bool,
    /// How many nodes the cluster has (`[cluster] size`; 1: a lone node).
    pub cluster_size: usize,
    /// How long a majority's answer to a probe lets the root write, from the probe's sending.
    pub writer_lease: Duration,
    /// Period of resending unacknowledged tree messages.
    pub retransmit: Duration,
    /// After the handshake, a header stamped more than this ahead of the neighbour's previous
    /// stamp is dropped and counted, not adopted (a buggy or hostile peer cannot push the
    /// clock to its end). The first stamp after a handshake is always taken, so a node that
    /// restarted at 0 joins a cluster whose clocks are far ahead.
    pub max_lamport_jump: u64,
    /// The highest term this node was a member of, as persisted by the driver from
    /// [`NodeEvent::TermChanged`] (0 for a new node): the term never decreases across
    /// restarts.
    pub initial_term: u64,
}

impl NodeConfig {
    /// Default timings for node `id`.
    pub fn new(id: NodeId, host: String, control_port: u16, incarnation: u64) -> Self {
        let control = ControlConfig::default();
        NodeConfig {
            id,
            host,
            control_port,
            data_port: 0,
            incarnation,
            topology: TopologyConfig::default(),
            election_timeout: control.election_timeout,
            join_wait: control.join_wait,
            epoch_tick: control.epoch_tick,
            heal_timeout: control.heal_timeout,
            trace: control.trace,
            cluster_size: control.cluster_size,
            writer_lease: control.writer_lease,
            retransmit: control.retransmit,
            max_lamport_jump: defaults::MAX_LAMPORT_JUMP,
            initial_term: control.initial_term,
        }
    }

    /// Checks the timing rules of [`defaults::check_timings`].
    pub fn check_timings(&self) -> Result<(), TimingError> {
        defaults::check_timings(&Timings {
            heartbeat: self.topology.heartbeat,
            liveness_timeout: self.topology.liveness_timeout,
            epoch_tick: self.epoch_tick,
            heal_timeout: self.heal_timeout,
            writer_lease: self.writer_lease,
        })
    }

    /// The election and tree part of the configuration.
    pub fn control(&self) -> ControlConfig {
        ControlConfig {
            election_timeout: self.election_timeout,
            join_wait: self.join_wait,
            epoch_tick: self.epoch_tick,
            heal_timeout: self.heal_timeout,
            data_port: self.data_port,
            trace: self.trace,
            cluster_size: self.cluster_size,
            writer_lease: self.writer_lease,
            retransmit: self.retransmit,
            initial_term: self.initial_term,
            restart_hold: self.topology.liveness_timeout,
        }
    }
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Inputs the topology machine dropped.
    pub topology: TopologyStats,
    /// Election or tree messages dropped because the sender is not an ON neighbour.
    pub control_from_strangers: u64,
    /// Messages dropped because their Lamport stamp jumped too far ahead.
    pub lamport_jumps: u64,
    /// The election and tree machines' counters.
    pub plane: PlaneStats,
}

/// One node's control plane. See the module docs for the driver loop.
#[derive(Debug)]
pub struct Node {
    topology: Topology,
    plane: ControlPlane,
    clock: LamportClock,
    events: VecDeque<NodeEvent>,
    control_from_strangers: u64,
    /// Each neighbour's last accepted stamp since its handshake.
    last_stamp: BTreeMap<NodeId, u64>,
    max_lamport_jump: u64,
    lamport_jumps: u64,
}

impl Node {
    /// A fresh node with no neighbours.
    pub fn new(config: NodeConfig, now: Instant) -> Self {
        Self::with_clock(config, LamportClock::new(), now)
    }

    /// A fresh node whose clock can be read through `clock` by the rest of the process (its
    /// logs). Only the node advances it.
    pub fn with_clock(config: NodeConfig, clock: LamportClock, now: Instant) -> Self {
        let topology = Topology::new(
            config.id,
            config.host.clone(),
            config.control_port,
            config.incarnation,
            config.topology.clone(),
            now,
        );
        let plane = ControlPlane::new(config.id, config.control(), clock.clone(), now);
        Node {
            topology,
            plane,
            clock,
            events: VecDeque::new(),
            control_from_strangers: 0,
            last_stamp: BTreeMap::new(),
            max_lamport_jump: config.max_lamport_jump,
            lamport_jumps: 0,
        }
    }

    /// The node's Lamport time now (for logs).
    pub fn lamport(&self) -> u64 {
        self.clock.now()
    }

    /// The highest term of a tree this node was a member of; never decreases.
    pub fn term(&self) -> u64 {
        self.plane.term()
    }

    /// The node's durable data changed (after every write or apply): the election prefers
    /// the best key, and a node whose key beats its leader's does not serve under it.
    pub fn set_election_key(&mut self, now: Instant, key: ElectionKey) {
        self.plane.set_election_key(now, key);
        self.drain_plane();
    }

    /// A neighbour from config or the bootstrap service: starts the handshake.
    pub fn add_neighbor(&mut self, now: Instant, id: NodeId, host: String, control_port: u16) {
        self.topology.add_neighbor(now, id, host, control_port);
        self.pump(now);
    }

    /// A received envelope's body from `from`. Election and tree messages count only from ON
    /// neighbours (others are dropped and counted: a restarted peer speaks again after its
    /// new handshake).
    ///
    /// `lamport` is the header's stamp: merged into the node's clock, unless it jumps more
    /// than `max_lamport_jump` ahead of the neighbour's previous one (then the whole message
    /// is dropped and counted in [`NodeStats::lamport_jumps`]).
    pub fn handle_message(&mut self, now: Instant, from: NodeId, lamport: u64, body: &Body) {
        if let Some(&last) = self.last_stamp.get(&from) {
            if lamport > last.saturating_add(self.max_lamport_jump) {
                self.lamport_jumps += 1;
                return;
            }
        }
        let was_on = self.topology.is_on(from);
        self.clock.observe(lamport);
        self.topology.handle_message(now, from, body);
        self.pump(now);
        if was_on || self.topology.is_on(from) {
            // Stamps are checked from the handshake on: before it, the peer may be a new
            // process (or this one is) and any clock is taken as it is.
            let last = self.last_stamp.entry(from).or_insert(lamport);
            *last = (*last).max(lamport);
        }
        if matches!(body, Body::Election(_) | Body::Tree(_)) {
            if self.topology.is_on(from) {
                self.plane.handle_body(now, from, body);
            } else {
                self.control_from_strangers += 1;
            }
        }
        self.drain_plane();
    }

    /// The transport saw `peer`'s host close the connection (the zmq monitor's TCP close):
    /// the peer process is gone. A silent drop or a frozen peer produces no such event.
    pub fn handle_link_down(&mut self, now: Instant, peer: NodeId) {
        self.topology.handle_link_down(now, peer);
        self.pump(now);
        if self.topology.check_addressable(peer).is_ok() {
            self.plane.handle_link_down(now, peer);
            self.drain_plane();
        }
    }

    /// The transport (re)connected to `peer`.
    pub fn handle_link_up(&mut self, now: Instant, peer: NodeId) {
        self.topology.handle_link_up(now, peer);
        self.pump(now);
        if self.topology.is_on(peer) {
            self.plane.handle_link_up(now, peer);
            self.drain_plane();
        }
    }

    /// Runs the timers due at `now`; an early call does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.topology.handle_timeout(now);
        self.pump(now);
        self.plane.handle_timeout(now);
        self.drain_plane();
    }

    /// The next message to send, stamped. Drain [`Node::poll_event`] first.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if let Some((to, body)) = self.topology.poll_transmit() {
            return Some(Transmit {
                to,
                lamport: self.clock.tick(),
                body,
            });
        }
        self.plane.poll_transmit()
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<NodeEvent> {
        self.events.pop_front()
    }

    /// When [`Node::handle_timeout`] must be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.topology.poll_timeout(), self.plane.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Leader, roles, parent, children, routes, epochs, election in progress, ON neighbours.
    pub fn status(&self) -> Status {
        self.plane.status()
    }

    /// At a writable root: the instant its writer lease runs out, if nothing extends it
    /// (`None` elsewhere). See [`Status::quorum`] for the flag.
    pub fn writable_until(&self) -> Option<Instant> {
        self.plane.writable_until()
    }

    /// Every neighbour with its address and state.
    pub fn neighbors(&self) -> impl Iterator<Item = NeighborView> + '_ {
        self.topology.neighbors()
    }

    /// The election and tree machines (for the simulator's checks).
    #[cfg(feature = "sim")]
    pub(crate) fn plane(&self) -> &ControlPlane {
        &self.plane
    }

    /// Counters of dropped inputs.
    pub fn stats(&self) -> NodeStats {
        NodeStats {
            topology: self.topology.stats(),
            control_from_strangers: self.control_from_strangers,
            lamport_jumps: self.lamport_jumps,
            plane: self.plane.stats(),
        }
    }

    /// Moves topology events into the plane and the event queue.
    fn pump(&mut self, now: Instant) {
        while let Some(event) = self.topology.poll_event() {
            match event {
                TopologyEvent::Connect {
                    id,
                    host,
                    control_port,
                } => self.events.push_back(NodeEvent::Connect {
                    id,
                    host,
                    control_port,
                }),
                TopologyEvent::NeighborOn { id } => self.plane.handle_neighbor_on(now, id),
                TopologyEvent::NeighborOff { id, reason } => {
                    if reason == crate::topology::OffReason::Restarted {
                        // A new process: its clock and numbering start afresh.
                        self.last_stamp.remove(&id);
                    }
                    self.plane.handle_neighbor_off(now, id)
                }
                TopologyEvent::RejoinStarted { id } => {
                    if self.plane.config.trace {
                        self.events.push_back(NodeEvent::Trace(crate::Trace {
                            subsystem: Subsystem::Topology,
                            run: None,
                            round: None,
                            lamport: self.clock.now(),
                            step: Step::RejoinStarted { id },
                        }));
                    }
                }
            }
            self.drain_plane();
        }
    }

    fn drain_plane(&mut self) {
        while let Some(event) = self.plane.poll_event() {
            self.events.push_back(event);
        }
    }
}
