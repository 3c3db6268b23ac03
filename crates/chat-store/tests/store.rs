//! The store against real SQLite files in temporary directories.

use chat_store::{
    Change, Durability, EntryId, Epoch, Fingerprint, Operation, Page, Recipient, SecretHash, Store,
    StoreError, StoreOptions, Written,
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
        fingerprint: Fingerprint::default(),
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
            fingerprint: Fingerprint::of_message(sender_uuid, &recipient, content),
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
        matches!(unknown_group, Err(StoreError::Conflict(_))),
        "{unknown_group:?}"
    );
    let to_nobody = db.store.execute(&op(Change::SendMessage {
        message_uuid: Uuid::new_v4(),
        sender_uuid: alice,
        recipient: Recipient::User(Uuid::new_v4()),
        content: "x".into(),
    }));
    assert!(
        matches!(to_nobody, Err(StoreError::Conflict(_))),
        "{to_nobody:?}"
    );
    assert_eq!(db.store.snapshot().unwrap(), before);
    assert_eq!(db.store.entries_after(0, 100).unwrap().len(), 1);
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
fn ending_sessions_raises_the_version_of_a_live_account_only() {
    let db = open();
    let user = register(&db.store, "alice", "123");
    let version = |store: &Store| {
        let (found, epoch) = store.read(|v| v.user(user)).unwrap();
        (found.map(|u| u.session_version), epoch)
    };
    assert_eq!(version(&db.store).0, Some(0), "a new account starts at 0");
    for expected in 1..=2 {
        let done = db
            .store
            .execute(&op(Change::EndSessions { user_uuid: user }))
            .unwrap();
        let Written::User(after) = done.written else {
            panic!("ending sessions answers the user: {:?}", done.written)
        };
        assert_eq!((after.session_version, after.epoch), (expected, done.epoch));
        assert_eq!(version(&db.store), (Some(expected), done.epoch));
    }
    // A replica applying the log reads the same version.
    let replica = open();
    catch_up(&db.store, &replica.store, 100);
    assert_eq!(version(&replica.store), version(&db.store));

    let at = db.store.current_epoch().unwrap();
    db.store
        .execute(&op(Change::DeleteUser { user_uuid: user }))
        .unwrap();
    let refused = db
        .store
        .execute(&op(Change::EndSessions { user_uuid: user }));
    assert!(
        matches!(refused, Err(StoreError::NotFound("user"))),
        "{refused:?}"
    );
    assert_eq!(db.store.current_epoch().unwrap(), at + 1);
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
    assert_eq!(
        (first.epoch, &first.written),
        (second.epoch, &second.written)
    );
    assert!(!first.replayed && second.replayed);
    assert_eq!(db.store.current_epoch().unwrap(), 2);
    assert_eq!(db.store.snapshot().unwrap().groups.len(), 1);
    // The same id for another request is refused, not replayed.
    let mut other = retried.clone();
    other.fingerprint = Fingerprint::of(&[b"something else"]);
    let reused = db.store.execute(&other);
    assert!(
        matches!(reused, Err(StoreError::RequestIdReused(id)) if id == retried.request_id),
        "{reused:?}"
    );
}

