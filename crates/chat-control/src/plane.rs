//! The election and the tree composed: which run a node follows, when it starts one, and how
//! a run's result becomes a tree. Neighbour liveness comes in as ON/OFF inputs (from
//! [`crate::topology`] inside [`crate::Node`], or straight from a test).
//!
//! A node is in one of three tree states ([`Membership`]): detached (fresh, or electing),
//! member of a tree (root or with a parent), or orphan (it lost its way to the root and seeks
//! adoption). Runs are ordered by [`RunId`]; a node always follows the strongest run it has
//! heard of, and a run's tree replaces the trees of weaker runs.
//!
//! Stability: a member tells every neighbour that comes ON who the leader is (a SHOUT), so a
//! joining node attaches without an election. Elections start only when a node finds no
//! leader: a fresh node that hears none within `join_wait` (a lone node elects itself that
//! way), an orphan nobody adopts within `heal_timeout`, a run that cannot finish (a link
//! neighbour lost, the ends of a link disagreeing, no progress within `election_timeout`),
//! two trees meeting after a partition heals, or a node that must not join the tree it is
//! offered (its data is newer than the leader's, or its term is not lower than the tree's).
//!
//! Safety (see `quorum` and `docs/decisions.md`):
//!
//! * **Terms.** A tree's term is the Lamport time of the run that built it. A node only
//!   joins a tree whose term is higher than any term it was a member of (`term`, persisted
//!   by the driver and restored as `initial_term`); offered anything else it starts a run
//!   stronger than both, so every new tree's term exceeds what its members saw.
//! * **The key.** Candidates carry the live [`ElectionKey`]; a node whose key beats the
//!   announced leader's does not attach under it but elects (the better node wins).
//! * **A majority to write.** A root is writable only while a majority of `cluster_size`
//!   answered, in its term, a probe it sent within `writer_lease`; a member that answers
//!   promises not to support another writer for the lease.
//! * **Nothing lost.** Tree messages that expect no periodic repeat are numbered and resent
//!   until acknowledged or the neighbour goes OFF; copies are recognised and ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chat_wire::{Body, Candidate, Election, ElectionKind, NodeId, RunId, TreeId, TreeKind};

use crate::clock::LamportClock;
use crate::defaults;
use crate::election::{Outcome, Phase, YoYo};
use crate::event::{NodeEvent, Outbox, StartReason, Step, Subsystem, Transmit};
use crate::quorum::{Probes, Promise};
use crate::reliable::Reliable;
use crate::roles::{roles_for, Place, Roles};
use crate::routes::{RouteTable, Routes, Upstream};
use crate::tree::Announcement;

/// How many election timeouts a node that lost waits for the winner's SHOUT.
const LOSER_PATIENCE: u32 = 4;

/// Timing and identity of the election and tree machines.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// An election run with no progress for this long is restarted; also how long an orphan
    /// whose subtree was dissolved from above waits before electing on its own.
    pub election_timeout: Duration,
    /// How long a fresh node waits to be told a leader before it starts an election.
    pub join_wait: Duration,
    /// How often the root ticks the tree epoch.
    pub epoch_tick: Duration,
    /// How long a node that lost its parent waits for an adoption offer before electing.
    /// Must exceed `epoch_tick` plus a few message delays: offers need a fresher epoch.
    pub heal_timeout: Duration,
    /// This node's data-plane port, sent down the tree (0 while it serves none).
    pub data_port: u16,
    /// Produce [`NodeEvent::Trace`] events.
    pub trace: bool,
    /// How many nodes the cluster has (1: a lone node). A root is writable only while more
    /// than half of them answered its probe; trees of another size are refused.
    pub cluster_size: usize,
    /// How long a majority's answer to a probe lets the root write, counted from when the
    /// probe was sent; also how long an answering member supports no other writer.
    pub writer_lease: Duration,
    /// Period of resending unacknowledged tree messages.
    pub retransmit: Duration,
    /// The highest term this node was a member of before it restarted (0 for a new node).
    pub initial_term: u64,
    /// How long after its start a node without a term (`initial_term` 0) joins no tree it
    /// did not help elect and starts no election for want of a leader: it may have lost its
    /// disk, and neighbours that still name its previous life as their parent notice the
    /// restart within the liveness timeout (the value the node passes). Joining earlier
    /// could put it below its own old subtree: a cycle of parents (seeds 130540, 68319).
    pub restart_hold: Duration,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            election_timeout: defaults::ELECTION_TIMEOUT,
            join_wait: defaults::JOIN_WAIT,
            epoch_tick: defaults::EPOCH_TICK,
            heal_timeout: defaults::HEAL_TIMEOUT,
            data_port: 0,
            trace: true,
            cluster_size: 1,
            writer_lease: defaults::WRITER_LEASE,
            retransmit: defaults::RETRANSMIT,
            initial_term: 0,
            restart_hold: defaults::LIVENESS_TIMEOUT,
        }
    }
}

impl ControlConfig {
    /// The cluster size as it travels on the wire.
    pub(crate) fn wire_size(&self) -> u32 {
        u32::try_from(self.cluster_size).unwrap_or(u32::MAX)
    }
}

/// The live election key: (term of the last durable write, data epoch). Greater is better;
/// between equal keys the smaller node id wins. The driver sets it after every durable
/// write or apply ([`ControlPlane::set_election_key`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ElectionKey {
    /// The term in which the last durable write was made (0: none).
    pub last_term: u64,
    /// The number of writes held (the data epoch).
    pub epoch: u64,
}

