//! `GET /api/events`: server-sent events, one `event: message` per committed message the user
//! may see, `id:` its epoch, `data:` the message JSON. A client that reconnects with
//! `Last-Event-ID` (browsers do it by themselves) or `?after=N` gets what it missed; when the
//! node cannot tell what was missed, it sends `event: reset` and the client reloads its chat.
//! A stream whose session ends (a logout anywhere, the account deleted, the token expired)
//! gets `event: ended` within [`WebConfig::sse_session_check_ms`](crate::WebConfig) and is
//! closed: a reconnect would be refused with 401.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chat_service::Epoch;
use http::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::Response;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use uuid::Uuid;

use crate::app::{App, Call, Caller};
use crate::backend::{change_view, Backend};
use crate::error::ApiError;
use crate::feed::{ChangeFeed, ChatChange, Resume};
use crate::http::{stream, WebBody};

/// Events buffered per stream before the producer waits for the client.
const STREAM_BUFFER: usize = 64;

/// How long a browser waits before reconnecting, sent as the stream's `retry:`.
const RECONNECT_MS: u64 = 1500;

fn message_event(change: &ChatChange) -> Bytes {
    let data = serde_json::to_string(&change_view(change)).expect("messages always serialise");
    Bytes::from(format!(
        "event: message\nid: {}\ndata: {data}\n\n",
        change.epoch
    ))
}

fn reset_event() -> Bytes {
    Bytes::from_static(b"event: reset\ndata: {}\n\n")
}

fn ended_event() -> Bytes {
    Bytes::from_static(b"event: ended\ndata: {}\n\n")
}

/// Where the client wants to resume: `Last-Event-ID`, else `?after=`.
fn resume_point(call: &Call) -> Result<Option<Epoch>, ApiError> {
    let raw = call
        .headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .or_else(|| call.query("after"));
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|_| ApiError::invalid("Last-Event-ID must be an epoch (a whole number).")),
    }
}

/// Opens a stream for the caller.
pub(crate) fn events<B: Backend>(
    app: &App<B>,
    call: &Call,
    caller: &Caller,
) -> Result<Response<WebBody>, ApiError> {
    let after = resume_point(call)?;
    let feed = app.state().change_feed.clone();
    let user = caller.actor.id;
    let (changes, resume) = feed.subscribe(user, after);
    let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
    let config = &app.state().config;
    let timers = Timers {
        keepalive: Duration::from_millis(config.sse_keepalive_ms.max(100)),
        session_check: Duration::from_millis(config.sse_session_check_ms.max(100)),
    };
    let stopping = app.shared.stopping.subscribe();
    let subscriber = Subscriber {
        sender,
        feed,
        user,
        last: after.unwrap_or(0),
    };
    let session = Session {
        app: app.clone(),
        caller: caller.clone(),
    };
    tokio::spawn(forward(
        subscriber, session, resume, changes, timers, stopping,
    ));
    let mut response = Response::new(stream(ReceiverStream::new(receiver)));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Tells a reverse proxy (nginx) not to buffer the stream.
    headers.insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    Ok(response)
}

struct Timers {
    keepalive: Duration,
    session_check: Duration,
}

/// The session that opened a stream, checked again now and then.
struct Session<B> {
    app: App<B>,
    caller: Caller,
}

struct Subscriber {
    sender: mpsc::Sender<Bytes>,
    feed: ChangeFeed,
    user: Uuid,
    /// The newest epoch sent; nothing at or below it is sent again.
    last: Epoch,
}

impl Subscriber {
    /// Sends one chunk; false when the client has gone.
    async fn send(&self, chunk: Bytes) -> bool {
        self.sender.send(chunk).await.is_ok()
    }

    async fn send_change(&mut self, change: &ChatChange) -> bool {
        if change.epoch <= self.last || !change.visible_to(self.user) {
            return true;
        }
        self.last = change.epoch;
        self.send(message_event(change)).await
    }

    async fn send_resume(&mut self, resume: Resume) -> bool {
        match resume {
            Resume::Complete(changes) => {
                for change in changes {
                    if !self.send_change(&change).await {
                        return false;
                    }
                }
                true
            }
            Resume::Incomplete => self.send(reset_event()).await,
        }
    }
}

async fn forward<B: Backend>(
    mut stream: Subscriber,
    session: Session<B>,
    resume: Resume,
    mut changes: broadcast::Receiver<Arc<ChatChange>>,
    timers: Timers,
    mut stopping: watch::Receiver<bool>,
) {
    if *stopping.borrow() {
        return;
    }
    let hello = Bytes::from(format!("retry: {RECONNECT_MS}\n: connected\n\n"));
    if !stream.send(hello).await || !stream.send_resume(resume).await {
        return;
    }
    let mut keepalive = tokio::time::interval(timers.keepalive);
    keepalive.reset();
    let mut session_check = tokio::time::interval(timers.session_check);
    session_check.reset();
    loop {
        let alive = tokio::select! {
            _ = stopping.changed() => false,
            _ = keepalive.tick() => stream.send(Bytes::from_static(b": keep-alive\n\n")).await,
            _ = session_check.tick() => {
                if session.app.session_stands(&session.caller).await {
                    true
                } else {
                    let _ = stream.send(ended_event()).await;
                    false
                }
            }
            received = changes.recv() => match received {
                Ok(change) => stream.send_change(&change).await,
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // The client fell behind the broadcast; the feed's buffer may still hold
                    // what it missed.
                    let resume = stream.feed.since(stream.user, stream.last);
                    stream.send_resume(resume).await
                }
                Err(broadcast::error::RecvError::Closed) => false,
            },
        };
        if !alive {
            return;
        }
    }
}
