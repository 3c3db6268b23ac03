//! Authenticated calls: only holders of the cluster secret reach a guarded service.
//!
//! Every call carries a MAC, made with the services key (`Purpose::Services` of the cluster
//! secret), over a **single-use nonce the server issued** and the method's path. A recorded
//! call, or the opening of a recorded lease stream, names a nonce the server has already
//! consumed (or, after a restart, never issued), so it cannot be replayed.
//!
//! ```text
//! server -> client  chat-auth-challenge: <nonce hex>.<key id hex>[,<key id hex>]
//!                   on every UNAUTHENTICATED answer, and on every answer to an
//!                   authenticated call (the nonce for the client's next call)
//! client -> server  chat-auth: <key id hex>.<nonce hex>.<mac hex>
//!                   mac = HMAC-SHA256(key, "chat-grpc/v1" ‖ 0 ‖ nonce ‖ path)
//! ```
//!
//! The server lists the ids of the keys it accepts and the client signs with the first key of
//! its own ring the server also holds, so during a rotation (`[new, old]` on one side, `[old]`
//! on the other) both agree on `old`. A client without a nonce at hand first sends an empty
//! probe to the service, which the guard answers with a challenge; the answer to each
//! authenticated call carries the next nonce, so a client that keeps its channel pays that
//! extra round trip once.
//!
//! Server side: [`ServiceGuard::wrap`] around each generated service. Client side:
//! [`AuthChannel`] around a [`Channel`], or [`call_authenticated`](crate::call_authenticated).
//! Both take `Option<KeyRing>`: `None` is the unauthenticated behaviour of before.
//!
//! The MAC covers the nonce and the method, not the request body: it stops strangers and
//! replays, not an attacker who can rewrite live traffic on the path (that needs TLS; see
//! docs/security.md).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use chat_secret::{ClusterSecret, Key, KeyRing, Purpose, SecretError};
use hmac::{Hmac, Mac};
use http::header::HeaderValue;
use http::{HeaderMap, Request, Response};
use rand::RngCore;
use sha2::Sha256;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::transport::Channel;
use tower_service::Service;

/// Header of the server's challenge.
pub const CHALLENGE_HEADER: &str = "chat-auth-challenge";
/// Header of the client's proof.
pub const PROOF_HEADER: &str = "chat-auth";
/// How long an issued nonce stays valid.
pub const NONCE_LIFETIME: Duration = Duration::from_secs(30);
/// Nonces a server keeps outstanding; beyond this the oldest is forgotten, so clients that
/// probe and never call cost bounded memory.
pub const MAX_OUTSTANDING_NONCES: usize = 4096;
/// A client uses a nonce it was handed at most this long after receiving it, well inside
/// [`NONCE_LIFETIME`], so a slow call still finds it valid.
const CLIENT_NONCE_MAX_AGE: Duration = Duration::from_secs(10);
/// Path of the probe a client sends to obtain a nonce; the guard answers it, so it never
/// reaches a service.
const PROBE_METHOD: &str = "ChatAuthProbe";

const NONCE_LEN: usize = 16;
const KEY_ID_LEN: usize = 8;
const MAC_DOMAIN: &[u8] = b"chat-grpc/v1\0";

type Nonce = [u8; NONCE_LEN];
type KeyId = [u8; KEY_ID_LEN];

/// The services keys (`Purpose::Services`) of the cluster secret file at `path`: what a guarded
/// server checks and what its clients sign with. The one place the services read the file, so
/// a server, a node and a tool holding the same file always agree.
pub fn load_service_keys(path: &Path) -> Result<KeyRing, SecretError> {
    ClusterSecret::load(path).map(|secret| secret.keys(Purpose::Services))
}

/// The services keys with their public ids.
#[derive(Clone, Debug)]
struct Keys {
    ring: KeyRing,
    ids: Vec<KeyId>,
}

impl Keys {
    fn new(ring: KeyRing) -> Self {
        let ids = ring.verifying().iter().map(key_id).collect();
        Keys { ring, ids }
    }

    fn by_id(&self, id: &KeyId) -> Option<&Key> {
        let index = self.ids.iter().position(|known| known == id)?;
        self.ring.verifying().get(index)
    }
}

