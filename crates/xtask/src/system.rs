//! Running commands and installing the Debian packages a task needs.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What a task is about to do, which decides the system packages it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Needs {
    /// Compile the workspace: a C++ compiler for libzmq (the zmq crate builds it from source).
    Build,
    /// Build, package and test the package in a booted container.
    Test,
}

/// (a program, the Debian package that provides it). libzmq and SQLite are built from source
/// by their crates and .proto files are compiled in pure Rust, so a C++ compiler is all a
/// build needs.
const BUILD_PACKAGES: &[(&str, &str)] = &[("g++", "g++")];

/// What packaging and the tests add: dpkg-shlibdeps for the package's `Depends:`, strip for
/// its binaries, lintian to check it, debootstrap for the container's tree, systemd-nspawn to
/// boot it, and Chromium with chromedriver for the browser test.
const PACKAGE_TEST_PACKAGES: &[(&str, &str)] = &[
    ("dpkg-shlibdeps", "dpkg-dev"),
    ("strip", "binutils"),
    ("lintian", "lintian"),
    ("debootstrap", "debootstrap"),
    ("systemd-nspawn", "systemd-container"),
    // The browser test (crates/chat-cluster/tests/browser.rs) drives Debian's Chromium through
    // its WebDriver server.
    ("chromium", "chromium"),
    ("chromedriver", "chromium-driver"),
];

/// Installs (apt-get) the packages whose programs are missing.
pub(crate) fn ensure_system_packages(needs: Needs) -> Result<(), String> {
    let wanted: Vec<&(&str, &str)> = match needs {
        Needs::Build => BUILD_PACKAGES.iter().collect(),
        Needs::Test => BUILD_PACKAGES.iter().chain(PACKAGE_TEST_PACKAGES).collect(),
    };
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(program, _)| find_program(program).is_none())
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    status(Command::new("apt-get").arg("update").arg("-qq"))?;
    status(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// The program's path: on PATH, or in an sbin directory (absent from a user's PATH).
pub(crate) fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// The workspace root (this crate sits in `crates/xtask`).
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/xtask has two parents")
        .to_owned()
}

/// Cargo's target directory: `CARGO_TARGET_DIR` when set, else `target/` in the workspace.
pub(crate) fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// Runs cargo (the one running this xtask) with `args` in the workspace root.
pub(crate) fn cargo(args: &[&str]) -> Result<(), String> {
    status(cargo_command().args(args))
}

/// A `cargo` command in the workspace root.
pub(crate) fn cargo_command() -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    command.current_dir(workspace_root());
    command
}

/// Runs `command`, its output going to ours; an error unless it succeeds.
pub(crate) fn status(command: &mut Command) -> Result<(), String> {
    let shown = format!("{command:?}");
    let status = command
        .status()
        .map_err(|e| format!("cannot start {shown}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown} failed with {status}"))
    }
}

/// Runs `command` and returns its stdout; an error (with its stderr) unless it succeeds.
pub(crate) fn output(command: &mut Command) -> Result<String, String> {
    let shown = format!("{command:?}");
    let output = command
        .output()
        .map_err(|e| format!("cannot start {shown}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{shown} failed with {}:\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}
