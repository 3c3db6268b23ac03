//! A one-node setup for handler tests: the real local service over a SQLite file in a temp
//! directory, announcing its messages on the change feed, behind the application.

#![allow(dead_code, unreachable_pub)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chat_secret::{ClusterSecret, KeyRing, Purpose};
use chat_service::{
    Dispatcher, Epoch, LocalService, PasswordHasher, Reply, Request as ServiceRequest,
    ServiceConfig, ServiceError,
};
use chat_store::{Durability, Store, StoreOptions};
use chat_web::ratelimit::Limit;
use chat_web::{
    App, AppState, ChangeFeed, PublishingDispatcher, ServiceBackend, WebBody, WebConfig,
};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;

pub type TestApp = App<ServiceBackend<Counted<PublishingDispatcher<LocalService>>>>;

/// A dispatcher that counts the session-version reads and the `name#tag` look-ups going
/// through it.
pub struct Counted<D> {
    inner: D,
    counts: Arc<Counts>,
}

#[derive(Default)]
pub struct Counts {
    session_reads: AtomicUsize,
    user_lookups: AtomicUsize,
}

impl<D: Dispatcher> Dispatcher for Counted<D> {
    async fn dispatch(
        &self,
        request: ServiceRequest,
        min_epoch: Epoch,
    ) -> Result<Reply, ServiceError> {
        let counter = match request {
            ServiceRequest::Session { .. } => Some(&self.counts.session_reads),
            ServiceRequest::GetUser { .. } => Some(&self.counts.user_lookups),
            _ => None,
        };
        if let Some(counter) = counter {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        self.inner.dispatch(request, min_epoch).await
    }

    fn password_hasher(&self) -> &Arc<PasswordHasher> {
        self.inner.password_hasher()
    }
}

pub const PASSWORD: &str = "correct horse";

pub struct Harness {
    _dir: Arc<tempfile::TempDir>,
    pub app: TestApp,
    pub store: Arc<Store>,
    pub keys: KeyRing,
    /// Requests of interest this node sent through the data plane.
    counts: Arc<Counts>,
    service: LocalService,
    feed: ChangeFeed,
    config: WebConfig,
}

/// The answer to one request.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts an API error: its status and `{"error": {"code", "message"}}`.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{}", self.text());
        let body = self.json();
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
}

pub fn keys(seed: u8) -> KeyRing {
    ClusterSecret::from_parts([seed; 32], None).keys(Purpose::Sessions)
}

pub fn config() -> WebConfig {
    WebConfig {
        login_per_account: Limit {
            burst: 5,
            per_minute: 1,
        },
        login_per_address: Limit {
            burst: 1000,
            per_minute: 1000,
        },
        sse_keepalive_ms: 60_000,
        ..WebConfig::default()
    }
}

pub fn harness() -> Harness {
    harness_with(config())
}

pub fn harness_with(config: WebConfig) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = StoreOptions {
        durability: Durability::Normal,
        ..StoreOptions::default()
    };
    let store = Arc::new(Store::open_with(dir.path().join("chat.db"), options).expect("store"));
    // bcrypt's minimum cost keeps the suite fast.
    let service = LocalService::new(
        Arc::clone(&store),
        ServiceConfig {
            bcrypt_cost: 4,
            accepts_writes: true,
            ..ServiceConfig::default()
        },
    )
    .expect("service");
    let feed = ChangeFeed::new(1024, 0);
    let keys = keys(7);
    let counts = Arc::new(Counts::default());
    let app = app_over(&service, &feed, &keys, &config, &counts);
    Harness {
        _dir: Arc::new(dir),
        app,
        store,
        keys,
        counts,
        service,
        feed,
        config,
    }
}

/// An input node's application over `service`, with its own backend (and so its own caches).
fn app_over(
    service: &LocalService,
    feed: &ChangeFeed,
    keys: &KeyRing,
    config: &WebConfig,
    counts: &Arc<Counts>,
) -> TestApp {
    let backend = ServiceBackend::new(Counted {
        inner: PublishingDispatcher::new(service.clone(), feed.clone()),
        counts: Arc::clone(counts),
    });
    App::new(AppState {
        backend,
        keys: keys.clone(),
        config: config.clone(),
        change_feed: feed.clone(),
    })
    .expect("app")
}

pub const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

impl Harness {
    /// Another input node of the same cluster: the same data and secret, its own process
    /// state (the backend's caches, rate limits).
    pub fn other_node(&self) -> Harness {
        let counts = Arc::new(Counts::default());
        Harness {
            _dir: Arc::clone(&self._dir),
            app: app_over(&self.service, &self.feed, &self.keys, &self.config, &counts),
            store: Arc::clone(&self.store),
            keys: self.keys.clone(),
            counts,
            service: self.service.clone(),
            feed: self.feed.clone(),
            config: self.config.clone(),
        }
    }

    /// Session versions this node has read through the data plane so far.
    pub fn session_reads(&self) -> usize {
        self.counts.session_reads.load(Ordering::Relaxed)
    }

    /// `name#tag` look-ups this node has sent through the data plane so far.
    pub fn user_lookups(&self) -> usize {
        self.counts.user_lookups.load(Ordering::Relaxed)
    }

    /// The number of writes the database holds: unchanged means nothing was stored.
    pub fn epoch(&self) -> u64 {
        self.store.current_epoch().expect("epoch")
    }

    pub async fn send(&self, request: Request<Full<Bytes>>) -> Answer {
        let response = self.app.handle(request, PEER).await;
        let (parts, body) = response.into_parts();
        let body = tokio::time::timeout(Duration::from_secs(30), body.collect())
            .await
            .expect("body within 30 s")
            .expect("body")
            .to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// The response without reading its body (streams).
    pub async fn open(&self, request: Request<Full<Bytes>>) -> http::Response<WebBody> {
        self.app.handle(request, PEER).await
    }

    pub async fn api(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        self.send(api_request(method, path, token, body, &[])).await
    }

    /// Posts a private message to `to` (`name/tag`) as the holder of `token`.
    pub async fn message(&self, to: &str, token: &str, content: &str) -> Answer {
        self.api(
            Method::POST,
            &format!("/api/users/{to}/chat"),
            Some(token),
            Some(serde_json::json!({ "content": content })),
        )
        .await
    }

    pub async fn register(&self, username: &str, tag: &str) -> Value {
        let answer = self
            .api(
                Method::POST,
                "/api/register",
                None,
                Some(serde_json::json!({"username": username, "tag": tag, "password": PASSWORD})),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text());
        answer.json()["user"].clone()
    }

    pub async fn login(&self, username: &str, tag: &str) -> String {
        let answer = self
            .api(
                Method::POST,
                "/api/login",
                None,
                Some(serde_json::json!({"username": username, "tag": tag, "password": PASSWORD})),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        answer.json()["token"].as_str().expect("token").to_owned()
    }

    /// Registers and logs in; returns (user, token).
    pub async fn user(&self, username: &str, tag: &str) -> (Value, String) {
        let user = self.register(username, tag).await;
        let token = self.login(username, tag).await;
        (user, token)
    }
}

pub fn api_request(
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    if body.is_some() {
        builder = builder.header("content-type", "application/json");
    }
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let bytes = body
        .map(|b| serde_json::to_vec(&b).unwrap())
        .unwrap_or_default();
    builder
        .body(Full::new(Bytes::from(bytes)))
        .expect("request")
}

pub fn raw_request(
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(body.into())).expect("request")
}
