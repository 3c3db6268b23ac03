//! The command line: `chat-node [run flags]`, `chat-node status`, `chat-node config`.

use std::path::PathBuf;

use chat_ops::config::MissingConfigFile;
use clap::{Args, Parser, Subcommand};

use crate::config::{ConfigFiles, FlagOverrides, LogLevelOverride};

/// A chat-system node: joins its neighbours, takes part in leader election and the spanning
/// tree, and serves the roles it is given.
///
/// Configuration layers: built-in defaults < /etc/chat-system/node.toml <
/// /etc/chat-system/node.d/<id>.toml < CHAT_NODE_* environment variables < these flags.
/// `--config PATH` reads PATH instead of the two /etc files.
#[derive(Debug, Parser)]
#[command(name = "chat-node", version, about, long_about)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) node: NodeArgs,
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

/// What to do; without a subcommand the node runs.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Print the running node's status (from its admin endpoint on 127.0.0.1).
    Status {
        /// Print the raw JSON instead of the operator view.
        #[arg(long)]
        json: bool,
    },
    /// Print the effective configuration, each key with where its value came from.
    Config,
}

/// Flags shared by every subcommand: they select the node and override its configuration.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct NodeArgs {
    /// The node's id (>= 1); ports and the state directory derive from it.
    #[arg(long, global = true)]
    pub(crate) id: Option<u64>,
    /// Read this TOML file instead of /etc/chat-system/node.toml and node.d/<id>.toml.
    #[arg(long, global = true, value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,
    /// Level for every subsystem without its own: error, warn, info, debug, trace.
    #[arg(long, global = true, value_name = "LEVEL")]
    pub(crate) log_level: Option<String>,
    /// Host other nodes reach this one at.
    #[arg(long, global = true)]
    pub(crate) host: Option<String>,
    /// Host the control, data and HTTP sockets bind to.
    #[arg(long, global = true)]
    pub(crate) bind_host: Option<String>,
    /// Control-plane port (default 46000 + id).
    #[arg(long, global = true, value_name = "PORT")]
    pub(crate) control_port: Option<u16>,
    /// Data-plane port (default 50000 + id).
    #[arg(long, global = true, value_name = "PORT")]
    pub(crate) data_port: Option<u16>,
    /// HTTP port (default 8080 + id).
    #[arg(long, global = true, value_name = "PORT")]
    pub(crate) http_port: Option<u16>,
    /// Admin endpoint port on 127.0.0.1 (default 47000 + id).
    #[arg(long, global = true, value_name = "PORT")]
    pub(crate) admin_port: Option<u16>,
    /// State directory (default /var/lib/chat-system/node-<id>).
    #[arg(long, global = true, value_name = "DIR")]
    pub(crate) state_dir: Option<PathBuf>,
}

impl NodeArgs {
    /// The configuration files these flags select. A `--config` file must exist: an operator
    /// who names one and mistypes it would otherwise run on the defaults without noticing.
    pub(crate) fn files(&self) -> Result<ConfigFiles, MissingConfigFile> {
        match &self.config {
            Some(path) if !path.exists() => Err(MissingConfigFile(path.clone())),
            explicit => Ok(ConfigFiles::from_flag(explicit.as_deref())),
        }
    }

    /// The flags as the top configuration layer.
    pub(crate) fn overrides(&self) -> FlagOverrides {
        FlagOverrides {
            id: self.id,
            host: self.host.clone(),
            bind_host: self.bind_host.clone(),
            control_port: self.control_port,
            data_port: self.data_port,
            http_port: self.http_port,
            admin_port: self.admin_port,
            state_dir: self.state_dir.clone(),
            log: self
                .log_level
                .clone()
                .map(|level| LogLevelOverride { level }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_work_before_and_after_the_subcommand() {
        let cli =
            Cli::try_parse_from(["chat-node", "status", "--id", "4", "--json"]).expect("parses");
        assert_eq!(cli.node.id, Some(4));
        assert!(matches!(cli.command, Some(Command::Status { json: true })));

        let cli = Cli::try_parse_from(["chat-node", "--config", "/tmp/n.toml", "config"])
            .expect("parses");
        assert_eq!(cli.node.config, Some(PathBuf::from("/tmp/n.toml")));
        assert!(matches!(cli.command, Some(Command::Config)));
    }

    #[test]
    fn run_flags_become_overrides() {
        let cli = Cli::try_parse_from([
            "chat-node",
            "--id",
            "4",
            "--control-port",
            "46100",
            "--log-level",
            "debug",
        ])
        .expect("parses");
        assert!(cli.command.is_none());
        let overrides = cli.node.overrides();
        assert_eq!(overrides.id, Some(4));
        assert_eq!(overrides.control_port, Some(46_100));
        assert_eq!(overrides.log.map(|log| log.level).as_deref(), Some("debug"));
    }

    #[test]
    fn a_config_file_that_does_not_exist_is_an_error() {
        let cli =
            Cli::try_parse_from(["chat-node", "--id", "4", "--config", "/nonexistent/n.toml"])
                .expect("parses");
        let error = cli
            .node
            .files()
            .expect_err("a missing --config file is refused");
        assert_eq!(error.0, PathBuf::from("/nonexistent/n.toml"));
        let defaults = Cli::try_parse_from(["chat-node", "--id", "4"]).expect("parses");
        assert!(matches!(
            defaults.node.files(),
            Ok(ConfigFiles::Packaged(_))
        ));
    }

    #[test]
    fn bad_port_flag_is_rejected_by_the_parser() {
        assert!(Cli::try_parse_from(["chat-node", "--id", "4", "--http-port", "70000"]).is_err());
    }
}
