//! The shipped etc/chat-system/nameserver.toml lists every key with its real default.

use std::path::{Path, PathBuf};

use chat_nameserver::config;
use chat_nameserver::server::ServerConfig;
use chat_ops::ConfigError;

fn load(files: &[PathBuf]) -> Result<ServerConfig, ConfigError> {
    config::load(
        files,
        chat_ops::config::command_line(figment::value::Dict::new()),
    )
}

chat_ops::shipped_config_tests!(
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../etc/chat-system/nameserver.toml"),
    load
);
