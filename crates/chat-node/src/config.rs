//! The node's configuration: keys, defaults, layering, derived values and validation.
//!
//! Layers, each overriding the one before:
//! 1. built-in defaults ([`NodeConfig::defaults`]);
//! 2. `/etc/chat-system/node.toml`, then `/etc/chat-system/node.d/<id>.toml` (each only if it
//!    exists); `--config PATH` replaces both files by PATH alone;
//! 3. environment variables `CHAT_NODE_<KEY>`, nested keys split by `__`
//!    (`CHAT_NODE_TOPOLOGY__HEARTBEAT_MS=100`); any other `CHAT_NODE_*` variable is reported as
//!    an unknown key;
//! 4. command-line flags.
//!
//! Only `id` is required. Derived when absent: control port 46000 + id, data port 50000 + id,
//! HTTP port 8080 + id, admin port 47000 + id, state directory `/var/lib/chat-system/node-<id>`.
//! `bind_host` defaults to 127.0.0.1, like `host`: a node exposes nothing beyond the machine
//! until an operator sets both for a multi-host cluster. The admin endpoint always binds
//! 127.0.0.1.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use chat_control::defaults;
use chat_ops::config::{self as layered_config, ConfigError, Problem};
use chat_ops::LogSettings;
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Prefix of the environment variables read as configuration.
pub(crate) const ENV_PREFIX: &str = "CHAT_NODE_";
/// Directory of the packaged configuration files.
pub(crate) const ETC_DIR: &str = "/etc/chat-system";

/// Base of the derived control port (the prototype's rule): control port = 46000 + id.
pub(crate) const CONTROL_PORT_BASE: u64 = 46_000;
/// Data port = 50000 + id (the prototype's rule).
pub(crate) const DATA_PORT_BASE: u64 = 50_000;
/// HTTP port = 8080 + id (the prototype's rule).
pub(crate) const HTTP_PORT_BASE: u64 = 8_080;
/// Admin (status/metrics) port = 47000 + id.
pub(crate) const ADMIN_PORT_BASE: u64 = 47_000;

/// Everything a node can be configured with, as read from the layers. Absent ports and state
/// directory are derived by [`NodeConfig::resolve`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NodeConfig {
    /// The node's id, >= 1; required. Serialized only when set so the defaults layer leaves it
    /// missing.
    #[serde(skip_serializing_if = "is_unset_id")]
    pub(crate) id: u64,
    /// Host other nodes reach this one at.
    #[serde(default = "loopback")]
    pub(crate) host: String,
    /// Host the control, data and HTTP sockets bind to.
    #[serde(default = "loopback")]
    pub(crate) bind_host: String,
    /// ZeroMQ control-plane port; default 46000 + id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) control_port: Option<u16>,
    /// ZeroMQ data-plane port; default 50000 + id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) data_port: Option<u16>,
    /// HTTP (chat web UI) port; default 8080 + id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) http_port: Option<u16>,
    /// Admin endpoint port on 127.0.0.1 (`/status`, `/metrics`); default 47000 + id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) admin_port: Option<u16>,
    /// State directory (database); default `/var/lib/chat-system/node-<id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) state_dir: Option<PathBuf>,
    /// Static neighbours (used as well as, or instead of, the bootstrap service).
    #[serde(default)]
    pub(crate) neighbors: Vec<NeighborConfig>,
    /// The cluster as a whole: its size, and where the node keeps its control state.
    #[serde(default)]
    pub(crate) cluster: ClusterSettings,
    /// The bootstrap (neighbour assignment) service.
    #[serde(default)]
    pub(crate) bootstrap: BootstrapSettings,
    /// The nameserver input nodes register with.
    #[serde(default)]
    pub(crate) nameserver: NameserverSettings,
    /// Neighbour handshakes and liveness.
    #[serde(default)]
    pub(crate) topology: TopologySettings,
    /// Leader election.
    #[serde(default)]
    pub(crate) election: ElectionSettings,
    /// The spanning tree.
    #[serde(default)]
    pub(crate) tree: TreeSettings,
    /// The HTTP input layer.
    #[serde(default)]
    pub(crate) http: HttpSettings,
    /// The local database.
    #[serde(default)]
    pub(crate) storage: StorageSettings,
    /// The data plane.
    #[serde(default)]
    pub(crate) data: DataPlaneSettings,
    /// Log levels.
    #[serde(default)]
    pub(crate) log: LogSettings,
}

fn is_unset_id(id: &u64) -> bool {
    *id == 0
}

fn loopback() -> String {
    "127.0.0.1".to_owned()
}

/// A statically configured neighbour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NeighborConfig {
    /// The neighbour's node id.
    pub(crate) id: u64,
    /// Its host.
    pub(crate) host: String,
    /// Its control-plane port.
    pub(crate) port: u16,
}

/// `[cluster]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ClusterSettings {
    /// How many nodes the cluster has, this one included. A tree's root accepts writes only
    /// while its tree holds more than half of them; 1 is a lone node.
    pub(crate) size: u64,
    /// File, relative to the state directory (or absolute), where the node keeps the highest
    /// term it has seen, so its term never decreases across restarts.
    pub(crate) state_file: PathBuf,
    /// The cluster secret: one or two lines of 64 hex characters (the first signs, both
    /// verify). API tokens and session cookies are signed with it. Relative paths are taken
    /// from the state directory. A node whose file is missing or malformed does not start.
    pub(crate) secret_file: PathBuf,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            size: 1,
            state_file: PathBuf::from("control-state.json"),
            secret_file: PathBuf::from("/etc/chat-system/cluster.key"),
        }
    }
}

/// `[bootstrap]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct BootstrapSettings {
    /// Ask the bootstrap service for neighbours at start-up.
    pub(crate) enabled: bool,
    /// gRPC address of the bootstrap service.
    pub(crate) address: String,
    /// How long to wait for its answer.
    pub(crate) timeout_ms: u64,
}

impl Default for BootstrapSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            address: "http://127.0.0.1:45999".to_owned(),
            timeout_ms: 2_000,
        }
    }
}

