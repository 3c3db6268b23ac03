//! Settings of one transport socket.

use chat_secret::KeyRing;

/// Settings of one [`Transport`](crate::Transport): which node we are, where we listen, and
/// how the socket trades memory against loss.
///
/// Build it with [`TransportConfig::new`] and adjust the public fields; the defaults suit a
/// control or data plane on a LAN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportConfig {
    /// Our node id; the socket's ZeroMQ identity is `node-<node_id>`.
    pub node_id: u64,
    /// Where the socket listens, e.g. `tcp://127.0.0.1:46004` or `tcp://*:46004`.
    /// `tcp://127.0.0.1:*` picks a free port; [`TransportHandle::local_endpoint`] tells which.
    ///
    /// [`TransportHandle::local_endpoint`]: crate::TransportHandle::local_endpoint
    pub bind: String,
    /// How many outgoing messages may wait between [`TransportHandle::send`] and the socket
    /// thread. When full, further sends are dropped and counted (`dropped_queue_full`).
    ///
    /// [`TransportHandle::send`]: crate::TransportHandle::send
    pub send_queue: usize,
    /// How many events (received messages, link changes) may wait for the async consumer.
    /// When full, the socket thread stops reading the socket until there is room again, so
    /// back-pressure reaches the senders' high-water marks instead of losing messages here.
    pub event_queue: usize,
    /// ZeroMQ send high-water mark per peer (`ZMQ_SNDHWM`), in messages. A send to a peer
    /// whose pipe is full is dropped and counted (`dropped_pipe_full`).
    pub send_hwm: i32,
    /// ZeroMQ receive high-water mark per peer (`ZMQ_RCVHWM`), in messages.
    pub recv_hwm: i32,
    /// How long unsent messages may delay closing the socket at shutdown (`ZMQ_LINGER`).
    pub linger_ms: i32,
    /// First delay before ZeroMQ reconnects a dropped outgoing connection (`ZMQ_RECONNECT_IVL`).
    pub reconnect_ivl_ms: i32,
    /// Cap of the doubling reconnect delay (`ZMQ_RECONNECT_IVL_MAX`); 0 keeps it constant.
    pub reconnect_ivl_max_ms: i32,
    /// Interval of ZMTP heartbeats on every connection (`ZMQ_HEARTBEAT_IVL`); 0 turns them
    /// off. They let ZeroMQ drop (and the monitor report) a connection whose far end vanished
    /// without closing it, such as a host that lost power.
    pub heartbeat_ivl_ms: i32,
    /// How long a connection may stay silent after a ZMTP heartbeat before ZeroMQ drops it
    /// (`ZMQ_HEARTBEAT_TIMEOUT`). Ignored when `heartbeat_ivl_ms` is 0.
    pub heartbeat_timeout_ms: i32,
    /// Largest payload this transport sends or delivers, in bytes. A larger send is dropped
    /// and counted (`dropped_oversized`), a larger received payload too (`refused_oversized`).
    /// ZeroMQ itself disconnects a peer whose frame exceeds twice this (`ZMQ_MAXMSGSIZE`), so
    /// a broken or hostile peer cannot make the node buffer more. See
    /// [`TransportConfig::control_plane`] for the small bound the control plane needs.
    pub max_message_bytes: i64,
    /// The wire keys (`Purpose::Wire` of the cluster secret) that seal and authenticate every
    /// frame; `None` sends payloads in the clear as before. Every node of a cluster must use
    /// the same choice: a sealed transport refuses clear frames, and a clear one delivers
    /// handshake frames as payloads. See the [crate documentation](crate#the-sealed-wire).
    pub security: Option<KeyRing>,
}

impl TransportConfig {
    /// Settings with the defaults for node `node_id` listening on `bind`.
    pub fn new(node_id: u64, bind: impl Into<String>) -> Self {
        TransportConfig {
            node_id,
            bind: bind.into(),
            send_queue: 4096,
            event_queue: 4096,
            send_hwm: 1000,
            recv_hwm: 1000,
            linger_ms: 100,
            // A restarted neighbour is usually back within a second; retry fast, then back off.
            reconnect_ivl_ms: 100,
            reconnect_ivl_max_ms: 2000,
            heartbeat_ivl_ms: 1000,
            heartbeat_timeout_ms: 3000,
            max_message_bytes: 16 * 1024 * 1024,
            security: None,
        }
    }

    /// Settings for a control-plane socket: as [`new`](TransportConfig::new), but with
    /// payloads bounded to [`CONTROL_PLANE_MAX_MESSAGE_BYTES`] and [`CONTROL_PLANE_HWM`]
    /// messages queued per peer and direction, since election and tree messages are a few
    /// hundred bytes, a handful per link and heartbeat, and a peer must not make the node
    /// queue 16 MiB frames by the thousand: at most 16 MiB per peer and direction now.
    pub fn control_plane(node_id: u64, bind: impl Into<String>) -> Self {
        TransportConfig {
            max_message_bytes: CONTROL_PLANE_MAX_MESSAGE_BYTES,
            send_hwm: CONTROL_PLANE_HWM,
            recv_hwm: CONTROL_PLANE_HWM,
            ..Self::new(node_id, bind)
        }
    }

    /// Turns the sealed wire on with `keys` (see [`security`](TransportConfig::security)).
    pub fn with_security(mut self, keys: Option<KeyRing>) -> Self {
        self.security = keys;
        self
    }
}

/// Payload bound of [`TransportConfig::control_plane`]: 64 KiB. The largest control message,
/// a tree message listing routes, is a few bytes per node: kilobytes for a thousand nodes.
pub const CONTROL_PLANE_MAX_MESSAGE_BYTES: i64 = 64 * 1024;

/// Messages queued per peer and direction on the control plane
/// ([`TransportConfig::control_plane`]): 256, 25 s of heartbeats at the default 100 ms, far
/// more than an election's burst on one link; a peer that falls further behind is dead or
/// frozen, and the liveness timeout acts long before.
pub const CONTROL_PLANE_HWM: i32 = 256;
