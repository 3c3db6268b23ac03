//! An in-process input node for the generator to drive: the real HTTP layer and local chat
//! service over a SQLite file in a temp directory, on a TCP port. Shared by the tests and the
//! `serve` example.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chat_secret::{ClusterSecret, Purpose};
use chat_service::{LocalService, ServiceConfig};
use chat_store::{Durability, Store, StoreOptions};
use chat_web::ratelimit::Limit;
use chat_web::{
    App, AppState, Backend, ChangeFeed, PublishingDispatcher, ServiceBackend, WebConfig,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How the server is built.
pub struct ServerOptions {
    pub address: SocketAddr,
    pub durability: Durability,
    /// The node's default is 12; the generator's setup hashes once per register and login.
    /// Only honoured without `publishing` (that dispatcher does not pass the local service's
    /// hasher on, so it hashes at the default cost).
    pub bcrypt_cost: u32,
    /// Put chat-web's `PublishingDispatcher` in front of the service (as chat-web's own tests
    /// do), so live-update streams get the messages; it sends one message at a time.
    pub publishing: bool,
    /// More listeners on loopback serving the same application and database, as input nodes
    /// of one cluster would: a multi-target run needs every user on every target.
    pub extra_listeners: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            address: "127.0.0.1:0".parse().expect("address"),
            durability: Durability::Normal,
            bcrypt_cost: 4,
            publishing: false,
            extra_listeners: 0,
        }
    }
}

pub struct Server {
    /// The first listener's base URL.
    pub url: String,
    /// Every listener's base URL (`extra_listeners` more after the first).
    pub urls: Vec<String>,
    pub store: Arc<Store>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

/// The login limits a bench raises: every client logs in once, all from one address.
pub fn bench_config() -> WebConfig {
    WebConfig {
        login_per_account: Limit {
            burst: 10,
            per_minute: 10,
        },
        login_per_address: Limit {
            burst: 100_000,
            per_minute: 100_000,
        },
        ..WebConfig::default()
    }
}

pub async fn start(options: ServerOptions, config: WebConfig) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let store_options = StoreOptions {
        durability: options.durability,
        ..StoreOptions::default()
    };
    let store =
        Arc::new(Store::open_with(dir.path().join("chat.db"), store_options).expect("store"));
    let service = LocalService::new(
        Arc::clone(&store),
        ServiceConfig {
            bcrypt_cost: options.bcrypt_cost,
            accepts_writes: true,
            ..ServiceConfig::default()
        },
    )
    .expect("service");
    let feed = ChangeFeed::new(1024, 0);
    let keys = ClusterSecret::from_parts([7; 32], None).keys(Purpose::Sessions);
    let mut listeners = vec![TcpListener::bind(options.address).await.expect("bind")];
    for _ in 0..options.extra_listeners {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.expect("bind"));
    }
    let urls: Vec<String> = listeners
        .iter()
        .map(|l| format!("http://{}", l.local_addr().expect("address")))
        .collect();
    let (stop, stopped) = watch::channel(false);
    let tasks = if options.publishing {
        let dispatcher = PublishingDispatcher::new(service, feed.clone());
        let app = App::new(AppState {
            backend: ServiceBackend::new(dispatcher),
            keys,
            config,
            change_feed: feed,
        })
        .expect("app");
        serve(listeners, app, stopped)
    } else {
        let app = App::new(AppState {
            backend: ServiceBackend::new(service),
            keys,
            config,
            change_feed: feed,
        })
        .expect("app");
        serve(listeners, app, stopped)
    };
    Server {
        url: urls[0].clone(),
        urls,
        store,
        stop,
        tasks,
        _dir: dir,
    }
}

/// The one application on every listener, until `stopped` turns true.
fn serve<B: Backend>(
    listeners: Vec<TcpListener>,
    app: App<B>,
    stopped: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    listeners
        .into_iter()
        .map(|listener| {
            let mut stopped = stopped.clone();
            tokio::spawn(chat_web::WebServer::serve_app(
                listener,
                app.clone(),
                async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                },
            ))
        })
        .collect()
}

impl Server {
    /// Messages and other writes the database holds.
    pub fn epoch(&self) -> u64 {
        self.store.current_epoch().expect("epoch")
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("the server stops")
                .expect("the server task ends");
        }
    }
}
