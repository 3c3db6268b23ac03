//! The application: routing, authentication, epochs and the headers every answer carries.
//! Handlers live in `api` (the JSON API) and `pages` (the browser pages).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use chat_secret::KeyRing;
use chat_service::Epoch;
use http::header::{HeaderMap, HeaderValue, AUTHORIZATION, SET_COOKIE};
use http::{Method, Request, Response};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use uuid::Uuid;

use crate::backend::{Actor, Backend};
use crate::config::{WebConfig, MAX_BODY_BYTES};
use crate::error::{ApiError, ErrorCode};
use crate::feed::ChangeFeed;
use crate::http::{
    add_security_headers, error_json, read_body, WebBody, CHAT_EPOCH, CSRF_HEADER, IDEMPOTENCY_KEY,
};
use crate::input::IDEMPOTENCY_KEY_MAX_BYTES;
use crate::ratelimit::RateLimiter;
use crate::session::{Session, SessionCodec};
use crate::token::{self, Claims};

/// What the HTTP layer needs from the node.
#[derive(Debug)]
pub struct AppState<B> {
    /// The chat operations (over the local service or the data-plane proxy).
    pub backend: B,
    /// The cluster's sessions keys (`ClusterSecret::keys(Purpose::Sessions)`): tokens and
    /// cookies are signed with the first and accepted with any.
    pub keys: KeyRing,
    /// Settings.
    pub config: WebConfig,
    /// Committed messages, for the live-update streams.
    pub change_feed: ChangeFeed,
}

/// Every route of the API and the pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    ApiRegister,
    ApiLogin,
    ApiLogout,
    ApiUsers,
    ApiUserById,
    ApiUser,
    ApiUserChat,
    ApiChats,
    ApiChatRead,
    ApiGroups,
    ApiGroup,
    ApiGroupMembers,
    ApiGroupMember,
    ApiGroupChat,
    ApiEvents,
    Home,
    Register,
    Login,
    Logout,
    Users,
    UserSegment,
    UserDelete,
    Profile,
    UserChat,
    Groups,
    Group,
    GroupDelete,
    GroupMembers,
    GroupMember,
    GroupMemberRemove,
    GroupChat,
    Static,
}

impl Route {
    const TABLE: &'static [(&'static str, Route)] = &[
        ("/api/register", Route::ApiRegister),
        ("/api/login", Route::ApiLogin),
        ("/api/logout", Route::ApiLogout),
        ("/api/users", Route::ApiUsers),
        ("/api/users/{id}", Route::ApiUserById),
        ("/api/users/{name}/{tag}", Route::ApiUser),
        ("/api/users/{name}/{tag}/chat", Route::ApiUserChat),
        ("/api/chats", Route::ApiChats),
        ("/api/chats/{chat_id}/read", Route::ApiChatRead),
        ("/api/groups", Route::ApiGroups),
        ("/api/groups/{id}", Route::ApiGroup),
        ("/api/groups/{id}/members", Route::ApiGroupMembers),
        ("/api/groups/{id}/members/{user_id}", Route::ApiGroupMember),
        ("/api/groups/{id}/chat", Route::ApiGroupChat),
        ("/api/events", Route::ApiEvents),
        ("/", Route::Home),
        ("/register", Route::Register),
        ("/login", Route::Login),
        ("/logout", Route::Logout),
        ("/users", Route::Users),
        ("/users/{name}", Route::UserSegment),
        ("/users/{name}/delete", Route::UserDelete),
        ("/users/{name}/{tag}", Route::Profile),
        ("/users/{name}/{tag}/chat", Route::UserChat),
        ("/groups", Route::Groups),
        ("/groups/{id}", Route::Group),
        ("/groups/{id}/delete", Route::GroupDelete),
        ("/groups/{id}/members", Route::GroupMembers),
        ("/groups/{id}/members/{user_id}", Route::GroupMember),
        (
            "/groups/{id}/members/{user_id}/remove",
            Route::GroupMemberRemove,
        ),
        ("/groups/{id}/chat", Route::GroupChat),
        ("/static/{*file}", Route::Static),
    ];

    /// Whether the route belongs to the JSON API (errors as JSON) rather than the pages.
    pub(crate) fn is_api(self) -> bool {
        matches!(
            self,
            Route::ApiRegister
                | Route::ApiLogin
                | Route::ApiLogout
                | Route::ApiUsers
                | Route::ApiUserById
                | Route::ApiUser
                | Route::ApiUserChat
                | Route::ApiChats
                | Route::ApiChatRead
                | Route::ApiGroups
                | Route::ApiGroup
                | Route::ApiGroupMembers
                | Route::ApiGroupMember
                | Route::ApiGroupChat
                | Route::ApiEvents
        )
    }
}

