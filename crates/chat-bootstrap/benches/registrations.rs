//! Registrations per second over loopback gRPC. Prints figures; never fails on slowness.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chat_bootstrap::proto::bootstrap_client::BootstrapClient;
use chat_bootstrap::proto::RegisterRequest;
use chat_bootstrap::server::{self, ServerConfig};
use chat_bootstrap::{NodeAddress, Registry};
use chat_grpc::AuthChannel;
use chat_secret::{ClusterSecret, Purpose};

const NEW_NODES: u64 = 1_000;
const REPEATS: u64 = 5_000;
const IN_MEMORY_NODES: u64 = 100_000;

fn per_second(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

fn request(id: u64) -> RegisterRequest {
    RegisterRequest {
        id,
        host: "127.0.0.1".into(),
        port: 46000 + (id % 10_000) as u32,
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = ServerConfig { listen: SocketAddr::from(([127, 0, 0, 1], 0)), state_dir: dir.path().to_owned(), ..ServerConfig::default() };
        // Authenticated, as in production: each call carries a MAC over a fresh nonce.
        let keys = ClusterSecret::from_parts([7; 32], None).keys(Purpose::Services);
        let bound = server::bind_with_keys(&config, Some(keys.clone())).await.expect("bind");
        let addr = format!("http://{}", bound.local_addr());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(bound.serve(async {
            let _ = stopped.await;
        }));
        let channel = chat_grpc::endpoint(&addr, Duration::from_secs(10))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let mut client = BootstrapClient::new(AuthChannel::new(channel, Some(keys)));

        let start = Instant::now();
        for id in 1..=NEW_NODES {
            client.register(request(id)).await.expect("register");
        }
        let elapsed = start.elapsed();
        println!(
            "bench bootstrap new registrations (each fsynced to the registry file): {:.0} registrations/s ({NEW_NODES} in {elapsed:?})",
            per_second(NEW_NODES, elapsed)
        );

        let start = Instant::now();
        for n in 0..REPEATS {
            client.register(request(1 + n % NEW_NODES)).await.expect("re-register");
        }
        let elapsed = start.elapsed();
        println!(
            "bench bootstrap repeated registrations (no change, no write): {:.0} registrations/s ({REPEATS} in {elapsed:?})",
            per_second(REPEATS, elapsed)
        );

        let _ = stop.send(());
        served.await.expect("task").expect("served");
    });

    let start = Instant::now();
    let mut registry = Registry::new();
    for id in 1..=IN_MEMORY_NODES {
        registry.register(NodeAddress {
            id,
            host: "127.0.0.1".into(),
            port: 46000,
        });
    }
    let elapsed = start.elapsed();
    println!(
        "bench bootstrap assignment in memory: {:.0} registrations/s ({IN_MEMORY_NODES} in {elapsed:?})",
        per_second(IN_MEMORY_NODES, elapsed)
    );
}
