//! Neighbours: the three-way handshake, heartbeats and liveness, as a sans-IO state machine.
//!
//! [`Topology`] knows which nodes are this node's neighbours and whether each is ON or OFF.
//! It reads no clock and owns no socket: the driver feeds it received messages, link changes
//! from the transport and the current time, then drains what it produced:
//!
//! ```text
//! loop {
//!     topology.handle_message(now, from, &body);  // or handle_link_down/up, handle_timeout
//!     // Events first: a Connect must reach the transport before the JOIN it enables.
//!     while let Some(event) = topology.poll_event() { /* connect, tell election/tree */ }
//!     while let Some((to, body)) = topology.poll_transmit() { /* stamp header, send */ }
//!     sleep_until(topology.poll_timeout());
//! }
//! ```
//!
//! # Rules
//!
//! - **Handshake** (SPEC §5.5): JOIN → JOIN-ACK → ACK. A node keeps sending JOIN to a
//!   neighbour it has not completed a handshake with, with exponential backoff (fast first
//!   retry, capped). JOIN is always answered with JOIN-ACK, JOIN-ACK always with ACK; either
//!   JOIN-ACK or ACK completes the handshake. So crossed JOINs, lost ACKs and duplicates all
//!   converge, and a completed handshake is reported once.
//! - **Liveness**: every received message is a sign of life. Heartbeats go every
//!   [`TopologyConfig::heartbeat`] to every neighbour that completed a handshake, OFF ones
//!   included, so a neighbour that comes back is noticed. A neighbour silent for
//!   [`TopologyConfig::liveness_timeout`] goes OFF; one heard again goes ON.
//! - **Dropped links**: the transport reports a dropped connection with
//!   [`Topology::handle_link_down`]. The neighbour goes OFF after
//!   [`TopologyConfig::link_down_grace`] unless the link comes back or the neighbour is heard
//!   first, so a connection that drops and comes straight back does not flap the cluster.
//! - **Strangers**: a node that keeps sending heartbeats while unknown (it thinks we are
//!   neighbours; we restarted, or forgot it) gets a REJOIN handshake after
//!   [`TopologyConfig::stranger_heartbeats_before_rejoin`] of them.
//! - **Restarts**: every handshake message and heartbeat carries the sender's incarnation. A
//!   neighbour whose incarnation changed is a new process with none of the old state: it is
//!   reported OFF ([`OffReason::Restarted`]) if it was ON, and handshaken again.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use chat_wire::{Body, HandshakeStep, Heartbeat, NodeId, Topology as TopologyBody};

/// Timings and thresholds of the neighbour protocol. Defaults ([`crate::defaults`]) are far
/// faster than the prototype's (2 s heartbeats, 10 s liveness, 500 ms..16 s JOIN backoff;
/// SPEC §5.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyConfig {
    /// Period of heartbeats to every neighbour.
    pub heartbeat: Duration,
    /// A neighbour silent this long goes OFF. Several heartbeat periods, so one or two lost
    /// heartbeats do not turn a live neighbour OFF.
    pub liveness_timeout: Duration,
    /// Delay before the first JOIN retry; doubles on each further retry.
    pub join_backoff_initial: Duration,
    /// Longest delay between JOIN retries.
    pub join_backoff_max: Duration,
    /// Heartbeats from an unknown node before this node starts a REJOIN handshake with it.
    pub stranger_heartbeats_before_rejoin: u32,
    /// How long a dropped connection may take to come back before the neighbour goes OFF.
    pub link_down_grace: Duration,
}

impl Default for TopologyConfig {
    fn default() -> Self {
        use crate::defaults;
        TopologyConfig {
            heartbeat: defaults::HEARTBEAT,
            liveness_timeout: defaults::LIVENESS_TIMEOUT,
            join_backoff_initial: defaults::JOIN_BACKOFF_INITIAL,
            join_backoff_max: defaults::JOIN_BACKOFF_MAX,
            stranger_heartbeats_before_rejoin: 5,
            link_down_grace: defaults::LINK_DOWN_GRACE,
        }
    }
}

