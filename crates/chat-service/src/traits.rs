//! The chat domain as service traits, implemented once for anything that can dispatch a
//! [`Request`]: the local service today, the data-plane proxy later.

use std::future::Future;
use std::sync::Arc;

use chat_store::{ChatSummary, Epoch, Group, Membership, Message, Page, ReadPosition, User};
use uuid::Uuid;

use crate::error::ServiceError;
use crate::hasher::PasswordHasher;
use crate::protocol::{
    ChatPage, ChatRef, Members, Password, Reply, Request, Response, UserProfile,
};
use crate::validate;

/// Something that answers requests: [`crate::LocalService`], or a proxy that sends them over
/// the data plane. Implementing it gives [`AuthService`], [`UserService`], [`GroupService`]
/// and [`MessageService`] for free.
pub trait Dispatcher: Send + Sync {
    /// Answers `request`. A read must reflect at least `min_epoch` (the newest epoch the
    /// client has seen); writes ignore it.
    fn dispatch(
        &self,
        request: Request,
        min_epoch: Epoch,
    ) -> impl Future<Output = Result<Reply, ServiceError>> + Send;

    /// Where [`AuthService`] hashes and verifies passwords: on the node that calls it (the
    /// input node), never on the writer. The process-wide default (cost 12, one hash per CPU)
    /// unless the dispatcher brings its own.
    fn password_hasher(&self) -> &Arc<PasswordHasher> {
        PasswordHasher::shared()
    }
}

/// A dispatcher whose requests, writes included, carry at least `min_epoch` (the newest epoch
/// the client has seen): a write then reaches only a writer that has that epoch, and a read
/// only a node that has applied it. `AtLeast::new(&proxy, epoch).send_private(..)`.
#[derive(Debug, Clone, Copy)]
pub struct AtLeast<'a, D> {
    inner: &'a D,
    min_epoch: Epoch,
}

impl<'a, D: Dispatcher> AtLeast<'a, D> {
    /// Wraps `inner`.
    pub fn new(inner: &'a D, min_epoch: Epoch) -> Self {
        Self { inner, min_epoch }
    }
}

impl<D: Dispatcher> Dispatcher for AtLeast<'_, D> {
    fn dispatch(
        &self,
        request: Request,
        min_epoch: Epoch,
    ) -> impl Future<Output = Result<Reply, ServiceError>> + Send {
        self.inner.dispatch(request, min_epoch.max(self.min_epoch))
    }

    fn password_hasher(&self) -> &Arc<PasswordHasher> {
        self.inner.password_hasher()
    }
}

/// Registration and login.
pub trait AuthService {
    /// Creates an account; `request_id` makes a retry return the same account. Validates,
    /// then hashes here (the calling node), and sends only the hash to the writer.
    fn register(
        &self,
        request_id: Uuid,
        username: &str,
        tag: &str,
        password: &str,
    ) -> impl Future<Output = Result<Reply<User>, ServiceError>> + Send;

    /// Checks credentials: reads the user and hash (from any fresh-enough node) and verifies
    /// here; a wrong name, tag or password is [`ServiceError::Unauthenticated`], taking the
    /// same time whether or not the account exists.
    fn login(
        &self,
        username: &str,
        tag: &str,
        password: &str,
        min_epoch: Epoch,
    ) -> impl Future<Output = Result<Reply<User>, ServiceError>> + Send;
}

/// Looking users up and deleting one's account.
pub trait UserService {
    /// The live user `username#tag`.
    fn user_by_name_tag(
        &self,
        acting_user: Uuid,
        username: &str,
        tag: &str,
        min_epoch: Epoch,
    ) -> impl Future<Output = Result<Reply<User>, ServiceError>> + Send;

    /// The live user `username#tag` with the groups the caller shares with them.
    fn user_profile(
        &self,
        acting_user: Uuid,
        username: &str,
        tag: &str,
        min_epoch: Epoch,
    ) -> impl Future<Output = Result<Reply<UserProfile>, ServiceError>> + Send;