/// `[nameserver]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct NameserverSettings {
    /// gRPC addresses of the nameservers an input node registers with.
    pub(crate) addresses: Vec<String>,
    /// Lease length asked for.
    pub(crate) lease_ttl_ms: u64,
    /// Renewal period; must be shorter than the lease.
    pub(crate) renew_ms: u64,
}

impl Default for NameserverSettings {
    fn default() -> Self {
        Self {
            addresses: vec!["http://127.0.0.1:45998".to_owned()],
            lease_ttl_ms: 10_000,
            renew_ms: 3_000,
        }
    }
}

/// `[topology]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct TopologySettings {
    /// Heartbeat period to every neighbour.
    pub(crate) heartbeat_ms: u64,
    /// A neighbour silent this long is OFF; must exceed `heartbeat_ms`.
    pub(crate) liveness_timeout_ms: u64,
    /// First JOIN retry delay.
    pub(crate) join_backoff_initial_ms: u64,
    /// Cap of the JOIN retry delay.
    pub(crate) join_backoff_max_ms: u64,
    /// Heartbeats from a stranger before this node sends a REJOIN handshake.
    pub(crate) stranger_heartbeats_before_rejoin: u32,
    /// A dropped connection that comes back within this grace does not mark the neighbour OFF.
    pub(crate) link_down_grace_ms: u64,
}

impl Default for TopologySettings {
    fn default() -> Self {
        Self {
            heartbeat_ms: millis(defaults::HEARTBEAT),
            liveness_timeout_ms: millis(defaults::LIVENESS_TIMEOUT),
            join_backoff_initial_ms: millis(defaults::JOIN_BACKOFF_INITIAL),
            join_backoff_max_ms: millis(defaults::JOIN_BACKOFF_MAX),
            stranger_heartbeats_before_rejoin: 5,
            link_down_grace_ms: millis(defaults::LINK_DOWN_GRACE),
        }
    }
}

/// `[election]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ElectionSettings {
    /// An election step unanswered this long is retried.
    pub(crate) timeout_ms: u64,
    /// How long a fresh node waits to be told of a leader before it starts an election.
    pub(crate) join_wait_ms: u64,
    /// How long a node that lost its parent waits for adoption before it starts an election;
    /// must exceed `tree.epoch_tick_ms` by [`HEAL_MARGIN_MS`] (adoption needs a fresher epoch).
    pub(crate) heal_timeout_ms: u64,
    /// A root stays writable this long after a majority answered its probe (counted from
    /// when the probe was sent); must be shorter than `topology.liveness_timeout_ms`.
    pub(crate) writer_lease_ms: u64,
}

impl Default for ElectionSettings {
    fn default() -> Self {
        Self {
            timeout_ms: millis(defaults::ELECTION_TIMEOUT),
            join_wait_ms: millis(defaults::JOIN_WAIT),
            heal_timeout_ms: millis(defaults::HEAL_TIMEOUT),
            writer_lease_ms: millis(defaults::WRITER_LEASE),
        }
    }
}

/// How much longer than one epoch tick an orphan must wait for adoption: the fresher epoch
/// an adopter needs must travel down the tree and the offer back (a few message delays).
pub(crate) const HEAL_MARGIN_MS: u64 = millis(defaults::HEAL_MARGIN);

/// The timing defaults live in [`chat_control::defaults`], the one place the state machines,
/// this file, the shipped node.toml and docs/decisions.md agree on.
const fn millis(duration: std::time::Duration) -> u64 {
    // Every default is a few seconds at most: no truncation.
    duration.as_millis() as u64
}

/// `[tree]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct TreeSettings {
    /// Period of the leader's epoch tick.
    pub(crate) epoch_tick_ms: u64,
}

impl Default for TreeSettings {
    fn default() -> Self {
        Self {
            epoch_tick_ms: millis(defaults::EPOCH_TICK),
        }
    }
}

/// `[http]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct HttpSettings {
    /// Address the nameserver redirects browsers to (e.g. `http://chat4.example:8084`);
    /// default `http://<host>:<http_port>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) public_address: Option<String>,
    /// Time allowed to read a request.
    pub(crate) read_timeout_ms: u64,
    /// Time allowed to write a response.
    pub(crate) write_timeout_ms: u64,
    /// How long an API token or session cookie lasts, in seconds (7 days).
    pub(crate) session_ttl_s: u64,
    /// How long one API request may take through the cluster, retries included; past it
    /// the answer is 503 `unavailable` with `Retry-After`.
    pub(crate) request_timeout_ms: u64,
    /// Login attempts per account (`username#tag`): `{ burst, per_minute }`.
    pub(crate) login_per_account: chat_web::ratelimit::Limit,
    /// Login attempts per client address.
    pub(crate) login_per_address: chat_web::ratelimit::Limit,
    /// `Domain` of the session cookie (input nodes on several hosts of one domain).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cookie_domain: Option<String>,
    /// Mark the session cookie `Secure` (when browsers reach the nodes over HTTPS).
    pub(crate) cookie_secure: bool,
    /// Directory of the handlebars pages; unset: the copy built into the binary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) template_dir: Option<PathBuf>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        let web = chat_web::WebConfig::default();
        Self {
            public_address: None,
            read_timeout_ms: 10_000,
            write_timeout_ms: 10_000,
            session_ttl_s: web.session_ttl_s,
            request_timeout_ms: 5_000,
            login_per_account: web.login_per_account,
            login_per_address: web.login_per_address,
            cookie_domain: None,
            cookie_secure: false,
            template_dir: None,
        }
    }
}

impl HttpSettings {
    /// The HTTP layer's settings.
    pub(crate) fn web_config(&self) -> chat_web::WebConfig {
        chat_web::WebConfig {
            session_ttl_s: self.session_ttl_s,
            login_per_account: self.login_per_account,
            login_per_address: self.login_per_address,
            template_dir: self.template_dir.clone(),
            cookie_domain: self.cookie_domain.clone(),
            cookie_secure: self.cookie_secure,
            header_read_timeout_ms: self.read_timeout_ms,
            ..chat_web::WebConfig::default()
        }
    }
}