/// Whether this node's tree may accept writes, as `/status` shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quorum {
    /// The configured cluster size.
    pub size: usize,
    /// At the root: nodes (the root included) that answered the freshest probe still within
    /// the lease; 0 elsewhere.
    pub have: usize,
    /// At the root: more than `size / 2` answered a probe sent within the lease.
    pub writable: bool,
}

/// The timers of the control plane; each has one slot in [`TimerTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Detached without a run: start one. In a run: it stalled, restart it.
    Election,
    /// Orphan: nobody adopted it, elect.
    Heal,
    /// Root: tick the tree epoch (and probe).
    EpochTick,
    /// Member: send the probe answer even though not every child answered yet.
    AckFlush,
    /// Root: the lease of the freshest answered probe runs out.
    Lease,
    /// Resend unacknowledged tree messages.
    Retransmit,
    /// A node without a term may now join the tree it was told about.
    Hold,
}

impl Timer {
    const ALL: [Timer; 7] = [
        Timer::Election,
        Timer::Heal,
        Timer::EpochTick,
        Timer::AckFlush,
        Timer::Lease,
        Timer::Retransmit,
        Timer::Hold,
    ];

    fn index(self) -> usize {
        match self {
            Timer::Election => 0,
            Timer::Heal => 1,
            Timer::EpochTick => 2,
            Timer::AckFlush => 3,
            Timer::Lease => 4,
            Timer::Retransmit => 5,
            Timer::Hold => 6,
        }
    }
}

/// Deadlines, one per [`Timer`].
#[derive(Debug, Clone, Default)]
pub(crate) struct TimerTable {
    deadlines: [Option<Instant>; 7],
}

impl TimerTable {
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        self.deadlines[timer.index()] = Some(at);
    }

    pub(crate) fn stop(&mut self, timer: Timer) {
        self.deadlines[timer.index()] = None;
    }

    pub(crate) fn next(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }

    /// Clears and returns the timers due at `now`.
    fn expire(&mut self, now: Instant) -> Vec<Timer> {
        Timer::ALL
            .into_iter()
            .filter(|t| {
                let slot = &mut self.deadlines[t.index()];
                if slot.is_some_and(|at| at <= now) {
                    *slot = None;
                    true
                } else {
                    false
                }
            })
            .collect()
    }
}

/// A node's place in a tree.
#[derive(Debug, Clone)]
pub(crate) enum Membership {
    /// In no tree: fresh, or taking part in an election.
    Detached,
    /// In the tree of `run`.
    Member(Box<Member>),
    /// Was in the tree of `run`, lost its way to the root, seeks adoption.
    Orphan(Orphan),
}

#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub(crate) run: RunId,
    pub(crate) leader: NodeId,
    /// The leader's election key, as last heard (the root's own, at the root).
    pub(crate) leader_key: Candidate,
    /// Probe state: what the root sent and heard, or what a member answers.
    pub(crate) probes: Probes,
    /// `None` at the root.
    pub(crate) parent: Option<Upstream>,
    pub(crate) hops: u32,
    pub(crate) epoch: u64,
    pub(crate) children: BTreeSet<NodeId>,
    /// Neighbours sent a SHOUT that have not answered yet.
    pub(crate) awaiting: BTreeSet<NodeId>,
    pub(crate) routes: RouteTable,
}

#[derive(Debug, Clone)]
pub(crate) struct Orphan {
    pub(crate) run: RunId,
    pub(crate) leader: NodeId,
    pub(crate) epoch: u64,
}

/// An adoption request waiting for this node to have a fresher epoch (or to be adopted).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AdoptionRequest {
    pub(crate) run: RunId,
    pub(crate) leader: NodeId,
    pub(crate) epoch: u64,
}

/// A snapshot of the control plane for status pages and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// This node.
    pub id: NodeId,
    /// The leader, when this node is in its tree.
    pub leader: Option<NodeId>,
    /// The roles it plays.
    pub roles: Roles,
    /// Its tree parent.
    pub parent: Option<NodeId>,
    /// Its tree children.
    pub children: Vec<NodeId>,
    /// Next hops.
    pub routes: Routes,
    /// The tree epoch it last saw (0 outside a tree).
    pub tree_epoch: u64,
    /// The run of the tree it is in (or was in, as an orphan).
    pub tree_run: Option<RunId>,
    /// The election in progress at this node: run and round. `None` when settled.
    pub election: Option<(RunId, u32)>,
    /// Whether it lost its parent and waits for adoption.
    pub orphaned: bool,
    /// Whether every neighbour it sent a SHOUT answered.
    pub settled: bool,
    /// Its durable data epoch (`key.epoch`).
    pub data_epoch: u64,
    /// Its election key.
    pub key: ElectionKey,
    /// The highest term of a tree it was a member of; never decreases.
    pub term: u64,
    /// Whether its tree may accept writes (meaningful at the root).
    pub quorum: Quorum,
    /// Its ON neighbours.
    pub neighbors: Vec<NodeId>,
}

/// Counters of the election and tree machines, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlaneStats {
    /// Trees or runs refused because they announced another cluster size.
    pub size_mismatches: u64,
    /// Numbered tree messages received again and ignored.
    pub duplicates: u64,
    /// Numbered tree messages resent.
    pub retransmits: u64,
    /// Tree messages dropped because they made no sense here (stale, another tree).
    pub ignored: u64,
}

