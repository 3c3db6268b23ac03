//! The JSON API against the real local service over a SQLite file (one node): every route,
//! every error code, the bad inputs (each answered with its code, nothing stored), retries,
//! tokens, rate limits, epochs and the live-update stream.

mod support;

use std::time::Duration;

use http::Method;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use support::{api_request, harness, harness_with, raw_request, PASSWORD};

fn id_of(value: &Value) -> String {
    value["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn register_answers_the_user_and_refuses_bad_input_storing_nothing() {
    let h = harness();
    let user = h.register("alice", "0042").await;
    assert_eq!(user["username"], "alice");
    assert_eq!(user["tag"], "0042", "the tag stays text");
    assert!(user["id"].as_str().is_some());
    assert_eq!(
        user.as_object().unwrap().len(),
        3,
        "a user is {{id, username, tag}}: {user}"
    );

    let before = h.epoch();
    let long_name = "x".repeat(33);
    let bad_bodies = [
        json!({"username": "", "tag": "123", "password": PASSWORD}),
        json!({"username": "a b", "tag": "123", "password": PASSWORD}),
        json!({"username": "..", "tag": "123", "password": PASSWORD}),
        json!({"username": long_name, "tag": "123", "password": PASSWORD}),
        json!({"username": "bob", "tag": "12", "password": PASSWORD}),
        json!({"username": "bob", "tag": "1234567", "password": PASSWORD}),
        json!({"username": "bob", "tag": "123x", "password": PASSWORD}),
        json!({"username": "bob", "tag": "123", "password": "short"}),
        json!({"username": "bob", "tag": "123", "password": "p".repeat(73)}),
        json!({"username": "bob", "tag": "123"}),
        json!({"username": "bob", "tag": 123, "password": PASSWORD}),
        json!(["bob"]),
    ];
    for body in bad_bodies {
        let answer = h
            .api(Method::POST, "/api/register", None, Some(body.clone()))
            .await;
        answer.assert_error(400, "invalid_input");
        if body["password"].as_str().is_some_and(|p| p.len() > 72) {
            assert!(answer.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("72"));
        }
    }
    let not_json = raw_request(Method::POST, "/api/register", &[], "username=bob");
    h.send(not_json).await.assert_error(400, "invalid_input");
    let huge = raw_request(
        Method::POST,
        "/api/register",
        &[],
        vec![b' '; 64 * 1024 + 1],
    );
    h.send(huge).await.assert_error(413, "too_large");
    assert_eq!(h.epoch(), before, "nothing stored");

    let taken = json!({"username": "alice", "tag": "0042", "password": PASSWORD});
    h.api(Method::POST, "/api/register", None, Some(taken))
        .await
        .assert_error(409, "conflict");
    // `0042` and `042` are different tags.
    h.register("alice", "042").await;

    h.api(Method::GET, "/api/register", None, None)
        .await
        .assert_error(405, "method_not_allowed");
    h.api(Method::GET, "/api/nothing", None, None)
        .await
        .assert_error(404, "not_found");
}

#[tokio::test]
async fn a_retried_post_with_the_same_key_answers_200_and_writes_nothing() {
    let h = harness();
    let body = json!({"username": "carol", "tag": "777", "password": PASSWORD});
    let first = h
        .send(api_request(
            Method::POST,
            "/api/register",
            None,
            Some(body.clone()),
            &[("idempotency-key", "k1")],
        ))
        .await;
    assert_eq!(first.status, 201, "{}", first.text());
    let epoch = h.epoch();
    let again = h
        .send(api_request(
            Method::POST,
            "/api/register",
            None,
            Some(body),
            &[("idempotency-key", "k1")],
        ))
        .await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["user"], first.json()["user"]);
    assert_eq!(h.epoch(), epoch, "nothing written");

    let token = h.login("carol", "777").await;
    let create = |key: &'static str| {
        api_request(
            Method::POST,
            "/api/groups",
            Some(&token),
            Some(json!({"name": "g"})),
            &[("idempotency-key", key)],
        )
    };
    let group = h.send(create("g1")).await;
    assert_eq!(group.status, 201);
    let epoch = h.epoch();
    let replay = h.send(create("g1")).await;
    assert_eq!(replay.status, 200);
    assert_eq!(replay.json()["group"]["id"], group.json()["group"]["id"]);
    assert_eq!(h.epoch(), epoch);
    let long_key = "k".repeat(201);
    let bad = api_request(
        Method::POST,
        "/api/groups",
        Some(&token),
        Some(json!({"name": "g"})),
        &[("idempotency-key", &long_key)],
    );
    h.send(bad).await.assert_error(400, "invalid_input");
    assert_eq!(h.epoch(), epoch);
}