/// `[storage]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct StorageSettings {
    /// SQLite file name, relative to the state directory (or absolute).
    pub(crate) db_file: PathBuf,
    /// bcrypt cost for passwords, 4..=31.
    pub(crate) bcrypt_cost: u32,
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            db_file: PathBuf::from("chat.db"),
            bcrypt_cost: 12,
        }
    }
}

/// `[data]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct DataPlaneSettings {
    /// A replica (a child of the root) answers reads it is fresh enough for itself; false
    /// passes every read up to the root (to compare, or to keep replicas for durability only).
    pub(crate) replica_reads: bool,
    /// How long a replica waits for the client's epoch before passing a read up.
    pub(crate) read_wait_ms: u64,
}

impl Default for DataPlaneSettings {
    fn default() -> Self {
        Self {
            replica_reads: true,
            read_wait_ms: 50,
        }
    }
}

/// The configuration with every derived value filled in and every rule checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ResolvedConfig {
    pub(crate) id: u64,
    pub(crate) host: String,
    pub(crate) bind_host: String,
    pub(crate) control_port: u16,
    pub(crate) data_port: u16,
    pub(crate) http_port: u16,
    pub(crate) admin_port: u16,
    pub(crate) state_dir: PathBuf,
    /// `storage.db_file` joined to `state_dir`.
    pub(crate) db_path: PathBuf,
    /// `http.public_address`, or `http://<host>:<http_port>`.
    pub(crate) public_address: String,
    pub(crate) neighbors: Vec<NeighborConfig>,
    pub(crate) cluster: ClusterSettings,
    /// `cluster.state_file` joined to `state_dir`.
    pub(crate) cluster_state_path: PathBuf,
    /// `cluster.secret_file` joined to `state_dir`.
    pub(crate) secret_path: PathBuf,
    pub(crate) bootstrap: BootstrapSettings,
    pub(crate) nameserver: NameserverSettings,
    pub(crate) topology: TopologySettings,
    pub(crate) election: ElectionSettings,
    pub(crate) tree: TreeSettings,
    pub(crate) http: HttpSettings,
    pub(crate) storage: StorageSettings,
    pub(crate) data: DataPlaneSettings,
    pub(crate) log: LogSettings,
}

/// A rule broken by an otherwise well-typed configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Violation {
    /// Dotted key, `neighbors[2].id` for an array element.
    pub(crate) key: String,
    /// The value as it would be written in TOML.
    pub(crate) value: String,
    /// The rule.
    pub(crate) reason: String,
}

impl Violation {
    fn new(key: impl Into<String>, value: impl ToString, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

impl NodeConfig {
    /// The built-in defaults layer (no id: it must come from a file, the environment or a flag).
    pub(crate) fn defaults() -> Self {
        Self {
            id: 0,
            host: loopback(),
            bind_host: loopback(),
            control_port: None,
            data_port: None,
            http_port: None,
            admin_port: None,
            state_dir: None,
            neighbors: Vec::new(),
            cluster: ClusterSettings::default(),
            bootstrap: BootstrapSettings::default(),
            nameserver: NameserverSettings::default(),
            topology: TopologySettings::default(),
            election: ElectionSettings::default(),
            tree: TreeSettings::default(),
            http: HttpSettings::default(),
            storage: StorageSettings::default(),
            data: DataPlaneSettings::default(),
            log: LogSettings::default(),
        }
    }

    /// Fills the derived values and checks every rule; the first broken rule is returned.
    pub(crate) fn resolve(&self) -> Result<ResolvedConfig, Violation> {
        if self.id == 0 {
            return Err(Violation::new("id", self.id, "must be >= 1"));
        }
        let control_port = port_or_derived(
            "control_port",
            self.control_port,
            CONTROL_PORT_BASE,
            self.id,
        )?;
        let data_port = port_or_derived("data_port", self.data_port, DATA_PORT_BASE, self.id)?;
        let http_port = port_or_derived("http_port", self.http_port, HTTP_PORT_BASE, self.id)?;
        let admin_port = port_or_derived("admin_port", self.admin_port, ADMIN_PORT_BASE, self.id)?;
        let ports = [
            ("control_port", control_port),
            ("data_port", data_port),
            ("http_port", http_port),
            ("admin_port", admin_port),
        ];
        for (index, (key, port)) in ports.iter().enumerate() {
            if let Some((other, _)) = ports[..index].iter().find(|(_, earlier)| earlier == port) {
                return Err(Violation::new(
                    *key,
                    port,
                    format!("must differ from {other}"),
                ));
            }
        }
        for (key, host) in [("host", &self.host), ("bind_host", &self.bind_host)] {
            if host.trim().is_empty() {
                return Err(Violation::new(key, "\"\"", "must not be empty"));
            }
        }
        self.check_timings()?;
        self.check_neighbors()?;
        check_cluster_size(self.cluster.size, self.neighbors.len())?;
        if !(4..=31).contains(&self.storage.bcrypt_cost) {
            return Err(Violation::new(
                "storage.bcrypt_cost",
                self.storage.bcrypt_cost,
                "must be in 4..=31",
            ));
        }
        self.log.directives().map_err(|error| {
            let key = match &error {
                chat_ops::LoggingError::BadLevel { key, .. } if key != "level" => {
                    format!("log.subsystems.{key}")
                }
                _ => "log.level".to_owned(),
            };
            Violation::new(key, format!("{:?}", self.log.level), error.to_string())
        })?;

        let state_dir = self
            .state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("/var/lib/chat-system/node-{}", self.id)));
        let db_path = state_dir.join(&self.storage.db_file);
        let cluster_state_path = state_dir.join(&self.cluster.state_file);
        let secret_path = state_dir.join(&self.cluster.secret_file);
        let public_address = self
            .http
            .public_address
            .clone()
            .unwrap_or_else(|| format!("http://{}:{http_port}", self.host));
        Ok(ResolvedConfig {
            id: self.id,
            host: self.host.clone(),
            bind_host: self.bind_host.clone(),
            control_port,
            data_port,
            http_port,
            admin_port,
            state_dir,
            db_path,
            public_address,
            neighbors: self.neighbors.clone(),
            cluster: self.cluster.clone(),
            cluster_state_path,
            secret_path,
            bootstrap: self.bootstrap.clone(),
            nameserver: self.nameserver.clone(),
            topology: self.topology.clone(),
            election: self.election.clone(),
            tree: self.tree.clone(),
            http: self.http.clone(),
            storage: self.storage.clone(),
            data: self.data.clone(),
            log: self.log.clone(),
        })
    }

