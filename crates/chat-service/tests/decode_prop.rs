//! Property: any bytes from the data plane decode to a value or to `InvalidInput`, never a
//! panic; every request survives an encode/decode round trip.

use chat_service::{decode, encode, ChatRef, Page, Reply, Request, ServiceError};
use chat_store::SecretHash;
use proptest::prelude::*;
use uuid::Uuid;

fn request() -> impl Strategy<Value = Request> {
    let uuid = any::<u128>().prop_map(Uuid::from_u128);
    (uuid.clone(), uuid, ".*", ".*", any::<u32>(), any::<u64>()).prop_flat_map(
        |(a, b, text, other, limit, epoch)| {
            prop_oneof![
                Just(Request::Register {
                    request_id: a,
                    username: text.clone(),
                    tag: other.clone(),
                    password_hash: SecretHash::new(text.clone()),
                }),
                Just(Request::SendToGroup {
                    message_id: a,
                    acting_user: b,
                    group: a,
                    content: text.clone()
                }),
                Just(Request::ReadPrivate {
                    acting_user: a,
                    other: b,
                    page: Page::Since { epoch, limit }
                }),
                Just(Request::MarkRead {
                    request_id: a,
                    acting_user: b,
                    chat: ChatRef::Group(a),
                    read_epoch: epoch,
                }),
                Just(Request::Session { user: a }),
                Just(Request::EndSessions {
                    request_id: a,
                    acting_user: b,
                }),
                Just(Request::ReadGroup {
                    acting_user: a,
                    group: b,
                    page: Page::BeforeMessage { message: a, limit }
                }),
                Just(Request::AddMember {
                    request_id: a,
                    acting_user: b,
                    group: a,
                    username: text,
                    tag: other
                }),
            ]
        },
    )
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        match decode::<Request>(&bytes) {
            Ok(_) | Err(ServiceError::InvalidInput(_)) => {}
            Err(other) => prop_assert!(false, "unexpected error kind {other:?}"),
        }
        let _ = decode::<Result<Reply, ServiceError>>(&bytes);
    }

    #[test]
    fn requests_round_trip(request in request()) {
        let bytes = encode(&request).expect("encode");
        prop_assert_eq!(decode::<Request>(&bytes).expect("decode"), request);
    }
}