#[tokio::test]
async fn login_gives_a_token_and_wrong_credentials_are_401() {
    let h = harness();
    h.register("dave", "123").await;
    let answer = h
        .api(
            Method::POST,
            "/api/login",
            None,
            Some(json!({"username": "dave", "tag": "123", "password": PASSWORD})),
        )
        .await;
    assert_eq!(answer.status, 200);
    let body = answer.json();
    assert_eq!(body["user"]["username"], "dave");
    assert!(body["token"].as_str().unwrap().starts_with("v1."));
    for (name, password) in [("dave", "wrong password"), ("nobody", PASSWORD)] {
        h.api(
            Method::POST,
            "/api/login",
            None,
            Some(json!({"username": name, "tag": "123", "password": password})),
        )
        .await
        .assert_error(401, "unauthenticated");
    }
    h.api(
        Method::POST,
        "/api/login",
        None,
        Some(json!({"username": "dave", "tag": "1"})),
    )
    .await
    .assert_error(400, "invalid_input");
}

#[tokio::test]
async fn login_attempts_are_limited_per_account_with_retry_after() {
    let h = harness();
    h.register("erin", "123").await;
    let wrong = json!({"username": "erin", "tag": "123", "password": "not the password"});
    // The test config allows a burst of 5 per account.
    for _ in 0..5 {
        h.api(Method::POST, "/api/login", None, Some(wrong.clone()))
            .await
            .assert_error(401, "unauthenticated");
    }
    let limited = h.api(Method::POST, "/api/login", None, Some(wrong)).await;
    limited.assert_error(429, "rate_limited");
    let wait: u64 = limited
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    // Another account from the same address is not affected.
    h.register("frank", "123").await;
    h.login("frank", "123").await;
}

#[tokio::test]
async fn login_attempts_are_limited_per_address() {
    let mut config = support::config();
    config.login_per_address = chat_web::ratelimit::Limit {
        burst: 2,
        per_minute: 1,
    };
    let h = harness_with(config);
    for name in ["a1", "a2"] {
        h.api(
            Method::POST,
            "/api/login",
            None,
            Some(json!({"username": name, "tag": "123", "password": PASSWORD})),
        )
        .await
        .assert_error(401, "unauthenticated");
    }
    h.api(
        Method::POST,
        "/api/login",
        None,
        Some(json!({"username": "a3", "tag": "123", "password": PASSWORD})),
    )
    .await
    .assert_error(429, "rate_limited");
}

#[tokio::test]
async fn tokens_are_checked_and_logout_ends_them() {
    let h = harness();
    let (_, token) = h.user("gina", "123").await;
    assert_eq!(
        h.api(Method::GET, "/api/chats", Some(&token), None)
            .await
            .status,
        200
    );
    h.api(Method::GET, "/api/chats", None, None)
        .await
        .assert_error(401, "unauthenticated");
    h.api(Method::GET, "/api/chats", Some("garbage"), None)
        .await
        .assert_error(401, "unauthenticated");
    let basic = raw_request(
        Method::GET,
        "/api/chats",
        &[("authorization", "Basic Zm9vOmJhcg==")],
        "",
    );
    h.send(basic).await.assert_error(401, "unauthenticated");

    // A token from another cluster, and an expired one, are refused.
    let claims = chat_web::token::verify(&h.keys, &token, 0).unwrap();
    let foreign = chat_web::token::sign(&support::keys(9), &claims);
    h.api(Method::GET, "/api/chats", Some(&foreign), None)
        .await
        .assert_error(401, "unauthenticated");
    let mut old = claims.clone();
    old.expires_at = 1;
    let expired = chat_web::token::sign(&h.keys, &old);
    h.api(Method::GET, "/api/chats", Some(&expired), None)
        .await
        .assert_error(401, "unauthenticated");

    let second = h.login("gina", "123").await;
    let (_, hal) = h.user("hal", "456").await;
    // Two other input nodes of the cluster, each accepting gina's tokens (and keeping her
    // session version).
    let (near, far) = (h.other_node(), h.other_node());
    for node in [&near, &far] {
        for token in [&token, &second] {
            let answer = node.api(Method::GET, "/api/chats", Some(token), None).await;
            assert_eq!(answer.status, 200, "{}", answer.text());
        }
    }
    let out = h.api(Method::POST, "/api/logout", Some(&token), None).await;
    assert_eq!(out.status, 204);
    let logout_epoch = out
        .header("chat-epoch")
        .expect("the logout's epoch")
        .to_owned();
    assert_eq!(logout_epoch, h.epoch().to_string(), "a logout is a write");
    for ended in [&token, &second] {
        h.api(Method::GET, "/api/chats", Some(ended), None)
            .await
            .assert_error(401, "unauthenticated");
    }
    // Another input node refuses them as soon as it knows the logout's epoch: from the
    // client (Chat-Epoch) ...
    let carrying = &[("chat-epoch", logout_epoch.as_str())];
    near.send(support::api_request(
        Method::GET,
        "/api/chats",
        Some(&second),
        None,
        carrying,
    ))
    .await
    .assert_error(401, "unauthenticated");
    // ... or from any answer it gave since (here another user's request).
    let answer = far.api(Method::GET, "/api/chats", Some(&hal), None).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    far.api(Method::GET, "/api/chats", Some(&second), None)
        .await
        .assert_error(401, "unauthenticated");
    let fresh = h.login("gina", "123").await;
    assert_eq!(
        h.api(Method::GET, "/api/chats", Some(&fresh), None)
            .await
            .status,
        200
    );
}

