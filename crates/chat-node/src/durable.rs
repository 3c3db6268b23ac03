//! The entry point the data plane calls after every durable write or apply, so the election
//! always compares the node's current key (issue 10, item 2), not the one read at start.
//!
//! The data plane holds a [`DurableKeyHandle`] (cloneable) and calls
//! [`DurableKeyHandle::record`] once its write or apply is durable (committed to SQLite). The
//! call never blocks or awaits: it replaces the value in a `tokio::sync::watch` channel, and
//! the control loop feeds the latest value into the state machine on its next turn. A burst of
//! writes between two turns costs the loop one update, and only the newest key matters (a
//! replica that truncates may report a smaller key: the newest value wins, not the largest).

use tokio::sync::watch;

/// What the node's store holds durably.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DurableKey {
    /// The term in which the last durable write was made (0 for a store that records none).
    pub(crate) last_term: u64,
    /// The number of writes the store holds (its data epoch).
    pub(crate) epoch: u64,
}

/// Held by the data plane: reports each new durable key to the control loop.
#[derive(Debug, Clone)]
pub(crate) struct DurableKeyHandle(watch::Sender<DurableKey>);

impl DurableKeyHandle {
    /// The store now durably holds `key`. Returns at once; never fails (with the control
    /// loop gone the node is stopping, and the key no longer matters).
    // The data plane (a later issue) is the caller; until it lands only the tests call this.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn record(&self, key: DurableKey) {
        self.0.send_replace(key);
    }
}

/// A handle for the data plane and the receiver the control loop watches, starting at the
/// key read from the store at start-up.
pub(crate) fn channel(initial: DurableKey) -> (DurableKeyHandle, watch::Receiver<DurableKey>) {
    let (sender, receiver) = watch::channel(initial);
    (DurableKeyHandle(sender), receiver)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_loop_sees_only_the_newest_key_and_the_writer_never_waits() {
        let (handle, mut updates) = channel(DurableKey {
            last_term: 1,
            epoch: 3,
        });
        assert_eq!(
            *updates.borrow_and_update(),
            DurableKey {
                last_term: 1,
                epoch: 3
            }
        );
        let writer = handle.clone();
        for epoch in 4..=100 {
            writer.record(DurableKey {
                last_term: 2,
                epoch,
            });
        }
        updates.changed().await.expect("the handle is alive");
        assert_eq!(
            *updates.borrow_and_update(),
            DurableKey {
                last_term: 2,
                epoch: 100
            }
        );
        // A replica that truncated reports a smaller key: the newest wins.
        handle.record(DurableKey {
            last_term: 2,
            epoch: 90,
        });
        updates.changed().await.expect("the handle is alive");
        assert_eq!(updates.borrow_and_update().epoch, 90);
    }
}
