//! Secrets, wherever they live: the host's side of every door to a plaintext, free of wasmtime.
//!
//! ```text
//! named secret ─► SecretSource (a value: where it lives) ─┐
//! guest ciphertext ───────────────────────────────────────┤
//!                                                          ▼
//!          SecretGate: stamped context, per-secret settings, size limits, audit line
//!                                                          ▼
//!          PlaintextCache::get_or_fetch (TTL, stale on outage, single flight, refusals)
//!                                                          ▼
//!          KmsBackend: AWS KMS (crate::aws) | LocalKey | a test stub
//! ```
//!
//! - [`settings`]: every setting of secrets (stamped context, per-secret settings, cache, prefetch, the quota),
//!   parsed beside the struct, checked once into the [`source`] table.
//! - [`source`]: where each named secret lives, and the settings of each configured ciphertext.
//! - [`gate`]: the policy applied, once per host; [`Session`]: one invocation's uses of it, under its quota.
//! - [`cache`], and the backends: the trait below, the [`local`] key.

mod cache;
mod gate;
pub mod local;
pub mod sealed;
mod session;
pub mod settings;
pub mod source;
pub mod store;

use async_trait::async_trait;
use secrecy::SecretSlice;

use crate::context::EncryptionContext;

pub use cache::CacheUse;
pub(crate) use gate::SecretGate;
pub use gate::{DecryptRecord, PREFETCH_BUDGET, PrefetchError};
pub use local::LocalKey;
pub(crate) use session::{BeforeInvocation, Opened, Session};
pub(crate) use settings::CheckedSecrets;
pub use settings::{CacheSettings, SecretSettings, SecretsSettings};
pub use source::{ParameterId, SecretId, SecretSource, SecretVersion};
pub(crate) use source::{Unnamed, User};
pub use store::{Fetched, SecretStore};

/// Decrypted bytes. Zeroized on drop, and redacted in `Debug`; read with [`secrecy::ExposeSecret`].
pub type Plaintext = SecretSlice<u8>;

/// Why a decrypt failed, in the three kinds a guest can tell apart. Messages are for operators: they name keys,
/// key ids and context keys, never plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KmsError {
    /// A policy (the host's or the key's) refused the request.
    #[error("denied: {0}")]
    Denied(String),
    /// The ciphertext cannot be opened: malformed, tampered with, another key's, or another context's.
    #[error("invalid-ciphertext: {0}")]
    InvalidCiphertext(String),
    /// The key service failed or could not be reached; a later retry may work.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl KmsError {
    /// The WIT name of this kind of error.
    pub fn kind(&self) -> &'static str {
        match self {
            KmsError::Denied(_) => "denied",
            KmsError::InvalidCiphertext(_) => "invalid-ciphertext",
            KmsError::Unavailable(_) => "unavailable",
        }
    }

    /// The same kind of error, its reason led by what it is about (`sealed file cert.sealed`).
    pub(crate) fn about(self, what: impl std::fmt::Display) -> Self {
        match self {
            KmsError::Denied(why) => KmsError::Denied(format!("{what}: {why}")),
            KmsError::InvalidCiphertext(why) => KmsError::InvalidCiphertext(format!("{what}: {why}")),
            KmsError::Unavailable(why) => KmsError::Unavailable(format!("{what}: {why}")),
        }
    }
}

/// Lowercase hex of `bytes` (key ids, ciphertext ids, request ids).
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a backend returns: the plaintext and the id of the key that opened it (for the audit log).
#[derive(Debug)]
pub struct Decrypted {
    /// The secret.
    pub plaintext: Plaintext,
    /// The id of the key that decrypted it.
    pub key_id: String,
}

/// One decrypt, as the gate asks a backend for it: after the host's policy has been applied.
#[derive(Debug, Clone, Copy)]
pub struct DecryptRequest<'a> {
    /// The ciphertext, raw bytes.
    pub ciphertext: &'a [u8],
    /// The effective encryption context: the guest's pairs with the stamped ones merged.
    pub context: &'a EncryptionContext,
    /// The keys allowed for this ciphertext ([`SecretSettings::key_ids`]); `None`: the backend's own.
    pub key_ids: Option<&'a [String]>,
    /// For an asymmetric KMS key, the encryption algorithm ([`SecretSettings::algorithm`]).
    pub algorithm: Option<&'a str>,
}

impl<'a> DecryptRequest<'a> {
    /// A request with the backend's own keys and no algorithm.
    pub fn new(ciphertext: &'a [u8], context: &'a EncryptionContext) -> Self {
        Self { ciphertext, context, key_ids: None, algorithm: None }
    }
}

/// The services a host fetches secrets from: a key service for ciphertexts, and, for secrets kept by a service
/// (`KEYWARD_SOURCE_<NAME>`), a [`SecretStore`]. A key service alone converts into one (`Arc::new(key)`).
#[derive(Debug, Clone)]
pub struct Backends {
    /// Decrypts ciphertexts.
    pub kms: std::sync::Arc<dyn KmsBackend>,
    /// Fetches stored secrets; `None`: a host with none (building one that names some fails).
    pub store: Option<std::sync::Arc<dyn SecretStore>>,
}

impl Backends {
    /// These backends, with `store` for stored secrets.
    pub fn with_store(self, store: std::sync::Arc<dyn SecretStore>) -> Self {
        Self { store: Some(store), ..self }
    }
}

impl<T: KmsBackend + 'static> From<std::sync::Arc<T>> for Backends {
    fn from(kms: std::sync::Arc<T>) -> Self {
        Self { kms, store: None }
    }
}

impl From<std::sync::Arc<dyn KmsBackend>> for Backends {
    fn from(kms: std::sync::Arc<dyn KmsBackend>) -> Self {
        Self { kms, store: None }
    }
}

/// A service that decrypts ciphertexts bound to an encryption context: the local key, AWS KMS, or a test stub.
#[async_trait]
pub trait KmsBackend: Send + Sync + std::fmt::Debug {
    /// Decrypts as `request` says.
    ///
    /// # Errors
    /// A [`KmsError`] of the kind that matches the failure.
    async fn decrypt(&self, request: DecryptRequest<'_>) -> Result<Decrypted, KmsError>;

    /// Whether this is a local key (its ciphertexts are [`LocalKey`]'s), not KMS: a host refuses at start a sealed
    /// file its key service cannot open.
    fn is_local_key(&self) -> bool {
        false
    }
}
