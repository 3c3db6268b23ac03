//! Waiting helpers shared by the transport's integration tests: every wait is bounded by
//! [`PATIENCE`], so a broken transport fails a test instead of hanging the suite.

// Each test binary uses its own subset.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use chat_transport::{TransportEvent, TransportHandle, TransportStats};
use tokio::sync::mpsc::Receiver;
use tokio::time::{timeout_at, Instant};

/// Upper bound for anything a test waits for; reached only when the behaviour is broken, so
/// it is generous rather than a speed requirement.
pub(crate) const PATIENCE: Duration = Duration::from_secs(20);

pub(crate) type Events = Receiver<TransportEvent>;

/// Receives events until one matches `wanted`; returns the ones received before it.
pub(crate) async fn events_until(
    events: &mut Events,
    what: &str,
    wanted: impl Fn(&TransportEvent) -> bool,
) -> Vec<TransportEvent> {
    let deadline = Instant::now() + PATIENCE;
    let mut before = Vec::new();
    loop {
        match timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) if wanted(&event) => return before,
            Ok(Some(event)) => before.push(event),
            Ok(None) => panic!("event stream ended while waiting for {what}; saw {before:?}"),
            Err(_) => panic!("no {what} within {PATIENCE:?}; saw {before:?}"),
        }
    }
}

pub(crate) async fn expect_link_up(events: &mut Events, peer: u64) -> Vec<TransportEvent> {
    events_until(events, &format!("LinkUp of {peer}"), |event| {
        *event == TransportEvent::LinkUp { peer }
    })
    .await
}

pub(crate) async fn expect_received(events: &mut Events, from: u64) -> Vec<u8> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match timeout_at(deadline, events.recv()).await {
            Ok(Some(TransportEvent::Received {
                from: sender,
                payload,
            })) if sender == from => return payload,
            Ok(Some(_)) => {}
            Ok(None) => panic!("event stream ended while waiting for a message from {from}"),
            Err(_) => panic!("no message from {from} within {PATIENCE:?}"),
        }
    }
}

/// Polls the transport's counters until `done` holds; returns the last snapshot.
pub(crate) async fn stats_until(
    transport: &TransportHandle,
    what: &str,
    done: impl Fn(&TransportStats) -> bool,
) -> TransportStats {
    poll_until(what, || {
        let stats = transport.stats();
        done(&stats).then_some(stats)
    })
    .await
}

pub(crate) async fn poll_until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "not {what} within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Bounds a whole test, so a broken transport fails it instead of hanging the suite.
pub(crate) async fn with_patience<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(PATIENCE * 3, future)
        .await
        .expect("test finished")
}
