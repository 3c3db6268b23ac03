//! Counters of what the transport did and dropped.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a transport's counters, all since start.
///
/// Every message the transport does not deliver lands in exactly one `dropped_*` counter or
/// in `send_errors`, so `sent + dropped_* + send_errors` accounts for every accepted send
/// (on a sealed wire, once the handshakes the sends wait for have finished).
///
/// Every received frame that is not delivered lands in `bad_frames` or one `refused_*`
/// counter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Messages handed to ZeroMQ for a peer.
    pub sent: u64,
    /// Well-formed messages received from a peer and passed to the consumer.
    pub received: u64,
    /// Sends dropped because the queue to the socket thread was full.
    pub dropped_queue_full: u64,
    /// Sends dropped because no connection to that peer's identity existed
    /// (never connected, down, or its handshake not finished yet).
    pub dropped_unroutable: u64,
    /// Sends dropped because the peer's ZeroMQ pipe was at its high-water mark.
    pub dropped_pipe_full: u64,
    /// Sends that ZeroMQ refused for another reason (logged).
    pub send_errors: u64,
    /// Received messages dropped because of a wrong frame count or an identity that is not
    /// `node-<id>`.
    pub bad_frames: u64,
    /// Sends dropped because the payload exceeded `max_message_bytes`.
    pub dropped_oversized: u64,
    /// Sends dropped because too many were already waiting for a handshake with that peer
    /// (sealed wire; bounded by the send high-water mark).
    pub dropped_handshake_pending: u64,
    /// Received payloads dropped because they exceeded `max_message_bytes`.
    pub refused_oversized: u64,
    /// Received frames dropped because the peer did not prove it holds the cluster secret
    /// (sealed wire): no common key, a handshake answer that does not verify, a frame of a
    /// session we do not have (a replay of an earlier session, or the first frames after we
    /// restarted), or clear payloads.
    pub refused_unauthenticated: u64,
    /// Received frames of an established session that failed to open: altered in flight.
    pub refused_tampered: u64,
    /// Received frames whose counter the session had already accepted: replayed.
    pub refused_replayed: u64,
    /// Receiving sessions established: a peer proved it holds the secret (sealed wire).
    pub sessions_opened: u64,
    /// [`LinkUp`](crate::TransportEvent::LinkUp) events emitted.
    pub link_ups: u64,
    /// [`LinkDown`](crate::TransportEvent::LinkDown) events emitted.
    pub link_downs: u64,
}

/// The live counters, shared between the handles and the socket thread.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) sent: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) dropped_queue_full: AtomicU64,
    pub(crate) dropped_unroutable: AtomicU64,
    pub(crate) dropped_pipe_full: AtomicU64,
    pub(crate) send_errors: AtomicU64,
    pub(crate) bad_frames: AtomicU64,
    pub(crate) dropped_oversized: AtomicU64,
    pub(crate) dropped_handshake_pending: AtomicU64,
    pub(crate) refused_oversized: AtomicU64,
    pub(crate) refused_unauthenticated: AtomicU64,
    pub(crate) refused_tampered: AtomicU64,
    pub(crate) refused_replayed: AtomicU64,
    pub(crate) sessions_opened: AtomicU64,
    pub(crate) link_ups: AtomicU64,
    pub(crate) link_downs: AtomicU64,
}

/// Adds one to a counter; the counters are statistics, so no ordering with other memory is
/// needed.
pub(crate) fn bump(counter: &AtomicU64) {
    add(counter, 1);
}

/// Adds `amount` to a counter.
pub(crate) fn add(counter: &AtomicU64, amount: u64) {
    if amount > 0 {
        counter.fetch_add(amount, Ordering::Relaxed);
    }
}

impl Counters {
    pub(crate) fn snapshot(&self) -> TransportStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        TransportStats {
            sent: read(&self.sent),
            received: read(&self.received),
            dropped_queue_full: read(&self.dropped_queue_full),
            dropped_unroutable: read(&self.dropped_unroutable),
            dropped_pipe_full: read(&self.dropped_pipe_full),
            send_errors: read(&self.send_errors),
            bad_frames: read(&self.bad_frames),
            dropped_oversized: read(&self.dropped_oversized),
            dropped_handshake_pending: read(&self.dropped_handshake_pending),
            refused_oversized: read(&self.refused_oversized),
            refused_unauthenticated: read(&self.refused_unauthenticated),
            refused_tampered: read(&self.refused_tampered),
            refused_replayed: read(&self.refused_replayed),
            sessions_opened: read(&self.sessions_opened),
            link_ups: read(&self.link_ups),
            link_downs: read(&self.link_downs),
        }
    }
}
