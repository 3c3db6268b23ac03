//! Multi-process tests: real `chat-node` processes on loopback, observed through their
//! `/status` endpoints.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chat_cluster::{NodeSignal, Topology};
use serde_json::Value;
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

/// The placeholder a node's admin server answers with until its driver has restored the
/// persisted term and published a first status (`NodeStatus::starting`): term 0, Lamport
/// time 0, no neighbour. It says nothing about the node's term, so the term checks skip it.
/// (Reported: `/status` should carry the restored term from its first answer.)
fn before_the_driver(status: &Value) -> bool {
    status["lamport"].as_u64() == Some(0)
        && status["ready"] == Value::Bool(false)
        && status["neighbors"].as_array().is_some_and(Vec::is_empty)
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
        for (id, status) in statuses.iter().filter(|(_, s)| !before_the_driver(s)) {
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

/// The shipped timings (`chat_control::defaults`), which these clusters run with.
const LIVENESS: Duration = Duration::from_millis(1_000);
const WRITER_LEASE: Duration = Duration::from_millis(500);

/// No two nodes are writable in the same poll. The statuses of one poll are fetched
/// concurrently, within milliseconds; a handover takes at least the old writer's lease (its
/// members promised it that long), so two writable answers in one poll are two writers at
/// once. Only where no writer was ever frozen: a resumed node answers with what it
/// published before the freeze until its loop has run once (test (b) handles that case).
fn at_most_one_writable(statuses: &BTreeMap<u64, Value>) -> Result<(), String> {
    let writers: Vec<u64> = statuses
        .iter()
        .filter(|(_, status)| writable(status))
        .map(|(id, _)| *id)
        .collect();
    if writers.len() > 1 {
        return Err(format!("nodes {writers:?} are writable at once"));
    }
    Ok(())
}

/// A writable node needs a majority of the cluster behind it: with only `live` nodes
/// running, none may be writable when they are no majority.
fn no_writer_without_a_majority(
    live: &BTreeSet<u64>,
    size: usize,
    statuses: &BTreeMap<u64, Value>,
) -> Result<(), String> {
    if live.len() > size / 2 {
        return Ok(());
    }
    match statuses.iter().find(|(_, status)| writable(status)) {
        Some((id, _)) => Err(format!(
            "node {id} is writable with only {live:?} of {size} nodes running"
        )),
        None => Ok(()),
    }
}

/// Whether `id` has an ancestor (parent, its parent, ...) in `among`, as the statuses say.
fn has_ancestor_in(statuses: &BTreeMap<u64, Value>, id: u64, among: &BTreeSet<u64>) -> bool {
    let mut at = id;
    for _ in 0..statuses.len() {
        match statuses[&at]["parent"].as_u64() {
            Some(parent) if among.contains(&parent) => return true,
            Some(parent) => at = parent,
            None => return false,
        }
    }
    false
}

/// Two non-writers whose freezing leaves every other node's path to the writer through
/// the tree intact (a leaf and its parent if the parent has no other child, or two leaves):
/// the writer's side, a majority of three, stays connected and keeps answering probes
/// without waiting for any liveness timeout or tree repair.
fn two_non_writers_off_the_writers_paths(
    statuses: &BTreeMap<u64, Value>,
    writer: u64,
) -> (u64, u64) {
    let others: Vec<u64> = statuses
        .keys()
        .copied()
        .filter(|id| *id != writer)
        .collect();
    for (i, &a) in others.iter().enumerate() {
        for &b in &others[i + 1..] {
            let frozen = set([a, b]);
            let intact = others
                .iter()
                .filter(|id| !frozen.contains(id))
                .all(|id| !has_ancestor_in(statuses, *id, &frozen));
            if intact {
                return (a, b);
            }
        }
    }
    panic!("no two nodes of the tree can go without cutting a third off: {statuses:?}");
}

/// Issue 10, multi-process test (a): a writer keeps writing while a majority stays with it,
/// stops within the lease once that majority is gone, and after everyone resumes one
/// writer remains with one term everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_keeps_a_connected_majority_loses_it_with_a_third_freeze_and_one_writer_remains() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cluster = start(5, five_node_irregular_mesh(), dir.path(), 25_100, &[]).await;
    let all = set(1..=5);
    let mut terms = TermWatch::default();
    let (statuses, _) = wait_until_checking(
        &cluster,
        &all,
        DEADLINE,
        "a writable tree",
        |s| {
            terms.check(s)?;
            at_most_one_writable(s)
        },
        |s| {
            let leader = settled_tree(s)?;
            writable(&s[&leader])
                .then_some(())
                .ok_or_else(|| format!("leader {leader} is not writable"))
        },
    )
    .await;
    let writer = settled_tree(&statuses).expect("settled");
    let term = term_of(&statuses[&writer]);

    // Two members go silent; the writer and two others are a majority, linked through the
    // tree as before.
    let (first, second) = two_non_writers_off_the_writers_paths(&statuses, writer);
    cluster.kill(first, NodeSignal::Stop).expect("SIGSTOP");
    cluster.kill(second, NodeSignal::Stop).expect("SIGSTOP");
    let mut live: BTreeSet<u64> = all
        .iter()
        .copied()
        .filter(|id| *id != first && *id != second)
        .collect();
    eprintln!("writer {writer} in term {term}; froze {first} and {second}, {live:?} run on");
    // Long enough for the frozen nodes to go OFF (liveness) and the tree to drop them, and
    // for several leases to pass: the writer must be writable in every poll, in its term.
    hold(
        &cluster,
        &live,
        LIVENESS + WRITER_LEASE * 4,
        "the writer keeps its majority",
        |s| {
            terms.check(s)?;
            at_most_one_writable(s)?;
            let Some(status) = s.get(&writer) else {
                return Err(format!("the writer {writer} does not answer"));
            };
            if !writable(status) || term_of(status) != term || status["leader"].as_u64() != Some(writer) {
                return Err(format!(
                    "the writer {writer} with a connected majority is no longer writable in term {term}"
                ));
            }
            Ok(())
        },
    )
    .await;

    // A third member goes: two nodes are left running, no majority anywhere.
    let third = *live
        .iter()
        .find(|id| **id != writer)
        .expect("a member besides the writer");
    cluster.kill(third, NodeSignal::Stop).expect("SIGSTOP");

    live.remove(&third);
    let (_, took) = wait_until_checking(
        &cluster,
        &live,
        DEADLINE,
        "no writable root",
        |s| {
            terms.check(s)?;
            at_most_one_writable(s)
        },
        |s| match s.iter().find(|(_, status)| writable(status)) {
            Some((id, _)) => Err(format!("node {id} is still writable")),
            None => Ok(()),
        },
    )
    .await;
    eprintln!("no root writable {took:?} after the third freeze (node {third})");
    assert!(
        took <= LIVENESS + WRITER_LEASE,
        "a writer without a majority stayed writable for {took:?}, beyond lease + liveness"
    );
    // And none becomes writable while the majority is frozen.
    let frozen_majority = |s: &BTreeMap<u64, Value>| {
        terms.check(s)?;
        no_writer_without_a_majority(&live, all.len(), s)
    };
    hold(
        &cluster,
        &live,
        Duration::from_secs(3),
        "no writer while three of five are frozen",
        frozen_majority,
    )
    .await;

    for id in [first, second, third] {
        cluster.kill(id, NodeSignal::Cont).expect("SIGCONT");
    }
    let (statuses, took) = wait_until_checking(
        &cluster,
        &all,
        DEADLINE,
        "one writable root, one term",
        |s| {
            terms.check(s)?;
            at_most_one_writable(s)
        },
        |s| {
            let leader = settled_tree(s)?;
            if !writable(&s[&leader]) {
                return Err(format!("leader {leader} is not writable"));
            }
            let terms: BTreeSet<u64> = s.values().map(term_of).collect();
            (terms.len() == 1)
                .then_some(())
                .ok_or_else(|| format!("terms differ: {terms:?}"))
        },
    )
    .await;
    let leader = settled_tree(&statuses).expect("settled");
    eprintln!(
        "after SIGCONT: node {leader} writable in term {} after {took:?}",
        term_of(&statuses[&leader])
    );
    cluster.down().await.expect("cluster stops");
}

/// One node's seeded history: batches of (term above the base term, number of writes),
/// oldest first.
type History = &'static [(u64, u64)];

/// The write at `epoch` of a history written in `term`: the same (term, epoch) gives the
/// same write on every node, so histories that share a prefix hold the same rows.
fn seeded_write(term: u64, epoch: u64) -> chat_store::Operation {
    let n = u128::from(term) << 32 | u128::from(epoch);
    chat_store::Operation {
        request_id: uuid::Uuid::from_u128(n),
        at_ms: 1_764_633_600_000,
        fingerprint: chat_store::Fingerprint::of(&[n.to_be_bytes().as_slice()]),
        change: chat_store::Change::RegisterUser {
            user_uuid: uuid::Uuid::from_u128(1 << 100 | n),
            username: format!("seed{term}x{epoch}"),
            tag: "0001".to_owned(),
            secret: chat_store::SecretHash::new("$2b$04$seeded.not.a.real.hash".to_owned()),
        },
    }
}

/// Writes `history` into the store at `db` (the node is not running) and returns its
/// election key, (term, epoch) of the last durable entry.
fn seed(db: &std::path::Path, base_term: u64, history: History) -> chat_store::EntryId {
    let store = chat_store::Store::open(db).expect("open the node's store");
    let mut epoch = store.election_key().epoch;
    for &(offset, writes) in history {
        let term = base_term + offset;
        let batch: Vec<_> = (0..writes)
            .map(|_| {
                epoch += 1;
                seeded_write(term, epoch)
            })
            .collect();
        let outcome = store
            .commit_batch(term, 1_764_633_600_000, batch)
            .expect("commit a seeded batch");
        for answer in outcome.answers {
            answer.expect("a seeded write applies");
        }
    }
    store.election_key()
}

/// Issue 10, multi-process test (c): four nodes that ran together are stopped, their stores
/// seeded with different histories, and started again one at a time, the best history
/// last, each once the nodes before it have formed their tree. At every step the writer is
/// the node with the highest election key (term of its last durable write, then epoch) among
/// those running, and never a node while fewer than a majority run. Once a majority runs,
/// its writer writes in a newer term (at least the data plane's term barrier), so from then on
/// the live keys decide: the last node's seeded suffix in an older term was never committed,
/// and the writer of all four is the one holding the best live key.
async fn staggered_restart_ends_with_the_highest_key_as_writer(
    base_port: u16,
    histories: [History; 4],
    start_order: [u64; 4],
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let all = set(1..=4);
    let mut cluster = start(4, Topology::Ring, dir.path(), base_port, &[]).await;
    let mut terms = TermWatch::default();
    let (statuses, _) = wait_until_checking(
        &cluster,
        &all,
        DEADLINE,
        "the first run's tree",
        |s| terms.check(s),
        |s| settled_tree(s).map(|_| ()),
    )
    .await;
    let first_term = term_of(&statuses[&settled_tree(&statuses).expect("settled")]);
    for id in &all {
        cluster.kill(*id, NodeSignal::Term).expect("SIGTERM");
    }
    for id in &all {
        cluster.wait_exit(*id).await.expect("the node exits");
    }

    // The histories are written in terms after the first run's, as if the cluster had gone
    // on for a few terms; every node was a member of the latest (its persisted term), so no
    // node holds a write from a term above its own.
    let base_term = first_term + 1;
    let latest = base_term
        + histories
            .iter()
            .flat_map(|h| h.iter().map(|(offset, _)| *offset))
            .max()
            .unwrap_or(0);
    let mut keys = BTreeMap::new();
    for id in &all {
        let node_dir = cluster.run_dir().join(id.to_string());
        // The node's defaults: `[storage] db_file` and `[cluster] state_file` in its state
        // directory, which chat-cluster sets to <run_dir>/<id>.
        let key = seed(
            &node_dir.join("chat.db"),
            base_term,
            histories[usize::try_from(*id - 1).expect("small id")],
        );
        std::fs::write(
            node_dir.join("control-state.json"),
            format!("{{\"term\": {latest}}}\n"),
        )
        .expect("write the node's term");
        keys.insert(*id, key);
    }
    let best_of = |ids: &BTreeSet<u64>| {
        // Highest key; between equal keys the smaller id.
        *ids.iter()
            .max_by_key(|id| (keys[id], std::cmp::Reverse(**id)))
            .expect("some node")
    };
    assert_eq!(
        best_of(&all),
        start_order[3],
        "the test starts the best node last"
    );
    eprintln!("seeded keys (term, epoch): {keys:?}; starting {start_order:?}");

    let mut running = BTreeSet::new();
    // Once a majority runs, its writer writes in a new term and the seeded keys no longer
    // decide alone.
    let mut wrote = false;
    for id in start_order {
        cluster.start(id).await.expect("start the node");
        running.insert(id);
        let expected = best_of(&running);
        let majority = running.len() > all.len() / 2;
        let watched = running.clone();
        let what = if wrote {
            format!("a tree of {running:?} led by the best live key")
        } else {
            format!("a tree of {running:?} led by {expected}")
        };
        let (statuses, took) = wait_until_checking(
            &cluster,
            &running,
            DEADLINE,
            &what,
            |s| {
                terms.check(s)?;
                at_most_one_writable(s)?;
                no_writer_without_a_majority(&watched, all.len(), s)
            },
            |s| {
                let leader = settled_tree(s)?;
                if wrote {
                    // A writer with a majority wrote in a newer term (at least its term
                    // barrier): the live keys decide now, and the leader holds the best.
                    let best = s.values().map(live_key).max().unwrap_or_default();
                    if live_key(&s[&leader]) < best {
                        return Err(format!("leader {leader} does not hold the best live key"));
                    }
                } else if leader != expected {
                    return Err(format!("leader {leader}, not {expected}"));
                }
                if majority && !writable(&s[&leader]) {
                    return Err(format!("leader {leader} is not writable"));
                }
                let terms: BTreeSet<u64> = s.values().map(term_of).collect();
                (terms.len() == 1)
                    .then_some(())
                    .ok_or_else(|| format!("terms differ: {terms:?}"))
            },
        )
        .await;
        let leader = settled_tree(&statuses).expect("settled");
        // Until a writer wrote, the leader keeps its whole seeded history (its log becomes
        // the history). Others may lose a suffix written in an older term that never reached
        // a majority: the data plane drops it when they join the leader's log, and after
        // that a node with an equal live key and a smaller id may lead.
        let epoch = statuses[&leader]["data_epoch"].as_u64().unwrap_or(0);
        assert!(
            wrote || epoch >= keys[&leader].epoch,
            "leader {leader} runs with its seeded store: epoch {epoch} < {}",
            keys[&leader].epoch
        );
        eprintln!(
            "{running:?}: node {leader} leads in term {} after {took:?}",
            term_of(&statuses[&leader])
        );
        wrote |= majority;
    }
    cluster.down().await.expect("cluster stops");
}

/// A node's live election key as `/status` shows it: (term, epoch) of its last log entry.
fn live_key(status: &Value) -> (u64, u64) {
    (
        status["data"]["last_term"].as_u64().unwrap_or(0),
        status["data"]["last_epoch"].as_u64().unwrap_or(0),
    )
}

/// Histories whose keys order the same by epoch alone as by (term, epoch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staggered_restart_ends_with_the_most_up_to_date_node_as_writer() {
    staggered_restart_ends_with_the_highest_key_as_writer(
        25_150,
        [
            &[(0, 3)],         // node 1: (b, 3)
            &[(0, 3), (1, 2)], // node 2: (b+1, 5)
            &[(0, 3), (1, 3)], // node 3: (b+1, 6), the best
            &[(0, 4)],         // node 4: (b, 4)
        ],
        [1, 4, 2, 3],
    )
    .await;
}

/// Histories where the term of the last write decides, against the epoch: node 1 wrote
/// most but in an older term (a deposed writer's unacknowledged tail); node 3 holds the
/// newer term's writes.
///
/// The driver feeds the election `Store::election_key()` (term and epoch of the last
/// durable entry); under `(0, data epoch)` node 1 would win.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staggered_restart_prefers_the_newer_term_over_the_longer_log() {
    staggered_restart_ends_with_the_highest_key_as_writer(
        25_400,
        [
            &[(0, 8)],         // node 1: (b, 8), the longest log
            &[(0, 3)],         // node 2: (b, 3)
            &[(0, 3), (1, 2)], // node 3: (b+1, 5), the best
            &[(0, 3), (1, 1)], // node 4: (b+1, 4)
        ],
        [2, 1, 4, 3],
    )
    .await;
}
