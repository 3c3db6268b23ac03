//! A local cluster of real `chat-node` processes on loopback, for developers and for
//! multi-process tests.
//!
//! [`LocalCluster::up`] writes each node's complete configuration to `<run_dir>/<id>/node.toml`
//! (explicit ports, `state_dir = <run_dir>/<id>`, static neighbours from the topology, bootstrap
//! disabled), starts `chat-node --config <run_dir>/<id>/node.toml` for each node, and records ids,
//! pids and ports in `<run_dir>/cluster.json`. `chat-node --config <run_dir>/4/node.toml` starts
//! node 4 again by hand.
//!
//! Ports: control `base + id`, data `base + 1000 + id`, HTTP `base + 2000 + id`, admin
//! `base + 3000 + id`, with base 36000 by default, well away from the packaged defaults
//! (46000+, 50000+, 8080+, 47000+), so a local cluster runs beside an installed node.
//!
//! The `chat-cluster` binary is a thin command line over this library.

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

pub use topology::{Edge, Topology, TopologyError};

/// Default base of the port plan (see the crate docs).
pub const DEFAULT_BASE_PORT: u16 = 36_000;
/// Largest node id the port plan leaves room for (ids index 1000-port blocks).
pub const MAX_NODES: u64 = 999;
/// How long [`LocalCluster::down`] waits after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long one `/status` request may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// The name of the cluster description file in the run directory.
pub const CLUSTER_FILE: &str = "cluster.json";

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
}

impl ClusterOptions {
    /// `nodes` nodes in `topology` under `run_dir`, default ports, output prefixed on ours.
    pub fn new(nodes: u64, topology: Topology, run_dir: impl Into<PathBuf>) -> Self {
        Self {
            nodes,
            topology,
            run_dir: run_dir.into(),
            base_port: DEFAULT_BASE_PORT,
            node_bin: None,
            output: NodeOutput::Prefixed,
            env: Vec::new(),
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
    #[error("{nodes} nodes with base port {base_port} do not fit: at most {MAX_NODES} nodes and base port + 3000 + nodes <= 65535")]
    TooManyNodes {
        /// Nodes asked for.
        nodes: u64,
        /// Base port asked for.
        base_port: u16,
    },
    /// No `chat-node` binary could be found.
    #[error("cannot find the chat-node binary (give --node-bin, put it next to chat-cluster, or on PATH)")]
    NodeBinaryNotFound,
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

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ClusterError + '_ {
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

    fn node_mut(&mut self, id: u64) -> Result<&mut NodeRecord, ClusterError> {
        self.nodes
            .iter_mut()
            .find(|node| node.id == id)
            .ok_or(ClusterError::UnknownNode(id))
    }
}

/// The `chat-node` binary: `explicit` if given, else next to the running executable (or one
/// directory up, where cargo puts binaries relative to test executables), else on `PATH`.
pub fn find_node_binary(explicit: Option<&Path>) -> Result<PathBuf, ClusterError> {
    if let Some(path) = explicit {
        return if path.is_file() {
            Ok(path.to_owned())
        } else {
            Err(ClusterError::NodeBinaryNotFound)
        };
    }
    let beside_us = std::env::current_exe().ok().and_then(|exe| {
        let dir = exe.parent()?.to_owned();
        [dir.join("chat-node"), dir.parent()?.join("chat-node")]
            .into_iter()
            .find(|candidate| candidate.is_file())
    });
    let on_path = || {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("chat-node"))
                .find(|candidate| candidate.is_file())
        })
    };
    beside_us
        .or_else(on_path)
        .ok_or(ClusterError::NodeBinaryNotFound)
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
    bootstrap: BootstrapEntry,
}

#[derive(Serialize)]
struct NeighborEntry<'a> {
    id: u64,
    host: &'a str,
    port: u16,
}

#[derive(Serialize)]
struct BootstrapEntry {
    enabled: bool,
}

const LOOPBACK: &str = "127.0.0.1";

/// A running local cluster. Dropping it kills every node it started (SIGKILL); call
/// [`LocalCluster::down`] for a clean stop.
#[derive(Debug)]
pub struct LocalCluster {
    run_dir: PathBuf,
    file: ClusterFile,
    output: NodeOutput,
    env: Vec<(String, String)>,
    children: BTreeMap<u64, Child>,
}

