//! The local service against real SQLite files: every operation, every authorisation rule
//! (denials included), retries, bad input and the replica rules.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_service::{
    decode, encode, AuthService, ChatRef, Dispatcher, GroupService, LocalService, MessageService,
    Page, Reply, Request, Response, ServiceConfig, ServiceError, User, UserService,
};
use chat_store::{Durability, Snapshot, Store, StoreOptions};
use uuid::Uuid;

const PASSWORD: &str = "correct horse";

struct Node {
    _dir: tempfile::TempDir,
    service: LocalService,
}

fn node(accepts_writes: bool) -> Node {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = StoreOptions {
        durability: Durability::Normal,
        ..StoreOptions::default()
    };
    let store = Arc::new(Store::open_with(dir.path().join("chat.db"), options).expect("open"));
    // The minimum bcrypt cost keeps the suite fast; the cost itself is measured in the bench.
    let config = ServiceConfig {
        bcrypt_cost: 4,
        accepts_writes,
        ..ServiceConfig::default()
    };
    Node {
        _dir: dir,
        service: LocalService::new(store, config).expect("service"),
    }
}

impl Node {
    fn snapshot(&self) -> Snapshot {
        self.service.store().snapshot().expect("snapshot")
    }

    async fn register(&self, username: &str, tag: &str) -> User {
        self.service
            .register(Uuid::new_v4(), username, tag, PASSWORD)
            .await
            .expect("register")
            .value
    }
}

fn id() -> Uuid {
    Uuid::new_v4()
}

fn forbidden<T: std::fmt::Debug>(result: Result<T, ServiceError>) {
    assert!(
        matches!(result, Err(ServiceError::Forbidden(_))),
        "expected Forbidden: {result:?}"
    );
}

fn not_found<T: std::fmt::Debug>(result: Result<T, ServiceError>) {
    assert!(
        matches!(result, Err(ServiceError::NotFound(_))),
        "expected NotFound: {result:?}"
    );
}

fn unauthenticated<T: std::fmt::Debug>(result: Result<T, ServiceError>) {
    assert!(
        matches!(result, Err(ServiceError::Unauthenticated(_))),
        "expected Unauthenticated: {result:?}"
    );
}

fn invalid<T: std::fmt::Debug>(result: Result<T, ServiceError>) {
    assert!(
        matches!(result, Err(ServiceError::InvalidInput(_))),
        "expected InvalidInput: {result:?}"
    );
}

fn conflict<T: std::fmt::Debug>(result: Result<T, ServiceError>) {
    assert!(
        matches!(result, Err(ServiceError::Conflict(_))),
        "expected Conflict: {result:?}"
    );
}

#[tokio::test]
async fn register_and_login() {
    let n = node(true);
    let reply = n
        .service
        .register(id(), "alice", "123", PASSWORD)
        .await
        .unwrap();
    assert_eq!(
        (
            reply.value.username.as_str(),
            reply.value.tag.as_str(),
            reply.epoch
        ),
        ("alice", "123", 1)
    );
    let login = n.service.login("alice", "123", PASSWORD, 0).await.unwrap();
    assert_eq!(login.value, reply.value);
    assert_eq!(login.epoch, 1);
    unauthenticated(n.service.login("alice", "123", "wrong password", 0).await);
    unauthenticated(n.service.login("alice", "124", PASSWORD, 0).await);
    unauthenticated(n.service.login("nobody", "123", PASSWORD, 0).await);
    unauthenticated(n.service.login("alice", "1234567x", PASSWORD, 0).await);
    conflict(
        n.service
            .register(id(), "alice", "123", "another password")
            .await,
    );
    invalid(n.service.register(id(), "bob", "12", PASSWORD).await);
    invalid(n.service.register(id(), "bob", "123", "short").await);
    assert_eq!(n.service.store().current_epoch().unwrap(), 1);
}

