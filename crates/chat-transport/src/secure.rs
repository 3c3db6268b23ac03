//! The sealed wire: a handshake per direction of each link, then every payload sealed with
//! AES-256-GCM under a key only holders of the cluster secret can derive.
//!
//! AES-256-GCM rather than ChaCha20-Poly1305: with AES-NI and CLMUL (detected at run time, on
//! every x86-64 server of the last decade) it seals and opens a 100-byte frame in about a
//! tenth of the time, where RustCrypto's ChaCha20-Poly1305 pays ~4 µs per frame whatever its
//! size (its AVX2 Poly1305 set-up, per message key). ring's implementation rather than
//! RustCrypto's `aes-gcm`: its assembly seals 100 B in ~0.23 µs instead of ~0.4 µs and 4 KiB
//! in ~1 µs instead of ~6 µs here, and the frames are the same (a test checks that each opens
//! the other's). docs/decisions.md has the figures.
//!
//! Sans-IO: [`SecureLinks`] takes payloads and frames (with `now`) and returns the frames to
//! send and the payloads to deliver; the socket thread does the I/O.
//!
//! # Protocol (one direction, sender S to receiver R)
//!
//! ```text
//! S -> R  HELLO   [1, version, nonce_s(16), n, key_id(8) * n]      the keys S accepts
//! R -> S  WELCOME [2, nonce_s(16), nonce_r(16), key_id(8), mac(16)]
//! S -> R  DATA    [3, session(8), counter(8, LE), ciphertext, tag(16)]
//! R -> S  REJECT  [4, session(8)]                                   "no such session here"
//! ```
//!
//! R picks the first key of its own ring that S also holds (so during a rotation a node with
//! `[new, old]` and one with `[old]` agree on `old`), draws `nonce_r`, and both derive with
//! HKDF-SHA256 from that key, salt `nonce_s ‖ nonce_r` and both node ids a session key and a
//! MAC key. The WELCOME's MAC proves R holds the secret; the first DATA frame that opens proves
//! S does. The session id is `nonce_r[..8]`.
//!
//! DATA frames are sealed with the 17-byte header as associated data and the counter as the
//! AEAD nonce; R keeps a sliding window of counters it has accepted, so a frame replayed
//! within the session is refused. A frame recorded in an earlier session names a session R
//! does not have (R drew a fresh `nonce_r` since): it is refused and answered with REJECT,
//! which also tells a legitimate S whose receiver restarted to shake hands again.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use chat_secret::{Key, KeyRing};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::RngCore;
use ring::aead;
use sha2::Sha256;

/// Frame kinds, the first byte of every sealed-wire frame.
pub(crate) mod kind {
    pub(crate) const HELLO: u8 = 1;
    pub(crate) const WELCOME: u8 = 2;
    pub(crate) const DATA: u8 = 3;
    pub(crate) const REJECT: u8 = 4;
}

const VERSION: u8 = 1;
const NONCE_LEN: usize = 16;
const KEY_ID_LEN: usize = 8;
const MAC_LEN: usize = 16;
const SESSION_LEN: usize = 8;
const TAG_LEN: usize = 16;
/// Kind, session id and counter: the associated data of a DATA frame.
const DATA_HEADER_LEN: usize = 1 + SESSION_LEN + 8;
/// Bytes a DATA frame adds to its payload.
pub(crate) const DATA_OVERHEAD: usize = DATA_HEADER_LEN + TAG_LEN;
/// A HELLO naming more keys than this is refused (a ring holds at most two).
const MAX_HELLO_KEYS: usize = 4;
const WELCOME_LEN: usize = 1 + 2 * NONCE_LEN + KEY_ID_LEN + MAC_LEN;
/// Counters accepted out of order behind the highest one seen: messages that overtook
/// others when the route to a peer changed (see the crate documentation).
const REPLAY_WINDOW: u64 = 1024;
/// A sender without an answer to its HELLO sends a new one after this long.
pub(crate) const HANDSHAKE_RETRY: Duration = Duration::from_secs(1);
/// A sender whose HELLOs got no answer for this long gives up and drops what waited for it;
/// the next send starts over. A peer that never answers (it lacks the secret) costs no memory.
pub(crate) const HANDSHAKE_GIVE_UP: Duration = Duration::from_secs(10);
/// Handshakes a receiver keeps open at once (one per peer identity); more, and the oldest is
/// forgotten. Anyone can send HELLOs, so this bounds what they cost us.
const MAX_PENDING_HANDSHAKES: usize = 256;

