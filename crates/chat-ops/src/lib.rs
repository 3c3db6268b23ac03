//! Operability helpers shared by every chat-system binary (`chat-node`, `chat-bootstrap`,
//! `chat-nameserver`).
//!
//! - [`config`]: the layered configuration (built-in defaults < config files < environment <
//!   command-line flags) and error messages that name the key, the value and where it came from.
//! - [`logging`]: the global `tracing` subscriber: journald under systemd, a readable stderr
//!   format elsewhere, per-subsystem levels.
//! - [`service`]: shutdown on SIGINT/SIGTERM and systemd notifications (READY, STATUS,
//!   STOPPING).
//!
//! Logging convention for every crate: each event uses `target: "<subsystem>"` (so per-subsystem
//! levels work through the target) and carries the field `subsystem = "<subsystem>"` (so
//! journald gets `SUBSYSTEM=<subsystem>`), for example
//! `tracing::info!(target: "election", subsystem = "election", round, "started");`.
//! Subsystems: main, topology, election, tree, heartbeat, transport, data, storage, input,
//! bootstrap, nameserver, admin, auth (calls the services' guard refused).

pub mod config;
pub mod logging;
pub mod service;

pub use config::ConfigError;
pub use logging::{LogSettings, LoggingError};
