//! Every call from the HTTP layer into the chat service, in one place.
//!
//! [`Backend`] is exactly what the handlers need, in the shapes the API answers with (the
//! `*View` types are the JSON bodies). [`ServiceBackend`] implements it over any
//! [`chat_service::Dispatcher`] (the local service on one node, the data-plane proxy on an
//! input node). Where today's service lacks an operation, the implementation composes it from
//! what exists and says so (`GAP:`), so that adapting to a richer service touches this file
//! only.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chat_service::{
    AuthService, ChatRef, Dispatcher, Epoch, GroupService, MessageService, Page, Reply, Request,
    Response, ServiceError, UserService,
};
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{ApiError, ErrorCode};
use crate::feed::{ChangeFeed, ChatChange};
use crate::recent::RecentReads;

/// The logged-in user a request acts for, as its token or cookie names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// User id.
    pub id: Uuid,
    /// Name part.
    pub username: String,
    /// Tag part.
    pub tag: String,
}

impl Actor {
    /// The actor as a user body.
    pub fn view(&self) -> UserView {
        UserView {
            id: self.id,
            username: self.username.clone(),
            tag: self.tag.clone(),
        }
    }
}

/// A user body: `{id, username, tag}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserView {
    /// User id.
    pub id: Uuid,
    /// Name part.
    pub username: String,
    /// Tag part (text: `0123` is not `123`).
    pub tag: String,
}

/// A group body: `{id, name, owner: user, created_at}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupView {
    /// Group id.
    pub id: Uuid,
    /// Display name.
    pub name: String,
    /// The member who may remove others and delete the group.
    pub owner: UserView,
    /// RFC 3339, UTC.
    pub created_at: String,
}

/// A message body: `{id, chat_id, sender: user, content, created_at, epoch}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageView {
    /// Message id (client-chosen when the client sent one).
    pub id: Uuid,
    /// The chat: a group's id or the private chat id.
    pub chat_id: String,
    /// The author.
    pub sender: UserView,
    /// The text, as stored (trimmed).
    pub content: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// The epoch it committed at (also its event id on the live stream).
    pub epoch: Epoch,
}

/// A chat page: its id and messages, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessages {
    /// The chat id.
    pub chat_id: String,
    /// Oldest first.
    pub messages: Vec<MessageView>,
    /// The caller's read position in the chat when the page was read (0: never read).
    #[serde(skip)]
    pub read_epoch: Epoch,
}

impl ChatMessages {
    /// The epoch `reader`'s position should move to for having been shown this page: its
    /// newest message from someone else, when that is past the position (None: nothing new
    /// was shown; one's own messages are never unread, so they move nothing).
    pub fn unread_through(&self, reader: Uuid) -> Option<Epoch> {
        self.messages
            .iter()
            .rev()
            .find(|message| message.sender.id != reader)
            .map(|newest| newest.epoch)
            .filter(|&newest| newest > self.read_epoch)
    }
}

/// A successful login: the user and the session version their token or cookie carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// The user.
    pub user: UserView,
    /// Their session version when the credentials were read.
    pub session_version: u64,
}

/// A private chat with the other user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PrivateChat {
    /// The other user.
    pub other: UserView,
    /// The page.
    pub chat: ChatMessages,
}

/// A group chat with its group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupChat {
    /// The group.
    pub group: GroupView,
    /// The page.
    pub chat: ChatMessages,
}

/// A profile: the user and the groups the caller shares with them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Profile {
    /// The user.
    pub user: UserView,
    /// Groups both the caller and the user are members of.
    pub groups: Vec<GroupView>,
}

/// A group with its members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupDetail {
    /// The group.
    pub group: GroupView,
    /// Its members, in joining order.
    pub members: Vec<UserView>,
}

/// One entry of the caller's chat list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChatSummary {
    /// A private chat.
    Private {
        /// The chat id.
        chat_id: String,
        /// The other user.
        user: UserView,
        /// The newest message.
        newest: Option<MessageView>,
        /// Messages not yet read by the caller.
        unread: u64,
    },
    /// A group.
    Group {
        /// The chat id (the group id).
        chat_id: String,
        /// The group.
        group: GroupView,
        /// The newest message, if any.
        newest: Option<MessageView>,
        /// Messages not yet read by the caller.
        unread: u64,
    },
}

/// Which messages of a chat: the newest `limit`, or the `limit` before message `before`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatQuery {
    /// A message id in the chat; `None` for the newest.
    pub before: Option<Uuid>,
    /// 1 to 200.
    pub limit: u32,
}

