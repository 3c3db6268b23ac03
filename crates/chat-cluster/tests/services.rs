//! The whole local system: real chat-bootstrap, chat-nameserver and chat-node processes on
//! loopback, started by the launcher.
//!
//! Port plans: bases 27500 and 27600 (nodes on 27501..=30504 and 27601..=30604 in blocks of
//! 1000, services on 31500..=31502 and 31600..=31602), used by no other test.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chat_cluster::{
    ClusterFile, ClusterOptions, LocalCluster, NodeOutput, NodeSignal, ServiceKind, Topology,
};
use serde_json::Value;
use support::{alive, node_binary, service_binaries};

const DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

/// Starts `nodes` nodes with the services, output in files.
async fn start(
    nodes: u64,
    topology: Topology,
    run_dir: &std::path::Path,
    base_port: u16,
    env: &[(&str, &str)],
) -> LocalCluster {
    let options = ClusterOptions {
        base_port,
        node_bin: Some(node_binary()),
        output: NodeOutput::Files,
        env: env
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect(),
        services: Some(service_binaries()),
        ..ClusterOptions::new(nodes, topology, run_dir)
    };
    LocalCluster::up(options).await.expect("cluster starts")
}

/// The answering nodes' statuses by id.
async fn statuses(cluster: &LocalCluster) -> BTreeMap<u64, Value> {
    cluster
        .status_all()
        .await
        .into_iter()
        .filter(|status| status.get("error").is_none())
        .filter_map(|status| Some((status["id"].as_u64()?, status)))
        .collect()
}

fn has_role(status: &Value, role: &str) -> bool {
    status["roles"]
        .as_array()
        .is_some_and(|roles| roles.iter().any(|name| name == role))
}

fn neighbor_ids(status: &Value) -> Vec<u64> {
    let mut ids: Vec<u64> = status["neighbors"]
        .as_array()
        .map(|neighbors| {
            neighbors
                .iter()
                .filter_map(|neighbor| neighbor["id"].as_u64())
                .collect()
        })
        .unwrap_or_default();
    ids.sort_unstable();
    ids
}

/// The one leader every node in `statuses` names, if they agree on one.
fn agreed_leader(statuses: &BTreeMap<u64, Value>) -> Option<u64> {
    let leaders: BTreeSet<Option<u64>> = statuses
        .values()
        .map(|status| status["leader"].as_u64())
        .collect();
    match leaders.into_iter().collect::<Vec<_>>().as_slice() {
        [Some(leader)] => Some(*leader),
        _ => None,
    }
}

fn front_door(cluster: &LocalCluster) -> String {
    cluster
        .description()
        .service(ServiceKind::Nameserver)
        .and_then(chat_cluster::ServiceRecord::http_url)
        .expect("a nameserver with an HTTP port")
}

