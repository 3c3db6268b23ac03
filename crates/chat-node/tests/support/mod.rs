//! Helpers for the multi-process tests: start a real cluster, poll its status endpoints with
//! a deadline, and check the tree and roles the nodes report against the rules.

#![allow(dead_code, unreachable_pub)]

pub mod api;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use chat_cluster::{ClusterOptions, LocalCluster, NodeOutput, Topology};
use serde_json::Value;

/// How often the helpers poll `/status`.
const POLL: Duration = Duration::from_millis(50);

/// Starts `nodes` real `chat-node` processes (the binary built with this test) in `topology`.
pub async fn start(
    nodes: u64,
    topology: Topology,
    run_dir: &Path,
    base_port: u16,
    env: &[(&str, &str)],
) -> LocalCluster {
    let mut options = ClusterOptions::new(nodes, topology, run_dir);
    options.base_port = base_port;
    options.node_bin = Some(env!("CARGO_BIN_EXE_chat-node").into());
    options.output = NodeOutput::Files;
    options.env = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    LocalCluster::up(options).await.expect("cluster starts")
}

/// The statuses of the nodes in `ids` (nodes that do not answer are missing). Only those
/// nodes are asked, so a frozen node outside `ids` cannot slow the poll down.
pub async fn statuses(cluster: &LocalCluster, ids: &BTreeSet<u64>) -> BTreeMap<u64, Value> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .expect("http client");
    let mut queries = tokio::task::JoinSet::new();
    for id in ids {
        let Ok(node) = cluster.description().node(*id) else {
            continue;
        };
        let url = format!("http://127.0.0.1:{}/status", node.admin_port);
        let client = client.clone();
        queries.spawn(async move {
            let status: Value = client.get(url).send().await.ok()?.json().await.ok()?;
            Some(status)
        });
    }
    let mut statuses = BTreeMap::new();
    while let Some(answer) = queries.join_next().await {
        if let Ok(Some(status)) = answer {
            if let Some(id) = status["id"].as_u64() {
                statuses.insert(id, status);
            }
        }
    }
    statuses
}

/// Polls until `check` accepts the statuses of `ids` (all of them answering), or panics
/// after `deadline` with the last reason and statuses. Returns the accepted statuses and
/// how long it took.
pub async fn wait_until(
    cluster: &LocalCluster,
    ids: &BTreeSet<u64>,
    deadline: Duration,
    what: &str,
    check: impl Fn(&BTreeMap<u64, Value>) -> Result<(), String>,
) -> (BTreeMap<u64, Value>, Duration) {
    wait_until_checking(cluster, ids, deadline, what, |_| Ok(()), check).await
}

