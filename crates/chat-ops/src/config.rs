//! Layered configuration with errors that say where a bad value came from.
//!
//! Every binary builds its configuration the same way: built-in defaults, then each config file
//! that exists (later files win), then environment variables with the binary's prefix (nested
//! keys split by `__`, so `CHAT_NODE_TOPOLOGY__HEARTBEAT_MS=100` sets `topology.heartbeat_ms`),
//! then command-line flags. An operator who gets a value wrong must learn which key, which value
//! and which file or variable to fix, so [`extract`] renders figment's errors as
//! ``invalid value for `topology.heartbeat_ms` = "abc" in /etc/chat-system/node.toml: expected u64``.

use std::fmt;
use std::path::{Path, PathBuf};

use figment::error::{Actual, Kind};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile, Provider, Source};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The custom source tag of the environment provider built by [`layered`]; lets [`extract`]
/// name the exact variable instead of "environment variable(s)".
const ENVIRONMENT_SOURCE: &str = "environment";

/// Builds the layered figment: `defaults` < each existing file of `files` in order <
/// environment variables starting with `env_prefix` (e.g. `"CHAT_NODE_"`, nested keys split by
/// `__`) < `overrides` (command-line flags, see [`command_line`]).
///
/// Files that do not exist are skipped: a node needs none of them. Paths are taken as given (a
/// relative path is relative to the working directory; parents are not searched).
pub fn layered<T: Serialize>(
    defaults: &T,
    files: &[PathBuf],
    env_prefix: &str,
    overrides: impl Provider,
) -> Figment {
    let mut figment = Figment::from(Named {
        inner: Serialized::defaults(defaults),
        metadata: Metadata::named("built-in defaults"),
    });
    for file in files.iter().filter(|file| file.exists()) {
        figment = figment.merge(Toml::file_exact(file));
    }
    figment.merge(environment(env_prefix)).merge(overrides)
}

/// Wraps values given on the command line (serialize `None` flags as absent, e.g. with
/// `#[serde(skip_serializing_if = "Option::is_none")]`) so errors and [`origin`] call them
/// "command-line flags".
pub fn command_line<T: Serialize>(flags: T) -> impl Provider {
    Named {
        inner: Serialized::defaults(flags),
        metadata: Metadata::named("command-line flags"),
    }
}

/// The configuration files a service reads: the one given with `--config`, which must exist,
/// or else its default path (skipped by [`layered`] when absent).
pub fn files_from_flag(
    explicit: Option<PathBuf>,
    default: &str,
) -> Result<Vec<PathBuf>, MissingConfigFile> {
    match explicit {
        Some(path) if !path.exists() => Err(MissingConfigFile(path)),
        Some(path) => Ok(vec![path]),
        None => Ok(vec![PathBuf::from(default)]),
    }
}

/// `--config` named a file that does not exist.
#[derive(Debug, thiserror::Error)]
#[error("config file {} does not exist", .0.display())]
pub struct MissingConfigFile(pub PathBuf);

/// Extracts `T`; on failure returns a [`ConfigError`] whose `Display` names each bad key, its
/// value and the file or environment variable it came from.
pub fn extract<T: DeserializeOwned>(figment: &Figment) -> Result<T, ConfigError> {
    figment.extract().map_err(|error| ConfigError {
        problems: error
            .into_iter()
            .map(|one| Problem::from_figment(figment, one))
            .collect(),
    })
}

/// Where the effective value of `key` (a dotted path such as `topology.heartbeat_ms`) came
/// from: a file path, `environment variable CHAT_NODE_…`, `built-in defaults` or
/// `command-line flags`. `None` when no provider set the key.
pub fn origin(figment: &Figment, key: &str) -> Option<String> {
    let path: Vec<&str> = key.split('.').collect();
    figment
        .find_metadata(key)
        .map(|metadata| describe_origin(metadata, figment.profile(), &path))
}

/// A configuration that could not be used: one or more problems, each naming the key, the value
/// and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// Every problem found; at least one.
    pub problems: Vec<Problem>,
}

impl ConfigError {
    /// A value that was read fine but breaks a rule checked after extraction (a port below 1024,
    /// two equal ports, ...). The origin is looked up in `figment` so the message names the file
    /// or variable to fix.
    pub fn invalid(
        figment: &Figment,
        key: &str,
        value: impl fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            problems: vec![Problem {
                key: key.to_owned(),
                value: Some(value.to_string()),
                origin: origin(figment, key),
                reason: reason.into(),
            }],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.problems.iter().enumerate() {
            if index > 0 {
                f.write_str("; ")?;
            }
            problem.fmt(f)?;
        }
        Ok(())
    }
}

