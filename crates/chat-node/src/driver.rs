//! The node driver: moves bytes between the ZeroMQ transport and the control plane's state
//! machines, with real time.
//!
//! One task owns the [`Node`] state machine. Each turn of its loop takes one input: the
//! machine's due timers if any are due (always before the next message, so a steady stream of
//! messages cannot starve heartbeats), else whichever comes first of a transport event, the
//! next deadline, or shutdown; feeds it in; then drains every output (events first, so a
//! `Connect` reaches the transport before the JOIN that needs it; then transmits) and
//! publishes the status. It makes no protocol decision of its own, and awaits no network I/O:
//! anything slow (nameserver leases) runs in tasks of its own that the loop only signals.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chat_control::clock::LamportClock;
use chat_control::topology::{NeighborState as TopologyNeighborState, TopologyConfig};
use chat_control::{ElectionKey, Node, NodeConfig, NodeEvent, Transmit};
use chat_transport::{Transport, TransportConfig, TransportEvent, TransportHandle};
use chat_wire::{Envelope, NodeId};
use tokio::sync::watch;

use crate::config::{NeighborConfig, ResolvedConfig};
use crate::durable::DurableKey;
use crate::lease::InputLease;
use crate::metrics::{DropReason, Metrics};
use crate::status::{ElectionStatus, NeighborState, NeighborStatus, NodeStatus, QuorumStatus};
use crate::trace;

/// The uptime in `/status` is refreshed at least this often when nothing else happens.
const STATUS_REFRESH: Duration = Duration::from_millis(500);