/// [`wait_until`], and every poll on the way (whichever nodes answer) must satisfy
/// `invariant`, or the test fails at once with its reason.
pub async fn wait_until_checking(
    cluster: &LocalCluster,
    ids: &BTreeSet<u64>,
    deadline: Duration,
    what: &str,
    mut invariant: impl FnMut(&BTreeMap<u64, Value>) -> Result<(), String>,
    check: impl Fn(&BTreeMap<u64, Value>) -> Result<(), String>,
) -> (BTreeMap<u64, Value>, Duration) {
    let start = Instant::now();
    loop {
        let statuses = statuses(cluster, ids).await;
        if let Err(reason) = invariant(&statuses) {
            panic!(
                "{what}: invariant broken after {:?}: {reason}\nstatuses: {}\n{}",
                start.elapsed(),
                serde_json::to_string(&statuses).unwrap_or_default(),
                log_tails(cluster, ids)
            );
        }
        let verdict = if statuses.len() == ids.len() {
            check(&statuses)
        } else {
            Err(format!(
                "only {:?} of {ids:?} answer",
                statuses.keys().collect::<Vec<_>>()
            ))
        };
        match verdict {
            Ok(()) => return (statuses, start.elapsed()),
            Err(reason) if start.elapsed() > deadline => panic!(
                "{what}: not reached within {deadline:?}: {reason}\nstatuses: {}\n{}",
                serde_json::to_string(&statuses).unwrap_or_default(),
                log_tails(cluster, ids)
            ),
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// Polls `ids` for `period`, failing at once if any poll breaks `invariant`: for properties
/// that must hold over a stretch of time, not just become true.
pub async fn hold(
    cluster: &LocalCluster,
    ids: &BTreeSet<u64>,
    period: Duration,
    what: &str,
    mut invariant: impl FnMut(&BTreeMap<u64, Value>) -> Result<(), String>,
) {
    let start = Instant::now();
    while start.elapsed() < period {
        let statuses = statuses(cluster, ids).await;
        if let Err(reason) = invariant(&statuses) {
            panic!(
                "{what}: broken after {:?}: {reason}\nstatuses: {}\n{}",
                start.elapsed(),
                serde_json::to_string(&statuses).unwrap_or_default(),
                log_tails(cluster, ids)
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// No node of `ids` that answers sees another node of `ids` OFF.
pub fn none_off_among(ids: &BTreeSet<u64>, statuses: &BTreeMap<u64, Value>) -> Result<(), String> {
    for (id, status) in statuses.iter().filter(|(id, _)| ids.contains(id)) {
        for other in ids.iter().filter(|other| *other != id) {
            if neighbor_state(status, *other).as_deref() == Some("off") {
                return Err(format!("node {id} sees its live neighbour {other} off"));
            }
        }
    }
    Ok(())
}

/// Every node of `ids` that is a neighbour of another node of `ids` is ON there.
pub fn all_on_among(ids: &BTreeSet<u64>, statuses: &BTreeMap<u64, Value>) -> Result<(), String> {
    for (id, status) in statuses.iter().filter(|(id, _)| ids.contains(id)) {
        let listed = status["neighbors"].as_array().cloned().unwrap_or_default();
        for neighbor in &listed {
            let Some(other) = neighbor["id"].as_u64().filter(|o| ids.contains(o)) else {
                continue;
            };
            if neighbor["state"] != "on" {
                return Err(format!("node {id} does not see {other} on yet"));
            }
        }
    }
    Ok(())
}

/// The last lines of each node's log, for a failure message (the run directory is a
/// temporary one and is gone after the test).
fn log_tails(cluster: &LocalCluster, ids: &BTreeSet<u64>) -> String {
    const LINES: usize = 40;
    let mut text = String::new();
    for id in ids {
        let path = cluster.run_dir().join(id.to_string()).join("node.log");
        let log = std::fs::read_to_string(&path).unwrap_or_else(|e| format!("({e})"));
        let lines: Vec<&str> = log.lines().collect();
        text.push_str(&format!("--- node {id}: {}\n", path.display()));
        for line in &lines[lines.len().saturating_sub(LINES)..] {
            text.push_str(line);
            text.push('\n');
        }
    }
    text
}

/// The state a node reports for neighbour `id` ("on" / "off"), if it lists it.
pub fn neighbor_state(status: &Value, id: u64) -> Option<String> {
    status["neighbors"]
        .as_array()?
        .iter()
        .find(|n| n["id"].as_u64() == Some(id))
        .and_then(|n| n["state"].as_str().map(str::to_owned))
}

/// Whether a node reports its own connection to neighbour `id` as established.
pub fn link_up(status: &Value, id: u64) -> bool {
    status["neighbors"]
        .as_array()
        .and_then(|a| a.iter().find(|n| n["id"].as_u64() == Some(id)))
        .is_some_and(|n| n["link_up"] == Value::Bool(true))
}

/// The numbers in a JSON array (an empty list for anything else).
pub fn ids(value: &Value) -> Vec<u64> {
    value
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

/// The roles a status reports.
pub fn roles(status: &Value) -> BTreeSet<String> {
    status["roles"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Checks that the nodes agree on one leader and report a spanning tree over all of them,
/// with roles following the rules (root: writer; leaves: input; children of the root:
/// replica; others: forwarder) and routes to every input node. Returns the leader.
pub fn settled_tree(statuses: &BTreeMap<u64, Value>) -> Result<u64, String> {
    let leaders: BTreeSet<Option<u64>> = statuses.values().map(|s| s["leader"].as_u64()).collect();
    let leader = match leaders.iter().collect::<Vec<_>>().as_slice() {
        [Some(leader)] => *leader,
        other => return Err(format!("leaders disagree or unknown: {other:?}")),
    };
    if !statuses.contains_key(&leader) {
        return Err(format!("leader {leader} is not among the live nodes"));
    }
    for (id, s) in statuses {
        if !s["election"].is_null() {
            return Err(format!("node {id} is still electing"));
        }
        if s["ready"] != Value::Bool(true) {
            return Err(format!("node {id} is not ready"));
        }
    }
    // Parent and children links agree, and every node reaches the root.
    for (id, s) in statuses {
        match s["parent"].as_u64() {
            None if *id == leader => {}
            None => return Err(format!("node {id} has no parent but is not the leader")),
            Some(_) if *id == leader => return Err(format!("leader {id} has a parent")),
            Some(parent) => {
                let parent_status = statuses
                    .get(&parent)
                    .ok_or_else(|| format!("node {id}'s parent {parent} is not live"))?;
                if !ids(&parent_status["children"]).contains(id) {
                    return Err(format!(
                        "node {id}'s parent {parent} does not list it as child"
                    ));
                }
            }
        }
        for child in ids(&s["children"]) {
            if statuses.get(&child).and_then(|c| c["parent"].as_u64()) != Some(*id) {
                return Err(format!(
                    "node {id} lists {child} as child, but not vice versa"
                ));
            }
        }
        let mut hop = *id;
        for _ in 0..statuses.len() {
            if hop == leader {
                break;
            }
            hop = statuses[&hop]["parent"].as_u64().unwrap_or(hop);
        }
        if hop != leader {
            return Err(format!(
                "node {id} does not reach the leader through parents"
            ));
        }
    }
    // Roles follow the tree.
    let lone = statuses.len() == 1;
    for (id, s) in statuses {
        let children = ids(&s["children"]);
        let parent = s["parent"].as_u64();
        let mut expected = BTreeSet::new();
        if *id == leader {
            expected.insert("writer");
            if lone {
                expected.insert("input");
            }
        } else {
            if children.is_empty() {
                expected.insert("input");
            }
            if parent == Some(leader) {
                expected.insert("replica");
            }
            if expected.is_empty() {
                expected.insert("forwarder");
            }
        }
        let expected: BTreeSet<String> = expected.into_iter().map(str::to_owned).collect();
        if roles(s) != expected {
            return Err(format!(
                "node {id} has roles {:?}, the tree says {expected:?}",
                roles(s)
            ));
        }
    }
    // Every input node is routable from the root, hop by hop.
    for (input, s) in statuses {
        if !roles(s).contains("input") || *input == leader {
            continue;
        }
        let mut at = leader;
        for _ in 0..statuses.len() {
            if at == *input {
                break;
            }
            at = statuses[&at]["routes"][input.to_string()]
                .as_u64()
                .ok_or_else(|| format!("node {at} has no route to input node {input}"))?;
        }
        if at != *input {
            return Err(format!(
                "routes from the root do not reach input node {input}"
            ));
        }
    }
    Ok(leader)
}

/// Sets of node ids.
pub fn set(ids: impl IntoIterator<Item = u64>) -> BTreeSet<u64> {
    ids.into_iter().collect()
}