#[test]
fn a_sent_message_is_remembered_by_its_row_alone() {
    let db = open();
    let alice = register(&db.store, "alice", "123");
    let bob = register(&db.store, "bob", "123");
    let message_uuid = send(&db.store, alice, Recipient::User(bob), "hello");
    let after_send = db.store.current_epoch().unwrap();
    let remembered = db.store.snapshot().unwrap().applied_requests;
    assert!(
        remembered.iter().all(|a| a.request_id != message_uuid),
        "a send wrote a remembered-request row: {remembered:?}"
    );
    let resend = |content: &str| Operation {
        request_id: message_uuid,
        at_ms: 2,
        fingerprint: Fingerprint::of_message(alice, &Recipient::User(bob), content),
        change: Change::SendMessage {
            message_uuid,
            sender_uuid: alice,
            recipient: Recipient::User(bob),
            content: content.to_owned(),
        },
    };
    let replay = db.store.execute(&resend("hello")).unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.epoch, after_send);
    assert!(
        matches!(&replay.written, Written::Message(m) if m.uuid == message_uuid && m.created_at_ms == 1)
    );
    assert_eq!(db.store.current_epoch().unwrap(), after_send);
    // Another text, or another kind of request, under the message's id is refused.
    for reused in [
        resend("bye"),
        Operation {
            request_id: message_uuid,
            ..op(Change::CreateGroup {
                group_uuid: Uuid::new_v4(),
                name: "g".into(),
                creator_uuid: alice,
            })
        },
    ] {
        let refused = db.store.execute(&reused);
        assert!(
            matches!(refused, Err(StoreError::RequestIdReused(id)) if id == message_uuid),
            "{refused:?}"
        );
    }
    assert_eq!(db.store.current_epoch().unwrap(), after_send);
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
fn secrets_do_not_show_in_debug_output() {
    let db = open();
    register(&db.store, "alice", "123");
    let snapshot = db.store.snapshot().unwrap();
    let text = format!("{snapshot:?} {:?}", db.store.entries_after(0, 10).unwrap());
    assert!(!text.contains("hash-of-alice"), "{text}");
    // ...while the serialised forms, which go to replicas, do carry it.
    assert!(serde_json::to_string(&snapshot)
        .unwrap()
        .contains("hash-of-alice"));
}

/// Feeds the writer's log to `replica` in chunks of `chunk` entries, with the writer's applied
/// epoch as the commit point.
fn catch_up(writer: &Store, replica: &Store, chunk: u32) {
    loop {
        let after = replica.election_key().epoch;
        let entries = writer.entries_after(after, chunk).unwrap();
        if entries.is_empty() {
            break;
        }
        replica
            .append_entries(&entries, writer.applied_epoch())
            .unwrap();
    }
    replica.apply_committed(writer.applied_epoch()).unwrap();
}

#[test]
fn the_replication_log_brings_a_replica_to_the_same_state_and_epoch() {
    let writer = open();
    let replica = open();
    populate(&writer.store);
    catch_up(&writer.store, &replica.store, 3);
    assert_eq!(
        replica.store.current_epoch().unwrap(),
        writer.store.current_epoch().unwrap()
    );
    assert_eq!(
        replica.store.snapshot().unwrap(),
        writer.store.snapshot().unwrap()
    );
    assert_eq!(replica.store.election_key(), writer.store.election_key());
    // The replica's own log is a faithful copy: it could serve a replica of its own.
    assert_eq!(
        replica.store.entries_after(0, 1000).unwrap(),
        writer.store.entries_after(0, 1000).unwrap()
    );
}

#[test]
fn appending_is_durable_before_applying_idempotent_and_refuses_gaps() {
    let writer = open();
    let replica = open();
    populate(&writer.store);
    let log = writer.store.entries_after(0, 1000).unwrap();
    // Durable but not yet committed: the log moves, the rows do not.
    let outcome = replica.store.append_entries(&log[..1], 0).unwrap();
    assert_eq!(outcome.durable, log[0].id());
    assert_eq!(outcome.applied, 0);
    assert_eq!(replica.store.snapshot().unwrap().users.len(), 0);
    let outcome = replica
        .store
        .append_entries(&log[..1], log[0].epoch)
        .unwrap();
    assert_eq!(outcome.applied, log[0].epoch);
    let after_one = replica.store.snapshot().unwrap();
    // Again: nothing changes.
    let again = replica
        .store
        .append_entries(&log[..1], log[0].epoch)
        .unwrap();
    assert_eq!(again, outcome);
    assert_eq!(replica.store.snapshot().unwrap(), after_one);
    let gap = replica.store.append_entries(&log[2..3], 100);
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
    assert_eq!(replica.store.election_key(), log[0].id());
    // Reopening keeps the position (it was durable).
    let path = replica.store.path().to_owned();
    let reopened = Store::open(&path).unwrap();
    assert_eq!(reopened.election_key(), log[0].id());
}

