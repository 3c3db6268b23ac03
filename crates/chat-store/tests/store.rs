//! The store against real SQLite files in temporary directories.

use chat_store::{
    Applied, Change, Durability, Epoch, Operation, Page, Recipient, SecretHash, Store, StoreError,
    StoreOptions, Written,
};
use diesel::connection::SimpleConnection;
use uuid::Uuid;

struct Db {
    _dir: tempfile::TempDir,
    store: Store,
}

fn open() -> Db {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = StoreOptions {
        durability: Durability::Normal,
        ..StoreOptions::default()
    };
    let store = Store::open_with(dir.path().join("chat.db"), options).expect("open");
    Db { _dir: dir, store }
}

fn op(change: Change) -> Operation {
    Operation {
        request_id: Uuid::new_v4(),
        at_ms: 1_700_000_000_000,
        change,
    }
}

fn register(store: &Store, username: &str, tag: &str) -> Uuid {
    let user_uuid = Uuid::new_v4();
    store
        .execute(&op(Change::RegisterUser {
            user_uuid,
            username: username.to_owned(),
            tag: tag.to_owned(),
            secret: SecretHash::new(format!("hash-of-{username}")),
        }))
        .expect("register");
    user_uuid
}

fn create_group(store: &Store, creator_uuid: Uuid, name: &str) -> Uuid {
    let group_uuid = Uuid::new_v4();
    store
        .execute(&op(Change::CreateGroup {
            group_uuid,
            name: name.to_owned(),
            creator_uuid,
        }))
        .expect("create group");
    group_uuid
}

fn add(store: &Store, group_uuid: Uuid, user_uuid: Uuid) {
    store
        .execute(&op(Change::AddMember {
            group_uuid,
            user_uuid,
        }))
        .expect("add member");
}

fn send(store: &Store, sender_uuid: Uuid, recipient: Recipient, content: &str) -> Uuid {
    let message_uuid = Uuid::new_v4();
    store
        .execute(&Operation {
            request_id: message_uuid,
            at_ms: 1,
            change: Change::SendMessage {
                message_uuid,
                sender_uuid,
                recipient,
                content: content.to_owned(),
            },
        })
        .expect("send");
    message_uuid
}

/// A bit of every kind of write, including deletes and an owner hand-over.
fn populate(store: &Store) -> (Uuid, Uuid, Uuid) {
    let alice = register(store, "alice", "123");
    let bob = register(store, "bob", "4567");
    let carol = register(store, "carol", "000001");
    let group = create_group(store, alice, "friends");
    add(store, group, bob);
    add(store, group, carol);
    send(store, alice, Recipient::User(bob), "hi bob");
    send(store, bob, Recipient::Group(group), "hi all");
    store
        .execute(&op(Change::RemoveMember {
            group_uuid: group,
            user_uuid: alice,
        }))
        .expect("owner leaves");
    let doomed = create_group(store, carol, "short-lived");
    store
        .execute(&op(Change::DeleteGroup { group_uuid: doomed }))
        .expect("delete group");
    store
        .execute(&op(Change::DeleteUser { user_uuid: carol }))
        .expect("delete user");
    (alice, bob, group)
}

#[test]
fn migrations_apply_to_an_empty_file_and_reopen_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fresh.db");
    let store = Store::open(&path).expect("first open");
    assert_eq!(store.current_epoch().expect("epoch"), 0);
    register(&store, "alice", "123");
    drop(store);
    let store = Store::open(&path).expect("second open runs no migration twice");
    assert_eq!(store.current_epoch().expect("epoch"), 1);
    let snapshot = store.snapshot().expect("snapshot");
    assert_eq!(snapshot.users.len(), 1);
}

#[test]
fn migrations_revert_and_reapply() {
    use diesel_migrations::MigrationHarness;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("down.db");
    drop(Store::open(&path).expect("open"));
    let mut conn =
        <diesel::SqliteConnection as diesel::Connection>::establish(path.to_str().unwrap())
            .unwrap();
    conn.revert_all_migrations(chat_store::MIGRATIONS)
        .expect("down.sql runs");
    conn.run_pending_migrations(chat_store::MIGRATIONS)
        .expect("up.sql runs again");
    drop(conn);
    let store = Store::open(&path).expect("reopen");
    assert_eq!(store.current_epoch().unwrap(), 0);
}

#[test]
fn the_schema_itself_rejects_a_malformed_tag() {
    let db = open();
    for tag in ["12", "1234567", "12a", "1234567x"] {
        let result = db.store.execute(&op(Change::RegisterUser {
            user_uuid: Uuid::new_v4(),
            username: "alice".into(),
            tag: tag.into(),
            secret: SecretHash::new("x".into()),
        }));
        assert!(
            matches!(result, Err(StoreError::Conflict(_))),
            "{tag}: {result:?}"
        );
    }
    assert_eq!(db.store.current_epoch().unwrap(), 0);
}

