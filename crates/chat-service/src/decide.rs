//! What each write changes, decided on the writer against the rows inside its batch: the
//! rules (module `authz`) over facts looked up once, then the [`Change`] to commit.

use chat_store::{
    private_chat_id, Change, Fingerprint, ReadView, Recipient, User, WriteRequest, Written,
};
use uuid::Uuid;

use crate::authz;
use crate::error::ServiceError;
use crate::protocol::{ChatRef, Request, Response};
use crate::validate;

/// The acting user must still exist: a session can outlive its account.
pub(crate) fn acting_user(view: &mut ReadView<'_>, uuid: Uuid) -> Result<User, ServiceError> {
    view.user(uuid)?.ok_or_else(|| {
        ServiceError::unauthenticated("Your account no longer exists; log in again.")
    })
}

pub(crate) fn live_group(
    view: &mut ReadView<'_>,
    uuid: Uuid,
) -> Result<chat_store::Group, ServiceError> {
    view.group(uuid)?
        .ok_or_else(|| ServiceError::not_found("The group was not found."))
}

/// Checks a write's fields and normalises them (trimmed message and group name), before it
/// queues for the writer, so the writer spends no time on malformed requests.
pub(crate) fn validate_write(request: Request) -> Result<Request, ServiceError> {
    Ok(match request {
        Request::Register {
            request_id,
            username,
            tag,
            password_hash,
        } => {
            validate::username(&username)?;
            validate::tag(&tag)?;
            Request::Register {
                request_id,
                username,
                tag,
                password_hash,
            }
        }
        Request::CreateGroup {
            request_id,
            acting_user,
            name,
        } => Request::CreateGroup {
            request_id,
            acting_user,
            name: validate::group_name(&name)?,
        },
        Request::AddMember {
            request_id,
            acting_user,
            group,
            username,
            tag,
        } => {
            validate::username(&username)?;
            validate::tag(&tag)?;
            Request::AddMember {
                request_id,
                acting_user,
                group,
                username,
                tag,
            }
        }
        Request::DeleteAccount {
            request_id,
            acting_user,
            user,
        } => {
            authz::delete_account(acting_user, user)?;
            Request::DeleteAccount {
                request_id,
                acting_user,
                user,
            }
        }
        Request::SendPrivate {
            message_id,
            acting_user,
            to,
            content,
        } => {
            authz::private_chat(acting_user, to)?;
            Request::SendPrivate {
                message_id,
                acting_user,
                to,
                content: validate::message_content(&content)?,
            }
        }
        Request::SendToGroup {
            message_id,
            acting_user,
            group,
            content,
        } => Request::SendToGroup {
            message_id,
            acting_user,
            group,
            content: validate::message_content(&content)?,
        },
        Request::MarkRead {
            request_id,
            acting_user,
            chat,
            read_epoch,
        } => {
            if let ChatRef::User(other) = chat {
                authz::private_chat(acting_user, other)?;
            }
            Request::MarkRead {
                request_id,
                acting_user,
                chat,
                read_epoch,
            }
        }
        other @ (Request::RemoveMember { .. }
        | Request::DeleteGroup { .. }
        | Request::EndSessions { .. }) => other,
        _ => return Err(ServiceError::invalid("Not a write request.")),
    })
}

/// A validated write queued for the writer.
#[derive(Debug)]
pub(crate) struct PendingWrite {
    pub(crate) request: Request,
    request_id: Uuid,
    fingerprint: Fingerprint,
}

impl PendingWrite {
    /// Validates `request`; reads are refused.
    pub(crate) fn new(request: Request) -> Result<Self, ServiceError> {
        let request = validate_write(request)?;
        let request_id = request
            .request_id()
            .ok_or_else(|| ServiceError::invalid("Not a write request."))?;
        let fingerprint = request.fingerprint();
        Ok(Self {
            request,
            request_id,
            fingerprint,
        })
    }
}

impl WriteRequest for PendingWrite {
    type Error = ServiceError;

    fn request_id(&self) -> Uuid {
        self.request_id
    }

    fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    fn decide(&self, view: &mut ReadView<'_>) -> Result<Change, ServiceError> {
        decide(&self.request, view)
    }
}

