//! Deterministic neighbour assignment (SPEC §7.1), as a pure data structure.
//!
//! A new node is linked to `count` already-registered nodes, where `count` walks the repeating
//! sequence [`NEIGHBOR_COUNT_SEQUENCE`] (clamped to the number of registered nodes), and the
//! nodes are picked by a round-robin index that counts down over the registration order and
//! wraps. Links are symmetric. For nodes 1..4 registering in order the result is the ring
//! 1:[2,4] 2:[1,3] 3:[2,4] 4:[1,3].
//!
//! Differences from the prototype, on purpose: a node registering again with a new address has
//! its address updated (its neighbours see it at their next registration), the sequence index
//! is a `u64` (the prototype's `u8` wrapped at 256), and nodes can be deregistered.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The repeating sequence of neighbour counts handed to new nodes, as in the prototype.
pub const NEIGHBOR_COUNT_SEQUENCE: [usize; 19] =
    [1, 1, 1, 2, 1, 1, 1, 3, 1, 2, 1, 3, 2, 1, 3, 1, 2, 3, 1];

/// A node's identity and control-plane address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeAddress {
    /// Node id (unique in the cluster).
    pub id: u64,
    /// Host (IP address or DNS name) of the node's control plane.
    pub host: String,
    /// Control-plane port.
    pub port: u16,
}

/// A neighbour as handed to a node: same shape as the node's own address.
pub type Neighbor = NodeAddress;

/// What [`Registry::register`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The node's neighbours with their current addresses, ordered by id.
    pub neighbors: Vec<Neighbor>,
    /// Whether the registry changed (new node or new address), i.e. must be persisted.
    pub changed: bool,
}

/// The bootstrap's whole state: registered nodes in registration order, the links between them,
/// and the two indices that drive the assignment. Serialised as the registry file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    /// Round-robin cursor over `participants`; counts down, 0 means "restart from the end".
    pub(crate) assigning_index: u64,
    /// How many nodes were given neighbours so far; selects the entry of the count sequence.
    pub(crate) number_index: u64,
    /// Registered nodes in registration order.
    pub(crate) participants: Vec<NodeAddress>,
    /// Neighbour ids of each registered node, in the order the links were made.
    pub(crate) topology: BTreeMap<u64, Vec<u64>>,
}