#[test]
fn every_write_adds_one_to_the_epoch_and_stamps_its_rows() {
    let db = open();
    let alice = register(&db.store, "alice", "123");
    assert_eq!(db.store.current_epoch().unwrap(), 1);
    let bob = register(&db.store, "bob", "123");
    let group = create_group(&db.store, alice, "g");
    assert_eq!(db.store.current_epoch().unwrap(), 3);
    add(&db.store, group, bob);
    let message = send(&db.store, bob, Recipient::Group(group), "hello");
    assert_eq!(db.store.current_epoch().unwrap(), 5);

    let snapshot = db.store.snapshot().unwrap();
    let epoch_of_user = |uuid: Uuid| {
        snapshot
            .users
            .iter()
            .find(|u| u.uuid == uuid)
            .map(|u| u.epoch)
    };
    assert_eq!(epoch_of_user(alice), Some(1));
    assert_eq!(epoch_of_user(bob), Some(2));
    assert_eq!(
        snapshot.groups[0].epoch, 4,
        "adding a member stamps the group"
    );
    let bob_membership = snapshot
        .memberships
        .iter()
        .find(|m| m.user_uuid == bob)
        .unwrap();
    assert_eq!(bob_membership.epoch, 4);
    assert_eq!(snapshot.messages[0].uuid, message);
    assert_eq!(snapshot.messages[0].epoch, 5);
    assert_eq!(snapshot.messages[0].chat_id, group.to_string());

    db.store
        .execute(&op(Change::DeleteUser { user_uuid: bob }))
        .unwrap();
    let snapshot = db.store.snapshot().unwrap();
    let bob_row = snapshot.users.iter().find(|u| u.uuid == bob).unwrap();
    assert_eq!((bob_row.epoch, bob_row.deleted_at_ms.is_some()), (6, true));
    assert_eq!(
        snapshot.groups[0].epoch, 6,
        "the membership ended with the account"
    );
    assert!(snapshot.memberships.iter().all(|m| m.user_uuid != bob));
    assert!(
        snapshot.secrets.iter().all(|s| s.user_uuid != bob),
        "secret dropped"
    );
}

#[test]
fn a_failed_write_changes_nothing() {
    let db = open();
    let alice = register(&db.store, "alice", "123");
    let before = db.store.snapshot().unwrap();
    let duplicate = db.store.execute(&op(Change::RegisterUser {
        user_uuid: Uuid::new_v4(),
        username: "alice".into(),
        tag: "123".into(),
        secret: SecretHash::new("x".into()),
    }));
    assert!(
        matches!(duplicate, Err(StoreError::Conflict(_))),
        "{duplicate:?}"
    );
    let unknown_group = db.store.execute(&op(Change::AddMember {
        group_uuid: Uuid::new_v4(),
        user_uuid: alice,
    }));
    assert!(
        matches!(unknown_group, Err(StoreError::NotFound("group"))),
        "{unknown_group:?}"
    );
    let to_nobody = db.store.execute(&op(Change::SendMessage {
        message_uuid: Uuid::new_v4(),
        sender_uuid: alice,
        recipient: Recipient::User(Uuid::new_v4()),
        content: "x".into(),
    }));
    assert!(
        matches!(to_nobody, Err(StoreError::NotFound("user"))),
        "{to_nobody:?}"
    );
    assert_eq!(db.store.snapshot().unwrap(), before);
    assert_eq!(db.store.operations_since(0, 100).unwrap().len(), 1);
}

#[test]
fn a_deleted_account_frees_its_name_and_tag() {
    let db = open();
    let first = register(&db.store, "alice", "123");
    db.store
        .execute(&op(Change::DeleteUser { user_uuid: first }))
        .unwrap();
    let second = register(&db.store, "alice", "123");
    let (found, _) = db
        .store
        .read(|v| v.user_by_name_tag("alice", "123"))
        .unwrap();
    assert_eq!(found.map(|u| u.uuid), Some(second));
    let (old, _) = db.store.read(|v| v.user_including_deleted(first)).unwrap();
    assert!(old.and_then(|u| u.deleted_at_ms).is_some());
}

