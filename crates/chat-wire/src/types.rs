//! Domain types of every message body.

use std::cmp::Ordering;

/// A node's identity in the cluster (`node-<id>` on ZeroMQ). Valid ids start at 1.
pub type NodeId = u64;

/// Which part of a node a message is for. Each scope has its own body type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Neighbour handshakes.
    Topology,
    /// Yo-Yo election.
    Election,
    /// Liveness.
    Heartbeat,
    /// SHOUT tree, epochs, healing, routes.
    Tree,
    /// Chat requests, responses and replication.
    Data,
}

impl Scope {
    /// All scopes, in wire order; handy for per-scope counters.
    pub const ALL: [Scope; 5] = [
        Scope::Topology,
        Scope::Election,
        Scope::Heartbeat,
        Scope::Tree,
        Scope::Data,
    ];

    /// Lowercase name, as used in logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Topology => "topology",
            Scope::Election => "election",
            Scope::Heartbeat => "heartbeat",
            Scope::Tree => "tree",
            Scope::Data => "data",
        }
    }
}

/// What every message carries besides its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The sending node.
    pub source: NodeId,
    /// The node the message is addressed to (always a neighbour of the sender).
    pub destination: NodeId,
    /// The sender's Lamport time for this message.
    pub lamport: u64,
}

/// One message between two nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Addressing and time.
    pub header: Header,
    /// The scope-specific content.
    pub body: Body,
}

impl Envelope {
    /// The scope, which always follows from the body.
    pub fn scope(&self) -> Scope {
        self.body.scope()
    }
}

/// The content of a message, one variant per [`Scope`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// A handshake step.
    Topology(Topology),
    /// A Yo-Yo message.
    Election(Election),
    /// A heartbeat.
    Heartbeat(Heartbeat),
    /// A tree message.
    Tree(Tree),
    /// A data-plane frame.
    Data(Data),
}

impl Body {
    /// The scope this body belongs to.
    pub fn scope(&self) -> Scope {
        match self {
            Body::Topology(_) => Scope::Topology,
            Body::Election(_) => Scope::Election,
            Body::Heartbeat(_) => Scope::Heartbeat,
            Body::Tree(_) => Scope::Tree,
            Body::Data(_) => Scope::Data,
        }
    }
}

// ---- Topology --------------------------------------------------------------------------

/// The steps of the three-way handshake: JOIN, JOIN-ACK, ACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandshakeStep {
    /// "I want to be your neighbour."
    Join,
    /// "Agreed; confirm."
    JoinAck,
    /// "Confirmed."
    Ack,
}

/// A handshake message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Which step this is.
    pub step: HandshakeStep,
    /// The handshake was started because the peer sent heartbeats while unknown (REJOIN).
    pub rejoin: bool,
    /// The sender's advertised host.
    pub host: String,
    /// The sender's control-plane port.
    pub control_port: u16,
    /// Random per process start, to tell a restarted peer from a delayed message.
    pub incarnation: u64,
}

/// A heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// The sender's incarnation (see [`Topology::incarnation`]).
    pub incarnation: u64,
}

// ---- Election --------------------------------------------------------------------------

/// Identifies one election run. Ordered by strength: a greater `RunId` is the stronger run,
/// the one every node converges on (larger Lamport time, then smaller initiator id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RunId {
    /// The initiator's Lamport time when it started the run.
    pub lamport: u64,
    /// The node that started the run.
    pub initiator: NodeId,
}

impl Ord for RunId {
    fn cmp(&self, other: &Self) -> Ordering {
        self.lamport
            .cmp(&other.lamport)
            .then_with(|| other.initiator.cmp(&self.initiator))
    }
}

impl PartialOrd for RunId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Display for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.lamport, self.initiator)
    }
}

/// The value the election minimises. Ordered so that the *smaller* candidate is the better
/// leader, in the Raft manner: higher term of the last durable write first (two histories
/// with the same number of writes are told apart by it), then higher durable data epoch,
/// then smaller node id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Candidate {
    /// The term in which the candidate's last durable write was made (0: none).
    pub last_term: u64,
    /// The candidate's durable data epoch (writes applied).
    pub data_epoch: u64,
    /// The candidate's id.
    pub node: NodeId,
}

