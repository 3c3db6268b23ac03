//! Calling the nameserver: single calls, and [`LeaseKeeper`], which an input node runs while it
//! holds the input role.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::proto;
use crate::proto::nameserver_client::NameserverClient;

/// Longest a single call to a nameserver may take.
const MAX_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors talking to a nameserver. Each names the nameserver's address.
#[derive(Debug, thiserror::Error)]
pub enum NameserverError {
    /// The address is not a usable gRPC target.
    #[error("bad nameserver address {addr:?}: {reason}")]
    InvalidAddress {
        /// The address as given.
        addr: String,
        /// Why it is unusable.
        reason: String,
    },
    /// No connection could be made.
    #[error("nameserver {addr} unreachable: {source}")]
    Unreachable {
        /// The address.
        addr: String,
        /// The transport error.
        source: tonic::transport::Error,
    },
    /// The call did not finish in time.
    #[error("nameserver {addr} did not answer within {timeout:?}")]
    TimedOut {
        /// The address.
        addr: String,
        /// The time allowed.
        timeout: Duration,
    },
    /// The nameserver answered with an error status.
    #[error("nameserver {addr} refused: {code:?}: {message}")]
    Rejected {
        /// The address.
        addr: String,
        /// gRPC status code.
        code: tonic::Code,
        /// The status message.
        message: String,
    },
}

/// A live input node as listed by the nameserver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputNode {
    /// Node id.
    pub node_id: u64,
    /// Public HTTP address.
    pub http_address: String,
    /// Time left on its lease.
    pub expires_in: Duration,
}

