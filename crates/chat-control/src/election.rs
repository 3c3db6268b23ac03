//! One run of Yo-Yo with pruning (Santoro, "Design and Analysis of Distributed Algorithms",
//! §3.8), over the neighbours that were ON when the run reached this node.
//!
//! A run has a setup phase and then rounds:
//!
//! * **Setup.** On adopting a run a node sends START (with its [`Candidate`]) to every ON
//!   neighbour and waits for a START back from each of them. A link takes part in the run
//!   when both ends sent START over it, so both ends agree on the link set; both know both
//!   candidates, so both orient the link the same way: from the better (smaller) candidate to
//!   the worse one.
//! * **Rounds.** YO-DOWN: sources send their candidate to their out-neighbours; the others
//!   wait for a value from every in-neighbour and forward the smallest. -UP: sinks vote YES to
//!   the in-neighbours that sent the smallest value, NO to the others; internal nodes AND the
//!   votes of all their out-neighbours into that (bug 11.1-2 of the prototype forwarded only
//!   the last vote). A NO flips the link; both ends see the vote, so both flip it. Pruning: of
//!   several in-neighbours that sent the same value only one link is kept, and a sink whose
//!   in-neighbours all sent the same value drops out, as does an internal node all of whose
//!   out-neighbours pruned their links in this round's -UP. The only node left with no link that was
//!   a source is the winner: the smallest candidate of its connected component.
//!
//! Messages for a later round are stashed and replayed when the round starts; messages for
//! earlier rounds are stale and ignored. Anything that shows the two ends of a link disagree
//! (a START from a node outside the run after setup, a message over a link that does not
//! exist, a link neighbour going OFF) is reported as [`Outcome::Restart`]: the owner starts a
//! fresh, stronger run, which every node adopts.

use std::collections::{BTreeMap, BTreeSet};

use chat_wire::{Body, Candidate, Election, ElectionKind, NodeId, RunId};

use crate::event::{LinkStatus, Outbox, Step, Subsystem};

/// How far ahead of this node's round a stashed message may be.
const MAX_ROUNDS_AHEAD: u32 = 8;

/// Which way a link points in the current round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// This node proposes to the neighbour (this node's value is smaller).
    Out,
    /// The neighbour proposes to this node.
    In,
}

/// Where the run stands at this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Exchanging STARTs.
    Setup,
    /// Yo-Yo rounds.
    Rounds,
    /// The node won.
    Won,
    /// The node has no links left and did not win.
    Lost,
}

/// What the owner must do after an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Nothing yet.
    Running,
    /// This node is the leader: build the tree.
    Won,
    /// This node is out; it waits for the winner's SHOUT.
    Lost,
    /// The ends of a link disagree: start a new run.
    Restart(NodeId),
}

/// One Yo-Yo run at one node.
#[derive(Debug)]
pub(crate) struct YoYo {
    run: RunId,
    me: Candidate,
    /// The cluster size every message carries.
    cluster_size: u32,
    phase: Phase,
    /// Neighbours this node sent START to.
    started: BTreeSet<NodeId>,
    /// Neighbours whose START arrived, with their candidates.
    heard: BTreeMap<NodeId, Candidate>,
    links: BTreeMap<NodeId, Direction>,
    round: u32,
    status: Option<LinkStatus>,
    proposals: BTreeMap<NodeId, Candidate>,
    votes: BTreeMap<NodeId, Vote>,
    /// The value this node sent down this round (sources: their own).
    sent_down: Option<Candidate>,
    /// Proposals and votes for rounds this node has not reached yet.
    stash: BTreeMap<u32, Vec<(NodeId, ElectionKind)>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Vote {
    yes: bool,
    prune: bool,
}

impl YoYo {
    /// Joins (or starts) `run`: sends START to every neighbour in `on`.
    pub(crate) fn start(
        run: RunId,
        me: Candidate,
        cluster_size: u32,
        on: impl IntoIterator<Item = NodeId>,
        out: &mut Outbox,
    ) -> (YoYo, Outcome) {
        let mut yoyo = YoYo {
            run,
            me,
            cluster_size,
            phase: Phase::Setup,
            started: BTreeSet::new(),
            heard: BTreeMap::new(),
            links: BTreeMap::new(),
            round: 0,
            status: None,
            proposals: BTreeMap::new(),
            votes: BTreeMap::new(),
            sent_down: None,
            stash: BTreeMap::new(),
        };
        for id in on {
            yoyo.send_start(id, out);
        }
        let outcome = yoyo.try_finish_setup(out);
        (yoyo, outcome)
    }