/// One request, read and decoded.
#[derive(Debug)]
pub(crate) struct Call {
    pub(crate) method: Method,
    pub(crate) route: Route,
    pub(crate) params: HashMap<String, String>,
    pub(crate) query: HashMap<String, String>,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) peer: IpAddr,
    /// The `Chat-Epoch` the client sent (0 when none).
    pub(crate) client_epoch: Epoch,
    /// The session cookie, if one opened.
    pub(crate) session: Option<Session>,
}

impl Call {
    /// A path parameter, percent-decoded.
    pub(crate) fn param(&self, name: &str) -> &str {
        self.params.get(name).map_or("", String::as_str)
    }

    /// A query parameter.
    pub(crate) fn query(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }

    /// A path parameter that must be an id; anything else names nothing that exists.
    pub(crate) fn id_param(&self, name: &str, what: &str) -> Result<Uuid, ApiError> {
        Uuid::parse_str(self.param(name))
            .map_err(|_| ApiError::not_found(format!("The {what} was not found.")))
    }

    /// The newest epoch the client has seen: its header and its cookie.
    pub(crate) fn min_epoch(&self) -> Epoch {
        let cookie = self.session.as_ref().map_or(0, |s| s.epoch);
        self.client_epoch.max(cookie)
    }
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) actor: Actor,
    /// True when the session cookie (not a token) vouched for the caller.
    pub(crate) by_cookie: bool,
    /// The session version the token or cookie carries.
    pub(crate) session_version: u64,
    /// When the token or cookie expires, unix seconds.
    pub(crate) expires_at: u64,
}

struct LoginLimits {
    per_account: RateLimiter<String>,
    per_address: RateLimiter<IpAddr>,
}

pub(crate) struct Shared<B> {
    pub(crate) state: AppState<B>,
    router: matchit::Router<Route>,
    pub(crate) sessions: SessionCodec,
    limits: Mutex<LoginLimits>,
    pub(crate) pages: crate::pages::Pages,
    pub(crate) stopping: watch::Sender<bool>,
}

/// The HTTP application: give it requests, get responses. Cheap to clone.
pub struct App<B> {
    pub(crate) shared: Arc<Shared<B>>,
}

impl<B> Clone for App<B> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

pub(crate) fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

fn parse_query(query: Option<&str>) -> Result<HashMap<String, String>, ApiError> {
    match query {
        None => Ok(HashMap::new()),
        Some(query) => serde_urlencoded::from_str(query)
            .map_err(|_| ApiError::invalid("The query string is malformed.")),
    }
}

fn client_epoch(headers: &HeaderMap) -> Result<Epoch, ApiError> {
    match headers.get(CHAT_EPOCH) {
        None => Ok(0),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .ok_or_else(|| ApiError::invalid("Chat-Epoch must be a whole number.")),
    }
}

impl<B: Backend> App<B> {
    /// An application over `state`. Fails only when the template directory holds a page
    /// that does not compile.
    pub fn new(state: AppState<B>) -> Result<Self, crate::pages::TemplateError> {
        let mut router = matchit::Router::new();
        for (path, route) in Route::TABLE {
            router
                .insert(*path, *route)
                .expect("the route table has no conflicts");
        }
        let sessions = SessionCodec::new(&state.keys, &state.config);
        let limits = LoginLimits {
            per_account: RateLimiter::new(
                state.config.login_per_account,
                state.config.rate_limit_keys,
            ),
            per_address: RateLimiter::new(
                state.config.login_per_address,
                state.config.rate_limit_keys,
            ),
        };
        let pages = crate::pages::Pages::load(state.config.template_dir.as_deref())?;
        let (stopping, _) = watch::channel(false);
        Ok(Self {
            shared: Arc::new(Shared {
                state,
                router,
                sessions,
                limits: Mutex::new(limits),
                pages,
                stopping,
            }),
        })
    }

    /// The state the application was built with.
    pub fn state(&self) -> &AppState<B> {
        &self.shared.state
    }

    /// Ends every live-update stream (the server is stopping).
    pub fn stop_streams(&self) {
        self.shared.stopping.send_replace(true);
    }

