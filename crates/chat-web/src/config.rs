//! Settings of the HTTP layer (the node's `[http]` section carries them).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::ratelimit::Limit;

/// Largest request body accepted; a larger one is answered 413 `too_large`.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Settings of [`crate::WebServer`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// How long a token or a session cookie lasts, in seconds (7 days).
    pub session_ttl_s: u64,
    /// Login attempts allowed per account (`username#tag`).
    pub login_per_account: Limit,
    /// Login attempts allowed per client address.
    pub login_per_address: Limit,
    /// Addresses and accounts the login limiter tracks at once; the least useful are
    /// forgotten beyond that.
    pub rate_limit_keys: usize,
    /// Directory of the handlebars pages (`/usr/share/chat-system/templates` when packaged);
    /// pages missing there, or the whole directory, fall back to the copy in the binary.
    pub template_dir: Option<PathBuf>,
    /// `Domain` of the session cookie, so input nodes on several hosts under one domain share
    /// it (each must be a subdomain of it). Unset: the cookie belongs to the host that set it,
    /// which input nodes on one host (any port) share.
    pub cookie_domain: Option<String>,
    /// Mark the session cookie `Secure` (set it when the nodes are reached over HTTPS).
    pub cookie_secure: bool,
    /// Period of the keep-alive comment on live-update streams, in milliseconds.
    pub sse_keepalive_ms: u64,
    /// How often an open live-update stream checks that its session still stands (a logout,
    /// the account's deletion or the token's expiry ends it), in milliseconds.
    pub sse_session_check_ms: u64,
    /// Time to read a request's head, in milliseconds.
    pub header_read_timeout_ms: u64,
    /// How long a stopping server lets requests in flight finish, in milliseconds.
    pub shutdown_grace_ms: u64,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            session_ttl_s: 7 * 24 * 3600,
            // No person types a password 10 times in a row; a script guessing does.
            login_per_account: Limit {
                burst: 10,
                per_minute: 10,
            },
            // Many users behind one NAT still stay under this.
            login_per_address: Limit {
                burst: 100,
                per_minute: 100,
            },
            rate_limit_keys: 100_000,
            template_dir: None,
            cookie_domain: None,
            cookie_secure: false,
            sse_keepalive_ms: 15_000,
            sse_session_check_ms: 5_000,
            header_read_timeout_ms: 10_000,
            shutdown_grace_ms: 10_000,
        }
    }
}
