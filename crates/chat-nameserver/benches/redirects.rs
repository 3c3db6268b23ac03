//! Redirects per second over loopback HTTP. Prints figures; never fails on slowness.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chat_nameserver::client::register_lease;
use chat_nameserver::server::{self, ServerConfig};

const SEQUENTIAL: u64 = 5_000;
const CLIENTS: u64 = 8;
const PER_CLIENT: u64 = 2_000;

fn per_second(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

async fn redirect_burst(client: reqwest::Client, url: String, count: u64) {
    for _ in 0..count {
        let response = client.get(&url).send().await.expect("request");
        assert_eq!(response.status().as_u16(), 307, "benchmark setup broken");
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let config = ServerConfig {
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..ServerConfig::default()
        };
        // Authenticated, as in production: each call carries a MAC over a fresh nonce.
        let keys = chat_secret::ClusterSecret::from_parts([7; 32], None).keys(chat_secret::Purpose::Services);
        let bound = server::bind_with_keys(&config, Some(keys.clone())).await.expect("bind");
        let (grpc, http) = (bound.grpc_addr().to_string(), bound.http_addr());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(bound.serve(async {
            let _ = stopped.await;
        }));
        for (id, port) in [(1, 8081), (2, 8082)] {
            register_lease(&grpc, Duration::from_secs(5), Some(&keys), id, &format!("127.0.0.1:{port}"), Duration::from_secs(300))
                .await
                .expect("register");
        }
        let url = format!("http://{http}/groups/1?page=2");
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");

        let start = Instant::now();
        redirect_burst(client.clone(), url.clone(), SEQUENTIAL).await;
        let elapsed = start.elapsed();
        println!(
            "bench nameserver redirects, one keep-alive client: {:.0} redirects/s ({SEQUENTIAL} in {elapsed:?})",
            per_second(SEQUENTIAL, elapsed)
        );

        let start = Instant::now();
        let bursts: Vec<_> =
            (0..CLIENTS).map(|_| tokio::spawn(redirect_burst(client.clone(), url.clone(), PER_CLIENT))).collect();
        for burst in bursts {
            burst.await.expect("burst");
        }
        let elapsed = start.elapsed();
        println!(
            "bench nameserver redirects, {CLIENTS} concurrent clients: {:.0} redirects/s ({} in {elapsed:?})",
            per_second(CLIENTS * PER_CLIENT, elapsed),
            CLIENTS * PER_CLIENT
        );

        let start = Instant::now();
        for n in 0..SEQUENTIAL {
            register_lease(&grpc, Duration::from_secs(5), Some(&keys), 3, "127.0.0.1:8083", Duration::from_secs(300))
                .await
                .unwrap_or_else(|e| panic!("lease {n}: {e}"));
        }
        let elapsed = start.elapsed();
        println!(
            "bench nameserver lease renewals, new connection each, authenticated: {:.0} renewals/s ({SEQUENTIAL} in {elapsed:?})",
            per_second(SEQUENTIAL, elapsed)
        );

        let _ = stop.send(());
        served.await.expect("task").expect("served");
    });
}
