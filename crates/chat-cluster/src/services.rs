//! The two services a local cluster runs beside its nodes: `chat-bootstrap` (nodes learn their
//! neighbours there) and `chat-nameserver` (input nodes lease their HTTP address there; its
//! HTTP front redirects browsers to them).
//!
//! Each gets a directory under the run directory holding its complete configuration
//! (`<run_dir>/bootstrap/bootstrap.toml`, `<run_dir>/nameserver/nameserver.toml`) and, with
//! [`crate::NodeOutput::Files`], its log. The bootstrap keeps its registry in its directory, so
//! `up` again on the same run directory hands out the same neighbours.
//!
//! Several nameservers can run side by side ([`ServiceOptions::nameservers`]); every input
//! node holds its lease at each. The first lives in `<run_dir>/nameserver/`, the second in
//! `<run_dir>/nameserver-2/`, and so on.
//!
//! Ports, after the nodes' blocks of the port plan: bootstrap gRPC `base + 4000`, nameserver
//! number `i` (from 0) gRPC `base + 4001 + 2i` and HTTP `base + 4002 + 2i`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{io_error, ClusterError, LOOPBACK};

/// Offset of the bootstrap's gRPC port from the base port.
pub const BOOTSTRAP_PORT_OFFSET: u16 = 4_000;
/// Offset of the nameserver's gRPC (lease) port from the base port.
pub const NAMESERVER_GRPC_PORT_OFFSET: u16 = 4_001;
/// Offset of the nameserver's HTTP (front door) port from the base port.
pub const NAMESERVER_HTTP_PORT_OFFSET: u16 = 4_002;

/// How long one readiness or listing request to a service may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// One of the services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceKind {
    /// `chat-bootstrap`: neighbour assignment.
    Bootstrap,
    /// `chat-nameserver`: input-node leases and the redirecting front door.
    Nameserver,
}

impl ServiceKind {
    /// Every service, in start order.
    pub const ALL: [Self; 2] = [Self::Bootstrap, Self::Nameserver];

    /// Short name: the directory under the run directory, the output prefix, the JSON name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bootstrap => "bootstrap",
            Self::Nameserver => "nameserver",
        }
    }

    /// The executable's file name.
    pub fn binary_name(self) -> &'static str {
        match self {
            Self::Bootstrap => "chat-bootstrap",
            Self::Nameserver => "chat-nameserver",
        }
    }

    /// The command-line option that names the executable.
    pub(crate) fn binary_option(self) -> &'static str {
        match self {
            Self::Bootstrap => "--bootstrap-bin",
            Self::Nameserver => "--nameserver-bin",
        }
    }
}

impl std::fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Most nameservers a local cluster runs.
pub const MAX_NAMESERVERS: u16 = 16;

/// Offset from the base port of the last port the services use with `nameservers` nameservers.
pub fn last_service_port_offset(nameservers: u16) -> u16 {
    NAMESERVER_HTTP_PORT_OFFSET + 2 * nameservers.saturating_sub(1)
}

/// Which services to start and where to find their binaries; each binary is found by
/// [`crate::find_binary`] when `None`.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// The `chat-bootstrap` binary.
    pub bootstrap_bin: Option<PathBuf>,
    /// The `chat-nameserver` binary.
    pub nameserver_bin: Option<PathBuf>,
    /// How many nameservers to run side by side (1..=[`MAX_NAMESERVERS`]).
    pub nameservers: u16,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        Self {
            bootstrap_bin: None,
            nameserver_bin: None,
            nameservers: 1,
        }
    }
}

impl ServiceOptions {
    fn explicit_binary(&self, kind: ServiceKind) -> Option<&Path> {
        match kind {
            ServiceKind::Bootstrap => self.bootstrap_bin.as_deref(),
            ServiceKind::Nameserver => self.nameserver_bin.as_deref(),
        }
    }
}

/// A service as recorded in `cluster.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecord {
    /// Which service.
    pub kind: ServiceKind,
    /// Which one of its kind, from 0 (several nameservers can run side by side).
    #[serde(default)]
    pub instance: u16,
    /// Its process id when started (it may have died since).
    pub pid: Option<u32>,
    /// The binary.
    pub binary: PathBuf,
    /// Its configuration file.
    pub config: PathBuf,
    /// gRPC port on 127.0.0.1 (registrations for the bootstrap, leases for the nameserver).
    pub grpc_port: u16,
    /// HTTP port on 127.0.0.1 of the nameserver's front door; `None` for the bootstrap.
    pub http_port: Option<u16>,
    /// The cluster secret the service checks every gRPC call against (and the launcher signs
    /// its own calls with); `None` in descriptions written before services were guarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
}

