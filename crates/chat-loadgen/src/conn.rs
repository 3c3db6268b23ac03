//! One client's HTTP/1.1 keep-alive connection to its input node, over hyper's low-level
//! client: exactly one connection per simulated user, opened again only when it breaks, so
//! the server sees the connection count and reuse a real user population gives it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST, RETRY_AFTER};
use http::{HeaderName, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::options::Target;

/// The header carrying the database epoch an answer reflects (and a client's newest).
pub(crate) const CHAT_EPOCH: HeaderName = HeaderName::from_static("chat-epoch");
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Why a request got no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TransportError {
    /// The TCP connection could not be opened.
    #[error("connect: {0}")]
    Connect(std::io::Error),
    /// No whole answer within the request timeout.
    #[error("timed out")]
    Timeout,
    /// The connection broke or the answer was not HTTP.
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
}

impl TransportError {
    /// A short key for the error table.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            TransportError::Connect(_) => "transport connect",
            TransportError::Timeout => "transport timeout",
            TransportError::Http(_) => "transport http",
        }
    }
}

/// An answer, with what the generator needs from it.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    /// `Chat-Epoch` of the answer.
    pub(crate) epoch: Option<u64>,
    /// `Retry-After` of a 429 or 503.
    pub(crate) retry_after: Option<Duration>,
    pub(crate) body: Bytes,
}

impl Reply {
    /// The `error.code` of an API error body.
    pub(crate) fn error_code(&self) -> Option<String> {
        let value: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        value["error"]["code"].as_str().map(str::to_owned)
    }

    /// The key an unsuccessful answer is counted under: status and API code.
    pub(crate) fn error_key(&self) -> String {
        match self.error_code() {
            Some(code) => format!("{} {code}", self.status.as_u16()),
            None => format!("{}", self.status.as_u16()),
        }
    }

    pub(crate) fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// A request, built by the caller.
pub(crate) struct Call<'a> {
    pub(crate) method: Method,
    /// Route with its query, e.g. `/api/groups/{id}/chat?limit=50`.
    pub(crate) path: &'a str,
    pub(crate) token: Option<&'a str>,
    pub(crate) epoch: Option<u64>,
    pub(crate) idempotency_key: Option<&'a str>,
    pub(crate) body: Option<Bytes>,
}

impl<'a> Call<'a> {
    pub(crate) fn get(path: &'a str, token: &'a str) -> Self {
        Call {
            method: Method::GET,
            path,
            token: Some(token),
            epoch: None,
            idempotency_key: None,
            body: None,
        }
    }

    pub(crate) fn post(path: &'a str, token: Option<&'a str>, body: &serde_json::Value) -> Self {
        let bytes = serde_json::to_vec(body).expect("JSON values serialise");
        Self::post_raw(path, token, Bytes::from(bytes))
    }

    /// A POST of a JSON body serialised by the caller.
    pub(crate) fn post_raw(path: &'a str, token: Option<&'a str>, body: Bytes) -> Self {
        Call {
            method: Method::POST,
            path,
            token,
            epoch: None,
            idempotency_key: None,
            body: Some(body),
        }
    }
}

/// A keep-alive connection, opened on first use and again after it breaks.
pub(crate) struct Conn {
    target: Arc<Target>,
    /// Per request, connect included.
    pub(crate) timeout: Duration,
    sender: Option<SendRequest<Full<Bytes>>>,
    /// Connections opened, the first included.
    pub(crate) connects: u64,
}

impl Conn {
    pub(crate) fn new(target: Arc<Target>, timeout: Duration) -> Self {
        Conn {
            target,
            timeout,
            sender: None,
            connects: 0,
        }
    }

    async fn connect(&mut self) -> Result<SendRequest<Full<Bytes>>, TransportError> {
        let stream = TcpStream::connect((self.target.host.as_str(), self.target.port))
            .await
            .map_err(TransportError::Connect)?;
        // Small requests answered one at a time: Nagle would only add delay.
        stream.set_nodelay(true).map_err(TransportError::Connect)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(TransportError::Http)?;
        self.connects += 1;
        // The connection task ends when the sender is dropped or the server closes.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// A sender ready for a request: the kept one if the server has not closed it, else a
    /// new connection (nothing was sent on the old one, so this is always safe).
    async fn ready(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, TransportError> {
        if let Some(sender) = &mut self.sender {
            if sender.ready().await.is_err() {
                self.sender = None;
            }
        }
        if self.sender.is_none() {
            let mut sender = self.connect().await?;
            sender.ready().await?;
            self.sender = Some(sender);
        }
        Ok(self.sender.as_mut().expect("set above"))
    }

    /// Sends `call` and reads the whole answer, within the request timeout.
    pub(crate) async fn send(&mut self, call: Call<'_>) -> Result<Reply, TransportError> {
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.send_inner(call)).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(error)) => {
                self.sender = None;
                Err(error)
            }
            Err(_) => {
                // The answer may still come on this connection; a fresh one keeps the next
                // request from reading it.
                self.sender = None;
                Err(TransportError::Timeout)
            }
        }
    }

    async fn send_inner(&mut self, call: Call<'_>) -> Result<Reply, TransportError> {
        let uri = format!("{}{}", self.target.prefix, call.path);
        let mut builder = Request::builder()
            .method(call.method)
            .uri(uri)
            .header(HOST, self.target.authority.as_str());
        if let Some(token) = call.token {
            builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(epoch) = call.epoch {
            builder = builder.header(CHAT_EPOCH, HeaderValue::from(epoch));
        }
        if let Some(key) = call.idempotency_key {
            builder = builder.header(IDEMPOTENCY_KEY, key);
        }
        if call.body.is_some() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Full::new(call.body.unwrap_or_default()))
            .expect("request parts are valid");
        let sender = self.ready().await?;
        let response = sender.send_request(request).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        let number = |name: &HeaderName| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        Ok(Reply {
            status: parts.status,
            epoch: number(&CHAT_EPOCH),
            retry_after: number(&RETRY_AFTER).map(Duration::from_secs),
            body,
        })
    }
}
