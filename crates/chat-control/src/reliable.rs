//! Tree messages that are never lost: every one-shot tree message (SHOUT, its answer, an
//! adoption request or offer, a detach, a routes report) gets a number and is resent every
//! `retransmit` until the receiver acknowledges that number, until the neighbour goes
//! OFF (the link is declared dead), or until the node takes a new place in a tree (it leaves
//! one, or attaches): what it still resent would describe the old place and, arriving after
//! what the new place sends, undo it. The receiver acknowledges every copy and handles only
//! the first, so duplicates (from resends or from the network) are harmless.
//!
//! Periodic messages (epoch ticks, which are also the probes, and their answers) carry
//! number 0: the next period replaces a lost one.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use chat_wire::{Body, NodeId, Tree, TreeKind};

use crate::plane::{ControlPlane, Timer};

/// How many handled numbers are remembered per neighbour. Resends stop at the first
/// acknowledgement, so only recent numbers ever come back.
const REMEMBERED: usize = 512;

#[derive(Debug, Clone)]
struct Pending {
    to: NodeId,
    tree: Tree,
    due: Instant,
}

/// Sent-but-unacknowledged messages and received numbers, per neighbour.
#[derive(Debug, Default)]
pub(crate) struct Reliable {
    next_seq: u64,
    pending: BTreeMap<u64, Pending>,
    handled: BTreeMap<NodeId, BTreeSet<u64>>,
}

impl Reliable {
    /// Stops resending to `peer` and forgets what it sent (its link is dead).
    pub(crate) fn forget(&mut self, peer: NodeId) {
        self.pending.retain(|_, p| p.to != peer);
        self.handled.remove(&peer);
    }

    /// Drops every pending message (they belong to a tree this node left).
    pub(crate) fn clear_pending(&mut self) {
        self.pending.clear();
    }

    fn next_due(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.due).min()
    }

    /// Whether `seq` from `from` is new; records it.
    fn first_time(&mut self, from: NodeId, seq: u64) -> bool {
        let seen = self.handled.entry(from).or_default();
        if !seen.insert(seq) {
            return false;
        }
        while seen.len() > REMEMBERED {
            seen.pop_first();
        }
        true
    }
}

/// Whether a tree message is one-shot (resent until acknowledged).
fn is_one_shot(kind: &TreeKind) -> bool {
    !matches!(
        kind,
        TreeKind::EpochTick { .. } | TreeKind::ProbeAck { .. } | TreeKind::Ack { .. }
    )
}

impl ControlPlane {
    /// Sends a tree message; one-shot kinds are numbered and resent until acknowledged.
    pub(crate) fn send_tree(&mut self, to: NodeId, epoch: u64, kind: TreeKind) {
        let seq = if is_one_shot(&kind) {
            self.reliable.next_seq += 1;
            self.reliable.next_seq
        } else {
            0
        };
        let tree = Tree {
            tree_epoch: epoch,
            seq,
            kind,
        };
        if seq != 0 {
            self.reliable.pending.insert(
                seq,
                Pending {
                    to,
                    tree: tree.clone(),
                    due: self.now + self.config.retransmit,
                },
            );
            self.arm_retransmit();
        }
        self.out.send(to, Body::Tree(tree));
    }

    fn arm_retransmit(&mut self) {
        match self.reliable.next_due() {
            Some(at) => self.timers.set(Timer::Retransmit, at),
            None => self.timers.stop(Timer::Retransmit),
        }
    }

    /// Resends what is due.
    pub(crate) fn retransmit_due(&mut self) {
        let now = self.now;
        let next = now + self.config.retransmit;
        let mut resent = Vec::new();
        for pending in self.reliable.pending.values_mut() {
            if pending.due <= now && self.on.contains(&pending.to) {
                pending.due = next;
                resent.push((pending.to, pending.tree.clone()));
            }
        }
        // Pending messages to neighbours that are not ON wait for them to come back (or
        // are forgotten when they go OFF).
        for pending in self.reliable.pending.values_mut() {
            if pending.due <= now {
                pending.due = next;
            }
        }
        self.stats.retransmits += resent.len() as u64;
        for (to, tree) in resent {
            self.out.send(to, Body::Tree(tree));
        }
        self.arm_retransmit();
    }

    /// Resends everything pending to `peer` now (its link just came back).
    pub(crate) fn resend_to(&mut self, peer: NodeId) {
        let copies: Vec<Tree> = self
            .reliable
            .pending
            .values()
            .filter(|p| p.to == peer)
            .map(|p| p.tree.clone())
            .collect();
        for tree in copies {
            self.out.send(peer, Body::Tree(tree));
        }
    }

    /// Drops what was pending for the tree this node leaves.
    pub(crate) fn forget_pending(&mut self) {
        self.reliable.clear_pending();
        self.timers.stop(Timer::Retransmit);
    }

    /// A tree message from `from`: acknowledges numbered ones, handles each number once.
    pub(crate) fn receive_tree(&mut self, from: NodeId, t: &Tree) {
        if let TreeKind::Ack { seq } = t.kind {
            if self
                .reliable
                .pending
                .get(&seq)
                .is_some_and(|p| p.to == from)
            {
                self.reliable.pending.remove(&seq);
                self.arm_retransmit();
            }
            return;
        }
        if t.seq != 0 {
            self.out.send(
                from,
                Body::Tree(Tree {
                    tree_epoch: 0,
                    seq: 0,
                    kind: TreeKind::Ack { seq: t.seq },
                }),
            );
            if !self.reliable.first_time(from, t.seq) {
                self.stats.duplicates += 1;
                return;
            }
        }
        self.handle_tree(from, t);
    }
}
