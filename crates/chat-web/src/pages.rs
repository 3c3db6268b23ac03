//! The browser pages: the prototype's routes and form fields, rendered with handlebars from
//! the configured template directory, falling back to the copy built into the binary.
//!
//! Every page works as plain forms with script off (post, then a redirect back: no double
//! submit on reload); with script on, `chat.js` sends messages through the JSON API without
//! reloading and inserts live updates from `/api/events`. Logged-in requests are
//! authenticated by the session cookie; every form carries the session's CSRF secret.

use std::path::Path;

use bytes::Bytes;
use chat_service::ChatRef;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, LOCATION, RETRY_AFTER, SET_COOKIE};
use http::{Method, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::api::{chat_query, name_tag};
use crate::app::{derived_id, fresh_id, read_position_id, App, Call, Caller, Route};
use crate::backend::{Backend, ChatMessages, UserView};
use crate::error::{ApiError, ErrorCode};
use crate::http::{error_json, full, parse_form, with_epoch, WebBody};
use crate::input;
use crate::session::Session;

/// A page template that does not compile.
#[derive(Debug, thiserror::Error)]
#[error("template {name}: {reason}")]
pub struct TemplateError {
    /// The page.
    pub name: String,
    /// What is wrong.
    pub reason: String,
}

/// How long a chat page waits for the write that moves the reader's position before it is
/// shown anyway (a failover can hold a write for the whole request budget).
const SHOWN_MARK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The pages, each with its copy built into the binary.
const PAGES: &[(&str, &str)] = &[
    ("index", include_str!("../../../templates/index.hbs")),
    ("register", include_str!("../../../templates/register.hbs")),
    ("login", include_str!("../../../templates/login.hbs")),
    ("logout", include_str!("../../../templates/logout.hbs")),
    ("search", include_str!("../../../templates/search.hbs")),
    ("profile", include_str!("../../../templates/profile.hbs")),
    ("chat", include_str!("../../../templates/chat.hbs")),
    ("groups", include_str!("../../../templates/groups.hbs")),
    ("group", include_str!("../../../templates/group.hbs")),
    ("members", include_str!("../../../templates/members.hbs")),
    ("error", include_str!("../../../templates/error.hbs")),
];

/// The layout every page fills (a partial block).
const LAYOUT: (&str, &str) = ("base", include_str!("../../../templates/base.hbs"));

/// The static assets: `(file name, content type, built-in copy)`.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "chat.css",
        "text/css; charset=utf-8",
        include_str!("../../../templates/static/chat.css"),
    ),
    (
        "chat.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../templates/static/chat.js"),
    ),
];

#[derive(Debug)]
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: Bytes,
}

/// The compiled pages and the assets.
#[derive(Debug)]
pub(crate) struct Pages {
    registry: handlebars::Handlebars<'static>,
    assets: Vec<Asset>,
    /// A hash of the assets, in their URLs (`?v=`), so they can be cached for good.
    asset_version: String,
}

/// The file's text from the template directory, or the built-in copy when the directory
/// has no such file.
fn source(dir: Option<&Path>, file: &str, built_in: &'static str) -> String {
    if let Some(dir) = dir {
        let path = dir.join(file);
        match std::fs::read_to_string(&path) {
            Ok(text) => return text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => tracing::warn!(
                subsystem = "input", path = %path.display(), %error,
                "cannot read a template; using the built-in copy"
            ),
        }
    }
    built_in.to_owned()
}