#[test]
fn retried_request_id_returns_the_first_result_without_a_new_epoch() {
    let db = open();
    let alice = register(&db.store, "alice", "123");
    let retried = op(Change::CreateGroup {
        group_uuid: Uuid::new_v4(),
        name: "g".into(),
        creator_uuid: alice,
    });
    let first = db.store.execute(&retried).unwrap();
    // A retry whose writer picked a fresh group uuid is still the same request.
    let mut again = retried.clone();
    again.change = Change::CreateGroup {
        group_uuid: Uuid::new_v4(),
        name: "g".into(),
        creator_uuid: alice,
    };
    let second = db.store.execute(&again).unwrap();
    assert_eq!(first, second);
    assert_eq!(db.store.current_epoch().unwrap(), 2);
    assert_eq!(db.store.snapshot().unwrap().groups.len(), 1);
}

#[test]
fn the_owner_leaving_hands_the_group_to_the_longest_member_and_the_last_one_deletes_it() {
    let db = open();
    let (alice, bob, group) = populate(&db.store);
    let (group_row, _) = db.store.read(|v| v.group(group)).unwrap();
    let group_row = group_row.expect("group still live");
    assert_eq!(group_row.creator_uuid, alice);
    assert_eq!(group_row.owner_uuid, bob, "bob joined before carol");
    db.store
        .execute(&op(Change::RemoveMember {
            group_uuid: group,
            user_uuid: bob,
        }))
        .unwrap();
    let (group_row, _) = db.store.read(|v| v.group(group)).unwrap();
    assert!(
        group_row.is_none(),
        "carol's deletion left bob alone; his leaving deleted it"
    );
}

#[test]
fn pages_read_newest_before_and_since_in_commit_order() {
    let db = open();
    let alice = register(&db.store, "alice", "123");
    let bob = register(&db.store, "bob", "123");
    let sent: Vec<Uuid> = (0..10)
        .map(|i| send(&db.store, alice, Recipient::User(bob), &format!("m{i}")))
        .collect();
    let chat = chat_store::private_chat_id(bob, alice);
    let read = |page| {
        db.store
            .read(|v| v.messages(&chat, page))
            .unwrap()
            .0
            .iter()
            .map(|m| m.uuid)
            .collect::<Vec<_>>()
    };
    assert_eq!(read(Page::Newest { limit: 3 }), sent[7..].to_vec());
    let epoch_of_8th: Epoch = 2 + 8;
    assert_eq!(
        read(Page::Before {
            epoch: epoch_of_8th,
            limit: 2
        }),
        sent[5..7].to_vec()
    );
    assert_eq!(
        read(Page::Since {
            epoch: epoch_of_8th,
            limit: 100
        }),
        sent[8..].to_vec()
    );
    assert_eq!(
        read(Page::Since {
            epoch: 12,
            limit: 100
        }),
        Vec::<Uuid>::new()
    );
}

#[test]
fn sql_metacharacters_are_stored_verbatim() {
    let db = open();
    let nasty = "Robert'); DROP TABLE users; -- \" % _ \\ ;";
    let alice = register(&db.store, nasty, "123");
    let group = create_group(&db.store, alice, nasty);
    send(&db.store, alice, Recipient::Group(group), nasty);
    let snapshot = db.store.snapshot().unwrap();
    assert_eq!(snapshot.users[0].username, nasty);
    assert_eq!(snapshot.groups[0].name, nasty);
    assert_eq!(snapshot.messages[0].content, nasty);
    let (found, _) = db.store.read(|v| v.users_by_name("Robert%", 10)).unwrap();
    assert!(found.is_empty(), "no LIKE semantics");
}

#[test]
fn the_replication_log_brings_a_replica_to_the_same_state_and_epoch() {
    let writer = open();
    let replica = open();
    populate(&writer.store);
    // Catch up in small batches, as a replica would over the data plane.
    loop {
        let at = replica.store.current_epoch().unwrap();
        let batch = writer.store.operations_since(at, 3).unwrap();
        if batch.is_empty() {
            break;
        }
        for (epoch, operation) in batch {
            assert!(matches!(
                replica.store.apply(epoch, &operation).unwrap(),
                Applied::Committed(_)
            ));
        }
    }
    assert_eq!(
        replica.store.current_epoch().unwrap(),
        writer.store.current_epoch().unwrap()
    );
    assert_eq!(
        replica.store.snapshot().unwrap(),
        writer.store.snapshot().unwrap()
    );
    // The replica's own log is a faithful copy: it could serve a replica of its own.
    assert_eq!(
        replica.store.operations_since(0, 1000).unwrap(),
        writer.store.operations_since(0, 1000).unwrap()
    );
}

