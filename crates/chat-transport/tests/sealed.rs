//! The sealed wire on real loopback sockets: members talk as before (also across a key
//! rotation), while a peer without the secret, an altered frame, a replayed frame and a
//! session replayed to a restarted node get nothing delivered, and every refusal is counted.

mod support;

use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use chat_secret::{ClusterSecret, KeyRing, Purpose};
use chat_transport::{Transport, TransportConfig, TransportEvent, TransportHandle};
use support::*;

const OLD: [u8; 32] = [0x11; 32];
const NEW: [u8; 32] = [0x22; 32];
/// First byte of a sealed DATA frame (see the transport's `secure` module).
const DATA: u8 = 3;
/// How long a test watches for something that must not happen.
const QUIET: Duration = Duration::from_millis(300);

fn keys(current: [u8; 32], previous: Option<[u8; 32]>) -> Option<KeyRing> {
    Some(ClusterSecret::from_parts(current, previous).keys(Purpose::Wire))
}

fn start(node_id: u64, security: Option<KeyRing>) -> (TransportHandle, Events) {
    let mut config = TransportConfig::new(node_id, "tcp://127.0.0.1:*").with_security(security);
    config.reconnect_ivl_ms = 20;
    config.reconnect_ivl_max_ms = 200;
    config.linger_ms = 0;
    Transport::start(config).expect("transport starts")
}

/// Asserts `events` yields no message for [`QUIET`].
async fn nothing_received(events: &mut Events) {
    let deadline = tokio::time::Instant::now() + QUIET;
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, events.recv()).await {
        assert!(
            !matches!(event, TransportEvent::Received { .. }),
            "delivered {event:?}"
        );
    }
}

/// A raw ZeroMQ DEALER that presents `identity` and speaks whatever frames a test gives it.
fn raw_peer(context: &zmq::Context, identity: &str, endpoint: &str) -> zmq::Socket {
    let socket = context.socket(zmq::DEALER).expect("dealer");
    socket.set_identity(identity.as_bytes()).expect("identity");
    socket.set_linger(0).expect("linger");
    socket.connect(endpoint).expect("connect");
    socket
}

#[tokio::test]
async fn members_talk_both_ways_and_open_one_session_per_direction() {
    with_patience(async {
        let (a, mut a_events) = start(1, keys(OLD, None));
        let (b, mut b_events) = start(2, keys(OLD, None));
        a.connect(2, b.local_endpoint().to_owned())
            .expect("connect");
        expect_link_up(&mut a_events, 2).await;
        for round in 0u32..100 {
            a.send(2, round.to_be_bytes().to_vec()).expect("send");
        }
        for round in 0u32..100 {
            assert_eq!(expect_received(&mut b_events, 1).await, round.to_be_bytes());
        }
        // b never connected to a: its answers go back over a's connection.
        b.send(1, b"answer".to_vec()).expect("send");
        assert_eq!(expect_received(&mut a_events, 2).await, b"answer");
        let (a_stats, b_stats) = (a.stats(), b.stats());
        assert_eq!(
            (a_stats.sent, a_stats.sessions_opened),
            (100, 1),
            "{a_stats:?}"
        );
        assert_eq!(
            (b_stats.received, b_stats.sessions_opened),
            (100, 1),
            "{b_stats:?}"
        );
        assert_eq!(
            b_stats.refused_unauthenticated + b_stats.refused_tampered,
            0
        );
    })
    .await;
}

#[tokio::test]
async fn peers_mid_rotation_still_talk() {
    with_patience(async {
        // a has the new secret first and the old second; b only the old one.
        let (a, mut a_events) = start(3, keys(NEW, Some(OLD)));
        let (b, mut b_events) = start(4, keys(OLD, None));
        a.connect(4, b.local_endpoint().to_owned())
            .expect("connect");
        b.connect(3, a.local_endpoint().to_owned())
            .expect("connect");
        expect_link_up(&mut a_events, 4).await;
        expect_link_up(&mut b_events, 3).await;
        a.send(4, b"from the rotated node".to_vec()).expect("send");
        b.send(3, b"from the old node".to_vec()).expect("send");
        assert_eq!(
            expect_received(&mut b_events, 3).await,
            b"from the rotated node"
        );
        assert_eq!(
            expect_received(&mut a_events, 4).await,
            b"from the old node"
        );
    })
    .await;
}

