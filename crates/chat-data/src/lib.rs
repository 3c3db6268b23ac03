//! The data plane: requests up the tree, answers down, log entries from the writer to every
//! node, and acknowledgement only once a majority of the cluster holds a write durably.
//!
//! [`DataPlane`] is one node's sans-IO state machine (quinn-proto's shape): the driver feeds it
//! inputs with the current time and drains its outputs. It owns no sockets, threads or files;
//! requests, answers and log payloads are opaque bytes plus the few typed fields it routes on, so
//! any store can sit under it.
//!
//! # Protocol
//! * **Frames** ([`Frame`], `proto/data.proto`) carry the sender's term; a frame of another term
//!   is refused and counted ([`Counters::frames_stale_term`], [`Counters::frames_newer_term`]).
//! * **Requests** go up parent by parent. The writable root executes writes; the root and the
//!   replicas (the root's children) answer reads once they have applied the client's epoch,
//!   waiting [`DataConfig::read_wait`] for it before passing the read up. A replica's "not found"
//!   is confirmed by the root. A node with no tree or no parent, or a root that is not writable,
//!   answers a retryable error. Answers go down by next hop ([`Place::routes`]); only the input
//!   node keeps per-request state (a deadline that answers [`RetryableError::Unavailable`]).
//! * **Replication**: the writer's entries `(term, epoch, payload)` flow down the whole tree;
//!   each node appends, forwards, and once durable reports its subtree's positions (per node,
//!   only entries verified against this term's log) to its parent. The root's commit position
//!   is the largest epoch durable on a majority of [`Place::cluster_size`] (itself included),
//!   counted only for an entry of the current term. A node with a gap or a differing suffix
//!   sends [`Body::CatchUp`] (its tail and the term runs above its commit) to its parent, which
//!   answers with the entries after the point where the two logs part; the child drops its own
//!   suffix from the first entry that differs ([`Action::DropSuffixAfter`]; never below the
//!   commit position: that is reported as [`Action::SafetyViolation`] and refused). A child
//!   further behind than the parent's entry cache is offered a snapshot, streamed in chunks.
//! * **Every answer** (writes and reads alike) is released only once its epoch is at or below the
//!   known commit position and the entry there is still the one it reflected, so a client never
//!   keeps an epoch a failover could take back.
//! * **A new writer** whose log ends in an older term appends an empty entry (a term barrier)
//!   first, so older entries commit without waiting for a fresh write. The store records an
//!   entry with an empty payload in its log and applies nothing for it.
//! * **Changes** from a committed batch go down the whole tree once the batch is majority-durable.
//!
//! # Driver contract
//! One `DataPlane` per node process, created at start with [`DataPlane::new`] from the store's
//! durable log ([`LocalLog`]). After *every* call below, drain [`DataPlane::poll_transmit`] and
//! [`DataPlane::poll_action`] until `None`, then re-arm one timer at
//! [`DataPlane::poll_timeout`].
//!
//! | when | call |
//! |------|------|
//! | the control plane reports a role, tree or term change | [`DataPlane::set_place`] |
//! | bytes arrive from peer `p` on the data port | [`DataPlane::handle_frame`] |
//! | the timer fires | [`DataPlane::handle_timeout`] |
//! | the HTTP layer has a request | [`DataPlane::submit`] (keep the returned [`RequestId`] to match the answer) |
//! | the store made its log durable and applied up to a position | [`DataPlane::local_durable`] (also feed it to the election key) |
//! | the writer committed a batch | [`DataPlane::committed`] |
//! | a local read finished | [`DataPlane::read_done`] |
//! | a snapshot chunk was read for a child | [`DataPlane::snapshot_chunk_read`] |
//! | a received snapshot was installed | [`DataPlane::snapshot_installed`] |
//!
//! Outputs: each [`Transmit`] goes to the transport as is (`send(to, payload)`; a failed send
//! needs no report: the plane resends what matters). [`Action`]s must reach the store **in the
//! order they are polled** (one store queue): `AppendEntries`, `DropSuffixAfter` and
//! `InstallSnapshotChunk` change the log, and an `ExecuteWrite` must see the log they leave.
//! The writer must refuse (answer `committed` with `Err(Unavailable)` results and no entries)
//! requests queued under a term that is no longer [`Place::term`] or when this node is no
//! longer the root. `Answer` goes to the HTTP handler waiting on that id; `Notify` to the
//! live-update feed; `SafetyViolation` to the log at error level and a metric. `/status` takes
//! [`DataPlane::writer_reachable`]; `/metrics` takes [`DataPlane::counters`].

mod frame;
mod log;
mod plane;

pub use frame::*;
pub use log::LocalLog;
pub use plane::*;

/// A node's id (the control plane's).
pub use chat_wire::NodeId;
