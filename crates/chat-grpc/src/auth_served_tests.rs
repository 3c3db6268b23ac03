//! The guard and the authenticated channel on a real server over loopback: members call and
//! stream, strangers and replays answer UNAUTHENTICATED and change nothing.

use std::sync::atomic::{AtomicU64, Ordering};

use chat_secret::{ClusterSecret, Purpose};
use http::uri::PathAndQuery;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_stream::StreamExt;
use tonic::server::{ServerStreamingService, UnaryService};
use tonic_prost::ProstCodec;

use super::*;
use crate::serve_with_grace;

const OLD: [u8; 32] = [0x31; 32];
const NEW: [u8; 32] = [0x32; 32];
const BUMP: &str = "/test.Counter/Bump";
const WATCH: &str = "/test.Counter/Watch";

fn keys(current: [u8; 32], previous: Option<[u8; 32]>) -> Option<KeyRing> {
    Some(ClusterSecret::from_parts(current, previous).keys(Purpose::Services))
}

/// A service whose every call changes something: `Bump` adds one, `Watch` (a stream, like a
/// lease stream) adds one and sends two messages.
#[derive(Clone, Default)]
struct Counter {
    changes: Arc<AtomicU64>,
}

impl NamedService for Counter {
    const NAME: &'static str = "test.Counter";
}

struct Bump(Arc<AtomicU64>);

impl UnaryService<()> for Bump {
    type Response = ();
    type Future = std::future::Ready<Result<tonic::Response<()>, tonic::Status>>;

    fn call(&mut self, _: tonic::Request<()>) -> Self::Future {
        self.0.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(tonic::Response::new(())))
    }
}

type Ticks = tokio_stream::Iter<std::vec::IntoIter<Result<(), tonic::Status>>>;

struct Watch(Arc<AtomicU64>);

impl ServerStreamingService<()> for Watch {
    type Response = ();
    type ResponseStream = Ticks;
    type Future = std::future::Ready<Result<tonic::Response<Ticks>, tonic::Status>>;

    fn call(&mut self, _: tonic::Request<()>) -> Self::Future {
        self.0.fetch_add(1, Ordering::SeqCst);
        let ticks = tokio_stream::iter(vec![Ok(()), Ok(())]);
        std::future::ready(Ok(tonic::Response::new(ticks)))
    }
}

impl Service<Request<Body>> for Counter {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let changes = Arc::clone(&self.changes);
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<(), ()>::default());
            Ok(match request.uri().path() {
                BUMP => grpc.unary(Bump(changes), request).await,
                WATCH => grpc.server_streaming(Watch(changes), request).await,
                _ => tonic::Status::unimplemented("no such method").into_http(),
            })
        })
    }
}

/// A guarded counter served on loopback until dropped.
struct Served {
    addr: String,
    changes: Arc<AtomicU64>,
    guard: ServiceGuard,
    _stop: oneshot::Sender<()>,
}

async fn serve(keys: Option<KeyRing>) -> Served {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let counter = Counter::default();
    let changes = Arc::clone(&counter.changes);
    let guard = ServiceGuard::new(keys);
    let router = tonic::transport::Server::builder().add_service(guard.wrap(counter));
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve_with_grace(router, listener, async {
        let _ = stopped.await;
    }));
    Served {
        addr,
        changes,
        guard,
        _stop: stop,
    }
}

async fn channel(addr: &str) -> Channel {
    crate::endpoint(addr, Duration::from_secs(10))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect")
}

async fn bump<T>(service: T, proof: Option<&str>) -> Result<(), tonic::Status>
where
    T: tonic::client::GrpcService<Body>,
    T::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError>,
    T::Error: Into<tonic::codegen::StdError>,
{
    let mut grpc = tonic::client::Grpc::new(service);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.into().to_string()))?;
    let mut request = tonic::Request::new(());
    if let Some(proof) = proof {
        request
            .metadata_mut()
            .insert(PROOF_HEADER, proof.parse().expect("ascii"));
    }
    let codec = ProstCodec::<(), ()>::default();
    grpc.unary(request, PathAndQuery::from_static(BUMP), codec)
        .await
        .map(|_| ())
}

