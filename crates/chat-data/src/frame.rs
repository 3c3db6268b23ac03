//! The data plane's frames: domain types and their protobuf encoding (`proto/data.proto`).
//!
//! Encoding cannot fail. [`Frame::decode`] turns any bytes into a well-formed frame or a
//! [`DecodeError`]; it never panics (a property test feeds it arbitrary bytes).

use prost::Message as _;

use crate::NodeId;

/// A tree's term, from the control plane: totally ordered, never decreasing on a node.
pub type Term = u64;
/// A log position's sequence number; epochs count entries from 1 (0 means "nothing yet").
pub type Epoch = u64;

/// The wire version this build speaks; frames of another version are refused.
pub const DATA_PROTOCOL_VERSION: u32 = 1;

/// Frames larger than this are refused before parsing (a snapshot chunk is the largest frame).
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// Generated protobuf types; public so tests can build raw (even malformed) frames.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/chat.data.v1.rs"));
}

/// A log position: the term an entry was written in and its epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    /// The writer's term when the entry was written.
    pub term: Term,
    /// The entry's epoch.
    pub epoch: Epoch,
}

impl Position {
    /// A position.
    pub const fn new(term: Term, epoch: Epoch) -> Self {
        Position { term, epoch }
    }
}

/// One log entry; the payload is the store's (the operation to apply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Where it sits in the log.
    pub position: Position,
    /// What to apply; opaque to the data plane.
    pub payload: Vec<u8>,
}

/// A request's identity: the input node that took it and that node's sequence number. It is
/// also the correlation an input node's HTTP handler waits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId {
    /// The input node waiting for the answer.
    pub origin: NodeId,
    /// Its sequence number there.
    pub seq: u64,
}

/// What a request wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// Answered by a fresh-enough replica or the root.
    Read,
    /// Executed by the writable root.
    Write,
    /// Only asks whether a writable root answers (for `writer_reachable`).
    Probe,
}

/// A request travelling up the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Who asked, for the answer's way back.
    pub id: RequestId,
    /// The answer must reflect at least this epoch (the client's last seen).
    pub min_epoch: Epoch,
    /// Read, write or probe.
    pub kind: RequestKind,
    /// A replica's "not found" is being confirmed: replicas pass it up to the root.
    pub confirm: bool,
    /// The typed request, encoded by the service; opaque here.
    pub payload: Vec<u8>,
}

/// Why a request was not served; every kind is retryable (the HTTP layer answers 503).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum RetryableError {
    /// A root that may not accept writes now (it lacks a majority).
    #[error("the root is not writable now")]
    NotWritable,
    /// No tree, or no root above this node.
    #[error("no writer is reachable now")]
    NoWriter,
    /// A replica or root that has not reached the client's epoch.
    #[error("behind: have epoch {have}, want {want}")]
    Behind {
        /// The epoch the node had.
        have: Epoch,
        /// The epoch the client asked for.
        want: Epoch,
    },
    /// No answer in time, or the outcome is unknown (the writer lost its term before the write
    /// was durable on a majority): retrying with the same idempotency key is safe.
    #[error("unavailable, retry")]
    Unavailable,
    /// The store failed.
    #[error("storage failure")]
    Storage,
}

/// A request's outcome: the service's encoded answer, or a retryable error.
pub type Outcome = Result<Vec<u8>, RetryableError>;

/// What a response says about the writer, for `writer_reachable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WriterSeen {
    /// Answered below the root (a replica): says nothing about the writer.
    #[default]
    Unknown,
    /// The root that answered was writable.
    Writable,
    /// The root that answered was not writable.
    NotWritable,
}

/// An answer travelling down the tree to its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The request it answers.
    pub id: RequestId,
    /// The epoch the answer reflects (the client keeps it as its last seen).
    pub epoch: Epoch,
    /// What the answering node knew about the writer.
    pub writer: WriterSeen,
    /// The answer.
    pub outcome: Outcome,
}

/// A run of log entries written in one term, starting at `first_epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TermRun {
    /// The term.
    pub term: Term,
    /// Its first entry's epoch.
    pub first_epoch: Epoch,
}

/// A change notification: something committed at an epoch that input nodes push to their
/// live-update streams. The payload (which chat, who may see it) is the node's to encode; the
/// data plane only holds it until its epoch is majority-durable and spreads it down the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The epoch of the change.
    pub epoch: Epoch,
    /// What changed, encoded by the node.
    pub payload: Vec<u8>,
}