/// Why a received frame was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The peer did not prove it holds the secret: no common key, a WELCOME whose MAC fails,
    /// a DATA frame for no session we have, a first frame of a session that does not open,
    /// or a frame that is not of the sealed format at all.
    Unauthenticated,
    /// A frame of an established session that does not open: altered in flight.
    Tampered,
    /// A frame whose counter the session has already accepted (or that is too far behind).
    Replayed,
}

/// What handling one sent payload or one received frame produced.
#[derive(Debug, Default)]
pub(crate) struct Output {
    /// Frames to send to the peer, in order.
    pub(crate) frames: Vec<Vec<u8>>,
    /// A payload received from the peer, opened.
    pub(crate) deliver: Option<Vec<u8>>,
    /// Why the frame was refused, if it was.
    pub(crate) refused: Option<Refusal>,
    /// Payloads dropped because the queue of a handshake in progress was full.
    pub(crate) dropped_pending: u64,
    /// A receiving session was established (the peer proved it holds the secret).
    pub(crate) session_opened: bool,
}

/// The sealed-wire state of one transport: our sending sessions to each peer and the
/// receiving sessions of each peer to us.
pub(crate) struct SecureLinks {
    keys: KeyRing,
    /// `key_id` of each of `keys.verifying()`, same order.
    key_ids: Vec<[u8; KEY_ID_LEN]>,
    node_id: u64,
    /// Payloads queued per peer while a handshake is in progress.
    max_pending_payloads: usize,
    senders: HashMap<u64, SendSession>,
    receivers: HashMap<u64, ReceiveSession>,
    /// Sessions we answered a HELLO for and whose first DATA frame has not arrived.
    offered: HashMap<u64, Offered>,
}

enum SendSession {
    Handshaking {
        nonce: [u8; NONCE_LEN],
        /// When the last HELLO went out.
        started: Instant,
        /// When the first HELLO went out.
        first: Instant,
        queued: VecDeque<Vec<u8>>,
    },
    Established(Sealer),
}

/// An established sending session: seals payloads as its next DATA frames.
pub(crate) struct Sealer {
    session: [u8; SESSION_LEN],
    /// The expanded AES key and GHASH key, computed once per session.
    cipher: SessionCipher,
    /// The counter of the next frame.
    counter: u64,
}

struct ReceiveSession {
    session: [u8; SESSION_LEN],
    cipher: SessionCipher,
    window: ReplayWindow,
}

struct Offered {
    receive: ReceiveSession,
    since: Instant,
}

/// The keys of one session, derived by both ends from the agreed key and both nonces.
struct SessionKeys {
    cipher: SessionCipher,
    mac_key: [u8; 32],
}

impl SecureLinks {
    /// Sealed links for node `node_id` with `keys`, queueing at most `max_pending_payloads`
    /// per peer while a handshake is in progress.
    pub(crate) fn new(node_id: u64, keys: KeyRing, max_pending_payloads: usize) -> Self {
        let key_ids = keys.verifying().iter().map(key_id).collect();
        SecureLinks {
            keys,
            key_ids,
            node_id,
            max_pending_payloads: max_pending_payloads.max(1),
            senders: HashMap::new(),
            receivers: HashMap::new(),
            offered: HashMap::new(),
        }
    }

    /// Seals `payload` for `peer`, or queues it behind a handshake (starting one if needed).
    pub(crate) fn send(&mut self, peer: u64, payload: Vec<u8>, now: Instant) -> Output {
        let mut output = Output::default();
        let session = self
            .senders
            .entry(peer)
            .or_insert_with(|| SendSession::Handshaking {
                // A zero nonce marks a handshake whose first HELLO is still to go out.
                nonce: [0; NONCE_LEN],
                started: now,
                first: now,
                queued: VecDeque::new(),
            });
        match session {
            SendSession::Established(sealer) => output.frames.push(sealer.seal(&payload)),
            SendSession::Handshaking {
                nonce,
                started,
                queued,
                ..
            } => {
                if queued.len() >= self.max_pending_payloads {
                    output.dropped_pending += 1;
                } else {
                    queued.push_back(payload);
                }
                if *nonce == [0; NONCE_LEN] {
                    *nonce = random_bytes();
                    *started = now;
                    output.frames.push(hello(nonce, &self.key_ids));
                }
            }
        }
        output
    }

