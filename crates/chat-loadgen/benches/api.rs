//! The JSON API of one in-process input node (chat-web over the local service, SQLite with
//! an fsync per commit) driven by the load generator: closed-loop writes and reads, then
//! open-loop writes at half the closed-loop rate. Prints `bench <what>: <figure>` lines; never
//! fails on a slow machine. `cargo bench -p chat-loadgen`.

#[path = "../tests/server/mod.rs"]
mod server;

use std::time::Duration;

use chat_loadgen::{ChatKind, Mode, Options, Report};
use chat_store::Durability;

fn line(what: &str, report: &Report) {
    let op = if report.mode == Mode::Reads {
        &report.reads
    } else {
        &report.writes
    };
    let l = op.latency_ms;
    println!(
        "bench api {what}: {:.0} acknowledged/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, \
         {} errors",
        op.per_s,
        l.p50,
        l.p99,
        l.max,
        report.error_total()
    );
}

#[tokio::main]
async fn main() {
    let server = server::start(
        server::ServerOptions {
            durability: Durability::Full,
            ..server::ServerOptions::default()
        },
        server::bench_config(),
    )
    .await;
    let base = Options {
        clients: 32,
        duration: Duration::from_secs(3),
        warmup: Duration::from_secs(1),
        ..Options::new(vec![server.url.parse().expect("target")])
    };
    let run = |options: Options| async move {
        match chat_loadgen::run(&options).await {
            Ok(report) => Some(report),
            Err(error) => {
                println!("bench api: {error}");
                None
            }
        }
    };

    let writes = run(base.clone()).await;
    if let Some(report) = &writes {
        line("writes, 32 clients, private chats, closed loop", report);
    }
    let groups = Options {
        chat: ChatKind::Group,
        group_size: 8,
        ..base.clone()
    };
    if let Some(report) = run(groups).await {
        line("writes, 32 clients, groups of 8, closed loop", &report);
    }
    let reads = Options {
        mode: Mode::Reads,
        ..base.clone()
    };
    if let Some(report) = run(reads).await {
        line("reads of 50, 32 clients, closed loop", &report);
    }
    if let Some(max) = writes.map(|r| r.writes.per_s).filter(|r| *r > 0.0) {
        let half = Options {
            rate: Some(max / 2.0),
            ..base
        };
        if let Some(report) = run(half).await {
            line(
                &format!(
                    "writes at half that ({:.0}/s offered), open loop",
                    max / 2.0
                ),
                &report,
            );
        }
    }
    server.stop().await;
}