impl ServiceRecord {
    /// The service's name: its directory under the run directory, its output prefix:
    /// `nameserver` for the first, `nameserver-2` for the second, and so on.
    pub fn name(&self) -> String {
        instance_name(self.kind, self.instance)
    }

    /// The gRPC address as nodes are configured with it: `http://127.0.0.1:<grpc_port>`.
    pub fn grpc_url(&self) -> String {
        format!("http://{LOOPBACK}:{}", self.grpc_port)
    }

    /// The front door browsers open, `http://127.0.0.1:<http_port>/` (nameserver only).
    pub fn http_url(&self) -> Option<String> {
        self.http_port
            .map(|port| format!("http://{LOOPBACK}:{port}/"))
    }

    /// The service's directory under `run_dir`.
    pub fn dir(&self, run_dir: &Path) -> PathBuf {
        run_dir.join(self.name())
    }

    /// The services keys to sign calls to this service with, from its secret file.
    fn keys(&self) -> Result<Option<chat_grpc::KeyRing>, String> {
        self.secret_file
            .as_deref()
            .map(chat_grpc::load_service_keys)
            .transpose()
            .map_err(|error| error.to_string())
    }
}

pub(crate) fn instance_name(kind: ServiceKind, instance: u16) -> String {
    match instance {
        0 => kind.name().to_owned(),
        n => format!("{}-{}", kind.name(), u32::from(n) + 1),
    }
}

/// `bootstrap.toml` as chat-bootstrap reads it; every key written, so the file documents the
/// whole configuration.
#[derive(Serialize)]
struct BootstrapConfigFile<'a> {
    listen: String,
    state_dir: &'a Path,
    max_nodes: usize,
    secret_file: &'a Path,
    log: LogEntry,
}

/// `nameserver.toml` as chat-nameserver reads it.
#[derive(Serialize)]
struct NameserverConfigFile<'a> {
    grpc_listen: String,
    http_listen: String,
    lease_ttl_ms: u64,
    max_lease_ttl_ms: u64,
    stream_lease_ttl_ms: u64,
    max_leases: usize,
    secret_file: &'a Path,
    log: LogEntry,
}

#[derive(Serialize)]
struct LogEntry {
    level: &'static str,
}

const LOG: LogEntry = LogEntry { level: "info" };

/// The nameserver's shipped defaults (etc/chat-system/nameserver.toml): nodes ask for their
/// own lease length, these only bound it.
const DEFAULT_LEASE_TTL_MS: u64 = 15_000;
const MAX_LEASE_TTL_MS: u64 = 300_000;
/// Within the nodes' liveness timeout (1.5 s), so a frozen input node leaves the rotation
/// about when its neighbours declare it off.
const STREAM_LEASE_TTL_MS: u64 = 1_200;
const MAX_LEASES: usize = 10_000;
/// The bootstrap's shipped registry bound.
const MAX_NODES: usize = 10_000;

