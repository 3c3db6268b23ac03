//! Messages and simulated time per election on random connected graphs (average degree ~4),
//! against Yo-Yo's O(m log n) message bound. Prints figures; never fails on slowness.
//!
//! Two cases per size: one node starts the election (the others wait far longer), which is
//! the algorithm alone; and a cold boot where every node's join wait fires together, which
//! adds the cost of competing runs until the strongest has flooded.

use std::time::{Duration, Instant};

use chat_control::sim::{Sim, SimConfig};
use rand::seq::SliceRandom;
use rand::Rng;

fn random_graph(sim: &mut Sim, n: u64, degree: u64) -> u64 {
    // Ids shuffled over the graph, so that id order says nothing about position (a random
    // tree grown in id order would make node 1 the only source).
    let mut ids: Vec<u64> = (1..=n).collect();
    ids.shuffle(sim.rng());
    let mut edges = std::collections::BTreeSet::new();
    for i in 1..n as usize {
        let parent = ids[sim.rng().random_range(0..i)];
        let (a, b) = (parent, ids[i]);
        edges.insert((a.min(b), a.max(b)));
    }
    let target = (n * degree / 2).max(n - 1);
    while (edges.len() as u64) < target && n > 2 {
        let a = sim.rng().random_range(1..=n);
        let b = sim.rng().random_range(1..=n);
        if a != b {
            edges.insert((a.min(b), a.max(b)));
        }
    }
    for &(a, b) in &edges {
        sim.add_edge(a, b);
    }
    edges.len() as u64
}

struct Figures {
    m: u64,
    election_messages: u64,
    tree_messages: u64,
    simulated: Duration,
    wall: Duration,
}

fn one_election(n: u64, seed: u64, cold_boot: bool) -> Figures {
    let wall = Instant::now();
    let mut sim = Sim::new(SimConfig::new(seed));
    let m = random_graph(&mut sim, n, 4);
    sim.scale_timeouts_for(n as usize);
    sim.set_cluster_size(n as usize);
    if cold_boot {
        for id in 1..=n {
            sim.start(id);
        }
    } else {
        // The initiator is a random node, not the winner.
        let initiator = sim.rng().random_range(1..=n);
        sim.start(initiator);
        sim.control_config_mut().join_wait = Duration::from_secs(3600);
        for id in (1..=n).filter(|&id| id != initiator) {
            sim.start(id);
        }
    }
    if let Err(e) = sim.settle(Duration::from_secs(600), Duration::from_millis(500)) {
        eprintln!("n={n} seed={seed}: did not settle: {e}");
    }
    let done = sim.stats.last_role_change.unwrap_or_default();
    let began = sim.stats.first_election_message.unwrap_or_default();
    Figures {
        m,
        election_messages: sim.stats.messages.get("election").copied().unwrap_or(0),
        tree_messages: sim.stats.messages.get("tree").copied().unwrap_or(0),
        simulated: done.saturating_sub(began),
        wall: wall.elapsed(),
    }
}

fn main() {
    for cold_boot in [false, true] {
        let case = if cold_boot {
            "cold boot"
        } else {
            "one initiator"
        };
        for n in [10u64, 100, 1000] {
            let runs = if n >= 1000 { 3 } else { 10 };
            let mut sum = (0u64, 0u64, 0u64, Duration::ZERO, Duration::ZERO);
            for seed in 0..runs {
                let f = one_election(n, seed, cold_boot);
                sum.0 += f.m;
                sum.1 += f.election_messages;
                sum.2 += f.tree_messages;
                sum.3 += f.simulated;
                sum.4 += f.wall;
            }
            let m = sum.0 as f64 / runs as f64;
            let msgs = sum.1 as f64 / runs as f64;
            let bound = m * (n as f64).log2();
            println!(
                "bench election ({case}) n={n} m={m:.0}: {msgs:.0} election messages per election ({:.2} x m·log2 n = {bound:.0}), {:.0} tree messages",
                msgs / bound,
                sum.2 as f64 / runs as f64
            );
            println!(
                "bench election ({case}) n={n}: {:.1} ms simulated from the first election message to the last role (message delay 0.1-5 ms), {:.1} ms wall to simulate",
                sum.3.as_secs_f64() * 1000.0 / runs as f64,
                sum.4.as_secs_f64() * 1000.0 / runs as f64
            );
        }
    }
}