    /// The established session to `peer`, if there is one: the fast path of a send, sealing
    /// straight into the frame that goes out (no [`Output`], no clock). Without one, the
    /// caller goes through [`send`](SecureLinks::send).
    pub(crate) fn sealer(&mut self, peer: u64) -> Option<&mut Sealer> {
        match self.senders.get_mut(&peer)? {
            SendSession::Established(sealer) => Some(sealer),
            SendSession::Handshaking { .. } => None,
        }
    }

    /// When [`retry_handshakes`](SecureLinks::retry_handshakes) next has something to do.
    pub(crate) fn next_retry(&self) -> Option<Instant> {
        self.senders
            .values()
            .filter_map(|session| match session {
                SendSession::Handshaking { started, .. } => Some(*started + HANDSHAKE_RETRY),
                SendSession::Established(_) => None,
            })
            .min()
    }

    /// Repeats, with a fresh nonce, every HELLO unanswered for [`HANDSHAKE_RETRY`], and gives
    /// up handshakes unanswered for [`HANDSHAKE_GIVE_UP`]. Returns the HELLOs to send and how
    /// many queued payloads were dropped.
    pub(crate) fn retry_handshakes(&mut self, now: Instant) -> (Vec<(u64, Vec<u8>)>, u64) {
        let mut hellos = Vec::new();
        let mut dropped = 0;
        self.senders.retain(|peer, session| {
            let SendSession::Handshaking {
                nonce,
                started,
                first,
                queued,
            } = session
            else {
                return true;
            };
            if now.duration_since(*first) >= HANDSHAKE_GIVE_UP {
                dropped += queued.len() as u64;
                return false;
            }
            if now.duration_since(*started) >= HANDSHAKE_RETRY {
                *nonce = random_bytes();
                *started = now;
                hellos.push((*peer, hello(nonce, &self.key_ids)));
            }
            true
        });
        (hellos, dropped)
    }

    /// Forgets our sending session to `peer` (its link went down, or it was unroutable), so
    /// the next send shakes hands again. Returns how many queued payloads were dropped.
    pub(crate) fn reset_sender(&mut self, peer: u64) -> u64 {
        match self.senders.remove(&peer) {
            Some(SendSession::Handshaking { queued, .. }) => queued.len() as u64,
            _ => 0,
        }
    }

    /// Handles one frame received from `peer` (borrowed: a DATA frame is opened into a new
    /// buffer of the payload's size, so the socket's own message is read in place).
    pub(crate) fn receive(&mut self, peer: u64, frame: impl AsRef<[u8]>, now: Instant) -> Output {
        let frame = frame.as_ref();
        match frame.first().copied() {
            Some(kind::HELLO) => self.on_hello(peer, frame, now),
            Some(kind::WELCOME) => self.on_welcome(peer, frame),
            Some(kind::DATA) => self.on_data(peer, frame),
            Some(kind::REJECT) => self.on_reject(peer, frame),
            _ => refused(Refusal::Unauthenticated),
        }
    }

    fn on_hello(&mut self, peer: u64, frame: &[u8], now: Instant) -> Output {
        let Some((nonce_s, offered_ids)) = parse_hello(frame) else {
            return refused(Refusal::Unauthenticated);
        };
        // Our ring's order: the current key first, so both ends move to it once they can.
        let Some((index, id)) = self
            .key_ids
            .iter()
            .enumerate()
            .find(|(_, id)| offered_ids.contains(id))
        else {
            return refused(Refusal::Unauthenticated);
        };
        let nonce_r: [u8; NONCE_LEN] = random_bytes();
        let keys = session_keys(
            &self.keys.verifying()[index],
            &nonce_s,
            &nonce_r,
            peer,
            self.node_id,
        );
        let mut welcome = Vec::with_capacity(WELCOME_LEN);
        welcome.push(kind::WELCOME);
        welcome.extend_from_slice(&nonce_s);
        welcome.extend_from_slice(&nonce_r);
        welcome.extend_from_slice(id);
        welcome.extend_from_slice(&welcome_mac(&keys.mac_key, &welcome));
        if self.offered.len() >= MAX_PENDING_HANDSHAKES && !self.offered.contains_key(&peer) {
            if let Some(oldest) = self
                .offered
                .iter()
                .min_by_key(|(_, o)| o.since)
                .map(|(p, _)| *p)
            {
                self.offered.remove(&oldest);
            }
        }
        self.offered.insert(
            peer,
            Offered {
                receive: ReceiveSession {
                    session: session_id(&nonce_r),
                    cipher: keys.cipher,
                    window: ReplayWindow::default(),
                },
                since: now,
            },
        );
        Output {
            frames: vec![welcome],
            ..Output::default()
        }
    }