#[test]
fn a_deposed_writers_suffix_is_found_and_dropped_but_never_below_the_committed_floor() {
    let writer = open(); // writes in term 0, then is deposed
    let follower = open();
    let alice = register(&writer.store, "alice", "123");
    let bob = register(&writer.store, "bob", "123");
    catch_up(&writer.store, &follower.store, 10);
    let new_writer = open();
    catch_up(&writer.store, &new_writer.store, 10);
    // The old writer appends two more entries in term 0 that reach the follower's log but
    // are never committed.
    send(&writer.store, alice, Recipient::User(bob), "lost 1");
    send(&writer.store, alice, Recipient::User(bob), "lost 2");
    let stale = writer.store.entries_after(2, 10).unwrap();
    follower.store.append_entries(&stale, 2).unwrap();
    assert_eq!(follower.store.election_key(), EntryId { term: 0, epoch: 4 });
    assert_eq!(follower.store.applied_epoch(), 2);

    // A new writer (term 2) wrote epoch 3 differently.
    let term2 = Operation {
        request_id: Uuid::new_v4(),
        at_ms: 9,
        fingerprint: Fingerprint::default(),
        change: Change::SendMessage {
            message_uuid: Uuid::new_v4(),
            sender_uuid: bob,
            recipient: Recipient::User(alice),
            content: "kept".into(),
        },
    };
    let outcome = new_writer.store.commit_batch(2, 10, vec![term2]).unwrap();
    let fresh = outcome.entry.expect("an entry");
    assert_eq!(fresh.id(), EntryId { term: 2, epoch: 3 });

    let diverged = follower
        .store
        .append_entries(std::slice::from_ref(&fresh), 3);
    let Err(StoreError::Diverged {
        epoch: 3,
        ours: 0,
        theirs: 2,
        keep_through,
    }) = diverged
    else {
        panic!("{diverged:?}");
    };
    assert_eq!(keep_through, 2);
    assert_eq!(
        follower
            .store
            .last_common_epoch(&[EntryId { term: 0, epoch: 2 }, fresh.id()])
            .unwrap(),
        2
    );
    // Below the committed floor: refused, nothing dropped.
    let refused = follower.store.truncate_after(keep_through, 3);
    assert!(
        matches!(
            refused,
            Err(StoreError::BelowCommitted {
                floor: 3,
                requested: 2
            })
        ),
        "{refused:?}"
    );
    assert_eq!(follower.store.election_key(), EntryId { term: 0, epoch: 4 });
    // Below what is applied: a snapshot is needed.
    let applied = follower.store.truncate_after(1, 0);
    assert!(
        matches!(applied, Err(StoreError::SnapshotNeeded { .. })),
        "{applied:?}"
    );

    assert_eq!(
        follower.store.truncate_after(keep_through, 2).unwrap(),
        EntryId { term: 0, epoch: 2 }
    );
    follower
        .store
        .append_entries(std::slice::from_ref(&fresh), 3)
        .unwrap();
    assert_eq!(
        follower.store.snapshot().unwrap(),
        new_writer.store.snapshot().unwrap()
    );
    assert_eq!(follower.store.election_key(), EntryId { term: 2, epoch: 3 });
    // An older term cannot write any more.
    let stale_write = follower.store.commit_batch::<Operation>(1, 0, vec![]);
    assert!(matches!(
        stale_write,
        Err(StoreError::StaleTerm { ours: 2, given: 1 })
    ));
}

