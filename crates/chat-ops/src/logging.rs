//! The global `tracing` subscriber of a chat-system binary.
//!
//! Under systemd (`JOURNAL_STREAM` set) events go to journald with their fields as journal fields
//! without prefix, so the `subsystem` field of each event becomes `SUBSYSTEM=...` and
//! `journalctl -u chat-node@4 SUBSYSTEM=election` shows the election alone. Elsewhere events go
//! to stderr, one line each:
//!
//! ```text
//! 2026-11-25T10:00:00.123Z INFO  [election] L=42 round started round=3
//! ```
//!
//! Levels: `level` for everything, `subsystems` per subsystem (through the event target, see the
//! crate docs). The `RUST_LOG` environment variable, when set, replaces both (standard
//! `EnvFilter` syntax, e.g. `RUST_LOG=info,election=trace`).

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// The levels a setting may name.
const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// A source of the node's current Lamport time, shown on each stderr line.
pub type LamportSource = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Log levels from configuration (`[log]` in the TOML files).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// Level for everything not listed below: "error" | "warn" | "info" | "debug" | "trace"
    /// (or "off").
    pub level: String,
    /// Per-subsystem levels, e.g. `{ election = "debug", transport = "warn" }`.
    pub subsystems: BTreeMap<String, String>,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            subsystems: BTreeMap::new(),
        }
    }
}

impl LogSettings {
    /// The `EnvFilter` directives these settings stand for, e.g. `info,election=debug`; an error
    /// names the first level that is not one of error, warn, info, debug, trace, off.
    pub fn directives(&self) -> Result<String, LoggingError> {
        let mut directives = checked_level("level", &self.level)?.to_owned();
        for (subsystem, level) in &self.subsystems {
            if subsystem.is_empty() || !subsystem.chars().all(is_target_char) {
                return Err(LoggingError::BadSubsystem {
                    subsystem: subsystem.clone(),
                });
            }
            let level = checked_level(subsystem, level)?;
            // Writing to a String cannot fail.
            let _ = write!(directives, ",{subsystem}={level}");
        }
        Ok(directives)
    }
}

fn is_target_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == ':'
}

fn checked_level<'a>(key: &str, level: &'a str) -> Result<&'a str, LoggingError> {
    let level = level.trim();
    if level.is_empty() {
        return Ok("info");
    }
    LEVELS
        .iter()
        .find(|known| known.eq_ignore_ascii_case(level))
        .copied()
        .ok_or_else(|| LoggingError::BadLevel {
            key: key.to_owned(),
            level: level.to_owned(),
        })
}

/// Why the subscriber could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// A level that is none of error, warn, info, debug, trace, off.
    #[error(
        "bad log level {level:?} for `{key}`: expected one of error, warn, info, debug, trace, off"
    )]
    BadLevel {
        /// `level` or the subsystem name.
        key: String,
        /// The value given.
        level: String,
    },
    /// A subsystem name that cannot be a tracing target.
    #[error("bad subsystem name {subsystem:?} in log settings")]
    BadSubsystem {
        /// The name given.
        subsystem: String,
    },
    /// `RUST_LOG` is set but does not parse.
    #[error("RUST_LOG is not a valid filter: {0}")]
    BadRustLog(String),
    /// `JOURNAL_STREAM` is set but the journald socket could not be opened.
    #[error("cannot connect to journald: {0}")]
    Journald(#[source] std::io::Error),
    /// A global subscriber is already installed (init called twice).
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Installs the global subscriber. Under systemd (`JOURNAL_STREAM` names stderr) events go to journald
/// via `tracing-journald` with field prefix `None` and syslog identifier `service`, so an event
/// field `subsystem` is written as `SUBSYSTEM=...`; elsewhere a readable stderr format showing the
/// subsystem (and, when a Lamport source is given, the node's Lamport time) on each line.
/// Returns an error naming a bad level.
pub fn init(
    service: &'static str,
    settings: &LogSettings,
    lamport: Option<LamportSource>,
) -> Result<(), LoggingError> {
    let filter = filter(settings)?;
    let registry = tracing_subscriber::registry().with(filter);
    let installed = if stderr_is_journal() {
        let journald = tracing_journald::layer()
            .map_err(LoggingError::Journald)?
            .with_field_prefix(None)
            .with_syslog_identifier(service.to_owned());
        registry.with(journald).try_init()
    } else {
        let stderr = tracing_subscriber::fmt::layer()
            .event_format(LineFormat { lamport })
            .with_writer(std::io::stderr);
        registry.with(stderr).try_init()
    };
    installed.map_err(|_| LoggingError::AlreadyInstalled)
}

/// Whether stderr is the journal stream systemd set up for this service. Checking the device and
/// inode (as systemd documents) rather than the variable's mere presence keeps a process started
/// from inside a service with its output redirected (a test, a child) on the stderr format.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt as _;

    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((device, inode)) = stream.to_str().and_then(|text| text.split_once(':')) else {
        return false;
    };
    match std::fs::metadata("/proc/self/fd/2") {
        Ok(stderr) => device.parse() == Ok(stderr.dev()) && inode.parse() == Ok(stderr.ino()),
        // Without /proc, trust the variable: systemd only sets it for the journal.
        Err(_) => true,
    }
}

