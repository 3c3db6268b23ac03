//! The nameserver: configuration, binding both listeners, serving until a shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chat_grpc::{KeyRing, SecretError, ServiceGuard};
use chat_ops::LogSettings;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::lease::LeasePolicy;
use crate::proto::nameserver_server::NameserverServer;
use crate::service::NameserverService;
use crate::state::Leases;

/// Default gRPC port (input nodes register here); loopback by default.
pub const DEFAULT_GRPC_PORT: u16 = 45998;
/// Default HTTP port of the front door; loopback by default, so nothing is exposed to other
/// hosts until the operator sets `http_listen` (e.g. `0.0.0.0:9999`).
pub const DEFAULT_HTTP_PORT: u16 = 9999;
/// Default cluster secret file: the one the package generates and every node reads.
pub const DEFAULT_SECRET_FILE: &str = "/etc/chat-system/cluster.key";

/// How often expired leases are dropped (and logged); redirects never use an expired lease
/// whatever this is, the sweep only frees memory and reports.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The nameserver's configuration (`/etc/chat-system/nameserver.toml`, every key optional).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// gRPC listen address (registrations).
    pub grpc_listen: SocketAddr,
    /// HTTP listen address (the redirecting front door).
    pub http_listen: SocketAddr,
    /// Lease TTL granted when a node asks for none, in milliseconds.
    pub lease_ttl_ms: u64,
    /// Longest lease granted, in milliseconds.
    pub max_lease_ttl_ms: u64,
    /// Longest lease granted on a lease stream, in milliseconds. The stream keeps such a lease
    /// alive and ends it when it breaks; this TTL only ends the lease of a host that vanished
    /// without closing its connection (a frozen process, a cut network), so keep it within
    /// the nodes' liveness timeout. Nodes send keep-alives every third of it.
    pub stream_lease_ttl_ms: u64,
    /// Most leases held at once; registrations of further nodes are refused (and counted).
    pub max_leases: usize,
    /// The cluster secret (the nodes' file): every gRPC call must be signed with it, others
    /// answer `UNAUTHENTICATED` (counted), so only members' addresses are ever redirected to.
    /// Required; a relative path is taken from the working directory.
    pub secret_file: PathBuf,
    /// Log levels (used by the binary; the library only emits events).
    pub log: LogSettings,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_GRPC_PORT)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_HTTP_PORT)),
            lease_ttl_ms: 15_000,
            max_lease_ttl_ms: 300_000,
            stream_lease_ttl_ms: 1_200,
            max_leases: 10_000,
            secret_file: PathBuf::from(DEFAULT_SECRET_FILE),
            log: LogSettings::default(),
        }
    }
}

impl ServerConfig {
    fn lease_policy(&self) -> LeasePolicy {
        LeasePolicy {
            default_ttl: Duration::from_millis(self.lease_ttl_ms),
            max_ttl: Duration::from_millis(self.max_lease_ttl_ms),
            stream_ttl: Duration::from_millis(self.stream_lease_ttl_ms),
            max_leases: self.max_leases,
        }
    }
}

/// Errors starting or running the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The lease settings make no sense.
    #[error("lease_ttl_ms ({default}) must be between 1 and max_lease_ttl_ms ({max})")]
    BadLeaseSettings {
        /// `lease_ttl_ms`.
        default: u64,
        /// `max_lease_ttl_ms`.
        max: u64,
    },
    /// A limit is zero.
    #[error("{key} must be > 0")]
    Zero {
        /// The configuration key.
        key: &'static str,
    },
    /// The cluster secret could not be loaded (a configuration error: exit code 2).
    #[error("`secret_file` is unusable")]
    Secret(#[source] SecretError),
    /// The gRPC server stopped with an error.
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// A nameserver with both sockets bound, ready to serve.
#[derive(Debug)]
pub struct BoundServer {
    grpc: TcpListener,
    http: TcpListener,
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    leases: Leases,
    guard: ServiceGuard,
}

async fn bind_one(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), ServerError> {
    chat_grpc::http::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

/// Checks the configuration, loads the cluster secret from `config.secret_file` and binds
/// both listeners: every gRPC call then needs the secret.
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
    if config.lease_ttl_ms == 0 || config.lease_ttl_ms > config.max_lease_ttl_ms {
        return Err(ServerError::BadLeaseSettings {
            default: config.lease_ttl_ms,
            max: config.max_lease_ttl_ms,
        });
    }
    if config.stream_lease_ttl_ms == 0 {
        return Err(ServerError::Zero {
            key: "stream_lease_ttl_ms",
        });
    }
    if config.max_leases == 0 {
        return Err(ServerError::Zero { key: "max_leases" });
    }
    let (grpc, grpc_addr) = bind_one(config.grpc_listen).await?;
    let (http, http_addr) = bind_one(config.http_listen).await?;
    let leases = Leases::new(config.lease_policy());
    let guard = ServiceGuard::new(keys);
    leases.metrics().follow_guard(guard.clone());
    Ok(BoundServer {
        grpc,
        http,
        grpc_addr,
        http_addr,
        leases,
        guard,
    })
}

impl BoundServer {
    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Serves gRPC and HTTP until `shutdown` completes; both then finish what is in flight.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        tracing::info!(target: "nameserver", subsystem = "nameserver", grpc = %self.grpc_addr,
            http = %self.http_addr, authenticated = self.guard.is_guarding(), "serving");
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            // An error means the sender is gone, which also means stop.
            let _ = rx.wait_for(|stop| *stop).await;
        };

        let http = tokio::spawn(crate::http_front::serve(
            self.http,
            self.leases.clone(),
            stopped(stop_rx.clone()),
        ));
        let sweeper = tokio::spawn(sweep(self.leases.clone(), stopped(stop_rx.clone())));
        let router = tonic::transport::Server::builder().add_service(self.guard.wrap(
            NameserverServer::new(NameserverService::new(self.leases, stop_rx)),
        ));
        let grpc_result = chat_grpc::serve_with_grace(router, self.grpc, async {
            shutdown.await;
            let _ = stop_tx.send(true);
        })
        .await;
        if matches!(grpc_result, Ok(chat_grpc::Drain::GraceExpired)) {
            tracing::warn!(target: "nameserver", subsystem = "nameserver",
                "clients kept gRPC connections open past the shutdown grace period; closing them");
        }
        let _ = stop_tx.send(true);
        for task in [http, sweeper] {
            if let Err(e) = task.await {
                tracing::error!(target: "nameserver", subsystem = "nameserver", error = %e, "task failed");
            }
        }
        tracing::info!(target: "nameserver", subsystem = "nameserver", "stopped");
        grpc_result?;
        Ok(())
    }
}

async fn sweep(leases: Leases, stop: impl Future<Output = ()>) {
    let mut ticker = tokio::time::interval(SWEEP_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = ticker.tick() => leases.sweep(),
            () = &mut stop => return,
        }
    }
}

/// Binds and serves until `shutdown` completes.
pub async fn run(
    config: &ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    bind(config).await?.serve(shutdown).await
}