#[test]
fn a_snapshot_streams_in_chunks_and_restores_after_the_log_is_trimmed() {
    let writer = open();
    let replica = open();
    register(&replica.store, "stale", "999"); // contents the restore must replace
    populate(&writer.store);
    let epoch = writer.store.current_epoch().unwrap();
    writer.store.trim_log(epoch - 2).unwrap();
    let trimmed = writer.store.entries_after(1, 100);
    assert!(
        matches!(trimmed, Err(StoreError::LogTrimmed { requested: 1 })),
        "{trimmed:?}"
    );
    assert_eq!(writer.store.entries_after(epoch - 2, 100).unwrap().len(), 2);

    let mut reader = writer.store.snapshot_reader().unwrap();
    assert_eq!(reader.id(), writer.store.election_key());
    let mut receiving = replica.store.snapshot_writer().unwrap();
    let mut chunks = 0;
    while let Some(chunk) = reader.next_chunk(1000).unwrap() {
        assert!(chunk.len() <= 1000);
        receiving.write_chunk(&chunk).unwrap();
        chunks += 1;
    }
    assert!(
        chunks > 1,
        "a database of several pages takes several chunks"
    );
    assert_eq!(receiving.written(), reader.size());
    let id = replica.store.restore_from(receiving).unwrap();
    assert_eq!(id, writer.store.election_key());
    assert_eq!(replica.store.election_key(), id);
    assert_eq!(
        replica.store.snapshot().unwrap(),
        writer.store.snapshot().unwrap()
    );
    // The private-chat list is derived from the messages and rebuilt on restore.
    let chat_lists = |store: &Store| -> Vec<Vec<String>> {
        let users = store.snapshot().unwrap().users;
        users
            .iter()
            .map(|user| {
                let (chats, _) = store.read(|v| v.chats(user.uuid)).unwrap();
                chats.into_iter().map(|c| c.chat_id).collect()
            })
            .collect()
    };
    let lists = chat_lists(&writer.store);
    assert!(
        lists.iter().flatten().any(|chat| chat.contains(':')),
        "the populated database has private chats: {lists:?}"
    );
    assert_eq!(chat_lists(&replica.store), lists);

    // Afterwards the log path continues from the snapshot's epoch.
    let dave = register(&writer.store, "dave", "321");
    catch_up(&writer.store, &replica.store, 10);
    assert_eq!(
        replica.store.snapshot().unwrap(),
        writer.store.snapshot().unwrap()
    );
    let (found, _) = replica.store.read(|v| v.user(dave)).unwrap();
    assert!(found.is_some());
}

#[test]
fn snapshot_files_a_killed_process_left_are_removed_at_start_and_only_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("chat.db")).unwrap();
    let neighbour = Store::open(dir.path().join("other.db")).unwrap();
    register(&store, "alice", "123");
    // Forgetting them leaves their files, as a SIGKILL does.
    std::mem::forget(store.snapshot_reader().unwrap());
    let mut receiving = store.snapshot_writer().unwrap();
    receiving.write_chunk(b"half a snapshot").unwrap();
    std::mem::forget(receiving);
    let neighbours_file = neighbour.snapshot_reader().unwrap();
    let names = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.contains("snapshot"))
            .collect();
        names.sort();
        names
    };
    assert_eq!(names().len(), 3, "{:?}", names());

    assert_eq!(store.remove_stale_snapshot_files().unwrap(), 2);
    let left = names();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].starts_with(".other.db.snapshot-out-"), "{left:?}");
    assert_eq!(
        store.snapshot().unwrap().users.len(),
        1,
        "the database stays"
    );
    // The neighbour's snapshot is still readable to the end.
    let size = neighbours_file.size();
    let mut neighbours_file = neighbours_file;
    let mut read = 0;
    while let Some(chunk) = neighbours_file.next_chunk(4096).unwrap() {
        read += chunk.len() as u64;
    }
    assert_eq!(read, size);
}

#[test]
fn a_damaged_snapshot_changes_nothing() {
    let writer = open();
    let replica = open();
    populate(&writer.store);
    register(&replica.store, "mine", "999");
    let before = replica.store.snapshot().unwrap();
    let mut receiving = replica.store.snapshot_writer().unwrap();
    receiving.write_chunk(b"this is not a database").unwrap();
    assert!(replica.store.restore_from(receiving).is_err());
    assert_eq!(replica.store.snapshot().unwrap(), before);
}