/// The election and tree state machines of one node, driven by neighbour ON/OFF inputs.
#[derive(Debug)]
pub struct ControlPlane {
    pub(crate) me: NodeId,
    pub(crate) config: ControlConfig,
    pub(crate) clock: LamportClock,
    pub(crate) data_epoch: u64,
    pub(crate) on: BTreeSet<NodeId>,
    pub(crate) election: Option<YoYo>,
    pub(crate) membership: Membership,
    pub(crate) requests: BTreeMap<NodeId, AdoptionRequest>,
    pub(crate) timers: TimerTable,
    pub(crate) out: Outbox,
    pub(crate) roles: Roles,
    pub(crate) leader: Option<NodeId>,
    pub(crate) now: Instant,
    /// A fresh node already gave a neighbour with a smaller id the chance to start.
    pub(crate) deferred_start: bool,
    /// Until when this node joins no tree it did not help elect (see
    /// [`ControlConfig::restart_hold`]).
    pub(crate) fresh_until: Instant,
    /// The announcement it was told during that time, answered at its end.
    pub(crate) held: Option<(NodeId, Announcement)>,
    /// The highest term of a tree this node was a member of.
    pub(crate) term: u64,
    /// The tree whose term is `term`, when this process was in it.
    pub(crate) term_tree: Option<TreeId>,
    /// The live election key.
    pub(crate) key: ElectionKey,
    /// The support this node promised a root by answering its probe.
    pub(crate) promise: Option<Promise>,
    /// The newest tree whose root is known gone (its host closed the connection).
    pub(crate) root_gone: Option<TreeId>,
    /// Neighbours whose connection their host closed, since they were last ON.
    pub(crate) closed: BTreeSet<NodeId>,
    /// Numbered tree messages awaiting acknowledgement, and those already handled.
    pub(crate) reliable: Reliable,
    /// Writability as last reported.
    pub(crate) writable: bool,
    pub(crate) stats: PlaneStats,
}

impl ControlPlane {
    /// A fresh node: in no tree, waiting `join_wait` to be told a leader. `clock` is the
    /// node's Lamport clock (a fresh one unless the node shares it with its topology).
    pub fn new(me: NodeId, config: ControlConfig, clock: LamportClock, now: Instant) -> Self {
        let mut timers = TimerTable::default();
        let fresh_until = if config.initial_term == 0 {
            now + config.restart_hold
        } else {
            now
        };
        // A node without a term waits out the hold before electing for want of a leader:
        // a neighbour holding an announcement attaches at the end of its own hold, and a
        // node started just after it must still be waiting then (late joiners attach
        // without an election).
        timers.set(Timer::Election, fresh_until + config.join_wait);
        // Runs this node starts must be stronger than any tree it was in before a restart.
        clock.observe(config.initial_term);
        ControlPlane {
            me,
            out: Outbox::new(config.trace),
            term: config.initial_term,
            term_tree: None,
            key: ElectionKey::default(),
            promise: None,
            root_gone: None,
            closed: BTreeSet::new(),
            reliable: Reliable::default(),
            writable: false,
            stats: PlaneStats::default(),
            config,
            clock,
            data_epoch: 0,
            on: BTreeSet::new(),
            election: None,
            membership: Membership::Detached,
            requests: BTreeMap::new(),
            timers,
            roles: Roles::NONE,
            leader: None,
            now,
            deferred_start: false,
            fresh_until,
            held: None,
        }
    }

    /// The highest term of a tree this node was a member of (never decreases).
    pub fn term(&self) -> u64 {
        self.term
    }

    /// Counters for metrics.
    pub fn stats(&self) -> PlaneStats {
        self.stats
    }

    /// The tree this node is a member of.
    #[cfg(feature = "sim")]
    pub(crate) fn tree_id(&self) -> Option<TreeId> {
        match &self.membership {
            Membership::Member(m) => Some(TreeId {
                run: m.run,
                leader: m.leader,
            }),
            _ => None,
        }
    }

    /// Its parent in that tree.
    #[cfg(feature = "sim")]
    pub(crate) fn parent_id(&self) -> Option<NodeId> {
        match &self.membership {
            Membership::Member(m) => m.parent.map(|p| p.next_hop),
            _ => None,
        }
    }

    fn begin(&mut self, now: Instant) {
        self.now = now;
        self.out.lamport = self.clock.now();
    }

    pub(crate) fn candidate(&self) -> Candidate {
        Candidate {
            last_term: self.key.last_term,
            data_epoch: self.key.epoch,
            node: self.me,
        }
    }

    /// The node's durable data changed (a write or an apply): later runs use the new key,
    /// and a root announces it to its tree with the next probe.
    pub fn set_election_key(&mut self, now: Instant, key: ElectionKey) {
        self.begin(now);
        self.key = key;
        self.data_epoch = key.epoch;
        let me = self.candidate();
        if let Membership::Member(m) = &mut self.membership {
            if m.parent.is_none() {
                m.leader_key = me;
            }
        }
    }

    /// The node's durable data epoch changed (the key's term part unchanged).
    pub fn set_data_epoch(&mut self, epoch: u64) {
        let key = ElectionKey { epoch, ..self.key };
        let now = self.now;
        self.set_election_key(now, key);
    }

