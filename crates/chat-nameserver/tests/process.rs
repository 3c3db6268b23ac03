//! The real `chat-nameserver` binary: flags override the file, it redirects, and it stops
//! cleanly on SIGTERM.

use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use chat_nameserver::client::register_lease;

const DEADLINE: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Waits for the process to exit, yielding to the runtime so this test's own connections
/// keep working (a blocked runtime would hold them open through the shutdown).
async fn wait_exit_async(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "chat-nameserver did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn stderr_of(child: Child) -> String {
    let output = child.wait_with_output().expect("output");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn redirects_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("nameserver.toml");
    // The file's addresses are overridden by the flags below.
    std::fs::write(
        &config,
        "grpc_listen = \"127.0.0.1:1\"\nhttp_listen = \"127.0.0.1:1\"\n",
    )
    .expect("config");
    let (grpc_port, http_port) = (free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_chat-nameserver"))
        .arg("--config")
        .arg(&config)
        .arg("--grpc-listen")
        .arg(format!("127.0.0.1:{grpc_port}"))
        .arg("--http-listen")
        .arg(format!("127.0.0.1:{http_port}"))
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn chat-nameserver");

    let grpc = format!("127.0.0.1:{grpc_port}");
    let deadline = Instant::now() + DEADLINE;
    while let Err(e) = register_lease(
        &grpc,
        Duration::from_secs(2),
        1,
        "127.0.0.1:8081",
        Duration::ZERO,
    )
    .await
    {
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("chat-nameserver exited with {status}: {}", stderr_of(child));
        }
        assert!(Instant::now() < deadline, "never answered: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let response = client
        .get(format!("http://127.0.0.1:{http_port}/login?next=%2F"))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status().as_u16(), 307);
    assert_eq!(
        response.headers()["location"],
        "http://127.0.0.1:8081/login?next=%2F"
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
