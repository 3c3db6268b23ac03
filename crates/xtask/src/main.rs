//! `cargo xtask <task>`: the project's commands, runnable on a fresh Debian 12 machine that has
//! only the Rust toolchain. Each task installs what it needs before it starts.
//!
//! - `cargo xtask run [--nodes N] [--topology T] [--run-dir DIR]`: the main job, a local
//!   cluster of real processes on loopback.
//! - `cargo xtask test [--repeat N]`: formatting, lints, every test, then the Debian package
//!   built from the tests' binaries and installed in a booted Debian container (see
//!   [`container`]). `--repeat N` runs the test suite N times and reports which tests failed
//!   and how often.
//! - `cargo xtask deb`: the release package, `target/debian/chat-system_*.deb`, checked by
//!   lintian.
//! - `cargo xtask e2e [--deb PATH]`: the container test alone (packages the test build first
//!   unless given a .deb).
//! - `cargo xtask bench`: every benchmark (they print figures; none fails on a slow machine).
//! - `cargo xtask soak [--seeds N] [--chunk C] [--threads T] [--only NAME] [--ledger FILE]`: the
//!   simulator soak every control-plane change must pass, resumable, recorded in
//!   `docs/sim-soak.ledger` (see [`soak`]).

mod container;
mod deb;
mod repeat;
mod soak;
mod system;

use std::process::ExitCode;

use crate::system::{cargo, ensure_system_packages, Needs};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (task, rest) = match args.split_first() {
        Some((task, rest)) => (task.as_str(), rest),
        None => ("help", &[][..]),
    };
    let result = match task {
        "run" => run(rest),
        "test" => test(rest),
        "deb" => deb::release_package().map(|_| ()),
        "e2e" => e2e(rest),
        "bench" => cargo(&["bench", "--workspace"]),
        "soak" => soak::soak(rest),
        "help" | "--help" | "-h" => {
            println!(
                "usage: cargo xtask <run|test [--repeat N]|deb|e2e [--deb PATH]|bench|soak [--seeds N]>\n\
                 see crates/xtask/src/main.rs"
            );
            Ok(())
        }
        other => Err(format!("unknown task `{other}`; try `cargo xtask help`")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The test suite (`cargo test` without the doc tests); its build is also what the test
/// package is made from.
const TEST_SUITE: &[&str] = &["test", "--workspace", "--lib", "--bins", "--tests"];

/// The value following `flag` in `args`, if the flag is there.
fn flag_value<'a>(args: &'a [String], flag: &str) -> Result<Option<&'a str>, String> {
    match args.iter().position(|arg| arg == flag) {
        None => Ok(None),
        Some(at) => args
            .get(at + 1)
            .map(|value| Some(value.as_str()))
            .ok_or_else(|| format!("{flag} needs a value")),
    }
}

fn test(rest: &[String]) -> Result<(), String> {
    let repeat = match flag_value(rest, "--repeat")? {
        None => 1,
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| format!("--repeat wants a number >= 1, not `{text}`"))?,
    };
    ensure_system_packages(Needs::Test)?;
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    // Benchmarks are compiled (clippy --all-targets checks them) but not run here: they
    // measure, and in a debug build they would only cost time.
    repeat::run_suite(TEST_SUITE, repeat)?;
    cargo(&["test", "--workspace", "--doc"])?;
    // The package is made from the binaries the tests just built (one build for clippy, the
    // tests and the package): the container test checks packaging and units, not speed.
    let package = deb::test_package()?;
    container::end_to_end(&package)
}

fn e2e(rest: &[String]) -> Result<(), String> {
    ensure_system_packages(Needs::Test)?;
    let package = match flag_value(rest, "--deb")? {
        Some(path) => std::path::PathBuf::from(path),
        None => deb::test_package()?,
    };
    container::end_to_end(&package)
}

fn run(rest: &[String]) -> Result<(), String> {
    ensure_system_packages(Needs::Build)?;
    cargo(&["build", "--bins"])?;
    let mut args = vec!["run", "--quiet", "--bin", "chat-cluster", "--", "up"];
    let defaults = [
        ("--nodes", "5"),
        ("--topology", "ring"),
        ("--run-dir", "run"),
    ];
    for (flag, value) in defaults {
        if !rest.iter().any(|a| a == flag) {
            args.extend([flag, value]);
        }
    }
    args.extend(rest.iter().map(String::as_str));
    cargo(&args)
}
