//! Roles from the tree: a pure function of a node's place in it.
//!
//! | place                                   | roles                 |
//! |-----------------------------------------|-----------------------|
//! | root without children (a lone node)     | writer, input         |
//! | root with children                      | writer                |
//! | child of the root with children         | replica               |
//! | child of the root without children      | replica, input        |
//! | deeper, without children (a leaf)       | input                 |
//! | deeper, with children                   | forwarder             |
//! | not in a tree (electing, orphaned)      | none                  |
//!
//! A child of the root that is also a leaf keeps a copy of the data too, so every cluster of
//! two or more nodes holds a second copy.

use std::fmt;

/// The set of roles a node plays.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Roles {
    /// The single writer (the root).
    pub writer: bool,
    /// A read replica (a child of the root).
    pub replica: bool,
    /// Serves browsers (a leaf, or a lone node).
    pub input: bool,
    /// Only passes requests and responses along.
    pub forwarder: bool,
}

impl Roles {
    /// No role: the node is not in a tree.
    pub const NONE: Roles = Roles {
        writer: false,
        replica: false,
        input: false,
        forwarder: false,
    };

    /// True when the node plays no role.
    pub fn is_empty(&self) -> bool {
        *self == Roles::NONE
    }

    /// Lowercase names (`writer`, `replica`, `input`, `forwarder`), in that order.
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.writer, "writer"),
            (self.replica, "replica"),
            (self.input, "input"),
            (self.forwarder, "forwarder"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}

impl fmt::Display for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = self.names();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join("+"))
        }
    }
}

/// A node's place in the tree, as far as roles are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Not in a tree.
    Detached,
    /// In a tree.
    InTree {
        /// Distance from the root (0 = the root).
        hops: u32,
        /// Whether it has children.
        has_children: bool,
    },
}

/// The roles for a place in the tree (the table in the module docs).
pub fn roles_for(place: Place) -> Roles {
    let Place::InTree { hops, has_children } = place else {
        return Roles::NONE;
    };
    let leaf = !has_children;
    Roles {
        writer: hops == 0,
        replica: hops == 1,
        input: leaf,
        forwarder: hops >= 2 && has_children,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_follow_the_table() {
        // (place, expected names) — the rules of issue 5 item 6, one row per case.
        let table: &[(Place, &[&str])] = &[
            (Place::Detached, &[]),
            (
                Place::InTree {
                    hops: 0,
                    has_children: false,
                },
                &["writer", "input"],
            ),
            (
                Place::InTree {
                    hops: 0,
                    has_children: true,
                },
                &["writer"],
            ),
            (
                Place::InTree {
                    hops: 1,
                    has_children: true,
                },
                &["replica"],
            ),
            (
                Place::InTree {
                    hops: 1,
                    has_children: false,
                },
                &["replica", "input"],
            ),
            (
                Place::InTree {
                    hops: 2,
                    has_children: false,
                },
                &["input"],
            ),
            (
                Place::InTree {
                    hops: 2,
                    has_children: true,
                },
                &["forwarder"],
            ),
            (
                Place::InTree {
                    hops: 7,
                    has_children: false,
                },
                &["input"],
            ),
            (
                Place::InTree {
                    hops: 7,
                    has_children: true,
                },
                &["forwarder"],
            ),
        ];
        for (place, expected) in table {
            assert_eq!(roles_for(*place).names(), *expected, "{place:?}");
        }
    }

    #[test]
    fn display_joins_names() {
        assert_eq!(Roles::NONE.to_string(), "none");
        let lone = roles_for(Place::InTree {
            hops: 0,
            has_children: false,
        });
        assert_eq!(lone.to_string(), "writer+input");
    }
}
