//! The life cycle every chat-system daemon shares: turning SIGINT/SIGTERM into a shutdown
//! future, and telling systemd (`Type=notify`) when the service is ready, what it is doing and
//! when it stops. Outside systemd the notifications are no-ops.

use std::future::Future;
use std::process::ExitCode;

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

/// A daemon's exit: success, or its error (with its causes) logged and printed as
/// `<service>: <error>` on stderr (the alternate form, so an `anyhow` error shows its causes),
/// and exit code 1.
pub fn exit_code<E: std::fmt::Display>(service: &str, outcome: Result<(), E>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(target: "main", subsystem = "main", "{error:#}");
            eprintln!("{service}: {error:#}");
            ExitCode::FAILURE
        }
    }
}
