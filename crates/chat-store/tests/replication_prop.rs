//! Property: whatever sequence of writes the writer accepts (and whichever it refuses),
//! committed in group-commit batches of any size, a follower fed the log in any chunks (with
//! duplicates, a lagging commit point and restarts), and a follower restored from a streamed
//! snapshot, hold exactly the writer's rows at the writer's epoch.

use chat_store::{
    Change, Durability, Fingerprint, Operation, Recipient, SecretHash, Store, StoreError,
    StoreOptions,
};
use proptest::prelude::*;
use uuid::Uuid;

/// Writes by index into the users and groups created so far, so most of them are valid and
/// some (deleted targets, duplicates) are refused.
#[derive(Debug, Clone)]
enum Action {
    Register { name: u8 },
    DeleteUser { user: usize },
    EndSessions { user: usize },
    CreateGroup { creator: usize },
    DeleteGroup { group: usize },
    AddMember { group: usize, user: usize },
    RemoveMember { group: usize, user: usize },
    SendPrivate { from: usize, to: usize },
    SendGroup { from: usize, group: usize },
    Retry { earlier: usize },
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => (0u8..6).prop_map(|name| Action::Register { name }),
        1 => any::<usize>().prop_map(|user| Action::DeleteUser { user }),
        1 => any::<usize>().prop_map(|user| Action::EndSessions { user }),
        2 => any::<usize>().prop_map(|creator| Action::CreateGroup { creator }),
        1 => any::<usize>().prop_map(|group| Action::DeleteGroup { group }),
        3 => (any::<usize>(), any::<usize>()).prop_map(|(group, user)| Action::AddMember { group, user }),
        2 => (any::<usize>(), any::<usize>()).prop_map(|(group, user)| Action::RemoveMember { group, user }),
        3 => (any::<usize>(), any::<usize>()).prop_map(|(from, to)| Action::SendPrivate { from, to }),
        3 => (any::<usize>(), any::<usize>()).prop_map(|(from, group)| Action::SendGroup { from, group }),
        1 => any::<usize>().prop_map(|earlier| Action::Retry { earlier }),
    ]
}

fn pick(list: &[Uuid], index: usize) -> Uuid {
    if list.is_empty() {
        Uuid::nil()
    } else {
        list[index % list.len()]
    }
}

fn options() -> StoreOptions {
    StoreOptions {
        durability: Durability::Normal,
        ..StoreOptions::default()
    }
}

fn open(dir: &tempfile::TempDir, name: &str) -> Store {
    Store::open_with(dir.path().join(name), options()).expect("open")
}

/// How the follower receives the log: chunk sizes, duplicated chunks, restarts.
#[derive(Debug, Clone)]
struct Delivery {
    chunk: u32,
    duplicate_every: usize,
    restart_every: usize,
    commit_lag: u64,
}

fn delivery() -> impl Strategy<Value = Delivery> {
    (1u32..6, 1usize..5, 2usize..7, 0u64..4).prop_map(
        |(chunk, duplicate_every, restart_every, commit_lag)| Delivery {
            chunk,
            duplicate_every,
            restart_every,
            commit_lag,
        },
    )
}

