//! `cargo xtask soak [--seeds N] [--chunk C] [--threads T] [--only NAME] [--ledger FILE]`: the
//! control plane's simulator soak (100,000 seeds of every scenario by default, release build),
//! run in chunks of seeds that are recorded in a ledger so that a stopped soak resumes where it
//! was.
//!
//! On 2 shared cores the whole soak takes hours, often more than one sitting; the ledger makes
//! the hours add up. Each line records a chunk that passed, under the fingerprint of what the
//! simulator runs: the git trees of `crates/chat-control` and `crates/chat-wire`. A change there
//! changes the fingerprint, and the soak starts again from nothing; a tree with uncommitted
//! changes in them is refused, since its chunks could not be told apart from the commit's.
//!
//! The ledger is a tracked file, `docs/sim-soak.ledger`, committed beside the code it vouches
//! for: a build directory does not outlive a machine, and a fresh clone should still be able to
//! tell whether its control plane passed the soak (the fingerprint says which code did).

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::flag_value;
use crate::system::{cargo_command, ensure_system_packages, output, status, workspace_root, Needs};

/// The crates whose code decides what a simulated run does.
const SIMULATED: &[&str] = &["crates/chat-control", "crates/chat-wire"];

struct Options {
    seeds: u64,
    chunk: u64,
    threads: usize,
    only: Option<String>,
    ledger: PathBuf,
}

/// Where the soak's record lives by default, relative to the workspace root.
const LEDGER: &str = "docs/sim-soak.ledger";

pub(crate) fn soak(rest: &[String]) -> Result<(), String> {
    let number = |flag: &str, default: u64| -> Result<u64, String> {
        match flag_value(rest, flag)? {
            None => Ok(default),
            Some(text) => text
                .parse::<u64>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| format!("{flag} wants a number >= 1, not `{text}`")),
        }
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let options = Options {
        seeds: number("--seeds", 100_000)?,
        chunk: number("--chunk", 10_000)?,
        threads: usize::try_from(number("--threads", cores)?).unwrap_or(1),
        only: flag_value(rest, "--only")?.map(str::to_owned),
        ledger: flag_value(rest, "--ledger")?
            .map_or_else(|| workspace_root().join(LEDGER), PathBuf::from),
    };
    ensure_system_packages(Needs::Build)?;
    let fingerprint = fingerprint()?;
    let ledger = &options.ledger;
    let done = passed_chunks(ledger, &fingerprint, options.seeds);
    let scenarios: Vec<String> = scenarios()?
        .into_iter()
        .filter(|name| options.only.as_ref().is_none_or(|only| name == only))
        .collect();
    if scenarios.is_empty() {
        return Err("no scenario matches --only".to_owned());
    }
    eprintln!(
        "xtask soak: {} scenarios x {} seeds in chunks of {}, {} threads; fingerprint {fingerprint}; ledger {}",
        scenarios.len(),
        options.seeds,
        options.chunk,
        options.threads,
        ledger.display()
    );
    let started = Instant::now();
    for name in &scenarios {
        let mut skip = 0;
        while skip < options.seeds {
            let end = (skip + options.chunk).min(options.seeds);
            if done.contains(&(name.clone(), skip, end)) {
                skip = end;
                continue;
            }
            let chunk_started = Instant::now();
            run_chunk(name, skip, end, options.threads)?;
            // Each chunk builds what is checked out then: a commit to the simulated crates
            // during the soak would record that code's chunks under the old fingerprint.
            if self::fingerprint()? != fingerprint {
                return Err(format!(
                    "{} changed during the soak; start it again",
                    SIMULATED.join(" or ")
                ));
            }
            let seconds = chunk_started.elapsed().as_secs();
            let line = format!(
                "{fingerprint} {name} {skip} {end} {} passed {seconds}s\n",
                options.seeds
            );
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(ledger)
                .and_then(|mut file| file.write_all(line.as_bytes()))
                .map_err(|e| format!("cannot record in {}: {e}", ledger.display()))?;
            eprintln!("xtask soak: {name} seeds {skip}..{end} passed in {seconds} s");
            skip = end;
        }
    }
    eprintln!(
        "xtask soak: every chunk passed; this sitting took {} s (the ledger has each chunk's time)",
        started.elapsed().as_secs()
    );
    Ok(())
}

/// The simulated crates' committed trees; an error if either has uncommitted changes.
fn fingerprint() -> Result<String, String> {
    let root = workspace_root();
    let dirty = Command::new("git")
        .current_dir(&root)
        .args(["status", "--porcelain", "--"])
        .args(SIMULATED)
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !dirty.stdout.is_empty() {
        return Err(format!(
            "uncommitted changes in {}: commit them first, so the ledger names what passed",
            SIMULATED.join(" ")
        ));
    }
    let trees: Result<Vec<String>, String> = SIMULATED
        .iter()
        .map(|dir| {
            output(Command::new("git").current_dir(&root).args([
                "rev-parse",
                "--short=12",
                &format!("HEAD:{dir}"),
            ]))
            .map(|tree| tree.trim().to_owned())
        })
        .collect();
    Ok(trees?.join("+"))
}

/// Chunks already passed under this fingerprint and total: (scenario, first, end).
fn passed_chunks(ledger: &Path, fingerprint: &str, seeds: u64) -> BTreeSet<(String, u64, u64)> {
    let text = std::fs::read_to_string(ledger).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                [print, name, skip, end, total, "passed", ..]
                    if *print == fingerprint && total.parse() == Ok(seeds) =>
                {
                    Some((name.to_string(), skip.parse().ok()?, end.parse().ok()?))
                }
                _ => None,
            }
        })
        .collect()
}

fn sim_test() -> Command {
    let mut command = cargo_command();
    command.args([
        "test",
        "--release",
        "--quiet",
        "-p",
        "chat-control",
        "--test",
        "sim",
        "--",
    ]);
    command
}

/// The scenarios of the simulator's test file.
fn scenarios() -> Result<Vec<String>, String> {
    let listed = output(sim_test().args(["--list", "--format", "terse"]))?;
    Ok(listed
        .lines()
        .filter_map(|line| line.strip_suffix(": test"))
        // `seed_*` tests replay one regression seed each; every run of the suite has them.
        .filter(|name| !name.starts_with("seed_"))
        .map(str::to_owned)
        .collect())
}

fn run_chunk(name: &str, skip: u64, end: u64, threads: usize) -> Result<(), String> {
    status(
        sim_test()
            .args(["--exact", name, "--test-threads=1"])
            .env("CHAT_SIM_SEEDS", end.to_string())
            .env("CHAT_SIM_SKIP", skip.to_string())
            .env("CHAT_SIM_THREADS", threads.to_string()),
    )
    .map_err(|e| format!("{name} failed in seeds {skip}..{end} (its output is above): {e}"))
}
