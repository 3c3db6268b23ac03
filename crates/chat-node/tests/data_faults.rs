//! The data plane under faults, through real processes and the JSON API:
//! - a frozen (SIGSTOPped) writer is replaced while writes go on through the input nodes; when
//!   it resumes, nothing acknowledged is lost, nothing is doubled, and its stale suffix (writes
//!   no majority held) is dropped so its rows equal everyone's;
//! - in a line, the writer and its replicas freeze together (the cable to the rest cut): the
//!   majority left elects a writer that holds every acknowledged write;
//! - a replica answers the reads it is fresh enough for and passes up one it is not;
//! - a killed forwarder is routed around and requests from every input node resume.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chat_cluster::{LocalCluster, NodeSignal, Topology};
use serde_json::{json, Value};
use support::api::{
    assert_each_acknowledged_once, input_nodes, register_and_login, send_through_each, serving,
    wait_for_equal_rows, write_stream, Api,
};
use support::{ids, roles, set, settled_tree, start, wait_until};

const DEADLINE: Duration = Duration::from_secs(40);
/// Cheap hashing: these tests are about the cluster, not about bcrypt.
const ENV: &[(&str, &str)] = &[("CHAT_NODE_STORAGE__BCRYPT_COST", "4")];
/// How long each stream of writes lasts: long enough to span a failover.
const STREAM: Duration = Duration::from_secs(4);

fn has_role(status: &Value, role: &str) -> bool {
    roles(status).contains(role)
}

fn counter(status: &Value, name: &str) -> u64 {
    status["data"]["counters"][name].as_u64().unwrap_or(0)
}

/// Serving, and the writer is one of `allowed`.
fn serving_with_writer_in(
    allowed: &BTreeSet<u64>,
) -> impl Fn(&BTreeMap<u64, Value>) -> Result<(), String> + '_ {
    move |statuses| {
        serving(statuses)?;
        let writer = settled_tree(statuses)?;
        allowed
            .contains(&writer)
            .then_some(())
            .ok_or_else(|| format!("the writer is still {writer}"))
    }
}

/// Registers alice and bob through the first input node; returns alice's token and the
/// newest epoch seen.
async fn two_users(api: &Api, statuses: &BTreeMap<u64, Value>) -> (String, u64) {
    let inputs = input_nodes(statuses);
    let url = &inputs.first().expect("an input node").1;
    let (alice, epoch) = register_and_login(api, url, "alice", "1234").await;
    let (_, bob_epoch) = register_and_login(api, url, "bob", "5678").await;
    (alice, epoch.max(bob_epoch))
}

/// Starts a stream of writes through each of the given input nodes.
fn streams(
    inputs: &[(u64, String)],
    token: &str,
    epoch: u64,
) -> Vec<tokio::task::JoinHandle<(Vec<String>, u64)>> {
    inputs
        .iter()
        .map(|(id, url)| {
            let (url, token, id) = (url.clone(), token.to_owned(), *id);
            tokio::spawn(async move { write_stream(url, token, id, epoch, STREAM).await })
        })
        .collect()
}

async fn acknowledged_by(
    streams: Vec<tokio::task::JoinHandle<(Vec<String>, u64)>>,
    epoch: &mut u64,
) -> BTreeSet<String> {
    let mut acknowledged = BTreeSet::new();
    for stream in streams {
        let (acks, last_epoch) = stream.await.expect("stream task");
        *epoch = (*epoch).max(last_epoch);
        acknowledged.extend(acks);
    }
    acknowledged
}