#[tokio::test]
async fn no_response_carries_a_password_hash() {
    let n = node(true);
    let reg = n
        .service
        .register(id(), "alice", "123", PASSWORD)
        .await
        .unwrap();
    let login = n.service.login("alice", "123", PASSWORD, 0).await.unwrap();
    let hash = n.snapshot().secrets[0].hash.expose().to_owned();
    assert!(hash.starts_with("$2"));
    for reply in [reg, login] {
        let bytes = encode(&Reply::new(Response::User(reply.value), reply.epoch)).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert!(!text.contains(&hash) && !text.contains("$2"), "{text}");
    }
    assert!(!format!("{:?}", chat_service::Password::new(PASSWORD)).contains(PASSWORD));
    // The credentials read (between nodes only) carry the hash, redacted in logs.
    let credentials = n
        .service
        .handle(
            Request::Credentials {
                username: "alice".into(),
                tag: "123".into(),
            },
            0,
        )
        .await
        .unwrap();
    assert!(!format!("{credentials:?}").contains(&hash));
    // The writer stores the hash it was given: the input node hashed.
    let request = Request::Register {
        request_id: id(),
        username: "bob".into(),
        tag: "123".into(),
        password_hash: chat_store::SecretHash::new("$2b$04$precomputed".into()),
    };
    n.service.handle(request, 0).await.unwrap();
    assert!(n
        .snapshot()
        .secrets
        .iter()
        .any(|s| s.hash.expose() == "$2b$04$precomputed"));
}

#[tokio::test]
async fn users_are_found_by_name_tag_and_by_name() {
    let n = node(true);
    let alice = n.register("alice", "123").await;
    let alice2 = n.register("alice", "456").await;
    n.register("bob", "123").await;
    let found = n
        .service
        .user_by_name_tag(alice.uuid, "alice", "456", 0)
        .await
        .unwrap();
    assert_eq!(found.value, alice2);
    not_found(
        n.service
            .user_by_name_tag(alice.uuid, "alice", "789", 0)
            .await,
    );
    let all = n
        .service
        .search_users(alice.uuid, "alice", 0)
        .await
        .unwrap()
        .value;
    assert_eq!(all, vec![alice.clone(), alice2]);
    assert!(n
        .service
        .search_users(alice.uuid, "carol", 0)
        .await
        .unwrap()
        .value
        .is_empty());
    // An unknown acting user (a forged or stale session) gets nothing.
    unauthenticated(n.service.search_users(id(), "alice", 0).await);
}

#[tokio::test]
async fn a_user_deletes_only_their_own_account_which_ends_memberships_and_frees_the_name() {
    let n = node(true);
    let alice = n.register("alice", "123").await;
    let bob = n.register("bob", "123").await;
    let group = n
        .service
        .create_group(id(), alice.uuid, "g")
        .await
        .unwrap()
        .value;
    n.service
        .add_member(id(), alice.uuid, group.uuid, "bob", "123")
        .await
        .unwrap();

    let before = n.snapshot();
    forbidden(n.service.delete_account(id(), alice.uuid, bob.uuid).await);
    assert_eq!(n.snapshot(), before);

    let deleted = n
        .service
        .delete_account(id(), bob.uuid, bob.uuid)
        .await
        .unwrap()
        .value;
    assert!(deleted.deleted_at_ms.is_some());
    let members = n
        .service
        .members(alice.uuid, group.uuid, 0)
        .await
        .unwrap()
        .value
        .members;
    assert_eq!(members, vec![alice.clone()]);
    unauthenticated(n.service.login("bob", "123", PASSWORD, 0).await);
    unauthenticated(n.service.my_groups(bob.uuid, 0).await);
    unauthenticated(
        n.service
            .send_private(id(), bob.uuid, alice.uuid, "from beyond")
            .await,
    );
    not_found(
        n.service
            .send_private(id(), alice.uuid, bob.uuid, "hello?")
            .await,
    );
    not_found(
        n.service
            .user_by_name_tag(alice.uuid, "bob", "123", 0)
            .await,
    );
    let new_bob = n.register("bob", "123").await;
    assert_ne!(new_bob.uuid, bob.uuid);
}

