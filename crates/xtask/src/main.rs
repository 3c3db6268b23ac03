//! `cargo xtask <task>`: the project's commands, runnable on a fresh Debian 12 machine that has
//! only the Rust toolchain. Each task installs what it needs before it starts.
//!
//! - `cargo xtask run [--nodes N] [--topology T] [--run-dir DIR]`: the main job, a local
//!   cluster of real processes on loopback.
//! - `cargo xtask test`: formatting, lints and every test.
//! - `cargo xtask bench`: every benchmark (they print figures; none fails on a slow machine).

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (task, rest) = match args.split_first() {
        Some((task, rest)) => (task.as_str(), rest),
        None => ("help", &[][..]),
    };
    let result = match task {
        "run" => run(rest),
        "test" => test(),
        "bench" => cargo(&["bench", "--workspace"]),
        "help" | "--help" | "-h" => {
            println!("usage: cargo xtask <run|test|bench>");
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

/// System packages the tasks need. libzmq and SQLite are built from source by their crates and
/// .proto files are compiled in pure Rust, so the list is empty for now; later capabilities
/// (a browser for page tests, systemd tooling for unit tests) add theirs here.
const SYSTEM_PACKAGES: &[(&str, &str)] = &[];

fn ensure_system_packages() -> Result<(), String> {
    let missing: Vec<&str> = SYSTEM_PACKAGES
        .iter()
        .filter(|(binary, _)| !on_path(binary))
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

fn on_path(binary: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(binary).is_file()))
        .unwrap_or(false)
}

fn test() -> Result<(), String> {
    ensure_system_packages()?;
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
    cargo(&["test", "--workspace", "--lib", "--bins", "--tests"])?;
    cargo(&["test", "--workspace", "--doc"])
}

fn run(rest: &[String]) -> Result<(), String> {
    ensure_system_packages()?;
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

fn cargo(args: &[&str]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    status(Command::new(cargo).args(args))
}

fn status(command: &mut Command) -> Result<(), String> {
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
