//! The guard's refusals as Prometheus metrics, for the registry of each guarded service:
//! `<prefix>_unauthenticated_calls_total{reason}` (every [`AuthRefusal`], zeros included, so a
//! dashboard sees each reason before it first happens) and `<prefix>_auth_nonces_evicted_total`.
//! Read from the guard at each scrape: the guard keeps the counts, nothing is copied.

use std::sync::{Arc, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::{AuthRefusal, ServiceGuard};

/// The metrics of the guard it follows; clones share it. Until it follows one (or when that
/// guard lets every call through) every count is 0.
#[derive(Clone, Debug, Default)]
pub struct GuardMetrics {
    guard: Arc<OnceLock<ServiceGuard>>,
}

impl GuardMetrics {
    /// Metrics of `guard`.
    pub fn new(guard: ServiceGuard) -> Self {
        let metrics = Self::default();
        metrics.follow(guard);
        metrics
    }

    /// Reports `guard`'s counts from now on; only the first guard given counts (a service has
    /// one guard for its whole life).
    pub fn follow(&self, guard: ServiceGuard) {
        let _ = self.guard.set(guard);
    }

    /// The guard followed, if any.
    pub fn guard(&self) -> Option<&ServiceGuard> {
        self.guard.get()
    }

    /// Adds these metrics to `registry` (under its prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(self.clone()));
    }
}

impl Collector for GuardMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let guard = self.guard();
        let mut family = encoder.encode_descriptor(
            "unauthenticated_calls",
            "gRPC calls answered UNAUTHENTICATED (without a valid proof of the cluster secret), by reason",
            None,
            MetricType::Counter,
        )?;
        for reason in AuthRefusal::ALL {
            let count = guard.map_or(0, |guard| guard.refused_for(reason));
            ConstCounter::new(count)
                .encode(family.encode_family(&[("reason", reason.as_str())])?)?;
        }
        let evicted = ConstCounter::new(guard.map_or(0, ServiceGuard::nonces_evicted));
        evicted.encode(encoder.encode_descriptor(
            "auth_nonces_evicted",
            "Nonces forgotten unused because the service's table of outstanding nonces was full",
            None,
            evicted.metric_type(),
        )?)
    }
}

/// The OpenMetrics text of `registry`.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    // Only a metric's own encoder can fail, which neither the built-in types nor the
    // collectors here do; an empty page is the safe fallback.
    if prometheus_client::encoding::text::encode(&mut text, registry).is_err() {
        text.clear();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_shows_under_the_registry_prefix_even_without_a_guard() {
        let mut registry = Registry::with_prefix("chat_test");
        GuardMetrics::default().register(&mut registry);
        let text = encode(&registry);
        for reason in AuthRefusal::ALL {
            let line = format!(
                "chat_test_unauthenticated_calls_total{{reason=\"{}\"}} 0\n",
                reason.as_str()
            );
            assert!(text.contains(&line), "{line:?} missing from\n{text}");
        }
        assert!(
            text.contains("chat_test_auth_nonces_evicted_total 0\n"),
            "{text}"
        );
    }
}
