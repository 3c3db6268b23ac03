//! The real `chat-bootstrap` binary: starts from its config file, serves members of the
//! cluster only, counts what it refuses in its metrics, stops cleanly on SIGTERM, and refuses
//! to start on a corrupt registry or without its cluster secret.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use chat_bootstrap::{client, BootstrapError, NodeAddress};
use chat_secret::{ClusterSecret, KeyRing, Purpose};

const DEADLINE: Duration = Duration::from_secs(30);

/// Writes a fresh cluster secret into `dir`; returns its path and its services keys.
fn write_secret(dir: &Path) -> (std::path::PathBuf, KeyRing) {
    let path = dir.join("cluster.key");
    std::fs::write(&path, ClusterSecret::generate_file_text()).expect("secret");
    let keys = ClusterSecret::load(&path)
        .expect("load")
        .keys(Purpose::Services);
    (path, keys)
}

/// A config file for a bootstrap on `port` with its state in `state` and its secret `secret`.
fn write_config(dir: &Path, port: u16, state: &Path, secret: &Path) -> std::path::PathBuf {
    let config = dir.join("bootstrap.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\nstate_dir = {:?}\nsecret_file = {:?}\n",
            state.display().to_string(),
            secret.display().to_string()
        ),
    )
    .expect("config");
    config
}

