//! The tonic implementation of `chat.bootstrap.v1.Bootstrap` over a persisted [`Registry`].

use std::sync::Arc;

use tokio::sync::Mutex;
use tonic::{Request, Response, Status};

use crate::assignment::{NodeAddress, Registration, Registry};
use crate::proto;
use crate::registry_file::RegistryStore;

/// The gRPC service. Every change is written to the registry file before it is answered, so a
/// node never holds neighbours the bootstrap would forget on restart.
#[derive(Debug, Clone)]
pub struct BootstrapService {
    // A tokio mutex: it is held across the file write so changes reach the disk in the order
    // they were made.
    registry: Arc<Mutex<Registry>>,
    store: RegistryStore,
}

impl BootstrapService {
    /// A service starting from `registry`, persisting to `store`.
    pub fn new(registry: Registry, store: RegistryStore) -> Self {
        Self {
            registry: Arc::new(Mutex::new(registry)),
            store,
        }
    }

    /// Applies `change` to a copy of the registry, writes the copy, and only then makes it
    /// current; a failed write leaves the registry as it was.
    async fn change_and_persist<T: Send + 'static>(
        &self,
        change: impl FnOnce(&mut Registry) -> (T, bool) + Send + 'static,
    ) -> Result<T, Status> {
        let mut current = self.registry.lock().await;
        let mut candidate = current.clone();
        let (outcome, changed) = change(&mut candidate);
        if !changed {
            return Ok(outcome);
        }
        let store = self.store.clone();
        let written =
            tokio::task::spawn_blocking(move || store.store(&candidate).map(|()| candidate))
                .await
                .map_err(|e| Status::internal(format!("registry writer failed: {e}")))?;
        match written {
            Ok(candidate) => {
                *current = candidate;
                Ok(outcome)
            }
            Err(e) => {
                tracing::error!(target: "bootstrap", subsystem = "bootstrap", error = %e, "registry not written; change dropped");
                Err(Status::unavailable(e.to_string()))
            }
        }
    }
}

impl BootstrapService {
    /// The answer for a node registering again with the address it already has: the common case
    /// (every node start), served without copying the registry.
    async fn unchanged_registration(&self, node: &NodeAddress) -> Option<Registration> {
        let registry = self.registry.lock().await;
        (registry.address_of(node.id) == Some(node)).then(|| Registration {
            neighbors: registry.neighbors_of(node.id),
            changed: false,
        })
    }
}

/// Checks a registration request and turns it into a [`NodeAddress`].
fn node_from_request(request: proto::RegisterRequest) -> Result<NodeAddress, Status> {
    if request.host.trim().is_empty() {
        return Err(Status::invalid_argument("host must not be empty"));
    }
    let port = u16::try_from(request.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| {
            Status::invalid_argument(format!("port {} is outside 1..=65535", request.port))
        })?;
    Ok(NodeAddress {
        id: request.id,
        host: request.host,
        port,
    })
}

impl From<NodeAddress> for proto::NodeAddress {
    fn from(node: NodeAddress) -> Self {
        Self {
            id: node.id,
            host: node.host,
            port: u32::from(node.port),
        }
    }
}

#[tonic::async_trait]
impl proto::bootstrap_server::Bootstrap for BootstrapService {
    async fn register(
        &self,
        request: Request<proto::RegisterRequest>,
    ) -> Result<Response<proto::RegisterResponse>, Status> {
        let node = node_from_request(request.into_inner()).inspect_err(|status| {
            tracing::warn!(target: "bootstrap", subsystem = "bootstrap", reason = status.message(), "registration refused");
        })?;
        let id = node.id;
        let registration = match self.unchanged_registration(&node).await {
            Some(registration) => registration,
            None => {
                self.change_and_persist(move |registry| {
                    let registration = registry.register(node);
                    let changed = registration.changed;
                    (registration, changed)
                })
                .await?
            }
        };
        let neighbor_ids: Vec<u64> = registration.neighbors.iter().map(|n| n.id).collect();
        tracing::info!(target: "bootstrap", subsystem = "bootstrap", node = id, neighbors = ?neighbor_ids,
            changed = registration.changed, "node registered");
        let neighbors = registration.neighbors.into_iter().map(Into::into).collect();
        Ok(Response::new(proto::RegisterResponse { neighbors }))
    }

    async fn deregister(
        &self,
        request: Request<proto::DeregisterRequest>,
    ) -> Result<Response<proto::DeregisterResponse>, Status> {
        let id = request.into_inner().id;
        let removed = self
            .change_and_persist(move |registry| {
                let removed = registry.deregister(id);
                (removed, removed)
            })
            .await?;
        tracing::info!(target: "bootstrap", subsystem = "bootstrap", node = id, removed, "node deregistered");
        Ok(Response::new(proto::DeregisterResponse { removed }))
    }

    async fn list_nodes(
        &self,
        _request: Request<proto::ListNodesRequest>,
    ) -> Result<Response<proto::ListNodesResponse>, Status> {
        let registry = self.registry.lock().await;
        let nodes = registry
            .nodes()
            .map(|(address, neighbor_ids)| proto::RegisteredNode {
                address: Some(address.clone().into()),
                neighbor_ids: neighbor_ids.to_vec(),
            })
            .collect();
        Ok(Response::new(proto::ListNodesResponse { nodes }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::bootstrap_server::Bootstrap;

    fn request(id: u64, host: &str, port: u32) -> Request<proto::RegisterRequest> {
        Request::new(proto::RegisterRequest {
            id,
            host: host.into(),
            port,
        })
    }

    #[tokio::test]
    async fn bad_ports_and_empty_hosts_are_invalid_arguments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let service = BootstrapService::new(Registry::new(), RegistryStore::in_dir(dir.path()));
        for (host, port) in [("127.0.0.1", 0), ("127.0.0.1", 70000), (" ", 46001)] {
            let status = service
                .register(request(1, host, port))
                .await
                .expect_err("refused");
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{host}:{port}");
        }
        assert!(
            !RegistryStore::in_dir(dir.path()).path().exists(),
            "nothing written"
        );
    }

    #[tokio::test]
    async fn failed_write_answers_unavailable_and_keeps_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RegistryStore::in_dir(&dir.path().join("missing"));
        let service = BootstrapService::new(Registry::new(), store);
        let status = service
            .register(request(1, "127.0.0.1", 46001))
            .await
            .expect_err("write fails");
        assert_eq!(status.code(), tonic::Code::Unavailable);
        let listed = service
            .list_nodes(Request::new(proto::ListNodesRequest {}))
            .await
            .expect("list");
        assert!(listed.into_inner().nodes.is_empty());
    }
}
