//! The HTTP input layer of an input node: the JSON API (`/api/...`, see `docs/api.md`), the
//! browser pages, API tokens and session cookies sealed with the cluster secret, login rate
//! limits, and live updates as server-sent events.
//!
//! # Mounting
//! The node builds an [`AppState`] (a [`Backend`], the sessions [`chat_secret::KeyRing`], the
//! [`WebConfig`] and a [`ChangeFeed`] its data plane publishes committed messages on) and
//! calls [`WebServer::serve`] with a bound listener and a shutdown future. [`ServiceBackend`]
//! makes a [`Backend`] of any [`chat_service::Dispatcher`].
//!
//! # Consistency
//! Every answer carries `Chat-Epoch` (the epoch it reflects); a client's `Chat-Epoch` (or the
//! epoch kept in its session cookie) is passed down as the read's `min_epoch`, so a client
//! reads its own writes from any input node.

mod api;
mod app;
pub mod backend;
pub mod config;
pub mod error;
pub mod feed;
mod http;
pub mod input;
mod pages;
pub mod ratelimit;
mod recent;
mod server;
pub mod session;
mod sse;
pub mod token;

pub use app::{App, AppState};
pub use backend::{Backend, PublishingDispatcher, ServiceBackend};
pub use config::WebConfig;
pub use error::{ApiError, ErrorCode};
pub use feed::{ChangeFeed, ChatChange};
pub use http::WebBody;
pub use pages::TemplateError;
pub use server::{WebError, WebServer};