    /// Live users called exactly `username` (an empty list is not an error).
    fn search_users(
        &self,
        acting_user: Uuid,
        username: &str,
        min_epoch: Epoch,
    ) -> impl Future<Output = Result<Reply<Vec<User>>, ServiceError>> + Send;

    /// Deletes the caller's own account and ends their memberships.
    fn delete_account(
        &self,
        request_id: Uuid,
        acting_user: Uuid,
        user: Uuid,
    ) -> impl Future<Output = Result<Reply<User>, ServiceError>> + Send;

    /// The live account `user` with its session version (reflecting at least `min_epoch`),
    /// for checking a token or cookie; a deleted account is
    /// [`ServiceError::Unauthenticated`].
    fn session(
        &self,
        user: Uuid,
        min_epoch: Epoch,
    ) -> impl Future<Output = Result<Reply<User>, ServiceError>> + Send;

    /// Ends every session of the caller (logout); answers the account with its new session
    /// version, at the epoch of the write.
    fn end_sessions(
        &self,
        request_id: Uuid,
        acting_user: Uuid,
    ) -> impl Future<Output = Result<Reply<User>, ServiceError>> + Send;
}

/// Groups and their members.
pub trait GroupService {
    /// Creates a group; the caller becomes its first member and owner.
    fn create_group(
        &self,
        request_id: Uuid,
        acting_user: Uuid,
        name: &str,
    ) -> impl Future<Output = Result<Reply<Group>, ServiceError>> + Send;

    /// A group the caller is a member of.
    fn group(
        &self,
        acting_user: Uuid,
        group: Uuid,
        min_epoch: Epoch,
    ) -> impl Future<Output = Result<Reply<Group>, ServiceError>> + Send;

    /// The caller's groups.
    fn my_groups(
        &self,
        acting_user: Uuid,
        min_epoch: Epoch,
    ) -> impl Future<Output = Result<Reply<Vec<Group>>, ServiceError>> + Send;

    /// A group's members (members only).
    fn members(
        &self,
        acting_user: Uuid,
        group: Uuid,
        min_epoch: Epoch,
    ) -> impl Future<Output = Result<Reply<Members>, ServiceError>> + Send;

    /// Adds `username#tag` (members only).
    fn add_member(
        &self,
        request_id: Uuid,
        acting_user: Uuid,
        group: Uuid,
        username: &str,
        tag: &str,
    ) -> impl Future<Output = Result<Reply<Membership>, ServiceError>> + Send;

    /// Removes `user`: the caller themself, or anyone if the caller owns the group. Returns
    /// the group afterwards (deleted if it became empty).
    fn remove_member(
        &self,
        request_id: Uuid,
        acting_user: Uuid,
        group: Uuid,
        user: Uuid,
    ) -> impl Future<Output = Result<Reply<Group>, ServiceError>> + Send;

    /// Deletes a group (owner only).
    fn delete_group(
        &self,
        request_id: Uuid,
        acting_user: Uuid,
        group: Uuid,
    ) -> impl Future<Output = Result<Reply<Group>, ServiceError>> + Send;
}

/// Sending and reading messages.
pub trait MessageService {
    /// Sends a private message; `message_id` is the new message's uuid and its retry key.
    fn send_private(
        &self,
        message_id: Uuid,
        acting_user: Uuid,
        to: Uuid,
        content: &str,
    ) -> impl Future<Output = Result<Reply<Message>, ServiceError>> + Send;

    /// Sends to a group (members only).
    fn send_to_group(
        &self,
        message_id: Uuid,
        acting_user: Uuid,
        group: Uuid,
        content: &str,
    ) -> impl Future<Output = Result<Reply<Message>, ServiceError>> + Send;

    /// A page of the private chat with `other`.
    fn read_private(
        &self,
        acting_user: Uuid,
        other: Uuid,
        page: Page,
        min_epoch: Epoch,
    ) -> impl Future<Output = Result<Reply<ChatPage>, ServiceError>> + Send;

