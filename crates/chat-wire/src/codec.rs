//! Conversion between the domain types and their protobuf form.
//!
//! Encoding cannot fail. Decoding checks everything protobuf itself does not: a header is
//! present, the version is ours, the header's scope matches the body, required sub-messages
//! are present, enum values are known, ports fit in 16 bits, ids are not 0.

use prost::Message as _;

use crate::proto;
use crate::types::*;
use crate::PROTOCOL_VERSION;

/// Envelopes larger than this are rejected before parsing. Control messages are tiny; data
/// frames carry at most a snapshot chunk.
pub const MAX_ENVELOPE_BYTES: usize = 64 * 1024 * 1024;

/// Why bytes are not a valid [`Envelope`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Larger than [`MAX_ENVELOPE_BYTES`].
    #[error("envelope of {len} bytes exceeds the {max} byte limit")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not protobuf, or not this schema.
    #[error("malformed protobuf: {0}")]
    Malformed(String),
    /// No header.
    #[error("envelope has no header")]
    MissingHeader,
    /// A version this build does not speak.
    #[error("unsupported protocol version {0} (this node speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion(u32),
    /// A body kind this build does not know (perhaps from a newer node): count and drop.
    #[error("envelope has no body this node understands")]
    UnknownBody,
    /// The header's scope disagrees with the body.
    #[error("header scope {header:?} does not match the {body:?} body")]
    ScopeMismatch {
        /// What the header said (`None` for an unknown value).
        header: Option<Scope>,
        /// What the body is.
        body: Scope,
    },
    /// A required field is absent.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// An enum field holds a value this build does not know.
    #[error("field `{field}` has unknown value {value}")]
    UnknownEnumValue {
        /// The field.
        field: &'static str,
        /// Its value.
        value: i32,
    },
    /// A port does not fit in 16 bits (or is 0).
    #[error("field `{field}` holds {value}, not a port")]
    BadPort {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u32,
    },
    /// Node id 0, which no node has.
    #[error("field `{0}` holds node id 0")]
    ZeroNodeId(&'static str),
}

impl Envelope {
    /// Builds an envelope; the header's scope follows from the body.
    pub fn new(source: NodeId, destination: NodeId, lamport: u64, body: Body) -> Self {
        Envelope {
            header: Header {
                source,
                destination,
                lamport,
            },
            body,
        }
    }

    /// The protobuf encoding of this envelope.
    pub fn encode(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }

