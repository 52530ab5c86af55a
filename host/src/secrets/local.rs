//! The built-in local key: AES-256-GCM under a 256-bit key kept in a file, for development, tests and demos
//! without an AWS account.
//!
//! Ciphertext format, version 1 (all of the header is authenticated):
//!
//! ```text
//! offset  size  field
//! 0       3     magic "kwl"
//! 3       1     version (1)
//! 4       8     key id: the first 8 bytes of SHA-256("keyward local key id v1" || key)
//! 12      12    nonce (random)
//! 24      n+16  AES-256-GCM ciphertext and tag of the plaintext; associated data = bytes 0..12 || context
//! ```
//! where `context` is [`EncryptionContext::canonical_bytes`].
//!
//! The key file holds the 32 key bytes in base64 on one line.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use async_trait::async_trait;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{DecryptRequest, Decrypted, KmsBackend, KmsError, Plaintext, hex};
use crate::context::EncryptionContext;

const MAGIC: &[u8; 3] = b"kwl";
const VERSION: u8 = 1;
const KEY_ID_LEN: usize = 8;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = MAGIC.len() + 1 + KEY_ID_LEN;
/// Shortest possible ciphertext: header, nonce and tag around an empty plaintext.
pub const MIN_CIPHERTEXT_LEN: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;

/// Problems with a key file, or with making randomness.
#[derive(Debug, thiserror::Error)]
pub enum LocalKeyError {
    /// The key file could not be read or written.
    #[error("key file {path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said (in the message, not as a `source`, so it is printed once).
        error: std::io::Error,
    },
    /// The key file exists and would be overwritten.
    #[error("key file {0} already exists; refusing to overwrite a key (ciphertexts made with it would be lost)")]
    Exists(PathBuf),
    /// The key file does not hold a base64 256-bit key.
    #[error("key file {path} is not a keyward local key: {reason} (`keyward keygen --out FILE` makes one)")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong, without the file's content.
        reason: String,
    },
    /// The OS random source failed.
    #[error("the system random source failed: {0}")]
    Random(String),
    /// The plaintext could not be encrypted (AES-GCM's length limit).
    #[error("encryption failed: plaintext too long")]
    Encrypt,
}

/// A 256-bit AES-GCM key and its id. Zeroized on drop; `Debug` shows only the id.
pub struct LocalKey {
    cipher: Aes256Gcm,
    id: [u8; KEY_ID_LEN],
}

impl LocalKey {
    /// A new random key.
    ///
    /// # Errors
    /// [`LocalKeyError::Random`] if the OS random source fails.
    pub fn generate() -> Result<Self, LocalKeyError> {
        let bytes = random_key_bytes()?;
        Ok(Self::from_bytes(&bytes))
    }

