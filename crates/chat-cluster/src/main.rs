//! `chat-cluster`: starts and inspects a local chat system on loopback: a bootstrap, a
//! nameserver and a cluster of real `chat-node` processes. A thin command line over the
//! `chat_cluster` library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use chat_cluster::{
    ClusterFile, ClusterOptions, LocalCluster, NodeOutput, NodeSignal, ServiceKind, ServiceOptions,
    Topology,
};
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
    /// Write every config under --run-dir, start a bootstrap, a nameserver and the nodes, and
    /// stop them all on Ctrl-C/SIGTERM (nodes first). Output appears on ours, each line
    /// prefixed with `[<id>] `, `[bootstrap] ` or `[nameserver] `.
    Up {
        /// Number of nodes (ids 1..=N); with a topology file, defaults to its largest id.
        #[arg(long)]
        nodes: Option<u64>,
        /// line, ring, star, grid, complete, or a TOML file `edges = [[1, 2], [2, 3]]`: static
        /// neighbours. `bootstrap`: none; the nodes start one by one in id order and learn
        /// their neighbours from the bootstrap (1..4 form the ring 1:[2,4] 2:[1,3] 3:[2,4]
        /// 4:[1,3]).
        #[arg(long, default_value = "ring")]
        topology: String,
        /// Directory for configs, state and cluster.json.
        #[arg(long, value_name = "DIR")]
        run_dir: PathBuf,
        /// Base of the port plan: control base+id, data base+1000+id, HTTP base+2000+id,
        /// admin base+3000+id, bootstrap base+4000, nameserver i (from 0) gRPC base+4001+2i
        /// and HTTP base+4002+2i.
        #[arg(long, value_name = "P", default_value_t = chat_cluster::DEFAULT_BASE_PORT)]
        base_port: u16,
        /// The chat-node binary (default: next to chat-cluster, else on PATH).
        #[arg(long, value_name = "PATH")]
        node_bin: Option<PathBuf>,
        /// The chat-bootstrap binary (default: next to chat-cluster, else on PATH).
        #[arg(long, value_name = "PATH")]
        bootstrap_bin: Option<PathBuf>,
        /// The chat-nameserver binary (default: next to chat-cluster, else on PATH).
        #[arg(long, value_name = "PATH")]
        nameserver_bin: Option<PathBuf>,
        /// How many nameservers to run side by side (1..=16); every input node holds its
        /// lease at each, so browsers can be sent to any of them.
        #[arg(long, value_name = "N", default_value_t = 1)]
        nameservers: u16,
        /// Start the nodes only: no bootstrap, no nameserver.
        #[arg(long, conflicts_with_all = ["bootstrap_bin", "nameserver_bin", "nameservers"])]
        no_services: bool,
    },
    /// Print every node's /status as one JSON array (each with its `pid`).
    Status {
        #[arg(long, value_name = "DIR")]
        run_dir: PathBuf,
        /// Print `{"nodes": [...], "services": [bootstrap, nameserver, ...]}` instead (every
        /// nameserver, each with its live input nodes).
        #[arg(long)]
        services: bool,
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
            bootstrap_bin,
            nameserver_bin,
            nameservers,
            no_services,
        } => {
            let topology = Topology::parse(&topology)?;
            let nodes = nodes
                .or_else(|| topology.min_nodes())
                .context("--nodes is required with a built-in topology")?;
            let options = ClusterOptions {
                base_port,
                node_bin,
                output: NodeOutput::Prefixed,
                services: (!no_services).then_some(ServiceOptions {
                    bootstrap_bin,
                    nameserver_bin,
                    nameservers,
                }),
                ..ClusterOptions::new(nodes, topology, run_dir)
            };
            up(options).await
        }
        Command::Status { run_dir, services } => {
            let file = ClusterFile::read(&run_dir)?;
            let nodes = chat_cluster::status_all(&file).await;
            // The bare array is the contract scripts rely on; services are asked for.
            let status = if services {
                let services = chat_cluster::services::status_all(&file.services).await;
                serde_json::json!({ "nodes": nodes, "services": services })
            } else {
                serde_json::Value::from(nodes)
            };
            println!("{}", serde_json::to_string_pretty(&status)?);
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
        "chat-cluster: {} nodes started in {run_dir} ({} links)",
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
    for service in &description.services {
        let http = service
            .http_url()
            .map(|url| format!("  http {url}"))
            .unwrap_or_default();
        eprintln!(
            "chat-cluster:   {:<12}  pid {:>7}  grpc {}{http}  config {}",
            service.name(),
            service
                .pid
                .map_or_else(|| "-".to_owned(), |pid| pid.to_string()),
            service.grpc_url(),
            service.config.display()
        );
    }
    eprintln!("chat-cluster: `chat-cluster status --run-dir {run_dir}` shows every node (add --services for the bootstrap and nameserver); Ctrl-C stops them all");
    let fronts: Vec<String> = description
        .services_of(ServiceKind::Nameserver)
        .filter_map(chat_cluster::ServiceRecord::http_url)
        .collect();
    if !fronts.is_empty() {
        // On stdout, apart from the logs on stderr, so it stands out and scripts can read it.
        println!();
        println!("    open {} in a browser", fronts.join(" or "));
        println!("    (each nameserver redirects to a live input node)");
        println!();
    }
    let mut reap = tokio::time::interval(REAP_PERIOD);
    loop {
        tokio::select! {
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            _ = reap.tick() => {
                for (id, status) in cluster.exited() {
                    eprintln!("chat-cluster: node {id} exited ({status}); `chat-cluster start --run-dir {run_dir} --id {id}` starts it again");
                }
                for (name, status) in cluster.exited_services() {
                    eprintln!("chat-cluster: the {name} exited ({status}); stop the cluster with Ctrl-C and start it again");
                }
            }
        }
    }
    eprintln!("chat-cluster: stopping every node, then the services");
    cluster.down().await?;
    eprintln!("chat-cluster: everything stopped");
    Ok(())
}
