//! The `kms` capability's settings, in one place: what a host's policy is, its defaults (in the `Default`
//! impls below, one block each), and the one check of it. The gate is built from it once per host; each
//! invocation's capability takes its quota from it. The CLI's flags and Lambda mode's `KEYWARD_*` variables are
//! parsers into it, nothing more.
//!
//! The cache is off by default for a library host (a process that runs a guest once gains nothing from it); Lambda
//! mode turns it on ([`CacheSettings::LAMBDA_TTL`]), since one warm environment serves many invocations.

use std::time::Duration;

use super::secrets::{ASYMMETRIC_ALGORITHMS, SecretSettings, SecretTable};
use crate::context::EncryptionContext;

/// Every setting of the `kms` capability (see the module docs for the defaults and where each is set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsPolicy {
    /// Pairs merged into every decrypt a guest makes; a guest that gives a stamped key another value is `denied`.
    pub stamped_context: EncryptionContext,
    /// Settings of their own for the ciphertexts in some guest env vars (by name): keys, stamped context,
    /// algorithm. A setting follows the ciphertext's bytes, however the guest hands them over.
    pub secrets: Vec<(String, SecretSettings)>,
    /// `kms.decrypt` calls one invocation may make; one more traps.
    pub max_decrypt_calls: u32,
    /// Largest ciphertext a guest may hand over (AWS KMS's own are at most 6 KiB).
    pub max_ciphertext_bytes: usize,
    /// The plaintext cache.
    pub cache: CacheSettings,
    /// Guest env vars whose ciphertexts are decrypted when the host starts, so that first invocations hit the cache.
    pub prefetch: Vec<String>,
    /// Operations (HMAC, signature, JWT, public key) on key handles one invocation may ask for; one more traps.
    /// Opening a handle is a decrypt, counted in [`max_decrypt_calls`](Self::max_decrypt_calls).
    pub max_key_operations: u32,
    /// Largest input of one key operation (a message, or a JWT's header and claims together).
    pub max_key_input_bytes: usize,
    /// Whether a guest may be handed plaintext at all (import `keyward:lambda/kms`).
    pub guest_plaintext: GuestPlaintext,
}

/// Whether guests may import `keyward:lambda/kms`, the plaintext capability.
///
/// [`Deny`](Self::Deny) lets an operator guarantee that no plaintext enters the sandbox: only components whose
/// imports are those of the `sealed-handler` world load (secrets used through `keys` handles, which never return
/// key bytes); a component importing `kms` is refused at load, naming the import. Parsed from `allow` or `deny`
/// (any case).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GuestPlaintext {
    /// Guests may decrypt (`kms.decrypt`) and use handles.
    #[default]
    Allow,
    /// Guests may use handles only.
    Deny,
}

impl std::str::FromStr for GuestPlaintext {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "allow" => Ok(Self::Allow),
            "deny" => Ok(Self::Deny),
            _ => Err(format!("{:?} is neither allow nor deny", value.trim())),
        }
    }
}

impl Default for KmsPolicy {
    fn default() -> Self {
        Self {
            stamped_context: EncryptionContext::new(),
            secrets: Vec::new(),
            max_decrypt_calls: 32,
            max_ciphertext_bytes: 64 * 1024,
            cache: CacheSettings::default(),
            prefetch: Vec::new(),
            max_key_operations: 256,
            max_key_input_bytes: 1 << 20,
            guest_plaintext: GuestPlaintext::Allow,
        }
    }
}

/// How the plaintext cache serves repeats (see [`PlaintextCache`](super::PlaintextCache)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    /// How long a decrypted secret is served; zero disables the cache.
    pub ttl: Duration,
    /// How long past its TTL a secret is still served while the key service is unavailable (never when it refuses);
    /// zero serves nothing stale.
    pub stale: Duration,
    /// Most plaintexts held (a quarter as many remembered refusals are held besides).
    pub max_entries: usize,
}

