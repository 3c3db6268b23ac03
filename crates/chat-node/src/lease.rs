//! The nameserver lease an input node holds: held while the node can serve browsers (for now:
//! while it has the input role), withdrawn at once when it cannot or shuts down, so the
//! nameserver only redirects browsers to nodes that serve them.

use std::time::Duration;

use chat_nameserver::client::{KeepAlive, LeaseHolder};

use crate::config::ResolvedConfig;

/// Longest a shutdown waits for the nameservers to confirm the withdrawal; past it the
/// closing connection ends the leases anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// This node's lease at its nameservers. Its methods never wait on the network except
/// [`InputLease::shutdown`], which is bounded.
pub(crate) struct InputLease {
    holder: Option<LeaseHolder>,
}

impl InputLease {
    /// Starts the lease streams' tasks (not serving yet), each stream signed with `keys` (the
    /// cluster secret's services keys). Needs a tokio runtime. With no nameserver configured,
    /// or a bad address, the node runs without a lease (logged).
    pub(crate) fn new(config: &ResolvedConfig, keys: chat_secret::KeyRing) -> Self {
        if config.nameserver.addresses.is_empty() {
            return InputLease { holder: None };
        }
        // The nameserver wants a bare host:port; the configured public address may carry
        // a scheme.
        let http_address = config
            .public_address
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let keep_alive = KeepAlive {
            requested_ttl: Duration::from_millis(config.nameserver.lease_ttl_ms),
            max_interval: Duration::from_millis(config.nameserver.renew_ms),
        };
        let holder = LeaseHolder::start(
            config.nameserver.addresses.clone(),
            config.id,
            http_address.clone(),
            keep_alive,
            Some(keys),
        );
        match holder {
            Ok(holder) => InputLease {
                holder: Some(holder),
            },
            Err(error) => {
                tracing::warn!(target: "input", subsystem = "input", %error, address = %http_address,
                    "cannot hold a nameserver lease; browsers will not be sent here");
                InputLease { holder: None }
            }
        }
    }

    /// Holds the lease while `serving` (the node can serve browsers), withdraws it at once
    /// otherwise. Never waits: the lease streams' tasks act on it.
    pub(crate) fn set_serving(&mut self, serving: bool) {
        if let Some(holder) = &mut self.holder {
            tracing::info!(target: "input", subsystem = "input", serving, "nameserver lease");
            holder.set_serving(serving);
        }
    }

    /// Withdraws the lease and stops, waiting at most [`SHUTDOWN_GRACE`].
    pub(crate) async fn shutdown(self) {
        let Some(holder) = self.holder else { return };
        match holder.shutdown(SHUTDOWN_GRACE).await {
            Ok(()) => {
                tracing::info!(target: "input", subsystem = "input", "withdrawn from the nameservers")
            }
            Err(error) => tracing::warn!(target: "input", subsystem = "input", %error,
                "nameserver withdrawal incomplete; the closed connections end the leases"),
        }
    }
}
