//! The local implementation: reads served from this node's store, writes through its group
//! committer when this node is the writer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chat_store::{private_chat_id, Epoch, Page, ReadView, Store, Term};
use uuid::Uuid;

use crate::authz;
use crate::committer::{CommitterConfig, GroupCommitter};
use crate::decide::{acting_user, chat_id, live_group};
use crate::error::ServiceError;
use crate::hasher::PasswordHasher;
use crate::protocol::{
    ChatPage, ChatRef, Credentials, Members, Reply, Request, Response, UserProfile,
};
use crate::traits::Dispatcher;
use crate::validate;

/// Settings of a [`LocalService`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceConfig {
    /// bcrypt work factor, 4 to 31, for the passwords this node hashes and verifies (as the
    /// node users talk to). Each step doubles the time per hash.
    pub bcrypt_cost: u32,
    /// True on the writer: writes go through a [`GroupCommitter`] it starts. Otherwise writes
    /// are [`ServiceError::NotWriter`].
    pub accepts_writes: bool,
    /// The writer's queue and batch sizes.
    pub committer: CommitterConfig,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            bcrypt_cost: bcrypt::DEFAULT_COST,
            accepts_writes: true,
            committer: CommitterConfig::default(),
        }
    }
}

/// Serves [`Request`]s from a [`Store`]. Cheap to clone; reads run on tokio's blocking pool,
/// writes on the group committer's thread, never on the async threads.
#[derive(Debug, Clone)]
pub struct LocalService {
    store: Arc<Store>,
    hasher: Arc<PasswordHasher>,
    committer: Option<GroupCommitter>,
    term: Arc<AtomicU64>,
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ServiceError> + Send + 'static,
) -> Result<T, ServiceError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        tracing::error!(subsystem = "data", error = %e, "blocking task failed");
        ServiceError::Storage("The server failed to complete the request.".to_owned())
    })?
}

fn chat_page(
    view: &mut ReadView<'_>,
    reader: Uuid,
    chat_id: &str,
    page: Page,
) -> Result<Response, ServiceError> {
    let messages = view.messages(chat_id, page)?;
    let mut author_uuids: Vec<Uuid> = messages.iter().map(|m| m.sender_uuid).collect();
    author_uuids.sort_unstable();
    author_uuids.dedup();
    let authors = view.users_by_uuids(&author_uuids)?;
    let read_epoch = view.read_epoch(reader, chat_id)?;
    Ok(Response::Chat(ChatPage {
        messages,
        authors,
        read_epoch,
    }))
}

impl LocalService {
    /// A service over `store`; on a writer (`accepts_writes`) it starts the group committer,
    /// writing in the store's current term until [`LocalService::set_term`].
    pub fn new(store: Arc<Store>, config: ServiceConfig) -> Result<Self, ServiceError> {
        let hasher = Arc::new(PasswordHasher::new(config.bcrypt_cost)?);
        let committer = if config.accepts_writes {
            Some(GroupCommitter::start(
                Arc::clone(&store),
                config.committer,
                None,
            )?)
        } else {
            None
        };
        let term = Arc::new(AtomicU64::new(store.election_key().term));
        Ok(Self {
            store,
            hasher,
            committer,
            term,
        })
    }

    /// A service whose writes go through `committer` (the node driver's, which also
    /// replicates the batches).
    pub fn with_committer(
        store: Arc<Store>,
        config: ServiceConfig,
        committer: Option<GroupCommitter>,
    ) -> Result<Self, ServiceError> {
        let mut service = Self::new(
            store,
            ServiceConfig {
                accepts_writes: false,
                ..config
            },
        )?;
        service.committer = committer;
        Ok(service)
    }

    /// The store this service works on (the node also replicates through it).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The term this node writes in (set when it becomes the writer).
    pub fn set_term(&self, term: Term) {
        self.term.store(term, Ordering::SeqCst);
    }

    /// Serves one request. A read is refused with [`ServiceError::ReplicaBehind`] when this
    /// database is behind `min_epoch` (the client has seen newer data elsewhere); a write is
    /// [`ServiceError::NotWriter`] when this node is not the writer, and
    /// [`ServiceError::ReplicaBehind`] when even the writer is behind `min_epoch`. Returns the
    /// answer and its epoch.
    pub async fn handle(&self, request: Request, min_epoch: Epoch) -> Result<Reply, ServiceError> {
        if request.is_write() {
            let Some(committer) = &self.committer else {
                return Err(ServiceError::NotWriter(
                    "This node does not accept writes.".to_owned(),
                ));
            };
            let term = self.term.load(Ordering::SeqCst);
            return committer.submit(term, request, min_epoch).await;
        }
        let have = self.store.applied_epoch();
        if have < min_epoch {
            return Err(ServiceError::ReplicaBehind {
                have,
                want: min_epoch,
            });
        }
        match request {
            Request::Credentials { username, tag } => {
                validate::username(&username)?;
                validate::tag(&tag)?;
                self.read(min_epoch, move |view| {
                    let found = view.credentials(&username, &tag)?.ok_or_else(|| {
                        ServiceError::not_found(format!("No user is called {username}#{tag}."))
                    })?;
                    Ok(Response::Credentials(Credentials {
                        user: found.0,
                        hash: found.1,
                    }))
                })
                .await
            }
            Request::Session { user } => {
                self.read(min_epoch, move |view| {
                    Ok(Response::User(acting_user(view, user)?))
                })
                .await
            }
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
            Request::UserProfile {
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
                    let shared_groups = view.shared_groups(actor, user.uuid)?;
                    Ok(Response::Profile(UserProfile {
                        user,
                        shared_groups,
                    }))
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
            Request::Chats { acting_user: actor } => {
                self.read(min_epoch, move |view| {
                    acting_user(view, actor)?;
                    Ok(Response::Chats(view.chats(actor)?))
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
            Request::ReadPrivate {
                acting_user: actor,
                other,
                page,
            } => {
                let page = validate::page(page)?;
                authz::private_chat(actor, other)?;
                self.read(min_epoch, move |view| {
                    acting_user(view, actor)?;
                    let chat = chat_id(view, actor, ChatRef::User(other))?;
                    debug_assert_eq!(chat, private_chat_id(actor, other));
                    chat_page(view, actor, &chat, page)
                })
                .await
            }
            Request::ReadGroup {
                acting_user: actor,
                group,
                page,
            } => {
                let page = validate::page(page)?;
                self.read(min_epoch, move |view| {
                    acting_user(view, actor)?;
                    let chat = chat_id(view, actor, ChatRef::Group(group))?;
                    chat_page(view, actor, &chat, page)
                })
                .await
            }
            write => Err(ServiceError::invalid(format!(
                "{write:?} is not a read request."
            ))),
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
        // The mark is taken after the read: it only goes up, and a change the read saw
        // raised it before it committed.
        let ((outcome, epoch), sessions_changed) = blocking(move || {
            let read = store.read(|view| Ok::<_, ServiceError>(query(view)))?;
            Ok::<_, ServiceError>((read, store.sessions_changed()))
        })
        .await?;
        if epoch < min_epoch {
            return Err(ServiceError::ReplicaBehind {
                have: epoch,
                want: min_epoch,
            });
        }
        Ok(Reply::new(outcome?, epoch).with_sessions_changed(sessions_changed))
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

    fn password_hasher(&self) -> &Arc<PasswordHasher> {
        &self.hasher
    }
}