fn run(actions: &[Action], write_batch: usize, how: &Delivery) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let writer = open(&dir, "writer.db");
    let (mut users, mut groups, mut sent): (Vec<Uuid>, Vec<Uuid>, Vec<Operation>) =
        Default::default();
    let mut pending: Vec<Operation> = Vec::new();
    for (i, action) in actions.iter().enumerate() {
        let change = match *action {
            Action::Register { name } => {
                let user_uuid = Uuid::new_v4();
                users.push(user_uuid);
                Change::RegisterUser {
                    user_uuid,
                    username: format!("user{name}"),
                    tag: "123".into(),
                    secret: SecretHash::new(format!("hash{i}")),
                }
            }
            Action::DeleteUser { user } => Change::DeleteUser {
                user_uuid: pick(&users, user),
            },
            Action::EndSessions { user } => Change::EndSessions {
                user_uuid: pick(&users, user),
            },
            Action::CreateGroup { creator } => {
                let group_uuid = Uuid::new_v4();
                groups.push(group_uuid);
                Change::CreateGroup {
                    group_uuid,
                    name: format!("g{i}"),
                    creator_uuid: pick(&users, creator),
                }
            }
            Action::DeleteGroup { group } => Change::DeleteGroup {
                group_uuid: pick(&groups, group),
            },
            Action::AddMember { group, user } => Change::AddMember {
                group_uuid: pick(&groups, group),
                user_uuid: pick(&users, user),
            },
            Action::RemoveMember { group, user } => Change::RemoveMember {
                group_uuid: pick(&groups, group),
                user_uuid: pick(&users, user),
            },
            Action::SendPrivate { from, to } => Change::SendMessage {
                message_uuid: Uuid::new_v4(),
                sender_uuid: pick(&users, from),
                recipient: Recipient::User(pick(&users, to)),
                content: format!("m{i}"),
            },
            Action::SendGroup { from, group } => Change::SendMessage {
                message_uuid: Uuid::new_v4(),
                sender_uuid: pick(&users, from),
                recipient: Recipient::Group(pick(&groups, group)),
                content: format!("m{i}"),
            },
            Action::Retry { earlier } => {
                if sent.is_empty() {
                    continue;
                }
                let op = sent[earlier % sent.len()].clone();
                let before = writer.current_epoch().expect("epoch");
                match writer.execute(&op) {
                    Ok(replay) => {
                        prop_assert!(replay.replayed);
                        prop_assert_eq!(writer.current_epoch().expect("epoch"), before);
                    }
                    Err(e) => prop_assert!(false, "retry of an applied op failed: {e}"),
                }
                continue;
            }
        };
        pending.push(Operation {
            request_id: Uuid::new_v4(),
            at_ms: i64::try_from(i).unwrap_or(0),
            fingerprint: Fingerprint::of(&[&i.to_le_bytes()]),
            change,
        });
        if pending.len() >= write_batch {
            commit(&writer, &mut pending, &mut sent)?;
        }
    }
    commit(&writer, &mut pending, &mut sent)?;

    let expected = writer.snapshot().expect("snapshot");
    prop_assert_eq!(expected.epoch, sent.len() as u64);

    // The follower: chunks, duplicates, a commit point that lags, restarts.
    let follower_path = dir.path().join("follower.db");
    let mut follower = open(&dir, "follower.db");
    let mut previous: Vec<chat_store::Entry> = Vec::new();
    for round in 1.. {
        if round % how.restart_every == 0 {
            drop(follower);
            follower = Store::open_with(&follower_path, options()).expect("reopen");
        }
        if round % how.duplicate_every == 0 && !previous.is_empty() {
            let before = follower.election_key();
            follower.append_entries(&previous, 0).expect("duplicate");
            prop_assert_eq!(follower.election_key(), before);
        }
        let after = follower.election_key().epoch;
        let entries = writer.entries_after(after, how.chunk).expect("log");
        if entries.is_empty() {
            break;
        }
        let last = entries.last().map_or(0, |e| e.epoch);
        let outcome = follower
            .append_entries(&entries, last.saturating_sub(how.commit_lag))
            .expect("append");
        prop_assert_eq!(outcome.durable, entries[entries.len() - 1].id());
        prop_assert!(outcome.applied <= outcome.durable.epoch);
        previous = entries;
    }
    follower
        .apply_committed(writer.applied_epoch())
        .expect("commit");
    prop_assert_eq!(&follower.snapshot().expect("snapshot"), &expected);
    prop_assert_eq!(follower.election_key(), writer.election_key());

    // The snapshot path, streamed in small chunks.
    let by_snapshot = open(&dir, "by-snapshot.db");
    let mut reader = writer.snapshot_reader().expect("snapshot");
    let mut receiving = by_snapshot.snapshot_writer().expect("sink");
    while let Some(chunk) = reader.next_chunk(4096).expect("chunk") {
        receiving.write_chunk(&chunk).expect("write");
    }
    by_snapshot.restore_from(receiving).expect("restore");
    prop_assert_eq!(&by_snapshot.snapshot().expect("snapshot"), &expected);
    prop_assert_eq!(by_snapshot.election_key(), writer.election_key());
    Ok(())
}

/// Commits the pending operations as one batch (term 1); refused ones leave no trace.
fn commit(
    writer: &Store,
    pending: &mut Vec<Operation>,
    sent: &mut Vec<Operation>,
) -> Result<(), TestCaseError> {
    if pending.is_empty() {
        return Ok(());
    }
    let before = writer.current_epoch().expect("epoch");
    let batch = std::mem::take(pending);
    let outcome = writer
        .commit_batch(1, 0, batch.clone())
        .map_err(|e| TestCaseError::fail(format!("batch failed: {e}")))?;
    let mut epoch = before;
    for (op, answer) in batch.into_iter().zip(outcome.answers) {
        match answer {
            Ok(committed) => {
                epoch += 1;
                prop_assert_eq!(committed.epoch, epoch);
                sent.push(op);
            }
            Err(StoreError::NotFound(_) | StoreError::Conflict(_)) => {}
            Err(other) => prop_assert!(false, "unexpected error {other}"),
        }
    }
    prop_assert_eq!(writer.current_epoch().expect("epoch"), epoch);
    prop_assert_eq!(
        outcome.entry.map(|e| e.epoch),
        (epoch > before).then_some(epoch)
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn followers_converge_to_the_writer(
        actions in prop::collection::vec(action(), 1..40),
        write_batch in 1usize..6,
        how in delivery(),
    ) {
        run(&actions, write_batch, &how)?;
    }
}