    pub(crate) fn run(&self) -> RunId {
        self.run
    }

    pub(crate) fn round(&self) -> u32 {
        self.round
    }

    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    /// The links the run uses (after setup), for tests and status.
    #[cfg(test)]
    pub(crate) fn link_count(&self) -> usize {
        self.links.len()
    }

    fn send(&self, to: NodeId, kind: ElectionKind, out: &mut Outbox) {
        out.send(
            to,
            Body::Election(Election {
                run: self.run,
                round: self.round,
                cluster_size: self.cluster_size,
                kind,
            }),
        );
    }

    fn send_start(&mut self, to: NodeId, out: &mut Outbox) {
        if self.started.insert(to) {
            self.send(to, ElectionKind::Start(self.me), out);
        }
    }

    fn trace(&self, out: &mut Outbox, step: impl FnOnce() -> Step) {
        let round = (self.phase != Phase::Setup).then_some(self.round);
        out.trace(Subsystem::Election, Some(self.run), round, step);
    }

    /// A neighbour came ON. During setup it joins the run; later it waits for the tree.
    pub(crate) fn neighbor_on(&mut self, id: NodeId, out: &mut Outbox) {
        if self.phase == Phase::Setup {
            self.send_start(id, out);
        }
    }

    /// A neighbour went OFF. During setup it is simply left out; once the links are fixed,
    /// losing one of them breaks the run.
    pub(crate) fn neighbor_off(&mut self, id: NodeId, out: &mut Outbox) -> Outcome {
        match self.phase {
            Phase::Setup => {
                self.started.remove(&id);
                self.heard.remove(&id);
                self.try_finish_setup(out)
            }
            Phase::Rounds if self.links.contains_key(&id) => Outcome::Restart(id),
            Phase::Rounds => Outcome::Running,
            Phase::Won | Phase::Lost => Outcome::Running,
        }
    }

    /// A message of this run from `from`.
    pub(crate) fn handle(&mut self, from: NodeId, msg: &Election, out: &mut Outbox) -> Outcome {
        debug_assert_eq!(msg.run, self.run);
        match msg.kind {
            ElectionKind::Start(candidate) => self.handle_start(from, candidate, out),
            kind => match self.phase {
                Phase::Setup => self.stash_early(from, msg.round, kind),
                Phase::Rounds => {
                    if msg.round < self.round {
                        Outcome::Running
                    } else if !self.links.contains_key(&from) {
                        // Links only disappear by agreement in an earlier round, so a message
                        // for this round or a later one over a missing link means the ends
                        // disagree.
                        Outcome::Restart(from)
                    } else if msg.round > self.round {
                        self.stash_early(from, msg.round, kind)
                    } else {
                        self.handle_round_message(from, kind, out)
                    }
                }
                Phase::Won | Phase::Lost => Outcome::Running,
            },
        }
    }

    /// Keeps a message for a round not reached yet. A neighbour is at most a round or two
    /// ahead, and sends one message per round, so anything far beyond that (a buggy or
    /// hostile peer) is treated as disagreement rather than stored without bound.
    fn stash_early(&mut self, from: NodeId, round: u32, kind: ElectionKind) -> Outcome {
        let stored: usize = self.stash.values().map(Vec::len).sum();
        let limit = 4 * (self.started.len() + 4);
        if round > self.round.saturating_add(MAX_ROUNDS_AHEAD) || stored >= limit {
            return Outcome::Restart(from);
        }
        self.stash.entry(round).or_default().push((from, kind));
        Outcome::Running
    }

    fn handle_start(&mut self, from: NodeId, candidate: Candidate, out: &mut Outbox) -> Outcome {
        if self.phase == Phase::Setup {
            self.heard.insert(from, candidate);
            self.send_start(from, out);
            return self.try_finish_setup(out);
        }
        if self.started.contains(&from) {
            // Our own exchange, delivered late or twice.
            Outcome::Running
        } else {
            // The sender joined the run after our links were fixed: it would wait for our
            // START forever.
            Outcome::Restart(from)
        }
    }

