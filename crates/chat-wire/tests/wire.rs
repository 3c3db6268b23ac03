//! The wire's contract: every well-formed envelope survives encode → decode unchanged, and
//! decoding any bytes at all yields a value or a [`DecodeError`], never a panic.

use chat_wire::proto;
use chat_wire::*;
use proptest::prelude::*;
use prost::Message as _;

// ---- strategies: one per wire type, producing only values the decoder accepts ------------

fn node_id() -> impl Strategy<Value = NodeId> {
    // Valid ids start at 1; bias towards small ids as clusters use them, but cover the range.
    prop_oneof![1..=64u64, 1..=u64::MAX]
}

fn control_port() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

fn data_port() -> impl Strategy<Value = u16> {
    // 0 is allowed: a node that serves no data plane yet advertises none.
    any::<u16>()
}

fn run_id() -> impl Strategy<Value = RunId> {
    (any::<u64>(), node_id()).prop_map(|(lamport, initiator)| RunId { lamport, initiator })
}

fn candidate() -> impl Strategy<Value = Candidate> {
    (any::<u64>(), any::<u64>(), node_id()).prop_map(|(last_term, data_epoch, node)| Candidate {
        last_term,
        data_epoch,
        node,
    })
}

fn tree_id() -> impl Strategy<Value = Option<TreeId>> {
    prop::option::of((run_id(), node_id()).prop_map(|(run, leader)| TreeId { run, leader }))
}

fn leader_info() -> impl Strategy<Value = LeaderInfo> {
    (
        run_id(),
        node_id(),
        any::<u32>(),
        data_port(),
        any::<u32>(),
        candidate(),
    )
        .prop_map(
            |(run, leader, hops_from_root, data_port, cluster_size, leader_key)| LeaderInfo {
                run,
                leader,
                hops_from_root,
                data_port,
                cluster_size,
                leader_key,
            },
        )
}

fn topology() -> impl Strategy<Value = Topology> {
    (
        prop_oneof![
            Just(HandshakeStep::Join),
            Just(HandshakeStep::JoinAck),
            Just(HandshakeStep::Ack)
        ],
        any::<bool>(),
        ".{0,40}",
        control_port(),
        any::<u64>(),
    )
        .prop_map(|(step, rejoin, host, control_port, incarnation)| Topology {
            step,
            rejoin,
            host,
            control_port,
            incarnation,
        })
}

fn heartbeat() -> impl Strategy<Value = Heartbeat> {
    any::<u64>().prop_map(|incarnation| Heartbeat { incarnation })
}

fn election() -> impl Strategy<Value = Election> {
    let kind = prop_oneof![
        candidate().prop_map(ElectionKind::Start),
        candidate().prop_map(ElectionKind::Proposal),
        (any::<bool>(), any::<bool>()).prop_map(|(yes, prune)| ElectionKind::Vote { yes, prune }),
    ];
    (run_id(), any::<u32>(), any::<u32>(), kind).prop_map(|(run, round, cluster_size, kind)| {
        Election {
            run,
            round,
            cluster_size,
            kind,
        }
    })
}

fn tree_kind() -> impl Strategy<Value = TreeKind> {
    prop_oneof![
        leader_info().prop_map(TreeKind::Shout),
        (run_id(), any::<bool>()).prop_map(|(run, accepted)| TreeKind::Answer { run, accepted }),
        (node_id(), data_port(), run_id(), candidate(), tree_id()).prop_map(
            |(leader, data_port, run, leader_key, root_gone)| TreeKind::EpochTick {
                leader,
                data_port,
                run,
                leader_key,
                root_gone,
            }
        ),
        (run_id(), any::<u32>(), tree_id()).prop_map(|(run, count, root_gone)| {
            TreeKind::ProbeAck {
                run,
                count,
                root_gone,
            }
        }),
        (run_id(), node_id()).prop_map(|(run, leader)| TreeKind::AdoptRequest { run, leader }),
        leader_info().prop_map(TreeKind::AdoptOffer),
        run_id().prop_map(|run| TreeKind::Detach { run }),
        prop::collection::vec(node_id(), 0..8)
            .prop_map(|input_nodes| TreeKind::Routes { input_nodes }),
        any::<u64>().prop_map(|seq| TreeKind::Ack { seq }),
    ]
}

