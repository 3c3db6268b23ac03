//! Errors of the transport.

/// What went wrong when starting or using a transport.
///
/// A message that cannot be delivered is not an error: it is dropped and counted in
/// [`TransportStats`](crate::TransportStats).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TransportError {
    /// A ZeroMQ call failed while setting the socket up.
    #[error("zmq {operation} failed: {source}")]
    Zmq {
        /// The call that failed, e.g. `set_router_handover`.
        operation: &'static str,
        /// ZeroMQ's error.
        #[source]
        source: zmq::Error,
    },
    /// The listening endpoint could not be bound (port in use, bad address, …).
    #[error("cannot bind {endpoint}: {source}")]
    Bind {
        /// The endpoint from [`TransportConfig::bind`](crate::TransportConfig::bind).
        endpoint: String,
        /// ZeroMQ's error.
        #[source]
        source: zmq::Error,
    },
    /// A peer endpoint is not of the form `tcp://<host>:<port>`.
    #[error("invalid peer endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The socket thread could not be started.
    #[error("cannot start the transport thread: {0}")]
    Thread(String),
    /// The transport has been shut down (or its thread ended); nothing more can be sent.
    #[error("the transport is shut down")]
    Closed,
}

/// Wraps a ZeroMQ error with the name of the call that produced it.
pub(crate) fn zmq_error(operation: &'static str) -> impl FnOnce(zmq::Error) -> TransportError {
    move |source| TransportError::Zmq { operation, source }
}
