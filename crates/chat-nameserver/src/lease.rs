//! The lease table: which input nodes are live, and whose turn it is. Pure: time comes in as
//! an argument, so tests move it by hand.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A live lease as reported to operators and the redirect front.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LiveLease {
    /// The input node's id.
    pub node_id: u64,
    /// Its public HTTP address, `host:port`.
    pub http_address: String,
    /// Time left before the lease expires unless renewed.
    #[serde(rename = "expires_in_ms", serialize_with = "serialize_millis")]
    pub expires_in: Duration,
}

fn serialize_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Identifies one lease stream, so that the end of an old stream cannot end the lease a newer
/// stream of the same node took meanwhile (the two are handled by different tasks, in no
/// guaranteed order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u64);

#[derive(Debug, Clone)]
struct Lease {
    http_address: String,
    expires_at: Instant,
    /// The stream holding the lease; `None` for a unary registration.
    holder: Option<StreamId>,
}

impl Lease {
    fn is_live(&self, now: Instant) -> bool {
        now < self.expires_at
    }
}

/// How long leases last: what a registration gets when it asks for nothing, and the most it
/// can get (so a typo in a node's config cannot pin a dead node in rotation for days).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeasePolicy {
    /// TTL granted to a request with TTL 0.
    pub default_ttl: Duration,
    /// Upper bound on any granted TTL.
    pub max_ttl: Duration,
    /// Upper bound on the TTL of a lease held over a stream: the stream keeps such a lease
    /// alive, so its TTL only matters for a host that vanished without closing its
    /// connection, and must end that lease within the cluster's liveness timeout.
    pub stream_ttl: Duration,
    /// Most leases held at once.
    pub max_leases: usize,
}

impl LeasePolicy {
    /// The TTL granted for a requested one (`Duration::ZERO` = default).
    pub fn grant(&self, requested: Duration) -> Duration {
        let wanted = if requested.is_zero() {
            self.default_ttl
        } else {
            requested
        };
        wanted.min(self.max_ttl)
    }

    /// The TTL granted on a lease stream for a requested one.
    pub fn grant_on_stream(&self, requested: Duration) -> Duration {
        self.grant(requested).min(self.stream_ttl)
    }
}

/// Longest `http_address` accepted: a DNS name is at most 253 bytes, plus `:65535`.
pub const MAX_HTTP_ADDRESS_LEN: usize = 259;

/// Leases longer than this are cut to it, so `now + ttl` stays representable.
const LONGEST_LEASE: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The table holds its maximum number of leases; a new node cannot join.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the nameserver holds its maximum of {limit} leases")]
pub struct TableFull {
    /// The maximum.
    pub limit: usize,
}

/// Leases keyed by node id (so a node never appears twice) plus the round-robin cursor.
#[derive(Debug)]
pub struct LeaseTable {
    leases: BTreeMap<u64, Lease>,
    /// Most leases held at once, so registrations cannot grow memory without bound.
    limit: usize,
    // The node the last redirect went to; the next one goes to the next live id after it, so
    // the rotation stays fair while nodes come and go.
    last_served: Option<u64>,
}

impl LeaseTable {
    /// An empty table holding at most `limit` leases.
    pub fn new(limit: usize) -> Self {
        Self {
            leases: BTreeMap::new(),
            limit,
            last_served: None,
        }
    }

    /// Takes or renews `node_id`'s lease, replacing its address; `holder` is the stream that
    /// holds it (`None` for a unary registration). Returns whether the node was not live
    /// before (a new entry in rotation), or [`TableFull`] for a new node when the table is full.
    pub fn grant(
        &mut self,
        node_id: u64,
        http_address: String,
        ttl: Duration,
        now: Instant,
        holder: Option<StreamId>,
    ) -> Result<bool, TableFull> {
        if !self.leases.contains_key(&node_id) && self.leases.len() >= self.limit {
            self.remove_expired(now);
            if self.leases.len() >= self.limit {
                return Err(TableFull { limit: self.limit });
            }
        }
        let expires_at = now.checked_add(ttl.min(LONGEST_LEASE)).unwrap_or(now);
        let previous = self.leases.insert(
            node_id,
            Lease {
                http_address,
                expires_at,
                holder,
            },
        );
        Ok(!previous.is_some_and(|lease| lease.is_live(now)))
    }

    /// Ends `node_id`'s lease, whoever holds it. Returns whether it had a live one.
    pub fn withdraw(&mut self, node_id: u64, now: Instant) -> bool {
        self.leases
            .remove(&node_id)
            .is_some_and(|lease| lease.is_live(now))
    }

