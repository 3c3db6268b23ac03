//! Cluster shapes: a pure function from (node count, kind) to the list of undirected edges.

use std::collections::BTreeSet;
use std::path::Path;
use std::str::FromStr;

use serde::Deserialize;

/// An undirected edge between two node ids, smaller id first.
pub type Edge = (u64, u64);

/// A cluster shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// 1 - 2 - ... - n
    Line,
    /// A line closed from n back to 1 (for n >= 3).
    Ring,
    /// Node 1 linked to every other node.
    Star,
    /// Nodes laid out row by row in a square grid `ceil(sqrt(n))` wide, each linked right and
    /// down.
    Grid,
    /// Every pair linked.
    Complete,
    /// Edges given explicitly (from a TOML file `edges = [[1, 2], [2, 3]]`).
    Edges(Vec<Edge>),
    /// No static links: every node asks the bootstrap service for its neighbours. The edges
    /// are known only once the nodes have registered (see [`crate::LocalCluster::up`]).
    Bootstrap,
}

/// A topology that cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TopologyError {
    /// Not a built-in name and not a readable file.
    #[error("unknown topology {0:?}: expected line, ring, star, grid, complete, bootstrap or a TOML file with `edges = [[1, 2], ...]`")]
    Unknown(String),
    /// The file could not be read or parsed.
    #[error("topology file {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// An edge names an id outside 1..=nodes, or links a node to itself.
    #[error("edge [{0}, {1}] is not between two different nodes in 1..={2}")]
    BadEdge(u64, u64, u64),
    /// Zero nodes asked for.
    #[error("a cluster needs at least one node")]
    Empty,
}

impl FromStr for Topology {
    type Err = TopologyError;

    /// A built-in name; anything else is [`TopologyError::Unknown`] (files go through
    /// [`Topology::from_file`]).
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "line" => Ok(Self::Line),
            "ring" => Ok(Self::Ring),
            "star" => Ok(Self::Star),
            "grid" => Ok(Self::Grid),
            "complete" => Ok(Self::Complete),
            "bootstrap" => Ok(Self::Bootstrap),
            other => Err(TopologyError::Unknown(other.to_owned())),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EdgeFile {
    edges: Vec<Vec<u64>>,
}

impl Topology {
    /// A built-in name, or else the path of a TOML file `edges = [[1, 2], [2, 3]]`.
    pub fn parse(name_or_file: &str) -> Result<Self, TopologyError> {
        match name_or_file.parse() {
            Ok(topology) => Ok(topology),
            Err(unknown) if Path::new(name_or_file).is_file() => {
                drop(unknown);
                Self::from_file(Path::new(name_or_file))
            }
            Err(unknown) => Err(unknown),
        }
    }

    /// Reads `edges = [[1, 2], [2, 3]]` from a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, TopologyError> {
        let file_error = |reason: String| TopologyError::File {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|error| file_error(error.to_string()))?;
        let parsed: EdgeFile =
            toml::from_str(&text).map_err(|error| file_error(error.to_string()))?;
        parsed
            .edges
            .iter()
            .map(|edge| match edge.as_slice() {
                &[a, b] => Ok((a, b)),
                _ => Err(file_error(format!(
                    "edge {edge:?} does not name exactly two nodes"
                ))),
            })
            .collect::<Result<_, _>>()
            .map(Self::Edges)
    }

    /// The smallest node count that covers every edge of an explicit topology (`None` for the
    /// built-in shapes, which fit any count).
    pub fn min_nodes(&self) -> Option<u64> {
        match self {
            Self::Edges(edges) => edges.iter().map(|&(a, b)| a.max(b)).max(),
            _ => None,
        }
    }

    /// Whether the nodes learn their neighbours from the bootstrap service instead of their
    /// configuration.
    pub fn uses_bootstrap(&self) -> bool {
        matches!(self, Self::Bootstrap)
    }

    /// The edges of this shape over nodes `1..=nodes`, each once, smaller id first, sorted;
    /// none for [`Topology::Bootstrap`], whose edges the bootstrap service decides.
    pub fn edges(&self, nodes: u64) -> Result<Vec<Edge>, TopologyError> {
        if nodes == 0 {
            return Err(TopologyError::Empty);
        }
        let mut edges = BTreeSet::new();
        let mut link = |a: u64, b: u64| {
            edges.insert((a.min(b), a.max(b)));
        };
        match self {
            Self::Line => (1..nodes).for_each(|id| link(id, id + 1)),
            Self::Ring => {
                (1..nodes).for_each(|id| link(id, id + 1));
                if nodes >= 3 {
                    link(nodes, 1);
                }
            }
            Self::Star => (2..=nodes).for_each(|id| link(1, id)),
            Self::Grid => {
                let width = ceil_sqrt(nodes);
                for id in 1..=nodes {
                    let column = (id - 1) % width;
                    if column + 1 < width && id < nodes {
                        link(id, id + 1);
                    }
                    if id + width <= nodes {
                        link(id, id + width);
                    }
                }
            }
            Self::Complete => {
                for a in 1..=nodes {
                    ((a + 1)..=nodes).for_each(|b| link(a, b));
                }
            }
            Self::Edges(given) => {
                for &(a, b) in given {
                    if a == b || a == 0 || b == 0 || a > nodes || b > nodes {
                        return Err(TopologyError::BadEdge(a, b, nodes));
                    }
                    link(a, b);
                }
            }
            Self::Bootstrap => {}
        }
        Ok(edges.into_iter().collect())
    }
}