/// An answer and the epoch it reflects. `replayed` is true when a write's id had been applied
/// before: the stored result is returned and nothing was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer<T> {
    /// The value.
    pub value: T,
    /// The epoch it reflects.
    pub epoch: Epoch,
    /// A write recognised as a retry.
    pub replayed: bool,
}

type Outcome<T> = Result<Answer<T>, ApiError>;

/// One read of a chat page, boxed so the private and group reads share the paging code.
type ChatRead<'a> = std::pin::Pin<
    Box<dyn Future<Output = Result<Reply<chat_service::ChatPage>, ServiceError>> + Send + 'a>,
>;

/// The operations behind the API and the pages. Every method maps service errors to
/// [`ApiError`] codes; `min_epoch` is the newest epoch the client has seen.
pub trait Backend: Send + Sync + 'static {
    /// Creates an account.
    fn register(
        &self,
        request_id: Uuid,
        username: &str,
        tag: &str,
        password: &str,
    ) -> impl Future<Output = Outcome<UserView>> + Send;

    /// Checks credentials: wrong ones are `unauthenticated`.
    fn login(
        &self,
        username: &str,
        tag: &str,
        password: &str,
        min_epoch: Epoch,
    ) -> impl Future<Output = Outcome<Login>> + Send;

    /// The user's session version, reflecting at least `min_epoch` and whatever this node
    /// has seen: tokens carrying an older one are ended. A deleted account is
    /// `unauthenticated`.
    fn session_version(
        &self,
        user: Uuid,
        min_epoch: Epoch,
    ) -> impl Future<Output = Result<u64, ApiError>> + Send;

    /// Ends every session of the caller (logout, a replicated write); answers the new
    /// session version at the write's epoch.
    fn end_sessions(
        &self,
        request_id: Uuid,
        actor: &Actor,
    ) -> impl Future<Output = Outcome<u64>> + Send;

    /// Moves the caller's read position in `chat` forward to `read_epoch`; answers the
    /// position after the change (never lower than before).
    fn mark_read(
        &self,
        request_id: Uuid,
        actor: &Actor,
        chat: ChatRef,
        read_epoch: Epoch,
    ) -> impl Future<Output = Outcome<Epoch>> + Send;

    /// Live users called exactly `name`.
    fn search_users(
        &self,
        actor: &Actor,
        name: &str,
        min_epoch: Epoch,
    ) -> impl Future<Output = Outcome<Vec<UserView>>> + Send;

    /// `name#tag` and the groups the caller shares with them.
    fn profile(
        &self,
        actor: &Actor,
        name: &str,
        tag: &str,
        min_epoch: Epoch,
    ) -> impl Future<Output = Outcome<Profile>> + Send;

    /// Deletes `user`, which must be the caller.
    fn delete_account(
        &self,
        request_id: Uuid,
        actor: &Actor,
        user: Uuid,
    ) -> impl Future<Output = Outcome<()>> + Send;

    /// The caller's private chats and groups, each with its newest message and unread count.
    fn chats(
        &self,
        actor: &Actor,
        min_epoch: Epoch,
    ) -> impl Future<Output = Outcome<Vec<ChatSummary>>> + Send;

    /// A page of the private chat with `name#tag`.
    fn read_private(
        &self,
        actor: &Actor,
        name: &str,
        tag: &str,
        query: ChatQuery,
        min_epoch: Epoch,
    ) -> impl Future<Output = Outcome<PrivateChat>> + Send;

    /// Sends a private message to `name#tag`.
    fn send_private(
        &self,
        message_id: Uuid,
        actor: &Actor,
        name: &str,
        tag: &str,
        content: &str,
    ) -> impl Future<Output = Outcome<MessageView>> + Send;

    /// Creates a group owned by the caller.
    fn create_group(
        &self,
        request_id: Uuid,
        actor: &Actor,
        name: &str,
    ) -> impl Future<Output = Outcome<GroupView>> + Send;

    /// A group and its members (members only).
    fn group(
        &self,
        actor: &Actor,
        group: Uuid,
        min_epoch: Epoch,
    ) -> impl Future<Output = Outcome<GroupDetail>> + Send;

    /// Deletes a group (owner only).
    fn delete_group(
        &self,
        request_id: Uuid,
        actor: &Actor,
        group: Uuid,
    ) -> impl Future<Output = Outcome<()>> + Send;

    /// Adds `name#tag` to a group; already a member answers the member, `replayed`.
    fn add_member(
        &self,
        request_id: Uuid,
        actor: &Actor,
        group: Uuid,
        name: &str,
        tag: &str,
    ) -> impl Future<Output = Outcome<UserView>> + Send;

    /// Removes a member (oneself, or anyone for the owner).
    fn remove_member(
        &self,
        request_id: Uuid,
        actor: &Actor,
        group: Uuid,
        user: Uuid,
    ) -> impl Future<Output = Outcome<()>> + Send;

    /// A page of a group's chat (members only).
    fn read_group(
        &self,
        actor: &Actor,
        group: Uuid,
        query: ChatQuery,
        min_epoch: Epoch,
    ) -> impl Future<Output = Outcome<GroupChat>> + Send;

    /// Sends to a group (members only).
    fn send_to_group(
        &self,
        message_id: Uuid,
        actor: &Actor,
        group: Uuid,
        content: &str,
    ) -> impl Future<Output = Outcome<MessageView>> + Send;
}

