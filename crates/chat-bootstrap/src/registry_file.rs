//! The registry file: the bootstrap's whole state as JSON in its state directory, replaced
//! atomically after every change and read back at start.
//!
//! A file that cannot be read, parsed or that breaks the registry's invariants stops start-up
//! with an error naming the file: silently starting empty would hand out a second, different
//! topology to a cluster that already has one.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::assignment::{InconsistentRegistry, Registry};
use crate::atomic_file::write_atomically;

/// Name of the registry file inside the state directory.
pub const REGISTRY_FILE_NAME: &str = "registry.json";

/// Format version written into the file; files with another version are refused.
const FORMAT_VERSION: u32 = 1;

/// Errors reading or writing the registry file. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum RegistryFileError {
    /// The file exists but could not be read.
    #[error("cannot read the bootstrap registry {path}: {source}")]
    Read {
        /// The registry file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file is not a registry this version understands (bad JSON, wrong fields, empty).
    #[error("the bootstrap registry {path} is corrupt ({reason}); fix or move it away, it is not replaced automatically")]
    Corrupt {
        /// The registry file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The file could not be written (the change it held is not persisted).
    #[error("cannot write the bootstrap registry {path}: {source}")]
    Write {
        /// The registry file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

#[derive(Serialize, Deserialize)]
struct RegistryFile {
    version: u32,
    // Nested rather than flattened: serde's flatten cannot read the integer map keys back.
    registry: Registry,
}

/// Where the registry lives, and how to load and store it.
#[derive(Debug, Clone)]
pub struct RegistryStore {
    path: PathBuf,
}

impl RegistryStore {
    /// The registry file inside `state_dir`.
    pub fn in_dir(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join(REGISTRY_FILE_NAME),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the registry; a missing file is an empty registry.
    pub fn load(&self) -> Result<Registry, RegistryFileError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Registry::new()),
            Err(source) => {
                return Err(RegistryFileError::Read {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let corrupt = |reason: String| RegistryFileError::Corrupt {
            path: self.path.clone(),
            reason,
        };
        let file: RegistryFile =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if file.version != FORMAT_VERSION {
            return Err(corrupt(format!(
                "format version {} (this build reads {FORMAT_VERSION})",
                file.version
            )));
        }
        file.registry
            .check_consistency()
            .map_err(|e: InconsistentRegistry| corrupt(e.to_string()))?;
        Ok(file.registry)
    }

    /// Replaces the file with `registry` (atomically, durably).
    pub fn store(&self, registry: &Registry) -> Result<(), RegistryFileError> {
        let file = RegistryFile {
            version: FORMAT_VERSION,
            registry: registry.clone(),
        };
        let write_error = |source| RegistryFileError::Write {
            path: self.path.clone(),
            source,
        };
        let bytes =
            serde_json::to_vec_pretty(&file).map_err(|e| write_error(io::Error::other(e)))?;
        write_atomically(&self.path, &bytes).map_err(write_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assignment::NodeAddress;

    fn sample() -> Registry {
        let mut registry = Registry::new();
        for id in 1..=5 {
            registry.register(NodeAddress {
                id,
                host: format!("10.0.0.{id}"),
                port: 46000 + id as u16,
            });
        }
        registry
    }

    #[test]
    fn missing_file_is_an_empty_registry() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            RegistryStore::in_dir(dir.path()).load().expect("load"),
            Registry::new()
        );
    }

    #[test]
    fn round_trip_keeps_everything_including_indices() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RegistryStore::in_dir(dir.path());
        let registry = sample();
        store.store(&registry).expect("store");
        let loaded = store.load().expect("load");
        assert_eq!(loaded, registry);

        // The reloaded registry continues the assignment exactly where the original would.
        let mut original = registry;
        let mut reloaded = loaded;
        let next = NodeAddress {
            id: 6,
            host: "10.0.0.6".into(),
            port: 46006,
        };
        assert_eq!(original.register(next.clone()), reloaded.register(next));
    }

    #[test]
    fn corrupt_file_is_reported_with_its_path_and_left_in_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RegistryStore::in_dir(dir.path());
        std::fs::write(store.path(), b"{ not json").expect("write");
        let err = store.load().expect_err("corrupt file must fail");
        assert!(matches!(err, RegistryFileError::Corrupt { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains(&store.path().display().to_string()),
            "{err}"
        );
        assert_eq!(
            std::fs::read(store.path()).expect("still there"),
            b"{ not json"
        );
    }

    #[test]
    fn empty_file_is_corrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RegistryStore::in_dir(dir.path());
        std::fs::write(store.path(), b"").expect("write");
        assert!(matches!(
            store.load(),
            Err(RegistryFileError::Corrupt { .. })
        ));
    }

    #[test]
    fn inconsistent_topology_is_corrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RegistryStore::in_dir(dir.path());
        let mut registry = sample();
        registry.topology.get_mut(&1).expect("node 1").push(99);
        store.store(&registry).expect("store");
        let err = store.load().expect_err("link to an unknown node");
        assert!(err.to_string().contains("1 -> 99"), "{err}");
    }

    #[test]
    fn unknown_version_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RegistryStore::in_dir(dir.path());
        store.store(&sample()).expect("store");
        let text = std::fs::read_to_string(store.path())
            .expect("read")
            .replace("\"version\": 1", "\"version\": 7");
        std::fs::write(store.path(), text).expect("write");
        let err = store.load().expect_err("version 7");
        assert!(err.to_string().contains("format version 7"), "{err}");
    }

    #[test]
    fn write_into_missing_directory_fails_with_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RegistryStore::in_dir(&dir.path().join("absent"));
        let err = store.store(&sample()).expect_err("no directory");
        assert!(matches!(err, RegistryFileError::Write { .. }));
        assert!(err.to_string().contains("absent"), "{err}");
    }
}