impl Pages {
    /// Compiles the pages from `dir` (each file missing there comes from the binary).
    pub(crate) fn load(dir: Option<&Path>) -> Result<Self, TemplateError> {
        let mut registry = handlebars::Handlebars::new();
        registry.set_strict_mode(false);
        let compile_error = |name: &str, error: handlebars::TemplateError| TemplateError {
            name: name.to_owned(),
            reason: error.to_string(),
        };
        let (layout, built_in) = LAYOUT;
        registry
            .register_partial(layout, source(dir, &format!("{layout}.hbs"), built_in))
            .map_err(|e| compile_error(layout, e))?;
        for (name, built_in) in PAGES {
            registry
                .register_template_string(name, source(dir, &format!("{name}.hbs"), built_in))
                .map_err(|e| compile_error(name, e))?;
        }
        let mut hash = Sha256::new();
        let assets: Vec<Asset> = ASSETS
            .iter()
            .map(|(name, content_type, built_in)| {
                let text = source(dir, &format!("static/{name}"), built_in);
                hash.update(text.as_bytes());
                Asset {
                    name,
                    content_type,
                    bytes: Bytes::from(text),
                }
            })
            .collect();
        let asset_version = hex::encode(&hash.finalize()[..6]);
        Ok(Self {
            registry,
            assets,
            asset_version,
        })
    }