fn filter(settings: &LogSettings) -> Result<EnvFilter, LoggingError> {
    // Validate the configured levels even when RUST_LOG wins, so a typo in the file is not
    // silently waiting for the day RUST_LOG is unset.
    let configured = settings.directives()?;
    match std::env::var("RUST_LOG") {
        Ok(rust_log) if !rust_log.trim().is_empty() => EnvFilter::try_new(&rust_log)
            .map_err(|error| LoggingError::BadRustLog(error.to_string())),
        _ => EnvFilter::try_new(&configured)
            .map_err(|error| LoggingError::BadRustLog(error.to_string())),
    }
}

/// The stderr line format: `<utc time> <LEVEL> [<subsystem>] L=<lamport> <message> k=v ...`.
struct LineFormat {
    lamport: Option<LamportSource>,
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = LineFields::default();
        event.record(&mut fields);
        let metadata = event.metadata();
        let subsystem = fields
            .subsystem
            .as_deref()
            .unwrap_or_else(|| metadata.target());
        write!(
            writer,
            "{} {:<5} [{subsystem}]",
            UtcMillis(SystemTime::now()),
            metadata.level().as_str()
        )?;
        if let Some(lamport) = &self.lamport {
            write!(writer, " L={}", lamport())?;
        }
        if !fields.message.is_empty() {
            write!(writer, " {}", fields.message)?;
        }
        writeln!(writer, "{}", fields.rest)
    }
}

#[derive(Default)]
struct LineFields {
    subsystem: Option<String>,
    message: String,
    rest: String,
}

impl Visit for LineFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "subsystem" => self.subsystem = Some(value.to_owned()),
            "message" => self.message = value.to_owned(),
            name if value.contains(char::is_whitespace) || value.is_empty() => {
                let _ = write!(self.rest, " {name}={value:?}");
            }
            name => {
                let _ = write!(self.rest, " {name}={value}");
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "subsystem" => self.subsystem = Some(format!("{value:?}")),
            "message" => self.message = format!("{value:?}"),
            name => {
                let _ = write!(self.rest, " {name}={value:?}");
            }
        }
    }
}

/// RFC 3339 UTC time with milliseconds, e.g. `2026-11-25T10:00:00.123Z`.
struct UtcMillis(SystemTime);

