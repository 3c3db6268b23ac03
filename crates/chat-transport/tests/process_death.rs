//! A neighbour whose process is killed (SIGKILL: no goodbye from ZeroMQ) is reported down
//! through the dropped connection, and up again when a new process takes its port.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chat_transport::{Transport, TransportConfig, TransportEvent};
use tokio::sync::mpsc::Receiver;
use tokio::time::{timeout_at, Instant};

const PATIENCE: Duration = Duration::from_secs(20);
/// Set in the environment of the child process: the endpoint it binds.
const CHILD_BIND: &str = "CHAT_TRANSPORT_TEST_PEER_BIND";
const CHILD_ID: u64 = 81;

fn config(node_id: u64, bind: &str) -> TransportConfig {
    let mut config = TransportConfig::new(node_id, bind);
    config.reconnect_ivl_ms = 20;
    config.reconnect_ivl_max_ms = 200;
    config
}

/// Runs as the child process only (the parent test starts this binary again with a filter
/// and CHILD_BIND set): binds a transport, prints its endpoint, and waits to be killed.
#[tokio::test]
#[ignore = "helper process for killed_neighbour_is_reported_down_and_up_again"]
async fn peer_process() {
    let Ok(bind) = std::env::var(CHILD_BIND) else {
        return;
    };
    let (transport, mut events) = Transport::start(config(CHILD_ID, &bind)).expect("child starts");
    println!("ENDPOINT {}", transport.local_endpoint());
    // Stays alive until killed, or until the parent's end of stdin closes.
    let stdin_closed = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        while std::io::stdin()
            .read_line(&mut line)
            .is_ok_and(|read| read > 0)
        {}
    });
    tokio::select! {
        _ = stdin_closed => {}
        _ = async { while events.recv().await.is_some() {} } => {}
    }
}

struct PeerProcess {
    child: Child,
    endpoint: String,
}

impl PeerProcess {
    fn kill(&mut self) {
        // SIGKILL: the peer's ZeroMQ gets no chance to close anything itself.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PeerProcess {
    /// A failing test must not leave the peer process behind.
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn_peer(bind: &str) -> PeerProcess {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "peer_process",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_BIND, bind)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("child process starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let endpoint = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        // The harness prints `test peer_process ... ` before the line, on the same line.
        .find_map(|line| {
            line.split_once("ENDPOINT ")
                .map(|(_, endpoint)| endpoint.trim().to_owned())
        })
        .expect("child reports its endpoint");
    PeerProcess { child, endpoint }
}

async fn wait_for(
    events: &mut Receiver<TransportEvent>,
    wanted: TransportEvent,
) -> Vec<TransportEvent> {
    let deadline = Instant::now() + PATIENCE;
    let mut before = Vec::new();
    loop {
        match timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) if event == wanted => return before,
            Ok(Some(event)) => before.push(event),
            other => panic!("no {wanted:?} within {PATIENCE:?}: {other:?}; saw {before:?}"),
        }
    }
}

#[tokio::test]
async fn killed_neighbour_is_reported_down_and_up_again() {
    let (node, mut node_events) =
        Transport::start(config(80, "tcp://127.0.0.1:*")).expect("node starts");
    let mut peer = spawn_peer("tcp://127.0.0.1:*");
    node.connect(CHILD_ID, peer.endpoint.clone())
        .expect("connect");
    wait_for(&mut node_events, TransportEvent::LinkUp { peer: CHILD_ID }).await;

    peer.kill();
    let before = wait_for(
        &mut node_events,
        TransportEvent::LinkDown { peer: CHILD_ID },
    )
    .await;
    assert!(before.is_empty(), "{before:?}");

    // A new process on the same port: ZeroMQ's reconnect finds it without being asked.
    let restarted = spawn_peer(&peer.endpoint);
    let between = wait_for(&mut node_events, TransportEvent::LinkUp { peer: CHILD_ID }).await;
    assert!(between.is_empty(), "{between:?}");
    assert_eq!(node.stats().link_downs, 1);

    drop(restarted);
    node.shutdown().await;
}
