//! Prometheus metrics of the bootstrap, served at [`METRICS_PATH`] on `metrics_listen` when it
//! is set (OpenMetrics text, names prefixed `chat_bootstrap_`):
//!
//! - `registrations_accepted_total`: registrations answered with neighbours;
//! - `registrations_refused_total{reason}`: every [`RefusalReason`], zeros included;
//! - `registry_nodes`: nodes the registry holds;
//! - `unauthenticated_calls_total{reason}` and `auth_nonces_evicted_total`: calls the guard
//!   refused ([`chat_grpc::metrics::GuardMetrics`], the nameserver's too).

use std::sync::Arc;

use chat_grpc::metrics::GuardMetrics;
use chat_grpc::ServiceGuard;
use http::Request;
use http_body_util::Full;
use hyper::body::Bytes;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::service::{RefusalReason, Stats};

/// The path of the metrics page; every other path answers 404.
pub const METRICS_PATH: &str = "/metrics";

/// Every metric of the bootstrap, read from the service and the guard at each scrape.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// The metrics of a service counting into `stats`, guarded by `guard`.
    pub fn new(stats: Arc<Stats>, guard: ServiceGuard) -> Self {
        let mut registry = Registry::with_prefix("chat_bootstrap");
        registry.register_collector(Box::new(ServiceCollector(stats)));
        GuardMetrics::new(guard).register(&mut registry);
        Self { registry }
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        chat_grpc::metrics::encode(&self.registry)
    }

    /// Answers one request to the metrics listener.
    pub fn respond<B>(&self, request: &Request<B>) -> http::Response<Full<Bytes>> {
        if request.uri().path() != METRICS_PATH {
            return chat_grpc::http::response(
                http::StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                format!("only {METRICS_PATH} is served here\n").into(),
            );
        }
        chat_grpc::http::metrics_page(request.method(), || self.encode())
    }
}

#[derive(Debug)]
struct ServiceCollector(Arc<Stats>);

impl Collector for ServiceCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let stats = &self.0;
        let accepted = ConstCounter::new(stats.accepted());
        accepted.encode(encoder.encode_descriptor(
            "registrations_accepted",
            "Registrations answered with neighbours (new, moved or unchanged nodes)",
            None,
            accepted.metric_type(),
        )?)?;
        let mut refused = encoder.encode_descriptor(
            "registrations_refused",
            "Registrations refused, by reason (calls without the cluster secret are in unauthenticated_calls)",
            None,
            MetricType::Counter,
        )?;
        for reason in RefusalReason::ALL {
            let count = ConstCounter::new(stats.refusals().get(reason));
            count.encode(refused.encode_family(&[("reason", reason.as_str())])?)?;
        }
        let nodes = ConstGauge::new(i64::try_from(stats.nodes()).unwrap_or(i64::MAX));
        nodes.encode(encoder.encode_descriptor(
            "registry_nodes",
            "Nodes the registry holds",
            None,
            nodes.metric_type(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_shows_with_zeros_and_other_paths_are_not_found() {
        let metrics = Metrics::new(Arc::default(), ServiceGuard::new(None));
        let text = metrics.encode();
        for line in [
            "chat_bootstrap_registrations_accepted_total 0\n",
            "chat_bootstrap_registrations_refused_total{reason=\"node_id_zero\"} 0\n",
            "chat_bootstrap_registrations_refused_total{reason=\"registry_full\"} 0\n",
            "chat_bootstrap_registry_nodes 0\n",
            "chat_bootstrap_unauthenticated_calls_total{reason=\"missing_proof\"} 0\n",
            "chat_bootstrap_auth_nonces_evicted_total 0\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
        let page = metrics.respond(&Request::get(METRICS_PATH).body(()).expect("request"));
        assert_eq!(page.status(), http::StatusCode::OK);
        let elsewhere = metrics.respond(&Request::get("/status").body(()).expect("request"));
        assert_eq!(elsewhere.status(), http::StatusCode::NOT_FOUND);
        let post = metrics.respond(&Request::post(METRICS_PATH).body(()).expect("request"));
        assert_eq!(post.status(), http::StatusCode::METHOD_NOT_ALLOWED);
    }
}
