//! The change feed: committed messages announced to the live-update streams of this input node.
//!
//! The data plane calls [`ChangeFeed::publish`] for every message the writer commits, in epoch
//! order, with the chat's audience at commit time. Each `GET /api/events` stream subscribes and
//! forwards the messages whose audience holds its user. The feed keeps the newest changes so a
//! stream that reconnects with `Last-Event-ID: N` gets what it missed after N; when the feed no
//! longer reaches back to N (the node started later, or N is too old), the stream says `reset`
//! and the client reloads its chat instead.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use chat_service::{Epoch, Message, User};
use tokio::sync::broadcast;
use uuid::Uuid;

/// One committed message and who may see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatChange {
    /// The chat: a group's id, or the private chat id.
    pub chat_id: String,
    /// The epoch the message committed at.
    pub epoch: Epoch,
    /// The users who see the chat at commit time: both ends of a private chat, a group's
    /// members.
    pub audience: Vec<Uuid>,
    /// The message.
    pub message: Message,
    /// Its author (so a stream need not look the name up).
    pub sender: User,
}

impl ChatChange {
    /// Whether `user` may see this change.
    pub fn visible_to(&self, user: Uuid) -> bool {
        self.audience.contains(&user)
    }
}

/// How many changes the feed keeps for resuming streams unless told otherwise.
pub const DEFAULT_RESUME_BUFFER: usize = 4096;

#[derive(Debug)]
struct Recent {
    changes: VecDeque<Arc<ChatChange>>,
    /// Every change after this epoch is in `changes` (or was never published).
    complete_after: Epoch,
}

#[derive(Debug)]
struct Inner {
    sender: broadcast::Sender<Arc<ChatChange>>,
    recent: Mutex<Recent>,
    capacity: usize,
}

/// Cheap to clone; every clone is the same feed.
#[derive(Debug, Clone)]
pub struct ChangeFeed {
    inner: Arc<Inner>,
}

/// What a stream that starts or resumes gets first.
#[derive(Debug)]
pub enum Resume {
    /// Everything after the asked-for epoch, oldest first (may be empty).
    Complete(Vec<Arc<ChatChange>>),
    /// The feed does not reach back that far: the client must reload.
    Incomplete,
}

impl ChangeFeed {
    /// A feed keeping the newest `capacity` changes, complete for every epoch after
    /// `current_epoch` (the node's data epoch when the feed starts).
    pub fn new(capacity: usize, current_epoch: Epoch) -> Self {
        let capacity = capacity.max(1);
        let (sender, _) = broadcast::channel(capacity);
        Self {
            inner: Arc::new(Inner {
                sender,
                recent: Mutex::new(Recent {
                    changes: VecDeque::with_capacity(capacity.min(1024)),
                    complete_after: current_epoch,
                }),
                capacity,
            }),
        }
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        // A panic while holding the lock leaves the buffer consistent (each step is one
        // push or pop), so a poisoned lock is still usable.
        self.inner
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Announces a committed message. Call in epoch order; an epoch at or below the newest
    /// published is ignored (a duplicate notification after a failover).
    pub fn publish(&self, change: ChatChange) {
        let change = Arc::new(change);
        let mut recent = self.recent();
        let newest = recent
            .changes
            .back()
            .map_or(recent.complete_after, |last| last.epoch);
        if change.epoch <= newest {
            return;
        }
        if recent.changes.len() == self.inner.capacity {
            if let Some(dropped) = recent.changes.pop_front() {
                recent.complete_after = dropped.epoch;
            }
        }
        recent.changes.push_back(Arc::clone(&change));
        // Sent under the lock, so a subscriber sees each change either in its resume list or
        // on its receiver, never both and never neither. No receivers is fine.
        let _ = self.inner.sender.send(change);
    }

    /// Subscribes to new changes and returns those after `after` (when given) that `user` may
    /// see.
    pub fn subscribe(
        &self,
        user: Uuid,
        after: Option<Epoch>,
    ) -> (broadcast::Receiver<Arc<ChatChange>>, Resume) {
        let recent = self.recent();
        let receiver = self.inner.sender.subscribe();
        let resume = match after {
            None => Resume::Complete(Vec::new()),
            Some(after) => Self::since_locked(&recent, user, after),
        };
        (receiver, resume)
    }

    /// The changes after `after` that `user` may see, if the feed still holds them all.
    pub fn since(&self, user: Uuid, after: Epoch) -> Resume {
        Self::since_locked(&self.recent(), user, after)
    }

    fn since_locked(recent: &Recent, user: Uuid, after: Epoch) -> Resume {
        if after < recent.complete_after {
            return Resume::Incomplete;
        }
        Resume::Complete(
            recent
                .changes
                .iter()
                .filter(|change| change.epoch > after && change.visible_to(user))
                .cloned()
                .collect(),
        )
    }

    /// Live-update streams currently subscribed.
    pub fn subscribers(&self) -> usize {
        self.inner.sender.receiver_count()
    }
}

#[cfg(test)]
mod tests {
    use chat_service::Recipient;

    use super::*;

    fn change(epoch: Epoch, audience: &[Uuid]) -> ChatChange {
        let sender = User {
            uuid: audience[0],
            username: "a".into(),
            tag: "123".into(),
            created_at_ms: 0,
            deleted_at_ms: None,
            epoch: 1,
            session_version: 0,
        };
        ChatChange {
            chat_id: "chat".into(),
            epoch,
            audience: audience.to_vec(),
            message: Message {
                uuid: Uuid::new_v4(),
                chat_id: "chat".into(),
                sender_uuid: sender.uuid,
                recipient: Recipient::User(sender.uuid),
                content: format!("m{epoch}"),
                created_at_ms: 0,
                epoch,
            },
            sender,
        }
    }

    fn epochs(resume: Resume) -> Option<Vec<Epoch>> {
        match resume {
            Resume::Complete(changes) => Some(changes.iter().map(|c| c.epoch).collect()),
            Resume::Incomplete => None,
        }
    }

    #[test]
    fn resume_returns_what_the_user_missed_while_the_buffer_reaches_back() {
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let feed = ChangeFeed::new(3, 10);
        assert_eq!(
            epochs(feed.since(alice, 9)),
            None,
            "before the feed started"
        );
        feed.publish(change(11, &[alice, bob]));
        feed.publish(change(12, &[bob]));
        feed.publish(change(12, &[alice]));
        feed.publish(change(13, &[alice]));
        assert_eq!(
            epochs(feed.since(alice, 10)),
            Some(vec![11, 13]),
            "the duplicate 12 is ignored"
        );
        assert_eq!(epochs(feed.since(bob, 11)), Some(vec![12]));
        feed.publish(change(14, &[alice]));
        assert_eq!(epochs(feed.since(alice, 10)), None, "11 was evicted");
        assert_eq!(epochs(feed.since(alice, 11)), Some(vec![13, 14]));
        assert_eq!(epochs(feed.since(alice, 99)), Some(vec![]));
    }

    #[tokio::test]
    async fn subscribers_get_new_changes_after_their_resume_list() {
        let alice = Uuid::new_v4();
        let feed = ChangeFeed::new(8, 0);
        feed.publish(change(1, &[alice]));
        let (mut receiver, resume) = feed.subscribe(alice, Some(0));
        assert_eq!(epochs(resume), Some(vec![1]));
        feed.publish(change(2, &[alice]));
        assert_eq!(receiver.recv().await.unwrap().epoch, 2);
        assert_eq!(feed.subscribers(), 1);
    }
}
