//! Real chat-node processes on loopback, started and poked through the library and the CLI.
//!
//! Port plans: these tests use their own bases (21000, 21100; the latter's services on
//! 25100..=25102) far from the defaults and from each other, so they can run in parallel with
//! each other and with other crates' tests.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use chat_cluster::{ClusterFile, ClusterOptions, LocalCluster, NodeOutput, NodeSignal, Topology};
use nix::sys::signal::kill;
use nix::unistd::Pid;
use serde_json::Value;
use support::{alive, node_binary, service_binaries};

const DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

fn answered(status: &Value) -> bool {
    status.get("error").is_none() && status.get("id").is_some()
}

async fn poll_until(
    cluster: &LocalCluster,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let statuses = cluster.status_all().await;
        if done(&statuses) {
            return statuses;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not reached before the deadline: {statuses:#?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test]
async fn cluster_starts_kills_restarts_and_stops_nodes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = ClusterOptions {
        base_port: 21_000,
        node_bin: Some(node_binary()),
        output: NodeOutput::Files,
        ..ClusterOptions::new(3, Topology::Line, dir.path().join("run"))
    };
    let mut cluster = LocalCluster::up(options).await.expect("cluster starts");

    // A node answers /status before its control loop has read its store and listed its
    // neighbours: wait for the neighbours too.
    let statuses = poll_until(
        &cluster,
        "all nodes answering with their neighbours",
        |all| {
            all.iter().all(|status| {
                answered(status)
                    && status["neighbors"]
                        .as_array()
                        .is_some_and(|neighbors| !neighbors.is_empty())
            })
        },
    )
    .await;
    let ids: Vec<u64> = statuses
        .iter()
        .filter_map(|status| status["id"].as_u64())
        .collect();
    assert_eq!(ids, vec![1, 2, 3]);
    let recorded = ClusterFile::read(cluster.run_dir()).expect("cluster.json");
    for (status, node) in statuses.iter().zip(&recorded.nodes) {
        assert_eq!(
            status["pid"].as_u64(),
            node.pid.map(u64::from),
            "pid in status and cluster.json"
        );
    }
    let middle_neighbors: Vec<u64> = statuses[1]["neighbors"]
        .as_array()
        .expect("neighbors")
        .iter()
        .filter_map(|neighbor| neighbor["id"].as_u64())
        .collect();
    assert_eq!(
        middle_neighbors,
        vec![1, 3],
        "line topology: node 2 sits between 1 and 3"
    );
    let config =
        std::fs::read_to_string(cluster.run_dir().join("2/node.toml")).expect("node 2 config");
    assert!(
        config.contains("admin_port = 24002")
            && config.contains("enabled = false")
            && config.contains("addresses = []"),
        "nodes only: no bootstrap, no nameserver: {config}"
    );
    assert!(
        recorded.services.is_empty(),
        "no services recorded: {recorded:?}"
    );

    let first_pid = statuses[1]["pid"].as_u64().expect("pid");
    cluster.kill(2, NodeSignal::Kill).expect("kill node 2");
    cluster.wait_exit(2).await.expect("node 2 exits");
    let statuses = cluster.status_all().await;
    assert!(
        statuses[1]["error"].is_string(),
        "a dead node reports an error: {statuses:#?}"
    );
    assert_eq!(statuses[1]["id"], 2);
    assert!(matches!(
        cluster.kill(2, NodeSignal::Term),
        Err(chat_cluster::ClusterError::NotRunning(2))
    ));

    cluster.start(2).await.expect("restart node 2");
    let statuses = poll_until(&cluster, "node 2 back", |all| answered(&all[1])).await;
    let second_pid = statuses[1]["pid"].as_u64().expect("pid");
    assert_ne!(first_pid, second_pid, "a new process");
    assert!(matches!(
        cluster.start(2).await,
        Err(chat_cluster::ClusterError::AlreadyRunning(2))
    ));

    let pids: Vec<u64> = statuses
        .iter()
        .filter_map(|status| status["pid"].as_u64())
        .collect();
    cluster.down().await.expect("stops");
    assert!(
        pids.iter().all(|&pid| !alive(pid)),
        "every node stopped: {pids:?}"
    );
}

fn cluster_cli(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chat-cluster"));
    command.args(args);
    command
}

/// `chat-cluster status --services`: `{"nodes": [...], "services": [...]}`.
fn cli_status(run_dir: &str) -> Value {
    let output = cluster_cli(&["status", "--services", "--run-dir", run_dir])
        .output()
        .expect("status runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("a JSON object")
}

fn listed<'a>(status: &'a Value, key: &str) -> &'a [Value] {
    status[key].as_array().map_or(&[], Vec::as_slice)
}

/// Polls `chat-cluster status` until `done` accepts the nodes' statuses; returns the whole
/// answer.
fn cli_poll(run_dir: &str, what: &str, done: impl Fn(&[Value]) -> bool) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if Path::new(run_dir).join("cluster.json").is_file() {
            let status = cli_status(run_dir);
            if done(listed(&status, "nodes")) {
                return status;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{what} not reached before the deadline"
        );
        std::thread::sleep(POLL);
    }
}

/// A running `chat-cluster up`; a failing test still stops it (and so its nodes) with Ctrl-C.
struct UpProcess(std::process::Child);