/// What [`Topology`] tells its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopologyEvent {
    /// The driver must connect its transport to this address (new neighbour, or address
    /// changed).
    Connect {
        /// The neighbour.
        id: NodeId,
        /// Its host.
        host: String,
        /// Its control port.
        control_port: u16,
    },
    /// A handshake completed, or an OFF neighbour was heard again.
    NeighborOn {
        /// The neighbour.
        id: NodeId,
    },
    /// An ON neighbour is no longer reachable.
    NeighborOff {
        /// The neighbour.
        id: NodeId,
        /// How that was found out.
        reason: OffReason,
    },
    /// A stranger kept sending heartbeats; this node sent it a REJOIN handshake.
    RejoinStarted {
        /// The stranger.
        id: NodeId,
    },
}

/// Why a neighbour went OFF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OffReason {
    /// The transport saw its connection drop and it did not come back within the grace.
    LinkDropped,
    /// Nothing was heard from it for the liveness timeout.
    Silent,
    /// It spoke with a new incarnation: the process restarted and lost its state. A new
    /// handshake follows; [`TopologyEvent::NeighborOn`] reports its completion.
    Restarted,
}

/// Whether a neighbour can be talked to right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NeighborState {
    /// Handshake completed and recently heard.
    On,
    /// Handshake not completed yet, or silent, or its link dropped.
    Off,
}

/// A neighbour as shown to operators (status endpoint) and to the rest of the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighborView {
    /// Its id.
    pub id: NodeId,
    /// Its host, as configured or as it advertised itself.
    pub host: String,
    /// Its control port.
    pub control_port: u16,
    /// ON or OFF.
    pub state: NeighborState,
    /// Whether a handshake with it ever completed (an OFF neighbour may still be joining).
    pub joined: bool,
    /// When anything was last received from it.
    pub last_seen: Option<Instant>,
}

/// Returned by [`Topology::check_addressable`]: only neighbours may be sent messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("node {0} is not a neighbour of this node")]
pub struct NotANeighbor(pub NodeId);

/// Counters of inputs the machine dropped, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopologyStats {
    /// JOIN-ACKs and ACKs from nodes with no handshake in progress.
    pub unexpected_handshakes: u64,
    /// Non-topology messages from nodes that are not neighbours.
    pub stranger_messages: u64,
    /// Heartbeats from strangers dropped because too many strangers are being counted.
    pub strangers_over_limit: u64,
    /// Handshakes with strangers abandoned because they stopped answering.
    pub abandoned_handshakes: u64,
}

/// At most this many strangers' heartbeats are counted at once, so a flood of made-up ids
/// cannot grow the table without bound.
const MAX_COUNTED_STRANGERS: usize = 1024;

/// The neighbour table and its handshake and liveness protocol. See the module docs.
#[derive(Debug)]
pub struct Topology {
    me: NodeId,
    host: String,
    control_port: u16,
    incarnation: u64,
    config: TopologyConfig,
    /// Ordered so that heartbeats and timer expiries happen in a reproducible order.
    peers: BTreeMap<NodeId, Peer>,
    stranger_heartbeats: HashMap<NodeId, u32>,
    timers: TimerTable,
    transmits: VecDeque<(NodeId, Body)>,
    events: VecDeque<TopologyEvent>,
    stats: TopologyStats,
}

#[derive(Debug)]
struct Peer {
    /// `None` only for a stranger we sent a REJOIN to and that has not answered yet.
    address: Option<Address>,
    /// Listed in config or by the bootstrap service.
    configured: bool,
    /// A handshake with it completed at least once: it stays a neighbour from then on.
    joined: bool,
    /// The handshake with its current incarnation is complete.
    established: bool,
    /// Established and neither silent nor dropped.
    on: bool,
    last_seen: Option<Instant>,
    incarnation: Option<u64>,
    /// Current delay before the next JOIN retry.
    join_backoff: Duration,
    /// Our JOINs to it are REJOINs (it sent us heartbeats while unknown).
    rejoin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Address {
    host: String,
    control_port: u16,
}

impl Peer {
    fn new(address: Option<Address>, configured: bool, join_backoff: Duration) -> Self {
        Peer {
            address,
            configured,
            joined: false,
            established: false,
            on: false,
            last_seen: None,
            incarnation: None,
            join_backoff,
            rejoin: false,
        }
    }

