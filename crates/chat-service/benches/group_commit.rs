//! Group commit on the writer: writes/s with fsync per batch (`synchronous = FULL`) at batch
//! sizes 1, 10 and 100, and SQL statements per write. Prints `bench ...` lines; never fails
//! on a slow machine.

use std::sync::Arc;
use std::time::Instant;

use chat_service::{CommitterConfig, GroupCommitter, Request};
use chat_store::{Change, Durability, Fingerprint, Operation, SecretHash, Store, StoreOptions};
use uuid::Uuid;

fn register(store: &Store, username: &str) -> Uuid {
    let user_uuid = Uuid::new_v4();
    store
        .execute(&Operation {
            request_id: Uuid::new_v4(),
            at_ms: 0,
            fingerprint: Fingerprint::default(),
            change: Change::RegisterUser {
                user_uuid,
                username: username.to_owned(),
                tag: "123".to_owned(),
                secret: SecretHash::new("not-a-real-hash".to_owned()),
            },
        })
        .expect("register");
    user_uuid
}

/// `writes` private messages from `clients` concurrent submitters through a committer whose
/// batches hold at most `batch` requests.
async fn run(dir: &tempfile::TempDir, batch: usize, writes: usize) {
    let options = StoreOptions {
        durability: Durability::Full,
        ..StoreOptions::default()
    };
    let store = Arc::new(
        Store::open_with(dir.path().join(format!("batch-{batch}.db")), options).expect("open"),
    );
    let (alice, bob) = (register(&store, "alice"), register(&store, "bob"));
    let config = CommitterConfig {
        queue: 4096,
        max_batch: batch,
    };
    let committer = GroupCommitter::start(Arc::clone(&store), config, None).expect("start");
    let clients = (batch * 2).max(2);
    let statements_before = store.writer_statements();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..clients {
        let committer = committer.clone();
        let share = writes / clients + usize::from(client < writes % clients);
        tasks.push(tokio::spawn(async move {
            for i in 0..share {
                let request = Request::SendPrivate {
                    message_id: Uuid::new_v4(),
                    acting_user: alice,
                    to: bob,
                    content: format!("message {client}/{i}, of a typical short length"),
                };
                committer.submit(1, request, 0).await.expect("write");
            }
        }));
    }
    for task in tasks {
        task.await.expect("client");
    }
    let elapsed = start.elapsed();
    let statements = store.writer_statements() - statements_before;
    println!(
        "bench group commit, batches of up to {batch}, fsync per batch: {:.0} writes/s, {:.1} statements/write",
        writes as f64 / elapsed.as_secs_f64(),
        statements as f64 / writes as f64
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    runtime.block_on(async {
        run(&dir, 1, 500).await;
        run(&dir, 10, 5_000).await;
        run(&dir, 100, 30_000).await;
    });
}
