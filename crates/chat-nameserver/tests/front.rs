//! The nameserver over real sockets on loopback: gRPC leases and the redirecting HTTP front.

use std::net::SocketAddr;
use std::time::Duration;

use chat_grpc::{AuthChannel, KeyRing};
use chat_nameserver::client::{list_input_nodes, register_lease, withdraw_lease};
use chat_nameserver::proto::{self, nameserver_client::NameserverClient};
use chat_nameserver::server::{self, ServerConfig};
use chat_nameserver::{KeepAlive, LeaseHolder};
use chat_secret::{ClusterSecret, Purpose};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

const TIMEOUT: Duration = Duration::from_secs(5);

/// The services keys every nameserver and client of these tests share.
fn keys() -> KeyRing {
    ClusterSecret::from_parts([0x24; 32], None).keys(Purpose::Services)
}
/// Upper bound for conditions polled below; reached only when something is broken.
const DEADLINE: Duration = Duration::from_secs(20);

/// The default configuration with both listeners on free loopback ports.
fn config() -> ServerConfig {
    let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
    ServerConfig {
        grpc_listen: any_port,
        http_listen: any_port,
        ..ServerConfig::default()
    }
}

struct RunningNameserver {
    grpc: String,
    http: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), server::ServerError>>,
}

impl RunningNameserver {
    async fn start_on(grpc_listen: SocketAddr) -> Self {
        Self::start_with(ServerConfig {
            grpc_listen,
            ..config()
        })
        .await
    }

    async fn start_with(config: ServerConfig) -> Self {
        let bound = server::bind_with_keys(&config, Some(keys()))
            .await
            .expect("bind");
        let (grpc, http) = (bound.grpc_addr().to_string(), bound.http_addr().to_string());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(bound.serve(async {
            let _ = stopped.await;
        }));
        Self {
            grpc,
            http,
            stop,
            task,
        }
    }

    async fn start() -> Self {
        Self::start_with(config()).await
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task
            .await
            .expect("server task")
            .expect("server ran cleanly");
    }

    /// GET `path` without following redirects; returns status and Location.
    async fn get(&self, path: &str) -> (u16, Option<String>) {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let response = client
            .get(format!("http://{}{path}", self.http))
            .send()
            .await
            .expect("request");
        let location = response
            .headers()
            .get("location")
            .map(|v| v.to_str().expect("ascii").to_owned());
        (response.status().as_u16(), location)
    }

    /// The metrics page.
    async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/_nameserver/metrics", self.http))
            .await
            .expect("request")
            .text()
            .await
            .expect("text")
    }

    async fn listed_ids(&self) -> Vec<u64> {
        list_input_nodes(&self.grpc, TIMEOUT, Some(&keys()))
            .await
            .expect("list")
            .into_iter()
            .map(|n| n.node_id)
            .collect()
    }

    /// Polls the listing until `wanted` holds or the deadline passes.
    async fn wait_for_listing(&self, what: &str, wanted: impl Fn(&[u64]) -> bool) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let ids = self.listed_ids().await;
            if wanted(&ids) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; listing is {ids:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn redirects_round_robin_keeping_path_and_query_until_no_lease_is_left() {
    let ns = RunningNameserver::start().await;
    assert_eq!(ns.get("/").await, (503, None));

    for (id, port) in [(1, 8081), (2, 8082)] {
        register_lease(
            &ns.grpc,
            TIMEOUT,
            Some(&keys()),
            id,
            &format!("127.0.0.1:{port}"),
            Duration::ZERO,
        )
        .await
        .expect("register");
    }
    let mut locations = Vec::new();
    for _ in 0..4 {
        let (status, location) = ns.get("/groups/7?page=2&q=a%20b").await;
        assert_eq!(status, 307);
        locations.push(location.expect("location"));
    }
    let to_1 = "http://127.0.0.1:8081/groups/7?page=2&q=a%20b";
    let to_2 = "http://127.0.0.1:8082/groups/7?page=2&q=a%20b";
    assert_eq!(locations, [to_1, to_2, to_1, to_2]);

    // Node 1 renews with a short lease and then stops renewing: it leaves the rotation.
    register_lease(
        &ns.grpc,
        TIMEOUT,
        Some(&keys()),
        1,
        "127.0.0.1:8081",
        Duration::from_millis(200),
    )
    .await
    .expect("renew");
    ns.wait_for_listing("node 1's lease to lapse", |ids| ids == [2])
        .await;
    for _ in 0..3 {
        assert_eq!(
            ns.get("/x?y=1").await,
            (307, Some("http://127.0.0.1:8082/x?y=1".into()))
        );
    }

    assert!(withdraw_lease(&ns.grpc, TIMEOUT, Some(&keys()), 2)
        .await
        .expect("withdraw"));
    assert_eq!(ns.get("/x").await.0, 503);
    ns.stop().await;
}

#[tokio::test]
async fn registering_again_replaces_the_address_without_duplicates() {
    let ns = RunningNameserver::start().await;
    register_lease(
        &ns.grpc,
        TIMEOUT,
        Some(&keys()),
        5,
        "127.0.0.1:8085",
        Duration::ZERO,
    )
    .await
    .expect("register");
    register_lease(
        &ns.grpc,
        TIMEOUT,
        Some(&keys()),
        5,
        "127.0.0.1:9085",
        Duration::ZERO,
    )
    .await
    .expect("register again");
    let listed = list_input_nodes(&ns.grpc, TIMEOUT, Some(&keys()))
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].http_address, "127.0.0.1:9085");
    assert_eq!(
        ns.get("/").await.1.as_deref(),
        Some("http://127.0.0.1:9085/")
    );
    ns.stop().await;
}