    /// Answers one request from `peer`.
    pub async fn handle<Body>(&self, request: Request<Body>, peer: IpAddr) -> Response<WebBody>
    where
        Body: http_body::Body<Data = Bytes>,
        Body::Error: std::error::Error + Send + Sync + 'static,
    {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path().to_owned();
        let Ok(matched) = self.shared.router.at(&path) else {
            let mut response = if path.starts_with("/api/") {
                error_json(&ApiError::not_found("No such route."))
            } else {
                self.shared.pages.not_found()
            };
            add_security_headers(&mut response);
            return response;
        };
        let route = *matched.value;
        let params: HashMap<String, String> = matched
            .params
            .iter()
            .map(|(name, value)| {
                let decoded = percent_encoding::percent_decode_str(value)
                    .decode_utf8_lossy()
                    .into_owned();
                (name.to_owned(), decoded)
            })
            .collect();
        let session = self.shared.sessions.read(&parts.headers);
        let call = async {
            Ok::<_, ApiError>(Call {
                query: parse_query(parts.uri.query())?,
                client_epoch: client_epoch(&parts.headers)?,
                body: read_body(body, MAX_BODY_BYTES).await?,
                method: parts.method.clone(),
                route,
                params,
                headers: parts.headers.clone(),
                peer,
                session: session.clone(),
            })
        }
        .await;
        let client_epoch = call.as_ref().map_or(0, Call::min_epoch);
        let mut response = match call {
            Ok(call) if route.is_api() => match crate::api::handle(self, &call).await {
                Ok(response) => response,
                Err(error) => error_json(&error),
            },
            Ok(call) => crate::pages::handle(self, call).await,
            Err(error) if route.is_api() => error_json(&error),
            Err(error) => self.shared.pages.error_page(&error, None),
        };
        self.finish(&mut response, client_epoch, session);
        response
    }

    /// Headers every answer carries: security, the epoch, and the refreshed cookie.
    fn finish(
        &self,
        response: &mut Response<WebBody>,
        client_epoch: Epoch,
        session: Option<Session>,
    ) {
        add_security_headers(response);
        let epoch = match response
            .headers()
            .get(CHAT_EPOCH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Epoch>().ok())
        {
            Some(epoch) => epoch,
            None => {
                response
                    .headers_mut()
                    .insert(CHAT_EPOCH, HeaderValue::from(client_epoch));
                client_epoch
            }
        };
        // A browser keeps its newest epoch in the cookie, so the next request on any input
        // node reads at least what this one showed. A handler that set the cookie already
        // (login, logout) did so with the epoch it knew.
        if let Some(mut session) = session {
            if epoch > session.epoch && !response.headers().contains_key(SET_COOKIE) {
                session.epoch = epoch;
                response
                    .headers_mut()
                    .insert(SET_COOKIE, self.shared.sessions.set_cookie(&session));
            }
        }
    }