/// Freezes `frozen` during streams of writes through the input nodes, waits for a writer
/// among the others, thaws them, and checks that every acknowledged write is present once
/// through every input node and that all rows converge (the thawed nodes' stale suffixes
/// dropped). Returns the frozen writer's final status.
async fn freeze_during_writes_then_thaw(
    cluster: &mut LocalCluster,
    all: &BTreeSet<u64>,
    frozen: &BTreeSet<u64>,
    writer: u64,
    statuses: &BTreeMap<u64, Value>,
) -> Value {
    let api = Api::new();
    let (alice, mut epoch) = two_users(&api, statuses).await;
    let writing: Vec<(u64, String)> = input_nodes(statuses)
        .into_iter()
        .filter(|(id, _)| !frozen.contains(id))
        .take(2)
        .collect();
    assert!(!writing.is_empty(), "an input node outside {frozen:?}");
    let running = streams(&writing, &alice, epoch);
    tokio::time::sleep(STREAM / 4).await;
    for id in frozen {
        cluster.kill(*id, NodeSignal::Stop).expect("SIGSTOP");
    }
    let rest: BTreeSet<u64> = all.difference(frozen).copied().collect();
    let acknowledged = acknowledged_by(running, &mut epoch).await;
    let (statuses, took) = wait_until(
        cluster,
        &rest,
        DEADLINE,
        "a writer among the rest",
        serving_with_writer_in(&rest),
    )
    .await;
    eprintln!(
        "{} writes acknowledged while {frozen:?} froze; the rest serve (writer {}) {took:?} after the streams",
        acknowledged.len(),
        settled_tree(&statuses).unwrap_or(0)
    );
    assert!(!acknowledged.is_empty(), "some writes were acknowledged");
    assert_each_acknowledged_once(&api, &statuses, &alice, epoch, "bob/5678", &acknowledged).await;

    for id in frozen {
        cluster.kill(*id, NodeSignal::Cont).expect("SIGCONT");
    }
    let (statuses, _) = wait_until(cluster, all, DEADLINE, "all serving again", serving).await;
    let old_writer = statuses[&writer].clone();
    wait_for_equal_rows(cluster.run_dir(), all, epoch).await;
    assert_each_acknowledged_once(&api, &statuses, &alice, epoch, "bob/5678", &acknowledged).await;
    old_writer
}