impl Candidate {
    /// Whether this candidate's data is strictly newer than `other`'s (ids aside).
    pub fn key_beats(&self, other: &Candidate) -> bool {
        (self.last_term, self.data_epoch) > (other.last_term, other.data_epoch)
    }
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .last_term
            .cmp(&self.last_term)
            .then_with(|| other.data_epoch.cmp(&self.data_epoch))
            .then_with(|| self.node.cmp(&other.node))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A Yo-Yo message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Election {
    /// The run it belongs to.
    pub run: RunId,
    /// The sender's configured cluster size: nodes of clusters of different sizes never
    /// elect together.
    pub cluster_size: u32,
    /// The Yo-Yo round (0 for `Start`).
    pub round: u32,
    /// What it says.
    pub kind: ElectionKind,
}

/// The kinds of Yo-Yo message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElectionKind {
    /// Announces (floods) the run, with the sender's candidate so both ends of the link
    /// orient it the same way.
    Start(Candidate),
    /// YO-DOWN: the smallest candidate the sender knows this round.
    Proposal(Candidate),
    /// -UP: the sender's verdict on the receiver's proposal, and whether to prune the link.
    Vote {
        /// The receiver's proposal was the smallest the sender received.
        yes: bool,
        /// Drop this link after the round.
        prune: bool,
    },
}

// ---- Tree ------------------------------------------------------------------------------

/// A tree message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    /// The sender's tree epoch.
    pub tree_epoch: u64,
    /// 0 for a periodic message; otherwise the sender resends it until the receiver answers
    /// [`TreeKind::Ack`] with this number (the receiver ignores copies it already handled).
    pub seq: u64,
    /// What it says.
    pub kind: TreeKind,
}

/// One tree: the run that built it and its root. (A run id alone can repeat: a node that
/// restarted without memory may reuse one.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TreeId {
    /// The run that built it; its Lamport time is the tree's term.
    pub run: RunId,
    /// Its root.
    pub leader: NodeId,
}

/// What a leader announcement (SHOUT or adoption offer) says about the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderInfo {
    /// The run that chose the leader.
    pub run: RunId,
    /// The leader (the tree's root).
    pub leader: NodeId,
    /// The sender's distance from the root.
    pub hops_from_root: u32,
    /// The sender's data-plane port.
    pub data_port: u16,
    /// The cluster size the tree's members are configured with.
    pub cluster_size: u32,
    /// The leader's election key as last heard by the sender.
    pub leader_key: Candidate,
}

/// The kinds of tree message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeKind {
    /// SHOUT's Q: the leader is known; be my child.
    Shout(LeaderInfo),
    /// SHOUT's A.
    Answer {
        /// The run answered.
        run: RunId,
        /// The sender took the receiver as its parent.
        accepted: bool,
    },
    /// The root's periodic epoch, forwarded down the tree; also the root's quorum probe
    /// (the epoch numbers it), which every member answers with [`TreeKind::ProbeAck`].
    EpochTick {
        /// The leader.
        leader: NodeId,
        /// The sender's data-plane port.
        data_port: u16,
        /// The tree's run.
        run: RunId,
        /// The leader's current election key.
        leader_key: Candidate,
        /// The newest tree whose root is known to be gone (its host closed its connection):
        /// members release their promise to it.
        root_gone: Option<TreeId>,
    },
    /// Child to parent: how many nodes of the sender's subtree answered the probe of
    /// `tree_epoch` (and so promised not to support another writer for the lease).
    ProbeAck {
        /// The tree's run.
        run: RunId,
        /// Nodes that answered, the sender included when it did.
        count: u32,
        /// As in [`TreeKind::EpochTick`], passed up.
        root_gone: Option<TreeId>,
    },
    /// Healing: the sender lost its parent and asks to be adopted into this tree.
    AdoptRequest {
        /// The run whose tree the sender belonged to.
        run: RunId,
        /// That tree's leader.
        leader: NodeId,
    },
    /// Healing: the sender is connected to the root and offers to adopt.
    AdoptOffer(LeaderInfo),
    /// Parent to children: the sender lost its way to the root; the receivers are orphans.
    Detach {
        /// The run whose tree dissolves.
        run: RunId,
    },
    /// Child to parent: every input node reachable through the sender.
    Routes {
        /// The input nodes (the sender included when it is one).
        input_nodes: Vec<NodeId>,
    },
    /// The receiver got the tree message numbered `seq`: stop resending it.
    Ack {
        /// The acknowledged message's `seq`.
        seq: u64,
    },
}

// ---- Data ------------------------------------------------------------------------------

/// The kinds of data-plane frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataKind {
    /// A chat request travelling up.
    Request,
    /// Its answer travelling down.
    Response,
    /// A committed write replicated to a replica.
    Replicate,
    /// A replica asks for a full copy.
    SnapshotRequest,
    /// The full copy.
    Snapshot,
}

/// A data-plane frame; the payload's schema belongs to the chat service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    /// What the frame is.
    pub kind: DataKind,
    /// Matches a response to its request.
    pub correlation_id: String,
    /// The input node that asked.
    pub origin: NodeId,
    /// The node the request is for.
    pub target: NodeId,
    /// Request: the client's last seen epoch; response or replication: the writer's epoch.
    pub epoch: u64,
    /// The encoded request, response or operation.
    pub payload: Vec<u8>,
}