#[tokio::test]
async fn ending_sessions_raises_the_version_any_replica_reads_and_retries_raise_it_once() {
    let n = node(true);
    let alice = n.register("alice", "123").await;
    let start = n.service.session(alice.uuid, 0).await.unwrap();
    assert_eq!(start.value.session_version, 0);
    let logout = id();
    let ended = n.service.end_sessions(logout, alice.uuid).await.unwrap();
    assert_eq!(ended.value.session_version, 1);
    assert!(ended.epoch > start.epoch);
    let again = n.service.end_sessions(logout, alice.uuid).await.unwrap();
    assert!(again.replayed, "a retried logout is the same logout");
    assert_eq!((again.value.session_version, again.epoch), (1, ended.epoch));
    let read = n.service.session(alice.uuid, ended.epoch).await.unwrap();
    assert_eq!(read.value.session_version, 1);
    // A session read can be answered by any node that has the logout's epoch, and by none
    // that has not.
    let replica = node(false);
    let behind = replica.service.session(alice.uuid, ended.epoch).await;
    assert!(
        matches!(behind, Err(ServiceError::ReplicaBehind { .. })),
        "{behind:?}"
    );
    // Unknown and deleted accounts have no session.
    unauthenticated(n.service.session(id(), 0).await);
    unauthenticated(n.service.end_sessions(id(), id()).await);
    n.service
        .delete_account(id(), alice.uuid, alice.uuid)
        .await
        .unwrap();
    unauthenticated(n.service.session(alice.uuid, 0).await);
}

#[tokio::test]
async fn group_rules_for_members_owner_and_outsiders() {
    let n = node(true);
    let owner = n.register("owner", "111").await;
    let member = n.register("member", "222").await;
    let other = n.register("other", "333").await;
    let outsider = n.register("outsider", "444").await;
    let group = n
        .service
        .create_group(id(), owner.uuid, "  team  ")
        .await
        .unwrap()
        .value;
    assert_eq!(
        (group.name.as_str(), group.owner_uuid),
        ("team", owner.uuid)
    );

    // Only members add members.
    forbidden(
        n.service
            .add_member(id(), outsider.uuid, group.uuid, "outsider", "444")
            .await,
    );
    n.service
        .add_member(id(), owner.uuid, group.uuid, "member", "222")
        .await
        .unwrap();
    n.service
        .add_member(id(), member.uuid, group.uuid, "other", "333")
        .await
        .unwrap();
    conflict(
        n.service
            .add_member(id(), member.uuid, group.uuid, "other", "333")
            .await,
    );
    not_found(
        n.service
            .add_member(id(), member.uuid, group.uuid, "ghost", "555")
            .await,
    );
    not_found(
        n.service
            .add_member(id(), member.uuid, id(), "other", "333")
            .await,
    );

    // Only members see the group, its members and its chat.
    assert_eq!(
        n.service
            .group(member.uuid, group.uuid, 0)
            .await
            .unwrap()
            .value
            .uuid,
        group.uuid
    );
    forbidden(n.service.group(outsider.uuid, group.uuid, 0).await);
    forbidden(n.service.members(outsider.uuid, group.uuid, 0).await);
    forbidden(
        n.service
            .read_group(outsider.uuid, group.uuid, Page::Newest { limit: 10 }, 0)
            .await,
    );
    forbidden(
        n.service
            .send_to_group(id(), outsider.uuid, group.uuid, "let me in")
            .await,
    );
    not_found(n.service.group(owner.uuid, id(), 0).await);
    let names: Vec<String> = n
        .service
        .members(member.uuid, group.uuid, 0)
        .await
        .unwrap()
        .value
        .members
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(names, ["owner", "member", "other"]);
    assert_eq!(
        n.service
            .my_groups(other.uuid, 0)
            .await
            .unwrap()
            .value
            .len(),
        1
    );
    assert!(n
        .service
        .my_groups(outsider.uuid, 0)
        .await
        .unwrap()
        .value
        .is_empty());

    // Members remove only themselves; the owner removes anyone; outsiders nobody.
    let before = n.snapshot();
    forbidden(
        n.service
            .remove_member(id(), member.uuid, group.uuid, other.uuid)
            .await,
    );
    forbidden(
        n.service
            .remove_member(id(), member.uuid, group.uuid, owner.uuid)
            .await,
    );
    forbidden(
        n.service
            .remove_member(id(), outsider.uuid, group.uuid, outsider.uuid)
            .await,
    );
    forbidden(n.service.delete_group(id(), member.uuid, group.uuid).await);
    forbidden(
        n.service
            .delete_group(id(), outsider.uuid, group.uuid)
            .await,
    );
    assert_eq!(n.snapshot(), before, "denials change nothing");
    n.service
        .remove_member(id(), owner.uuid, group.uuid, other.uuid)
        .await
        .unwrap();
    not_found(
        n.service
            .remove_member(id(), owner.uuid, group.uuid, other.uuid)
            .await,
    );
    forbidden(n.service.group(other.uuid, group.uuid, 0).await);

    // The owner leaving hands the group over; the new owner may delete it.
    let after_leave = n
        .service
        .remove_member(id(), owner.uuid, group.uuid, owner.uuid)
        .await
        .unwrap();
    assert_eq!(after_leave.value.owner_uuid, member.uuid);
    let deleted = n
        .service
        .delete_group(id(), member.uuid, group.uuid)
        .await
        .unwrap()
        .value;
    assert!(deleted.deleted_at_ms.is_some());
    not_found(n.service.group(member.uuid, group.uuid, 0).await);
    not_found(
        n.service
            .send_to_group(id(), member.uuid, group.uuid, "hello?")
            .await,
    );
}