/// A piece of a snapshot streamed from a parent to a child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotChunk {
    /// The serving node's name for this snapshot (never 0).
    pub snapshot_id: u64,
    /// The log position the snapshot reflects.
    pub base: Position,
    /// Byte offset of `data` in the snapshot.
    pub offset: u64,
    /// The bytes.
    pub data: Vec<u8>,
    /// The last chunk.
    pub done: bool,
}

/// The body of a data-plane frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// A request, up the tree by parent.
    Request(Request),
    /// An answer, down the tree by next hop.
    Response(Response),
    /// Log entries from the writer down (none: a heartbeat carrying the tail and commit).
    Entries {
        /// The position just before the first entry (the sender's tail for a heartbeat).
        prev: Position,
        /// Consecutive entries following `prev`.
        entries: Vec<Entry>,
        /// The writer's majority-durable position as the sender knows it.
        commit: Epoch,
    },
    /// A subtree's durable positions (node, epoch), reported to the parent.
    Durable(Vec<(NodeId, Epoch)>),
    /// "Send what follows my log": the sender's last epoch, its commit, and the term runs of
    /// its log above the commit.
    CatchUp {
        /// The sender's last epoch.
        last: Epoch,
        /// The sender's commit position (below it, its log is the writer's).
        commit: Epoch,
        /// Term runs covering `commit..=last`.
        runs: Vec<TermRun>,
    },
    /// "What you need is not in my cache: take a snapshot."
    SnapshotOffer {
        /// The position the sender's state reflects.
        base: Position,
    },
    /// "Send the chunk at this offset" (snapshot id 0 starts a new snapshot).
    SnapshotRequest {
        /// The snapshot (0: start one).
        snapshot_id: u64,
        /// The byte offset wanted.
        offset: u64,
    },
    /// A snapshot chunk.
    SnapshotChunk(SnapshotChunk),
    /// Change notifications, down the whole tree.
    Changes(Vec<Change>),
}

/// A data-plane frame: the sender's term and a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The sender's term.
    pub term: Term,
    /// What it says.
    pub body: Body,
}

/// Why bytes are not a valid [`Frame`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Larger than [`MAX_FRAME_BYTES`].
    #[error("frame of {len} bytes exceeds the {max} byte limit")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not protobuf, or not this schema.
    #[error("malformed protobuf: {0}")]
    Malformed(String),
    /// Another protocol version.
    #[error("unsupported data protocol version {0} (this node speaks {DATA_PROTOCOL_VERSION})")]
    UnsupportedVersion(u32),
    /// No body this build knows (perhaps from a newer node).
    #[error("frame has no body this node understands")]
    UnknownBody,
    /// A required field is absent.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// An enum value this build does not know.
    #[error("field `{field}` has unknown value {value}")]
    UnknownEnumValue {
        /// The field.
        field: &'static str,
        /// Its value.
        value: i32,
    },
    /// Node id 0, which no node has.
    #[error("field `{0}` holds node id 0")]
    ZeroNodeId(&'static str),
    /// Entries that do not follow `prev` one by one.
    #[error("entries do not follow epoch {prev} consecutively")]
    NotConsecutive {
        /// The frame's `prev` epoch.
        prev: Epoch,
    },
}

impl Frame {
    /// A frame.
    pub fn new(term: Term, body: Body) -> Self {
        Frame { term, body }
    }

    /// The protobuf encoding.
    pub fn encode(&self) -> Vec<u8> {
        proto::Frame {
            protocol_version: DATA_PROTOCOL_VERSION,
            term: self.term,
            body: Some(body_to_proto(&self.body)),
        }
        .encode_to_vec()
    }

    /// Parses and checks bytes received from the network. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Frame, DecodeError> {
        if bytes.len() > MAX_FRAME_BYTES {
            return Err(DecodeError::TooLarge {
                len: bytes.len(),
                max: MAX_FRAME_BYTES,
            });
        }
        let raw = proto::Frame::decode(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if raw.protocol_version != DATA_PROTOCOL_VERSION {
            return Err(DecodeError::UnsupportedVersion(raw.protocol_version));
        }
        let body = body_from_proto(raw.body.ok_or(DecodeError::UnknownBody)?)?;
        Ok(Frame {
            term: raw.term,
            body,
        })
    }
}

fn node_id(value: u64, field: &'static str) -> Result<NodeId, DecodeError> {
    if value == 0 {
        Err(DecodeError::ZeroNodeId(field))
    } else {
        Ok(value)
    }
}

