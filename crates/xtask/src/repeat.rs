//! Running the test suite several times and counting which tests fail (`cargo xtask test
//! --repeat N`), so a flaky test shows up as "failed 2 of 10" instead of a red run nobody can
//! reproduce.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::thread;

use crate::system::cargo_command;

/// What one run of the suite reported.
#[derive(Debug, Default, PartialEq, Eq)]
struct RunFailures {
    /// Test names the harness reported `FAILED`.
    tests: Vec<String>,
    /// The test targets cargo said failed (`-p chat-node --test cluster`), which also names a
    /// target that crashed before reporting its tests.
    targets: Vec<String>,
}

impl RunFailures {
    fn passed(&self) -> bool {
        self.tests.is_empty() && self.targets.is_empty()
    }

    /// Reads one line of cargo's or the harness's output.
    fn observe(&mut self, line: &str) {
        if let Some(name) = failed_test(line) {
            self.tests.push(name.to_owned());
        } else if let Some(target) = failed_target(line) {
            self.targets.push(target.to_owned());
        }
    }
}

/// `test some::name ... FAILED` → `some::name`.
fn failed_test(line: &str) -> Option<&str> {
    line.strip_prefix("test ")?
        .strip_suffix(" ... FAILED")
        .map(str::trim)
}

/// ``error: test failed, to rerun pass `-p chat-node --test cluster` `` → `-p chat-node --test
/// cluster`.
fn failed_target(line: &str) -> Option<&str> {
    let rest = line.split_once("to rerun pass `")?.1;
    rest.split_once('`').map(|(target, _)| target)
}

/// Runs `cargo <args> --no-fail-fast` `runs` times (its output shown as it comes), then
/// prints which tests and targets failed in how many runs. An error if any run failed.
pub(crate) fn run_suite(args: &[&str], runs: u32) -> Result<(), String> {
    let mut all = Vec::new();
    for run in 1..=runs {
        if runs > 1 {
            eprintln!("xtask: test run {run} of {runs}");
        }
        all.push(run_once(args)?);
    }
    let failed_runs = all.iter().filter(|run| !run.passed()).count();
    if runs > 1 || failed_runs > 0 {
        eprint!("{}", summary(&all));
    }
    if failed_runs == 0 {
        Ok(())
    } else {
        Err(format!("{failed_runs} of {runs} test runs failed"))
    }
}

fn run_once(args: &[&str]) -> Result<RunFailures, String> {
    let mut command = cargo_command();
    command
        .args(args)
        .arg("--no-fail-fast")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let shown = format!("{command:?}");
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {shown}: {e}"))?;
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    // Each stream is echoed as it comes and scanned for failures.
    let from_stderr = thread::spawn(move || echo_and_scan(BufReader::new(stderr), false));
    let mut failures = echo_and_scan(BufReader::new(stdout), true);
    let from_stderr = from_stderr.join().unwrap_or_default();
    failures.tests.extend(from_stderr.tests);
    failures.targets.extend(from_stderr.targets);
    let status = child
        .wait()
        .map_err(|e| format!("cannot wait for {shown}: {e}"))?;
    if !status.success() && failures.passed() {
        // A build error, say: nothing to count, and nothing to repeat either.
        return Err(format!("{shown} failed with {status}"));
    }
    Ok(failures)
}

fn echo_and_scan(reader: impl BufRead, to_stdout: bool) -> RunFailures {
    let mut failures = RunFailures::default();
    for line in reader.lines().map_while(Result::ok) {
        if to_stdout {
            let _ = writeln!(std::io::stdout(), "{line}");
        } else {
            let _ = writeln!(std::io::stderr(), "{line}");
        }
        failures.observe(&line);
    }
    failures
}

/// `N runs, K failed` and a line per failing test or target with its count, most frequent
/// first.
fn summary(runs: &[RunFailures]) -> String {
    let failed = runs.iter().filter(|run| !run.passed()).count();
    let mut text = format!("xtask: {} test runs, {failed} failed\n", runs.len());
    for (kind, counts) in [
        ("test", count(runs.iter().map(|run| &run.tests))),
        ("target", count(runs.iter().map(|run| &run.targets))),
    ] {
        let mut counts: Vec<(String, usize)> = counts.into_iter().collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        for (name, times) in counts {
            text.push_str(&format!(
                "xtask:   {kind} {name}: failed in {times} of {} runs\n",
                runs.len()
            ));
        }
    }
    text
}

/// In how many runs each name appears (once per run, however often a run repeats it).
fn count<'a>(per_run: impl Iterator<Item = &'a Vec<String>>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for names in per_run {
        let mut names: Vec<&String> = names.iter().collect();
        names.sort();
        names.dedup();
        for name in names {
            *counts.entry(name.clone()).or_insert(0) += 1;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_read_from_harness_and_cargo_lines() {
        let mut run = RunFailures::default();
        for line in [
            "test cluster::starts ... ok",
            "test cluster_starts_kills_restarts_and_stops_nodes ... FAILED",
            "error: test failed, to rerun pass `-p chat-cluster --test local_cluster`",
            "test result: FAILED. 3 passed; 1 failed",
        ] {
            run.observe(line);
        }
        assert_eq!(
            run,
            RunFailures {
                tests: vec!["cluster_starts_kills_restarts_and_stops_nodes".to_owned()],
                targets: vec!["-p chat-cluster --test local_cluster".to_owned()],
            }
        );
    }

    #[test]
    fn summary_counts_each_failure_once_per_run() {
        let flaky = RunFailures {
            tests: vec!["a".to_owned(), "a".to_owned()],
            targets: vec!["-p x --test y".to_owned()],
        };
        let runs = [flaky, RunFailures::default(), RunFailures::default()];
        let text = summary(&runs);
        assert!(text.contains("3 test runs, 1 failed"), "{text}");
        assert!(text.contains("test a: failed in 1 of 3 runs"), "{text}");
        assert!(
            text.contains("target -p x --test y: failed in 1 of 3 runs"),
            "{text}"
        );
    }
}