/// Guards gRPC services: calls without a valid proof answer `UNAUTHENTICATED` and never reach
/// the service. Create one per server and [`wrap`](ServiceGuard::wrap) each service with it.
#[derive(Clone, Debug)]
pub struct ServiceGuard {
    inner: Option<Arc<GuardState>>,
}

#[derive(Debug)]
struct GuardState {
    keys: Keys,
    nonces: Mutex<NonceBook>,
    /// Calls answered `UNAUTHENTICATED` (probes for a nonce aside), by [`AuthRefusal`].
    refused: [AtomicU64; AuthRefusal::ALL.len()],
}

/// Why a call was answered `UNAUTHENTICATED`: the label of the services'
/// `unauthenticated_calls_total{reason}` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthRefusal {
    /// No proof header: a caller without the cluster secret (or an old client).
    MissingProof,
    /// A proof header that does not parse.
    MalformedProof,
    /// Signed with a key this service does not hold (a secret it does not share).
    UnknownKey,
    /// The MAC does not verify: a forgery, or a proof made for another method.
    BadMac,
    /// A nonce this process never issued, or forgot: a proof from before a restart, a forged
    /// nonce, a replay older than [`NONCE_LIFETIME`] after its first use.
    NonceUnknown,
    /// A nonce already used: a recorded call or lease stream replayed.
    NonceReplayed,
    /// A nonce used after its [`NONCE_LIFETIME`].
    NonceExpired,
    /// A nonce forgotten unused because [`MAX_OUTSTANDING_NONCES`] newer ones were
    /// outstanding: the table was full (a flood of probes).
    NonceEvicted,
}

impl AuthRefusal {
    /// Every reason, in the order the metrics list them.
    pub const ALL: [Self; 8] = [
        Self::MissingProof,
        Self::MalformedProof,
        Self::UnknownKey,
        Self::BadMac,
        Self::NonceUnknown,
        Self::NonceReplayed,
        Self::NonceExpired,
        Self::NonceEvicted,
    ];

    /// The reason's name in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingProof => "missing_proof",
            Self::MalformedProof => "malformed_proof",
            Self::UnknownKey => "unknown_key",
            Self::BadMac => "bad_mac",
            Self::NonceUnknown => "nonce_unknown",
            Self::NonceReplayed => "nonce_replayed",
            Self::NonceExpired => "nonce_expired",
            Self::NonceEvicted => "nonce_evicted",
        }
    }

    /// What the refused caller is told.
    fn message(self) -> &'static str {
        match self {
            Self::MissingProof | Self::MalformedProof => "this service requires the cluster secret",
            Self::UnknownKey => "the call is signed with a key this service does not hold",
            Self::BadMac => "the call's proof does not verify",
            Self::NonceUnknown | Self::NonceReplayed | Self::NonceExpired | Self::NonceEvicted => {
                "the call's nonce is unknown, used or expired"
            }
        }
    }
}

impl ServiceGuard {
    /// A guard checking proofs made with `keys` (the cluster secret's services keys); `None`
    /// lets every call through, as before.
    pub fn new(keys: Option<KeyRing>) -> Self {
        ServiceGuard {
            inner: keys.map(|ring| {
                Arc::new(GuardState {
                    keys: Keys::new(ring),
                    nonces: Mutex::new(NonceBook::default()),
                    refused: Default::default(),
                })
            }),
        }
    }

    /// `service`, reachable only with a valid proof. Add the result to the server as the
    /// service itself: `Server::builder().add_service(guard.wrap(FooServer::new(..)))`.
    pub fn wrap<S>(&self, service: S) -> Guarded<S> {
        Guarded {
            inner: service,
            guard: self.clone(),
        }
    }

    /// Whether calls need the cluster secret (the guard was given keys).
    pub fn is_guarding(&self) -> bool {
        self.inner.is_some()
    }

    /// Calls refused so far for want of a valid proof: strangers, other secrets, replays.
    /// A member's probe for its first nonce is not counted.
    pub fn refused(&self) -> u64 {
        AuthRefusal::ALL.iter().map(|r| self.refused_for(*r)).sum()
    }

    /// Calls refused so far for `reason`.
    pub fn refused_for(&self, reason: AuthRefusal) -> u64 {
        self.inner.as_ref().map_or(0, |state| {
            state.refused[reason as usize].load(Ordering::Relaxed)
        })
    }

