//! The local implementation: requests served from this node's store.

use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use chat_store::{
    private_chat_id, Change, Epoch, Operation, Page, ReadView, Recipient, SecretHash, Store, User,
    Written,
};
use uuid::Uuid;

use crate::authz;
use crate::error::ServiceError;
use crate::protocol::{ChatPage, Members, Password, Reply, Request, Response};
use crate::traits::Dispatcher;
use crate::validate;

/// Settings of a [`LocalService`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceConfig {
    /// bcrypt work factor, 4 to 31. Each step doubles the time per hash.
    pub bcrypt_cost: u32,
    /// True on the writer. A replica answers writes with [`ServiceError::Unavailable`].
    pub accepts_writes: bool,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            bcrypt_cost: bcrypt::DEFAULT_COST,
            accepts_writes: true,
        }
    }
}

/// Serves [`Request`]s from a [`Store`]. Cheap to clone; blocking work (SQLite, bcrypt) runs
/// on tokio's blocking pool, never on the async threads.
#[derive(Debug, Clone)]
pub struct LocalService {
    store: Arc<Store>,
    config: ServiceConfig,
    /// A hash verified against when a login names no user, so that a wrong name costs as much
    /// time as a wrong password and response times do not reveal which accounts exist.
    decoy_hash: Arc<OnceLock<String>>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ServiceError> + Send + 'static,
) -> Result<T, ServiceError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        tracing::error!(subsystem = "data", error = %e, "blocking task failed");
        ServiceError::unavailable("The server failed to complete the request.")
    })?
}

/// The acting user must still exist: a session can outlive its account.
fn acting_user(view: &mut ReadView<'_>, uuid: Uuid) -> Result<User, ServiceError> {
    view.user(uuid)?
        .ok_or_else(|| ServiceError::forbidden("Your account no longer exists; log in again."))
}

fn live_group(view: &mut ReadView<'_>, uuid: Uuid) -> Result<chat_store::Group, ServiceError> {
    view.group(uuid)?
        .ok_or_else(|| ServiceError::not_found("The group was not found."))
}

fn chat_page(view: &mut ReadView<'_>, chat_id: &str, page: Page) -> Result<Response, ServiceError> {
    let messages = view.messages(chat_id, page)?;
    let mut author_uuids: Vec<Uuid> = messages.iter().map(|m| m.sender_uuid).collect();
    author_uuids.sort_unstable();
    author_uuids.dedup();
    let authors = view.users_by_uuids(&author_uuids)?;
    Ok(Response::Chat(ChatPage { messages, authors }))
}

/// The response a committed write gives, for its first application and for every retry. A
/// retry whose stored result has another kind reused the id of a different request.
fn written_response(
    written: Written,
    expected: fn(&Written) -> bool,
) -> Result<Response, ServiceError> {
    if !expected(&written) {
        return Err(ServiceError::conflict(
            "This request id was already used for a different request.",
        ));
    }
    Ok(match written {
        Written::User(user) => Response::User(user),
        Written::Group(group) => Response::Group(group),
        Written::Membership(membership) => Response::Membership(membership),
        Written::Message(message) => Response::Message(message),
    })
}

fn is_user(written: &Written) -> bool {
    matches!(written, Written::User(_))
}
fn is_group(written: &Written) -> bool {
    matches!(written, Written::Group(_))
}
fn is_membership(written: &Written) -> bool {
    matches!(written, Written::Membership(_))
}
fn is_message(written: &Written) -> bool {
    matches!(written, Written::Message(_))
}

impl LocalService {
    /// A service over `store`. Fails if the bcrypt cost is outside 4 to 31.
    pub fn new(store: Arc<Store>, config: ServiceConfig) -> Result<Self, ServiceError> {
        if !(4..=31).contains(&config.bcrypt_cost) {
            return Err(ServiceError::invalid(format!(
                "bcrypt cost {} is outside 4..=31",
                config.bcrypt_cost
            )));
        }
        Ok(Self {
            store,
            config,
            decoy_hash: Arc::new(OnceLock::new()),
        })
    }

