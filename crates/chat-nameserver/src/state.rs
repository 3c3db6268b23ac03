//! The lease table shared by the gRPC service and the HTTP front, read against the tokio clock
//! (so tests can pause and advance time).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::lease::{LeasePolicy, LeaseTable, LiveLease, StreamId, TableFull};
use crate::metrics::{LeaseEnd, Metrics};

/// Shared, clock-aware access to the lease table, and the metrics that go with it.
#[derive(Debug, Clone)]
pub struct Leases {
    table: Arc<Mutex<LeaseTable>>,
    policy: LeasePolicy,
    metrics: Arc<Metrics>,
    next_stream: Arc<AtomicU64>,
}

/// The current time on the tokio clock, as a std `Instant` for the pure table.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl Leases {
    /// An empty table with `policy`.
    pub fn new(policy: LeasePolicy) -> Self {
        Self {
            table: Arc::new(Mutex::new(LeaseTable::new(policy.max_leases))),
            policy,
            metrics: Arc::new(Metrics::new()),
            next_stream: Arc::new(AtomicU64::new(1)),
        }
    }

    /// The lease policy.
    pub fn policy(&self) -> &LeasePolicy {
        &self.policy
    }

    /// The nameserver's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn lock(&self) -> MutexGuard<'_, LeaseTable> {
        // A panic while holding this lock cannot leave the table half-changed (every method
        // changes one map entry), so a poisoned lock is still safe to use.
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes or renews a lease by a unary registration; returns the granted TTL.
    pub fn grant(
        &self,
        node_id: u64,
        http_address: String,
        requested_ttl: Duration,
    ) -> Result<Duration, TableFull> {
        let ttl = self.policy.grant(requested_ttl);
        self.insert(node_id, http_address, ttl, None)?;
        Ok(ttl)
    }

    /// A fresh id for a lease stream.
    pub fn new_stream(&self) -> StreamId {
        StreamId(self.next_stream.fetch_add(1, Ordering::Relaxed))
    }

    /// Takes or renews a lease held by `stream`; returns the granted TTL.
    pub fn grant_on_stream(
        &self,
        node_id: u64,
        http_address: String,
        requested_ttl: Duration,
        stream: StreamId,
    ) -> Result<Duration, TableFull> {
        let ttl = self.policy.grant_on_stream(requested_ttl);
        self.insert(node_id, http_address, ttl, Some(stream))?;
        Ok(ttl)
    }

    fn insert(
        &self,
        node_id: u64,
        http_address: String,
        ttl: Duration,
        holder: Option<StreamId>,
    ) -> Result<(), TableFull> {
        let address_for_log = http_address.clone();
        if self
            .lock()
            .grant(node_id, http_address, ttl, now(), holder)?
        {
            tracing::info!(target: "nameserver", subsystem = "nameserver", node = node_id,
                address = %address_for_log, ttl_ms = ttl.as_millis() as u64, "input node in rotation");
        }
        Ok(())
    }

    /// Ends a lease, whoever holds it; returns whether it was live.
    pub fn withdraw(&self, node_id: u64) -> bool {
        let withdrawn = self.lock().withdraw(node_id, now());
        if withdrawn {
            self.metrics.lease_ended(LeaseEnd::withdrawn);
            tracing::info!(target: "nameserver", subsystem = "nameserver", node = node_id, "input node withdrew");
        }
        withdrawn
    }

    /// Ends the lease `stream` holds on `node_id`, if it still holds it (`cause` says why);
    /// returns whether it did.
    pub fn release(&self, node_id: u64, stream: StreamId, cause: LeaseEnd) -> bool {
        let released = self.lock().release(node_id, stream);
        if released {
            self.metrics.lease_ended(cause);
            tracing::info!(target: "nameserver", subsystem = "nameserver", node = node_id, ?cause,
                "input node left the rotation");
        }
        released
    }

    /// Drops expired leases (logging and counting each).
    pub fn sweep(&self) {
        for node in self.lock().remove_expired(now()) {
            self.metrics.lease_ended(LeaseEnd::expired);
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

    /// The metrics page, with the current number of live leases.
    pub fn encode_metrics(&self) -> String {
        let live = self.lock().live_count(now());
        self.metrics.encode(live)
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
            stream_ttl: Duration::from_secs(1),
            max_leases: 10,
        });
        assert_eq!(
            leases.grant(1, "127.0.0.1:8081".into(), Duration::ZERO),
            Ok(Duration::from_secs(15))
        );
        tokio::time::advance(Duration::from_secs(14)).await;
        assert_eq!(leases.next_target().map(|l| l.node_id), Some(1));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(leases.next_target(), None);
        assert!(leases.live().is_empty());
    }
}
