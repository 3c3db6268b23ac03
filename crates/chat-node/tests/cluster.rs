//! Multi-process tests: real `chat-node` processes on loopback, observed through their
//! `/status` endpoints.

mod support;

use std::time::Duration;

use chat_cluster::{NodeSignal, Topology};
use support::{
    all_on_among, hold, link_up, neighbor_state, none_off_among, set, settled_tree, start,
    wait_until, wait_until_checking,
};

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

    // The old leader comes back: its persisted term is older than the standing tree's, so
    // it joins that tree; the leader stays.
    let term_before = statuses[&second_leader]["term"]
        .as_u64()
        .expect("term is an integer");
    cluster.start(leader).await.expect("restart the old leader");
    live.insert(leader);
    let (statuses, _) = wait_until(
        &cluster,
        &live,
        DEADLINE,
        "after the leader's restart",
        |s| settled_tree(s).map(|_| ()),
    )
    .await;
    assert_eq!(
        settled_tree(&statuses).expect("settled"),
        second_leader,
        "a node restarted with an older term rejoins without replacing the leader"
    );
    assert_eq!(statuses[&leader]["term"].as_u64(), Some(term_before));

    // The inner node comes back with the standing tree's own term: it cannot tell that tree
    // from another of the same term, so one election may run (docs/decisions.md, "Terms").
    // Whatever it elects, one tree forms and every term is above the one before.
    cluster.start(inner).await.expect("restart the inner node");
    live.insert(inner);
    let (statuses, _) = wait_until(
        &cluster,
        &live,
        DEADLINE,
        "after the inner node's restart",
        |s| settled_tree(s).map(|_| ()),
    )
    .await;
    for (id, status) in &statuses {
        let term = status["term"].as_u64().expect("term is an integer");
        assert!(
            term >= term_before,
            "node {id}'s term {term} went below {term_before}"
        );
    }
    cluster.down().await.expect("cluster stops");
}

