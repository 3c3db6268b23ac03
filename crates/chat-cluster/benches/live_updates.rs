//! Live updates (`GET /api/events`, server-sent events) on a real 5-node cluster: how long a
//! message takes from its send on one input node to its arrival on a stream attached to the
//! other input node, and how many open streams one input node holds at what memory (the node
//! process's RSS before and after opening them). Prints `bench live_updates <what>: <figure>`
//! lines; never fails on a slow machine. `cargo bench -p chat-cluster --bench live_updates`
//! (`CHAT_BENCH_STREAMS=N` for another stream count, default 5000; the open-file limit must
//! allow twice that).
//!
//! The topology is the browser test's: a triangle 1-2-3 with node 4 hanging off 2 and node 5
//! off 3, so the writer (1) has two replicas and the input nodes 4 and 5 sit two hops below
//! it. Port plan: base 21800 (nodes on 21801..=24805), no services.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chat_cluster::{ClusterOptions, LocalCluster, NodeOutput, Topology};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const BASE_PORT: u16 = 21_800;
const DEADLINE: Duration = Duration::from_secs(60);
const SENDER_NODE: u64 = 4;
const STREAM_NODE: u64 = 5;
/// Messages timed from send to arrival.
const MESSAGES: usize = 300;
/// Pause between two sends (an open loop well below the write capacity, so the figure is the
/// delay, not a queue).
const SEND_EVERY: Duration = Duration::from_millis(20);

fn http_port(cluster: &LocalCluster, id: u64) -> u16 {
    cluster.description().node(id).expect("node").http_port
}

/// Polls the cluster until a writer is writable and both input nodes are ready and reach it.
async fn settle(cluster: &LocalCluster) -> Vec<Value> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let statuses = cluster.status_all().await;
        let writable = statuses
            .iter()
            .any(|s| s["quorum"]["writable"] == json!(true));
        let inputs = [SENDER_NODE, STREAM_NODE].iter().all(|id| {
            statuses.iter().any(|s| {
                s["id"] == json!(id)
                    && s["ready"] == json!(true)
                    && s["writer_reachable"] == json!(true)
            })
        });
        if writable && inputs {
            return statuses;
        }
        assert!(Instant::now() < deadline, "the cluster did not settle");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The resident set of a process, in KiB.
fn rss_kib(pid: u64) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

/// Registers `username#tag` and logs in on `port`; returns (user id, token).
async fn account(client: &reqwest::Client, port: u16, username: &str) -> (String, String) {
    let base = format!("http://127.0.0.1:{port}/api");
    let body = json!({"username": username, "tag": "1234", "password": "bench password"});
    let deadline = Instant::now() + DEADLINE;
    loop {
        let response = client
            .post(format!("{base}/register"))
            .json(&body)
            .send()
            .await
            .expect("register");
        // 503 while the cluster settles; anything else is an answer.
        if response.status() != reqwest::StatusCode::SERVICE_UNAVAILABLE {
            assert!(response.status().is_success(), "register: {response:?}");
            break;
        }
        assert!(Instant::now() < deadline, "register keeps answering 503");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let login: Value = client
        .post(format!("{base}/login"))
        .json(&body)
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("login answer");
    (
        login["user"]["id"].as_str().expect("user id").to_owned(),
        login["token"].as_str().expect("token").to_owned(),
    )
}

/// An open event stream: the raw connection, read by a task that reports each chunk.
async fn open_stream(port: u16, token: &str) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connects");
    let request = format!(
        "GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n\
         Accept: text/event-stream\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("request sent");
    stream
}

/// Reads `stream` until its text holds `needle`; false when the connection ends first.
async fn read_until(stream: &mut TcpStream, buffer: &mut Vec<u8>, needle: &[u8]) -> bool {
    let mut chunk = [0u8; 4096];
    loop {
        if buffer.windows(needle.len()).any(|w| w == needle) {
            return true;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    // Nearest rank.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Sends `MESSAGES` private messages from the sender's node and times each one's arrival on a
/// stream attached to the other input node.
async fn delay(client: &reqwest::Client, sender_port: u16, stream_port: u16, tokens: (&str, &str)) {
    let (alice_token, bob_token) = tokens;
    let mut stream = open_stream(stream_port, bob_token).await;
    let mut buffer = Vec::new();
    assert!(
        read_until(&mut stream, &mut buffer, b": connected").await,
        "the stream opens"
    );
    // Arrivals: each message id the stream shows, with when it was read.
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel::<(String, Instant)>();
    let reader = tokio::spawn(async move {
        let mut text = String::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let now = Instant::now();
                    text.push_str(&String::from_utf8_lossy(&chunk[..n]));
                    // Each `data:` line is one message's JSON.
                    while let Some(end) = text.find('\n') {
                        let line: String = text.drain(..=end).collect();
                        if let Some(data) = line.strip_prefix("data: ") {
                            if let Ok(message) = serde_json::from_str::<Value>(data) {
                                if let Some(id) = message["id"].as_str() {
                                    let _ = arrived_tx.send((id.to_owned(), now));
                                }
                            }
                        }
                    }
                }
            }
        }
    });
    let url = format!("http://127.0.0.1:{sender_port}/api/users/bob/1234/chat");
    let mut sent_at: HashMap<String, Instant> = HashMap::new();
    let mut acks = Vec::with_capacity(MESSAGES);
    let mut ticker = tokio::time::interval(SEND_EVERY);
    let mut failed = 0;
    for n in 0..MESSAGES {
        ticker.tick().await;
        let id = uuid::Uuid::new_v4().to_string();
        let start = Instant::now();
        sent_at.insert(id.clone(), start);
        let response = client
            .post(&url)
            .bearer_auth(alice_token)
            .json(&json!({"id": id, "content": format!("message {n}")}))
            .send()
            .await;
        match response {
            Ok(response) if response.status().is_success() => acks.push(start.elapsed()),
            _ => failed += 1,
        }
    }
    let mut delays = Vec::with_capacity(MESSAGES);
    let deadline = Instant::now() + Duration::from_secs(10);
    while delays.len() < MESSAGES - failed {
        let Ok(Some((id, at))) = tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            arrived.recv(),
        )
        .await
        else {
            break;
        };
        if let Some(start) = sent_at.remove(&id) {
            delays.push(at - start);
        }
    }
    reader.abort();
    acks.sort_unstable();
    delays.sort_unstable();
    println!(
        "bench live_updates send acknowledged (node {SENDER_NODE}): p50 {:.1} ms, p99 {:.1} ms, \
         max {:.1} ms ({} sent, {failed} failed)",
        ms(percentile(&acks, 50.0)),
        ms(percentile(&acks, 99.0)),
        ms(acks.last().copied().unwrap_or_default()),
        acks.len(),
    );
    println!(
        "bench live_updates send on node {SENDER_NODE} -> event on node {STREAM_NODE}: \
         p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} of {} arrived, one every {:?})",
        ms(percentile(&delays, 50.0)),
        ms(percentile(&delays, 99.0)),
        ms(delays.last().copied().unwrap_or_default()),
        delays.len(),
        MESSAGES - failed,
        SEND_EVERY,
    );
}

