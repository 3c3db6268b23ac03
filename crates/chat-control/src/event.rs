//! What the control plane tells its driver: role and leader changes, and a trace step for
//! every move of the election and the tree.

use std::collections::VecDeque;
use std::fmt;

use chat_wire::{Body, Candidate, NodeId, RunId};

use crate::roles::Roles;

/// Which part of the control plane a trace step belongs to (the `SUBSYSTEM` journald field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subsystem {
    /// Yo-Yo.
    Election,
    /// SHOUT, epochs, healing, roles, routes.
    Tree,
    /// Neighbours and liveness.
    Topology,
}

impl Subsystem {
    /// Lowercase name, as logged.
    pub fn as_str(self) -> &'static str {
        match self {
            Subsystem::Election => "election",
            Subsystem::Tree => "tree",
            Subsystem::Topology => "topology",
        }
    }
}

/// A node's place in one Yo-Yo round, from the orientation of its remaining links.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkStatus {
    /// Only outgoing links: its value travels down.
    Source,
    /// Both kinds.
    Internal,
    /// Only incoming links.
    Sink,
}

/// Why a node started (or restarted) an election run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StartReason {
    /// No leader was heard within the join wait (a lone node ends up here too).
    NoLeader,
    /// A neighbour taking part in the run went OFF.
    NeighborLost(NodeId),
    /// The two ends of a link disagree about the run (a late participant, an unexpected
    /// message); a fresh run re-synchronises everyone.
    Inconsistent(NodeId),
    /// No progress within the election timeout.
    Stalled,
    /// Healing found no adopter within the heal timeout: the root is unreachable.
    HealingFailed,
    /// A neighbour belongs to another tree: two components merged.
    Merge(NodeId),
    /// A tree was announced whose leader holds older data than this node (or whose term
    /// this node cannot join): electing is how the better node takes over.
    KeyAhead(NodeId),
    /// This node's host saw the root's connection closed: nobody can adopt, elect at once.
    RootGone,
    /// A neighbour announced a tree led by this node, which is not its root: the node led
    /// it before restarting without memory, so that tree's root is gone.
    OwnTreeGone(NodeId),
}

/// One step of the election or tree protocols.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// This node started a run.
    RunStarted {
        /// Why.
        reason: StartReason,
    },
    /// This node joined a stronger run announced by `from`.
    RunAdopted {
        /// The announcing neighbour.
        from: NodeId,
    },
    /// Every neighbour of the run answered its START: the links are fixed.
    LinksFixed {
        /// How many links take part.
        links: usize,
    },
    /// A Yo-Yo round began.
    RoundStarted {
        /// The node's status this round.
        status: LinkStatus,
        /// Incoming links.
        incoming: usize,
        /// Outgoing links.
        outgoing: usize,
    },
    /// YO-DOWN sent.
    ProposalSent {
        /// The candidate sent down.
        candidate: Candidate,
        /// To how many out-neighbours.
        to: usize,
    },
    /// -UP sent to one in-neighbour.
    VoteSent {
        /// The in-neighbour.
        to: NodeId,
        /// Its proposal survives.
        yes: bool,
        /// The link is dropped.
        prune: bool,
    },
    /// A link was pruned after a round.
    Pruned {
        /// The other end.
        peer: NodeId,
    },
    /// This node is the only one left: it leads.
    Won,
    /// This node has no links left and is not the winner.
    Lost,
    /// SHOUT's Q sent.
    ShoutSent {
        /// To how many neighbours.
        to: usize,
    },
    /// SHOUT's A received.
    AnswerReceived {
        /// From.
        from: NodeId,
        /// It took this node as parent.
        accepted: bool,
    },
    /// This node took a parent.
    ParentChosen {
        /// The parent.
        parent: NodeId,
        /// The leader.
        leader: NodeId,
        /// Its distance from the root.
        hops: u32,
    },
    /// This node lost its way to the root.
    Orphaned {
        /// The parent it lost, or the one that dissolved its subtree.
        parent: NodeId,
    },
    /// An orphan was adopted.
    Healed {
        /// The adopter.
        parent: NodeId,
    },
    /// Every live neighbour answered: children are known.
    TreeSettled {
        /// Number of children.
        children: usize,
    },
    /// The root's epoch ticked.
    EpochTick {
        /// The new epoch.
        epoch: u64,
    },
    /// The root's writability changed.
    Writable {
        /// Now writable.
        writable: bool,
        /// Nodes that answered the freshest probe within the lease (the root included).
        have: usize,
    },
    /// A tree announcement was refused: another cluster size.
    SizeMismatch {
        /// The announcing neighbour.
        from: NodeId,
        /// The size it announced.
        size: u32,
    },
    /// A neighbour came up.
    NeighborOn {
        /// Which.
        id: NodeId,
    },
    /// A neighbour went down.
    NeighborOff {
        /// Which.
        id: NodeId,
    },
    /// A stranger kept sending heartbeats: a REJOIN handshake started.
    RejoinStarted {
        /// Which.
        id: NodeId,
    },
}

/// One traced step, with everything needed to read it as part of the election's story.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// Election or tree (or topology).
    pub subsystem: Subsystem,
    /// The run the step belongs to, when there is one.
    pub run: Option<RunId>,
    /// The Yo-Yo round, during an election.
    pub round: Option<u32>,
    /// The node's Lamport time when the step happened.
    pub lamport: u64,
    /// What happened.
    pub step: Step,
}

