//! The whole control plane of one node: neighbours ([`Topology`]) feeding the election and
//! the tree ([`ControlPlane`]), behind one quinn-like API.
//!
//! The driver loop (the real one lives in `chat-node`):
//!
//! ```text
//! let mut node = Node::new(config, now);
//! let clock = node.clock();               // stamps headers: tick() on send, observe() on receive
//! for (id, host, port) in bootstrap_neighbours { node.add_neighbor(now, id, host, port); }
//! loop {
//!     // one input: a received envelope, a link change from the transport, or a timeout
//!     clock.observe(envelope.header.lamport);
//!     node.handle_message(now, envelope.header.source, &envelope.body);
//!     // then drain, events first: a Connect must reach the transport before the JOIN it enables
//!     while let Some(event) = node.poll_event() { /* connect, log traces, start/stop roles */ }
//!     while let Some((to, body)) = node.poll_transmit() { /* Envelope::new(me, to, clock.tick(), body) */ }
//!     sleep_until(node.poll_timeout());     // then node.handle_timeout(now)
//! }
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use chat_wire::{Body, NodeId};

use crate::clock::LamportClock;
use crate::event::{NodeEvent, Step, Subsystem};
use crate::plane::{ControlConfig, ControlPlane, Status};
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
        }
    }

    fn control(&self) -> ControlConfig {
        ControlConfig {
            election_timeout: self.election_timeout,
            join_wait: self.join_wait,
            epoch_tick: self.epoch_tick,
            heal_timeout: self.heal_timeout,
            data_port: self.data_port,
            trace: self.trace,
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
}

/// One node's control plane. See the module docs for the driver loop.
#[derive(Debug)]
pub struct Node {
    topology: Topology,
    plane: ControlPlane,
    clock: LamportClock,
    events: VecDeque<NodeEvent>,
    control_from_strangers: u64,
}

impl Node {
    /// A fresh node with no neighbours.
    pub fn new(config: NodeConfig, now: Instant) -> Self {
        Self::with_clock(config, LamportClock::new(), now)
    }

    /// A fresh node sharing `clock` with the rest of the process (its logs, its data plane).
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
        }
    }

    /// The node's Lamport clock (clones share it): the driver ticks it for every send and
    /// observes every received header with it.
    pub fn clock(&self) -> LamportClock {
        self.clock.clone()
    }

    /// A neighbour from config or the bootstrap service: starts the handshake.
    pub fn add_neighbor(&mut self, now: Instant, id: NodeId, host: String, control_port: u16) {
        self.topology.add_neighbor(now, id, host, control_port);
        self.pump(now);
    }

    /// A received envelope's body from `from`. Election and tree messages count only from ON
    /// neighbours (others are dropped and counted: a restarted peer speaks again after its
    /// new handshake).
    pub fn handle_message(&mut self, now: Instant, from: NodeId, body: &Body) {
        self.topology.handle_message(now, from, body);
        self.pump(now);
        if matches!(body, Body::Election(_) | Body::Tree(_)) {
            if self.topology.is_on(from) {
                self.plane.handle_message(now, from, body);
            } else {
                self.control_from_strangers += 1;
            }
        }
        self.drain_plane();
    }

    /// The transport saw the connection to `peer` drop.
    pub fn handle_link_down(&mut self, now: Instant, peer: NodeId) {
        self.topology.handle_link_down(now, peer);
        self.pump(now);
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

    /// The node's durable data epoch changed (the election prefers the highest).
    pub fn set_data_epoch(&mut self, epoch: u64) {
        self.plane.set_data_epoch(epoch);
    }

    /// The next message to send. Drain [`Node::poll_event`] first.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<(NodeId, Body)> {
        self.topology
            .poll_transmit()
            .or_else(|| self.plane.poll_transmit())
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

    /// Every neighbour with its address and state.
    pub fn neighbors(&self) -> impl Iterator<Item = NeighborView> + '_ {
        self.topology.neighbors()
    }

    /// Counters of dropped inputs.
    pub fn stats(&self) -> NodeStats {
        NodeStats {
            topology: self.topology.stats(),
            control_from_strangers: self.control_from_strangers,
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
                TopologyEvent::NeighborOff { id, .. } => self.plane.handle_neighbor_off(now, id),
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
