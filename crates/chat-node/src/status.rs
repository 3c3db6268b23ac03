//! The node's status: the JSON of `GET /status`, published by the driver through a
//! `tokio::sync::watch` channel. Scripts and the `chat-cluster` launcher rely on these field
//! names: add fields, do not rename them.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};

/// What a node reports about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NodeStatus {
    pub(crate) id: u64,
    /// The process id, so scripts can signal the node.
    pub(crate) pid: u32,
    /// The node's Lamport time.
    pub(crate) lamport: u64,
    /// Every configured or discovered neighbour.
    pub(crate) neighbors: Vec<NeighborStatus>,
    /// The elected leader, `None` while none is known.
    pub(crate) leader: Option<u64>,
    /// Lowercase role names: `writer`, `replica`, `input`, `forwarder`.
    pub(crate) roles: Vec<String>,
    /// Parent in the spanning tree; `None` at the root or outside a tree.
    pub(crate) parent: Option<u64>,
    /// Children in the spanning tree.
    pub(crate) children: Vec<u64>,
    /// Input node id -> next hop towards it.
    pub(crate) routes: BTreeMap<u64, u64>,
    pub(crate) tree_epoch: u64,
    /// The term of this node's tree: never decreases on a node, even across restarts.
    pub(crate) term: u64,
    /// Whether this node's tree holds a majority of the cluster and, at its root, whether
    /// the root may accept writes now.
    pub(crate) quorum: QuorumStatus,
    /// The election under way, `None` when settled.
    pub(crate) election: Option<ElectionStatus>,
    pub(crate) data_epoch: u64,
    /// The node has joined a tree and its role's modules are up: for an input node, its HTTP
    /// server answers (what systemd's READY=1 follows).
    pub(crate) ready: bool,
    /// A request entering here reaches a writable root now (an input node's nameserver lease
    /// is held only while this and `ready` are true).
    #[serde(default)]
    pub(crate) writer_reachable: bool,
    /// Where this input node's API answers; `None` while it serves no HTTP.
    #[serde(default)]
    pub(crate) http_url: Option<String>,
    /// The data plane: commit and log positions, counters.
    #[serde(default)]
    pub(crate) data: crate::data::DataStatus,
    /// Milliseconds since the process started.
    pub(crate) uptime_ms: u64,
    /// The chat-node version.
    pub(crate) version: String,
}

/// One neighbour as seen from this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NeighborStatus {
    pub(crate) id: u64,
    pub(crate) state: NeighborState,
    /// Milliseconds since anything was last heard from it; `None` if never.
    pub(crate) last_seen_ms: Option<u64>,
    /// Whether this node's own ZeroMQ connection to it is established (`true`), dropped or
    /// not yet made (`false`). A dropped connection is how a dead process is noticed within
    /// milliseconds; heartbeats cover the rest.
    #[serde(default)]
    pub(crate) link_up: bool,
}

/// Whether the handshake with a neighbour is complete and it is alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum NeighborState {
    On,
    Off,
}

/// The majority behind this node's tree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct QuorumStatus {
    /// The cluster's configured size (`[cluster] size`).
    pub(crate) size: u64,
    /// At the root: nodes (the root included) that answered its freshest probe still within
    /// the writer lease; 0 on every other node.
    pub(crate) have: u64,
    /// This node is a root that may accept writes now: its tree holds a majority and a
    /// majority answered a probe within the writer lease, in the current term.
    pub(crate) writable: bool,
}

/// An election in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ElectionStatus {
    pub(crate) run: String,
    pub(crate) round: u32,
}

impl NodeStatus {
    /// The status of a node that has just started: no neighbour heard from, no leader.
    pub(crate) fn starting(id: u64) -> Self {
        Self {
            id,
            pid: std::process::id(),
            lamport: 0,
            neighbors: Vec::new(),
            leader: None,
            roles: Vec::new(),
            parent: None,
            children: Vec::new(),
            routes: BTreeMap::new(),
            tree_epoch: 0,
            term: 0,
            quorum: QuorumStatus::default(),
            election: None,
            data_epoch: 0,
            ready: false,
            writer_reachable: false,
            http_url: None,
            data: crate::data::DataStatus::default(),
            uptime_ms: 0,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }

    /// How many neighbours are on and off.
    pub(crate) fn neighbor_counts(&self) -> (usize, usize) {
        let on = self
            .neighbors
            .iter()
            .filter(|neighbor| neighbor.state == NeighborState::On)
            .count();
        (on, self.neighbors.len() - on)
    }

    /// `roles writer,input; leader 1; term 7; writable` (or `read-only`): what role-change
    /// log lines and systemd's STATUS= say about the node's place in its tree.
    pub(crate) fn role_line(&self) -> String {
        let roles = if self.roles.is_empty() {
            "none".to_owned()
        } else {
            self.roles.join(",")
        };
        format!(
            "roles {roles}; leader {}; term {}; {}",
            OptionalId(self.leader),
            self.term,
            if self.quorum.writable {
                "writable"
            } else {
                "read-only"
            }
        )
    }

    /// One line for systemd's STATUS= (shown by `systemctl status`).
    pub(crate) fn summary_line(&self) -> String {
        let (on, off) = self.neighbor_counts();
        let mut line = format!("{}; neighbours {on} on/{off} off", self.role_line());
        let _ = write!(
            line,
            "; quorum {}/{}; tree epoch {}; data epoch {}",
            self.quorum.have, self.quorum.size, self.tree_epoch, self.data_epoch
        );
        if !self.ready {
            line.push_str("; not ready");
        }
        line
    }
}

/// An id or `none`.
struct OptionalId(Option<u64>);

impl fmt::Display for OptionalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(id) => write!(f, "{id}"),
            None => f.write_str("none"),
        }
    }
}