/// Runs the node until `shutdown` completes.
pub(crate) async fn run(
    config: ResolvedConfig,
    clock: LamportClock,
    status: watch::Sender<NodeStatus>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    tokio::pin!(shutdown);
    // The term never goes back, also in what `/status` shows while the node starts.
    let initial_term = crate::cluster_state::load_term(&config.cluster_state_path)?;
    status.send_modify(|status| status.term = initial_term);
    // The secret first: the bootstrap only answers members.
    let secret = chat_secret::ClusterSecret::load(&config.secret_path).map_err(|error| {
        BadConfig(format!(
            "`cluster.secret_file` = {:?}: {error}",
            config.secret_path.display().to_string()
        ))
    })?;
    let service_keys = secret.keys(chat_secret::Purpose::Services);
    // Discovery may wait for the bootstrap; a stop asked for meanwhile ends the node cleanly.
    let neighbors = tokio::select! {
        neighbors = crate::discovery::neighbors(&config, &service_keys) => neighbors?,
        () = &mut shutdown => return Ok(()),
    };
    // Static neighbours were checked with the configuration; the bootstrap's are known now.
    crate::config::check_cluster_size(config.cluster.size, neighbors.len()).map_err(
        |violation| {
            BadConfig(format!(
                "`{}` = {} {} (the bootstrap service assigned neighbours {:?})",
                violation.key,
                violation.value,
                violation.reason,
                neighbors.iter().map(|n| n.id).collect::<Vec<_>>()
            ))
        },
    )?;
    if let Some(warning) = crate::config::size_warning(config.cluster.size) {
        tracing::warn!(target: "main", subsystem = "main", "{warning}");
    }
    let store = open_store(&config).await?;
    let stored_key = store.election_key();
    tracing::info!(
        target: "election",
        subsystem = "election",
        term = initial_term,
        path = %config.cluster_state_path.display(),
        "term restored"
    );

    let bind = format!("tcp://{}:{}", config.bind_host, config.control_port);
    // Sealed with the wire keys, and bounded for control messages (a few hundred bytes each).
    let control = TransportConfig::control_plane(config.id, bind.clone())
        .with_security(Some(secret.keys(chat_secret::Purpose::Wire)));
    let (transport, mut events) = Transport::start(control)
        .with_context(|| format!("cannot open the control-plane socket {bind}"))?;

    let now = Instant::now();
    // The node owns its Lamport clock; `clock` only lets the log lines read it.
    let mut node = Node::with_clock(node_config(&config, initial_term), clock, now);
    // The election prefers the most up-to-date node, so a replica that outlived the writer
    // takes over with everything it has: the (term, epoch) of its last durable log entry.
    let stored = DurableKey {
        last_term: stored_key.term,
        epoch: stored_key.epoch,
    };
    apply_durable_key(&mut node, Instant::now(), stored);
    let (durable_keys, mut durable_updates) = crate::durable::channel(stored);
    for NeighborConfig { id, host, port } in &neighbors {
        node.add_neighbor(now, *id, host.clone(), *port);
    }
    let (tree_view, tree_updates) = watch::channel(crate::data::TreeView::default());
    let (http_serving, http_updates) = watch::channel(None::<String>);
    let (data_stop, data_stopping) = watch::channel(false);
    let stopped = |mut receiver: watch::Receiver<bool>| async move {
        let _ = receiver.wait_for(|stop| *stop).await;
    };
    let feed =
        chat_web::ChangeFeed::new(chat_web::feed::DEFAULT_RESUME_BUFFER, store.applied_epoch());
    let hasher = std::sync::Arc::new(
        chat_service::PasswordHasher::new(config.storage.bcrypt_cost)
            .map_err(|error| anyhow::anyhow!("cannot start the password hasher: {error}"))?,
    );
    let (data, data_task) = crate::data::start(
        crate::data::DataSettings {
            id: config.id,
            bind: format!("tcp://{}:{}", config.bind_host, config.data_port),
            wire_keys: secret.keys(chat_secret::Purpose::Wire),
            service: chat_service::ServiceConfig {
                bcrypt_cost: config.storage.bcrypt_cost,
                ..chat_service::ServiceConfig::default()
            },
            committer: chat_service::CommitterConfig::default(),
            request_timeout: Duration::from_millis(config.http.request_timeout_ms),
            read_wait: Duration::from_millis(config.data.read_wait_ms),
            replica_reads: config.data.replica_reads,
        },
        Arc::clone(&store),
        tree_updates.clone(),
        durable_keys.clone(),
        feed.clone(),
        stopped(data_stopping.clone()),
    )
    .await?;
    let proxy = crate::data::proxy::DataProxy::new(
        data.clone(),
        hasher,
        Duration::from_millis(config.http.request_timeout_ms),
    );
    let web_task = tokio::spawn(crate::web::run(
        crate::web::WebSettings {
            bind: format!("{}:{}", config.bind_host, config.http_port),
            public_url: config.public_address.clone(),
            config: config.http.web_config(),
            keys: secret.keys(chat_secret::Purpose::Sessions),
        },
        tree_updates,
        proxy,
        feed,
        http_serving,
        stopped(data_stopping),
    ));
    let mut data_status = data.status.clone();
    let mut driver = Driver {
        me: config.id,
        cluster_state_path: config.cluster_state_path.clone(),
        transport,
        metrics,
        status,
        started,
        lease: InputLease::new(&config, service_keys),
        links_up: BTreeSet::new(),
        tree_view,
        data_status: data.status.clone(),
        data_transport: data.transport.clone(),
        http_serving: http_updates.clone(),
        serving: false,
    };
    let mut http_updates = http_updates;
    tracing::info!(
        target: "main",
        subsystem = "main",
        neighbors = ?neighbors.iter().map(|n| n.id).collect::<Vec<_>>(),
        "control plane listening on {bind}"
    );

    let mut watchdog = Watchdog::from_env();
    let mut turn_started = Instant::now();
    loop {
        driver.drain(&mut node).await;
        driver
            .metrics
            .loop_turn(turn_started.elapsed().as_secs_f64());
        // Due timers first: a heartbeat or a liveness check never waits behind a backlog.
        let now = Instant::now();
        turn_started = now;
        watchdog.pet(now);
        if node.poll_timeout().is_some_and(|due| due <= now) {
            run_due_timers(&mut node, now);
            continue;
        }
        let wake = watchdog
            .next_due(now)
            .map_or(now + STATUS_REFRESH, |due| due.min(now + STATUS_REFRESH));
        let deadline = node.poll_timeout().map_or(wake, |at| at.min(wake));
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            () = tokio::time::sleep_until(deadline.into()) => {
                turn_started = Instant::now();
                node.handle_timeout(turn_started);
            }
            Ok(()) = http_updates.changed() => {
                turn_started = Instant::now();
                run_due_timers(&mut node, turn_started);
            }
            Ok(()) = data_status.changed() => {
                // The lease follows `writer_reachable`; the rest is only shown.
                turn_started = Instant::now();
                run_due_timers(&mut node, turn_started);
            }
            Ok(()) = durable_updates.changed() => {
                turn_started = Instant::now();
                run_due_timers(&mut node, turn_started);
                let key = *durable_updates.borrow_and_update();
                apply_durable_key(&mut node, turn_started, key);
            }
            event = events.recv() => {
                turn_started = Instant::now();
                run_due_timers(&mut node, turn_started);
                match event {
                    Some(event) => driver.handle_transport_event(&mut node, event),
                    None => anyhow::bail!("the control-plane transport stopped"),
                }
            }
        }
    }

    driver.lease.shutdown().await;
    data_stop.send_replace(true);
    if let Err(error) = web_task.await {
        tracing::warn!(target: "input", subsystem = "input", %error, "the HTTP task failed");
    }
    if let Err(error) = data_task.await {
        tracing::warn!(target: "data", subsystem = "data", %error, "the data-plane task failed");
    }
    driver.transport.shutdown().await;
    Ok(())
}

