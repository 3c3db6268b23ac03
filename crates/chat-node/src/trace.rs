//! Turns the control plane's trace steps into tracing events under their subsystem, so
//! `journalctl -u chat-node@4 SUBSYSTEM=election` reads as the election's story.

use chat_control::{Step, Subsystem, Trace};

use crate::metrics::Metrics;

/// Logs one step (and counts the ones that have a metric).
pub(crate) fn record(trace: &Trace, metrics: &Metrics) {
    match trace.step {
        Step::RunStarted { .. } => metrics.election_started(),
        Step::Healed { .. } => metrics.healing(),
        _ => {}
    }
    // The epoch ticks every few hundred milliseconds: useful when debugging, noise otherwise.
    // Neighbours coming and going are logged by the topology machine itself, with the reason.
    let detail = matches!(
        trace.step,
        Step::EpochTick { .. } | Step::NeighborOn { .. } | Step::NeighborOff { .. }
    );
    let run = trace.run.map(|run| run.to_string());
    let (run, round, lamport, step) = (run.as_deref(), trace.round, trace.lamport, &trace.step);
    // tracing needs the target and level as constants, hence one arm per combination.
    macro_rules! log {
        ($level:ident, $subsystem:literal) => {
            tracing::$level!(
                target: $subsystem, subsystem = $subsystem,
                run, round, step_lamport = lamport, "{step}"
            )
        };
    }
    match (trace.subsystem, detail) {
        (Subsystem::Election, false) => log!(info, "election"),
        (Subsystem::Election, true) => log!(debug, "election"),
        (Subsystem::Tree, false) => log!(info, "tree"),
        (Subsystem::Tree, true) => log!(debug, "tree"),
        (Subsystem::Topology, false) => log!(info, "topology"),
        (Subsystem::Topology, true) => log!(debug, "topology"),
    }
}
