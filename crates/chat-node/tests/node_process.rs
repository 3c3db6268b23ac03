//! Starts the real `chat-node` binary on loopback and checks its admin endpoint, its operator
//! subcommands, its clean exit on SIGTERM and its refusal of a bad configuration.

use std::ffi::OsStr;
use std::net::TcpListener;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const NODE: &str = env!("CARGO_BIN_EXE_chat-node");
const DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

fn free_ports<const N: usize>() -> [u16; N] {
    // Hold every listener until all are bound so the ports differ.
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind port 0"))
        .collect();
    let ports: Vec<u16> = listeners
        .iter()
        .map(|listener| listener.local_addr().expect("bound").port())
        .collect();
    ports.try_into().expect("N ports")
}

fn node_command(args: &[&str]) -> Command {
    let mut command = Command::new(NODE);
    command.args(args);
    // The test's own environment must not reconfigure the node.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CHAT_NODE_") {
            command.env_remove(&name);
        }
    }
    command
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET");
    command
}

struct RunningNode {
    child: Child,
    config: PathBuf,
    stderr: PathBuf,
    admin_port: u16,
}

impl RunningNode {
    fn start(dir: &Path) -> Self {
        Self::start_with_env(dir, &[])
    }

    fn start_with_env(dir: &Path, env: &[(&str, &OsStr)]) -> Self {
        let [control, data, http, admin] = free_ports::<4>();
        let config = dir.join("node.toml");
        let secret = dir.join("cluster.key");
        std::fs::write(&secret, format!("{}\n", "ab".repeat(32))).expect("write secret");
        std::fs::write(
            &config,
            format!(
                "id = 4\ncontrol_port = {control}\ndata_port = {data}\nhttp_port = {http}\n\
                 admin_port = {admin}\nstate_dir = {:?}\n\n[cluster]\nsize = 3\nsecret_file = {secret:?}\n\n\
                 [bootstrap]\nenabled = false\n\n\
                 [[neighbors]]\nid = 5\nhost = \"127.0.0.1\"\nport = 1025\n",
                dir.join("state")
            ),
        )
        .expect("write config");
        let stderr = dir.join("stderr.log");
        let child = node_command(&["--config", config.to_str().expect("utf-8 path")])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("chat-node starts");
        Self {
            child,
            config,
            stderr,
            admin_port: admin,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "node did not exit; logs:\n{}",
                self.logs()
            );
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `/status` until `done` accepts it.
async fn poll_status(
    node: &RunningNode,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Ok(response) = client.get(node.url("/status")).send().await {
            if response.status().is_success() {
                let status = response.json().await.expect("status is JSON");
                if done(&status) {
                    return status;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no /status before the deadline; logs:\n{}",
            node.logs()
        );
        tokio::time::sleep(POLL).await;
    }
}

fn run_to_end(args: &[&str]) -> Output {
    node_command(args).output().expect("chat-node runs")
}

#[tokio::test]
async fn node_serves_status_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut node = RunningNode::start(dir.path());

    // Its one neighbour never answers, so after a short wait it elects itself: a lone node
    // is writer and input. Its HTTP server starts a moment after it leads, so wait for ready.
    let status = poll_status(&node, |s| s["leader"] == 4 && s["ready"] == true).await;
    assert_eq!(status["id"], 4);
    assert_eq!(status["pid"], node.child.id());
    assert_eq!(status["neighbors"][0]["id"], 5);
    assert_eq!(status["neighbors"][0]["state"], "off");
    assert_eq!(status["roles"], serde_json::json!(["writer", "input"]));
    assert_eq!(status["ready"], true);

    let metrics = reqwest::get(node.url("/metrics"))
        .await
        .expect("metrics answer");
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.expect("text");
    assert!(
        text.lines().any(|line| line == "chat_node_neighbors_off 1"),
        "{text}"
    );

    // The operator subcommands find the node through the same config file.
    let config = node.config.to_str().expect("utf-8 path").to_owned();
    let shown = run_to_end(&["status", "--config", &config]);
    assert!(
        shown.status.success(),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.starts_with("node 4  pid "), "{shown}");
    assert!(shown.contains("off  never heard from"), "{shown}");
    let raw = run_to_end(&["status", "--json", "--config", &config]);
    let raw: serde_json::Value = serde_json::from_slice(&raw.stdout).expect("--json prints JSON");
    assert_eq!(raw["id"], 4);
    let effective = run_to_end(&["config", "--config", &config]);
    let effective = String::from_utf8_lossy(&effective.stdout);
    assert!(
        effective
            .lines()
            .any(|line| line.starts_with("id = 4") && line.ends_with("node.toml")),
        "{effective}"
    );

    let pid = Pid::from_raw(i32::try_from(node.child.id()).expect("pid fits"));
    kill(pid, Signal::SIGTERM).expect("signal the node");
    let exit = node.wait_exit();
    assert_eq!(exit.code(), Some(0), "logs:\n{}", node.logs());
    assert!(node.logs().contains("shutting down"), "{}", node.logs());
}

#[test]
fn bad_configuration_exits_2_with_one_line_naming_key_value_and_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("node.toml");
    std::fs::write(&config, "id = 4\n[topology]\nheartbeat_ms = \"fast\"\n").expect("write");
    let output = run_to_end(&["--config", config.to_str().expect("utf-8 path")]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("`topology.heartbeat_ms` = \"fast\""),
        "{stderr}"
    );
    assert!(
        stderr.contains(config.to_str().expect("utf-8 path")),
        "{stderr}"
    );
}

#[test]
fn a_config_file_that_does_not_exist_exits_2_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let absent = dir.path().join("absent.toml");
    let output = run_to_end(&[
        "--id",
        "4",
        "--config",
        absent.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("absent.toml"), "{stderr}");
}

#[test]
fn status_of_a_node_that_is_not_running_fails() {
    let [admin] = free_ports::<1>();
    let admin = admin.to_string();
    // An empty file: the built-in defaults, without the machine's /etc/chat-system.
    let config = tempfile::NamedTempFile::new().expect("temp file");
    let output = run_to_end(&[
        "status",
        "--id",
        "4",
        "--admin-port",
        &admin,
        "--config",
        config.path().to_str().expect("utf-8 path"),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("does not answer"));
}

#[tokio::test]
async fn a_node_reports_the_data_epoch_of_its_database() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Three writes already in the node's database, as a replica would hold after a restart.
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    let store = chat_store::Store::open(state.join("chat.db")).expect("store opens");
    for name in ["ada", "bob", "cyd"] {
        store
            .execute(&chat_store::Operation {
                request_id: uuid::Uuid::new_v4(),
                at_ms: 0,
                fingerprint: chat_store::Fingerprint::default(),
                change: chat_store::Change::RegisterUser {
                    user_uuid: uuid::Uuid::new_v4(),
                    username: name.to_owned(),
                    tag: "123".to_owned(),
                    secret: chat_store::SecretHash::new(format!("hash-of-{name}")),
                },
            })
            .expect("write");
    }
    drop(store);

    let node = RunningNode::start(dir.path());
    let status = poll_status(&node, |s| s["ready"] == true).await;
    assert_eq!(
        status["data_epoch"], 3,
        "the election key is the epoch on disk"
    );
}

#[tokio::test]
async fn under_systemd_the_node_reports_ready_with_its_role_and_term_and_feeds_the_watchdog() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    socket
        .set_read_timeout(Some(DEADLINE))
        .expect("read timeout");
    let _node = RunningNode::start_with_env(
        dir.path(),
        &[
            ("NOTIFY_SOCKET", socket_path.as_os_str()),
            ("WATCHDOG_USEC", OsStr::new("400000")),
        ],
    );
    let mut ready = None;
    let mut watchdogs = 0;
    let mut buffer = [0_u8; 4096];
    let deadline = Instant::now() + DEADLINE;
    while (ready.is_none() || watchdogs < 3) && Instant::now() < deadline {
        let Ok(length) = socket.recv(&mut buffer) else {
            break;
        };
        let message = String::from_utf8_lossy(&buffer[..length]).into_owned();
        if message.lines().any(|line| line == "WATCHDOG=1") {
            watchdogs += 1;
        }
        if message.lines().any(|line| line == "READY=1") {
            ready = Some(message);
        }
    }
    let ready = ready.expect("READY=1 before the deadline");
    for part in ["STATUS=roles writer", "leader 4", "term "] {
        assert!(ready.contains(part), "{part:?} missing from {ready:?}");
    }
    assert!(
        ready.contains("; writable") || ready.contains("; read-only"),
        "writability missing from {ready:?}"
    );
    assert!(
        watchdogs >= 3,
        "only {watchdogs} WATCHDOG=1 before the deadline"
    );
}
