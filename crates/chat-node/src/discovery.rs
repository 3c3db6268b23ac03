//! Where a node's neighbours come from: the static list in its configuration, else the
//! bootstrap service (whose last answer is cached in the state directory, so a node restarts
//! and rejoins while the bootstrap is down), else none (a lone node).
//!
//! A node started before the bootstrap answers (and with nothing cached) waits for it,
//! retrying with backoff, instead of exiting: under systemd the nodes may start before the
//! bootstrap on a booting host, and a node that exited would only restart-loop into a failed
//! unit. The wait is part of the start (READY=1 comes later), so `TimeoutStartSec=` bounds it.

use std::time::Duration;

use anyhow::Context as _;
use chat_bootstrap::{
    discover_neighbors, DiscoveredNeighbors, DiscoveryError, NeighborSource, NodeAddress,
};

use crate::config::{NeighborConfig, ResolvedConfig};

/// The neighbours this node starts with. `keys` (the cluster secret's services keys) sign the
/// registration: the bootstrap only answers members.
pub(crate) async fn neighbors(
    config: &ResolvedConfig,
    keys: &chat_secret::KeyRing,
) -> anyhow::Result<Vec<NeighborConfig>> {
    if !config.neighbors.is_empty() {
        return Ok(config.neighbors.clone());
    }
    if !config.bootstrap.enabled {
        tracing::warn!(
            target: "topology",
            subsystem = "topology",
            "no static neighbours and the bootstrap is disabled: running as a lone node"
        );
        return Ok(Vec::new());
    }
    std::fs::create_dir_all(&config.state_dir).with_context(|| {
        format!(
            "cannot create the state directory {}",
            config.state_dir.display()
        )
    })?;
    let me = NodeAddress {
        id: config.id,
        host: config.host.clone(),
        port: config.control_port,
    };
    let discovered = discover_waiting_for_bootstrap(config, keys, me)
        .await
        .with_context(|| {
            format!(
                "cannot learn neighbours from the bootstrap at {}",
                config.bootstrap.address
            )
        })?;
    let source = match discovered.source {
        NeighborSource::Bootstrap => "bootstrap",
        NeighborSource::Cache => "cache (bootstrap unreachable)",
    };
    tracing::info!(
        target: "topology",
        subsystem = "topology",
        source,
        neighbors = ?discovered.neighbors.iter().map(|n| n.id).collect::<Vec<_>>(),
        "neighbours discovered"
    );
    Ok(discovered
        .neighbors
        .into_iter()
        .map(|n| NeighborConfig {
            id: n.id,
            host: n.host,
            port: n.port,
        })
        .collect())
}

/// First pause between attempts while the bootstrap is unreachable; doubles up to
/// [`RETRY_MAX`].
const RETRY_INITIAL: Duration = Duration::from_millis(250);
/// Longest pause between attempts: a bootstrap that comes up is found within this.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// [`discover_neighbors`], retried with backoff while the bootstrap is unreachable and nothing
/// is cached. A refusal or an unreadable cache is returned at once: waiting cannot fix those.
async fn discover_waiting_for_bootstrap(
    config: &ResolvedConfig,
    keys: &chat_secret::KeyRing,
    me: NodeAddress,
) -> Result<DiscoveredNeighbors, DiscoveryError> {
    let timeout = Duration::from_millis(config.bootstrap.timeout_ms);
    let mut pause = RETRY_INITIAL;
    let mut attempts: u32 = 0;
    loop {
        let outcome = discover_neighbors(
            &config.bootstrap.address,
            timeout,
            Some(keys),
            me.clone(),
            &config.state_dir,
        )
        .await;
        attempts += 1;
        match outcome {
            Err(DiscoveryError::NoCache { bootstrap, .. }) if bootstrap.is_unreachable() => {
                if attempts == 1 {
                    tracing::warn!(
                        target: "topology",
                        subsystem = "topology",
                        error = %bootstrap,
                        "bootstrap unreachable and no cached neighbours: waiting for it"
                    );
                    chat_ops::service::notify_status(&format!(
                        "waiting for the bootstrap at {}",
                        config.bootstrap.address
                    ));
                } else {
                    tracing::debug!(target: "topology", subsystem = "topology", attempts,
                        error = %bootstrap, "bootstrap still unreachable");
                }
                // Waiting is progress: the start timeout, not the watchdog, bounds it.
                chat_ops::service::notify_watchdog();
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RETRY_MAX);
            }
            Ok(discovered) => {
                if attempts > 1 {
                    tracing::info!(target: "topology", subsystem = "topology", attempts,
                        "bootstrap reached");
                }
                return Ok(discovered);
            }
            Err(error) => return Err(error),
        }
    }
}