/// RFC 3339 in UTC from unix milliseconds.
pub fn rfc3339_from_ms(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|time| time.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

fn user_view(user: &chat_service::User) -> UserView {
    UserView {
        id: user.uuid,
        username: user.username.clone(),
        tag: user.tag.clone(),
    }
}

/// A user we could not resolve (a deleted account whose row the service did not return).
fn unknown_user(id: Uuid) -> UserView {
    UserView {
        id,
        username: "unknown".to_owned(),
        tag: "000".to_owned(),
    }
}

fn message_view(message: &chat_service::Message, sender: UserView) -> MessageView {
    MessageView {
        id: message.uuid,
        chat_id: message.chat_id.clone(),
        sender,
        content: message.content.clone(),
        created_at: rfc3339_from_ms(message.created_at_ms),
        epoch: message.epoch,
    }
}

/// The message body of a change announced on the feed.
pub(crate) fn change_view(change: &ChatChange) -> MessageView {
    message_view(&change.message, user_view(&change.sender))
}

fn group_view(group: &chat_service::Group, owner: UserView) -> GroupView {
    GroupView {
        id: group.uuid,
        name: group.name.clone(),
        owner,
        created_at: rfc3339_from_ms(group.created_at_ms),
    }
}

fn detail(members: &chat_service::Members) -> GroupDetail {
    let owner = members
        .members
        .iter()
        .find(|user| user.uuid == members.group.owner_uuid)
        .map_or_else(|| unknown_user(members.group.owner_uuid), user_view);
    GroupDetail {
        group: group_view(&members.group, owner),
        members: members.members.iter().map(user_view).collect(),
    }
}

fn page_view(chat_id: String, page: &chat_service::ChatPage) -> ChatMessages {
    let read_epoch = page.read_epoch;
    let authors: HashMap<Uuid, &chat_service::User> =
        page.authors.iter().map(|user| (user.uuid, user)).collect();
    let messages = page
        .messages
        .iter()
        .map(|message| {
            let sender = authors
                .get(&message.sender_uuid)
                .map_or_else(|| unknown_user(message.sender_uuid), |user| user_view(user));
            message_view(message, sender)
        })
        .collect();
    ChatMessages {
        chat_id,
        messages,
        read_epoch,
    }
}

/// Maps the service's error kinds to the API's codes.
///
/// The service owns the code of each of its errors ([`ServiceError::code`]); node-level kinds
/// (not the writer, replica behind, storage) reach a user as a retryable `unavailable` with a
/// generic message ([`ServiceError::user_message`]).
pub fn api_error(error: ServiceError) -> ApiError {
    let code = match error.code() {
        "invalid_input" => ErrorCode::InvalidInput,
        "unauthenticated" => ErrorCode::Unauthenticated,
        "forbidden" => ErrorCode::Forbidden,
        "not_found" => ErrorCode::NotFound,
        "conflict" => ErrorCode::Conflict,
        "too_large" => ErrorCode::TooLarge,
        "rate_limited" => ErrorCode::RateLimited,
        _ => ErrorCode::Unavailable,
    };
    if code == ErrorCode::RateLimited {
        return ApiError::rate_limited(std::time::Duration::from_secs(1));
    }
    ApiError::new(code, error.user_message())
}

/// How long a session version read may answer later checks, at most. Within it an entry
/// answers only while it is as new as everything this node has seen (see
/// [`Backend::session_version`]); past it, a node that sees no traffic still reads again.
pub const SESSION_CACHE_TTL: Duration = Duration::from_secs(1);

/// Entries a cache keeps before stale ones are swept (a bound on memory, not a tuning knob).
const CACHE_MAX: usize = 65_536;

/// How long this node sends messages for a `name#tag` to the account it last resolved, without
/// asking again. Only a deleted account's name taken again changes the answer, and then the
/// writer refuses the old account (not found) and the name is resolved again at once.
const DIRECTORY_TTL: Duration = Duration::from_secs(60);

/// A user's sessions as this node last read them.
#[derive(Debug, Clone, Copy)]
struct SessionEntry {
    /// The session version; None when the account is gone.
    version: Option<u64>,
    /// The epoch the read or write reflected.
    epoch: Epoch,
}

/// The directory's key: `#` appears in no username or tag, so the pair is unambiguous.
fn directory_key(name: &str, tag: &str) -> String {
    format!("{name}#{tag}")
}

/// [`Backend`] over any [`Dispatcher`].
#[derive(Debug)]
pub struct ServiceBackend<D> {
    service: D,
    /// The newest epoch any answer through this backend reflected; a write answered at or
    /// below the value seen before it was sent is a replay (see [`Answer::replayed`]).
    // GAP: the service should say `replayed` itself; this guess can miss a replay first
    // written through another input node (it then answers 201 instead of 200, never the
    // reverse).
    seen_epoch: AtomicU64,
    /// The highest [`Reply::sessions_mark`] any answer through this backend carried: no
    /// session version changed after it up to `seen_epoch` (raised before `seen_epoch`, read
    /// after it, so a reader never pairs a new `seen_epoch` with an old mark).
    sessions_changed: AtomicU64,
    /// Session versions read recently (they live with the user, replicated; this only spares
    /// a read per request while nothing newer has been seen).
    sessions: RecentReads<Uuid, SessionEntry>,
    /// The account each `name#tag` named when this node last resolved it, for sending
    /// private messages without a read first.
    directory: RecentReads<String, chat_service::User>,
}

impl<D: Dispatcher> ServiceBackend<D> {
    /// A backend over `service`.
    pub fn new(service: D) -> Self {
        Self {
            service,
            seen_epoch: AtomicU64::new(0),
            sessions_changed: AtomicU64::new(0),
            sessions: RecentReads::new(SESSION_CACHE_TTL, CACHE_MAX),
            directory: RecentReads::new(DIRECTORY_TTL, CACHE_MAX),
        }
    }

    /// The service underneath.
    pub fn service(&self) -> &D {
        &self.service
    }

    fn read<T>(&self, reply: Result<Reply<T>, ServiceError>) -> Result<Reply<T>, ApiError> {
        let reply = reply.map_err(api_error)?;
        self.saw(&reply);
        Ok(reply)
    }

    /// Takes note of what an answer reflects.
    fn saw<T>(&self, reply: &Reply<T>) {
        self.sessions_changed
            .fetch_max(reply.sessions_mark(), Ordering::AcqRel);
        self.seen_epoch.fetch_max(reply.epoch, Ordering::AcqRel);
    }

    /// Runs a write and tells a replay from a fresh write.
    async fn write<T>(
        &self,
        write: impl Future<Output = Result<Reply<T>, ServiceError>>,
    ) -> Outcome<T> {
        let seen_before = self.seen_epoch.load(Ordering::Acquire);
        let reply = self.read(write.await)?;
        Ok(Answer {
            replayed: reply.epoch <= seen_before,
            value: reply.value,
            epoch: reply.epoch,
        })
    }

    /// Records what a read or write said about `user`'s sessions at `epoch`, unless the
    /// entry already reflects a newer epoch.
    fn remember_session(&self, user: Uuid, version: Option<u64>, epoch: Epoch) {
        self.sessions
            .insert_unless(user, SessionEntry { version, epoch }, |current| {
                current.epoch > epoch
            });
    }

    /// The cached session of `user` if it may answer a check that must reflect `fresh_as`:
    /// read at or after that epoch, and recently.
    fn cached_session(&self, user: Uuid, fresh_as: Epoch) -> Option<Option<u64>> {
        let entry = self.sessions.get(&user)?;
        (entry.epoch >= fresh_as).then_some(entry.version)
    }

    async fn user_by_name_tag(
        &self,
        actor: &Actor,
        name: &str,
        tag: &str,
        min_epoch: Epoch,
    ) -> Result<Reply<chat_service::User>, ApiError> {
        let reply = self.read(
            self.service
                .user_by_name_tag(actor.id, name, tag, min_epoch)
                .await,
        )?;
        self.directory
            .insert(directory_key(name, tag), reply.value.clone());
        Ok(reply)
    }

    /// The chat page for `query`, resolving `before` (a message id) to its epoch.
    async fn chat_page<'a>(
        &'a self,
        query: ChatQuery,
        min_epoch: Epoch,
        read: impl Fn(Page, Epoch) -> ChatRead<'a> + Send + Sync,
    ) -> Result<Reply<chat_service::ChatPage>, ApiError> {
        let Some(before) = query.before else {
            return self.read(read(Page::Newest { limit: query.limit }, min_epoch).await);
        };
        // GAP: the service pages by epoch, not by message id; until it takes `before` as an id,
        // find the message's epoch by walking back through the chat.
        let mut cursor = Page::Newest {
            limit: chat_service::validate::PAGE_MAX,
        };
        loop {
            let reply = self.read(read(cursor, min_epoch).await)?;
            if let Some(found) = reply.value.messages.iter().find(|m| m.uuid == before) {
                let epoch = found.epoch;
                return self.read(
                    read(
                        Page::Before {
                            epoch,
                            limit: query.limit,
                        },
                        min_epoch,
                    )
                    .await,
                );
            }
            match reply.value.messages.first() {
                Some(oldest) if reply.value.messages.len() as u32 == cursor.limit() => {
                    cursor = Page::Before {
                        epoch: oldest.epoch,
                        limit: chat_service::validate::PAGE_MAX,
                    };
                }
                _ => return Err(ApiError::invalid("before names no message of this chat.")),
            }
        }
    }

    async fn members(
        &self,
        actor: &Actor,
        group: Uuid,
        min_epoch: Epoch,
    ) -> Result<Reply<chat_service::Members>, ApiError> {
        self.read(self.service.members(actor.id, group, min_epoch).await)
    }
}

