//! Behaviour of the neighbour machine (handshake, liveness, REJOIN, restarts; SPEC §5.4-5.5),
//! driven with fake time. `Net` wires several machines through an in-test network that
//! encodes every message with chat-wire, delivers it after a fixed latency, and can block
//! links or drop chosen messages.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use chat_control::clock::LamportClock;
use chat_control::topology::{
    NeighborState, NotANeighbor, OffReason, Topology, TopologyConfig, TopologyEvent,
};
use chat_wire::{
    Body, Candidate, Election, ElectionKind, Envelope, HandshakeStep, Heartbeat, NodeId, RunId,
    Topology as Handshake,
};
use proptest::prelude::*;

const LATENCY: Duration = Duration::from_millis(1);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn port_of(id: NodeId) -> u16 {
    46_000 + u16::try_from(id).expect("test ids are small")
}

/// Fixed timings (not the shipped defaults), so the counts below stay what they say.
fn config() -> TopologyConfig {
    TopologyConfig {
        heartbeat: ms(250),
        liveness_timeout: ms(1500),
        join_backoff_initial: ms(50),
        join_backoff_max: Duration::from_secs(2),
        stranger_heartbeats_before_rejoin: 5,
        link_down_grace: ms(150),
    }
}

/// A message as it left its sender.
#[derive(Debug, Clone)]
struct Sent {
    at: Instant,
    from: NodeId,
    to: NodeId,
    body: Body,
}

type DropRule = Box<dyn FnMut(&Sent) -> bool>;

struct Net {
    now: Instant,
    nodes: BTreeMap<NodeId, Topology>,
    clocks: BTreeMap<NodeId, LamportClock>,
    generation: BTreeMap<NodeId, u64>,
    /// (deliver at, sequence, encoded envelope); the sequence keeps FIFO order per instant.
    in_flight: Vec<(Instant, u64, Vec<u8>)>,
    seq: u64,
    blocked: HashSet<(NodeId, NodeId)>,
    drop_rule: Option<DropRule>,
    sent: Vec<Sent>,
    events: Vec<(Instant, NodeId, TopologyEvent)>,
}

