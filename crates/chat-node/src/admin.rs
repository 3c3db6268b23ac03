//! The admin endpoint on 127.0.0.1: `GET /status` (the [`NodeStatus`] JSON) and `GET /metrics`
//! (OpenMetrics text). Anything else is 404; a known path with another method is 405.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use chat_grpc::http::OPENMETRICS_CONTENT_TYPE;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::status::NodeStatus;

/// Binds the admin port on loopback only: the endpoint has no authentication.
pub(crate) async fn bind(port: u16) -> io::Result<TcpListener> {
    TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await
}

/// Serves until `shutdown` completes, then lets open requests finish (bounded by a grace), on
/// the HTTP server the bootstrap and nameserver use too.
pub(crate) async fn serve(
    listener: TcpListener,
    status: watch::Receiver<NodeStatus>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let respond = move |request: &Request<Incoming>| respond(request, &status, &metrics);
    chat_grpc::http::serve(listener, respond, shutdown).await;
}

fn respond(
    request: &Request<Incoming>,
    status: &watch::Receiver<NodeStatus>,
    metrics: &Metrics,
) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if path != "/status" && path != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: try /status or /metrics\n",
        );
    }
    if request.method() != Method::GET {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET"));
        return response;
    }
    // Clone out of the watch so its lock is not held while serializing.
    let current = status.borrow().clone();
    if path == "/status" {
        match serde_json::to_vec(&current) {
            Ok(json) => with_body(StatusCode::OK, "application/json", json),
            Err(error) => plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("{error}\n")),
        }
    } else {
        metrics.observe_status(&current);
        with_body(StatusCode::OK, OPENMETRICS_CONTENT_TYPE, metrics.encode())
    }
}

fn plain(code: StatusCode, text: &str) -> Response<Full<Bytes>> {
    with_body(code, "text/plain; charset=utf-8", text.to_owned())
}

fn with_body(
    code: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_status_and_metrics_and_refuses_the_rest() {
        let listener = bind(0).await.expect("binds");
        let port = listener.local_addr().expect("bound").port();
        let (status, updates) = watch::channel(NodeStatus::starting(9));
        let (stop, stopping) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, updates, Arc::new(Metrics::new()), async {
            let _ = stopping.await;
        }));
        status.send_modify(|status| status.lamport = 17);
        let client = reqwest::Client::new();
        let url = |path: &str| format!("http://127.0.0.1:{port}{path}");

        let response = client.get(url("/status")).send().await.expect("answers");
        assert_eq!(response.status(), 200);
        let json: serde_json::Value = response.json().await.expect("json");
        assert_eq!(
            (json["id"].as_u64(), json["lamport"].as_u64()),
            (Some(9), Some(17))
        );

        let response = client.get(url("/metrics")).send().await.expect("answers");
        assert_eq!(response.status(), 200);
        let text = response.text().await.expect("text");
        assert!(
            text.lines().any(|line| line == "chat_node_lamport 17"),
            "{text}"
        );

        let response = client.get(url("/nope")).send().await.expect("answers");
        assert_eq!(response.status(), 404);
        let response = client.post(url("/status")).send().await.expect("answers");
        assert_eq!(response.status(), 405);
        assert_eq!(
            response.headers().get("allow").map(|v| v.as_bytes()),
            Some(&b"GET"[..])
        );

        stop.send(()).expect("server still running");
        server.await.expect("server stops cleanly after shutdown");
        assert!(
            client.get(url("/status")).send().await.is_err(),
            "listener closed"
        );
    }
}
