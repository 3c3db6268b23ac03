//! ZeroMQ links between neighbouring nodes.
//!
//! A [`Transport`] binds the node's port and connects to each neighbour's, as the prototype
//! did (SPEC §5.3), with ZeroMQ ROUTER sockets whose identity is `node-<id>` and
//! `ZMQ_ROUTER_HANDOVER` on, so a restarted neighbour takes its identity back at once.
//! A node runs two transports: one on its control port, one on its data port.
//!
//! The transport moves opaque payloads; decoding them is `chat-wire`'s job.
//!
//! # Two sockets, one connection per direction
//!
//! The prototype bound and connected one ROUTER. Between two neighbours that gives two TCP
//! connections, and each end sees the same identity on both; with handover on, each end
//! terminates whichever connection finished its handshake first. The two ends need not
//! pick the same one, and a terminated pipe loses what it held and stops reading its
//! connection, so messages could vanish for good. Here each transport has an *inbound*
//! ROUTER, bound to the port, and an *outbound* ROUTER that makes the connections we ask
//! for. Every connection then has one identity at each end and handover only acts when a
//! peer really comes back.
//!
//! A send to `node-<id>` goes over our outbound connection to that peer when it is up, else
//! over the connection the peer opened to us (so a node can answer a peer it never
//! connected to). Messages keep their order on one path; when the path changes (our link
//! to the peer came up or went down) a message on the new path may overtake one still in
//! flight on the old.
//!
//! # Framing
//!
//! A message is two ZeroMQ frames: `[identity, payload]`, where the identity is the
//! destination's `node-<id>` on send and the sender's on receive. The prototype's empty
//! delimiter frame is gone: ROUTER-to-ROUTER traffic has no use for it. An inbound message
//! with another frame count, or whose identity is not `node-<id>` in canonical decimal, is
//! dropped and counted in [`TransportStats::bad_frames`].
//!
//! # The sealed wire
//!
//! With [`TransportConfig::security`] set to the cluster secret's wire keys, every frame is
//! sealed: each direction of each link first runs a handshake (HELLO, WELCOME) in which both
//! ends contribute a fresh random nonce and agree on a key both hold, then every payload
//! travels as a DATA frame sealed with AES-256-GCM under the session's key, its header
//! (kind, session, counter) authenticated as associated data. Sends wait for the handshake in
//! a per-peer queue bounded by the send high-water mark. What a peer without the secret sends
//! is refused and counted ([`TransportStats::refused_unauthenticated`]), and nothing it sends
//! is delivered; an altered frame is refused ([`TransportStats::refused_tampered`]), a
//! replayed one too ([`TransportStats::refused_replayed`]), and a session recorded earlier
//! cannot be replayed to a restarted node, whose fresh nonce makes a new key. ZeroMQ
//! identities are still what routes, so a peer without the secret can still take over an
//! identity's connection (a denial of service, which an on-path attacker has anyway), but
//! never read or inject traffic. docs/decisions.md says why this and not ZeroMQ CURVE.
//!
//! # Threads and queues
//!
//! ZeroMQ sockets are not thread-safe, so one thread owns the sockets. [`TransportHandle`]s
//! (cheap clones) queue work for it on a bounded queue and wake it through a Unix socket
//! pair it polls together with the sockets, so a send reaches ZeroMQ without any polling
//! delay. Nothing on the send path waits for the network: [`TransportHandle::send`] drops
//! and counts when the queue is full, and the thread sends with `ZMQ_DONTWAIT` and
//! `ZMQ_ROUTER_MANDATORY`, so a peer that is down or whose pipe is full costs a counter
//! increment, never a stall.
//!
//! Inbound messages and link events reach the async side through a tokio channel. The thread
//! never blocks on it: when it is full the thread stops reading the sockets (link events are
//! kept, in order, in a small local queue), so back-pressure builds up in ZeroMQ's pipes and
//! shows as `dropped_pipe_full` at the senders. This way a slow consumer can neither deadlock
//! the node nor lose a link event, and memory stays bounded by the high-water marks.
//!
//! # Link events
//!
//! A socket monitor on the outbound socket reports, for each endpoint we connected to, when
//! the ZMTP handshake succeeded ([`TransportEvent::LinkUp`]: the peer is routable) and when
//! the connection dropped ([`TransportEvent::LinkDown`]: one event per drop, whatever
//! ZeroMQ's reconnect attempts report afterwards). A neighbour whose process dies closes its
//! TCP connections, so this is known within milliseconds; ZeroMQ keeps reconnecting and
//! reports `LinkUp` again when it is back. Damping flapping links is left to the control
//! plane.

