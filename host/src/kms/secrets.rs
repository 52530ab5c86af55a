//! Per-secret settings: an operator can say, for a guest env var that holds a ciphertext, which keys may open it
//! and which encryption context it carries, so that ciphertexts made in different ways (the Lambda console's
//! helpers stamp `LambdaFunctionName=<function>`, the CLI stamps nothing) live side by side in one function.
//!
//! A setting is bound to the ciphertext itself (its bytes, as the env var holds them), not to the name the guest
//! uses: whatever way a guest hands the host that ciphertext, it gets that ciphertext's settings, and no other
//! ciphertext gets them. A guest therefore cannot apply one secret's context to another.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use sha2::{Digest, Sha256};

use crate::context::EncryptionContext;

/// The encryption algorithms of asymmetric KMS keys that can decrypt (KMS's `EncryptionAlgorithmSpec`, less the
/// symmetric default).
pub const ASYMMETRIC_ALGORITHMS: &[&str] = &["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256", "SM2PKE"];

/// How one configured secret is decrypted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretSettings {
    /// Keys allowed to open it (ids, ARNs or aliases); empty: the backend's keys.
    pub key_ids: Vec<String>,
    /// Pairs stamped onto its decrypts instead of the host-wide stamp; `None`: the host-wide stamp.
    pub stamped_context: Option<EncryptionContext>,
    /// For a secret under an asymmetric KMS key: the encryption algorithm (one of [`ASYMMETRIC_ALGORITHMS`]). KMS
    /// takes no encryption context for those, so none is stamped and a guest may give none.
    pub algorithm: Option<String>,
}

/// The settings of one ciphertext, found by its bytes.
#[derive(Debug, Clone)]
pub(crate) struct Configured {
    /// The guest env var it came from, for the audit line.
    pub(crate) name: String,
    pub(crate) settings: SecretSettings,
}

/// Every configured ciphertext, by the SHA-256 of its bytes.
#[derive(Debug, Clone, Default)]
pub(crate) struct SecretTable(HashMap<[u8; 32], Configured>);

impl SecretTable {
    /// Adds a ciphertext's settings.
    ///
    /// # Errors
    /// The name of another secret holding the same ciphertext with other settings: the ciphertext cannot follow
    /// both, and picking one would silently drop the other's stamp or keys.
    pub(crate) fn insert(&mut self, ciphertext: &[u8], name: &str, mut settings: SecretSettings) -> Result<(), String> {
        // Keys are a set: the same keys listed in another order, or twice, are the same settings.
        settings.key_ids.sort();
        settings.key_ids.dedup();
        match self.0.entry(Sha256::digest(ciphertext).into()) {
            Entry::Occupied(held) if held.get().settings != settings => Err(held.get().name.clone()),
            Entry::Occupied(_) => Ok(()),
            Entry::Vacant(slot) => {
                slot.insert(Configured { name: name.to_string(), settings });
                Ok(())
            }
        }
    }

    pub(crate) fn get(&self, digest: &[u8; 32]) -> Option<&Configured> {
        self.0.get(digest)
    }
}
