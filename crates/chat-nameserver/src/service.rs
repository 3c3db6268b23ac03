//! The tonic implementation of `chat.nameserver.v1.Nameserver`.

use std::time::Duration;

use tonic::{Request, Response, Status};

use crate::lease::parse_http_address;
use crate::proto;
use crate::state::Leases;

/// The gRPC registration service over the shared [`Leases`].
#[derive(Debug, Clone)]
pub struct NameserverService {
    leases: Leases,
}

impl NameserverService {
    /// A service over `leases`.
    pub fn new(leases: Leases) -> Self {
        Self { leases }
    }
}

#[tonic::async_trait]
impl proto::nameserver_server::Nameserver for NameserverService {
    async fn register(
        &self,
        request: Request<proto::RegisterRequest>,
    ) -> Result<Response<proto::RegisterResponse>, Status> {
        let request = request.into_inner();
        let address = parse_http_address(&request.http_address).map_err(|reason| {
            tracing::warn!(target: "nameserver", subsystem = "nameserver", node = request.node_id, %reason,
                "registration refused");
            Status::invalid_argument(reason)
        })?;
        let granted = self.leases.grant(
            request.node_id,
            address,
            Duration::from_millis(request.ttl_ms),
        );
        let granted_ttl_ms = u64::try_from(granted.as_millis()).unwrap_or(u64::MAX);
        Ok(Response::new(proto::RegisterResponse { granted_ttl_ms }))
    }

    async fn withdraw(
        &self,
        request: Request<proto::WithdrawRequest>,
    ) -> Result<Response<proto::WithdrawResponse>, Status> {
        let withdrawn = self.leases.withdraw(request.into_inner().node_id);
        Ok(Response::new(proto::WithdrawResponse { withdrawn }))
    }

    async fn list(
        &self,
        _request: Request<proto::ListRequest>,
    ) -> Result<Response<proto::ListResponse>, Status> {
        let nodes = self
            .leases
            .live()
            .into_iter()
            .map(|lease| proto::InputNode {
                node_id: lease.node_id,
                http_address: lease.http_address,
                expires_in_ms: u64::try_from(lease.expires_in.as_millis()).unwrap_or(u64::MAX),
            })
            .collect();
        Ok(Response::new(proto::ListResponse { nodes }))
    }
}
