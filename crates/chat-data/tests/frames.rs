//! Frames: every kind round-trips, and any bytes decode to a frame or a typed error.

use chat_data::{
    proto, Body, Change, DecodeError, Entry, Frame, Position, Request, RequestId, RequestKind,
    Response, RetryableError, SnapshotChunk, TermRun, WriterSeen,
};
use proptest::prelude::*;
use prost::Message as _;

fn request_id() -> impl Strategy<Value = RequestId> {
    (1u64..100, any::<u64>()).prop_map(|(origin, seq)| RequestId { origin, seq })
}

fn retryable() -> impl Strategy<Value = RetryableError> {
    prop_oneof![
        Just(RetryableError::NotWritable),
        Just(RetryableError::NoWriter),
        (any::<u64>(), any::<u64>()).prop_map(|(have, want)| RetryableError::Behind { have, want }),
        Just(RetryableError::Unavailable),
        Just(RetryableError::Storage),
    ]
}

fn body() -> impl Strategy<Value = Body> {
    let bytes = || proptest::collection::vec(any::<u8>(), 0..40);
    prop_oneof![
        (request_id(), any::<u64>(), 0..3u8, any::<bool>(), bytes()).prop_map(
            |(id, min_epoch, kind, confirm, payload)| Body::Request(Request {
                id,
                min_epoch,
                kind: [RequestKind::Read, RequestKind::Write, RequestKind::Probe][kind as usize],
                confirm,
                payload,
            })
        ),
        (
            request_id(),
            any::<u64>(),
            0..3u8,
            prop_oneof![bytes().prop_map(Ok), retryable().prop_map(Err)]
        )
            .prop_map(|(id, epoch, writer, outcome)| Body::Response(Response {
                id,
                epoch,
                writer: [
                    WriterSeen::Unknown,
                    WriterSeen::Writable,
                    WriterSeen::NotWritable
                ][writer as usize],
                outcome,
            })),
        (
            0u64..5,
            0u64..1000,
            proptest::collection::vec((0u64..5, bytes()), 0..5),
            any::<u64>()
        )
            .prop_map(|(term, epoch, entries, commit)| Body::Entries {
                prev: Position::new(term, epoch),
                entries: entries
                    .into_iter()
                    .enumerate()
                    .map(|(i, (term, payload))| Entry {
                        position: Position::new(term, epoch + 1 + i as u64),
                        payload,
                    })
                    .collect(),
                commit,
            }),
        proptest::collection::vec((1u64..50, any::<u64>()), 0..6).prop_map(Body::Durable),
        (
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec((any::<u64>(), any::<u64>()), 0..4)
        )
            .prop_map(|(last, commit, runs)| Body::CatchUp {
                last,
                commit,
                runs: runs
                    .into_iter()
                    .map(|(term, first_epoch)| TermRun { term, first_epoch })
                    .collect(),
            }),
        (any::<u64>(), any::<u64>()).prop_map(|(term, epoch)| Body::SnapshotOffer {
            base: Position::new(term, epoch)
        }),
        (any::<u64>(), any::<u64>()).prop_map(|(snapshot_id, offset)| Body::SnapshotRequest {
            snapshot_id,
            offset
        }),
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            bytes(),
            any::<bool>()
        )
            .prop_map(
                |(snapshot_id, epoch, offset, data, done)| Body::SnapshotChunk(SnapshotChunk {
                    snapshot_id,
                    base: Position::new(1, epoch),
                    offset,
                    data,
                    done,
                })
            ),
        proptest::collection::vec(
            (any::<u64>(), proptest::collection::vec(any::<u8>(), 0..16)),
            0..4
        )
        .prop_map(|changes| Body::Changes(
            changes
                .into_iter()
                .map(|(epoch, payload)| Change { epoch, payload })
                .collect()
        )),
    ]
}

proptest! {
    #[test]
    fn every_frame_round_trips(term in any::<u64>(), body in body()) {
        let frame = Frame::new(term, body);
        prop_assert_eq!(Frame::decode(&frame.encode()), Ok(frame));
    }

    #[test]
    fn any_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Frame::decode(&bytes);
    }

    #[test]
    fn mutated_frames_decode_or_fail_cleanly(
        term in any::<u64>(),
        body in body(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = Frame::new(term, body).encode();
        for (at, value) in flips {
            if !bytes.is_empty() {
                let at = at % bytes.len();
                bytes[at] = value;
            }
        }
        let _ = Frame::decode(&bytes);
    }
}

#[test]
fn malformed_frames_get_typed_errors() {
    assert!(matches!(
        Frame::decode(&[0xff, 0xff, 0xff]),
        Err(DecodeError::Malformed(_))
    ));
    let version = proto::Frame {
        protocol_version: 9,
        term: 1,
        body: None,
    };
    assert_eq!(
        Frame::decode(&version.encode_to_vec()),
        Err(DecodeError::UnsupportedVersion(9))
    );
    let no_body = proto::Frame {
        protocol_version: 1,
        term: 1,
        body: None,
    };
    assert_eq!(
        Frame::decode(&no_body.encode_to_vec()),
        Err(DecodeError::UnknownBody)
    );
    let gap = proto::Frame {
        protocol_version: 1,
        term: 1,
        body: Some(proto::frame::Body::Entries(proto::Entries {
            prev: Some(proto::Position { term: 1, epoch: 3 }),
            entries: vec![proto::Entry {
                term: 1,
                epoch: 5,
                payload: vec![],
            }],
            commit: 0,
        })),
    };
    assert_eq!(
        Frame::decode(&gap.encode_to_vec()),
        Err(DecodeError::NotConsecutive { prev: 3 })
    );
    let zero_origin = proto::Frame {
        protocol_version: 1,
        term: 1,
        body: Some(proto::frame::Body::Request(proto::Request {
            id: Some(proto::RequestId { origin: 0, seq: 1 }),
            min_epoch: 0,
            kind: proto::RequestKind::Read as i32,
            confirm: false,
            payload: vec![],
        })),
    };
    assert_eq!(
        Frame::decode(&zero_origin.encode_to_vec()),
        Err(DecodeError::ZeroNodeId("request.id"))
    );
    let too_large = vec![0u8; chat_data::MAX_FRAME_BYTES + 1];
    assert!(matches!(
        Frame::decode(&too_large),
        Err(DecodeError::TooLarge { .. })
    ));
}