    /// A neighbour completed the handshake or was heard again.
    pub fn handle_neighbor_on(&mut self, now: Instant, id: NodeId) {
        self.begin(now);
        if !self.on.insert(id) {
            return;
        }
        self.closed.remove(&id);
        self.out
            .trace(Subsystem::Topology, self.run(), None, || Step::NeighborOn {
                id,
            });
        if let Some(yoyo) = &mut self.election {
            yoyo.neighbor_on(id, &mut self.out);
        }
        self.tree_neighbor_on(id);
        self.refresh();
    }

    /// A neighbour went OFF (silent, or its link dropped).
    pub fn handle_neighbor_off(&mut self, now: Instant, id: NodeId) {
        self.begin(now);
        if !self.on.remove(&id) {
            return;
        }
        self.out.trace(Subsystem::Topology, self.run(), None, || {
            Step::NeighborOff { id }
        });
        self.requests.remove(&id);
        // The link is declared dead: nothing more is resent to it, and its numbering starts
        // afresh when it comes back (it may have restarted).
        self.reliable.forget(id);
        if let Some(yoyo) = &mut self.election {
            let outcome = yoyo.neighbor_off(id, &mut self.out);
            self.on_outcome(outcome, StartReason::NeighborLost(id));
        }
        self.tree_neighbor_off(id);
        self.refresh();
    }

    /// The transport reconnected to `peer`: anything sent meanwhile may be lost, so the tree
    /// state that matters between the two is sent again.
    pub fn handle_link_up(&mut self, now: Instant, peer: NodeId) {
        self.begin(now);
        self.tree_resync(peer);
        self.resend_to(peer);
        self.refresh();
    }

    /// `peer`'s host closed its connection: its process is gone (a silent drop or a frozen
    /// process never produces this). A promise to a tree rooted at `peer` is released at
    /// once, and the news travels up and down the next tree with the probes.
    pub fn handle_link_down(&mut self, now: Instant, peer: NodeId) {
        self.begin(now);
        self.closed.insert(peer);
        self.peer_process_gone(peer);
        self.refresh();
    }

    /// An election or tree message from neighbour `from` (others are ignored), with the
    /// Lamport time of its header.
    pub fn handle_message(&mut self, now: Instant, from: NodeId, lamport: u64, body: &Body) {
        self.clock.observe(lamport);
        self.handle_body(now, from, body);
    }

    /// [`ControlPlane::handle_message`] once the clock has seen the header.
    pub(crate) fn handle_body(&mut self, now: Instant, from: NodeId, body: &Body) {
        self.begin(now);
        match body {
            Body::Election(e) => {
                if e.cluster_size == self.config.wire_size() {
                    self.handle_election(from, e);
                } else {
                    self.stats.size_mismatches += 1;
                }
            }
            Body::Tree(t) => self.receive_tree(from, t),
            Body::Topology(_) | Body::Heartbeat(_) | Body::Data(_) => {}
        }
        self.refresh();
    }