    fn is_neighbor(&self) -> bool {
        self.configured || self.joined
    }
}

impl Topology {
    /// A node with no neighbours yet. `host` and `control_port` are what this node
    /// advertises in its handshakes; `incarnation` must differ on every process start (the
    /// driver draws it at random) so that peers can tell a restart from a late message.
    pub fn new(
        me: NodeId,
        host: String,
        control_port: u16,
        incarnation: u64,
        config: TopologyConfig,
        now: Instant,
    ) -> Self {
        let mut timers = TimerTable::default();
        timers.set(Timer::Heartbeat, now + config.heartbeat);
        Topology {
            me,
            host,
            control_port,
            incarnation,
            config,
            peers: BTreeMap::new(),
            stranger_heartbeats: HashMap::new(),
            timers,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: TopologyStats::default(),
        }
    }

    /// Adds a neighbour from config or the bootstrap service and starts the handshake with
    /// it: a JOIN now, then retries with backoff until it answers. Adding a known neighbour
    /// again only updates its address. This node itself is never its own neighbour.
    pub fn add_neighbor(&mut self, now: Instant, id: NodeId, host: String, control_port: u16) {
        if id == self.me {
            tracing::warn!(
                target: "topology",
                subsystem = "topology",
                id,
                "refusing to add this node as its own neighbour"
            );
            return;
        }
        let address = Address { host, control_port };
        let backoff = self.config.join_backoff_initial;
        let peer = self
            .peers
            .entry(id)
            .or_insert_with(|| Peer::new(None, true, backoff));
        peer.configured = true;
        let needs_join = !peer.established;
        self.learn_address(id, address);
        if needs_join && self.timers.get(Timer::JoinRetry(id)).is_none() {
            self.start_handshake(now, id);
        }
    }

    /// Processes one received message from `from`, whatever its scope: any message is a sign
    /// of life. Topology and heartbeat bodies drive the protocol; other bodies are left to
    /// the rest of the node.
    pub fn handle_message(&mut self, now: Instant, from: NodeId, body: &Body) {
        if from == self.me {
            return;
        }
        if !self.peers.contains_key(&from) {
            self.handle_stranger(now, from, body);
            return;
        }
        if let Some(incarnation) = incarnation_of(body) {
            self.check_incarnation(now, from, incarnation);
        }
        self.heard(now, from);
        if let Body::Topology(handshake) = body {
            self.handle_handshake(now, from, handshake);
        }
        self.revive_if_off(now, from);
    }

    /// The transport saw the connection to `peer` drop. The neighbour goes OFF after the
    /// grace unless it is heard from, or the link comes back, first.
    pub fn handle_link_down(&mut self, now: Instant, peer: NodeId) {
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        if p.on && self.timers.get(Timer::LinkDownGrace(peer)).is_none() {
            self.timers.set(
                Timer::LinkDownGrace(peer),
                now + self.config.link_down_grace,
            );
        }
    }

    /// The transport (re)connected to `peer`. Cancels a pending OFF from a dropped link; a
    /// neighbour still waiting for its handshake is sent a JOIN at once rather than at its
    /// next (possibly far) retry, since it has evidently just come up.
    pub fn handle_link_up(&mut self, now: Instant, peer: NodeId) {
        self.timers.stop(Timer::LinkDownGrace(peer));
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        if !p.established && p.address.is_some() {
            self.start_handshake(now, peer);
        }
    }

