//! A load generator for the chat JSON API (`docs/api.md`), for the cluster benchmark: many
//! simulated users, each with its own account, bearer token and keep-alive connection to an
//! input node, posting messages (with client-chosen ids) and reading chat pages, closed loop
//! or at a fixed offered rate; it reports acknowledged requests per second, latency
//! percentiles (HdrHistogram) and errors by status and API code.
//!
//! ```no_run
//! # async fn example() -> Result<(), chat_loadgen::LoadError> {
//! let target = "http://127.0.0.1:8081".parse()?;
//! let mut options = chat_loadgen::Options::new(vec![target]);
//! options.clients = 32;
//! let report = chat_loadgen::run(&options).await?;
//! println!("{report}");
//! # Ok(()) }
//! ```
//!
//! A run is: setup (register, log in, make chats, seed them; see [`run`] on login limits),
//! then every client loops until the end of warm-up plus the measured window, then (with
//! `verify`) every chat is read back to check each acknowledged write.

mod conn;
mod drive;
pub mod options;
pub mod report;
mod setup;

use std::sync::Arc;
use std::time::Duration;

pub use options::{ChatKind, MessageIds, Mode, Options, Target};
pub use report::{Latency, OpReport, Report, Second, Verification};

/// Why a run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A `--target` that is not an `http://host:port` base URL.
    #[error("target {target:?}: {why}")]
    BadTarget {
        /// As given.
        target: String,
        /// What is wrong with it.
        why: String,
    },
    /// Options that contradict each other or the API's rules.
    #[error("{0}")]
    BadOptions(String),
    /// Stopped before setup was done.
    #[error("stopped during setup")]
    Stopped,
    /// A setup request failed with an answer other than a wait.
    #[error("setup failed at {step}: {detail}")]
    Setup {
        /// Register, login, create group, add member or seed message.
        step: String,
        /// The answer, or why none came.
        detail: String,
    },
}

/// Time between the end of setup and the first request, so every client's loop has started
/// before the first slot is due.
const START_DELAY: Duration = Duration::from_millis(50);

/// Sets up users and chats, drives the load, and reports.
///
/// Setup waits out login rate limits (`429`) until `setup_timeout`: a node allows 100 logins
/// a minute from one address and 10 per account by default (`[http] login_per_address`,
/// `login_per_account`); a bench with more than 100 clients should raise
/// `login_per_address` on its input nodes, or accept a slow setup.
pub async fn run(options: &Options) -> Result<Report, LoadError> {
    run_until(options, std::future::pending()).await
}

/// As [`run`], until `stop` completes if it does first (the binary passes Ctrl-C): stopped
/// in setup, the run fails with [`LoadError::Stopped`]; stopped under load, the clients
/// finish the requests in flight and the report covers the window up to the stop.
pub async fn run_until(
    options: &Options,
    stop: impl std::future::Future<Output = ()>,
) -> Result<Report, LoadError> {
    options.validate()?;
    tokio::pin!(stop);
    let setup_started = tokio::time::Instant::now();
    let (clients, chats) = tokio::select! {
        set_up = setup::run(options) => set_up?,
        () = &mut stop => return Err(LoadError::Stopped),
    };
    let setup = setup_started.elapsed();

    let (stopping, stopped) = tokio::sync::watch::channel(None);
    let plan = Arc::new(drive::Plan::new(
        options,
        tokio::time::Instant::now() + START_DELAY,
        stopped,
    ));
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|client| tokio::spawn(drive::client_loop(client, Arc::clone(&plan))))
        .collect();
    let collect = async {
        let mut tally = report::Tally::new();
        let mut per_target = vec![0; options.targets.len()];
        let mut clients = Vec::with_capacity(tasks.len());
        for task in tasks {
            let (client, counts) = task.await.expect("client loops do not panic");
            tally.merge(&counts);
            per_target[client.index % options.targets.len()] +=
                counts.writes.acknowledged + counts.reads.acknowledged;
            clients.push(client);
        }
        (tally, per_target, clients)
    };
    tokio::pin!(collect);
    let (tally, per_target, mut clients) = tokio::select! {
        collected = &mut collect => collected,
        () = &mut stop => {
            let _ = stopping.send(Some(tokio::time::Instant::now()));
            collect.await
        }
    };
    let measured = plan.until().saturating_duration_since(plan.measure_from);

    let verification = if options.verify {
        Some(drive::verify(&mut clients, &chats).await)
    } else {
        None
    };
    let connections = clients.iter().map(|c| c.conn.connects).sum();
    Ok(Report::build(report::Inputs {
        options,
        tally: &tally,
        setup,
        measured,
        connections,
        per_target,
        verification,
    }))
}
