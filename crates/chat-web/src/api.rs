//! The JSON API (`/api/...`), as documented in `docs/api.md`.

use chat_service::{ChatRef, Epoch};
use http::header::SET_COOKIE;
use http::{Method, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::app::{read_position_id, App, Call, Caller, Route};
use crate::backend::{Answer, Backend, ChatMessages, ChatQuery};
use crate::error::ApiError;
use crate::http::{json, method_not_allowed, parse_json, status_only, with_epoch, WebBody};
use crate::input;
use crate::token;

type Handled = Result<Response<WebBody>, ApiError>;

#[derive(Deserialize)]
struct Credentials {
    username: String,
    tag: String,
    password: String,
}

#[derive(Deserialize)]
struct NewMessage {
    content: String,
    #[serde(default)]
    id: Option<Uuid>,
}

#[derive(Deserialize)]
struct NewGroup {
    name: String,
}

#[derive(Deserialize)]
struct NewMember {
    username: String,
    tag: String,
}

#[derive(Deserialize)]
struct ReadUpTo {
    /// The epoch of the newest message the reader was shown.
    epoch: Epoch,
}

#[derive(Serialize)]
struct ChatBody {
    chat_id: String,
    messages: Vec<crate::backend::MessageView>,
    epoch: Epoch,
}

/// 201 for a fresh write, 200 for a recognised retry.
fn created<T: Serialize>(answer: &Answer<T>, key: &str) -> Response<WebBody> {
    let status = if answer.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    with_epoch(json(status, &json!({ key: answer.value })), answer.epoch)
}

fn ok<T: Serialize>(value: &T, epoch: Epoch) -> Response<WebBody> {
    with_epoch(json(StatusCode::OK, value), epoch)
}

fn no_content(epoch: Epoch) -> Response<WebBody> {
    with_epoch(status_only(StatusCode::NO_CONTENT), epoch)
}

fn chat_body(chat: ChatMessages, epoch: Epoch) -> Response<WebBody> {
    ok(
        &ChatBody {
            chat_id: chat.chat_id,
            messages: chat.messages,
            epoch,
        },
        epoch,
    )
}

/// The `before` and `limit` query parameters of a chat read.
pub(crate) fn chat_query(call: &Call) -> Result<ChatQuery, ApiError> {
    let before = match call.query("before") {
        None => None,
        Some(raw) => Some(
            Uuid::parse_str(raw).map_err(|_| ApiError::invalid("before must be a message id."))?,
        ),
    };
    Ok(ChatQuery {
        before,
        limit: input::page_limit(call.query("limit"))?,
    })
}

/// The chat a `chat_id` names for `actor`: a group's id, or the private chat id
/// `<uuid>:<uuid>` with the actor on one side. Anything else names no chat of theirs.
pub(crate) fn chat_ref(actor: Uuid, chat_id: &str) -> Result<ChatRef, ApiError> {
    let unknown = || ApiError::not_found("The chat was not found.");
    match chat_id.split_once(':') {
        None => Uuid::parse_str(chat_id)
            .map(ChatRef::Group)
            .map_err(|_| unknown()),
        Some((a, b)) => {
            let (a, b) = (
                Uuid::parse_str(a).map_err(|_| unknown())?,
                Uuid::parse_str(b).map_err(|_| unknown())?,
            );
            if chat_store::private_chat_id(a, b) != chat_id {
                return Err(unknown());
            }
            match (a == actor, b == actor) {
                (true, false) => Ok(ChatRef::User(b)),
                (false, true) => Ok(ChatRef::User(a)),
                _ => Err(unknown()),
            }
        }
    }
}

/// The name and tag in a `/users/{name}/{tag}` path, checked.
pub(crate) fn name_tag(call: &Call) -> Result<(&str, &str), ApiError> {
    let (name, tag) = (call.param("name"), call.param("tag"));
    input::username(name)?;
    input::tag(tag)?;
    Ok((name, tag))
}

/// A message's id: the one in the body, else from `Idempotency-Key`, else fresh.
fn message_id<B: Backend>(
    app: &App<B>,
    call: &Call,
    caller: &Caller,
    body_id: Option<Uuid>,
) -> Result<Uuid, ApiError> {
    match body_id {
        Some(id) => Ok(id),
        None => app.request_id(call, Some(caller.actor.id)),
    }
}

/// Routes an API request to its handler.
pub(crate) async fn handle<B: Backend>(app: &App<B>, call: &Call) -> Handled {
    let backend = &app.shared.state.backend;
    let method = &call.method;
    match call.route {
        Route::ApiRegister if method == Method::POST => register(app, call).await,
        Route::ApiLogin if method == Method::POST => login(app, call).await,
        Route::ApiEvents if method == Method::GET => {
            let caller = app.caller(call, None).await?;
            crate::sse::events(app, call, &caller)
        }
        Route::ApiRegister | Route::ApiLogin | Route::ApiEvents => Err(method_not_allowed()),
        _ => {
            let caller = app.caller(call, None).await?;
            let actor = &caller.actor;
            let min_epoch = call.min_epoch();
            match (call.route, method.clone()) {
                (Route::ApiLogout, Method::POST) => {
                    let request_id = app.request_id(call, Some(actor.id))?;
                    let ended = backend.end_sessions(request_id, actor).await?;
                    // The logout's epoch: a client that sends it on (Chat-Epoch) is refused
                    // with the old token on every input node at once.
                    let mut response = no_content(ended.epoch);
                    if caller.by_cookie {
                        response
                            .headers_mut()
                            .insert(SET_COOKIE, app.shared.sessions.clear_cookie());
                    }
                    Ok(response)
                }
                (Route::ApiUsers, Method::GET) => {
                    let name = call
                        .query("name")
                        .ok_or_else(|| ApiError::invalid("Say which name: ?name=..."))?;
                    input::username(name)?;
                    let users = backend.search_users(actor, name, min_epoch).await?;
                    Ok(ok(&json!({ "users": users.value }), users.epoch))
                }
                (Route::ApiUserById, Method::DELETE) => {
                    let user = call.id_param("id", "user")?;
                    if user != actor.id {
                        return Err(ApiError::forbidden("You can only delete your own account."));
                    }
                    let request_id = app.request_id(call, Some(actor.id))?;
                    let done = backend.delete_account(request_id, actor, user).await?;
                    Ok(no_content(done.epoch))
                }
                (Route::ApiUser, Method::GET) => {
                    let (name, tag) = name_tag(call)?;
                    let profile = backend.profile(actor, name, tag, min_epoch).await?;
                    Ok(ok(&profile.value, profile.epoch))
                }
                (Route::ApiChats, Method::GET) => {
                    let chats = backend.chats(actor, min_epoch).await?;
                    Ok(ok(&json!({ "chats": chats.value }), chats.epoch))
                }
                (Route::ApiChatRead, Method::POST) => {
                    let chat = chat_ref(actor.id, call.param("chat_id"))?;
                    let body: ReadUpTo = parse_json(&call.body)?;
                    let request_id = if call.headers.contains_key(crate::http::IDEMPOTENCY_KEY) {
                        app.request_id(call, Some(actor.id))?
                    } else {
                        read_position_id(actor.id, call.param("chat_id"), body.epoch)
                    };
                    let read = backend
                        .mark_read(request_id, actor, chat, body.epoch)
                        .await?;
                    Ok(ok(&json!({ "read_epoch": read.value }), read.epoch))
                }
                (Route::ApiUserChat, Method::GET) => {
                    let (name, tag) = name_tag(call)?;
                    let query = chat_query(call)?;
                    let chat = backend
                        .read_private(actor, name, tag, query, min_epoch)
                        .await?;
                    Ok(chat_body(chat.value.chat, chat.epoch))
                }
                (Route::ApiUserChat, Method::POST) => {
                    let (name, tag) = name_tag(call)?;
                    let body: NewMessage = parse_json(&call.body)?;
                    let content = input::message(&body.content)?;
                    let id = message_id(app, call, &caller, body.id)?;
                    let sent = backend.send_private(id, actor, name, tag, content).await?;
                    Ok(created(&sent, "message"))
                }
                (Route::ApiGroups, Method::POST) => {
                    let body: NewGroup = parse_json(&call.body)?;
                    let name = input::group_name(&body.name)?;
                    let request_id = app.request_id(call, Some(actor.id))?;
                    let group = backend.create_group(request_id, actor, name).await?;
                    Ok(created(&group, "group"))
                }
                (Route::ApiGroup, Method::GET) => {
                    let group = call.id_param("id", "group")?;
                    let detail = backend.group(actor, group, min_epoch).await?;
                    Ok(ok(&detail.value, detail.epoch))
                }
                (Route::ApiGroup, Method::DELETE) => {
                    let group = call.id_param("id", "group")?;
                    let request_id = app.request_id(call, Some(actor.id))?;
                    let done = backend.delete_group(request_id, actor, group).await?;
                    Ok(no_content(done.epoch))
                }
                (Route::ApiGroupMembers, Method::GET) => {
                    let group = call.id_param("id", "group")?;
                    let detail = backend.group(actor, group, min_epoch).await?;
                    Ok(ok(
                        &json!({ "members": detail.value.members }),
                        detail.epoch,
                    ))
                }
                (Route::ApiGroupMembers, Method::POST) => {
                    let group = call.id_param("id", "group")?;
                    let body: NewMember = parse_json(&call.body)?;
                    input::username(&body.username)?;
                    input::tag(&body.tag)?;
                    let request_id = app.request_id(call, Some(actor.id))?;
                    let member = backend
                        .add_member(request_id, actor, group, &body.username, &body.tag)
                        .await?;
                    Ok(created(&member, "member"))
                }
                (Route::ApiGroupMember, Method::DELETE) => {
                    let group = call.id_param("id", "group")?;
                    let user = call.id_param("user_id", "member")?;
                    let request_id = app.request_id(call, Some(actor.id))?;
                    let done = backend
                        .remove_member(request_id, actor, group, user)
                        .await?;
                    Ok(no_content(done.epoch))
                }
                (Route::ApiGroupChat, Method::GET) => {
                    let group = call.id_param("id", "group")?;
                    let query = chat_query(call)?;
                    let chat = backend.read_group(actor, group, query, min_epoch).await?;
                    Ok(chat_body(chat.value.chat, chat.epoch))
                }
                (Route::ApiGroupChat, Method::POST) => {
                    let group = call.id_param("id", "group")?;
                    let body: NewMessage = parse_json(&call.body)?;
                    let content = input::message(&body.content)?;
                    let id = message_id(app, call, &caller, body.id)?;
                    let sent = backend.send_to_group(id, actor, group, content).await?;
                    Ok(created(&sent, "message"))
                }
                _ => Err(method_not_allowed()),
            }
        }
    }
}

async fn register<B: Backend>(app: &App<B>, call: &Call) -> Handled {
    let body: Credentials = parse_json(&call.body)?;
    input::username(&body.username)?;
    input::tag(&body.tag)?;
    input::password(&body.password)?;
    let request_id = app.request_id(call, None)?;
    let user = app
        .shared
        .state
        .backend
        .register(request_id, &body.username, &body.tag, &body.password)
        .await?;
    Ok(created(&user, "user"))
}

async fn login<B: Backend>(app: &App<B>, call: &Call) -> Handled {
    let body: Credentials = parse_json(&call.body)?;
    input::username(&body.username)?;
    input::tag(&body.tag)?;
    app.check_login_rate(&body.username, &body.tag, call.peer)?;
    let user = app
        .shared
        .state
        .backend
        .login(&body.username, &body.tag, &body.password, call.min_epoch())
        .await?;
    let claims = app.claims_for(&user.value);
    let token = token::sign(&app.shared.state.keys, &claims);
    Ok(ok(
        &json!({ "user": user.value.user, "token": token }),
        user.epoch,
    ))
}