    /// Ends `node_id`'s lease if `stream` still holds it (a newer stream or registration may
    /// have taken it over). Returns whether the stream's lease was in the table (live, or
    /// expired but not yet swept).
    pub fn release(&mut self, node_id: u64, stream: StreamId) -> bool {
        match self.leases.get(&node_id) {
            Some(lease) if lease.holder == Some(stream) => self.leases.remove(&node_id).is_some(),
            _ => false,
        }
    }

    /// How many leases are live.
    pub fn live_count(&self, now: Instant) -> usize {
        self.leases.values().filter(|l| l.is_live(now)).count()
    }

    /// Drops expired leases and returns their node ids.
    pub fn remove_expired(&mut self, now: Instant) -> Vec<u64> {
        let expired: Vec<u64> = self
            .leases
            .iter()
            .filter(|(_, lease)| !lease.is_live(now))
            .map(|(id, _)| *id)
            .collect();
        for id in &expired {
            self.leases.remove(id);
        }
        expired
    }

    /// The live lease whose turn it is (round-robin by node id), or `None` when none is live.
    pub fn next_target(&mut self, now: Instant) -> Option<LiveLease> {
        let after = self.last_served.map_or(0, |id| id.saturating_add(1));
        let mut live = |(_, lease): &(&u64, &Lease)| lease.is_live(now);
        let (id, lease) = self
            .leases
            .range(after..)
            .find(&mut live)
            .or_else(|| self.leases.range(..after).find(&mut live))?;
        let chosen = live_lease(*id, lease, now);
        self.last_served = Some(chosen.node_id);
        Some(chosen)
    }

    /// Every live lease, ordered by node id.
    pub fn live(&self, now: Instant) -> Vec<LiveLease> {
        self.leases
            .iter()
            .filter(|(_, lease)| lease.is_live(now))
            .map(|(id, lease)| live_lease(*id, lease, now))
            .collect()
    }
}

fn live_lease(node_id: u64, lease: &Lease, now: Instant) -> LiveLease {
    LiveLease {
        node_id,
        http_address: lease.http_address.clone(),
        expires_in: lease.expires_at - now,
    }
}