/// The node ids `GET /_nameserver/nodes` lists, with their HTTP addresses.
async fn listed_input_nodes(client: &reqwest::Client, front: &str) -> BTreeMap<u64, String> {
    let listing: Value = client
        .get(format!("{front}_nameserver/nodes"))
        .send()
        .await
        .expect("the nameserver answers")
        .json()
        .await
        .expect("JSON listing");
    listing["nodes"]
        .as_array()
        .expect("a nodes array")
        .iter()
        .filter_map(|node| {
            Some((
                node["node_id"].as_u64()?,
                node["http_address"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

#[tokio::test]
async fn nameserver_lists_and_redirects_to_the_input_nodes_and_drops_a_dead_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A short lease, so a SIGKILLed input node leaves the rotation within about a second.
    let env = [
        ("CHAT_NODE_NAMESERVER__LEASE_TTL_MS", "1000"),
        ("CHAT_NODE_NAMESERVER__RENEW_MS", "250"),
    ];
    let mut cluster = start(4, Topology::Ring, &dir.path().join("run"), 27_500, &env).await;
    let front = front_door(&cluster);
    assert_eq!(front, "http://127.0.0.1:31502/", "the documented port plan");
    let recorded = ClusterFile::read(cluster.run_dir()).expect("cluster.json");
    let service_pids: Vec<u64> = recorded
        .services
        .iter()
        .filter_map(|service| service.pid.map(u64::from))
        .collect();
    assert_eq!(
        service_pids.len(),
        2,
        "both services recorded: {recorded:?}"
    );
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(2))
        .build()
        .expect("http client");

    // Settled: one leader, and the nameserver lists exactly the nodes holding the input role.
    let deadline = Instant::now() + DEADLINE;
    let (statuses, listed) = loop {
        let statuses = statuses(&cluster).await;
        let listed = listed_input_nodes(&client, &front).await;
        let inputs: BTreeSet<u64> = statuses
            .iter()
            .filter(|(_, status)| has_role(status, "input"))
            .map(|(&id, _)| id)
            .collect();
        let settled = statuses.len() == 4
            && agreed_leader(&statuses).is_some()
            && !inputs.is_empty()
            && listed.keys().copied().collect::<BTreeSet<_>>() == inputs;
        if settled {
            break (statuses, listed);
        }
        assert!(
            Instant::now() < deadline,
            "not settled: listed {listed:?}, statuses {statuses:#?}"
        );
        tokio::time::sleep(POLL).await;
    };
    for (id, address) in &listed {
        let http_port = cluster.description().node(*id).expect("a node").http_port;
        assert_eq!(address, &format!("127.0.0.1:{http_port}"), "node {id}");
    }

    let redirect = client
        .get(format!("{front}some/path?x=1"))
        .send()
        .await
        .expect("the nameserver answers");
    assert_eq!(redirect.status(), reqwest::StatusCode::TEMPORARY_REDIRECT);
    let location = redirect
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|location| location.to_str().ok())
        .expect("a Location header")
        .to_owned();
    assert!(
        listed
            .values()
            .any(|address| location == format!("http://{address}/some/path?x=1")),
        "redirect to an input node keeping path and query: {location} (input nodes {listed:?})"
    );

    let victim = *listed.keys().next().expect("an input node");
    assert!(has_role(&statuses[&victim], "input"));
    cluster.kill(victim, NodeSignal::Kill).expect("SIGKILL");
    cluster.wait_exit(victim).await.expect("it exits");
    let deadline = Instant::now() + DEADLINE;
    loop {
        let listed = listed_input_nodes(&client, &front).await;
        if !listed.contains_key(&victim) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node {victim} still listed after its lease should have lapsed: {listed:?}"
        );
        tokio::time::sleep(POLL).await;
    }

    cluster.down().await.expect("stops");
    assert!(
        service_pids.iter().all(|&pid| !alive(pid)),
        "both services stopped: {service_pids:?}"
    );
}

#[tokio::test]
async fn bootstrap_topology_forms_the_deterministic_ring_and_elects_one_leader() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = start(4, Topology::Bootstrap, &dir.path().join("run"), 27_600, &[]).await;
    let ring = BTreeMap::from([
        (1, vec![2, 4]),
        (2, vec![1, 3]),
        (3, vec![2, 4]),
        (4, vec![1, 3]),
    ]);

    let recorded = ClusterFile::read(cluster.run_dir()).expect("cluster.json");
    let described: BTreeMap<u64, Vec<u64>> = recorded
        .nodes
        .iter()
        .map(|node| (node.id, node.neighbors.clone()))
        .collect();
    assert_eq!(described, ring, "cluster.json records the assignment");
    assert_eq!(recorded.edges, vec![(1, 2), (1, 4), (2, 3), (3, 4)]);
    let config =
        std::fs::read_to_string(cluster.run_dir().join("3/node.toml")).expect("node 3 config");
    assert!(
        config.contains("neighbors = []")
            && config.contains("enabled = true")
            && config.contains("address = \"http://127.0.0.1:31600\""),
        "no static neighbours, the bootstrap enabled: {config}"
    );

    let deadline = Instant::now() + DEADLINE;
    loop {
        let statuses = statuses(&cluster).await;
        let seen: BTreeMap<u64, Vec<u64>> = statuses
            .iter()
            .map(|(&id, status)| (id, neighbor_ids(status)))
            .collect();
        if seen == ring && agreed_leader(&statuses).is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ring with one leader not reached: neighbours {seen:?}, statuses {statuses:#?}"
        );
        tokio::time::sleep(POLL).await;
    }
    cluster.down().await.expect("stops");
}

#[tokio::test]
async fn bootstrap_topology_needs_the_services() {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = ClusterOptions {
        node_bin: Some(node_binary()),
        ..ClusterOptions::new(2, Topology::Bootstrap, dir.path().join("run"))
    };
    assert!(matches!(
        LocalCluster::up(options).await,
        Err(chat_cluster::ClusterError::BootstrapNeedsServices)
    ));
}
