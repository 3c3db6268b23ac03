//! Property: whatever sequence of writes the writer accepts (and whichever it refuses), a
//! replica fed the log in any batch sizes, and a replica restored from a snapshot, hold
//! exactly the writer's contents at the writer's epoch.

use chat_store::{
    Change, Durability, Operation, Recipient, SecretHash, Store, StoreError, StoreOptions,
};
use proptest::prelude::*;
use uuid::Uuid;

/// Writes by index into the users and groups created so far, so most of them are valid and
/// some (deleted targets, duplicates) are refused.
#[derive(Debug, Clone)]
enum Action {
    Register { name: u8 },
    DeleteUser { user: usize },
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

fn open(dir: &tempfile::TempDir, name: &str) -> Store {
    let options = StoreOptions {
        durability: Durability::Normal,
        ..StoreOptions::default()
    };
    Store::open_with(dir.path().join(name), options).expect("open")
}

fn run(actions: &[Action], batch: u32) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let writer = open(&dir, "writer.db");
    let (mut users, mut groups, mut sent): (Vec<Uuid>, Vec<Uuid>, Vec<Operation>) =
        Default::default();
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
                    Ok(_) => prop_assert_eq!(writer.current_epoch().expect("epoch"), before),
                    Err(e) => prop_assert!(false, "retry of an applied op failed: {e}"),
                }
                continue;
            }
        };
        let op = Operation {
            request_id: Uuid::new_v4(),
            at_ms: i64::try_from(i).unwrap_or(0),
            change,
        };
        let before = writer.current_epoch().expect("epoch");
        match writer.execute(&op) {
            Ok(committed) => {
                prop_assert_eq!(committed.epoch, before + 1);
                sent.push(op);
            }
            Err(StoreError::NotFound(_) | StoreError::Conflict(_)) => {
                prop_assert_eq!(writer.current_epoch().expect("epoch"), before);
            }
            Err(other) => prop_assert!(false, "unexpected error {other}"),
        }
    }

    let expected = writer.snapshot().expect("snapshot");
    prop_assert_eq!(expected.epoch, sent.len() as u64);

    let by_log = open(&dir, "by-log.db");
    loop {
        let at = by_log.current_epoch().expect("epoch");
        let ops = writer.operations_since(at, batch).expect("log");
        if ops.is_empty() {
            break;
        }
        for (epoch, op) in ops {
            by_log.apply(epoch, &op).expect("apply");
        }
    }
    prop_assert_eq!(&by_log.snapshot().expect("snapshot"), &expected);

    let by_snapshot = open(&dir, "by-snapshot.db");
    by_snapshot.restore_snapshot(&expected).expect("restore");
    prop_assert_eq!(&by_snapshot.snapshot().expect("snapshot"), &expected);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn replicas_converge_to_the_writer(actions in prop::collection::vec(action(), 1..40), batch in 1u32..8) {
        run(&actions, batch)?;
    }
}
