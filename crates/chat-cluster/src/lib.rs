//! A local cluster of real `chat-node` processes on loopback, for developers and for
//! multi-process tests.
//!
//! [`LocalCluster::up`] writes each node's complete configuration to `<run_dir>/<id>/node.toml`
//! (explicit ports, `state_dir = <run_dir>/<id>`, static neighbours from the topology, bootstrap
//! disabled), starts `chat-node --config <run_dir>/<id>/node.toml` for each node, and records ids,
//! pids and ports in `<run_dir>/cluster.json`. `chat-node --config <run_dir>/4/node.toml` starts
//! node 4 again by hand.
//!
//! With [`ClusterOptions::services`] (the CLI's default) it first starts `chat-bootstrap` and
//! `chat-nameserver` (see [`services`]), waits until both answer, and configures every node
//! with their addresses: input nodes lease their HTTP address at the nameserver, whose front
//! door then redirects browsers to them; with [`Topology::Bootstrap`] the nodes have no static
//! neighbours and learn them from the bootstrap. Both are recorded in `cluster.json` and stop
//! after the nodes.
//!
//! Ports: control `base + id`, data `base + 1000 + id`, HTTP `base + 2000 + id`, admin
//! `base + 3000 + id`, bootstrap gRPC `base + 4000`, nameserver gRPC `base + 4001`, nameserver
//! HTTP `base + 4002`, with base 16000 by default: away from the packaged defaults (46000+,
//! 50000+, 8080+, 47000+, 45998/45999/9999), so a local cluster runs beside an installed
//! system, and below Linux's ephemeral range (32768-60999), so a node restarted by hand never
//! finds its port taken by some process's outgoing connection.
//!
//! The `chat-cluster` binary is a thin command line over this library.

pub mod services;
pub mod topology;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

pub use services::{ServiceKind, ServiceOptions, ServiceRecord};
pub use topology::{Edge, Topology, TopologyError};

/// Default base of the port plan (see the crate docs).
pub const DEFAULT_BASE_PORT: u16 = 16_000;
/// Largest node id the port plan leaves room for (ids index 1000-port blocks).
pub const MAX_NODES: u64 = 999;
/// How long [`LocalCluster::down`] waits after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long one `/status` request may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// The name of the cluster description file in the run directory.
pub const CLUSTER_FILE: &str = "cluster.json";
/// How long a service may take to answer after its start.
const SERVICE_START_DEADLINE: Duration = Duration::from_secs(15);
/// How long a node may take to appear in the bootstrap's registry after its start.
const REGISTRATION_DEADLINE: Duration = Duration::from_secs(15);
/// How often readiness and registration are polled.
const READY_POLL: Duration = Duration::from_millis(25);

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Number of nodes, ids 1..=nodes.
    pub nodes: u64,
    /// Their links.
    pub topology: Topology,
    /// Directory for configs, state and `cluster.json`; created if absent.
    pub run_dir: PathBuf,
    /// Base of the port plan.
    pub base_port: u16,
    /// The `chat-node` binary; found by [`find_node_binary`] when `None`.
    pub node_bin: Option<PathBuf>,
    /// Where node output goes.
    pub output: NodeOutput,
    /// Extra environment for every node (e.g. `CHAT_NODE_TOPOLOGY__HEARTBEAT_MS`).
    pub env: Vec<(String, String)>,
    /// Start `chat-bootstrap` and `chat-nameserver` too; `None` (the default here, the CLI's
    /// `--no-services`) starts the nodes only, with no nameserver configured.
    pub services: Option<ServiceOptions>,
}

impl ClusterOptions {
    /// `nodes` nodes in `topology` under `run_dir`, default ports, output prefixed on ours, no
    /// services.
    pub fn new(nodes: u64, topology: Topology, run_dir: impl Into<PathBuf>) -> Self {
        Self {
            nodes,
            topology,
            run_dir: run_dir.into(),
            base_port: DEFAULT_BASE_PORT,
            node_bin: None,
            output: NodeOutput::Prefixed,
            env: Vec::new(),
            services: None,
        }
    }
}

/// Where a node's stdout and stderr go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeOutput {
    /// Onto this process's stdout/stderr, each line prefixed with `[<id>] `.
    Prefixed,
    /// Appended to `<run_dir>/<id>/node.log` (tests: keeps their output readable).
    Files,
}

/// A signal [`LocalCluster::kill`] can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeSignal {
    /// SIGKILL: the process dies at once, its connections drop.
    Kill,
    /// SIGSTOP: the process freezes, its connections stay open (a hung host).
    Stop,
    /// SIGCONT: a stopped process resumes.
    Cont,
    /// SIGTERM: clean shutdown.
    Term,
}

impl NodeSignal {
    fn as_nix(self) -> Signal {
        match self {
            Self::Kill => Signal::SIGKILL,
            Self::Stop => Signal::SIGSTOP,
            Self::Cont => Signal::SIGCONT,
            Self::Term => Signal::SIGTERM,
        }
    }
}

