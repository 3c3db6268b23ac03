//! chat-nameserver: the cluster's front door.
//!
//! Input nodes hold **leases** on their public HTTP address through gRPC
//! (`proto/nameserver.proto`), each over a keep-alive stream: the lease ends the moment the
//! stream breaks or closes, or when keep-alives stop for longer than its (short) TTL. The HTTP front ([`http_front`]) answers
//! any request with a 307 to a live input node, round-robin, keeping path and query, or 503
//! when none is live; `GET /_nameserver/nodes` lists the live input nodes as JSON.
//!
//! For nodes: [`client::LeaseHolder`] holds a lease over a keep-alive stream to every
//! nameserver. For the
//! service: [`server::bind`] then [`server::BoundServer::serve`], or [`server::run`].

pub mod client;
pub mod config;
pub mod http_front;
pub mod lease;
pub mod metrics;
pub mod server;
pub mod service;
pub mod state;

pub use client::{KeepAlive, LeaseHolder, NameserverError};

/// Generated gRPC types and stubs of `chat.nameserver.v1`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("chat.nameserver.v1");
}