#[tokio::test]
async fn the_last_member_leaving_deletes_the_group() {
    let n = node(true);
    let alice = n.register("alice", "123").await;
    let group = n
        .service
        .create_group(id(), alice.uuid, "solo")
        .await
        .unwrap()
        .value;
    let left = n
        .service
        .remove_member(id(), alice.uuid, group.uuid, alice.uuid)
        .await
        .unwrap();
    assert!(left.value.deleted_at_ms.is_some());
    assert!(n
        .service
        .my_groups(alice.uuid, 0)
        .await
        .unwrap()
        .value
        .is_empty());
}

#[tokio::test]
async fn private_and_group_chats_page_newest_and_since() {
    let n = node(true);
    let alice = n.register("alice", "123").await;
    let bob = n.register("bob", "123").await;
    let mut sent = Vec::new();
    for i in 0..5 {
        let (from, to) = if i % 2 == 0 {
            (&alice, &bob)
        } else {
            (&bob, &alice)
        };
        let message = n
            .service
            .send_private(id(), from.uuid, to.uuid, &format!("m{i}"))
            .await
            .unwrap();
        assert_eq!(message.epoch, message.value.epoch);
        sent.push(message.value);
    }
    let newest = n
        .service
        .read_private(bob.uuid, alice.uuid, Page::Newest { limit: 3 }, 0)
        .await
        .unwrap();
    assert_eq!(newest.value.messages, sent[2..].to_vec());
    assert_eq!(newest.value.authors, {
        let mut both = vec![alice.clone(), bob.clone()];
        both.sort_by_key(|u| u.uuid);
        both
    });
    assert_eq!(newest.epoch, 7);
    assert_eq!(newest.value.read_epoch, 0, "bob has read nothing yet");
    n.service
        .mark_read(id(), bob.uuid, ChatRef::User(alice.uuid), sent[2].epoch)
        .await
        .unwrap();
    let page = |reader: &User, other: &User| {
        n.service
            .read_private(reader.uuid, other.uuid, Page::Newest { limit: 1 }, 0)
    };
    assert_eq!(
        page(&bob, &alice).await.unwrap().value.read_epoch,
        sent[2].epoch,
        "a page carries its reader's position"
    );
    assert_eq!(page(&alice, &bob).await.unwrap().value.read_epoch, 0);
    let since = n
        .service
        .read_private(
            alice.uuid,
            bob.uuid,
            Page::Since {
                epoch: sent[3].epoch,
                limit: 10,
            },
            0,
        )
        .await
        .unwrap();
    assert_eq!(since.value.messages, sent[4..].to_vec());
    invalid(
        n.service
            .send_private(id(), alice.uuid, alice.uuid, "me")
            .await,
    );
    invalid(
        n.service
            .read_private(alice.uuid, alice.uuid, Page::Newest { limit: 3 }, 0)
            .await,
    );
    not_found(
        n.service
            .read_private(alice.uuid, id(), Page::Newest { limit: 3 }, 0)
            .await,
    );
    invalid(
        n.service
            .read_private(alice.uuid, bob.uuid, Page::Newest { limit: 0 }, 0)
            .await,
    );

    let group = n
        .service
        .create_group(id(), alice.uuid, "g")
        .await
        .unwrap()
        .value;
    let posted = n
        .service
        .send_to_group(id(), alice.uuid, group.uuid, "to all")
        .await
        .unwrap()
        .value;
    let chat = n
        .service
        .read_group(alice.uuid, group.uuid, Page::Newest { limit: 50 }, 0)
        .await
        .unwrap();
    assert_eq!(chat.value.messages, vec![posted]);
    assert_eq!(chat.value.authors, vec![alice]);
}