    fn try_finish_setup(&mut self, out: &mut Outbox) -> Outcome {
        if self.phase != Phase::Setup || !self.started.iter().all(|id| self.heard.contains_key(id))
        {
            return Outcome::Running;
        }
        self.links = self
            .heard
            .iter()
            .map(|(&id, &candidate)| {
                let direction = if self.me < candidate {
                    Direction::Out
                } else {
                    Direction::In
                };
                (id, direction)
            })
            .collect();
        self.phase = Phase::Rounds;
        self.trace(out, || Step::LinksFixed {
            links: self.links.len(),
        });
        self.begin_round(0, out)
    }

    fn count(&self, direction: Direction) -> usize {
        self.links.values().filter(|&&d| d == direction).count()
    }

    fn begin_round(&mut self, round: u32, out: &mut Outbox) -> Outcome {
        let was_source = self.status == Some(LinkStatus::Source);
        self.round = round;
        self.proposals.clear();
        self.votes.clear();
        self.sent_down = None;
        let (incoming, outgoing) = (self.count(Direction::In), self.count(Direction::Out));
        let status = match (incoming, outgoing) {
            (0, 0) => {
                // Alone from the start (a lone node), or the last source standing.
                self.stash.clear();
                return if round == 0 || was_source {
                    self.phase = Phase::Won;
                    self.trace(out, || Step::Won);
                    Outcome::Won
                } else {
                    self.phase = Phase::Lost;
                    self.trace(out, || Step::Lost);
                    Outcome::Lost
                };
            }
            (0, _) => LinkStatus::Source,
            (_, 0) => LinkStatus::Sink,
            _ => LinkStatus::Internal,
        };
        self.status = Some(status);
        self.trace(out, || Step::RoundStarted {
            status,
            incoming,
            outgoing,
        });
        if status == LinkStatus::Source {
            self.send_down(self.me, out);
        }
        // Replay what arrived early; the stash only holds rounds ahead of this one.
        self.stash = self.stash.split_off(&round);
        let early = self.stash.remove(&round).unwrap_or_default();
        for (from, kind) in early {
            if !self.links.contains_key(&from) {
                return Outcome::Restart(from);
            }
            match self.handle_round_message(from, kind, out) {
                Outcome::Running => {}
                other => return other,
            }
            if self.round != round {
                // The replay finished the round (and maybe more); the rest was re-stashed or
                // handled by the recursive call.
                return Outcome::Running;
            }
        }
        self.try_progress(out)
    }

    fn send_down(&mut self, value: Candidate, out: &mut Outbox) {
        self.sent_down = Some(value);
        let targets: Vec<NodeId> = self
            .links
            .iter()
            .filter(|(_, &d)| d == Direction::Out)
            .map(|(&id, _)| id)
            .collect();
        for &to in &targets {
            self.send(to, ElectionKind::Proposal(value), out);
        }
        self.trace(out, || Step::ProposalSent {
            candidate: value,
            to: targets.len(),
        });
    }

    fn handle_round_message(
        &mut self,
        from: NodeId,
        kind: ElectionKind,
        out: &mut Outbox,
    ) -> Outcome {
        let Some(&direction) = self.links.get(&from) else {
            return Outcome::Restart(from);
        };
        match (kind, direction) {
            (ElectionKind::Proposal(value), Direction::In) => {
                self.proposals.insert(from, value);
            }
            (ElectionKind::Vote { yes, prune }, Direction::Out) if self.sent_down.is_some() => {
                self.votes.insert(from, Vote { yes, prune });
            }
            // A proposal against the link's direction, or a vote before our proposal: the
            // ends disagree.
            _ => return Outcome::Restart(from),
        }
        self.try_progress(out)
    }