    /// Fires the timers due at `now`; an early call does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.begin(now);
        for timer in self.timers.expire(now) {
            match timer {
                Timer::Election => {
                    let reason = if self.election.is_some() {
                        StartReason::Stalled
                    } else {
                        StartReason::NoLeader
                    };
                    if !matches!(self.membership, Membership::Detached) {
                        continue;
                    }
                    if reason == StartReason::NoLeader
                        && !self.deferred_start
                        && self.on.iter().any(|&id| id < self.me)
                    {
                        // Fewer simultaneous runs at boot: only nodes with no smaller
                        // neighbour id start at once; the others give them one more wait.
                        // (Any run elects the best candidate; this only saves messages.)
                        self.deferred_start = true;
                        self.timers
                            .set(Timer::Election, now + self.config.join_wait);
                        continue;
                    }
                    self.start_election(reason);
                }
                Timer::Heal => {
                    if matches!(self.membership, Membership::Orphan(_)) {
                        self.start_election(StartReason::HealingFailed);
                    }
                }
                Timer::EpochTick => self.tick_epoch(),
                Timer::AckFlush => self.flush_probe_ack(),
                Timer::Lease => {}
                Timer::Retransmit => self.retransmit_due(),
                Timer::Hold => self.end_hold(),
            }
        }
        self.refresh();
    }

    /// The next message to send, stamped by the node's clock. Call until `None` after
    /// every input.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let (to, body) = self.out.transmits.pop_front()?;
        Some(Transmit {
            to,
            lamport: self.clock.tick(),
            body,
        })
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<NodeEvent> {
        self.out.events.pop_front()
    }

    /// When [`ControlPlane::handle_timeout`] must be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// The run this node follows: its election's, or its tree's.
    pub(crate) fn run(&self) -> Option<RunId> {
        match (&self.election, &self.membership) {
            (Some(yoyo), _) => Some(yoyo.run()),
            (None, Membership::Member(m)) => Some(m.run),
            (None, Membership::Orphan(o)) => Some(o.run),
            (None, Membership::Detached) => None,
        }
    }

    /// A snapshot for status reporting.
    pub fn status(&self) -> Status {
        let (parent, children, routes, tree_epoch, tree_run, settled) = match &self.membership {
            Membership::Member(m) => (
                m.parent.map(|p| p.next_hop),
                m.children.iter().copied().collect(),
                Routes {
                    upstream: m.parent,
                    downstream: m.routes.downstream(&m.children),
                },
                m.epoch,
                Some(m.run),
                m.awaiting.is_empty(),
            ),
            Membership::Orphan(o) => (
                None,
                Vec::new(),
                Routes::default(),
                o.epoch,
                Some(o.run),
                false,
            ),
            Membership::Detached => (None, Vec::new(), Routes::default(), 0, None, false),
        };
        Status {
            id: self.me,
            leader: self.leader,
            roles: self.roles,
            parent,
            children,
            routes,
            tree_epoch,
            tree_run,
            election: self.election.as_ref().map(|y| (y.run(), y.round())),
            orphaned: matches!(self.membership, Membership::Orphan(_)),
            settled,
            data_epoch: self.data_epoch,
            key: self.key,
            term: self.term,
            quorum: self.quorum(),
            neighbors: self.on.iter().copied().collect(),
        }
    }

    // ---- election ------------------------------------------------------------------------

    fn handle_election(&mut self, from: NodeId, e: &Election) {
        let current = self.run();
        match current {
            Some(run) if e.run < run => self.help_behind(from, e),
            Some(run) if e.run == run => {
                if let Some(yoyo) = &mut self.election {
                    let outcome = yoyo.handle(from, e, &mut self.out);
                    // Any message of our run is progress.
                    self.arm_election_timer();
                    self.on_outcome(outcome, StartReason::Inconsistent(from));
                } else if matches!(e.kind, ElectionKind::Start(_)) {
                    // Our run is over here; the sender joined it late. Tell it the result.
                    self.offer_leader(from, true);
                }
            }
            _ if !self.may_join_term(e.run, None) => {
                // A stronger run, but its tree's term would not exceed one this node was in
                // (same Lamport time, smaller initiator; or an old run after a restart): a
                // run stronger than both takes its place.
                self.start_election_above(StartReason::KeyAhead(from), e.run.lamport);
            }
            _ => {
                // A stronger run: follow it, then process the message that announced it
                // (bug 11.1-3 of the prototype dropped it).
                self.join_run(e.run, StepCause::Adopted(from));
                if let Some(yoyo) = &mut self.election {
                    let outcome = yoyo.handle(from, e, &mut self.out);
                    self.on_outcome(outcome, StartReason::Inconsistent(from));
                }
            }
        }
    }

    /// A message of a weaker run: its sender has not heard of ours yet.
    fn help_behind(&mut self, from: NodeId, e: &Election) {
        if let Some(yoyo) = &mut self.election {
            // During setup the sender simply joins our run; later it waits for our tree.
            yoyo.neighbor_on(from, &mut self.out);
        } else if matches!(e.kind, ElectionKind::Start(_)) {
            self.offer_leader(from, true);
        }
    }

    /// Starts a fresh run, stronger than anything this node has seen, and whose term is
    /// higher than any tree it was a member of.
    pub(crate) fn start_election(&mut self, reason: StartReason) {
        self.start_election_above(reason, 0);
    }

    /// As [`ControlPlane::start_election`], also stronger than runs of Lamport time `seen`.
    pub(crate) fn start_election_above(&mut self, reason: StartReason, seen: u64) {
        let floor = self
            .run()
            .map_or(0, |r| r.lamport)
            .max(self.term)
            .max(seen)
            .saturating_add(1);
        let lamport = self.clock.tick().max(floor);
        self.clock.observe(lamport);
        let run = RunId {
            lamport,
            initiator: self.me,
        };
        self.join_run(run, StepCause::Started(reason));
    }

    /// Whether this node may join a tree (or a run building one) of `tree`: its term must be
    /// higher than any this node was a member of, unless it is that very tree.
    pub(crate) fn may_join_term(&self, run: RunId, leader: Option<NodeId>) -> bool {
        run.lamport > self.term
            || (run.lamport == self.term
                && leader.is_some_and(|leader| self.term_tree == Some(TreeId { run, leader })))
    }

    /// Records that this node is a member of `tree` (its term may rise).
    pub(crate) fn enter_term(&mut self, tree: TreeId) {
        if tree.run.lamport > self.term {
            self.term = tree.run.lamport;
            self.out
                .events
                .push_back(NodeEvent::TermChanged { term: self.term });
        }
        if tree.run.lamport == self.term {
            self.term_tree = Some(tree);
        }
    }

    fn join_run(&mut self, run: RunId, cause: StepCause) {
        self.leave_tree();
        let me = self.candidate();
        let on: Vec<NodeId> = self.on.iter().copied().collect();
        // Trace before the machine's own steps so the story reads in order.
        self.out
            .trace(Subsystem::Election, Some(run), None, || match cause {
                StepCause::Started(reason) => Step::RunStarted { reason },
                StepCause::Adopted(from) => Step::RunAdopted { from },
            });
        let (yoyo, outcome) = YoYo::start(run, me, self.config.wire_size(), on, &mut self.out);
        self.election = Some(yoyo);
        self.arm_election_timer();
        self.on_outcome(outcome, StartReason::Stalled);
    }

    /// Restarts the stall timer. A node still in the rounds hears from its links at least
    /// once per round; a node already out hears nothing until the winner's SHOUT, which can
    /// take the whole rest of the election, so it waits longer (if the run really died, the
    /// nodes still in it restart it and their START reaches this one).
    fn arm_election_timer(&mut self) {
        let wait = match self.election.as_ref().map(YoYo::phase) {
            Some(Phase::Lost) => self.config.election_timeout.saturating_mul(LOSER_PATIENCE),
            _ => self.config.election_timeout,
        };
        self.timers.set(Timer::Election, self.now + wait);
    }

    fn on_outcome(&mut self, outcome: Outcome, reason_if_restart: StartReason) {
        match outcome {
            Outcome::Running => {}
            Outcome::Lost => self.arm_election_timer(),
            Outcome::Won => {
                if let Some(yoyo) = self.election.take() {
                    self.become_root(yoyo.run());
                }
            }
            Outcome::Restart(peer) => {
                let reason = match reason_if_restart {
                    StartReason::NeighborLost(_) => StartReason::NeighborLost(peer),
                    _ => StartReason::Inconsistent(peer),
                };
                self.start_election(reason);
            }
        }
    }

    /// Whether the election in progress is still exchanging STARTs.
    pub(crate) fn in_setup(&self) -> bool {
        self.election
            .as_ref()
            .is_some_and(|y| y.phase() == Phase::Setup)
    }

    // ---- roles, leader, routes -------------------------------------------------------------

    /// Re-derives roles, leader and routes after an input, emitting what changed.
    fn refresh(&mut self) {
        let leader = match &self.membership {
            Membership::Member(m) => Some(m.leader),
            Membership::Orphan(_) | Membership::Detached => None,
        };
        if leader != self.leader {
            self.leader = leader;
            let term = self.term;
            self.out
                .events
                .push_back(NodeEvent::LeaderChanged { leader, term });
        }
        let roles = match &self.membership {
            Membership::Member(m) if m.awaiting.is_empty() => roles_for(Place::InTree {
                hops: m.hops,
                has_children: !m.children.is_empty(),
            }),
            // Children are not all known yet: keep what we had.
            Membership::Member(_) => self.roles,
            Membership::Orphan(_) | Membership::Detached => Roles::NONE,
        };
        if roles != self.roles {
            let old = std::mem::replace(&mut self.roles, roles);
            let term = self.term;
            self.out.events.push_back(NodeEvent::RolesChanged {
                old,
                new: roles,
                term,
            });
        }
        self.refresh_writable();
        self.report_routes();
    }

    /// Sends the subtree's input nodes to the parent when they changed.
    fn report_routes(&mut self) {
        let me = self.me;
        let is_input = self.roles.input;
        let Membership::Member(m) = &mut self.membership else {
            return;
        };
        let Some(parent) = m.parent else {
            return;
        };
        if !m.awaiting.is_empty() {
            return;
        }
        let inputs = m.routes.subtree_inputs(me, is_input, &m.children);
        if m.routes.reported.as_ref() == Some(&inputs) {
            return;
        }
        m.routes.reported = Some(inputs.clone());
        let epoch = m.epoch;
        self.send_tree(
            parent.next_hop,
            epoch,
            TreeKind::Routes {
                input_nodes: inputs.into_iter().collect(),
            },
        );
    }
}