impl LocalCluster {
    /// Writes every node's configuration and `cluster.json`, then starts every node. Returns as
    /// soon as the processes are started (poll [`LocalCluster::status_all`] to see them up).
    pub async fn up(options: ClusterOptions) -> Result<Self, ClusterError> {
        let ClusterOptions {
            nodes,
            topology,
            run_dir,
            base_port,
            node_bin,
            output,
            env,
        } = options;
        let last_admin_port = u64::from(base_port) + 3_000 + nodes;
        if nodes > MAX_NODES || last_admin_port > 65_535 || base_port < 1_024 {
            return Err(ClusterError::TooManyNodes { nodes, base_port });
        }
        let edges = topology.edges(nodes)?;
        let node_bin = find_node_binary(node_bin.as_deref())?;
        std::fs::create_dir_all(&run_dir).map_err(io_error(&run_dir))?;
        // The nodes run with their own working directory; relative paths would break.
        let run_dir = std::fs::canonicalize(&run_dir).map_err(io_error(&run_dir))?;

        let port = |offset: u64, id: u64| -> u16 {
            // Bounded above by last_admin_port <= 65535, checked at the top.
            u16::try_from(u64::from(base_port) + offset + id).unwrap_or(u16::MAX)
        };
        let mut records = Vec::new();
        for id in 1..=nodes {
            let node_dir = run_dir.join(id.to_string());
            std::fs::create_dir_all(&node_dir).map_err(io_error(&node_dir))?;
            let neighbors = topology::neighbors_of(&edges, id);
            let record = NodeRecord {
                id,
                pid: None,
                control_port: port(0, id),
                data_port: port(1_000, id),
                http_port: port(2_000, id),
                admin_port: port(3_000, id),
                config: node_dir.join("node.toml"),
                neighbors,
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
                        port: port(0, neighbor),
                    })
                    .collect(),
                bootstrap: BootstrapEntry { enabled: false },
            };
            let body = toml::to_string(&config).map_err(|error| ClusterError::BadClusterFile {
                path: record.config.clone(),
                reason: error.to_string(),
            })?;
            let text = format!(
                "# Node {id} of the local cluster in {}.\n\
                 # Written by chat-cluster; start this node by hand with\n\
                 #   chat-node --config {}\n\
                 # Keys not listed take their built-in defaults (see `chat-node config --config <this file>`).\n\n{body}",
                run_dir.display(),
                record.config.display()
            );
            std::fs::write(&record.config, text).map_err(io_error(&record.config))?;
            records.push(record);
        }

        // Later issues start chat-bootstrap and chat-nameserver here, before the nodes, record
        // them in cluster.json, and enable `[bootstrap]`/`[nameserver]` in the node configs.

        let mut cluster = Self {
            file: ClusterFile {
                node_bin,
                base_port,
                edges,
                nodes: records,
            },
            run_dir,
            output,
            env,
            children: BTreeMap::new(),
        };
        cluster.file.write(&cluster.run_dir)?;
        for id in 1..=nodes {
            if let Err(error) = cluster.spawn(id) {
                cluster.kill_all();
                return Err(error);
            }
        }
        cluster.file.write(&cluster.run_dir)?;
        Ok(cluster)
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
        let stops: Vec<_> = children
            .into_iter()
            .map(|(id, child)| tokio::spawn(stop_node(id, child)))
            .collect();
        for stop in stops {
            // A stop task only fails if the runtime is going away, which kills the child too.
            let _ = stop.await;
        }
        Ok(())
    }

    fn spawn(&mut self, id: u64) -> Result<(), ClusterError> {
        let record = self.file.node(id)?.clone();
        let node_dir = self.run_dir.join(id.to_string());
        let mut command = Command::new(&self.file.node_bin);
        command
            .arg("--config")
            .arg(&record.config)
            .current_dir(&node_dir)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .envs(self.env.iter().map(|(key, value)| (key, value)));
        let log_file = match self.output {
            NodeOutput::Prefixed => {
                command.stdout(Stdio::piped()).stderr(Stdio::piped());
                None
            }
            NodeOutput::Files => {
                let path = node_dir.join("node.log");
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(io_error(&path))?;
                let second = file.try_clone().map_err(io_error(&path))?;
                command.stdout(file).stderr(second);
                Some(path)
            }
        };
        let mut child = command.spawn().map_err(|source| ClusterError::Spawn {
            id,
            binary: self.file.node_bin.clone(),
            source,
        })?;
        if log_file.is_none() {
            if let Some(stdout) = child.stdout.take() {
                tokio::spawn(prefix_lines(id, stdout, tokio::io::stdout()));
            }
            if let Some(stderr) = child.stderr.take() {
                tokio::spawn(prefix_lines(id, stderr, tokio::io::stderr()));
            }
        }
        self.file.node_mut(id)?.pid = child.id();
        self.children.insert(id, child);
        Ok(())
    }

    fn kill_all(&mut self) {
        for child in self.children.values_mut() {
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

/// SIGTERM (and SIGCONT, so a stopped node can act on it), then SIGKILL after the grace.
async fn stop_node(id: u64, mut child: Child) {
    if let Some(pid) = child.id() {
        // A node that already exited has no pid; nothing to signal then.
        let _ = send_signal(id, pid, NodeSignal::Term);
        let _ = send_signal(id, pid, NodeSignal::Cont);
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

/// Copies lines from a node's output to ours, each prefixed with `[<id>] `.
async fn prefix_lines(id: u64, from: impl AsyncRead + Unpin, mut to: impl AsyncWrite + Unpin) {
    let mut lines = BufReader::new(from).lines();
    // The node closing its output (it exited) or ours failing ends the copy.
    while let Ok(Some(line)) = lines.next_line().await {
        let prefixed = format!("[{id}] {line}\n");
        if to.write_all(prefixed.as_bytes()).await.is_err() {
            break;
        }
        let _ = to.flush().await;
    }
}