#[tokio::test]
async fn bad_http_address_is_refused() {
    let ns = RunningNameserver::start().await;
    let err = register_lease(
        &ns.grpc,
        TIMEOUT,
        Some(&keys()),
        1,
        "http://evil.example/",
        Duration::ZERO,
    )
    .await
    .expect_err("refused");
    assert!(
        matches!(
            err,
            chat_nameserver::NameserverError::Rejected {
                code: tonic::Code::InvalidArgument,
                ..
            }
        ),
        "{err:?}"
    );
    ns.stop().await;
}

#[tokio::test]
async fn json_listing_shows_live_nodes() {
    let ns = RunningNameserver::start().await;
    register_lease(
        &ns.grpc,
        TIMEOUT,
        Some(&keys()),
        3,
        "127.0.0.1:8083",
        Duration::ZERO,
    )
    .await
    .expect("register");
    let body: serde_json::Value = reqwest::get(format!("http://{}/_nameserver/nodes", ns.http))
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(body["nodes"][0]["node_id"], 3);
    assert_eq!(body["nodes"][0]["http_address"], "127.0.0.1:8083");
    assert!(body["nodes"][0]["expires_in_ms"].as_u64().expect("number") > 0);
    ns.stop().await;
}

/// Node `id`'s holder on `nameservers` with the default keep-alive, already serving.
fn serving_holder(nameservers: &[&RunningNameserver], id: u64) -> LeaseHolder {
    let mut holder = LeaseHolder::start(
        nameservers.iter().map(|ns| ns.grpc.clone()).collect(),
        id,
        format!("127.0.0.1:{}", 8080 + id),
        KeepAlive::default(),
        Some(keys()),
    )
    .expect("start");
    holder.set_serving(true);
    holder
}

#[tokio::test]
async fn lease_holder_follows_its_intent_on_every_nameserver() {
    let first = RunningNameserver::start().await;
    let second = RunningNameserver::start().await;
    let mut holder = serving_holder(&[&first, &second], 4);
    for ns in [&first, &second] {
        ns.wait_for_listing("node 4 listed", |ids| ids == [4]).await;
    }
    holder.set_serving(false);
    for ns in [&first, &second] {
        ns.wait_for_listing("node 4 withdrawn", <[u64]>::is_empty)
            .await;
        assert_eq!(ns.get("/").await.0, 503);
    }
    holder.set_serving(true);
    for ns in [&first, &second] {
        ns.wait_for_listing("node 4 back", |ids| ids == [4]).await;
    }
    // Shutdown returns once both nameservers confirmed the withdrawal.
    holder
        .shutdown(Duration::from_secs(5))
        .await
        .expect("withdrawal confirmed");
    assert_eq!(first.listed_ids().await, Vec::<u64>::new());
    assert_eq!(second.listed_ids().await, Vec::<u64>::new());
    first.stop().await;
    second.stop().await;
}

