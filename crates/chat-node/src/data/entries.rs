//! Between the store's log entries (one per group-commit batch) and the data plane's (one per
//! epoch), and between the store's change notices and the plane's opaque changes.

use chat_data::{Change, Entry as DataEntry, Position};
use chat_store::{ChangeNotice, Entry as StoreEntry, EntryId, Operation};

/// Why a data-plane entry is not a store entry.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EntryError {
    #[error("entry {epoch} holds no valid write: {reason}")]
    Malformed { epoch: u64, reason: String },
    #[error("entry {epoch} claims term {claimed} and epoch {claimed_epoch} inside")]
    Mismatch {
        epoch: u64,
        claimed: u64,
        claimed_epoch: u64,
    },
}

pub(crate) fn position(id: EntryId) -> Position {
    Position::new(id.term, id.epoch)
}

/// A batch the writer committed, as one data-plane entry per write.
pub(crate) fn split_batch(batch: &StoreEntry) -> Vec<DataEntry> {
    let first = batch.first_epoch();
    let last_index = batch.ops.len().saturating_sub(1);
    batch
        .ops
        .iter()
        .enumerate()
        .map(|(index, op)| {
            let epoch = first + index as u64;
            let one = StoreEntry {
                term: batch.term,
                epoch,
                ops: vec![op.clone()],
                // The batch's forgetting happens once, after its last write, as on the writer.
                forget_requests_through: if index == last_index {
                    batch.forget_requests_through
                } else {
                    None
                },
            };
            DataEntry {
                position: Position::new(batch.term, epoch),
                payload: encode_one(&one),
            }
        })
        .collect()
}

fn encode_one(entry: &StoreEntry) -> Vec<u8> {
    if entry.ops.len() == 1 && entry.ops[0].change == chat_store::Change::TermBarrier {
        return Vec::new();
    }
    // A store entry always serialises (plain data); an empty payload would read as a barrier,
    // so a failure here is a bug worth shouting about rather than hiding.
    serde_json::to_vec(entry).unwrap_or_else(|error| {
        tracing::error!(target: "storage", subsystem = "storage", %error, "cannot encode a log entry");
        b"{}".to_vec()
    })
}

/// The store entry a data-plane entry carries (the term barrier for an empty payload).
pub(crate) fn to_store(entry: &DataEntry) -> Result<StoreEntry, EntryError> {
    let Position { term, epoch } = entry.position;
    if entry.payload.is_empty() {
        return Ok(StoreEntry {
            term,
            epoch,
            ops: vec![Operation::term_barrier()],
            forget_requests_through: None,
        });
    }
    let inner: StoreEntry =
        serde_json::from_slice(&entry.payload).map_err(|e| EntryError::Malformed {
            epoch,
            reason: e.to_string(),
        })?;
    if inner.term != term || inner.epoch != epoch || inner.ops.len() != 1 {
        return Err(EntryError::Mismatch {
            epoch,
            claimed: inner.term,
            claimed_epoch: inner.epoch,
        });
    }
    Ok(inner)
}

pub(crate) fn change(notice: &ChangeNotice) -> Change {
    Change {
        epoch: notice.epoch,
        payload: serde_json::to_vec(notice).unwrap_or_default(),
    }
}

pub(crate) fn notice(change: &Change) -> Option<ChangeNotice> {
    serde_json::from_slice(&change.payload).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_store::Change as StoreChange;
    use uuid::Uuid;

    fn op(content: &str) -> Operation {
        Operation {
            request_id: Uuid::new_v4(),
            at_ms: 1,
            fingerprint: Default::default(),
            change: StoreChange::SendMessage {
                message_uuid: Uuid::new_v4(),
                sender_uuid: Uuid::new_v4(),
                recipient: chat_store::Recipient::User(Uuid::new_v4()),
                content: content.to_owned(),
            },
        }
    }

    #[test]
    fn a_notice_carries_its_message_and_one_from_an_older_writer_still_parses() {
        let message = op("hello").message(5).expect("a send");
        let whole = ChangeNotice {
            chat_id: message.chat_id.clone(),
            epoch: 5,
            message_uuid: message.uuid,
            audience: vec![message.sender_uuid],
            message: Some(message.clone()),
        };
        assert_eq!(notice(&change(&whole)), Some(whole));
        // What an older writer sent: the message named, not carried.
        let older = serde_json::json!({
            "chat_id": message.chat_id,
            "epoch": 5,
            "message_uuid": message.uuid,
            "audience": [message.sender_uuid],
        });
        let older = Change {
            epoch: 5,
            payload: serde_json::to_vec(&older).unwrap(),
        };
        let named = notice(&older).expect("parses");
        assert_eq!((named.message_uuid, named.message), (message.uuid, None));
    }

    #[test]
    fn a_batch_splits_into_one_entry_per_write_and_each_reads_back() {
        let batch = StoreEntry {
            term: 7,
            epoch: 12,
            ops: vec![op("a"), op("b"), op("c")],
            forget_requests_through: Some(4),
        };
        let entries = split_batch(&batch);
        let epochs: Vec<u64> = entries.iter().map(|e| e.position.epoch).collect();
        assert_eq!(epochs, vec![10, 11, 12]);
        let back: Vec<StoreEntry> = entries.iter().map(|e| to_store(e).unwrap()).collect();
        assert_eq!(back[0].ops, vec![batch.ops[0].clone()]);
        assert_eq!(back[0].forget_requests_through, None);
        assert_eq!(back[2].forget_requests_through, Some(4));
        assert!(back.iter().all(|e| e.term == 7));
    }

    #[test]
    fn an_empty_payload_is_the_term_barrier_and_a_lying_payload_is_refused() {
        let barrier = DataEntry {
            position: Position::new(3, 9),
            payload: Vec::new(),
        };
        let entry = to_store(&barrier).unwrap();
        assert_eq!(entry.ops[0].change, StoreChange::TermBarrier);
        assert_eq!(split_batch(&entry)[0].payload, Vec::<u8>::new());

        let real = split_batch(&StoreEntry {
            term: 3,
            epoch: 9,
            ops: vec![op("x")],
            forget_requests_through: None,
        })
        .remove(0);
        let moved = DataEntry {
            position: Position::new(3, 10),
            payload: real.payload,
        };
        assert!(matches!(to_store(&moved), Err(EntryError::Mismatch { .. })));
        let garbage = DataEntry {
            position: Position::new(3, 10),
            payload: b"not json".to_vec(),
        };
        assert!(matches!(
            to_store(&garbage),
            Err(EntryError::Malformed { .. })
        ));
    }
}