impl<D: Dispatcher + 'static> Backend for ServiceBackend<D> {
    async fn register(
        &self,
        request_id: Uuid,
        username: &str,
        tag: &str,
        password: &str,
    ) -> Outcome<UserView> {
        // GAP: the service hashes on the writer today; the store helper moves bcrypt here.
        let answer = self
            .write(self.service.register(request_id, username, tag, password))
            .await?;
        Ok(Answer {
            value: user_view(&answer.value),
            epoch: answer.epoch,
            replayed: answer.replayed,
        })
    }

    async fn login(
        &self,
        username: &str,
        tag: &str,
        password: &str,
        min_epoch: Epoch,
    ) -> Outcome<Login> {
        let reply = self
            .read(self.service.login(username, tag, password, min_epoch).await)
            .map_err(|error| match error.code {
                crate::error::ErrorCode::Forbidden => ApiError::unauthenticated(error.message),
                _ => error,
            })?;
        // The credentials were read with the account's session version: the new token
        // carries it, with no second read.
        let user = &reply.value;
        self.remember_session(user.uuid, Some(user.session_version), reply.epoch);
        Ok(Answer {
            value: Login {
                user: user_view(user),
                session_version: user.session_version,
            },
            epoch: reply.epoch,
            replayed: false,
        })
    }

    /// Freshness: a check must reflect the client's epoch and everything this node has seen
    /// (any answer through it, whoever asked). A cached version (read within
    /// [`SESSION_CACHE_TTL`]) answers only when no session version can have changed since it
    /// was read: up to the epochs this node has seen, the answers' session marks say where
    /// the last change was; beyond them (a client that saw more) the version must have been
    /// read at the client's epoch. Otherwise the version is read again, at the client's
    /// epoch, so any fresh-enough replica answers and no request waits for the writer. Once a
    /// logout's epoch is known here, no version read before it answers from the cache; the
    /// read that replaces it is as fresh as the request's own reads (see docs/decisions.md,
    /// "Logout on every input node"). Messages and other writes move no mark, so under a
    /// stream of them a user's version is read once a second, not once a request.
    async fn session_version(&self, user: Uuid, min_epoch: Epoch) -> Result<u64, ApiError> {
        // Everything up to `seen` is summed up by the mark: a version read at or after it is
        // current through `seen`. Past `seen` (the client saw more than this node) nothing is
        // known, so the version must have been read at the client's epoch.
        let seen = self.seen_epoch.load(Ordering::Acquire);
        let marked = self.sessions_changed.load(Ordering::Acquire);
        let fresh_as = if min_epoch > seen { min_epoch } else { marked };
        let version = match self.cached_session(user, fresh_as) {
            Some(version) => version,
            None => match self.service.session(user, min_epoch).await {
                Ok(reply) => {
                    self.saw(&reply);
                    let version = Some(reply.value.session_version);
                    self.remember_session(user, version, reply.epoch);
                    version
                }
                Err(ServiceError::Unauthenticated(_)) => None,
                Err(other) => return Err(api_error(other)),
            },
        };
        version.ok_or_else(|| ApiError::unauthenticated("Your account no longer exists."))
    }

    async fn end_sessions(&self, request_id: Uuid, actor: &Actor) -> Outcome<u64> {
        let answer = self
            .write(self.service.end_sessions(request_id, actor.id))
            .await?;
        let version = answer.value.session_version;
        self.remember_session(actor.id, Some(version), answer.epoch);
        Ok(Answer {
            value: version,
            epoch: answer.epoch,
            replayed: answer.replayed,
        })
    }

    async fn mark_read(
        &self,
        request_id: Uuid,
        actor: &Actor,
        chat: ChatRef,
        read_epoch: Epoch,
    ) -> Outcome<Epoch> {
        let answer = self
            .write(
                self.service
                    .mark_read(request_id, actor.id, chat, read_epoch),
            )
            .await?;
        Ok(Answer {
            value: answer.value.read_epoch,
            epoch: answer.epoch,
            replayed: answer.replayed,
        })
    }

    async fn search_users(
        &self,
        actor: &Actor,
        name: &str,
        min_epoch: Epoch,
    ) -> Outcome<Vec<UserView>> {
        let reply = self.read(self.service.search_users(actor.id, name, min_epoch).await)?;
        Ok(Answer {
            value: reply.value.iter().map(user_view).collect(),
            epoch: reply.epoch,
            replayed: false,
        })
    }

    async fn profile(
        &self,
        actor: &Actor,
        name: &str,
        tag: &str,
        min_epoch: Epoch,
    ) -> Outcome<Profile> {
        let user = self.user_by_name_tag(actor, name, tag, min_epoch).await?;
        // GAP: GetUser will return the shared groups; today: the caller's groups, each checked
        // for the user among its members.
        let mine = self.read(self.service.my_groups(actor.id, min_epoch).await)?;
        let mut epoch = user.epoch.max(mine.epoch);
        let mut groups = Vec::new();
        for group in &mine.value {
            let members = self.members(actor, group.uuid, min_epoch).await?;
            epoch = epoch.max(members.epoch);
            if members
                .value
                .members
                .iter()
                .any(|m| m.uuid == user.value.uuid)
            {
                groups.push(detail(&members.value).group);
            }
        }
        Ok(Answer {
            value: Profile {
                user: user_view(&user.value),
                groups,
            },
            epoch,
            replayed: false,
        })
    }

    async fn delete_account(&self, request_id: Uuid, actor: &Actor, user: Uuid) -> Outcome<()> {
        let answer = self
            .write(self.service.delete_account(request_id, actor.id, user))
            .await?;
        // Every node refuses the account's tokens once it reads the deletion; this one knows.
        self.remember_session(user, None, answer.epoch);
        Ok(Answer {
            value: (),
            epoch: answer.epoch,
            replayed: answer.replayed,
        })
    }

    async fn chats(&self, actor: &Actor, min_epoch: Epoch) -> Outcome<Vec<ChatSummary>> {
        // One read lists private chats and groups, most recent activity first, each with the
        // messages from others past the caller's read position (moved when a chat is shown).
        let list = self.read(self.service.chats(actor.id, min_epoch).await)?;
        let mut epoch = list.epoch;
        let mut chats = Vec::with_capacity(list.value.len());
        for summary in &list.value {
            let newest = summary.newest.as_ref().map(|message| {
                let sender = summary
                    .newest_author
                    .as_ref()
                    .map_or_else(|| unknown_user(message.sender_uuid), user_view);
                message_view(message, sender)
            });
            chats.push(match &summary.with {
                chat_service::ChatWith::User(user) => ChatSummary::Private {
                    chat_id: summary.chat_id.clone(),
                    user: user_view(user),
                    newest,
                    unread: summary.unread,
                },
                chat_service::ChatWith::Group(group) => {
                    // The list names the owner by id only; the members read names them.
                    let members = self.members(actor, group.uuid, min_epoch).await?;
                    epoch = epoch.max(members.epoch);
                    ChatSummary::Group {
                        chat_id: summary.chat_id.clone(),
                        group: detail(&members.value).group,
                        newest,
                        unread: summary.unread,
                    }
                }
            });
        }
        Ok(Answer {
            value: chats,
            epoch,
            replayed: false,
        })
    }

    async fn read_private(
        &self,
        actor: &Actor,
        name: &str,
        tag: &str,
        query: ChatQuery,
        min_epoch: Epoch,
    ) -> Outcome<PrivateChat> {
        let other = self.user_by_name_tag(actor, name, tag, min_epoch).await?;
        if other.value.uuid == actor.id {
            return Err(ApiError::invalid("A private chat needs another user."));
        }
        let (actor_id, other_id) = (actor.id, other.value.uuid);
        let page = self
            .chat_page(query, min_epoch, move |page, min| {
                Box::pin(self.service.read_private(actor_id, other_id, page, min))
            })
            .await?;
        let chat_id = chat_store::private_chat_id(actor.id, other_id);
        Ok(Answer {
            value: PrivateChat {
                other: user_view(&other.value),
                chat: page_view(chat_id, &page.value),
            },
            epoch: page.epoch.max(other.epoch),
            replayed: false,
        })
    }

    async fn send_private(
        &self,
        message_id: Uuid,
        actor: &Actor,
        name: &str,
        tag: &str,
        content: &str,
    ) -> Outcome<MessageView> {
        let key = directory_key(name, tag);
        let mut remembered = self.directory.get(key.as_str());
        loop {
            let from_cache = remembered.is_some();
            let other = match remembered.take() {
                Some(user) => user,
                None => self.user_by_name_tag(actor, name, tag, 0).await?.value,
            };
            if other.uuid == actor.id {
                return Err(ApiError::invalid("A private chat needs another user."));
            }
            let sent = self
                .write(
                    self.service
                        .send_private(message_id, actor.id, other.uuid, content),
                )
                .await;
            match sent {
                // The remembered account is gone: whoever holds the name now is asked for
                // (a refused write stored nothing, so the same message id is free).
                Err(error) if from_cache && error.code == ErrorCode::NotFound => {
                    self.directory.remove(key.as_str());
                }
                sent => {
                    let answer = sent?;
                    return Ok(Answer {
                        value: message_view(&answer.value, actor.view()),
                        epoch: answer.epoch,
                        replayed: answer.replayed,
                    });
                }
            }
        }
    }

    async fn create_group(
        &self,
        request_id: Uuid,
        actor: &Actor,
        name: &str,
    ) -> Outcome<GroupView> {
        let answer = self
            .write(self.service.create_group(request_id, actor.id, name))
            .await?;
        Ok(Answer {
            value: group_view(&answer.value, actor.view()),
            epoch: answer.epoch,
            replayed: answer.replayed,
        })
    }

    async fn group(&self, actor: &Actor, group: Uuid, min_epoch: Epoch) -> Outcome<GroupDetail> {
        let reply = self.members(actor, group, min_epoch).await?;
        Ok(Answer {
            value: detail(&reply.value),
            epoch: reply.epoch,
            replayed: false,
        })
    }

    async fn delete_group(&self, request_id: Uuid, actor: &Actor, group: Uuid) -> Outcome<()> {
        let answer = self
            .write(self.service.delete_group(request_id, actor.id, group))
            .await?;
        Ok(Answer {
            value: (),
            epoch: answer.epoch,
            replayed: answer.replayed,
        })
    }

    async fn add_member(
        &self,
        request_id: Uuid,
        actor: &Actor,
        group: Uuid,
        name: &str,
        tag: &str,
    ) -> Outcome<UserView> {
        let added = self
            .write(
                self.service
                    .add_member(request_id, actor.id, group, name, tag),
            )
            .await;
        match added {
            Ok(answer) => {
                let user = self
                    .user_by_name_tag(actor, name, tag, answer.epoch)
                    .await?;
                Ok(Answer {
                    value: user_view(&user.value),
                    epoch: answer.epoch,
                    replayed: answer.replayed,
                })
            }
            Err(error) if error.code == crate::error::ErrorCode::Conflict => {
                // Already a member is not a failure: the member is answered as a replay.
                let members = self.members(actor, group, 0).await?;
                let member = members
                    .value
                    .members
                    .iter()
                    .find(|user| user.username == name && user.tag == tag)
                    .ok_or(error)?;
                Ok(Answer {
                    value: user_view(member),
                    epoch: members.epoch,
                    replayed: true,
                })
            }
            Err(error) => Err(error),
        }
    }

    async fn remove_member(
        &self,
        request_id: Uuid,
        actor: &Actor,
        group: Uuid,
        user: Uuid,
    ) -> Outcome<()> {
        let answer = self
            .write(
                self.service
                    .remove_member(request_id, actor.id, group, user),
            )
            .await?;
        Ok(Answer {
            value: (),
            epoch: answer.epoch,
            replayed: answer.replayed,
        })
    }

    async fn read_group(
        &self,
        actor: &Actor,
        group: Uuid,
        query: ChatQuery,
        min_epoch: Epoch,
    ) -> Outcome<GroupChat> {
        let members = self.members(actor, group, min_epoch).await?;
        let actor_id = actor.id;
        let page = self
            .chat_page(query, min_epoch, move |page, min| {
                Box::pin(self.service.read_group(actor_id, group, page, min))
            })
            .await?;
        Ok(Answer {
            value: GroupChat {
                group: detail(&members.value).group,
                chat: page_view(group.to_string(), &page.value),
            },
            epoch: page.epoch.max(members.epoch),
            replayed: false,
        })
    }

    async fn send_to_group(
        &self,
        message_id: Uuid,
        actor: &Actor,
        group: Uuid,
        content: &str,
    ) -> Outcome<MessageView> {
        let answer = self
            .write(
                self.service
                    .send_to_group(message_id, actor.id, group, content),
            )
            .await?;
        Ok(Answer {
            value: message_view(&answer.value, actor.view()),
            epoch: answer.epoch,
            replayed: answer.replayed,
        })
    }
}

