//! The bootstrap over real gRPC on loopback: registration, restart, and the node-side cache.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use chat_bootstrap::cache::load_cached_neighbors;
use chat_bootstrap::server::{self, ServerConfig};
use chat_bootstrap::{
    client, discover_neighbors, DiscoveryError, Neighbor, NeighborSource, NodeAddress, Registry,
};
use chat_secret::{ClusterSecret, KeyRing, Purpose};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const TIMEOUT: Duration = Duration::from_secs(5);

/// The services keys every bootstrap and client of these tests share.
fn keys() -> KeyRing {
    ClusterSecret::from_parts([0x42; 32], None).keys(Purpose::Services)
}

struct RunningBootstrap {
    addr: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), server::ServerError>>,
}

impl RunningBootstrap {
    async fn start(state_dir: &Path) -> Self {
        let config = ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            state_dir: state_dir.to_owned(),
            ..ServerConfig::default()
        };
        let bound = server::bind_with_keys(&config, Some(keys()))
            .await
            .expect("bind");
        let addr = bound.local_addr().to_string();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(bound.serve(async {
            let _ = stopped.await;
        }));
        Self { addr, stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task
            .await
            .expect("server task")
            .expect("server ran cleanly");
    }
}

fn node(id: u64) -> NodeAddress {
    NodeAddress {
        id,
        host: "127.0.0.1".into(),
        port: 46000 + id as u16,
    }
}

fn ids(neighbors: &[Neighbor]) -> Vec<u64> {
    neighbors.iter().map(|n| n.id).collect()
}

#[tokio::test]
async fn nodes_registering_in_order_get_the_ring_of_the_worked_example() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bootstrap = RunningBootstrap::start(dir.path()).await;
    let mut answers = Vec::new();
    for id in 1..=4 {
        answers.push(ids(&client::register(
            &bootstrap.addr,
            TIMEOUT,
            Some(&keys()),
            node(id),
        )
        .await
        .expect("register")));
    }
    assert_eq!(answers, vec![vec![], vec![1], vec![2], vec![1, 3]]);

    // Registering again returns the current neighbours, including links made later.
    let again = client::register(&bootstrap.addr, TIMEOUT, Some(&keys()), node(1))
        .await
        .expect("register again");
    assert_eq!(again, vec![node(2), node(4)]);

    let listed = client::list_nodes(&bootstrap.addr, TIMEOUT, Some(&keys()))
        .await
        .expect("list");
    let listed: Vec<(u64, Vec<u64>)> = listed
        .into_iter()
        .map(|n| (n.address.id, n.neighbor_ids))
        .collect();
    assert_eq!(
        listed,
        vec![
            (1, vec![2, 4]),
            (2, vec![1, 3]),
            (3, vec![2, 4]),
            (4, vec![1, 3])
        ]
    );
    bootstrap.stop().await;
}

#[tokio::test]
async fn many_nodes_get_what_the_assignment_computes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bootstrap = RunningBootstrap::start(dir.path()).await;
    let mut expected = Registry::new();
    for id in 1..=40 {
        let got = client::register(&bootstrap.addr, TIMEOUT, Some(&keys()), node(id))
            .await
            .expect("register");
        assert_eq!(got, expected.register(node(id)).neighbors, "node {id}");
    }
    bootstrap.stop().await;
}

#[tokio::test]
async fn a_moved_node_is_seen_at_its_new_address_by_its_neighbours() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bootstrap = RunningBootstrap::start(dir.path()).await;
    for id in 1..=4 {
        client::register(&bootstrap.addr, TIMEOUT, Some(&keys()), node(id))
            .await
            .expect("register");
    }
    let moved = NodeAddress {
        id: 2,
        host: "127.0.0.2".into(),
        port: 47002,
    };
    let kept = client::register(&bootstrap.addr, TIMEOUT, Some(&keys()), moved.clone())
        .await
        .expect("re-register");
    assert_eq!(ids(&kept), vec![1, 3]);
    let seen_by_3 = client::register(&bootstrap.addr, TIMEOUT, Some(&keys()), node(3))
        .await
        .expect("register 3");
    assert_eq!(seen_by_3, vec![moved, node(4)]);
    bootstrap.stop().await;
}

#[tokio::test]
async fn restarted_bootstrap_answers_the_same_and_continues_the_assignment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = RunningBootstrap::start(dir.path()).await;
    for id in 1..=6 {
        client::register(&first.addr, TIMEOUT, Some(&keys()), node(id))
            .await
            .expect("register");
    }
    let listed_before = client::list_nodes(&first.addr, TIMEOUT, Some(&keys()))
        .await
        .expect("list");
    first.stop().await;

    let second = RunningBootstrap::start(dir.path()).await;
    let listed_after = client::list_nodes(&second.addr, TIMEOUT, Some(&keys()))
        .await
        .expect("list after restart");
    assert_eq!(listed_after, listed_before);
    let mut reference = Registry::new();
    for id in 1..=6 {
        reference.register(node(id));
    }
    for id in 1..=6 {
        let after = client::register(&second.addr, TIMEOUT, Some(&keys()), node(id))
            .await
            .expect("register after restart");
        assert_eq!(after, reference.neighbors_of(id), "node {id}");
    }
    let seventh = client::register(&second.addr, TIMEOUT, Some(&keys()), node(7))
        .await
        .expect("new node after restart");
    assert_eq!(
        seventh,
        reference.register(node(7)).neighbors,
        "assignment continues where it stopped"
    );
    second.stop().await;
}