    fn on_welcome(&mut self, peer: u64, frame: &[u8]) -> Output {
        let Some(SendSession::Handshaking { nonce, queued, .. }) = self.senders.get_mut(&peer)
        else {
            // Not waiting for one: a late answer to a HELLO we repeated, or a forgery.
            return refused(Refusal::Unauthenticated);
        };
        if frame.len() != WELCOME_LEN || frame[1..1 + NONCE_LEN] != nonce[..] {
            return refused(Refusal::Unauthenticated);
        }
        let nonce_r: [u8; NONCE_LEN] = frame[1 + NONCE_LEN..1 + 2 * NONCE_LEN]
            .try_into()
            .expect("slice of NONCE_LEN");
        let id_at = 1 + 2 * NONCE_LEN;
        let id = &frame[id_at..id_at + KEY_ID_LEN];
        let Some(index) = self.key_ids.iter().position(|known| known[..] == *id) else {
            return refused(Refusal::Unauthenticated);
        };
        let keys = session_keys(
            &self.keys.verifying()[index],
            nonce,
            &nonce_r,
            self.node_id,
            peer,
        );
        let (signed, mac) = frame.split_at(WELCOME_LEN - MAC_LEN);
        if !verify_welcome_mac(&keys.mac_key, signed, mac) {
            return refused(Refusal::Unauthenticated);
        }
        let queued = std::mem::take(queued);
        let mut sealer = Sealer {
            session: session_id(&nonce_r),
            cipher: keys.cipher,
            counter: 0,
        };
        let frames = queued.iter().map(|payload| sealer.seal(payload)).collect();
        self.senders.insert(peer, SendSession::Established(sealer));
        Output {
            frames,
            ..Output::default()
        }
    }

    fn on_data(&mut self, peer: u64, frame: &[u8]) -> Output {
        if frame.len() < DATA_OVERHEAD {
            return refused(Refusal::Unauthenticated);
        }
        let session: [u8; SESSION_LEN] = frame[1..1 + SESSION_LEN].try_into().expect("8 bytes");
        if let Some(current) = self.receivers.get_mut(&peer) {
            if current.session == session {
                return match current.open(frame) {
                    Ok(payload) => delivered(payload),
                    Err(refusal) => refused(refusal),
                };
            }
        }
        let Some(offered) = self.offered.get_mut(&peer) else {
            return reject(session);
        };
        if offered.receive.session != session {
            return reject(session);
        }
        match offered.receive.open(frame) {
            Ok(payload) => {
                let offered = self.offered.remove(&peer).expect("present");
                self.receivers.insert(peer, offered.receive);
                Output {
                    deliver: Some(payload),
                    session_opened: true,
                    ..Output::default()
                }
            }
            // Until a frame opens, the peer has proved nothing.
            Err(_) => refused(Refusal::Unauthenticated),
        }
    }

    fn on_reject(&mut self, peer: u64, frame: &[u8]) -> Output {
        let named = &frame[1..];
        match self.senders.get(&peer) {
            Some(SendSession::Established(sealer)) if named == &sealer.session[..] => {
                // The receiver lost our session (it restarted): shake hands on the next send.
                self.senders.remove(&peer);
                Output::default()
            }
            _ => refused(Refusal::Unauthenticated),
        }
    }
}

impl Sealer {
    /// Seals `payload` as this session's next DATA frame, into a new buffer.
    pub(crate) fn seal(&mut self, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![0; DATA_OVERHEAD + payload.len()];
        self.seal_into(payload, &mut frame);
        frame
    }

    /// Seals `payload` as this session's next DATA frame into `frame`, which is exactly
    /// [`DATA_OVERHEAD`] bytes longer than it: the socket's own outgoing message, so the
    /// payload is copied once and encrypted where it lies.
    pub(crate) fn seal_into(&mut self, payload: &[u8], frame: &mut [u8]) {
        let counter = self.counter;
        self.counter += 1;
        let (header, rest) = frame.split_at_mut(DATA_HEADER_LEN);
        let (body, tag) = rest.split_at_mut(payload.len());
        header[0] = kind::DATA;
        header[1..1 + SESSION_LEN].copy_from_slice(&self.session);
        header[1 + SESSION_LEN..].copy_from_slice(&counter.to_le_bytes());
        body.copy_from_slice(payload);
        tag.copy_from_slice(&self.cipher.seal(counter, header, body));
    }
}

