//! The nameserver lease an input node holds: taken when the node gains the input role,
//! withdrawn when it loses it or shuts down, so the nameserver only redirects browsers to
//! nodes that serve them.

use std::time::Duration;

use chat_nameserver::client::LeaseKeeper;

use crate::config::ResolvedConfig;

/// Holds (or not) this node's lease at its nameservers.
pub(crate) struct InputLease {
    nameservers: Vec<String>,
    node_id: u64,
    http_address: String,
    renew_every: Duration,
    ttl: Duration,
    keeper: Option<LeaseKeeper>,
}

impl InputLease {
    pub(crate) fn new(config: &ResolvedConfig) -> Self {
        // The nameserver wants a bare host:port; the configured public address may carry
        // a scheme.
        let http_address = config
            .public_address
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        InputLease {
            nameservers: config.nameserver.addresses.clone(),
            node_id: config.id,
            http_address,
            renew_every: Duration::from_millis(config.nameserver.renew_ms),
            ttl: Duration::from_millis(config.nameserver.lease_ttl_ms),
            keeper: None,
        }
    }

    /// Follows the input role: registers when it is gained, withdraws when it is lost.
    pub(crate) async fn set_input(&mut self, input: bool) {
        if input {
            self.take();
        } else {
            self.withdraw().await;
        }
    }

    fn take(&mut self) {
        if self.keeper.is_some() || self.nameservers.is_empty() {
            return;
        }
        match LeaseKeeper::start(
            self.nameservers.clone(),
            self.node_id,
            self.http_address.clone(),
            self.renew_every,
            self.ttl,
        ) {
            Ok(keeper) => {
                tracing::info!(
                    target: "input",
                    subsystem = "input",
                    address = %self.http_address,
                    nameservers = ?self.nameservers,
                    "registered with the nameserver"
                );
                self.keeper = Some(keeper);
            }
            Err(error) => tracing::warn!(
                target: "input",
                subsystem = "input",
                %error,
                "cannot register with the nameserver"
            ),
        }
    }

    pub(crate) async fn withdraw(&mut self) {
        if let Some(keeper) = self.keeper.take() {
            match keeper.withdraw().await {
                Ok(()) => {
                    tracing::info!(target: "input", subsystem = "input", "withdrawn from the nameserver")
                }
                Err(error) => {
                    tracing::warn!(target: "input", subsystem = "input", %error, "nameserver withdrawal incomplete")
                }
            }
        }
    }
}
