//! Turning ZeroMQ socket-monitor events into link changes per peer.
//!
//! The monitor reports connections by endpoint; the node thinks in peers. [`LinkTracker`]
//! remembers which endpoint we connected to for each peer and whether that link is up, so
//! each drop becomes exactly one [`LinkChange::Down`] however many events ZeroMQ sends
//! about it (a drop is followed by a stream of reconnect attempts and closes).

use std::collections::HashMap;

use crate::identity::endpoint_port;

/// One event read from the monitor socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MonitorEvent {
    /// The raw `ZMQ_EVENT_*` number.
    pub(crate) event: u16,
    /// The endpoint the event is about, as ZeroMQ spells it.
    pub(crate) endpoint: String,
}

/// Decodes the two frames of a monitor message: `[event u16 LE, value u32 LE]`, then the
/// endpoint. Anything else is `None`: the monitor is local, so this only guards against a
/// libzmq that changed its format, and must not panic either way.
pub(crate) fn parse_monitor_event(frames: &[Vec<u8>]) -> Option<MonitorEvent> {
    let [header, endpoint] = frames else {
        return None;
    };
    let event_bytes: [u8; 2] = header.get(..2)?.try_into().ok()?;
    Some(MonitorEvent {
        event: u16::from_le_bytes(event_bytes),
        endpoint: String::from_utf8_lossy(endpoint).into_owned(),
    })
}

/// What a monitor event means for a link. Raw numbers are compared rather than using
/// `zmq::SocketEvent::from_raw`, which panics on event numbers it does not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LinkSignal {
    /// The ZMTP handshake finished: the peer's identity is routable from now on.
    Up,
    /// The connection is gone (or never came up).
    Down,
    /// Progress we do not report (connect delayed, retried, listening, …).
    Other,
}

fn link_signal(event: u16) -> LinkSignal {
    use zmq::SocketEvent as E;
    // CONNECTED comes before the handshake, when a send would still be unroutable, so the
    // link counts as up only once the handshake succeeded.
    if event == E::HANDSHAKE_SUCCEEDED.to_raw() {
        LinkSignal::Up
    } else if [
        E::DISCONNECTED,
        E::CLOSED,
        E::HANDSHAKE_FAILED_NO_DETAIL,
        E::HANDSHAKE_FAILED_PROTOCOL,
        E::HANDSHAKE_FAILED_AUTH,
    ]
    .iter()
    .any(|down| down.to_raw() == event)
    {
        LinkSignal::Down
    } else {
        LinkSignal::Other
    }
}

/// A change of a peer's link state, reported once per transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LinkChange {
    Up(u64),
    Down(u64),
}

/// What the socket must do for a [`LinkTracker::connect`] call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ConnectPlan {
    /// Already connected to that endpoint for that peer: nothing to do.
    AlreadyConnected,
    /// Connect to the new endpoint, after closing the peer's old link if any.
    Connect { replaced: Option<ClosedLink> },
}

/// A link we stopped tracking: the socket must disconnect from its endpoint, and if it was
/// up the consumer must hear it is down, so its LinkUp/LinkDown events keep alternating.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ClosedLink {
    pub(crate) endpoint: String,
    pub(crate) was_up: bool,
}

#[derive(Clone, Debug)]
struct PeerLink {
    endpoint: String,
    up: bool,
}

impl PeerLink {
    fn closed(self) -> ClosedLink {
        ClosedLink {
            endpoint: self.endpoint,
            was_up: self.up,
        }
    }
}

/// The endpoints we connected to, by peer, and whether each link is up.
#[derive(Debug, Default)]
pub(crate) struct LinkTracker {
    peers: HashMap<u64, PeerLink>,
}

impl LinkTracker {
    /// Records that we connect to `peer` at `endpoint`.
    pub(crate) fn connect(&mut self, peer: u64, endpoint: &str) -> ConnectPlan {
        if let Some(link) = self.peers.get(&peer) {
            if link.endpoint == endpoint {
                return ConnectPlan::AlreadyConnected;
            }
        }
        let previous = self.peers.insert(
            peer,
            PeerLink {
                endpoint: endpoint.to_owned(),
                up: false,
            },
        );
        ConnectPlan::Connect {
            replaced: previous.map(PeerLink::closed),
        }
    }

    /// Forgets `peer`; returns its link if we were connected.
    pub(crate) fn disconnect(&mut self, peer: u64) -> Option<ClosedLink> {
        self.peers.remove(&peer).map(PeerLink::closed)
    }

    /// Applies a monitor event; returns the link change it causes, if any.
    pub(crate) fn on_event(&mut self, event: &MonitorEvent) -> Option<LinkChange> {
        let up = match link_signal(event.event) {
            LinkSignal::Up => true,
            LinkSignal::Down => false,
            LinkSignal::Other => return None,
        };
        let peer = self.peer_for_endpoint(&event.endpoint)?;
        let link = self.peers.get_mut(&peer)?;
        if link.up == up {
            return None;
        }
        link.up = up;
        Some(if up {
            LinkChange::Up(peer)
        } else {
            LinkChange::Down(peer)
        })
    }