#[tokio::test]
async fn peers_without_the_secret_get_nothing_delivered_and_are_counted() {
    with_patience(async {
        let (member, mut member_events) = start(5, keys(OLD, None));
        let endpoint = member.local_endpoint().to_owned();

        // A transport with another secret, one with none, and a raw socket.
        let (stranger, mut stranger_events) = start(6, keys(NEW, None));
        let (clear, mut clear_events) = start(7, None);
        for (id, transport, events) in [
            (6, &stranger, &mut stranger_events),
            (7, &clear, &mut clear_events),
        ] {
            transport.connect(5, endpoint.clone()).expect("connect");
            expect_link_up(events, 5).await;
            transport
                .send(5, format!("from {id}").into_bytes())
                .expect("send");
        }
        let context = zmq::Context::new();
        let raw = raw_peer(&context, "node-8", &endpoint);
        for frame in [
            &b"clear text"[..],
            &[
                1, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 1, 0, 0, 0, 0, 0, 0, 0,
                0,
            ],
            &[DATA; 64],
        ] {
            raw.send(frame, 0).expect("raw send");
        }

        let stats = stats_until(&member, "four strangers refused", |s| {
            s.refused_unauthenticated >= 4
        })
        .await;
        assert_eq!((stats.received, stats.sessions_opened), (0, 0), "{stats:?}");
        nothing_received(&mut member_events).await;

        // The member answers none of them with anything readable.
        member.send(6, b"secret".to_vec()).expect("send");
        nothing_received(&mut stranger_events).await;
        stats_until(&stranger, "the member's HELLO refused", |s| {
            s.refused_unauthenticated >= 1
        })
        .await;
        assert_eq!(stranger.stats().received, 0);
    })
    .await;
}

/// A man in the middle: node 1 connects to it as if it were node 2, and it relays to the
/// real node 2 as if it were node 1, recording what node 1 sent and altering or replaying
/// on request.
struct Proxy {
    endpoint: String,
    recorded: Arc<Mutex<Vec<Vec<u8>>>>,
    commands: std_mpsc::Sender<ProxyCommand>,
    thread: Option<JoinHandle<()>>,
}

enum ProxyCommand {
    /// Flip a bit in the next DATA frame from node 1.
    TamperNextData,
    /// Send these frames to node 2 again, as node 1.
    Replay(Vec<Vec<u8>>),
}

impl Proxy {
    fn start(upstream_id: u64, upstream: &str, downstream_id: u64) -> Proxy {
        let context = zmq::Context::new();
        let front = context.socket(zmq::ROUTER).expect("router");
        front
            .set_identity(format!("node-{upstream_id}").as_bytes())
            .expect("identity");
        front.set_linger(0).expect("linger");
        front.bind("tcp://127.0.0.1:*").expect("bind");
        let endpoint = front.get_last_endpoint().expect("endpoint").expect("utf-8");
        let back = raw_peer(&context, &format!("node-{downstream_id}"), upstream);
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let (commands, command_rx) = std_mpsc::channel();
        let record = Arc::clone(&recorded);
        let thread = std::thread::spawn(move || {
            relay(&front, &back, &command_rx, &record, downstream_id);
        });
        Proxy {
            endpoint,
            recorded,
            commands,
            thread: Some(thread),
        }
    }