/// Runs the machine's timers if any is due. After a freeze (SIGSTOP) tokio can wake the loop
/// for a queued message before it fires the overdue sleep, so the message branches call this
/// first: a lapsed writer lease or liveness deadline is seen before any message is handled or
/// any status is published.
fn run_due_timers(node: &mut Node, now: Instant) {
    if node.poll_timeout().is_some_and(|due| due <= now) {
        node.handle_timeout(now);
    }
}

/// systemd's watchdog, fed from the control loop itself: a loop that stalls stops the
/// WATCHDOG=1 messages and systemd restarts the node. Sent every half `WATCHDOG_USEC` (as
/// sd_watchdog_enabled(3) advises); nothing when the unit sets no `WatchdogSec=`.
struct Watchdog {
    every: Option<Duration>,
    last: Option<Instant>,
}

impl Watchdog {
    fn from_env() -> Self {
        let every = sd_notify::watchdog_enabled().map(|timeout| timeout / 2);
        if let Some(every) = every {
            tracing::info!(target: "main", subsystem = "main", every_ms = millis(every), "systemd watchdog enabled");
        }
        Self { every, last: None }
    }

    /// When the next WATCHDOG=1 is due (`now` before the first), if the watchdog is on.
    fn next_due(&self, now: Instant) -> Option<Instant> {
        let every = self.every?;
        Some(self.last.map_or(now, |last| last + every))
    }

    /// Sends WATCHDOG=1 if it is due (a datagram on a local socket: it does not block).
    fn pet(&mut self, now: Instant) {
        if self.next_due(now).is_some_and(|due| due <= now) {
            self.last = Some(now);
            if let Err(error) = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]) {
                tracing::warn!(target: "main", subsystem = "main", %error, "cannot notify the systemd watchdog");
            }
        }
    }
}

/// A configuration the node found unusable while starting (exit code 2): its cluster secret
/// file is missing or malformed, or the bootstrap service gave it neighbours while its
/// configuration says it is alone (or counts fewer nodes than it has neighbours).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct BadConfig(String);

/// Read connections the store keeps open between reads.
const IDLE_READERS: usize = 32;