    /// The peer an event endpoint belongs to. ZeroMQ reports the address it resolved, which
    /// differs from what we connected to when that named a host; ports are derived from node
    /// ids and so nearly unique, so a port that matches exactly one peer identifies it.
    /// Events about connections other nodes opened to us match no peer and are ignored.
    fn peer_for_endpoint(&self, endpoint: &str) -> Option<u64> {
        if let Some((&peer, _)) = self.peers.iter().find(|(_, l)| l.endpoint == endpoint) {
            return Some(peer);
        }
        let port = endpoint_port(endpoint)?;
        let mut same_port = self
            .peers
            .iter()
            .filter(|(_, link)| endpoint_port(&link.endpoint) == Some(port));
        match (same_port.next(), same_port.next()) {
            (Some((&peer, _)), None) => Some(peer),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zmq::SocketEvent as E;

    fn event(kind: E, endpoint: &str) -> MonitorEvent {
        MonitorEvent {
            event: kind.to_raw(),
            endpoint: endpoint.to_owned(),
        }
    }

    const PEER_ENDPOINT: &str = "tcp://127.0.0.1:46004";

    fn tracker_with_peer() -> LinkTracker {
        let mut tracker = LinkTracker::default();
        assert_eq!(
            tracker.connect(4, PEER_ENDPOINT),
            ConnectPlan::Connect { replaced: None }
        );
        tracker
    }

    #[test]
    fn monitor_frames_decode_and_garbage_is_refused() {
        let mut header = E::DISCONNECTED.to_raw().to_le_bytes().to_vec();
        header.extend_from_slice(&7u32.to_le_bytes());
        assert_eq!(
            parse_monitor_event(&[header.clone(), PEER_ENDPOINT.as_bytes().to_vec()]),
            Some(event(E::DISCONNECTED, PEER_ENDPOINT))
        );
        assert_eq!(parse_monitor_event(&[header.clone()]), None);
        assert_eq!(parse_monitor_event(&[vec![1], b"x".to_vec()]), None);
        assert_eq!(
            parse_monitor_event(&[header.clone(), b"a".to_vec(), b"b".to_vec()]),
            None
        );
    }

    #[test]
    fn handshake_then_drop_gives_one_up_and_one_down() {
        let mut tracker = tracker_with_peer();
        assert_eq!(tracker.on_event(&event(E::CONNECTED, PEER_ENDPOINT)), None);
        assert_eq!(
            tracker.on_event(&event(E::HANDSHAKE_SUCCEEDED, PEER_ENDPOINT)),
            Some(LinkChange::Up(4))
        );
        assert_eq!(
            tracker.on_event(&event(E::DISCONNECTED, PEER_ENDPOINT)),
            Some(LinkChange::Down(4))
        );
        // The reconnect attempts that follow a drop must not repeat the LinkDown.
        for retry in [E::CONNECT_DELAYED, E::CLOSED, E::CONNECT_RETRIED, E::CLOSED] {
            assert_eq!(tracker.on_event(&event(retry, PEER_ENDPOINT)), None);
        }
        assert_eq!(
            tracker.on_event(&event(E::HANDSHAKE_SUCCEEDED, PEER_ENDPOINT)),
            Some(LinkChange::Up(4))
        );
    }

    #[test]
    fn a_peer_that_never_came_up_reports_no_down() {
        let mut tracker = tracker_with_peer();
        assert_eq!(tracker.on_event(&event(E::CLOSED, PEER_ENDPOINT)), None);
        assert_eq!(
            tracker.on_event(&event(E::CONNECT_RETRIED, PEER_ENDPOINT)),
            None
        );
    }

    #[test]
    fn events_of_unknown_endpoints_and_unknown_numbers_are_ignored() {
        let mut tracker = tracker_with_peer();
        assert_eq!(
            tracker.on_event(&event(E::HANDSHAKE_SUCCEEDED, "tcp://127.0.0.1:46001")),
            None
        );
        let unknown = MonitorEvent {
            event: 0x4000,
            endpoint: PEER_ENDPOINT.to_owned(),
        };
        assert_eq!(tracker.on_event(&unknown), None);
    }

    #[test]
    fn a_resolved_host_name_matches_by_unique_port() {
        let mut tracker = LinkTracker::default();
        let _ = tracker.connect(4, "tcp://node4.lan:46004");
        let _ = tracker.connect(5, "tcp://node5.lan:46005");
        assert_eq!(
            tracker.on_event(&event(E::HANDSHAKE_SUCCEEDED, "tcp://10.0.0.4:46004")),
            Some(LinkChange::Up(4))
        );
        // Two peers on one port cannot be told apart by port: no guess.
        let _ = tracker.connect(6, "tcp://node6.lan:46005");
        assert_eq!(
            tracker.on_event(&event(E::HANDSHAKE_SUCCEEDED, "tcp://10.0.0.5:46005")),
            None
        );
    }

    #[test]
    fn reconnecting_elsewhere_replaces_and_disconnect_forgets() {
        let mut tracker = tracker_with_peer();
        assert_eq!(
            tracker.connect(4, PEER_ENDPOINT),
            ConnectPlan::AlreadyConnected
        );
        let _ = tracker.on_event(&event(E::HANDSHAKE_SUCCEEDED, PEER_ENDPOINT));
        assert_eq!(
            tracker.connect(4, "tcp://127.0.0.1:47004"),
            ConnectPlan::Connect {
                replaced: Some(ClosedLink {
                    endpoint: PEER_ENDPOINT.to_owned(),
                    was_up: true
                })
            }
        );
        assert_eq!(
            tracker.disconnect(4),
            Some(ClosedLink {
                endpoint: "tcp://127.0.0.1:47004".to_owned(),
                was_up: false
            })
        );
        assert_eq!(tracker.disconnect(4), None);
        assert_eq!(
            tracker.on_event(&event(E::HANDSHAKE_SUCCEEDED, "tcp://127.0.0.1:47004")),
            None
        );
    }
}