    fn try_progress(&mut self, out: &mut Outbox) -> Outcome {
        if self.phase != Phase::Rounds {
            return Outcome::Running;
        }
        let incoming = self.count(Direction::In);
        let outgoing = self.count(Direction::Out);
        if self.sent_down.is_none() {
            if self.proposals.len() < incoming {
                return Outcome::Running;
            }
            if outgoing > 0 {
                let Some(&smallest) = self.proposals.values().min() else {
                    return Outcome::Running;
                };
                self.send_down(smallest, out);
                // Votes can only follow our proposal, so none is here yet.
                return Outcome::Running;
            }
        }
        if self.votes.len() < outgoing {
            return Outcome::Running;
        }
        self.finish_round(out)
    }

    /// -UP and the end of the round: vote to every in-neighbour, apply flips and prunes on
    /// both sides, start the next round.
    fn finish_round(&mut self, out: &mut Outbox) -> Outcome {
        let all_yes = self.votes.values().all(|v| v.yes);
        let smallest = self.proposals.values().min().copied();
        // A node left without out-links once its out-neighbours' prunes apply (a sink, or an
        // internal node whose whole lower part pruned itself) is a leaf of the value's
        // spread: it prunes itself in the same -UP wave, so the last phase collapses the
        // whole remaining tree in one round instead of one layer per round.
        let is_sink = self.votes.values().all(|v| v.prune);
        let first_value = self.proposals.values().next().copied();
        let all_same = self.proposals.values().all(|v| Some(*v) == first_value);
        // Of several in-links carrying one value, the one from the smallest id is kept.
        let mut kept: BTreeSet<Candidate> = BTreeSet::new();
        let proposals = std::mem::take(&mut self.proposals);
        for (&from, &value) in &proposals {
            let yes = all_yes && Some(value) == smallest;
            let duplicate = !kept.insert(value);
            let prune = duplicate || (is_sink && all_same);
            self.send(from, ElectionKind::Vote { yes, prune }, out);
            self.trace(out, || Step::VoteSent {
                to: from,
                yes,
                prune,
            });
            self.apply(from, yes, prune, Direction::Out, out);
        }
        let votes = std::mem::take(&mut self.votes);
        for (&from, vote) in &votes {
            self.apply(from, vote.yes, vote.prune, Direction::In, out);
        }
        self.begin_round(self.round + 1, out)
    }

