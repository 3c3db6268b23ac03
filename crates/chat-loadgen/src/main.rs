//! `chat-loadgen`: drives input nodes' JSON API with concurrent users and reports throughput,
//! latency and errors. See `docs/bench.md`.

use std::process::ExitCode;
use std::time::Duration;

use chat_loadgen::options::parse_duration;
use chat_loadgen::{ChatKind, MessageIds, Mode, Options, Target};
use clap::Parser;

/// Load generator for the chat JSON API.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Base URL of an input node (repeat for several; clients are spread round-robin).
    #[arg(long = "target", required = true, value_name = "URL")]
    targets: Vec<Target>,
    /// Concurrent users, each with its own account and keep-alive connection.
    #[arg(long, default_value_t = 10)]
    clients: usize,
    /// Measured window (500ms, 10s, 2m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Load before the measured window, not recorded.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// Which requests to make.
    #[arg(long, value_enum, default_value_t = Mode::Writes)]
    mode: Mode,
    /// Share of reads in mixed mode (0 to 1).
    #[arg(long, default_value_t = 0.5)]
    read_fraction: f64,
    /// Total offered requests per second over all clients (open loop, latency from the due
    /// time); without it each client sends as fast as it is answered (closed loop).
    #[arg(long, value_name = "R")]
    rate: Option<f64>,
    /// Send back the largest Chat-Epoch seen, so reads see the client's own writes.
    #[arg(long)]
    chat_epoch: bool,
    /// Message ids the clients choose: time-ordered (v7, as the browser client does) or random.
    #[arg(long, value_enum, default_value_t = MessageIds::V7)]
    message_ids: MessageIds,
    /// Private chats (clients in pairs) or group chats.
    #[arg(long, value_enum, default_value_t = ChatKind::Private)]
    chat: ChatKind,
    /// Members per group chat.
    #[arg(long, default_value_t = 10)]
    group_size: usize,
    /// Messages posted to each chat in setup, so reads return a page.
    #[arg(long, default_value_t = 10)]
    seed_messages: usize,
    /// Messages per chat read (limit, 1 to 200).
    #[arg(long, default_value_t = 50)]
    page_size: usize,
    /// Bytes of message content.
    #[arg(long, default_value_t = 64)]
    message_bytes: usize,
    /// Start of every username (default: random per run).
    #[arg(long)]
    name_prefix: Option<String>,
    /// Password of every user.
    #[arg(long, default_value = "loadgen-password")]
    password: String,
    /// Setup requests at once (register and login each cost a bcrypt on the server).
    #[arg(long, default_value_t = 8)]
    setup_concurrency: usize,
    /// How long setup may take, waits for login rate limits included.
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    setup_timeout: Duration,
    /// Per-request timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// After the run, read every chat back and check each acknowledged write is there
    /// (exit status 1 if one is missing).
    #[arg(long)]
    verify: bool,
    /// Seed of the clients' random choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Worker threads of the generator (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

impl Args {
    fn options(self) -> Options {
        Options {
            clients: self.clients,
            duration: self.duration,
            warmup: self.warmup,
            mode: self.mode,
            read_fraction: self.read_fraction,
            rate: self.rate,
            chat_epoch: self.chat_epoch,
            message_ids: self.message_ids,
            chat: self.chat,
            group_size: self.group_size,
            seed_messages: self.seed_messages,
            page_size: self.page_size,
            message_bytes: self.message_bytes,
            name_prefix: self.name_prefix,
            password: self.password,
            setup_concurrency: self.setup_concurrency,
            setup_timeout: self.setup_timeout,
            request_timeout: self.timeout,
            verify: self.verify,
            seed: self.seed,
            ..Options::new(self.targets)
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let json = args.json;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads.max(1));
    }
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("chat-loadgen: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let options = args.options();
    // Ctrl-C ends the window early and still reports what was measured.
    let stop = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let report = match runtime.block_on(chat_loadgen::run_until(&options, stop)) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("chat-loadgen: {error}");
            return ExitCode::from(2);
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("reports serialise")
        );
    } else {
        print!("{report}");
    }
    match &report.verification {
        Some(v) if v.missing > 0 => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    }
}