impl CacheSettings {
    /// The TTL Lambda mode defaults to.
    pub const LAMBDA_TTL: Duration = Duration::from_secs(300);
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self { ttl: Duration::ZERO, stale: Duration::from_secs(3600), max_entries: 256 }
    }
}

/// A policy that cannot work, naming the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Prefetching fills the cache, which is off.
    #[error("prefetching needs the plaintext cache, but its TTL is 0")]
    PrefetchWithoutCache,
    /// A setting names a guest env var the guest does not get.
    #[error("{setting} names {name}, which is not one of the guest's env vars")]
    NotAGuestVariable {
        /// Which setting.
        setting: &'static str,
        /// The name it gives.
        name: String,
    },
    /// A configured secret's value is not base64.
    #[error("secret {name}: its value is not base64: {reason}")]
    NotBase64 {
        /// The guest env var.
        name: String,
        /// Where, and what.
        reason: String,
    },
    /// An algorithm that is not one of an asymmetric key's.
    #[error("secret {name}: {algorithm:?} is not an asymmetric KMS encryption algorithm ({known})", known = ASYMMETRIC_ALGORITHMS.join(", "))]
    UnknownAlgorithm {
        /// The guest env var.
        name: String,
        /// The algorithm given.
        algorithm: String,
    },
    /// An asymmetric key takes no encryption context.
    #[error(
        "secret {name}: an asymmetric KMS key takes no encryption context, and {algorithm} is an asymmetric algorithm: give it no context"
    )]
    ContextForAsymmetricKey {
        /// The guest env var.
        name: String,
        /// The algorithm given.
        algorithm: String,
    },
    /// Two secrets hold the same ciphertext with different settings.
    #[error(
        "secrets {first} and {second} hold the same ciphertext with different settings: give them the same settings, or keep one"
    )]
    OneCiphertextTwoSettings {
        /// The guest env var configured first.
        first: String,
        /// The other.
        second: String,
    },
    /// No cache entry could be held.
    #[error("the cache must hold at least one entry")]
    EmptyCache,
}