impl Net {
    fn new() -> Self {
        Net {
            now: Instant::now(),
            nodes: BTreeMap::new(),
            clocks: BTreeMap::new(),
            generation: BTreeMap::new(),
            in_flight: Vec::new(),
            seq: 0,
            blocked: HashSet::new(),
            drop_rule: None,
            sent: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Starts (or restarts, with a new incarnation) node `id`, with no neighbours.
    fn start(&mut self, id: NodeId) {
        let generation = self.generation.entry(id).or_insert(0);
        *generation += 1;
        let incarnation = (id << 32) | *generation;
        let node = Topology::new(
            id,
            "127.0.0.1".into(),
            port_of(id),
            incarnation,
            config(),
            self.now,
        );
        self.nodes.insert(id, node);
        self.clocks.insert(id, LamportClock::new());
    }

    /// Stops node `id`; what it reported goes with it, so that its next incarnation's
    /// events are read on their own.
    fn crash(&mut self, id: NodeId) {
        self.nodes.remove(&id);
        self.events.retain(|(_, node, _)| *node != id);
    }

    fn node(&mut self, id: NodeId) -> &mut Topology {
        self.nodes.get_mut(&id).expect("node is running")
    }

    /// `a` learns `b` from its config.
    fn configure(&mut self, a: NodeId, b: NodeId) {
        let now = self.now;
        self.node(a)
            .add_neighbor(now, b, "127.0.0.1".into(), port_of(b));
        self.flush();
    }

    fn block(&mut self, a: NodeId, b: NodeId) {
        self.blocked.insert((a, b));
        self.blocked.insert((b, a));
    }

    fn unblock(&mut self, a: NodeId, b: NodeId) {
        self.blocked.remove(&(a, b));
        self.blocked.remove(&(b, a));
    }

    fn link_down(&mut self, at: NodeId, peer: NodeId) {
        let now = self.now;
        self.node(at).handle_link_down(now, peer);
        self.flush();
    }

    fn link_up(&mut self, at: NodeId, peer: NodeId) {
        let now = self.now;
        self.node(at).handle_link_up(now, peer);
        self.flush();
    }

    /// Moves every node's output into the network and the event log.
    fn flush(&mut self) {
        for (&id, node) in &mut self.nodes {
            while let Some(event) = node.poll_event() {
                self.events.push((self.now, id, event));
            }
            while let Some((to, body)) = node.poll_transmit() {
                let sent = Sent {
                    at: self.now,
                    from: id,
                    to,
                    body,
                };
                let dropped = self.blocked.contains(&(id, to))
                    || self.drop_rule.as_mut().is_some_and(|rule| rule(&sent));
                if !dropped {
                    let lamport = self.clocks[&id].tick();
                    let bytes = Envelope::new(id, to, lamport, sent.body.clone()).encode();
                    self.in_flight.push((self.now + LATENCY, self.seq, bytes));
                    self.seq += 1;
                }
                self.sent.push(sent);
            }
        }
    }

    fn next_wakeup(&self) -> Option<Instant> {
        let deliveries = self.in_flight.iter().map(|(at, _, _)| *at);
        let timers = self.nodes.values().filter_map(Topology::poll_timeout);
        deliveries.chain(timers).min()
    }

    /// Jumps to the next delivery or timer (if it is before `limit`) and runs it.
    fn step(&mut self, limit: Instant) -> bool {
        let Some(next) = self.next_wakeup().filter(|&next| next <= limit) else {
            return false;
        };
        self.now = self.now.max(next);
        let now = self.now;
        self.in_flight.sort_by_key(|(at, seq, _)| (*at, *seq));
        let due = self
            .in_flight
            .iter()
            .take_while(|(at, _, _)| *at <= now)
            .count();
        for (_, _, bytes) in self.in_flight.drain(..due).collect::<Vec<_>>() {
            let envelope = Envelope::decode(&bytes).expect("the net carries valid envelopes");
            let to = envelope.header.destination;
            if let (Some(node), Some(clock)) = (self.nodes.get_mut(&to), self.clocks.get(&to)) {
                clock.observe(envelope.header.lamport);
                node.handle_message(now, envelope.header.source, &envelope.body);
            }
        }
        for node in self.nodes.values_mut() {
            if node.poll_timeout().is_some_and(|deadline| deadline <= now) {
                node.handle_timeout(now);
            }
        }
        self.flush();
        true
    }

    fn run_for(&mut self, duration: Duration) {
        let limit = self.now + duration;
        let mut steps = 0;
        while self.step(limit) {
            steps += 1;
            assert!(steps < 1_000_000, "livelock: the network never goes quiet");
        }
        self.now = limit;
    }

    fn events_of(&self, id: NodeId) -> Vec<TopologyEvent> {
        self.events
            .iter()
            .filter(|(_, node, _)| *node == id)
            .map(|(_, _, event)| event.clone())
            .collect()
    }

    /// ON/OFF events node `id` reported about `peer`, in order.
    fn on_off_of(&self, id: NodeId, peer: NodeId) -> Vec<TopologyEvent> {
        self.events_of(id)
            .into_iter()
            .filter(|event| match event {
                TopologyEvent::NeighborOn { id } | TopologyEvent::NeighborOff { id, .. } => {
                    *id == peer
                }
                _ => false,
            })
            .collect()
    }

    fn joins_sent(&self, from: NodeId, to: NodeId) -> Vec<Instant> {
        self.sent
            .iter()
            .filter(|s| s.from == from && s.to == to && is_step(&s.body, HandshakeStep::Join))
            .map(|s| s.at)
            .collect()
    }
}

fn is_step(body: &Body, step: HandshakeStep) -> bool {
    matches!(body, Body::Topology(h) if h.step == step)
}

fn on(id: NodeId) -> TopologyEvent {
    TopologyEvent::NeighborOn { id }
}

fn off(id: NodeId, reason: OffReason) -> TopologyEvent {
    TopologyEvent::NeighborOff { id, reason }
}

/// Two nodes, `1` configured with `2`, handshake done.
fn joined_pair() -> Net {
    let mut net = Net::new();
    net.start(1);
    net.start(2);
    net.configure(1, 2);
    net.run_for(ms(100));
    assert!(
        net.node(1).is_on(2) && net.node(2).is_on(1),
        "setup: pair did not join"
    );
    net
}

// ---- single-machine helpers ----------------------------------------------------------

fn handshake(step: HandshakeStep, from: NodeId, incarnation: u64) -> Body {
    Body::Topology(Handshake {
        step,
        rejoin: false,
        host: "127.0.0.1".into(),
        control_port: port_of(from),
        incarnation,
    })
}

fn heartbeat(incarnation: u64) -> Body {
    Body::Heartbeat(Heartbeat { incarnation })
}

fn election_message() -> Body {
    let candidate = Candidate {
        last_term: 0,
        data_epoch: 0,
        node: 2,
    };
    Body::Election(Election {
        run: RunId {
            lamport: 1,
            initiator: 2,
        },
        round: 0,
        cluster_size: 1,
        kind: ElectionKind::Start(candidate),
    })
}

fn transmits(node: &mut Topology) -> Vec<(NodeId, Body)> {
    std::iter::from_fn(|| node.poll_transmit()).collect()
}

fn events(node: &mut Topology) -> Vec<TopologyEvent> {
    std::iter::from_fn(|| node.poll_event()).collect()
}

/// Node 1 that completed a handshake with node 2 (incarnation 20), outputs drained.
fn machine_joined_with_2(t0: Instant) -> Topology {
    let mut node = Topology::new(1, "127.0.0.1".into(), port_of(1), 10, config(), t0);
    node.handle_message(t0, 2, &handshake(HandshakeStep::Join, 2, 20));
    node.handle_message(t0, 2, &handshake(HandshakeStep::Ack, 2, 20));
    assert!(node.is_on(2), "setup: handshake did not complete");
    let _ = transmits(&mut node);
    let _ = events(&mut node);
    node
}

// ---- handshake ----------------------------------------------------------------------

#[test]
fn handshake_completes_when_only_one_side_is_configured() {
    let net = &mut Net::new();
    net.start(1);
    net.start(2);
    net.configure(1, 2);
    net.run_for(ms(100));

    let steps: Vec<_> = net
        .sent
        .iter()
        .filter_map(|s| match &s.body {
            Body::Topology(h) => Some((s.from, s.to, h.step)),
            _ => None,
        })
        .collect();
    assert_eq!(
        steps,
        [
            (1, 2, HandshakeStep::Join),
            (2, 1, HandshakeStep::JoinAck),
            (1, 2, HandshakeStep::Ack),
        ]
    );
    assert_eq!(
        net.events_of(1),
        [
            TopologyEvent::Connect {
                id: 2,
                host: "127.0.0.1".into(),
                control_port: port_of(2)
            },
            on(2)
        ]
    );
    // Node 2 learns node 1's address from its JOIN.
    assert_eq!(
        net.events_of(2),
        [
            TopologyEvent::Connect {
                id: 1,
                host: "127.0.0.1".into(),
                control_port: port_of(1)
            },
            on(1)
        ]
    );
    let view: Vec<_> = net.node(2).neighbors().collect();
    assert_eq!(view.len(), 1);
    assert_eq!(
        (view[0].id, view[0].state, view[0].joined),
        (1, NeighborState::On, true)
    );
}

#[test]
fn lost_joins_are_retried_with_exponential_backoff_fast_first_and_capped() {
    let net = &mut Net::new();
    net.start(1);
    // Node 2 is not running yet: every JOIN is lost.
    net.configure(1, 2);
    net.run_for(Duration::from_secs(10));

    let joins = net.joins_sent(1, 2);
    let gaps: Vec<u64> = joins
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis() as u64)
        .collect();
    let expected_start = [50, 100, 200, 400, 800, 1600, 2000];
    assert_eq!(&gaps[..expected_start.len()], expected_start);
    assert!(
        gaps[expected_start.len()..].iter().all(|&gap| gap == 2000),
        "backoff not capped: {gaps:?}"
    );

    // Once node 2 is up, the next retry completes the handshake and the retries stop.
    net.start(2);
    net.run_for(Duration::from_secs(3));
    assert!(net.node(1).is_on(2) && net.node(2).is_on(1));
    let joins_before = net.joins_sent(1, 2).len();
    net.run_for(Duration::from_secs(10));
    assert_eq!(net.joins_sent(1, 2).len(), joins_before);
}

#[test]
fn a_lost_join_ack_is_recovered_by_the_next_join() {
    let net = &mut Net::new();
    net.start(1);
    net.start(2);
    let mut dropped = false;
    net.drop_rule = Some(Box::new(move |s| {
        let first_join_ack = !dropped && is_step(&s.body, HandshakeStep::JoinAck);
        dropped |= first_join_ack;
        first_join_ack
    }));
    net.configure(1, 2);
    net.run_for(ms(500));

    assert_eq!(net.on_off_of(1, 2), [on(2)]);
    assert_eq!(net.on_off_of(2, 1), [on(1)]);
    assert_eq!(net.joins_sent(1, 2).len(), 2);
}

#[test]
fn a_lost_ack_is_recovered_by_the_answering_side_joining_in_turn() {
    let net = &mut Net::new();
    net.start(1);
    net.start(2);
    let mut dropped = false;
    net.drop_rule = Some(Box::new(move |s| {
        let first_ack = !dropped && is_step(&s.body, HandshakeStep::Ack);
        dropped |= first_ack;
        first_ack
    }));
    net.configure(1, 2);
    net.run_for(ms(500));

    assert_eq!(net.on_off_of(1, 2), [on(2)]);
    assert_eq!(net.on_off_of(2, 1), [on(1)]);
    assert!(
        !net.joins_sent(2, 1).is_empty(),
        "node 2 never joined in turn"
    );
}

#[test]
fn crossed_joins_end_with_both_on_and_one_event_each() {
    let net = &mut Net::new();
    net.start(1);
    net.start(2);
    net.configure(1, 2);
    net.configure(2, 1);
    net.run_for(Duration::from_secs(5));

    assert_eq!(net.on_off_of(1, 2), [on(2)]);
    assert_eq!(net.on_off_of(2, 1), [on(1)]);
    let connects_at_1 = net
        .events_of(1)
        .iter()
        .filter(|e| matches!(e, TopologyEvent::Connect { .. }))
        .count();
    assert_eq!(connects_at_1, 1, "same address reported twice");
    // Both JOINs crossed; no further JOIN once ON.
    assert_eq!(net.joins_sent(1, 2).len(), 1);
    assert_eq!(net.joins_sent(2, 1).len(), 1);
}

#[test]
fn duplicate_ack_and_join_ack_are_harmless() {
    let t0 = Instant::now();
    let mut node = machine_joined_with_2(t0);

    node.handle_message(t0 + ms(1), 2, &handshake(HandshakeStep::Ack, 2, 20));
    assert_eq!(events(&mut node), []);
    assert_eq!(transmits(&mut node), []);

    // A duplicate JOIN-ACK is acknowledged again (the peer may have lost our ACK) but
    // changes nothing here.
    node.handle_message(t0 + ms(2), 2, &handshake(HandshakeStep::JoinAck, 2, 20));
    assert_eq!(events(&mut node), []);
    let sent = transmits(&mut node);
    assert_eq!(sent.len(), 1);
    assert!(sent[0].0 == 2 && is_step(&sent[0].1, HandshakeStep::Ack));
    assert!(node.is_on(2));
}

#[test]
fn a_join_from_a_joined_neighbour_is_answered_without_events() {
    let t0 = Instant::now();
    let mut node = machine_joined_with_2(t0);
    node.handle_message(t0 + ms(1), 2, &handshake(HandshakeStep::Join, 2, 20));
    assert_eq!(events(&mut node), []);
    let sent = transmits(&mut node);
    assert_eq!(sent.len(), 1);
    assert!(is_step(&sent[0].1, HandshakeStep::JoinAck));
    assert!(node.is_on(2));
}

#[test]
fn a_changed_advertised_address_asks_the_driver_to_reconnect() {
    let t0 = Instant::now();
    let mut node = machine_joined_with_2(t0);
    let moved = Body::Topology(Handshake {
        step: HandshakeStep::Join,
        rejoin: false,
        host: "127.0.0.2".into(),
        control_port: 47_002,
        incarnation: 20,
    });
    node.handle_message(t0 + ms(1), 2, &moved);
    assert_eq!(
        events(&mut node),
        [TopologyEvent::Connect {
            id: 2,
            host: "127.0.0.2".into(),
            control_port: 47_002
        }]
    );
}

// ---- strangers and REJOIN -----------------------------------------------------------

#[test]
fn k_heartbeats_from_a_stranger_start_a_rejoin_handshake() {
    let t0 = Instant::now();
    let mut node = Topology::new(1, "127.0.0.1".into(), port_of(1), 10, config(), t0);
    let k = config().stranger_heartbeats_before_rejoin;

    for i in 1..k {
        node.handle_message(t0 + ms(u64::from(i)), 7, &heartbeat(70));
        assert_eq!(events(&mut node), [], "REJOIN after only {i} heartbeats");
        assert_eq!(transmits(&mut node), []);
    }
    assert_eq!(node.check_addressable(7), Err(NotANeighbor(7)));

    node.handle_message(t0 + ms(10), 7, &heartbeat(70));
    assert_eq!(events(&mut node), [TopologyEvent::RejoinStarted { id: 7 }]);
    let sent = transmits(&mut node);
    assert_eq!(sent.len(), 1);
    assert!(
        matches!(&sent[0], (7, Body::Topology(h)) if h.step == HandshakeStep::Join && h.rejoin),
        "{sent:?}"
    );

    // The stranger answers with its address: it becomes an ON neighbour.
    let join_ack = Body::Topology(Handshake {
        step: HandshakeStep::JoinAck,
        rejoin: true,
        host: "127.0.0.1".into(),
        control_port: port_of(7),
        incarnation: 70,
    });
    node.handle_message(t0 + ms(11), 7, &join_ack);
    assert_eq!(
        events(&mut node),
        [
            TopologyEvent::Connect {
                id: 7,
                host: "127.0.0.1".into(),
                control_port: port_of(7)
            },
            on(7)
        ]
    );
    let sent = transmits(&mut node);
    assert!(
        matches!(&sent[..], [(7, Body::Topology(h))] if h.step == HandshakeStep::Ack && h.rejoin),
        "{sent:?}"
    );
    assert_eq!(node.check_addressable(7), Ok(()));
}

#[test]
fn a_restarted_peer_that_forgot_us_is_rejoined_through_our_heartbeats() {
    let mut net = joined_pair();
    // Node 2 restarts without node 1 in its config: only node 1's heartbeats remind it.
    net.crash(2);
    net.start(2);
    net.run_for(Duration::from_secs(3));

    assert!(net.node(1).is_on(2) && net.node(2).is_on(1));
    assert_eq!(
        net.events_of(2)
            .into_iter()
            .filter(|e| !matches!(e, TopologyEvent::Connect { .. }))
            .collect::<Vec<_>>(),
        [TopologyEvent::RejoinStarted { id: 1 }, on(1)]
    );
    let at_1 = net.on_off_of(1, 2);
    assert_eq!(at_1.first(), Some(&on(2)));
    assert_eq!(at_1.last(), Some(&on(2)));
    assert!(
        matches!(at_1[1], TopologyEvent::NeighborOff { id: 2, .. }),
        "{at_1:?}"
    );
}

#[test]
fn an_unanswered_stranger_handshake_is_abandoned() {
    let t0 = Instant::now();
    let mut node = Topology::new(1, "127.0.0.1".into(), port_of(1), 10, config(), t0);
    node.handle_message(t0, 9, &handshake(HandshakeStep::Join, 9, 90));
    assert_eq!(node.check_addressable(9), Err(NotANeighbor(9)));

    let mut now = t0;
    let mut joins_to_9 = 0;
    while now < t0 + Duration::from_secs(30) {
        now = node.poll_timeout().expect("heartbeat timer always runs");
        node.handle_timeout(now);
        joins_to_9 += transmits(&mut node)
            .iter()
            .filter(|(to, body)| *to == 9 && is_step(body, HandshakeStep::Join))
            .count();
    }
    assert_eq!(node.stats().abandoned_handshakes, 1);
    assert!(joins_to_9 > 0 && joins_to_9 < 10, "{joins_to_9} JOINs");
    assert_eq!(node.neighbors().count(), 0);
}

#[test]
fn handshake_replies_from_unknown_nodes_are_dropped_and_counted() {
    let t0 = Instant::now();
    let mut node = Topology::new(1, "127.0.0.1".into(), port_of(1), 10, config(), t0);
    node.handle_message(t0, 5, &handshake(HandshakeStep::JoinAck, 5, 50));
    node.handle_message(t0, 5, &handshake(HandshakeStep::Ack, 5, 50));
    node.handle_message(t0, 5, &election_message());
    assert_eq!(events(&mut node), []);
    assert_eq!(transmits(&mut node), []);
    assert_eq!(node.stats().unexpected_handshakes, 2);
    assert_eq!(node.stats().stranger_messages, 1);
    assert_eq!(node.check_addressable(5), Err(NotANeighbor(5)));
}

// ---- liveness -----------------------------------------------------------------------

#[test]
fn a_silent_neighbour_goes_off_exactly_at_the_liveness_timeout() {
    let mut net = joined_pair();
    net.block(1, 2);
    let last_seen = net
        .node(1)
        .neighbors()
        .find(|n| n.id == 2)
        .and_then(|n| n.last_seen)
        .expect("node 2 was heard");
    net.run_for(Duration::from_secs(3));

    let offs: Vec<_> = net
        .events
        .iter()
        .filter(|(_, node, e)| *node == 1 && matches!(e, TopologyEvent::NeighborOff { .. }))
        .collect();
    assert_eq!(offs.len(), 1);
    assert_eq!(offs[0].2, off(2, OffReason::Silent));
    assert_eq!(offs[0].0, last_seen + config().liveness_timeout);
    assert!(!net.node(1).is_on(2));
    // Still a neighbour: addressable, listed as OFF.
    assert_eq!(net.node(1).check_addressable(2), Ok(()));
    let view = net.node(1).neighbors().next().expect("listed");
    assert_eq!(view.state, NeighborState::Off);
}

#[test]
fn any_message_counts_as_a_sign_of_life() {
    let t0 = Instant::now();
    let mut node = machine_joined_with_2(t0);
    // Only election traffic for 10 s, one message per second: never OFF.
    let mut now = t0;
    for _ in 0..10 {
        now += Duration::from_secs(1);
        node.handle_timeout(now);
        node.handle_message(now, 2, &election_message());
    }
    assert!(
        !events(&mut node)
            .iter()
            .any(|e| matches!(e, TopologyEvent::NeighborOff { .. })),
        "went OFF while hearing election messages"
    );
    // Then silence: OFF once the liveness timeout has passed since the last message.
    let deadline = node.poll_timeout().expect("timers run");
    assert!(deadline <= now + config().liveness_timeout);
    node.handle_timeout(now + config().liveness_timeout);
    assert_eq!(events(&mut node), [off(2, OffReason::Silent)]);
}

#[test]
fn an_off_neighbour_heard_again_goes_on() {
    let mut net = joined_pair();
    net.block(1, 2);
    net.run_for(Duration::from_secs(2));
    net.unblock(1, 2);
    net.run_for(Duration::from_secs(1));

    assert_eq!(
        net.on_off_of(1, 2),
        [on(2), off(2, OffReason::Silent), on(2)]
    );
    assert!(net.node(1).is_on(2));
}

#[test]
fn heartbeats_go_to_off_neighbours_too() {
    let mut net = joined_pair();
    net.block(1, 2);
    net.run_for(Duration::from_secs(2));
    assert!(!net.node(1).is_on(2), "setup: node 2 should be OFF");
    let off_at = net
        .events
        .iter()
        .find(|(_, node, e)| *node == 1 && matches!(e, TopologyEvent::NeighborOff { .. }))
        .map(|(at, _, _)| *at)
        .expect("OFF reported");

    net.run_for(Duration::from_secs(2));
    let heartbeats_after_off = net
        .sent
        .iter()
        .filter(|s| s.from == 1 && s.to == 2 && s.at > off_at)
        .filter(|s| matches!(s.body, Body::Heartbeat(_)))
        .count();
    // About one per 250 ms over the ~2.5 s since OFF.
    assert!(
        heartbeats_after_off >= 8,
        "{heartbeats_after_off} heartbeats"
    );
}

#[test]
fn heartbeats_are_sent_every_period_to_every_joined_neighbour() {
    let net = &mut Net::new();
    for id in 1..=3 {
        net.start(id);
    }
    net.configure(1, 2);
    net.configure(1, 3);
    net.run_for(Duration::from_secs(1));
    let start = net.now;
    net.run_for(Duration::from_secs(1));
    for peer in [2, 3] {
        let beats: Vec<_> = net
            .sent
            .iter()
            .filter(|s| s.from == 1 && s.to == peer && s.at > start)
            .filter(|s| matches!(s.body, Body::Heartbeat(_)))
            .map(|s| s.at)
            .collect();
        assert_eq!(beats.len(), 4, "to {peer}");
        assert!(beats.windows(2).all(|w| w[1] - w[0] == config().heartbeat));
    }
}

// ---- dropped links ------------------------------------------------------------------

#[test]
fn a_dropped_link_turns_the_neighbour_off_after_the_grace() {
    let mut net = joined_pair();
    net.block(1, 2);
    let dropped_at = net.now;
    net.link_down(1, 2);
    net.run_for(config().link_down_grace - ms(1));
    assert_eq!(net.on_off_of(1, 2), [on(2)], "OFF before the grace ended");

    net.run_for(ms(1));
    let offs: Vec<_> = net
        .events
        .iter()
        .filter(|(_, node, e)| *node == 1 && matches!(e, TopologyEvent::NeighborOff { .. }))
        .collect();
    assert_eq!(offs.len(), 1);
    assert_eq!(offs[0].2, off(2, OffReason::LinkDropped));
    assert_eq!(offs[0].0, dropped_at + config().link_down_grace);

    // The liveness timeout later adds no second OFF.
    net.run_for(Duration::from_secs(3));
    assert_eq!(net.on_off_of(1, 2), [on(2), off(2, OffReason::LinkDropped)]);
}

#[test]
fn a_link_that_drops_and_comes_back_within_the_grace_does_not_flap() {
    let mut net = joined_pair();
    net.block(1, 2);
    net.link_down(1, 2);
    net.run_for(config().link_down_grace / 2);
    net.unblock(1, 2);
    net.link_up(1, 2);
    net.run_for(Duration::from_secs(5));

    assert_eq!(net.on_off_of(1, 2), [on(2)]);
    assert_eq!(net.on_off_of(2, 1), [on(1)]);
}

#[test]
fn a_message_during_the_grace_cancels_the_off() {
    let t0 = Instant::now();
    let mut node = machine_joined_with_2(t0);
    node.handle_link_down(t0, 2);
    node.handle_message(t0 + config().link_down_grace / 2, 2, &election_message());
    node.handle_timeout(t0 + config().link_down_grace * 2);
    assert_eq!(events(&mut node), []);
    assert!(node.is_on(2));
}

#[test]
fn link_down_for_a_neighbour_already_off_reports_nothing() {
    let t0 = Instant::now();
    let mut node = machine_joined_with_2(t0);
    let after_liveness = t0 + config().liveness_timeout;
    node.handle_timeout(after_liveness);
    assert_eq!(events(&mut node), [off(2, OffReason::Silent)]);
    node.handle_link_down(after_liveness, 2);
    node.handle_timeout(after_liveness + config().link_down_grace);
    assert_eq!(events(&mut node), []);
}

// ---- restarts -----------------------------------------------------------------------

#[test]
fn a_restarted_peer_with_a_new_incarnation_is_handshaken_again() {
    let net = &mut Net::new();
    net.start(1);
    net.start(2);
    net.configure(1, 2);
    net.configure(2, 1);
    net.run_for(ms(100));
    // Node 2 restarts at once with the same config: its JOIN carries a new incarnation.
    net.crash(2);
    net.start(2);
    net.configure(2, 1);
    net.run_for(ms(500));

    assert_eq!(
        net.on_off_of(1, 2),
        [on(2), off(2, OffReason::Restarted), on(2)]
    );
    assert_eq!(net.on_off_of(2, 1), [on(1)]);
    assert!(net.node(1).is_on(2) && net.node(2).is_on(1));
}

#[test]
fn a_heartbeat_with_a_new_incarnation_starts_a_new_handshake() {
    let t0 = Instant::now();
    let mut node = machine_joined_with_2(t0);
    node.handle_message(t0 + ms(1), 2, &heartbeat(21));
    assert_eq!(events(&mut node), [off(2, OffReason::Restarted)]);
    let sent = transmits(&mut node);
    assert!(
        matches!(&sent[..], [(2, body)] if is_step(body, HandshakeStep::Join)),
        "{sent:?}"
    );
    assert!(!node.is_on(2));
    assert_eq!(node.check_addressable(2), Ok(()));

    node.handle_message(t0 + ms(2), 2, &handshake(HandshakeStep::JoinAck, 2, 21));
    assert_eq!(events(&mut node), [on(2)]);
}

#[test]
fn a_heartbeat_with_the_known_incarnation_changes_nothing() {
    let t0 = Instant::now();
    let mut node = machine_joined_with_2(t0);
    node.handle_message(t0 + ms(1), 2, &heartbeat(20));
    assert_eq!(events(&mut node), []);
    assert_eq!(transmits(&mut node), []);
    assert!(node.is_on(2));
}

// ---- addressing and timers -----------------------------------------------------------

#[test]
fn only_neighbours_are_addressable() {
    let t0 = Instant::now();
    let mut node = Topology::new(1, "127.0.0.1".into(), port_of(1), 10, config(), t0);
    node.add_neighbor(t0, 2, "127.0.0.1".into(), port_of(2));

    // Configured: addressable even before its handshake, and while OFF.
    assert_eq!(node.check_addressable(2), Ok(()));
    assert_eq!(node.check_addressable(3), Err(NotANeighbor(3)));
    assert_eq!(node.check_addressable(1), Err(NotANeighbor(1)));

    // A stranger that only sent JOIN is pending, not a neighbour; its ACK makes it one.
    node.handle_message(t0, 4, &handshake(HandshakeStep::Join, 4, 40));
    assert_eq!(node.check_addressable(4), Err(NotANeighbor(4)));
    node.handle_message(t0, 4, &handshake(HandshakeStep::Ack, 4, 40));
    assert_eq!(node.check_addressable(4), Ok(()));
    let err = node.check_addressable(3).expect_err("3 is a stranger");
    assert_eq!(err.to_string(), "node 3 is not a neighbour of this node");
}

#[test]
fn a_node_never_adds_itself_as_neighbour() {
    let t0 = Instant::now();
    let mut node = Topology::new(1, "127.0.0.1".into(), port_of(1), 10, config(), t0);
    node.add_neighbor(t0, 1, "127.0.0.1".into(), port_of(1));
    assert_eq!(node.neighbors().count(), 0);
    assert_eq!(transmits(&mut node), []);
    assert_eq!(events(&mut node), []);
}

#[test]
fn early_timeouts_do_nothing() {
    let t0 = Instant::now();
    let mut node = Topology::new(1, "127.0.0.1".into(), port_of(1), 10, config(), t0);
    node.add_neighbor(t0, 2, "127.0.0.1".into(), port_of(2));
    let _ = transmits(&mut node);
    let _ = events(&mut node);
    let deadline = node.poll_timeout().expect("JOIN retry armed");
    assert_eq!(deadline, t0 + config().join_backoff_initial);

    for early in [t0, t0 + ms(1), deadline - ms(1)] {
        node.handle_timeout(early);
        assert_eq!(transmits(&mut node), []);
        assert_eq!(events(&mut node), []);
        assert_eq!(node.poll_timeout(), Some(deadline));
    }
    node.handle_timeout(deadline);
    assert_eq!(transmits(&mut node).len(), 1);
}

#[test]
fn link_up_sends_a_join_at_once_to_a_neighbour_still_joining() {
    let t0 = Instant::now();
    let mut node = Topology::new(1, "127.0.0.1".into(), port_of(1), 10, config(), t0);
    node.add_neighbor(t0, 2, "127.0.0.1".into(), port_of(2));
    // Many retries later the backoff is long...
    let mut now = t0;
    while now < t0 + Duration::from_secs(10) {
        now = node.poll_timeout().expect("timers run");
        node.handle_timeout(now);
    }
    let _ = transmits(&mut node);
    // ...but the transport seeing node 2 come up triggers a JOIN now.
    node.handle_link_up(now, 2);
    let sent = transmits(&mut node);
    assert!(
        matches!(&sent[..], [(2, body)] if is_step(body, HandshakeStep::Join)),
        "{sent:?}"
    );
}

// ---- convergence under loss ---------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever handshake messages and heartbeats are lost in the first two seconds, once
    /// the network is reliable every configured link ends ON at both ends, and each node
    /// reports each neighbour as alternating ON, OFF, ON... (never twice the same).
    #[test]
    fn handshakes_converge_whatever_is_lost_early(
        edges in prop::collection::btree_set((1..=4u64, 1..=4u64), 1..6)
            .prop_map(|set| set.into_iter().filter(|(a, b)| a != b).collect::<Vec<_>>()),
        losses in prop::collection::vec(any::<bool>(), 64),
    ) {
        prop_assume!(!edges.is_empty());
        let net = &mut Net::new();
        for id in 1..=4 {
            net.start(id);
        }
        let lossy_until = net.now + Duration::from_secs(2);
        let mut decisions = losses.into_iter().cycle();
        net.drop_rule = Some(Box::new(move |s| s.at < lossy_until && decisions.next().unwrap_or(false)));
        for &(a, b) in &edges {
            net.configure(a, b);
        }
        net.run_for(Duration::from_secs(10));

        for &(a, b) in &edges {
            prop_assert!(net.node(a).is_on(b), "{} does not see {} ON", a, b);
            prop_assert!(net.node(b).is_on(a), "{} does not see {} ON", b, a);
            for (x, y) in [(a, b), (b, a)] {
                let history = net.on_off_of(x, y);
                prop_assert_eq!(history.first(), Some(&on(y)));
                for pair in history.windows(2) {
                    let same_kind = std::mem::discriminant(&pair[0]) == std::mem::discriminant(&pair[1]);
                    prop_assert!(!same_kind, "{} reported {} twice in a row: {:?}", x, y, history);
                }
            }
        }
    }
}
