//! tonic plumbing shared by the bootstrap and the nameserver: client calls with a deadline
//! ([`call`], [`endpoint`], [`CallError`]), and servers with TCP_NODELAY and a bounded
//! shutdown grace ([`serve_with_grace`]), and calls that only holders of the cluster secret can
//! make ([`ServiceGuard`] on the server, [`AuthChannel`] or [`call_authenticated`] on the
//! client), with their refusals counted by reason ([`AuthRefusal`]) and shown as metrics
//! ([`metrics::GuardMetrics`]). The services' small HTTP server ([`http::serve`]) carries the
//! nameserver's front door and the bootstrap's metrics endpoint.
//!
//! Each service keeps its own error type, naming itself in its messages; it converts a
//! [`CallError`] with one `From` impl.

mod auth;
mod client;
pub mod http;
pub mod metrics;
mod server;

pub use auth::{
    load_service_keys, AuthChannel, AuthError, AuthRefusal, Guarded, ServiceGuard,
    CHALLENGE_HEADER, MAX_OUTSTANDING_NONCES, NONCE_LIFETIME, PROOF_HEADER,
};
pub use chat_secret::{KeyRing, SecretError};
/// What a guarded service's `--help` says about its secret (the bootstrap's and the
/// nameserver's share it).
pub const SECRET_FILE_HELP: &str = "Every gRPC call must be signed with the cluster secret, the \
    file named by `secret_file` (default /etc/chat-system/cluster.key, the nodes' one); calls \
    without it answer UNAUTHENTICATED. A missing or malformed file stops start-up with exit code 2.";

pub use client::{call, call_authenticated, endpoint, stream_endpoint, CallError};
pub use server::{incoming, serve_with_grace, Drain, SHUTDOWN_GRACE};
