//! One gRPC call to `host:port`, connection included, bounded by a deadline.

use std::future::Future;
use std::time::Duration;

use chat_secret::KeyRing;
use tonic::transport::{Channel, Endpoint};

use crate::AuthChannel;

/// Why a call failed. Each names the address called.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The address is not a usable gRPC target.
    #[error("bad address {addr:?}: {reason}")]
    InvalidAddress {
        /// The address as given.
        addr: String,
        /// Why it is unusable.
        reason: String,
    },
    /// No connection could be made.
    #[error("{addr} unreachable: {source}")]
    Unreachable {
        /// The address.
        addr: String,
        /// The transport error.
        source: tonic::transport::Error,
    },
    /// The call did not finish in time.
    #[error("{addr} did not answer within {timeout:?}")]
    TimedOut {
        /// The address.
        addr: String,
        /// The time allowed.
        timeout: Duration,
    },
    /// The server answered with an error status.
    #[error("{addr} refused: {code:?}: {message}")]
    Rejected {
        /// The address.
        addr: String,
        /// gRPC status code.
        code: tonic::Code,
        /// The status message.
        message: String,
    },
}

impl CallError {
    /// The server at `addr` answered `status`.
    pub fn rejected(addr: &str, status: &tonic::Status) -> Self {
        Self::Rejected {
            addr: addr.to_owned(),
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}

/// The gRPC endpoint for `addr`; a bare `host:port` means plain-text HTTP/2. Connecting and
/// each request are bounded by `timeout`.
pub fn endpoint(addr: &str, timeout: Duration) -> Result<Endpoint, CallError> {
    stream_endpoint(addr, timeout).map(|e| e.timeout(timeout))
}

/// The gRPC endpoint for `addr` for long-lived streams: connecting is bounded by
/// `connect_timeout`, requests are not (a stream lasts as long as its caller wants).
pub fn stream_endpoint(addr: &str, connect_timeout: Duration) -> Result<Endpoint, CallError> {
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    Endpoint::from_shared(uri)
        .map(|e| e.connect_timeout(connect_timeout))
        .map_err(|e| CallError::InvalidAddress {
            addr: addr.to_owned(),
            reason: e.to_string(),
        })
}

/// Connects to `addr`, runs `rpc` on the channel (typically `Client::new(channel).method(..)`),
/// and maps every failure to a [`CallError`], all within `timeout`.
pub async fn call<T, F, Fut>(addr: &str, timeout: Duration, rpc: F) -> Result<T, CallError>
where
    F: FnOnce(Channel) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let endpoint = endpoint(addr, timeout)?;
    let attempt = async {
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| CallError::Unreachable {
                addr: addr.to_owned(),
                source,
            })?;
        rpc(channel)
            .await
            .map_err(|status| CallError::rejected(addr, &status))
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result.map(tonic::Response::into_inner),
        Err(_) => Err(CallError::TimedOut {
            addr: addr.to_owned(),
            timeout,
        }),
    }
}

/// [`call`], with the call signed by `keys` (the cluster secret's services keys) for a server
/// guarded by a [`ServiceGuard`](crate::ServiceGuard); `None` calls unsigned, as [`call`].
/// `rpc` builds its client on the [`AuthChannel`] it is given:
/// `|channel| async move { FooClient::new(channel).method(request).await }`.
pub async fn call_authenticated<T, F, Fut>(
    addr: &str,
    timeout: Duration,
    keys: Option<&KeyRing>,
    rpc: F,
) -> Result<T, CallError>
where
    F: FnOnce(AuthChannel) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    call(addr, timeout, |channel| {
        rpc(AuthChannel::new(channel, keys.cloned()))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call that must never reach its RPC: the connection fails first.
    async fn unreached(_: Channel) -> Result<tonic::Response<()>, tonic::Status> {
        Err(tonic::Status::internal("the RPC ran without a connection"))
    }

    #[test]
    fn bare_host_port_becomes_http_uri() {
        let endpoint = endpoint("127.0.0.1:45999", Duration::from_secs(1)).expect("valid");
        assert_eq!(endpoint.uri().to_string(), "http://127.0.0.1:45999/");
    }

    #[test]
    fn garbage_address_is_invalid() {
        let err = endpoint("not an address", Duration::from_secs(1)).expect_err("invalid");
        assert!(matches!(err, CallError::InvalidAddress { .. }));
    }

    #[tokio::test]
    async fn closed_port_is_unreachable() {
        // Bind then drop: the port is free and nothing listens on it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let err = call(&addr, Duration::from_secs(5), unreached)
            .await
            .expect_err("nothing listens");
        assert!(
            matches!(&err, CallError::Unreachable { addr: a, .. } if *a == addr),
            "{err}"
        );
    }

    #[tokio::test]
    async fn unanswered_call_times_out() {
        // Accepts connections (the kernel completes the TCP handshake) but never answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let timeout = Duration::from_millis(200);
        let err = call(&addr, timeout, |_| {
            std::future::pending::<Result<tonic::Response<()>, tonic::Status>>()
        })
        .await
        .expect_err("no answer");
        assert!(
            matches!(&err, CallError::TimedOut { timeout: t, .. } if *t == timeout),
            "{err}"
        );
        drop(listener);
    }
}