#[tokio::test]
async fn deregistered_node_disappears_from_neighbour_lists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bootstrap = RunningBootstrap::start(dir.path()).await;
    for id in 1..=4 {
        client::register(&bootstrap.addr, TIMEOUT, Some(&keys()), node(id))
            .await
            .expect("register");
    }
    assert!(
        client::deregister(&bootstrap.addr, TIMEOUT, Some(&keys()), 4)
            .await
            .expect("deregister")
    );
    assert!(
        !client::deregister(&bootstrap.addr, TIMEOUT, Some(&keys()), 4)
            .await
            .expect("deregister twice")
    );
    let of_1 = client::register(&bootstrap.addr, TIMEOUT, Some(&keys()), node(1))
        .await
        .expect("register 1");
    assert_eq!(ids(&of_1), vec![2]);
    bootstrap.stop().await;
}

#[tokio::test]
async fn corrupt_registry_stops_start_up_and_names_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir
        .path()
        .join(chat_bootstrap::registry_file::REGISTRY_FILE_NAME);
    std::fs::write(&path, b"garbage").expect("write");
    let config = ServerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        state_dir: dir.path().to_owned(),
        ..ServerConfig::default()
    };
    let err = server::bind_with_keys(&config, Some(keys()))
        .await
        .expect_err("corrupt registry");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).expect("file kept"), b"garbage");
}

#[tokio::test]
async fn node_restarting_while_bootstrap_is_down_uses_its_cache() {
    let bootstrap_dir = tempfile::tempdir().expect("tempdir");
    let node_dir = tempfile::tempdir().expect("tempdir");
    let bootstrap = RunningBootstrap::start(bootstrap_dir.path()).await;
    for id in 1..=3 {
        client::register(&bootstrap.addr, TIMEOUT, Some(&keys()), node(id))
            .await
            .expect("register");
    }
    let first = discover_neighbors(
        &bootstrap.addr,
        TIMEOUT,
        Some(&keys()),
        node(4),
        node_dir.path(),
    )
    .await
    .expect("discover");
    assert_eq!(first.source, NeighborSource::Bootstrap);
    assert_eq!(ids(&first.neighbors), vec![1, 3]);
    assert_eq!(
        load_cached_neighbors(node_dir.path()).expect("cache"),
        Some(first.neighbors.clone())
    );

    let addr = bootstrap.addr.clone();
    bootstrap.stop().await;

    let second = discover_neighbors(&addr, TIMEOUT, Some(&keys()), node(4), node_dir.path())
        .await
        .expect("from cache");
    assert_eq!(second.source, NeighborSource::Cache);
    assert_eq!(second.neighbors, first.neighbors);

    let empty_dir = tempfile::tempdir().expect("tempdir");
    let err = discover_neighbors(&addr, TIMEOUT, Some(&keys()), node(5), empty_dir.path())
        .await
        .expect_err("no cache");
    assert!(matches!(err, DiscoveryError::NoCache { .. }), "{err:?}");
}

#[tokio::test]
async fn refused_registration_does_not_fall_back_to_the_cache() {
    let bootstrap_dir = tempfile::tempdir().expect("tempdir");
    let node_dir = tempfile::tempdir().expect("tempdir");
    chat_bootstrap::cache::store_cached_neighbors(node_dir.path(), &[node(1)]).expect("seed cache");
    let bootstrap = RunningBootstrap::start(bootstrap_dir.path()).await;
    let bad = NodeAddress {
        id: 9,
        host: String::new(),
        port: 46009,
    };
    let err = discover_neighbors(
        &bootstrap.addr,
        TIMEOUT,
        Some(&keys()),
        bad,
        node_dir.path(),
    )
    .await
    .expect_err("refused");
    assert!(matches!(err, DiscoveryError::Refused(_)), "{err:?}");
    bootstrap.stop().await;
}

#[tokio::test]
async fn calls_without_the_secret_are_unauthenticated_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bootstrap = RunningBootstrap::start(dir.path()).await;
    client::register(&bootstrap.addr, TIMEOUT, Some(&keys()), node(1))
        .await
        .expect("a member registers");
    let other = ClusterSecret::from_parts([0x43; 32], None).keys(Purpose::Services);
    for keys in [None, Some(&other)] {
        let register = client::register(&bootstrap.addr, TIMEOUT, keys, node(2)).await;
        let deregister = client::deregister(&bootstrap.addr, TIMEOUT, keys, 1).await;
        let list = client::list_nodes(&bootstrap.addr, TIMEOUT, keys).await;
        for error in [
            register.map(|_| ()).expect_err("register refused"),
            deregister.map(|_| ()).expect_err("deregister refused"),
            list.map(|_| ()).expect_err("list refused"),
        ] {
            // Unsigned calls reach the guard, which answers UNAUTHENTICATED; another secret's
            // client finds no common key in the guard's challenge and sends nothing.
            assert!(
                matches!(
                    &error,
                    chat_bootstrap::BootstrapError::Rejected { code, .. }
                        if *code == tonic::Code::Unauthenticated || keys.is_some()
                ),
                "{error:?}"
            );
            assert!(!error.is_unreachable(), "{error}");
        }
    }
    let listed = client::list_nodes(&bootstrap.addr, TIMEOUT, Some(&keys()))
        .await
        .expect("list");
    assert_eq!(
        listed.iter().map(|n| n.address.id).collect::<Vec<_>>(),
        vec![1],
        "nothing registered or removed"
    );
    bootstrap.stop().await;
}

#[tokio::test]
async fn a_missing_secret_stops_start_up_and_names_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("cluster.key");
    let config = ServerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        state_dir: dir.path().to_owned(),
        secret_file: secret.clone(),
        ..ServerConfig::default()
    };
    let err = server::bind(&config).await.expect_err("no secret");
    let text = format!("{:#}", anyhow::Error::from(err));
    assert!(text.contains(&secret.display().to_string()), "{text}");
    assert!(text.contains("secret_file"), "{text}");
}