/// A [`Dispatcher`] that announces every message it commits on a [`ChangeFeed`], for a node
/// that has no data plane feeding it (one node on its own, and the tests). Sends are
/// serialised so announcements leave in epoch order.
#[derive(Debug)]
pub struct PublishingDispatcher<D> {
    inner: D,
    feed: ChangeFeed,
    sends: tokio::sync::Mutex<()>,
}

impl<D: Dispatcher> PublishingDispatcher<D> {
    /// Wraps `inner`, announcing on `feed`.
    pub fn new(inner: D, feed: ChangeFeed) -> Self {
        Self {
            inner,
            feed,
            sends: tokio::sync::Mutex::new(()),
        }
    }

    /// The wrapped dispatcher.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    async fn announce(&self, request: &Request, reply: &Reply) -> Result<(), ServiceError> {
        let Response::Message(message) = &reply.value else {
            return Ok(());
        };
        let since = Page::Since {
            epoch: reply.epoch.saturating_sub(1),
            limit: 1,
        };
        let (audience, page) = match *request {
            Request::SendPrivate {
                acting_user, to, ..
            } => {
                let page = self
                    .inner
                    .read_private(acting_user, to, since, reply.epoch)
                    .await?;
                (vec![acting_user, to], page.value)
            }
            Request::SendToGroup {
                acting_user, group, ..
            } => {
                let members = self.inner.members(acting_user, group, reply.epoch).await?;
                let page = self
                    .inner
                    .read_group(acting_user, group, since, reply.epoch)
                    .await?;
                let audience = members.value.members.iter().map(|m| m.uuid).collect();
                (audience, page.value)
            }
            _ => return Ok(()),
        };
        let Some(sender) = page
            .authors
            .into_iter()
            .find(|user| user.uuid == message.sender_uuid)
        else {
            return Ok(());
        };
        self.feed.publish(ChatChange {
            chat_id: message.chat_id.clone(),
            epoch: message.epoch,
            audience,
            message: message.clone(),
            sender,
        });
        Ok(())
    }
}

impl<D: Dispatcher> Dispatcher for PublishingDispatcher<D> {
    async fn dispatch(&self, request: Request, min_epoch: Epoch) -> Result<Reply, ServiceError> {
        if !matches!(
            request,
            Request::SendPrivate { .. } | Request::SendToGroup { .. }
        ) {
            return self.inner.dispatch(request, min_epoch).await;
        }
        let _in_order = self.sends.lock().await;
        let reply = self.inner.dispatch(request.clone(), min_epoch).await?;
        if let Err(error) = self.announce(&request, &reply).await {
            tracing::warn!(subsystem = "input", %error, "could not announce a message");
        }
        Ok(reply)
    }
}
