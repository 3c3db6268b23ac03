//! The shipped etc/chat-system/bootstrap.toml lists every key with its real default.

use std::path::{Path, PathBuf};

use chat_bootstrap::config;
use chat_bootstrap::server::ServerConfig;
use chat_ops::ConfigError;

fn load(files: &[PathBuf]) -> Result<ServerConfig, ConfigError> {
    config::load(
        files,
        chat_ops::config::command_line(figment::value::Dict::new()),
    )
}

chat_ops::shipped_config_tests!(
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../etc/chat-system/bootstrap.toml"),
    load
);
