//! Prometheus metrics served at `GET /metrics` (OpenMetrics text).
//!
//! The driver bumps the counters as things happen; the gauges that mirror `/status` (Lamport
//! time, epochs, neighbours on/off) are refreshed from the current status on each scrape by
//! [`Metrics::observe_status`], so they cannot drift from what `/status` says.

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::status::NodeStatus;

/// The wire's message scopes, counted separately.
pub(crate) use chat_wire::Scope;

/// A scope as a Prometheus label value (its lowercase name); a newtype because neither the
/// trait nor the type is ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ScopeValue(Scope);

impl EncodeLabelValue for ScopeValue {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.0.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ScopeLabel {
    scope: ScopeValue,
}

/// Why a message or a send was dropped: every drop anywhere on the node has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum DropReason {
    /// A received frame that is not an envelope.
    Undecodable,
    /// An envelope whose header names another sender than its ZeroMQ identity, or another
    /// destination than this node.
    Misaddressed,
    /// The transport was shut down when the driver sent.
    TransportClosed,
    /// The transport's queue to its socket thread was full.
    TransportQueueFull,
    /// No connection to the peer existed (never connected, down, handshake unfinished).
    TransportUnroutable,
    /// The peer's ZeroMQ pipe was at its high-water mark.
    TransportPipeFull,
    /// ZeroMQ refused the send for another reason.
    TransportSendError,
    /// A received frame with a wrong frame count or identity.
    TransportBadFrame,
    /// A received frame from a peer that did not prove it holds the cluster secret (no
    /// common key, a handshake that does not verify, a session we never opened, clear bytes).
    TransportUnauthenticated,
    /// A received frame of an established session that did not open: altered in flight.
    TransportTampered,
    /// A received frame the session had already accepted: replayed.
    TransportReplayed,
    /// A received payload over the plane's size bound.
    TransportOversized,
    /// A send over the plane's size bound.
    TransportSendOversized,
    /// A send dropped because too many were waiting for the handshake with that peer.
    TransportHandshakePending,
    /// A message whose Lamport time jumped too far ahead of its sender's previous stamp.
    LamportJump,
    /// An election or tree message from a node that is not an ON neighbour.
    ControlFromStranger,
    /// A handshake answer from a node with no handshake in progress.
    UnexpectedHandshake,
    /// A non-topology message from a node that is not a neighbour.
    StrangerMessage,
    /// A stranger's heartbeat beyond the number of strangers counted at once.
    StrangersOverLimit,
    /// A handshake with a stranger abandoned because it stopped answering.
    AbandonedHandshake,
}

impl DropReason {
    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Undecodable => "undecodable",
            Self::Misaddressed => "misaddressed",
            Self::TransportClosed => "transport_closed",
            Self::TransportQueueFull => "transport_queue_full",
            Self::TransportUnroutable => "transport_unroutable",
            Self::TransportPipeFull => "transport_pipe_full",
            Self::TransportSendError => "transport_send_error",
            Self::TransportBadFrame => "transport_bad_frame",
            Self::TransportUnauthenticated => "transport_unauthenticated",
            Self::TransportTampered => "transport_tampered",
            Self::TransportReplayed => "transport_replayed",
            Self::TransportOversized => "transport_oversized",
            Self::TransportSendOversized => "transport_send_oversized",
            Self::TransportHandshakePending => "transport_handshake_pending",
            Self::LamportJump => "lamport_jump",
            Self::ControlFromStranger => "control_from_stranger",
            Self::UnexpectedHandshake => "unexpected_handshake",
            Self::StrangerMessage => "stranger_message",
            Self::StrangersOverLimit => "strangers_over_limit",
            Self::AbandonedHandshake => "abandoned_handshake",
        }
    }
}

impl EncodeLabelValue for DropReason {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: DropReason,
}

/// Bucket bounds of the control loop's turn time: 10 µs doubling to ~5 s, so both an
/// ordinary turn and a stall show up.
const TURN_BUCKETS: (f64, f64, u16) = (0.000_01, 2.0, 20);

