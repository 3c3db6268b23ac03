//! The node side's memory of its neighbours: the last answer of the bootstrap, kept in the
//! node's state directory, so a node restarting while the bootstrap is down still rejoins.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chat_grpc::KeyRing;
use serde::{Deserialize, Serialize};

use crate::assignment::{Neighbor, NodeAddress};
use crate::atomic_file::write_atomically;
use crate::client::{self, BootstrapError};

/// Name of the cache file inside the node's state directory.
pub const NEIGHBOR_CACHE_FILE_NAME: &str = "bootstrap-neighbors.json";

/// Errors reading or writing the neighbour cache. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The file exists but could not be read.
    #[error("cannot read the neighbour cache {path}: {source}")]
    Read {
        /// The cache file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file is not a neighbour cache.
    #[error("the neighbour cache {path} is corrupt: {reason}")]
    Corrupt {
        /// The cache file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The file could not be written.
    #[error("cannot write the neighbour cache {path}: {source}")]
    Write {
        /// The cache file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

#[derive(Serialize, Deserialize)]
struct CacheFile {
    neighbors: Vec<Neighbor>,
}

fn cache_path(state_dir: &Path) -> PathBuf {
    state_dir.join(NEIGHBOR_CACHE_FILE_NAME)
}

/// The neighbours cached in `state_dir`, or `None` when nothing was cached yet.
pub fn load_cached_neighbors(state_dir: &Path) -> Result<Option<Vec<Neighbor>>, CacheError> {
    let path = cache_path(state_dir);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(CacheError::Read { path, source }),
    };
    let file: CacheFile = serde_json::from_slice(&bytes).map_err(|e| CacheError::Corrupt {
        path,
        reason: e.to_string(),
    })?;
    Ok(Some(file.neighbors))
}

/// Replaces the cache in `state_dir` with `neighbors` (atomically: a crash leaves the old or
/// the new list, never a torn file).
pub fn store_cached_neighbors(state_dir: &Path, neighbors: &[Neighbor]) -> Result<(), CacheError> {
    let path = cache_path(state_dir);
    let file = CacheFile {
        neighbors: neighbors.to_vec(),
    };
    let bytes = serde_json::to_vec_pretty(&file).map_err(|e| CacheError::Write {
        path: path.clone(),
        source: io::Error::other(e),
    })?;
    write_atomically(&path, &bytes).map_err(|source| CacheError::Write { path, source })
}

/// Where [`discover_neighbors`] found the neighbours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeighborSource {
    /// The bootstrap answered (and the answer was cached).
    Bootstrap,
    /// The bootstrap was unreachable; this is the last cached answer.
    Cache,
}

/// The outcome of [`discover_neighbors`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredNeighbors {
    /// The neighbours, with addresses.
    pub neighbors: Vec<Neighbor>,
    /// Where they came from.
    pub source: NeighborSource,
}

/// Why [`discover_neighbors`] found no neighbours.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The bootstrap was reached and refused the registration (a configuration problem: the
    /// cache is deliberately not used to hide it).
    #[error("{0}")]
    Refused(BootstrapError),
    /// The bootstrap is unreachable and nothing was cached in the state directory.
    #[error("{bootstrap}; and no cached neighbours in {}", state_dir.display())]
    NoCache {
        /// Why the bootstrap failed.
        bootstrap: BootstrapError,
        /// The state directory searched.
        state_dir: PathBuf,
    },
    /// The bootstrap is unreachable and the cache could not be read.
    #[error("{bootstrap}; and {cache}")]
    CacheUnusable {
        /// Why the bootstrap failed.
        bootstrap: BootstrapError,
        /// Why the cache failed.
        cache: CacheError,
    },
}

/// Registers `me` with the bootstrap at `addr` (the call signed with `keys`, see
/// [`client::register`]) and caches the answer in `state_dir`; when the bootstrap is
/// unreachable, answers from that cache instead.
///
/// A failure to write the cache is logged, not returned: the registration itself succeeded.
pub async fn discover_neighbors(
    addr: &str,
    timeout: Duration,
    keys: Option<&KeyRing>,
    me: NodeAddress,
    state_dir: &Path,
) -> Result<DiscoveredNeighbors, DiscoveryError> {
    match client::register(addr, timeout, keys, me).await {
        Ok(neighbors) => {
            if let Err(e) = store_cached_neighbors(state_dir, &neighbors) {
                tracing::warn!(target: "bootstrap", subsystem = "bootstrap", error = %e,
                    "neighbours not cached; a restart without the bootstrap will not find them");
            }
            Ok(DiscoveredNeighbors {
                neighbors,
                source: NeighborSource::Bootstrap,
            })
        }
        Err(bootstrap) if bootstrap.is_unreachable() => match load_cached_neighbors(state_dir) {
            Ok(Some(neighbors)) => {
                tracing::warn!(target: "bootstrap", subsystem = "bootstrap", error = %bootstrap,
                    count = neighbors.len(), "bootstrap unreachable; using cached neighbours");
                Ok(DiscoveredNeighbors {
                    neighbors,
                    source: NeighborSource::Cache,
                })
            }
            Ok(None) => Err(DiscoveryError::NoCache {
                bootstrap,
                state_dir: state_dir.to_owned(),
            }),
            Err(cache) => Err(DiscoveryError::CacheUnusable { bootstrap, cache }),
        },
        Err(refused) => Err(DiscoveryError::Refused(refused)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_cached_is_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(load_cached_neighbors(dir.path()).expect("load").is_none());
    }

    #[test]
    fn cache_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let neighbors = vec![
            Neighbor {
                id: 2,
                host: "10.0.0.2".into(),
                port: 46002,
            },
            Neighbor {
                id: 4,
                host: "node-4.example".into(),
                port: 46004,
            },
        ];
        store_cached_neighbors(dir.path(), &neighbors).expect("store");
        assert_eq!(
            load_cached_neighbors(dir.path()).expect("load"),
            Some(neighbors)
        );
        store_cached_neighbors(dir.path(), &[]).expect("store empty");
        assert_eq!(
            load_cached_neighbors(dir.path()).expect("load"),
            Some(Vec::new())
        );
    }

    #[test]
    fn corrupt_cache_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(NEIGHBOR_CACHE_FILE_NAME), b"[1,2").expect("write");
        let err = load_cached_neighbors(dir.path()).expect_err("corrupt");
        assert!(err.to_string().contains(NEIGHBOR_CACHE_FILE_NAME), "{err}");
    }
}