impl ReceiveSession {
    /// Opens a DATA frame of this session (at least [`DATA_OVERHEAD`] long): the payload, or
    /// why it is refused. The ciphertext is copied once, into the payload's own buffer, and
    /// decrypted there.
    fn open(&mut self, frame: &[u8]) -> Result<Vec<u8>, Refusal> {
        let counter = u64::from_le_bytes(
            frame[1 + SESSION_LEN..DATA_HEADER_LEN]
                .try_into()
                .expect("8 bytes"),
        );
        if !self.window.is_fresh(counter) {
            return Err(Refusal::Replayed);
        }
        let tag_at = frame.len() - TAG_LEN;
        let (header, body) = frame[..tag_at].split_at(DATA_HEADER_LEN);
        let mut payload = body.to_vec();
        if !self
            .cipher
            .open(counter, header, &mut payload, &frame[tag_at..])
        {
            return Err(Refusal::Tampered);
        }
        self.window.accept(counter);
        Ok(payload)
    }
}

/// Which counters a receiving session has accepted: everything below `next - REPLAY_WINDOW`
/// is refused, and within the window a bit per counter says whether it was seen.
#[derive(Default)]
struct ReplayWindow {
    /// One past the highest counter accepted.
    next: u64,
    seen: [u64; (REPLAY_WINDOW / 64) as usize],
}

impl ReplayWindow {
    fn is_fresh(&self, counter: u64) -> bool {
        if counter >= self.next {
            return true;
        }
        self.next - counter <= REPLAY_WINDOW && !self.bit(counter)
    }

    fn accept(&mut self, counter: u64) {
        if counter >= self.next {
            // Counters between the old highest and this one have not been seen yet.
            let skipped = counter - self.next;
            if skipped >= REPLAY_WINDOW {
                self.seen = Default::default();
            } else {
                for unseen in self.next..counter {
                    self.set(unseen, false);
                }
            }
            self.next = counter + 1;
        }
        self.set(counter, true);
    }

    fn bit(&self, counter: u64) -> bool {
        let slot = counter % REPLAY_WINDOW;
        self.seen[(slot / 64) as usize] & (1 << (slot % 64)) != 0
    }

    fn set(&mut self, counter: u64, value: bool) {
        let slot = counter % REPLAY_WINDOW;
        let word = &mut self.seen[(slot / 64) as usize];
        if value {
            *word |= 1 << (slot % 64);
        } else {
            *word &= !(1 << (slot % 64));
        }
    }
}

/// AES-256-GCM under one session's key, the key schedule and GHASH key expanded once when
/// the session is made, never per frame. Boxed: the expanded key is some 500 bytes, and
/// sessions move between maps.
struct SessionCipher(Box<aead::LessSafeKey>);

impl SessionCipher {
    fn new(key: &[u8]) -> Self {
        let key = aead::UnboundKey::new(&aead::AES_256_GCM, key).expect("32-byte key");
        SessionCipher(Box::new(aead::LessSafeKey::new(key)))
    }

    /// Encrypts `body` in place as frame `counter` with `header` as associated data; returns
    /// the tag.
    fn seal(&self, counter: u64, header: &[u8], body: &mut [u8]) -> [u8; TAG_LEN] {
        let tag = self
            .0
            .seal_in_place_separate_tag(aead_nonce(counter), aead::Aad::from(header), body)
            .expect("AES-256-GCM seals any payload ZeroMQ can carry");
        tag.as_ref().try_into().expect("a 16-byte tag")
    }

    /// Decrypts `body` in place if `tag` authenticates it, `header` and `counter`; false
    /// (and `body` unspecified) if not.
    fn open(&self, counter: u64, header: &[u8], body: &mut [u8], tag: &[u8]) -> bool {
        let Ok(tag) = aead::Tag::try_from(tag) else {
            return false;
        };
        self.0
            .open_in_place_separate_tag(
                aead_nonce(counter),
                aead::Aad::from(header),
                tag,
                body,
                0..,
            )
            .is_ok()
    }
}

/// The AEAD nonce of a counter. Each session key is fresh and used by one sender only, so
/// the counter alone never repeats a (key, nonce) pair.
fn aead_nonce(counter: u64) -> aead::Nonce {
    aead::Nonce::assume_unique_for_key(aead_nonce_bytes(counter))
}