    /// The key with these bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"keyward local key id v1");
        hasher.update(bytes);
        let digest = hasher.finalize();
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        Self { cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(bytes)), id }
    }

    /// Whether `ciphertext` is one of a local key's (it begins as they do), not a KMS ciphertext blob.
    pub fn is_ciphertext(ciphertext: &[u8]) -> bool {
        ciphertext.starts_with(MAGIC)
    }

    /// Reads a key file.
    ///
    /// # Errors
    /// [`LocalKeyError::Io`] or [`LocalKeyError::Format`]; messages never quote the file's content.
    pub fn load(path: &Path) -> Result<Self, LocalKeyError> {
        let raw = Zeroizing::new(std::fs::read(path).map_err(|error| LocalKeyError::Io { path: path.into(), error })?);
        let format = |reason: String| LocalKeyError::Format { path: path.into(), reason };
        let text = crate::text::utf8(&raw).map_err(|e| format(e.to_string()))?;
        let bytes =
            Zeroizing::new(keyward_base64::decode(text).map_err(|_| format("expected one line of base64".into()))?);
        let key: &[u8; 32] =
            bytes.as_slice().try_into().map_err(|_| format(format!("expected 32 bytes, found {}", bytes.len())))?;
        Ok(Self::from_bytes(key))
    }

    /// Writes a new key to `path` (readable by its owner only), refusing to overwrite an existing file.
    ///
    /// # Errors
    /// [`LocalKeyError::Exists`], [`LocalKeyError::Io`] or [`LocalKeyError::Random`].
    pub fn generate_file(path: &Path) -> Result<Self, LocalKeyError> {
        let bytes = random_key_bytes()?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let io = |error: std::io::Error| LocalKeyError::Io { path: path.into(), error };
        let mut file = options.open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => LocalKeyError::Exists(path.into()),
            _ => io(e),
        })?;
        let line = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(bytes.as_slice()) + "\n");
        file.write_all(line.as_bytes()).and_then(|()| file.sync_all()).map_err(io)?;
        Ok(Self::from_bytes(&bytes))
    }

    /// The key id, 16 hex digits.
    pub fn id(&self) -> String {
        hex(&self.id)
    }

    /// Encrypts `plaintext` bound to `context`.
    ///
    /// # Errors
    /// [`LocalKeyError::Random`] if no nonce can be made, [`LocalKeyError::Encrypt`] for an over-long plaintext.
    pub fn encrypt(&self, plaintext: &[u8], context: &EncryptionContext) -> Result<Vec<u8>, LocalKeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| LocalKeyError::Random(e.to_string()))?;
        let mut out = Vec::with_capacity(MIN_CIPHERTEXT_LEN + plaintext.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.id);
        let aad = associated_data(&out, context);
        out.extend_from_slice(&nonce);
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad: &aad })
            .map_err(|_| LocalKeyError::Encrypt)?;
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Decrypts a ciphertext made by [`LocalKey::encrypt`] under the same `context`.
    ///
    /// # Errors
    /// [`KmsError::InvalidCiphertext`] for anything malformed, truncated, tampered with, made under another key or
    /// bound to another context.
    pub fn decrypt(&self, ciphertext: &[u8], context: &EncryptionContext) -> Result<Plaintext, KmsError> {
        let invalid = |msg: String| KmsError::InvalidCiphertext(msg);
        if ciphertext.len() < MIN_CIPHERTEXT_LEN {
            return Err(invalid(format!(
                "{} bytes is too short for a keyward local ciphertext (at least {MIN_CIPHERTEXT_LEN})",
                ciphertext.len()
            )));
        }
        let (header, rest) = ciphertext.split_at(HEADER_LEN);
        if &header[..MAGIC.len()] != MAGIC {
            return Err(invalid("not a keyward local ciphertext (bad magic bytes)".into()));
        }
        if header[MAGIC.len()] != VERSION {
            return Err(invalid(format!("unsupported local ciphertext version {}", header[MAGIC.len()])));
        }
        let key_id = &header[MAGIC.len() + 1..];
        if key_id != self.id {
            return Err(invalid(format!(
                "ciphertext was made under local key {}, but this host holds key {}",
                hex(key_id),
                self.id()
            )));
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let aad = associated_data(header, context);
        let plaintext =
            self.cipher.decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad: &aad }).map_err(|_| {
                invalid(format!(
                    "authentication failed: the ciphertext was altered, or it is bound to another encryption context \
                 than the one given (context keys: [{}])",
                    context.keys().collect::<Vec<_>>().join(", ")
                ))
            })?;
        Ok(Plaintext::from(plaintext))
    }
}

fn random_key_bytes() -> Result<Zeroizing<[u8; 32]>, LocalKeyError> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    getrandom::fill(bytes.as_mut()).map_err(|e| LocalKeyError::Random(e.to_string()))?;
    Ok(bytes)
}

fn associated_data(header: &[u8], context: &EncryptionContext) -> Vec<u8> {
    let mut aad = header.to_vec();
    aad.extend_from_slice(&context.canonical_bytes());
    aad
}

impl fmt::Debug for LocalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKey").field("id", &self.id()).finish_non_exhaustive()
    }
}

#[async_trait]
impl KmsBackend for LocalKey {
    /// The local key is the only key there is: key ids and algorithms do not apply to it.
    async fn decrypt(&self, request: DecryptRequest<'_>) -> Result<Decrypted, KmsError> {
        let plaintext = LocalKey::decrypt(self, request.ciphertext, request.context)?;
        Ok(Decrypted { plaintext, key_id: format!("local:{}", self.id()) })
    }