#[tokio::test]
async fn retried_writes_return_the_first_result_and_write_once() {
    let n = node(true);
    let register_id = id();
    let first = n
        .service
        .register(register_id, "alice", "123", PASSWORD)
        .await
        .unwrap();
    let again = n
        .service
        .register(register_id, "alice", "123", PASSWORD)
        .await
        .unwrap();
    assert_eq!((&first.value, first.epoch), (&again.value, again.epoch));
    assert!(
        !first.replayed && again.replayed,
        "a replay says so (200, not 201)"
    );
    let alice = first.value;
    let bob = n.register("bob", "123").await;

    let message_id = id();
    let sent = n
        .service
        .send_private(message_id, alice.uuid, bob.uuid, "once")
        .await
        .unwrap();
    let epoch = n.service.store().current_epoch().unwrap();
    let retried = n
        .service
        .send_private(message_id, alice.uuid, bob.uuid, "once")
        .await
        .unwrap();
    assert_eq!((&sent.value, sent.epoch), (&retried.value, retried.epoch));
    assert!(retried.replayed);
    // The same message id with other content is another request: refused.
    conflict(
        n.service
            .send_private(message_id, alice.uuid, bob.uuid, "twice")
            .await,
    );
    assert_eq!(n.service.store().current_epoch().unwrap(), epoch);
    let group_id = id();
    let group = n
        .service
        .create_group(group_id, alice.uuid, "g")
        .await
        .unwrap();
    assert_eq!(
        n.service
            .create_group(group_id, alice.uuid, "g")
            .await
            .unwrap()
            .value,
        group.value
    );
    // The same id for another kind of request is refused, not misread as a retry.
    conflict(
        n.service
            .add_member(group_id, alice.uuid, group.value.uuid, "bob", "123")
            .await,
    );
    let chat = n
        .service
        .read_private(alice.uuid, bob.uuid, Page::Newest { limit: 10 }, 0)
        .await
        .unwrap();
    assert_eq!(chat.value.messages.len(), 1);
}

#[tokio::test]
async fn bad_inputs_give_typed_errors_and_change_nothing() {
    let n = node(true);
    let alice = n.register("alice", "123").await;
    let bob = n.register("bob", "123").await;
    let group = n
        .service
        .create_group(id(), alice.uuid, "g")
        .await
        .unwrap()
        .value;
    let before = n.snapshot();
    let nasty = "x'); DROP TABLE users; --";

    invalid(n.service.send_private(id(), alice.uuid, bob.uuid, "").await);
    invalid(
        n.service
            .send_private(id(), alice.uuid, bob.uuid, "   ")
            .await,
    );
    invalid(
        n.service
            .send_private(id(), alice.uuid, bob.uuid, &"x".repeat(10_000))
            .await,
    );
    invalid(
        n.service
            .send_to_group(id(), alice.uuid, group.uuid, &"x".repeat(10_000))
            .await,
    );
    invalid(n.service.register(id(), "carol", "12a", PASSWORD).await);
    invalid(n.service.register(id(), "carol", "1234567", PASSWORD).await);
    invalid(n.service.register(id(), nasty, "123", PASSWORD).await);
    invalid(
        n.service
            .user_by_name_tag(alice.uuid, "bob", "abc", 0)
            .await,
    );
    invalid(
        n.service
            .add_member(id(), alice.uuid, group.uuid, "bob", "12345678")
            .await,
    );
    invalid(n.service.create_group(id(), alice.uuid, "").await);
    invalid(n.service.search_users(alice.uuid, nasty, 0).await);
    not_found(n.service.send_private(id(), alice.uuid, id(), "hi").await);
    not_found(n.service.send_to_group(id(), alice.uuid, id(), "hi").await);
    not_found(n.service.delete_group(id(), alice.uuid, id()).await);
    not_found(
        n.service
            .remove_member(id(), alice.uuid, id(), alice.uuid)
            .await,
    );
    unauthenticated(n.service.create_group(id(), id(), "g").await);
    assert_eq!(n.snapshot(), before);

    // Metacharacters where free text is allowed are stored verbatim, not executed.
    let sent = n
        .service
        .send_to_group(id(), alice.uuid, group.uuid, nasty)
        .await
        .unwrap()
        .value;
    assert_eq!(sent.content, nasty);
    let named = n
        .service
        .create_group(id(), alice.uuid, nasty)
        .await
        .unwrap()
        .value;
    assert_eq!(named.name, nasty);
    assert_eq!(n.snapshot().users.len(), 2);
}

