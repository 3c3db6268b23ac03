//! `chat-bootstrap [--config PATH] [--listen ADDR] [--metrics-listen ADDR] [--state-dir DIR]`: the registry nodes ask
//! for their neighbours. Wiring only: configuration, logging, signals, systemd readiness.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chat_bootstrap::{config, server};
use clap::Parser;
use serde::Serialize;

/// chat-system bootstrap: nodes register here and get their neighbours.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = chat_grpc::SECRET_FILE_HELP
)]
struct Cli {
    /// Configuration file [default: /etc/chat-system/bootstrap.toml, skipped when absent].
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// gRPC listen address (overrides `listen`).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// HTTP listen address of the Prometheus metrics, GET /metrics (overrides
    /// `metrics_listen`; unset, none are served).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// State directory holding registry.json (overrides `state_dir`).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

/// The flags that override configuration keys; absent flags override nothing.
#[derive(Serialize)]
struct Flags {
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics_listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    chat_ops::service::exit_code("chat-bootstrap", run())
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let files = chat_ops::config::files_from_flag(cli.config, config::DEFAULT_CONFIG_FILE)?;
    let flags = chat_ops::config::command_line(Flags {
        listen: cli.listen,
        metrics_listen: cli.metrics_listen,
        state_dir: cli.state_dir,
    });
    let config = config::load(&files, flags)?;
    chat_ops::logging::init("chat-bootstrap", &config.log, None)?;

    let runtime = tokio::runtime::Runtime::new().context("cannot start the tokio runtime")?;
    runtime.block_on(async {
        let shutdown = chat_ops::service::shutdown_signal()?;
        let bound = server::bind(&config).await?;
        let addr = bound.local_addr();
        let metrics = bound.metrics_addr();
        tracing::info!(target: "main", subsystem = "main", %addr, ?metrics, state_dir = %config.state_dir.display(), "ready");
        let status = match metrics {
            Some(metrics) => format!("listening on {addr}, metrics on http://{metrics}/metrics"),
            None => format!("listening on {addr}"),
        };
        chat_ops::service::notify_ready(&status);
        chat_ops::service::spawn_runtime_watchdog();
        bound.serve(shutdown).await?;
        Ok(())
    })
}