    fn check_timings(&self) -> Result<(), Violation> {
        let topology = &self.topology;
        let durations = [
            ("topology.heartbeat_ms", topology.heartbeat_ms),
            ("topology.liveness_timeout_ms", topology.liveness_timeout_ms),
            (
                "topology.join_backoff_initial_ms",
                topology.join_backoff_initial_ms,
            ),
            ("topology.join_backoff_max_ms", topology.join_backoff_max_ms),
            ("topology.link_down_grace_ms", topology.link_down_grace_ms),
            ("election.timeout_ms", self.election.timeout_ms),
            ("election.join_wait_ms", self.election.join_wait_ms),
            ("election.heal_timeout_ms", self.election.heal_timeout_ms),
            ("election.writer_lease_ms", self.election.writer_lease_ms),
            ("tree.epoch_tick_ms", self.tree.epoch_tick_ms),
            ("bootstrap.timeout_ms", self.bootstrap.timeout_ms),
            ("nameserver.lease_ttl_ms", self.nameserver.lease_ttl_ms),
            ("nameserver.renew_ms", self.nameserver.renew_ms),
            ("http.read_timeout_ms", self.http.read_timeout_ms),
            ("http.write_timeout_ms", self.http.write_timeout_ms),
            ("http.session_ttl_s", self.http.session_ttl_s),
            ("http.request_timeout_ms", self.http.request_timeout_ms),
        ];
        if let Some((key, _)) = durations.iter().find(|(_, value)| *value == 0) {
            return Err(Violation::new(*key, 0, "must be > 0"));
        }
        let orderings = [
            (
                "topology.liveness_timeout_ms",
                topology.liveness_timeout_ms,
                "topology.heartbeat_ms",
                topology.heartbeat_ms,
            ),
            (
                "topology.join_backoff_max_ms",
                topology.join_backoff_max_ms,
                "topology.join_backoff_initial_ms",
                topology.join_backoff_initial_ms.saturating_sub(1),
            ),
            (
                "nameserver.lease_ttl_ms",
                self.nameserver.lease_ttl_ms,
                "nameserver.renew_ms",
                self.nameserver.renew_ms,
            ),
            // A member promises not to back another writer for one lease after answering a
            // probe; the old writer must lose its lease before anyone declares it dead.
            (
                "topology.liveness_timeout_ms",
                topology.liveness_timeout_ms,
                "election.writer_lease_ms",
                self.election.writer_lease_ms,
            ),
            // The root renews its lease once per epoch tick (each tick is a probe).
            (
                "election.writer_lease_ms",
                self.election.writer_lease_ms,
                "tree.epoch_tick_ms",
                self.tree.epoch_tick_ms,
            ),
        ];
        for (key, value, smaller_key, smaller) in orderings {
            if value <= smaller {
                return Err(Violation::new(
                    key,
                    value,
                    format!("must exceed {smaller_key} ({smaller})"),
                ));
            }
        }
        let heal_floor = self.tree.epoch_tick_ms.saturating_add(HEAL_MARGIN_MS);
        if self.election.heal_timeout_ms <= heal_floor {
            return Err(Violation::new(
                "election.heal_timeout_ms",
                self.election.heal_timeout_ms,
                format!(
                    "must exceed tree.epoch_tick_ms ({}) + {HEAL_MARGIN_MS}: an orphan is \
                     adopted only by a node that has seen a fresher epoch",
                    self.tree.epoch_tick_ms
                ),
            ));
        }
        if topology.stranger_heartbeats_before_rejoin == 0 {
            return Err(Violation::new(
                "topology.stranger_heartbeats_before_rejoin",
                0,
                "must be >= 1",
            ));
        }
        Ok(())
    }

    fn check_neighbors(&self) -> Result<(), Violation> {
        let mut seen = BTreeSet::new();
        for (index, neighbor) in self.neighbors.iter().enumerate() {
            let key = |field: &str| format!("neighbors[{index}].{field}");
            if neighbor.id == 0 {
                return Err(Violation::new(key("id"), 0, "must be >= 1"));
            }
            if neighbor.id == self.id {
                return Err(Violation::new(
                    key("id"),
                    neighbor.id,
                    "a node is not its own neighbour",
                ));
            }
            if !seen.insert(neighbor.id) {
                return Err(Violation::new(key("id"), neighbor.id, "listed twice"));
            }
            if neighbor.host.trim().is_empty() {
                return Err(Violation::new(key("host"), "\"\"", "must not be empty"));
            }
            check_port_range(&key("port"), u64::from(neighbor.port))?;
        }
        Ok(())
    }
}

/// A node with neighbours is not alone: it must know how many nodes make a majority.
pub(crate) fn check_cluster_size(size: u64, neighbors: usize) -> Result<(), Violation> {
    if size == 0 {
        return Err(Violation::new("cluster.size", 0, "must be >= 1"));
    }
    if neighbors > 0 && size == 1 {
        return Err(Violation::new(
            "cluster.size",
            size,
            format!(
                "this node has {neighbors} neighbour(s), so it is not a lone node: set \
                 cluster.size to the number of nodes in the cluster (writes need a majority of it)"
            ),
        ));
    }
    let at_least = u64::try_from(neighbors)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    if size < at_least {
        return Err(Violation::new(
            "cluster.size",
            size,
            format!("must count this node and its {neighbors} neighbours (>= {at_least})"),
        ));
    }
    Ok(())
}

