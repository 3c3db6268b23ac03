//! An in-process input node to point `chat-loadgen` at, for measuring the HTTP layer and the
//! local service without a cluster: the real `chat-web` application over `chat-service`'s
//! local service and a SQLite file in a temp directory, login limits raised for a bench.
//!
//! ```sh
//! cargo run --release -p chat-loadgen --example serve -- 127.0.0.1:8081 [full|normal] [bcrypt cost] [publishing]
//! ```
//! `full` (the default) fsyncs every commit as a node does; `publishing` puts chat-web's
//! `PublishingDispatcher` in front, as chat-web's tests do.
//! Stops on Ctrl-C (the database goes with its temp directory).

#[path = "../tests/server/mod.rs"]
mod server;

use chat_store::Durability;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let address = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:8081".to_owned())
        .parse()
        .expect("an address such as 127.0.0.1:8081");
    let durability = match args.next().as_deref() {
        None | Some("full") => Durability::Full,
        Some("normal") => Durability::Normal,
        Some(other) => panic!("durability is full or normal, not {other}"),
    };
    let bcrypt_cost = args.next().map_or(4, |c| c.parse().expect("a bcrypt cost"));
    let publishing = args.next().as_deref() == Some("publishing");
    let server = server::start(
        server::ServerOptions {
            address,
            durability,
            bcrypt_cost,
            publishing,
            extra_listeners: 0,
        },
        server::bench_config(),
    )
    .await;
    println!(
        "serving {} (durability {durability:?}, bcrypt cost {bcrypt_cost}, publishing \
         {publishing}); Ctrl-C stops",
        server.url
    );
    let _ = tokio::signal::ctrl_c().await;
    server.stop().await;
}
