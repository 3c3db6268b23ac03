//! The node's Lamport clock.
//!
//! One clock per node, shared by every part that sends or receives (topology, election, tree,
//! data plane), so that all of a node's messages are ordered on one logical timeline. The two
//! rules are Lamport's: +1 before each send, `max(local, received) + 1` on each receive.
//!
//! The value lives in an atomic so clones can be handed to threads and tasks without a lock;
//! it reads no real clock, so it fits the sans-IO machines. Where the Go prototype read its
//! clock without the lock (SPEC §11.2), every operation here is a single atomic step.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A Lamport clock; clones share the same counter.
#[derive(Debug, Clone, Default)]
pub struct LamportClock {
    time: Arc<AtomicU64>,
}

impl LamportClock {
    /// A clock at time 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Advances the clock for a message about to be sent and returns the stamp to put in its
    /// header. Concurrent callers always get distinct stamps.
    pub fn tick(&self) -> u64 {
        self.advance(|local| local.saturating_add(1))
    }

    /// Merges the Lamport time of a received message: the clock becomes
    /// `max(local, received) + 1`, which is returned.
    ///
    /// A peer cannot crash the node with a huge stamp: at `u64::MAX` the clock saturates
    /// (it stops advancing) instead of overflowing.
    pub fn observe(&self, received: u64) -> u64 {
        self.advance(|local| local.max(received).saturating_add(1))
    }

    /// The current time, without advancing it.
    pub fn now(&self) -> u64 {
        self.time.load(Ordering::Acquire)
    }

    fn advance(&self, next: impl Fn(u64) -> u64) -> u64 {
        // `fetch_update` retries on contention, so two concurrent updates never read the same
        // old value and both win: each returned stamp is one the clock really held.
        let previous = self
            .time
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |local| {
                Some(next(local))
            })
            .unwrap_or_else(|unchanged| unchanged);
        next(previous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::thread;

    #[test]
    fn a_new_clock_starts_at_zero() {
        assert_eq!(LamportClock::new().now(), 0);
    }

    #[test]
    fn tick_adds_one_before_each_send_and_returns_the_stamp() {
        let clock = LamportClock::new();
        assert_eq!(clock.tick(), 1);
        assert_eq!(clock.tick(), 2);
        assert_eq!(clock.now(), 2);
    }

    #[test]
    fn observing_a_later_time_jumps_past_it() {
        let clock = LamportClock::new();
        clock.tick();
        assert_eq!(clock.observe(10), 11);
        assert_eq!(clock.now(), 11);
    }

    #[test]
    fn observing_an_earlier_time_still_advances_by_one() {
        let clock = LamportClock::new();
        for _ in 0..5 {
            clock.tick();
        }
        assert_eq!(clock.observe(2), 6);
        assert_eq!(clock.observe(6), 7);
    }

    #[test]
    fn a_send_after_a_receive_is_stamped_later_than_the_received_message() {
        // The happened-before guarantee the two rules exist for.
        let sender = LamportClock::new();
        let receiver = LamportClock::new();
        let sent = sender.tick();
        receiver.observe(sent);
        assert!(receiver.tick() > sent);
    }

    #[test]
    fn clones_share_one_timeline() {
        let election_part = LamportClock::new();
        let topology_part = election_part.clone();
        election_part.tick();
        topology_part.observe(41);
        assert_eq!(election_part.now(), 42);
        assert_eq!(election_part.tick(), 43);
    }

    #[test]
    fn a_huge_received_stamp_saturates_instead_of_overflowing() {
        let clock = LamportClock::new();
        assert_eq!(clock.observe(u64::MAX), u64::MAX);
        assert_eq!(clock.tick(), u64::MAX);
        assert_eq!(clock.observe(u64::MAX - 1), u64::MAX);
    }

    #[test]
    fn concurrent_ticks_never_hand_out_the_same_stamp() {
        const THREADS: u64 = 8;
        const TICKS: u64 = 5_000;
        let clock = LamportClock::new();
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let clock = clock.clone();
                thread::spawn(move || (0..TICKS).map(|_| clock.tick()).collect::<Vec<_>>())
            })
            .collect();
        let mut stamps = HashSet::new();
        for handle in handles {
            for stamp in handle.join().expect("ticking thread panicked") {
                assert!(stamps.insert(stamp), "stamp {stamp} handed out twice");
            }
        }
        assert_eq!(stamps.len() as u64, THREADS * TICKS);
        assert_eq!(clock.now(), THREADS * TICKS);
    }

    #[test]
    fn concurrent_observes_and_ticks_keep_every_result_past_its_input() {
        const THREADS: u64 = 4;
        const ROUNDS: u64 = 5_000;
        let clock = LamportClock::new();
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let clock = clock.clone();
                thread::spawn(move || {
                    let mut last = 0;
                    for round in 0..ROUNDS {
                        let received = round * THREADS + t;
                        let merged = clock.observe(received);
                        assert!(merged > received, "observe({received}) gave {merged}");
                        assert!(merged > last, "clock went back from {last} to {merged}");
                        let sent = clock.tick();
                        assert!(sent > merged, "tick {sent} not after observe {merged}");
                        last = sent;
                    }
                    last
                })
            })
            .collect();
        let highest = handles
            .into_iter()
            .map(|h| h.join().expect("clock thread panicked"))
            .max()
            .unwrap_or(0);
        assert!(clock.now() >= highest);
    }
}
