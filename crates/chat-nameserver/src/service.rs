//! The tonic implementation of `chat.nameserver.v1.Nameserver`.
//!
//! Every registration, unary or on a lease stream, passes through [`admit`]: the one place
//! where a request is checked (and where an authentication check belongs).

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::lease::{parse_http_address, StreamId, TableFull, MAX_HTTP_ADDRESS_LEN};
use crate::metrics::{LeaseEnd, Metrics, RefusalReason};
use crate::proto;
use crate::state::Leases;

/// Responses buffered per lease stream. A client that does not read its responses loses
/// them rather than blocking the server (it will time out and reconnect).
const STREAM_BUFFER: usize = 4;

/// The gRPC registration service over the shared [`Leases`].
#[derive(Debug, Clone)]
pub struct NameserverService {
    leases: Leases,
    stopping: watch::Receiver<bool>,
}

impl NameserverService {
    /// A service over `leases`. Lease streams end (and their leases with them) once
    /// `stopping` turns true, so a shutdown need not wait for clients to close them.
    pub fn new(leases: Leases, stopping: watch::Receiver<bool>) -> Self {
        Self { leases, stopping }
    }
}

/// A registration that passed [`admit`].
#[derive(Debug)]
struct Admitted {
    node_id: u64,
    http_address: String,
    ttl: Duration,
}

/// Checks one registration (unary, or one keep-alive of a stream that holds `stream_node`'s
/// lease, if any). A refusal is counted and logged here, and comes back as the status to
/// answer.
fn admit(
    metrics: &Metrics,
    request: &proto::RegisterRequest,
    stream_node: Option<u64>,
) -> Result<Admitted, Status> {
    let node = request.node_id;
    let refuse = |reason: RefusalReason, status: Status| {
        metrics.refused(reason);
        tracing::warn!(target: "nameserver", subsystem = "nameserver", node, ?reason,
            message = status.message(), "registration refused");
        status
    };
    if node == 0 {
        return Err(refuse(
            RefusalReason::node_id_zero,
            Status::invalid_argument("node id 0 is not a valid node id"),
        ));
    }
    if stream_node.is_some_and(|held| held != node) {
        return Err(refuse(
            RefusalReason::node_id_changed,
            Status::invalid_argument("a lease stream holds one node's lease; open another"),
        ));
    }
    if request.http_address.len() > MAX_HTTP_ADDRESS_LEN {
        return Err(refuse(
            RefusalReason::address_too_long,
            Status::invalid_argument(format!(
                "http_address is {} bytes long; at most {MAX_HTTP_ADDRESS_LEN} are accepted",
                request.http_address.len()
            )),
        ));
    }
    let http_address = parse_http_address(&request.http_address)
        .map_err(|reason| refuse(RefusalReason::bad_address, Status::invalid_argument(reason)))?;
    Ok(Admitted {
        node_id: node,
        http_address,
        ttl: Duration::from_millis(request.ttl_ms),
    })
}

fn table_full(metrics: &Metrics, node: u64, full: TableFull) -> Status {
    metrics.refused(RefusalReason::table_full);
    tracing::warn!(target: "nameserver", subsystem = "nameserver", node, %full, "registration refused");
    Status::resource_exhausted(full.to_string())
}

fn granted(ttl: Duration) -> proto::RegisterResponse {
    proto::RegisterResponse {
        granted_ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
    }
}