fn decide(request: &Request, view: &mut ReadView<'_>) -> Result<Change, ServiceError> {
    match request {
        Request::Register {
            username,
            tag,
            password_hash,
            ..
        } => {
            if view.user_by_name_tag(username, tag)?.is_some() {
                return Err(ServiceError::conflict(format!(
                    "{username}#{tag} is already taken."
                )));
            }
            Ok(Change::RegisterUser {
                user_uuid: Uuid::new_v4(),
                username: username.clone(),
                tag: tag.clone(),
                secret: password_hash.clone(),
            })
        }
        Request::DeleteAccount {
            acting_user: actor,
            user,
            ..
        } => {
            acting_user(view, *actor)?;
            Ok(Change::DeleteUser { user_uuid: *user })
        }
        Request::EndSessions {
            acting_user: actor, ..
        } => {
            acting_user(view, *actor)?;
            Ok(Change::EndSessions { user_uuid: *actor })
        }
        Request::CreateGroup {
            acting_user: actor,
            name,
            ..
        } => {
            acting_user(view, *actor)?;
            Ok(Change::CreateGroup {
                group_uuid: Uuid::new_v4(),
                name: name.clone(),
                creator_uuid: *actor,
            })
        }
        Request::AddMember {
            acting_user: actor,
            group,
            username,
            tag,
            ..
        } => {
            acting_user(view, *actor)?;
            let group = live_group(view, *group)?;
            authz::add_member(view.is_member(group.uuid, *actor)?)?;
            let user = view.user_by_name_tag(username, tag)?.ok_or_else(|| {
                ServiceError::not_found(format!("No user is called {username}#{tag}."))
            })?;
            if view.is_member(group.uuid, user.uuid)? {
                return Err(ServiceError::conflict(format!(
                    "{username}#{tag} is already a member."
                )));
            }
            Ok(Change::AddMember {
                group_uuid: group.uuid,
                user_uuid: user.uuid,
            })
        }
        Request::RemoveMember {
            acting_user: actor,
            group,
            user,
            ..
        } => {
            acting_user(view, *actor)?;
            let group = live_group(view, *group)?;
            let actor_is_member = view.is_member(group.uuid, *actor)?;
            authz::remove_member(*actor, *user, group.owner_uuid, actor_is_member)?;
            if !view.is_member(group.uuid, *user)? {
                return Err(ServiceError::not_found("That user is not a member."));
            }
            Ok(Change::RemoveMember {
                group_uuid: group.uuid,
                user_uuid: *user,
            })
        }
        Request::DeleteGroup {
            acting_user: actor,
            group,
            ..
        } => {
            acting_user(view, *actor)?;
            let group = live_group(view, *group)?;
            authz::delete_group(*actor, group.owner_uuid)?;
            Ok(Change::DeleteGroup {
                group_uuid: group.uuid,
            })
        }
        Request::SendPrivate {
            message_id,
            acting_user: actor,
            to,
            content,
        } => {
            acting_user(view, *actor)?;
            if view.user(*to)?.is_none() {
                return Err(ServiceError::not_found("The user was not found."));
            }
            Ok(Change::SendMessage {
                message_uuid: *message_id,
                sender_uuid: *actor,
                recipient: Recipient::User(*to),
                content: content.clone(),
            })
        }
        Request::SendToGroup {
            message_id,
            acting_user: actor,
            group,
            content,
        } => {
            acting_user(view, *actor)?;
            let group = live_group(view, *group)?;
            authz::member_access(view.is_member(group.uuid, *actor)?)?;
            Ok(Change::SendMessage {
                message_uuid: *message_id,
                sender_uuid: *actor,
                recipient: Recipient::Group(group.uuid),
                content: content.clone(),
            })
        }
        Request::MarkRead {
            acting_user: actor,
            chat,
            read_epoch,
            ..
        } => {
            acting_user(view, *actor)?;
            let chat_id = chat_id(view, *actor, *chat)?;
            Ok(Change::MarkRead {
                user_uuid: *actor,
                chat_id,
                read_epoch: *read_epoch,
            })
        }
        _ => Err(ServiceError::invalid("Not a write request.")),
    }
}

/// The chat id of `chat` for `actor`, who must be allowed to read it: any user (deleted ones
/// too, their history stays) for a private chat, a live group the actor belongs to.
pub(crate) fn chat_id(
    view: &mut ReadView<'_>,
    actor: Uuid,
    chat: ChatRef,
) -> Result<String, ServiceError> {
    match chat {
        ChatRef::User(other) => {
            authz::private_chat(actor, other)?;
            if view.user_including_deleted(other)?.is_none() {
                return Err(ServiceError::not_found("The user was not found."));
            }
            Ok(private_chat_id(actor, other))
        }
        ChatRef::Group(group) => {
            let group = live_group(view, group)?;
            authz::member_access(view.is_member(group.uuid, actor)?)?;
            Ok(group.uuid.to_string())
        }
    }
}

/// The response a committed write gives, for its first application and for every replay.
pub(crate) fn written_response(written: Written) -> Response {
    match written {
        Written::User(user) => Response::User(user),
        Written::Group(group) => Response::Group(group),
        Written::Membership(membership) => Response::Membership(membership),
        Written::Message(message) => Response::Message(message),
        Written::ReadPosition(position) => Response::ReadPosition(position),
    }
}