/// Opens the `Watch` stream and reads it to the end; returns how many messages came.
async fn watch<T>(service: T, proof: Option<&str>) -> Result<usize, tonic::Status>
where
    T: tonic::client::GrpcService<Body>,
    T::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError>,
    T::Error: Into<tonic::codegen::StdError>,
{
    let mut grpc = tonic::client::Grpc::new(service);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.into().to_string()))?;
    let mut request = tonic::Request::new(());
    if let Some(proof) = proof {
        request
            .metadata_mut()
            .insert(PROOF_HEADER, proof.parse().expect("ascii"));
    }
    let codec = ProstCodec::<(), ()>::default();
    let mut stream = grpc
        .server_streaming(request, PathAndQuery::from_static(WATCH), codec)
        .await?
        .into_inner();
    let mut messages = 0;
    while let Some(message) = stream.next().await {
        message?;
        messages += 1;
    }
    Ok(messages)
}

/// A valid proof for one call to `path`, as a member would send it (and an eavesdropper
/// record it).
async fn recorded_proof(addr: &str, keys: &KeyRing, path: &str) -> String {
    let uri: http::Uri = format!("http://{addr}{path}").parse().expect("uri");
    let request = Request::post(uri).body(Body::default()).expect("request");
    let probe_request = probe_for(&request).expect("probe");
    let challenge = probe(channel(addr).await, probe_request)
        .await
        .expect("challenge");
    let proof = prove(&Keys::new(keys.clone()), &challenge, path).expect("proof");
    proof.to_str().expect("ascii").to_owned()
}

fn changes(served: &Served) -> u64 {
    served.changes.load(Ordering::SeqCst)
}

#[tokio::test]
async fn members_call_and_stream_again_and_again_on_one_channel() {
    let served = serve(keys(OLD, None)).await;
    let channel = AuthChannel::new(channel(&served.addr).await, keys(OLD, None));
    for _ in 0..3 {
        bump(channel.clone(), None).await.expect("member call");
        assert_eq!(
            watch(channel.clone(), None).await.expect("member stream"),
            2
        );
    }
    assert_eq!(changes(&served), 6);
    let one_shot = call_authenticated_bump(&served.addr, keys(OLD, None).as_ref()).await;
    assert!(one_shot.is_ok(), "{one_shot:?}");
    assert_eq!(changes(&served), 7);
    assert_eq!(
        served.guard.refused(),
        0,
        "a member's probes are not refusals"
    );
}

async fn call_authenticated_bump(
    addr: &str,
    keys: Option<&KeyRing>,
) -> Result<(), crate::CallError> {
    crate::call_authenticated(addr, Duration::from_secs(10), keys, |channel| async move {
        bump(channel, None).await.map(tonic::Response::new)
    })
    .await
}

#[tokio::test]
async fn strangers_are_unauthenticated_and_change_nothing() {
    let served = serve(keys(OLD, None)).await;
    let unsigned = bump(channel(&served.addr).await, None).await;
    assert_eq!(
        unsigned.map_err(|s| s.code()),
        Err(tonic::Code::Unauthenticated)
    );
    let unsigned_stream = watch(channel(&served.addr).await, None).await;
    assert_eq!(
        unsigned_stream.map_err(|s| s.code()),
        Err(tonic::Code::Unauthenticated)
    );
    // Another secret: its proof names a key the server does not hold.
    let stranger = call_authenticated_bump(&served.addr, keys(NEW, None).as_ref()).await;
    assert!(stranger.is_err(), "{stranger:?}");
    // A proof with a forged MAC over a real nonce.
    let genuine = recorded_proof(&served.addr, keys(OLD, None).as_ref().expect("keys"), BUMP).await;
    let forged = format!("{}{}", &genuine[..genuine.len() - 2], "00");
    let forged_call = bump(channel(&served.addr).await, Some(&forged)).await;
    assert_eq!(
        forged_call.map_err(|s| s.code()),
        Err(tonic::Code::Unauthenticated)
    );
    // A proof that does not parse, and one naming a key the server does not hold.
    let garbled = bump(channel(&served.addr).await, Some("not.a-proof")).await;
    assert_eq!(
        garbled.map_err(|s| s.code()),
        Err(tonic::Code::Unauthenticated)
    );
    let other_key = format!("{}{}", "00".repeat(KEY_ID_LEN), &genuine[2 * KEY_ID_LEN..]);
    let other_key_call = bump(channel(&served.addr).await, Some(&other_key)).await;
    assert_eq!(
        other_key_call.map_err(|s| s.code()),
        Err(tonic::Code::Unauthenticated)
    );
    assert_eq!(changes(&served), 0);
    // The unsigned call and stream, the forgery, the garbled and the other key's proofs; the
    // other secret's client found no common key in the challenge and sent no call.
    assert_eq!(served.guard.refused(), 5);
    assert_eq!(
        refusals(&served.guard),
        [
            ("missing_proof", 2),
            ("malformed_proof", 1),
            ("unknown_key", 1),
            ("bad_mac", 1)
        ]
    );
}

