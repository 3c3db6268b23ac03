//! The cluster secret: what makes a process a member of the cluster.
//!
//! The file (`[cluster] secret_file`, `/etc/chat-system/cluster.key` when packaged) holds one or
//! two lines of 64 hex characters (32 random bytes each). The first line is the **current**
//! secret: it signs and seals. Every line is **accepted** when verifying, so an operator rotates
//! the secret without downtime: add the new secret as the first line and keep the old one as the
//! second on every host, restart the processes one by one, then drop the old line and restart
//! again. Blank lines and `#` comments are ignored.
//!
//! Nothing uses the raw secret directly: [`ClusterSecret::keys`] derives an independent key per
//! [`Purpose`] with HKDF-SHA256, so a key recovered from one use (a session cookie, say) says
//! nothing about the keys of the others.

use std::fmt;
use std::path::{Path, PathBuf};

use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;

/// Bytes in one secret (and in every derived key).
pub const SECRET_LEN: usize = 32;

/// How many lines a secret file may hold: the current secret and the previous one.
pub const MAX_LINES: usize = 2;

/// One 32-byte key. Its `Debug` is redacted so a logged value shows no secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; SECRET_LEN]);

impl Key {
    /// The key's bytes, for a MAC or an AEAD.
    pub fn expose(&self) -> &[u8; SECRET_LEN] {
        &self.0
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

/// What a derived key is for. Each gets its own HKDF `info`, so the keys are independent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// Authenticating and sealing node-to-node frames (control and data planes).
    Wire,
    /// Authenticating calls to the bootstrap and the nameserver.
    Services,
    /// Signing API tokens and sealing browser session cookies.
    Sessions,
}

impl Purpose {
    fn info(self) -> &'static [u8] {
        match self {
            Purpose::Wire => b"chat-system/v1/wire",
            Purpose::Services => b"chat-system/v1/services",
            Purpose::Sessions => b"chat-system/v1/sessions",
        }
    }
}

/// The keys of one purpose: the one that signs, and every one that verifies (the signing key
/// first, then the key derived from the previous secret while a rotation is under way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRing {
    signing: Key,
    verifying: Vec<Key>,
}

impl KeyRing {
    /// The key that signs or seals new values.
    pub fn signing(&self) -> &Key {
        &self.signing
    }

    /// Every key a received value may have been signed with, current first.
    pub fn verifying(&self) -> &[Key] {
        &self.verifying
    }
}

/// Why a secret file was refused. Each names the file, so a node that fails at start says
/// which file to fix.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file could not be read.
    #[error("cannot read the cluster secret {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no secret line.
    #[error("the cluster secret {path} is empty: it needs one line of 64 hex characters")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// More lines than the current and the previous secret.
    #[error(
        "the cluster secret {path} has {lines} lines; at most {MAX_LINES} (current, previous)"
    )]
    TooManyLines {
        /// The file.
        path: PathBuf,
        /// How many secret lines it has.
        lines: usize,
    },
    /// A line that is not 64 hex characters.
    #[error("the cluster secret {path}, line {line}: expected 64 hex characters (32 bytes)")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number in the file.
        line: usize,
    },
}

/// A loaded cluster secret: the current one and, during a rotation, the previous one.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret {
    current: [u8; SECRET_LEN],
    previous: Option<[u8; SECRET_LEN]>,
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterSecret")
            .field("rotating", &self.previous.is_some())
            .finish_non_exhaustive()
    }
}

impl ClusterSecret {
    /// Reads and validates a secret file.
    pub fn load(path: &Path) -> Result<Self, SecretError> {
        let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses a secret file's text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, SecretError> {
        let mut secrets = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let malformed = || SecretError::Malformed {
                path: path.to_owned(),
                line: index + 1,
            };
            let mut bytes = [0u8; SECRET_LEN];
            hex::decode_to_slice(line, &mut bytes).map_err(|_| malformed())?;
            secrets.push(bytes);
        }
        match secrets.as_slice() {
            [] => Err(SecretError::Empty {
                path: path.to_owned(),
            }),
            [current] => Ok(Self::from_parts(*current, None)),
            [current, previous] => Ok(Self::from_parts(*current, Some(*previous))),
            _ => Err(SecretError::TooManyLines {
                path: path.to_owned(),
                lines: secrets.len(),
            }),
        }
    }

    /// A secret from raw bytes (tests, and tools that already hold one).
    pub fn from_parts(current: [u8; SECRET_LEN], previous: Option<[u8; SECRET_LEN]>) -> Self {
        ClusterSecret { current, previous }
    }

    /// A fresh random secret as the file's text: one line of 64 hex characters.
    pub fn generate_file_text() -> String {
        let mut bytes = [0u8; SECRET_LEN];
        rand::rng().fill_bytes(&mut bytes);
        format!("{}\n", hex::encode(bytes))
    }

    /// Whether a previous secret is still accepted (a rotation is under way).
    pub fn is_rotating(&self) -> bool {
        self.previous.is_some()
    }

    /// The keys for one purpose, derived with HKDF-SHA256 from each accepted secret.
    pub fn keys(&self, purpose: Purpose) -> KeyRing {
        let signing = derive(&self.current, purpose);
        let mut verifying = vec![signing.clone()];
        verifying.extend(self.previous.iter().map(|old| derive(old, purpose)));
        KeyRing { signing, verifying }
    }
}