    /// Nonces forgotten unused because [`MAX_OUTSTANDING_NONCES`] newer ones were outstanding
    /// (each costs the member holding it one refused call, [`AuthRefusal::NonceEvicted`], and
    /// a retry).
    pub fn nonces_evicted(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |state| lock(&state.nonces).evicted)
    }

    /// Checks a request's proof for `path`, consuming its nonce; `Err` carries the
    /// `UNAUTHENTICATED` answer (with a fresh challenge).
    fn check(
        &self,
        path: &str,
        headers: &HeaderMap,
        now: Instant,
    ) -> Result<(), Box<Response<Body>>> {
        let Some(state) = &self.inner else {
            return Ok(());
        };
        if is_probe(path) {
            // A member asking for its first nonce: the challenge is the whole answer.
            let mut response =
                tonic::Status::unauthenticated("authentication challenge").into_http::<Body>();
            response
                .headers_mut()
                .insert(CHALLENGE_HEADER, state.challenge(now));
            return Err(Box::new(response));
        }
        let verdict = match headers.get(PROOF_HEADER).map(|v| parse_proof(v.as_bytes())) {
            None => Err(AuthRefusal::MissingProof),
            Some(None) => Err(AuthRefusal::MalformedProof),
            Some(Some((id, nonce, mac))) => match state.keys.by_id(&id) {
                None => Err(AuthRefusal::UnknownKey),
                // The MAC first: only a member may use up a nonce.
                Some(key) if !verify_mac(key, &nonce, path, &mac) => Err(AuthRefusal::BadMac),
                Some(_) => lock(&state.nonces).consume(&nonce, now),
            },
        };
        verdict.map_err(|reason| {
            state.refused[reason as usize].fetch_add(1, Ordering::Relaxed);
            tracing::warn!(target: "auth", subsystem = "auth", path, reason = reason.as_str(),
                message = reason.message(), "call refused");
            let mut response = tonic::Status::unauthenticated(reason.message()).into_http::<Body>();
            response
                .headers_mut()
                .insert(CHALLENGE_HEADER, state.challenge(now));
            Box::new(response)
        })
    }

    /// A fresh challenge for the answer to an authenticated call, if guarding.
    fn next_challenge(&self, now: Instant) -> Option<HeaderValue> {
        self.inner.as_ref().map(|state| state.challenge(now))
    }
}

impl GuardState {
    fn challenge(&self, now: Instant) -> HeaderValue {
        let nonce = lock(&self.nonces).issue(now);
        let ids: Vec<String> = self.keys.ids.iter().map(hex::encode).collect();
        let text = format!("{}.{}", hex::encode(nonce), ids.join(","));
        HeaderValue::from_str(&text).expect("hex, dots and commas are valid header text")
    }
}

/// The nonces a server issued and not yet consumed, oldest first, and for a while those that
/// can no longer be used, with why (so a replay or a late call is told apart from a forgery in
/// the metrics; without them it is refused all the same).
#[derive(Debug, Default)]
struct NonceBook {
    /// Outstanding nonces and when they were issued.
    issued: HashMap<Nonce, Instant>,
    /// Issue order; entries of nonces no longer outstanding stay behind until they reach the
    /// front.
    order: VecDeque<(Nonce, Instant)>,
    /// Nonces used, expired or evicted, kept [`NONCE_LIFETIME`] after that and at most
    /// [`MAX_OUTSTANDING_NONCES`] of them.
    spent: HashMap<Nonce, Spent>,
    spent_order: VecDeque<(Nonce, Instant)>,
    /// Nonces evicted unused to make room.
    evicted: u64,
}

/// Why a nonce can no longer be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spent {
    Used,
    Expired,
    Evicted,
}

impl NonceBook {
    fn issue(&mut self, now: Instant) -> Nonce {
        self.expire(now);
        while self.issued.len() >= MAX_OUTSTANDING_NONCES {
            let Some((oldest, _)) = self.order.pop_front() else {
                break;
            };
            if self.issued.remove(&oldest).is_some() {
                self.evicted += 1;
                self.spend(oldest, Spent::Evicted, now);
            }
        }
        let nonce = random_nonce();
        self.issued.insert(nonce, now);
        self.order.push_back((nonce, now));
        nonce
    }

