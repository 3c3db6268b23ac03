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
//! or two trees meeting after a partition heals.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chat_wire::{Body, Candidate, Election, ElectionKind, NodeId, RunId, Tree, TreeKind};

use crate::clock::LamportClock;
use crate::election::{Outcome, Phase, YoYo};
use crate::event::{NodeEvent, Outbox, StartReason, Step, Subsystem};
use crate::roles::{roles_for, Place, Roles};
use crate::routes::{RouteTable, Routes, Upstream};

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
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            election_timeout: Duration::from_secs(3),
            join_wait: Duration::from_millis(300),
            epoch_tick: Duration::from_millis(200),
            heal_timeout: Duration::from_millis(450),
            data_port: 0,
            trace: true,
        }
    }
}

/// The timers of the control plane; each has one slot in [`TimerTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Detached without a run: start one. In a run: it stalled, restart it.
    Election,
    /// Orphan: nobody adopted it, elect.
    Heal,
    /// Root: tick the tree epoch.
    EpochTick,
}

impl Timer {
    const ALL: [Timer; 3] = [Timer::Election, Timer::Heal, Timer::EpochTick];

    fn index(self) -> usize {
        match self {
            Timer::Election => 0,
            Timer::Heal => 1,
            Timer::EpochTick => 2,
        }
    }
}

/// Deadlines, one per [`Timer`].
#[derive(Debug, Clone, Default)]
pub(crate) struct TimerTable {
    deadlines: [Option<Instant>; 3],
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
    Member(Member),
    /// Was in the tree of `run`, lost its way to the root, seeks adoption.
    Orphan(Orphan),
}

#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub(crate) run: RunId,
    pub(crate) leader: NodeId,
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
    /// Its durable data epoch (the election key).
    pub data_epoch: u64,
    /// Its ON neighbours.
    pub neighbors: Vec<NodeId>,
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
}

impl ControlPlane {
    /// A fresh node: in no tree, waiting `join_wait` to be told a leader.
    pub fn new(me: NodeId, config: ControlConfig, clock: LamportClock, now: Instant) -> Self {
        let mut timers = TimerTable::default();
        timers.set(Timer::Election, now + config.join_wait);
        ControlPlane {
            me,
            out: Outbox::new(config.trace),
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
        }
    }

    fn begin(&mut self, now: Instant) {
        self.now = now;
        self.out.lamport = self.clock.now();
    }

    pub(crate) fn candidate(&self) -> Candidate {
        Candidate {
            data_epoch: self.data_epoch,
            node: self.me,
        }
    }

    /// The node's durable data epoch changed; later runs use it as the election key.
    pub fn set_data_epoch(&mut self, epoch: u64) {
        self.data_epoch = epoch;
    }

    /// A neighbour completed the handshake or was heard again.
    pub fn handle_neighbor_on(&mut self, now: Instant, id: NodeId) {
        self.begin(now);
        if !self.on.insert(id) {
            return;
        }
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
        self.refresh();
    }

    /// An election or tree message from neighbour `from` (others are ignored).
    pub fn handle_message(&mut self, now: Instant, from: NodeId, body: &Body) {
        self.begin(now);
        match body {
            Body::Election(e) => self.handle_election(from, e),
            Body::Tree(t) => self.handle_tree(from, t),
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
            }
        }
        self.refresh();
    }

    /// The next message to send: `(neighbour, body)`. Call until `None` after every input.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<(NodeId, Body)> {
        self.out.transmits.pop_front()
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

    /// Starts a fresh run, stronger than anything this node has seen.
    pub(crate) fn start_election(&mut self, reason: StartReason) {
        let floor = self.run().map_or(0, |r| r.lamport.saturating_add(1));
        let run = RunId {
            lamport: self.clock.tick().max(floor),
            initiator: self.me,
        };
        self.join_run(run, StepCause::Started(reason));
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
        let (yoyo, outcome) = YoYo::start(run, me, on, &mut self.out);
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
            self.out
                .events
                .push_back(NodeEvent::LeaderChanged { leader });
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
            self.out
                .events
                .push_back(NodeEvent::RolesChanged { old, new: roles });
        }
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
        let body = Body::Tree(Tree {
            tree_epoch: m.epoch,
            kind: TreeKind::Routes {
                input_nodes: inputs.into_iter().collect(),
            },
        });
        self.out.send(parent.next_hop, body);
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
    use chat_wire::ElectionKind;

    fn plane(me: NodeId, now: Instant) -> ControlPlane {
        ControlPlane::new(me, ControlConfig::default(), LamportClock::new(), now)
    }

    fn drain(p: &mut ControlPlane) -> Vec<(NodeId, Body)> {
        std::iter::from_fn(|| p.poll_transmit()).collect()
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
            kind: ElectionKind::Start(Candidate {
                data_epoch: 0,
                node: 9,
            }),
        });
        p.handle_message(t0, 9, &start);
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
                ElectionKind::Start(Candidate {
                    data_epoch: 0,
                    node: 5
                }),
                ElectionKind::Proposal(Candidate {
                    data_epoch: 0,
                    node: 5
                }),
            ]
        );
        assert_eq!(p.status().election, Some((run, 0)));
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
                        kind: TreeKind::Shout {
                            leader: 4,
                            hops_from_root: 0,
                            ..
                        },
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
            kind: TreeKind::Answer {
                run,
                accepted: true,
            },
        });
        p.handle_message(due, 7, &answer);
        let s = p.status();
        assert_eq!(s.children, vec![7]);
        assert_eq!(s.roles.names(), vec!["writer"]);
    }
}