/// Writes move no session mark: a client sending message after message (and carrying the
/// epoch of each answer, as the page does) has its session version read about once per
/// cache lifetime, not once a request; a logout anywhere makes the next check read again.
#[tokio::test]
async fn a_stream_of_messages_does_not_read_the_session_again_each_time() {
    let h = harness();
    let (_, alice) = h.user("alice", "001").await;
    let (_, bob) = h.user("bob", "002").await;
    let started = std::time::Instant::now();
    let before = h.session_reads();
    assert_eq!(h.user_lookups(), 0);
    let mut epoch = h.epoch().to_string();
    for i in 0..20 {
        let sent = h
            .send(support::api_request(
                Method::POST,
                "/api/users/bob/002/chat",
                Some(&alice),
                Some(json!({ "content": format!("message {i}") })),
                &[("chat-epoch", epoch.as_str())],
            ))
            .await;
        assert_eq!(sent.status, 201, "{}", sent.text());
        epoch = sent.header("chat-epoch").expect("an epoch").to_owned();
    }
    // One read per started second of the cache's lifetime at most (a slow machine may
    // cross it), against one per message before.
    let reads = h.session_reads() - before;
    let lifetimes = started.elapsed().as_secs() as usize + 1;
    assert!(
        reads <= lifetimes,
        "{reads} session reads for 20 messages in {lifetimes} cache lifetime(s)"
    );
    // Nor is `bob#002` resolved again for each message.
    assert_eq!(h.user_lookups(), 1, "bob#002 resolved once");
    // Bob's logout moves the mark: Alice's next check reads her version again.
    let out = h.api(Method::POST, "/api/logout", Some(&bob), None).await;
    assert_eq!(out.status, 204);
    let before = h.session_reads();
    let answer = h.api(Method::GET, "/api/chats", Some(&alice), None).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(h.session_reads() - before, 1);
}

