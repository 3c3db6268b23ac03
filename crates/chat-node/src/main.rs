//! `chat-node`: one node of chat-system.
//!
//! `main` only wires things together: it parses the command line, loads and checks the
//! configuration (a bad value ends the process with one line on stderr and exit code 2),
//! installs logging, turns SIGINT/SIGTERM into a shutdown future, and runs the admin endpoint
//! and the driver until shutdown (exit code 0). Under systemd (`Type=notify`) it reports READY=1
//! once the node has a role (it can serve), and keeps STATUS= up to date.
//!
//! See [`config`] for every key, the layering and the derivation rules.

mod admin;
mod cli;
mod cluster_state;
mod config;
mod data;
mod discovery;
mod driver;
mod durable;
mod lease;
mod metrics;
mod status;
mod trace;
mod web;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chat_control::clock::LamportClock;
use clap::Parser as _;
use tokio::sync::watch;

use crate::cli::{Cli, Command, NodeArgs};
use crate::config::{LoadedConfig, ResolvedConfig};
use crate::metrics::Metrics;
use crate::status::NodeStatus;

/// Exit code for a configuration the node cannot start with.
const EXIT_BAD_CONFIG: u8 = 2;
/// How long `chat-node status` waits for the node to answer.
const STATUS_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let files = match cli.node.files() {
        Ok(files) => files,
        Err(error) => {
            eprintln!("chat-node: {error}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let loaded = match config::load(&files, &cli.node.overrides()) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("chat-node: {error}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    match cli.command {
        None => run_node(loaded.resolved),
        Some(Command::Config) => print_config(&loaded),
        Some(Command::Status { json }) => print_status(&cli.node, &loaded.resolved, json),
    }
}

fn run_node(config: ResolvedConfig) -> ExitCode {
    let metrics = Arc::new(Metrics::new());
    // One Lamport clock for every part of the node; log lines show its time.
    let clock = LamportClock::new();
    let lamport_source = clock.clone();
    let lamport: chat_ops::logging::LamportSource = Arc::new(move || lamport_source.now());
    if let Err(error) = chat_ops::logging::init("chat-node", &config.log, Some(lamport)) {
        eprintln!("chat-node: {error}");
        return ExitCode::from(EXIT_BAD_CONFIG);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("chat-node: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config, clock, metrics)) {
        Ok(()) => {
            tracing::info!(target: "main", subsystem = "main", "stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(target: "main", subsystem = "main", error = format!("{error:#}"), "stopped on error");
            eprintln!("chat-node: {error:#}");
            if error.downcast_ref::<driver::BadConfig>().is_some() {
                ExitCode::from(EXIT_BAD_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn serve(
    config: ResolvedConfig,
    clock: LamportClock,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    let (stop, stopping) = watch::channel(false);
    let shutdown = chat_ops::service::shutdown_signal()?;
    let signals = tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown.await;
            stop.send_replace(true);
        }
    });

    let listener = admin::bind(config.admin_port).await.with_context(|| {
        format!(
            "cannot bind the admin endpoint 127.0.0.1:{}",
            config.admin_port
        )
    })?;
    let (status, status_updates) = watch::channel(NodeStatus::starting(config.id));
    let admin = tokio::spawn(admin::serve(
        listener,
        status_updates.clone(),
        Arc::clone(&metrics),
        shutdown_requested(stopping.clone()),
    ));
    let systemd = tokio::spawn(report_to_systemd(status_updates));
    tracing::info!(
        target: "main",
        subsystem = "main",
        id = config.id,
        control_port = config.control_port,
        data_port = config.data_port,
        http_port = config.http_port,
        admin = format!("http://127.0.0.1:{}/status", config.admin_port),
        "chat-node starting"
    );

    let outcome = driver::run(config, clock, status, metrics, shutdown_requested(stopping)).await;

    // Whatever ended the driver ends the rest.
    stop.send_replace(true);
    chat_ops::service::notify_stopping();
    systemd.abort();
    if let Err(error) = admin.await {
        tracing::warn!(target: "admin", subsystem = "admin", %error, "admin endpoint task failed");
    }
    signals.abort();
    outcome
}

/// Completes once shutdown has been asked for (or nobody can ask any more).
async fn shutdown_requested(mut stopping: watch::Receiver<bool>) {
    // An error means the sender is gone, which only happens on the way out.
    let _ = stopping.wait_for(|stop| *stop).await;
}

/// STATUS= whenever the summary changes, and READY=1 once the node has a role (it can serve
/// from then on, so `systemctl start` returns when the node is useful). Does nothing outside
/// systemd.
/// WATCHDOG=1 is sent by the control loop itself (`driver::Watchdog`), so a stuck loop stops
/// the pings and systemd restarts the node (`WatchdogSec=`).
async fn report_to_systemd(mut status: watch::Receiver<NodeStatus>) {
    if !chat_ops::service::under_systemd() {
        return;
    }
    let mut last = String::new();
    let mut ready_sent = false;
    loop {
        let (summary, ready) = {
            let status = status.borrow_and_update();
            (status.summary_line(), status.ready)
        };
        if ready && !ready_sent {
            chat_ops::service::notify_ready(&summary);
            ready_sent = true;
            last = summary;
        } else if summary != last {
            chat_ops::service::notify_status(&summary);
            last = summary;
        }
        if status.changed().await.is_err() {
            return;
        }
    }
}

fn print_config(loaded: &LoadedConfig) -> ExitCode {
    match config::effective_toml(loaded) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("chat-node: cannot render the configuration: {error}");
            ExitCode::FAILURE
        }
    }
}

fn print_status(args: &NodeArgs, config: &ResolvedConfig, json: bool) -> ExitCode {
    let url = format!("http://127.0.0.1:{}/status", config.admin_port);
    let fetched = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|runtime| runtime.block_on(fetch_status(&url)));
    let body = match fetched {
        Ok(body) => body,
        Err(error) => {
            let which = args.id.map_or_else(String::new, |id| format!(" {id}"));
            eprintln!("chat-node: node{which} does not answer at {url}: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        println!("{body}");
        return ExitCode::SUCCESS;
    }
    match serde_json::from_str::<NodeStatus>(&body) {
        Ok(status) => {
            print!("{status}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("chat-node: unexpected answer from {url}: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn fetch_status(url: &str) -> anyhow::Result<String> {
    let response = reqwest::Client::builder()
        .timeout(STATUS_REQUEST_TIMEOUT)
        .build()?
        .get(url)
        .send()
        .await?
        .error_for_status()?;
    Ok(response.text().await?)
}