/// 4 zero bytes, then the counter, little-endian.
fn aead_nonce_bytes(counter: u64) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&counter.to_le_bytes());
    nonce
}

fn hello(nonce: &[u8; NONCE_LEN], key_ids: &[[u8; KEY_ID_LEN]]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(3 + NONCE_LEN + key_ids.len() * KEY_ID_LEN);
    frame.push(kind::HELLO);
    frame.push(VERSION);
    frame.extend_from_slice(nonce);
    frame.push(u8::try_from(key_ids.len()).expect("a ring holds at most two keys"));
    for id in key_ids {
        frame.extend_from_slice(id);
    }
    frame
}

fn parse_hello(frame: &[u8]) -> Option<([u8; NONCE_LEN], Vec<[u8; KEY_ID_LEN]>)> {
    let rest = frame.get(1..)?;
    let (&version, rest) = rest.split_first()?;
    if version != VERSION || rest.len() < NONCE_LEN + 1 {
        return None;
    }
    let (nonce, rest) = rest.split_at(NONCE_LEN);
    let (&count, ids) = rest.split_first()?;
    let count = usize::from(count);
    if count == 0 || count > MAX_HELLO_KEYS || ids.len() != count * KEY_ID_LEN {
        return None;
    }
    let ids = ids
        .chunks_exact(KEY_ID_LEN)
        .map(|id| id.try_into().expect("chunk of KEY_ID_LEN"))
        .collect();
    Some((nonce.try_into().expect("NONCE_LEN"), ids))
}

/// A public name for a key: lets two nodes find a key they share without revealing it.
fn key_id(key: &Key) -> [u8; KEY_ID_LEN] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.expose()).expect("HMAC takes any key");
    mac.update(b"chat-transport/v1/key-id");
    mac.finalize().into_bytes()[..KEY_ID_LEN]
        .try_into()
        .expect("KEY_ID_LEN")
}

fn session_keys(
    key: &Key,
    nonce_s: &[u8; NONCE_LEN],
    nonce_r: &[u8; NONCE_LEN],
    sender: u64,
    receiver: u64,
) -> SessionKeys {
    let mut salt = [0u8; 2 * NONCE_LEN];
    salt[..NONCE_LEN].copy_from_slice(nonce_s);
    salt[NONCE_LEN..].copy_from_slice(nonce_r);
    let mut info = Vec::with_capacity(48);
    info.extend_from_slice(b"chat-transport/v1/session");
    info.extend_from_slice(&sender.to_le_bytes());
    info.extend_from_slice(&receiver.to_le_bytes());
    let mut okm = [0u8; 64];
    Hkdf::<Sha256>::new(Some(&salt), key.expose())
        .expand(&info, &mut okm)
        .expect("64 bytes is a valid HKDF-SHA256 output length");
    let (cipher_key, mac_key) = okm.split_at(32);
    SessionKeys {
        cipher: SessionCipher::new(cipher_key),
        mac_key: mac_key.try_into().expect("32 bytes"),
    }
}

fn welcome_mac(mac_key: &[u8; 32], signed: &[u8]) -> [u8; MAC_LEN] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(mac_key).expect("HMAC takes any key");
    mac.update(signed);
    mac.finalize().into_bytes()[..MAC_LEN]
        .try_into()
        .expect("MAC_LEN")
}

fn verify_welcome_mac(mac_key: &[u8; 32], signed: &[u8], tag: &[u8]) -> bool {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(mac_key).expect("HMAC takes any key");
    mac.update(signed);
    // Constant time, so the comparison leaks nothing about the expected MAC.
    mac.verify_truncated_left(tag).is_ok()
}

