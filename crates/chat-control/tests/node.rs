//! Whole `Node`s (topology handshake and heartbeats included) over an in-process network with
//! virtual time: the composition the real driver runs, without sockets.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::{Duration, Instant};

use chat_control::{defaults, Node, NodeConfig, NodeEvent, Transmit};
use chat_wire::{Body, NodeId};

/// A 7-node graph that is not a ring: two triangles joined by a bridge, and a tail.
const EDGES: &[(NodeId, NodeId)] = &[
    (1, 2),
    (2, 3),
    (3, 1),
    (3, 4),
    (4, 5),
    (5, 6),
    (6, 4),
    (6, 7),
];

enum Item {
    Deliver {
        from: NodeId,
        to: NodeId,
        lamport: u64,
        body: Body,
    },
    Wake(NodeId),
}

struct Net {
    now: Instant,
    seq: u64,
    queue: BinaryHeap<Reverse<(Instant, u64, NodeId, NodeId)>>,
    items: BTreeMap<u64, Item>,
    nodes: BTreeMap<NodeId, Node>,
    /// Frozen processes (SIGSTOP): they neither receive nor run timers.
    frozen: BTreeSet<NodeId>,
    incarnation: u64,
    role_events: u64,
}

impl Net {
    fn new() -> Self {
        Net {
            now: Instant::now(),
            seq: 0,
            queue: BinaryHeap::new(),
            items: BTreeMap::new(),
            nodes: BTreeMap::new(),
            frozen: BTreeSet::new(),
            incarnation: 100,
            role_events: 0,
        }
    }

    fn push(&mut self, at: Instant, item: Item) {
        self.seq += 1;
        self.items.insert(self.seq, item);
        self.queue.push(Reverse((at, self.seq, 0, 0)));
    }

    fn neighbours(id: NodeId) -> Vec<NodeId> {
        EDGES
            .iter()
            .filter_map(|&(a, b)| (a == id).then_some(b).or((b == id).then_some(a)))
            .collect()
    }

    fn start(&mut self, id: NodeId) {
        self.incarnation += 1;
        let mut config =
            NodeConfig::new(id, "127.0.0.1".into(), 47000 + id as u16, self.incarnation);
        config.data_port = 48000 + id as u16;
        let mut node = Node::new(config, self.now);
        for peer in Self::neighbours(id) {
            node.add_neighbor(self.now, peer, "127.0.0.1".into(), 47000 + peer as u16);
        }
        self.nodes.insert(id, node);
        // The transport connects to running peers: both ends see the link come up.
        for peer in Self::neighbours(id) {
            if let Some(p) = self.nodes.get_mut(&peer) {
                p.handle_link_up(self.now, id);
            }
            self.drain(peer);
        }
        self.drain(id);
    }

    /// SIGKILL: the process is gone and its TCP connections drop at once.
    fn kill(&mut self, id: NodeId) {
        self.nodes.remove(&id);
        self.frozen.remove(&id);
        for peer in Self::neighbours(id) {
            if let Some(p) = self.nodes.get_mut(&peer) {
                p.handle_link_down(self.now, id);
            }
            self.drain(peer);
        }
    }

    fn drain(&mut self, id: NodeId) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        let mut out = Vec::new();
        let mut roles = 0;
        while let Some(event) = node.poll_event() {
            if matches!(event, NodeEvent::RolesChanged { .. }) {
                roles += 1;
            }
        }
        while let Some(t) = node.poll_transmit() {
            out.push(t);
        }
        let wake = node.poll_timeout();
        self.role_events += roles;
        for Transmit { to, lamport, body } in out {
            if self.nodes.contains_key(&to) {
                // Loopback: 0.2 ms, FIFO per link since every message takes the same time.
                let at = self.now + Duration::from_micros(200);
                self.push(
                    at,
                    Item::Deliver {
                        from: id,
                        to,
                        lamport,
                        body,
                    },
                );
            }
        }
        if let Some(at) = wake {
            self.push(at, Item::Wake(id));
        }
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        while let Some(Reverse((at, seq, _, _))) = self.queue.peek().copied() {
            if at > until {
                break;
            }
            self.queue.pop();
            self.now = self.now.max(at);
            let Some(item) = self.items.remove(&seq) else {
                continue;
            };
            match item {
                Item::Deliver {
                    from,
                    to,
                    lamport,
                    body,
                } => {
                    if self.frozen.contains(&to) || self.frozen.contains(&from) {
                        continue;
                    }
                    let now = self.now;
                    if let Some(node) = self.nodes.get_mut(&to) {
                        node.handle_message(now, from, lamport, &body);
                        self.drain(to);
                    }
                }
                Item::Wake(id) => {
                    if self.frozen.contains(&id) {
                        continue;
                    }
                    let now = self.now;
                    if let Some(node) = self.nodes.get_mut(&id) {
                        if node.poll_timeout().is_some_and(|t| t <= now) {
                            node.handle_timeout(now);
                            self.drain(id);
                        }
                    }
                }
            }
        }
        self.now = until;
    }

    /// Runs until every live node has roles and agrees on one leader; returns how long.
    fn until_settled(&mut self, limit: Duration) -> Duration {
        let start = self.now;
        while self.now - start < limit {
            self.run_for(Duration::from_millis(10));
            let live: Vec<&Node> = self
                .nodes
                .iter()
                .filter(|(id, _)| !self.frozen.contains(id))
                .map(|(_, n)| n)
                .collect();
            let leaders: BTreeSet<_> = live.iter().map(|n| n.status().leader).collect();
            let settled = live.iter().all(|n| {
                let s = n.status();
                !s.roles.is_empty() && s.election.is_none() && s.settled
            });
            let leader_alive = leaders.iter().all(|l| {
                l.is_some_and(|l| self.nodes.contains_key(&l) && !self.frozen.contains(&l))
            });
            if settled && leaders.len() == 1 && leader_alive {
                return self.now - start;
            }
        }
        panic!(
            "not settled within {limit:?}: {:#?}",
            self.nodes.values().map(Node::status).collect::<Vec<_>>()
        );
    }

    fn leader(&self) -> NodeId {
        self.nodes
            .iter()
            .filter(|(id, _)| !self.frozen.contains(id))
            .find_map(|(_, n)| n.status().leader)
            .expect("a leader")
    }

    fn roles(&self, id: NodeId) -> Vec<&'static str> {
        self.nodes[&id].status().roles.names()
    }
}