    /// The caller, from `Authorization: Bearer` or the session cookie. A cookie vouches for a
    /// state-changing request only with the CSRF secret in `X-CSRF-Token` (or a form field,
    /// checked by the pages). The session version must be the user's current one.
    pub(crate) async fn caller(
        &self,
        call: &Call,
        csrf_field: Option<&str>,
    ) -> Result<Caller, ApiError> {
        let now = now_s();
        let (claims, by_cookie) = if let Some(header) = call.headers.get(AUTHORIZATION) {
            let token = header
                .to_str()
                .ok()
                .and_then(|value| value.strip_prefix("Bearer "))
                .ok_or_else(|| ApiError::unauthenticated("Use Authorization: Bearer <token>."))?;
            let claims =
                token::verify(&self.shared.state.keys, token.trim(), now).map_err(|error| {
                    tracing::debug!(subsystem = "input", %error, "token refused");
                    ApiError::unauthenticated("The token is invalid or expired; log in again.")
                })?;
            (claims, false)
        } else {
            let session = call.session.as_ref();
            let claims = session
                .and_then(|s| s.login.clone())
                .filter(|claims| claims.expires_at > now)
                .ok_or_else(|| ApiError::unauthenticated("Log in first."))?;
            let safe = matches!(call.method, Method::GET | Method::HEAD);
            if !safe {
                let submitted = call
                    .headers
                    .get(CSRF_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .or(csrf_field)
                    .unwrap_or("");
                if !session.is_some_and(|s| s.csrf_matches(submitted)) {
                    return Err(ApiError::forbidden(
                        "The form is stale or came from another site; reload the page and retry.",
                    ));
                }
            }
            (claims, true)
        };
        self.session_current(claims.user, claims.session_version, call.min_epoch())
            .await?;
        Ok(Caller {
            actor: Actor {
                id: claims.user,
                username: claims.username,
                tag: claims.tag,
            },
            by_cookie,
            session_version: claims.session_version,
            expires_at: claims.expires_at,
        })
    }

    /// Refuses a session of `user` issued at `version` that a logout or the account's
    /// deletion has ended since (read at `min_epoch` or later).
    async fn session_current(
        &self,
        user: Uuid,
        version: u64,
        min_epoch: Epoch,
    ) -> Result<(), ApiError> {
        let current = self
            .shared
            .state
            .backend
            .session_version(user, min_epoch)
            .await?;
        if version < current {
            return Err(ApiError::unauthenticated(
                "This session has ended; log in again.",
            ));
        }
        Ok(())
    }

    /// Whether the session that vouched for `caller` earlier still stands: not expired, not
    /// ended by a logout, its account not deleted. A look-up that fails for another reason
    /// (no replica reachable) counts as standing: the caller asks again later.
    pub(crate) async fn session_stands(&self, caller: &Caller) -> bool {
        if now_s() >= caller.expires_at {
            return false;
        }
        match self
            .session_current(caller.actor.id, caller.session_version, 0)
            .await
        {
            Ok(()) => true,
            Err(error) => error.code != ErrorCode::Unauthenticated,
        }
    }

    /// Claims for a fresh login.
    pub(crate) fn claims_for(&self, login: &crate::backend::Login) -> Claims {
        Claims {
            user: login.user.id,
            username: login.user.username.clone(),
            tag: login.user.tag.clone(),
            session_version: login.session_version,
            expires_at: now_s().saturating_add(self.shared.state.config.session_ttl_s),
        }
    }

    /// Takes one login attempt for `username#tag` from `peer`, or says how long to wait.
    pub(crate) fn check_login_rate(
        &self,
        username: &str,
        tag: &str,
        peer: IpAddr,
    ) -> Result<(), ApiError> {
        let now = Instant::now();
        let mut limits = self
            .shared
            .limits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let by_address = limits.per_address.check(&peer, now);
        let by_account = limits.per_account.check(&format!("{username}#{tag}"), now);
        match (by_address, by_account) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(wait), Ok(())) | (Ok(()), Err(wait)) => Err(ApiError::rate_limited(wait)),
            (Err(a), Err(b)) => Err(ApiError::rate_limited(a.max(b))),
        }
    }

    /// The request id of a write: from the `Idempotency-Key` header (bound to the caller and
    /// the route, so two clients' keys never meet), else a fresh one.
    pub(crate) fn request_id(&self, call: &Call, actor: Option<Uuid>) -> Result<Uuid, ApiError> {
        let Some(key) = call.headers.get(IDEMPOTENCY_KEY) else {
            return Ok(fresh_id());
        };
        let key = key.as_bytes();
        if key.is_empty() || key.len() > IDEMPOTENCY_KEY_MAX_BYTES {
            return Err(ApiError::invalid(format!(
                "Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX_BYTES} characters."
            )));
        }
        Ok(derived_id(actor, call.route, key))
    }
}

/// The request id of moving `actor`'s read position in `chat_id` to `epoch` when the client
/// gave no key: the same position asked twice (two tabs, a page load and its script, a retried
/// POST) is one write.
pub(crate) fn read_position_id(actor: Uuid, chat_id: &str, epoch: Epoch) -> Uuid {
    let key = format!("{chat_id}\0{epoch}");
    derived_id(Some(actor), Route::ApiChatRead, key.as_bytes())
}

/// A fresh request or message id: a UUIDv7, time-ordered, so the indexes keyed by these ids
/// (the messages' uuids, the remembered request ids) grow at their right edge instead of
/// dirtying a page of their own per write on every node.
pub(crate) fn fresh_id() -> Uuid {
    Uuid::now_v7()
}

/// A request id derived from a client's key: SHA-256 over the caller, the route and the key.
pub(crate) fn derived_id(actor: Option<Uuid>, route: Route, key: &[u8]) -> Uuid {
    let mut hash = Sha256::new();
    hash.update(b"chat-web/idempotency\0");
    hash.update(actor.unwrap_or_default().as_bytes());
    hash.update(format!("{route:?}").as_bytes());
    hash.update([0]);
    hash.update(key);
    let digest = hash.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}
