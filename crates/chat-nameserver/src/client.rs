//! Calling the nameserver: single calls, and [`LeaseHolder`], which holds an input node's
//! lease over a keep-alive stream to every nameserver while the node can serve browsers.
//!
//! Every call and stream takes the services keys of the cluster secret (`keys`, see
//! [`chat_grpc::load_service_keys`]): a nameserver guarded with the secret answers
//! `UNAUTHENTICATED` to calls without them. `None` calls unsigned (a nameserver started
//! without a guard, in tests and benchmarks).

use std::time::Duration;

use chat_grpc::{AuthChannel, KeyRing};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

use crate::proto;
use crate::proto::nameserver_client::NameserverClient;

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

/// Connects, runs one call signed with `keys`, and maps every failure to a
/// [`NameserverError`], all within `timeout`.
async fn call<T, F, Fut>(
    addr: &str,
    timeout: Duration,
    keys: Option<&KeyRing>,
    rpc: F,
) -> Result<T, NameserverError>
where
    F: FnOnce(NameserverClient<AuthChannel>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    Ok(
        chat_grpc::call_authenticated(addr, timeout, keys, |channel| {
            rpc(NameserverClient::new(channel))
        })
        .await?,
    )
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Takes or renews `node_id`'s lease on `http_address` for `ttl` (`Duration::ZERO` = the
/// server's default); returns the TTL granted.
pub async fn register_lease(
    addr: &str,
    timeout: Duration,
    keys: Option<&KeyRing>,
    node_id: u64,
    http_address: &str,
    ttl: Duration,
) -> Result<Duration, NameserverError> {
    let request = proto::RegisterRequest {
        node_id,
        http_address: http_address.to_owned(),
        ttl_ms: millis(ttl),
    };
    let response = call(addr, timeout, keys, |mut client| async move {
        client.register(request).await
    })
    .await?;
    Ok(Duration::from_millis(response.granted_ttl_ms))
}

/// Ends `node_id`'s lease; returns whether it had a live one.
pub async fn withdraw_lease(
    addr: &str,
    timeout: Duration,
    keys: Option<&KeyRing>,
    node_id: u64,
) -> Result<bool, NameserverError> {
    let request = proto::WithdrawRequest { node_id };
    Ok(call(addr, timeout, keys, |mut client| async move {
        client.withdraw(request).await
    })
    .await?
    .withdrawn)
}

/// Lists the live input nodes, by node id.
pub async fn list_input_nodes(
    addr: &str,
    timeout: Duration,
    keys: Option<&KeyRing>,
) -> Result<Vec<InputNode>, NameserverError> {
    let response = call(addr, timeout, keys, |mut client| async move {
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

/// Why a [`LeaseHolder`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum LeaseHolderError {
    /// `start` was called outside a tokio runtime.
    #[error("the lease holder needs a tokio runtime")]
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
    /// Node id 0 is not a node id.
    #[error("node id 0 is not a valid node id")]
    NodeIdZero,
}

/// Nameservers that did not confirm a withdrawal within the grace period (their leases still
/// end when the connection closes, or at the latest when the TTL runs out).
#[derive(Debug, thiserror::Error)]
#[error("withdrawal not confirmed by {}", unconfirmed.join(", "))]
pub struct WithdrawError {
    /// The addresses of the nameservers that did not confirm.
    pub unconfirmed: Vec<String>,
}

/// How a lease stream is kept: the TTL asked for, and how often keep-alives go at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAlive {
    /// The TTL asked for; the nameserver cuts it to its stream TTL.
    pub requested_ttl: Duration,
    /// Keep-alives go every third of the granted TTL, or this often if that is sooner.
    pub max_interval: Duration,
}

impl Default for KeepAlive {
    fn default() -> Self {
        Self {
            requested_ttl: Duration::ZERO,
            max_interval: Duration::from_secs(1),
        }
    }
}

/// First delay before reconnecting to a nameserver; doubled after each failure up to
/// [`RECONNECT_MAX`]. Short, so a restarted nameserver learns every live node within a second.
const RECONNECT_MIN: Duration = Duration::from_millis(50);
/// Longest delay between reconnection attempts.
const RECONNECT_MAX: Duration = Duration::from_millis(250);
/// Longest wait for a TCP connection to a nameserver.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Longest wait for the answer to the first keep-alive of a stream.
const FIRST_ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// What the node wants from its lease streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Intent {
    /// Hold the lease: the node can serve browsers.
    Serving,
    /// Hold no lease.
    NotServing,
    /// Withdraw and stop.
    Stop,
}

/// Holds an input node's lease at every configured nameserver, each over its own keep-alive
/// stream (in the manner of etcd's lease keep-alive streams): the nameserver withdraws the
/// lease the moment the stream breaks, so a node that dies leaves the rotation as soon as its
/// connection closes.
///
/// The caller only states an intent ([`LeaseHolder::set_serving`], which never waits on the
/// network); one background task per nameserver owns its stream, reconnecting at once (with a
/// short backoff) when it breaks, so a restarted nameserver learns the node within a second.
/// Failures are logged when a nameserver's state changes (up → down, down → up), not at every
/// attempt.
#[derive(Debug)]
pub struct LeaseHolder {
    intent: watch::Sender<Intent>,
    streams: Vec<(String, JoinHandle<bool>)>,
}

impl LeaseHolder {
    /// Starts one stream task per address in `nameservers` (`host:port` or `http://` URIs) for
    /// `node_id`'s lease on `public_http_addr` (`host:port`), each stream signed with `keys`.
    /// The node is not serving yet: call [`LeaseHolder::set_serving`]. Needs a tokio runtime.
    pub fn start(
        nameservers: Vec<String>,
        node_id: u64,
        public_http_addr: String,
        keep_alive: KeepAlive,
        keys: Option<KeyRing>,
    ) -> Result<Self, LeaseHolderError> {
        tokio::runtime::Handle::try_current().map_err(|_| LeaseHolderError::NoRuntime)?;
        if nameservers.is_empty() {
            return Err(LeaseHolderError::NoNameservers);
        }
        if node_id == 0 {
            return Err(LeaseHolderError::NodeIdZero);
        }
        let http_address = crate::lease::parse_http_address(&public_http_addr)
            .map_err(LeaseHolderError::InvalidHttpAddress)?;
        let endpoints = nameservers
            .iter()
            .map(|addr| {
                chat_grpc::stream_endpoint(addr, CONNECT_TIMEOUT)
                    .map_err(|e| LeaseHolderError::InvalidAddress(e.into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (intent, intent_rx) = watch::channel(Intent::NotServing);
        let request = proto::RegisterRequest {
            node_id,
            http_address,
            ttl_ms: millis(keep_alive.requested_ttl),
        };
        let streams = nameservers
            .into_iter()
            .zip(endpoints)
            .map(|(addr, endpoint)| {
                let stream = LeaseStream {
                    addr: addr.clone(),
                    endpoint,
                    request: request.clone(),
                    max_interval: keep_alive.max_interval,
                    keys: keys.clone(),
                };
                (addr, tokio::spawn(stream.run(intent_rx.clone())))
            })
            .collect();
        Ok(Self { intent, streams })
    }

    /// Holds the lease (`true`) or withdraws it (`false`) at every nameserver. Returns at
    /// once: the stream tasks act on it in the background.
    pub fn set_serving(&mut self, serving: bool) {
        let wanted = if serving {
            Intent::Serving
        } else {
            Intent::NotServing
        };
        self.intent.send_if_modified(|intent| {
            let changed = *intent != wanted && *intent != Intent::Stop;
            if changed {
                *intent = wanted;
            }
            changed
        });
    }

    /// Withdraws the lease from every nameserver and stops, waiting at most `grace` for the
    /// nameservers to confirm. Streams still open then are dropped, which ends their leases
    /// as well once the connection closes.
    pub async fn shutdown(mut self, grace: Duration) -> Result<(), WithdrawError> {
        self.intent.send_replace(Intent::Stop);
        let deadline = Instant::now() + grace;
        let mut unconfirmed = Vec::new();
        for (addr, task) in std::mem::take(&mut self.streams) {
            let abort = task.abort_handle();
            match tokio::time::timeout_at(deadline, task).await {
                Ok(Ok(true)) => {}
                Ok(_) => unconfirmed.push(addr),
                Err(_) => {
                    abort.abort();
                    unconfirmed.push(addr);
                }
            }
        }
        if unconfirmed.is_empty() {
            Ok(())
        } else {
            Err(WithdrawError { unconfirmed })
        }
    }
}

impl Drop for LeaseHolder {
    fn drop(&mut self) {
        // Dropped without shutdown: the tasks withdraw and stop by themselves.
        self.intent.send_replace(Intent::Stop);
    }
}

/// One nameserver's stream task.
struct LeaseStream {
    addr: String,
    endpoint: Endpoint,
    request: proto::RegisterRequest,
    max_interval: Duration,
    /// Signs the opening of each stream (a fresh nonce per connection).
    keys: Option<KeyRing>,
}

/// A lease stream whose first keep-alive was answered: where to send keep-alives, the
/// answers, and the granted TTL.
type OpenStream = (
    mpsc::Sender<proto::RegisterRequest>,
    tonic::Streaming<proto::RegisterResponse>,
    Duration,
);

/// How a stream session ended.
enum SessionEnd {
    /// The intent changed away from serving; `confirmed` says whether the nameserver
    /// acknowledged the withdrawal.
    Withdrawn { confirmed: bool },
    /// The stream could not be opened or broke.
    Failed(String),
}

impl LeaseStream {
    /// Follows the intent until it is [`Intent::Stop`]; returns whether the last withdrawal
    /// was confirmed (or nothing needed withdrawing).
    async fn run(self, mut intent: watch::Receiver<Intent>) -> bool {
        let node = self.request.node_id;
        let mut backoff = RECONNECT_MIN;
        let mut failing = false;
        loop {
            let current = *intent.borrow_and_update();
            match current {
                Intent::Stop => return true,
                Intent::NotServing => {
                    if intent.changed().await.is_err() {
                        return true;
                    }
                    continue;
                }
                Intent::Serving => {}
            }
            match self.session(&mut intent, &mut failing).await {
                SessionEnd::Withdrawn { confirmed } => {
                    backoff = RECONNECT_MIN;
                    tracing::info!(target: "nameserver", subsystem = "nameserver",
                        nameserver = %self.addr, node, confirmed, "lease withdrawn");
                    if *intent.borrow() == Intent::Stop {
                        return confirmed;
                    }
                }
                SessionEnd::Failed(reason) => {
                    if !failing {
                        tracing::warn!(target: "nameserver", subsystem = "nameserver",
                            nameserver = %self.addr, node, %reason, "lease stream failing; reconnecting");
                        failing = true;
                    }
                    // Wait out the backoff unless the intent changes meanwhile.
                    let _ = tokio::time::timeout(backoff, intent.changed()).await;
                    backoff = (backoff * 2).min(RECONNECT_MAX);
                }
            }
        }
    }

    /// Opens a stream and keeps the lease on it until the intent leaves `Serving` or the
    /// stream fails.
    async fn session(
        &self,
        intent: &mut watch::Receiver<Intent>,
        failing: &mut bool,
    ) -> SessionEnd {
        let opened = tokio::time::timeout(FIRST_ANSWER_TIMEOUT, self.open()).await;
        let (keep_alives, mut answers, ttl) = match opened {
            Ok(Ok(stream)) => stream,
            Ok(Err(reason)) => return SessionEnd::Failed(reason),
            Err(_) => {
                return SessionEnd::Failed(format!("no answer within {FIRST_ANSWER_TIMEOUT:?}"))
            }
        };
        *failing = false;
        tracing::info!(target: "nameserver", subsystem = "nameserver", nameserver = %self.addr,
            node = self.request.node_id, granted_ttl_ms = millis(ttl), "lease held");
        let mut ttl = ttl;
        let mut last_answer = Instant::now();
        let interval = |ttl: Duration| {
            (ttl / 3)
                .min(self.max_interval)
                .max(Duration::from_millis(10))
        };
        let mut next_keep_alive = last_answer + interval(ttl);
        loop {
            tokio::select! {
                biased;
                changed = intent.changed() => {
                    if changed.is_err() || *intent.borrow() != Intent::Serving {
                        return Self::withdraw(keep_alives, answers, ttl).await;
                    }
                }
                answer = answers.message() => match answer {
                    Ok(Some(granted)) => {
                        last_answer = Instant::now();
                        ttl = Duration::from_millis(granted.granted_ttl_ms);
                    }
                    Ok(None) => return SessionEnd::Failed("the nameserver ended the stream".into()),
                    Err(status) => return SessionEnd::Failed(format!("{:?}: {}", status.code(), status.message())),
                },
                () = tokio::time::sleep_until(next_keep_alive) => {
                    // A full buffer means the nameserver is not reading; the answer timeout
                    // below then ends the stream.
                    let _ = keep_alives.try_send(self.request.clone());
                    next_keep_alive = Instant::now() + interval(ttl);
                }
                () = tokio::time::sleep_until(last_answer + ttl) => {
                    return SessionEnd::Failed(format!("no answer within the lease TTL {ttl:?}"));
                }
            }
        }
    }

    /// Connects, opens the stream, sends the first keep-alive and waits for its answer.
    async fn open(&self) -> Result<OpenStream, String> {
        let channel = self
            .endpoint
            .connect()
            .await
            .map_err(|e| format!("unreachable: {e}"))?;
        let (keep_alives, outbound) = mpsc::channel(4);
        keep_alives
            .try_send(self.request.clone())
            .map_err(|e| e.to_string())?;
        let mut answers = NameserverClient::new(AuthChannel::new(channel, self.keys.clone()))
            .keep_lease(ReceiverStream::new(outbound))
            .await
            .map_err(|status| format!("{:?}: {}", status.code(), status.message()))?
            .into_inner();
        match answers.message().await {
            Ok(Some(granted)) => Ok((
                keep_alives,
                answers,
                Duration::from_millis(granted.granted_ttl_ms),
            )),
            Ok(None) => Err("the nameserver ended the stream".into()),
            Err(status) => Err(format!("{:?}: {}", status.code(), status.message())),
        }
    }

    /// Closes our side of the stream and waits (at most `ttl`) for the nameserver to end its
    /// side, which it does once the lease is withdrawn.
    async fn withdraw(
        keep_alives: mpsc::Sender<proto::RegisterRequest>,
        mut answers: tonic::Streaming<proto::RegisterResponse>,
        ttl: Duration,
    ) -> SessionEnd {
        drop(keep_alives);
        let confirmed = tokio::time::timeout(ttl, async {
            loop {
                match answers.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => return true,
                    Err(_) => return false,
                }
            }
        })
        .await
        .unwrap_or(false);
        SessionEnd::Withdrawn { confirmed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_outside_a_runtime_is_an_error() {
        let result = LeaseHolder::start(
            vec!["127.0.0.1:1".into()],
            1,
            "127.0.0.1:8081".into(),
            KeepAlive::default(),
            None,
        );
        assert!(matches!(result, Err(LeaseHolderError::NoRuntime)));
    }

    #[tokio::test]
    async fn start_checks_its_arguments() {
        let start = |nameservers: Vec<String>, node: u64, http: &str| {
            LeaseHolder::start(nameservers, node, http.into(), KeepAlive::default(), None)
        };
        let one = || vec!["127.0.0.1:1".to_owned()];
        assert!(matches!(
            start(vec![], 1, "127.0.0.1:8081"),
            Err(LeaseHolderError::NoNameservers)
        ));
        assert!(matches!(
            start(one(), 0, "127.0.0.1:8081"),
            Err(LeaseHolderError::NodeIdZero)
        ));
        assert!(matches!(
            start(one(), 1, "http://x/"),
            Err(LeaseHolderError::InvalidHttpAddress(_))
        ));
        assert!(matches!(
            start(vec!["bad address".into()], 1, "127.0.0.1:8081"),
            Err(LeaseHolderError::InvalidAddress(_))
        ));
    }
}