/// How a node came to follow a run (for the trace).
#[derive(Debug, Clone, Copy)]
enum StepCause {
    Started(StartReason),
    Adopted(NodeId),
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_wire::{ElectionKind, LeaderInfo, Tree};

    fn plane(me: NodeId, now: Instant) -> ControlPlane {
        ControlPlane::new(me, ControlConfig::default(), LamportClock::new(), now)
    }

    fn drain(p: &mut ControlPlane) -> Vec<(NodeId, Body)> {
        std::iter::from_fn(|| p.poll_transmit())
            .map(|t| (t.to, t.body))
            .collect()
    }

    fn candidate(node: NodeId) -> Candidate {
        Candidate {
            last_term: 0,
            data_epoch: 0,
            node,
        }
    }

    #[test]
    fn a_lone_node_elects_itself_after_the_join_wait_and_is_writer_and_input() {
        let t0 = Instant::now();
        let mut p = plane(4, t0);
        // Early timeouts do nothing.
        p.handle_timeout(t0 + Duration::from_millis(1));
        assert!(p.status().leader.is_none());
        let due = p.poll_timeout().expect("join wait armed");
        p.handle_timeout(due);
        let s = p.status();
        assert_eq!(s.leader, Some(4));
        assert_eq!(s.roles.names(), vec!["writer", "input"]);
        assert!(s.election.is_none());
        // A one-node cluster is its own majority.
        assert!(s.quorum.writable);
        assert_eq!(s.quorum.have, 1);
        assert!(s.term > 0);
    }

    #[test]
    fn the_start_that_announces_a_stronger_run_is_not_lost() {
        let t0 = Instant::now();
        let mut p = plane(5, t0);
        p.handle_neighbor_on(t0, 9);
        let run = RunId {
            lamport: 50,
            initiator: 9,
        };
        let start = Body::Election(Election {
            run,
            round: 0,
            cluster_size: 1,
            kind: ElectionKind::Start(candidate(9)),
        });
        p.handle_message(t0, 9, 50, &start);
        // Node 5 adopted the run, answered with its own START, and, since 9's START was
        // processed rather than dropped, fixed the link at once: 5 < 9 so it is the source
        // and proposes itself in round 0.
        let sent = drain(&mut p);
        let kinds: Vec<ElectionKind> = sent
            .iter()
            .filter_map(|(to, b)| match b {
                Body::Election(e) if *to == 9 && e.run == run => Some(e.kind),
                _ => None,
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                ElectionKind::Start(candidate(5)),
                ElectionKind::Proposal(candidate(5)),
            ]
        );
        assert_eq!(p.status().election, Some((run, 0)));
    }

    #[test]
    fn a_run_of_another_cluster_size_is_ignored_and_counted() {
        let t0 = Instant::now();
        let mut p = plane(5, t0);
        p.handle_neighbor_on(t0, 9);
        let start = Body::Election(Election {
            run: RunId {
                lamport: 50,
                initiator: 9,
            },
            round: 0,
            cluster_size: 3,
            kind: ElectionKind::Start(candidate(9)),
        });
        p.handle_message(t0, 9, 50, &start);
        assert!(p.status().election.is_none());
        assert_eq!(p.stats().size_mismatches, 1);
    }

