//! The chat domain as service traits, implemented once for anything that can dispatch a
//! [`Request`]: the local service today, the data-plane proxy later.

use std::future::Future;

use chat_store::{Epoch, Group, Membership, Message, Page, User};
use uuid::Uuid;

use crate::error::ServiceError;
use crate::protocol::{ChatPage, Members, Password, Reply, Request, Response};

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
}

/// Registration and login.
pub trait AuthService {
    /// Creates an account; `request_id` makes a retry return the same account.
    fn register(
        &self,
        request_id: Uuid,
        username: &str,
        tag: &str,
        password: &str,
    ) -> impl Future<Output = Result<Reply<User>, ServiceError>> + Send;

    /// Checks credentials; a wrong name, tag or password is [`ServiceError::Forbidden`].
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
        let request = Request::Register {
            request_id,
            username: username.to_owned(),
            tag: tag.to_owned(),
            password: Password::new(password),
        };
        call(self, request, ANY_EPOCH, user)
    }

    fn login(
        &self,
        username: &str,
        tag: &str,
        password: &str,
        min_epoch: Epoch,
    ) -> impl Future<Output = Result<Reply<User>, ServiceError>> + Send {
        let request = Request::Login {
            username: username.to_owned(),
            tag: tag.to_owned(),
            password: Password::new(password),
        };
        call(self, request, min_epoch, user)
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
}