#[tokio::test]
async fn an_ended_stream_ends_the_lease_at_once() {
    // A stream TTL of a minute: only the stream's end can remove the lease this early.
    // (A stream's TTL is the granted lease TTL capped by the stream TTL, so both are a minute.)
    let ns = RunningNameserver::start_with(ServerConfig {
        stream_lease_ttl_ms: 60_000,
        lease_ttl_ms: 60_000,
        ..config()
    })
    .await;
    let channel = chat_grpc::endpoint(&ns.grpc, TIMEOUT)
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut client = NameserverClient::new(AuthChannel::new(channel, Some(keys())));
    let (keep_alives, outbound) = tokio::sync::mpsc::channel(1);
    keep_alives
        .send(proto::RegisterRequest {
            node_id: 9,
            http_address: "127.0.0.1:8089".into(),
            ttl_ms: 0,
        })
        .await
        .expect("queued");
    let mut answers = client
        .keep_lease(ReceiverStream::new(outbound))
        .await
        .expect("stream")
        .into_inner();
    let granted = answers.message().await.expect("answer").expect("granted");
    assert_eq!(granted.granted_ttl_ms, 60_000);
    ns.wait_for_listing("node 9 listed", |ids| ids == [9]).await;
    // The client goes away whole: its keep-alive side ends and its connection with it. (A
    // client that keeps its request side open in-process holds tonic's connection open too, so
    // a truly broken connection is left to the multi-process test, where the node is killed.)
    drop((answers, client, keep_alives));
    ns.wait_for_listing("node 9 gone with its stream", <[u64]>::is_empty)
        .await;
    let metrics = ns.metrics().await;
    assert!(
        metrics.contains("chat_nameserver_lease_ends_total{cause=\"withdrawn\"} 1")
            || metrics.contains("chat_nameserver_lease_ends_total{cause=\"stream_broken\"} 1"),
        "{metrics}"
    );
    ns.stop().await;
}

#[tokio::test]
async fn dropped_lease_holder_withdraws() {
    let ns = RunningNameserver::start().await;
    let holder = serving_holder(&[&ns], 6);
    ns.wait_for_listing("node 6 listed", |ids| ids == [6]).await;
    drop(holder);
    ns.wait_for_listing("node 6 withdrawn", <[u64]>::is_empty)
        .await;
    ns.stop().await;
}

#[tokio::test]
async fn lease_holder_registers_again_as_soon_as_the_nameserver_restarts() {
    let ns = RunningNameserver::start().await;
    let holder = serving_holder(&[&ns], 8);
    ns.wait_for_listing("node 8 listed", |ids| ids == [8]).await;
    let grpc_addr: SocketAddr = ns.grpc.parse().expect("addr");
    ns.stop().await;

    let restarted = RunningNameserver::start_on(grpc_addr).await;
    restarted
        .wait_for_listing("node 8 back after restart", |ids| ids == [8])
        .await;
    holder
        .shutdown(Duration::from_secs(5))
        .await
        .expect("withdraw");
    restarted.stop().await;
}

#[tokio::test]
async fn node_id_zero_and_oversized_addresses_are_refused_and_counted() {
    let ns = RunningNameserver::start().await;
    let long_host = "a".repeat(300);
    for (node, address) in [
        (0, "127.0.0.1:8080".to_owned()),
        (1, format!("{long_host}:80")),
    ] {
        let err = register_lease(
            &ns.grpc,
            TIMEOUT,
            Some(&keys()),
            node,
            &address,
            Duration::ZERO,
        )
        .await
        .expect_err("refused");
        assert!(
            matches!(
                err,
                chat_nameserver::NameserverError::Rejected {
                    code: tonic::Code::InvalidArgument,
                    ..
                }
            ),
            "{err:?}"
        );
    }
    assert_eq!(ns.listed_ids().await, Vec::<u64>::new());
    let metrics = ns.metrics().await;
    for reason in ["node_id_zero", "address_too_long"] {
        let line = format!("chat_nameserver_registrations_refused_total{{reason=\"{reason}\"}} 1");
        assert!(metrics.contains(&line), "{line} missing from\n{metrics}");
    }
    ns.stop().await;
}

#[tokio::test]
async fn a_full_table_refuses_new_nodes() {
    let ns = RunningNameserver::start_with(ServerConfig {
        max_leases: 1,
        ..config()
    })
    .await;
    register_lease(
        &ns.grpc,
        TIMEOUT,
        Some(&keys()),
        1,
        "127.0.0.1:8081",
        Duration::ZERO,
    )
    .await
    .expect("room for one");
    let err = register_lease(
        &ns.grpc,
        TIMEOUT,
        Some(&keys()),
        2,
        "127.0.0.1:8082",
        Duration::ZERO,
    )
    .await
    .expect_err("full");
    assert!(
        matches!(
            err,
            chat_nameserver::NameserverError::Rejected {
                code: tonic::Code::ResourceExhausted,
                ..
            }
        ),
        "{err:?}"
    );
    ns.stop().await;
}
