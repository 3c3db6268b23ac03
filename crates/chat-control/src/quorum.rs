//! A writer only with a majority: probes, answers, the writer lease and members' promises.
//!
//! * **Probes.** Every epoch tick of the root is a probe (numbered by the tree epoch). Each
//!   member forwards it to its children and answers its parent with a [`TreeKind::ProbeAck`]
//!   counting the nodes of its subtree that answered that same probe (itself included when
//!   it may). It sends that answer once all its children answered, or after half an epoch
//!   tick, and again if a late child answer raises the count. One answer per node per tick.
//! * **The lease.** The root records when it sent each probe. It is writable while, for some
//!   probe sent at `s` with `s + writer_lease > now`, more than `cluster_size / 2` nodes (the
//!   root included) answered. The lease counts from the *sending*, so answers to probes sent
//!   before the root froze renew nothing after it resumes.
//! * **Promises.** A member that counts itself in an answer promises the root's tree not to
//!   count itself for another tree until `writer_lease` after it answered, on its own clock
//!   (which is after the root's lease for that probe ran out). Two roots can therefore never
//!   both hold a majority's answers inside their leases. The promise is released early only
//!   when the promised root's process is known gone: a neighbour of that root saw its host
//!   close the connection (`handle_link_down`). That news (`root_gone`) travels up the new
//!   tree with the answers and down with the probes, so a killed writer is replaced without
//!   waiting for the lease; a frozen one (silence) never triggers it.

use std::collections::BTreeMap;
use std::time::Instant;

use chat_wire::{NodeId, TreeId, TreeKind};

use crate::event::{NodeEvent, Step, Subsystem};
use crate::plane::{ControlPlane, Member, Membership, Quorum, Timer};

/// A member's promise to a tree's root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Promise {
    pub(crate) tree: TreeId,
    pub(crate) until: Instant,
}

/// Probe bookkeeping of one tree member.
#[derive(Debug, Clone, Default)]
pub(crate) struct Probes {
    /// Root: when each recent probe was sent.
    sent: BTreeMap<u64, Instant>,
    /// Root and members: each child's latest answer: (probe, count).
    child_acks: BTreeMap<NodeId, (u64, u32)>,
    /// Member: the probe being answered and whether this node counts itself.
    answering: Option<(u64, u32)>,
    /// Member: the answer for `answering` went up (later raises are sent at once).
    flushed: bool,
    /// Member: the count last sent up for `answering`.
    sent_count: u32,
}

impl Probes {
    /// Forgets a child that left.
    pub(crate) fn forget(&mut self, child: NodeId) {
        self.child_acks.remove(&child);
    }

    /// Nodes that answered probe `epoch` in `children`' subtrees.
    fn children_count(&self, epoch: u64, children: &std::collections::BTreeSet<NodeId>) -> u32 {
        self.child_acks
            .iter()
            .filter(|(child, (e, _))| *e == epoch && children.contains(child))
            .map(|(_, (_, count))| *count)
            .sum()
    }
}

impl Member {
    /// Whether this member already answers probe `epoch` (or a later one).
    pub(crate) fn probes_answered(&self, epoch: u64) -> bool {
        self.probes.answering.is_some_and(|(e, _)| e >= epoch)
    }
}

impl ControlPlane {
    fn member_tree(m: &Member) -> TreeId {
        TreeId {
            run: m.run,
            leader: m.leader,
        }
    }

    /// Whether a promise to another tree forbids this node to count itself for `tree`.
    fn promised_elsewhere(&self, tree: TreeId) -> bool {
        self.promise
            .is_some_and(|p| p.tree != tree && p.until > self.now && self.root_gone != Some(p.tree))
    }

    /// Counts this node in `tree`'s probe if it may, renewing its promise.
    fn answer_self(&mut self, tree: TreeId) -> u32 {
        if self.promised_elsewhere(tree) {
            return 0;
        }
        self.promise = Some(crate::quorum::Promise {
            tree,
            until: self.now + self.config.writer_lease,
        });
        1
    }

    /// Adopts news of a gone root if it is newer than what this node knew.
    pub(crate) fn learn_root_gone(&mut self, gone: Option<chat_wire::TreeId>) {
        if let Some(gone) = gone {
            if self.root_gone.is_none_or(|known| gone.run > known.run) {
                self.root_gone = Some(gone);
            }
        }
    }

    /// `peer`'s process is gone: a tree it roots is gone with it.
    pub(crate) fn peer_process_gone(&mut self, peer: NodeId) {
        if let Some(p) = self.promise {
            if p.tree.leader == peer {
                self.learn_root_gone(Some(p.tree));
            }
        }
        let tree = match &self.membership {
            Membership::Member(m) if m.leader == peer => Some(Self::member_tree(m)),
            Membership::Orphan(o) if o.leader == peer => Some(TreeId {
                run: o.run,
                leader: o.leader,
            }),
            _ => None,
        };
        self.learn_root_gone(tree);
    }

    /// Root: a new probe goes out with this epoch (called when the epoch ticks).
    pub(crate) fn record_probe_sent(&mut self) {
        let now = self.now;
        let lease = self.config.writer_lease;
        let Membership::Member(m) = &mut self.membership else {
            return;
        };
        m.probes.sent.insert(m.epoch, now);
        // Probes whose lease ran out can never count again.
        m.probes.sent.retain(|_, &mut at| at + lease > now);
    }