fn required<T>(value: Option<T>, field: &'static str) -> Result<T, DecodeError> {
    value.ok_or(DecodeError::MissingField(field))
}

fn position_to_proto(p: Position) -> proto::Position {
    proto::Position {
        term: p.term,
        epoch: p.epoch,
    }
}

fn position_from_proto(
    p: Option<proto::Position>,
    field: &'static str,
) -> Result<Position, DecodeError> {
    let p = required(p, field)?;
    Ok(Position::new(p.term, p.epoch))
}

fn request_id_to_proto(id: RequestId) -> proto::RequestId {
    proto::RequestId {
        origin: id.origin,
        seq: id.seq,
    }
}

fn request_id_from_proto(
    id: Option<proto::RequestId>,
    field: &'static str,
) -> Result<RequestId, DecodeError> {
    let id = required(id, field)?;
    Ok(RequestId {
        origin: node_id(id.origin, field)?,
        seq: id.seq,
    })
}

fn error_to_proto(e: RetryableError) -> proto::RetryableError {
    use proto::ErrorKind as K;
    let (kind, have, want) = match e {
        RetryableError::NotWritable => (K::NotWritable, 0, 0),
        RetryableError::NoWriter => (K::NoWriter, 0, 0),
        RetryableError::Behind { have, want } => (K::Behind, have, want),
        RetryableError::Unavailable => (K::Unavailable, 0, 0),
        RetryableError::Storage => (K::Storage, 0, 0),
    };
    proto::RetryableError {
        kind: kind as i32,
        have,
        want,
    }
}

fn error_from_proto(e: proto::RetryableError) -> Result<RetryableError, DecodeError> {
    use proto::ErrorKind as K;
    Ok(match K::try_from(e.kind) {
        Ok(K::NotWritable) => RetryableError::NotWritable,
        Ok(K::NoWriter) => RetryableError::NoWriter,
        Ok(K::Behind) => RetryableError::Behind {
            have: e.have,
            want: e.want,
        },
        Ok(K::Unavailable) => RetryableError::Unavailable,
        Ok(K::Storage) => RetryableError::Storage,
        Ok(K::Unspecified) | Err(_) => {
            return Err(DecodeError::UnknownEnumValue {
                field: "response.error.kind",
                value: e.kind,
            })
        }
    })
}

fn body_to_proto(body: &Body) -> proto::frame::Body {
    use proto::frame::Body as B;
    match body {
        Body::Request(r) => B::Request(proto::Request {
            id: Some(request_id_to_proto(r.id)),
            min_epoch: r.min_epoch,
            kind: match r.kind {
                RequestKind::Read => proto::RequestKind::Read,
                RequestKind::Write => proto::RequestKind::Write,
                RequestKind::Probe => proto::RequestKind::Probe,
            } as i32,
            confirm: r.confirm,
            payload: r.payload.clone(),
        }),
        Body::Response(r) => B::Response(proto::Response {
            id: Some(request_id_to_proto(r.id)),
            epoch: r.epoch,
            writer: match r.writer {
                WriterSeen::Unknown => proto::WriterSeen::Unknown,
                WriterSeen::Writable => proto::WriterSeen::Writable,
                WriterSeen::NotWritable => proto::WriterSeen::NotWritable,
            } as i32,
            outcome: Some(match &r.outcome {
                Ok(bytes) => proto::response::Outcome::Ok(bytes.clone()),
                Err(e) => proto::response::Outcome::Error(error_to_proto(*e)),
            }),
        }),
        Body::Entries {
            prev,
            entries,
            commit,
        } => B::Entries(proto::Entries {
            prev: Some(position_to_proto(*prev)),
            entries: entries
                .iter()
                .map(|e| proto::Entry {
                    term: e.position.term,
                    epoch: e.position.epoch,
                    payload: e.payload.clone(),
                })
                .collect(),
            commit: *commit,
        }),
        Body::Durable(positions) => B::Durable(proto::Durable {
            positions: positions
                .iter()
                .map(|&(node, epoch)| proto::NodePosition { node, epoch })
                .collect(),
        }),
        Body::CatchUp { last, commit, runs } => B::CatchUp(proto::CatchUp {
            last: *last,
            commit: *commit,
            runs: runs
                .iter()
                .map(|r| proto::TermRun {
                    term: r.term,
                    first_epoch: r.first_epoch,
                })
                .collect(),
        }),
        Body::SnapshotOffer { base } => B::SnapshotOffer(proto::SnapshotOffer {
            base: Some(position_to_proto(*base)),
        }),
        Body::SnapshotRequest {
            snapshot_id,
            offset,
        } => B::SnapshotRequest(proto::SnapshotRequest {
            snapshot_id: *snapshot_id,
            offset: *offset,
        }),
        Body::SnapshotChunk(c) => B::SnapshotChunk(proto::SnapshotChunk {
            snapshot_id: c.snapshot_id,
            base: Some(position_to_proto(c.base)),
            offset: c.offset,
            data: c.data.clone(),
            done: c.done,
        }),
        Body::Changes(changes) => B::Changes(proto::Changes {
            changes: changes
                .iter()
                .map(|c| proto::Change {
                    epoch: c.epoch,
                    payload: c.payload.clone(),
                })
                .collect(),
        }),
    }
}