/// What `chat-node config` and the start-up log say about a cluster size, if anything.
pub(crate) fn size_warning(size: u64) -> Option<&'static str> {
    (size == 2).then_some(
        "cluster.size = 2: a two-node cluster cannot survive the loss of either node for \
         writes (a majority of 2 is both); use 3 or more nodes",
    )
}

fn port_or_derived(key: &str, explicit: Option<u16>, base: u64, id: u64) -> Result<u16, Violation> {
    match explicit {
        Some(port) => {
            check_port_range(key, u64::from(port))?;
            Ok(port)
        }
        None => {
            let derived = base.saturating_add(id);
            u16::try_from(derived).map_err(|_| {
                Violation::new(
                    key,
                    derived,
                    format!("derived as {base} + id is past 65535; set {key} explicitly"),
                )
            })
        }
    }
}

fn check_port_range(key: &str, port: u64) -> Result<(), Violation> {
    if (1024..=65_535).contains(&port) {
        Ok(())
    } else {
        Err(Violation::new(key, port, "must be in 1024..=65535"))
    }
}

/// Values given as command-line flags: the top layer.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct FlagOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) bind_host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) control_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) data_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) http_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) admin_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) state_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) log: Option<LogLevelOverride>,
}

/// `--log-level`: only `log.level`, so configured subsystem levels survive the merge.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LogLevelOverride {
    pub(crate) level: String,
}

/// Where the configuration files are.
#[derive(Debug, Clone)]
pub(crate) enum ConfigFiles {
    /// `<dir>/node.toml` then `<dir>/node.d/<id>.toml` (the packaged layout under /etc).
    Packaged(PathBuf),
    /// `--config PATH`: this file alone.
    Explicit(PathBuf),
}

impl ConfigFiles {
    /// `--config PATH` if given, else the packaged layout in `/etc/chat-system`.
    pub(crate) fn from_flag(config: Option<&Path>) -> Self {
        match config {
            Some(path) => Self::Explicit(path.to_owned()),
            None => Self::Packaged(PathBuf::from(ETC_DIR)),
        }
    }

    fn paths(&self, id: Option<u64>) -> Vec<PathBuf> {
        match self {
            Self::Explicit(path) => vec![path.clone()],
            Self::Packaged(dir) => {
                let mut paths = vec![dir.join("node.toml")];
                if let Some(id) = id {
                    paths.push(dir.join("node.d").join(format!("{id}.toml")));
                }
                paths
            }
        }
    }
}

/// A loaded configuration with the figment kept for "where did this come from".
#[derive(Debug)]
pub(crate) struct LoadedConfig {
    pub(crate) figment: Figment,
    pub(crate) config: NodeConfig,
    pub(crate) resolved: ResolvedConfig,
}

/// Loads, extracts and validates the configuration; errors name the key, the value and where it
/// came from.
pub(crate) fn load(
    files: &ConfigFiles,
    flags: &FlagOverrides,
) -> Result<LoadedConfig, ConfigError> {
    let defaults = NodeConfig::defaults();
    let build = |paths: &[PathBuf]| {
        layered_config::layered(
            &defaults,
            paths,
            ENV_PREFIX,
            layered_config::command_line(flags),
        )
    };
    // The per-node file is named by the id, which may itself come from node.toml or the
    // environment: find the id first without it.
    let id = match flags.id {
        Some(id) => Some(id),
        None => build(&files.paths(None)).extract_inner::<u64>("id").ok(),
    };
    let figment = build(&files.paths(id));
    let config: NodeConfig = layered_config::extract(&figment)?;
    let resolved = config
        .resolve()
        .map_err(|violation| violation_error(&figment, violation))?;
    Ok(LoadedConfig {
        figment,
        config,
        resolved,
    })
}

fn violation_error(figment: &Figment, violation: Violation) -> ConfigError {
    // `neighbors[2].id` was set as part of the `neighbors` array: ask for that key's origin.
    let origin_key = violation.key.split('[').next().unwrap_or(&violation.key);
    let origin =
        layered_config::origin(figment, origin_key).or_else(|| derived_origin(&violation.key));
    ConfigError {
        problems: vec![Problem {
            key: violation.key,
            value: Some(violation.value),
            origin,
            reason: violation.reason,
        }],
    }
}

/// The origin of a value no layer set: the derivation rule.
pub(crate) fn derived_origin(key: &str) -> Option<String> {
    let rule = match key {
        "control_port" => "46000 + id",
        "data_port" => "50000 + id",
        "http_port" => "8080 + id",
        "admin_port" => "47000 + id",
        "state_dir" => "/var/lib/chat-system/node-<id>",
        _ => return None,
    };
    Some(format!("derived ({rule})"))
}

/// The effective configuration as TOML, derived values filled in, each key followed by a
/// comment saying where its value came from (`chat-node config`).
pub(crate) fn effective_toml(loaded: &LoadedConfig) -> Result<String, toml::ser::Error> {
    let resolved = &loaded.resolved;
    let mut effective = loaded.config.clone();
    effective.control_port = Some(resolved.control_port);
    effective.data_port = Some(resolved.data_port);
    effective.http_port = Some(resolved.http_port);
    effective.admin_port = Some(resolved.admin_port);
    effective.state_dir = Some(resolved.state_dir.clone());
    let table = toml::Table::try_from(&effective)?;
    let mut out = String::new();
    if let Some(warning) = size_warning(resolved.cluster.size) {
        out.push_str(&format!("# WARNING: {warning}\n\n"));
    }
    render_table(&mut out, &loaded.figment, "", &table);
    Ok(out)
}