#![warn(missing_docs)]

mod config;
mod error;
mod identity;
mod monitor;
mod secure;
mod stats;
mod worker;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self as std_mpsc, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, watch};

pub use config::{TransportConfig, CONTROL_PLANE_HWM, CONTROL_PLANE_MAX_MESSAGE_BYTES};
pub use error::TransportError;
pub use identity::{node_identity, parse_node_identity};
pub use stats::TransportStats;

use error::zmq_error;
use identity::validate_peer_endpoint;
use secure::SecureLinks;
use stats::{bump, Counters};
use worker::{Command, Outgoing, Wakeup, Worker};

/// What the transport reports to the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransportEvent {
    /// A well-formed message from node `from`.
    Received {
        /// The sender's node id, from its ZeroMQ identity.
        from: u64,
        /// The payload, undecoded.
        payload: Vec<u8>,
    },
    /// The connection we opened to `peer` finished its handshake: sends to it are routable.
    LinkUp {
        /// The peer, as given to [`TransportHandle::connect`].
        peer: u64,
    },
    /// The connection we opened to `peer` dropped. ZeroMQ keeps reconnecting; a
    /// [`LinkUp`](TransportEvent::LinkUp) follows when it succeeds.
    LinkDown {
        /// The peer, as given to [`TransportHandle::connect`].
        peer: u64,
    },
}

/// Starts transports; see the [crate documentation](crate).
#[derive(Debug)]
pub struct Transport;

/// Gives each monitor a distinct inproc address within the process.
static MONITOR_SEQUENCE: AtomicU64 = AtomicU64::new(0);

