//! The control plane of a chat-system node as sans-IO state machines.
#![warn(missing_docs)]

pub mod clock;
mod election;
mod event;
pub mod roles;
pub mod topology;

pub use event::{LinkStatus, NodeEvent, StartReason, Step, Subsystem, Trace};
pub use roles::{roles_for, Place, Roles};