/// Opens the node's database (creating it and applying the migrations), so a bad state
/// directory stops start-up here rather than on the first write.
async fn open_store(config: &ResolvedConfig) -> anyhow::Result<Arc<chat_store::Store>> {
    let path = config.db_path.clone();
    let store = tokio::task::spawn_blocking(move || {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
        }
        // Replica reads and change notices run on the blocking pool, dozens at once under
        // load: with the store's default of 4 idle readers most reads opened a connection
        // and prepared every statement afresh.
        let options = chat_store::StoreOptions {
            idle_readers: IDLE_READERS,
            ..chat_store::StoreOptions::default()
        };
        chat_store::Store::open_with(&path, options)
            .with_context(|| format!("cannot open the database {}", path.display()))
    })
    .await
    .context("the database task failed")??;
    let key = store.election_key();
    tracing::info!(
        target: "storage",
        subsystem = "storage",
        data_epoch = store.applied_epoch(),
        last_term = key.term,
        last_epoch = key.epoch,
        path = %config.db_path.display(),
        "database opened"
    );
    Ok(Arc::new(store))
}

/// Hands the state machine the store's durable key (the election prefers the highest).
fn apply_durable_key(node: &mut Node, now: Instant, key: DurableKey) {
    node.set_election_key(
        now,
        ElectionKey {
            last_term: key.last_term,
            epoch: key.epoch,
        },
    );
}

/// The state machines' configuration, from the node's.
fn node_config(config: &ResolvedConfig, initial_term: u64) -> NodeConfig {
    // A fresh random number per process start lets neighbours tell a restart from a delayed
    // message.
    let incarnation = uuid::Uuid::new_v4().as_u64_pair().0;
    let mut node = NodeConfig::new(
        config.id,
        config.host.clone(),
        config.control_port,
        incarnation,
    );
    let topology = &config.topology;
    node.topology = TopologyConfig {
        heartbeat: Duration::from_millis(topology.heartbeat_ms),
        liveness_timeout: Duration::from_millis(topology.liveness_timeout_ms),
        join_backoff_initial: Duration::from_millis(topology.join_backoff_initial_ms),
        join_backoff_max: Duration::from_millis(topology.join_backoff_max_ms),
        stranger_heartbeats_before_rejoin: topology.stranger_heartbeats_before_rejoin,
        link_down_grace: Duration::from_millis(topology.link_down_grace_ms),
    };
    node.election_timeout = Duration::from_millis(config.election.timeout_ms);
    node.join_wait = Duration::from_millis(config.election.join_wait_ms);
    node.heal_timeout = Duration::from_millis(config.election.heal_timeout_ms);
    node.epoch_tick = Duration::from_millis(config.tree.epoch_tick_ms);
    node.writer_lease = Duration::from_millis(config.election.writer_lease_ms);
    node.cluster_size = usize::try_from(config.cluster.size).unwrap_or(usize::MAX);
    node.initial_term = initial_term;
    node.data_port = config.data_port;
    node.trace = true;
    node
}

struct Driver {
    me: NodeId,
    /// Where the term is persisted on every change (`[cluster] state_file`).
    cluster_state_path: std::path::PathBuf,
    transport: TransportHandle,
    metrics: Arc<Metrics>,
    status: watch::Sender<NodeStatus>,
    started: Instant,
    lease: InputLease,
    /// Peers whose connection from us is established, as the transport reports it.
    links_up: BTreeSet<NodeId>,
    /// What the data plane needs of the tree.
    tree_view: watch::Sender<crate::data::TreeView>,
    data_status: watch::Receiver<crate::data::DataStatus>,
    /// The data plane's transport, for its counters in `/metrics`.
    data_transport: TransportHandle,
    /// The input role's HTTP server's URL while it answers.
    http_serving: watch::Receiver<Option<String>>,
    /// Whether the nameserver lease is held.
    serving: bool,
}