/// Outputs of the control plane, pulled by the driver with `poll_event`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// The driver must connect its transport to this address.
    Connect {
        /// The neighbour.
        id: NodeId,
        /// Its host.
        host: String,
        /// Its control port.
        control_port: u16,
    },
    /// The known leader changed (`None`: no leader known, e.g. during an election).
    LeaderChanged {
        /// The new leader.
        leader: Option<NodeId>,
        /// The node's term.
        term: u64,
    },
    /// The node's roles changed.
    RolesChanged {
        /// Before.
        old: Roles,
        /// After.
        new: Roles,
        /// The node's term.
        term: u64,
    },
    /// The node joined a tree of a higher term. The driver persists it and passes it back
    /// as `initial_term` after a restart, so the term never decreases.
    TermChanged {
        /// The new term.
        term: u64,
    },
    /// The root may start (`true`) or must stop (`false`) acknowledging writes: a majority
    /// of the cluster answered a probe within the writer lease, or no longer.
    WritableChanged {
        /// Whether writes may be acknowledged now.
        writable: bool,
        /// The term the writer writes in.
        term: u64,
    },
    /// A protocol step (only produced when tracing is enabled).
    Trace(Trace),
}

/// One line of prose per step, so a node's log reads as the election's story.
impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::RunStarted { reason } => write!(f, "started an election run: {reason}"),
            Step::RunAdopted { from } => write!(f, "joined the stronger run announced by {from}"),
            Step::LinksFixed { links } => write!(f, "links fixed: {links} take part"),
            Step::RoundStarted {
                status,
                incoming,
                outgoing,
            } => write!(
                f,
                "round begins as {status:?}: {incoming} incoming, {outgoing} outgoing"
            ),
            Step::ProposalSent { candidate, to } => write!(
                f,
                "proposed node {} (last term {}, data epoch {}) to {to} out-neighbours",
                candidate.node, candidate.last_term, candidate.data_epoch
            ),
            Step::VoteSent { to, yes, prune } => write!(
                f,
                "voted {} to {to}{}",
                if *yes { "YES" } else { "NO" },
                if *prune { ", pruning the link" } else { "" }
            ),
            Step::Pruned { peer } => write!(f, "pruned the link to {peer}"),
            Step::Won => write!(f, "won: this node leads"),
            Step::Lost => write!(f, "lost: no links left"),
            Step::ShoutSent { to } => write!(f, "SHOUT sent to {to} neighbours"),
            Step::AnswerReceived { from, accepted } => write!(
                f,
                "{from} answered the SHOUT: {}",
                if *accepted { "child" } else { "not a child" }
            ),
            Step::ParentChosen {
                parent,
                leader,
                hops,
            } => write!(
                f,
                "parent {parent} (leader {leader}, {hops} hops from the root)"
            ),
            Step::Orphaned { parent } => write!(f, "lost the way to the root through {parent}"),
            Step::Healed { parent } => write!(f, "healed: adopted by {parent}"),
            Step::TreeSettled { children } => write!(f, "tree settled with {children} children"),
            Step::EpochTick { epoch } => write!(f, "tree epoch {epoch}"),
            Step::Writable { writable, have } => write!(
                f,
                "{} ({have} nodes answered the probe)",
                if *writable {
                    "writable"
                } else {
                    "not writable"
                }
            ),
            Step::SizeMismatch { from, size } => write!(
                f,
                "refused the tree announced by {from}: cluster size {size} differs from ours"
            ),
            Step::NeighborOn { id } => write!(f, "neighbour {id} on"),
            Step::NeighborOff { id } => write!(f, "neighbour {id} off"),
            Step::RejoinStarted { id } => write!(f, "REJOIN handshake with stranger {id}"),
        }
    }
}

impl fmt::Display for StartReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartReason::NoLeader => write!(f, "no leader heard"),
            StartReason::NeighborLost(id) => write!(f, "neighbour {id} lost mid-run"),
            StartReason::Inconsistent(id) => write!(f, "link to {id} out of step"),
            StartReason::Stalled => write!(f, "the run stalled"),
            StartReason::HealingFailed => write!(f, "nobody could adopt this orphan"),
            StartReason::Merge(id) => write!(f, "neighbour {id} belongs to another tree"),
            StartReason::KeyAhead(id) => write!(
                f,
                "neighbour {id} announced a tree this node must not join as it is"
            ),
            StartReason::RootGone => write!(f, "the root's process is gone"),
            StartReason::OwnTreeGone(id) => write!(
                f,
                "neighbour {id} announced a tree this node led before it restarted"
            ),
        }
    }
}

/// One message to send: the driver wraps it in an envelope from this node to `to` with
/// `lamport` in its header (the node's clock already ticked for it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The neighbour.
    pub to: NodeId,
    /// The header's Lamport time.
    pub lamport: u64,
    /// The content.
    pub body: Body,
}

/// Where machines put what they produce; the owner drains it through `poll_*`.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    pub(crate) transmits: VecDeque<(NodeId, Body)>,
    pub(crate) events: VecDeque<NodeEvent>,
    /// Trace steps are skipped entirely when nobody reads them.
    pub(crate) trace: bool,
    /// The node's Lamport time, refreshed by the owner before each input.
    pub(crate) lamport: u64,
}

impl Outbox {
    pub(crate) fn new(trace: bool) -> Self {
        Outbox {
            trace,
            ..Outbox::default()
        }
    }

    pub(crate) fn send(&mut self, to: NodeId, body: Body) {
        self.transmits.push_back((to, body));
    }

    /// Records a step; `step` is only built when tracing is on.
    pub(crate) fn trace(
        &mut self,
        subsystem: Subsystem,
        run: Option<RunId>,
        round: Option<u32>,
        step: impl FnOnce() -> Step,
    ) {
        if self.trace {
            self.events.push_back(NodeEvent::Trace(Trace {
                subsystem,
                run,
                round,
                lamport: self.lamport,
                step: step(),
            }));
        }
    }
}
