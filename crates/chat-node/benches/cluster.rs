//! Real processes on loopback: how fast a cluster gets roles and a writable root, and how
//! fast it gets them back after losing its leader, by SIGKILL (its connections drop) and by
//! SIGSTOP (a frozen host: connections stay open, only missing heartbeats tell).
//!
//! `cargo bench -p chat-node --bench cluster` prints one line per figure, with the target
//! it should meet (issue 10). It never fails on a slow machine; it only reports. With
//! `CHAT_BENCH_KEEP=1` the run directories (configurations and node logs) are kept and
//! their paths printed, to read what the nodes did.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chat_cluster::{LocalCluster, NodeSignal, Topology};
use serde_json::Value;
use support::{set, settled_tree, start, wait_until};

const NODES: u64 = 16;
const ROUNDS: usize = 3;
const DEADLINE: Duration = Duration::from_secs(60);
/// The shipped timings (`chat_control::defaults`), which the benched nodes run with.
const LIVENESS: Duration = Duration::from_millis(1_000);
const WRITER_LEASE: Duration = Duration::from_millis(500);

/// Time to one tree with roles everywhere, and to its root being writable.
#[derive(Default)]
struct Figures {
    roles: Vec<Duration>,
    writable: Vec<Duration>,
}

impl Figures {
    fn push(&mut self, (roles, writable): (Duration, Duration)) {
        self.roles.push(roles);
        self.writable.push(writable);
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let keep = std::env::var_os("CHAT_BENCH_KEEP").is_some();
    let mut ready = Figures::default();
    let mut after_kill = Figures::default();
    let mut after_stop = Figures::default();
    for round in 0..ROUNDS {
        let dir = tempfile::tempdir().expect("temp dir");
        let base = 26_000 + u16::try_from(round).expect("few rounds") * 100;
        // 4x4 grid: 16 nodes, 24 links, diameter 6.
        let mut cluster = start(NODES, Topology::Grid, dir.path(), base, &[]).await;
        let mut live = set(1..=NODES);

        ready.push(settle(&cluster, &live, Instant::now(), "ready").await);
        let leader = writable_leader(&cluster, &live).await;

        cluster.kill(leader, NodeSignal::Kill).expect("SIGKILL");
        let killed_at = Instant::now();
        live.remove(&leader);
        after_kill.push(settle(&cluster, &live, killed_at, "after SIGKILL").await);
        let leader = writable_leader(&cluster, &live).await;

        cluster.kill(leader, NodeSignal::Stop).expect("SIGSTOP");
        let stopped_at = Instant::now();
        live.remove(&leader);
        after_stop.push(settle(&cluster, &live, stopped_at, "after SIGSTOP").await);
        cluster.kill(leader, NodeSignal::Cont).expect("SIGCONT");
        cluster.down().await.expect("stop");
        finish(dir, keep, "grid");
    }
    let stop_target = LIVENESS + WRITER_LEASE + Duration::from_secs(1);
    report(
        "16 nodes ready (from the last start to every node having a role)",
        &ready.roles,
        None,
    );
    report(
        "16 nodes writable (from the last start to a writable root)",
        &ready.writable,
        Some(Duration::from_secs(2)),
    );
    report(
        "roles again after SIGKILL of the leader",
        &after_kill.roles,
        None,
    );
    report(
        "writable again after SIGKILL of the leader",
        &after_kill.writable,
        Some(Duration::from_secs(1)),
    );
    report(
        "roles again after SIGSTOP of the leader",
        &after_stop.roles,
        None,
    );
    report(
        "writable again after SIGSTOP of the leader (liveness 1 s, lease 0.5 s)",
        &after_stop.writable,
        Some(stop_target),
    );

    let mut mesh_after_stop = Figures::default();
    for round in 0..ROUNDS {
        let dir = tempfile::tempdir().expect("temp dir");
        let base = 26_900 - u16::try_from(round).expect("few rounds") * 20;
        let mut cluster = start(10, mesh_with_a_triangle(), dir.path(), base, &[]).await;
        let mut live = set(1..=10);
        settle(&cluster, &live, Instant::now(), "mesh ready").await;
        let leader = writable_leader(&cluster, &live).await;
        cluster.kill(leader, NodeSignal::Stop).expect("SIGSTOP");
        let stopped_at = Instant::now();
        live.remove(&leader);
        mesh_after_stop.push(settle(&cluster, &live, stopped_at, "mesh after SIGSTOP").await);
        cluster.kill(leader, NodeSignal::Cont).expect("SIGCONT");
        cluster.down().await.expect("stop");
        finish(dir, keep, "mesh");
    }
    report(
        "roles again after SIGSTOP of the leader, irregular 10-node mesh with a triangle",
        &mesh_after_stop.roles,
        None,
    );
    report(
        "writable again after SIGSTOP of the leader, irregular 10-node mesh with a triangle",
        &mesh_after_stop.writable,
        Some(stop_target),
    );
}

/// Waits, from `since`, for one settled tree over `live` (roles) and then for its root to
/// be writable; returns both times.
async fn settle(
    cluster: &LocalCluster,
    live: &BTreeSet<u64>,
    since: Instant,
    what: &str,
) -> (Duration, Duration) {
    wait_until(cluster, live, DEADLINE, what, |s| {
        settled_tree(s).map(|_| ())
    })
    .await;
    let roles = since.elapsed();
    wait_until(cluster, live, DEADLINE, what, writable_tree).await;
    (roles, since.elapsed())
}

/// A settled tree whose root is writable.
fn writable_tree(statuses: &BTreeMap<u64, Value>) -> Result<(), String> {
    let leader = settled_tree(statuses)?;
    (statuses[&leader]["quorum"]["writable"] == Value::Bool(true))
        .then_some(())
        .ok_or_else(|| format!("leader {leader} is not writable"))
}

async fn writable_leader(cluster: &LocalCluster, live: &BTreeSet<u64>) -> u64 {
    let (statuses, _) = wait_until(cluster, live, DEADLINE, "leader", writable_tree).await;
    settled_tree(&statuses).expect("settled")
}

/// Removes the run directory, or keeps it and says where (`CHAT_BENCH_KEEP`).
fn finish(dir: tempfile::TempDir, keep: bool, what: &str) {
    if keep {
        println!("kept the {what} run in {}", dir.keep().display());
    }
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

fn report(what: &str, samples: &[Duration], target: Option<Duration>) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let median = sorted[sorted.len() / 2];
    let max = sorted[sorted.len() - 1];
    let verdict = target.map_or_else(String::new, |target| {
        let met = if max < target { "met" } else { "MISSED" };
        format!(" (target < {} ms: {met})", target.as_millis())
    });
    println!(
        "bench {what}: median {} ms, max {} ms over {} runs{verdict}",
        median.as_millis(),
        max.as_millis(),
        samples.len()
    );
}
