//! SHOUT, the tree epoch and healing.
//!
//! * **SHOUT.** The winner is the root; it sends Q (a `Shout`) to every ON neighbour. A node
//!   not yet in the tree takes the first sender as parent, answers A(yes), and shouts on; a
//!   node already in it answers A(no). A node is settled when every live neighbour it shouted
//!   to answered (neighbours going OFF count as answered: bug 11.1-24 counted OFF ones).
//! * **Epoch.** The root ticks the tree epoch every `epoch_tick` and sends it to its
//!   children, who pass it down. A node's epoch never exceeds its parent's, and only grows.
//! * **Healing.** A node whose parent goes OFF dissolves its subtree (`Detach` to its
//!   children, who do the same) and every orphan asks its neighbours for adoption
//!   (`AdoptRequest`, carrying its epoch). A member of the same tree offers (`AdoptOffer`)
//!   only once its own epoch is newer than the orphan's; the orphan takes the first offer.
//!   No cycle can form: every node below an orphan has an epoch no newer than the orphan's,
//!   so none of them can offer, and once dissolved an orphan has no subtree at all. The root
//!   offers too (the prototype's never did, bug 11.1-4). An orphan that gets no offer within
//!   `heal_timeout` starts an election: the root is out of reach. When the lost parent is
//!   the root and its host closed its connection, the orphan elects at once: nobody can
//!   adopt it.
//! * **Joining.** A node attaches only to a tree announced with its own cluster size, whose
//!   term it may join (see `plane`), and whose leader's key is not beaten by its own;
//!   otherwise it refuses (size) or starts a stronger run (term, key). A node never joins a
//!   tree announced with itself as leader: only the root leads, so it is a tree this node
//!   led before restarting without memory, whose root is gone; it starts a stronger run.
//! * **Restarts without a disk.** Neighbours may still name such a node's previous life as
//!   their parent until they notice the restart (within the liveness timeout), so a SHOUT
//!   from below its old subtree would close a cycle. A node without a term therefore joins a
//!   tree only `restart_hold` after it started, answering no until then and joining the
//!   newest tree it was told at the end; it starts no election for want of a leader before
//!   the hold and a join wait are over. This holds even for the tree of a run it is electing
//!   in: a run adopted from a neighbour's late START may be one its previous life took part
//!   in, with neighbours still below that life (seed 150991). It may still win such a run
//!   and become the root, which has no parent to close a cycle through.

use chat_wire::{LeaderInfo, NodeId, RunId, Tree, TreeId, TreeKind};

use crate::event::{StartReason, Step, Subsystem};
use crate::plane::{AdoptionRequest, ControlPlane, Member, Membership, Orphan, Timer};
use crate::quorum::Probes;
use crate::routes::{RouteTable, Upstream};

/// What a leader announcement (SHOUT or adoption offer) says.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Announcement {
    info: LeaderInfo,
    run: RunId,
    leader: NodeId,
    hops: u32,
    data_port: u16,
    epoch: u64,
    /// A SHOUT expects an answer; an offer does not.
    is_shout: bool,
}

impl Announcement {
    fn new(info: LeaderInfo, epoch: u64, is_shout: bool) -> Self {
        Announcement {
            info,
            run: info.run,
            leader: info.leader,
            hops: info.hops_from_root,
            data_port: info.data_port,
            epoch,
            is_shout,
        }
    }
}

impl ControlPlane {
    fn tree_trace(&mut self, step: impl FnOnce() -> Step) {
        let run = self.run();
        self.out.trace(Subsystem::Tree, run, None, step);
    }

    /// Leaves whatever tree this node is in (a new run begins).
    pub(crate) fn leave_tree(&mut self) {
        self.membership = Membership::Detached;
        self.requests.clear();
        self.timers.stop(Timer::Heal);
        self.timers.stop(Timer::EpochTick);
        self.timers.stop(Timer::AckFlush);
        self.timers.stop(Timer::Lease);
        self.forget_pending();
    }

