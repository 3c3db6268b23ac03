//! Helpers shared by the real-process tests.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// The binary `name` of package `package`: `CHAT_CLUSTER_<NAME>_BIN` if set (e.g.
/// `CHAT_CLUSTER_NODE_BIN`), else the one of this target directory (built by `cargo test
/// --workspace`), built here only when missing (`cargo test -p chat-cluster` builds only the
/// binaries of the package under test).
pub fn binary(package: &str, name: &str) -> PathBuf {
    // One build at a time: tests run in parallel threads and cargo would only queue anyway.
    static BUILD: OnceLock<Mutex<()>> = OnceLock::new();
    let variable = format!(
        "CHAT_CLUSTER_{}_BIN",
        name.trim_start_matches("chat-").to_ascii_uppercase()
    );
    if let Some(explicit) = std::env::var_os(variable) {
        return PathBuf::from(explicit);
    }
    let exe = std::env::current_exe().expect("test executable");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let built = profile_dir.join(name);
    let _one_build = BUILD
        .get_or_init(|| Mutex::new(()))
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // `cargo test --workspace` (the project's test command) has built it already.
    if built.is_file() {
        return built;
    }
    let mut build = Command::new(env!("CARGO"));
    build.args(["build", "--quiet", "-p", package, "--bin", name]);
    if profile_dir
        .file_name()
        .is_some_and(|name| name == "release")
    {
        build.arg("--release");
    }
    let status = build.status().expect("cargo runs");
    assert!(status.success(), "building {name} failed");
    assert!(built.is_file(), "no {}", built.display());
    built
}

/// The chat-node binary.
pub fn node_binary() -> PathBuf {
    binary("chat-node", "chat-node")
}

/// The chat-bootstrap and chat-nameserver binaries, as the launcher takes them.
pub fn service_binaries() -> chat_cluster::ServiceOptions {
    chat_cluster::ServiceOptions {
        bootstrap_bin: Some(binary("chat-bootstrap", "chat-bootstrap")),
        nameserver_bin: Some(binary("chat-nameserver", "chat-nameserver")),
        ..chat_cluster::ServiceOptions::default()
    }
}

/// Whether `pid` is a running process; a zombie (exited, not yet reaped by whichever process
/// adopted it) is not.
pub fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}
