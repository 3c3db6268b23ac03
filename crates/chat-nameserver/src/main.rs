//! `chat-nameserver [--config PATH] [--grpc-listen ADDR] [--http-listen ADDR]`: the front door
//! that redirects browsers to live input nodes. Wiring only: configuration, logging, signals,
//! systemd readiness.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chat_nameserver::{config, server};
use clap::Parser;
use serde::Serialize;

/// chat-system nameserver: redirects browsers to a live input node.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = chat_grpc::SECRET_FILE_HELP
)]
struct Cli {
    /// Configuration file [default: /etc/chat-system/nameserver.toml, skipped when absent].
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// gRPC listen address for input nodes' leases (overrides `grpc_listen`).
    #[arg(long, value_name = "ADDR")]
    grpc_listen: Option<SocketAddr>,
    /// HTTP listen address of the redirecting front (overrides `http_listen`).
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<SocketAddr>,
}

/// The flags that override configuration keys; absent flags override nothing.
#[derive(Serialize)]
struct Flags {
    #[serde(skip_serializing_if = "Option::is_none")]
    grpc_listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    http_listen: Option<SocketAddr>,
}

fn main() -> ExitCode {
    chat_ops::service::exit_code("chat-nameserver", run())
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let files = chat_ops::config::files_from_flag(cli.config, config::DEFAULT_CONFIG_FILE)?;
    let flags = chat_ops::config::command_line(Flags {
        grpc_listen: cli.grpc_listen,
        http_listen: cli.http_listen,
    });
    let config = config::load(&files, flags)?;
    chat_ops::logging::init("chat-nameserver", &config.log, None)?;

    let runtime = tokio::runtime::Runtime::new().context("cannot start the tokio runtime")?;
    runtime.block_on(async {
        let shutdown = chat_ops::service::shutdown_signal()?;
        let bound = server::bind(&config).await?;
        let (grpc, http) = (bound.grpc_addr(), bound.http_addr());
        tracing::info!(target: "main", subsystem = "main", %grpc, %http, "ready");
        let status = format!("redirecting on http://{http}, leases on {grpc}");
        chat_ops::service::notify_ready(&status);
        chat_ops::service::spawn_runtime_watchdog();
        bound.serve(shutdown).await?;
        Ok(())
    })
}