    /// Runs whatever timers are due at `now`. Calling it early does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        for timer in self.timers.take_expired(now) {
            match timer {
                Timer::Heartbeat => self.send_heartbeats(now),
                Timer::JoinRetry(id) => self.retry_join(now, id),
                Timer::Liveness(id) => self.turn_off(id, OffReason::Silent),
                Timer::LinkDownGrace(id) => self.turn_off(id, OffReason::LinkDropped),
            }
        }
    }

    /// The next message to send: to whom, and its body (the driver adds the header).
    /// Changed by every `handle_*` and `add_neighbor` call.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<(NodeId, Body)> {
        self.transmits.pop_front()
    }

    /// When [`Topology::handle_timeout`] must be called next. Changed by every `handle_*` and
    /// `add_neighbor` call.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// The next event for the driver. Changed by every `handle_*` and `add_neighbor` call.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<TopologyEvent> {
        self.events.pop_front()
    }

    /// `Ok` if `id` is a neighbour (configured, or joined through a handshake), ON or OFF:
    /// only neighbours may be sent messages.
    pub fn check_addressable(&self, id: NodeId) -> Result<(), NotANeighbor> {
        match self.peers.get(&id) {
            Some(peer) if peer.is_neighbor() => Ok(()),
            _ => Err(NotANeighbor(id)),
        }
    }

    /// Every neighbour, by id.
    pub fn neighbors(&self) -> impl Iterator<Item = NeighborView> + '_ {
        self.peers.iter().filter_map(|(&id, peer)| {
            let address = peer.address.as_ref().filter(|_| peer.is_neighbor())?;
            Some(NeighborView {
                id,
                host: address.host.clone(),
                control_port: address.control_port,
                state: if peer.on {
                    NeighborState::On
                } else {
                    NeighborState::Off
                },
                joined: peer.joined,
                last_seen: peer.last_seen,
            })
        })
    }

    /// Whether `id` is a neighbour that is ON.
    pub fn is_on(&self, id: NodeId) -> bool {
        self.peers.get(&id).is_some_and(|peer| peer.on)
    }

    /// Counters of dropped inputs.
    pub fn stats(&self) -> TopologyStats {
        self.stats
    }

    /// This node's incarnation, as advertised in its handshakes and heartbeats.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    // ---- inputs ----------------------------------------------------------------------

    fn handle_stranger(&mut self, now: Instant, from: NodeId, body: &Body) {
        match body {
            Body::Topology(handshake) if handshake.step == HandshakeStep::Join => {
                // A node that wants to be our neighbour: answer, and remember it as pending
                // until its ACK arrives.
                let backoff = self.config.join_backoff_initial;
                self.peers.insert(from, Peer::new(None, false, backoff));
                self.stranger_heartbeats.remove(&from);
                self.handle_message(now, from, body);
            }
            Body::Topology(_) => self.stats.unexpected_handshakes += 1,
            Body::Heartbeat(_) => self.count_stranger_heartbeat(now, from),
            _ => self.stats.stranger_messages += 1,
        }
    }

    fn count_stranger_heartbeat(&mut self, now: Instant, from: NodeId) {
        if !self.stranger_heartbeats.contains_key(&from)
            && self.stranger_heartbeats.len() >= MAX_COUNTED_STRANGERS
        {
            self.stats.strangers_over_limit += 1;
            return;
        }
        let count = self.stranger_heartbeats.entry(from).or_insert(0);
        *count += 1;
        if *count < self.config.stranger_heartbeats_before_rejoin {
            return;
        }
        self.stranger_heartbeats.remove(&from);
        tracing::info!(
            target: "topology",
            subsystem = "topology",
            id = from,
            "heartbeats from a stranger: sending REJOIN"
        );
        // Its address comes with its JOIN-ACK; until then the transport reaches it by identity
        // over the connection it opened to us.
        let mut peer = Peer::new(None, false, self.config.join_backoff_initial);
        peer.rejoin = true;
        peer.last_seen = Some(now);
        self.peers.insert(from, peer);
        self.events
            .push_back(TopologyEvent::RejoinStarted { id: from });
        self.start_handshake(now, from);
    }

    fn check_incarnation(&mut self, now: Instant, from: NodeId, incarnation: u64) {
        let Some(peer) = self.peers.get_mut(&from) else {
            return;
        };
        let known = peer.incarnation.replace(incarnation);
        if !peer.established || known.is_none_or(|known| known == incarnation) {
            return;
        }
        tracing::info!(
            target: "topology",
            subsystem = "topology",
            id = from,
            "neighbour restarted: new handshake"
        );
        peer.established = false;
        let was_on = std::mem::replace(&mut peer.on, false);
        self.timers.stop(Timer::Liveness(from));
        self.timers.stop(Timer::LinkDownGrace(from));
        if was_on {
            self.events.push_back(TopologyEvent::NeighborOff {
                id: from,
                reason: OffReason::Restarted,
            });
        }
        self.start_handshake(now, from);
    }

    /// Records a sign of life.
    fn heard(&mut self, now: Instant, from: NodeId) {
        let Some(peer) = self.peers.get_mut(&from) else {
            return;
        };
        peer.last_seen = Some(now);
        self.timers.stop(Timer::LinkDownGrace(from));
        if peer.on {
            self.timers
                .set(Timer::Liveness(from), now + self.config.liveness_timeout);
        }
    }

    fn handle_handshake(&mut self, now: Instant, from: NodeId, handshake: &TopologyBody) {
        if !handshake.host.is_empty() {
            self.learn_address(
                from,
                Address {
                    host: handshake.host.clone(),
                    control_port: handshake.control_port,
                },
            );
        }
        match handshake.step {
            HandshakeStep::Join => {
                self.send_handshake(from, HandshakeStep::JoinAck, handshake.rejoin);
                // Our JOIN-ACK or the peer's ACK may be lost; our own JOIN retries (answered
                // with JOIN-ACK) then complete the handshake.
                let established = self.peers.get(&from).is_some_and(|p| p.established);
                if !established && self.timers.get(Timer::JoinRetry(from)).is_none() {
                    self.arm_join_retry(now, from);
                }
            }
            HandshakeStep::JoinAck => {
                self.send_handshake(from, HandshakeStep::Ack, handshake.rejoin);
                self.complete_handshake(now, from);
            }
            HandshakeStep::Ack => self.complete_handshake(now, from),
        }
    }

    fn complete_handshake(&mut self, now: Instant, id: NodeId) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if peer.established {
            return;
        }
        peer.established = true;
        peer.joined = true;
        peer.on = true;
        peer.rejoin = false;
        peer.join_backoff = self.config.join_backoff_initial;
        self.timers.stop(Timer::JoinRetry(id));
        self.timers
            .set(Timer::Liveness(id), now + self.config.liveness_timeout);
        tracing::info!(
            target: "topology",
            subsystem = "topology",
            id,
            "handshake complete: neighbour ON"
        );
        self.events.push_back(TopologyEvent::NeighborOn { id });
    }

    fn revive_if_off(&mut self, now: Instant, id: NodeId) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if !peer.established || peer.on {
            return;
        }
        peer.on = true;
        self.timers
            .set(Timer::Liveness(id), now + self.config.liveness_timeout);
        tracing::info!(target: "topology", subsystem = "topology", id, "neighbour heard again: ON");
        self.events.push_back(TopologyEvent::NeighborOn { id });
    }

    // ---- timers ----------------------------------------------------------------------

    fn send_heartbeats(&mut self, now: Instant) {
        let heartbeat = Body::Heartbeat(Heartbeat {
            incarnation: self.incarnation,
        });
        for (&id, peer) in &self.peers {
            if peer.joined {
                self.transmits.push_back((id, heartbeat.clone()));
            }
        }
        self.timers
            .set(Timer::Heartbeat, now + self.config.heartbeat);
    }

    fn retry_join(&mut self, now: Instant, id: NodeId) {
        let max = self.config.join_backoff_max;
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if peer.established {
            return;
        }
        if !peer.is_neighbor() && peer.join_backoff >= max {
            // A stranger that asked to join (or was sent a REJOIN) and went quiet: not ours
            // to chase forever.
            tracing::info!(
                target: "topology",
                subsystem = "topology",
                id,
                "stranger stopped answering: handshake abandoned"
            );
            self.peers.remove(&id);
            self.stats.abandoned_handshakes += 1;
            return;
        }
        peer.join_backoff = peer.join_backoff.saturating_mul(2).min(max);
        let rejoin = peer.rejoin;
        self.send_handshake(id, HandshakeStep::Join, rejoin);
        self.arm_join_retry(now, id);
    }

    fn turn_off(&mut self, id: NodeId, reason: OffReason) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if !peer.on {
            return;
        }
        peer.on = false;
        self.timers.stop(Timer::Liveness(id));
        self.timers.stop(Timer::LinkDownGrace(id));
        tracing::info!(target: "topology", subsystem = "topology", id, ?reason, "neighbour OFF");
        self.events
            .push_back(TopologyEvent::NeighborOff { id, reason });
    }

    // ---- helpers ---------------------------------------------------------------------

    /// Sends a JOIN now and arms the first retry.
    fn start_handshake(&mut self, now: Instant, id: NodeId) {
        let initial = self.config.join_backoff_initial;
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        peer.join_backoff = initial;
        let rejoin = peer.rejoin;
        self.send_handshake(id, HandshakeStep::Join, rejoin);
        self.arm_join_retry(now, id);
    }

    fn arm_join_retry(&mut self, now: Instant, id: NodeId) {
        if let Some(peer) = self.peers.get(&id) {
            self.timers
                .set(Timer::JoinRetry(id), now + peer.join_backoff);
        }
    }

    fn send_handshake(&mut self, to: NodeId, step: HandshakeStep, rejoin: bool) {
        self.transmits.push_back((
            to,
            Body::Topology(TopologyBody {
                step,
                rejoin,
                host: self.host.clone(),
                control_port: self.control_port,
                incarnation: self.incarnation,
            }),
        ));
    }

    fn learn_address(&mut self, id: NodeId, address: Address) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if peer.address.as_ref() == Some(&address) {
            return;
        }
        self.events.push_back(TopologyEvent::Connect {
            id,
            host: address.host.clone(),
            control_port: address.control_port,
        });
        peer.address = Some(address);
    }
}