    /// This node won `run`: it is the root.
    pub(crate) fn become_root(&mut self, run: RunId) {
        self.timers.stop(Timer::Election);
        self.enter_term(TreeId {
            run,
            leader: self.me,
        });
        self.membership = Membership::Member(Box::new(Member {
            run,
            leader: self.me,
            leader_key: self.candidate(),
            probes: Probes::default(),
            parent: None,
            hops: 0,
            epoch: 1,
            children: Default::default(),
            awaiting: Default::default(),
            routes: RouteTable::default(),
        }));
        // Epoch 1 is the first probe: a lone node of a one-node cluster is writable at once.
        self.record_probe_sent();
        self.timers
            .set(Timer::EpochTick, self.now + self.config.epoch_tick);
        self.shout_to_all(None);
    }

    /// SHOUTs to every ON neighbour but `except`, and waits for their answers.
    fn shout_to_all(&mut self, except: Option<NodeId>) {
        let targets: Vec<NodeId> = self
            .on
            .iter()
            .copied()
            .filter(|&id| Some(id) != except)
            .collect();
        for &id in &targets {
            self.offer_leader(id, true);
        }
        if !targets.is_empty() {
            self.tree_trace(|| Step::ShoutSent { to: targets.len() });
        }
    }

    /// Tells `to` who leads this node's tree: a SHOUT (answer awaited) or an offer.
    pub(crate) fn offer_leader(&mut self, to: NodeId, is_shout: bool) {
        let data_port = self.config.data_port;
        let cluster_size = self.config.wire_size();
        let Membership::Member(m) = &mut self.membership else {
            return;
        };
        let info = LeaderInfo {
            run: m.run,
            leader: m.leader,
            hops_from_root: m.hops,
            data_port,
            cluster_size,
            leader_key: m.leader_key,
        };
        let epoch = m.epoch;
        let kind = if is_shout {
            if m.parent.map(|p| p.next_hop) != Some(to) {
                m.awaiting.insert(to);
            }
            TreeKind::Shout(info)
        } else {
            TreeKind::AdoptOffer(info)
        };
        self.send_tree(to, epoch, kind);
    }

    pub(crate) fn tree_neighbor_on(&mut self, id: NodeId) {
        match &self.membership {
            // A SHOUT can arrive before its sender is seen ON: this node may have taken the
            // newcomer as its parent already. A SHOUT to the parent would make it drop this
            // node from its children (a child never shouts to its parent), leaving a parent
            // that does not list its child for good (seed 206109).
            Membership::Member(m) if m.parent.map(|p| p.next_hop) == Some(id) => {}
            // Stability: tell the newcomer the leader; it attaches without an election.
            Membership::Member(_) => self.offer_leader(id, true),
            Membership::Orphan(o) => {
                let (run, leader, epoch) = (o.run, o.leader, o.epoch);
                self.send_tree(id, epoch, TreeKind::AdoptRequest { run, leader });
            }
            Membership::Detached => {}
        }
    }

    pub(crate) fn tree_neighbor_off(&mut self, id: NodeId) {
        let Membership::Member(m) = &mut self.membership else {
            return;
        };
        m.awaiting.remove(&id);
        if m.children.remove(&id) {
            m.routes.forget(id);
            m.probes.forget(id);
        }
        if m.parent.map(|p| p.next_hop) == Some(id) {
            let root_gone = m.leader == id && self.closed.contains(&id);
            self.become_orphan(id, true);
            if root_gone {
                // The root's host closed its connection: no node can adopt this orphan
                // (none is connected to that root any more), so waiting is pointless.
                self.start_election(StartReason::RootGone);
            }
        }
    }

    pub(crate) fn tree_resync(&mut self, peer: NodeId) {
        let Membership::Member(m) = &mut self.membership else {
            return;
        };
        if m.parent.map(|p| p.next_hop) == Some(peer) {
            // Whatever we reported may be lost: report again.
            m.routes.reported = None;
        }
        if m.awaiting.contains(&peer) {
            self.offer_leader(peer, true);
        }
    }

