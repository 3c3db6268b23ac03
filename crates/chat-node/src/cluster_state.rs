//! The node's control state on disk (`[cluster] state_file`): the highest term it was a
//! member of, so that `term` never decreases across restarts (issue 10, item 1).
//!
//! The file is small JSON (`{"term": 7}`), replaced atomically: written to a temporary file
//! beside it, fsynced, renamed over the old one, and the directory fsynced, so a crash leaves
//! either the old term or the new one, never a torn file.

use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterState {
    term: u64,
}

/// The term stored at `path`; 0 when the file does not exist (a new node). A file that
/// exists but cannot be read or parsed is an error: starting with term 0 could let the node
/// join a tree older than one it was a member of.
pub(crate) fn load_term(path: &Path) -> anyhow::Result<u64> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(error) => {
            return Err(error)
                .with_context(|| format!("cannot read the cluster state {}", path.display()))
        }
    };
    let state: ClusterState = serde_json::from_str(&text).with_context(|| {
        format!(
            "the cluster state {} is damaged (expected {{\"term\": <integer>}}); remove it only \
             if this node's data is also discarded",
            path.display()
        )
    })?;
    Ok(state.term)
}

/// Stores `term` at `path` atomically and durably (see the module docs).
pub(crate) fn store_term(path: &Path, term: u64) -> std::io::Result<()> {
    let temporary = temporary_path(path);
    let mut file = File::create(&temporary)?;
    let text = serde_json::to_string(&ClusterState { term }).map_err(std::io::Error::other)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temporary, path)?;
    // The rename is durable only once the directory entry is.
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(directory)?.sync_all()
}

fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_node_starts_at_term_zero() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert_eq!(
            load_term(&dir.path().join("control-state.json")).unwrap(),
            0
        );
    }

    #[test]
    fn a_stored_term_is_read_back_and_replaced_without_leftovers() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("control-state.json");
        store_term(&path, 7).expect("stored");
        assert_eq!(load_term(&path).unwrap(), 7);
        store_term(&path, 12).expect("stored");
        assert_eq!(load_term(&path).unwrap(), 12);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("control-state.json")]);
    }

    #[test]
    fn a_damaged_file_stops_start_up_with_its_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("control-state.json");
        fs::write(&path, "{\"term\": \"seven\"}").unwrap();
        let error = format!("{:#}", load_term(&path).unwrap_err());
        assert!(error.contains("control-state.json"), "{error}");
        assert!(error.contains("damaged"), "{error}");
    }
}