fn session_id(nonce_r: &[u8; NONCE_LEN]) -> [u8; SESSION_LEN] {
    nonce_r[..SESSION_LEN].try_into().expect("SESSION_LEN")
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

fn refused(refusal: Refusal) -> Output {
    Output {
        refused: Some(refusal),
        ..Output::default()
    }
}

fn delivered(payload: Vec<u8>) -> Output {
    Output {
        deliver: Some(payload),
        ..Output::default()
    }
}

/// A DATA frame for a session we do not have: refused, and answered so a sender whose
/// receiver restarted learns to shake hands again.
fn reject(session: [u8; SESSION_LEN]) -> Output {
    let mut frame = Vec::with_capacity(1 + SESSION_LEN);
    frame.push(kind::REJECT);
    frame.extend_from_slice(&session);
    Output {
        frames: vec![frame],
        refused: Some(Refusal::Unauthenticated),
        ..Output::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_secret::{ClusterSecret, Purpose};

    const OLD: [u8; 32] = [1; 32];
    const NEW: [u8; 32] = [2; 32];

    fn ring(current: [u8; 32], previous: Option<[u8; 32]>) -> KeyRing {
        ClusterSecret::from_parts(current, previous).keys(Purpose::Wire)
    }

    fn links(id: u64, keys: KeyRing) -> SecureLinks {
        SecureLinks::new(id, keys, 16)
    }

    /// Carries frames between `a` (node 1) and `b` (node 2) until both are quiet; returns
    /// what `b` delivered.
    fn exchange(
        a: &mut SecureLinks,
        b: &mut SecureLinks,
        first: Output,
        now: Instant,
    ) -> Vec<Vec<u8>> {
        let mut to_b: VecDeque<Vec<u8>> = first.frames.into();
        let mut to_a = VecDeque::new();
        let mut delivered = Vec::new();
        while !to_b.is_empty() || !to_a.is_empty() {
            if let Some(frame) = to_b.pop_front() {
                let out = b.receive(1, frame, now);
                to_a.extend(out.frames);
                delivered.extend(out.deliver);
            }
            if let Some(frame) = to_a.pop_front() {
                to_b.extend(a.receive(2, frame, now).frames);
            }
        }
        delivered
    }

    #[test]
    fn payloads_queued_behind_the_handshake_arrive_in_order() {
        let now = Instant::now();
        let (mut a, mut b) = (links(1, ring(OLD, None)), links(2, ring(OLD, None)));
        let first = a.send(2, b"one".to_vec(), now);
        assert_eq!(first.frames.len(), 1, "a HELLO");
        assert!(a.send(2, b"two".to_vec(), now).frames.is_empty(), "queued");
        let delivered = exchange(&mut a, &mut b, first, now);
        assert_eq!(delivered, vec![b"one".to_vec(), b"two".to_vec()]);
        let next = a.send(2, b"three".to_vec(), now);
        assert_eq!(exchange(&mut a, &mut b, next, now), vec![b"three".to_vec()]);
    }

    #[test]
    fn rotation_agrees_on_the_key_both_hold() {
        let now = Instant::now();
        for (a_keys, b_keys) in [
            (ring(NEW, Some(OLD)), ring(OLD, None)),
            (ring(OLD, None), ring(NEW, Some(OLD))),
        ] {
            let (mut a, mut b) = (links(1, a_keys), links(2, b_keys));
            let first = a.send(2, b"hi".to_vec(), now);
            assert_eq!(exchange(&mut a, &mut b, first, now), vec![b"hi".to_vec()]);
        }
    }

    #[test]
    fn unanswered_hellos_are_repeated_then_given_up() {
        let start = Instant::now();
        let mut a = links(1, ring(OLD, None));
        let first = a.send(2, b"one".to_vec(), start).frames.remove(0);
        assert_eq!(a.next_retry(), Some(start + HANDSHAKE_RETRY));
        let (hellos, dropped) = a.retry_handshakes(start + HANDSHAKE_RETRY);
        assert_eq!((hellos.len(), dropped), (1, 0));
        assert_ne!(hellos[0].1, first, "a fresh nonce");
        let (hellos, dropped) = a.retry_handshakes(start + HANDSHAKE_GIVE_UP);
        assert_eq!((hellos.len(), dropped), (0, 1));
        assert_eq!(a.next_retry(), None);
    }

    #[test]
    fn no_common_key_gets_no_welcome() {
        let now = Instant::now();
        let (mut a, mut b) = (links(1, ring(NEW, None)), links(2, ring(OLD, None)));
        let hello = a.send(2, b"hi".to_vec(), now).frames.remove(0);
        let out = b.receive(1, hello, now);
        assert!(out.frames.is_empty());
        assert_eq!(out.refused, Some(Refusal::Unauthenticated));
    }

    #[test]
    fn replayed_and_altered_frames_are_refused() {
        let now = Instant::now();
        let (mut a, mut b) = (links(1, ring(OLD, None)), links(2, ring(OLD, None)));
        let first = a.send(2, b"one".to_vec(), now);
        exchange(&mut a, &mut b, first, now);
        let frame = a.send(2, b"two".to_vec(), now).frames.remove(0);
        let mut altered = frame.clone();
        *altered.last_mut().expect("non-empty") ^= 1;
        assert_eq!(b.receive(1, altered, now).refused, Some(Refusal::Tampered));
        assert_eq!(
            b.receive(1, frame.clone(), now).deliver,
            Some(b"two".to_vec())
        );
        assert_eq!(b.receive(1, frame, now).refused, Some(Refusal::Replayed));
    }

    #[test]
    fn a_restarted_receiver_refuses_the_old_session_and_the_sender_recovers() {
        let now = Instant::now();
        let (mut a, mut b) = (links(1, ring(OLD, None)), links(2, ring(OLD, None)));
        let first = a.send(2, b"one".to_vec(), now);
        exchange(&mut a, &mut b, first, now);
        let recorded = a.send(2, b"two".to_vec(), now).frames.remove(0);
        let mut restarted = links(2, ring(OLD, None));
        let out = restarted.receive(1, recorded, now);
        assert_eq!(
            (out.deliver, out.refused),
            (None, Some(Refusal::Unauthenticated))
        );
        // The REJECT makes the sender shake hands again on its next send.
        a.receive(2, out.frames.into_iter().next().expect("a REJECT"), now);
        let next = a.send(2, b"three".to_vec(), now);
        assert_eq!(
            exchange(&mut a, &mut restarted, next, now),
            vec![b"three".to_vec()]
        );
    }

    #[test]
    fn the_window_accepts_reordering_and_refuses_duplicates_and_stale() {
        let mut window = ReplayWindow::default();
        for counter in [5, 3, 4, 0, 2000] {
            assert!(window.is_fresh(counter), "{counter}");
            window.accept(counter);
        }
        for counter in [5, 3, 2000, 900] {
            assert!(!window.is_fresh(counter), "{counter}");
        }
        assert!(window.is_fresh(1999) && window.is_fresh(1000));
    }

    /// The frames are standard AES-256-GCM (nonce = 4 zero bytes and the LE counter, the
    /// 17-byte header as associated data, the tag appended): another implementation, here
    /// RustCrypto's that sealed the wire before ring did, opens ours and we open its, so nodes
    /// with either talk to each other.
    #[test]
    fn frames_are_standard_aes_256_gcm() {
        use aes_gcm::aead::{AeadInPlace, KeyInit};
        let key = [9u8; 32];
        let other = aes_gcm::Aes256Gcm::new_from_slice(&key).expect("32-byte key");
        let mut sealer = Sealer {
            session: [5; SESSION_LEN],
            cipher: SessionCipher::new(&key),
            counter: 41,
        };
        let frame = sealer.seal(b"a payload of some length");
        let (header, rest) = frame.split_at(DATA_HEADER_LEN);
        let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
        let mut opened = body.to_vec();
        other
            .decrypt_in_place_detached(
                &aead_nonce_bytes(41).into(),
                header,
                &mut opened,
                aes_gcm::Tag::from_slice(tag),
            )
            .expect("ours opens with theirs");
        assert_eq!(opened, b"a payload of some length");

        let mut theirs = body.to_vec();
        theirs.copy_from_slice(b"another payload, as long");
        let header = [kind::DATA, 5, 5, 5, 5, 5, 5, 5, 5, 42, 0, 0, 0, 0, 0, 0, 0];
        let tag = other
            .encrypt_in_place_detached(&aead_nonce_bytes(42).into(), &header, &mut theirs)
            .expect("seals");
        let mut receive = ReceiveSession {
            session: [5; SESSION_LEN],
            cipher: SessionCipher::new(&key),
            window: ReplayWindow::default(),
        };
        let frame = [&header[..], &theirs, &tag].concat();
        assert_eq!(
            receive.open(&frame).as_deref(),
            Ok(&b"another payload, as long"[..]),
            "theirs opens with ours"
        );
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        let now = Instant::now();
        let mut b = links(2, ring(OLD, None));
        for frame in [
            vec![],
            vec![kind::HELLO],
            vec![kind::HELLO, VERSION, 0],
            vec![kind::WELCOME; 3],
            vec![kind::DATA; 5],
            vec![kind::DATA; 60],
            vec![kind::REJECT],
            vec![9, 9, 9],
        ] {
            let out = b.receive(1, frame, now);
            assert!(out.deliver.is_none());
            assert_eq!(out.refused, Some(Refusal::Unauthenticated));
        }
    }
}
