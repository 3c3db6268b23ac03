//! The messages chat-system nodes exchange, and their encoding.
//!
//! Every message is an [`Envelope`]: a [`Header`] (source, destination, [`Scope`], Lamport
//! time) and a [`Body`] with one type per scope. On the wire an envelope is one protobuf
//! message (`proto/cluster.proto`), one ZeroMQ frame. Protobuf keeps the encoding compact and
//! lets later versions add fields and message kinds that older nodes skip.
//!
//! The types here are the checked, domain-level view: [`Envelope::decode`] turns any bytes
//! into either a well-formed envelope or a [`DecodeError`] saying what was wrong. It never
//! panics, whatever the input (a property test feeds it arbitrary bytes).

mod codec;
mod types;

pub use codec::{DecodeError, MAX_ENVELOPE_BYTES};
pub use types::*;

/// The wire version this build speaks; envelopes with another version are rejected.
pub const PROTOCOL_VERSION: u32 = 1;

/// Generated protobuf types. Public so tests and tools can build raw (even malformed)
/// messages; regular code uses the domain types.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/chat.cluster.v1.rs"));
}
