//! The shipped etc/chat-system/bootstrap.toml lists every key with its real default.

use std::path::PathBuf;

use chat_bootstrap::config;
use chat_bootstrap::server::ServerConfig;
use chat_ops::config::testing;
use chat_ops::ConfigError;

fn shipped() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../etc/chat-system/bootstrap.toml")
}

fn load(files: &[PathBuf]) -> Result<ServerConfig, ConfigError> {
    config::load(
        files,
        chat_ops::config::command_line(figment::value::Dict::new()),
    )
}

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

#[test]
fn shipped_file_as_is_gives_the_defaults() {
    testing::assert_shipped_file_gives_defaults(&shipped(), load);
}

#[test]
fn every_commented_setting_is_a_valid_key_with_its_default_value() {
    testing::assert_commented_settings_are_defaults(&shipped(), scratch().path(), load);
}

#[test]
fn bad_value_is_reported_with_its_file() {
    testing::assert_bad_value_names_its_file(scratch().path(), load);
}

#[test]
fn unknown_key_is_an_error() {
    testing::assert_unknown_key_is_an_error(scratch().path(), load);
}
