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
    if matches!(trace.step, Step::EpochTick { .. }) {
        tracing::debug!(target: "tree", subsystem = "tree", step_lamport = trace.lamport, "{:?}", trace.step);
        return;
    }
    let run = trace.run.map(|run| run.to_string());
    let step = &trace.step;
    // tracing needs the target as a constant, hence one arm per subsystem.
    match trace.subsystem {
        Subsystem::Election => tracing::info!(
            target: "election", subsystem = "election",
            run = run.as_deref(), round = trace.round, step_lamport = trace.lamport,
            "{step:?}"
        ),
        Subsystem::Tree => tracing::info!(
            target: "tree", subsystem = "tree",
            run = run.as_deref(), round = trace.round, step_lamport = trace.lamport,
            "{step:?}"
        ),
        Subsystem::Topology => tracing::info!(
            target: "topology", subsystem = "topology",
            run = run.as_deref(), step_lamport = trace.lamport,
            "{step:?}"
        ),
    }
}