impl KmsPolicy {
    /// Checks the policy against the guest's environment, and returns its secrets' ciphertexts with their settings.
    ///
    /// # Errors
    /// The first [`PolicyError`].
    pub(crate) fn check(&self, guest_env: &[(String, String)]) -> Result<SecretTable, PolicyError> {
        // (The table is the check's by-product: the gate keeps it.)
        let value = |setting, name: &String| {
            guest_env
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v)
                .ok_or_else(|| PolicyError::NotAGuestVariable { setting, name: name.clone() })
        };
        if self.cache.max_entries == 0 {
            return Err(PolicyError::EmptyCache);
        }
        if !self.prefetch.is_empty() && self.cache.ttl.is_zero() {
            return Err(PolicyError::PrefetchWithoutCache);
        }
        for name in &self.prefetch {
            value("prefetching", name)?;
        }
        let mut table = SecretTable::default();
        for (name, settings) in &self.secrets {
            if let Some(algorithm) = &settings.algorithm {
                let named = || (name.clone(), algorithm.clone());
                if !ASYMMETRIC_ALGORITHMS.contains(&algorithm.as_str()) {
                    let (name, algorithm) = named();
                    return Err(PolicyError::UnknownAlgorithm { name, algorithm });
                }
                if settings.stamped_context.as_ref().is_some_and(|c| !c.is_empty()) {
                    let (name, algorithm) = named();
                    return Err(PolicyError::ContextForAsymmetricKey { name, algorithm });
                }
            }
            let ciphertext = keyward_base64::decode(value("per-secret settings", name)?)
                .map_err(|e| PolicyError::NotBase64 { name: name.clone(), reason: e.to_string() })?;
            table
                .insert(&ciphertext, name, settings.clone())
                .map_err(|other| PolicyError::OneCiphertextTwoSettings { first: other, second: name.clone() })?;
        }
        // A guest variable without settings of its own that holds a configured ciphertext would be decrypted with
        // that ciphertext's settings, not the defaults it was given. (Values that are not base64 are not
        // ciphertexts: plain configuration.)
        for (name, value) in guest_env.iter().filter(|(name, _)| !self.secrets.iter().any(|(n, _)| n == name)) {
            let Ok(ciphertext) = keyward_base64::decode(value) else { continue };
            if let Err(other) = table.insert(&ciphertext, name, SecretSettings::default()) {
                return Err(PolicyError::OneCiphertextTwoSettings { first: other, second: name.clone() });
            }
        }
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn each_mistake_is_named() {
        let guest = env(&[("P", "Y3Q="), ("NOT_B64", "%%"), ("P_AGAIN", "Y3Q=")]);
        let cached = CacheSettings { ttl: Duration::from_secs(60), ..CacheSettings::default() };
        let secret =
            |settings: SecretSettings| KmsPolicy { secrets: vec![("P".into(), settings)], ..KmsPolicy::default() };
        let cases = [
            (KmsPolicy { prefetch: vec!["P".into()], ..KmsPolicy::default() }, PolicyError::PrefetchWithoutCache),
            (
                KmsPolicy { prefetch: vec!["Q".into()], cache: cached, ..KmsPolicy::default() },
                PolicyError::NotAGuestVariable { setting: "prefetching", name: "Q".into() },
            ),
            (
                secret(SecretSettings { algorithm: Some("RSA".into()), ..SecretSettings::default() }),
                PolicyError::UnknownAlgorithm { name: "P".into(), algorithm: "RSA".into() },
            ),
            (
                secret(SecretSettings {
                    algorithm: Some("RSAES_OAEP_SHA_256".into()),
                    stamped_context: Some(EncryptionContext::from_pairs([("a", "b")]).unwrap()),
                    ..SecretSettings::default()
                }),
                PolicyError::ContextForAsymmetricKey { name: "P".into(), algorithm: "RSAES_OAEP_SHA_256".into() },
            ),
            (
                KmsPolicy { secrets: vec![("NOT_B64".into(), SecretSettings::default())], ..KmsPolicy::default() },
                PolicyError::NotBase64 { name: "NOT_B64".into(), reason: "invalid character '%' at offset 0".into() },
            ),
            (
                KmsPolicy {
                    secrets: vec![
                        ("P".into(), SecretSettings::default()),
                        (
                            "P_AGAIN".into(),
                            SecretSettings { key_ids: vec!["alias/other".into()], ..SecretSettings::default() },
                        ),
                    ],
                    ..KmsPolicy::default()
                },
                PolicyError::OneCiphertextTwoSettings { first: "P".into(), second: "P_AGAIN".into() },
            ),
            (
                // P_AGAIN has no settings of its own: it would be decrypted with P's, not the defaults.
                secret(SecretSettings { key_ids: vec!["alias/other".into()], ..SecretSettings::default() }),
                PolicyError::OneCiphertextTwoSettings { first: "P".into(), second: "P_AGAIN".into() },
            ),
            (
                KmsPolicy { cache: CacheSettings { max_entries: 0, ..cached }, ..KmsPolicy::default() },
                PolicyError::EmptyCache,
            ),
        ];
        for (policy, expected) in cases {
            assert_eq!(policy.check(&guest).unwrap_err(), expected);
        }
        assert!(KmsPolicy::default().check(&guest).is_ok());
        let same = KmsPolicy {
            secrets: vec![("P".into(), SecretSettings::default()), ("P_AGAIN".into(), SecretSettings::default())],
            ..KmsPolicy::default()
        };
        assert!(same.check(&guest).is_ok(), "one ciphertext under two names with the same settings is fine");
        let keys = |keys: &[&str]| SecretSettings {
            key_ids: keys.iter().map(|k| k.to_string()).collect(),
            ..SecretSettings::default()
        };
        let same_keys = KmsPolicy {
            secrets: vec![("P".into(), keys(&["a", "b"])), ("P_AGAIN".into(), keys(&["b", "a", "b"]))],
            ..KmsPolicy::default()
        };
        assert!(same_keys.check(&guest).is_ok(), "the same keys in another order are the same settings");
    }
}