    /// Applies a vote to one link: prune drops it, NO points it to `flipped`.
    fn apply(
        &mut self,
        peer: NodeId,
        yes: bool,
        prune: bool,
        flipped: Direction,
        out: &mut Outbox,
    ) {
        if prune {
            self.links.remove(&peer);
            self.trace(out, || Step::Pruned { peer });
        } else if !yes {
            self.links.insert(peer, flipped);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    fn cand(node: NodeId) -> Candidate {
        Candidate {
            last_term: 0,
            data_epoch: 0,
            node,
        }
    }

    const RUN: RunId = RunId {
        lamport: 7,
        initiator: 1,
    };

    /// Runs one election over `edges` with instant, in-order delivery (a lossless network);
    /// returns each node's outcome and the number of messages.
    fn run_election(
        nodes: &[(NodeId, u64)],
        edges: &[(NodeId, NodeId)],
        order_seed: u64,
    ) -> (BTreeMap<NodeId, Outcome>, usize) {
        let neighbours = |id: NodeId| -> Vec<NodeId> {
            edges
                .iter()
                .filter_map(|&(a, b)| {
                    if a == id {
                        Some(b)
                    } else if b == id {
                        Some(a)
                    } else {
                        None
                    }
                })
                .collect()
        };
        let mut machines = BTreeMap::new();
        let mut outcomes = BTreeMap::new();
        let mut queue: VecDeque<(NodeId, NodeId, Body)> = VecDeque::new();
        let mut sent = 0;
        for &(id, epoch) in nodes {
            let mut out = Outbox::new(true);
            let me = Candidate {
                last_term: 0,
                data_epoch: epoch,
                node: id,
            };
            let (m, o) = YoYo::start(RUN, me, 1, neighbours(id), &mut out);
            machines.insert(id, m);
            outcomes.insert(id, o);
            for (to, body) in out.transmits {
                queue.push_back((id, to, body));
            }
        }
        let mut state = order_seed;
        while !queue.is_empty() {
            // A cheap deterministic shuffle of which message goes next (reordering across
            // links and within them).
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let pick = (state >> 33) as usize % queue.len();
            let (from, to, body) = queue.remove(pick).expect("in range");
            sent += 1;
            let Body::Election(e) = body else {
                unreachable!()
            };
            let mut out = Outbox::new(true);
            let m = machines.get_mut(&to).expect("known node");
            let o = m.handle(from, &e, &mut out);
            if o != Outcome::Running {
                outcomes.insert(to, o);
            }
            for (next, body) in out.transmits {
                queue.push_back((to, next, body));
            }
        }
        (outcomes, sent)
    }

    fn winners(outcomes: &BTreeMap<NodeId, Outcome>) -> Vec<NodeId> {
        outcomes
            .iter()
            .filter(|(_, o)| **o == Outcome::Won)
            .map(|(&id, _)| id)
            .collect()
    }

    #[test]
    fn lone_node_wins_at_once() {
        let (outcomes, sent) = run_election(&[(5, 0)], &[], 1);
        assert_eq!(winners(&outcomes), vec![5]);
        assert_eq!(sent, 0);
    }

    #[test]
    fn smallest_id_wins_on_a_line_whatever_the_order() {
        let nodes: Vec<_> = [4, 2, 9, 1, 7].iter().map(|&id| (id, 0)).collect();
        let edges = [(4, 2), (2, 9), (9, 1), (1, 7)];
        for seed in 0..50 {
            let (outcomes, _) = run_election(&nodes, &edges, seed);
            assert_eq!(winners(&outcomes), vec![1], "seed {seed}");
            assert!(
                outcomes
                    .iter()
                    .all(|(&id, o)| id == 1 || *o == Outcome::Lost),
                "seed {seed}: {outcomes:?}"
            );
        }
    }

    #[test]
    fn highest_data_epoch_wins_before_smallest_id() {
        let nodes = [(1, 3), (2, 10), (3, 10), (4, 0)];
        let edges = [(1, 2), (2, 3), (3, 4), (4, 1), (1, 3)];
        for seed in 0..50 {
            let (outcomes, _) = run_election(&nodes, &edges, seed);
            assert_eq!(winners(&outcomes), vec![2], "seed {seed}");
        }
    }

    #[test]
    fn exactly_one_winner_on_complete_and_grid_graphs() {
        let nodes: Vec<_> = (1..=9).map(|id| (id, 0)).collect();
        let mut complete = Vec::new();
        for a in 1..=9 {
            for b in a + 1..=9 {
                complete.push((a, b));
            }
        }
        let mut grid = Vec::new();
        for r in 0..3u64 {
            for c in 0..3u64 {
                let id = r * 3 + c + 1;
                if c < 2 {
                    grid.push((id, id + 1));
                }
                if r < 2 {
                    grid.push((id, id + 3));
                }
            }
        }
        // Scramble ids so that the minimum is not at a corner.
        let remap = |id: NodeId| (id * 5) % 9 + 1;
        let grid: Vec<_> = grid.iter().map(|&(a, b)| (remap(a), remap(b))).collect();
        for edges in [&complete, &grid] {
            for seed in 0..30 {
                let (outcomes, _) = run_election(&nodes, edges, seed);
                assert_eq!(winners(&outcomes), vec![1], "seed {seed}");
                assert_eq!(outcomes.len(), 9);
                assert!(outcomes
                    .values()
                    .all(|o| matches!(o, Outcome::Won | Outcome::Lost)));
            }
        }
    }

    #[test]
    fn a_start_after_setup_asks_for_a_restart() {
        let mut out = Outbox::new(false);
        let (mut m, outcome) = YoYo::start(RUN, cand(2), 1, [3], &mut out);
        assert_eq!(outcome, Outcome::Running);
        let start = |c| Election {
            run: RUN,
            round: 0,
            cluster_size: 1,
            kind: ElectionKind::Start(c),
        };
        assert_eq!(m.handle(3, &start(cand(3)), &mut out), Outcome::Running);
        assert_eq!(m.phase(), Phase::Rounds);
        assert_eq!(m.link_count(), 1);
        // Node 4 adopted the run late and announces itself: our links are fixed.
        assert_eq!(m.handle(4, &start(cand(4)), &mut out), Outcome::Restart(4));
        // A duplicate START from a participant is harmless.
        assert_eq!(m.handle(3, &start(cand(3)), &mut out), Outcome::Running);
    }

    #[test]
    fn losing_a_link_neighbour_mid_run_asks_for_a_restart_but_not_during_setup() {
        let mut out = Outbox::new(false);
        let (mut m, _) = YoYo::start(RUN, cand(2), 1, [3, 4], &mut out);
        // 4 goes OFF before answering: the run continues without it.
        assert_eq!(m.neighbor_off(4, &mut out), Outcome::Running);
        let start3 = Election {
            run: RUN,
            round: 0,
            cluster_size: 1,
            kind: ElectionKind::Start(cand(3)),
        };
        assert_eq!(m.handle(3, &start3, &mut out), Outcome::Running);
        assert_eq!(m.phase(), Phase::Rounds);
        assert_eq!(m.neighbor_off(3, &mut out), Outcome::Restart(3));
    }

    #[test]
    fn early_proposals_are_stashed_and_replayed() {
        let mut out = Outbox::new(false);
        // Node 5 is a sink under 2: 2's round-0 proposal arrives before 2's START.
        let (mut m, _) = YoYo::start(RUN, cand(5), 1, [2], &mut out);
        let proposal = Election {
            run: RUN,
            round: 0,
            cluster_size: 1,
            kind: ElectionKind::Proposal(cand(2)),
        };
        assert_eq!(m.handle(2, &proposal, &mut out), Outcome::Running);
        let start = Election {
            run: RUN,
            round: 0,
            cluster_size: 1,
            kind: ElectionKind::Start(cand(2)),
        };
        out.transmits.clear();
        // The START fixes the link, round 0 replays the proposal: a lone in-link sink votes
        // YES and prunes itself out.
        assert_eq!(m.handle(2, &start, &mut out), Outcome::Lost);
        let votes: Vec<_> = out.transmits.iter().collect();
        assert_eq!(
            votes,
            vec![&(
                2,
                Body::Election(Election {
                    run: RUN,
                    round: 0,
                    cluster_size: 1,
                    kind: ElectionKind::Vote {
                        yes: true,
                        prune: true
                    }
                })
            )]
        );
    }

    #[test]
    fn a_flood_of_far_future_rounds_is_refused_not_stored() {
        let mut out = Outbox::new(false);
        let (mut m, _) = YoYo::start(RUN, cand(5), 1, [2], &mut out);
        let far = Election {
            run: RUN,
            round: 1_000,
            cluster_size: 1,
            kind: ElectionKind::Proposal(cand(2)),
        };
        assert_eq!(m.handle(2, &far, &mut out), Outcome::Restart(2));
        let near = Election { round: 1, ..far };
        let mut outcome = Outcome::Running;
        for _ in 0..100 {
            outcome = m.handle(2, &near, &mut out);
            if outcome != Outcome::Running {
                break;
            }
        }
        assert_eq!(outcome, Outcome::Restart(2));
    }

    #[test]
    fn messages_grow_like_m_log_n_on_random_graphs() {
        // Not a bound check (that is the bench's job), a sanity check that the count is in
        // the right order of magnitude: each round costs at most 2 messages per link.
        let n = 64u64;
        let nodes: Vec<_> = (1..=n).map(|id| (id, 0)).collect();
        let mut edges = Vec::new();
        let mut state = 42u64;
        for id in 2..=n {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
            edges.push((id, 1 + (state >> 33) % (id - 1)));
        }
        for _ in 0..n {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
            let a = 1 + (state >> 33) % n;
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
            let b = 1 + (state >> 33) % n;
            if a != b && !edges.contains(&(a, b)) && !edges.contains(&(b, a)) {
                edges.push((a, b));
            }
        }
        let (outcomes, sent) = run_election(&nodes, &edges, 3);
        assert_eq!(winners(&outcomes), vec![1]);
        let m = edges.len() as f64;
        let bound = 2.0 * m + 2.0 * m * ((n as f64).log2() + 2.0);
        assert!((sent as f64) < bound, "{sent} messages, bound {bound}");
    }
}