#[test]
fn seven_nodes_elect_the_smallest_id_and_derive_roles() {
    let mut net = Net::new();
    for id in 1..=7 {
        net.start(id);
    }
    let took = net.until_settled(Duration::from_secs(10));
    assert_eq!(net.leader(), 1);
    assert_eq!(net.roles(1), vec!["writer"]);
    // 2 and 3 hang off the root; 3 also leads to the rest, so it is a replica only.
    assert_eq!(net.roles(2), vec!["replica", "input"]);
    assert_eq!(net.roles(3), vec!["replica"]);
    assert_eq!(net.roles(7), vec!["input"]);
    let s1 = net.nodes[&1].status();
    // Every input node is routable from the root.
    for id in 2..=7 {
        if net.roles(id).contains(&"input") {
            assert!(
                s1.routes.next_hop_down(id).is_some(),
                "input {id} unroutable"
            );
        }
    }
    eprintln!("settled {took:?} after start (virtual time)");
}

#[test]
fn killing_the_leader_elects_a_new_one_and_the_restart_rejoins_without_an_election() {
    let mut net = Net::new();
    for id in 1..=7 {
        net.start(id);
    }
    net.until_settled(Duration::from_secs(10));
    net.kill(1);
    let took = net.until_settled(Duration::from_secs(10));
    eprintln!("SIGKILLed leader replaced after {took:?} (virtual time)");
    assert_eq!(net.leader(), 2);
    assert!(
        took < Duration::from_secs(1),
        "a SIGKILLed leader should be replaced within a second of virtual time, took {took:?}"
    );
    let runs_before: Vec<_> = net.nodes.values().map(|n| n.status().tree_run).collect();
    net.start(1);
    net.until_settled(Duration::from_secs(10));
    assert_eq!(
        net.leader(),
        2,
        "the restarted node joins the current leader"
    );
    let runs_after: Vec<_> = net
        .nodes
        .iter()
        .filter(|(&id, _)| id != 1)
        .map(|(_, n)| n.status().tree_run)
        .collect();
    assert_eq!(runs_before, runs_after, "no new election on rejoin");
    assert_eq!(net.nodes[&1].status().tree_run, runs_after[0]);
}

#[test]
fn a_frozen_leader_is_replaced_after_the_liveness_timeout() {
    let mut net = Net::new();
    for id in 1..=7 {
        net.start(id);
    }
    net.until_settled(Duration::from_secs(10));
    net.frozen.insert(1);
    let took = net.until_settled(Duration::from_secs(10));
    eprintln!("frozen leader replaced after {took:?} (virtual time)");
    assert_eq!(net.leader(), 2);
    // Only silence tells: the liveness timeout plus healing and an election.
    assert!(took >= defaults::LIVENESS_TIMEOUT, "{took:?}");
}

#[test]
fn killing_an_inner_node_heals_its_subtree_without_an_election() {
    let mut net = Net::new();
    for id in 1..=7 {
        net.start(id);
    }
    net.until_settled(Duration::from_secs(10));
    let run = net.nodes[&1].status().tree_run;
    // 5 sits in the far triangle (4, 5, 6): whatever hung below it still reaches the root
    // through 4 or 6, so its loss must heal without an election.
    net.kill(5);
    net.until_settled(Duration::from_secs(10));
    assert_eq!(net.leader(), 1);
    for (id, n) in &net.nodes {
        assert_eq!(
            n.status().tree_run,
            run,
            "node {id} went through an election"
        );
    }
}