fn body_from_proto(body: proto::frame::Body) -> Result<Body, DecodeError> {
    use proto::frame::Body as B;
    Ok(match body {
        B::Request(r) => Body::Request(Request {
            id: request_id_from_proto(r.id, "request.id")?,
            min_epoch: r.min_epoch,
            kind: match proto::RequestKind::try_from(r.kind) {
                Ok(proto::RequestKind::Read) => RequestKind::Read,
                Ok(proto::RequestKind::Write) => RequestKind::Write,
                Ok(proto::RequestKind::Probe) => RequestKind::Probe,
                Ok(proto::RequestKind::Unspecified) | Err(_) => {
                    return Err(DecodeError::UnknownEnumValue {
                        field: "request.kind",
                        value: r.kind,
                    })
                }
            },
            confirm: r.confirm,
            payload: r.payload,
        }),
        B::Response(r) => Body::Response(Response {
            id: request_id_from_proto(r.id, "response.id")?,
            epoch: r.epoch,
            writer: match proto::WriterSeen::try_from(r.writer) {
                Ok(proto::WriterSeen::Unknown) => WriterSeen::Unknown,
                Ok(proto::WriterSeen::Writable) => WriterSeen::Writable,
                Ok(proto::WriterSeen::NotWritable) => WriterSeen::NotWritable,
                Err(_) => {
                    return Err(DecodeError::UnknownEnumValue {
                        field: "response.writer",
                        value: r.writer,
                    })
                }
            },
            outcome: match required(r.outcome, "response.outcome")? {
                proto::response::Outcome::Ok(bytes) => Ok(bytes),
                proto::response::Outcome::Error(e) => Err(error_from_proto(e)?),
            },
        }),
        B::Entries(e) => {
            let prev = position_from_proto(e.prev, "entries.prev")?;
            let entries: Vec<Entry> = e
                .entries
                .into_iter()
                .map(|e| Entry {
                    position: Position::new(e.term, e.epoch),
                    payload: e.payload,
                })
                .collect();
            let consecutive = entries
                .iter()
                .enumerate()
                .all(|(i, e)| Some(e.position.epoch) == prev.epoch.checked_add(i as u64 + 1));
            if !consecutive {
                return Err(DecodeError::NotConsecutive { prev: prev.epoch });
            }
            Body::Entries {
                prev,
                entries,
                commit: e.commit,
            }
        }
        B::Durable(d) => Body::Durable(
            d.positions
                .into_iter()
                .map(|p| Ok((node_id(p.node, "durable.positions.node")?, p.epoch)))
                .collect::<Result<_, DecodeError>>()?,
        ),
        B::CatchUp(c) => Body::CatchUp {
            last: c.last,
            commit: c.commit,
            runs: c
                .runs
                .into_iter()
                .map(|r| TermRun {
                    term: r.term,
                    first_epoch: r.first_epoch,
                })
                .collect(),
        },
        B::SnapshotOffer(o) => Body::SnapshotOffer {
            base: position_from_proto(o.base, "snapshot_offer.base")?,
        },
        B::SnapshotRequest(r) => Body::SnapshotRequest {
            snapshot_id: r.snapshot_id,
            offset: r.offset,
        },
        B::SnapshotChunk(c) => Body::SnapshotChunk(SnapshotChunk {
            snapshot_id: c.snapshot_id,
            base: position_from_proto(c.base, "snapshot_chunk.base")?,
            offset: c.offset,
            data: c.data,
            done: c.done,
        }),
        B::Changes(c) => Body::Changes(
            c.changes
                .into_iter()
                .map(|c| Change {
                    epoch: c.epoch,
                    payload: c.payload,
                })
                .collect(),
        ),
    })
}
