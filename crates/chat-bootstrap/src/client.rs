//! Calling the bootstrap: what a node does at start, and what operators' tools do.
//!
//! Every call takes the services keys of the cluster secret (`keys`, see
//! [`chat_grpc::load_service_keys`]): a bootstrap guarded with the secret answers
//! `UNAUTHENTICATED` to calls without them. `None` calls unsigned (a bootstrap started without
//! a guard, in tests).

use std::time::Duration;

use chat_grpc::{AuthChannel, KeyRing};

use crate::assignment::{Neighbor, NodeAddress};
use crate::proto;
use crate::proto::bootstrap_client::BootstrapClient;

/// Errors talking to the bootstrap. Each names the bootstrap's address.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The address is not a usable gRPC target.
    #[error("bad bootstrap address {addr:?}: {reason}")]
    InvalidAddress {
        /// The address as given.
        addr: String,
        /// Why it is unusable.
        reason: String,
    },
    /// No connection could be made.
    #[error("bootstrap {addr} unreachable: {source}")]
    Unreachable {
        /// The address.
        addr: String,
        /// The transport error.
        source: tonic::transport::Error,
    },
    /// The call did not finish in time.
    #[error("bootstrap {addr} did not answer within {timeout:?}")]
    TimedOut {
        /// The address.
        addr: String,
        /// The time allowed.
        timeout: Duration,
    },
    /// The bootstrap answered with an error status.
    #[error("bootstrap {addr} refused: {code:?}: {message}")]
    Rejected {
        /// The address.
        addr: String,
        /// gRPC status code.
        code: tonic::Code,
        /// The status message.
        message: String,
    },
    /// The answer could not be understood.
    #[error("bootstrap {addr} sent a bad answer: {reason}")]
    BadResponse {
        /// The address.
        addr: String,
        /// What was wrong.
        reason: String,
    },
}

impl BootstrapError {
    /// Whether the bootstrap could not be reached (as opposed to refusing the request), so a
    /// cached answer is a fair substitute.
    pub fn is_unreachable(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::TimedOut { .. } => true,
            Self::Rejected { code, .. } => *code == tonic::Code::Unavailable,
            Self::InvalidAddress { .. } | Self::BadResponse { .. } => false,
        }
    }
}

impl From<chat_grpc::CallError> for BootstrapError {
    fn from(error: chat_grpc::CallError) -> Self {
        use chat_grpc::CallError;
        match error {
            CallError::InvalidAddress { addr, reason } => Self::InvalidAddress { addr, reason },
            CallError::Unreachable { addr, source } => Self::Unreachable { addr, source },
            CallError::TimedOut { addr, timeout } => Self::TimedOut { addr, timeout },
            CallError::Rejected {
                addr,
                code,
                message,
            } => Self::Rejected {
                addr,
                code,
                message,
            },
        }
    }
}

/// A registered node as listed by the bootstrap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredNode {
    /// The node's address.
    pub address: NodeAddress,
    /// Its neighbour ids in link order.
    pub neighbor_ids: Vec<u64>,
}

/// Registers `me` with the bootstrap at `addr` (`host:port`, or an `http://` URI) and returns
/// the neighbours it assigns, with their current addresses. The whole call, connection
/// included, is bounded by `timeout`.
pub async fn register(
    addr: &str,
    timeout: Duration,
    keys: Option<&KeyRing>,
    me: NodeAddress,
) -> Result<Vec<Neighbor>, BootstrapError> {
    let request = proto::RegisterRequest {
        id: me.id,
        host: me.host,
        port: u32::from(me.port),
    };
    let response = call(addr, timeout, keys, |mut client| async move {
        client.register(request).await
    })
    .await?;
    response
        .neighbors
        .into_iter()
        .map(|n| neighbor_from_proto(addr, n))
        .collect()
}

/// Removes node `id` from the registry; returns whether it was registered.
pub async fn deregister(
    addr: &str,
    timeout: Duration,
    keys: Option<&KeyRing>,
    id: u64,
) -> Result<bool, BootstrapError> {
    let request = proto::DeregisterRequest { id };
    Ok(call(addr, timeout, keys, |mut client| async move {
        client.deregister(request).await
    })
    .await?
    .removed)
}

/// Lists every registered node, in registration order.
pub async fn list_nodes(
    addr: &str,
    timeout: Duration,
    keys: Option<&KeyRing>,
) -> Result<Vec<RegisteredNode>, BootstrapError> {
    let response = call(addr, timeout, keys, |mut client| async move {
        client.list_nodes(proto::ListNodesRequest {}).await
    })
    .await?;
    response
        .nodes
        .into_iter()
        .map(|node| {
            let address = node.address.ok_or_else(|| BootstrapError::BadResponse {
                addr: addr.to_owned(),
                reason: "a listed node has no address".into(),
            })?;
            Ok(RegisteredNode {
                address: neighbor_from_proto(addr, address)?,
                neighbor_ids: node.neighbor_ids,
            })
        })
        .collect()
}

fn neighbor_from_proto(addr: &str, node: proto::NodeAddress) -> Result<Neighbor, BootstrapError> {
    let port = u16::try_from(node.port).map_err(|_| BootstrapError::BadResponse {
        addr: addr.to_owned(),
        reason: format!("node {} has port {}", node.id, node.port),
    })?;
    Ok(NodeAddress {
        id: node.id,
        host: node.host,
        port,
    })
}

/// Connects, runs one call signed with `keys`, and maps every failure to a
/// [`BootstrapError`], all within `timeout`.
async fn call<T, F, Fut>(
    addr: &str,
    timeout: Duration,
    keys: Option<&KeyRing>,
    rpc: F,
) -> Result<T, BootstrapError>
where
    F: FnOnce(BootstrapClient<AuthChannel>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    Ok(
        chat_grpc::call_authenticated(addr, timeout, keys, |channel| {
            rpc(BootstrapClient::new(channel))
        })
        .await?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_address_is_invalid() {
        let err = BootstrapError::from(
            chat_grpc::endpoint("not an address", Duration::from_secs(1)).expect_err("invalid"),
        );
        assert!(matches!(err, BootstrapError::InvalidAddress { .. }));
        assert!(!err.is_unreachable());
    }

    #[test]
    fn only_transport_failures_count_as_unreachable() {
        let timed_out = BootstrapError::TimedOut {
            addr: "a".into(),
            timeout: Duration::from_secs(1),
        };
        let unavailable = BootstrapError::Rejected {
            addr: "a".into(),
            code: tonic::Code::Unavailable,
            message: String::new(),
        };
        let invalid = BootstrapError::Rejected {
            addr: "a".into(),
            code: tonic::Code::InvalidArgument,
            message: String::new(),
        };
        assert!(timed_out.is_unreachable());
        assert!(unavailable.is_unreachable());
        assert!(!invalid.is_unreachable());
    }
}