/// Checks that `address` is a bare `host:port` (no scheme, path or user info) so it can be
/// put in a `Location` header as is, and returns it normalised. Length is checked apart
/// (against [`MAX_HTTP_ADDRESS_LEN`]) so that refusals can be counted by reason.
pub fn parse_http_address(address: &str) -> Result<String, String> {
    if address.contains('@') {
        return Err(format!("{address:?} must not contain user info"));
    }
    let authority: http::uri::Authority = address
        .parse()
        .map_err(|e| format!("{address:?} is not host:port ({e})"))?;
    if authority.as_str() != address {
        return Err(format!("{address:?} is not host:port"));
    }
    match authority.port_u16() {
        Some(port) if port != 0 && !authority.host().is_empty() => Ok(authority.to_string()),
        _ => Err(format!("{address:?} needs a host and a port in 1..=65535")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(10);
    const LIMIT: usize = 100;

    fn served(table: &mut LeaseTable, now: Instant, times: usize) -> Vec<u64> {
        (0..times)
            .filter_map(|_| table.next_target(now))
            .map(|l| l.node_id)
            .collect()
    }

    #[test]
    fn round_robin_visits_every_live_node_in_turn() {
        let now = Instant::now();
        let mut table = LeaseTable::new(LIMIT);
        for id in [3, 1, 2] {
            table
                .grant(id, format!("127.0.0.1:808{id}"), TTL, now, None)
                .expect("room");
        }
        assert_eq!(served(&mut table, now, 7), vec![1, 2, 3, 1, 2, 3, 1]);
    }

    #[test]
    fn rotation_continues_fairly_when_a_node_joins() {
        let now = Instant::now();
        let mut table = LeaseTable::new(LIMIT);
        table.grant(1, "a:1".into(), TTL, now, None).expect("room");
        table.grant(3, "c:3".into(), TTL, now, None).expect("room");
        assert_eq!(served(&mut table, now, 1), vec![1]);
        table.grant(2, "b:2".into(), TTL, now, None).expect("room");
        assert_eq!(served(&mut table, now, 3), vec![2, 3, 1]);
    }

    #[test]
    fn expired_lease_leaves_the_rotation() {
        let start = Instant::now();
        let mut table = LeaseTable::new(LIMIT);
        table
            .grant(1, "a:1".into(), Duration::from_secs(5), start, None)
            .expect("room");
        table
            .grant(2, "b:2".into(), Duration::from_secs(20), start, None)
            .expect("room");
        let later = start + Duration::from_secs(5);
        assert_eq!(served(&mut table, later, 3), vec![2, 2, 2]);
        assert_eq!(table.live(later).len(), 1);
        assert_eq!(table.remove_expired(later), vec![1]);
        assert_eq!(table.next_target(start + Duration::from_secs(20)), None);
    }

    #[test]
    fn renewal_extends_the_lease_and_replaces_the_address() {
        let start = Instant::now();
        let mut table = LeaseTable::new(LIMIT);
        assert!(table
            .grant(1, "a:1".into(), TTL, start, None)
            .expect("room"));
        let renew_at = start + Duration::from_secs(8);
        assert!(
            !table
                .grant(1, "a2:1".into(), TTL, renew_at, None)
                .expect("room"),
            "a renewal is not a new entry"
        );
        let check = start + Duration::from_secs(15);
        let live = table.live(check);
        assert_eq!(
            live,
            vec![LiveLease {
                node_id: 1,
                http_address: "a2:1".into(),
                expires_in: Duration::from_secs(3)
            }]
        );
    }

    #[test]
    fn re_registering_after_expiry_counts_as_new() {
        let start = Instant::now();
        let mut table = LeaseTable::new(LIMIT);
        table
            .grant(1, "a:1".into(), TTL, start, None)
            .expect("room");
        assert!(table
            .grant(1, "a:1".into(), TTL, start + TTL, None)
            .expect("room"));
    }

    #[test]
    fn withdraw_removes_at_once() {
        let now = Instant::now();
        let mut table = LeaseTable::new(LIMIT);
        table.grant(1, "a:1".into(), TTL, now, None).expect("room");
        assert!(table.withdraw(1, now));
        assert!(!table.withdraw(1, now));
        assert_eq!(table.next_target(now), None);
    }

    #[test]
    fn an_old_stream_cannot_end_the_lease_a_newer_one_holds() {
        let now = Instant::now();
        let mut table = LeaseTable::new(LIMIT);
        let (old, new) = (StreamId(1), StreamId(2));
        table
            .grant(1, "a:1".into(), TTL, now, Some(old))
            .expect("room");
        table
            .grant(1, "a:1".into(), TTL, now, Some(new))
            .expect("room");
        assert!(!table.release(1, old), "the old stream no longer holds it");
        assert_eq!(table.live_count(now), 1);
        assert!(table.release(1, new));
        assert_eq!(table.live_count(now), 0);
    }

    #[test]
    fn a_full_table_refuses_new_nodes_but_renews_known_ones() {
        let now = Instant::now();
        let mut table = LeaseTable::new(2);
        table.grant(1, "a:1".into(), TTL, now, None).expect("room");
        table.grant(2, "b:2".into(), TTL, now, None).expect("room");
        assert_eq!(
            table.grant(3, "c:3".into(), TTL, now, None),
            Err(TableFull { limit: 2 })
        );
        assert_eq!(table.grant(2, "b:2".into(), TTL, now, None), Ok(false));
        // Expired leases make room.
        let later = now + TTL;
        assert_eq!(table.grant(3, "c:3".into(), TTL, later, None), Ok(true));
    }

    #[test]
    fn policy_defaults_and_caps_the_ttl() {
        let policy = LeasePolicy {
            default_ttl: Duration::from_secs(15),
            max_ttl: Duration::from_secs(60),
            stream_ttl: Duration::from_secs(2),
            max_leases: LIMIT,
        };
        assert_eq!(policy.grant(Duration::ZERO), Duration::from_secs(15));
        assert_eq!(policy.grant(Duration::from_secs(5)), Duration::from_secs(5));
        assert_eq!(
            policy.grant(Duration::from_secs(3600)),
            Duration::from_secs(60)
        );
        assert_eq!(
            policy.grant_on_stream(Duration::ZERO),
            Duration::from_secs(2)
        );
        assert_eq!(
            policy.grant_on_stream(Duration::from_secs(1)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn huge_ttl_does_not_overflow() {
        let now = Instant::now();
        let mut table = LeaseTable::new(LIMIT);
        table
            .grant(1, "a:1".into(), Duration::MAX, now, None)
            .expect("room");
        assert_eq!(table.live(now).len(), 1);
    }

    #[test]
    fn http_addresses_must_be_bare_host_port() {
        assert_eq!(
            parse_http_address("127.0.0.1:8081"),
            Ok("127.0.0.1:8081".into())
        );
        assert_eq!(
            parse_http_address("chat.example:80"),
            Ok("chat.example:80".into())
        );
        assert_eq!(parse_http_address("[::1]:8081"), Ok("[::1]:8081".into()));
        for bad in [
            "",
            "127.0.0.1",
            "http://a:1",
            "a:1/x",
            "user@a:1",
            "a:0",
            "a:99999",
            "a:1?x",
            ":80",
        ] {
            assert!(parse_http_address(bad).is_err(), "{bad:?} accepted");
        }
    }
}
