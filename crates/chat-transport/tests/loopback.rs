//! Two real transports on loopback sockets: delivery, drops, link events, bad input and
//! shutdown.

mod support;

use chat_transport::{
    Transport, TransportConfig, TransportError, TransportEvent, TransportHandle, TransportStats,
};
use support::*;

fn config(node_id: u64, bind: &str) -> TransportConfig {
    let mut config = TransportConfig::new(node_id, bind);
    config.reconnect_ivl_ms = 20;
    config.reconnect_ivl_max_ms = 200;
    config.linger_ms = 0;
    config
}

fn start(node_id: u64) -> (TransportHandle, Events) {
    start_on(node_id, "tcp://127.0.0.1:*")
}

fn start_on(node_id: u64, bind: &str) -> (TransportHandle, Events) {
    Transport::start(config(node_id, bind)).expect("transport starts")
}

/// Two transports connected to each other, both links up.
async fn connected_pair(
    a_id: u64,
    b_id: u64,
) -> ((TransportHandle, Events), (TransportHandle, Events)) {
    let (a, mut a_events) = start(a_id);
    let (b, mut b_events) = start(b_id);
    a.connect(b_id, b.local_endpoint().to_owned())
        .expect("connect a→b");
    b.connect(a_id, a.local_endpoint().to_owned())
        .expect("connect b→a");
    expect_link_up(&mut a_events, b_id).await;
    expect_link_up(&mut b_events, a_id).await;
    ((a, a_events), (b, b_events))
}

#[tokio::test]
async fn two_transports_exchange_messages_both_ways() {
    with_patience(async {
        let ((a, mut a_events), (b, mut b_events)) = connected_pair(1, 2).await;

        a.send(2, b"ping".to_vec()).expect("send a→b");
        assert_eq!(expect_received(&mut b_events, 1).await, b"ping");
        b.send(1, b"pong".to_vec()).expect("send b→a");
        assert_eq!(expect_received(&mut a_events, 2).await, b"pong");

        // Empty payloads are legitimate messages.
        a.send(2, Vec::new()).expect("send empty");
        assert_eq!(expect_received(&mut b_events, 1).await, b"");

        assert_eq!(a.stats().sent, 2);
        assert_eq!(b.stats().received, 2);
        assert_eq!(a.stats().received, 1);
    })
    .await;
}

#[tokio::test]
async fn sends_to_unknown_or_unreachable_peers_return_at_once_and_are_counted() {
    with_patience(async {
        let (a, _a_events) = start(10);

        // Never connected: ROUTER_MANDATORY reports it, we count it.
        a.send(99, b"to nobody".to_vec()).expect("send returns Ok");

        // Connected to a port where nothing listens: still unroutable, never blocking.
        let closed_port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("addr").port()
        };
        a.connect(11, format!("tcp://127.0.0.1:{closed_port}"))
            .expect("connect");
        for _ in 0..100 {
            a.send(11, b"to a dead port".to_vec())
                .expect("send returns Ok");
        }

        let stats = stats_until(&a, "all 101 sends counted as unroutable", |s| {
            s.dropped_unroutable == 101
        })
        .await;
        assert_eq!(stats.sent, 0);
        assert_eq!(stats.link_ups, 0);
    })
    .await;
}