/// The guard's non-zero refusal counts, by reason name.
fn refusals(guard: &ServiceGuard) -> Vec<(&'static str, u64)> {
    AuthRefusal::ALL
        .iter()
        .map(|reason| (reason.as_str(), guard.refused_for(*reason)))
        .filter(|(_, count)| *count > 0)
        .collect()
}

#[tokio::test]
async fn recorded_calls_and_streams_cannot_be_replayed_even_to_a_restarted_server() {
    let ring = keys(OLD, None).expect("keys");
    let served = serve(Some(ring.clone())).await;
    let call_proof = recorded_proof(&served.addr, &ring, BUMP).await;
    let stream_proof = recorded_proof(&served.addr, &ring, WATCH).await;
    bump(channel(&served.addr).await, Some(&call_proof))
        .await
        .expect("the original call");
    assert_eq!(
        watch(channel(&served.addr).await, Some(&stream_proof))
            .await
            .expect("the original stream"),
        2
    );
    assert_eq!(changes(&served), 2);

    let replayed = bump(channel(&served.addr).await, Some(&call_proof)).await;
    assert_eq!(
        replayed.map_err(|s| s.code()),
        Err(tonic::Code::Unauthenticated)
    );
    let replayed_stream = watch(channel(&served.addr).await, Some(&stream_proof)).await;
    assert_eq!(
        replayed_stream.map_err(|s| s.code()),
        Err(tonic::Code::Unauthenticated)
    );
    // A proof for one method does not open another.
    let other = recorded_proof(&served.addr, &ring, BUMP).await;
    let moved = watch(channel(&served.addr).await, Some(&other)).await;
    assert_eq!(
        moved.map_err(|s| s.code()),
        Err(tonic::Code::Unauthenticated)
    );
    assert_eq!(changes(&served), 2);

    // An unused proof is worthless to a restarted server, which never issued its nonce.
    let unused = recorded_proof(&served.addr, &ring, BUMP).await;
    let restarted = serve(Some(ring)).await;
    let replayed = bump(channel(&restarted.addr).await, Some(&unused)).await;
    assert_eq!(
        replayed.map_err(|s| s.code()),
        Err(tonic::Code::Unauthenticated)
    );
    assert_eq!(changes(&restarted), 0);
    // Told apart in the metrics: replays of used nonces, a proof moved to another method (its
    // MAC covers the method), a nonce the restarted server never issued.
    assert_eq!(
        refusals(&served.guard),
        [("bad_mac", 1), ("nonce_replayed", 2)]
    );
    assert_eq!(refusals(&restarted.guard), [("nonce_unknown", 1)]);
}

#[tokio::test]
async fn both_sides_of_a_rotation_call_each_other() {
    for (server, client) in [
        (keys(OLD, None), keys(NEW, Some(OLD))),
        (keys(NEW, Some(OLD)), keys(OLD, None)),
    ] {
        let served = serve(server).await;
        let result = call_authenticated_bump(&served.addr, client.as_ref()).await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(changes(&served), 1);
    }
}

#[tokio::test]
async fn without_keys_calls_pass_as_before() {
    let served = serve(None).await;
    bump(channel(&served.addr).await, None)
        .await
        .expect("unguarded call");
    call_authenticated_bump(&served.addr, None)
        .await
        .expect("unsigned call through the helper");
    assert_eq!(changes(&served), 2);
}