    #[test]
    fn a_member_tells_a_new_neighbour_the_leader_instead_of_electing() {
        let t0 = Instant::now();
        let mut p = plane(4, t0);
        let due = p.poll_timeout().expect("join wait armed");
        p.handle_timeout(due);
        drain(&mut p);
        p.handle_neighbor_on(due, 7);
        let sent = drain(&mut p);
        assert!(
            matches!(
                sent.as_slice(),
                [(
                    7,
                    Body::Tree(Tree {
                        kind: TreeKind::Shout(LeaderInfo {
                            leader: 4,
                            hops_from_root: 0,
                            cluster_size: 1,
                            ..
                        }),
                        ..
                    })
                )]
            ),
            "{sent:?}"
        );
        // Until 7 answers, roles stay as they were; its yes makes it a child.
        let run = p.status().tree_run.expect("in a tree");
        let answer = Body::Tree(Tree {
            tree_epoch: 0,
            seq: 1,
            kind: TreeKind::Answer {
                run,
                accepted: true,
            },
        });
        p.handle_message(due, 7, 1, &answer);
        let s = p.status();
        assert_eq!(s.children, vec![7]);
        assert_eq!(s.roles.names(), vec!["writer"]);
        // The answer was acknowledged, and a copy of it changes nothing.
        let acks = drain(&mut p);
        assert!(acks.iter().any(|(to, b)| *to == 7
            && matches!(
                b,
                Body::Tree(Tree {
                    kind: TreeKind::Ack { seq: 1 },
                    ..
                })
            )));
        p.handle_message(due, 7, 2, &answer);
        assert_eq!(p.stats().duplicates, 1);
        assert_eq!(p.status().children, vec![7]);
    }

    #[test]
    fn an_unacknowledged_shout_is_resent_until_acknowledged() {
        let t0 = Instant::now();
        let mut p = plane(4, t0);
        let due = p.poll_timeout().expect("join wait armed");
        p.handle_timeout(due);
        p.handle_neighbor_on(due, 7);
        let first = drain(&mut p);
        let seq = match first.as_slice() {
            [(7, Body::Tree(t))] => t.seq,
            other => panic!("{other:?}"),
        };
        assert_ne!(seq, 0);
        let later = due + ControlConfig::default().retransmit;
        p.handle_timeout(later);
        let resent = drain(&mut p);
        assert!(
            resent
                .iter()
                .any(|(to, b)| *to == 7 && matches!(b, Body::Tree(t) if t.seq == seq)),
            "{resent:?}"
        );
        let ack = Body::Tree(Tree {
            tree_epoch: 0,
            seq: 0,
            kind: TreeKind::Ack { seq },
        });
        p.handle_message(later, 7, 1, &ack);
        p.handle_timeout(later + ControlConfig::default().retransmit);
        let after = drain(&mut p);
        assert!(
            !after
                .iter()
                .any(|(_, b)| matches!(b, Body::Tree(t) if t.seq == seq)),
            "{after:?}"
        );
    }

    #[test]
    fn a_node_whose_key_beats_the_leaders_elects_instead_of_attaching() {
        let t0 = Instant::now();
        let mut p = plane(5, t0);
        p.set_election_key(
            t0,
            ElectionKey {
                last_term: 3,
                epoch: 10,
            },
        );
        p.handle_neighbor_on(t0, 9);
        let shout = |key: Candidate| {
            Body::Tree(Tree {
                tree_epoch: 1,
                seq: 1,
                kind: TreeKind::Shout(LeaderInfo {
                    run: RunId {
                        lamport: 20,
                        initiator: 9,
                    },
                    leader: 9,
                    hops_from_root: 0,
                    data_port: 0,
                    cluster_size: 1,
                    leader_key: key,
                }),
            })
        };
        let older = Candidate {
            last_term: 3,
            data_epoch: 9,
            node: 9,
        };
        p.handle_message(t0, 9, 20, &shout(older));
        let s = p.status();
        assert_eq!(s.leader, None);
        let (run, _) = s.election.expect("electing");
        assert!(run.lamport > 20 && run.initiator == 5, "{run:?}");
    }

