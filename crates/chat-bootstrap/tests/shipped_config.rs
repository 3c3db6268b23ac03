//! The shipped etc/chat-system/bootstrap.toml lists every key with its real default.

use std::path::PathBuf;

use chat_bootstrap::config;
use chat_bootstrap::server::ServerConfig;

fn shipped() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../etc/chat-system/bootstrap.toml")
}

fn no_flags() -> impl figment::Provider {
    chat_ops::config::command_line(figment::value::Dict::new())
}

#[test]
fn shipped_file_as_is_gives_the_defaults() {
    let loaded = config::load(&[shipped()], no_flags()).expect("shipped file loads");
    assert_eq!(loaded, ServerConfig::default());
}

#[test]
fn every_commented_setting_is_a_valid_key_with_its_default_value() {
    let text = std::fs::read_to_string(shipped()).expect("read shipped file");
    // "#key = value" lines are settings; uncommenting them all must still give the defaults.
    let uncommented: String = text
        .lines()
        .map(|line| match line.strip_prefix('#') {
            Some(rest)
                if rest.starts_with(|c: char| c.is_ascii_lowercase()) && rest.contains(" = ") =>
            {
                rest
            }
            _ => line,
        })
        .map(|line| format!("{line}\n"))
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("uncommented.toml");
    std::fs::write(&file, &uncommented).expect("write");
    let loaded = config::load(&[file], no_flags()).expect("uncommented file loads");
    assert_eq!(loaded, ServerConfig::default());

    // And every key the configuration has appears as a setting line.
    let defaults = toml::Value::try_from(ServerConfig::default()).expect("defaults as toml");
    let mut keys = Vec::new();
    collect_keys(&defaults, &mut keys);
    for key in keys {
        assert!(
            text.contains(&format!("#{key} = ")),
            "shipped file lacks a line for {key}"
        );
    }
}

fn collect_keys(value: &toml::Value, keys: &mut Vec<String>) {
    if let toml::Value::Table(table) = value {
        for (key, value) in table {
            match value {
                // Nested tables ([log]) list their own keys; empty maps (subsystems) have none.
                toml::Value::Table(_) => collect_keys(value, keys),
                _ => keys.push(key.clone()),
            }
        }
    }
}

#[test]
fn bad_value_is_reported_with_its_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[log]\nlevel = 7\n").expect("write");
    let err = config::load(std::slice::from_ref(&file), no_flags()).expect_err("bad type");
    assert!(
        err.to_string().contains(&file.display().to_string()),
        "{err}"
    );
}

#[test]
fn unknown_key_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("typo.toml");
    std::fs::write(&file, "lisen = \"127.0.0.1:1\"\n").expect("write");
    assert!(config::load(&[file], no_flags()).is_err());
}
