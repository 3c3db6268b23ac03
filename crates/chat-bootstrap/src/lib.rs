//! chat-bootstrap: where nodes learn their neighbours.
//!
//! Nodes register `(id, host, control port)` over gRPC (`proto/bootstrap.proto`) and get the
//! neighbours the deterministic assignment of [`assignment`] gives them. The registry is a JSON
//! file in the state directory, replaced atomically after every change ([`registry_file`]).
//!
//! For nodes: [`client::register`] is the raw call; [`discover_neighbors`] registers, caches
//! the answer in the node's state directory ([`cache`]) and falls back to that cache when the
//! bootstrap is unreachable. For the service: [`server::bind`] then
//! [`server::BoundServer::serve`], or [`server::run`]; with `metrics_listen` set it also serves
//! Prometheus metrics ([`metrics`]).

pub mod assignment;
mod atomic_file;
pub mod cache;
pub mod client;
pub mod config;
pub mod metrics;
pub mod registry_file;
pub mod server;
pub mod service;

pub use assignment::{Neighbor, NodeAddress, Registry};
pub use cache::{discover_neighbors, DiscoveredNeighbors, DiscoveryError, NeighborSource};
pub use client::BootstrapError;

/// Generated gRPC types and stubs of `chat.bootstrap.v1`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("chat.bootstrap.v1");
}