    /// A child's answer to probe `epoch`.
    pub(crate) fn on_probe_ack(
        &mut self,
        from: NodeId,
        epoch: u64,
        run: chat_wire::RunId,
        count: u32,
        gone: Option<TreeId>,
    ) {
        self.learn_root_gone(gone);
        let Membership::Member(m) = &mut self.membership else {
            return;
        };
        if run != m.run || !m.children.contains(&from) {
            self.stats.ignored += 1;
            return;
        }
        let known = m.probes.child_acks.get(&from).copied();
        if known.is_some_and(|(e, c)| (e, c) >= (epoch, count)) {
            return;
        }
        m.probes.child_acks.insert(from, (epoch, count));
        if m.parent.is_some() && m.probes.answering.is_some_and(|(e, _)| e == epoch) {
            self.try_flush_probe_ack(false);
        }
        // At the root, `refresh` recomputes the quorum.
    }

    /// Member: the parent's probe `epoch` arrived (after it was forwarded down).
    pub(crate) fn answer_probe(&mut self, epoch: u64) {
        let Membership::Member(m) = &self.membership else {
            return;
        };
        if m.probes.answering.is_some_and(|(e, _)| e >= epoch) {
            return;
        }
        let tree = Self::member_tree(m);
        let me = self.answer_self(tree);
        let Membership::Member(m) = &mut self.membership else {
            return;
        };
        m.probes.answering = Some((epoch, me));
        m.probes.flushed = false;
        m.probes.sent_count = 0;
        let wait = self.config.epoch_tick / 2;
        self.timers.set(Timer::AckFlush, self.now + wait);
        self.try_flush_probe_ack(false);
    }

    /// The flush timer fired: answer with what is known.
    pub(crate) fn flush_probe_ack(&mut self) {
        self.try_flush_probe_ack(true);
    }

    /// Sends the answer up when every child answered (or `force`), or a raised count after
    /// the first answer.
    fn try_flush_probe_ack(&mut self, force: bool) {
        let gone = self.root_gone;
        let Membership::Member(m) = &mut self.membership else {
            return;
        };
        let (Some(parent), Some((epoch, me))) = (m.parent, m.probes.answering) else {
            return;
        };
        let all_answered = m
            .children
            .iter()
            .all(|c| m.probes.child_acks.get(c).is_some_and(|(e, _)| *e == epoch));
        let count = me + m.probes.children_count(epoch, &m.children);
        let send = if m.probes.flushed {
            count > m.probes.sent_count
        } else {
            force || all_answered
        };
        if !send {
            return;
        }
        m.probes.flushed = true;
        m.probes.sent_count = count;
        let run = m.run;
        self.timers.stop(Timer::AckFlush);
        self.send_tree(
            parent.next_hop,
            epoch,
            TreeKind::ProbeAck {
                run,
                count,
                root_gone: gone,
            },
        );
    }

    /// Root: until when the answers heard so far let it write, and how many answered the
    /// freshest probe still within the lease.
    fn lease(&self) -> (Option<Instant>, usize) {
        let Membership::Member(m) = &self.membership else {
            return (None, 0);
        };
        if m.parent.is_some() {
            return (None, 0);
        }
        let me = u32::from(!self.promised_elsewhere(Self::member_tree(m)));
        let majority = self.config.cluster_size / 2;
        let lease = self.config.writer_lease;
        let mut until = None;
        let mut have = 0;
        for (&epoch, &sent) in &m.probes.sent {
            if sent + lease <= self.now {
                continue;
            }
            let count = (me + m.probes.children_count(epoch, &m.children)) as usize;
            have = count;
            if count > majority {
                until = Some(sent + lease);
            }
        }
        (until, have)
    }

    /// What `/status` shows.
    pub(crate) fn quorum(&self) -> Quorum {
        let (until, have) = self.lease();
        Quorum {
            size: self.config.cluster_size,
            have,
            writable: until.is_some_and(|until| until > self.now),
        }
    }

    /// At a writable root: when its writer lease runs out (unless a fresher probe extends
    /// it). The data plane stops taking writes then even if this machine's next turn is late.
    pub(crate) fn writable_until(&self) -> Option<Instant> {
        self.lease().0.filter(|until| *until > self.now)
    }

    /// Whether this node is a root whose lease holds at `now` (for the simulator's checks).
    #[cfg(feature = "sim")]
    pub(crate) fn writable_at(&self, now: Instant) -> bool {
        self.lease().0.is_some_and(|until| until > now)
    }

    /// Re-derives writability and reports a change; arms the lease timer.
    pub(crate) fn refresh_writable(&mut self) {
        let (until, have) = self.lease();
        let writable = until.is_some_and(|until| until > self.now);
        match until {
            Some(at) if writable => self.timers.set(Timer::Lease, at),
            _ => self.timers.stop(Timer::Lease),
        }
        if writable != self.writable {
            self.writable = writable;
            let term = self.term;
            self.out
                .events
                .push_back(NodeEvent::WritableChanged { writable, term });
            let run = self.run();
            self.out
                .trace(Subsystem::Tree, run, None, || Step::Writable {
                    writable,
                    have,
                });
        }
    }
}