/// Every metric of a node. Counters are monotone; call the methods from any task.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    messages_sent: Family<ScopeLabel, Counter>,
    messages_received: Family<ScopeLabel, Counter>,
    dropped: Family<ReasonLabel, Counter>,
    data_dropped: Family<ReasonLabel, Counter>,
    loop_turn: Histogram,
    elections_started: Counter,
    healings: Counter,
    role_changes: Counter,
    term_persist_failures: Counter,
    neighbors_on: Gauge,
    neighbors_off: Gauge,
    lamport_gauge: Gauge,
    tree_epoch: Gauge,
    data_epoch: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// All metrics registered under the prefix `chat_node_`.
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("chat_node");
        let messages_sent = Family::<ScopeLabel, Counter>::default();
        let messages_received = Family::<ScopeLabel, Counter>::default();
        let counters = [
            ("elections_started", "Elections this node started or joined"),
            ("healings", "Tree healings after a lost parent or child"),
            ("role_changes", "Changes of this node's role set"),
            (
                "term_persist_failures",
                "Terms that could not be written to the cluster state file",
            ),
        ]
        .map(|(name, help)| {
            let counter = Counter::default();
            registry.register(name, help, counter.clone());
            counter
        });
        let gauges = [
            (
                "neighbors_on",
                "Neighbours with a completed handshake that are alive",
            ),
            ("neighbors_off", "Known neighbours that are not on"),
            ("lamport", "The node's Lamport time"),
            ("tree_epoch", "Epoch of the spanning tree"),
            ("data_epoch", "Epoch of the replicated data"),
        ]
        .map(|(name, help)| {
            let gauge = Gauge::default();
            registry.register(name, help, gauge.clone());
            gauge
        });
        registry.register(
            "messages_sent",
            "Messages sent, by scope",
            messages_sent.clone(),
        );
        registry.register(
            "messages_received",
            "Messages received, by scope",
            messages_received.clone(),
        );
        let dropped = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "dropped",
            "Messages and sends dropped anywhere on the node, by reason",
            dropped.clone(),
        );
        let data_dropped = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "data_dropped",
            "Frames and sends dropped by the data plane's transport, by reason (its other \
             counters are in /status under data.counters)",
            data_dropped.clone(),
        );
        let (start, factor, count) = TURN_BUCKETS;
        let loop_turn = Histogram::new(exponential_buckets(start, factor, count));
        registry.register_with_unit(
            "control_loop_turn",
            "Time the control loop spends on one input (a message, a link change or its \
             timers) and everything it causes, before it waits again",
            prometheus_client::registry::Unit::Seconds,
            loop_turn.clone(),
        );
        let [elections_started, healings, role_changes, term_persist_failures] = counters;
        let [neighbors_on, neighbors_off, lamport_gauge, tree_epoch, data_epoch] = gauges;
        Self {
            registry,
            messages_sent,
            messages_received,
            dropped,
            data_dropped,
            loop_turn,
            elections_started,
            healings,
            role_changes,
            term_persist_failures,
            neighbors_on,
            neighbors_off,
            lamport_gauge,
            tree_epoch,
            data_epoch,
        }
    }

    /// A message of `scope` went out.
    pub(crate) fn message_sent(&self, scope: Scope) {
        self.messages_sent
            .get_or_create(&ScopeLabel {
                scope: ScopeValue(scope),
            })
            .inc();
    }

    /// A message of `scope` came in and decoded.
    pub(crate) fn message_received(&self, scope: Scope) {
        self.messages_received
            .get_or_create(&ScopeLabel {
                scope: ScopeValue(scope),
            })
            .inc();
    }

    /// One message or send was dropped.
    pub(crate) fn dropped(&self, reason: DropReason) {
        self.dropped.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Another component counts drops of `reason` itself: `total` is its count since start.
    /// Only this method feeds such a reason, so the counter holds the last total seen.
    pub(crate) fn dropped_total(&self, reason: DropReason, total: u64) {
        follow_total(&self.dropped, reason, total);
    }

    /// The data plane's transport counts drops of `reason` itself: `total` since start.
    pub(crate) fn data_dropped_total(&self, reason: DropReason, total: u64) {
        follow_total(&self.data_dropped, reason, total);
    }

    /// One turn of the control loop took `seconds`.
    pub(crate) fn loop_turn(&self, seconds: f64) {
        self.loop_turn.observe(seconds);
    }

    /// An election started.
    pub(crate) fn election_started(&self) {
        self.elections_started.inc();
    }

    /// The tree healed around a lost node.
    pub(crate) fn healing(&self) {
        self.healings.inc();
    }

    /// The node's roles changed.
    pub(crate) fn role_changed(&self) {
        self.role_changes.inc();
    }

    /// A new term could not be written to `[cluster] state_file`.
    pub(crate) fn term_not_persisted(&self) {
        self.term_persist_failures.inc();
    }

    /// Sets the gauges that mirror `/status`.
    pub(crate) fn observe_status(&self, status: &NodeStatus) {
        let (on, off) = status.neighbor_counts();
        self.neighbors_on.set(saturating_i64(on as u64));
        self.neighbors_off.set(saturating_i64(off as u64));
        self.tree_epoch.set(saturating_i64(status.tree_epoch));
        self.data_epoch.set(saturating_i64(status.data_epoch));
        self.lamport_gauge.set(saturating_i64(status.lamport));
    }

    /// The OpenMetrics text of every metric.
    pub(crate) fn encode(&self) -> String {
        let mut text = String::new();
        // Encoding into a String only fails if a metric's own encoder does, which the
        // built-in counter and gauge types never do; an empty page is the safe fallback.
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

/// Brings `reason`'s counter of `family` up to `total` (a count kept elsewhere, since start).
fn follow_total(family: &Family<ReasonLabel, Counter>, reason: DropReason, total: u64) {
    let counter = family.get_or_create(&ReasonLabel { reason });
    let seen = counter.get();
    if total > seen {
        counter.inc_by(total - seen);
    }
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{NeighborState, NeighborStatus};

    fn value_of(text: &str, series: &str) -> Option<String> {
        text.lines().find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')
                .map(str::to_owned)
        })
    }

    #[test]
    fn counters_and_gauges_appear_in_the_text() {
        let metrics = Metrics::new();
        metrics.message_sent(Scope::Election);
        metrics.message_sent(Scope::Election);
        metrics.message_received(Scope::Heartbeat);
        metrics.dropped(DropReason::Undecodable);
        metrics.dropped_total(DropReason::TransportQueueFull, 3);
        metrics.dropped_total(DropReason::TransportQueueFull, 5);
        metrics.dropped_total(DropReason::TransportQueueFull, 4);
        metrics.loop_turn(0.000_5);
        metrics.election_started();
        metrics.data_dropped_total(DropReason::TransportUnauthenticated, 2);
        let mut status = NodeStatus::starting(4);
        status.neighbors = vec![
            NeighborStatus {
                id: 3,
                state: NeighborState::On,
                last_seen_ms: Some(1),
                link_up: false,
            },
            NeighborStatus {
                id: 5,
                state: NeighborState::Off,
                last_seen_ms: None,
                link_up: false,
            },
            NeighborStatus {
                id: 6,
                state: NeighborState::Off,
                last_seen_ms: None,
                link_up: false,
            },
        ];
        status.lamport = 42;
        status.tree_epoch = 7;
        metrics.observe_status(&status);

        let text = metrics.encode();
        assert_eq!(
            value_of(&text, "chat_node_messages_sent_total{scope=\"election\"}").as_deref(),
            Some("2"),
            "{text}"
        );
        assert_eq!(
            value_of(
                &text,
                "chat_node_messages_received_total{scope=\"heartbeat\"}"
            )
            .as_deref(),
            Some("1")
        );
        assert_eq!(
            value_of(&text, "chat_node_dropped_total{reason=\"undecodable\"}").as_deref(),
            Some("1")
        );
        assert_eq!(
            value_of(
                &text,
                "chat_node_dropped_total{reason=\"transport_queue_full\"}"
            )
            .as_deref(),
            Some("5"),
            "a cumulative total is followed, never decreased"
        );
        assert_eq!(
            value_of(
                &text,
                "chat_node_data_dropped_total{reason=\"transport_unauthenticated\"}"
            )
            .as_deref(),
            Some("2"),
            "{text}"
        );
        assert_eq!(
            value_of(&text, "chat_node_control_loop_turn_seconds_count").as_deref(),
            Some("1"),
            "{text}"
        );
        assert_eq!(
            value_of(&text, "chat_node_elections_started_total").as_deref(),
            Some("1")
        );
        assert_eq!(
            value_of(&text, "chat_node_healings_total").as_deref(),
            Some("0")
        );
        assert_eq!(
            value_of(&text, "chat_node_neighbors_on").as_deref(),
            Some("1")
        );
        assert_eq!(
            value_of(&text, "chat_node_neighbors_off").as_deref(),
            Some("2")
        );
        assert_eq!(value_of(&text, "chat_node_lamport").as_deref(), Some("42"));
        assert_eq!(
            value_of(&text, "chat_node_tree_epoch").as_deref(),
            Some("7")
        );
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
    }
}
