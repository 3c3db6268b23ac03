//! Serving the application on a TCP listener: HTTP/1.1 through hyper, one task per
//! connection, a graceful stop.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::app::{App, AppState};
use crate::backend::Backend;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// A page in the template directory does not compile.
    #[error(transparent)]
    Template(#[from] crate::pages::TemplateError),
}

/// The HTTP server of an input node.
#[derive(Debug, Clone, Copy)]
pub struct WebServer;

impl WebServer {
    /// Serves the API and the pages on `listener` until `shutdown` completes, then lets
    /// requests in flight finish (up to `shutdown_grace_ms`) and ends the live-update
    /// streams.
    pub async fn serve<B: Backend>(
        listener: TcpListener,
        state: AppState<B>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), WebError> {
        let app = App::new(state)?;
        Self::serve_app(listener, app, shutdown).await;
        Ok(())
    }

    /// As [`WebServer::serve`], for an application built already (the caller keeps a clone).
    pub async fn serve_app<B: Backend>(
        listener: TcpListener,
        app: App<B>,
        shutdown: impl Future<Output = ()> + Send,
    ) {
        let config = app.state().config.clone();
        let graceful = GracefulShutdown::new();
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(Duration::from_millis(config.header_read_timeout_ms));
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: wait a little rather than spin.
                        tracing::warn!(subsystem = "input", %error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let app = app.clone();
            let service = service_fn(move |request| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(app.handle(request, peer.ip()).await) }
            });
            let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(subsystem = "input", %error, %peer, "connection ended");
                }
            });
        }
        drop(listener);
        app.stop_streams();
        let grace = Duration::from_millis(config.shutdown_grace_ms);
        if tokio::time::timeout(grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                subsystem = "input",
                "requests still running after the grace period"
            );
        }
    }
}