fn incarnation_of(body: &Body) -> Option<u64> {
    match body {
        Body::Topology(handshake) => Some(handshake.incarnation),
        Body::Heartbeat(heartbeat) => Some(heartbeat.incarnation),
        _ => None,
    }
}

/// Everything the machine waits for. One deadline per timer; per-neighbour timers carry the
/// neighbour's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Timer {
    /// Send heartbeats to every neighbour.
    Heartbeat,
    /// Send JOIN again to a neighbour that has not answered.
    JoinRetry(NodeId),
    /// An ON neighbour has been silent for the liveness timeout.
    Liveness(NodeId),
    /// A dropped link did not come back within the grace.
    LinkDownGrace(NodeId),
}

#[derive(Debug, Default)]
struct TimerTable {
    deadlines: HashMap<Timer, Instant>,
}

impl TimerTable {
    fn set(&mut self, timer: Timer, deadline: Instant) {
        self.deadlines.insert(timer, deadline);
    }

    fn stop(&mut self, timer: Timer) {
        self.deadlines.remove(&timer);
    }

    fn get(&self, timer: Timer) -> Option<Instant> {
        self.deadlines.get(&timer).copied()
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.values().min().copied()
    }

    /// Removes and returns the timers due at `now`, earliest first (ties in a fixed order,
    /// so runs are reproducible).
    fn take_expired(&mut self, now: Instant) -> Vec<Timer> {
        let mut expired: Vec<(Instant, Timer)> = self
            .deadlines
            .iter()
            .filter(|(_, &deadline)| deadline <= now)
            .map(|(&timer, &deadline)| (deadline, timer))
            .collect();
        expired.sort_unstable();
        for (_, timer) in &expired {
            self.deadlines.remove(timer);
        }
        expired.into_iter().map(|(_, timer)| timer).collect()
    }
}