/// Finds both binaries, writes both configurations under `run_dir` (each guarding its calls
/// with the cluster secret `secret_file`, the nodes' one), and returns the records (no pids
/// yet). `port(offset)` is `base + offset`, checked by the caller to fit.
pub(crate) fn prepare(
    run_dir: &Path,
    options: &ServiceOptions,
    secret_file: &Path,
    port: impl Fn(u16) -> u16,
) -> Result<Vec<ServiceRecord>, ClusterError> {
    let instances = std::iter::once((ServiceKind::Bootstrap, 0))
        .chain((0..options.nameservers).map(|i| (ServiceKind::Nameserver, i)));
    instances
        .map(|(kind, instance)| {
            let binary = crate::find_binary(
                kind.binary_name(),
                kind.binary_option(),
                options.explicit_binary(kind),
            )?;
            let name = instance_name(kind, instance);
            let dir = run_dir.join(&name);
            std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
            let config = dir.join(format!("{}.toml", kind.name()));
            let (grpc_port, http_port, body) = match kind {
                ServiceKind::Bootstrap => {
                    let grpc_port = port(BOOTSTRAP_PORT_OFFSET);
                    let file = BootstrapConfigFile {
                        listen: format!("{LOOPBACK}:{grpc_port}"),
                        state_dir: &dir,
                        max_nodes: MAX_NODES,
                        secret_file,
                        log: LOG,
                    };
                    (grpc_port, None, toml::to_string(&file))
                }
                ServiceKind::Nameserver => {
                    let grpc_port = port(NAMESERVER_GRPC_PORT_OFFSET + 2 * instance);
                    let http_port = port(NAMESERVER_HTTP_PORT_OFFSET + 2 * instance);
                    let file = NameserverConfigFile {
                        grpc_listen: format!("{LOOPBACK}:{grpc_port}"),
                        http_listen: format!("{LOOPBACK}:{http_port}"),
                        lease_ttl_ms: DEFAULT_LEASE_TTL_MS,
                        max_lease_ttl_ms: MAX_LEASE_TTL_MS,
                        stream_lease_ttl_ms: STREAM_LEASE_TTL_MS,
                        max_leases: MAX_LEASES,
                        secret_file,
                        log: LOG,
                    };
                    (grpc_port, Some(http_port), toml::to_string(&file))
                }
            };
            let body = body.map_err(|error| ClusterError::BadClusterFile {
                path: config.clone(),
                reason: error.to_string(),
            })?;
            let text = format!(
                "# The {name} of the local cluster in {}.\n\
                 # Written by chat-cluster; start it by hand with\n\
                 #   {} --config {}\n\n{body}",
                run_dir.display(),
                kind.binary_name(),
                config.display()
            );
            std::fs::write(&config, text).map_err(io_error(&config))?;
            Ok(ServiceRecord {
                kind,
                instance,
                pid: None,
                binary,
                config,
                grpc_port,
                http_port,
                secret_file: Some(secret_file.to_owned()),
            })
        })
        .collect()
}

/// Whether the service answers its own protocol: the bootstrap lists its registry, the
/// nameserver's front door lists its input nodes. `Err` says why not.
pub(crate) async fn probe(record: &ServiceRecord) -> Result<serde_json::Value, String> {
    match record.kind {
        ServiceKind::Bootstrap => registered_nodes(record).await.map(|nodes| {
            serde_json::Value::Array(
                nodes
                    .into_iter()
                    .map(|node| {
                        serde_json::json!({
                            "id": node.address.id,
                            "host": node.address.host,
                            "port": node.address.port,
                            "neighbors": node.neighbor_ids,
                        })
                    })
                    .collect(),
            )
        }),
        ServiceKind::Nameserver => input_nodes(record).await,
    }
}

/// The bootstrap's registry, in registration order.
pub(crate) async fn registered_nodes(
    record: &ServiceRecord,
) -> Result<Vec<chat_bootstrap::client::RegisteredNode>, String> {
    let keys = record.keys()?;
    chat_bootstrap::client::list_nodes(&record.grpc_url(), QUERY_TIMEOUT, keys.as_ref())
        .await
        .map_err(|error| error.to_string())
}

/// The nameserver's `GET /_nameserver/nodes` answer (its live input nodes).
async fn input_nodes(record: &ServiceRecord) -> Result<serde_json::Value, String> {
    let url = record
        .http_url()
        .map(|base| format!("{base}_nameserver/nodes"))
        .ok_or_else(|| "no HTTP port recorded".to_owned())?;
    let client = reqwest::Client::builder()
        .timeout(QUERY_TIMEOUT)
        .build()
        .map_err(|error| error.to_string())?;
    let answer = async {
        client
            .get(&url)
            .send()
            .await?
            .error_for_status()?
            .json::<serde_json::Value>()
            .await
    };
    let listing = answer.await.map_err(|error| error.to_string())?;
    Ok(listing
        .get("nodes")
        .cloned()
        .unwrap_or(serde_json::Value::Null))
}

/// The status of every service in a cluster description: what `cluster.json` records plus
/// what the service answers now (`registered` for the bootstrap, `input_nodes` for the
/// nameserver), or `error` when it does not answer.
pub async fn status_all(records: &[ServiceRecord]) -> Vec<serde_json::Value> {
    let mut statuses = Vec::with_capacity(records.len());
    for record in records {
        let mut status = serde_json::json!({
            "service": record.kind,
            "name": record.name(),
            "pid": record.pid,
            "grpc": record.grpc_url(),
        });
        if let Some(http) = record.http_url() {
            status["http"] = http.into();
        }
        let key = match record.kind {
            ServiceKind::Bootstrap => "registered",
            ServiceKind::Nameserver => "input_nodes",
        };
        match probe(record).await {
            Ok(answer) => status[key] = answer,
            Err(error) => status["error"] = error.into(),
        }
        statuses.push(status);
    }
    statuses
}