#[test]
fn trimming_keeps_the_log_bounded_and_remembered_requests_replayable() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        durability: Durability::Normal,
        log_retention: 5,
        ..StoreOptions::default()
    };
    let writer = Store::open_with(dir.path().join("w.db"), options).unwrap();
    let follower = Store::open_with(dir.path().join("f.db"), options).unwrap();
    let alice = register(&writer, "alice", "123");
    let bob = register(&writer, "bob", "123");
    let first = Operation {
        request_id: Uuid::new_v4(),
        at_ms: 1,
        fingerprint: Fingerprint::of(&[b"first"]),
        change: Change::SendMessage {
            message_uuid: Uuid::new_v4(),
            sender_uuid: alice,
            recipient: Recipient::User(bob),
            content: "first".into(),
        },
    };
    let committed = writer.execute(&first).unwrap();
    for i in 0..40 {
        send(&writer, alice, Recipient::User(bob), &format!("m{i}"));
        // The follower keeps up, so trimming never strands it.
        catch_up(&writer, &follower, 3);
    }
    let kept = writer.entries_after(writer.log_base().epoch, 1000).unwrap();
    assert!(kept.len() <= 11, "log bounded: {} entries", kept.len());
    assert!(writer.log_base().epoch > 0);
    assert_eq!(follower.snapshot().unwrap(), writer.snapshot().unwrap());
    // The request applied long before the trim point still replays, on both.
    let replay = writer.execute(&first).unwrap();
    assert!(replay.replayed);
    assert_eq!(
        (replay.epoch, replay.written),
        (committed.epoch, committed.written)
    );
    let (remembered, _) = follower.read(|v| v.applied(first.request_id)).unwrap();
    assert!(remembered.is_some());
}

#[test]
fn a_batch_decides_each_request_in_its_own_savepoint() {
    let db = open();
    let alice = register(&db.store, "alice", "123");
    let bob = register(&db.store, "bob", "123");
    let message = |content: &str| {
        let message_uuid = Uuid::new_v4();
        Operation {
            request_id: message_uuid,
            at_ms: 5,
            fingerprint: Fingerprint::of_message(alice, &Recipient::User(bob), content),
            change: Change::SendMessage {
                message_uuid,
                sender_uuid: alice,
                recipient: Recipient::User(bob),
                content: content.into(),
            },
        }
    };
    let good = message("one");
    let refused = Operation {
        request_id: Uuid::new_v4(),
        at_ms: 5,
        fingerprint: Fingerprint::default(),
        change: Change::AddMember {
            group_uuid: Uuid::new_v4(),
            user_uuid: alice,
        },
    };
    let batch = vec![good.clone(), refused, message("two"), good.clone()];
    let outcome = db.store.commit_batch(1, 5, batch).unwrap();
    let epochs: Vec<_> = outcome
        .answers
        .iter()
        .map(|a| a.as_ref().map(|c| (c.epoch, c.replayed)).map_err(|_| ()))
        .collect();
    assert_eq!(
        epochs,
        vec![Ok((3, false)), Err(()), Ok((4, false)), Ok((3, true))]
    );
    let entry = outcome.entry.expect("entry");
    assert_eq!((entry.term, entry.first_epoch(), entry.epoch), (1, 3, 4));
    assert_eq!(outcome.notices.len(), 2);
    let mut pair = vec![alice, bob];
    pair.sort_unstable();
    assert!(outcome.notices.iter().all(|n| n.audience == pair));
    assert_eq!(db.store.current_epoch().unwrap(), 4);
    assert!(outcome.answers[0]
        .as_ref()
        .is_ok_and(|c| matches!(c.written, Written::Message(_))));
}

#[test]
fn group_notices_carry_the_members_at_commit_time() {
    let db = open();
    let alice = register(&db.store, "alice", "123");
    let bob = register(&db.store, "bob", "123");
    let group = create_group(&db.store, alice, "g");
    add(&db.store, group, bob);
    let message_uuid = Uuid::new_v4();
    let outcome = db
        .store
        .commit_batch(
            1,
            1,
            vec![
                op(Change::SendMessage {
                    message_uuid,
                    sender_uuid: alice,
                    recipient: Recipient::Group(group),
                    content: "hi".into(),
                }),
                op(Change::RemoveMember {
                    group_uuid: group,
                    user_uuid: bob,
                }),
            ],
        )
        .unwrap();
    assert_eq!(outcome.notices.len(), 1);
    assert_eq!(outcome.notices[0].audience, vec![alice]);
    assert_eq!(outcome.notices[0].chat_id, group.to_string());
    assert_eq!(outcome.notices[0].message_uuid, message_uuid);
    // It carries the message as stored, so no input node reads it back.
    let (stored, _) = db
        .store
        .read(|v| v.messages(&group.to_string(), Page::Newest { limit: 1 }))
        .unwrap();
    assert_eq!(outcome.notices[0].message.as_ref(), stored.first());
}