#[test]
fn applying_is_idempotent_and_refuses_gaps() {
    let writer = open();
    let replica = open();
    populate(&writer.store);
    let log = writer.store.operations_since(0, 1000).unwrap();
    let (first_epoch, first) = &log[0];
    replica.store.apply(*first_epoch, first).unwrap();
    let after_one = replica.store.snapshot().unwrap();
    assert_eq!(
        replica.store.apply(*first_epoch, first).unwrap(),
        Applied::AlreadyApplied
    );
    assert_eq!(replica.store.snapshot().unwrap(), after_one);
    let (third_epoch, third) = &log[2];
    let gap = replica.store.apply(*third_epoch, third);
    assert!(
        matches!(
            gap,
            Err(StoreError::Gap {
                current: 1,
                received: 3
            })
        ),
        "{gap:?}"
    );
    assert_eq!(replica.store.snapshot().unwrap(), after_one);
}

#[test]
fn the_snapshot_path_brings_a_replica_to_the_same_state_after_the_log_is_trimmed() {
    let writer = open();
    let replica = open();
    register(&replica.store, "stale", "999"); // contents the restore must replace
    populate(&writer.store);
    let epoch = writer.store.current_epoch().unwrap();
    writer.store.trim_log(epoch - 2).unwrap();
    let trimmed = writer.store.operations_since(1, 100);
    assert!(
        matches!(trimmed, Err(StoreError::LogTrimmed { requested: 1 })),
        "{trimmed:?}"
    );
    assert_eq!(
        writer.store.operations_since(epoch - 2, 100).unwrap().len(),
        2
    );

    let snapshot = writer.store.snapshot().unwrap();
    assert!(!snapshot.secrets.is_empty());
    replica.store.restore_snapshot(&snapshot).unwrap();
    assert_eq!(replica.store.current_epoch().unwrap(), epoch);
    assert_eq!(replica.store.snapshot().unwrap(), snapshot);

    // Afterwards the log path continues from the snapshot's epoch.
    let alice = register(&writer.store, "dave", "321");
    for (e, operation) in writer.store.operations_since(epoch, 10).unwrap() {
        replica.store.apply(e, &operation).unwrap();
    }
    assert_eq!(
        replica.store.snapshot().unwrap(),
        writer.store.snapshot().unwrap()
    );
    let (found, _) = replica.store.read(|v| v.user(alice)).unwrap();
    assert!(found.is_some());
}

#[test]
fn secrets_do_not_show_in_debug_output() {
    let db = open();
    register(&db.store, "alice", "123");
    let snapshot = db.store.snapshot().unwrap();
    let text = format!(
        "{snapshot:?} {:?}",
        db.store.operations_since(0, 10).unwrap()
    );
    assert!(!text.contains("hash-of-alice"), "{text}");
    // ...while the serialised forms, which go to replicas, do carry it.
    assert!(serde_json::to_string(&snapshot)
        .unwrap()
        .contains("hash-of-alice"));
}

#[test]
fn a_corrupt_log_entry_is_an_error_not_a_panic() {
    let db = open();
    register(&db.store, "alice", "123");
    let mut conn = <diesel::SqliteConnection as diesel::Connection>::establish(
        db.store.path().to_str().unwrap(),
    )
    .unwrap();
    conn.batch_execute("UPDATE replication_log SET operation = 'not json'")
        .unwrap();
    let result = db.store.operations_since(0, 10);
    assert!(matches!(result, Err(StoreError::Corrupt(_))), "{result:?}");
}

#[test]
fn a_batch_commits_each_operation_at_its_own_epoch_or_none() {
    let db = open();
    let alice = register(&db.store, "alice", "123");
    let bob = register(&db.store, "bob", "123");
    let ops: Vec<Operation> = (0..3)
        .map(|_| {
            let message_uuid = Uuid::new_v4();
            Operation {
                request_id: message_uuid,
                at_ms: 5,
                change: Change::SendMessage {
                    message_uuid,
                    sender_uuid: alice,
                    recipient: Recipient::User(bob),
                    content: "x".into(),
                },
            }
        })
        .collect();
    let committed = db.store.write(|s| s.commit_batch(&ops)).unwrap();
    assert_eq!(
        committed.iter().map(|c| c.epoch).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    assert!(committed
        .iter()
        .all(|c| matches!(c.written, Written::Message(_))));

    let before = db.store.snapshot().unwrap();
    let mut bad = ops.clone();
    bad[0].request_id = Uuid::new_v4();
    bad[0].change = Change::AddMember {
        group_uuid: Uuid::new_v4(),
        user_uuid: alice,
    };
    let failed = db.store.write(|s| s.commit_batch(&bad[..1]));
    assert!(failed.is_err());
    assert_eq!(db.store.snapshot().unwrap(), before);
}
