//! The tonic implementation of `chat.bootstrap.v1.Bootstrap` over a persisted [`Registry`].

use std::sync::atomic::{AtomicU64, Ordering};
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
    max_nodes: usize,
    stats: Arc<Stats>,
}

/// Longest host accepted: a DNS name is at most 253 bytes.
pub const MAX_HOST_LEN: usize = 253;

/// Why a registration was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// Node id 0 (never a valid node id).
    NodeIdZero,
    /// An empty host.
    EmptyHost,
    /// A host longer than [`MAX_HOST_LEN`].
    HostTooLong,
    /// A port outside 1..=65535.
    BadPort,
    /// The registry holds its maximum number of nodes.
    RegistryFull,
}

impl RefusalReason {
    /// Every reason, in the order [`Refusals::counts`] reports them.
    pub const ALL: [Self; 5] = [
        Self::NodeIdZero,
        Self::EmptyHost,
        Self::HostTooLong,
        Self::BadPort,
        Self::RegistryFull,
    ];

    /// The reason's name in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NodeIdZero => "node_id_zero",
            Self::EmptyHost => "empty_host",
            Self::HostTooLong => "host_too_long",
            Self::BadPort => "bad_port",
            Self::RegistryFull => "registry_full",
        }
    }
}

/// Registrations refused so far, by reason.
#[derive(Debug, Default)]
pub struct Refusals {
    counts: [AtomicU64; RefusalReason::ALL.len()],
}

/// What the service has done, for its metrics ([`crate::metrics`]).
#[derive(Debug, Default)]
pub struct Stats {
    accepted: AtomicU64,
    refusals: Refusals,
    /// Nodes in the registry, as of the last change made current.
    nodes: AtomicU64,
}

impl Stats {
    /// Registrations answered with neighbours (new, moved, or unchanged).
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Registrations refused so far.
    pub fn refusals(&self) -> &Refusals {
        &self.refusals
    }

    /// Nodes the registry holds.
    pub fn nodes(&self) -> u64 {
        self.nodes.load(Ordering::Relaxed)
    }

    fn set_nodes(&self, registry: &Registry) {
        let nodes = u64::try_from(registry.len()).unwrap_or(u64::MAX);
        self.nodes.store(nodes, Ordering::Relaxed);
    }
}

impl Refusals {
    fn count(&self, reason: RefusalReason) {
        self.counts[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// How many registrations were refused for `reason`.
    pub fn get(&self, reason: RefusalReason) -> u64 {
        self.counts[reason as usize].load(Ordering::Relaxed)
    }
}

impl BootstrapService {
    /// A service starting from `registry`, persisting to `store`, holding at most `max_nodes`.
    pub fn new(registry: Registry, store: RegistryStore, max_nodes: usize) -> Self {
        let stats = Arc::new(Stats::default());
        stats.set_nodes(&registry);
        Self {
            registry: Arc::new(Mutex::new(registry)),
            store,
            max_nodes,
            stats,
        }
    }

    /// Registrations refused so far.
    pub fn refusals(&self) -> &Refusals {
        &self.stats.refusals
    }

    /// Registrations accepted and refused, and the registry's size, shared with the metrics.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    /// Counts and logs a refusal; returns the status to answer.
    fn refuse(&self, node: u64, reason: RefusalReason, status: Status) -> Status {
        self.stats.refusals.count(reason);
        tracing::warn!(target: "bootstrap", subsystem = "bootstrap", node, reason = reason.as_str(),
            message = status.message(), "registration refused");
        status
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
                self.stats.set_nodes(&candidate);
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

/// Checks a registration request and turns it into a [`NodeAddress`]: the one place every
/// registration passes (where an authentication check belongs).
fn node_from_request(
    request: proto::RegisterRequest,
) -> Result<NodeAddress, (RefusalReason, Status)> {
    if request.id == 0 {
        return Err((
            RefusalReason::NodeIdZero,
            Status::invalid_argument("node id 0 is not a valid node id"),
        ));
    }
    if request.host.trim().is_empty() {
        return Err((
            RefusalReason::EmptyHost,
            Status::invalid_argument("host must not be empty"),
        ));
    }
    if request.host.len() > MAX_HOST_LEN {
        return Err((
            RefusalReason::HostTooLong,
            Status::invalid_argument(format!(
                "host is {} bytes long; at most {MAX_HOST_LEN} are accepted",
                request.host.len()
            )),
        ));
    }
    let port = u16::try_from(request.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| {
            (
                RefusalReason::BadPort,
                Status::invalid_argument(format!("port {} is outside 1..=65535", request.port)),
            )
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
        let request = request.into_inner();
        let id = request.id;
        let node = node_from_request(request)
            .map_err(|(reason, status)| self.refuse(id, reason, status))?;
        let registration = match self.unchanged_registration(&node).await {
            Some(registration) => registration,
            None => {
                let max_nodes = self.max_nodes;
                self.change_and_persist(move |registry| {
                    if registry.address_of(node.id).is_none() && registry.len() >= max_nodes {
                        return (None, false);
                    }
                    let registration = registry.register(node);
                    let changed = registration.changed;
                    (Some(registration), changed)
                })
                .await?
                .ok_or_else(|| {
                    self.refuse(
                        id,
                        RefusalReason::RegistryFull,
                        Status::resource_exhausted(format!(
                            "the registry holds its maximum of {} nodes",
                            self.max_nodes
                        )),
                    )
                })?
            }
        };
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
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
    async fn bad_ids_ports_and_hosts_are_invalid_arguments_and_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let service =
            BootstrapService::new(Registry::new(), RegistryStore::in_dir(dir.path()), 100);
        let long_host = "h".repeat(MAX_HOST_LEN + 1);
        for (id, host, port) in [
            (1, "127.0.0.1", 0),
            (1, "127.0.0.1", 70000),
            (1, " ", 46001),
            (0, "127.0.0.1", 46001),
            (1, long_host.as_str(), 46001),
        ] {
            let status = service
                .register(request(id, host, port))
                .await
                .expect_err("refused");
            assert_eq!(
                status.code(),
                tonic::Code::InvalidArgument,
                "{id} {host}:{port}"
            );
        }
        assert!(
            !RegistryStore::in_dir(dir.path()).path().exists(),
            "nothing written"
        );
        let counted = RefusalReason::ALL.map(|r| service.refusals().get(r));
        assert_eq!(counted, [1, 1, 1, 2, 0]);
    }

    #[tokio::test]
    async fn a_full_registry_refuses_new_nodes_but_not_known_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let service = BootstrapService::new(Registry::new(), RegistryStore::in_dir(dir.path()), 2);
        for id in [1, 2] {
            service
                .register(request(id, "127.0.0.1", 46000 + id as u32))
                .await
                .expect("room");
        }
        let status = service
            .register(request(3, "127.0.0.1", 46003))
            .await
            .expect_err("full");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(service.refusals().get(RefusalReason::RegistryFull), 1);
        let stats = service.stats();
        assert_eq!((stats.accepted(), stats.nodes()), (2, 2));
        service
            .register(request(2, "127.0.0.2", 46002))
            .await
            .expect("a known node may move");
    }

    #[tokio::test]
    async fn failed_write_answers_unavailable_and_keeps_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RegistryStore::in_dir(&dir.path().join("missing"));
        let service = BootstrapService::new(Registry::new(), store, 100);
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