#[tokio::test]
async fn invalid_peer_endpoints_are_refused_at_the_call() {
    let (a, _events) = start(12);
    let refused = a.connect(13, "127.0.0.1:4000".to_owned());
    assert!(
        matches!(refused, Err(TransportError::InvalidEndpoint { .. })),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_peer_that_stops_goes_down_once_and_comes_back_up_after_restart() {
    with_patience(async {
        let ((a, mut a_events), (b, b_events)) = connected_pair(20, 21).await;
        let b_endpoint = b.local_endpoint().to_owned();

        b.shutdown().await;
        drop((b, b_events));
        let before_down = events_until(&mut a_events, "LinkDown of 21", |event| {
            *event == TransportEvent::LinkDown { peer: 21 }
        })
        .await;
        assert!(before_down.is_empty(), "unexpected events {before_down:?}");

        // Same port, as a restarted node would use; ZeroMQ reconnects by itself.
        let (_b, mut b_events) = start_on(21, &b_endpoint);
        let between = expect_link_up(&mut a_events, 21).await;
        assert!(
            !between.contains(&TransportEvent::LinkDown { peer: 21 }),
            "a second LinkDown for the same drop: {between:?}"
        );
        assert_eq!(a.stats().link_downs, 1);

        a.send(21, b"welcome back".to_vec()).expect("send");
        assert_eq!(expect_received(&mut b_events, 20).await, b"welcome back");
    })
    .await;
}

#[tokio::test]
async fn garbage_from_a_raw_dealer_is_counted_and_harmless() {
    with_patience(async {
        let (a, mut a_events) = start(30);
        let context = zmq::Context::new();
        let raw_dealer = |identity: Option<&[u8]>| {
            let dealer = context.socket(zmq::DEALER).expect("dealer");
            if let Some(identity) = identity {
                dealer.set_identity(identity).expect("identity");
            }
            dealer.set_linger(0).expect("linger");
            dealer.connect(a.local_endpoint()).expect("connect");
            dealer
        };

        let bad_identity = raw_dealer(Some(b"garbage"));
        bad_identity.send("hello", 0).expect("send");
        let non_canonical = raw_dealer(Some(b"node-031"));
        non_canonical.send("hello", 0).expect("send");
        let anonymous = raw_dealer(None);
        anonymous.send("hello", 0).expect("send");
        let too_many_frames = raw_dealer(Some(b"node-32"));
        too_many_frames
            .send_multipart(["", "payload"], 0)
            .expect("send");
        stats_until(&a, "4 bad frames counted", |s| s.bad_frames == 4).await;

        // The transport keeps working, for a well-behaved peer and for the same identity.
        too_many_frames.send("fine now", 0).expect("send");
        assert_eq!(expect_received(&mut a_events, 32).await, b"fine now");
        assert_eq!(a.stats().received, 1);
    })
    .await;
}

fn burst_config(node_id: u64, burst: u32) -> TransportConfig {
    let mut config = config(node_id, "tcp://127.0.0.1:*");
    config.send_queue = burst as usize;
    config.send_hwm = burst as i32;
    config.recv_hwm = burst as i32;
    config
}

async fn receive_sequence(events: &mut Events, from: u64, count: u32) {
    for expected in 0..count {
        let payload = expect_received(events, from).await;
        assert_eq!(
            payload,
            expected.to_be_bytes(),
            "message {expected} from {from}"
        );
    }
}

async fn all_sends_accounted(transport: &TransportHandle, count: u32) -> TransportStats {
    stats_until(transport, "every send accounted for", |s| {
        s.sent + s.dropped_pipe_full + s.dropped_unroutable + s.dropped_queue_full + s.send_errors
            == u64::from(count)
    })
    .await
}

#[tokio::test]
async fn bursts_both_ways_right_after_link_up_arrive_complete_and_in_order() {
    const BURST: u32 = 5000;
    with_patience(async {
        // Both sides connect to each other at once, as neighbours do; no message may be lost
        // to the two connections meeting.
        let (a, mut a_events) = Transport::start(burst_config(40, BURST)).expect("start a");
        let (b, mut b_events) = Transport::start(burst_config(41, BURST)).expect("start b");
        a.connect(41, b.local_endpoint().to_owned())
            .expect("connect a→b");
        b.connect(40, a.local_endpoint().to_owned())
            .expect("connect b→a");
        expect_link_up(&mut a_events, 41).await;
        expect_link_up(&mut b_events, 40).await;

        for sequence in 0..BURST {
            a.send(41, sequence.to_be_bytes().to_vec())
                .expect("send a→b");
            b.send(40, sequence.to_be_bytes().to_vec())
                .expect("send b→a");
        }
        for side in [&a, &b] {
            let stats = all_sends_accounted(side, BURST).await;
            assert_eq!(stats.sent, u64::from(BURST), "{stats:?}");
        }
        receive_sequence(&mut b_events, 40, BURST).await;
        receive_sequence(&mut a_events, 41, BURST).await;
    })
    .await;
}

#[tokio::test]
async fn disconnecting_reports_the_link_down_and_makes_the_peer_unroutable() {
    with_patience(async {
        let (a, mut a_events) = start(47);
        let (b, _b_events) = start(48);
        a.connect(48, b.local_endpoint().to_owned())
            .expect("connect");
        expect_link_up(&mut a_events, 48).await;

        a.disconnect(48).expect("disconnect");
        let before = events_until(&mut a_events, "LinkDown of 48", |event| {
            *event == TransportEvent::LinkDown { peer: 48 }
        })
        .await;
        assert!(before.is_empty(), "{before:?}");

        // b never connected to a, so no path is left once ZeroMQ has torn the pipe down
        // (asynchronously: a send just after the disconnect may still go out).
        poll_until("a send counted as unroutable", || {
            a.send(48, b"gone".to_vec()).expect("send returns Ok");
            (a.stats().dropped_unroutable > 0).then_some(())
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn a_node_answers_a_peer_over_the_connection_the_peer_opened() {
    with_patience(async {
        let (parent, mut parent_events) = start(45);
        let (child, mut child_events) = start(46);
        // Only the child connects, as a data-plane child does towards its parent.
        child
            .connect(45, parent.local_endpoint().to_owned())
            .expect("connect");
        expect_link_up(&mut child_events, 45).await;

        child.send(45, b"request".to_vec()).expect("send");
        assert_eq!(expect_received(&mut parent_events, 46).await, b"request");
        parent.send(46, b"response".to_vec()).expect("send");
        assert_eq!(expect_received(&mut child_events, 45).await, b"response");
    })
    .await;
}

#[tokio::test]
async fn a_slow_consumer_loses_neither_messages_nor_link_events() {
    const MESSAGES: u8 = 50;
    with_patience(async {
        let (a, mut a_events) = start(50);
        let mut b_config = config(51, "tcp://127.0.0.1:*");
        // A queue of one forces the socket thread to hold back while nobody reads.
        b_config.event_queue = 1;
        let (b, mut b_events) = Transport::start(b_config).expect("start b");
        b.connect(50, a.local_endpoint().to_owned())
            .expect("connect b→a");
        a.connect(51, b.local_endpoint().to_owned())
            .expect("connect a→b");
        expect_link_up(&mut a_events, 51).await;

        for sequence in 0..MESSAGES {
            a.send(51, vec![sequence]).expect("send");
        }
        stats_until(&a, "all sent", |s| s.sent == u64::from(MESSAGES)).await;

        let mut received = Vec::new();
        let mut saw_link_up = false;
        while received.len() < usize::from(MESSAGES) || !saw_link_up {
            match tokio::time::timeout(PATIENCE, b_events.recv()).await {
                Ok(Some(TransportEvent::Received { from: 50, payload })) => received.push(payload),
                Ok(Some(TransportEvent::LinkUp { peer: 50 })) => saw_link_up = true,
                other => panic!("unexpected {other:?} after {received:?}"),
            }
        }
        let expected: Vec<Vec<u8>> = (0..MESSAGES).map(|n| vec![n]).collect();
        assert_eq!(received, expected);
    })
    .await;
}

fn transport_threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("procfs")
        .filter_map(|task| {
            let comm = task.ok()?.path().join("comm");
            std::fs::read_to_string(comm).ok()
        })
        .filter(|comm| comm.trim_end() == name)
        .count()
}

#[tokio::test]
async fn shutdown_closes_the_transport_and_dropping_every_handle_stops_the_thread() {
    with_patience(async {
        let (a, _a_events) = start(60);
        let clone = a.clone();
        a.shutdown().await;
        assert_eq!(clone.send(1, b"late".to_vec()), Err(TransportError::Closed));
        assert_eq!(
            clone.connect(1, "tcp://127.0.0.1:4000".to_owned()),
            Err(TransportError::Closed)
        );
        clone.shutdown().await;
        assert_eq!(transport_threads_named("zmq-node-60"), 0);

        let (b, b_events) = start(61);
        // The new thread names itself once it runs.
        poll_until("the thread is named", || {
            (transport_threads_named("zmq-node-61") == 1).then_some(())
        })
        .await;
        let b_clone = b.clone();
        drop(b);
        assert_eq!(
            transport_threads_named("zmq-node-61"),
            1,
            "a clone keeps it alive"
        );
        drop((b_clone, b_events));
        assert_eq!(transport_threads_named("zmq-node-61"), 0);
    })
    .await;
}

#[tokio::test]
async fn binding_a_port_in_use_fails_at_start() {
    let (a, _events) = start(70);
    let taken = a.local_endpoint().to_owned();
    let refused = Transport::start(config(71, &taken));
    assert!(
        matches!(refused, Err(TransportError::Bind { .. })),
        "{:?}",
        refused.map(|_| ())
    );
}