    /// Renders page `name` with `data` (plus the asset version).
    fn render(&self, name: &str, status: StatusCode, mut data: Value) -> Response<WebBody> {
        data["asset_version"] = Value::from(self.asset_version.as_str());
        let html = self.registry.render(name, &data).unwrap_or_else(|error| {
            tracing::error!(subsystem = "input", page = name, %error, "page failed to render");
            "<!doctype html><title>Error</title><p>This page could not be shown.</p>".to_owned()
        });
        let mut response = Response::new(full(html));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

    /// The 404 page.
    pub(crate) fn not_found(&self) -> Response<WebBody> {
        self.error_page(
            &ApiError::not_found("There is nothing at this address."),
            None,
        )
    }

    /// The page for an error; a 503 says "reconnecting" and retries by itself.
    pub(crate) fn error_page(
        &self,
        error: &ApiError,
        page: Option<&PageContext>,
    ) -> Response<WebBody> {
        let heading = match error.code {
            ErrorCode::NotFound => "Not found",
            ErrorCode::Forbidden => "Not allowed",
            ErrorCode::InvalidInput => "That did not work",
            ErrorCode::TooLarge => "Too large",
            ErrorCode::RateLimited => "Too many attempts",
            _ => "Something went wrong",
        };
        let retry_after = (error.code == ErrorCode::Unavailable)
            .then(|| error.retry_after_secs())
            .flatten();
        let mut data = page.map_or_else(|| json!({}), PageContext::data);
        data["heading"] = Value::from(heading);
        data["message"] = Value::from(error.message.as_str());
        data["retry_after"] = json!(retry_after);
        let mut response = self.render("error", error.code.status(), data);
        crate::http::add_retry_after(&mut response, error);
        response
    }

    /// A static asset; versioned URLs are cached for a year.
    fn asset(&self, file: &str, version: Option<&str>) -> Response<WebBody> {
        let Some(asset) = self.assets.iter().find(|asset| asset.name == file) else {
            return self.not_found();
        };
        let cache = if version == Some(self.asset_version.as_str()) {
            "public, max-age=31536000, immutable"
        } else {
            "public, max-age=300"
        };
        let mut response = Response::new(full(asset.bytes.clone()));
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
        response
    }
}

/// What every page shows: who is logged in and the CSRF secret for its forms.
#[derive(Debug, Clone)]
pub(crate) struct PageContext {
    me: Option<UserView>,
    csrf: String,
}

impl PageContext {
    fn data(&self) -> Value {
        json!({ "me": self.me, "csrf": self.csrf })
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CredentialsForm {
    username: String,
    tag: String,
    password: String,
    csrf: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct MessageForm {
    content: String,
    id: String,
    csrf: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct GroupForm {
    groupname: String,
    csrf: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct MemberForm {
    username: String,
    tag: String,
    csrf: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CsrfForm {
    csrf: String,
}

fn redirect(to: &str) -> Response<WebBody> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::SEE_OTHER;
    let location = HeaderValue::from_str(to).unwrap_or_else(|_| HeaderValue::from_static("/"));
    response.headers_mut().insert(LOCATION, location);
    response
}

fn with_cookie(mut response: Response<WebBody>, cookie: HeaderValue) -> Response<WebBody> {
    response.headers_mut().insert(SET_COOKIE, cookie);
    response
}

/// What a path segment keeps as is: RFC 3986's unreserved characters.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A URL path segment: names may hold any letter, so they are percent-encoded.
fn segment(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, SEGMENT).to_string()
}

fn profile_path(user: &UserView) -> String {
    format!("/users/{}/{}", segment(&user.username), segment(&user.tag))
}

struct PageCall<'a, B> {
    app: &'a App<B>,
    call: Call,
    /// The session (a fresh anonymous one when the browser sent none).
    session: Session,
    /// True when `session` is new and must be sent as a cookie.
    fresh_session: bool,
}

type PageResult = Result<Response<WebBody>, ApiError>;

impl<B: Backend> PageCall<'_, B> {
    fn pages(&self) -> &Pages {
        &self.app.shared.pages
    }

    fn backend(&self) -> &B {
        &self.app.shared.state.backend
    }

    /// The context for someone not (necessarily) logged in: the name shown is the cookie's.
    fn anonymous_context(&self) -> PageContext {
        PageContext {
            me: self.session.login.as_ref().map(|claims| UserView {
                id: claims.user,
                username: claims.username.clone(),
                tag: claims.tag.clone(),
            }),
            csrf: self.session.csrf.clone(),
        }
    }

    fn context(&self, caller: &Caller) -> PageContext {
        PageContext {
            me: Some(caller.actor.view()),
            csrf: self.session.csrf.clone(),
        }
    }

    /// The logged-in caller; for a form post, its CSRF field must match the session.
    async fn caller(&self, csrf_field: Option<&str>) -> Result<Caller, ApiError> {
        self.app.caller(&self.call, csrf_field).await
    }

    fn render(
        &self,
        name: &str,
        status: StatusCode,
        context: &PageContext,
        extra: Value,
    ) -> Response<WebBody> {
        let mut data = context.data();
        if let (Value::Object(data), Value::Object(extra)) = (&mut data, extra) {
            data.extend(extra);
        }
        self.pages().render(name, status, data)
    }

    fn form<T: serde::de::DeserializeOwned>(&self) -> Result<T, ApiError> {
        parse_form(&self.call.body)
    }

    /// The CSRF check of a form posted before login (register, login).
    fn check_anonymous_csrf(&self, submitted: &str) -> Result<(), ApiError> {
        if self.fresh_session || !self.session.csrf_matches(submitted) {
            return Err(ApiError::forbidden(
                "The form is stale or came from another site; reload the page and retry.",
            ));
        }
        Ok(())
    }

    async fn route(&mut self) -> PageResult {
        let method = self.call.method.clone();
        match (self.call.route, method) {
            (Route::Home, Method::GET) => self.home().await,
            (Route::Register, Method::GET) => {
                Ok(self.credentials_page("register", StatusCode::OK, None, None, None))
            }
            (Route::Register, Method::POST) => self.register().await,
            (Route::Login, Method::GET) => {
                let notice = self
                    .call
                    .query("registered")
                    .map(|_| "Your account is ready: log in.");
                Ok(self.credentials_page("login", StatusCode::OK, None, None, notice))
            }
            (Route::Login, Method::POST) => self.login().await,
            (Route::Logout, Method::GET) => match self.caller(None).await {
                Ok(caller) => {
                    Ok(self.render("logout", StatusCode::OK, &self.context(&caller), json!({})))
                }
                Err(_) => Ok(redirect("/login")),
            },
            (Route::Logout, Method::POST) => self.logout().await,
            (Route::Users, Method::GET) => {
                let name = self.call.query("name").map(str::to_owned);
                self.search(name).await
            }
            (Route::UserSegment, Method::GET) => {
                let name = self.call.param("name").to_owned();
                self.search(Some(name)).await
            }
            (Route::UserSegment, Method::DELETE) => self.api(Route::ApiUserById).await,
            (Route::UserDelete, Method::POST) => self.delete_account().await,
            (Route::Profile, Method::GET) => self.profile().await,
            (Route::UserChat, Method::GET) => self.private_chat().await,
            (Route::UserChat, Method::POST) => self.send_private().await,
            (Route::Groups, Method::GET) => {
                let caller = self.caller(None).await?;
                Ok(self.render(
                    "groups",
                    StatusCode::OK,
                    &self.context(&caller),
                    json!({"title": "New group"}),
                ))
            }
            (Route::Groups, Method::POST) => self.create_group().await,
            (Route::Group, Method::GET) => self.group().await,
            (Route::Group, Method::DELETE) => self.api(Route::ApiGroup).await,
            (Route::GroupDelete, Method::POST) => self.delete_group().await,
            (Route::GroupMembers, Method::GET) => {
                let caller = self.caller(None).await?;
                self.members(&caller, StatusCode::OK, None).await
            }
            (Route::GroupMembers, Method::POST) => self.add_member().await,
            (Route::GroupMember, Method::DELETE) => self.api(Route::ApiGroupMember).await,
            (Route::GroupMemberRemove, Method::POST) => self.remove_member().await,
            (Route::GroupChat, Method::GET) => self.group_chat().await,
            (Route::GroupChat, Method::POST) => self.send_to_group().await,
            (Route::Static, Method::GET) => Ok(self
                .pages()
                .asset(self.call.param("file"), self.call.query("v"))),
            _ => Err(crate::http::method_not_allowed()),
        }
    }

    /// The DELETE routes the prototype's script used: answered as the API answers.
    async fn api(&mut self, route: Route) -> PageResult {
        self.call.route = route;
        Ok(match crate::api::handle(self.app, &self.call).await {
            Ok(response) => response,
            Err(error) => error_json(&error),
        })
    }

    async fn home(&self) -> PageResult {
        let Ok(caller) = self.caller(None).await else {
            return Ok(self.render(
                "index",
                StatusCode::OK,
                &self.anonymous_context(),
                json!({"title": "Welcome", "me": null}),
            ));
        };
        let chats = self
            .backend()
            .chats(&caller.actor, self.call.min_epoch())
            .await?;
        let response = self.render(
            "index",
            StatusCode::OK,
            &self.context(&caller),
            json!({"title": "Home", "chats": chats.value, "epoch": chats.epoch}),
        );
        Ok(with_epoch(response, chats.epoch))
    }

    fn credentials_page(
        &self,
        page: &str,
        status: StatusCode,
        form: Option<&CredentialsForm>,
        error: Option<&ApiError>,
        notice: Option<&str>,
    ) -> Response<WebBody> {
        let title = if page == "login" {
            "Log in"
        } else {
            "Register"
        };
        let mut response = self.render(
            page,
            status,
            &self.anonymous_context(),
            json!({
                "title": title,
                "username": form.map(|f| f.username.as_str()),
                "tag": form.map(|f| f.tag.as_str()),
                "error": error.map(|e| e.message.as_str()),
                "notice": notice,
            }),
        );
        if let Some(error) = error {
            crate::http::add_retry_after(&mut response, error);
        }
        response
    }

    async fn register(&self) -> PageResult {
        let form: CredentialsForm = self.form()?;
        self.check_anonymous_csrf(&form.csrf)?;
        let checked = input::username(&form.username)
            .and_then(|()| input::tag(&form.tag))
            .and_then(|()| input::password(&form.password));
        if let Err(error) = checked {
            return Ok(self.credentials_page(
                "register",
                error.code.status(),
                Some(&form),
                Some(&error),
                None,
            ));
        }
        // A form posted twice (a double click, a retry) is the same registration.
        // The password is part of it so a corrected form is a new request; the key is hashed
        // with the session's secret, which is stored nowhere.
        let key = format!(
            "{}\0{}\0{}\0{}",
            self.session.csrf, form.username, form.tag, form.password
        );
        let request_id = derived_id(None, Route::Register, key.as_bytes());
        match self
            .backend()
            .register(request_id, &form.username, &form.tag, &form.password)
            .await
        {
            Ok(user) => Ok(with_epoch(redirect("/login?registered=1"), user.epoch)),
            Err(error) if error.code == ErrorCode::Unavailable => Err(error),
            Err(error) => Ok(self.credentials_page(
                "register",
                error.code.status(),
                Some(&form),
                Some(&error),
                None,
            )),
        }
    }

    async fn login(&self) -> PageResult {
        let form: CredentialsForm = self.form()?;
        self.check_anonymous_csrf(&form.csrf)?;
        let attempt = async {
            input::username(&form.username)?;
            input::tag(&form.tag)?;
            self.app
                .check_login_rate(&form.username, &form.tag, self.call.peer)?;
            self.backend()
                .login(
                    &form.username,
                    &form.tag,
                    &form.password,
                    self.call.min_epoch(),
                )
                .await
        };
        let user = match attempt.await {
            Ok(user) => user,
            Err(error) if error.code == ErrorCode::Unavailable => return Err(error),
            Err(error) => {
                return Ok(self.credentials_page(
                    "login",
                    error.code.status(),
                    Some(&form),
                    Some(&error),
                    None,
                ))
            }
        };
        let claims = self.app.claims_for(&user.value);
        // A new CSRF secret with the login, so a secret planted before it is worthless.
        let session = Session::new(Some(claims), user.epoch.max(self.session.epoch));
        let cookie = self.app.shared.sessions.set_cookie(&session);
        Ok(with_epoch(with_cookie(redirect("/"), cookie), user.epoch))
    }

    async fn logout(&self) -> PageResult {
        let form: CsrfForm = self.form()?;
        let caller = self.caller(Some(&form.csrf)).await?;
        // A form posted twice (a double click) is one logout.
        let request_id = derived_id(Some(caller.actor.id), Route::Logout, form.csrf.as_bytes());
        let ended = self
            .backend()
            .end_sessions(request_id, &caller.actor)
            .await?;
        let anonymous = Session::new(None, self.session.epoch.max(ended.epoch));
        Ok(with_cookie(
            redirect("/login"),
            self.app.shared.sessions.set_cookie(&anonymous),
        ))
    }

    async fn search(&self, name: Option<String>) -> PageResult {
        let caller = self.caller(None).await?;
        let context = self.context(&caller);
        let Some(name) = name.filter(|n| !n.is_empty()) else {
            return Ok(self.render(
                "search",
                StatusCode::OK,
                &context,
                json!({"title": "Find people"}),
            ));
        };
        if let Err(error) = input::username(&name) {
            return Ok(self.render(
                "search",
                StatusCode::BAD_REQUEST,
                &context,
                json!({"title": "Find people", "name": name, "error": error.message}),
            ));
        }
        let users = self
            .backend()
            .search_users(&caller.actor, &name, self.call.min_epoch())
            .await?;
        let response = self.render(
            "search",
            StatusCode::OK,
            &context,
            json!({"title": "Find people", "name": name, "searched": true, "users": users.value}),
        );
        Ok(with_epoch(response, users.epoch))
    }

    async fn delete_account(&self) -> PageResult {
        let form: CsrfForm = self.form()?;
        let caller = self.caller(Some(&form.csrf)).await?;
        let user = self.call.id_param("name", "user")?;
        if user != caller.actor.id {
            return Err(ApiError::forbidden("You can only delete your own account."));
        }
        let request_id = derived_id(Some(user), Route::UserDelete, form.csrf.as_bytes());
        let done = self
            .backend()
            .delete_account(request_id, &caller.actor, user)
            .await?;
        let anonymous = Session::new(None, done.epoch);
        let response = with_cookie(
            redirect("/register"),
            self.app.shared.sessions.set_cookie(&anonymous),
        );
        Ok(with_epoch(response, done.epoch))
    }

    async fn profile(&self) -> PageResult {
        let caller = self.caller(None).await?;
        let (name, tag) = name_tag(&self.call)?;
        let profile = self
            .backend()
            .profile(&caller.actor, name, tag, self.call.min_epoch())
            .await?;
        let own = profile.value.user.id == caller.actor.id;
        let response = self.render(
            "profile",
            StatusCode::OK,
            &self.context(&caller),
            json!({
                "title": format!("{}#{}", profile.value.user.username, profile.value.user.tag),
                "user": profile.value.user,
                "groups": profile.value.groups,
                "own": own,
            }),
        );
        Ok(with_epoch(response, profile.epoch))
    }

    /// A chat's page. Showing the newest messages moves the reader's position to the newest
    /// one, so the home page's unread count for the chat drops to 0; a page whose newest
    /// message was read before writes nothing. A failed or slow move (a writer failing over)
    /// still shows the page, after at most [`SHOWN_MARK_WAIT`]: the count stays until the
    /// next view.
    async fn chat_page(
        &self,
        caller: &Caller,
        title: &str,
        api: String,
        (shown, chat): (ChatRef, ChatMessages),
        mut epoch: u64,
        extra: Value,
    ) -> Response<WebBody> {
        let mut read_epoch = chat.read_epoch;
        let newest_page = self.call.query("before").is_none();
        if let Some(through) = chat.unread_through(caller.actor.id).filter(|_| newest_page) {
            let request_id = read_position_id(caller.actor.id, &chat.chat_id, through);
            let mark = self
                .backend()
                .mark_read(request_id, &caller.actor, shown, through);
            match tokio::time::timeout(SHOWN_MARK_WAIT, mark).await {
                Ok(Ok(read)) => {
                    read_epoch = read.value;
                    epoch = epoch.max(read.epoch);
                }
                Ok(Err(error)) => {
                    tracing::debug!(subsystem = "input", %error, "could not move a read position")
                }
                Err(_) => {
                    tracing::debug!(
                        subsystem = "input",
                        "moving a read position is slow; not waiting"
                    )
                }
            }
        }
        let messages: Vec<Value> = chat
            .messages
            .iter()
            .map(|message| {
                let mut value = json!(message);
                value["mine"] = Value::from(message.sender.id == caller.actor.id);
                value
            })
            .collect();
        let mut data = json!({
            "title": title,
            "chat_id": chat.chat_id,
            "api": api,
            "path": self.call_path(),
            "messages": messages,
            "epoch": epoch,
            "read_epoch": read_epoch,
            "next_id": fresh_id(),
        });
        if let (Value::Object(data), Value::Object(extra)) = (&mut data, extra) {
            data.extend(extra);
        }
        with_epoch(
            self.render("chat", StatusCode::OK, &self.context(caller), data),
            epoch,
        )
    }

    /// The request's path, percent-encoded as it came.
    fn call_path(&self) -> String {
        match self.call.route {
            Route::UserChat => format!(
                "/users/{}/{}/chat",
                segment(self.call.param("name")),
                segment(self.call.param("tag"))
            ),
            Route::GroupChat => format!("/groups/{}/chat", segment(self.call.param("id"))),
            _ => "/".to_owned(),
        }
    }

    async fn private_chat(&self) -> PageResult {
        let caller = self.caller(None).await?;
        let (name, tag) = name_tag(&self.call)?;
        if name == caller.actor.username && tag == caller.actor.tag {
            // The prototype's answer to a chat with yourself: your profile.
            return Ok(redirect(&profile_path(&caller.actor.view())));
        }
        let query = chat_query(&self.call)?;
        let chat = self
            .backend()
            .read_private(&caller.actor, name, tag, query, self.call.min_epoch())
            .await?;
        let other = chat.value.other;
        let title = format!("{}#{}", other.username, other.tag);
        let api = format!("/api{}", profile_path(&other)) + "/chat";
        let shown = ChatRef::User(other.id);
        Ok(self
            .chat_page(
                &caller,
                &title,
                api,
                (shown, chat.value.chat),
                chat.epoch,
                json!({"other": other}),
            )
            .await)
    }

    /// The message id of a form post: the one the page chose (so a resubmitted form is not
    /// sent twice), else a fresh one.
    fn form_message_id(form: &MessageForm) -> Result<Uuid, ApiError> {
        if form.id.is_empty() {
            return Ok(fresh_id());
        }
        Uuid::parse_str(&form.id).map_err(|_| ApiError::invalid("The message id is not valid."))
    }

    async fn send_private(&self) -> PageResult {
        let form: MessageForm = self.form()?;
        let caller = self.caller(Some(&form.csrf)).await?;
        let (name, tag) = name_tag(&self.call)?;
        let content = input::message(&form.content)?;
        let id = Self::form_message_id(&form)?;
        let sent = self
            .backend()
            .send_private(id, &caller.actor, name, tag, content)
            .await?;
        Ok(with_epoch(redirect(&self.call_path()), sent.epoch))
    }

    async fn create_group(&self) -> PageResult {
        let form: GroupForm = self.form()?;
        let caller = self.caller(Some(&form.csrf)).await?;
        let name = match input::group_name(&form.groupname) {
            Ok(name) => name,
            Err(error) => return Ok(self.render(
                "groups",
                StatusCode::BAD_REQUEST,
                &self.context(&caller),
                json!({"title": "New group", "groupname": form.groupname, "error": error.message}),
            )),
        };
        let request_id = derived_id(
            Some(caller.actor.id),
            Route::Groups,
            format!("{}\0{name}", form.csrf).as_bytes(),
        );
        let group = self
            .backend()
            .create_group(request_id, &caller.actor, name)
            .await?;
        Ok(with_epoch(
            redirect(&format!("/groups/{}", group.value.id)),
            group.epoch,
        ))
    }

    fn group_id(&self) -> Result<Uuid, ApiError> {
        self.call.id_param("id", "group")
    }

    async fn group(&self) -> PageResult {
        let caller = self.caller(None).await?;
        let detail = self
            .backend()
            .group(&caller.actor, self.group_id()?, self.call.min_epoch())
            .await?;
        let group = detail.value.group;
        let response = self.render(
            "group",
            StatusCode::OK,
            &self.context(&caller),
            json!({
                "title": group.name,
                "owner": group.owner.id == caller.actor.id,
                "count": detail.value.members.len(),
                "group": group,
            }),
        );
        Ok(with_epoch(response, detail.epoch))
    }

    async fn delete_group(&self) -> PageResult {
        let form: CsrfForm = self.form()?;
        let caller = self.caller(Some(&form.csrf)).await?;
        let group = self.group_id()?;
        let request_id = derived_id(
            Some(caller.actor.id),
            Route::GroupDelete,
            format!("{}\0{group}", form.csrf).as_bytes(),
        );
        let done = self
            .backend()
            .delete_group(request_id, &caller.actor, group)
            .await?;
        Ok(with_epoch(redirect("/"), done.epoch))
    }

    async fn members(
        &self,
        caller: &Caller,
        status: StatusCode,
        error: Option<&ApiError>,
    ) -> PageResult {
        let detail = self
            .backend()
            .group(&caller.actor, self.group_id()?, self.call.min_epoch())
            .await?;
        let group = detail.value.group;
        let is_owner = group.owner.id == caller.actor.id;
        let members: Vec<Value> = detail
            .value
            .members
            .iter()
            .map(|user| {
                let is_me = user.id == caller.actor.id;
                json!({
                    "user": user,
                    "is_me": is_me,
                    "is_owner": user.id == group.owner.id,
                    "removable": is_me || is_owner,
                })
            })
            .collect();
        let mut response = self.render(
            "members",
            status,
            &self.context(caller),
            json!({
                "title": format!("{} · members", group.name),
                "group": group,
                "members": members,
                "error": error.map(|e| e.message.as_str()),
            }),
        );
        if let Some(error) = error {
            crate::http::add_retry_after(&mut response, error);
        }
        Ok(with_epoch(response, detail.epoch))
    }

    async fn add_member(&self) -> PageResult {
        let form: MemberForm = self.form()?;
        let caller = self.caller(Some(&form.csrf)).await?;
        let group = self.group_id()?;
        let added = async {
            input::username(&form.username)?;
            input::tag(&form.tag)?;
            let key = format!("{}\0{group}\0{}\0{}", form.csrf, form.username, form.tag);
            let request_id = derived_id(Some(caller.actor.id), Route::GroupMembers, key.as_bytes());
            self.backend()
                .add_member(request_id, &caller.actor, group, &form.username, &form.tag)
                .await
        };
        match added.await {
            Ok(member) => Ok(with_epoch(
                redirect(&format!("/groups/{group}/members")),
                member.epoch,
            )),
            // A typo in the name is answered on the members page itself.
            Err(error) if matches!(error.code, ErrorCode::InvalidInput | ErrorCode::NotFound) => {
                self.members(&caller, error.code.status(), Some(&error))
                    .await
            }
            Err(error) => Err(error),
        }
    }

    async fn remove_member(&self) -> PageResult {
        let form: CsrfForm = self.form()?;
        let caller = self.caller(Some(&form.csrf)).await?;
        let group = self.group_id()?;
        let user = self.call.id_param("user_id", "member")?;
        let key = format!("{}\0{group}\0{user}", form.csrf);
        let request_id = derived_id(
            Some(caller.actor.id),
            Route::GroupMemberRemove,
            key.as_bytes(),
        );
        let done = self
            .backend()
            .remove_member(request_id, &caller.actor, group, user)
            .await?;
        let to = if user == caller.actor.id {
            "/".to_owned()
        } else {
            format!("/groups/{group}/members")
        };
        Ok(with_epoch(redirect(&to), done.epoch))
    }

    async fn group_chat(&self) -> PageResult {
        let caller = self.caller(None).await?;
        let group = self.group_id()?;
        let query = chat_query(&self.call)?;
        let chat = self
            .backend()
            .read_group(&caller.actor, group, query, self.call.min_epoch())
            .await?;
        let title = chat.value.group.name.clone();
        let api = format!("/api/groups/{group}/chat");
        let extra = json!({"group": chat.value.group});
        let shown = (ChatRef::Group(group), chat.value.chat);
        Ok(self
            .chat_page(&caller, &title, api, shown, chat.epoch, extra)
            .await)
    }

    async fn send_to_group(&self) -> PageResult {
        let form: MessageForm = self.form()?;
        let caller = self.caller(Some(&form.csrf)).await?;
        let group = self.group_id()?;
        let content = input::message(&form.content)?;
        let id = Self::form_message_id(&form)?;
        let sent = self
            .backend()
            .send_to_group(id, &caller.actor, group, content)
            .await?;
        Ok(with_epoch(redirect(&self.call_path()), sent.epoch))
    }
}

/// Answers a page request. Errors become pages: not logged in redirects to the login page,
/// a busy cluster shows "reconnecting", anything else its message with its status.
pub(crate) async fn handle<B: Backend>(app: &App<B>, call: Call) -> Response<WebBody> {
    let (session, fresh_session) = match &call.session {
        Some(session) => (session.clone(), false),
        None => (Session::new(None, 0), true),
    };
    let mut page = PageCall {
        app,
        call,
        session,
        fresh_session,
    };
    let result = page.route().await;
    let mut response = match result {
        Ok(response) => response,
        Err(error) if error.code == ErrorCode::Unauthenticated => redirect("/login"),
        Err(error) => {
            let context = page.anonymous_context();
            app.shared.pages.error_page(&error, Some(&context))
        }
    };
    if page.fresh_session && !response.headers().contains_key(SET_COOKIE) {
        let cookie = app.shared.sessions.set_cookie(&page.session);
        response.headers_mut().insert(SET_COOKIE, cookie);
    }
    if response.status() == StatusCode::SERVICE_UNAVAILABLE
        && !response.headers().contains_key(RETRY_AFTER)
    {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}