    pub(crate) fn handle_tree(&mut self, from: NodeId, t: &Tree) {
        let epoch = t.tree_epoch;
        match &t.kind {
            &TreeKind::Shout(info) => {
                self.on_announcement(from, Announcement::new(info, epoch, true))
            }
            &TreeKind::AdoptOffer(info) => {
                self.on_announcement(from, Announcement::new(info, epoch, false))
            }
            &TreeKind::Answer { run, accepted } => self.on_answer(from, run, accepted),
            &TreeKind::EpochTick {
                leader,
                data_port,
                run,
                leader_key,
                root_gone,
            } => {
                self.learn_root_gone(root_gone);
                self.on_epoch_tick(from, TreeId { run, leader }, leader_key, data_port, epoch)
            }
            &TreeKind::ProbeAck {
                run,
                count,
                root_gone,
            } => self.on_probe_ack(from, epoch, run, count, root_gone),
            &TreeKind::AdoptRequest { run, leader } => {
                self.on_adopt_request(from, AdoptionRequest { run, leader, epoch })
            }
            &TreeKind::Detach { run } => self.on_detach(from, run),
            TreeKind::Routes { input_nodes } => self.on_routes(from, t.seq, input_nodes),
            TreeKind::Ack { .. } => {}
        }
    }

    /// Whether this node must not attach to the announced tree as it is; if so it has
    /// already acted (refused, or started a stronger run).
    fn refuse_to_join(&mut self, from: NodeId, a: &Announcement) -> bool {
        if a.info.cluster_size != self.config.wire_size() {
            self.stats.size_mismatches += 1;
            let size = a.info.cluster_size;
            self.tree_trace(|| Step::SizeMismatch { from, size });
            if a.is_shout {
                self.answer(from, a.run, false);
            }
            return true;
        }
        if a.leader == self.me {
            // A tree this node leads but is not the root of: it led it before a restart
            // without memory, and neighbours that have not noticed still announce it.
            // Attaching would make this node an ancestor of itself (seed 130392: a cycle
            // through the old root). That tree's root is gone: a stronger run replaces it.
            self.start_election_above(StartReason::OwnTreeGone(from), a.run.lamport);
            return true;
        }
        if !self.may_join_term(a.run, Some(a.leader)) {
            // Its term is not above one this node was in: a stronger run replaces it.
            self.start_election_above(StartReason::KeyAhead(from), a.run.lamport);
            return true;
        }
        if self.candidate().key_beats(&a.info.leader_key) {
            // This node holds data the leader lacks: it must not serve under it. An election
            // among everyone puts the best key at the root (decisions.md: merge election).
            self.start_election_above(StartReason::KeyAhead(from), a.run.lamport);
            return true;
        }
        false
    }

    fn answer(&mut self, to: NodeId, run: RunId, accepted: bool) {
        let epoch = match &self.membership {
            Membership::Member(m) => m.epoch,
            _ => 0,
        };
        self.send_tree(to, epoch, TreeKind::Answer { run, accepted });
    }

