//! The browser pages against the real local service over a SQLite file: every page's success,
//! unauthenticated (redirect to login), forbidden, not found, bad input, CSRF rejection, and
//! names and messages with script tags rendered escaped.

mod support;

use http::{Method, StatusCode};
use serde_json::json;
use support::{harness, raw_request, Answer, Harness};

/// A browser: keeps the session cookie and reads the CSRF secret from each page.
struct Browser<'a> {
    h: &'a Harness,
    cookie: Option<String>,
    csrf: String,
}

impl<'a> Browser<'a> {
    fn new(h: &'a Harness) -> Self {
        Self {
            h,
            cookie: None,
            csrf: String::new(),
        }
    }

    fn remember(&mut self, answer: &Answer) {
        if let Some(set) = answer.header("set-cookie") {
            self.cookie = Some(set.split(';').next().unwrap().to_owned());
        }
        let text = answer.text();
        if let Some(start) = text.find("name=\"csrf-token\" content=\"") {
            let rest = &text[start + 27..];
            self.csrf = rest[..rest.find('"').unwrap()].to_owned();
        }
    }

    async fn request(
        &mut self,
        method: Method,
        path: &str,
        form: Option<String>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        let cookie = self.cookie.clone();
        if let Some(cookie) = &cookie {
            all.push(("cookie", cookie));
        }
        if form.is_some() {
            all.push(("content-type", "application/x-www-form-urlencoded"));
        }
        let answer = self
            .h
            .send(raw_request(method, path, &all, form.unwrap_or_default()))
            .await;
        self.remember(&answer);
        answer
    }

    async fn get(&mut self, path: &str) -> Answer {
        self.request(Method::GET, path, None, &[]).await
    }

    /// Posts a form with this browser's CSRF secret.
    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Answer {
        let csrf = self.csrf.clone();
        let mut all = fields.to_vec();
        all.push(("csrf", &csrf));
        self.post_raw(path, &all).await
    }

    /// Posts exactly these fields.
    async fn post_raw(&mut self, path: &str, fields: &[(&str, &str)]) -> Answer {
        let body = serde_urlencoded::to_string(fields).unwrap();
        self.request(Method::POST, path, Some(body), &[]).await
    }

    async fn log_in(&mut self, username: &str, tag: &str) {
        self.get("/login").await;
        let answer = self
            .post(
                "/login",
                &[
                    ("username", username),
                    ("tag", tag),
                    ("password", support::PASSWORD),
                ],
            )
            .await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text());
        assert_eq!(answer.header("location"), Some("/"));
        self.get("/").await;
    }
}

fn assert_redirect(answer: &Answer, to: &str) {
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text());
    assert_eq!(answer.header("location"), Some(to));
}

