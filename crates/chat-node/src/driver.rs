//! The node driver: moves bytes between the ZeroMQ transport and the control plane's state
//! machines, with real time.
//!
//! One task owns the [`Node`] state machine. Each turn of its loop waits for whichever comes
//! first: a transport event, the machine's next deadline, or shutdown; feeds it in; then drains
//! every output (events first, so a `Connect` reaches the transport before the JOIN that needs
//! it; then transmits) and publishes the status. It makes no protocol decision of its own.

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
use crate::lease::InputLease;
use crate::metrics::Metrics;
use crate::status::{ElectionStatus, NeighborState, NeighborStatus, NodeStatus};
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
    let neighbors = crate::discovery::neighbors(&config).await?;
    let data_epoch = durable_data_epoch(&config).await?;

    let bind = format!("tcp://{}:{}", config.bind_host, config.control_port);
    let (transport, mut events) =
        Transport::start(TransportConfig::new(config.id, bind.clone()))
            .with_context(|| format!("cannot open the control-plane socket {bind}"))?;

    let now = Instant::now();
    let mut node = Node::with_clock(node_config(&config), clock.clone(), now);
    // The election prefers the most up-to-date node, so a replica that outlived the writer
    // takes over with everything it has.
    node.set_election_key(
        now,
        ElectionKey {
            last_term: 0,
            epoch: data_epoch,
        },
    );
    for NeighborConfig { id, host, port } in &neighbors {
        node.add_neighbor(now, *id, host.clone(), *port);
    }
    let mut driver = Driver {
        me: config.id,
        clock,
        transport,
        metrics,
        status,
        started,
        lease: InputLease::new(&config),
        links_up: BTreeSet::new(),
    };
    tracing::info!(
        target: "main",
        subsystem = "main",
        neighbors = ?neighbors.iter().map(|n| n.id).collect::<Vec<_>>(),
        "control plane listening on {bind}"
    );

    tokio::pin!(shutdown);
    loop {
        driver.drain(&mut node).await;
        let refresh = Instant::now() + STATUS_REFRESH;
        let deadline = node.poll_timeout().map_or(refresh, |at| at.min(refresh));
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            event = events.recv() => match event {
                Some(event) => driver.handle_transport_event(&mut node, event),
                None => anyhow::bail!("the control-plane transport stopped"),
            },
            () = tokio::time::sleep_until(deadline.into()) => node.handle_timeout(Instant::now()),
        }
    }

    driver.lease.withdraw().await;
    driver.transport.shutdown().await;
    Ok(())
}

/// The number of writes this node's database holds (0 for a new node). Opening the store
/// also creates it and applies the migrations, so a bad state directory stops start-up here
/// rather than on the first write.
async fn durable_data_epoch(config: &ResolvedConfig) -> anyhow::Result<u64> {
    let path = config.db_path.clone();
    let epoch = tokio::task::spawn_blocking(move || {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
        }
        let store = chat_store::Store::open(&path)
            .with_context(|| format!("cannot open the database {}", path.display()))?;
        store
            .current_epoch()
            .with_context(|| format!("cannot read the epoch of {}", path.display()))
    })
    .await
    .context("the database task failed")??;
    tracing::info!(
        target: "storage",
        subsystem = "storage",
        data_epoch = epoch,
        path = %config.db_path.display(),
        "database opened"
    );
    Ok(epoch)
}

/// The state machines' configuration, from the node's.
fn node_config(config: &ResolvedConfig) -> NodeConfig {
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
    node.epoch_tick = Duration::from_millis(config.tree.epoch_tick_ms);
    node.data_port = config.data_port;
    node.trace = true;
    node
}

struct Driver {
    me: NodeId,
    clock: LamportClock,
    transport: TransportHandle,
    metrics: Arc<Metrics>,
    status: watch::Sender<NodeStatus>,
    started: Instant,
    lease: InputLease,
    /// Peers whose connection from us is established, as the transport reports it.
    links_up: BTreeSet<NodeId>,
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
                self.metrics.decode_error();
                tracing::debug!(target: "transport", subsystem = "transport", from, %error, "dropped an undecodable frame");
                return;
            }
        };
        // The ZeroMQ identity is the authenticated-enough sender; a header that claims
        // another source or another destination is not for us.
        if envelope.header.source != from || envelope.header.destination != self.me {
            self.metrics.decode_error();
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
    }

    fn send(&mut self, Transmit { to, lamport, body }: Transmit) {
        let scope = body.scope();
        let envelope = Envelope::new(self.me, to, lamport, body);
        match self.transport.send(to, envelope.encode()) {
            Ok(()) => self.metrics.message_sent(scope),
            Err(error) => {
                self.metrics.dropped_send();
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
                tracing::info!(target: "election", subsystem = "election", term, "term changed");
            }
            NodeEvent::WritableChanged { writable, term } => {
                tracing::info!(target: "tree", subsystem = "tree", writable, term, "writability changed");
            }
            NodeEvent::RolesChanged { old, new, .. } => {
                self.metrics.role_changed();
                tracing::info!(target: "tree", subsystem = "tree", %old, %new, "roles changed");
                self.lease.set_input(new.input).await;
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
        let lamport = self.clock.now();
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
                election: control.election.map(|(run, round)| ElectionStatus {
                    run: run.to_string(),
                    round,
                }),
                data_epoch: control.data_epoch,
                ready: !control.roles.is_empty(),
                uptime_ms: millis(self.started.elapsed()),
                ..status.clone()
            };
            let changed = *status != next;
            *status = next;
            changed
        });
        self.metrics.observe_status(&self.status.borrow());
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