    /// `Ok` once for a nonce issued less than [`NONCE_LIFETIME`] ago; otherwise why not.
    fn consume(&mut self, nonce: &Nonce, now: Instant) -> Result<(), AuthRefusal> {
        self.expire(now);
        if self.issued.remove(nonce).is_some() {
            self.spend(*nonce, Spent::Used, now);
            return Ok(());
        }
        Err(match self.spent.get(nonce) {
            None => AuthRefusal::NonceUnknown,
            Some(Spent::Used) => AuthRefusal::NonceReplayed,
            Some(Spent::Expired) => AuthRefusal::NonceExpired,
            Some(Spent::Evicted) => AuthRefusal::NonceEvicted,
        })
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(nonce, issued)) = self.order.front() {
            let expired = now.duration_since(issued) >= NONCE_LIFETIME;
            if !expired && self.issued.contains_key(&nonce) {
                break;
            }
            // Expired, or no longer outstanding (its order entry stays behind until here).
            if expired && self.issued.remove(&nonce).is_some() {
                self.spend(nonce, Spent::Expired, now);
            }
            self.order.pop_front();
        }
        while let Some(&(nonce, spent)) = self.spent_order.front() {
            if now.duration_since(spent) < NONCE_LIFETIME
                && self.spent.len() <= MAX_OUTSTANDING_NONCES
            {
                break;
            }
            self.spent.remove(&nonce);
            self.spent_order.pop_front();
        }
    }

    /// Remembers why `nonce` (no longer outstanding, so never spent before) is unusable.
    fn spend(&mut self, nonce: Nonce, why: Spent, now: Instant) {
        self.spent.insert(nonce, why);
        self.spent_order.push_back((nonce, now));
    }
}

/// A service behind a [`ServiceGuard`].
#[derive(Clone, Debug)]
pub struct Guarded<S> {
    inner: S,
    guard: ServiceGuard,
}

impl<S: NamedService> NamedService for Guarded<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, ReqBody> Service<Request<ReqBody>> for Guarded<S>
where
    S: Service<Request<ReqBody>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let now = Instant::now();
        if let Err(refusal) = self
            .guard
            .check(request.uri().path(), request.headers(), now)
        {
            return Box::pin(async move { Ok(*refusal) });
        }
        let next = self.guard.next_challenge(now);
        let response = self.inner.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            if let Some(next) = next {
                response.headers_mut().insert(CHALLENGE_HEADER, next);
            }
            Ok(response)
        })
    }
}

/// A [`Channel`] whose calls carry a proof: use it where the channel goes, e.g.
/// `FooClient::new(AuthChannel::new(channel, keys))`. Clones share the nonce a previous
/// answer handed over.
#[derive(Clone, Debug)]
pub struct AuthChannel {
    channel: Channel,
    keys: Option<Keys>,
    /// The challenge from the last answer, with when it arrived; taken by the next call.
    next: Arc<Mutex<Option<(Challenge, Instant)>>>,
}

/// A server's challenge: a nonce and the ids of the keys it accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Challenge {
    nonce: Nonce,
    accepted: Vec<KeyId>,
}

/// Why an authenticated call could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The connection failed.
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
    /// The server sent no usable challenge: it does not authenticate calls, or it is not a
    /// guarded chat-system service.
    #[error(
        "the server sent no authentication challenge (is it guarded with the cluster secret?)"
    )]
    NoChallenge,
    /// The server accepts none of our keys: the two hold different cluster secrets.
    #[error("the server accepts none of our keys: the cluster secrets differ")]
    NoCommonKey,
}

impl AuthChannel {
    /// Calls over `channel` signed with `keys` (the services keys); `None` sends them
    /// unsigned, as before.
    pub fn new(channel: Channel, keys: Option<KeyRing>) -> Self {
        AuthChannel {
            channel,
            keys: keys.map(Keys::new),
            next: Arc::new(Mutex::new(None)),
        }
    }

    fn take_fresh_challenge(&self, now: Instant) -> Option<Challenge> {
        lock(&self.next)
            .take()
            .filter(|(_, received)| now.duration_since(*received) < CLIENT_NONCE_MAX_AGE)
            .map(|(challenge, _)| challenge)
    }