fn tree() -> impl Strategy<Value = Tree> {
    (any::<u64>(), any::<u64>(), tree_kind()).prop_map(|(tree_epoch, seq, kind)| Tree {
        tree_epoch,
        seq,
        kind,
    })
}

fn data() -> impl Strategy<Value = Data> {
    (
        prop_oneof![
            Just(DataKind::Request),
            Just(DataKind::Response),
            Just(DataKind::Replicate),
            Just(DataKind::SnapshotRequest),
            Just(DataKind::Snapshot),
        ],
        ".{0,36}",
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        prop::collection::vec(any::<u8>(), 0..256),
    )
        .prop_map(
            |(kind, correlation_id, origin, target, epoch, payload)| Data {
                kind,
                correlation_id,
                origin,
                target,
                epoch,
                payload,
            },
        )
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        topology().prop_map(Body::Topology),
        heartbeat().prop_map(Body::Heartbeat),
        election().prop_map(Body::Election),
        tree().prop_map(Body::Tree),
        data().prop_map(Body::Data),
    ]
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (node_id(), node_id(), any::<u64>(), body()).prop_map(|(source, destination, lamport, body)| {
        Envelope::new(source, destination, lamport, body)
    })
}

/// A valid encoding damaged the ways a network or a buggy peer damages bytes.
#[derive(Debug, Clone)]
enum Damage {
    Truncate(prop::sample::Index),
    FlipBit(prop::sample::Index, u8),
    Overwrite(prop::sample::Index, u8),
    Insert(prop::sample::Index, Vec<u8>),
    AppendGarbage(Vec<u8>),
}

fn damage() -> impl Strategy<Value = Vec<Damage>> {
    let one = prop_oneof![
        any::<prop::sample::Index>().prop_map(Damage::Truncate),
        (any::<prop::sample::Index>(), 0..8u8).prop_map(|(i, b)| Damage::FlipBit(i, b)),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, v)| Damage::Overwrite(i, v)),
        (
            any::<prop::sample::Index>(),
            prop::collection::vec(any::<u8>(), 1..8)
        )
            .prop_map(|(i, v)| Damage::Insert(i, v)),
        prop::collection::vec(any::<u8>(), 1..16).prop_map(Damage::AppendGarbage),
    ];
    prop::collection::vec(one, 1..4)
}

fn apply(mut bytes: Vec<u8>, damages: &[Damage]) -> Vec<u8> {
    for damage in damages {
        match damage {
            Damage::Truncate(at) => {
                let keep = at.index(bytes.len() + 1);
                bytes.truncate(keep);
            }
            Damage::FlipBit(at, bit) if !bytes.is_empty() => {
                let i = at.index(bytes.len());
                bytes[i] ^= 1 << bit;
            }
            Damage::Overwrite(at, value) if !bytes.is_empty() => {
                let i = at.index(bytes.len());
                bytes[i] = *value;
            }
            Damage::Insert(at, extra) => {
                let i = at.index(bytes.len() + 1);
                bytes.splice(i..i, extra.iter().copied());
            }
            Damage::AppendGarbage(extra) => bytes.extend_from_slice(extra),
            Damage::FlipBit(..) | Damage::Overwrite(..) => {}
        }
    }
    bytes
}