fn render_table(out: &mut String, figment: &Figment, prefix: &str, table: &toml::Table) {
    let key_of = |name: &str| {
        if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}.{name}")
        }
    };
    let is_table_array = |value: &toml::Value| {
        value
            .as_array()
            .is_some_and(|items| !items.is_empty() && items.iter().all(toml::Value::is_table))
    };
    for (name, value) in table {
        if !value.is_table() && !is_table_array(value) {
            let line = format!("{name} = {value}");
            out.push_str(&format!(
                "{line:<40} # {}\n",
                origin_of(figment, &key_of(name))
            ));
        }
    }
    for (name, value) in table {
        if let Some(items) = value.as_array().filter(|_| is_table_array(value)) {
            let key = key_of(name);
            for item in items.iter().filter_map(toml::Value::as_table) {
                out.push_str(&format!(
                    "\n{:<40} # {}\n",
                    format!("[[{key}]]"),
                    origin_of(figment, &key)
                ));
                for (field, field_value) in item {
                    out.push_str(&format!("{field} = {field_value}\n"));
                }
            }
        }
    }
    for (name, value) in table {
        if let Some(inner) = value.as_table() {
            let key = key_of(name);
            out.push_str(&format!("\n[{key}]\n"));
            render_table(out, figment, &key, inner);
        }
    }
}