/// One bad key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `topology.heartbeat_ms`; empty for a whole-file problem.
    pub key: String,
    /// The offending value as the operator wrote it (strings quoted), when there is one.
    pub value: Option<String>,
    /// Where the value came from (a file path, `environment variable X`, ...), when known.
    pub origin: Option<String>,
    /// What was wrong: `expected u64`, `unknown key`, `missing`, ...
    pub reason: String,
}

impl Problem {
    fn from_figment(figment: &Figment, error: figment::Error) -> Self {
        let mut path = error.path.clone();
        let (value, reason) = match &error.kind {
            Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => {
                (Some(render_actual(actual)), format!("expected {expected}"))
            }
            Kind::InvalidLength(length, expected) => {
                (None, format!("has length {length}, expected {expected}"))
            }
            Kind::UnknownVariant(variant, expected) => (
                Some(format!("{variant:?}")),
                format!("expected one of {}", expected.join(", ")),
            ),
            Kind::UnknownField(field, expected) => {
                push_once(&mut path, field);
                let reason = if expected.is_empty() {
                    "unknown key".to_owned()
                } else {
                    format!("unknown key (known keys here: {})", expected.join(", "))
                };
                (None, reason)
            }
            Kind::MissingField(field) => {
                push_once(&mut path, field);
                (None, "missing; this key is required".to_owned())
            }
            Kind::DuplicateField(field) => {
                push_once(&mut path, field);
                (None, "given twice".to_owned())
            }
            Kind::Unsupported(actual) | Kind::UnsupportedKey(actual, _) => {
                (Some(render_actual(actual)), "unsupported value".to_owned())
            }
            Kind::ISizeOutOfRange(_) | Kind::USizeOutOfRange(_) | Kind::Message(_) => {
                (None, error.kind.to_string())
            }
        };
        let key = path.join(".");
        let profile = error
            .profile
            .clone()
            .unwrap_or_else(|| figment.profile().clone());
        // The provider that last set the key is where the operator has to look; figment's own
        // error metadata can name the provider of the enclosing table instead.
        let origin = (!key.is_empty())
            .then(|| figment.find_metadata(&key))
            .flatten()
            .or(error.metadata.as_ref())
            .map(|metadata| describe_origin(metadata, &profile, &path));
        Self {
            key,
            value,
            origin,
            reason,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.value, self.key.is_empty()) {
            (Some(value), false) => write!(f, "invalid value for `{}` = {value}", self.key)?,
            (Some(value), true) => write!(f, "invalid value {value}")?,
            (None, false) => write!(f, "bad key `{}`", self.key)?,
            (None, true) => f.write_str("bad configuration")?,
        }
        if let Some(origin) = &self.origin {
            write!(f, " in {origin}")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// Figment puts the offending field at the end of the path for some kinds and not for others.
fn push_once(path: &mut Vec<String>, field: &str) {
    if path.last().map(String::as_str) != Some(field) {
        path.push(field.to_owned());
    }
}

fn render_actual(actual: &Actual) -> String {
    match actual {
        Actual::Str(text) => format!("{text:?}"),
        Actual::Bool(value) => value.to_string(),
        Actual::Unsigned(value) => value.to_string(),
        Actual::Signed(value) => value.to_string(),
        Actual::Float(value) => value.to_string(),
        Actual::Char(value) => format!("{value:?}"),
        other => other.to_string(),
    }
}

fn describe_origin<K: AsRef<str>>(metadata: &Metadata, profile: &Profile, path: &[K]) -> String {
    match &metadata.source {
        Some(Source::File(file)) => display_path(file),
        Some(Source::Custom(tag)) if tag == ENVIRONMENT_SOURCE => {
            format!(
                "environment variable {}",
                metadata.interpolate(profile, path)
            )
        }
        _ => metadata.name.to_string(),
    }
}

fn display_path(file: &Path) -> String {
    file.display().to_string()
}

fn environment(prefix: &str) -> Named<Env> {
    let upper_prefix = prefix.to_ascii_uppercase();
    let interpolate_prefix = upper_prefix.clone();
    let metadata = Metadata::named(format!("environment variables `{upper_prefix}*`"))
        .source(Source::Custom(ENVIRONMENT_SOURCE.to_owned()))
        .interpolater(move |_: &Profile, keys: &[&str]| {
            let keys: Vec<String> = keys.iter().map(|key| key.to_ascii_uppercase()).collect();
            format!("{interpolate_prefix}{}", keys.join("__"))
        });
    Named {
        inner: Env::prefixed(prefix).split("__"),
        metadata,
    }
}

/// A provider under a name an operator recognises.
struct Named<P> {
    inner: P,
    metadata: Metadata,
}

impl<P: Provider> Provider for Named<P> {
    fn metadata(&self) -> Metadata {
        self.metadata.clone()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        self.inner.data()
    }

    fn profile(&self) -> Option<Profile> {
        self.inner.profile()
    }
}

/// Checks every binary's test suite runs against its shipped configuration file (the one in
/// `etc/chat-system/`, listing each key commented out with its default). For tests only: each
/// function panics when its check fails. `load` is the binary's own loader given config files,
/// e.g. `|files| config::load(files, no_flags())`; `scratch` is an empty directory to write
/// derived files into.
pub mod testing {
    /// Defines the four shipped-file tests in the calling test crate (which needs `tempfile` as a
    /// dev-dependency): `shipped_config_tests!(path_to_shipped_file, load)`, where `load` is a
    /// `fn(&[PathBuf]) -> Result<Config, ConfigError>`.
    #[macro_export]
    macro_rules! shipped_config_tests {
        ($shipped:expr, $load:expr) => {
            #[test]
            fn shipped_file_as_is_gives_the_defaults() {
                $crate::config::testing::assert_shipped_file_gives_defaults(&$shipped, $load);
            }

            #[test]
            fn every_commented_setting_is_a_valid_key_with_its_default_value() {
                let scratch = ::tempfile::tempdir().expect("tempdir");
                $crate::config::testing::assert_commented_settings_are_defaults(
                    &$shipped,
                    scratch.path(),
                    $load,
                );
            }

            #[test]
            fn bad_value_is_reported_with_its_file() {
                let scratch = ::tempfile::tempdir().expect("tempdir");
                $crate::config::testing::assert_bad_value_names_its_file(scratch.path(), $load);
            }

            #[test]
            fn unknown_key_is_an_error() {
                let scratch = ::tempfile::tempdir().expect("tempdir");
                $crate::config::testing::assert_unknown_key_is_an_error(scratch.path(), $load);
            }
        };
    }

    use std::fmt::Debug;
    use std::path::{Path, PathBuf};

    use figment::value::Value;
    use serde::Serialize;

    use super::ConfigError;

    /// The shipped file, as it is, gives exactly the built-in defaults.
    pub fn assert_shipped_file_gives_defaults<T>(
        shipped: &Path,
        load: impl Fn(&[PathBuf]) -> Result<T, ConfigError>,
    ) where
        T: Default + PartialEq + Debug,
    {
        let loaded = load(&[shipped.to_path_buf()]).expect("shipped file loads");
        assert_eq!(loaded, T::default());
    }

    /// Every `#key = value` line of the shipped file is a valid key with its default value, and
    /// every key of `T` has such a line.
    pub fn assert_commented_settings_are_defaults<T>(
        shipped: &Path,
        scratch: &Path,
        load: impl Fn(&[PathBuf]) -> Result<T, ConfigError>,
    ) where
        T: Default + PartialEq + Debug + Serialize,
    {
        let text = std::fs::read_to_string(shipped).expect("read shipped file");
        // "#key = value" lines are settings; uncommenting them all must still give the defaults.
        let uncommented: String = text
            .lines()
            .map(|line| match line.strip_prefix('#') {
                Some(rest)
                    if rest.starts_with(|c: char| c.is_ascii_lowercase())
                        && rest.contains(" = ") =>
                {
                    rest
                }
                _ => line,
            })
            .map(|line| format!("{line}\n"))
            .collect();
        let file = scratch.join("uncommented.toml");
        std::fs::write(&file, &uncommented).expect("write");
        let loaded = load(&[file]).expect("uncommented file loads");
        assert_eq!(loaded, T::default());

        // And every key the configuration has appears as a setting line.
        let defaults = Value::serialize(T::default()).expect("defaults as a value");
        let mut keys = Vec::new();
        collect_keys(&defaults, &mut keys);
        for key in keys {
            assert!(
                text.contains(&format!("#{key} = ")),
                "shipped file lacks a line for {key}"
            );
        }
    }

    fn collect_keys(value: &Value, keys: &mut Vec<String>) {
        if let Value::Dict(_, dict) = value {
            for (key, value) in dict {
                match value {
                    // Nested tables ([log]) list their own keys; empty maps (subsystems) have
                    // none; an unset option has no line to uncomment.
                    Value::Dict(..) => collect_keys(value, keys),
                    Value::Empty(..) => {}
                    _ => keys.push(key.clone()),
                }
            }
        }
    }

    /// A value of the wrong type is reported with the file it came from.
    pub fn assert_bad_value_names_its_file<T>(
        scratch: &Path,
        load: impl Fn(&[PathBuf]) -> Result<T, ConfigError>,
    ) where
        T: Debug,
    {
        let file = scratch.join("bad.toml");
        std::fs::write(&file, "[log]\nlevel = 7\n").expect("write");
        let err = load(std::slice::from_ref(&file)).expect_err("bad type");
        assert!(
            err.to_string().contains(&file.display().to_string()),
            "{err}"
        );
    }

    /// A misspelt key is an error, not silently ignored.
    pub fn assert_unknown_key_is_an_error<T>(
        scratch: &Path,
        load: impl Fn(&[PathBuf]) -> Result<T, ConfigError>,
    ) where
        T: Debug,
    {
        let file = scratch.join("typo.toml");
        std::fs::write(&file, "lisen = \"127.0.0.1:1\"\n").expect("write");
        assert!(load(&[file]).is_err());
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[derive(Serialize)]
        struct Sample {
            listen: String,
            unset: Option<u16>,
            log: crate::LogSettings,
        }

        #[test]
        fn keys_are_the_leaves_of_nested_tables() {
            let sample = Sample {
                listen: "127.0.0.1:1".into(),
                unset: None,
                log: crate::LogSettings::default(),
            };
            let mut keys = Vec::new();
            collect_keys(&Value::serialize(sample).expect("value"), &mut keys);
            keys.sort();
            assert_eq!(keys, ["level", "listen"]);
        }
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail closures must return figment::Error
mod tests {
    use std::collections::BTreeMap;

    use figment::Jail;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        name: String,
        port: u16,
        timing: Timing,
        levels: BTreeMap<String, String>,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Timing {
        heartbeat_ms: u64,
        mode: Mode,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Mode {
        Fast,
        Slow,
    }

    #[derive(Serialize)]
    struct Flags {
        #[serde(skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
    }

    fn defaults() -> Sample {
        Sample {
            name: "default".into(),
            port: 1000,
            timing: Timing {
                heartbeat_ms: 250,
                mode: Mode::Fast,
            },
            levels: BTreeMap::new(),
        }
    }

    fn build(files: &[&str], port_flag: Option<u16>) -> Figment {
        let files: Vec<PathBuf> = files.iter().map(PathBuf::from).collect();
        layered(
            &defaults(),
            &files,
            "CHAT_TEST_",
            command_line(Flags { port: port_flag }),
        )
    }

    fn error_text(figment: &Figment) -> String {
        match extract::<Sample>(figment) {
            Ok(sample) => panic!("expected an error, extracted {sample:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn layering_order_is_defaults_files_env_flags() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "first.toml",
                "name = \"first\"\nport = 2000\n[timing]\nheartbeat_ms = 100",
            )?;
            jail.create_file("second.toml", "port = 3000")?;
            let only_defaults: Sample = extract(&build(&[], None)).expect("defaults");
            assert_eq!(only_defaults, defaults());

            let files: Sample =
                extract(&build(&["first.toml", "second.toml"], None)).expect("files");
            assert_eq!(files.name, "first", "first file overrides defaults");
            assert_eq!(files.port, 3000, "second file overrides first");
            assert_eq!(
                files.timing.heartbeat_ms, 100,
                "nested key from first file kept"
            );
            assert_eq!(
                files.timing.mode,
                Mode::Fast,
                "untouched nested key keeps its default"
            );

            jail.set_env("CHAT_TEST_PORT", "4000");
            jail.set_env("CHAT_TEST_TIMING__MODE", "slow");
            jail.set_env("CHAT_TEST_LEVELS__ELECTION", "debug");
            let env: Sample = extract(&build(&["first.toml", "second.toml"], None)).expect("env");
            assert_eq!(env.port, 4000, "environment overrides files");
            assert_eq!(env.timing.mode, Mode::Slow, "__ splits nested keys");
            assert_eq!(
                env.levels.get("election").map(String::as_str),
                Some("debug")
            );

            let flags: Sample =
                extract(&build(&["first.toml", "second.toml"], Some(5000))).expect("flags");
            assert_eq!(flags.port, 5000, "flags override the environment");
            assert_eq!(flags.name, "first");
            Ok(())
        });
    }

    #[test]
    fn missing_files_are_skipped() {
        Jail::expect_with(|_| {
            let sample: Sample =
                extract(&build(&["absent.toml"], None)).expect("a missing file is not an error");
            assert_eq!(sample, defaults());
            Ok(())
        });
    }

    #[test]
    fn origin_names_the_provider_that_set_the_key() {
        Jail::expect_with(|jail| {
            jail.create_file("node.toml", "port = 2000")?;
            jail.set_env("CHAT_TEST_TIMING__HEARTBEAT_MS", "90");
            let figment = build(&["node.toml"], None);
            assert_eq!(
                origin(&figment, "name").as_deref(),
                Some("built-in defaults")
            );
            assert!(origin(&figment, "port").is_some_and(|o| o.ends_with("node.toml")));
            assert_eq!(
                origin(&figment, "timing.heartbeat_ms").as_deref(),
                Some("environment variable CHAT_TEST_TIMING__HEARTBEAT_MS")
            );
            let flagged = build(&["node.toml"], Some(7000));
            assert_eq!(
                origin(&flagged, "port").as_deref(),
                Some("command-line flags")
            );
            Ok(())
        });
    }

    #[test]
    fn wrong_type_in_file_names_key_value_and_file() {
        Jail::expect_with(|jail| {
            jail.create_file("node.toml", "[timing]\nheartbeat_ms = \"abc\"")?;
            let text = error_text(&build(&["node.toml"], None));
            assert!(text.contains("`timing.heartbeat_ms` = \"abc\""), "{text}");
            assert!(text.contains("node.toml"), "{text}");
            assert!(text.contains("expected u64"), "{text}");
            Ok(())
        });
    }

    #[test]
    fn wrong_value_in_env_names_the_variable() {
        Jail::expect_with(|jail| {
            jail.set_env("CHAT_TEST_PORT", "abc");
            let text = error_text(&build(&[], None));
            assert!(text.contains("`port` = \"abc\""), "{text}");
            assert!(
                text.contains("environment variable CHAT_TEST_PORT"),
                "{text}"
            );
            Ok(())
        });
    }

    #[test]
    fn out_of_range_number_names_key_and_value() {
        Jail::expect_with(|jail| {
            jail.create_file("node.toml", "port = 70000")?;
            let text = error_text(&build(&["node.toml"], None));
            assert!(text.contains("`port` = 70000"), "{text}");
            assert!(text.contains("node.toml"), "{text}");
            Ok(())
        });
    }

    #[test]
    fn unknown_enum_variant_lists_choices() {
        Jail::expect_with(|jail| {
            jail.set_env("CHAT_TEST_TIMING__MODE", "medium");
            let text = error_text(&build(&[], None));
            assert!(text.contains("`timing.mode` = \"medium\""), "{text}");
            assert!(text.contains("fast, slow"), "{text}");
            assert!(text.contains("CHAT_TEST_TIMING__MODE"), "{text}");
            Ok(())
        });
    }

    #[test]
    fn unknown_key_is_reported_with_its_origin() {
        Jail::expect_with(|jail| {
            jail.create_file("node.toml", "[timing]\nheartbeat = 5")?;
            let text = error_text(&build(&["node.toml"], None));
            assert!(text.contains("`timing.heartbeat`"), "{text}");
            assert!(text.contains("unknown key"), "{text}");
            assert!(text.contains("node.toml"), "{text}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("CHAT_TEST_PROT", "1");
            let text = error_text(&build(&[], None));
            assert!(text.contains("`prot`"), "{text}");
            assert!(text.contains("CHAT_TEST_PROT"), "{text}");
            Ok(())
        });
    }

    #[test]
    fn broken_toml_names_the_file() {
        Jail::expect_with(|jail| {
            jail.create_file("node.toml", "port = = 3")?;
            let text = error_text(&build(&["node.toml"], None));
            assert!(text.contains("node.toml"), "{text}");
            Ok(())
        });
    }

    #[test]
    fn missing_required_key_is_named() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct NeedsId {
            id: u64,
        }
        Jail::expect_with(|_| {
            let figment = layered(
                &Flags { port: None },
                &[],
                "CHAT_TEST_",
                command_line(Flags { port: None }),
            );
            let error = extract::<NeedsId>(&figment).expect_err("id is required");
            assert!(error.to_string().contains("`id`"), "{error}");
            assert!(error.to_string().contains("required"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn post_extraction_rule_names_origin() {
        Jail::expect_with(|jail| {
            jail.create_file("node.toml", "port = 80")?;
            let figment = build(&["node.toml"], None);
            let error = ConfigError::invalid(&figment, "port", 80, "must be in 1024..=65535");
            let text = error.to_string();
            assert!(
                text.starts_with("invalid value for `port` = 80 in "),
                "{text}"
            );
            assert!(
                text.ends_with("node.toml: must be in 1024..=65535"),
                "{text}"
            );
            Ok(())
        });
    }
}