    fn remember(&self, headers: &HeaderMap) {
        if let Some(challenge) = headers.get(CHALLENGE_HEADER).and_then(parse_challenge) {
            *lock(&self.next) = Some((challenge, Instant::now()));
        }
    }
}

impl Service<Request<Body>> for AuthChannel {
    type Response = Response<Body>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.channel.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let Some(keys) = self.keys.clone() else {
            let response = self.channel.call(request);
            return Box::pin(async move { Ok(response.await?) });
        };
        // The channel polled ready is this one; the probe goes over a clone.
        let channel = self.channel.clone();
        let ready = std::mem::replace(&mut self.channel, channel);
        let this = self.clone();
        // The probe is built here: the request body is not `Sync`, so the future must not
        // borrow the request.
        let challenge_or_probe = self
            .take_fresh_challenge(Instant::now())
            .ok_or_else(|| probe_for(&request));
        Box::pin(async move {
            let mut ready = ready;
            let challenge = match challenge_or_probe {
                Ok(challenge) => challenge,
                Err(probe_request) => probe(this.channel.clone(), probe_request?).await?,
            };
            let proof = prove(&keys, &challenge, request.uri().path())?;
            request.headers_mut().insert(PROOF_HEADER, proof);
            let response = ready.call(request).await?;
            this.remember(response.headers());
            Ok(response)
        })
    }
}

/// Whether `path` (`/service/method`) is the probe for a nonce.
fn is_probe(path: &str) -> bool {
    path.rsplit('/').next() == Some(PROBE_METHOD)
}

/// An empty call to the service `request` is for, which its guard answers with a challenge.
fn probe_for(request: &Request<Body>) -> Result<Request<Body>, AuthError> {
    let service = request
        .uri()
        .path()
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default();
    let mut parts = request.uri().clone().into_parts();
    parts.path_and_query = Some(
        format!("/{service}/{PROBE_METHOD}")
            .parse()
            .map_err(|_| AuthError::NoChallenge)?,
    );
    let uri = http::Uri::from_parts(parts).map_err(|_| AuthError::NoChallenge)?;
    let mut probe = Request::post(uri)
        .body(Body::default())
        .map_err(|_| AuthError::NoChallenge)?;
    for name in [http::header::CONTENT_TYPE, http::header::TE] {
        if let Some(value) = request.headers().get(&name) {
            probe.headers_mut().insert(name, value.clone());
        }
    }
    Ok(probe)
}

/// Sends a probe built by [`probe_for`] and reads the challenge from its answer.
async fn probe(mut channel: Channel, probe: Request<Body>) -> Result<Challenge, AuthError> {
    std::future::poll_fn(|cx| channel.poll_ready(cx)).await?;
    let answer = channel.call(probe).await?;
    answer
        .headers()
        .get(CHALLENGE_HEADER)
        .and_then(parse_challenge)
        .ok_or(AuthError::NoChallenge)
}

/// The proof header for a call to `path` answering `challenge`.
fn prove(keys: &Keys, challenge: &Challenge, path: &str) -> Result<HeaderValue, AuthError> {
    let (id, key) = keys
        .ids
        .iter()
        .zip(keys.ring.verifying())
        .find(|(id, _)| challenge.accepted.contains(id))
        .ok_or(AuthError::NoCommonKey)?;
    let mac = mac(key, &challenge.nonce, path).finalize().into_bytes();
    let text = format!(
        "{}.{}.{}",
        hex::encode(id),
        hex::encode(challenge.nonce),
        hex::encode(mac)
    );
    Ok(HeaderValue::from_str(&text).expect("hex and dots are valid header text"))
}

fn parse_challenge(value: &HeaderValue) -> Option<Challenge> {
    let (nonce, ids) = value.to_str().ok()?.split_once('.')?;
    let mut parsed = Challenge {
        nonce: decode(nonce)?,
        accepted: Vec::new(),
    };
    for id in ids.split(',').take(4) {
        parsed.accepted.push(decode(id)?);
    }
    Some(parsed)
}

fn parse_proof(value: &[u8]) -> Option<(KeyId, Nonce, [u8; 32])> {
    let text = std::str::from_utf8(value).ok()?;
    let mut parts = text.split('.');
    let proof = (
        decode(parts.next()?)?,
        decode(parts.next()?)?,
        decode(parts.next()?)?,
    );
    parts.next().is_none().then_some(proof)
}

