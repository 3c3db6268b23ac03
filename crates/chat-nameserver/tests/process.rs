//! The real `chat-nameserver` binary: flags override the file, it redirects only to members
//! of the cluster, and it stops cleanly on SIGTERM.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use chat_nameserver::client::{list_input_nodes, register_lease, withdraw_lease};
use chat_nameserver::NameserverError;
use chat_secret::{ClusterSecret, KeyRing, Purpose};

const DEADLINE: Duration = Duration::from_secs(30);
const TIMEOUT: Duration = Duration::from_secs(2);

/// Writes a fresh cluster secret into `dir`; returns its path and its services keys.
fn write_secret(dir: &Path) -> (PathBuf, KeyRing) {
    let path = dir.join("cluster.key");
    std::fs::write(&path, ClusterSecret::generate_file_text()).expect("secret");
    let keys = ClusterSecret::load(&path)
        .expect("load")
        .keys(Purpose::Services);
    (path, keys)
}

/// Starts the binary with `config`, its listeners given by flags.
fn spawn(config: &Path, grpc_port: u16, http_port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_chat-nameserver"))
        .arg("--config")
        .arg(config)
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
        .expect("spawn chat-nameserver")
}

/// Registers node `id`'s lease on `address` with `keys` until the nameserver answers.
async fn register_when_up(child: &mut Child, grpc: &str, keys: &KeyRing, id: u64, address: &str) {
    let deadline = Instant::now() + DEADLINE;
    while let Err(e) = register_lease(grpc, TIMEOUT, Some(keys), id, address, Duration::ZERO).await
    {
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("chat-nameserver exited with {status}");
        }
        assert!(Instant::now() < deadline, "never answered: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn redirect_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

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
    let (secret, keys) = write_secret(dir.path());
    std::fs::write(
        &config,
        format!(
            "grpc_listen = \"127.0.0.1:1\"\nhttp_listen = \"127.0.0.1:1\"\nsecret_file = {:?}\n",
            secret.display().to_string()
        ),
    )
    .expect("config");
    let (grpc_port, http_port) = (free_port(), free_port());
    let mut child = spawn(&config, grpc_port, http_port);

    let grpc = format!("127.0.0.1:{grpc_port}");
    register_when_up(&mut child, &grpc, &keys, 1, "127.0.0.1:8081").await;

    let client = redirect_client();
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

#[test]
fn a_missing_or_malformed_secret_stops_start_up_with_exit_code_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("cluster.key");
    let config = dir.path().join("nameserver.toml");
    std::fs::write(
        &config,
        format!("secret_file = {:?}\n", secret.display().to_string()),
    )
    .expect("config");
    for contents in [None, Some("0123\n")] {
        if let Some(contents) = contents {
            std::fs::write(&secret, contents).expect("secret");
        }
        let mut child = spawn(&config, free_port(), free_port());
        let deadline = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "chat-nameserver did not exit");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(2), "{contents:?}");
        let stderr = stderr_of(child);
        assert!(
            stderr.contains(&secret.display().to_string()),
            "stderr: {stderr}"
        );
    }
}

/// A process without the cluster secret (or with another one) can neither take a lease nor
/// withdraw a member's: each call answers UNAUTHENTICATED (or finds no common key), changes
/// nothing, and is counted; the front door never redirects to the stranger's address.
#[tokio::test]
async fn strangers_can_neither_register_nor_withdraw_and_are_never_redirected_to() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (secret, keys) = write_secret(dir.path());
    let config = dir.path().join("nameserver.toml");
    std::fs::write(
        &config,
        format!("secret_file = {:?}\n", secret.display().to_string()),
    )
    .expect("config");
    let (grpc_port, http_port) = (free_port(), free_port());
    let mut child = spawn(&config, grpc_port, http_port);
    let grpc = format!("127.0.0.1:{grpc_port}");
    let front = format!("http://127.0.0.1:{http_port}");
    let client = redirect_client();

    // Up (a member can list), before any member holds a lease.
    let deadline = Instant::now() + DEADLINE;
    while let Err(e) = list_input_nodes(&grpc, TIMEOUT, Some(&keys)).await {
        assert!(child.try_wait().expect("try_wait").is_none(), "exited: {e}");
        assert!(Instant::now() < deadline, "never answered: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The stranger's registration must not put it in the rotation.
    let other = ClusterSecret::from_parts([0x55; 32], None).keys(Purpose::Services);
    let unsigned =
        register_lease(&grpc, TIMEOUT, None, 66, "evil.example:80", Duration::ZERO).await;
    assert!(
        matches!(&unsigned, Err(NameserverError::Rejected { code, .. }) if *code == tonic::Code::Unauthenticated),
        "{unsigned:?}"
    );
    assert!(
        register_lease(
            &grpc,
            TIMEOUT,
            Some(&other),
            66,
            "evil.example:80",
            Duration::ZERO
        )
        .await
        .is_err(),
        "another secret is refused"
    );
    let answer = client.get(format!("{front}/")).send().await.expect("GET");
    assert_eq!(
        answer.status().as_u16(),
        503,
        "no member: nowhere to send browsers"
    );

    // A member's lease; the stranger can neither withdraw it nor add itself beside it.
    register_when_up(&mut child, &grpc, &keys, 1, "127.0.0.1:8081").await;
    let withdraw = withdraw_lease(&grpc, TIMEOUT, None, 1).await;
    assert!(
        matches!(&withdraw, Err(NameserverError::Rejected { code, .. }) if *code == tonic::Code::Unauthenticated),
        "{withdraw:?}"
    );
    assert!(withdraw_lease(&grpc, TIMEOUT, Some(&other), 1)
        .await
        .is_err());
    assert!(list_input_nodes(&grpc, TIMEOUT, None).await.is_err());
    let listed = list_input_nodes(&grpc, TIMEOUT, Some(&keys))
        .await
        .expect("a member lists");
    assert_eq!(
        listed
            .iter()
            .map(|n| (n.node_id, n.http_address.as_str()))
            .collect::<Vec<_>>(),
        vec![(1, "127.0.0.1:8081")]
    );
    for _ in 0..4 {
        let answer = client.get(format!("{front}/")).send().await.expect("GET");
        assert_eq!(answer.status().as_u16(), 307);
        assert_eq!(answer.headers()["location"], "http://127.0.0.1:8081/");
    }
    let metrics = client
        .get(format!("{front}/_nameserver/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let refused: u64 = metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix(
                "chat_nameserver_registrations_refused_total{reason=\"unauthenticated\"} ",
            )
        })
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no unauthenticated count in\n{metrics}"));
    // The unsigned register, withdraw and list (another secret's client sends no call).
    assert!(refused >= 3, "{metrics}");
    // The same calls by the guard's own reason: none carried a proof.
    let by_reason = |reason: &str| -> u64 {
        let series = format!("chat_nameserver_unauthenticated_calls_total{{reason=\"{reason}\"}} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(series.as_str()))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
    };
    assert_eq!(by_reason("missing_proof"), refused, "{metrics}");
    assert_eq!(by_reason("bad_mac"), 0, "{metrics}");
    let _ = child.kill();
    let _ = child.wait();
}
