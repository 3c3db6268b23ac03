//! Browser sessions: one cookie, `auth-session` (the prototype's name), sealed (encrypted and
//! authenticated, AES-256-GCM) by the `cookie` crate's private jar with a key derived from the
//! cluster's sessions key, so any input node opens any node's cookie and nobody can read or
//! forge it. The jar binds the value to the cookie's name.
//!
//! The cookie holds the login (the same claims as an API token), the newest epoch the browser
//! has seen (read-your-writes from any input node) and the CSRF secret. A visitor who is not
//! logged in gets a cookie with the CSRF secret only, so the login and register forms are
//! protected too.

use chat_secret::KeyRing;
use cookie::{Cookie, CookieJar, SameSite};
use http::header::{HeaderMap, HeaderValue, COOKIE};
use serde::{Deserialize, Serialize};

use crate::config::WebConfig;
use crate::token::Claims;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "auth-session";

/// What the session cookie holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The logged-in user, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<Claims>,
    /// The newest epoch this browser has seen.
    #[serde(default)]
    pub epoch: u64,
    /// The secret every state-changing form and fetch must echo (hex).
    pub csrf: String,
}

impl Session {
    /// A fresh session with a new CSRF secret.
    pub fn new(login: Option<Claims>, epoch: u64) -> Self {
        let mut bytes = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
        Self {
            login,
            epoch,
            csrf: hex::encode(bytes),
        }
    }

    /// Whether `submitted` is this session's CSRF secret (compared in constant time).
    pub fn csrf_matches(&self, submitted: &str) -> bool {
        use subtle::ConstantTimeEq as _;
        !self.csrf.is_empty() && bool::from(self.csrf.as_bytes().ct_eq(submitted.as_bytes()))
    }
}

/// Seals and opens session cookies.
#[derive(Clone)]
pub struct SessionCodec {
    /// The sealing key first, then every key that may have sealed a cookie (rotation).
    keys: Vec<cookie::Key>,
    domain: Option<String>,
    secure: bool,
    max_age_s: i64,
}

impl std::fmt::Debug for SessionCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCodec")
            .field("keys", &self.keys.len())
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

impl SessionCodec {
    /// A codec with the ring's keys and the config's cookie attributes.
    pub fn new(keys: &KeyRing, config: &WebConfig) -> Self {
        Self {
            keys: keys
                .verifying()
                .iter()
                .map(|key| cookie::Key::derive_from(key.expose()))
                .collect(),
            domain: config.cookie_domain.clone(),
            secure: config.cookie_secure,
            max_age_s: i64::try_from(config.session_ttl_s).unwrap_or(i64::MAX),
        }
    }

    /// The session in the request's cookies, if one opens with an accepted key.
    pub fn read(&self, headers: &HeaderMap) -> Option<Session> {
        for header in headers.get_all(COOKIE) {
            let Ok(text) = header.to_str() else { continue };
            for cookie in Cookie::split_parse(text).flatten() {
                if cookie.name() != SESSION_COOKIE {
                    continue;
                }
                let mut jar = CookieJar::new();
                for key in &self.keys {
                    if let Some(open) = jar.private_mut(key).decrypt(cookie.clone().into_owned()) {
                        if let Ok(session) = serde_json::from_str(open.value()) {
                            return Some(session);
                        }
                    }
                }
            }
        }
        None
    }

    fn cookie(&self, value: String, max_age_s: i64) -> Cookie<'static> {
        let mut cookie = Cookie::build((SESSION_COOKIE, value))
            .path("/")
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(self.secure)
            .max_age(cookie::time::Duration::seconds(max_age_s));
        if let Some(domain) = &self.domain {
            cookie = cookie.domain(domain.clone());
        }
        cookie.build()
    }

    /// The `Set-Cookie` value carrying `session`, sealed with the current key.
    pub fn set_cookie(&self, session: &Session) -> HeaderValue {
        let json = serde_json::to_string(session).expect("sessions always serialise");
        let mut jar = CookieJar::new();
        jar.private_mut(&self.keys[0])
            .add(self.cookie(json, self.max_age_s));
        let sealed = jar
            .get(SESSION_COOKIE)
            .map(ToString::to_string)
            .unwrap_or_default();
        HeaderValue::from_str(&sealed).expect("a sealed cookie is a valid header value")
    }

    /// The `Set-Cookie` value that removes the session cookie.
    pub fn clear_cookie(&self) -> HeaderValue {
        let cookie = self.cookie(String::new(), 0);
        HeaderValue::from_str(&cookie.to_string()).expect("an empty cookie is a valid header")
    }
}

#[cfg(test)]
mod tests {
    use chat_secret::{ClusterSecret, Purpose};
    use http::header::SET_COOKIE;

    use super::*;

    fn codec(current: u8, previous: Option<u8>) -> SessionCodec {
        let secret = ClusterSecret::from_parts([current; 32], previous.map(|p| [p; 32]));
        SessionCodec::new(&secret.keys(Purpose::Sessions), &WebConfig::default())
    }

    fn request_with(set_cookie: &HeaderValue) -> HeaderMap {
        let pair = set_cookie.to_str().unwrap().split(';').next().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_str(&format!("x=1; {pair}")).unwrap(),
        );
        headers
    }

    #[test]
    fn a_sealed_session_opens_on_any_node_of_the_cluster_and_not_elsewhere() {
        let session = Session::new(None, 42);
        let set = codec(1, None).set_cookie(&session);
        let text = set.to_str().unwrap();
        assert!(
            text.contains("HttpOnly") && text.contains("SameSite=Lax"),
            "{text}"
        );
        assert!(!text.contains(&session.csrf), "the value is encrypted");
        let headers = request_with(&set);
        assert_eq!(codec(1, None).read(&headers), Some(session.clone()));
        assert_eq!(codec(2, Some(1)).read(&headers), Some(session), "rotation");
        assert_eq!(codec(2, None).read(&headers), None);
        let mut headers = HeaderMap::new();
        headers.insert(SET_COOKIE, HeaderValue::from_static("auth-session=garbage"));
        headers.insert(COOKIE, HeaderValue::from_static("auth-session=garbage"));
        assert_eq!(codec(1, None).read(&headers), None);
    }

    #[test]
    fn csrf_secrets_differ_and_compare_exactly() {
        let (a, b) = (Session::new(None, 0), Session::new(None, 0));
        assert_ne!(a.csrf, b.csrf);
        assert!(a.csrf_matches(&a.csrf.clone()));
        assert!(!a.csrf_matches(&b.csrf) && !a.csrf_matches(""));
    }
}