/// An irregular mesh of seven: a ring of five with a chord, and a tail of two hanging off
/// node 4, so input nodes sit at different depths.
fn ring_with_a_chord_and_a_tail() -> Topology {
    Topology::Edges(vec![
        (1, 2),
        (2, 3),
        (3, 4),
        (4, 5),
        (5, 1),
        (2, 5),
        (4, 6),
        (6, 7),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_writer_is_replaced_and_on_resuming_drops_its_stale_suffix_losing_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cluster = start(7, ring_with_a_chord_and_a_tail(), dir.path(), 26_600, ENV).await;
    let all = set(1..=7);
    let (statuses, _) = wait_until(&cluster, &all, DEADLINE, "serving", serving).await;
    let writer = settled_tree(&statuses).expect("settled");
    let term_before = statuses[&writer]["term"].as_u64().unwrap_or(0);

    let old_writer =
        freeze_during_writes_then_thaw(&mut cluster, &all, &set([writer]), writer, &statuses).await;
    assert!(
        !has_role(&old_writer, "writer"),
        "the thawed writer stays deposed: {old_writer}"
    );
    assert!(
        old_writer["term"].as_u64().unwrap_or(0) > term_before,
        "the thawed writer moved to the new term: {old_writer}"
    );
    eprintln!(
        "the thawed writer dropped {} suffix(es)",
        counter(&old_writer, "suffix_drops")
    );
    cluster.down().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_line_the_writer_and_its_replicas_freeze_together_and_the_majority_goes_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cluster = start(7, Topology::Line, dir.path(), 26_800, ENV).await;
    let all = set(1..=7);
    let (statuses, _) = wait_until(&cluster, &all, DEADLINE, "serving", serving).await;
    let writer = settled_tree(&statuses).expect("settled");
    let mut cut_off = set([writer]);
    cut_off.extend(ids(&statuses[&writer]["children"]));
    // The rest must still hold a connected majority, or no writer may exist (and none would).
    let rest: Vec<u64> = all.difference(&cut_off).copied().collect();
    let longest_run = rest
        .iter()
        .fold((0, 0, 0), |(best, run, prev), &id| {
            let run = if id == prev + 1 { run + 1 } else { 1 };
            (best.max(run), run, id)
        })
        .0;
    assert!(
        longest_run > all.len() / 2,
        "cutting off {cut_off:?} leaves no connected majority in the line"
    );

    freeze_during_writes_then_thaw(&mut cluster, &all, &cut_off, writer, &statuses).await;
    cluster.down().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_answer_fresh_reads_pass_up_stale_ones_and_a_killed_forwarder_is_routed_around() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cluster = start(7, Topology::Ring, dir.path(), 27_000, ENV).await;
    let mut live = set(1..=7);
    let (statuses, _) = wait_until(&cluster, &live, DEADLINE, "serving", serving).await;
    let api = Api::new();
    let (alice, mut epoch) = two_users(&api, &statuses).await;
    let replicas: BTreeSet<u64> = statuses
        .iter()
        .filter(|(_, s)| has_role(s, "replica"))
        .map(|(id, _)| *id)
        .collect();
    assert!(!replicas.is_empty(), "a ring of seven has replicas");
    let sum = |statuses: &BTreeMap<u64, Value>, name: &str| -> u64 {
        replicas.iter().map(|id| counter(&statuses[id], name)).sum()
    };
    let url = input_nodes(&statuses)[0].1.clone();
    let read = |epoch: u64| {
        let (api, url, alice) = (&api, &url, &alice);
        async move {
            api.call(
                reqwest::Method::GET,
                &format!("{url}/api/chats"),
                Some(alice),
                epoch,
                None,
            )
            .await
            .expect("answer")
        }
    };

    // A read the replicas are fresh enough for is answered by one of them.
    let before = support::statuses(&cluster, &live).await;
    let fresh = read(epoch).await;
    assert_eq!(fresh.status, 200, "{}", fresh.body);
    wait_until(&cluster, &live, DEADLINE, "a replica read", |s| {
        (sum(s, "reads_local") > sum(&before, "reads_local"))
            .then_some(())
            .ok_or_else(|| "no replica answered a read".to_owned())
    })
    .await;
    // A read wanting an epoch no node has yet is passed up by the replica, and the user gets a
    // retryable answer rather than stale data.
    let before = support::statuses(&cluster, &live).await;
    let from_the_future = read(epoch + 1_000_000).await;
    assert_eq!(from_the_future.status, 503, "{}", from_the_future.body);
    assert_eq!(from_the_future.body["error"]["code"], json!("unavailable"));
    wait_until(&cluster, &live, DEADLINE, "a read passed up", |s| {
        (sum(s, "reads_passed_up") > sum(&before, "reads_passed_up"))
            .then_some(())
            .ok_or_else(|| "no replica passed a stale read up".to_owned())
    })
    .await;

    // A forwarder dies during writes through every input node; the ring heals around it.
    let forwarder = statuses
        .iter()
        .find(|(_, s)| has_role(s, "forwarder"))
        .map(|(id, _)| *id)
        .expect("a ring of seven has forwarders");
    let inputs = input_nodes(&statuses);
    let running = streams(&inputs, &alice, epoch);
    tokio::time::sleep(STREAM / 4).await;
    cluster
        .kill(forwarder, NodeSignal::Kill)
        .expect("SIGKILL the forwarder");
    live.remove(&forwarder);
    let acknowledged = acknowledged_by(running, &mut epoch).await;
    let (statuses, _) = wait_until(&cluster, &live, DEADLINE, "healed", serving).await;
    epoch = send_through_each(
        &api,
        &input_nodes(&statuses),
        &alice,
        epoch,
        "after the forwarder, through",
    )
    .await;
    assert_each_acknowledged_once(&api, &statuses, &alice, epoch, "bob/5678", &acknowledged).await;
    wait_for_equal_rows(cluster.run_dir(), &live, epoch).await;
    cluster.down().await.expect("clean stop");
}