/// The operator's view of a status (`chat-node status`).
impl fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "node {}  pid {}  version {}  up {:.1} s  {}",
            self.id,
            self.pid,
            self.version,
            self.uptime_ms as f64 / 1000.0,
            if self.ready { "ready" } else { "NOT READY" }
        )?;
        writeln!(
            f,
            "lamport {}  leader {}  term {}  tree epoch {}  data epoch {}",
            self.lamport,
            OptionalId(self.leader),
            self.term,
            self.tree_epoch,
            self.data_epoch
        )?;
        writeln!(
            f,
            "quorum    {} of {} in the tree{}",
            self.quorum.have,
            self.quorum.size,
            if self.quorum.writable {
                "; writable"
            } else {
                "; not writable"
            }
        )?;
        match &self.election {
            Some(election) => {
                writeln!(f, "election  run {} round {}", election.run, election.round)?
            }
            None => writeln!(f, "election  settled")?,
        }
        let roles = if self.roles.is_empty() {
            "none".to_owned()
        } else {
            self.roles.join(", ")
        };
        writeln!(f, "roles     {roles}")?;
        let children: Vec<String> = self.children.iter().map(u64::to_string).collect();
        writeln!(
            f,
            "tree      parent {}  children {}",
            OptionalId(self.parent),
            if children.is_empty() {
                "none".to_owned()
            } else {
                children.join(", ")
            }
        )?;
        let (on, off) = self.neighbor_counts();
        writeln!(f, "neighbours ({on} on, {off} off)")?;
        for neighbor in &self.neighbors {
            let state = match neighbor.state {
                NeighborState::On => "on ",
                NeighborState::Off => "off",
            };
            match neighbor.last_seen_ms {
                Some(ms) => writeln!(f, "  {:>5}  {state}  last seen {ms} ms ago", neighbor.id)?,
                None => writeln!(f, "  {:>5}  {state}  never heard from", neighbor.id)?,
            }
        }
        if !self.routes.is_empty() {
            writeln!(f, "routes (input node -> next hop)")?;
            for (input, next_hop) in &self.routes {
                writeln!(f, "  {input:>5} -> {next_hop}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NodeStatus {
        let mut status = NodeStatus::starting(4);
        status.pid = 1234;
        status.lamport = 42;
        status.neighbors = vec![
            NeighborStatus {
                id: 3,
                state: NeighborState::On,
                last_seen_ms: Some(120),
                link_up: false,
            },
            NeighborStatus {
                id: 5,
                state: NeighborState::Off,
                last_seen_ms: None,
                link_up: false,
            },
        ];
        status.leader = Some(5);
        status.roles = vec!["writer".into(), "input".into()];
        status.routes = [(7, 3)].into();
        status.election = Some(ElectionStatus {
            run: "5-2".into(),
            round: 3,
        });
        status.term = 9;
        status.quorum = QuorumStatus {
            size: 5,
            have: 3,
            writable: true,
        };
        status
    }

    #[test]
    fn json_has_the_contract_field_names_and_round_trips() {
        let status = sample();
        let json = serde_json::to_value(&status).expect("serializes");
        for field in [
            "id",
            "pid",
            "lamport",
            "neighbors",
            "leader",
            "roles",
            "parent",
            "children",
            "routes",
            "tree_epoch",
            "term",
            "quorum",
            "election",
            "data_epoch",
            "ready",
            "uptime_ms",
            "version",
        ] {
            assert!(json.get(field).is_some(), "missing {field} in {json}");
        }
        assert_eq!(json["neighbors"][0]["state"], "on");
        assert_eq!(json["neighbors"][1]["state"], "off");
        assert!(json["neighbors"][1]["last_seen_ms"].is_null());
        assert!(json["parent"].is_null());
        assert_eq!(json["routes"]["7"], 3);
        assert_eq!(json["election"]["round"], 3);
        assert_eq!(json["term"], 9);
        assert_eq!(json["quorum"]["size"], 5);
        assert_eq!(json["quorum"]["have"], 3);
        assert_eq!(json["quorum"]["writable"], true);
        let back: NodeStatus = serde_json::from_value(json).expect("deserializes");
        assert_eq!(back, status);
    }

    #[test]
    fn operator_view_and_summary_show_the_essentials() {
        let status = sample();
        let text = status.to_string();
        assert!(text.starts_with("node 4  pid 1234"), "{text}");
        assert!(text.contains("leader 5"), "{text}");
        assert!(text.contains("run 5-2 round 3"), "{text}");
        assert!(text.contains("3  on   last seen 120 ms ago"), "{text}");
        assert!(text.contains("5  off  never heard from"), "{text}");
        assert!(text.contains("7 -> 3"), "{text}");
        assert!(text.contains("term 9"), "{text}");
        assert!(text.contains("3 of 5 in the tree; writable"), "{text}");
        assert_eq!(
            status.summary_line(),
            "roles writer,input; leader 5; term 9; writable; neighbours 1 on/1 off; \
             quorum 3/5; tree epoch 0; data epoch 0; not ready"
        );
    }
}
