//! STUB of the node driver: publishes a status with the configured neighbours all "off" and
//! waits for shutdown. The real driver (transport + `chat-control` state machines) replaces this
//! file and keeps the signature of [`run`].

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::config::ResolvedConfig;
use crate::metrics::Metrics;
use crate::status::{NeighborState, NeighborStatus, NodeStatus};

/// How often the stub refreshes `uptime_ms`.
const STATUS_REFRESH: Duration = Duration::from_millis(500);

/// Runs the node until `shutdown` completes.
pub(crate) async fn run(
    config: ResolvedConfig,
    status: watch::Sender<NodeStatus>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    status.send_modify(|status| {
        status.neighbors = config
            .neighbors
            .iter()
            .map(|neighbor| NeighborStatus {
                id: neighbor.id,
                state: NeighborState::Off,
                last_seen_ms: None,
            })
            .collect();
    });
    metrics.observe_status(&status.borrow());
    tracing::info!(
        target: "main",
        subsystem = "main",
        id = config.id,
        neighbors = config.neighbors.len(),
        "driver stub running: no transport yet"
    );
    tokio::pin!(shutdown);
    let mut refresh = tokio::time::interval(STATUS_REFRESH);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            _ = refresh.tick() => {
                let uptime_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                status.send_modify(|status| status.uptime_ms = uptime_ms);
            }
        }
    }
}