    /// The store this service works on (the node also replicates through it).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Serves one request. Reads are refused with [`ServiceError::Unavailable`] when this
    /// database is behind `min_epoch` (the client has seen newer data elsewhere); writes are
    /// refused when this node is not the writer. Returns the answer and its epoch.
    pub async fn handle(&self, request: Request, min_epoch: Epoch) -> Result<Reply, ServiceError> {
        if request.is_write() && !self.config.accepts_writes {
            return Err(ServiceError::unavailable(
                "This node does not accept writes.",
            ));
        }
        match request {
            Request::Register {
                request_id,
                username,
                tag,
                password,
            } => self.register(request_id, username, tag, password).await,
            Request::Login {
                username,
                tag,
                password,
            } => self.login(username, tag, password, min_epoch).await,
            Request::GetUser {
                acting_user: actor,
                username,
                tag,
            } => {
                validate::username(&username)?;
                validate::tag(&tag)?;
                self.read(min_epoch, move |view| {
                    acting_user(view, actor)?;
                    let user = view.user_by_name_tag(&username, &tag)?.ok_or_else(|| {
                        ServiceError::not_found(format!("No user is called {username}#{tag}."))
                    })?;
                    Ok(Response::User(user))
                })
                .await
            }
            Request::SearchUsers {
                acting_user: actor,
                username,
            } => {
                validate::username(&username)?;
                self.read(min_epoch, move |view| {
                    acting_user(view, actor)?;
                    Ok(Response::Users(
                        view.users_by_name(&username, validate::SEARCH_MAX)?,
                    ))
                })
                .await
            }
            Request::DeleteAccount {
                request_id,
                acting_user: actor,
                user,
            } => {
                authz::delete_account(actor, user)?;
                self.write(request_id, is_user, move |view| {
                    acting_user(view, actor)?;
                    Ok(Change::DeleteUser { user_uuid: user })
                })
                .await
            }
            Request::CreateGroup {
                request_id,
                acting_user: actor,
                name,
            } => {
                let name = validate::group_name(&name)?;
                self.write(request_id, is_group, move |view| {
                    acting_user(view, actor)?;
                    Ok(Change::CreateGroup {
                        group_uuid: Uuid::new_v4(),
                        name,
                        creator_uuid: actor,
                    })
                })
                .await
            }
            Request::GetGroup {
                acting_user: actor,
                group,
            } => {
                self.read(min_epoch, move |view| {
                    acting_user(view, actor)?;
                    let group = live_group(view, group)?;
                    authz::member_access(view.is_member(group.uuid, actor)?)?;
                    Ok(Response::Group(group))
                })
                .await
            }
            Request::MyGroups { acting_user: actor } => {
                self.read(min_epoch, move |view| {
                    acting_user(view, actor)?;
                    Ok(Response::Groups(view.groups_of_member(actor)?))
                })
                .await
            }
            Request::GroupMembers {
                acting_user: actor,
                group,
            } => {
                self.read(min_epoch, move |view| {
                    acting_user(view, actor)?;
                    let group = live_group(view, group)?;
                    authz::member_access(view.is_member(group.uuid, actor)?)?;
                    let members = view.members(group.uuid)?;
                    Ok(Response::Members(Members { group, members }))
                })
                .await
            }
            Request::AddMember {
                request_id,
                acting_user: actor,
                group,
                username,
                tag,
            } => {
                validate::username(&username)?;
                validate::tag(&tag)?;
                self.write(request_id, is_membership, move |view| {
                    acting_user(view, actor)?;
                    let group = live_group(view, group)?;
                    authz::add_member(view.is_member(group.uuid, actor)?)?;
                    let user = view.user_by_name_tag(&username, &tag)?.ok_or_else(|| {
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
                })
                .await
            }
            Request::RemoveMember {
                request_id,
                acting_user: actor,
                group,
                user,
            } => {
                self.write(request_id, is_group, move |view| {
                    acting_user(view, actor)?;
                    let group = live_group(view, group)?;
                    let actor_is_member = view.is_member(group.uuid, actor)?;
                    authz::remove_member(actor, user, group.owner_uuid, actor_is_member)?;
                    if !view.is_member(group.uuid, user)? {
                        return Err(ServiceError::not_found("That user is not a member."));
                    }
                    Ok(Change::RemoveMember {
                        group_uuid: group.uuid,
                        user_uuid: user,
                    })
                })
                .await
            }
            Request::DeleteGroup {
                request_id,
                acting_user: actor,
                group,
            } => {
                self.write(request_id, is_group, move |view| {
                    acting_user(view, actor)?;
                    let group = live_group(view, group)?;
                    authz::delete_group(actor, group.owner_uuid)?;
                    Ok(Change::DeleteGroup {
                        group_uuid: group.uuid,
                    })
                })
                .await
            }
            Request::SendPrivate {
                message_id,
                acting_user: actor,
                to,
                content,
            } => {
                validate::message_content(&content)?;
                authz::private_chat(actor, to)?;
                self.write(message_id, is_message, move |view| {
                    acting_user(view, actor)?;
                    if view.user(to)?.is_none() {
                        return Err(ServiceError::not_found("The user was not found."));
                    }
                    Ok(Change::SendMessage {
                        message_uuid: message_id,
                        sender_uuid: actor,
                        recipient: Recipient::User(to),
                        content,
                    })
                })
                .await
            }
            Request::SendToGroup {
                message_id,
                acting_user: actor,
                group,
                content,
            } => {
                validate::message_content(&content)?;
                self.write(message_id, is_message, move |view| {
                    acting_user(view, actor)?;
                    let group = live_group(view, group)?;
                    authz::member_access(view.is_member(group.uuid, actor)?)?;
                    Ok(Change::SendMessage {
                        message_uuid: message_id,
                        sender_uuid: actor,
                        recipient: Recipient::Group(group.uuid),
                        content,
                    })
                })
                .await
            }
            Request::ReadPrivate {
                acting_user: actor,
                other,
                page,
            } => {
                validate::page(page)?;
                authz::private_chat(actor, other)?;
                self.read(min_epoch, move |view| {
                    acting_user(view, actor)?;
                    if view.user_including_deleted(other)?.is_none() {
                        return Err(ServiceError::not_found("The user was not found."));
                    }
                    chat_page(view, &private_chat_id(actor, other), page)
                })
                .await
            }
            Request::ReadGroup {
                acting_user: actor,
                group,
                page,
            } => {
                validate::page(page)?;
                self.read(min_epoch, move |view| {
                    acting_user(view, actor)?;
                    let group = live_group(view, group)?;
                    authz::member_access(view.is_member(group.uuid, actor)?)?;
                    chat_page(view, &group.uuid.to_string(), page)
                })
                .await
            }
        }
    }

    /// One read transaction off the async threads; refused if this database is behind.
    async fn read(
        &self,
        min_epoch: Epoch,
        query: impl FnOnce(&mut ReadView<'_>) -> Result<Response, ServiceError> + Send + 'static,
    ) -> Result<Reply, ServiceError> {
        let store = Arc::clone(&self.store);
        // The query's own error is kept apart: a denial or a "not found" computed on data
        // older than the client has seen is as stale as a result, so freshness comes first.
        let (outcome, epoch) =
            blocking(move || store.read(|view| Ok::<_, ServiceError>(query(view)))).await?;
        if epoch < min_epoch {
            return Err(ServiceError::unavailable(
                "This node has not caught up with your latest changes yet.",
            ));
        }
        Ok(Reply {
            value: outcome?,
            epoch,
        })
    }

    /// Holds the writer while `decide` checks the rules and picks the change, then commits it.
    /// A request id applied before returns its first result without deciding again.
    async fn write(
        &self,
        request_id: Uuid,
        expected: fn(&Written) -> bool,
        decide: impl FnOnce(&mut ReadView<'_>) -> Result<Change, ServiceError> + Send + 'static,
    ) -> Result<Reply, ServiceError> {
        let store = Arc::clone(&self.store);
        let at_ms = now_ms();
        let committed = blocking(move || {
            store.write(|session| {
                if let Some(first) = session.view().applied(request_id)? {
                    return Ok(first);
                }
                let change = decide(&mut session.view())?;
                Ok(session.commit(&Operation {
                    request_id,
                    at_ms,
                    change,
                })?)
            })
        })
        .await?;
        Ok(Reply {
            value: written_response(committed.written, expected)?,
            epoch: committed.epoch,
        })
    }

    async fn register(
        &self,
        request_id: Uuid,
        username: String,
        tag: String,
        password: Password,
    ) -> Result<Reply, ServiceError> {
        validate::username(&username)?;
        validate::tag(&tag)?;
        validate::password(password.expose())?;
        // Cheap checks before the expensive hash; repeated under the writer lock below.
        let store = Arc::clone(&self.store);
        let (name, tg) = (username.clone(), tag.clone());
        let (early, _) = blocking(move || {
            store.read(|view| {
                if let Some(first) = view.applied(request_id)? {
                    return Ok(Some(first));
                }
                if view.user_by_name_tag(&name, &tg)?.is_some() {
                    return Err(ServiceError::conflict(format!(
                        "{name}#{tg} is already taken."
                    )));
                }
                Ok(None)
            })
        })
        .await?;
        if let Some(first) = early {
            return Ok(Reply {
                value: written_response(first.written, is_user)?,
                epoch: first.epoch,
            });
        }
        let cost = self.config.bcrypt_cost;
        let hash = blocking(move || {
            bcrypt::hash(password.expose(), cost).map_err(|e| {
                tracing::error!(subsystem = "data", error = %e, "bcrypt failed");
                ServiceError::unavailable("Registration failed; try again later.")
            })
        })
        .await?;
        self.write(request_id, is_user, move |view| {
            if view.user_by_name_tag(&username, &tag)?.is_some() {
                return Err(ServiceError::conflict(format!(
                    "{username}#{tag} is already taken."
                )));
            }
            Ok(Change::RegisterUser {
                user_uuid: Uuid::new_v4(),
                username,
                tag,
                secret: SecretHash::new(hash),
            })
        })
        .await
    }

    async fn login(
        &self,
        username: String,
        tag: String,
        password: Password,
        min_epoch: Epoch,
    ) -> Result<Reply, ServiceError> {
        validate::username(&username)?;
        validate::tag(&tag)?;
        let store = Arc::clone(&self.store);
        let (found, epoch) =
            blocking(move || store.read(|view| Ok(view.credentials(&username, &tag)?))).await?;
        if epoch < min_epoch {
            return Err(ServiceError::unavailable(
                "This node has not caught up with your latest changes yet.",
            ));
        }
        let cost = self.config.bcrypt_cost;
        let decoy = Arc::clone(&self.decoy_hash);
        let user = blocking(move || {
            let (user, hash) = match found {
                Some((user, secret)) => (Some(user), secret.expose().to_owned()),
                None => (
                    None,
                    decoy
                        .get_or_init(|| bcrypt::hash("decoy password", cost).unwrap_or_default())
                        .clone(),
                ),
            };
            // A malformed stored hash counts as a mismatch: the user gets the same answer.
            let matches = bcrypt::verify(password.expose(), &hash).unwrap_or(false);
            Ok(user.filter(|_| matches))
        })
        .await?;
        let user =
            user.ok_or_else(|| ServiceError::forbidden("Wrong username, tag or password."))?;
        Ok(Reply {
            value: Response::User(user),
            epoch,
        })
    }
}

impl Dispatcher for LocalService {
    fn dispatch(
        &self,
        request: Request,
        min_epoch: Epoch,
    ) -> impl std::future::Future<Output = Result<Reply, ServiceError>> + Send {
        self.handle(request, min_epoch)
    }
}