impl Driver {
    fn handle_transport_event(&mut self, node: &mut Node, event: TransportEvent) {
        let now = Instant::now();
        match event {
            TransportEvent::Received { from, payload } => self.receive(node, now, from, &payload),
            TransportEvent::LinkDown { peer } => {
                tracing::debug!(target: "topology", subsystem = "topology", peer, "connection dropped");
                self.links_up.remove(&peer);
                node.handle_link_down(now, peer);
            }
            TransportEvent::LinkUp { peer } => {
                tracing::debug!(target: "topology", subsystem = "topology", peer, "connection up");
                self.links_up.insert(peer);
                node.handle_link_up(now, peer);
            }
        }
    }

    fn receive(&mut self, node: &mut Node, now: Instant, from: NodeId, payload: &[u8]) {
        let envelope = match Envelope::decode(payload) {
            Ok(envelope) => envelope,
            Err(error) => {
                self.metrics.dropped(DropReason::Undecodable);
                tracing::debug!(target: "transport", subsystem = "transport", from, %error, "dropped an undecodable frame");
                return;
            }
        };
        // The ZeroMQ identity is the authenticated-enough sender; a header that claims
        // another source or another destination is not for us.
        if envelope.header.source != from || envelope.header.destination != self.me {
            self.metrics.dropped(DropReason::Misaddressed);
            tracing::debug!(
                target: "transport",
                subsystem = "transport",
                from,
                source = envelope.header.source,
                destination = envelope.header.destination,
                "dropped a misaddressed frame"
            );
            return;
        }
        self.metrics.message_received(envelope.scope());
        node.handle_message(now, from, envelope.header.lamport, &envelope.body);
    }

    /// Drains every output of the state machine, then publishes the status.
    async fn drain(&mut self, node: &mut Node) {
        while let Some(event) = node.poll_event() {
            self.handle_node_event(event).await;
        }
        while let Some(transmit) = node.poll_transmit() {
            self.send(transmit);
        }
        self.publish(node);
        self.count_drops(node);
    }

    /// Brings the drop counters up to the totals the transport and the state machines keep.
    fn count_drops(&self, node: &Node) {
        let machines = node.stats();
        for (reason, total) in transport_drops(&self.transport.stats()) {
            self.metrics.dropped_total(reason, total);
        }
        for (reason, total) in [
            (DropReason::LamportJump, machines.lamport_jumps),
            (
                DropReason::ControlFromStranger,
                machines.control_from_strangers,
            ),
            (
                DropReason::UnexpectedHandshake,
                machines.topology.unexpected_handshakes,
            ),
            (
                DropReason::StrangerMessage,
                machines.topology.stranger_messages,
            ),
            (
                DropReason::StrangersOverLimit,
                machines.topology.strangers_over_limit,
            ),
            (
                DropReason::AbandonedHandshake,
                machines.topology.abandoned_handshakes,
            ),
        ] {
            self.metrics.dropped_total(reason, total);
        }
        // The data plane's transport, by the same reasons (its machine's counters are in
        // `/status` under `data.counters`).
        for (reason, total) in transport_drops(&self.data_transport.stats()) {
            self.metrics.data_dropped_total(reason, total);
        }
    }

    fn send(&mut self, Transmit { to, lamport, body }: Transmit) {
        let scope = body.scope();
        let envelope = Envelope::new(self.me, to, lamport, body);
        match self.transport.send(to, envelope.encode()) {
            Ok(()) => self.metrics.message_sent(scope),
            Err(error) => {
                self.metrics.dropped(DropReason::TransportClosed);
                tracing::debug!(target: "transport", subsystem = "transport", to, %error, "send dropped");
            }
        }
    }