/// A triangle 1-2-3 with a tail 3-4-5: node 5 hangs below 4 alone, so taking 5 away and back
/// makes 4 gain and then lose the input role (and its nameserver lease).
fn triangle_with_a_tail() -> Topology {
    Topology::Edges(vec![(1, 2), (1, 3), (2, 3), (3, 4), (4, 5)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_changes_with_an_unreachable_nameserver_mark_no_live_neighbour_off() {
    // Bound but never accepting: a connection sits in the backlog (or, once that is full,
    // hangs in its handshake) and no gRPC answer ever comes back.
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a black hole");
    let nameservers = format!(
        "[\"http://{}\"]",
        black_hole.local_addr().expect("bound address")
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cluster = start(
        5,
        triangle_with_a_tail(),
        dir.path(),
        25_300,
        &[("CHAT_NODE_NAMESERVER__ADDRESSES", &nameservers)],
    )
    .await;
    let all = set(1..=5);
    wait_until(&cluster, &all, DEADLINE, "first tree", |s| {
        settled_tree(s).map(|_| ())
    })
    .await;

    // Node 4 gains the input role when its only child goes, and loses it when the child is
    // back: each change takes or withdraws a lease at the black hole.
    let steady = set([1, 2, 3, 4]);
    cluster.kill(5, NodeSignal::Kill).expect("SIGKILL node 5");
    wait_until_checking(
        &cluster,
        &steady,
        DEADLINE,
        "node 4 an input leaf",
        |s| none_off_among(&steady, s),
        |s| {
            settled_tree(s)?;
            let roles = &s[&4]["roles"];
            (roles
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r == "input")))
            .then_some(())
            .ok_or_else(|| format!("node 4 has roles {roles}"))
        },
    )
    .await;
    cluster.start(5).await.expect("restart node 5");
    wait_until_checking(
        &cluster,
        &all,
        DEADLINE,
        "node 5 back below 4",
        |s| none_off_among(&steady, s),
        |s| settled_tree(s).map(|_| ()),
    )
    .await;

    // The leader goes: every survivor's roles may change.
    cluster
        .kill(1, NodeSignal::Kill)
        .expect("SIGKILL the leader");
    let survivors = set([2, 3, 4, 5]);
    wait_until_checking(
        &cluster,
        &survivors,
        DEADLINE,
        "a tree without node 1",
        |s| none_off_among(&survivors, s),
        |s| settled_tree(s).map(|_| ()),
    )
    .await;
    // A stalled control loop shows only after a liveness timeout (1.5 s): watch for twice
    // that after the last change.
    hold(
        &cluster,
        &survivors,
        Duration::from_secs(3),
        "no neighbour off after the role changes",
        |s| none_off_among(&survivors, s).and_then(|()| all_on_among(&survivors, s)),
    )
    .await;
    drop(black_hole);
    cluster.down().await.expect("cluster stops");
}

/// Five nodes, irregular: a triangle 1-2-3, then 2-4 and 3-5 closed by 4-5.
fn five_node_irregular_mesh() -> Topology {
    Topology::Edges(vec![(1, 2), (1, 3), (2, 3), (2, 4), (3, 5), (4, 5)])
}

fn term_of(status: &serde_json::Value) -> u64 {
    status["term"].as_u64().expect("term is an integer")
}

fn writable(status: &serde_json::Value) -> bool {
    status["quorum"]["writable"] == serde_json::Value::Bool(true)
}

/// The terms seen so far per node: no poll may show a node's term going down, and no two
/// nodes may be writable in one term.
#[derive(Default)]
struct TermWatch {
    highest: std::collections::BTreeMap<u64, u64>,
}

impl TermWatch {
    fn check(
        &mut self,
        statuses: &std::collections::BTreeMap<u64, serde_json::Value>,
    ) -> Result<(), String> {
        let mut writers_by_term = std::collections::BTreeMap::new();
        for (id, status) in statuses {
            let term = term_of(status);
            let highest = self.highest.entry(*id).or_insert(term);
            if term < *highest {
                return Err(format!(
                    "node {id}'s term went from {highest} down to {term}"
                ));
            }
            *highest = term;
            if writable(status) {
                if let Some(other) = writers_by_term.insert(term, *id) {
                    return Err(format!(
                        "nodes {other} and {id} are both writable in term {term}"
                    ));
                }
            }
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_writer_is_replaced_and_never_writable_again_in_its_term() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cluster = start(5, five_node_irregular_mesh(), dir.path(), 25_050, &[]).await;
    let all = set(1..=5);
    let mut terms = TermWatch::default();
    let (statuses, _) = wait_until_checking(
        &cluster,
        &all,
        DEADLINE,
        "a writable tree",
        |s| terms.check(s),
        |s| {
            let leader = settled_tree(s)?;
            writable(&s[&leader])
                .then_some(())
                .ok_or_else(|| format!("leader {leader} is not writable"))
        },
    )
    .await;
    let old_writer = settled_tree(&statuses).expect("settled");
    let old_term = term_of(&statuses[&old_writer]);
    let uptime_at_stop = statuses[&old_writer]["uptime_ms"].as_u64().expect("uptime");

    // Frozen: its connections stay open, so the others only notice the silence.
    cluster
        .kill(old_writer, NodeSignal::Stop)
        .expect("SIGSTOP the writer");
    let stopped_at = std::time::Instant::now();
    let survivors: std::collections::BTreeSet<u64> =
        all.iter().copied().filter(|id| *id != old_writer).collect();
    let (statuses, took) = wait_until_checking(
        &cluster,
        &survivors,
        DEADLINE,
        "another writer",
        |s| terms.check(s),
        |s| {
            s.iter()
                .find(|(_, status)| writable(status))
                .map(|_| ())
                .ok_or_else(|| "no survivor is writable".to_owned())
        },
    )
    .await;
    let (new_writer, new_status) = statuses
        .iter()
        .find(|(_, status)| writable(status))
        .expect("a writable survivor");
    assert!(
        term_of(new_status) > old_term,
        "the new writer {new_writer} took term {} over {old_term}",
        term_of(new_status)
    );
    eprintln!("node {new_writer} writable {took:?} after SIGSTOP of writer {old_writer}");

    // Resumed: until its loop has run once, its /status still shows what it published
    // before the freeze (an uptime from then); from the first fresh status on, it must never
    // be writable in its old term.
    let stopped_for = millis(stopped_at.elapsed());
    cluster
        .kill(old_writer, NodeSignal::Cont)
        .expect("SIGCONT the old writer");
    let fresh_from = uptime_at_stop + stopped_for;
    hold(
        &cluster,
        &all,
        Duration::from_secs(3),
        "after the old writer resumed",
        |s| {
            terms.check(s)?;
            match s.get(&old_writer) {
                Some(status)
                    if status["uptime_ms"]
                        .as_u64()
                        .is_some_and(|up| up >= fresh_from)
                        && writable(status)
                        && term_of(status) <= old_term =>
                {
                    Err(format!(
                        "the resumed writer {old_writer} is writable in its old term {}",
                        term_of(status)
                    ))
                }
                _ => Ok(()),
            }
        },
    )
    .await;
    cluster.down().await.expect("cluster stops");
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
