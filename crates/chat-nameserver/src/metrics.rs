//! Prometheus metrics of the nameserver, served by the HTTP front at
//! [`crate::http_front::METRICS_PATH`] (OpenMetrics text, names prefixed `chat_nameserver_`).

use chat_grpc::metrics::GuardMetrics;
use chat_grpc::ServiceGuard;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Why a registration (unary or on a lease stream) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)] // the variants are the label values, in Prometheus style
pub enum RefusalReason {
    /// Node id 0 (never a valid node id).
    node_id_zero,
    /// The address is longer than [`crate::lease::MAX_HTTP_ADDRESS_LEN`].
    address_too_long,
    /// The address is not a bare `host:port`.
    bad_address,
    /// The table holds its maximum number of leases.
    table_full,
    /// A lease stream changed its node id.
    node_id_changed,
    /// A call without a valid proof that its caller holds the cluster secret (any method:
    /// register, withdraw, list, lease streams), refused by the guard before the service.
    unauthenticated,
}

/// How a lease ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum LeaseEnd {
    /// The holder closed its lease stream (or withdrew with the unary call).
    withdrawn,
    /// The lease stream broke (the connection was lost).
    stream_broken,
    /// No keep-alive or renewal came within the TTL.
    expired,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct NodeLabel {
    node: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: RefusalReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CauseLabel {
    cause: LeaseEnd,
}

/// Every metric of the nameserver; call the methods from any task.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    leases_held: Gauge,
    lease_streams: Gauge,
    redirects: Family<NodeLabel, Counter>,
    unavailable: Counter,
    refusals: Family<ReasonLabel, Counter>,
    lease_ends: Family<CauseLabel, Counter>,
    /// The guard whose refusals show as `registrations_refused{reason="unauthenticated"}` and,
    /// by their own reasons, as `unauthenticated_calls{reason}`.
    guard: GuardMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric, registered under the prefix `chat_nameserver_`.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("chat_nameserver");
        let metrics = Self {
            leases_held: Gauge::default(),
            lease_streams: Gauge::default(),
            redirects: Family::default(),
            unavailable: Counter::default(),
            refusals: Family::default(),
            lease_ends: Family::default(),
            registry: Registry::default(),
            guard: GuardMetrics::default(),
        };
        registry.register(
            "leases_held",
            "Live leases (input nodes in rotation)",
            metrics.leases_held.clone(),
        );
        registry.register(
            "lease_streams",
            "Open lease keep-alive streams",
            metrics.lease_streams.clone(),
        );
        registry.register(
            "redirects",
            "Browsers redirected, by input node",
            metrics.redirects.clone(),
        );
        registry.register(
            "redirects_unavailable",
            "Requests answered 503 because no input node held a lease",
            metrics.unavailable.clone(),
        );
        registry.register(
            "registrations_refused",
            "Registrations and keep-alives refused, by reason",
            metrics.refusals.clone(),
        );
        registry.register(
            "lease_ends",
            "Leases ended, by cause",
            metrics.lease_ends.clone(),
        );
        metrics.guard.register(&mut registry);
        Self {
            registry,
            ..metrics
        }
    }

    /// A browser was sent to `node`.
    pub fn redirected(&self, node: u64) {
        self.redirects.get_or_create(&NodeLabel { node }).inc();
    }

    /// A browser got 503.
    pub fn unavailable(&self) {
        self.unavailable.inc();
    }

    /// A registration was refused.
    pub fn refused(&self, reason: RefusalReason) {
        self.refusals.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// A live lease ended.
    pub fn lease_ended(&self, cause: LeaseEnd) {
        self.lease_ends.get_or_create(&CauseLabel { cause }).inc();
    }

    /// Shows the calls `guard` refuses as refused registrations of reason `unauthenticated`,
    /// and by their own reasons as `unauthenticated_calls{reason}` (read at each scrape: the
    /// guard keeps the counts). Only the first guard given counts.
    pub fn follow_guard(&self, guard: ServiceGuard) {
        self.guard.follow(guard);
    }

    /// A lease stream opened (`+1`) or closed (`-1`).
    pub fn lease_streams_changed(&self, delta: i64) {
        self.lease_streams.inc_by(delta);
    }

    /// The OpenMetrics text of every metric, with `leases_held` set to `live_leases`.
    pub fn encode(&self, live_leases: usize) -> String {
        self.leases_held
            .set(i64::try_from(live_leases).unwrap_or(i64::MAX));
        if let Some(guard) = self.guard.guard().filter(|guard| guard.is_guarding()) {
            let counter = self.refusals.get_or_create(&ReasonLabel {
                reason: RefusalReason::unauthenticated,
            });
            // The guard's total only grows; bring the counter up to it.
            counter.inc_by(guard.refused().saturating_sub(counter.get()));
        }
        chat_grpc::metrics::encode(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_in_the_text() {
        let metrics = Metrics::new();
        metrics.redirected(3);
        metrics.redirected(3);
        metrics.unavailable();
        metrics.refused(RefusalReason::node_id_zero);
        metrics.lease_ended(LeaseEnd::stream_broken);
        let text = metrics.encode(2);
        for line in [
            "chat_nameserver_leases_held 2",
            "chat_nameserver_redirects_total{node=\"3\"} 2",
            "chat_nameserver_redirects_unavailable_total 1",
            "chat_nameserver_registrations_refused_total{reason=\"node_id_zero\"} 1",
            "chat_nameserver_lease_ends_total{cause=\"stream_broken\"} 1",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
    }
}