    async fn handle_node_event(&mut self, event: NodeEvent) {
        match event {
            NodeEvent::Connect {
                id,
                host,
                control_port,
            } => {
                let endpoint = format!("tcp://{host}:{control_port}");
                if let Err(error) = self.transport.connect(id, endpoint.clone()) {
                    tracing::warn!(target: "topology", subsystem = "topology", id, %endpoint, %error, "cannot connect to neighbour");
                }
            }
            NodeEvent::LeaderChanged { leader, term } => {
                tracing::info!(target: "election", subsystem = "election", leader = ?leader, term, "leader changed");
            }
            NodeEvent::TermChanged { term } => {
                // Events are handled before the transmits of the same turn, so the term is on
                // disk before any message of it leaves: a restart never goes below it.
                tracing::info!(target: "election", subsystem = "election", term, "term changed");
                if let Err(error) = crate::cluster_state::store_term(&self.cluster_state_path, term)
                {
                    self.metrics.term_not_persisted();
                    tracing::error!(
                        target: "election",
                        subsystem = "election",
                        term,
                        path = %self.cluster_state_path.display(),
                        %error,
                        "cannot persist the term; a restart could go back to an older one"
                    );
                }
            }
            NodeEvent::WritableChanged { writable, term } => {
                tracing::info!(target: "tree", subsystem = "tree", writable, term, "writability changed");
            }
            NodeEvent::RolesChanged { old, new, .. } => {
                self.metrics.role_changed();
                tracing::info!(target: "tree", subsystem = "tree", %old, %new, "roles changed");
            }
            NodeEvent::Trace(step) => {
                trace::record(&step, &self.metrics);
            }
        }
    }

    fn publish(&mut self, node: &Node) {
        let now = Instant::now();
        let control = node.status();
        let neighbors = node
            .neighbors()
            .map(|n| NeighborStatus {
                id: n.id,
                state: match n.state {
                    TopologyNeighborState::On => NeighborState::On,
                    TopologyNeighborState::Off => NeighborState::Off,
                },
                link_up: self.links_up.contains(&n.id),
                last_seen_ms: n
                    .last_seen
                    .map(|seen| millis(now.saturating_duration_since(seen))),
            })
            .collect();
        let lamport = node.lamport();
        self.publish_tree(node, &control);
        let data = self.data_status.borrow().clone();
        let http_url = self.http_serving.borrow().clone();
        let ready = !control.roles.is_empty() && (!control.roles.input || http_url.is_some());
        let serving = ready && control.roles.input && data.writer_reachable;
        if serving != self.serving {
            self.serving = serving;
            self.lease.set_serving(serving);
        }
        self.status.send_if_modified(|status| {
            let next = NodeStatus {
                lamport,
                neighbors,
                leader: control.leader,
                roles: control
                    .roles
                    .names()
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
                parent: control.parent,
                children: control.children.clone(),
                routes: control.routes.downstream.clone(),
                tree_epoch: control.tree_epoch,
                term: control.term,
                quorum: QuorumStatus {
                    size: u64::try_from(control.quorum.size).unwrap_or(u64::MAX),
                    have: u64::try_from(control.quorum.have).unwrap_or(u64::MAX),
                    writable: control.quorum.writable,
                },
                election: control.election.map(|(run, round)| ElectionStatus {
                    run: run.to_string(),
                    round,
                }),
                data_epoch: control.data_epoch,
                ready,
                writer_reachable: data.writer_reachable,
                http_url: http_url.clone(),
                data: data.clone(),
                uptime_ms: millis(self.started.elapsed()),
                ..status.clone()
            };
            let changed = *status != next;
            if next.role_line() != status.role_line() {
                // One line per change of role, leader, term or writability, with all four.
                tracing::info!(target: "tree", subsystem = "tree", "now {}", next.role_line());
            }
            *status = next;
            changed
        });
        self.metrics.observe_status(&self.status.borrow());
    }
}