/// Opens `count` streams on one node, measures the node's RSS, then checks every stream still
/// delivers a message.
async fn capacity(
    client: &reqwest::Client,
    port: u16,
    node_pid: u64,
    count: usize,
    tokens: (&str, &str),
) {
    let (alice_token, bob_token) = tokens;
    let before = rss_kib(node_pid);
    let opened_at = Instant::now();
    let mut streams = Vec::with_capacity(count);
    let mut refused = 0;
    // A few hundred at a time: the node's accept queue is finite.
    for batch in (0..count).collect::<Vec<_>>().chunks(250) {
        let mut opening = Vec::with_capacity(batch.len());
        for _ in batch {
            let token = bob_token.to_owned();
            opening.push(tokio::spawn(async move {
                let mut stream = open_stream(port, &token).await;
                let mut buffer = Vec::new();
                read_until(&mut stream, &mut buffer, b": connected")
                    .await
                    .then_some(stream)
            }));
        }
        for task in opening {
            match task.await.expect("opener") {
                Some(stream) => streams.push(stream),
                None => refused += 1,
            }
        }
    }
    let opened = opened_at.elapsed();
    let after = rss_kib(node_pid);
    let held = streams.len();
    #[allow(clippy::cast_precision_loss)]
    let per_stream = (after.saturating_sub(before)) as f64 / held.max(1) as f64;
    println!(
        "bench live_updates streams held by one input node: {held} of {count} opened in {:.1} s \
         ({refused} refused)",
        opened.as_secs_f64()
    );
    println!(
        "bench live_updates node RSS: {:.1} MiB before, {:.1} MiB with {held} streams, \
         {per_stream:.1} KiB per stream",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
    );
    // Every stream is live: one message reaches all of them.
    let marker = uuid::Uuid::new_v4().to_string();
    let sent = Instant::now();
    let response = client
        .post(format!("http://127.0.0.1:{port}/api/users/bob/1234/chat"))
        .bearer_auth(alice_token)
        .json(&json!({"id": marker, "content": "to every stream"}))
        .send()
        .await
        .expect("send");
    assert!(response.status().is_success(), "send: {response:?}");
    let mut readers = Vec::with_capacity(held);
    for mut stream in streams {
        let marker = marker.clone();
        readers.push(tokio::spawn(async move {
            let mut buffer = Vec::new();
            let got = tokio::time::timeout(
                Duration::from_secs(20),
                read_until(&mut stream, &mut buffer, marker.as_bytes()),
            )
            .await;
            matches!(got, Ok(true))
        }));
    }
    let mut delivered = 0;
    for reader in readers {
        if reader.await.unwrap_or(false) {
            delivered += 1;
        }
    }
    println!(
        "bench live_updates one message to all {held} streams: {delivered} delivered, the last \
         {:.0} ms after the send",
        ms(sent.elapsed())
    );
}

#[tokio::main]
async fn main() {
    let count: usize = std::env::var("CHAT_BENCH_STREAMS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5000);
    let dir = tempfile::tempdir().expect("temp dir");
    let options = ClusterOptions {
        base_port: BASE_PORT,
        node_bin: Some(support::node_binary()),
        output: NodeOutput::Files,
        env: vec![("CHAT_NODE_STORAGE__BCRYPT_COST".into(), "4".into())],
        ..ClusterOptions::new(
            5,
            Topology::Edges(vec![(1, 2), (1, 3), (2, 3), (2, 4), (3, 5)]),
            dir.path().join("run"),
        )
    };
    let cluster = LocalCluster::up(options).await.expect("cluster starts");
    let statuses = settle(&cluster).await;
    let (sender_port, stream_port) = (
        http_port(&cluster, SENDER_NODE),
        http_port(&cluster, STREAM_NODE),
    );
    let client = reqwest::Client::new();
    let (_alice, alice_token) = account(&client, sender_port, "alice").await;
    let (_bob, bob_token) = account(&client, sender_port, "bob").await;
    delay(
        &client,
        sender_port,
        stream_port,
        (&alice_token, &bob_token),
    )
    .await;
    let pid = statuses
        .iter()
        .find(|s| s["id"] == json!(STREAM_NODE))
        .and_then(|s| s["pid"].as_u64())
        .expect("the node's pid");
    capacity(&client, stream_port, pid, count, (&alice_token, &bob_token)).await;
    cluster.down().await.expect("stops");
}
