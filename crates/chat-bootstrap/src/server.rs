//! The bootstrap server: configuration, binding, serving until a shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use chat_grpc::{KeyRing, SecretError, ServiceGuard};
use chat_ops::LogSettings;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::metrics::Metrics;
use crate::proto::bootstrap_server::BootstrapServer as GrpcServer;
use crate::registry_file::{RegistryFileError, RegistryStore};
use crate::service::BootstrapService;

/// Default gRPC port. The default listen address is this port on loopback, so an unconfigured
/// bootstrap is not reachable from other hosts; a multi-host cluster sets `listen`.
pub const DEFAULT_PORT: u16 = 45999;
/// Default state directory (the packaged service's `StateDirectory`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/chat-bootstrap";
/// Default cluster secret file: the one the package generates and every node reads.
pub const DEFAULT_SECRET_FILE: &str = "/etc/chat-system/cluster.key";

/// The bootstrap's configuration (`/etc/chat-system/bootstrap.toml`, every key optional).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// HTTP listen address of the Prometheus metrics (`GET /metrics`); unset (the default),
    /// nothing listens. Keep it on loopback or firewall it: it is not authenticated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// Directory holding the registry file; created if missing.
    pub state_dir: PathBuf,
    /// Most nodes the registry holds; registrations of further nodes are refused (and
    /// counted), so nobody can grow the registry file without bound.
    pub max_nodes: usize,
    /// The cluster secret (one or two lines of 64 hex characters, as the nodes'): every call
    /// must be signed with it, others answer `UNAUTHENTICATED`. Required; a relative path is
    /// taken from the working directory.
    pub secret_file: PathBuf,
    /// Log levels (used by the binary; the library only emits events).
    pub log: LogSettings,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            metrics_listen: None,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            max_nodes: 10_000,
            secret_file: PathBuf::from(DEFAULT_SECRET_FILE),
            log: LogSettings::default(),
        }
    }
}

/// Errors starting or running the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The state directory could not be created.
    #[error("cannot create the state directory {path}: {source}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The registry file could not be read.
    #[error(transparent)]
    Registry(#[from] RegistryFileError),
    /// The cluster secret could not be loaded (a configuration error: exit code 2).
    #[error("`secret_file` is unusable")]
    Secret(#[source] SecretError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The gRPC server stopped with an error.
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// A bootstrap with its registry loaded and its socket bound, ready to serve.
#[derive(Debug)]
pub struct BoundServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    /// The metrics listener and its address, when `metrics_listen` is set.
    metrics: Option<(TcpListener, SocketAddr)>,
    service: BootstrapService,
    guard: ServiceGuard,
}

/// Loads the cluster secret from `config.secret_file` and the registry from
/// `config.state_dir`, and binds `config.listen`: every call then needs the secret. A missing
/// or malformed secret, or a corrupt registry, fails here, before anything listens.
pub async fn bind(config: &ServerConfig) -> Result<BoundServer, ServerError> {
    let keys = chat_grpc::load_service_keys(&config.secret_file).map_err(ServerError::Secret)?;
    bind_with_keys(config, Some(keys)).await
}

/// [`bind`] with the services keys given instead of read from `config.secret_file`; `None`
/// serves every caller (tests of other behaviour, benchmarks).
pub async fn bind_with_keys(
    config: &ServerConfig,
    keys: Option<KeyRing>,
) -> Result<BoundServer, ServerError> {
    std::fs::create_dir_all(&config.state_dir).map_err(|source| ServerError::StateDir {
        path: config.state_dir.clone(),
        source,
    })?;
    let store = RegistryStore::in_dir(&config.state_dir);
    let registry = store.load()?;
    tracing::info!(target: "bootstrap", subsystem = "bootstrap", file = %store.path().display(),
        nodes = registry.len(), "registry loaded");
    let (listener, local_addr) = bind_one(config.listen).await?;
    let metrics = match config.metrics_listen {
        Some(addr) => Some(bind_one(addr).await?),
        None => None,
    };
    Ok(BoundServer {
        listener,
        local_addr,
        metrics,
        service: BootstrapService::new(registry, store, config.max_nodes),
        guard: ServiceGuard::new(keys),
    })
}

async fn bind_one(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), ServerError> {
    chat_grpc::http::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

impl BoundServer {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address the metrics are served on, if `metrics_listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(_, addr)| *addr)
    }

    /// Serves until `shutdown` completes, then finishes in-flight calls and returns.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        tracing::info!(target: "bootstrap", subsystem = "bootstrap", addr = %self.local_addr,
            metrics = ?self.metrics_addr(), authenticated = self.guard.is_guarding(), "serving");
        // Sent when shutdown starts, dropped when gRPC stops by itself: the metrics stop either way.
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let metrics = self.metrics.map(|(listener, _)| {
            let metrics = Arc::new(Metrics::new(self.service.stats(), self.guard.clone()));
            let respond = move |request: &http::Request<_>| metrics.respond(request);
            tokio::spawn(chat_grpc::http::serve(listener, respond, async {
                let _ = stop_rx.await;
            }))
        });
        let router = tonic::transport::Server::builder()
            .add_service(self.guard.wrap(GrpcServer::new(self.service)));
        let grpc_result = chat_grpc::serve_with_grace(router, self.listener, async {
            shutdown.await;
            let _ = stop_tx.send(());
        })
        .await;
        if matches!(grpc_result, Ok(chat_grpc::Drain::GraceExpired)) {
            tracing::warn!(target: "bootstrap", subsystem = "bootstrap",
                "clients kept connections open past the shutdown grace period; closing them");
        }
        if let Some(task) = metrics {
            if let Err(e) = task.await {
                tracing::error!(target: "bootstrap", subsystem = "bootstrap", error = %e, "metrics server failed");
            }
        }
        tracing::info!(target: "bootstrap", subsystem = "bootstrap", "stopped");
        grpc_result?;
        Ok(())
    }
}

/// Binds and serves until `shutdown` completes.
pub async fn run(
    config: &ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    bind(config).await?.serve(shutdown).await
}
