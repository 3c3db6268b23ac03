//! Node identities on the wire and peer endpoints.

use crate::TransportError;

/// The ZeroMQ identity of node `id`: `node-<id>`, as the prototype used.
pub fn node_identity(id: u64) -> String {
    format!("node-{id}")
}

/// The node id in a ZeroMQ identity, or `None` unless it is exactly `node-<id>` in the
/// canonical decimal form [`node_identity`] writes.
///
/// Non-canonical spellings (`node-007`, `node-+7`) are refused, because ZeroMQ routes by
/// the exact bytes: accepting them would name a peer we could not answer.
pub fn parse_node_identity(identity: &[u8]) -> Option<u64> {
    let digits = identity.strip_prefix(b"node-")?;
    let text = std::str::from_utf8(digits).ok()?;
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let id: u64 = text.parse().ok()?;
    (id.to_string() == text).then_some(id)
}

/// Checks that `endpoint` is `tcp://<host>:<port>` with a port in 1..=65535, so a typo
/// fails at the call instead of as a silent background retry inside ZeroMQ.
pub(crate) fn validate_peer_endpoint(endpoint: &str) -> Result<(), TransportError> {
    let invalid = |reason| TransportError::InvalidEndpoint {
        endpoint: endpoint.to_owned(),
        reason,
    };
    let address = endpoint
        .strip_prefix("tcp://")
        .ok_or_else(|| invalid("must start with tcp://"))?;
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| invalid("must end with :<port>"))?;
    if host.is_empty() || host == "*" {
        return Err(invalid("needs a host to connect to"));
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(invalid("port must be a number in 1..=65535")),
        Ok(_) => Ok(()),
    }
}

/// The port of a `tcp://host:port` endpoint, used to match monitor events whose endpoint
/// ZeroMQ spells differently from the one we connected to (a resolved host name).
pub(crate) fn endpoint_port(endpoint: &str) -> Option<&str> {
    endpoint.rsplit_once(':').map(|(_, port)| port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_round_trips_for_extreme_ids() {
        for id in [0, 1, 4, 46004, u64::MAX] {
            assert_eq!(parse_node_identity(node_identity(id).as_bytes()), Some(id));
        }
    }

    #[test]
    fn non_canonical_or_foreign_identities_are_refused() {
        for bad in [
            &b""[..],
            b"node-",
            b"node-+7",
            b"node-007",
            b"node--1",
            b"node-7 ",
            b"node-18446744073709551616",
            b"Node-7",
            b"\0\x12\x34\x56\x78",
            b"node-\xff",
        ] {
            assert_eq!(parse_node_identity(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn peer_endpoints_must_name_a_host_and_port() {
        assert!(validate_peer_endpoint("tcp://127.0.0.1:46004").is_ok());
        assert!(validate_peer_endpoint("tcp://node4.example:46004").is_ok());
        assert!(validate_peer_endpoint("tcp://[::1]:46004").is_ok());
        for bad in [
            "127.0.0.1:46004",
            "udp://127.0.0.1:46004",
            "tcp://127.0.0.1",
            "tcp://:46004",
            "tcp://*:46004",
            "tcp://127.0.0.1:0",
            "tcp://127.0.0.1:70000",
            "tcp://127.0.0.1:x",
        ] {
            assert!(
                matches!(
                    validate_peer_endpoint(bad),
                    Err(TransportError::InvalidEndpoint { .. })
                ),
                "{bad}"
            );
        }
    }
}