    /// A page of a group's chat (members only).
    fn read_group(
        &self,
        acting_user: Uuid,
        group: Uuid,
        page: Page,
        min_epoch: Epoch,
    ) -> impl Future<Output = Result<Reply<ChatPage>, ServiceError>> + Send;

    /// The caller's private chats and groups, each with its newest message and unread count,
    /// most recent activity first.
    fn chats(
        &self,
        acting_user: Uuid,
        min_epoch: Epoch,
    ) -> impl Future<Output = Result<Reply<Vec<ChatSummary>>, ServiceError>> + Send;

    /// Moves the caller's read position in a chat forward to `read_epoch` (the epoch of the
    /// newest message they were shown); never back.
    fn mark_read(
        &self,
        request_id: Uuid,
        acting_user: Uuid,
        chat: ChatRef,
        read_epoch: Epoch,
    ) -> impl Future<Output = Result<Reply<ReadPosition>, ServiceError>> + Send;
}

/// Sends `request` and takes the one response variant it must produce.
async fn call<D: Dispatcher + ?Sized, T>(
    dispatcher: &D,
    request: Request,
    min_epoch: Epoch,
    pick: impl FnOnce(Response) -> Option<T>,
) -> Result<Reply<T>, ServiceError> {
    dispatcher.dispatch(request, min_epoch).await?.expect(pick)
}

fn user(response: Response) -> Option<User> {
    match response {
        Response::User(user) => Some(user),
        _ => None,
    }
}

fn group(response: Response) -> Option<Group> {
    match response {
        Response::Group(group) => Some(group),
        _ => None,
    }
}

fn message(response: Response) -> Option<Message> {
    match response {
        Response::Message(message) => Some(message),
        _ => None,
    }
}

fn chat(response: Response) -> Option<ChatPage> {
    match response {
        Response::Chat(page) => Some(page),
        _ => None,
    }
}

/// Writes go to the writer whatever the client has seen.
const ANY_EPOCH: Epoch = 0;

impl<D: Dispatcher> AuthService for D {
    fn register(
        &self,
        request_id: Uuid,
        username: &str,
        tag: &str,
        password: &str,
    ) -> impl Future<Output = Result<Reply<User>, ServiceError>> + Send {
        let (username, tag, password) =
            (username.to_owned(), tag.to_owned(), Password::new(password));
        async move {
            validate::username(&username)?;
            validate::tag(&tag)?;
            validate::password(password.expose())?;
            let password_hash = self.password_hasher().hash(password).await?;
            let request = Request::Register {
                request_id,
                username,
                tag,
                password_hash,
            };
            call(self, request, ANY_EPOCH, user).await
        }
    }

    fn login(
        &self,
        username: &str,
        tag: &str,
        password: &str,
        min_epoch: Epoch,
    ) -> impl Future<Output = Result<Reply<User>, ServiceError>> + Send {
        let (username, tag, password) =
            (username.to_owned(), tag.to_owned(), Password::new(password));
        async move {
            let wrong = || ServiceError::unauthenticated("Wrong username, tag or password.");
            if validate::username(&username).is_err() || validate::tag(&tag).is_err() {
                return Err(wrong());
            }
            let request = Request::Credentials { username, tag };
            let found = match call(self, request, min_epoch, |response| match response {
                Response::Credentials(credentials) => Some(credentials),
                _ => None,
            })
            .await
            {
                Ok(reply) => Some(reply),
                Err(ServiceError::NotFound(_)) => None,
                Err(other) => return Err(other),
            };
            let hash = found.as_ref().map(|reply| reply.value.hash.clone());
            let matches = self.password_hasher().verify(password, hash).await?;
            match found {
                Some(reply) if matches => Ok(Reply {
                    value: reply.value.user,
                    epoch: reply.epoch,
                    replayed: false,
                    sessions_changed: reply.sessions_changed,
                }),
                _ => Err(wrong()),
            }
        }
    }
}