    fn on_announcement(&mut self, from: NodeId, a: Announcement) {
        match &self.membership {
            Membership::Member(m) => {
                if a.run == m.run && a.leader != m.leader {
                    // One run id, two trees: a node that restarted without memory reused
                    // an old run's id (its clock started again at 0) and won alone. The run
                    // id cannot tell the trees apart, so they would never merge (seed 69851):
                    // a run stronger than both settles it.
                    self.start_election(StartReason::Merge(from));
                } else if a.run == m.run {
                    if let (Membership::Member(m), true) = (&mut self.membership, a.is_shout) {
                        // A child never shouts to its parent: the sender re-attached
                        // elsewhere (it restarted, or healed) and is no child of ours. (An
                        // offer from a child is fine: it answers a request we made earlier.)
                        if m.children.remove(&from) {
                            m.routes.forget(from);
                            m.probes.forget(from);
                        }
                        // It is in our tree under another parent: that answers our SHOUT to
                        // it even if its A was lost.
                        if m.parent.map(|p| p.next_hop) != Some(from) {
                            m.awaiting.remove(&from);
                        }
                    }
                    let Membership::Member(m) = &self.membership else {
                        return;
                    };
                    if a.is_shout {
                        let is_parent = m.parent.map(|p| p.next_hop) == Some(from);
                        if is_parent {
                            // Our parent shouts again (it saw us come back): re-report.
                            if let Membership::Member(m) = &mut self.membership {
                                m.routes.reported = None;
                            }
                        }
                        self.answer(from, a.run, is_parent);
                    }
                } else if a.run < m.run {
                    // The sender is behind: tell it about our tree.
                    if a.is_shout {
                        self.answer(from, a.run, false);
                        self.offer_leader(from, true);
                    }
                } else if a.info.cluster_size != self.config.wire_size() {
                    self.refuse_to_join(from, &a);
                } else {
                    // Another, newer tree is reachable: the components merged.
                    self.start_election_above(StartReason::Merge(from), a.run.lamport);
                }
            }
            Membership::Orphan(o) => {
                let same_tree = a.run == o.run && a.leader == o.leader;
                if (same_tree && a.epoch > o.epoch) || a.run > o.run {
                    if !self.refuse_to_join(from, &a) {
                        self.attach(from, a, true);
                    }
                } else if a.run == o.run && a.leader != o.leader {
                    // Another tree under the same run id (see the member case above).
                    self.start_election(StartReason::Merge(from));
                } else if a.is_shout {
                    self.answer(from, a.run, false);
                }
            }
            Membership::Detached => {
                let electing = self.election.as_ref().map(|y| y.run());
                if electing.is_none_or(|run| a.run >= run) {
                    if self.refuse_to_join(from, &a) {
                        // It refused or started a stronger run.
                    } else if self.now < self.fresh_until {
                        // Even a run this node is electing in: it may have adopted a run its
                        // previous life took part in, from a straggler's START (seed 150991).
                        self.hold(from, a);
                    } else {
                        self.attach(from, a, false);
                    }
                } else {
                    if self.in_setup() {
                        if let Some(yoyo) = &mut self.election {
                            yoyo.neighbor_on(from, &mut self.out);
                        }
                    }
                    if a.is_shout {
                        self.answer(from, a.run, false);
                    }
                }
            }
        }
    }

    /// A node without a term was told of a tree during its restart hold: it answers no for
    /// now and joins at the end of its hold (see `ControlConfig::restart_hold`).
    fn hold(&mut self, from: NodeId, a: Announcement) {
        if a.is_shout {
            self.answer(from, a.run, false);
        }
        let newer = self
            .held
            .is_none_or(|(_, h)| (a.run, a.epoch) >= (h.run, h.epoch));
        if newer {
            self.held = Some((from, a));
        }
        self.timers.set(Timer::Hold, self.fresh_until);
    }

    /// The hold is over: join the tree last told, if its teller is still there.
    pub(crate) fn end_hold(&mut self) {
        let Some((from, a)) = self.held.take() else {
            return;
        };
        if !matches!(self.membership, Membership::Detached) || !self.on.contains(&from) {
            return;
        }
        let electing = self.election.as_ref().map(|y| y.run());
        if electing.is_none_or(|run| a.run >= run) && !self.refuse_to_join(from, &a) {
            // If the teller left that tree meanwhile, our answer makes it detach us and we
            // heal as any orphan does.
            self.attach(from, a, false);
        }
    }