    fn recorded_data(&self) -> Vec<Vec<u8>> {
        let recorded = self.recorded.lock().expect("lock");
        recorded
            .iter()
            .filter(|frame| frame.first() == Some(&DATA))
            .cloned()
            .collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        drop(std::mem::replace(&mut self.commands, std_mpsc::channel().0));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn relay(
    front: &zmq::Socket,
    back: &zmq::Socket,
    commands: &std_mpsc::Receiver<ProxyCommand>,
    recorded: &Mutex<Vec<Vec<u8>>>,
    downstream_id: u64,
) {
    let mut tamper_next = false;
    loop {
        let mut items = [
            front.as_poll_item(zmq::POLLIN),
            back.as_poll_item(zmq::POLLIN),
        ];
        zmq::poll(&mut items, 10).expect("poll");
        // Commands after the poll: one sent before a frame is then seen before that frame.
        loop {
            match commands.try_recv() {
                Ok(ProxyCommand::TamperNextData) => tamper_next = true,
                Ok(ProxyCommand::Replay(frames)) => {
                    for frame in frames {
                        back.send(frame, 0).expect("replay");
                    }
                }
                Err(std_mpsc::TryRecvError::Disconnected) => return,
                Err(std_mpsc::TryRecvError::Empty) => break,
            }
        }
        if items[0].is_readable() {
            let parts = front.recv_multipart(0).expect("recv");
            let mut frame = parts.into_iter().nth(1).unwrap_or_default();
            recorded.lock().expect("lock").push(frame.clone());
            if tamper_next && frame.first() == Some(&DATA) {
                *frame.last_mut().expect("non-empty") ^= 0x01;
                tamper_next = false;
            }
            back.send(frame, 0).expect("relay to node 2");
        }
        if items[1].is_readable() {
            let frame = back.recv_bytes(0).expect("recv");
            let identity = format!("node-{downstream_id}");
            front
                .send(identity.as_bytes(), zmq::SNDMORE)
                .and_then(|()| front.send(frame, 0))
                .expect("relay to node 1");
        }
    }
}

#[tokio::test]
async fn altered_and_replayed_frames_are_refused_also_by_a_restarted_node() {
    with_patience(async {
        let (b, mut b_events) = start(12, keys(OLD, None));
        let proxy = Proxy::start(12, b.local_endpoint(), 11);
        let (a, mut a_events) = start(11, keys(OLD, None));
        a.connect(12, proxy.endpoint.clone()).expect("connect");
        expect_link_up(&mut a_events, 12).await;

        a.send(12, b"first".to_vec()).expect("send");
        assert_eq!(expect_received(&mut b_events, 11).await, b"first");

        proxy
            .commands
            .send(ProxyCommand::TamperNextData)
            .expect("proxy");
        a.send(12, b"altered".to_vec()).expect("send");
        stats_until(&b, "the altered frame refused", |s| s.refused_tampered == 1).await;
        a.send(12, b"after".to_vec()).expect("send");
        assert_eq!(expect_received(&mut b_events, 11).await, b"after");

        let recorded = proxy.recorded_data();
        assert_eq!(recorded.len(), 3, "first, altered, after");
        proxy
            .commands
            .send(ProxyCommand::Replay(recorded.clone()))
            .expect("proxy");
        let stats = stats_until(&b, "the replays refused", |s| s.refused_replayed >= 2).await;
        // The altered frame's counter was never accepted, so its replay (unaltered) is
        // delivered as what a sent; the other two are duplicates.
        assert_eq!(stats.refused_replayed, 2, "{stats:?}");
        assert_eq!(expect_received(&mut b_events, 11).await, b"altered");
        nothing_received(&mut b_events).await;

        // The same session replayed to a node restarted with the same secret.
        b.shutdown().await;
        drop(proxy);
        let (restarted, mut restarted_events) = start(12, keys(OLD, None));
        let context = zmq::Context::new();
        let raw = raw_peer(&context, "node-11", restarted.local_endpoint());
        for frame in &recorded {
            raw.send(frame.as_slice(), 0).expect("replay");
        }
        let stats = stats_until(&restarted, "the old session refused", |s| {
            s.refused_unauthenticated >= 3
        })
        .await;
        assert_eq!((stats.received, stats.sessions_opened), (0, 0), "{stats:?}");
        nothing_received(&mut restarted_events).await;
    })
    .await;
}

#[tokio::test]
async fn oversized_payloads_are_neither_sent_nor_delivered() {
    with_patience(async {
        let mut small =
            TransportConfig::new(13, "tcp://127.0.0.1:*").with_security(keys(OLD, None));
        small.max_message_bytes = 1024;
        small.linger_ms = 0;
        let (a, mut a_events) = Transport::start(small).expect("start");
        let (b, mut b_events) = start(14, keys(OLD, None));
        a.connect(14, b.local_endpoint().to_owned())
            .expect("connect");
        b.connect(13, a.local_endpoint().to_owned())
            .expect("connect");
        expect_link_up(&mut a_events, 14).await;
        expect_link_up(&mut b_events, 13).await;

        a.send(14, vec![0; 1025]).expect("send");
        b.send(13, vec![0; 1025]).expect("send");
        b.send(13, vec![1; 1024]).expect("send");
        assert_eq!(expect_received(&mut a_events, 14).await, vec![1; 1024]);
        assert_eq!(a.stats().dropped_oversized, 1);
        assert_eq!(a.stats().refused_oversized, 1);
        nothing_received(&mut b_events).await;
    })
    .await;
}

#[tokio::test]
async fn bursts_both_ways_behind_the_handshakes_arrive_complete_and_in_order() {
    const BURST: u32 = 3000;
    with_patience(async {
        let config = |id| {
            let mut config =
                TransportConfig::new(id, "tcp://127.0.0.1:*").with_security(keys(OLD, None));
            config.send_queue = BURST as usize;
            // Room for the burst plus the handshake frames that share the pipe.
            config.send_hwm = BURST as i32 + 4;
            config.recv_hwm = BURST as i32 + 4;
            config.linger_ms = 0;
            config
        };
        let (a, mut a_events) = Transport::start(config(15)).expect("start a");
        let (b, mut b_events) = Transport::start(config(16)).expect("start b");
        a.connect(16, b.local_endpoint().to_owned())
            .expect("connect");
        b.connect(15, a.local_endpoint().to_owned())
            .expect("connect");
        expect_link_up(&mut a_events, 16).await;
        expect_link_up(&mut b_events, 15).await;
        // Every message is sent before either handshake can have finished.
        for sequence in 0..BURST {
            a.send(16, sequence.to_be_bytes().to_vec()).expect("send");
            b.send(15, sequence.to_be_bytes().to_vec()).expect("send");
        }
        for (events, from) in [(&mut b_events, 15), (&mut a_events, 16)] {
            for expected in 0..BURST {
                assert_eq!(expect_received(events, from).await, expected.to_be_bytes());
            }
        }
        for side in [&a, &b] {
            let stats = side.stats();
            assert_eq!(
                (stats.sent, stats.received),
                (u64::from(BURST), u64::from(BURST))
            );
        }
    })
    .await;
}