#[test]
fn chats_list_newest_message_and_unread_count_and_pages_by_message_id() {
    let db = open();
    let alice = register(&db.store, "alice", "123");
    let bob = register(&db.store, "bob", "123");
    let carol = register(&db.store, "carol", "123");
    let group = create_group(&db.store, alice, "g");
    add(&db.store, group, bob);
    let sent: Vec<Uuid> = (0..4)
        .map(|i| send(&db.store, bob, Recipient::User(alice), &format!("p{i}")))
        .collect();
    send(&db.store, carol, Recipient::User(alice), "hello");
    let last_group = send(&db.store, bob, Recipient::Group(group), "to the group");
    let private = chat_store::private_chat_id(alice, bob);
    let (epoch_of_second, _) = db
        .store
        .read(|v| v.messages(&private, Page::Newest { limit: 10 }))
        .map(|(m, e)| (m[1].epoch, e))
        .unwrap();
    db.store
        .execute(&op(Change::MarkRead {
            user_uuid: alice,
            chat_id: private.clone(),
            read_epoch: epoch_of_second,
        }))
        .unwrap();
    // Never backwards.
    let back = db
        .store
        .execute(&op(Change::MarkRead {
            user_uuid: alice,
            chat_id: private.clone(),
            read_epoch: 1,
        }))
        .unwrap();
    assert!(
        matches!(back.written, Written::ReadPosition(ref p) if p.read_epoch == epoch_of_second)
    );
    let (chats, _) = db.store.read(|v| v.chats(alice)).unwrap();
    let summary: Vec<_> = chats
        .iter()
        .map(|c| {
            (
                c.chat_id.clone(),
                c.newest.as_ref().map(|m| m.uuid),
                c.unread,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (group.to_string(), Some(last_group), 1),
            (chat_store::private_chat_id(alice, carol), summary[1].1, 1),
            (private.clone(), Some(sent[3]), 2),
        ]
    );
    let (bobs, _) = db.store.read(|v| v.chats(bob)).unwrap();
    assert_eq!(bobs.len(), 2);
    assert!(bobs
        .iter()
        .all(|c| c.newest_author.as_ref().is_some_and(|u| u.uuid == bob)));

    let (before, _) = db
        .store
        .read(|v| {
            v.messages(
                &private,
                Page::BeforeMessage {
                    message: sent[3],
                    limit: 2,
                },
            )
        })
        .unwrap();
    assert_eq!(
        before.iter().map(|m| m.uuid).collect::<Vec<_>>(),
        sent[1..3].to_vec()
    );
    let unknown = db.store.read(|v| {
        v.messages(
            &private,
            Page::BeforeMessage {
                message: last_group,
                limit: 2,
            },
        )
    });
    assert!(
        matches!(unknown, Err(StoreError::UnknownMessage(_))),
        "{unknown:?}"
    );
    let (shared, _) = db.store.read(|v| v.shared_groups(alice, bob)).unwrap();
    assert_eq!(
        shared.iter().map(|g| g.uuid).collect::<Vec<_>>(),
        vec![group]
    );
    let (none, _) = db.store.read(|v| v.shared_groups(alice, carol)).unwrap();
    assert!(none.is_empty());
}

#[test]
fn a_corrupt_log_entry_is_an_error_not_a_panic() {
    let db = open();
    register(&db.store, "alice", "123");
    let mut conn = <diesel::SqliteConnection as diesel::Connection>::establish(
        db.store.path().to_str().unwrap(),
    )
    .unwrap();
    conn.batch_execute("UPDATE replication_log SET body = 'not json'")
        .unwrap();
    let result = db.store.entries_after(0, 10);
    assert!(matches!(result, Err(StoreError::Corrupt(_))), "{result:?}");
}

/// The SQLite the store links is built with the query planner stability guarantee
/// (`.cargo/config.toml`): without it every `LIMIT ?` statement is compiled again on each
/// execution, a fifth of the store's instructions.
#[test]
fn sqlite_is_built_to_compile_each_statement_once() {
    use diesel::{sql_types::Integer, Connection, QueryableByName, RunQueryDsl, SqliteConnection};
    #[derive(QueryableByName)]
    struct Used {
        #[diesel(sql_type = Integer)]
        used: i32,
    }
    let mut conn = SqliteConnection::establish(":memory:").expect("open");
    let row: Used = diesel::sql_query("SELECT sqlite_compileoption_used('ENABLE_QPSG') AS used")
        .get_result(&mut conn)
        .expect("query");
    assert_eq!(
        row.used, 1,
        "SQLITE_ENABLE_QPSG is missing: is LIBSQLITE3_FLAGS overridden in the environment?"
    );
}

/// The session mark follows logouts and deleted accounts on the writer and on a follower
/// applying its log, ignores every other change, and starts at the applied epoch on open.
#[test]
fn the_sessions_mark_moves_with_logouts_and_deleted_accounts_only() {
    let db = open();
    let store = &db.store;
    let alice = register(store, "alice", "001");
    let bob = register(store, "bob", "002");
    send(store, alice, Recipient::User(bob), "hello");
    assert_eq!(store.sessions_changed(), 0, "registrations and messages");
    let logout = store
        .execute(&op(Change::EndSessions { user_uuid: alice }))
        .expect("logout");
    assert_eq!(store.sessions_changed(), logout.epoch);
    send(store, bob, Recipient::User(alice), "bye");
    create_group(store, bob, "g");
    assert_eq!(store.sessions_changed(), logout.epoch);
    let deleted = store
        .execute(&op(Change::DeleteUser { user_uuid: bob }))
        .expect("delete");
    assert_eq!(store.sessions_changed(), deleted.epoch);

    let dir = tempfile::tempdir().expect("tempdir");
    let follower = Store::open_with(
        dir.path().join("follower.db"),
        StoreOptions {
            durability: Durability::Normal,
            ..StoreOptions::default()
        },
    )
    .expect("open follower");
    let entries = store.entries_after(0, 100).expect("log");
    // Appended but not yet committed: nothing applied, nothing marked.
    follower.append_entries(&entries, 0).expect("append");
    assert_eq!(follower.sessions_changed(), 0);
    follower
        .append_entries(&[], logout.epoch)
        .expect("apply through the logout");
    assert_eq!(follower.sessions_changed(), logout.epoch);
    follower
        .append_entries(&[], deleted.epoch)
        .expect("apply the rest");
    assert_eq!(follower.sessions_changed(), deleted.epoch);

    // Reopened, a database is not looked into: its applied epoch is the mark.
    let path = follower.path().to_path_buf();
    drop(follower);
    let reopened = Store::open(&path).expect("reopen");
    assert_eq!(reopened.sessions_changed(), reopened.applied_epoch());
}

/// A follower applies an entry a transaction after appending it (once it is majority-durable);
/// it applies the one it holds rather than reading its row back. Proved by spoiling the rows in
/// between: the follower still ends with the writer's data, while the same log opened afresh
/// (nothing held) reads the rows and reports them corrupt.
#[test]
fn a_follower_applies_the_entries_it_appended_without_reading_them_back() {
    let writer = open();
    populate(&writer.store);
    let entries = writer.store.entries_after(0, 1_000).unwrap();
    let commit = writer.store.applied_epoch();
    let spoil = |store: &Store| {
        let mut conn = <diesel::SqliteConnection as diesel::Connection>::establish(
            store.path().to_str().unwrap(),
        )
        .unwrap();
        conn.batch_execute("UPDATE replication_log SET body = 'not json'")
            .unwrap();
    };

    let follower = open();
    let appended = follower.store.append_entries(&entries, 0).unwrap();
    assert_eq!(appended.applied, 0);
    assert_eq!(appended.durable, writer.store.election_key());
    spoil(&follower.store);
    assert_eq!(follower.store.apply_committed(commit).unwrap(), commit);
    assert_eq!(
        follower.store.snapshot().unwrap(),
        writer.store.snapshot().unwrap()
    );

    let reopened = open();
    reopened.store.append_entries(&entries, 0).unwrap();
    spoil(&reopened.store);
    let path = reopened.store.path().to_path_buf();
    drop(reopened.store);
    let fresh = Store::open(&path).unwrap();
    let result = fresh.apply_committed(commit);
    assert!(matches!(result, Err(StoreError::Corrupt(_))), "{result:?}");
    assert_eq!(fresh.applied_epoch(), 0);
}