fn origin_of(figment: &Figment, key: &str) -> String {
    layered_config::origin(figment, key)
        .or_else(|| derived_origin(key))
        .unwrap_or_else(|| "built-in defaults".to_owned())
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail closures must return figment::Error
mod tests {
    use figment::Jail;

    use super::*;

    fn packaged(jail: &Jail) -> ConfigFiles {
        ConfigFiles::Packaged(jail.directory().to_owned())
    }

    fn error_text(files: &ConfigFiles, flags: &FlagOverrides) -> String {
        match load(files, flags) {
            Ok(loaded) => panic!("expected an error, loaded {:?}", loaded.resolved),
            Err(error) => error.to_string(),
        }
    }

    fn with_id(id: u64) -> FlagOverrides {
        FlagOverrides {
            id: Some(id),
            ..FlagOverrides::default()
        }
    }

    #[test]
    fn only_the_id_is_needed_and_the_rest_derives_from_it() {
        Jail::expect_with(|jail| {
            let loaded = load(&packaged(jail), &with_id(4)).expect("loads");
            let resolved = loaded.resolved;
            assert_eq!(resolved.id, 4);
            assert_eq!(
                (
                    resolved.control_port,
                    resolved.data_port,
                    resolved.http_port,
                    resolved.admin_port
                ),
                (46_004, 50_004, 8_084, 47_004)
            );
            assert_eq!(
                resolved.state_dir,
                PathBuf::from("/var/lib/chat-system/node-4")
            );
            assert_eq!(
                resolved.db_path,
                PathBuf::from("/var/lib/chat-system/node-4/chat.db")
            );
            assert_eq!(resolved.public_address, "http://127.0.0.1:8084");
            assert_eq!(resolved.topology, TopologySettings::default());
            Ok(())
        });
    }

    #[test]
    fn missing_id_is_reported() {
        Jail::expect_with(|jail| {
            let text = error_text(&packaged(jail), &FlagOverrides::default());
            assert!(text.contains("`id`") && text.contains("required"), "{text}");
            Ok(())
        });
    }

    #[test]
    fn layers_apply_in_order_node_toml_node_d_env_flags() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "node.toml",
                "id = 4\nhost = \"10.0.0.4\"\n[cluster]\nsize = 3\n[topology]\nheartbeat_ms = 100\nliveness_timeout_ms = 1200",
            )?;
            jail.create_dir("node.d")?;
            jail.create_file("node.d/4.toml", "[topology]\nheartbeat_ms = 200\n[[neighbors]]\nid = 5\nhost = \"10.0.0.5\"\nport = 46005")?;
            jail.create_file("node.d/5.toml", "http_port = 9999")?;

            // The id comes from node.toml, and selects node.d/4.toml (not 5.toml).
            let loaded = load(&packaged(jail), &FlagOverrides::default()).expect("loads");
            let resolved = &loaded.resolved;
            assert_eq!(resolved.host, "10.0.0.4");
            assert_eq!(
                resolved.topology.heartbeat_ms, 200,
                "node.d overrides node.toml"
            );
            assert_eq!(resolved.topology.liveness_timeout_ms, 1200);
            assert_eq!(resolved.http_port, 8_084);
            assert_eq!(resolved.neighbors.len(), 1);

            jail.set_env("CHAT_NODE_TOPOLOGY__HEARTBEAT_MS", "300");
            jail.set_env("CHAT_NODE_CONTROL_PORT", "46100");
            let env = load(&packaged(jail), &FlagOverrides::default()).expect("loads");
            assert_eq!(
                env.resolved.topology.heartbeat_ms, 300,
                "environment overrides files"
            );
            assert_eq!(env.resolved.control_port, 46_100);

            let flags = FlagOverrides {
                control_port: Some(46_200),
                log: Some(LogLevelOverride {
                    level: "debug".into(),
                }),
                ..FlagOverrides::default()
            };
            let flagged = load(&packaged(jail), &flags).expect("loads");
            assert_eq!(
                flagged.resolved.control_port, 46_200,
                "flags override the environment"
            );
            assert_eq!(flagged.resolved.log.level, "debug");
            Ok(())
        });
    }

    #[test]
    fn the_data_section_comes_from_files_and_the_environment() {
        Jail::expect_with(|jail| {
            jail.create_file("node.toml", "id = 4\n[data]\nread_wait_ms = 20")?;
            let loaded = load(&packaged(jail), &FlagOverrides::default()).expect("loads");
            assert_eq!(
                loaded.resolved.data,
                DataPlaneSettings {
                    replica_reads: true,
                    read_wait_ms: 20,
                }
            );
            // `data_port` (a top-level key) and the `[data]` section do not collide.
            jail.set_env("CHAT_NODE_DATA__REPLICA_READS", "false");
            jail.set_env("CHAT_NODE_DATA_PORT", "46300");
            let env = load(&packaged(jail), &FlagOverrides::default()).expect("loads");
            assert!(!env.resolved.data.replica_reads);
            assert_eq!(env.resolved.data_port, 46_300);
            Ok(())
        });
    }

    #[test]
    fn explicit_config_replaces_the_packaged_files() {
        Jail::expect_with(|jail| {
            jail.create_file("node.toml", "id = 4\nhttp_port = 9001")?;
            jail.create_file("elsewhere.toml", "id = 7")?;
            let files = ConfigFiles::Explicit(jail.directory().join("elsewhere.toml"));
            let loaded = load(&files, &FlagOverrides::default()).expect("loads");
            assert_eq!(loaded.resolved.id, 7);
            assert_eq!(
                loaded.resolved.http_port, 8_087,
                "the packaged node.toml is not read"
            );
            Ok(())
        });
    }

    #[test]
    fn bad_type_names_key_value_and_file() {
        Jail::expect_with(|jail| {
            jail.create_file("node.toml", "id = 4\n[topology]\nheartbeat_ms = \"abc\"")?;
            let text = error_text(&packaged(jail), &FlagOverrides::default());
            assert!(text.contains("`topology.heartbeat_ms` = \"abc\""), "{text}");
            assert!(text.contains("node.toml"), "{text}");
            assert!(text.contains("expected u64"), "{text}");
            Ok(())
        });
    }

    #[test]
    fn typo_in_a_key_is_an_error() {
        Jail::expect_with(|jail| {
            jail.create_file("node.toml", "id = 4\n[topology]\nheartbeat = 100")?;
            let text = error_text(&packaged(jail), &FlagOverrides::default());
            assert!(
                text.contains("`topology.heartbeat`") && text.contains("unknown key"),
                "{text}"
            );
            Ok(())
        });
    }

    #[test]
    fn privileged_port_is_rejected_naming_the_variable() {
        Jail::expect_with(|jail| {
            jail.set_env("CHAT_NODE_DATA_PORT", "80");
            let text = error_text(&packaged(jail), &with_id(4));
            assert!(text.contains("`data_port` = 80"), "{text}");
            assert!(
                text.contains("environment variable CHAT_NODE_DATA_PORT"),
                "{text}"
            );
            assert!(text.contains("1024..=65535"), "{text}");
            Ok(())
        });
    }

    #[test]
    fn control_and_data_ports_must_differ() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "node.toml",
                "id = 4\ncontrol_port = 46004\ndata_port = 46004",
            )?;
            let text = error_text(&packaged(jail), &FlagOverrides::default());
            assert!(text.contains("`data_port` = 46004"), "{text}");
            assert!(text.contains("must differ from control_port"), "{text}");
            assert!(text.contains("node.toml"), "{text}");
            Ok(())
        });
    }

    #[test]
    fn heartbeat_must_be_shorter_than_liveness() {
        Jail::expect_with(|jail| {
            jail.create_file("node.toml", "id = 4\n[topology]\nheartbeat_ms = 2000")?;
            let text = error_text(&packaged(jail), &FlagOverrides::default());
            assert!(
                text.contains("`topology.liveness_timeout_ms` = 1000"),
                "{text}"
            );
            assert!(text.contains("must exceed topology.heartbeat_ms"), "{text}");
            Ok(())
        });
    }

    #[test]
    fn heal_timeout_must_exceed_the_epoch_tick_and_a_margin() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "node.toml",
                "id = 4\n[tree]\nepoch_tick_ms = 300\n[election]\nheal_timeout_ms = 350",
            )?;
            let text = error_text(&packaged(jail), &FlagOverrides::default());
            assert!(text.contains("`election.heal_timeout_ms` = 350"), "{text}");
            assert!(text.contains("tree.epoch_tick_ms (300) + 100"), "{text}");
            assert!(text.contains("node.toml"), "{text}");
            Ok(())
        });
    }

    #[test]
    fn writer_lease_must_exceed_the_epoch_tick() {
        Jail::expect_with(|jail| {
            jail.set_env("CHAT_NODE_ELECTION__WRITER_LEASE_MS", "100");
            let text = error_text(&packaged(jail), &with_id(4));
            assert!(text.contains("`election.writer_lease_ms` = 100"), "{text}");
            assert!(
                text.contains("must exceed tree.epoch_tick_ms (100)"),
                "{text}"
            );
            Ok(())
        });
    }

    #[test]
    fn writer_lease_must_be_shorter_than_liveness() {
        Jail::expect_with(|jail| {
            jail.set_env("CHAT_NODE_ELECTION__WRITER_LEASE_MS", "1500");
            let text = error_text(&packaged(jail), &with_id(4));
            assert!(
                text.contains("`topology.liveness_timeout_ms` = 1000"),
                "{text}"
            );
            assert!(
                text.contains("must exceed election.writer_lease_ms (1500)"),
                "{text}"
            );
            Ok(())
        });
    }

    #[test]
    fn neighbours_with_cluster_size_one_are_refused() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "node.toml",
                "id = 4\n[[neighbors]]\nid = 3\nhost = \"h\"\nport = 46003",
            )?;
            let text = error_text(&packaged(jail), &FlagOverrides::default());
            assert!(text.contains("`cluster.size` = 1"), "{text}");
            assert!(text.contains("not a lone node"), "{text}");

            jail.set_env("CHAT_NODE_CLUSTER__SIZE", "3");
            let loaded = load(&packaged(jail), &FlagOverrides::default()).expect("loads");
            assert_eq!(loaded.resolved.cluster.size, 3);
            assert_eq!(
                loaded.resolved.cluster_state_path,
                PathBuf::from("/var/lib/chat-system/node-4/control-state.json")
            );
            Ok(())
        });
    }

    #[test]
    fn config_output_warns_that_two_nodes_do_not_survive_a_loss() {
        Jail::expect_with(|jail| {
            let warning = "cannot survive the loss of either node for writes";
            jail.set_env("CHAT_NODE_CLUSTER__SIZE", "2");
            let two = load(&packaged(jail), &with_id(4)).expect("loads");
            let text = effective_toml(&two).expect("renders");
            assert!(
                text.starts_with("# WARNING:") && text.contains(warning),
                "{text}"
            );
            jail.set_env("CHAT_NODE_CLUSTER__SIZE", "3");
            let three = load(&packaged(jail), &with_id(4)).expect("loads");
            let text = effective_toml(&three).expect("renders");
            assert!(!text.contains(warning), "{text}");
            Ok(())
        });
    }

    #[test]
    fn zero_timeout_is_rejected() {
        Jail::expect_with(|jail| {
            jail.set_env("CHAT_NODE_TREE__EPOCH_TICK_MS", "0");
            let text = error_text(&packaged(jail), &with_id(4));
            assert!(text.contains("`tree.epoch_tick_ms` = 0"), "{text}");
            assert!(text.contains("CHAT_NODE_TREE__EPOCH_TICK_MS"), "{text}");
            Ok(())
        });
    }

    #[test]
    fn self_as_neighbour_is_rejected() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "node.toml",
                "id = 4\n[[neighbors]]\nid = 3\nhost = \"h\"\nport = 46003\n[[neighbors]]\nid = 4\nhost = \"h\"\nport = 46004",
            )?;
            let text = error_text(&packaged(jail), &FlagOverrides::default());
            assert!(text.contains("`neighbors[1].id` = 4"), "{text}");
            assert!(text.contains("node.toml"), "{text}");
            Ok(())
        });
    }

    #[test]
    fn derived_port_past_65535_asks_for_an_explicit_port() {
        Jail::expect_with(|jail| {
            let text = error_text(&packaged(jail), &with_id(15_600));
            assert!(text.contains("`data_port` = 65600"), "{text}");
            assert!(text.contains("set data_port explicitly"), "{text}");
            assert!(text.contains("derived"), "{text}");
            Ok(())
        });
    }

    #[test]
    fn bad_log_level_is_named() {
        Jail::expect_with(|jail| {
            jail.create_file("node.toml", "id = 4\n[log.subsystems]\nelection = \"loud\"")?;
            let text = error_text(&packaged(jail), &FlagOverrides::default());
            assert!(text.contains("log.subsystems.election"), "{text}");
            assert!(text.contains("loud"), "{text}");
            Ok(())
        });
    }

    /// The one-host quick start runs five nodes.
    const SHIPPED_CLUSTER_SIZE: u64 = 5;

    /// The shipped file documents every key as a commented-out line (`#key = value`, no space
    /// after `#`; prose comments have one). Uncommented, it must load and mean the defaults.
    #[test]
    fn shipped_node_toml_documents_the_defaults() {
        Jail::expect_with(|jail| {
            let shipped = include_str!("../../../etc/chat-system/node.toml");
            let uncommented: String = shipped
                .lines()
                .map(|line| match line.strip_prefix('#') {
                    Some(rest) if !rest.starts_with([' ', '#']) && !rest.is_empty() => rest,
                    _ => line,
                })
                .collect::<Vec<_>>()
                .join("\n");
            jail.create_file("uncommented.toml", &uncommented)?;
            let files = ConfigFiles::Explicit(jail.directory().join("uncommented.toml"));
            let mut documented = load(&files, &FlagOverrides::default())
                .expect("the uncommented shipped file loads")
                .resolved;
            let plain = load(
                &ConfigFiles::Explicit(jail.directory().join("absent.toml")),
                &with_id(documented.id),
            )
            .expect("defaults load")
            .resolved;
            // Examples rather than defaults: neighbours, a public address; and the cluster
            // size, the one value the shipped file sets.
            assert!(
                !documented.neighbors.is_empty(),
                "node.toml shows a [[neighbors]] example"
            );
            assert_eq!(documented.cluster.size, SHIPPED_CLUSTER_SIZE);
            documented.neighbors.clear();
            documented.cluster.size = plain.cluster.size;
            documented.http.public_address = None;
            documented.public_address = plain.public_address.clone();
            assert_eq!(documented, plain);

            let as_shipped = load(
                &ConfigFiles::Explicit(PathBuf::from(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../../etc/chat-system/node.toml"
                ))),
                &with_id(4),
            )
            .expect("the shipped file loads as is");
            let mut expected = NodeConfig::defaults();
            expected.id = 4;
            expected.cluster.size = SHIPPED_CLUSTER_SIZE;
            assert_eq!(
                as_shipped.config, expected,
                "every key but cluster.size is commented out as shipped"
            );
            Ok(())
        });
    }

    #[test]
    fn effective_toml_names_each_origin_and_parses_back() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "node.toml",
                "[cluster]\nsize = 3\n[topology]\nheartbeat_ms = 100\n[[neighbors]]\nid = 5\nhost = \"h\"\nport = 46005",
            )?;
            jail.set_env("CHAT_NODE_HTTP_PORT", "9000");
            let loaded = load(&packaged(jail), &with_id(4)).expect("loads");
            let text = effective_toml(&loaded).expect("renders");
            let line = |key: &str| {
                text.lines()
                    .find(|line| line.starts_with(&format!("{key} = ")))
                    .unwrap_or_else(|| panic!("no {key} in {text}"))
                    .to_owned()
            };
            assert!(line("id").ends_with("# command-line flags"), "{text}");
            assert!(
                line("heartbeat_ms").contains("= 100")
                    && line("heartbeat_ms").ends_with("node.toml"),
                "{text}"
            );
            assert!(
                line("http_port").ends_with("# environment variable CHAT_NODE_HTTP_PORT"),
                "{text}"
            );
            assert!(
                line("control_port").contains("46004")
                    && line("control_port").ends_with("derived (46000 + id)"),
                "{text}"
            );
            assert!(
                line("liveness_timeout_ms").ends_with("# built-in defaults"),
                "{text}"
            );
            assert!(text.contains("[[neighbors]]"), "{text}");
            // The output is itself a usable config file.
            jail.create_file("effective.toml", &text)?;
            let again = load(
                &ConfigFiles::Explicit(jail.directory().join("effective.toml")),
                &FlagOverrides::default(),
            )
            .expect("the printed configuration loads");
            assert_eq!(again.resolved, loaded.resolved);
            Ok(())
        });
    }
}