impl<D: Dispatcher> UserService for D {
    fn user_by_name_tag(
        &self,
        acting_user: Uuid,
        username: &str,
        tag: &str,
        min_epoch: Epoch,
    ) -> impl Future<Output = Result<Reply<User>, ServiceError>> + Send {
        let request = Request::GetUser {
            acting_user,
            username: username.to_owned(),
            tag: tag.to_owned(),
        };
        call(self, request, min_epoch, user)
    }

    fn user_profile(
        &self,
        acting_user: Uuid,
        username: &str,
        tag: &str,
        min_epoch: Epoch,
    ) -> impl Future<Output = Result<Reply<UserProfile>, ServiceError>> + Send {
        let request = Request::UserProfile {
            acting_user,
            username: username.to_owned(),
            tag: tag.to_owned(),
        };
        call(self, request, min_epoch, |response| match response {
            Response::Profile(profile) => Some(profile),
            _ => None,
        })
    }

    fn search_users(
        &self,
        acting_user: Uuid,
        username: &str,
        min_epoch: Epoch,
    ) -> impl Future<Output = Result<Reply<Vec<User>>, ServiceError>> + Send {
        let request = Request::SearchUsers {
            acting_user,
            username: username.to_owned(),
        };
        call(self, request, min_epoch, |response| match response {
            Response::Users(users) => Some(users),
            _ => None,
        })
    }

    fn delete_account(
        &self,
        request_id: Uuid,
        acting_user: Uuid,
        target: Uuid,
    ) -> impl Future<Output = Result<Reply<User>, ServiceError>> + Send {
        let request = Request::DeleteAccount {
            request_id,
            acting_user,
            user: target,
        };
        call(self, request, ANY_EPOCH, user)
    }

    fn session(
        &self,
        account: Uuid,
        min_epoch: Epoch,
    ) -> impl Future<Output = Result<Reply<User>, ServiceError>> + Send {
        call(self, Request::Session { user: account }, min_epoch, user)
    }

    fn end_sessions(
        &self,
        request_id: Uuid,
        acting_user: Uuid,
    ) -> impl Future<Output = Result<Reply<User>, ServiceError>> + Send {
        let request = Request::EndSessions {
            request_id,
            acting_user,
        };
        call(self, request, ANY_EPOCH, user)
    }
}

impl<D: Dispatcher> GroupService for D {
    fn create_group(
        &self,
        request_id: Uuid,
        acting_user: Uuid,
        name: &str,
    ) -> impl Future<Output = Result<Reply<Group>, ServiceError>> + Send {
        let request = Request::CreateGroup {
            request_id,
            acting_user,
            name: name.to_owned(),
        };
        call(self, request, ANY_EPOCH, group)
    }

    fn group(
        &self,
        acting_user: Uuid,
        group_uuid: Uuid,
        min_epoch: Epoch,
    ) -> impl Future<Output = Result<Reply<Group>, ServiceError>> + Send {
        call(
            self,
            Request::GetGroup {
                acting_user,
                group: group_uuid,
            },
            min_epoch,
            group,
        )
    }

    fn my_groups(
        &self,
        acting_user: Uuid,
        min_epoch: Epoch,
    ) -> impl Future<Output = Result<Reply<Vec<Group>>, ServiceError>> + Send {
        call(
            self,
            Request::MyGroups { acting_user },
            min_epoch,
            |response| match response {
                Response::Groups(groups) => Some(groups),
                _ => None,
            },
        )
    }

    fn members(
        &self,
        acting_user: Uuid,
        group_uuid: Uuid,
        min_epoch: Epoch,
    ) -> impl Future<Output = Result<Reply<Members>, ServiceError>> + Send {
        let request = Request::GroupMembers {
            acting_user,
            group: group_uuid,
        };
        call(self, request, min_epoch, |response| match response {
            Response::Members(members) => Some(members),
            _ => None,
        })
    }

