//! Serving a tonic router on a bound listener until shutdown, with a bounded grace period.

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::server::{Router, TcpIncoming};

/// How long open client connections get to close after shutdown starts; a client that keeps
/// its connection open must not keep the service from stopping.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How a server stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Every connection closed (or the server stopped by itself).
    Complete,
    /// Clients kept connections open past [`SHUTDOWN_GRACE`]; they were dropped.
    GraceExpired,
}

/// The gRPC accept stream. Small request/response exchanges stall on Nagle's algorithm meeting
/// delayed ACKs (tens of milliseconds per call) unless TCP_NODELAY is set.
pub fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Serves `router` on `listener` (with TCP_NODELAY) until `shutdown` completes, then lets
/// in-flight calls finish for at most [`SHUTDOWN_GRACE`]. The caller logs a
/// [`Drain::GraceExpired`] under its own target.
pub async fn serve_with_grace(
    router: Router,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<Drain, tonic::transport::Error> {
    let (stopping_tx, stopping) = oneshot::channel::<()>();
    let grpc = router.serve_with_incoming_shutdown(incoming(listener), async {
        shutdown.await;
        let _ = stopping_tx.send(());
    });
    tokio::pin!(grpc);
    tokio::select! {
        result = &mut grpc => result.map(|()| Drain::Complete),
        () = grace_expired(stopping) => Ok(Drain::GraceExpired),
    }
}

/// Completes [`SHUTDOWN_GRACE`] after `stopping` fires; never when it is dropped unfired (the
/// server finished by itself).
async fn grace_expired(stopping: oneshot::Receiver<()>) {
    if stopping.await.is_ok() {
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    } else {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn grace_runs_out_after_shutdown_starts() {
        let (tx, rx) = oneshot::channel();
        tx.send(()).expect("receiver alive");
        let started = tokio::time::Instant::now();
        grace_expired(rx).await;
        assert_eq!(started.elapsed(), SHUTDOWN_GRACE);
    }

    #[tokio::test(start_paused = true)]
    async fn grace_never_runs_out_when_the_server_stopped_by_itself() {
        let (tx, rx) = oneshot::channel::<()>();
        drop(tx);
        let waited = tokio::time::timeout(SHUTDOWN_GRACE * 10, grace_expired(rx)).await;
        assert!(waited.is_err(), "grace expired without a shutdown");
    }

    #[tokio::test]
    async fn serving_stops_when_shutdown_completes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        // No services: nothing to drain, so shutdown completes at once.
        let router = tonic::transport::Server::builder().add_routes(Default::default());
        let drain = serve_with_grace(router, listener, async {})
            .await
            .expect("serve");
        assert_eq!(drain, Drain::Complete);
    }
}