fn assert_page(answer: &Answer, status: u16) -> String {
    assert_eq!(answer.status.as_u16(), status, "{}", answer.text());
    assert!(answer
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    let csp = answer.header("content-security-policy").expect("CSP");
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"));
    assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
    assert!(answer.header("referrer-policy").is_some());
    let html = answer.text();
    for (index, _) in html.match_indices("<script") {
        assert!(
            html[index..].starts_with("<script src="),
            "no inline script: {}",
            &html[index..index + 60]
        );
    }
    html
}

#[tokio::test]
async fn register_and_login_pages_with_bad_input_and_csrf() {
    let h = harness();
    let mut browser = Browser::new(&h);
    let page = assert_page(&browser.get("/register").await, 200);
    for field in [
        "name=\"username\"",
        "name=\"tag\"",
        "name=\"password\"",
        "<label for=\"tag\">",
    ] {
        assert!(page.contains(field), "{field}");
    }
    assert!(browser.cookie.is_some(), "a session cookie for the form");
    assert!(!browser.csrf.is_empty());

    let before = h.epoch();
    let bad_tag = browser
        .post(
            "/register",
            &[
                ("username", "ann"),
                ("tag", "12x"),
                ("password", "long enough"),
            ],
        )
        .await;
    let html = assert_page(&bad_tag, 400);
    assert!(html.contains("3 to 6 digits") && html.contains("value=\"ann\""));
    let no_csrf = browser
        .post_raw(
            "/register",
            &[
                ("username", "ann"),
                ("tag", "123"),
                ("password", "long enough"),
            ],
        )
        .await;
    assert_page(&no_csrf, 403);
    let mut stranger = Browser::new(&h);
    let forged = stranger
        .post_raw(
            "/register",
            &[
                ("username", "ann"),
                ("tag", "123"),
                ("password", "long enough"),
                ("csrf", &browser.csrf),
            ],
        )
        .await;
    assert_page(&forged, 403);
    assert_eq!(h.epoch(), before, "nothing stored");

    let created = browser
        .post(
            "/register",
            &[
                ("username", "ann"),
                ("tag", "123"),
                ("password", support::PASSWORD),
            ],
        )
        .await;
    assert_redirect(&created, "/login?registered=1");
    let taken = browser
        .post(
            "/register",
            &[
                ("username", "ann"),
                ("tag", "123"),
                ("password", "another one"),
            ],
        )
        .await;
    assert_page(&taken, 409);

    assert!(assert_page(&browser.get("/login?registered=1").await, 200).contains("log in"));
    let wrong = browser
        .post(
            "/login",
            &[
                ("username", "ann"),
                ("tag", "123"),
                ("password", "wrong password"),
            ],
        )
        .await;
    assert!(assert_page(&wrong, 401).contains("Wrong"));
    let ok = browser
        .post(
            "/login",
            &[
                ("username", "ann"),
                ("tag", "123"),
                ("password", support::PASSWORD),
            ],
        )
        .await;
    assert_redirect(&ok, "/");
    let set = ok.header("set-cookie").unwrap();
    assert!(
        set.contains("HttpOnly")
            && set.contains("SameSite=Lax")
            && set.starts_with("auth-session=")
    );
    let home = assert_page(&browser.get("/").await, 200);
    assert!(home.contains("ann#123") && home.contains("Your chats"));
}

#[tokio::test]
async fn protected_pages_redirect_to_login_and_unknown_pages_are_404() {
    let h = harness();
    let mut browser = Browser::new(&h);
    let group = "00000000-0000-4000-8000-000000000000";
    for path in [
        "/users".to_owned(),
        "/users/bob".to_owned(),
        "/users/bob/123".to_owned(),
        "/users/bob/123/chat".to_owned(),
        "/groups".to_owned(),
        format!("/groups/{group}"),
        format!("/groups/{group}/members"),
        format!("/groups/{group}/chat"),
    ] {
        assert_redirect(&browser.get(&path).await, "/login");
    }
    let welcome = assert_page(&browser.get("/").await, 200);
    assert!(welcome.contains("Welcome"));
    assert_page(&browser.get("/nothing/here").await, 404);
}

#[tokio::test]
async fn chat_pages_send_read_and_escape() {
    let h = harness();
    h.register("amy", "111").await;
    h.register("ben", "222").await;
    let mut amy = Browser::new(&h);
    amy.log_in("amy", "111").await;

    let page = assert_page(&amy.get("/users/ben/222/chat").await, 200);
    assert!(page.contains("name=\"content\"") && page.contains("<label for=\"content\""));
    let id = {
        let start = page.find("name=\"id\" value=\"").unwrap() + 17;
        page[start..start + 36].to_owned()
    };
    let before = h.epoch();
    let script = "<script>alert('x')</script>";
    let sent = amy
        .post("/users/ben/222/chat", &[("content", script), ("id", &id)])
        .await;
    assert_redirect(&sent, "/users/ben/222/chat");
    // The same form posted again (a retry) is not sent twice.
    let again = amy
        .post("/users/ben/222/chat", &[("content", script), ("id", &id)])
        .await;
    assert_redirect(&again, "/users/ben/222/chat");
    assert_eq!(h.epoch(), before + 1);
    let page = assert_page(&amy.get("/users/ben/222/chat").await, 200);
    assert!(
        page.contains("&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;"),
        "{page}"
    );
    assert!(!page.contains(script));

    let at = h.epoch();
    let long = "x".repeat(4001);
    assert_page(
        &amy.post("/users/ben/222/chat", &[("content", "   ")]).await,
        400,
    );
    assert_page(
        &amy.post("/users/ben/222/chat", &[("content", &long)]).await,
        400,
    );
    assert_page(
        &amy.post_raw("/users/ben/222/chat", &[("content", "no csrf")])
            .await,
        403,
    );
    assert_page(
        &amy.post("/users/ben/2x2/chat", &[("content", "bad tag")])
            .await,
        400,
    );
    assert_page(
        &amy.post("/users/nobody/222/chat", &[("content", "hi")])
            .await,
        404,
    );
    assert_eq!(h.epoch(), at, "nothing stored");
    assert_page(&amy.get("/users/nobody/222/chat").await, 404);
    assert_page(&amy.get("/users/ben/22/chat").await, 400);
    assert_redirect(&amy.get("/users/amy/111/chat").await, "/users/amy/111");

    // The script's path: the JSON API with the cookie needs the CSRF header.
    let csrf = amy.csrf.clone();
    let body = serde_json::to_string(&json!({"content": "via fetch"})).unwrap();
    let plain = amy
        .request(
            Method::POST,
            "/api/users/ben/222/chat",
            None,
            &[("content-type", "application/json")],
        )
        .await;
    plain.assert_error(403, "forbidden");
    let cookie = amy.cookie.clone().unwrap();
    let with_token = h
        .send(raw_request(
            Method::POST,
            "/api/users/ben/222/chat",
            &[
                ("cookie", &cookie),
                ("x-csrf-token", &csrf),
                ("content-type", "application/json"),
            ],
            body,
        ))
        .await;
    assert_eq!(with_token.status, 201, "{}", with_token.text());
}

#[tokio::test]
async fn search_profile_and_account_pages() {
    let h = harness();
    h.register("amy", "111").await;
    h.register("ben", "222").await;
    h.register("ben", "333").await;
    let mut amy = Browser::new(&h);
    amy.log_in("amy", "111").await;

    assert!(assert_page(&amy.get("/users").await, 200).contains("name=\"name\""));
    let results = assert_page(&amy.get("/users?name=ben").await, 200);
    assert!(results.contains("/users/ben/222") && results.contains("/users/ben/333"));
    assert!(assert_page(&amy.get("/users/ben").await, 200).contains("/users/ben/333"));
    assert!(assert_page(&amy.get("/users?name=zed").await, 200).contains("No users found"));
    assert_page(&amy.get("/users?name=a%20b").await, 400);

    let other = assert_page(&amy.get("/users/ben/222").await, 200);
    assert!(other.contains("Open chat") && !other.contains("Delete my account"));
    assert_page(&amy.get("/users/nobody/222").await, 404);
    assert_page(&amy.get("/users/ben/2").await, 400);
    let own = assert_page(&amy.get("/users/amy/111").await, 200);
    assert!(own.contains("Delete my account"));
    let delete_path = {
        let start = own.find("action=\"/users/").unwrap() + 8;
        own[start..start + own[start..].find('"').unwrap()].to_owned()
    };

    // Someone else's account cannot be deleted, and not without the form's secret.
    let ben_id = h
        .api(
            Method::GET,
            "/api/users/ben/222",
            Some(&h.login("amy", "111").await),
            None,
        )
        .await
        .json()["user"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let at = h.epoch();
    assert_page(
        &amy.post(&format!("/users/{ben_id}/delete"), &[]).await,
        403,
    );
    assert_page(&amy.post_raw(&delete_path, &[]).await, 403);
    assert_eq!(h.epoch(), at);
    assert_redirect(&amy.post(&delete_path, &[]).await, "/register");
    assert_redirect(&amy.get("/users").await, "/login");
}

#[tokio::test]
async fn group_pages_members_chat_and_refusals() {
    let h = harness();
    h.register("amy", "111").await;
    h.register("ben", "222").await;
    h.register("cat", "333").await;
    let mut amy = Browser::new(&h);
    amy.log_in("amy", "111").await;

    assert!(assert_page(&amy.get("/groups").await, 200).contains("name=\"groupname\""));
    assert_page(&amy.post("/groups", &[("groupname", "  ")]).await, 400);
    assert_page(
        &amy.post_raw("/groups", &[("groupname", "no csrf")]).await,
        403,
    );
    let created = amy
        .post("/groups", &[("groupname", "<img src=x onerror=alert(1)>")])
        .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER);
    let group_path = created.header("location").unwrap().to_owned();
    let group = assert_page(&amy.get(&group_path).await, 200);
    assert!(
        group.contains("&lt;img src&#x3D;x onerror&#x3D;alert(1)&gt;")
            && !group.contains("<img src=x")
    );
    assert!(group.contains("Delete group"));

    let members = format!("{group_path}/members");
    assert_page(&amy.get(&members).await, 200);
    assert_redirect(
        &amy.post(&members, &[("username", "ben"), ("tag", "222")])
            .await,
        &members,
    );
    let listed = assert_page(&amy.get(&members).await, 200);
    assert!(listed.contains("ben#222"));
    assert!(assert_page(
        &amy.post(&members, &[("username", "nobody"), ("tag", "222")])
            .await,
        404
    )
    .contains("nobody#222"));
    assert_page(
        &amy.post(&members, &[("username", "ben"), ("tag", "2")])
            .await,
        400,
    );

    let chat = format!("{group_path}/chat");
    assert_redirect(&amy.post(&chat, &[("content", "hello group")]).await, &chat);
    let mut ben = Browser::new(&h);
    ben.log_in("ben", "222").await;
    let page = assert_page(&ben.get(&chat).await, 200);
    assert!(page.contains("hello group") && page.contains("amy#111"));
    let home = assert_page(&ben.get("/").await, 200);
    assert!(
        home.contains("hello group"),
        "the home page lists the group with its newest message"
    );

    // Cat is not a member.
    let mut cat = Browser::new(&h);
    cat.log_in("cat", "333").await;
    let at = h.epoch();
    for path in [&group_path, &members, &chat] {
        assert_page(&cat.get(path).await, 403);
    }
    assert_page(&cat.post(&chat, &[("content", "let me in")]).await, 403);
    assert_eq!(h.epoch(), at);
    let unknown = "/groups/00000000-0000-4000-8000-000000000000";
    assert_page(&amy.get(unknown).await, 404);
    assert_page(&amy.get("/groups/not-an-id/chat").await, 404);

    // Ben leaves (his own remove form); amy deletes the group.
    let ben_members = assert_page(&ben.get(&members).await, 200);
    let leave = {
        let start = ben_members.find("/remove\"").unwrap();
        let from = ben_members[..start].rfind("action=\"").unwrap() + 8;
        ben_members[from..start + 7].to_owned()
    };
    assert_redirect(&ben.post(&leave, &[]).await, "/");
    assert_page(&ben.get(&chat).await, 403);
    assert_page(&ben.post(&format!("{group_path}/delete"), &[]).await, 403);
    assert_redirect(&amy.post(&format!("{group_path}/delete"), &[]).await, "/");
    assert_page(&amy.get(&group_path).await, 404);
}

#[tokio::test]
async fn logout_ends_the_session_and_assets_are_cached() {
    let h = harness();
    h.register("amy", "111").await;
    let mut amy = Browser::new(&h);
    amy.log_in("amy", "111").await;
    let old_cookie = amy.cookie.clone();
    // The same cookie opens on another input node of the cluster.
    let other = h.other_node();
    let mut amy_there = Browser::new(&other);
    amy_there.cookie = old_cookie.clone();
    assert_page(&amy_there.get("/groups").await, 200);
    assert_page(&amy.get("/logout").await, 200);
    assert_redirect(&amy.post("/logout", &[]).await, "/login");
    amy.cookie = old_cookie.clone();
    assert_redirect(&amy.get("/groups").await, "/login");
    // The other node ends it too once it has seen the logout's epoch (here: through another
    // person's page).
    h.register("ben", "222").await;
    let mut ben = Browser::new(&other);
    ben.log_in("ben", "222").await;
    amy_there.cookie = old_cookie;
    assert_redirect(&amy_there.get("/groups").await, "/login");

    let page = amy.get("/login").await.text();
    let start = page.find("/static/chat.js?v=").unwrap() + 18;
    let version = &page[start..start + page[start..].find('"').unwrap()];
    let js = amy.get(&format!("/static/chat.js?v={version}")).await;
    assert_eq!(js.status, 200);
    assert!(js.header("cache-control").unwrap().contains("immutable"));
    assert!(js
        .header("content-type")
        .unwrap()
        .starts_with("text/javascript"));
    assert!(
        js.text().contains("textContent"),
        "messages are inserted as text"
    );
    let css = amy.get("/static/chat.css").await;
    assert_eq!(css.status, 200);
    assert_eq!(amy.get("/static/nothing.js").await.status, 404);
}

/// The unread count the home page shows for its only chat (None: hidden).
fn unread_badge(home: &str) -> Option<String> {
    let start = home.find("<span class=\"unread\"")?;
    let span = &home[start..start + home[start..].find("</span>")?];
    if span.contains(" hidden") {
        return None;
    }
    Some(span[span.rfind('>')? + 1..].to_owned())
}

#[tokio::test]
async fn the_home_page_counts_unread_messages_until_the_chat_is_shown() {
    let h = harness();
    h.register("amy", "111").await;
    let (_, ben) = h.user("ben", "222").await;
    let send = |text: &'static str| {
        let (h, ben) = (&h, ben.clone());
        async move {
            let sent = h.message("amy/111", &ben, text).await;
            assert_eq!(sent.status, 201, "{}", sent.text());
            sent.json()["message"].clone()
        }
    };
    send("one").await;
    send("two").await;
    let mut amy = Browser::new(&h);
    amy.log_in("amy", "111").await;
    let home = assert_page(&amy.get("/").await, 200);
    assert_eq!(unread_badge(&home).as_deref(), Some("2"), "{home}");

    // Showing the chat moves amy's read position: one write, and the count is gone.
    let at = h.epoch();
    let chat = assert_page(&amy.get("/users/ben/222/chat").await, 200);
    assert_eq!(h.epoch(), at + 1);
    assert!(
        chat.contains(&format!("data-read-epoch=\"{}\"", at)),
        "{chat}"
    );
    assert_eq!(unread_badge(&assert_page(&amy.get("/").await, 200)), None);
    assert_page(&amy.get("/users/ben/222/chat").await, 200);
    assert_eq!(h.epoch(), at + 1, "a page with nothing new writes nothing");
    // One's own messages are never unread: sending one and seeing it writes only the send.
    let chat_path = "/users/ben/222/chat";
    assert_redirect(
        &amy.post(chat_path, &[("content", "mine")]).await,
        chat_path,
    );
    assert_page(&amy.get(chat_path).await, 200);
    assert_eq!(h.epoch(), at + 2);

    // A message the open page receives is marked read by its script: a POST with the CSRF
    // header (refused without it).
    let third = send("three").await;
    assert_eq!(
        unread_badge(&assert_page(&amy.get("/").await, 200)).as_deref(),
        Some("1")
    );
    let chat_id = third["chat_id"].as_str().unwrap().to_owned();
    let path = format!("/api/chats/{chat_id}/read");
    let body = json!({ "epoch": third["epoch"] }).to_string();
    let json_type = ("content-type", "application/json");
    let refused = amy
        .request(Method::POST, &path, Some(body.clone()), &[json_type])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text());
    let csrf = amy.csrf.clone();
    let marked = amy
        .request(
            Method::POST,
            &path,
            Some(body),
            &[json_type, ("x-csrf-token", &csrf)],
        )
        .await;
    assert_eq!(marked.status, StatusCode::OK, "{}", marked.text());
    assert_eq!(unread_badge(&assert_page(&amy.get("/").await, 200)), None);
}