/// An input node remembers whom a `name#tag` names when it sends private messages; once
/// that account is deleted and the name taken again, the next message goes to the new
/// account (not to the deleted one, and not refused), and with nobody holding the name it is
/// refused, storing nothing.
#[tokio::test]
async fn a_message_follows_a_name_taken_again_after_its_account_was_deleted() {
    let harness = harness();
    let h = &harness;
    let (_, alice) = h.user("alice", "001").await;
    let (old_bob, old_bob_token) = h.user("bob", "002").await;
    let send = |content: &'static str| h.message("bob/002", &alice, content);
    let delete = |user: Value, token: String| async move {
        let path = format!("/api/users/{}", id_of(&user));
        let gone = h.api(Method::DELETE, &path, Some(&token), None).await;
        assert_eq!(gone.status, 204, "{}", gone.text());
    };
    assert_eq!(send("to the first bob").await.status, 201);
    delete(old_bob, old_bob_token).await;
    let (new_bob, new_bob_token) = h.user("bob", "002").await;
    let sent = send("to the second bob").await;
    assert_eq!(sent.status, 201, "{}", sent.text());
    let page = h
        .api(
            Method::GET,
            "/api/users/alice/001/chat",
            Some(&new_bob_token),
            None,
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.text());
    let contents: Vec<String> = page.json()["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["content"].as_str().expect("content").to_owned())
        .collect();
    assert_eq!(contents, ["to the second bob"]);

    delete(new_bob, new_bob_token).await;
    let at = h.epoch();
    send("to nobody").await.assert_error(404, "not_found");
    assert_eq!(h.epoch(), at, "a refused message stores nothing");
}

#[tokio::test]
async fn users_are_found_by_name_and_profiles_show_shared_groups_only() {
    let h = harness();
    let (_, alice) = h.user("alice", "001").await;
    let (bob_user, bob) = h.user("bob", "002").await;
    h.register("bob", "003").await;

    let found = h
        .api(Method::GET, "/api/users?name=bob", Some(&alice), None)
        .await;
    assert_eq!(found.status, 200);
    assert_eq!(found.json()["users"].as_array().unwrap().len(), 2);
    let none = h
        .api(Method::GET, "/api/users?name=zed", Some(&alice), None)
        .await;
    assert_eq!(none.json()["users"], json!([]));
    h.api(Method::GET, "/api/users", Some(&alice), None)
        .await
        .assert_error(400, "invalid_input");
    h.api(Method::GET, "/api/users?name=a%20b", Some(&alice), None)
        .await
        .assert_error(400, "invalid_input");

    let shared = h
        .api(
            Method::POST,
            "/api/groups",
            Some(&alice),
            Some(json!({"name": "shared"})),
        )
        .await
        .json();
    let gid = id_of(&shared["group"]);
    h.api(
        Method::POST,
        &format!("/api/groups/{gid}/members"),
        Some(&alice),
        Some(json!({"username": "bob", "tag": "002"})),
    )
    .await;
    // A group of bob's that alice is not in stays hidden.
    h.api(
        Method::POST,
        "/api/groups",
        Some(&bob),
        Some(json!({"name": "private"})),
    )
    .await;

    let profile = h
        .api(Method::GET, "/api/users/bob/002", Some(&alice), None)
        .await;
    assert_eq!(profile.status, 200, "{}", profile.text());
    let profile = profile.json();
    assert_eq!(profile["user"], bob_user);
    let groups = profile["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{profile}");
    assert_eq!(groups[0]["name"], "shared");
    assert_eq!(groups[0]["owner"]["username"], "alice");

    h.api(Method::GET, "/api/users/nobody/002", Some(&alice), None)
        .await
        .assert_error(404, "not_found");
    h.api(Method::GET, "/api/users/bob/02", Some(&alice), None)
        .await
        .assert_error(400, "invalid_input");
    h.api(Method::GET, "/api/users/bob/002", None, None)
        .await
        .assert_error(401, "unauthenticated");
}

#[tokio::test]
async fn private_chats_send_read_page_and_refuse_bad_messages() {
    let h = harness();
    let (alice_user, alice) = h.user("alice", "001").await;
    let (_, bob) = h.user("bob", "002").await;

    let sent = h
        .api(
            Method::POST,
            "/api/users/bob/002/chat",
            Some(&alice),
            Some(json!({"content": "  hello bob  "})),
        )
        .await;
    assert_eq!(sent.status, 201, "{}", sent.text());
    let message = sent.json()["message"].clone();
    assert_eq!(message["content"], "hello bob", "trimmed");
    assert_eq!(message["sender"], alice_user);
    let id: uuid::Uuid = message["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        id.get_version_num(),
        7,
        "a server-chosen id is time-ordered"
    );
    assert!(
        message["created_at"].as_str().unwrap().ends_with('Z'),
        "{message}"
    );
    let epoch = message["epoch"].as_u64().unwrap();
    assert_eq!(sent.header("chat-epoch"), Some(epoch.to_string().as_str()));

    // A client-chosen id makes the send retry-safe.
    let id = "6f1e1c2a-3b4d-4e5f-8a9b-0c1d2e3f4a5b";
    let body = json!({"content": "once", "id": id});
    let first = h
        .api(
            Method::POST,
            "/api/users/bob/002/chat",
            Some(&alice),
            Some(body.clone()),
        )
        .await;
    assert_eq!(first.status, 201);
    assert_eq!(first.json()["message"]["id"], id);
    let at = h.epoch();
    let again = h
        .api(
            Method::POST,
            "/api/users/bob/002/chat",
            Some(&alice),
            Some(body),
        )
        .await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["message"], first.json()["message"]);
    assert_eq!(h.epoch(), at);

    for n in 0..5 {
        h.api(
            Method::POST,
            "/api/users/alice/001/chat",
            Some(&bob),
            Some(json!({"content": format!("n{n}")})),
        )
        .await;
    }
    // Both see the private chat in their chat list, with its newest message.
    let chats = h
        .api(Method::GET, "/api/chats", Some(&alice), None)
        .await
        .json();
    assert_eq!(chats["chats"][0]["kind"], "private", "{chats}");
    assert_eq!(chats["chats"][0]["user"]["username"], "bob");
    assert_eq!(chats["chats"][0]["newest"]["content"], "n4");
    assert_eq!(chats["chats"][0]["newest"]["sender"]["username"], "bob");

    let read = h
        .api(Method::GET, "/api/users/alice/001/chat", Some(&bob), None)
        .await;
    assert_eq!(read.status, 200);
    let page = read.json();
    let contents: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        contents,
        ["hello bob", "once", "n0", "n1", "n2", "n3", "n4"],
        "oldest first"
    );
    assert_eq!(
        page["epoch"].as_u64(),
        read.header("chat-epoch").and_then(|e| e.parse().ok())
    );

    let newest = h
        .api(
            Method::GET,
            "/api/users/bob/002/chat?limit=2",
            Some(&alice),
            None,
        )
        .await
        .json();
    let newest: Vec<Value> = newest["messages"].as_array().unwrap().clone();
    assert_eq!(
        newest
            .iter()
            .map(|m| m["content"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["n3", "n4"]
    );
    let before = id_of(&newest[0]);
    let older = h
        .api(
            Method::GET,
            &format!("/api/users/bob/002/chat?limit=2&before={before}"),
            Some(&alice),
            None,
        )
        .await
        .json();
    let older: Vec<&str> = older["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(older, ["n1", "n2"]);
    let clamped = h
        .api(
            Method::GET,
            "/api/users/bob/002/chat?limit=100000",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(clamped.status, 200);

    let at = h.epoch();
    let unknown_id = "00000000-0000-4000-8000-000000000000";
    for (path, code, status) in [
        (
            format!("/api/users/bob/002/chat?before={unknown_id}"),
            "invalid_input",
            400,
        ),
        (
            "/api/users/bob/002/chat?before=nope".to_owned(),
            "invalid_input",
            400,
        ),
        (
            "/api/users/bob/002/chat?limit=0".to_owned(),
            "invalid_input",
            400,
        ),
        (
            "/api/users/bob/002/chat?limit=x".to_owned(),
            "invalid_input",
            400,
        ),
        ("/api/users/alice/001/chat".to_owned(), "invalid_input", 400),
        ("/api/users/nobody/002/chat".to_owned(), "not_found", 404),
    ] {
        h.api(Method::GET, &path, Some(&alice), None)
            .await
            .assert_error(status, code);
    }
    let long = "x".repeat(4001);
    for (path, body, code, status) in [
        (
            "/api/users/bob/002/chat",
            json!({"content": ""}),
            "invalid_input",
            400,
        ),
        (
            "/api/users/bob/002/chat",
            json!({"content": " \n "}),
            "invalid_input",
            400,
        ),
        (
            "/api/users/bob/002/chat",
            json!({"content": long}),
            "invalid_input",
            400,
        ),
        (
            "/api/users/bob/002/chat",
            json!({"content": "hi", "id": "not-a-uuid"}),
            "invalid_input",
            400,
        ),
        ("/api/users/bob/002/chat", json!({}), "invalid_input", 400),
        (
            "/api/users/alice/001/chat",
            json!({"content": "me"}),
            "invalid_input",
            400,
        ),
        (
            "/api/users/nobody/002/chat",
            json!({"content": "hi"}),
            "not_found",
            404,
        ),
    ] {
        h.api(Method::POST, path, Some(&alice), Some(body))
            .await
            .assert_error(status, code);
    }
    let exactly = "é".repeat(4000);
    let at_limit = h
        .api(
            Method::POST,
            "/api/users/bob/002/chat",
            Some(&alice),
            Some(json!({"content": exactly})),
        )
        .await;
    assert_eq!(at_limit.status, 201);
    assert_eq!(h.epoch(), at + 1, "only the valid message was stored");
}

#[tokio::test]
async fn a_client_ahead_of_this_node_gets_503_with_retry_after() {
    let h = harness();
    let (_, alice) = h.user("alice", "001").await;
    let ahead = api_request(
        Method::GET,
        "/api/chats",
        Some(&alice),
        None,
        &[("chat-epoch", "999999")],
    );
    let answer = h.send(ahead).await;
    answer.assert_error(503, "unavailable");
    assert_eq!(answer.header("retry-after"), Some("1"));
    let garbage = api_request(
        Method::GET,
        "/api/chats",
        Some(&alice),
        None,
        &[("chat-epoch", "soon")],
    );
    h.send(garbage).await.assert_error(400, "invalid_input");
    let current = h.epoch().to_string();
    let fresh = api_request(
        Method::GET,
        "/api/chats",
        Some(&alice),
        None,
        &[("chat-epoch", &current)],
    );
    let answer = h.send(fresh).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("chat-epoch"), Some(current.as_str()));
}

#[tokio::test]
async fn groups_members_and_group_chat_with_every_refusal() {
    let h = harness();
    let (alice_user, alice) = h.user("alice", "001").await;
    let (bob_user, bob) = h.user("bob", "002").await;
    let (_, carol) = h.user("carol", "003").await;

    let created = h
        .api(
            Method::POST,
            "/api/groups",
            Some(&alice),
            Some(json!({"name": " Friends "})),
        )
        .await;
    assert_eq!(created.status, 201);
    let group = created.json()["group"].clone();
    assert_eq!(group["name"], "Friends");
    assert_eq!(group["owner"], alice_user);
    assert!(group["created_at"].as_str().unwrap().ends_with('Z'));
    let gid = id_of(&group);
    let at = h.epoch();
    for body in [
        json!({"name": "  "}),
        json!({"name": "g".repeat(65)}),
        json!({}),
    ] {
        h.api(Method::POST, "/api/groups", Some(&alice), Some(body))
            .await
            .assert_error(400, "invalid_input");
    }
    assert_eq!(h.epoch(), at);

    let members_path = format!("/api/groups/{gid}/members");
    let added = h
        .api(
            Method::POST,
            &members_path,
            Some(&alice),
            Some(json!({"username": "bob", "tag": "002"})),
        )
        .await;
    assert_eq!(added.status, 201, "{}", added.text());
    assert_eq!(added.json()["member"], bob_user);
    let again = h
        .api(
            Method::POST,
            &members_path,
            Some(&alice),
            Some(json!({"username": "bob", "tag": "002"})),
        )
        .await;
    assert_eq!(again.status, 200, "already a member: {}", again.text());
    assert_eq!(again.json()["member"], bob_user);
    let at = h.epoch();
    h.api(
        Method::POST,
        &members_path,
        Some(&alice),
        Some(json!({"username": "nobody", "tag": "002"})),
    )
    .await
    .assert_error(404, "not_found");
    h.api(
        Method::POST,
        &members_path,
        Some(&alice),
        Some(json!({"username": "bob", "tag": "2"})),
    )
    .await
    .assert_error(400, "invalid_input");
    h.api(
        Method::POST,
        &members_path,
        Some(&carol),
        Some(json!({"username": "carol", "tag": "003"})),
    )
    .await
    .assert_error(403, "forbidden");
    assert_eq!(h.epoch(), at);

    let detail = h
        .api(Method::GET, &format!("/api/groups/{gid}"), Some(&bob), None)
        .await;
    assert_eq!(detail.status, 200);
    assert_eq!(detail.json()["members"], json!([alice_user, bob_user]));
    assert_eq!(detail.json()["group"]["id"], gid);
    let members = h
        .api(Method::GET, &members_path, Some(&bob), None)
        .await
        .json();
    assert_eq!(members["members"].as_array().unwrap().len(), 2);

    let chat = format!("/api/groups/{gid}/chat");
    let sent = h
        .api(
            Method::POST,
            &chat,
            Some(&bob),
            Some(json!({"content": "hi all"})),
        )
        .await;
    assert_eq!(sent.status, 201);
    assert_eq!(sent.json()["message"]["chat_id"], gid);
    let page = h.api(Method::GET, &chat, Some(&alice), None).await.json();
    assert_eq!(page["messages"][0]["content"], "hi all");
    assert_eq!(page["messages"][0]["sender"], bob_user);

    // Carol is not a member: she sees nothing and writes nothing.
    let at = h.epoch();
    for (method, path) in [
        (Method::GET, format!("/api/groups/{gid}")),
        (Method::GET, members_path.clone()),
        (Method::GET, chat.clone()),
        (Method::DELETE, format!("/api/groups/{gid}")),
    ] {
        h.api(method, &path, Some(&carol), None)
            .await
            .assert_error(403, "forbidden");
    }
    h.api(
        Method::POST,
        &chat,
        Some(&carol),
        Some(json!({"content": "let me in"})),
    )
    .await
    .assert_error(403, "forbidden");
    assert_eq!(h.epoch(), at);

    let unknown = "00000000-0000-4000-8000-000000000000";
    h.api(
        Method::GET,
        &format!("/api/groups/{unknown}"),
        Some(&alice),
        None,
    )
    .await
    .assert_error(404, "not_found");
    h.api(Method::GET, "/api/groups/not-an-id", Some(&alice), None)
        .await
        .assert_error(404, "not_found");
    h.api(
        Method::GET,
        &format!("/api/groups/{unknown}/chat"),
        Some(&alice),
        None,
    )
    .await
    .assert_error(404, "not_found");

    // Only the owner removes others; anyone may leave.
    let bob_id = id_of(&bob_user);
    let alice_id = id_of(&alice_user);
    h.api(
        Method::DELETE,
        &format!("{members_path}/{alice_id}"),
        Some(&bob),
        None,
    )
    .await
    .assert_error(403, "forbidden");
    h.api(
        Method::DELETE,
        &format!("/api/groups/{gid}"),
        Some(&bob),
        None,
    )
    .await
    .assert_error(403, "forbidden");
    let left = h
        .api(
            Method::DELETE,
            &format!("{members_path}/{bob_id}"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(left.status, 204, "{}", left.text());
    h.api(Method::GET, &chat, Some(&bob), None)
        .await
        .assert_error(403, "forbidden");
    h.api(
        Method::DELETE,
        &format!("{members_path}/{bob_id}"),
        Some(&alice),
        None,
    )
    .await
    .assert_error(404, "not_found");

    let chats = h
        .api(Method::GET, "/api/chats", Some(&alice), None)
        .await
        .json();
    let chats = chats["chats"].as_array().unwrap();
    assert_eq!(chats.len(), 1);
    assert_eq!(chats[0]["kind"], "group");
    assert_eq!(chats[0]["newest"]["content"], "hi all");
    assert!(chats[0]["unread"].is_u64());

    let deleted = h
        .api(
            Method::DELETE,
            &format!("/api/groups/{gid}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(deleted.status, 204);
    h.api(
        Method::GET,
        &format!("/api/groups/{gid}"),
        Some(&alice),
        None,
    )
    .await
    .assert_error(404, "not_found");
    h.api(
        Method::PUT,
        &format!("/api/groups/{gid}"),
        Some(&alice),
        None,
    )
    .await
    .assert_error(405, "method_not_allowed");
}

#[tokio::test]
async fn an_account_is_deleted_only_by_its_owner_and_its_tokens_end() {
    let h = harness();
    let (alice_user, alice) = h.user("alice", "001").await;
    let (_, bob) = h.user("bob", "002").await;
    let alice_id = id_of(&alice_user);
    let at = h.epoch();
    h.api(
        Method::DELETE,
        &format!("/api/users/{alice_id}"),
        Some(&bob),
        None,
    )
    .await
    .assert_error(403, "forbidden");
    h.api(Method::DELETE, "/api/users/not-an-id", Some(&bob), None)
        .await
        .assert_error(404, "not_found");
    assert_eq!(h.epoch(), at);
    let gone = h
        .api(
            Method::DELETE,
            &format!("/api/users/{alice_id}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(gone.status, 204);
    h.api(Method::GET, "/api/chats", Some(&alice), None)
        .await
        .assert_error(401, "unauthenticated");
    // Another input node too: the deleted account has no session to read.
    h.other_node()
        .api(Method::GET, "/api/chats", Some(&alice), None)
        .await
        .assert_error(401, "unauthenticated");
    h.api(Method::GET, "/api/users/alice/001", Some(&bob), None)
        .await
        .assert_error(404, "not_found");
    // The name is free again.
    h.register("alice", "001").await;
}

async fn next_chunk(body: &mut chat_web::WebBody) -> String {
    let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("an event within 10 s")
        .expect("the stream is open")
        .expect("no error");
    String::from_utf8(frame.into_data().expect("data").to_vec()).unwrap()
}

/// Reads chunks until one holds `needle`.
async fn until(body: &mut chat_web::WebBody, needle: &str) -> String {
    loop {
        let chunk = next_chunk(body).await;
        if chunk.contains(needle) {
            return chunk;
        }
    }
}

fn events(
    token: &str,
    last_event_id: Option<&str>,
) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let mut headers = vec![];
    if let Some(id) = last_event_id {
        headers.push(("last-event-id", id));
    }
    api_request(Method::GET, "/api/events", Some(token), None, &headers)
}

#[tokio::test]
async fn live_updates_reach_the_audience_only_and_resume_after_last_event_id() {
    let h = harness();
    let (_, alice) = h.user("alice", "001").await;
    let (_, bob) = h.user("bob", "002").await;
    let (_, carol) = h.user("carol", "003").await;

    let response = h.open(events(&bob, None)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut bob_stream = response.into_body();
    let mut carol_stream = h.open(events(&carol, None)).await.into_body();
    assert!(until(&mut bob_stream, "connected").await.contains("retry:"));
    until(&mut carol_stream, "connected").await;

    let first = h
        .api(
            Method::POST,
            "/api/users/bob/002/chat",
            Some(&alice),
            Some(json!({"content": "<b>one</b>"})),
        )
        .await
        .json();
    let epoch = first["message"]["epoch"].as_u64().unwrap();
    let event = until(&mut bob_stream, "event: message").await;
    assert!(event.contains(&format!("id: {epoch}\n")), "{event}");
    let data = event
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap();
    let data: Value = serde_json::from_str(data).unwrap();
    assert_eq!(data["content"], "<b>one</b>");
    assert_eq!(data["sender"]["username"], "alice");

    // Carol is not in the chat: her stream gets her own message, never bob's.
    h.api(
        Method::POST,
        "/api/users/alice/001/chat",
        Some(&carol),
        Some(json!({"content": "carol's"})),
    )
    .await;
    let carols = until(&mut carol_stream, "event: message").await;
    assert!(
        carols.contains("carol's") && !carols.contains("one"),
        "{carols}"
    );

    // Bob reconnects after the first message and gets the second.
    drop(bob_stream);
    h.api(
        Method::POST,
        "/api/users/bob/002/chat",
        Some(&alice),
        Some(json!({"content": "two"})),
    )
    .await;
    let mut resumed = h
        .open(events(&bob, Some(&epoch.to_string())))
        .await
        .into_body();
    let missed = until(&mut resumed, "event: message").await;
    assert!(missed.contains("\"two\""), "{missed}");
    assert!(!missed.contains("<b>one</b>"));

    h.send(events(&bob, Some("x")))
        .await
        .assert_error(400, "invalid_input");
    h.send(api_request(Method::GET, "/api/events", None, None, &[]))
        .await
        .assert_error(401, "unauthenticated");
}

#[tokio::test]
async fn a_live_stream_ends_with_its_session() {
    let h = harness_with(chat_web::WebConfig {
        sse_session_check_ms: 100,
        ..support::config()
    });
    let (_, alice) = h.user("alice", "001").await;
    let (_, bob) = h.user("bob", "002").await;
    let (carol_user, carol) = h.user("carol", "003").await;
    let mut alice_stream = h.open(events(&alice, None)).await.into_body();
    let mut bob_stream = h.open(events(&bob, None)).await.into_body();
    let mut carol_stream = h.open(events(&carol, None)).await.into_body();
    for stream in [&mut alice_stream, &mut bob_stream, &mut carol_stream] {
        until(stream, "connected").await;
    }

    // Bob logs out (on this node or any other): his open stream is told and closed.
    let out = h.api(Method::POST, "/api/logout", Some(&bob), None).await;
    assert_eq!(out.status, 204, "{}", out.text());
    until(&mut bob_stream, "event: ended").await;
    let end = tokio::time::timeout(Duration::from_secs(10), bob_stream.frame())
        .await
        .expect("closed within 10 s");
    assert!(end.is_none(), "the stream stays open: {end:?}");

    // Carol deletes her account: the same.
    let path = format!("/api/users/{}", id_of(&carol_user));
    let gone = h.api(Method::DELETE, &path, Some(&carol), None).await;
    assert_eq!(gone.status, 204, "{}", gone.text());
    until(&mut carol_stream, "event: ended").await;

    // Alice's session stands: her stream still carries messages.
    h.api(
        Method::POST,
        "/api/users/alice/001/chat",
        Some(&h.login("bob", "002").await),
        Some(json!({"content": "still here"})),
    )
    .await;
    assert!(until(&mut alice_stream, "event: message")
        .await
        .contains("still here"));
}

#[tokio::test]
async fn the_server_answers_over_tcp_and_stops_on_request() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = harness();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(chat_web::WebServer::serve_app(
        listener,
        h.app.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(b"GET /api/chats HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer
        .to_ascii_lowercase()
        .contains("x-content-type-options: nosniff"));
    assert!(answer.contains("\"unauthenticated\""));
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(15), server)
        .await
        .expect("stops")
        .unwrap();
}

#[tokio::test]
async fn unread_counts_follow_the_read_position_moved_through_the_api() {
    let h = harness();
    let (_, amy) = h.user("amy", "111").await;
    let (_, ben) = h.user("ben", "222").await;
    let (_, cat) = h.user("cat", "333").await;
    for text in ["one", "two"] {
        let sent = h.message("amy/111", &ben, text).await;
        assert_eq!(sent.status, 201, "{}", sent.text());
    }
    let chats = |token: String| {
        let h = &h;
        async move {
            h.api(Method::GET, "/api/chats", Some(&token), None)
                .await
                .json()["chats"][0]
                .clone()
        }
    };
    let listed = chats(amy.clone()).await;
    assert_eq!(listed["unread"], 2, "{listed}");
    assert_eq!(chats(ben.clone()).await["unread"], 0, "one's own messages");
    let chat_id = listed["chat_id"].as_str().unwrap().to_owned();
    let read = format!("/api/chats/{chat_id}/read");

    // Reading through the API writes nothing: the client says what its reader saw.
    let at = h.epoch();
    let page = h
        .api(Method::GET, "/api/users/ben/222/chat", Some(&amy), None)
        .await
        .json();
    assert_eq!(h.epoch(), at);
    let epochs: Vec<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["epoch"].as_u64().unwrap())
        .collect();
    let mark = |token: String, path: String, epoch: u64| {
        let h = &h;
        async move {
            h.api(
                Method::POST,
                &path,
                Some(&token),
                Some(json!({ "epoch": epoch })),
            )
            .await
        }
    };
    let first = mark(amy.clone(), read.clone(), epochs[0]).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.json()["read_epoch"], epochs[0]);
    assert_eq!(chats(amy.clone()).await["unread"], 1);
    let at = h.epoch();
    assert_eq!(mark(amy.clone(), read.clone(), epochs[0]).await.status, 200);
    assert_eq!(h.epoch(), at, "the same position again is the same write");
    mark(amy.clone(), read.clone(), epochs[1]).await;
    assert_eq!(chats(amy.clone()).await["unread"], 0);
    let back = mark(amy.clone(), read.clone(), 1).await;
    assert_eq!(back.json()["read_epoch"], epochs[1], "never back");

    // Only the chat's own people move a position in it.
    mark(cat.clone(), read.clone(), epochs[1])
        .await
        .assert_error(404, "not_found");
    mark(amy.clone(), "/api/chats/nonsense/read".to_owned(), 1)
        .await
        .assert_error(404, "not_found");
    let group = h
        .api(
            Method::POST,
            "/api/groups",
            Some(&amy),
            Some(json!({ "name": "g" })),
        )
        .await
        .json();
    let gid = group["group"]["id"].as_str().unwrap();
    mark(cat, format!("/api/chats/{gid}/read"), 1)
        .await
        .assert_error(403, "forbidden");
    h.api(
        Method::POST,
        &read,
        Some(&amy),
        Some(json!({ "epoch": -1 })),
    )
    .await
    .assert_error(400, "invalid_input");
}
