//! Every default timing of the control plane, in one place, and the rules they must obey.
//!
//! The defaults aim at fast failover on a LAN: a leader killed (its host closes its
//! connections) is replaced in well under a second, one frozen (SIGSTOP, silence) within
//! `LIVENESS_TIMEOUT + WRITER_LEASE + 1 s`. On the critical path after a kill: the link-down
//! grace, then an immediate election by the root's children (the root is known gone, nobody
//! can adopt), then one probe round. After a freeze: the liveness timeout, the heal timeout
//! (the orphans look for adoption first), the election, then a probe round; by then the old
//! lease has lapsed on its own (it is shorter than the liveness timeout).
//!
//! [`check_timings`] enforces the rules; the node's config loader calls it and names the keys.

use std::time::Duration;

/// Heartbeat period to every neighbour.
pub const HEARTBEAT: Duration = Duration::from_millis(100);
/// A neighbour silent this long goes OFF.
pub const LIVENESS_TIMEOUT: Duration = Duration::from_millis(1000);
/// A dropped connection that does not come back within this goes OFF.
pub const LINK_DOWN_GRACE: Duration = Duration::from_millis(100);
/// First JOIN retry; doubles up to [`JOIN_BACKOFF_MAX`].
pub const JOIN_BACKOFF_INITIAL: Duration = Duration::from_millis(50);
/// Longest delay between JOIN retries.
pub const JOIN_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// An election with no progress for this long restarts.
pub const ELECTION_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a fresh node waits to be told a leader before electing.
pub const JOIN_WAIT: Duration = Duration::from_millis(300);
/// The root's tree-epoch period, which is also its quorum-probe period.
pub const EPOCH_TICK: Duration = Duration::from_millis(100);
/// How long an orphan waits for an adoption offer before electing. Offers need a fresher
/// epoch than the orphan's, so it must exceed `EPOCH_TICK + HEAL_MARGIN`.
pub const HEAL_TIMEOUT: Duration = Duration::from_millis(300);
/// What `HEAL_TIMEOUT` must exceed `EPOCH_TICK` by: a few message delays.
pub const HEAL_MARGIN: Duration = Duration::from_millis(100);
/// A root is writable for this long after sending a probe a majority answered; a member
/// that answered does not support another writer for this long. Shorter than the liveness
/// timeout, so a frozen writer's lease has lapsed by the time its members elect again.
pub const WRITER_LEASE: Duration = Duration::from_millis(500);
/// Period of resending unacknowledged tree messages.
pub const RETRANSMIT: Duration = Duration::from_millis(100);
/// A header stamped more than this ahead of the neighbour's previous stamp is dropped.
pub const MAX_LAMPORT_JUMP: u64 = 1 << 40;

/// A set of timings that breaks a rule; the message names the keys involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimingError {
    /// Orphans would elect before any adoption offer could reach them.
    #[error(
        "heal_timeout ({heal:?}) must exceed epoch_tick ({tick:?}) by more than {HEAL_MARGIN:?}"
    )]
    HealTooShort {
        /// `heal_timeout`.
        heal: Duration,
        /// `epoch_tick`.
        tick: Duration,
    },
    /// Every neighbour would go OFF between two heartbeats.
    #[error("liveness_timeout ({liveness:?}) must exceed heartbeat ({heartbeat:?})")]
    LivenessTooShort {
        /// `liveness_timeout`.
        liveness: Duration,
        /// `heartbeat`.
        heartbeat: Duration,
    },
    /// A frozen writer's lease would outlive its members' patience.
    #[error("writer_lease ({lease:?}) must be shorter than liveness_timeout ({liveness:?})")]
    LeaseTooLong {
        /// `writer_lease`.
        lease: Duration,
        /// `liveness_timeout`.
        liveness: Duration,
    },
    /// A root could never renew its lease between two probes.
    #[error("writer_lease ({lease:?}) must exceed epoch_tick ({tick:?})")]
    LeaseShorterThanTick {
        /// `writer_lease`.
        lease: Duration,
        /// `epoch_tick`.
        tick: Duration,
    },
}

/// The timings [`check_timings`] looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// `heartbeat`.
    pub heartbeat: Duration,
    /// `liveness_timeout`.
    pub liveness_timeout: Duration,
    /// `epoch_tick`.
    pub epoch_tick: Duration,
    /// `heal_timeout`.
    pub heal_timeout: Duration,
    /// `writer_lease`.
    pub writer_lease: Duration,
}

/// Checks the documented rules: `heal_timeout > epoch_tick + HEAL_MARGIN`,
/// `liveness_timeout > heartbeat`, `epoch_tick < writer_lease < liveness_timeout`.
pub fn check_timings(t: &Timings) -> Result<(), TimingError> {
    if t.heal_timeout <= t.epoch_tick + HEAL_MARGIN {
        return Err(TimingError::HealTooShort {
            heal: t.heal_timeout,
            tick: t.epoch_tick,
        });
    }
    if t.liveness_timeout <= t.heartbeat {
        return Err(TimingError::LivenessTooShort {
            liveness: t.liveness_timeout,
            heartbeat: t.heartbeat,
        });
    }
    if t.writer_lease >= t.liveness_timeout {
        return Err(TimingError::LeaseTooLong {
            lease: t.writer_lease,
            liveness: t.liveness_timeout,
        });
    }
    if t.writer_lease <= t.epoch_tick {
        return Err(TimingError::LeaseShorterThanTick {
            lease: t.writer_lease,
            tick: t.epoch_tick,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Timings {
        Timings {
            heartbeat: HEARTBEAT,
            liveness_timeout: LIVENESS_TIMEOUT,
            epoch_tick: EPOCH_TICK,
            heal_timeout: HEAL_TIMEOUT,
            writer_lease: WRITER_LEASE,
        }
    }

    #[test]
    fn the_defaults_obey_the_rules() {
        assert_eq!(check_timings(&defaults()), Ok(()));
    }

    #[test]
    fn each_rule_names_what_it_caught() {
        let heal = Timings {
            heal_timeout: Duration::from_millis(450),
            epoch_tick: Duration::from_millis(500),
            ..defaults()
        };
        assert!(matches!(
            check_timings(&heal),
            Err(TimingError::HealTooShort { .. })
        ));
        let liveness = Timings {
            liveness_timeout: HEARTBEAT,
            ..defaults()
        };
        assert!(matches!(
            check_timings(&liveness),
            Err(TimingError::LivenessTooShort { .. })
        ));
        let lease = Timings {
            writer_lease: LIVENESS_TIMEOUT,
            ..defaults()
        };
        assert!(matches!(
            check_timings(&lease),
            Err(TimingError::LeaseTooLong { .. })
        ));
        let short = Timings {
            writer_lease: EPOCH_TICK,
            ..defaults()
        };
        assert!(matches!(
            check_timings(&short),
            Err(TimingError::LeaseShorterThanTick { .. })
        ));
        assert!(check_timings(&heal)
            .unwrap_err()
            .to_string()
            .contains("heal_timeout"));
    }
}
