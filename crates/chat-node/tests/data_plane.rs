//! The data plane through real processes and the JSON API: requests from every input node
//! reach the writer across forwarders, every node ends with the writer's rows, and a writer
//! killed during a stream of writes loses no acknowledged message and doubles none.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use chat_cluster::{LocalCluster, NodeSignal, Topology};
use serde_json::json;
use support::api::{
    assert_each_acknowledged_once, input_nodes, messages, register_and_login, send_through_each,
    serving, wait_for_equal_rows, write_stream, Api,
};
use support::{set, settled_tree, start, wait_until};

const DEADLINE: Duration = Duration::from_secs(30);
/// Cheap hashing: these tests are about the cluster, not about bcrypt.
const ENV: &[(&str, &str)] = &[("CHAT_NODE_STORAGE__BCRYPT_COST", "4")];

/// A triangle (1, 2, 3) joined through the cut vertex 3 to node 4, which has two leaves:
/// the input nodes 5 and 6 sit two hops below a replica, behind a forwarder.
fn triangle_with_a_cut_vertex() -> Topology {
    Topology::Edges(vec![(1, 2), (1, 3), (2, 3), (3, 4), (4, 5), (4, 6)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_from_every_input_node_reach_the_writer_and_every_node_ends_with_its_rows() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cluster: LocalCluster =
        start(6, triangle_with_a_cut_vertex(), dir.path(), 26_200, ENV).await;
    let mut live = set(1..=6);
    let (statuses, took) = wait_until(&cluster, &live, DEADLINE, "serving", serving).await;
    eprintln!("6 nodes serving in {took:?}");
    let writer = settled_tree(&statuses).expect("settled");
    let inputs = input_nodes(&statuses);
    assert!(inputs.len() >= 2, "at least two input nodes: {inputs:?}");
    let api = Api::new();

    let (alice, mut epoch) = register_and_login(&api, &inputs[0].1, "alice", "1234").await;
    let (bob, bob_epoch) = register_and_login(&api, &inputs[1].1, "bob", "5678").await;
    epoch = epoch.max(bob_epoch);

    // A message through every input node, each read back through every other.
    epoch = send_through_each(&api, &inputs, &alice, epoch, "hello through node").await;
    for (_, url) in &inputs {
        let seen = messages(&api, url, &alice, epoch, "bob/5678").await;
        assert_eq!(seen.len(), inputs.len(), "every message, once: {seen:?}");
        // Bob's token works on every input node too.
        let chats = api
            .call(
                reqwest::Method::GET,
                &format!("{url}/api/chats"),
                Some(&bob),
                epoch,
                None,
            )
            .await
            .expect("chats");
        assert_eq!(chats.status, 200, "bob's chats on {url}: {}", chats.body);
    }
    wait_for_equal_rows(dir.path(), &live, epoch).await;

    // Bob logs out on one input node: his token is refused there at once, and on the other
    // within the bounded staleness of docs/decisions.md, even from a client that never saw
    // the logout's epoch (a stolen token).
    let (logout_url, other_url) = (&inputs[0].1, &inputs[1].1);
    let out = api
        .call(
            reqwest::Method::POST,
            &format!("{logout_url}/api/logout"),
            Some(&bob),
            epoch,
            None,
        )
        .await
        .expect("logout");
    assert_eq!(out.status, 204, "logout: {}", out.body);
    assert!(out.epoch > epoch, "a logout is a replicated write");
    let refused = |url: &String| {
        let (api, bob, url) = (&api, &bob, format!("{url}/api/chats"));
        async move {
            let answer = api
                .call(reqwest::Method::GET, &url, Some(bob), epoch, None)
                .await;
            answer.expect("chats").status
        }
    };
    assert_eq!(refused(logout_url).await, 401);
    let start = std::time::Instant::now();
    loop {
        let status = refused(other_url).await;
        if status == 401 {
            eprintln!(
                "the other input node refused the token {:?} after the logout",
                start.elapsed()
            );
            break;
        }
        assert_eq!(status, 200, "before it is refused, the token still works");
        assert!(
            start.elapsed() < DEADLINE,
            "{other_url} still accepts a logged-out token"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    epoch = out.epoch;

    // The writer dies during a stream of writes from two input nodes.
    let streams: Vec<_> = inputs
        .iter()
        .take(2)
        .map(|(id, url)| {
            let (url, token, id) = (url.clone(), alice.clone(), *id);
            tokio::spawn(async move {
                write_stream(url, token, id, epoch, Duration::from_secs(2)).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    cluster
        .kill(writer, NodeSignal::Kill)
        .expect("SIGKILL the writer");
    live.remove(&writer);
    let mut acknowledged = BTreeSet::new();
    for stream in streams {
        let (acks, last_epoch) = stream.await.expect("stream task");
        epoch = epoch.max(last_epoch);
        acknowledged.extend(acks);
    }
    eprintln!(
        "{} writes acknowledged around the failover",
        acknowledged.len()
    );
    let (statuses, _) = wait_until(&cluster, &live, DEADLINE, "serving again", serving).await;
    assert_each_acknowledged_once(&api, &statuses, &alice, epoch, "bob/5678", &acknowledged).await;
    wait_for_equal_rows(dir.path(), &live, epoch).await;
    cluster.down().await.expect("clean stop");
}

/// A cluster of one is its own majority: it elects itself, takes writes and serves every kind
/// of route; garbage on its data port is dropped and counted while it keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_node_cluster_serves_the_api_and_drops_garbage_on_its_data_port() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = start(1, Topology::Line, dir.path(), 26_400, ENV).await;
    let only = set([1]);
    let (statuses, _) = wait_until(&cluster, &only, DEADLINE, "serving", serving).await;
    let url = statuses[&1]["http_url"]
        .as_str()
        .expect("http_url")
        .to_owned();
    let api = Api::new();
    let (alice, mut epoch) = register_and_login(&api, &url, "alice", "1234").await;
    let (_bob, bob_epoch) = register_and_login(&api, &url, "bob", "5678").await;
    epoch = epoch.max(bob_epoch);

    // Garbage from a stranger on the data port, while the node serves.
    let data_port = cluster.description().node(1).expect("node 1").data_port;
    let (stranger, _events) = chat_transport::Transport::start(
        chat_transport::TransportConfig::new(99, "tcp://127.0.0.1:*"),
    )
    .expect("a stranger's socket");
    stranger
        .connect(1, format!("tcp://127.0.0.1:{data_port}"))
        .expect("connect");

    let call = |method, path: &str, body| {
        let url = format!("{url}{path}");
        let api = &api;
        let alice = alice.clone();
        async move {
            api.call(method, &url, Some(&alice), epoch, body)
                .await
                .expect("answer")
        }
    };
    let group = call(
        reqwest::Method::POST,
        "/api/groups",
        Some(json!({"name": "crew"})),
    )
    .await;
    assert_eq!(group.status, 201, "{}", group.body);
    let group_id = group.body["group"]["id"]
        .as_str()
        .expect("group id")
        .to_owned();
    let added = call(
        reqwest::Method::POST,
        &format!("/api/groups/{group_id}/members"),
        Some(json!({"username": "bob", "tag": "5678"})),
    )
    .await;
    assert_eq!(added.status, 201, "{}", added.body);
    for n in 0..20 {
        // Each request interleaves with garbage frames the node must drop.
        let _ = stranger.send(1, vec![0xff; n * 7 + 1]);
    }
    let posted = call(
        reqwest::Method::POST,
        &format!("/api/groups/{group_id}/chat"),
        Some(json!({"content": "hello crew"})),
    )
    .await;
    assert_eq!(posted.status, 201, "{}", posted.body);
    // One node: its own rows answer the read, already at the post's epoch.
    assert!(posted.epoch >= epoch);
    let read = call(
        reqwest::Method::GET,
        &format!("/api/groups/{group_id}/chat"),
        None,
    )
    .await;
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.body["messages"][0]["content"], json!("hello crew"));
    let chats = call(reqwest::Method::GET, "/api/chats", None).await;
    assert_eq!(chats.status, 200, "{}", chats.body);
    assert!(chats.body["chats"]
        .as_array()
        .is_some_and(|c| !c.is_empty()));
    let members = call(
        reqwest::Method::GET,
        &format!("/api/groups/{group_id}/members"),
        None,
    )
    .await;
    assert_eq!(members.body["members"].as_array().map(Vec::len), Some(2));
    let missing = call(reqwest::Method::GET, "/api/users/nobody/0000", None).await;
    assert_eq!(missing.status, 404, "{}", missing.body);
    let unauthenticated = api
        .call(
            reqwest::Method::GET,
            &format!("{url}/api/chats"),
            None,
            0,
            None,
        )
        .await
        .expect("answer");
    assert_eq!(unauthenticated.status, 401);

    wait_until(&cluster, &only, DEADLINE, "garbage counted", |s| {
        let counters = &s[&1]["data"]["counters"];
        let dropped = counters["frames_malformed"].as_u64().unwrap_or(0)
            + counters["transport_bad_frames"].as_u64().unwrap_or(0);
        (dropped > 0 && s[&1]["writer_reachable"] == json!(true))
            .then_some(())
            .ok_or_else(|| format!("nothing counted yet: {counters}"))
    })
    .await;
    stranger.shutdown().await;
}
