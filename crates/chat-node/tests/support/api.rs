//! The JSON API as the multi-process tests use it: calls carrying `Chat-Epoch`, users that
//! register and log in, reads of a private chat, streams of writes with client-chosen ids, and
//! the checks that every input node serves and every node ends with the same rows.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::settled_tree;

/// How long the API helpers wait for the rows to converge.
const DEADLINE: Duration = Duration::from_secs(30);

pub fn input_nodes(statuses: &BTreeMap<u64, Value>) -> Vec<(u64, String)> {
    statuses
        .iter()
        .filter_map(|(id, s)| Some((*id, s["http_url"].as_str()?.to_owned())))
        .collect()
}

/// The tree has settled and every input node serves HTTP and reaches a writable root.
pub fn serving(statuses: &BTreeMap<u64, Value>) -> Result<(), String> {
    settled_tree(statuses)?;
    for (id, status) in statuses {
        let roles: Vec<&str> = status["roles"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if roles.contains(&"input")
            && (status["http_url"].is_null() || status["writer_reachable"] != json!(true))
        {
            return Err(format!("input node {id} does not serve yet"));
        }
    }
    Ok(())
}

pub struct Api {
    client: reqwest::Client,
}

pub struct Answer {
    pub status: u16,
    pub epoch: u64,
    pub body: Value,
}

impl Api {
    pub fn new() -> Self {
        Api {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
        }
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        token: Option<&str>,
        epoch: u64,
        body: Option<Value>,
    ) -> Result<Answer, String> {
        let mut request = self
            .client
            .request(method, url)
            .header("Chat-Epoch", epoch.to_string());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let epoch = response
            .headers()
            .get("chat-epoch")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(0);
        let body = response.json().await.unwrap_or(Value::Null);
        Ok(Answer {
            status,
            epoch,
            body,
        })
    }
}

pub async fn register_and_login(api: &Api, url: &str, name: &str, tag: &str) -> (String, u64) {
    let body = json!({"username": name, "tag": tag, "password": "password123"});
    let created = api
        .call(
            reqwest::Method::POST,
            &format!("{url}/api/register"),
            None,
            0,
            Some(body.clone()),
        )
        .await
        .expect("register");
    assert_eq!(created.status, 201, "register {name}: {}", created.body);
    let login = api
        .call(
            reqwest::Method::POST,
            &format!("{url}/api/login"),
            None,
            created.epoch,
            Some(body),
        )
        .await
        .expect("login");
    assert_eq!(login.status, 200, "login {name}: {}", login.body);
    (
        login.body["token"].as_str().expect("token").to_owned(),
        login.epoch.max(created.epoch),
    )
}

/// Every node's database holds the same rows (its applied state), compared through the
/// store's own snapshot of each file.
pub async fn wait_for_equal_rows(run_dir: &Path, ids: &BTreeSet<u64>, at_least: u64) {
    let start = Instant::now();
    loop {
        let mut contents = BTreeMap::new();
        for id in ids {
            let path = run_dir.join(id.to_string()).join("chat.db");
            let snapshot = chat_store::Store::open(&path).and_then(|store| store.snapshot());
            contents.insert(*id, snapshot.map_err(|e| e.to_string()));
        }
        let all_there = contents
            .values()
            .all(|c| c.as_ref().is_ok_and(|s| s.epoch >= at_least));
        let distinct: BTreeSet<String> = contents.values().map(|c| format!("{c:?}")).collect();
        if all_there && distinct.len() == 1 {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the nodes' rows still differ after {DEADLINE:?} (want epoch {at_least}): {:?}",
            contents
                .iter()
                .map(|(id, c)| (id, c.as_ref().map(|s| s.epoch)))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn messages(api: &Api, url: &str, token: &str, epoch: u64, peer: &str) -> Vec<Value> {
    const PAGE: usize = 200;
    let mut all: Vec<Value> = Vec::new();
    loop {
        let before = all
            .first()
            .and_then(|m| m["id"].as_str())
            .map(|id| format!("&before={id}"))
            .unwrap_or_default();
        let answer = api
            .call(
                reqwest::Method::GET,
                &format!("{url}/api/users/{peer}/chat?limit={PAGE}{before}"),
                Some(token),
                epoch,
                None,
            )
            .await
            .expect("read");
        assert_eq!(answer.status, 200, "read from {url}: {}", answer.body);
        assert!(
            answer.epoch >= epoch,
            "the read reflects the client's epoch"
        );
        let page = answer.body["messages"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let full = page.len() == PAGE;
        all.splice(0..0, page);
        if !full {
            return all;
        }
    }
}

/// Sends alice's message `"{label} {id}"` to bob through every input node `id` in `inputs`,
/// each answered 201; returns the newest epoch seen.
pub async fn send_through_each(
    api: &Api,
    inputs: &[(u64, String)],
    token: &str,
    mut epoch: u64,
    label: &str,
) -> u64 {
    for (id, url) in inputs {
        let sent = api
            .call(
                reqwest::Method::POST,
                &format!("{url}/api/users/bob/5678/chat"),
                Some(token),
                epoch,
                Some(json!({"content": format!("{label} {id}")})),
            )
            .await
            .expect("send");
        assert_eq!(sent.status, 201, "send through node {id}: {}", sent.body);
        epoch = epoch.max(sent.epoch);
    }
    epoch
}

/// Reads the chat with `peer` through every input node and checks that each acknowledged id
/// is there and that no message appears twice.
pub async fn assert_each_acknowledged_once(
    api: &Api,
    statuses: &BTreeMap<u64, Value>,
    token: &str,
    epoch: u64,
    peer: &str,
    acknowledged: &BTreeSet<String>,
) {
    let inputs = input_nodes(statuses);
    assert!(!inputs.is_empty(), "no input node to read through");
    for (id, url) in inputs {
        let seen = messages(api, &url, token, epoch, peer).await;
        let ids: Vec<&str> = seen.iter().filter_map(|m| m["id"].as_str()).collect();
        let unique: BTreeSet<&str> = ids.iter().copied().collect();
        assert_eq!(unique.len(), ids.len(), "a message twice through node {id}");
        for ack in acknowledged {
            assert!(
                unique.contains(ack.as_str()),
                "acknowledged {ack} lost (read through node {id})"
            );
        }
    }
}

/// Posts messages from alice to bob (`bob/5678`) with client-chosen ids for `period`, retrying
/// each (same id) until it is acknowledged or 15 s have passed; returns the acknowledged ids
/// and the newest epoch seen.
pub async fn write_stream(
    url: String,
    token: String,
    node: u64,
    mut epoch: u64,
    period: Duration,
) -> (Vec<String>, u64) {
    let api = Api::new();
    let end = Instant::now() + period;
    let mut acknowledged = Vec::new();
    let mut n = 0;
    while Instant::now() < end {
        n += 1;
        let id = uuid::Uuid::new_v4().to_string();
        let give_up = Instant::now() + Duration::from_secs(15);
        loop {
            let sent = api
                .call(
                    reqwest::Method::POST,
                    &format!("{url}/api/users/bob/5678/chat"),
                    Some(&token),
                    epoch,
                    Some(json!({"id": id, "content": format!("stream {node} #{n}")})),
                )
                .await;
            match sent {
                Ok(answer) if answer.status == 201 || answer.status == 200 => {
                    epoch = epoch.max(answer.epoch);
                    acknowledged.push(id);
                    break;
                }
                _ if Instant::now() > give_up => break,
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
    (acknowledged, epoch)
}
