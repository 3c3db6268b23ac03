//! The control plane of a chat-system node as sans-IO state machines: no sockets, no
//! threads, no clock reads (time comes in as `now`), no hidden randomness.
//!
//! * [`clock`]: the node's Lamport clock.
//! * [`topology`]: neighbours, the three-way handshake, heartbeats and liveness.
//! * `election`: Yo-Yo with pruning over the ON neighbours (one run at a time).
//! * `tree`: SHOUT, the tree epoch, healing by adoption.
//! * [`roles`] and [`routes`]: what a node does and where traffic goes, from its place in
//!   the tree.
//! * [`ControlPlane`]: election and tree composed, driven by neighbour ON/OFF inputs.
//! * [`Node`]: topology feeding the control plane, the API the `chat-node` driver uses (its
//!   module docs walk through the driver loop).
//! * `sim` (feature `sim`, always on for this crate's tests and benches): a deterministic
//!   simulator of many nodes over a seeded network.
//!
//! Every machine has quinn-proto's shape: `handle_*(now, ..)` inputs, then
//! `poll_event()`, `poll_transmit()` and `poll_timeout()` drained until `None`; timers are a
//! closed enum in a table, and an early `handle_timeout` does nothing.
#![warn(missing_docs)]

pub mod clock;
pub mod defaults;
mod election;
mod event;
mod node;
mod plane;
mod quorum;
mod reliable;
pub mod roles;
pub mod routes;
#[cfg(feature = "sim")]
pub mod sim;
pub mod topology;
mod tree;

pub use event::{LinkStatus, NodeEvent, StartReason, Step, Subsystem, Trace, Transmit};
pub use node::{Node, NodeConfig, NodeStats};
pub use plane::{ControlConfig, ControlPlane, ElectionKey, PlaneStats, Quorum, Status};
pub use roles::{roles_for, Place, Roles};
pub use routes::{Routes, Upstream};