fn ceil_sqrt(n: u64) -> u64 {
    let mut root = 1;
    while root * root < n {
        root += 1;
    }
    root
}

/// The neighbours of `id` in an edge list, sorted.
pub fn neighbors_of(edges: &[Edge], id: u64) -> Vec<u64> {
    let mut neighbors: Vec<u64> = edges
        .iter()
        .filter_map(|&(a, b)| match (a == id, b == id) {
            (true, _) => Some(b),
            (_, true) => Some(a),
            _ => None,
        })
        .collect();
    neighbors.sort_unstable();
    neighbors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_links_consecutive_ids() {
        assert_eq!(Topology::Line.edges(4), Ok(vec![(1, 2), (2, 3), (3, 4)]));
        assert_eq!(Topology::Line.edges(1), Ok(vec![]));
    }

    #[test]
    fn ring_closes_the_line_from_three_nodes_on() {
        assert_eq!(
            Topology::Ring.edges(5),
            Ok(vec![(1, 2), (1, 5), (2, 3), (3, 4), (4, 5)])
        );
        assert_eq!(Topology::Ring.edges(2), Ok(vec![(1, 2)]), "no double edge");
        assert_eq!(Topology::Ring.edges(3).map(|e| e.len()), Ok(3));
    }

    #[test]
    fn star_centres_on_node_one() {
        assert_eq!(Topology::Star.edges(4), Ok(vec![(1, 2), (1, 3), (1, 4)]));
    }

    #[test]
    fn grid_links_right_and_down() {
        // 1 2 3
        // 4 5 6
        // 7
        assert_eq!(
            Topology::Grid.edges(7),
            Ok(vec![
                (1, 2),
                (1, 4),
                (2, 3),
                (2, 5),
                (3, 6),
                (4, 5),
                (4, 7),
                (5, 6)
            ])
        );
        assert_eq!(
            Topology::Grid.edges(4),
            Ok(vec![(1, 2), (1, 3), (2, 4), (3, 4)])
        );
    }

    #[test]
    fn complete_links_every_pair() {
        let edges = Topology::Complete.edges(5).expect("builds");
        assert_eq!(edges.len(), 10);
        assert!(edges.iter().all(|&(a, b)| a < b));
    }

    #[test]
    fn every_built_in_shape_is_connected() {
        for topology in [
            Topology::Line,
            Topology::Ring,
            Topology::Star,
            Topology::Grid,
            Topology::Complete,
        ] {
            for nodes in 1..=12 {
                let edges = topology.edges(nodes).expect("builds");
                let mut reached = BTreeSet::from([1]);
                let mut frontier = vec![1];
                while let Some(id) = frontier.pop() {
                    for next in neighbors_of(&edges, id) {
                        if reached.insert(next) {
                            frontier.push(next);
                        }
                    }
                }
                assert_eq!(
                    reached.len() as u64,
                    nodes,
                    "{topology:?} with {nodes} nodes"
                );
            }
        }
    }

    #[test]
    fn explicit_edges_are_checked_and_normalised() {
        let given = Topology::Edges(vec![(2, 1), (2, 3), (1, 2)]);
        assert_eq!(given.edges(3), Ok(vec![(1, 2), (2, 3)]));
        assert_eq!(given.min_nodes(), Some(3));
        assert_eq!(
            Topology::Edges(vec![(1, 4)]).edges(3),
            Err(TopologyError::BadEdge(1, 4, 3))
        );
        assert_eq!(
            Topology::Edges(vec![(2, 2)]).edges(3),
            Err(TopologyError::BadEdge(2, 2, 3))
        );
        assert_eq!(Topology::Line.edges(0), Err(TopologyError::Empty));
    }

    #[test]
    fn names_and_files_parse() {
        assert_eq!(Topology::parse("ring"), Ok(Topology::Ring));
        assert_eq!(Topology::parse("bootstrap"), Ok(Topology::Bootstrap));
        assert!(Topology::Bootstrap.uses_bootstrap() && !Topology::Ring.uses_bootstrap());
        assert_eq!(
            Topology::Bootstrap.edges(4),
            Ok(vec![]),
            "the bootstrap decides"
        );
        assert_eq!(Topology::Bootstrap.edges(0), Err(TopologyError::Empty));
        assert!(matches!(
            Topology::parse("donut"),
            Err(TopologyError::Unknown(_))
        ));
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("shape.toml");
        std::fs::write(&file, "edges = [[1, 2], [2, 3]]\n").expect("write");
        assert_eq!(
            Topology::parse(file.to_str().expect("utf-8")),
            Ok(Topology::Edges(vec![(1, 2), (2, 3)]))
        );
        std::fs::write(&file, "edges = [[1, 2, 3]]\n").expect("write");
        assert!(matches!(
            Topology::from_file(&file),
            Err(TopologyError::File { .. })
        ));
    }

    #[test]
    fn neighbors_of_reads_both_ends() {
        let edges = Topology::Ring.edges(4).expect("builds");
        assert_eq!(neighbors_of(&edges, 1), vec![2, 4]);
        assert_eq!(neighbors_of(&edges, 3), vec![2, 4]);
    }
}
