//! `chat-cluster`: starts and inspects a local cluster of real `chat-node` processes on
//! loopback. A thin command line over the `chat_cluster` library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use chat_cluster::{ClusterFile, ClusterOptions, LocalCluster, NodeOutput, NodeSignal, Topology};
use clap::{Parser, Subcommand};
use tokio::signal::unix::{signal, SignalKind};

/// How often `up` looks for nodes that exited (to report and reap them).
const REAP_PERIOD: std::time::Duration = std::time::Duration::from_millis(500);

/// Start, inspect and poke a local chat-system cluster on 127.0.0.1.
#[derive(Debug, Parser)]
#[command(name = "chat-cluster", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write every node's config under --run-dir, start the nodes, and stop them all on
    /// Ctrl-C/SIGTERM. Node output appears on ours, each line prefixed with `[<id>] `.
    Up {
        /// Number of nodes (ids 1..=N); with a topology file, defaults to its largest id.
        #[arg(long)]
        nodes: Option<u64>,
        /// line, ring, star, grid, complete, or a TOML file `edges = [[1, 2], [2, 3]]`.
        #[arg(long, default_value = "ring")]
        topology: String,
        /// Directory for configs, state and cluster.json.
        #[arg(long, value_name = "DIR")]
        run_dir: PathBuf,
        /// Base of the port plan: control base+id, data base+1000+id, HTTP base+2000+id,
        /// admin base+3000+id.
        #[arg(long, value_name = "P", default_value_t = chat_cluster::DEFAULT_BASE_PORT)]
        base_port: u16,
        /// The chat-node binary (default: next to chat-cluster, else on PATH).
        #[arg(long, value_name = "PATH")]
        node_bin: Option<PathBuf>,
    },
    /// Print every node's /status as one JSON array.
    Status {
        #[arg(long, value_name = "DIR")]
        run_dir: PathBuf,
    },
    /// Send a signal to one node.
    Kill {
        #[arg(long, value_name = "DIR")]
        run_dir: PathBuf,
        #[arg(long)]
        id: u64,
        /// KILL, STOP, CONT or TERM.
        #[arg(long, default_value = "KILL")]
        signal: NodeSignal,
    },
    /// Start one node again with its existing config (output goes to DIR/<id>/node.log).
    Start {
        #[arg(long, value_name = "DIR")]
        run_dir: PathBuf,
        #[arg(long)]
        id: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("chat-cluster: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("chat-cluster: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Up {
            nodes,
            topology,
            run_dir,
            base_port,
            node_bin,
        } => {
            let topology = Topology::parse(&topology)?;
            let nodes = nodes
                .or_else(|| topology.min_nodes())
                .context("--nodes is required with a built-in topology")?;
            let options = ClusterOptions {
                base_port,
                node_bin,
                output: NodeOutput::Prefixed,
                ..ClusterOptions::new(nodes, topology, run_dir)
            };
            up(options).await
        }
        Command::Status { run_dir } => {
            let file = ClusterFile::read(&run_dir)?;
            let statuses = chat_cluster::status_all(&file).await;
            println!("{}", serde_json::to_string_pretty(&statuses)?);
            Ok(())
        }
        Command::Kill {
            run_dir,
            id,
            signal,
        } => Ok(chat_cluster::signal_recorded(&run_dir, id, signal)?),
        Command::Start { run_dir, id } => {
            let pid = chat_cluster::start_recorded(&run_dir, id)?;
            println!(
                "node {id} started, pid {pid}, log {}",
                run_dir.join(id.to_string()).join("node.log").display()
            );
            Ok(())
        }
    }
}

async fn up(options: ClusterOptions) -> anyhow::Result<()> {
    let mut interrupt =
        signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut cluster = LocalCluster::up(options).await?;
    let run_dir = cluster.run_dir().display().to_string();
    let description = cluster.description();
    eprintln!(
        "chat-cluster: {} nodes up in {run_dir} ({} links)",
        description.nodes.len(),
        description.edges.len()
    );
    for node in &description.nodes {
        eprintln!(
            "chat-cluster:   node {:>3}  pid {:>7}  control {}  http {}  status http://127.0.0.1:{}/status  neighbours {:?}",
            node.id,
            node.pid.map_or_else(|| "-".to_owned(), |pid| pid.to_string()),
            node.control_port,
            node.http_port,
            node.admin_port,
            node.neighbors
        );
    }
    eprintln!("chat-cluster: `chat-cluster status --run-dir {run_dir}` shows every node; Ctrl-C stops them all");
    let mut reap = tokio::time::interval(REAP_PERIOD);
    loop {
        tokio::select! {
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            _ = reap.tick() => {
                for (id, status) in cluster.exited() {
                    eprintln!("chat-cluster: node {id} exited ({status}); `chat-cluster start --run-dir {run_dir} --id {id}` starts it again");
                }
            }
        }
    }
    eprintln!("chat-cluster: stopping every node");
    cluster.down().await?;
    eprintln!("chat-cluster: all nodes stopped");
    Ok(())
}