impl Driver {
    /// Tells the data plane where this node stands, whenever that changes.
    fn publish_tree(&self, node: &Node, control: &chat_control::Status) {
        let upstream = control.routes.upstream;
        let parent_endpoint = upstream.filter(|up| up.data_port != 0).and_then(|up| {
            node.neighbors()
                .find(|n| n.id == up.next_hop)
                .map(|n| format!("tcp://{}:{}", n.host, up.data_port))
        });
        let view = crate::data::TreeView {
            term: control.term,
            writer: control.roles.writer,
            replica: control.roles.replica,
            input: control.roles.input,
            writable_until: node.writable_until(),
            parent: control.parent,
            parent_endpoint,
            children: control.children.clone(),
            routes: control.routes.downstream.clone(),
            cluster_size: control.quorum.size,
        };
        self.tree_view.send_if_modified(|current| {
            let changed = *current != view;
            if changed {
                *current = view;
            }
            changed
        });
    }
}

/// Every drop a transport counts, by reason: what it refused to deliver and what it could not
/// send. The same list for both planes.
fn transport_drops(stats: &chat_transport::TransportStats) -> [(DropReason, u64); 11] {
    [
        (DropReason::TransportBadFrame, stats.bad_frames),
        (
            DropReason::TransportUnauthenticated,
            stats.refused_unauthenticated,
        ),
        (DropReason::TransportTampered, stats.refused_tampered),
        (DropReason::TransportReplayed, stats.refused_replayed),
        (DropReason::TransportOversized, stats.refused_oversized),
        (DropReason::TransportQueueFull, stats.dropped_queue_full),
        (DropReason::TransportUnroutable, stats.dropped_unroutable),
        (DropReason::TransportPipeFull, stats.dropped_pipe_full),
        (DropReason::TransportSendError, stats.send_errors),
        (DropReason::TransportSendOversized, stats.dropped_oversized),
        (
            DropReason::TransportHandshakePending,
            stats.dropped_handshake_pending,
        ),
    ]
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_recorded_durable_key_reaches_the_election() {
        let now = Instant::now();
        let mut node = Node::new(NodeConfig::new(1, "127.0.0.1".into(), 46_001, 7), now);
        let (handle, mut updates) = crate::durable::channel(DurableKey::default());
        handle.record(DurableKey {
            last_term: 3,
            epoch: 42,
        });
        updates.changed().await.expect("the handle is alive");
        apply_durable_key(&mut node, now, *updates.borrow_and_update());
        assert_eq!(node.status().data_epoch, 42);
    }

    /// chat-node's defaults and the state machines' are one set (issue 10, item 6): a node
    /// started with no timing keys runs exactly `chat_control::defaults`.
    #[test]
    fn the_node_defaults_are_the_state_machines_defaults() {
        let mut settings = crate::config::NodeConfig::defaults();
        settings.id = 3;
        let resolved = settings.resolve().expect("the defaults are valid");
        let mapped = node_config(&resolved, 0);
        let expected = NodeConfig::new(3, mapped.host.clone(), mapped.control_port, 0);
        assert_eq!(mapped.topology, expected.topology);
        assert_eq!(
            (
                mapped.election_timeout,
                mapped.join_wait,
                mapped.heal_timeout,
                mapped.epoch_tick,
                mapped.writer_lease,
                mapped.retransmit,
                mapped.max_lamport_jump,
                mapped.cluster_size,
                mapped.initial_term,
            ),
            (
                expected.election_timeout,
                expected.join_wait,
                expected.heal_timeout,
                expected.epoch_tick,
                expected.writer_lease,
                expected.retransmit,
                expected.max_lamport_jump,
                expected.cluster_size,
                expected.initial_term,
            )
        );
        assert_eq!(mapped.check_timings(), Ok(()));
    }

    #[test]
    fn the_restored_term_and_the_cluster_size_reach_the_state_machine() {
        let mut settings = crate::config::NodeConfig::defaults();
        settings.id = 3;
        settings.cluster.size = 5;
        let resolved = settings.resolve().expect("valid");
        let node = Node::new(node_config(&resolved, 41), Instant::now());
        assert_eq!(node.term(), 41);
        assert_eq!(node.status().quorum.size, 5);
    }
}