impl std::str::FromStr for NodeSignal {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name.to_ascii_uppercase().trim_start_matches("SIG") {
            "KILL" => Ok(Self::Kill),
            "STOP" => Ok(Self::Stop),
            "CONT" => Ok(Self::Cont),
            "TERM" => Ok(Self::Term),
            _ => Err(format!(
                "unknown signal {name:?}: expected KILL, STOP, CONT or TERM"
            )),
        }
    }
}

/// What went wrong with the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A file or directory could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The topology is unusable.
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// More nodes than the port plan has room for, or ports past 65535.
    #[error("{nodes} nodes with base port {base_port} do not fit: at most {MAX_NODES} nodes, base port >= 1024, and base port + 3000 + nodes (base port + 4002 with the services) <= 65535")]
    TooManyNodes {
        /// Nodes asked for.
        nodes: u64,
        /// Base port asked for.
        base_port: u16,
    },
    /// A binary could not be found.
    #[error(
        "cannot find the {binary} binary (give {option}, put it next to chat-cluster, or on PATH)"
    )]
    BinaryNotFound {
        /// The executable's name.
        binary: &'static str,
        /// The command-line option naming it.
        option: &'static str,
    },
    /// [`Topology::Bootstrap`] without the services: nothing would give the nodes neighbours.
    #[error("the bootstrap topology needs the services (drop --no-services)")]
    BootstrapNeedsServices,
    /// A service could not be started.
    #[error("cannot start the {kind} ({binary}): {source}")]
    ServiceSpawn {
        /// The service.
        kind: ServiceKind,
        /// The binary.
        binary: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A service exited while the cluster was starting.
    #[error("the {kind} exited ({status}) while starting; see its output or <run_dir>/{kind}/{kind}.log")]
    ServiceExited {
        /// The service.
        kind: ServiceKind,
        /// How it ended.
        status: std::process::ExitStatus,
    },
    /// A service did not answer before the deadline.
    #[error("the {kind} did not answer in time: {reason}")]
    ServiceNotReady {
        /// The service.
        kind: ServiceKind,
        /// The last failure.
        reason: String,
    },
    /// A signal could not be sent to a service.
    #[error("cannot signal the {kind}: {source}")]
    ServiceSignal {
        /// The service.
        kind: ServiceKind,
        /// The error.
        #[source]
        source: nix::errno::Errno,
    },
    /// `--nameservers` outside 1..=16.
    #[error("{0} nameservers asked for; run 1 to 16")]
    BadNameserverCount(u16),
    /// The cluster description has no such service.
    #[error("this cluster runs no {0}")]
    ServiceNotRecorded(ServiceKind),
    /// A node exited while the cluster was starting.
    #[error(
        "node {id} exited ({status}) while starting; see its output or <run_dir>/{id}/node.log"
    )]
    NodeExited {
        /// The node.
        id: u64,
        /// How it ended.
        status: std::process::ExitStatus,
    },
    /// A node did not appear in the bootstrap's registry before the deadline.
    #[error("node {id} did not register with the bootstrap in time: {reason}")]
    NotRegistered {
        /// The node.
        id: u64,
        /// The last failure.
        reason: String,
    },
    /// `chat-node` could not be started.
    #[error("cannot start node {id} ({binary}): {source}")]
    Spawn {
        /// The node.
        id: u64,
        /// The binary.
        binary: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// No node with this id in the cluster.
    #[error("no node {0} in this cluster")]
    UnknownNode(u64),
    /// The node's process is still running.
    #[error("node {0} is still running")]
    AlreadyRunning(u64),
    /// The node's process is not running.
    #[error("node {0} is not running")]
    NotRunning(u64),
    /// A signal could not be delivered.
    #[error("cannot signal node {id}: {source}")]
    Signal {
        /// The node.
        id: u64,
        /// The error.
        #[source]
        source: nix::Error,
    },
    /// `cluster.json` is not what this version writes.
    #[error("{path}: not a cluster description: {reason}")]
    BadClusterFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

pub(crate) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ClusterError + '_ {
    move |source| ClusterError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One node of a cluster as recorded in `cluster.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node id.
    pub id: u64,
    /// Its process id when last started (it may have died since).
    pub pid: Option<u32>,
    /// Control-plane port.
    pub control_port: u16,
    /// Data-plane port.
    pub data_port: u16,
    /// HTTP port.
    pub http_port: u16,
    /// Admin (`/status`, `/metrics`) port on 127.0.0.1.
    pub admin_port: u16,
    /// Its configuration file.
    pub config: PathBuf,
    /// Its neighbours.
    pub neighbors: Vec<u64>,
}

/// `cluster.json`: everything needed to find, query and restart the cluster's processes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterFile {
    /// The `chat-node` binary used.
    pub node_bin: PathBuf,
    /// Base of the port plan.
    pub base_port: u16,
    /// The links.
    pub edges: Vec<Edge>,
    /// The nodes, by id.
    pub nodes: Vec<NodeRecord>,
    /// The services, in start order; empty for a nodes-only cluster (and in files written
    /// before the launcher started services).
    #[serde(default)]
    pub services: Vec<ServiceRecord>,
}

impl ClusterFile {
    /// Reads `<run_dir>/cluster.json`.
    pub fn read(run_dir: &Path) -> Result<Self, ClusterError> {
        let path = run_dir.join(CLUSTER_FILE);
        let text = std::fs::read_to_string(&path).map_err(io_error(&path))?;
        serde_json::from_str(&text).map_err(|error| ClusterError::BadClusterFile {
            path,
            reason: error.to_string(),
        })
    }

    /// Writes `<run_dir>/cluster.json` atomically (a reader never sees half a file).
    pub fn write(&self, run_dir: &Path) -> Result<(), ClusterError> {
        let path = run_dir.join(CLUSTER_FILE);
        let temporary = run_dir.join(format!("{CLUSTER_FILE}.tmp"));
        let json =
            serde_json::to_string_pretty(self).map_err(|error| ClusterError::BadClusterFile {
                path: path.clone(),
                reason: error.to_string(),
            })?;
        std::fs::write(&temporary, json).map_err(io_error(&temporary))?;
        std::fs::rename(&temporary, &path).map_err(io_error(&path))
    }

    /// The record of node `id`.
    pub fn node(&self, id: u64) -> Result<&NodeRecord, ClusterError> {
        self.nodes
            .iter()
            .find(|node| node.id == id)
            .ok_or(ClusterError::UnknownNode(id))
    }

    /// The record of the (first) `kind` service, if this cluster runs one.
    pub fn service(&self, kind: ServiceKind) -> Option<&ServiceRecord> {
        self.services.iter().find(|service| service.kind == kind)
    }

    /// Every `kind` service, in start order (several nameservers can run side by side).
    pub fn services_of(&self, kind: ServiceKind) -> impl Iterator<Item = &ServiceRecord> {
        self.services
            .iter()
            .filter(move |service| service.kind == kind)
    }

    fn service_instance(
        &self,
        (kind, instance): ServiceId,
    ) -> Result<&ServiceRecord, ClusterError> {
        self.services
            .iter()
            .find(|service| service.kind == kind && service.instance == instance)
            .ok_or(ClusterError::ServiceNotRecorded(kind))
    }

    fn node_mut(&mut self, id: u64) -> Result<&mut NodeRecord, ClusterError> {
        self.nodes
            .iter_mut()
            .find(|node| node.id == id)
            .ok_or(ClusterError::UnknownNode(id))
    }
}

/// The `chat-node` binary, found as [`find_binary`] does.
pub fn find_node_binary(explicit: Option<&Path>) -> Result<PathBuf, ClusterError> {
    find_binary("chat-node", "--node-bin", explicit)
}

/// The executable `name`: `explicit` if given, else next to the running executable (or one
/// directory up, where cargo puts binaries relative to test executables), else on `PATH`.
/// `option` is the command-line option that names it, for the error.
pub fn find_binary(
    name: &'static str,
    option: &'static str,
    explicit: Option<&Path>,
) -> Result<PathBuf, ClusterError> {
    let not_found = ClusterError::BinaryNotFound {
        binary: name,
        option,
    };
    if let Some(path) = explicit {
        return if path.is_file() {
            Ok(path.to_owned())
        } else {
            Err(not_found)
        };
    }
    let beside_us = std::env::current_exe().ok().and_then(|exe| {
        let dir = exe.parent()?.to_owned();
        [dir.join(name), dir.parent()?.join(name)]
            .into_iter()
            .find(|candidate| candidate.is_file())
    });
    let on_path = || {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|candidate| candidate.is_file())
        })
    };
    beside_us.or_else(on_path).ok_or(not_found)
}

/// The configuration file of one node, as `chat-node` reads it.
#[derive(Serialize)]
struct NodeConfigFile<'a> {
    id: u64,
    host: &'a str,
    bind_host: &'a str,
    control_port: u16,
    data_port: u16,
    http_port: u16,
    admin_port: u16,
    state_dir: &'a Path,
    neighbors: Vec<NeighborEntry<'a>>,
    cluster: ClusterEntry,
    bootstrap: &'a BootstrapEntry,
    nameserver: &'a NameserverEntry,
}

#[derive(Serialize)]
struct NeighborEntry<'a> {
    id: u64,
    host: &'a str,
    port: u16,
}

/// `[cluster]`: the number of nodes launched, so each node knows what a majority is, and the
/// cluster secret every node of this cluster shares.
#[derive(Serialize)]
struct ClusterEntry {
    size: u64,
    secret_file: PathBuf,
}

#[derive(Serialize)]
struct BootstrapEntry {
    enabled: bool,
    /// Absent without services: the node's default then applies, unused while disabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<String>,
}

#[derive(Serialize)]
struct NameserverEntry {
    addresses: Vec<String>,
}

pub(crate) const LOOPBACK: &str = "127.0.0.1";

/// A service process: its kind and which one of that kind (from 0).
pub type ServiceId = (ServiceKind, u16);

/// Writes one node's configuration, with a header saying how to start the node by hand.
fn write_node_config(
    run_dir: &Path,
    path: &Path,
    config: &NodeConfigFile<'_>,
) -> Result<(), ClusterError> {
    let body = toml::to_string(config).map_err(|error| ClusterError::BadClusterFile {
        path: path.to_owned(),
        reason: error.to_string(),
    })?;
    let text = format!(
        "# Node {} of the local cluster in {}.\n\
         # Written by chat-cluster; start this node by hand with\n\
         #   chat-node --config {}\n\
         # Keys not listed take their built-in defaults (see `chat-node config --config <this file>`).\n\n{body}",
        config.id,
        run_dir.display(),
        path.display()
    );
    std::fs::write(path, text).map_err(io_error(path))
}

/// A running local cluster. Dropping it kills every process it started (SIGKILL); call
/// [`LocalCluster::down`] for a clean stop.
#[derive(Debug)]
pub struct LocalCluster {
    run_dir: PathBuf,
    file: ClusterFile,
    output: NodeOutput,
    env: Vec<(String, String)>,
    children: BTreeMap<u64, Child>,
    service_children: BTreeMap<ServiceId, Child>,
}

impl LocalCluster {
    /// Writes every configuration and `cluster.json`, starts the services (with
    /// [`ClusterOptions::services`]) and waits until they answer, then starts every node.
    ///
    /// With a static topology the nodes start all at once, and `up` returns as soon as their
    /// processes are started (poll [`LocalCluster::status_all`] to see them up). With
    /// [`Topology::Bootstrap`] the nodes start one after another in id order, each once the
    /// previous one is in the bootstrap's registry, because the bootstrap's assignment depends
    /// on the registration order: so the neighbours are the deterministic ones (nodes 1..4 form
    /// the ring 1:[2,4] 2:[1,3] 3:[2,4] 4:[1,3]). `cluster.json` then records the neighbours
    /// the bootstrap assigned.
    pub async fn up(options: ClusterOptions) -> Result<Self, ClusterError> {
        let ClusterOptions {
            nodes,
            topology,
            run_dir,
            base_port,
            node_bin,
            output,
            env,
            services,
        } = options;
        // The services sit above every node block; without them the admin block ends the plan.
        let last_port = if let Some(options) = &services {
            if options.nameservers == 0 || options.nameservers > services::MAX_NAMESERVERS {
                return Err(ClusterError::BadNameserverCount(options.nameservers));
            }
            u64::from(base_port)
                + u64::from(services::last_service_port_offset(options.nameservers))
        } else {
            u64::from(base_port) + 3_000 + nodes
        };
        if nodes > MAX_NODES || last_port > 65_535 || base_port < 1_024 {
            return Err(ClusterError::TooManyNodes { nodes, base_port });
        }
        if topology.uses_bootstrap() && services.is_none() {
            return Err(ClusterError::BootstrapNeedsServices);
        }
        let edges = topology.edges(nodes)?;
        let node_bin = find_binary("chat-node", "--node-bin", node_bin.as_deref())?;
        std::fs::create_dir_all(&run_dir).map_err(io_error(&run_dir))?;
        // The processes run with their own working directory; relative paths would break.
        let run_dir = std::fs::canonicalize(&run_dir).map_err(io_error(&run_dir))?;

        // Bounded above by last_port <= 65535, checked at the top.
        let port = |offset: u64| -> u16 {
            u16::try_from(u64::from(base_port) + offset).unwrap_or(u16::MAX)
        };
        // One secret per local cluster, for the nodes and the services alike (kept when the
        // run directory is reused, so a node restarted by hand still accepts the tokens the
        // others signed and still talks to the others).
        let secret_file = run_dir.join("cluster.key");
        if !secret_file.exists() {
            std::fs::write(
                &secret_file,
                chat_secret::ClusterSecret::generate_file_text(),
            )
            .map_err(io_error(&secret_file))?;
        }
        let service_records = match &services {
            Some(options) => services::prepare(&run_dir, options, &secret_file, |offset| {
                port(u64::from(offset))
            })?,
            None => Vec::new(),
        };
        let service_url = |kind: ServiceKind| {
            service_records
                .iter()
                .find(|record| record.kind == kind)
                .map(ServiceRecord::grpc_url)
        };
        let bootstrap = BootstrapEntry {
            enabled: topology.uses_bootstrap(),
            address: service_url(ServiceKind::Bootstrap),
        };
        // Every nameserver of ours (input nodes hold their lease at each); without ours, none:
        // a node must not lease its address at a packaged nameserver that happens to run on
        // this host (the node's default address).
        let nameserver = NameserverEntry {
            addresses: service_records
                .iter()
                .filter(|record| record.kind == ServiceKind::Nameserver)
                .map(ServiceRecord::grpc_url)
                .collect(),
        };

        let mut records = Vec::new();
        for id in 1..=nodes {
            let node_dir = run_dir.join(id.to_string());
            std::fs::create_dir_all(&node_dir).map_err(io_error(&node_dir))?;
            let record = NodeRecord {
                id,
                pid: None,
                control_port: port(id),
                data_port: port(1_000 + id),
                http_port: port(2_000 + id),
                admin_port: port(3_000 + id),
                config: node_dir.join("node.toml"),
                neighbors: topology::neighbors_of(&edges, id),
            };
            let config = NodeConfigFile {
                id,
                host: LOOPBACK,
                bind_host: LOOPBACK,
                control_port: record.control_port,
                data_port: record.data_port,
                http_port: record.http_port,
                admin_port: record.admin_port,
                state_dir: &node_dir,
                neighbors: record
                    .neighbors
                    .iter()
                    .map(|&neighbor| NeighborEntry {
                        id: neighbor,
                        host: LOOPBACK,
                        port: port(neighbor),
                    })
                    .collect(),
                cluster: ClusterEntry {
                    size: nodes,
                    secret_file: secret_file.clone(),
                },
                bootstrap: &bootstrap,
                nameserver: &nameserver,
            };
            write_node_config(&run_dir, &record.config, &config)?;
            records.push(record);
        }

        let mut cluster = Self {
            file: ClusterFile {
                node_bin,
                base_port,
                edges,
                nodes: records,
                services: service_records,
            },
            run_dir,
            output,
            env,
            children: BTreeMap::new(),
            service_children: BTreeMap::new(),
        };
        cluster.file.write(&cluster.run_dir)?;
        if let Err(error) = cluster.start_everything(nodes, &topology).await {
            cluster.kill_all();
            // Best effort: the error says what failed; a stale pid in cluster.json is harmless
            // because every reader checks the process before signalling it.
            let _ = cluster.file.write(&cluster.run_dir);
            return Err(error);
        }
        cluster.file.write(&cluster.run_dir)?;
        Ok(cluster)
    }

    async fn start_everything(
        &mut self,
        nodes: u64,
        topology: &Topology,
    ) -> Result<(), ClusterError> {
        let instances: Vec<ServiceId> = self
            .file
            .services
            .iter()
            .map(|record| (record.kind, record.instance))
            .collect();
        for service in instances {
            self.spawn_service(service)?;
            self.file.write(&self.run_dir)?;
            self.wait_service_ready(service).await?;
        }
        if !topology.uses_bootstrap() {
            for id in 1..=nodes {
                self.spawn(id)?;
            }
            return Ok(());
        }
        for id in 1..=nodes {
            self.spawn(id)?;
            self.file.write(&self.run_dir)?;
            self.wait_registered(id).await?;
        }
        self.record_assigned_neighbors().await
    }

    /// Polls the service until it answers its own protocol, or fails if it exits or the
    /// deadline passes.
    async fn wait_service_ready(&mut self, service: ServiceId) -> Result<(), ClusterError> {
        let kind = service.0;
        let record = self.file.service_instance(service)?.clone();
        let deadline = tokio::time::Instant::now() + SERVICE_START_DEADLINE;
        loop {
            let last_error = match services::probe(&record).await {
                Ok(_) => return Ok(()),
                Err(error) => error,
            };
            if let Some(child) = self.service_children.get_mut(&service) {
                if let Some(status) = child.try_wait().map_err(io_error(&record.config))? {
                    return Err(ClusterError::ServiceExited { kind, status });
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClusterError::ServiceNotReady {
                    kind,
                    reason: last_error,
                });
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// Polls the bootstrap's registry until node `id` is in it, or fails if the node exits or
    /// the deadline passes.
    async fn wait_registered(&mut self, id: u64) -> Result<(), ClusterError> {
        let bootstrap = self
            .file
            .service(ServiceKind::Bootstrap)
            .cloned()
            .ok_or(ClusterError::ServiceNotRecorded(ServiceKind::Bootstrap))?;
        let deadline = tokio::time::Instant::now() + REGISTRATION_DEADLINE;
        loop {
            let last_error = match services::registered_nodes(&bootstrap).await {
                Ok(registered) if registered.iter().any(|node| node.address.id == id) => {
                    return Ok(())
                }
                Ok(_) => "not in the registry yet".to_owned(),
                Err(error) => error,
            };
            if let Some(child) = self.children.get_mut(&id) {
                if let Some(status) = child.try_wait().map_err(io_error(&self.run_dir))? {
                    return Err(ClusterError::NodeExited { id, status });
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClusterError::NotRegistered {
                    id,
                    reason: last_error,
                });
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    /// Copies the bootstrap's assignment into the description (neighbours and edges).
    async fn record_assigned_neighbors(&mut self) -> Result<(), ClusterError> {
        let bootstrap = self
            .file
            .service(ServiceKind::Bootstrap)
            .cloned()
            .ok_or(ClusterError::ServiceNotRecorded(ServiceKind::Bootstrap))?;
        let registered = services::registered_nodes(&bootstrap)
            .await
            .map_err(|reason| ClusterError::ServiceNotReady {
                kind: ServiceKind::Bootstrap,
                reason,
            })?;
        let mut edges = std::collections::BTreeSet::new();
        for node in &mut self.file.nodes {
            // A registry kept from an earlier, larger cluster in this run directory may list
            // nodes this one does not have; only ours are described.
            let Some(entry) = registered.iter().find(|entry| entry.address.id == node.id) else {
                continue;
            };
            let mut neighbors = entry.neighbor_ids.clone();
            neighbors.sort_unstable();
            for &neighbor in &neighbors {
                edges.insert((node.id.min(neighbor), node.id.max(neighbor)));
            }
            node.neighbors = neighbors;
        }
        self.file.edges = edges.into_iter().collect();
        Ok(())
    }

    /// The run directory (absolute).
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The cluster description (ports, pids, edges), as in `cluster.json`.
    pub fn description(&self) -> &ClusterFile {
        &self.file
    }

    /// Every node's `/status` JSON, by id; a node that does not answer appears as
    /// `{"id": N, "error": "..."}`.
    pub async fn status_all(&self) -> Vec<serde_json::Value> {
        status_all(&self.file).await
    }

    /// Sends `signal` to node `id`.
    pub fn kill(&mut self, id: u64, signal: NodeSignal) -> Result<(), ClusterError> {
        let child = self
            .children
            .get_mut(&id)
            .ok_or(ClusterError::UnknownNode(id))?;
        if child.try_wait().map_err(io_error(&self.run_dir))?.is_some() {
            return Err(ClusterError::NotRunning(id));
        }
        let pid = child.id().ok_or(ClusterError::NotRunning(id))?;
        send_signal(id, pid, signal)
    }

    /// Waits until node `id` has exited (after a KILL or TERM).
    pub async fn wait_exit(&mut self, id: u64) -> Result<std::process::ExitStatus, ClusterError> {
        let child = self
            .children
            .get_mut(&id)
            .ok_or(ClusterError::UnknownNode(id))?;
        child.wait().await.map_err(io_error(&self.run_dir))
    }

    /// Nodes that exited since the last call, with how they ended (also reaps them).
    pub fn exited(&mut self) -> Vec<(u64, std::process::ExitStatus)> {
        let mut exited = Vec::new();
        let mut gone = Vec::new();
        for (&id, child) in &mut self.children {
            match child.try_wait() {
                Ok(Some(status)) => {
                    exited.push((id, status));
                    gone.push(id);
                }
                Ok(None) => {}
                // Not ours to wait for any more; nothing to report.
                Err(_) => gone.push(id),
            }
        }
        for id in gone {
            self.children.remove(&id);
        }
        exited
    }

    /// Services that exited since the last call, by name ([`ServiceRecord::name`]), with how
    /// they ended (also reaps them).
    pub fn exited_services(&mut self) -> Vec<(String, std::process::ExitStatus)> {
        let mut exited = Vec::new();
        self.service_children
            .retain(|&(kind, instance), child| match child.try_wait() {
                Ok(Some(status)) => {
                    exited.push((services::instance_name(kind, instance), status));
                    false
                }
                Ok(None) => true,
                // Not ours to wait for any more; nothing to report.
                Err(_) => false,
            });
        exited
    }

    /// Starts node `id` again with its existing configuration; it must have exited.
    pub async fn start(&mut self, id: u64) -> Result<(), ClusterError> {
        if let Some(child) = self.children.get_mut(&id) {
            if child.try_wait().map_err(io_error(&self.run_dir))?.is_none() {
                return Err(ClusterError::AlreadyRunning(id));
            }
        }
        self.spawn(id)?;
        self.file.write(&self.run_dir)
    }

    /// Stops every node: SIGTERM (and SIGCONT, so stopped nodes can act on it), then SIGKILL
    /// for those still running after [`STOP_GRACE`].
    pub async fn down(mut self) -> Result<(), ClusterError> {
        let children = std::mem::take(&mut self.children);
        let own_pids: Vec<u32> = children.values().filter_map(Child::id).collect();
        // Nodes restarted by `chat-cluster start` from another process are in cluster.json
        // but are not our children: stop those too.
        let strays: Vec<_> = ClusterFile::read(&self.run_dir)
            .map(|file| file.nodes)
            .unwrap_or_default()
            .into_iter()
            .filter(|node| node.pid.is_some_and(|pid| !own_pids.contains(&pid)))
            .filter_map(|node| Some((node.id, node.pid?, node.config)))
            .filter(|(_, pid, config)| is_node_process(*pid, config))
            .map(|(id, pid, _)| tokio::spawn(stop_recorded(id, pid)))
            .collect();
        for stray in strays {
            let _ = stray.await;
        }
        stop_children(children.into_values()).await;
        // After the nodes, so input nodes can still withdraw their leases on the way out.
        stop_children(std::mem::take(&mut self.service_children).into_values()).await;
        Ok(())
    }

    fn spawn(&mut self, id: u64) -> Result<(), ClusterError> {
        let record = self.file.node(id)?.clone();
        let node_dir = self.run_dir.join(id.to_string());
        let binary = self.file.node_bin.clone();
        let child = launch(
            &Launch {
                label: &id.to_string(),
                binary: &binary,
                config: &record.config,
                dir: &node_dir,
                log_file: "node.log",
                env: &self.env,
            },
            self.output,
            |source| ClusterError::Spawn {
                id,
                binary: binary.clone(),
                source,
            },
        )?;
        self.file.node_mut(id)?.pid = child.id();
        self.children.insert(id, child);
        Ok(())
    }

    fn spawn_service(&mut self, service: ServiceId) -> Result<(), ClusterError> {
        let kind = service.0;
        let record = self.file.service_instance(service)?.clone();
        let name = record.name();
        let child = launch(
            &Launch {
                label: &name,
                binary: &record.binary,
                config: &record.config,
                dir: &record.dir(&self.run_dir),
                log_file: &format!("{}.log", kind.name()),
                // The nodes' extra environment is CHAT_NODE_* settings, which are not theirs.
                env: &[],
            },
            self.output,
            |source| ClusterError::ServiceSpawn {
                kind,
                binary: record.binary.clone(),
                source,
            },
        )?;
        let pid = child.id();
        if let Some(recorded) = self
            .file
            .services
            .iter_mut()
            .find(|recorded| (recorded.kind, recorded.instance) == service)
        {
            recorded.pid = pid;
        }
        self.service_children.insert(service, child);
        Ok(())
    }

    /// Sends `signal` to a service (`(kind, instance)`, e.g. `(ServiceKind::Nameserver, 1)`
    /// for the second nameserver).
    pub fn kill_service(
        &mut self,
        service: ServiceId,
        signal: NodeSignal,
    ) -> Result<(), ClusterError> {
        let child = self
            .service_children
            .get_mut(&service)
            .ok_or(ClusterError::ServiceNotRecorded(service.0))?;
        let pid = child
            .id()
            .ok_or(ClusterError::ServiceNotRecorded(service.0))?;
        kill(as_pid(pid), signal.as_nix()).map_err(|source| ClusterError::ServiceSignal {
            kind: service.0,
            source,
        })
    }

    /// Starts a service again with its configuration once its process has exited (after
    /// [`LocalCluster::kill_service`]), and waits until it answers.
    pub async fn restart_service(&mut self, service: ServiceId) -> Result<(), ClusterError> {
        if let Some(mut child) = self.service_children.remove(&service) {
            child.wait().await.map_err(io_error(&self.run_dir))?;
        }
        self.spawn_service(service)?;
        self.file.write(&self.run_dir)?;
        self.wait_service_ready(service).await
    }

    fn kill_all(&mut self) {
        for child in self
            .children
            .values_mut()
            .chain(self.service_children.values_mut())
        {
            let _ = child.start_kill();
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        // kill_on_drop covers this too; being explicit keeps the promise visible.
        self.kill_all();
    }
}

/// Every node's `/status` JSON for a cluster description, by id; a node that does not answer
/// appears as `{"id": N, "error": "..."}`.
pub async fn status_all(file: &ClusterFile) -> Vec<serde_json::Value> {
    let client = match reqwest::Client::builder().timeout(STATUS_TIMEOUT).build() {
        Ok(client) => client,
        Err(error) => {
            return file
                .nodes
                .iter()
                .map(|node| serde_json::json!({ "id": node.id, "error": error.to_string() }))
                .collect()
        }
    };
    let queries: Vec<_> = file
        .nodes
        .iter()
        .map(|node| {
            let client = client.clone();
            let id = node.id;
            let url = format!("http://127.0.0.1:{}/status", node.admin_port);
            (id, tokio::spawn(query_status(client, id, url)))
        })
        .collect();
    let mut statuses = Vec::with_capacity(queries.len());
    for (id, query) in queries {
        statuses.push(query.await.unwrap_or_else(|error| {
            serde_json::json!({ "id": id, "error": format!("status query failed: {error}") })
        }));
    }
    statuses
}

async fn query_status(client: reqwest::Client, id: u64, url: String) -> serde_json::Value {
    let answer = async {
        client
            .get(&url)
            .send()
            .await?
            .error_for_status()?
            .json::<serde_json::Value>()
            .await
    };
    match answer.await {
        Ok(status) => status,
        Err(error) => serde_json::json!({ "id": id, "error": error.to_string() }),
    }
}

/// Sends `signal` to a node process of a cluster described in `run_dir` (the CLI's `kill`,
/// from another process than the one that started the node).
pub fn signal_recorded(run_dir: &Path, id: u64, signal: NodeSignal) -> Result<(), ClusterError> {
    let file = ClusterFile::read(run_dir)?;
    let pid = file.node(id)?.pid.ok_or(ClusterError::NotRunning(id))?;
    send_signal(id, pid, signal)
}

/// Starts node `id` of the cluster described in `run_dir` as a detached process logging to
/// `<run_dir>/<id>/node.log`, and records its pid (the CLI's `start`). Refuses if the recorded
/// process still runs.
pub fn start_recorded(run_dir: &Path, id: u64) -> Result<u32, ClusterError> {
    let mut file = ClusterFile::read(run_dir)?;
    let record = file.node(id)?.clone();
    if record
        .pid
        .is_some_and(|pid| is_running(pid) && is_node_process(pid, &record.config))
    {
        return Err(ClusterError::AlreadyRunning(id));
    }
    let node_dir = run_dir.join(id.to_string());
    let log = node_dir.join("node.log");
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(io_error(&log))?;
    let err = out.try_clone().map_err(io_error(&log))?;
    let child = std::process::Command::new(&file.node_bin)
        .arg("--config")
        .arg(&record.config)
        .current_dir(&node_dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|source| ClusterError::Spawn {
            id,
            binary: file.node_bin.clone(),
            source,
        })?;
    let pid = child.id();
    file.node_mut(id)?.pid = Some(pid);
    file.write(run_dir)?;
    Ok(pid)
}

fn as_pid(pid: u32) -> Pid {
    Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX))
}

fn send_signal(id: u64, pid: u32, signal: NodeSignal) -> Result<(), ClusterError> {
    kill(as_pid(pid), signal.as_nix()).map_err(|source| ClusterError::Signal { id, source })
}

/// Stops all of `children` at once, each as [`stop_child`] does.
async fn stop_children(children: impl Iterator<Item = Child>) {
    let stops: Vec<_> = children
        .map(|child| tokio::spawn(stop_child(child)))
        .collect();
    for stop in stops {
        // A stop task only fails if the runtime is going away, which kills the child too.
        let _ = stop.await;
    }
}

/// SIGTERM (and SIGCONT, so a stopped process can act on it), then SIGKILL after the grace.
async fn stop_child(mut child: Child) {
    if let Some(pid) = child.id() {
        // A process that already exited has no pid; nothing to signal then.
        let _ = kill(as_pid(pid), Signal::SIGTERM);
        let _ = kill(as_pid(pid), Signal::SIGCONT);
    }
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}

/// Whether `pid` is still a `chat-node --config <config>` process (and not some other
/// process that reused the pid).
fn is_node_process(pid: u32, config: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let config = config.as_os_str().as_encoded_bytes();
    cmdline
        .split(|&byte| byte == 0)
        .any(|argument| argument == config)
}

/// Whether `pid` names a live process (not a zombie waiting for its parent to reap it).
fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state letter follows the command name, which is in parentheses.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// Stops a node process that is not our child: SIGTERM (+SIGCONT), poll for its end, SIGKILL
/// after the grace.
async fn stop_recorded(id: u64, pid: u32) {
    let _ = send_signal(id, pid, NodeSignal::Term);
    let _ = send_signal(id, pid, NodeSignal::Cont);
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    while is_running(pid) {
        if tokio::time::Instant::now() >= deadline {
            let _ = send_signal(id, pid, NodeSignal::Kill);
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How to start one process of the cluster.
struct Launch<'a> {
    /// Output prefix: the node id or the service name.
    label: &'a str,
    binary: &'a Path,
    config: &'a Path,
    /// Working directory, and where the log file goes.
    dir: &'a Path,
    /// Log file name in `dir`, with [`NodeOutput::Files`].
    log_file: &'a str,
    env: &'a [(String, String)],
}

/// Starts `<binary> --config <config>` with its output where `output` says.
fn launch(
    launch: &Launch<'_>,
    output: NodeOutput,
    spawn_error: impl FnOnce(std::io::Error) -> ClusterError,
) -> Result<Child, ClusterError> {
    let mut command = Command::new(launch.binary);
    command
        .arg("--config")
        .arg(launch.config)
        .current_dir(launch.dir)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .envs(launch.env.iter().map(|(key, value)| (key, value)));
    match output {
        NodeOutput::Prefixed => {
            command.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
        NodeOutput::Files => {
            let path = launch.dir.join(launch.log_file);
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io_error(&path))?;
            let second = file.try_clone().map_err(io_error(&path))?;
            command.stdout(file).stderr(second);
        }
    }
    let mut child = command.spawn().map_err(spawn_error)?;
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(prefix_lines(
            launch.label.to_owned(),
            stdout,
            tokio::io::stdout(),
        ));
    }
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(prefix_lines(
            launch.label.to_owned(),
            stderr,
            tokio::io::stderr(),
        ));
    }
    Ok(child)
}

/// Copies lines from a process's output to ours, each prefixed with `[<label>] `.
async fn prefix_lines(
    label: String,
    from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
) {
    let mut lines = BufReader::new(from).lines();
    // The process closing its output (it exited) or ours failing ends the copy.
    while let Ok(Some(line)) = lines.next_line().await {
        let prefixed = format!("[{label}] {line}\n");
        if to.write_all(prefixed.as_bytes()).await.is_err() {
            break;
        }
        let _ = to.flush().await;
    }
}
