//! The control plane of a chat-system node as sans-IO state machines.
#![warn(missing_docs)]

pub mod clock;
mod election;
mod event;
mod node;
mod plane;
pub mod roles;
pub mod routes;
#[cfg(feature = "sim")]
pub mod sim;
pub mod topology;
mod tree;

pub use event::{LinkStatus, NodeEvent, StartReason, Step, Subsystem, Trace};
pub use node::{Node, NodeConfig, NodeStats};
pub use plane::{ControlConfig, ControlPlane, Status};
pub use roles::{roles_for, Place, Roles};
pub use routes::{Routes, Upstream};
