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
use chat_web::{App, AppState, ChangeFeed, PublishingDispatcher, ServiceBackend, WebConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
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
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            address: "127.0.0.1:0".parse().expect("address"),
            durability: Durability::Normal,
            bcrypt_cost: 4,
            publishing: false,
        }
    }
}

pub struct Server {
    pub url: String,
    pub store: Arc<Store>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
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
    let listener = TcpListener::bind(options.address).await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let (stop, stopped) = oneshot::channel::<()>();
    let stopped = async {
        let _ = stopped.await;
    };
    let task = if options.publishing {
        let dispatcher = PublishingDispatcher::new(service, feed.clone());
        let app = App::new(AppState {
            backend: ServiceBackend::new(dispatcher),
            keys,
            config,
            change_feed: feed,
        })
        .expect("app");
        tokio::spawn(chat_web::WebServer::serve_app(listener, app, stopped))
    } else {
        let app = App::new(AppState {
            backend: ServiceBackend::new(service),
            keys,
            config,
            change_feed: feed,
        })
        .expect("app");
        tokio::spawn(chat_web::WebServer::serve_app(listener, app, stopped))
    };
    Server {
        url,
        store,
        stop,
        task,
        _dir: dir,
    }
}

impl Server {
    /// Messages and other writes the database holds.
    pub fn epoch(&self) -> u64 {
        self.store.current_epoch().expect("epoch")
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("the server stops")
            .expect("the server task ends");
    }
}