#[tokio::test]
async fn bytes_from_the_data_plane_decode_to_values_or_invalid_input() {
    let request = Request::SendPrivate {
        message_id: id(),
        acting_user: id(),
        to: id(),
        content: "héllo".into(),
    };
    let bytes = encode(&request).unwrap();
    assert_eq!(decode::<Request>(&bytes).unwrap(), request);

    let mut bad_utf8 = bytes.clone();
    let at = bad_utf8
        .windows(2)
        .position(|w| w == "é".as_bytes())
        .unwrap();
    bad_utf8[at] = 0xff;
    invalid(decode::<Request>(&bad_utf8));
    invalid(decode::<Request>(b"{\"op\":\"drop_everything\"}"));
    invalid(decode::<Request>(b""));
    invalid(decode::<Request>(&bytes[..bytes.len() / 2]));

    let error = ServiceError::Forbidden("Only the group's owner can delete it.".into());
    let result: Result<Reply, ServiceError> = Err(error.clone());
    assert_eq!(
        decode::<Result<Reply, ServiceError>>(&encode(&result).unwrap()).unwrap(),
        Err(error)
    );
}

#[tokio::test]
async fn a_replica_refuses_writes_and_reads_it_is_not_fresh_enough_for() {
    let writer = node(true);
    let replica = node(false);
    let alice = writer.register("alice", "123").await;
    let bob = writer.register("bob", "123").await;
    let sent = writer
        .service
        .send_private(id(), alice.uuid, bob.uuid, "hi")
        .await
        .unwrap();

    let refused = replica
        .service
        .send_private(id(), alice.uuid, bob.uuid, "hi")
        .await;
    assert!(
        matches!(refused, Err(ServiceError::NotWriter(_))),
        "{refused:?}"
    );
    assert!(refused.as_ref().is_err_and(ServiceError::should_pass_on));
    let behind = replica
        .service
        .read_private(alice.uuid, bob.uuid, Page::Newest { limit: 5 }, sent.epoch)
        .await;
    assert!(
        matches!(
            behind,
            Err(ServiceError::ReplicaBehind { have: 0, want: 3 })
        ),
        "{behind:?}"
    );
    assert_eq!(behind.unwrap_err().code(), "unavailable");

    let writer_store = writer.service.store();
    let entries = writer_store.entries_after(0, 100).unwrap();
    replica
        .service
        .store()
        .append_entries(&entries, writer_store.applied_epoch())
        .unwrap();
    let read = replica
        .service
        .read_private(alice.uuid, bob.uuid, Page::Newest { limit: 5 }, sent.epoch)
        .await
        .unwrap();
    assert_eq!(read.value.messages, vec![sent.value]);
    // The replicated secret lets the replica serve logins.
    assert_eq!(
        replica
            .service
            .login("alice", "123", PASSWORD, 0)
            .await
            .unwrap()
            .value,
        alice
    );
}

#[tokio::test]
async fn concurrent_writes_get_distinct_consecutive_epochs() {
    let n = node(true);
    let alice = n.register("alice", "123").await;
    let bob = n.register("bob", "123").await;
    let service = Arc::new(n.service.clone());
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let service = Arc::clone(&service);
            tokio::spawn(async move {
                service
                    .send_private(Uuid::new_v4(), alice.uuid, bob.uuid, &format!("m{i}"))
                    .await
            })
        })
        .collect();
    let mut epochs = Vec::new();
    for task in tasks {
        epochs.push(task.await.unwrap().unwrap().epoch);
    }
    epochs.sort_unstable();
    assert_eq!(epochs, (3..43).collect::<Vec<u64>>());
}

/// A dispatcher that is not the local service gets the traits too (as the proxy will).
struct Recorder(LocalService, std::sync::Mutex<Vec<bool>>);

impl Dispatcher for Recorder {
    async fn dispatch(&self, request: Request, min_epoch: u64) -> Result<Reply, ServiceError> {
        self.1.lock().unwrap().push(request.is_write());
        self.0.handle(request, min_epoch).await
    }

    fn password_hasher(&self) -> &Arc<chat_service::PasswordHasher> {
        self.0.password_hasher()
    }
}