    /// Takes `from` as parent in the tree `a` announces.
    fn attach(&mut self, from: NodeId, a: Announcement, healed: bool) {
        self.election = None;
        self.timers.stop(Timer::Election);
        self.timers.stop(Timer::Heal);
        self.timers.stop(Timer::EpochTick);
        self.timers.stop(Timer::Hold);
        self.held = None;
        if !healed {
            // Requests from another tree are meaningless in this one.
            self.requests
                .retain(|_, r| r.run == a.run && r.leader == a.leader);
        }
        // Whatever is still being resent describes the place this node just left (an
        // orphan's adoption requests and detaches, old SHOUTs and answers). Resent after the
        // answer below, one would undo it: the new parent dropped its child on a late
        // adoption request (seed 120177). Every ON neighbour hears the new place now, the
        // parent from the answer and the others from the SHOUT, so nothing is lost.
        self.forget_pending();
        self.enter_term(TreeId {
            run: a.run,
            leader: a.leader,
        });
        self.membership = Membership::Member(Box::new(Member {
            run: a.run,
            leader: a.leader,
            leader_key: a.info.leader_key,
            probes: Probes::default(),
            parent: Some(Upstream {
                next_hop: from,
                data_port: a.data_port,
            }),
            hops: a.hops.saturating_add(1),
            epoch: a.epoch,
            children: Default::default(),
            awaiting: Default::default(),
            routes: RouteTable::default(),
        }));
        self.answer(from, a.run, true);
        let hops = a.hops.saturating_add(1);
        self.out.trace(Subsystem::Tree, Some(a.run), None, || {
            if healed {
                Step::Healed { parent: from }
            } else {
                Step::ParentChosen {
                    parent: from,
                    leader: a.leader,
                    hops,
                }
            }
        });
        self.shout_to_all(Some(from));
        self.serve_requests();
    }

    fn on_answer(&mut self, from: NodeId, run: RunId, accepted: bool) {
        let Membership::Member(m) = &mut self.membership else {
            if accepted {
                // It took us as parent, but we are in no tree: let it go.
                self.send_tree(from, 0, TreeKind::Detach { run });
            }
            return;
        };
        if run != m.run {
            if accepted {
                let epoch = m.epoch;
                self.send_tree(from, epoch, TreeKind::Detach { run });
            }
            return;
        }
        m.awaiting.remove(&from);
        let is_parent = m.parent.map(|p| p.next_hop) == Some(from);
        if accepted && !is_parent {
            m.children.insert(from);
        } else if m.children.remove(&from) {
            m.routes.forget(from);
            m.probes.forget(from);
        }
        let settled = m.awaiting.is_empty();
        let children = m.children.len();
        self.tree_trace(|| Step::AnswerReceived { from, accepted });
        if settled {
            self.tree_trace(|| Step::TreeSettled { children });
        }
    }

    fn on_epoch_tick(
        &mut self,
        from: NodeId,
        tree: TreeId,
        leader_key: chat_wire::Candidate,
        data_port: u16,
        epoch: u64,
    ) {
        let Membership::Member(m) = &mut self.membership else {
            return;
        };
        let Some(parent) = &mut m.parent else {
            return;
        };
        if parent.next_hop != from || m.leader != tree.leader || m.run != tree.run {
            self.stats.ignored += 1;
            return;
        }
        parent.data_port = data_port;
        m.leader_key = leader_key;
        if epoch <= m.epoch && m.probes_answered(epoch) {
            return;
        }
        if epoch > m.epoch {
            m.epoch = epoch;
        }
        self.forward_epoch();
        self.answer_probe(epoch);
        self.serve_requests();
    }

    /// Root only: the epoch advances and goes down the tree.
    pub(crate) fn tick_epoch(&mut self) {
        let Membership::Member(m) = &mut self.membership else {
            return;
        };
        if m.parent.is_some() {
            return;
        }
        m.epoch += 1;
        let epoch = m.epoch;
        self.timers
            .set(Timer::EpochTick, self.now + self.config.epoch_tick);
        self.record_probe_sent();
        self.tree_trace(|| Step::EpochTick { epoch });
        self.forward_epoch();
        self.serve_requests();
    }