fn decode<const N: usize>(text: &str) -> Option<[u8; N]> {
    let mut bytes = [0u8; N];
    hex::decode_to_slice(text, &mut bytes).ok()?;
    Some(bytes)
}

fn mac(key: &Key, nonce: &Nonce, path: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.expose()).expect("HMAC takes any key");
    mac.update(MAC_DOMAIN);
    mac.update(nonce);
    mac.update(path.as_bytes());
    mac
}

fn verify_mac(key: &Key, nonce: &Nonce, path: &str, tag: &[u8; 32]) -> bool {
    // Constant time, so a forger learns nothing from how long a refusal takes.
    mac(key, nonce, path).verify_slice(tag).is_ok()
}

/// A public name for a key: lets client and server find a key they share without revealing it.
fn key_id(key: &Key) -> KeyId {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.expose()).expect("HMAC takes any key");
    mac.update(b"chat-grpc/v1/key-id");
    mac.finalize().into_bytes()[..KEY_ID_LEN]
        .try_into()
        .expect("KEY_ID_LEN")
}

fn random_nonce() -> Nonce {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    nonce
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
#[path = "auth_served_tests.rs"]
mod served_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_good_once_and_only_while_fresh() {
        let start = Instant::now();
        let mut book = NonceBook::default();
        let used = book.issue(start);
        let stale = book.issue(start);
        assert_eq!(book.consume(&used, start), Ok(()));
        assert_eq!(
            book.consume(&used, start),
            Err(AuthRefusal::NonceReplayed),
            "single use"
        );
        assert_eq!(
            book.consume(&stale, start + NONCE_LIFETIME),
            Err(AuthRefusal::NonceExpired)
        );
        assert_eq!(
            book.consume(&random_nonce(), start),
            Err(AuthRefusal::NonceUnknown),
            "never issued"
        );
    }

    #[test]
    fn spent_nonces_are_forgotten_after_a_lifetime() {
        let start = Instant::now();
        let mut book = NonceBook::default();
        let used = book.issue(start);
        assert_eq!(book.consume(&used, start), Ok(()));
        let later = start + NONCE_LIFETIME;
        assert_eq!(
            book.consume(&used, later),
            Err(AuthRefusal::NonceUnknown),
            "a replay that late is told as unknown"
        );
        assert!(book.spent.is_empty() && book.spent_order.is_empty());
    }

    #[test]
    fn outstanding_nonces_are_bounded() {
        let start = Instant::now();
        let mut book = NonceBook::default();
        let first = book.issue(start);
        for _ in 0..MAX_OUTSTANDING_NONCES {
            book.issue(start);
        }
        assert_eq!(book.issued.len(), MAX_OUTSTANDING_NONCES);
        assert_eq!(book.evicted, 1);
        assert_eq!(
            book.consume(&first, start),
            Err(AuthRefusal::NonceEvicted),
            "the oldest was forgotten"
        );
        // Spent nonces are bounded as well, however fast they come.
        for _ in 0..2 * MAX_OUTSTANDING_NONCES {
            let nonce = book.issue(start);
            assert_eq!(book.consume(&nonce, start), Ok(()));
        }
        assert!(book.spent.len() <= MAX_OUTSTANDING_NONCES + 1);
        assert!(book.spent_order.len() <= MAX_OUTSTANDING_NONCES + 1);
    }

    #[test]
    fn challenges_and_proofs_parse_back_and_garbage_does_not() {
        let challenge = Challenge {
            nonce: [7; NONCE_LEN],
            accepted: vec![[1; KEY_ID_LEN], [2; KEY_ID_LEN]],
        };
        let text = format!(
            "{}.0101010101010101,0202020202020202",
            hex::encode([7u8; 16])
        );
        let parsed = parse_challenge(&HeaderValue::from_str(&text).expect("header"));
        assert_eq!(parsed, Some(challenge));
        for bad in ["", ".", "zz.01", "0707.0101010101010101", "a.b.c.d"] {
            assert!(
                parse_challenge(&HeaderValue::from_static(bad)).is_none(),
                "{bad}"
            );
            assert!(parse_proof(bad.as_bytes()).is_none(), "{bad}");
        }
    }
}