/// Why a registry read from disk cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InconsistentRegistry {
    /// Two participants share an id.
    #[error("node {0} is registered twice")]
    DuplicateNode(u64),
    /// A participant has no neighbour list, or a neighbour list belongs to no participant.
    #[error("node {0} is in only one of `participants` and `topology`")]
    TopologyMismatch(u64),
    /// A link goes to an unregistered node, to the node itself, or only one way.
    #[error("the link {from} -> {to} is not a valid symmetric link")]
    BadLink {
        /// Node whose list holds the link.
        from: u64,
        /// Target of the link.
        to: u64,
    },
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `node` and returns its neighbours.
    ///
    /// A known id keeps its neighbours; its stored address is replaced by `node`'s. A new id
    /// is appended and linked (both ways) to the nodes the assignment picks.
    pub fn register(&mut self, node: NodeAddress) -> Registration {
        if let Some(known) = self.participants.iter_mut().find(|p| p.id == node.id) {
            let changed = *known != node;
            *known = node.clone();
            return Registration {
                neighbors: self.neighbors_of(node.id),
                changed,
            };
        }

        let chosen = self.pick_neighbors();
        for &peer in &chosen {
            self.topology.entry(peer).or_default().push(node.id);
        }
        self.topology.insert(node.id, chosen);
        let id = node.id;
        self.participants.push(node);
        Registration {
            neighbors: self.neighbors_of(id),
            changed: true,
        }
    }

    /// The prototype's choice of neighbours for the next new node (SPEC §7.1 step 3).
    fn pick_neighbors(&mut self) -> Vec<u64> {
        let registered = self.participants.len();
        if registered == 0 {
            return Vec::new();
        }
        self.number_index = self.number_index.wrapping_add(1);
        let sequence_slot =
            usize::try_from(self.number_index % NEIGHBOR_COUNT_SEQUENCE.len() as u64)
                .unwrap_or_default();
        let count = NEIGHBOR_COUNT_SEQUENCE[sequence_slot].min(registered);
        let mut chosen = Vec::with_capacity(count);
        for _ in 0..count {
            let slot = self.next_assigning_slot(registered);
            chosen.push(self.participants[slot].id);
        }
        chosen
    }

    /// Moves the round-robin cursor one step down (wrapping to the end) and returns the slot.
    fn next_assigning_slot(&mut self, registered: usize) -> usize {
        if self.assigning_index == 0 {
            self.assigning_index = registered as u64;
        }
        self.assigning_index -= 1;
        // The cursor can exceed the participant count after a deregistration; the modulo keeps
        // it in range as the prototype's does.
        usize::try_from(self.assigning_index % registered as u64).unwrap_or_default()
    }

    /// Removes `id` from the registry and from every neighbour list. Returns whether it was
    /// registered. Its former neighbours get no replacement links.
    pub fn deregister(&mut self, id: u64) -> bool {
        let Some(position) = self.participants.iter().position(|p| p.id == id) else {
            return false;
        };
        self.participants.remove(position);
        if let Some(peers) = self.topology.remove(&id) {
            for peer in peers {
                if let Some(list) = self.topology.get_mut(&peer) {
                    list.retain(|&n| n != id);
                }
            }
        }
        true
    }

    /// The current neighbours of `id` with their current addresses, ordered by id (empty for
    /// an unknown id).
    pub fn neighbors_of(&self, id: u64) -> Vec<Neighbor> {
        let Some(ids) = self.topology.get(&id) else {
            return Vec::new();
        };
        let mut neighbors: Vec<Neighbor> = ids
            .iter()
            .filter_map(|n| self.address_of(*n))
            .cloned()
            .collect();
        neighbors.sort_by_key(|n| n.id);
        neighbors
    }

    /// The registered address of `id`.
    pub fn address_of(&self, id: u64) -> Option<&NodeAddress> {
        self.participants.iter().find(|p| p.id == id)
    }

    /// Registered nodes in registration order, each with its neighbour ids (link order).
    pub fn nodes(&self) -> impl Iterator<Item = (&NodeAddress, &[u64])> {
        self.participants.iter().map(|p| {
            let ids = self
                .topology
                .get(&p.id)
                .map(Vec::as_slice)
                .unwrap_or_default();
            (p, ids)
        })
    }

    /// Number of registered nodes.
    pub fn len(&self) -> usize {
        self.participants.len()
    }

    /// Whether no node is registered.
    pub fn is_empty(&self) -> bool {
        self.participants.is_empty()
    }

    /// Checks the invariants a registry built by [`Registry::register`] always has, so a file
    /// edited by hand or damaged on disk is refused instead of half-used.
    pub fn check_consistency(&self) -> Result<(), InconsistentRegistry> {
        let mut seen = std::collections::BTreeSet::new();
        for p in &self.participants {
            if !seen.insert(p.id) {
                return Err(InconsistentRegistry::DuplicateNode(p.id));
            }
            if !self.topology.contains_key(&p.id) {
                return Err(InconsistentRegistry::TopologyMismatch(p.id));
            }
        }
        for (&from, peers) in &self.topology {
            if !seen.contains(&from) {
                return Err(InconsistentRegistry::TopologyMismatch(from));
            }
            for &to in peers {
                let back = self.topology.get(&to).is_some_and(|l| l.contains(&from));
                if to == from || !seen.contains(&to) || !back {
                    return Err(InconsistentRegistry::BadLink { from, to });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u64) -> NodeAddress {
        NodeAddress {
            id,
            host: "127.0.0.1".into(),
            port: 46000 + id as u16,
        }
    }

    fn ids(neighbors: &[Neighbor]) -> Vec<u64> {
        neighbors.iter().map(|n| n.id).collect()
    }

    fn registered(count: u64) -> Registry {
        let mut registry = Registry::new();
        for id in 1..=count {
            registry.register(node(id));
        }
        registry
    }

    #[test]
    fn spec_worked_example_four_nodes_form_a_ring() {
        let mut registry = Registry::new();
        assert_eq!(
            ids(&registry.register(node(1)).neighbors),
            Vec::<u64>::new()
        );
        assert_eq!(ids(&registry.register(node(2)).neighbors), vec![1]);
        assert_eq!(ids(&registry.register(node(3)).neighbors), vec![2]);
        assert_eq!(ids(&registry.register(node(4)).neighbors), vec![1, 3]);

        for (id, expected) in [
            (1, vec![2, 4]),
            (2, vec![1, 3]),
            (3, vec![2, 4]),
            (4, vec![1, 3]),
        ] {
            assert_eq!(
                ids(&registry.neighbors_of(id)),
                expected,
                "neighbours of {id}"
            );
        }
        assert_eq!(registry.assigning_index, 2);
        assert_eq!(registry.number_index, 3);
    }

    #[test]
    fn neighbours_carry_addresses() {
        let registry = registered(4);
        assert_eq!(registry.neighbors_of(2), vec![node(1), node(3)]);
    }

    #[test]
    fn known_node_gets_its_neighbours_back_unchanged() {
        let mut registry = registered(4);
        let before = registry.clone();
        let again = registry.register(node(3));
        assert_eq!(ids(&again.neighbors), vec![2, 4]);
        assert!(!again.changed);
        assert_eq!(
            registry, before,
            "re-registering the same address changes nothing"
        );
    }

    #[test]
    fn re_registration_with_new_address_updates_it_for_neighbours() {
        let mut registry = registered(4);
        let moved = NodeAddress {
            id: 2,
            host: "10.0.0.9".into(),
            port: 47002,
        };
        let result = registry.register(moved.clone());
        assert!(result.changed);
        assert_eq!(ids(&result.neighbors), vec![1, 3], "links are kept");
        assert_eq!(registry.address_of(2), Some(&moved));
        let seen_by_1 = registry.register(node(1)).neighbors;
        assert!(
            seen_by_1.contains(&moved),
            "node 1 learns node 2's new address: {seen_by_1:?}"
        );
        assert_eq!(registry.len(), 4, "no duplicate entry");
    }

    #[test]
    fn many_nodes_get_symmetric_links_and_every_later_node_is_linked() {
        let registry = registered(1000);
        registry.check_consistency().expect("consistent");
        for (address, peers) in registry.nodes() {
            if address.id > 1 {
                assert!(!peers.is_empty(), "node {} has no neighbour", address.id);
            }
        }
        // Node k+1 joins with number_index k and makes min(seq[k % 19], k) links.
        let expected: usize = (1..1000)
            .map(|k| NEIGHBOR_COUNT_SEQUENCE[k % 19].min(k))
            .sum();
        let links: usize = registry.nodes().map(|(_, p)| p.len()).sum::<usize>() / 2;
        assert_eq!(links, expected);
    }

    #[test]
    fn sequence_index_keeps_counting_past_256() {
        let registry = registered(300);
        assert_eq!(registry.number_index, 299);
        // Node 300 joined with number_index 299: 299 % 19 = 14 → 3 neighbours.
        let newest_links = registry.topology[&300].len();
        assert_eq!(newest_links, NEIGHBOR_COUNT_SEQUENCE[299 % 19]);
    }

    #[test]
    fn assignment_is_deterministic() {
        assert_eq!(registered(57), registered(57));
    }

    #[test]
    fn deregister_removes_node_and_its_links() {
        let mut registry = registered(4);
        assert!(registry.deregister(2));
        assert!(!registry.deregister(2));
        assert_eq!(ids(&registry.neighbors_of(1)), vec![4]);
        assert_eq!(ids(&registry.neighbors_of(3)), vec![4]);
        registry
            .check_consistency()
            .expect("consistent after removal");
        let joined = registry.register(node(5));
        assert!(!joined.neighbors.is_empty());
        registry
            .check_consistency()
            .expect("consistent after a later join");
    }

    #[test]
    fn consistency_check_rejects_one_way_links() {
        let mut registry = registered(3);
        registry.topology.get_mut(&1).expect("node 1").push(3);
        assert_eq!(
            registry.check_consistency(),
            Err(InconsistentRegistry::BadLink { from: 1, to: 3 })
        );
    }

    #[test]
    fn consistency_check_rejects_duplicates_and_orphans() {
        let mut duplicated = registered(2);
        duplicated.participants.push(node(2));
        assert_eq!(
            duplicated.check_consistency(),
            Err(InconsistentRegistry::DuplicateNode(2))
        );

        let mut orphan = registered(2);
        orphan.topology.insert(9, Vec::new());
        assert_eq!(
            orphan.check_consistency(),
            Err(InconsistentRegistry::TopologyMismatch(9))
        );
    }
}