fn derive(secret: &[u8; SECRET_LEN], purpose: Purpose) -> Key {
    let mut key = [0u8; SECRET_LEN];
    Hkdf::<Sha256>::new(Some(b"chat-system cluster secret"), secret)
        .expand(purpose.info(), &mut key)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    Key(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    const B: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    fn parse(text: &str) -> Result<ClusterSecret, SecretError> {
        ClusterSecret::parse(text, Path::new("/etc/chat-system/cluster.key"))
    }

    #[test]
    fn one_line_signs_and_verifies_with_the_same_key() {
        let secret = parse(&format!("{A}\n")).unwrap();
        let ring = secret.keys(Purpose::Sessions);
        assert_eq!(ring.verifying(), std::slice::from_ref(ring.signing()));
        assert!(!secret.is_rotating());
    }

    #[test]
    fn two_lines_sign_with_the_first_and_accept_both() {
        let rotating = parse(&format!("{B}\n{A}\n")).unwrap();
        let old = parse(A).unwrap();
        let new = parse(B).unwrap();
        let ring = rotating.keys(Purpose::Wire);
        assert_eq!(ring.signing(), new.keys(Purpose::Wire).signing());
        assert_eq!(ring.verifying()[1], *old.keys(Purpose::Wire).signing());
        assert!(rotating.is_rotating());
    }

    #[test]
    fn purposes_get_independent_keys() {
        let secret = parse(A).unwrap();
        let wire = secret.keys(Purpose::Wire);
        let services = secret.keys(Purpose::Services);
        let sessions = secret.keys(Purpose::Sessions);
        assert_ne!(wire.signing(), services.signing());
        assert_ne!(services.signing(), sessions.signing());
        assert_ne!(wire.signing().expose(), &hex_bytes(A));
    }

    #[test]
    fn comments_and_blank_lines_are_ignored() {
        assert!(parse(&format!("# cluster secret\n\n  {A}  \n")).is_ok());
    }

    #[test]
    fn bad_files_are_refused_naming_the_file_and_line() {
        let short = parse("abcd").unwrap_err();
        assert!(
            matches!(short, SecretError::Malformed { line: 1, .. }),
            "{short}"
        );
        assert!(short.to_string().contains("/etc/chat-system/cluster.key"));
        let not_hex = parse(&format!("{A}\n{}", "z".repeat(64))).unwrap_err();
        assert!(matches!(not_hex, SecretError::Malformed { line: 2, .. }));
        assert!(matches!(
            parse("\n# nothing\n"),
            Err(SecretError::Empty { .. })
        ));
        assert!(matches!(
            parse(&format!("{A}\n{B}\n{A}\n")),
            Err(SecretError::TooManyLines { lines: 3, .. })
        ));
    }

    #[test]
    fn a_generated_file_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.key");
        std::fs::write(&path, ClusterSecret::generate_file_text()).unwrap();
        let first = ClusterSecret::load(&path).unwrap();
        std::fs::write(&path, ClusterSecret::generate_file_text()).unwrap();
        let second = ClusterSecret::load(&path).unwrap();
        assert_ne!(first, second, "two generated secrets differ");
    }

    #[test]
    fn a_missing_file_is_a_read_error() {
        let error = ClusterSecret::load(Path::new("/nonexistent/cluster.key")).unwrap_err();
        assert!(matches!(error, SecretError::Read { .. }));
    }

    fn hex_bytes(text: &str) -> [u8; SECRET_LEN] {
        let mut bytes = [0u8; SECRET_LEN];
        hex::decode_to_slice(text, &mut bytes).unwrap();
        bytes
    }
}