#[tokio::test]
async fn any_dispatcher_gets_the_service_traits() {
    let n = node(true);
    let recorder = Recorder(n.service.clone(), std::sync::Mutex::new(Vec::new()));
    let alice = recorder
        .register(id(), "alice", "123", PASSWORD)
        .await
        .unwrap()
        .value;
    recorder.login("alice", "123", PASSWORD, 0).await.unwrap();
    recorder.my_groups(alice.uuid, 0).await.unwrap();
    assert_eq!(*recorder.1.lock().unwrap(), vec![true, false, false]);
}

#[tokio::test]
async fn the_group_committer_answers_each_request_of_a_mixed_batch() {
    let n = node(true);
    let alice = n.register("alice", "123").await;
    let bob = n.register("bob", "123").await;
    let group = n
        .service
        .create_group(id(), alice.uuid, "g")
        .await
        .unwrap()
        .value;
    let store = Arc::clone(n.service.store());
    let (batches, mut committed) = tokio::sync::mpsc::channel(16);
    let committer = chat_service::GroupCommitter::start(
        Arc::clone(&store),
        chat_service::CommitterConfig {
            queue: 64,
            max_batch: 64,
        },
        Some(batches),
    )
    .unwrap();
    // Alice may post to the group, bob (not a member) may not: interleaved, concurrently.
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let committer = committer.clone();
            let sender = if i % 2 == 0 { alice.uuid } else { bob.uuid };
            tokio::spawn(async move {
                let request = Request::SendToGroup {
                    message_id: Uuid::new_v4(),
                    acting_user: sender,
                    group: group.uuid,
                    content: format!("m{i}"),
                };
                (i, committer.submit(7, request, 0).await)
            })
        })
        .collect();
    let mut epochs = Vec::new();
    for task in tasks {
        let (i, answer) = task.await.unwrap();
        if i % 2 == 0 {
            epochs.push(answer.unwrap().epoch);
        } else {
            forbidden(answer);
        }
    }
    epochs.sort_unstable();
    assert_eq!(epochs, (4..14).collect::<Vec<u64>>());
    let mut notices = 0;
    while let Ok(batch) = committed.try_recv() {
        assert_eq!(batch.entry.term, 7);
        assert!(batch.notices.iter().all(|n| n.audience == vec![alice.uuid]));
        notices += batch.notices.len();
    }
    assert_eq!(notices, 10);
    assert_eq!(store.election_key().term, 7);
    // A write stamped with an older term is refused as not the writer.
    let stale = committer
        .submit(
            6,
            Request::SendToGroup {
                message_id: Uuid::new_v4(),
                acting_user: alice.uuid,
                group: group.uuid,
                content: "late".into(),
            },
            0,
        )
        .await;
    assert!(
        matches!(stale, Err(ServiceError::NotWriter(_))),
        "{stale:?}"
    );
}

#[tokio::test]
async fn a_writer_whose_lease_ran_out_commits_nothing_until_it_holds_one_again() {
    let n = node(true);
    let alice = n.register("alice", "123").await;
    let bob = n.register("bob", "123").await;
    let store = Arc::clone(n.service.store());
    let lease = chat_service::WriterLease::default();
    let committer = chat_service::GroupCommitter::start_leased(
        Arc::clone(&store),
        chat_service::CommitterConfig::default(),
        None,
        lease.clone(),
    )
    .unwrap();
    let send = |content: &str| Request::SendPrivate {
        message_id: Uuid::new_v4(),
        acting_user: alice.uuid,
        to: bob.uuid,
        content: content.into(),
    };
    let before = store.snapshot().unwrap();

    // No lease yet, then one that ran out (a writer resuming from a freeze): refused.
    let unleased = committer.submit(3, send("no lease"), 0).await;
    assert!(
        matches!(unleased, Err(ServiceError::NotWriter(_))),
        "{unleased:?}"
    );
    lease.set(Some(Instant::now()));
    let expired = committer.submit(3, send("too late"), 0).await;
    assert!(
        matches!(expired, Err(ServiceError::NotWriter(_))),
        "{expired:?}"
    );
    assert_eq!(store.snapshot().unwrap(), before, "nothing was written");

    lease.set(Some(Instant::now() + Duration::from_secs(60)));
    let held = committer.submit(3, send("in time"), 0).await.unwrap();
    assert_eq!(held.epoch, before.epoch + 1);
}
