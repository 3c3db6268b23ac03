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

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::{Duration, Instant};

use chat_wire::{Body, NodeId};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::clock::LamportClock;
use crate::node::{Node, NodeConfig};
use crate::plane::{ControlConfig, ControlPlane, Status};
use crate::roles::{roles_for, Place};
use crate::NodeEvent;

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
}

impl SimConfig {
    /// Loopback-like delays and the default control settings, without trace events.
    pub fn new(seed: u64) -> Self {
        SimConfig {
            seed,
            delay: (Duration::from_micros(100), Duration::from_millis(5)),
            handshake: (Duration::from_millis(1), Duration::from_millis(30)),
            detection: (Duration::from_millis(150), Duration::from_millis(1500)),
            control: ControlConfig {
                trace: false,
                ..ControlConfig::default()
            },
            full_stack: false,
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
        if let Machine::Node(n) = self {
            n.handle_link_down(now, peer);
        }
    }

    fn handle_message(&mut self, now: Instant, from: NodeId, body: &Body) {
        match self {
            Machine::Plane(p) => p.handle_message(now, from, body),
            Machine::Node(n) => n.handle_message(now, from, body),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        match self {
            Machine::Plane(p) => p.handle_timeout(now),
            Machine::Node(n) => n.handle_timeout(now),
        }
    }

    fn set_data_epoch(&mut self, epoch: u64) {
        match self {
            Machine::Plane(p) => p.set_data_epoch(epoch),
            Machine::Node(n) => n.set_data_epoch(epoch),
        }
    }

    fn poll_transmit(&mut self) -> Option<(NodeId, Body)> {
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
    clock: LamportClock,
    incarnation: u64,
    /// Who this node currently believes ON, with the incarnation it met.
    view: BTreeMap<NodeId, u64>,
    wake: Option<Instant>,
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
    data_epochs: BTreeMap<NodeId, u64>,
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
            data_epochs: BTreeMap::new(),
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

    /// Sets the durable data epoch a node has (kept across restarts with memory).
    pub fn set_data_epoch(&mut self, id: NodeId, epoch: u64) {
        self.data_epochs.insert(id, epoch);
        if let Some(node) = self.nodes.get_mut(&id) {
            node.plane.set_data_epoch(epoch);
        }
    }

    /// Starts (or restarts) node `id` as a fresh process.
    pub fn start(&mut self, id: NodeId) {
        let incarnation = self.next_incarnation;
        self.next_incarnation += 1;
        let (mut plane, clock) = if self.config.full_stack {
            let c = &self.config.control;
            let mut config = NodeConfig::new(id, "127.0.0.1".into(), port_of(id), incarnation);
            config.election_timeout = c.election_timeout;
            config.join_wait = c.join_wait;
            config.epoch_tick = c.epoch_tick;
            config.heal_timeout = c.heal_timeout;
            config.trace = c.trace;
            let mut node = Node::new(config, self.now);
            for peer in self.neighbours(id) {
                node.add_neighbor(self.now, peer, "127.0.0.1".into(), port_of(peer));
            }
            let clock = node.clock();
            (Machine::Node(Box::new(node)), clock)
        } else {
            let clock = LamportClock::new();
            let plane = ControlPlane::new(id, self.config.control.clone(), clock.clone(), self.now);
            (Machine::Plane(Box::new(plane)), clock)
        };
        plane.set_data_epoch(self.data_epochs.get(&id).copied().unwrap_or(0));
        self.nodes.insert(
            id,
            SimNode {
                plane,
                clock,
                incarnation,
                view: BTreeMap::new(),
                wake: None,
            },
        );
        self.schedule_wake(id);
        let peers: Vec<NodeId> = self.neighbours(id);
        for peer in peers {
            self.link_changed(id, peer);
        }
    }

    /// Kills node `id`; with `keep_data` false its data epoch is lost too.
    pub fn crash(&mut self, id: NodeId, keep_data: bool) {
        if self.nodes.remove(&id).is_none() {
            return;
        }
        if !keep_data {
            self.data_epochs.remove(&id);
        }
        for peer in self.neighbours(id) {
            self.link_changed(id, peer);
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

    /// The transport drops the link and reconnects after `down_for`: messages in flight are
    /// lost, both ends get a link-up afterwards (a short drop is not a neighbour loss).
    pub fn flap(&mut self, a: NodeId, b: NodeId, down_for: Duration) {
        *self.generations.entry(key(a, b)).or_default() += 1;
        for (at, peer) in [(a, b), (b, a)] {
            if self.config.full_stack {
                self.push(self.now, Item::LinkDown { at, peer });
            }
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

    fn link_up(&self, a: NodeId, b: NodeId) -> bool {
        self.nodes.contains_key(&a)
            && self.nodes.contains_key(&b)
            && self.edges.get(&a).is_some_and(|s| s.contains(&b))
            && !self.cut.contains(&key(a, b))
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
        if let Some(node) = self.nodes.get_mut(&id) {
            while let Some((to, body)) = node.plane.poll_transmit() {
                sends.push((to, node.clock.tick(), body));
            }
            while let Some(event) = node.plane.poll_event() {
                match event {
                    NodeEvent::RolesChanged { .. } => role_changes += 1,
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
        self.stats.role_changes += role_changes;
        if role_changes > 0 {
            self.stats.last_role_change = Some(self.now - self.base);
        }
        for (to, lamport, body) in sends {
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
            if !self.link_up(id, to) {
                continue;
            }
            let generation = self.generations.get(&key(id, to)).copied().unwrap_or(0);
            // Links are FIFO, like the TCP connection under the real transport; messages on
            // different links overtake each other freely.
            let delay = self.random_duration(self.config.delay);
            let at = self
                .fifo
                .get(&(id, to))
                .map_or(self.now + delay, |&last| (self.now + delay).max(last));
            self.fifo.insert((id, to), at);
            let body_key = self.next_body;
            self.next_body += 1;
            self.bodies.insert(body_key, body);
            self.push(
                at,
                Item::Deliver {
                    from: id,
                    to,
                    generation,
                    lamport,
                    body: body_key,
                },
            );
        }
        self.schedule_wake(id);
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
                if current != generation || !self.link_up(from, to) {
                    return;
                }
                let Some(incarnation) = self.nodes.get(&from).map(|n| n.incarnation) else {
                    return;
                };
                let full_stack = self.config.full_stack;
                let Some(node) = self.nodes.get_mut(&to) else {
                    return;
                };
                node.clock.observe(lamport);
                if !full_stack {
                    // Any message is a sign of life: a peer believed OFF is heard again.
                    node.see(now, from, incarnation);
                }
                node.plane.handle_message(now, from, &body);
                self.drain(to);
            }
            Item::Liveness { at, peer } => {
                let up = self.link_up(at, peer);
                let incarnation = self.nodes.get(&peer).map(|n| n.incarnation);
                let Some(node) = self.nodes.get_mut(&at) else {
                    return;
                };
                match incarnation {
                    Some(incarnation) if up => node.see(now, peer, incarnation),
                    _ => {
                        if !up && node.view.remove(&peer).is_some() {
                            node.plane.handle_neighbor_off(now, peer);
                        }
                    }
                }
                self.drain(at);
            }
            Item::LinkDown { at, peer } => {
                let Some(node) = self.nodes.get_mut(&at) else {
                    return;
                };
                node.plane.handle_link_down(now, peer);
                self.drain(at);
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
            }
            Item::Wake { node, incarnation } => {
                let Some(n) = self.nodes.get_mut(&node) else {
                    return;
                };
                if n.incarnation != incarnation {
                    return;
                }
                n.wake = None;
                n.plane.handle_timeout(now);
                self.drain(node);
            }
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

    /// The best candidate (highest data epoch, then smallest id) of a component.
    pub fn best_candidate(&self, comp: &BTreeSet<NodeId>) -> Option<NodeId> {
        comp.iter()
            .map(|&id| chat_wire::Candidate {
                data_epoch: self.data_epochs.get(&id).copied().unwrap_or(0),
                node: id,
            })
            .min()
            .map(|c| c.node)
    }
}
