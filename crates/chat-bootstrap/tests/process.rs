//! The real `chat-bootstrap` binary: starts from its config file, serves, stops cleanly on
//! SIGTERM, and refuses to start on a corrupt registry.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use chat_bootstrap::{client, NodeAddress};

const DEADLINE: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn spawn(config: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_chat-bootstrap"))
        .arg("--config")
        .arg(config)
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn chat-bootstrap")
}

fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "chat-bootstrap did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Like `wait_exit`, but yields to the runtime so this test's own connections keep working.
async fn wait_exit_async(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "chat-bootstrap did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn stderr_of(child: Child) -> String {
    let output = child.wait_with_output().expect("output");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn serves_registrations_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = dir.path().join("bootstrap.toml");
    let state = dir.path().join("state");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\nstate_dir = {:?}\n",
            state.display().to_string()
        ),
    )
    .expect("config");
    let mut child = spawn(&config);

    let addr = format!("127.0.0.1:{port}");
    let me = NodeAddress {
        id: 1,
        host: "127.0.0.1".into(),
        port: 46001,
    };
    let deadline = Instant::now() + DEADLINE;
    loop {
        match client::register(&addr, Duration::from_secs(2), me.clone()).await {
            Ok(neighbors) => {
                assert!(neighbors.is_empty());
                break;
            }
            Err(e) => {
                if let Some(status) = child.try_wait().expect("try_wait") {
                    panic!("chat-bootstrap exited with {status}: {}", stderr_of(child));
                }
                assert!(Instant::now() < deadline, "never answered: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert!(
        state.join("registry.json").exists(),
        "registry written to the configured state_dir"
    );

    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = wait_exit_async(&mut child).await;
    assert!(
        status.success(),
        "exit status {status}: {}",
        stderr_of(child)
    );
}

#[test]
fn corrupt_registry_stops_start_up_with_the_file_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = dir.path().join("registry.json");
    std::fs::write(&registry, b"{broken").expect("registry");
    let config = dir.path().join("bootstrap.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{}\"\nstate_dir = {:?}\n",
            free_port(),
            dir.path().display().to_string()
        ),
    )
    .expect("config");
    let mut child = spawn(&config);
    let status = wait_exit(&mut child);
    assert!(!status.success());
    let stderr = stderr_of(child);
    assert!(
        stderr.contains(&registry.display().to_string()),
        "stderr: {stderr}"
    );
    assert_eq!(std::fs::read(&registry).expect("kept"), b"{broken");
}

#[test]
fn missing_config_file_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = spawn(&dir.path().join("absent.toml"));
    // Exit code 2, a configuration error: the unit's RestartPreventExitStatus=2 stops there.
    assert_eq!(wait_exit(&mut child).code(), Some(2));
    assert!(stderr_of(child).contains("absent.toml"));
}
