//! The nameserver over real sockets on loopback: gRPC leases and the redirecting HTTP front.

use std::net::SocketAddr;
use std::time::Duration;

use chat_nameserver::client::{list_input_nodes, register_lease, withdraw_lease};
use chat_nameserver::server::{self, ServerConfig};
use chat_nameserver::LeaseKeeper;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound for conditions polled below; reached only when something is broken.
const DEADLINE: Duration = Duration::from_secs(20);

struct RunningNameserver {
    grpc: String,
    http: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), server::ServerError>>,
}

impl RunningNameserver {
    async fn start_on(grpc_listen: SocketAddr) -> Self {
        let config = ServerConfig {
            grpc_listen,
            http_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..ServerConfig::default()
        };
        let bound = server::bind(&config).await.expect("bind");
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
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
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

    async fn listed_ids(&self) -> Vec<u64> {
        list_input_nodes(&self.grpc, TIMEOUT)
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

    assert!(withdraw_lease(&ns.grpc, TIMEOUT, 2)
        .await
        .expect("withdraw"));
    assert_eq!(ns.get("/x").await.0, 503);
    ns.stop().await;
}

#[tokio::test]
async fn registering_again_replaces_the_address_without_duplicates() {
    let ns = RunningNameserver::start().await;
    register_lease(&ns.grpc, TIMEOUT, 5, "127.0.0.1:8085", Duration::ZERO)
        .await
        .expect("register");
    register_lease(&ns.grpc, TIMEOUT, 5, "127.0.0.1:9085", Duration::ZERO)
        .await
        .expect("register again");
    let listed = list_input_nodes(&ns.grpc, TIMEOUT).await.expect("list");
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
    let err = register_lease(&ns.grpc, TIMEOUT, 1, "http://evil.example/", Duration::ZERO)
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
    register_lease(&ns.grpc, TIMEOUT, 3, "127.0.0.1:8083", Duration::ZERO)
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

#[tokio::test]
async fn lease_keeper_renews_on_every_nameserver_and_withdraws() {
    let first = RunningNameserver::start().await;
    let second = RunningNameserver::start().await;
    let keeper = LeaseKeeper::start(
        vec![first.grpc.clone(), second.grpc.clone()],
        4,
        "127.0.0.1:8084".into(),
        Duration::from_millis(50),
        Duration::from_secs(30),
    )
    .expect("start");
    first
        .wait_for_listing("node 4 on the first nameserver", |ids| ids == [4])
        .await;
    second
        .wait_for_listing("node 4 on the second nameserver", |ids| ids == [4])
        .await;

    // A renewal shows as a lease whose remaining time went up again.
    let remaining =
        || async { list_input_nodes(&first.grpc, TIMEOUT).await.expect("list")[0].expires_in };
    let initially = remaining().await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while remaining().await <= initially {
        assert!(
            tokio::time::Instant::now() < deadline,
            "lease never renewed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    keeper.withdraw().await.expect("withdraw");
    assert_eq!(first.listed_ids().await, Vec::<u64>::new());
    assert_eq!(second.listed_ids().await, Vec::<u64>::new());
    assert_eq!(first.get("/").await.0, 503);
    first.stop().await;
    second.stop().await;
}

#[tokio::test]
async fn dropped_lease_keeper_withdraws() {
    let ns = RunningNameserver::start().await;
    let keeper = LeaseKeeper::start(
        vec![ns.grpc.clone()],
        6,
        "127.0.0.1:8086".into(),
        Duration::from_millis(50),
        Duration::from_secs(60),
    )
    .expect("start");
    ns.wait_for_listing("node 6 listed", |ids| ids == [6]).await;
    drop(keeper);
    // The 60 s lease can only disappear this early through the withdrawal.
    ns.wait_for_listing("node 6 withdrawn", <[u64]>::is_empty)
        .await;
    ns.stop().await;
}

#[tokio::test]
async fn lease_keeper_registers_again_after_the_nameserver_restarts() {
    let ns = RunningNameserver::start().await;
    let keeper = LeaseKeeper::start(
        vec![ns.grpc.clone()],
        8,
        "127.0.0.1:8088".into(),
        Duration::from_millis(50),
        Duration::from_secs(30),
    )
    .expect("start");
    ns.wait_for_listing("node 8 listed", |ids| ids == [8]).await;
    let grpc_addr: SocketAddr = ns.grpc.parse().expect("addr");
    ns.stop().await;

    let restarted = RunningNameserver::start_on(grpc_addr).await;
    restarted
        .wait_for_listing("node 8 back after restart", |ids| ids == [8])
        .await;
    keeper.withdraw().await.expect("withdraw");
    restarted.stop().await;
}
