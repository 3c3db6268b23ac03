//! API tokens: `v1.<claims>.<mac>`, both parts base64url without padding, the MAC an
//! HMAC-SHA256 over `v1.<claims>` with the cluster's sessions key. Any input node holding the
//! cluster secret accepts any node's token, with no shared session table: the token carries the
//! user, its expiry and the session version, which a logout raises to end every older token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chat_secret::KeyRing;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

const VERSION_PREFIX: &str = "v1.";

/// Who a token or session cookie speaks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user's id.
    #[serde(rename = "u")]
    pub user: Uuid,
    /// The user's name (fixed for the account's life, so carried to spare a look-up).
    #[serde(rename = "n")]
    pub username: String,
    /// The user's tag.
    #[serde(rename = "t")]
    pub tag: String,
    /// The session version when the token was issued; a logout raises the user's version.
    #[serde(rename = "v")]
    pub session_version: u64,
    /// Expiry, unix seconds.
    #[serde(rename = "e")]
    pub expires_at: u64,
}

/// Why a token was refused. The client is told only "unauthenticated"; the kind is for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not `v1.<claims>.<mac>`, or claims that do not decode.
    #[error("malformed token")]
    Malformed,
    /// No accepted key made this MAC.
    #[error("bad token signature")]
    BadSignature,
    /// Past its expiry.
    #[error("token expired")]
    Expired,
}

fn mac(key: &chat_secret::Key, signed_part: &str) -> HmacSha256 {
    let mut mac =
        HmacSha256::new_from_slice(key.expose()).expect("HMAC-SHA256 takes keys of any length");
    mac.update(signed_part.as_bytes());
    mac
}

/// Signs `claims` with the ring's signing key.
pub fn sign(keys: &KeyRing, claims: &Claims) -> String {
    let json = serde_json::to_vec(claims).expect("claims always serialise");
    let signed_part = format!("{VERSION_PREFIX}{}", URL_SAFE_NO_PAD.encode(json));
    let tag = mac(keys.signing(), &signed_part).finalize().into_bytes();
    format!("{signed_part}.{}", URL_SAFE_NO_PAD.encode(tag))
}

/// Checks a token's MAC against every accepted key (so tokens survive a secret rotation) and
/// its expiry against `now_s` (unix seconds).
pub fn verify(keys: &KeyRing, token: &str, now_s: u64) -> Result<Claims, TokenError> {
    let (signed_part, tag) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let claims_part = signed_part
        .strip_prefix(VERSION_PREFIX)
        .ok_or(TokenError::Malformed)?;
    let tag = URL_SAFE_NO_PAD
        .decode(tag)
        .map_err(|_| TokenError::Malformed)?;
    let genuine = keys
        .verifying()
        .iter()
        .any(|key| mac(key, signed_part).verify_slice(&tag).is_ok());
    if !genuine {
        return Err(TokenError::BadSignature);
    }
    let json = URL_SAFE_NO_PAD
        .decode(claims_part)
        .map_err(|_| TokenError::Malformed)?;
    let claims: Claims = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
    if claims.expires_at <= now_s {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use chat_secret::{ClusterSecret, Purpose};

    use super::*;

    fn ring(current: u8, previous: Option<u8>) -> KeyRing {
        ClusterSecret::from_parts([current; 32], previous.map(|p| [p; 32])).keys(Purpose::Sessions)
    }

    fn claims() -> Claims {
        Claims {
            user: Uuid::from_u128(7),
            username: "alice".into(),
            tag: "0042".into(),
            session_version: 3,
            expires_at: 1_000,
        }
    }

    #[test]
    fn a_signed_token_verifies_until_it_expires() {
        let keys = ring(1, None);
        let token = sign(&keys, &claims());
        assert_eq!(verify(&keys, &token, 999), Ok(claims()));
        assert_eq!(verify(&keys, &token, 1_000), Err(TokenError::Expired));
    }

    #[test]
    fn a_rotated_secret_still_accepts_old_tokens_and_another_cluster_does_not() {
        let old = ring(1, None);
        let token = sign(&old, &claims());
        assert!(verify(&ring(2, Some(1)), &token, 0).is_ok());
        assert_eq!(
            verify(&ring(2, None), &token, 0),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn tampering_is_refused() {
        let keys = ring(1, None);
        let token = sign(&keys, &claims());
        let (signed, tag) = token.rsplit_once('.').unwrap();
        let mut forged = claims();
        forged.session_version = 99;
        let forged_part = format!(
            "v1.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap())
        );
        assert_eq!(
            verify(&keys, &format!("{forged_part}.{tag}"), 0),
            Err(TokenError::BadSignature)
        );
        for garbage in [
            "",
            "v1.",
            "v1..",
            "v2.abc.def",
            "abc",
            &format!("{signed}.!!"),
        ] {
            assert!(verify(&keys, garbage, 0).is_err(), "{garbage:?}");
        }
    }
}
