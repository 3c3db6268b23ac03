//! The node's data plane: drives [`chat_data::DataPlane`] with real time, its own ZeroMQ
//! transport on the data port, and the local store.
//!
//! Three parts, each thin:
//! - [`driver`]: one task owns the `DataPlane` state machine. It feeds it the control plane's
//!   view of the tree ([`TreeView`], from a watch channel the control loop publishes), the
//!   frames of the data port, client requests from the proxy, and the store's reports, and
//!   carries its outputs out: frames to the transport, actions to the store worker in order,
//!   answers to the waiting proxies, changes to the live-update feed.
//! - [`storage`]: the store worker, one thread that applies the plane's log actions in the
//!   order they were polled (append, drop a suffix, apply committed, snapshots), plus the
//!   writer's group commit ([`chat_service::GroupCommitter`]) and local reads.
//! - [`proxy`]: the input node's [`chat_service::Dispatcher`]: a typed request in, the
//!   plane's answer out, retried while the answer says "try again" and time is left.
//!
//! # Log entries
//! The data plane numbers entries one per epoch; the store's writer logs one entry per
//! group-commit batch. A batch of `n` writes becomes `n` data-plane entries, each carrying one
//! write as a one-operation store entry (JSON), so every node below the writer logs one row
//! per write and every epoch is a place a suffix can be cut. The term barrier (an empty
//! data-plane entry) is [`chat_store::Change::TermBarrier`] in the store.

mod driver;
mod entries;
pub(crate) mod proxy;
mod storage;

use std::collections::BTreeMap;
use std::time::Instant;

use chat_wire::NodeId;

pub(crate) use driver::{start, DataHandle, DataSettings, DataStatus};

/// What the data plane needs from the control plane, published by the control loop whenever
/// it changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TreeView {
    /// The tree's term (0: none yet).
    pub(crate) term: u64,
    pub(crate) writer: bool,
    pub(crate) replica: bool,
    pub(crate) input: bool,
    /// At a writable root: when the writer lease runs out unless renewed.
    pub(crate) writable_until: Option<Instant>,
    pub(crate) parent: Option<NodeId>,
    /// `tcp://host:data_port` of the parent, once it advertised its data port.
    pub(crate) parent_endpoint: Option<String>,
    pub(crate) children: Vec<NodeId>,
    /// Input node → the child leading to it.
    pub(crate) routes: BTreeMap<NodeId, NodeId>,
    pub(crate) cluster_size: usize,
}