    fn is_local_key(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    fn ctx(pairs: &[(&str, &str)]) -> EncryptionContext {
        EncryptionContext::from_pairs(pairs.iter().copied()).expect("valid context")
    }

    #[test]
    fn round_trip() {
        let key = LocalKey::generate().unwrap();
        let c = ctx(&[("function", "hello")]);
        let ct = key.encrypt(b"hunter2", &c).unwrap();
        assert_eq!(key.decrypt(&ct, &c).unwrap().expose_secret(), b"hunter2");
        assert_eq!(ct.len(), MIN_CIPHERTEXT_LEN + 7);
    }

    #[test]
    fn wrong_key_names_both_key_ids() {
        let (a, b) = (LocalKey::generate().unwrap(), LocalKey::generate().unwrap());
        let ct = a.encrypt(b"s3cret-value", &EncryptionContext::new()).unwrap();
        let err = b.decrypt(&ct, &EncryptionContext::new()).unwrap_err();
        let KmsError::InvalidCiphertext(msg) = &err else { panic!("expected invalid-ciphertext, got {err:?}") };
        assert!(msg.contains(&a.id()) && msg.contains(&b.id()), "{msg}");
    }

    #[test]
    fn wrong_context_fails_authentication_without_echoing_values() {
        let key = LocalKey::generate().unwrap();
        let ct = key.encrypt(b"s3cret-value", &ctx(&[("function", "hello")])).unwrap();
        for other in [ctx(&[]), ctx(&[("function", "other-fn")]), ctx(&[("function", "hello"), ("x", "y")])] {
            let err = key.decrypt(&ct, &other).unwrap_err();
            assert!(matches!(err, KmsError::InvalidCiphertext(_)), "{err:?}");
            assert!(!err.to_string().contains("other-fn"));
        }
    }

    #[test]
    fn every_flipped_bit_and_every_truncation_is_refused() {
        let key = LocalKey::generate().unwrap();
        let c = ctx(&[("a", "b")]);
        let ct = key.encrypt(b"s3cret-value", &c).unwrap();
        for i in 0..ct.len() {
            for bit in 0..8 {
                let mut bad = ct.clone();
                bad[i] ^= 1 << bit;
                let err = key.decrypt(&bad, &c).unwrap_err();
                assert!(matches!(err, KmsError::InvalidCiphertext(_)), "byte {i} bit {bit}: {err:?}");
            }
        }
        for len in 0..ct.len() {
            let err = key.decrypt(&ct[..len], &c).unwrap_err();
            assert!(matches!(err, KmsError::InvalidCiphertext(_)), "length {len}");
            assert!(!err.to_string().contains("s3cret"));
        }
    }

    #[test]
    fn key_files_round_trip_and_are_not_overwritten() {
        let dir = std::env::temp_dir().join(format!("keyward-key-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("local.key");
        let _ = std::fs::remove_file(&path);
        let made = LocalKey::generate_file(&path).unwrap();
        assert_eq!(LocalKey::load(&path).unwrap().id(), made.id());
        assert!(matches!(LocalKey::generate_file(&path), Err(LocalKeyError::Exists(_))));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        std::fs::write(&path, "bm90IGEga2V5\n").unwrap();
        let err = LocalKey::load(&path).unwrap_err().to_string();
        assert!(err.contains("expected 32 bytes, found 9 (`keyward keygen --out FILE` makes one)"), "{err}");
        std::fs::write(&path, "%%%").unwrap();
        assert!(LocalKey::load(&path).unwrap_err().to_string().contains("base64"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn debug_shows_only_the_id() {
        let key = LocalKey::from_bytes(&[7u8; 32]);
        assert_eq!(format!("{key:?}"), format!("LocalKey {{ id: {:?}, .. }}", key.id()));
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn context() -> impl Strategy<Value = EncryptionContext> {
            proptest::collection::btree_map("[a-z]{1,8}", ".{0,16}", 0..4)
                .prop_map(|pairs| EncryptionContext::from_pairs(pairs).unwrap())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Whatever bytes arrive, the parser answers `invalid-ciphertext` or the plaintext, and never panics.
            #[test]
            fn any_bytes_are_refused_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..200), ctx in context()) {
                let key = LocalKey::from_bytes(&[7; 32]);
                prop_assert!(matches!(key.decrypt(&bytes, &ctx), Err(KmsError::InvalidCiphertext(_))));
            }

            /// A ciphertext opens under its own context only, and any change of a byte, or a cut, is refused.
            #[test]
            fn only_the_exact_ciphertext_and_context_open(
                plaintext in proptest::collection::vec(any::<u8>(), 0..64),
                ctx in context(),
                other in context(),
                flip in any::<prop::sample::Index>(),
                cut in any::<prop::sample::Index>(),
            ) {
                let key = LocalKey::from_bytes(&[9; 32]);
                let ciphertext = key.encrypt(&plaintext, &ctx).unwrap();
                let opened = key.decrypt(&ciphertext, &ctx).unwrap();
                prop_assert_eq!(opened.expose_secret(), plaintext.as_slice());
                if other != ctx {
                    prop_assert!(key.decrypt(&ciphertext, &other).is_err());
                }
                let mut flipped = ciphertext.clone();
                flipped[flip.index(ciphertext.len())] ^= 0x01;
                prop_assert!(key.decrypt(&flipped, &ctx).is_err());
                prop_assert!(key.decrypt(&ciphertext[..cut.index(ciphertext.len())], &ctx).is_err());
            }
        }
    }
}