    #[test]
    fn a_healed_orphan_stops_resending_what_it_sent_as_an_orphan() {
        let t0 = Instant::now();
        // A node with a term: it joins the tree it is told at once.
        let config = ControlConfig {
            initial_term: 1,
            ..ControlConfig::default()
        };
        let mut p = ControlPlane::new(5, config, LamportClock::new(), t0);
        p.handle_neighbor_on(t0, 9);
        p.handle_neighbor_on(t0, 7);
        let run = RunId {
            lamport: 20,
            initiator: 9,
        };
        let info = LeaderInfo {
            run,
            leader: 9,
            hops_from_root: 0,
            data_port: 0,
            cluster_size: 1,
            leader_key: candidate(9),
        };
        let shout = Body::Tree(Tree {
            tree_epoch: 1,
            seq: 1,
            kind: TreeKind::Shout(info),
        });
        p.handle_message(t0, 9, 20, &shout);
        assert_eq!(p.status().parent, Some(9));
        // The parent goes; the orphan asks 7 for adoption, and nobody acknowledges (lost).
        p.handle_neighbor_off(t0, 9);
        assert!(p.status().orphaned);
        let asked = drain(&mut p);
        assert!(
            asked.iter().any(|(to, b)| *to == 7
                && matches!(
                    b,
                    Body::Tree(Tree {
                        kind: TreeKind::AdoptRequest { .. },
                        ..
                    })
                )),
            "{asked:?}"
        );
        // 7 adopts it anyway (it heard a copy); from now on 7 is its parent.
        let offer = Body::Tree(Tree {
            tree_epoch: 5,
            seq: 1,
            kind: TreeKind::AdoptOffer(LeaderInfo {
                hops_from_root: 1,
                ..info
            }),
        });
        p.handle_message(t0, 7, 21, &offer);
        assert_eq!(p.status().parent, Some(7));
        drain(&mut p);
        // A resent adoption request would tell 7 that its new child is an orphan again.
        let later = t0 + ControlConfig::default().retransmit;
        p.handle_timeout(later);
        let resent = drain(&mut p);
        assert!(
            !resent.iter().any(|(_, b)| matches!(
                b,
                Body::Tree(Tree {
                    kind: TreeKind::AdoptRequest { .. }
                        | TreeKind::Detach { .. }
                        | TreeKind::Shout(_),
                    ..
                })
            )),
            "{resent:?}"
        );
        assert!(
            resent.iter().any(|(to, b)| *to == 7
                && matches!(
                    b,
                    Body::Tree(Tree {
                        kind: TreeKind::Answer { accepted: true, .. },
                        ..
                    })
                )),
            "the answer to the new parent is still resent: {resent:?}"
        );
    }

    #[test]
    fn a_node_without_a_term_joins_a_standing_tree_only_after_the_restart_hold() {
        let t0 = Instant::now();
        let config = ControlConfig::default();
        let (hold, join_wait) = (config.restart_hold, config.join_wait);
        let mut p = plane(5, t0);
        p.handle_neighbor_on(t0, 9);
        let run = RunId {
            lamport: 20,
            initiator: 9,
        };
        let shout = Body::Tree(Tree {
            tree_epoch: 4,
            seq: 1,
            kind: TreeKind::Shout(LeaderInfo {
                run,
                leader: 9,
                hops_from_root: 0,
                data_port: 0,
                cluster_size: 1,
                leader_key: candidate(9),
            }),
        });
        p.handle_message(t0, 9, 20, &shout);
        // It may have lost its disk: 9 could sit below its previous life. It answers no
        // for now, and neither joins nor elects before the hold is over.
        assert_eq!(p.status().parent, None);
        let answers = drain(&mut p);
        assert!(
            answers.iter().any(|(to, b)| *to == 9
                && matches!(
                    b,
                    Body::Tree(Tree {
                        kind: TreeKind::Answer {
                            accepted: false,
                            ..
                        },
                        ..
                    })
                )),
            "{answers:?}"
        );
        p.handle_timeout(t0 + join_wait);
        assert!(p.status().election.is_none());
        p.handle_timeout(t0 + hold - Duration::from_millis(1));
        assert_eq!(p.status().parent, None);
        drain(&mut p);
        p.handle_timeout(t0 + hold);
        let s = p.status();
        assert_eq!(
            (s.parent, s.leader, s.tree_run),
            (Some(9), Some(9), Some(run))
        );
        assert!(drain(&mut p).iter().any(|(to, b)| *to == 9
            && matches!(
                b,
                Body::Tree(Tree {
                    kind: TreeKind::Answer { accepted: true, .. },
                    ..
                })
            )));
    }

    #[test]
    fn a_node_restarted_without_memory_never_joins_the_tree_it_led() {
        let t0 = Instant::now();
        let mut p = plane(5, t0);
        p.handle_neighbor_on(t0, 9);
        // 9 still follows the tree 5 led before it restarted with an empty disk.
        let shout = Body::Tree(Tree {
            tree_epoch: 7,
            seq: 1,
            kind: TreeKind::Shout(LeaderInfo {
                run: RunId {
                    lamport: 2,
                    initiator: 5,
                },
                leader: 5,
                hops_from_root: 2,
                data_port: 0,
                cluster_size: 1,
                leader_key: candidate(5),
            }),
        });
        p.handle_message(t0, 9, 40, &shout);
        let s = p.status();
        assert_eq!(s.parent, None);
        assert_eq!(s.leader, None);
        let (run, _) = s.election.expect("electing a stronger run");
        assert!(run.lamport > 2 && run.initiator == 5, "{run:?}");
    }

    #[test]
    fn a_restarted_node_never_joins_a_tree_below_its_term() {
        let t0 = Instant::now();
        let config = ControlConfig {
            initial_term: 30,
            ..ControlConfig::default()
        };
        let mut p = ControlPlane::new(5, config, LamportClock::new(), t0);
        p.handle_neighbor_on(t0, 9);
        let shout = Body::Tree(Tree {
            tree_epoch: 1,
            seq: 1,
            kind: TreeKind::Shout(LeaderInfo {
                run: RunId {
                    lamport: 30,
                    initiator: 9,
                },
                leader: 9,
                hops_from_root: 0,
                data_port: 0,
                cluster_size: 1,
                leader_key: candidate(9),
            }),
        });
        p.handle_message(t0, 9, 31, &shout);
        assert_eq!(p.term(), 30);
        let (run, _) = p.status().election.expect("electing a stronger run");
        assert!(run.lamport > 30, "{run:?}");
    }
}
