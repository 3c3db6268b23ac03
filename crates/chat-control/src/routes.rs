//! Next hops from the tree: up is the parent; down, each input node maps to the child whose
//! subtree holds it.
//!
//! Each node tells its parent the complete set of input nodes in its subtree (a `Routes`
//! message), and sends it again whenever that set changes: after joins, losses and healing,
//! which the prototype never corrected (SPEC §11.1-5).

use std::collections::{BTreeMap, BTreeSet};

use chat_wire::NodeId;

/// The way to the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upstream {
    /// The tree parent.
    pub next_hop: NodeId,
    /// The parent's data-plane port (0 until it serves one).
    pub data_port: u16,
}

/// A node's routing table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    /// Towards the root; `None` at the root and outside a tree.
    pub upstream: Option<Upstream>,
    /// Input node → the child to send its traffic to.
    pub downstream: BTreeMap<NodeId, NodeId>,
}

impl Routes {
    /// The child to forward traffic for `input` to, if it lies below this node.
    pub fn next_hop_down(&self, input: NodeId) -> Option<NodeId> {
        self.downstream.get(&input).copied()
    }
}

/// What the children reported, and what this node last reported to its parent.
#[derive(Debug, Clone, Default)]
pub(crate) struct RouteTable {
    /// Per child: the number of the report applied last, and what it said.
    reports: BTreeMap<NodeId, (u64, BTreeSet<NodeId>)>,
    /// The set last sent up; `None` when nothing was sent to the current parent yet.
    pub(crate) reported: Option<BTreeSet<NodeId>>,
}

impl RouteTable {
    /// Replaces what `child` said lies below it, unless this report (numbered `seq` by its
    /// sender) is older than the one applied: reports are resent until acknowledged, so a
    /// lost-then-resent old report can arrive after its successor and must not undo it
    /// (seed 120008: a stale empty report hid an input node from the root for good).
    pub(crate) fn report(
        &mut self,
        child: NodeId,
        seq: u64,
        inputs: impl IntoIterator<Item = NodeId>,
    ) {
        if self
            .reports
            .get(&child)
            .is_some_and(|(last, _)| *last > seq)
        {
            return;
        }
        self.reports
            .insert(child, (seq, inputs.into_iter().collect()));
    }

    /// Forgets a child that left.
    pub(crate) fn forget(&mut self, child: NodeId) {
        self.reports.remove(&child);
    }

    /// Input node → child, counting only current `children` (a report can arrive before the
    /// answer that makes its sender a child). Should two children claim the same input
    /// (briefly, while it moves), the smaller child id wins, so the table is deterministic.
    pub(crate) fn downstream(&self, children: &BTreeSet<NodeId>) -> BTreeMap<NodeId, NodeId> {
        let mut table = BTreeMap::new();
        for (&child, (_, inputs)) in self.reports.iter().filter(|(c, _)| children.contains(c)) {
            for &input in inputs {
                table.entry(input).or_insert(child);
            }
        }
        table
    }

    /// Every input node of this subtree: the children's and this node's own.
    pub(crate) fn subtree_inputs(
        &self,
        me: NodeId,
        i_am_input: bool,
        children: &BTreeSet<NodeId>,
    ) -> BTreeSet<NodeId> {
        let mut all: BTreeSet<NodeId> = self
            .reports
            .iter()
            .filter(|(c, _)| children.contains(c))
            .flat_map(|(_, (_, inputs))| inputs)
            .copied()
            .collect();
        if i_am_input {
            all.insert(me);
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPEC §6.6's example: tree 1→{2, 3}, 3→{4, 5}; inputs 2, 4, 5.
    #[test]
    fn inputs_map_to_the_child_above_them() {
        let mut at3 = RouteTable::default();
        at3.report(4, 1, [4]);
        at3.report(5, 1, [5]);
        let kids3 = BTreeSet::from([4, 5]);
        assert_eq!(at3.downstream(&kids3), BTreeMap::from([(4, 4), (5, 5)]));
        let up3 = at3.subtree_inputs(3, false, &kids3);
        let mut at1 = RouteTable::default();
        at1.report(2, 1, [2]);
        at1.report(3, 1, up3);
        let kids1 = BTreeSet::from([2, 3]);
        assert_eq!(
            at1.downstream(&kids1),
            BTreeMap::from([(2, 2), (4, 3), (5, 3)])
        );
        at1.forget(3);
        assert_eq!(at1.downstream(&kids1), BTreeMap::from([(2, 2)]));
        // A report from a node that is not (yet) a child is kept but not used.
        at1.report(6, 1, [6]);
        assert_eq!(at1.downstream(&kids1), BTreeMap::from([(2, 2)]));
    }

    #[test]
    fn an_old_report_arriving_late_does_not_undo_a_newer_one() {
        let mut table = RouteTable::default();
        let kids = BTreeSet::from([3]);
        table.report(3, 7, [4]);
        table.report(3, 5, []);
        assert_eq!(table.downstream(&kids), BTreeMap::from([(4, 3)]));
        table.report(3, 9, [5]);
        assert_eq!(table.downstream(&kids), BTreeMap::from([(5, 3)]));
    }

    #[test]
    fn a_node_counts_itself_when_it_is_an_input() {
        let table = RouteTable::default();
        let none = BTreeSet::new();
        assert_eq!(table.subtree_inputs(9, true, &none), BTreeSet::from([9]));
        assert!(table.subtree_inputs(9, false, &none).is_empty());
    }
}