/// Whatever `decode` accepts must be a fixed point of encode → decode: the checked view never
/// holds a value it could not send again.
fn assert_accepted_values_are_stable(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(envelope) = Envelope::decode(bytes) {
        prop_assert_eq!(Envelope::decode(&envelope.encode()), Ok(envelope));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn every_envelope_round_trips_unchanged(envelope in envelope()) {
        let bytes = envelope.encode();
        prop_assert_eq!(Envelope::decode(&bytes), Ok(envelope));
    }

    #[test]
    fn arbitrary_bytes_decode_to_a_value_or_an_error(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        assert_accepted_values_are_stable(&bytes)?;
    }

    #[test]
    fn damaged_valid_encodings_decode_to_a_value_or_an_error(
        envelope in envelope(),
        damages in damage(),
    ) {
        let bytes = apply(envelope.encode(), &damages);
        assert_accepted_values_are_stable(&bytes)?;
    }

    #[test]
    fn every_proper_prefix_of_an_encoding_is_rejected_or_stable(envelope in envelope()) {
        let bytes = envelope.encode();
        for len in 0..bytes.len() {
            assert_accepted_values_are_stable(&bytes[..len])?;
        }
    }
}

// ---- specific rejections: each check of the decoder, shown once ------------------------

fn valid_heartbeat_proto() -> proto::Envelope {
    proto::Envelope {
        header: Some(proto::Header {
            protocol_version: PROTOCOL_VERSION,
            source: 1,
            destination: 2,
            scope: proto::Scope::Heartbeat as i32,
            lamport: 7,
        }),
        body: Some(proto::envelope::Body::Heartbeat(proto::Heartbeat {
            incarnation: 9,
        })),
    }
}

fn valid_topology_proto() -> proto::Envelope {
    proto::Envelope {
        header: Some(proto::Header {
            scope: proto::Scope::Topology as i32,
            ..valid_heartbeat_proto().header.unwrap_or_default()
        }),
        body: Some(proto::envelope::Body::Topology(proto::Topology {
            step: proto::HandshakeStep::Join as i32,
            rejoin: false,
            host: "127.0.0.1".into(),
            control_port: 46_001,
            incarnation: 3,
        })),
    }
}

fn decode_proto(raw: proto::Envelope) -> Result<Envelope, DecodeError> {
    Envelope::decode(&raw.encode_to_vec())
}

fn with_header(mut raw: proto::Envelope, edit: impl FnOnce(&mut proto::Header)) -> proto::Envelope {
    if let Some(header) = raw.header.as_mut() {
        edit(header);
    }
    raw
}

fn with_topology(
    mut raw: proto::Envelope,
    edit: impl FnOnce(&mut proto::Topology),
) -> proto::Envelope {
    if let Some(proto::envelope::Body::Topology(t)) = raw.body.as_mut() {
        edit(t);
    }
    raw
}

#[test]
fn the_raw_fixtures_are_themselves_valid() {
    // Guards every rejection test below: each changes exactly one thing in a valid message.
    assert!(decode_proto(valid_heartbeat_proto()).is_ok());
    assert!(decode_proto(valid_topology_proto()).is_ok());
}

#[test]
fn empty_input_is_rejected_as_missing_header() {
    assert_eq!(Envelope::decode(&[]), Err(DecodeError::MissingHeader));
}

#[test]
fn envelope_without_header_is_rejected() {
    let raw = proto::Envelope {
        header: None,
        ..valid_heartbeat_proto()
    };
    assert_eq!(decode_proto(raw), Err(DecodeError::MissingHeader));
}

#[test]
fn other_protocol_versions_are_rejected() {
    for version in [0, PROTOCOL_VERSION + 1, u32::MAX] {
        let raw = with_header(valid_heartbeat_proto(), |h| h.protocol_version = version);
        assert_eq!(
            decode_proto(raw),
            Err(DecodeError::UnsupportedVersion(version))
        );
    }
}

#[test]
fn header_scope_must_match_the_body() {
    let raw = with_header(valid_heartbeat_proto(), |h| {
        h.scope = proto::Scope::Election as i32
    });
    assert_eq!(
        decode_proto(raw),
        Err(DecodeError::ScopeMismatch {
            header: Some(Scope::Election),
            body: Scope::Heartbeat,
        })
    );
}

#[test]
fn unspecified_or_unknown_header_scope_is_a_mismatch() {
    for scope in [proto::Scope::Unspecified as i32, 99] {
        let raw = with_header(valid_heartbeat_proto(), |h| h.scope = scope);
        assert_eq!(
            decode_proto(raw),
            Err(DecodeError::ScopeMismatch {
                header: None,
                body: Scope::Heartbeat,
            })
        );
    }
}

#[test]
fn node_id_zero_is_rejected_in_the_header() {
    let raw = with_header(valid_heartbeat_proto(), |h| h.source = 0);
    assert_eq!(
        decode_proto(raw),
        Err(DecodeError::ZeroNodeId("header.source"))
    );
    let raw = with_header(valid_heartbeat_proto(), |h| h.destination = 0);
    assert_eq!(
        decode_proto(raw),
        Err(DecodeError::ZeroNodeId("header.destination"))
    );
}

#[test]
fn node_id_zero_is_rejected_inside_bodies() {
    let raw = proto::Envelope {
        header: Some(proto::Header {
            scope: proto::Scope::Tree as i32,
            ..valid_heartbeat_proto().header.unwrap_or_default()
        }),
        body: Some(proto::envelope::Body::Tree(proto::Tree {
            tree_epoch: 1,
            seq: 0,
            kind: Some(proto::tree::Kind::Routes(proto::Routes {
                input_nodes: vec![3, 0],
            })),
        })),
    };
    assert_eq!(
        decode_proto(raw),
        Err(DecodeError::ZeroNodeId("tree.routes.input_nodes"))
    );
}

#[test]
fn control_port_zero_or_beyond_16_bits_is_rejected() {
    for value in [0, 65_536, u32::MAX] {
        let raw = with_topology(valid_topology_proto(), |t| t.control_port = value);
        assert_eq!(
            decode_proto(raw),
            Err(DecodeError::BadPort {
                field: "topology.control_port",
                value,
            })
        );
    }
}

#[test]
fn unknown_handshake_step_is_rejected() {
    for value in [proto::HandshakeStep::Unspecified as i32, 42, -1] {
        let raw = with_topology(valid_topology_proto(), |t| t.step = value);
        assert_eq!(
            decode_proto(raw),
            Err(DecodeError::UnknownEnumValue {
                field: "topology.step",
                value,
            })
        );
    }
}

#[test]
fn missing_required_sub_message_is_named() {
    let raw = proto::Envelope {
        header: Some(proto::Header {
            scope: proto::Scope::Election as i32,
            ..valid_heartbeat_proto().header.unwrap_or_default()
        }),
        body: Some(proto::envelope::Body::Election(proto::Election {
            run: None,
            round: 0,
            cluster_size: 1,
            kind: Some(proto::election::Kind::Vote(proto::Vote {
                yes: true,
                prune: false,
            })),
        })),
    };
    assert_eq!(
        decode_proto(raw),
        Err(DecodeError::MissingField("election.run"))
    );
}

#[test]
fn envelope_with_no_known_body_is_unknown_not_malformed() {
    // What a newer node's new oneof arm looks like to this build: a header and nothing else.
    let raw = proto::Envelope {
        body: None,
        ..valid_heartbeat_proto()
    };
    let mut bytes = raw.encode_to_vec();
    // Field 15, length-delimited, 2 bytes: an arm this build does not know.
    bytes.extend_from_slice(&[(15 << 3) | 2, 2, 0x08, 0x01]);
    assert_eq!(Envelope::decode(&bytes), Err(DecodeError::UnknownBody));
}

#[test]
fn bytes_that_are_not_protobuf_are_malformed() {
    // A length-delimited field claiming more bytes than there are.
    let result = Envelope::decode(&[0x0a, 0x7f, 0x01]);
    assert!(
        matches!(result, Err(DecodeError::Malformed(_))),
        "{result:?}"
    );
}

#[test]
fn oversized_input_is_rejected_before_parsing() {
    let bytes = vec![0u8; MAX_ENVELOPE_BYTES + 1];
    assert_eq!(
        Envelope::decode(&bytes),
        Err(DecodeError::TooLarge {
            len: MAX_ENVELOPE_BYTES + 1,
            max: MAX_ENVELOPE_BYTES,
        })
    );
}