#[tonic::async_trait]
impl proto::nameserver_server::Nameserver for NameserverService {
    async fn register(
        &self,
        request: Request<proto::RegisterRequest>,
    ) -> Result<Response<proto::RegisterResponse>, Status> {
        let metrics = self.leases.metrics();
        let admitted = admit(metrics, request.get_ref(), None)?;
        let ttl = self
            .leases
            .grant(admitted.node_id, admitted.http_address, admitted.ttl)
            .map_err(|full| table_full(metrics, admitted.node_id, full))?;
        Ok(Response::new(granted(ttl)))
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

    type KeepLeaseStream = ReceiverStream<Result<proto::RegisterResponse, Status>>;

    async fn keep_lease(
        &self,
        request: Request<Streaming<proto::RegisterRequest>>,
    ) -> Result<Response<Self::KeepLeaseStream>, Status> {
        let (responses, receiver) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(hold_lease(
            self.leases.clone(),
            request.into_inner(),
            responses,
            self.stopping.clone(),
        ));
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

/// Serves one lease stream: each keep-alive takes or renews the lease; the lease ends when the
/// stream does (closed, broken, refused, silent past the TTL, or the server stopping).
async fn hold_lease(
    leases: Leases,
    mut inbound: impl Stream<Item = Result<proto::RegisterRequest, Status>> + Unpin,
    responses: mpsc::Sender<Result<proto::RegisterResponse, Status>>,
    mut stopping: watch::Receiver<bool>,
) {
    let stream = leases.new_stream();
    let metrics = leases.metrics();
    metrics.lease_streams_changed(1);
    let mut held: Option<u64> = None;
    // The lease's expiry; far off until the first keep-alive takes it.
    let mut expires = tokio::time::Instant::now() + Duration::from_secs(86_400);
    let cause = loop {
        tokio::select! {
            biased;
            // Err: the server is gone, which is a stop as well.
            _ = stopping.wait_for(|stop| *stop) => break LeaseEnd::withdrawn,
            // The client reset the stream (its process died, or it dropped the call): tonic
            // drops our response stream at once, before any inbound error shows.
            () = responses.closed() => break LeaseEnd::stream_broken,
            message = inbound.next() => match message {
                Some(Ok(request)) => match keep_alive(&leases, &request, held, stream) {
                    Ok((node, ttl)) => {
                        held = Some(node);
                        expires = tokio::time::Instant::now() + ttl;
                        if let Err(mpsc::error::TrySendError::Closed(_)) =
                            responses.try_send(Ok(granted(ttl)))
                        {
                            break LeaseEnd::stream_broken;
                        }
                    }
                    Err(status) => {
                        let _ = responses.try_send(Err(status));
                        break LeaseEnd::withdrawn;
                    }
                },
                None => break LeaseEnd::withdrawn,
                Some(Err(_)) => break LeaseEnd::stream_broken,
            },
            () = tokio::time::sleep_until(expires) => {
                let _ = responses.try_send(Err(Status::deadline_exceeded(
                    "no keep-alive within the lease TTL",
                )));
                break LeaseEnd::expired;
            }
        }
    };
    if let Some(node) = held {
        leases.release(node, stream, cause);
    }
    metrics.lease_streams_changed(-1);
}

/// One keep-alive on `stream`, which holds `held`'s lease if any: admits it and takes or
/// renews the lease. Returns the node and granted TTL.
fn keep_alive(
    leases: &Leases,
    request: &proto::RegisterRequest,
    held: Option<u64>,
    stream: StreamId,
) -> Result<(u64, Duration), Status> {
    let metrics = leases.metrics();
    let admitted = admit(metrics, request, held)?;
    let ttl = leases
        .grant_on_stream(
            admitted.node_id,
            admitted.http_address,
            admitted.ttl,
            stream,
        )
        .map_err(|full| table_full(metrics, admitted.node_id, full))?;
    Ok((admitted.node_id, ttl))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::LeasePolicy;

    const STREAM_TTL: Duration = Duration::from_millis(1_200);

    fn leases() -> Leases {
        Leases::new(LeasePolicy {
            default_ttl: Duration::from_secs(15),
            max_ttl: Duration::from_secs(60),
            stream_ttl: STREAM_TTL,
            max_leases: 10,
        })
    }

    fn keep_alive(node_id: u64) -> Result<proto::RegisterRequest, Status> {
        Ok(proto::RegisterRequest {
            node_id,
            http_address: format!("127.0.0.1:{}", 8080 + node_id),
            ttl_ms: 0,
        })
    }

    /// A lease stream served in the background, fed through the returned sender.
    struct Held {
        keep_alives: mpsc::Sender<Result<proto::RegisterRequest, Status>>,
        answers: mpsc::Receiver<Result<proto::RegisterResponse, Status>>,
        _stop: watch::Sender<bool>,
    }

    fn serve(leases: &Leases) -> Held {
        let (keep_alives, inbound) = mpsc::channel(4);
        let (responses, answers) = mpsc::channel(STREAM_BUFFER);
        let (stop, stopping) = watch::channel(false);
        tokio::spawn(hold_lease(
            leases.clone(),
            ReceiverStream::new(inbound),
            responses,
            stopping,
        ));
        Held {
            keep_alives,
            answers,
            _stop: stop,
        }
    }

    fn live_ids(leases: &Leases) -> Vec<u64> {
        leases.live().into_iter().map(|l| l.node_id).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_stream_loses_its_lease_after_the_ttl() {
        let leases = leases();
        let mut held = serve(&leases);
        held.keep_alives.send(keep_alive(3)).await.expect("open");
        let granted = held.answers.recv().await.expect("answer").expect("granted");
        assert_eq!(granted.granted_ttl_ms, 1_200);
        // Keep-alives within the TTL keep the lease past it.
        for _ in 0..5 {
            tokio::time::advance(STREAM_TTL / 2).await;
            held.keep_alives.send(keep_alive(3)).await.expect("send");
            held.answers.recv().await.expect("answer").expect("granted");
        }
        assert_eq!(live_ids(&leases), [3]);
        // Then the node freezes with its connection open: the TTL ends the lease and the stream.
        tokio::time::advance(STREAM_TTL).await;
        let ended = held.answers.recv().await.expect("final answer");
        assert_eq!(
            ended.expect_err("ended").code(),
            tonic::Code::DeadlineExceeded
        );
        assert!(held.answers.recv().await.is_none(), "the stream is over");
        assert_eq!(live_ids(&leases), Vec::<u64>::new());
        assert!(leases
            .encode_metrics()
            .contains("chat_nameserver_lease_ends_total{cause=\"expired\"} 1"));
    }

    #[tokio::test(start_paused = true)]
    async fn closing_the_stream_withdraws_and_the_old_stream_spares_a_newer_lease() {
        let leases = leases();
        let mut old = serve(&leases);
        old.keep_alives.send(keep_alive(5)).await.expect("open");
        old.answers.recv().await.expect("answer").expect("granted");
        // The node reconnects before its old stream is noticed as gone.
        let mut new = serve(&leases);
        new.keep_alives.send(keep_alive(5)).await.expect("open");
        new.answers.recv().await.expect("answer").expect("granted");
        drop(old.keep_alives);
        assert!(old.answers.recv().await.is_none(), "old stream over");
        assert_eq!(
            live_ids(&leases),
            [5],
            "the newer stream still holds the lease"
        );
        drop(new.keep_alives);
        assert!(new.answers.recv().await.is_none(), "new stream over");
        assert_eq!(live_ids(&leases), Vec::<u64>::new());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_cannot_switch_nodes() {
        let leases = leases();
        let mut held = serve(&leases);
        held.keep_alives.send(keep_alive(1)).await.expect("open");
        held.answers.recv().await.expect("answer").expect("granted");
        held.keep_alives.send(keep_alive(2)).await.expect("send");
        let refused = held.answers.recv().await.expect("answer");
        assert_eq!(
            refused.expect_err("refused").code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(live_ids(&leases), Vec::<u64>::new());
    }
}