/// Registers `me` until the bootstrap answers (it may still be starting).
async fn register_when_up(
    child: &mut Child,
    addr: &str,
    keys: &KeyRing,
    me: NodeAddress,
) -> Vec<chat_bootstrap::Neighbor> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match client::register(addr, Duration::from_secs(2), Some(keys), me.clone()).await {
            Ok(neighbors) => return neighbors,
            Err(e) => {
                if let Some(status) = child.try_wait().expect("try_wait") {
                    panic!("chat-bootstrap exited with {status}");
                }
                assert!(Instant::now() < deadline, "never answered: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

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

/// SIGTERM, then a clean exit (status 0) is expected.
async fn stop_cleanly(mut child: Child) {
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

fn stderr_of(child: Child) -> String {
    let output = child.wait_with_output().expect("output");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn serves_registrations_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let state = dir.path().join("state");
    let (secret, keys) = write_secret(dir.path());
    let config = write_config(dir.path(), port, &state, &secret);
    let mut child = spawn(&config);

    let addr = format!("127.0.0.1:{port}");
    let me = NodeAddress {
        id: 1,
        host: "127.0.0.1".into(),
        port: 46001,
    };
    assert!(register_when_up(&mut child, &addr, &keys, me)
        .await
        .is_empty());
    assert!(
        state.join("registry.json").exists(),
        "registry written to the configured state_dir"
    );

    stop_cleanly(child).await;
}

#[test]
fn corrupt_registry_stops_start_up_with_the_file_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = dir.path().join("registry.json");
    std::fs::write(&registry, b"{broken").expect("registry");
    let (secret, _) = write_secret(dir.path());
    let config = write_config(dir.path(), free_port(), dir.path(), &secret);
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

#[test]
fn a_missing_or_malformed_secret_stops_start_up_with_exit_code_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("cluster.key");
    for contents in [None, Some("not a secret\n")] {
        if let Some(contents) = contents {
            std::fs::write(&secret, contents).expect("secret");
        }
        let config = write_config(dir.path(), free_port(), dir.path(), &secret);
        let mut child = spawn(&config);
        assert_eq!(wait_exit(&mut child).code(), Some(2), "{contents:?}");
        let stderr = stderr_of(child);
        assert!(
            stderr.contains(&secret.display().to_string()),
            "stderr: {stderr}"
        );
    }
}

/// A process without the cluster secret (or with another one) can neither register, nor
/// deregister a member, nor read the registry: each call answers UNAUTHENTICATED (or finds no
/// common key) and the registry stays as the members left it.
#[tokio::test]
async fn strangers_can_neither_register_nor_deregister() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let state = dir.path().join("state");
    let (secret, keys) = write_secret(dir.path());
    let config = write_config(dir.path(), port, &state, &secret);
    let mut child = spawn(&config);
    let addr = format!("127.0.0.1:{port}");
    let node = |id: u64| NodeAddress {
        id,
        host: "127.0.0.1".into(),
        port: 46000 + id as u16,
    };
    register_when_up(&mut child, &addr, &keys, node(1)).await;
    let registry_before = std::fs::read(state.join("registry.json")).expect("registry");

    let other = ClusterSecret::from_parts([0x77; 32], None).keys(Purpose::Services);
    let timeout = Duration::from_secs(2);
    let unsigned = client::register(&addr, timeout, None, node(2)).await;
    assert!(
        matches!(&unsigned, Err(BootstrapError::Rejected { code, .. }) if *code == tonic::Code::Unauthenticated),
        "{unsigned:?}"
    );
    let withdraw = client::deregister(&addr, timeout, None, 1).await;
    assert!(
        matches!(&withdraw, Err(BootstrapError::Rejected { code, .. }) if *code == tonic::Code::Unauthenticated),
        "{withdraw:?}"
    );
    assert!(client::list_nodes(&addr, timeout, None).await.is_err());
    assert!(client::register(&addr, timeout, Some(&other), node(3))
        .await
        .is_err());
    assert!(client::deregister(&addr, timeout, Some(&other), 1)
        .await
        .is_err());

    let listed = client::list_nodes(&addr, timeout, Some(&keys))
        .await
        .expect("a member lists");
    assert_eq!(
        listed.iter().map(|n| n.address.id).collect::<Vec<_>>(),
        vec![1]
    );
    assert_eq!(
        std::fs::read(state.join("registry.json")).expect("registry"),
        registry_before,
        "the registry file is unchanged"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// The value of the metric line starting with `series ` (name and labels) in `text`.
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// With `metrics_listen` set, GET /metrics shows registrations accepted, refused by reason
/// (node id 0 here), calls refused for want of the secret by reason, and the registry's size;
/// the metrics stop with the service.
#[tokio::test]
async fn refusals_and_strangers_are_counted_in_the_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, metrics_port) = (free_port(), free_port());
    let state = dir.path().join("state");
    let (secret, keys) = write_secret(dir.path());
    let config = write_config(dir.path(), port, &state, &secret);
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str(&format!("metrics_listen = \"127.0.0.1:{metrics_port}\"\n"));
    std::fs::write(&config, text).expect("config");
    let mut child = spawn(&config);
    let addr = format!("127.0.0.1:{port}");
    let node = |id: u64| NodeAddress {
        id,
        host: "127.0.0.1".into(),
        port: 46001,
    };
    register_when_up(&mut child, &addr, &keys, node(1)).await;

    let timeout = Duration::from_secs(2);
    let zero = client::register(&addr, timeout, Some(&keys), node(0)).await;
    assert!(
        matches!(&zero, Err(BootstrapError::Rejected { code, .. }) if *code == tonic::Code::InvalidArgument),
        "{zero:?}"
    );
    let unsigned = client::register(&addr, timeout, None, node(2)).await;
    assert!(
        matches!(&unsigned, Err(BootstrapError::Rejected { code, .. }) if *code == tonic::Code::Unauthenticated),
        "{unsigned:?}"
    );

    let url = format!("http://127.0.0.1:{metrics_port}/metrics");
    let page = reqwest::get(&url).await.expect("GET /metrics");
    assert_eq!(page.status().as_u16(), 200);
    let text = page.text().await.expect("text");
    let counted = |series: &str| metric(&text, series);
    assert_eq!(counted("chat_bootstrap_registrations_accepted_total"), 1);
    assert_eq!(
        counted("chat_bootstrap_registrations_refused_total{reason=\"node_id_zero\"}"),
        1
    );
    assert_eq!(
        counted("chat_bootstrap_registrations_refused_total{reason=\"registry_full\"}"),
        0
    );
    assert_eq!(
        counted("chat_bootstrap_unauthenticated_calls_total{reason=\"missing_proof\"}"),
        1
    );
    assert_eq!(
        counted("chat_bootstrap_unauthenticated_calls_total{reason=\"bad_mac\"}"),
        0
    );
    assert_eq!(counted("chat_bootstrap_registry_nodes"), 1);
    let elsewhere = reqwest::get(format!("http://127.0.0.1:{metrics_port}/"))
        .await
        .expect("GET /");
    assert_eq!(elsewhere.status().as_u16(), 404);

    stop_cleanly(child).await;
}
