//! The life cycle every chat-system daemon shares: turning SIGINT/SIGTERM into a shutdown
//! future, and telling systemd (`Type=notify`) when the service is ready, what it is doing and
//! when it stops, and keeping its watchdog (`WatchdogSec=`) fed. Outside systemd the
//! notifications are no-ops.
//!
//! Exit codes follow one rule for every binary: 0 after a clean stop, [`EXIT_BAD_CONFIG`] (2)
//! for a configuration the service cannot start with (the units' `RestartPreventExitStatus=2`
//! stops systemd from restarting into the same error), 1 for anything else.

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::signal::unix::{signal, SignalKind};

/// Why the signal handlers could not be installed.
#[derive(Debug, thiserror::Error)]
#[error("cannot install the {signal} handler: {source}")]
pub struct SignalError {
    signal: &'static str,
    #[source]
    source: std::io::Error,
}

/// A future that completes on the first SIGINT or SIGTERM, after logging it and telling
/// systemd the service is stopping; a second signal then exits the process at once. Install it early: signals that arrive before it is
/// installed keep their default action (exit). Needs a tokio runtime.
pub fn shutdown_signal() -> Result<impl Future<Output = ()>, SignalError> {
    let mut terminate = signal(SignalKind::terminate()).map_err(|source| SignalError {
        signal: "SIGTERM",
        source,
    })?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|source| SignalError {
        signal: "SIGINT",
        source,
    })?;
    Ok(async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::info!(target: "main", subsystem = "main", signal = name, "shutting down");
        notify_stopping();
        // A second signal means the operator will not wait for a clean stop.
        tokio::spawn(async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
            tracing::warn!(target: "main", subsystem = "main", "second signal: exiting at once");
            std::process::exit(1);
        });
    })
}

/// READY=1 with a STATUS= line: `systemctl start` returns from now on.
pub fn notify_ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A new STATUS= line for `systemctl status`.
pub fn notify_status(status: &str) {
    notify(&[NotifyState::Status(status)]);
}

/// STOPPING=1.
pub fn notify_stopping() {
    notify(&[NotifyState::Stopping]);
}

/// How often to send WATCHDOG=1 when systemd watches this process (`WatchdogSec=` in the
/// unit): half the timeout, as sd_watchdog_enabled(3) advises. `None` when no watchdog is set.
pub fn watchdog_ping_period() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|timeout| timeout / 2)
}

/// WATCHDOG=1: "still alive". Call it from the loop whose progress means the service works
/// (a node's control loop), at least every [`watchdog_ping_period`].
pub fn notify_watchdog() {
    notify(&[NotifyState::Watchdog]);
}

/// For a service whose health is its async runtime making progress (the bootstrap and the
/// nameserver serve every request on it): a task that sends WATCHDOG=1 every
/// [`watchdog_ping_period`], so a wedged runtime stops the pings and systemd restarts the
/// service. Does nothing without a watchdog. Needs a tokio runtime.
pub fn spawn_runtime_watchdog() {
    let Some(period) = watchdog_ping_period() else {
        return;
    };
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        loop {
            ticks.tick().await;
            notify_watchdog();
        }
    });
}

/// Whether systemd is listening for notifications at all (cheap; lets callers skip work).
pub fn under_systemd() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// Best effort: a failed notification is logged, never fatal.
fn notify(states: &[NotifyState<'_>]) {
    if !under_systemd() {
        return;
    }
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(target: "main", subsystem = "main", %error, "cannot notify systemd");
    }
}

/// Exit code of a configuration the service cannot start with: a missing `--config` file, a
/// bad key or value, a bad log level, an unreadable or malformed cluster secret.
pub const EXIT_BAD_CONFIG: u8 = 2;

/// A daemon's exit: success, or its error (with its causes) logged and printed as
/// `<service>: <error>` on stderr (the alternate form, so an `anyhow` error shows its causes),
/// and exit code [`EXIT_BAD_CONFIG`] when a configuration error is anywhere in its chain of
/// causes, else 1.
pub fn exit_code<E>(service: &str, outcome: Result<(), E>) -> ExitCode
where
    E: std::fmt::Display + AsRef<dyn std::error::Error + Send + Sync + 'static>,
{
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(target: "main", subsystem = "main", "{error:#}");
            eprintln!("{service}: {error:#}");
            if is_config_error(error.as_ref()) {
                ExitCode::from(EXIT_BAD_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Whether `error` or one of its causes says the configuration is unusable.
pub fn is_config_error(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |error| error.source()).any(|error| {
        error.is::<crate::ConfigError>()
            || error.is::<crate::config::MissingConfigFile>()
            || error.is::<crate::LoggingError>()
            || error.is::<chat_secret::SecretError>()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot start")]
    struct Wrapper(#[source] Box<dyn std::error::Error + Send + Sync>);

    #[test]
    fn configuration_errors_are_found_among_the_causes() {
        let missing = crate::config::MissingConfigFile("/nonexistent.toml".into());
        assert!(is_config_error(&missing));
        let wrapped = Wrapper(Box::new(crate::config::MissingConfigFile(
            "/nonexistent.toml".into(),
        )));
        assert!(is_config_error(&wrapped));
        let io = Wrapper(Box::new(std::io::Error::other("port in use")));
        assert!(!is_config_error(&io));
        let secret = chat_secret::ClusterSecret::load(std::path::Path::new("/nonexistent.key"))
            .expect_err("no such file");
        assert!(is_config_error(&Wrapper(Box::new(secret))));
    }

    #[test]
    fn no_watchdog_outside_systemd() {
        // The test runner is not a service with WatchdogSec=.
        if std::env::var_os("WATCHDOG_USEC").is_none() {
            assert_eq!(watchdog_ping_period(), None);
        }
    }
}