    fn add_member(
        &self,
        request_id: Uuid,
        acting_user: Uuid,
        group_uuid: Uuid,
        username: &str,
        tag: &str,
    ) -> impl Future<Output = Result<Reply<Membership>, ServiceError>> + Send {
        let request = Request::AddMember {
            request_id,
            acting_user,
            group: group_uuid,
            username: username.to_owned(),
            tag: tag.to_owned(),
        };
        call(self, request, ANY_EPOCH, |response| match response {
            Response::Membership(membership) => Some(membership),
            _ => None,
        })
    }

    fn remove_member(
        &self,
        request_id: Uuid,
        acting_user: Uuid,
        group_uuid: Uuid,
        member: Uuid,
    ) -> impl Future<Output = Result<Reply<Group>, ServiceError>> + Send {
        let request = Request::RemoveMember {
            request_id,
            acting_user,
            group: group_uuid,
            user: member,
        };
        call(self, request, ANY_EPOCH, group)
    }

    fn delete_group(
        &self,
        request_id: Uuid,
        acting_user: Uuid,
        group_uuid: Uuid,
    ) -> impl Future<Output = Result<Reply<Group>, ServiceError>> + Send {
        let request = Request::DeleteGroup {
            request_id,
            acting_user,
            group: group_uuid,
        };
        call(self, request, ANY_EPOCH, group)
    }
}

impl<D: Dispatcher> MessageService for D {
    fn send_private(
        &self,
        message_id: Uuid,
        acting_user: Uuid,
        to: Uuid,
        content: &str,
    ) -> impl Future<Output = Result<Reply<Message>, ServiceError>> + Send {
        let request = Request::SendPrivate {
            message_id,
            acting_user,
            to,
            content: content.to_owned(),
        };
        call(self, request, ANY_EPOCH, message)
    }

    fn send_to_group(
        &self,
        message_id: Uuid,
        acting_user: Uuid,
        group_uuid: Uuid,
        content: &str,
    ) -> impl Future<Output = Result<Reply<Message>, ServiceError>> + Send {
        let request = Request::SendToGroup {
            message_id,
            acting_user,
            group: group_uuid,
            content: content.to_owned(),
        };
        call(self, request, ANY_EPOCH, message)
    }

    fn read_private(
        &self,
        acting_user: Uuid,
        other: Uuid,
        page: Page,
        min_epoch: Epoch,
    ) -> impl Future<Output = Result<Reply<ChatPage>, ServiceError>> + Send {
        call(
            self,
            Request::ReadPrivate {
                acting_user,
                other,
                page,
            },
            min_epoch,
            chat,
        )
    }

    fn read_group(
        &self,
        acting_user: Uuid,
        group_uuid: Uuid,
        page: Page,
        min_epoch: Epoch,
    ) -> impl Future<Output = Result<Reply<ChatPage>, ServiceError>> + Send {
        call(
            self,
            Request::ReadGroup {
                acting_user,
                group: group_uuid,
                page,
            },
            min_epoch,
            chat,
        )
    }

    fn chats(
        &self,
        acting_user: Uuid,
        min_epoch: Epoch,
    ) -> impl Future<Output = Result<Reply<Vec<ChatSummary>>, ServiceError>> + Send {
        call(
            self,
            Request::Chats { acting_user },
            min_epoch,
            |response| match response {
                Response::Chats(chats) => Some(chats),
                _ => None,
            },
        )
    }

    fn mark_read(
        &self,
        request_id: Uuid,
        acting_user: Uuid,
        chat: ChatRef,
        read_epoch: Epoch,
    ) -> impl Future<Output = Result<Reply<ReadPosition>, ServiceError>> + Send {
        let request = Request::MarkRead {
            request_id,
            acting_user,
            chat,
            read_epoch,
        };
        call(self, request, ANY_EPOCH, |response| match response {
            Response::ReadPosition(position) => Some(position),
            _ => None,
        })
    }
}