    /// Parses and checks bytes received from the network. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(DecodeError::TooLarge {
                len: bytes.len(),
                max: MAX_ENVELOPE_BYTES,
            });
        }
        let raw =
            proto::Envelope::decode(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        Envelope::from_proto(raw)
    }

    fn to_proto(&self) -> proto::Envelope {
        let scope = scope_to_proto(self.scope());
        proto::Envelope {
            header: Some(proto::Header {
                protocol_version: PROTOCOL_VERSION,
                source: self.header.source,
                destination: self.header.destination,
                scope: scope as i32,
                lamport: self.header.lamport,
            }),
            body: Some(body_to_proto(&self.body)),
        }
    }

    fn from_proto(raw: proto::Envelope) -> Result<Envelope, DecodeError> {
        let header = raw.header.ok_or(DecodeError::MissingHeader)?;
        if header.protocol_version != PROTOCOL_VERSION {
            return Err(DecodeError::UnsupportedVersion(header.protocol_version));
        }
        let body = body_from_proto(raw.body.ok_or(DecodeError::UnknownBody)?)?;
        let header_scope = scope_from_proto(header.scope);
        if header_scope != Some(body.scope()) {
            return Err(DecodeError::ScopeMismatch {
                header: header_scope,
                body: body.scope(),
            });
        }
        Ok(Envelope {
            header: Header {
                source: node_id(header.source, "header.source")?,
                destination: node_id(header.destination, "header.destination")?,
                lamport: header.lamport,
            },
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

fn port(value: u32, field: &'static str) -> Result<u16, DecodeError> {
    match u16::try_from(value) {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(DecodeError::BadPort { field, value }),
    }
}

/// Data ports may be 0 while a node does not serve a data plane yet.
fn optional_port(value: u32, field: &'static str) -> Result<u16, DecodeError> {
    u16::try_from(value).map_err(|_| DecodeError::BadPort { field, value })
}

fn required<T>(value: Option<T>, field: &'static str) -> Result<T, DecodeError> {
    value.ok_or(DecodeError::MissingField(field))
}

fn scope_to_proto(scope: Scope) -> proto::Scope {
    match scope {
        Scope::Topology => proto::Scope::Topology,
        Scope::Election => proto::Scope::Election,
        Scope::Heartbeat => proto::Scope::Heartbeat,
        Scope::Tree => proto::Scope::Tree,
        Scope::Data => proto::Scope::Data,
    }
}

fn scope_from_proto(value: i32) -> Option<Scope> {
    match proto::Scope::try_from(value).ok()? {
        proto::Scope::Unspecified => None,
        proto::Scope::Topology => Some(Scope::Topology),
        proto::Scope::Election => Some(Scope::Election),
        proto::Scope::Heartbeat => Some(Scope::Heartbeat),
        proto::Scope::Tree => Some(Scope::Tree),
        proto::Scope::Data => Some(Scope::Data),
    }
}

fn run_to_proto(run: RunId) -> proto::RunId {
    proto::RunId {
        lamport: run.lamport,
        initiator: run.initiator,
    }
}

fn run_from_proto(run: Option<proto::RunId>, field: &'static str) -> Result<RunId, DecodeError> {
    let run = required(run, field)?;
    Ok(RunId {
        lamport: run.lamport,
        initiator: node_id(run.initiator, field)?,
    })
}

fn body_to_proto(body: &Body) -> proto::envelope::Body {
    use proto::envelope::Body as B;
    match body {
        Body::Topology(t) => B::Topology(proto::Topology {
            step: match t.step {
                HandshakeStep::Join => proto::HandshakeStep::Join,
                HandshakeStep::JoinAck => proto::HandshakeStep::JoinAck,
                HandshakeStep::Ack => proto::HandshakeStep::Ack,
            } as i32,
            rejoin: t.rejoin,
            host: t.host.clone(),
            control_port: u32::from(t.control_port),
            incarnation: t.incarnation,
        }),
        Body::Heartbeat(h) => B::Heartbeat(proto::Heartbeat {
            incarnation: h.incarnation,
        }),
        Body::Election(e) => B::Election(election_to_proto(e)),
        Body::Tree(t) => B::Tree(tree_to_proto(t)),
        Body::Data(d) => B::Data(proto::Data {
            kind: match d.kind {
                DataKind::Request => proto::DataKind::Request,
                DataKind::Response => proto::DataKind::Response,
                DataKind::Replicate => proto::DataKind::Replicate,
                DataKind::SnapshotRequest => proto::DataKind::SnapshotRequest,
                DataKind::Snapshot => proto::DataKind::Snapshot,
            } as i32,
            correlation_id: d.correlation_id.clone(),
            origin: d.origin,
            target: d.target,
            epoch: d.epoch,
            payload: d.payload.clone(),
        }),
    }
}

fn body_from_proto(body: proto::envelope::Body) -> Result<Body, DecodeError> {
    use proto::envelope::Body as B;
    Ok(match body {
        B::Topology(t) => Body::Topology(Topology {
            step: match proto::HandshakeStep::try_from(t.step) {
                Ok(proto::HandshakeStep::Join) => HandshakeStep::Join,
                Ok(proto::HandshakeStep::JoinAck) => HandshakeStep::JoinAck,
                Ok(proto::HandshakeStep::Ack) => HandshakeStep::Ack,
                Ok(proto::HandshakeStep::Unspecified) | Err(_) => {
                    return Err(DecodeError::UnknownEnumValue {
                        field: "topology.step",
                        value: t.step,
                    })
                }
            },
            rejoin: t.rejoin,
            host: t.host,
            control_port: port(t.control_port, "topology.control_port")?,
            incarnation: t.incarnation,
        }),
        B::Heartbeat(h) => Body::Heartbeat(Heartbeat {
            incarnation: h.incarnation,
        }),
        B::Election(e) => Body::Election(election_from_proto(e)?),
        B::Tree(t) => Body::Tree(tree_from_proto(t)?),
        B::Data(d) => Body::Data(Data {
            kind: match proto::DataKind::try_from(d.kind) {
                Ok(proto::DataKind::Request) => DataKind::Request,
                Ok(proto::DataKind::Response) => DataKind::Response,
                Ok(proto::DataKind::Replicate) => DataKind::Replicate,
                Ok(proto::DataKind::SnapshotRequest) => DataKind::SnapshotRequest,
                Ok(proto::DataKind::Snapshot) => DataKind::Snapshot,
                Ok(proto::DataKind::Unspecified) | Err(_) => {
                    return Err(DecodeError::UnknownEnumValue {
                        field: "data.kind",
                        value: d.kind,
                    })
                }
            },
            correlation_id: d.correlation_id,
            origin: d.origin,
            target: d.target,
            epoch: d.epoch,
            payload: d.payload,
        }),
    })
}

fn candidate_to_proto(c: Candidate) -> proto::Candidate {
    proto::Candidate {
        data_epoch: c.data_epoch,
        node: c.node,
        last_term: c.last_term,
    }
}

fn candidate_from_proto(
    c: Option<proto::Candidate>,
    field: &'static str,
) -> Result<Candidate, DecodeError> {
    let c = required(c, field)?;
    Ok(Candidate {
        last_term: c.last_term,
        data_epoch: c.data_epoch,
        node: node_id(c.node, field)?,
    })
}

fn election_to_proto(e: &Election) -> proto::Election {
    use proto::election::Kind as K;
    proto::Election {
        run: Some(run_to_proto(e.run)),
        round: e.round,
        cluster_size: e.cluster_size,
        kind: Some(match e.kind {
            ElectionKind::Start(c) => K::Start(proto::ElectionStart {
                candidate: Some(candidate_to_proto(c)),
            }),
            ElectionKind::Proposal(c) => K::Proposal(proto::Proposal {
                candidate: Some(candidate_to_proto(c)),
            }),
            ElectionKind::Vote { yes, prune } => K::Vote(proto::Vote { yes, prune }),
        }),
    }
}

fn election_from_proto(e: proto::Election) -> Result<Election, DecodeError> {
    use proto::election::Kind as K;
    let kind = match required(e.kind, "election.kind")? {
        K::Start(s) => ElectionKind::Start(candidate_from_proto(
            s.candidate,
            "election.start.candidate",
        )?),
        K::Proposal(p) => ElectionKind::Proposal(candidate_from_proto(
            p.candidate,
            "election.proposal.candidate",
        )?),
        K::Vote(v) => ElectionKind::Vote {
            yes: v.yes,
            prune: v.prune,
        },
    };
    Ok(Election {
        run: run_from_proto(e.run, "election.run")?,
        round: e.round,
        cluster_size: e.cluster_size,
        kind,
    })
}

fn tree_id_to_proto(t: TreeId) -> proto::TreeId {
    proto::TreeId {
        run: Some(run_to_proto(t.run)),
        leader: t.leader,
    }
}

fn tree_id_from_proto(
    t: Option<proto::TreeId>,
    field: &'static str,
) -> Result<Option<TreeId>, DecodeError> {
    t.map(|t| {
        Ok(TreeId {
            run: run_from_proto(t.run, field)?,
            leader: node_id(t.leader, field)?,
        })
    })
    .transpose()
}

fn shout_to_proto(i: &LeaderInfo) -> proto::Shout {
    proto::Shout {
        run: Some(run_to_proto(i.run)),
        leader: i.leader,
        hops_from_root: i.hops_from_root,
        data_port: u32::from(i.data_port),
        cluster_size: i.cluster_size,
        leader_key: Some(candidate_to_proto(i.leader_key)),
    }
}

/// A SHOUT and an offer say the same things; one decoder, field names for errors.
fn leader_info_from_proto(s: proto::Shout, what: &'static str) -> Result<LeaderInfo, DecodeError> {
    let (run, leader, port, key) = match what {
        "shout" => (
            "tree.shout.run",
            "tree.shout.leader",
            "tree.shout.data_port",
            "tree.shout.leader_key",
        ),
        _ => (
            "tree.adopt_offer.run",
            "tree.adopt_offer.leader",
            "tree.adopt_offer.data_port",
            "tree.adopt_offer.leader_key",
        ),
    };
    Ok(LeaderInfo {
        run: run_from_proto(s.run, run)?,
        leader: node_id(s.leader, leader)?,
        hops_from_root: s.hops_from_root,
        data_port: optional_port(s.data_port, port)?,
        cluster_size: s.cluster_size,
        leader_key: candidate_from_proto(s.leader_key, key)?,
    })
}

fn tree_to_proto(t: &Tree) -> proto::Tree {
    use proto::tree::Kind as K;
    let kind = match &t.kind {
        TreeKind::Shout(info) => K::Shout(shout_to_proto(info)),
        TreeKind::Answer { run, accepted } => K::Answer(proto::ShoutAnswer {
            run: Some(run_to_proto(*run)),
            accepted: *accepted,
        }),
        TreeKind::EpochTick {
            leader,
            data_port,
            run,
            leader_key,
            root_gone,
        } => K::EpochTick(proto::EpochTick {
            leader: *leader,
            data_port: u32::from(*data_port),
            run: Some(run_to_proto(*run)),
            leader_key: Some(candidate_to_proto(*leader_key)),
            root_gone: root_gone.map(tree_id_to_proto),
        }),
        TreeKind::ProbeAck {
            run,
            count,
            root_gone,
        } => K::ProbeAck(proto::ProbeAck {
            run: Some(run_to_proto(*run)),
            count: *count,
            root_gone: root_gone.map(tree_id_to_proto),
        }),
        TreeKind::AdoptRequest { run, leader } => K::AdoptRequest(proto::AdoptRequest {
            run: Some(run_to_proto(*run)),
            leader: *leader,
        }),
        TreeKind::AdoptOffer(info) => {
            let s = shout_to_proto(info);
            K::AdoptOffer(proto::AdoptOffer {
                leader: s.leader,
                run: s.run,
                hops_from_root: s.hops_from_root,
                data_port: s.data_port,
                cluster_size: s.cluster_size,
                leader_key: s.leader_key,
            })
        }
        TreeKind::Detach { run } => K::Detach(proto::Detach {
            run: Some(run_to_proto(*run)),
        }),
        TreeKind::Routes { input_nodes } => K::Routes(proto::Routes {
            input_nodes: input_nodes.clone(),
        }),
        TreeKind::Ack { seq } => K::Ack(proto::Ack { seq: *seq }),
    };
    proto::Tree {
        tree_epoch: t.tree_epoch,
        seq: t.seq,
        kind: Some(kind),
    }
}

fn tree_from_proto(t: proto::Tree) -> Result<Tree, DecodeError> {
    use proto::tree::Kind as K;
    let kind = match required(t.kind, "tree.kind")? {
        K::Shout(s) => TreeKind::Shout(leader_info_from_proto(s, "shout")?),
        K::Answer(a) => TreeKind::Answer {
            run: run_from_proto(a.run, "tree.answer.run")?,
            accepted: a.accepted,
        },
        K::EpochTick(e) => TreeKind::EpochTick {
            leader: node_id(e.leader, "tree.epoch_tick.leader")?,
            data_port: optional_port(e.data_port, "tree.epoch_tick.data_port")?,
            run: run_from_proto(e.run, "tree.epoch_tick.run")?,
            leader_key: candidate_from_proto(e.leader_key, "tree.epoch_tick.leader_key")?,
            root_gone: tree_id_from_proto(e.root_gone, "tree.epoch_tick.root_gone")?,
        },
        K::ProbeAck(a) => TreeKind::ProbeAck {
            run: run_from_proto(a.run, "tree.probe_ack.run")?,
            count: a.count,
            root_gone: tree_id_from_proto(a.root_gone, "tree.probe_ack.root_gone")?,
        },
        K::AdoptRequest(r) => TreeKind::AdoptRequest {
            run: run_from_proto(r.run, "tree.adopt_request.run")?,
            leader: node_id(r.leader, "tree.adopt_request.leader")?,
        },
        K::AdoptOffer(o) => TreeKind::AdoptOffer(leader_info_from_proto(
            proto::Shout {
                run: o.run,
                leader: o.leader,
                hops_from_root: o.hops_from_root,
                data_port: o.data_port,
                cluster_size: o.cluster_size,
                leader_key: o.leader_key,
            },
            "offer",
        )?),
        K::Detach(d) => TreeKind::Detach {
            run: run_from_proto(d.run, "tree.detach.run")?,
        },
        K::Routes(r) => {
            if r.input_nodes.contains(&0) {
                return Err(DecodeError::ZeroNodeId("tree.routes.input_nodes"));
            }
            TreeKind::Routes {
                input_nodes: r.input_nodes,
            }
        }
        K::Ack(a) => TreeKind::Ack { seq: a.seq },
    };
    Ok(Tree {
        tree_epoch: t.tree_epoch,
        seq: t.seq,
        kind,
    })
}
