//! tonic plumbing shared by the bootstrap and the nameserver: client calls with a deadline
//! ([`call`], [`endpoint`], [`CallError`]), and servers with TCP_NODELAY and a bounded
//! shutdown grace ([`serve_with_grace`]).
//!
//! Each service keeps its own error type, naming itself in its messages; it converts a
//! [`CallError`] with one `From` impl.

mod client;
mod server;

pub use client::{call, endpoint, stream_endpoint, CallError};
pub use server::{incoming, serve_with_grace, Drain, SHUTDOWN_GRACE};
