//! Where a node's neighbours come from: the static list in its configuration, else the
//! bootstrap service (whose last answer is cached in the state directory, so a node restarts
//! and rejoins while the bootstrap is down), else none (a lone node).

use std::time::Duration;

use anyhow::Context as _;
use chat_bootstrap::{discover_neighbors, NeighborSource, NodeAddress};

use crate::config::{NeighborConfig, ResolvedConfig};

/// The neighbours this node starts with.
pub(crate) async fn neighbors(config: &ResolvedConfig) -> anyhow::Result<Vec<NeighborConfig>> {
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
    let discovered = discover_neighbors(
        &config.bootstrap.address,
        Duration::from_millis(config.bootstrap.timeout_ms),
        me,
        &config.state_dir,
    )
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