impl From<chat_grpc::CallError> for NameserverError {
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

/// Connects, runs one call, and maps every failure to a [`NameserverError`], all within
/// `timeout`.
async fn call<T, F, Fut>(addr: &str, timeout: Duration, rpc: F) -> Result<T, NameserverError>
where
    F: FnOnce(NameserverClient<Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    Ok(chat_grpc::call(addr, timeout, |channel| rpc(NameserverClient::new(channel))).await?)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Takes or renews `node_id`'s lease on `http_address` for `ttl` (`Duration::ZERO` = the
/// server's default); returns the TTL granted.
pub async fn register_lease(
    addr: &str,
    timeout: Duration,
    node_id: u64,
    http_address: &str,
    ttl: Duration,
) -> Result<Duration, NameserverError> {
    let request = proto::RegisterRequest {
        node_id,
        http_address: http_address.to_owned(),
        ttl_ms: millis(ttl),
    };
    let response = call(addr, timeout, |mut client| async move {
        client.register(request).await
    })
    .await?;
    Ok(Duration::from_millis(response.granted_ttl_ms))
}

/// Ends `node_id`'s lease; returns whether it had a live one.
pub async fn withdraw_lease(
    addr: &str,
    timeout: Duration,
    node_id: u64,
) -> Result<bool, NameserverError> {
    let request = proto::WithdrawRequest { node_id };
    Ok(call(addr, timeout, |mut client| async move {
        client.withdraw(request).await
    })
    .await?
    .withdrawn)
}

/// Lists the live input nodes, by node id.
pub async fn list_input_nodes(
    addr: &str,
    timeout: Duration,
) -> Result<Vec<InputNode>, NameserverError> {
    let response = call(addr, timeout, |mut client| async move {
        client.list(proto::ListRequest {}).await
    })
    .await?;
    Ok(response
        .nodes
        .into_iter()
        .map(|n| InputNode {
            node_id: n.node_id,
            http_address: n.http_address,
            expires_in: Duration::from_millis(n.expires_in_ms),
        })
        .collect())
}

/// Why a [`LeaseKeeper`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum LeaseKeeperError {
    /// `start` was called outside a tokio runtime.
    #[error("the lease keeper needs a tokio runtime")]
    NoRuntime,
    /// The list of nameservers is empty.
    #[error("no nameserver configured")]
    NoNameservers,
    /// A nameserver address is unusable.
    #[error(transparent)]
    InvalidAddress(NameserverError),
    /// The public HTTP address is not `host:port`.
    #[error("bad public HTTP address: {0}")]
    InvalidHttpAddress(String),
    /// `renew_every` is zero or not shorter than `lease_ttl`, so the lease would lapse between
    /// renewals.
    #[error("renewal period {renew_every:?} must be non-zero and shorter than the lease TTL {lease_ttl:?}")]
    BadTiming {
        /// The renewal period.
        renew_every: Duration,
        /// The lease TTL.
        lease_ttl: Duration,
    },
}

/// Nameservers failing to confirm a withdrawal (their leases still expire by themselves).
#[derive(Debug, thiserror::Error)]
#[error("withdrawal not confirmed by {} nameserver(s): {}", failures.len(), describe(failures))]
pub struct WithdrawError {
    /// One error per nameserver that did not confirm.
    pub failures: Vec<NameserverError>,
}

fn describe(failures: &[NameserverError]) -> String {
    failures
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// One nameserver the keeper talks to. The channel is lazy: it connects on first use and
/// reconnects by itself after the nameserver restarts.
#[derive(Debug, Clone)]
struct Target {
    addr: String,
    client: NameserverClient<Channel>,
}

/// Keeps an input node's lease alive on every configured nameserver: registers at once, renews
/// every `renew_every`, and withdraws on [`LeaseKeeper::withdraw`] (or, best effort, on drop).
///
/// Each nameserver is handled by its own task, so one that is down delays nothing else; its
/// failures are logged when its state changes (up → down, down → up), not at every attempt.
#[derive(Debug)]
pub struct LeaseKeeper {
    node_id: u64,
    targets: Arc<[Target]>,
    stop: watch::Sender<bool>,
    renewers: Vec<JoinHandle<()>>,
}

impl LeaseKeeper {
    /// Starts keeping `node_id`'s lease on `public_http_addr` (`host:port`) at every address
    /// in `nameservers` (`host:port` or `http://` URIs). Needs a tokio runtime.
    pub fn start(
        nameservers: Vec<String>,
        node_id: u64,
        public_http_addr: String,
        renew_every: Duration,
        lease_ttl: Duration,
    ) -> Result<Self, LeaseKeeperError> {
        tokio::runtime::Handle::try_current().map_err(|_| LeaseKeeperError::NoRuntime)?;
        if nameservers.is_empty() {
            return Err(LeaseKeeperError::NoNameservers);
        }
        let public_http_addr = crate::lease::parse_http_address(&public_http_addr)
            .map_err(LeaseKeeperError::InvalidHttpAddress)?;
        if renew_every.is_zero() || renew_every >= lease_ttl {
            return Err(LeaseKeeperError::BadTiming {
                renew_every,
                lease_ttl,
            });
        }
        let call_timeout = renew_every.min(MAX_CALL_TIMEOUT);
        let targets: Arc<[Target]> = nameservers
            .into_iter()
            .map(|addr| {
                let channel = chat_grpc::endpoint(&addr, call_timeout)
                    .map_err(|e| LeaseKeeperError::InvalidAddress(e.into()))?
                    .connect_lazy();
                Ok(Target {
                    addr,
                    client: NameserverClient::new(channel),
                })
            })
            .collect::<Result<Vec<_>, _>>()?
            .into();
        let (stop, stop_rx) = watch::channel(false);
        let request = proto::RegisterRequest {
            node_id,
            http_address: public_http_addr,
            ttl_ms: millis(lease_ttl),
        };
        let renewers = targets
            .iter()
            .map(|target| {
                tokio::spawn(renew(
                    target.clone(),
                    request.clone(),
                    renew_every,
                    stop_rx.clone(),
                ))
            })
            .collect();
        Ok(Self {
            node_id,
            targets,
            stop,
            renewers,
        })
    }

    /// Stops renewing and withdraws the lease from every nameserver. Renewals in flight finish
    /// first, so none can re-register the node after its withdrawal.
    pub async fn withdraw(mut self) -> Result<(), WithdrawError> {
        let renewers = std::mem::take(&mut self.renewers);
        stop_and_withdraw(&self.stop, renewers, self.targets.clone(), self.node_id).await
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        if self.renewers.is_empty() {
            return;
        }
        let renewers = std::mem::take(&mut self.renewers);
        let _ = self.stop.send(true);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (stop, targets, node_id) = (self.stop.clone(), self.targets.clone(), self.node_id);
        runtime.spawn(async move {
            if let Err(e) = stop_and_withdraw(&stop, renewers, targets, node_id).await {
                tracing::warn!(target: "nameserver", subsystem = "nameserver", error = %e, "withdrawal on drop incomplete");
            }
        });
    }
}

async fn stop_and_withdraw(
    stop: &watch::Sender<bool>,
    renewers: Vec<JoinHandle<()>>,
    targets: Arc<[Target]>,
    node_id: u64,
) -> Result<(), WithdrawError> {
    let _ = stop.send(true);
    for renewer in renewers {
        // A renewer that panicked has nothing left in flight; withdrawing is still right.
        let _ = renewer.await;
    }
    let withdrawals: Vec<_> = targets
        .iter()
        .cloned()
        .map(|mut target| {
            tokio::spawn(async move {
                let result = target
                    .client
                    .withdraw(proto::WithdrawRequest { node_id })
                    .await;
                result
                    .map(|_| ())
                    .map_err(|status| chat_grpc::CallError::rejected(&target.addr, &status).into())
            })
        })
        .collect();
    let mut failures = Vec::new();
    for withdrawal in withdrawals {
        match withdrawal.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(e),
            Err(join) => failures.push(NameserverError::Rejected {
                addr: String::new(),
                code: tonic::Code::Internal,
                message: join.to_string(),
            }),
        }
    }
    tracing::info!(target: "nameserver", subsystem = "nameserver", node = node_id,
        failed = failures.len(), "lease withdrawn");
    if failures.is_empty() {
        Ok(())
    } else {
        Err(WithdrawError { failures })
    }
}

/// Registers with one nameserver now and every `renew_every` until told to stop.
async fn renew(
    mut target: Target,
    request: proto::RegisterRequest,
    renew_every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(renew_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reachable: Option<bool> = None;
    loop {
        tokio::select! {
            biased;
            // Err means the keeper is gone: stop as well.
            changed = stop.wait_for(|stop| *stop) => { let _ = changed; return; }
            _ = ticker.tick() => {}
        }
        let outcome = target.client.register(request.clone()).await;
        let now_reachable = outcome.is_ok();
        if reachable != Some(now_reachable) {
            match &outcome {
                Ok(granted) => tracing::info!(target: "nameserver", subsystem = "nameserver",
                    nameserver = %target.addr, node = request.node_id,
                    granted_ttl_ms = granted.get_ref().granted_ttl_ms, "lease held"),
                Err(status) => tracing::warn!(target: "nameserver", subsystem = "nameserver",
                    nameserver = %target.addr, node = request.node_id, code = ?status.code(),
                    message = status.message(), "lease renewal failing"),
            }
            reachable = Some(now_reachable);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_outside_a_runtime_is_an_error() {
        let result = LeaseKeeper::start(
            vec!["127.0.0.1:1".into()],
            1,
            "127.0.0.1:8081".into(),
            Duration::from_secs(1),
            Duration::from_secs(3),
        );
        assert!(matches!(result, Err(LeaseKeeperError::NoRuntime)));
    }

    #[tokio::test]
    async fn start_checks_its_arguments() {
        let start = |nameservers: Vec<String>, renew: u64, ttl: u64| {
            LeaseKeeper::start(
                nameservers,
                1,
                "127.0.0.1:8081".into(),
                Duration::from_secs(renew),
                Duration::from_secs(ttl),
            )
        };
        assert!(matches!(
            start(vec![], 1, 3),
            Err(LeaseKeeperError::NoNameservers)
        ));
        assert!(matches!(
            start(vec!["127.0.0.1:1".into()], 3, 3),
            Err(LeaseKeeperError::BadTiming { .. })
        ));
        assert!(matches!(
            start(vec!["127.0.0.1:1".into()], 0, 3),
            Err(LeaseKeeperError::BadTiming { .. })
        ));
        assert!(matches!(
            start(vec!["bad address".into()], 1, 3),
            Err(LeaseKeeperError::InvalidAddress(_))
        ));
    }
}
