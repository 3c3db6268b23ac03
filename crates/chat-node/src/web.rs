//! The input role's HTTP server (the JSON API and the pages, `chat-web`), started when the
//! node becomes an input node and stopped when it stops being one, without restarting the
//! process. A stopping server lets requests in flight finish (up to the grace period) and
//! ends the live-update streams.

use std::future::Future;
use std::time::Duration;

use chat_secret::KeyRing;
use chat_web::{AppState, ChangeFeed, ServiceBackend, WebConfig, WebServer};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use crate::data::proxy::DataProxy;
use crate::data::TreeView;

/// Pause before trying again to bind a port that is still taken.
const BIND_RETRY: Duration = Duration::from_millis(200);

pub(crate) struct WebSettings {
    pub(crate) bind: String,
    pub(crate) public_url: String,
    pub(crate) config: WebConfig,
    pub(crate) keys: KeyRing,
}

/// Runs the input role's server whenever the tree says this node is an input node, and
/// publishes its URL (`None` while it does not serve) on `serving`.
pub(crate) async fn run(
    settings: WebSettings,
    mut tree: watch::Receiver<TreeView>,
    proxy: DataProxy,
    feed: ChangeFeed,
    serving: watch::Sender<Option<String>>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        // Wait for the input role.
        tokio::select! {
            () = &mut shutdown => return,
            result = tree.wait_for(|view| view.input) => if result.is_err() { return },
        }
        let listener = loop {
            match TcpListener::bind(&settings.bind).await {
                Ok(listener) => break listener,
                Err(error) => {
                    tracing::warn!(target: "input", subsystem = "input", bind = %settings.bind, %error, "cannot bind the HTTP port yet");
                    tokio::select! {
                        () = &mut shutdown => return,
                        () = tokio::time::sleep(BIND_RETRY) => {}
                    }
                }
            }
        };
        let state = AppState {
            backend: ServiceBackend::new(proxy.clone()),
            keys: settings.keys.clone(),
            config: settings.config.clone(),
            change_feed: feed.clone(),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            WebServer::serve(listener, state, async {
                let _ = stopped.await;
            })
            .await
        });
        tracing::info!(target: "input", subsystem = "input", url = %settings.public_url, "HTTP server answering");
        serving.send_replace(Some(settings.public_url.clone()));
        let ended = tokio::select! {
            () = &mut shutdown => true,
            result = tree.wait_for(|view| !view.input) => result.is_err(),
        };
        serving.send_replace(None);
        let _ = stop.send(());
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::error!(target: "input", subsystem = "input", %error, "the HTTP server failed")
            }
            Err(error) => {
                tracing::error!(target: "input", subsystem = "input", %error, "the HTTP server task failed")
            }
        }
        tracing::info!(target: "input", subsystem = "input", "HTTP server stopped");
        if ended {
            return;
        }
    }
}
