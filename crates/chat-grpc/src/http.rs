//! The small HTTP/1.1 server of the services: the nameserver's front door and the bootstrap's
//! metrics endpoint both answer each request from a plain function, so they share the accept
//! loop, the timeouts, the graceful stop and the metrics page here.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

/// Content type of a metrics page.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections get to finish at shutdown.
pub const HTTP_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Binds `addr` and answers the address actually bound (port 0 picks one).
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// A response with `body`, its content type, and `Cache-Control: no-store` (everything the
/// services answer changes from one request to the next).
pub fn response(
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Whether `method` only reads (GET or HEAD), the only methods the read-only paths take.
pub fn is_read(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// 405 for a read-only path.
pub fn method_not_allowed() -> Response<Full<Bytes>> {
    let mut answer = response(
        StatusCode::METHOD_NOT_ALLOWED,
        "text/plain; charset=utf-8",
        "use GET\n".into(),
    );
    answer
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    answer
}

/// The metrics page: `encode()`'s OpenMetrics text for GET and HEAD, 405 otherwise.
pub fn metrics_page(method: &Method, encode: impl FnOnce() -> String) -> Response<Full<Bytes>> {
    if !is_read(method) {
        return method_not_allowed();
    }
    response(StatusCode::OK, OPENMETRICS_CONTENT_TYPE, encode().into())
}

/// Serves HTTP/1.1 on `listener`, answering each request with `respond`, until `shutdown`
/// completes; then lets open connections finish for up to [`HTTP_SHUTDOWN_GRACE`].
pub async fn serve<F>(listener: TcpListener, respond: F, shutdown: impl Future<Output = ()>)
where
    F: Fn(&Request<Incoming>) -> Response<Full<Bytes>> + Clone + Send + Sync + 'static,
{
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::warn!(target: "http", subsystem = "http", %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Responses are tiny; without this, keep-alive clients wait on delayed ACKs.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(target: "http", subsystem = "http", %error, "TCP_NODELAY not set");
        }
        let respond = respond.clone();
        let service = service_fn(move |request: Request<Incoming>| {
            let answer = respond(&request);
            async move { Ok::<_, Infallible>(answer) }
        });
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(target: "http", subsystem = "http", %error, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(HTTP_SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(target: "http", subsystem = "http", "HTTP connections still open after the grace period");
    }
}
