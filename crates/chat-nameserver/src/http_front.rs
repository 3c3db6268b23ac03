//! The HTTP front door: every request is answered with a 307 to a live input node, round-robin,
//! keeping the request's path and query; 503 with a short page when none is live.
//!
//! Two paths are not redirected: `GET /_nameserver/nodes` answers the JSON listing of live input
//! nodes (`{"nodes":[{"node_id":1,"http_address":"127.0.0.1:8081","expires_in_ms":9000}]}`),
//! and `GET /_nameserver/metrics` the Prometheus metrics (OpenMetrics text). Both live under
//! `/_nameserver/` so that no path of the chat application is shadowed.

use std::future::Future;

use chat_grpc::http::{is_read, method_not_allowed, metrics_page, response};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Bytes;
use tokio::net::TcpListener;

use crate::state::Leases;

/// The path listing the live input nodes (answered, not redirected).
pub const NODES_PATH: &str = "/_nameserver/nodes";
/// The path of the Prometheus metrics (answered, not redirected).
pub const METRICS_PATH: &str = "/_nameserver/metrics";

const NO_SERVER_PAGE: &str = "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Chat unavailable</title></head>\n\
<body><h1>No chat server is available right now</h1><p>Please try again in a few seconds.</p></body></html>\n";

/// Answers one request.
pub fn respond<B>(leases: &Leases, request: &Request<B>) -> Response<Full<Bytes>> {
    match request.uri().path() {
        NODES_PATH => return list_nodes(leases, request.method()),
        METRICS_PATH => return metrics_page(request.method(), || leases.encode_metrics()),
        _ => {}
    }
    let Some(target) = leases.next_target() else {
        leases.metrics().unavailable();
        return response(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/html; charset=utf-8",
            NO_SERVER_PAGE.into(),
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from_static("5"));
    };
    leases.metrics().redirected(target.node_id);
    let path_and_query = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = format!("http://{}{}", target.http_address, path_and_query);
    match HeaderValue::from_str(&location) {
        Ok(location) => response(
            StatusCode::TEMPORARY_REDIRECT,
            "text/plain; charset=utf-8",
            Bytes::new(),
        )
        .with_header(header::LOCATION, location),
        // Both parts were validated (address at registration, path by the HTTP parser), so this
        // is only reachable through a bug; answer rather than panic.
        Err(_) => response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain; charset=utf-8",
            "bad redirect target\n".into(),
        ),
    }
}

fn list_nodes(leases: &Leases, method: &Method) -> Response<Full<Bytes>> {
    if !is_read(method) {
        return method_not_allowed();
    }
    #[derive(serde::Serialize)]
    struct Listing {
        nodes: Vec<crate::lease::LiveLease>,
    }
    match serde_json::to_vec(&Listing {
        nodes: leases.live(),
    }) {
        Ok(json) => response(StatusCode::OK, "application/json", json.into()),
        Err(e) => response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain; charset=utf-8",
            format!("{e}\n").into(),
        ),
    }
}

trait WithHeader {
    fn with_header(self, name: header::HeaderName, value: HeaderValue) -> Self;
}

impl WithHeader for Response<Full<Bytes>> {
    fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers_mut().insert(name, value);
        self
    }
}

/// Serves HTTP/1.1 on `listener` until `shutdown` completes, then lets open connections finish
/// (up to a grace period).
pub async fn serve(listener: TcpListener, leases: Leases, shutdown: impl Future<Output = ()>) {
    let respond = move |request: &Request<_>| respond(&leases, request);
    chat_grpc::http::serve(listener, respond, shutdown).await;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::lease::LeasePolicy;

    fn leases() -> Leases {
        Leases::new(LeasePolicy {
            default_ttl: Duration::from_secs(15),
            max_ttl: Duration::from_secs(60),
            stream_ttl: Duration::from_secs(1),
            max_leases: 10,
        })
    }

    fn get(uri: &str) -> Request<()> {
        Request::get(uri).body(()).expect("request")
    }

    #[tokio::test]
    async fn no_live_node_is_503_with_a_page() {
        let response = respond(&leases(), &get("/login"));
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
    }

    #[tokio::test]
    async fn redirect_keeps_path_and_query() {
        let leases = leases();
        leases
            .grant(1, "127.0.0.1:8081".into(), Duration::ZERO)
            .expect("room");
        let response = respond(&leases, &get("/groups/42?page=2&q=a%20b"));
        assert_eq!(response.status(), StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(
            response.headers()[header::LOCATION],
            "http://127.0.0.1:8081/groups/42?page=2&q=a%20b"
        );
        let root = respond(&leases, &get("/"));
        assert_eq!(root.headers()[header::LOCATION], "http://127.0.0.1:8081/");
    }

    #[tokio::test]
    async fn redirects_and_503s_are_counted() {
        let leases = leases();
        respond(&leases, &get("/"));
        leases
            .grant(4, "127.0.0.1:8084".into(), Duration::ZERO)
            .expect("room");
        respond(&leases, &get("/"));
        let page = respond(&leases, &get(METRICS_PATH));
        assert_eq!(page.status(), StatusCode::OK);
        let text = leases.encode_metrics();
        assert!(
            text.contains("chat_nameserver_redirects_total{node=\"4\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("chat_nameserver_redirects_unavailable_total 1"),
            "{text}"
        );
        assert!(text.contains("chat_nameserver_leases_held 1"), "{text}");
    }

    #[tokio::test]
    async fn listing_path_is_not_redirected() {
        let leases = leases();
        leases
            .grant(7, "127.0.0.1:8087".into(), Duration::ZERO)
            .expect("room");
        let response = respond(&leases, &get(NODES_PATH));
        assert_eq!(response.status(), StatusCode::OK);
        let post = Request::post(NODES_PATH).body(()).expect("request");
        assert_eq!(
            respond(&leases, &post).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
