//! Multi-process tests: real `chat-node` processes on loopback, observed through their
//! `/status` endpoints.

mod support;

use std::time::Duration;

use chat_cluster::{NodeSignal, Topology};
use support::{link_up, neighbor_state, set, settled_tree, start, wait_until};

/// Generous: these bound a poll, they are not performance targets (see the benches).
const DEADLINE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_complete_a_killed_node_goes_off_through_its_dropped_connection_and_rejoins() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Liveness far beyond the deadline: a neighbour seen OFF within the deadline can only
    // have been noticed through its dropped connection, not through missing heartbeats.
    let mut cluster = start(
        3,
        Topology::Complete,
        dir.path(),
        25_000,
        &[("CHAT_NODE_TOPOLOGY__LIVENESS_TIMEOUT_MS", "120000")],
    )
    .await;
    let all = set([1, 2, 3]);
    let all_on = |statuses: &std::collections::BTreeMap<u64, serde_json::Value>| {
        for (id, status) in statuses {
            for other in all.iter().filter(|o| *o != id) {
                if neighbor_state(status, *other).as_deref() != Some("on") {
                    return Err(format!("node {id} does not see {other} on"));
                }
                // The test is about noticing a dropped connection, so wait for it to exist.
                if !link_up(status, *other) {
                    return Err(format!("node {id} has no connection to {other} yet"));
                }
            }
        }
        Ok(())
    };
    wait_until(&cluster, &all, DEADLINE, "handshakes", all_on).await;

    cluster.kill(3, NodeSignal::Kill).expect("SIGKILL node 3");
    let survivors = set([1, 2]);
    let (_, took) = wait_until(&cluster, &survivors, DEADLINE, "node 3 off", |statuses| {
        for (id, status) in statuses {
            if neighbor_state(status, 3).as_deref() != Some("off") {
                return Err(format!("node {id} still sees 3 on"));
            }
        }
        Ok(())
    })
    .await;
    eprintln!("node 3 seen off {took:?} after SIGKILL (liveness timeout 120 s)");

    cluster.start(3).await.expect("restart node 3");
    wait_until(&cluster, &all, DEADLINE, "rejoin", all_on).await;
    cluster.down().await.expect("cluster stops");
}

/// 1 - 2 - 4 - 7, with cross links; not a ring, not a tree.
fn seven_node_mesh() -> Topology {
    let edges = [
        (1, 2),
        (1, 3),
        (2, 4),
        (2, 5),
        (3, 6),
        (4, 5),
        (4, 7),
        (5, 6),
        (6, 7),
    ];
    Topology::Edges(edges.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_roles_follow_the_tree_and_it_survives_leader_and_inner_node_loss() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cluster = start(7, seven_node_mesh(), dir.path(), 25_200, &[]).await;
    let mut live = set(1..=7);

    let (statuses, took) = wait_until(&cluster, &live, DEADLINE, "first election", |s| {
        settled_tree(s).map(|_| ())
    })
    .await;
    let leader = settled_tree(&statuses).expect("settled");
    eprintln!("7 nodes settled in {took:?}, leader {leader}");
    assert_eq!(leader, 1, "every data epoch is 0, so the smallest id leads");

    // The leader's process dies: its connections drop, a new leader takes over.
    cluster
        .kill(leader, NodeSignal::Kill)
        .expect("SIGKILL the leader");
    live.remove(&leader);
    let (statuses, took) = wait_until(&cluster, &live, DEADLINE, "after leader loss", |s| {
        settled_tree(s).map(|_| ())
    })
    .await;
    let second_leader = settled_tree(&statuses).expect("settled");
    eprintln!("new leader {second_leader} and roles {took:?} after SIGKILL of the leader");
    assert_eq!(second_leader, 2, "the smallest live id leads");

    // An inner node (not the root, with children) dies: its subtree heals.
    let inner = statuses
        .iter()
        .find(|(id, s)| {
            **id != second_leader && s["children"].as_array().is_some_and(|c| !c.is_empty())
        })
        .map(|(id, _)| *id)
        .expect("the tree has an inner node");
    cluster
        .kill(inner, NodeSignal::Kill)
        .expect("SIGKILL an inner node");
    live.remove(&inner);
    let (statuses, took) = wait_until(&cluster, &live, DEADLINE, "after inner loss", |s| {
        settled_tree(s).map(|_| ())
    })
    .await;
    assert_eq!(
        settled_tree(&statuses).expect("settled"),
        second_leader,
        "losing an inner node heals the tree without a new leader"
    );
    eprintln!("tree healed {took:?} after SIGKILL of inner node {inner}");

    // Both come back: they join the existing tree; the leader stays.
    for id in [leader, inner] {
        cluster.start(id).await.expect("restart");
        live.insert(id);
    }
    let (statuses, _) = wait_until(&cluster, &live, DEADLINE, "after restarts", |s| {
        settled_tree(s).map(|_| ())
    })
    .await;
    assert_eq!(
        settled_tree(&statuses).expect("settled"),
        second_leader,
        "restarted nodes rejoin without replacing the leader"
    );
    cluster.down().await.expect("cluster stops");
}
