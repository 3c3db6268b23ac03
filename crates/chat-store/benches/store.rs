//! Store throughput and bcrypt cost. Prints `bench <what>: <figure> <unit>` lines; never fails
//! on a slow machine.

use std::time::{Duration, Instant};

use chat_store::{
    private_chat_id, Change, Durability, Fingerprint, Operation, Page, Recipient, SecretHash,
    Store, StoreOptions,
};
use uuid::Uuid;

fn open(dir: &tempfile::TempDir, name: &str, durability: Durability) -> Store {
    let options = StoreOptions {
        durability,
        ..StoreOptions::default()
    };
    Store::open_with(dir.path().join(name), options).expect("open store")
}

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

fn message(sender: Uuid, receiver: Uuid, i: usize) -> Operation {
    let message_uuid = Uuid::new_v4();
    Operation {
        request_id: message_uuid,
        at_ms: i64::try_from(i).unwrap_or(i64::MAX),
        fingerprint: Fingerprint::default(),
        change: Change::SendMessage {
            message_uuid,
            sender_uuid: sender,
            recipient: Recipient::User(receiver),
            content: format!("message number {i}, of a typical short length"),
        },
    }
}

fn per_second(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

fn single_writes(dir: &tempfile::TempDir, durability: Durability, count: usize) {
    let store = open(dir, &format!("single-{durability:?}.db"), durability);
    let (a, b) = (register(&store, "a"), register(&store, "b"));
    let start = Instant::now();
    for i in 0..count {
        store.execute(&message(a, b, i)).expect("send");
    }
    println!(
        "bench message writes, one per transaction, synchronous={durability:?}: {:.0} writes/s",
        per_second(count, start.elapsed())
    );
}

fn batched_writes(store: &Store, a: Uuid, b: Uuid, total: usize, batch: usize) -> Duration {
    let start = Instant::now();
    let mut sent = 0;
    while sent < total {
        let ops: Vec<Operation> = (sent..(sent + batch).min(total))
            .map(|i| message(a, b, i))
            .collect();
        store.commit_batch(1, 0, ops.clone()).expect("batch");
        sent += ops.len();
    }
    start.elapsed()
}

/// A follower as the cluster feeds it: the data plane delivers one entry per write, the
/// writes spread over 32 private chats, about 10 entries per transaction (what a 5-node ring
/// under 64 clients shows). Each transaction appends the new entries and applies the ones
/// committed by the previous call, as a follower does when the commit advance arrives with
/// the next entries.
fn follower_as_fed_by_the_data_plane(dir: &tempfile::TempDir) {
    let writer = open(dir, "fed-writer.db", Durability::Normal);
    let users: Vec<Uuid> = (0..64)
        .map(|i| register(&writer, &format!("u{i}")))
        .collect();
    let total = 40_000;
    let mut ops: Vec<Operation> = (0..total)
        .map(|i| {
            let pair = i % 32;
            message(users[2 * pair], users[2 * pair + 1], i)
        })
        .collect();
    for op in &mut ops {
        if let Change::SendMessage { message_uuid, .. } = &mut op.change {
            *message_uuid = Uuid::now_v7();
            op.request_id = *message_uuid;
        }
    }
    writer.commit_batch(1, 0, ops).expect("batch");
    let log = writer.entries_after(0, 100_000).expect("log");
    let singles: Vec<chat_store::Entry> = log
        .iter()
        .flat_map(|entry| {
            let first = entry.first_epoch();
            entry
                .ops
                .iter()
                .enumerate()
                .map(move |(i, op)| chat_store::Entry {
                    term: entry.term,
                    epoch: first + i as u64,
                    ops: vec![op.clone()],
                    forget_requests_through: None,
                })
        })
        .collect();
    let follower = open(dir, "fed-follower.db", Durability::Full);
    let statements = follower.writer_statements();
    let start = Instant::now();
    let mut commit = 0;
    for chunk in singles.chunks(10) {
        let appended = follower.append_entries(chunk, commit).expect("append");
        commit = appended.durable.epoch;
    }
    follower.apply_committed(commit).expect("apply");
    let elapsed = start.elapsed();
    let writes = singles.len() - 64;
    println!(
        "bench follower fed one entry per write, 32 chats, 10 per fsync: {:.0} writes/s, {:.1} statements/write",
        per_second(writes, elapsed),
        (follower.writer_statements() - statements) as f64 / writes as f64
    );
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");

    single_writes(&dir, Durability::Full, 1_000);
    single_writes(&dir, Durability::Normal, 5_000);

    // The batched run also fills the chat the read benchmark uses.
    let store = open(&dir, "chat.db", Durability::Full);
    let (a, b) = (register(&store, "a"), register(&store, "b"));
    let total = 100_000;
    let elapsed = batched_writes(&store, a, b, total, 100);
    println!(
        "bench message writes, 100 per transaction, synchronous=Full: {:.0} writes/s",
        per_second(total, elapsed)
    );

    let chat = private_chat_id(a, b);
    let reads = 5_000;
    let start = Instant::now();
    for _ in 0..reads {
        let (page, _) = store
            .read(|view| view.messages(&chat, Page::Newest { limit: 50 }))
            .expect("read");
        assert_eq!(page.len(), 50);
    }
    println!(
        "bench newest 50 of a 100k-message chat: {:.0} reads/s",
        per_second(reads, start.elapsed())
    );

    let start = Instant::now();
    let log = store.entries_after(0, 1_000).expect("log");
    let ops: usize = log.iter().map(|entry| entry.ops.len()).sum();
    println!(
        "bench replication log read: {:.0} operations/s",
        per_second(ops, start.elapsed())
    );
    let follower = open(&dir, "follower.db", Durability::Full);
    let start = Instant::now();
    for chunk in log.chunks(10) {
        let commit = chunk.last().map_or(0, |entry| entry.epoch);
        follower.append_entries(chunk, commit).expect("append");
    }
    println!(
        "bench follower append+apply, 10 entries of 100 ops per fsync: {:.0} operations/s",
        per_second(ops, start.elapsed())
    );

    follower_as_fed_by_the_data_plane(&dir);

    let start = Instant::now();
    let mut reader = store.snapshot_reader().expect("snapshot");
    let replica = open(&dir, "replica.db", Durability::Full);
    let mut receiving = replica.snapshot_writer().expect("sink");
    while let Some(chunk) = reader.next_chunk(256 * 1024).expect("chunk") {
        receiving.write_chunk(&chunk).expect("write");
    }
    let snap_time = start.elapsed();
    let start = Instant::now();
    replica.restore_from(receiving).expect("restore");
    println!(
        "bench snapshot of 100k messages ({} KiB): take and stream {:.0} ms, restore {:.0} ms",
        reader.size() / 1024,
        snap_time.as_secs_f64() * 1e3,
        start.elapsed().as_secs_f64() * 1e3
    );

    for cost in [12, 10] {
        let rounds = if cost >= 12 { 4 } else { 8 };
        let start = Instant::now();
        for _ in 0..rounds {
            bcrypt::hash("correct horse battery", cost).expect("bcrypt");
        }
        println!(
            "bench bcrypt hash at cost {cost}: {:.0} ms/hash",
            start.elapsed().as_secs_f64() * 1e3 / f64::from(rounds)
        );
    }
}
