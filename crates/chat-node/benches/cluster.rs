//! Real processes on loopback: how fast a cluster gets roles, and how fast it gets them back
//! after losing its leader, by SIGKILL (its connections drop) and by SIGSTOP (a frozen host:
//! connections stay open, only missing heartbeats tell).
//!
//! `cargo bench -p chat-node --bench cluster` prints one line per figure. It never fails on
//! a slow machine; it only reports.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use chat_cluster::{NodeSignal, Topology};
use support::{set, settled_tree, start, wait_until};

const NODES: u64 = 16;
const ROUNDS: usize = 3;
const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut ready = Vec::new();
    let mut after_kill = Vec::new();
    let mut after_stop = Vec::new();
    for round in 0..ROUNDS {
        let dir = tempfile::tempdir().expect("temp dir");
        let base = 26_000 + u16::try_from(round).expect("few rounds") * 100;
        // 4x4 grid: 16 nodes, 24 links, diameter 6.
        let mut cluster = start(NODES, Topology::Grid, dir.path(), base, &[]).await;
        let mut live = set(1..=NODES);
        let settled = |s: &_| settled_tree(s).map(|_| ());

        let (statuses, took) = wait_until(&cluster, &live, DEADLINE, "ready", settled).await;
        ready.push(took);
        let leader = settled_tree(&statuses).expect("settled");

        cluster.kill(leader, NodeSignal::Kill).expect("SIGKILL");
        live.remove(&leader);
        let (statuses, took) =
            wait_until(&cluster, &live, DEADLINE, "after SIGKILL", settled).await;
        after_kill.push(took);
        let leader = settled_tree(&statuses).expect("settled");

        cluster.kill(leader, NodeSignal::Stop).expect("SIGSTOP");
        live.remove(&leader);
        let (_, took) = wait_until(&cluster, &live, DEADLINE, "after SIGSTOP", settled).await;
        after_stop.push(took);
        cluster.kill(leader, NodeSignal::Cont).expect("SIGCONT");
        cluster.down().await.expect("stop");
    }
    report(
        "16 nodes ready (from the last start to every node having a role)",
        &ready,
    );
    report("roles again after SIGKILL of the leader", &after_kill);
    report(
        "roles again after SIGSTOP of the leader (liveness 1.5 s)",
        &after_stop,
    );

    let mut mesh_after_stop = Vec::new();
    for round in 0..ROUNDS {
        let dir = tempfile::tempdir().expect("temp dir");
        let base = 26_900 - u16::try_from(round).expect("few rounds") * 20;
        let mut cluster = start(10, mesh_with_a_triangle(), dir.path(), base, &[]).await;
        let mut live = set(1..=10);
        let settled = |s: &_| settled_tree(s).map(|_| ());
        let (statuses, _) = wait_until(&cluster, &live, DEADLINE, "mesh ready", settled).await;
        let leader = settled_tree(&statuses).expect("settled");
        cluster.kill(leader, NodeSignal::Stop).expect("SIGSTOP");
        live.remove(&leader);
        let (_, took) = wait_until(&cluster, &live, DEADLINE, "mesh after SIGSTOP", settled).await;
        mesh_after_stop.push(took);
        cluster.kill(leader, NodeSignal::Cont).expect("SIGCONT");
        cluster.down().await.expect("stop");
    }
    report(
        "roles again after SIGSTOP of the leader, irregular 10-node mesh with a triangle",
        &mesh_after_stop,
    );
}

/// Ten nodes, irregular: a triangle 1-2-3, a square 3-4-5-6, a tail 6-7-8 and a chord 8-9,
/// 9-10, 10-2 that closes a long cycle back to the triangle.
fn mesh_with_a_triangle() -> Topology {
    Topology::Edges(vec![
        (1, 2),
        (2, 3),
        (1, 3),
        (3, 4),
        (4, 5),
        (5, 6),
        (6, 3),
        (6, 7),
        (7, 8),
        (8, 9),
        (9, 10),
        (10, 2),
    ])
}

fn report(what: &str, samples: &[Duration]) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let median = sorted[sorted.len() / 2];
    let max = sorted[sorted.len() - 1];
    println!(
        "bench {what}: median {} ms, max {} ms over {} runs",
        median.as_millis(),
        max.as_millis(),
        samples.len()
    );
}
