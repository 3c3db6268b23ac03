//! The lease table shared by the gRPC service and the HTTP front, read against the tokio clock
//! (so tests can pause and advance time).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::lease::{LeasePolicy, LeaseTable, LiveLease};

/// Shared, clock-aware access to the lease table.
#[derive(Debug, Clone)]
pub struct Leases {
    table: Arc<Mutex<LeaseTable>>,
    policy: LeasePolicy,
}

/// The current time on the tokio clock, as a std `Instant` for the pure table.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl Leases {
    /// An empty table with `policy`.
    pub fn new(policy: LeasePolicy) -> Self {
        Self {
            table: Arc::new(Mutex::new(LeaseTable::new())),
            policy,
        }
    }

    fn lock(&self) -> MutexGuard<'_, LeaseTable> {
        // A panic while holding this lock cannot leave the table half-changed (every method
        // changes one map entry), so a poisoned lock is still safe to use.
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes or renews a lease; returns the granted TTL.
    pub fn grant(&self, node_id: u64, http_address: String, requested_ttl: Duration) -> Duration {
        let ttl = self.policy.grant(requested_ttl);
        let address_for_log = http_address.clone();
        if self.lock().grant(node_id, http_address, ttl, now()) {
            tracing::info!(target: "nameserver", subsystem = "nameserver", node = node_id,
                address = %address_for_log, ttl_ms = ttl.as_millis() as u64, "input node in rotation");
        }
        ttl
    }

    /// Ends a lease; returns whether it was live.
    pub fn withdraw(&self, node_id: u64) -> bool {
        let withdrawn = self.lock().withdraw(node_id, now());
        if withdrawn {
            tracing::info!(target: "nameserver", subsystem = "nameserver", node = node_id, "input node withdrew");
        }
        withdrawn
    }

    /// Drops expired leases (logging each).
    pub fn sweep(&self) {
        for node in self.lock().remove_expired(now()) {
            tracing::info!(target: "nameserver", subsystem = "nameserver", node, "input node lease expired");
        }
    }

    /// The live lease whose turn it is.
    pub fn next_target(&self) -> Option<LiveLease> {
        self.lock().next_target(now())
    }

    /// Every live lease, by node id.
    pub fn live(&self) -> Vec<LiveLease> {
        self.lock().live(now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn leases_expire_on_the_tokio_clock() {
        let leases = Leases::new(LeasePolicy {
            default_ttl: Duration::from_secs(15),
            max_ttl: Duration::from_secs(60),
        });
        assert_eq!(
            leases.grant(1, "127.0.0.1:8081".into(), Duration::ZERO),
            Duration::from_secs(15)
        );
        tokio::time::advance(Duration::from_secs(14)).await;
        assert_eq!(leases.next_target().map(|l| l.node_id), Some(1));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(leases.next_target(), None);
        assert!(leases.live().is_empty());
    }
}