impl Transport {
    /// Creates and binds the socket, then starts the thread that owns it.
    ///
    /// Returns a handle to send and connect with, and the receiver of inbound messages and
    /// link events. Binding happens before this returns, so a port in use is an error here.
    /// Needs no tokio runtime; [`TransportHandle::shutdown`] does.
    pub fn start(
        config: TransportConfig,
    ) -> Result<(TransportHandle, mpsc::Receiver<TransportEvent>), TransportError> {
        let context = zmq::Context::new();
        let inbound = context
            .socket(zmq::ROUTER)
            .map_err(zmq_error("create inbound ROUTER"))?;
        configure_router(&inbound, &config)?;
        let outbound = context
            .socket(zmq::ROUTER)
            .map_err(zmq_error("create outbound ROUTER"))?;
        configure_router(&outbound, &config)?;
        // Without this a ROUTER keeps the pipe of a dropped connection and queues sends for
        // the peer until it is back; we want them dropped and counted as unroutable instead.
        outbound
            .set_immediate(true)
            .map_err(zmq_error("set_immediate"))?;

        let monitor_endpoint = format!(
            "inproc://monitor-{}-{}",
            config.node_id,
            MONITOR_SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        outbound
            .monitor(&monitor_endpoint, zmq::SocketEvent::ALL as i32)
            .map_err(zmq_error("monitor"))?;
        let monitor = context
            .socket(zmq::PAIR)
            .map_err(zmq_error("create monitor socket"))?;
        monitor
            .connect(&monitor_endpoint)
            .map_err(zmq_error("connect monitor socket"))?;

        inbound
            .bind(&config.bind)
            .map_err(|source| TransportError::Bind {
                endpoint: config.bind.clone(),
                source,
            })?;
        let local_endpoint = match inbound.get_last_endpoint() {
            Ok(Ok(endpoint)) => endpoint,
            _ => config.bind.clone(),
        };

        let (wakeup, wake_reader) =
            Wakeup::new().map_err(|error| TransportError::Thread(error.to_string()))?;
        // A zero-capacity std channel would be a rendezvous; at least one slot keeps sends
        // queueing.
        let (send_tx, send_rx) = std_mpsc::sync_channel(config.send_queue.max(1));
        let (command_tx, command_rx) = std_mpsc::channel();
        let (event_tx, event_rx) = mpsc::channel(config.event_queue.max(1));
        let (exited_tx, exited_rx) = watch::channel(());
        let counters = Arc::new(Counters::default());

        let worker = Worker {
            inbound,
            outbound,
            monitor,
            wake_reader,
            wakeup: Arc::clone(&wakeup),
            sends: send_rx,
            commands: command_rx,
            events: event_tx,
            counters: Arc::clone(&counters),
            exited: exited_tx,
            node_id: config.node_id,
            max_message_bytes: usize::try_from(config.max_message_bytes).unwrap_or(usize::MAX),
            secure: config.security.clone().map(|keys| {
                let pending = usize::try_from(config.send_hwm).unwrap_or(1);
                SecureLinks::new(config.node_id, keys, pending)
            }),
        };
        let thread = std::thread::Builder::new()
            .name(format!("zmq-node-{}", config.node_id))
            .spawn(move || worker.run())
            .map_err(|error| TransportError::Thread(error.to_string()))?;
        tracing::debug!(subsystem = "transport", node = config.node_id,
            endpoint = %local_endpoint, "transport started");

        let handle = TransportHandle {
            shared: Arc::new(Shared {
                node_id: config.node_id,
                local_endpoint,
                sends: send_tx,
                commands: command_tx,
                wakeup,
                counters,
                exited: exited_rx,
                thread: Mutex::new(Some(thread)),
            }),
        };
        Ok((handle, event_rx))
    }
}

fn configure_router(router: &zmq::Socket, config: &TransportConfig) -> Result<(), TransportError> {
    router
        .set_identity(node_identity(config.node_id).as_bytes())
        .map_err(zmq_error("set_identity"))?;
    router
        .set_router_handover(true)
        .map_err(zmq_error("set_router_handover"))?;
    router
        .set_router_mandatory(true)
        .map_err(zmq_error("set_router_mandatory"))?;
    router
        .set_sndhwm(config.send_hwm)
        .map_err(zmq_error("set_sndhwm"))?;
    router
        .set_rcvhwm(config.recv_hwm)
        .map_err(zmq_error("set_rcvhwm"))?;
    router
        .set_linger(config.linger_ms)
        .map_err(zmq_error("set_linger"))?;
    router
        .set_reconnect_ivl(config.reconnect_ivl_ms)
        .map_err(zmq_error("set_reconnect_ivl"))?;
    router
        .set_reconnect_ivl_max(config.reconnect_ivl_max_ms)
        .map_err(zmq_error("set_reconnect_ivl_max"))?;
    // The hard cap: twice the payload bound plus the seal's overhead, so payloads between
    // the two are still read and refused with a count instead of a silent disconnect.
    let hard_cap = config
        .max_message_bytes
        .saturating_mul(2)
        .saturating_add(secure::DATA_OVERHEAD as i64);
    router
        .set_maxmsgsize(hard_cap)
        .map_err(zmq_error("set_maxmsgsize"))?;
    if config.heartbeat_ivl_ms > 0 {
        router
            .set_heartbeat_ivl(config.heartbeat_ivl_ms)
            .map_err(zmq_error("set_heartbeat_ivl"))?;
        router
            .set_heartbeat_timeout(config.heartbeat_timeout_ms)
            .map_err(zmq_error("set_heartbeat_timeout"))?;
    }
    Ok(())
}

/// A cloneable handle on a running transport. Every method returns at once.
///
/// The transport stops when [`shutdown`](TransportHandle::shutdown) is called or when the
/// last handle is dropped (dropping joins the socket thread, which takes at most the
/// configured linger).
#[derive(Clone, Debug)]
pub struct TransportHandle {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    node_id: u64,
    local_endpoint: String,
    sends: std_mpsc::SyncSender<Outgoing>,
    commands: std_mpsc::Sender<Command>,
    wakeup: Arc<Wakeup>,
    counters: Arc<Counters>,
    exited: watch::Receiver<()>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Shared {
    fn stop_and_join(&self) {
        self.wakeup.request_stop();
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            if thread.join().is_err() {
                tracing::error!(
                    subsystem = "transport",
                    node = self.node_id,
                    "the transport thread panicked"
                );
            }
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

impl TransportHandle {
    /// Our node id.
    pub fn node_id(&self) -> u64 {
        self.shared.node_id
    }

    /// The endpoint the socket is bound to, with the port ZeroMQ chose for a `:*` bind
    /// (e.g. `tcp://127.0.0.1:38211`).
    pub fn local_endpoint(&self) -> &str {
        &self.shared.local_endpoint
    }

    /// Connects to a peer's endpoint (`tcp://host:port`) and remembers endpoint → peer, so
    /// monitor events about that connection become [`TransportEvent::LinkUp`] and
    /// [`TransportEvent::LinkDown`] for `peer`.
    ///
    /// Returns at once; ZeroMQ connects (and reconnects after drops) in the background.
    /// Connecting again to the same endpoint does nothing; to another endpoint, it replaces
    /// the old connection (with a [`TransportEvent::LinkDown`] if that one was up). For each
    /// peer, LinkUp and LinkDown events strictly alternate, starting with LinkUp.
    pub fn connect(&self, peer: u64, endpoint: String) -> Result<(), TransportError> {
        validate_peer_endpoint(&endpoint)?;
        self.command(Command::Connect { peer, endpoint })
    }

    /// Closes the connection we opened to `peer` and forgets it, reporting
    /// [`TransportEvent::LinkDown`] if the link was up. Messages to `peer` still route over a
    /// connection the peer opened to us, if any.
    pub fn disconnect(&self, peer: u64) -> Result<(), TransportError> {
        self.command(Command::Disconnect { peer })
    }

    /// Queues `payload` for `peer` and returns at once, never waiting on the network.
    ///
    /// Delivery is best effort: if the queue is full, the peer is not connected, or its pipe
    /// is at the high-water mark, the message is dropped and counted in
    /// [`stats`](TransportHandle::stats), and this still returns `Ok`. The only error is
    /// [`TransportError::Closed`], once the transport is shut down.
    pub fn send(&self, peer: u64, payload: Vec<u8>) -> Result<(), TransportError> {
        if self.shared.wakeup.stop_requested() {
            return Err(TransportError::Closed);
        }
        match self.shared.sends.try_send(Outgoing { peer, payload }) {
            Ok(()) => {
                self.shared.wakeup.wake();
                Ok(())
            }
            Err(TrySendError::Full(_)) => {
                bump(&self.shared.counters.dropped_queue_full);
                Ok(())
            }
            Err(TrySendError::Disconnected(_)) => Err(TransportError::Closed),
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> TransportStats {
        self.shared.counters.snapshot()
    }

    /// Stops the transport and waits until its sockets are closed (after at most the
    /// configured linger for messages still queued). Every handle's later sends return
    /// [`TransportError::Closed`]. Calling it again, from any handle, just waits the same.
    pub async fn shutdown(&self) {
        self.shared.wakeup.request_stop();
        let mut exited = self.shared.exited.clone();
        // The thread drops the watch sender as its last act; `changed` fails then.
        while exited.changed().await.is_ok() {}
        // The thread has finished its work, so joining does not block.
        self.shared.stop_and_join();
    }

    fn command(&self, command: Command) -> Result<(), TransportError> {
        if self.shared.wakeup.stop_requested() {
            return Err(TransportError::Closed);
        }
        self.shared
            .commands
            .send(command)
            .map_err(|_| TransportError::Closed)?;
        self.shared.wakeup.wake();
        Ok(())
    }
}
