//! Loading the configuration: built-in defaults < config files < `CHAT_BOOTSTRAP_*` environment
//! variables < command-line flags (the layering every chat-system binary uses, from chat-ops).

use std::path::PathBuf;

use chat_ops::ConfigError;

use crate::server::ServerConfig;

/// The file read when no `--config` is given (skipped when absent).
pub const DEFAULT_CONFIG_FILE: &str = "/etc/chat-system/bootstrap.toml";
/// Prefix of the environment variables that override the files.
pub const ENV_PREFIX: &str = "CHAT_BOOTSTRAP_";

/// Builds the configuration from `files` (those that exist, later ones winning), the
/// environment, and `flags` (see [`chat_ops::config::command_line`]). The error names each bad
/// key, its value and where it came from.
pub fn load(files: &[PathBuf], flags: impl figment::Provider) -> Result<ServerConfig, ConfigError> {
    let figment = chat_ops::config::layered(&ServerConfig::default(), files, ENV_PREFIX, flags);
    chat_ops::config::extract(&figment)
}