impl fmt::Display for UtcMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A clock before 1970 is a broken host; print the epoch rather than fail the log line.
        let since_epoch = self.0.duration_since(UNIX_EPOCH).unwrap_or_default();
        let seconds = since_epoch.as_secs();
        let (year, month, day) = civil_from_days(seconds / 86_400);
        let second_of_day = seconds % 86_400;
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            second_of_day / 3600,
            second_of_day / 60 % 60,
            second_of_day % 60,
            since_epoch.subsec_millis()
        )
    }
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's `civil_from_days` for
/// non-negative day counts.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let shifted = days + 719_468;
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::Mutex;
    use std::time::Duration;

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[test]
    fn directives_combine_default_and_subsystem_levels() {
        let settings = LogSettings {
            level: "warn".into(),
            subsystems: [("election".to_owned(), "DEBUG".to_owned())].into(),
        };
        assert_eq!(settings.directives().expect("valid"), "warn,election=debug");
        assert_eq!(LogSettings::default().directives().expect("valid"), "info");
    }

    #[test]
    fn bad_level_is_named() {
        let settings = LogSettings {
            level: "info".into(),
            subsystems: [("tree".to_owned(), "loud".to_owned())].into(),
        };
        let error = settings.directives().expect_err("loud is no level");
        let text = error.to_string();
        assert!(
            text.contains("\"loud\"") && text.contains("`tree`"),
            "{text}"
        );

        let bad_default = LogSettings {
            level: "verbose".into(),
            ..LogSettings::default()
        };
        assert!(matches!(
            bad_default.directives(),
            Err(LoggingError::BadLevel { level, .. }) if level == "verbose"
        ));
    }

    #[test]
    fn bad_subsystem_name_is_rejected() {
        let settings = LogSettings {
            level: "info".into(),
            subsystems: [("a=b".to_owned(), "info".to_owned())].into(),
        };
        assert!(matches!(
            settings.directives(),
            Err(LoggingError::BadSubsystem { .. })
        ));
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail closures must return figment::Error
    fn journald_only_when_journal_stream_names_our_stderr() {
        use std::os::unix::fs::MetadataExt as _;

        figment::Jail::expect_with(|jail| {
            jail.set_env("JOURNAL_STREAM", "1:1");
            assert!(!stderr_is_journal(), "another stream");
            jail.set_env("JOURNAL_STREAM", "garbage");
            assert!(!stderr_is_journal(), "unparsable");
            let stderr = std::fs::metadata("/proc/self/fd/2").expect("stderr exists");
            jail.set_env(
                "JOURNAL_STREAM",
                format!("{}:{}", stderr.dev(), stderr.ino()),
            );
            assert!(stderr_is_journal(), "our own stderr");
            Ok(())
        });
    }

    #[test]
    fn utc_millis_formats_known_instants() {
        let render =
            |millis: u64| UtcMillis(UNIX_EPOCH + Duration::from_millis(millis)).to_string();
        assert_eq!(render(0), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 (a leap day in a century leap year) 12:34:56.789
        assert_eq!(render(951_827_696_789), "2000-02-29T12:34:56.789Z");
        assert_eq!(render(1_795_600_800_123), "2026-11-25T10:00:00.123Z");
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("not poisoned").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    fn capture(settings: &LogSettings, emit: impl FnOnce()) -> String {
        let captured = Captured::default();
        let layer = tracing_subscriber::fmt::layer()
            .event_format(LineFormat {
                lamport: Some(Arc::new(|| 42)),
            })
            .with_writer(captured.clone());
        let filter = EnvFilter::try_new(settings.directives().expect("valid")).expect("filter");
        let subscriber = tracing_subscriber::registry().with(filter).with(layer);
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = captured.0.lock().expect("not poisoned").clone();
        String::from_utf8(bytes).expect("utf-8")
    }

    #[test]
    fn stderr_line_shows_level_subsystem_lamport_message_and_fields() {
        let output = capture(&LogSettings::default(), || {
            tracing::info!(target: "election", subsystem = "election", round = 3, run = "a b", "round started");
        });
        let line = output.trim_end();
        let (time, rest) = line.split_once(' ').expect("time first");
        assert!(time.ends_with('Z') && time.len() == 24, "{line}");
        assert_eq!(
            rest,
            "INFO  [election] L=42 round started round=3 run=\"a b\""
        );
    }

    #[test]
    fn per_subsystem_levels_filter_through_the_target() {
        let settings = LogSettings {
            level: "warn".into(),
            subsystems: [("election".to_owned(), "debug".to_owned())].into(),
        };
        let output = capture(&settings, || {
            tracing::debug!(target: "election", subsystem = "election", "kept");
            tracing::info!(target: "tree", subsystem = "tree", "dropped");
            tracing::warn!(target: "tree", subsystem = "tree", "also kept");
        });
        assert!(output.contains("[election] L=42 kept"), "{output}");
        assert!(!output.contains("dropped"), "{output}");
        assert!(output.contains("[tree] L=42 also kept"), "{output}");
    }

    #[test]
    fn target_stands_in_for_a_missing_subsystem_field() {
        let output = capture(&LogSettings::default(), || {
            tracing::info!(target: "storage", "opened");
        });
        assert!(output.contains("[storage] L=42 opened"), "{output}");
    }
}