impl UpProcess {
    fn interrupt_and_wait(&mut self) -> Option<std::process::ExitStatus> {
        let pid = Pid::from_raw(i32::try_from(self.0.id()).expect("pid fits"));
        let _ = kill(pid, nix::sys::signal::Signal::SIGINT);
        let deadline = Instant::now() + DEADLINE;
        while Instant::now() < deadline {
            if let Ok(Some(exit)) = self.0.try_wait() {
                return Some(exit);
            }
            std::thread::sleep(POLL);
        }
        None
    }
}

impl Drop for UpProcess {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) && self.interrupt_and_wait().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn cli_up_status_kill_start_and_ctrl_c() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run_dir = dir.path().join("run");
    let run_dir_text = run_dir.to_str().expect("utf-8").to_owned();
    let output_path = dir.path().join("up.out");
    let node_bin = node_binary();
    let services = service_binaries();
    let path_text = |path: Option<&std::path::PathBuf>| {
        path.and_then(|path| path.to_str())
            .expect("utf-8 path")
            .to_owned()
    };
    let bootstrap_bin = path_text(services.bootstrap_bin.as_ref());
    let nameserver_bin = path_text(services.nameserver_bin.as_ref());
    let mut up = UpProcess(
        cluster_cli(&[
            "up",
            "--nodes",
            "2",
            "--topology",
            "line",
            "--run-dir",
            &run_dir_text,
            "--base-port",
            "21100",
            "--node-bin",
            node_bin.to_str().expect("utf-8"),
            "--bootstrap-bin",
            &bootstrap_bin,
            "--nameserver-bin",
            &nameserver_bin,
        ])
        .stdout(std::fs::File::create(&output_path).expect("output file"))
        .stderr(std::fs::File::create(dir.path().join("up.err")).expect("error file"))
        .spawn()
        .expect("chat-cluster up starts"),
    );

    let status = cli_poll(&run_dir_text, "both nodes answering", |all| {
        all.len() == 2 && all.iter().all(answered)
    });
    assert!(listed(&status, "nodes")
        .iter()
        .all(|node| node["pid"].is_u64()));
    // Without --services: the contract, one JSON array of node statuses, each with its pid.
    let output = cluster_cli(&["status", "--run-dir", &run_dir_text])
        .output()
        .expect("status runs");
    let plain: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let plain = plain.as_array().expect("a JSON array");
    assert_eq!(plain.len(), 2);
    assert!(plain.iter().all(|node| node["pid"].is_u64()), "{plain:?}");
    let services = listed(&status, "services");
    let names: Vec<&str> = services
        .iter()
        .filter_map(|service| service["service"].as_str())
        .collect();
    assert_eq!(names, ["bootstrap", "nameserver"], "{status:#}");
    assert!(
        services
            .iter()
            .all(|service| service["pid"].is_u64() && service.get("error").is_none()),
        "both services answer: {status:#}"
    );
    assert_eq!(services[1]["http"], "http://127.0.0.1:25102/");
    let service_pids: Vec<u64> = services
        .iter()
        .filter_map(|service| service["pid"].as_u64())
        .collect();
    let printed = std::fs::read_to_string(&output_path).expect("up output");
    assert!(
        printed.contains("open http://127.0.0.1:25102/ in a browser"),
        "the front door is announced: {printed}"
    );

    let killed = cluster_cli(&[
        "kill",
        "--run-dir",
        &run_dir_text,
        "--id",
        "2",
        "--signal",
        "KILL",
    ])
    .status()
    .expect("kill runs");
    assert!(killed.success());
    cli_poll(&run_dir_text, "node 2 down", |all| {
        all[1]["error"].is_string()
    });
    let killed_pid = ClusterFile::read(&run_dir).expect("cluster.json").nodes[1]
        .pid
        .expect("pid");
    let deadline = Instant::now() + DEADLINE;
    while alive(u64::from(killed_pid)) {
        assert!(Instant::now() < deadline, "killed node 2 still running");
        std::thread::sleep(POLL);
    }
    let started = cluster_cli(&["start", "--run-dir", &run_dir_text, "--id", "2"])
        .status()
        .expect("start runs");
    assert!(started.success());
    let status = cli_poll(&run_dir_text, "node 2 back", |all| answered(&all[1]));
    let pids: Vec<u64> = listed(&status, "nodes")
        .iter()
        .filter_map(|status| status["pid"].as_u64())
        .collect();

    let exit = up
        .interrupt_and_wait()
        .expect("chat-cluster up stops on Ctrl-C");
    assert!(exit.success(), "{exit:?}");
    assert!(
        pids.iter().all(|&pid| !alive(pid)),
        "every node stopped, the restarted one too: {:?}",
        pids.iter()
            .map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default())
            .collect::<Vec<_>>()
    );
    assert!(
        service_pids.iter().all(|&pid| !alive(pid)),
        "both services stopped: {service_pids:?}"
    );
    // Logs are on stderr, so prefixed on ours.
    let output = std::fs::read_to_string(dir.path().join("up.err")).expect("output");
    for prefix in ["[1] ", "[bootstrap] ", "[nameserver] "] {
        assert!(
            output.lines().any(|line| line.starts_with(prefix)),
            "output prefixed {prefix:?}: {output}"
        );
    }
}