    fn forward_epoch(&mut self) {
        let data_port = self.config.data_port;
        let root_gone = self.root_gone;
        let Membership::Member(m) = &self.membership else {
            return;
        };
        let (epoch, leader, run, leader_key) = (m.epoch, m.leader, m.run, m.leader_key);
        let children: Vec<NodeId> = m.children.iter().copied().collect();
        for child in children {
            self.send_tree(
                child,
                epoch,
                TreeKind::EpochTick {
                    leader,
                    data_port,
                    run,
                    leader_key,
                    root_gone,
                },
            );
        }
    }

    fn on_adopt_request(&mut self, from: NodeId, request: AdoptionRequest) {
        match &mut self.membership {
            Membership::Member(m) if request.run == m.run && request.leader == m.leader => {
                if m.parent.map(|p| p.next_hop) == Some(from) {
                    // Our parent is an orphan (its Detach may still be on the way): so are we.
                    self.become_orphan(from, false);
                    self.requests.insert(from, request);
                    return;
                }
                if m.children.remove(&from) {
                    m.routes.forget(from);
                    m.probes.forget(from);
                }
                self.requests.insert(from, request);
                self.serve_requests();
            }
            Membership::Member(m) if request.run < m.run => {
                // The orphan belongs to an older tree: ours is the one to join.
                self.offer_leader(from, true);
            }
            Membership::Orphan(o) if request.run == o.run && request.leader == o.leader => {
                self.requests.insert(from, request);
            }
            _ => {}
        }
    }

    /// Offers adoption to every waiting orphan this node's epoch is newer than.
    fn serve_requests(&mut self) {
        let Membership::Member(m) = &self.membership else {
            return;
        };
        let (run, leader, epoch) = (m.run, m.leader, m.epoch);
        let parent = m.parent.map(|p| p.next_hop);
        // The parent's own old request is moot: it is in the tree again, above us.
        if let Some(parent) = parent {
            self.requests.remove(&parent);
        }
        let ready: Vec<NodeId> = self
            .requests
            .iter()
            .filter(|(id, r)| {
                r.run == run && r.leader == leader && r.epoch < epoch && self.on.contains(id)
            })
            .map(|(&id, _)| id)
            .collect();
        for id in ready {
            self.requests.remove(&id);
            self.offer_leader(id, false);
        }
    }

    fn on_detach(&mut self, from: NodeId, run: RunId) {
        if let Membership::Member(m) = &self.membership {
            if m.run == run && m.parent.map(|p| p.next_hop) == Some(from) {
                self.become_orphan(from, false);
            }
        }
    }

    /// Lost the way to the root through `parent`: dissolve the subtree and seek adoption.
    /// `lost_parent` is true when this node saw its parent go (it then elects if nobody
    /// adopts it soon); false when the loss came from above as a `Detach`.
    fn become_orphan(&mut self, parent: NodeId, lost_parent: bool) {
        let Membership::Member(m) = std::mem::replace(&mut self.membership, Membership::Detached)
        else {
            return;
        };
        let (run, leader, epoch) = (m.run, m.leader, m.epoch);
        for &child in &m.children {
            self.send_tree(child, epoch, TreeKind::Detach { run });
        }
        self.membership = Membership::Orphan(Orphan { run, leader, epoch });
        self.timers.stop(Timer::EpochTick);
        let wait = if lost_parent {
            self.config.heal_timeout
        } else {
            self.config.election_timeout
        };
        self.timers.set(Timer::Heal, self.now + wait);
        self.out
            .trace(Subsystem::Tree, Some(run), None, || Step::Orphaned {
                parent,
            });
        // The old parent is asked too when it is still ON: it is an orphan as well, and
        // once adopted it serves the request.
        let asked: Vec<NodeId> = self.on.iter().copied().collect();
        for id in asked {
            self.send_tree(id, epoch, TreeKind::AdoptRequest { run, leader });
        }
    }

    fn on_routes(&mut self, from: NodeId, seq: u64, inputs: &[NodeId]) {
        if let Membership::Member(m) = &mut self.membership {
            m.routes.report(from, seq, inputs.iter().copied());
        }
    }
}
