//! Where secrets live, and which settings each one is fetched with.
//!
//! A guest names a secret (`PASSWORD`), or hands over a ciphertext. A name's [`SecretSource`] is a value, made
//! once when the settings are checked: today an env var's KMS ciphertext, and each new place a secret can live is
//! one more variant, fetched in one place ([`SecretGate::fetch`](super::SecretGate::fetch)).
//!
//! Per-secret settings (which keys may open it, which encryption context it carries) let ciphertexts made in
//! different ways live side by side in one function: the Lambda console's helpers stamp
//! `LambdaFunctionName=<function>`, the CLI stamps nothing. A setting is bound to the ciphertext itself (its
//! bytes), not to the name the guest uses: whatever way a guest hands the host that ciphertext, it gets that
//! ciphertext's settings, and no other ciphertext gets them. A guest therefore cannot apply one secret's context to
//! another.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use sha2::{Digest, Sha256};

use super::settings::SecretSettings;
use crate::settings::SettingError;

/// Where a named secret's value comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A KMS ciphertext blob: the base64 value of the guest env var that names the secret (today's only source).
    EnvCiphertext(Vec<u8>),
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::EnvCiphertext(blob) => write!(f, "EnvCiphertext({} bytes)", blob.len()),
        }
    }
}

/// The settings of one ciphertext, found by its bytes.
#[derive(Debug, Clone)]
pub(crate) struct Configured {
    /// The guest env var it came from, for the audit line.
    pub(crate) name: String,
    pub(crate) settings: SecretSettings,
    /// The origin the host injects it into requests to (`https://api.example.com`), if it does: such a secret is
    /// the host's alone, never handed to the guest.
    pub(crate) injected_into: Option<String>,
}

/// Who a secret is fetched for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum User {
    /// The guest: `kms.decrypt`, `keys.open`, and the fetches by name behind them.
    Guest,
    /// The host itself: prefetching, and injecting a secret into outgoing requests.
    Host,
}

/// Why a name is not a secret the host can fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unnamed {
    /// No guest env var has that name.
    NotAVariable,
    /// The variable holds no secret: its value is not base64 (the decoder's reason, which gives a position).
    NotASecret(String),
}

/// Every secret of a host: the source of each name, and the settings of each ciphertext by the SHA-256 of its
/// bytes.
#[derive(Debug, Clone, Default)]
pub(crate) struct SecretTable {
    sources: HashMap<String, Result<SecretSource, String>>,
    settings: HashMap<[u8; 32], Configured>,
}

impl SecretTable {
    /// The table of a guest env `guest_env` (a variable holding base64 is a KMS ciphertext; any other is plain
    /// configuration) with `secrets`' settings.
    ///
    /// # Errors
    /// A secret with settings whose value is not base64, or one ciphertext under two names with different settings:
    /// the ciphertext cannot follow both, and picking one would silently drop the other's stamp or keys.
    pub(crate) fn new(
        guest_env: &[(String, String)],
        secrets: &[(String, SecretSettings)],
    ) -> Result<Self, SettingError> {
        let mut table = Self::default();
        for (name, value) in guest_env {
            let source = keyward_base64::decode(value).map(SecretSource::EnvCiphertext).map_err(|e| e.to_string());
            table.sources.insert(name.clone(), source);
        }
        let configured = secrets.iter().map(|(name, settings)| (name, settings.clone(), true));
        // A variable without settings of its own that holds a configured ciphertext would be decrypted with that
        // ciphertext's settings, not the defaults it was given.
        let unconfigured = guest_env
            .iter()
            .filter(|(name, _)| !secrets.iter().any(|(n, _)| n == name))
            .map(|(name, _)| (name, SecretSettings::default(), false));
        for (name, settings, explicit) in configured.chain(unconfigured) {
            let blob = match table.sources.get(name) {
                Some(Ok(SecretSource::EnvCiphertext(blob))) => blob.clone(),
                Some(Err(reason)) if explicit => {
                    let reason =
                        format!("{name}'s value is not base64 ({reason}), so it cannot have settings of its own");
                    return Err(SettingError::new(settings.variable(name), reason));
                }
                // Plain configuration (or, checked before, a name that is no guest variable).
                _ => continue,
            };
            table.insert(&blob, name, settings).map_err(|other| {
                let reason = format!(
                    "secrets {other} and {name} hold the same ciphertext with different settings: give them the same \
                     settings, or keep one"
                );
                SettingError::new("KEYWARD_GUEST_ENV", reason)
            })?;
        }
        Ok(table)
    }

    /// Adds a ciphertext's settings; an error names the other secret holding it with other settings.
    fn insert(&mut self, ciphertext: &[u8], name: &str, mut settings: SecretSettings) -> Result<(), String> {
        // Keys are a set: the same keys listed in another order, or twice, are the same settings.
        settings.key_ids.sort();
        settings.key_ids.dedup();
        match self.settings.entry(Sha256::digest(ciphertext).into()) {
            Entry::Occupied(held) if held.get().settings != settings => Err(held.get().name.clone()),
            Entry::Occupied(_) => Ok(()),
            Entry::Vacant(slot) => {
                slot.insert(Configured { name: name.to_string(), settings, injected_into: None });
                Ok(())
            }
        }
    }

    /// Binds the secret `name` to injection into requests to `origin`: from now on its ciphertext is the host's
    /// alone. Returns where it lives.
    ///
    /// # Errors
    /// Why `name` is no secret ([`Unnamed`]), in words.
    pub(crate) fn inject(&mut self, name: &str, origin: &str) -> Result<SecretSource, String> {
        let source = match self.source(name) {
            Ok(source) => source.clone(),
            Err(Unnamed::NotAVariable) => return Err(format!("{name} is not in KEYWARD_GUEST_ENV")),
            Err(Unnamed::NotASecret(why)) => return Err(format!("{name}'s value is not base64 ({why})")),
        };
        let SecretSource::EnvCiphertext(blob) = &source;
        let digest: [u8; 32] = Sha256::digest(blob).into();
        // Every base64 guest variable has settings (its own, or the defaults) once the table is built.
        if let Some(configured) = self.settings.get_mut(&digest) {
            configured.injected_into = Some(origin.to_string());
        }
        Ok(source)
    }

    /// The settings of the ciphertext whose SHA-256 is `digest`, if it has any.
    pub(crate) fn settings(&self, digest: &[u8; 32]) -> Option<&Configured> {
        self.settings.get(digest)
    }

    /// Where the secret `name` lives.
    pub(crate) fn source(&self, name: &str) -> Result<&SecretSource, Unnamed> {
        match self.sources.get(name) {
            None => Err(Unnamed::NotAVariable),
            Some(Err(reason)) => Err(Unnamed::NotASecret(reason.clone())),
            Some(Ok(source)) => Ok(source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_a_ciphertext_plain_configuration_or_nothing() {
        let env = [("SECRET".to_string(), "Y3Q=".to_string()), ("PLAIN".to_string(), "not base64!".to_string())];
        let table = SecretTable::new(&env, &[]).unwrap();
        assert_eq!(table.source("SECRET"), Ok(&SecretSource::EnvCiphertext(b"ct".to_vec())));
        assert!(matches!(table.source("PLAIN"), Err(Unnamed::NotASecret(why)) if why.contains("invalid character")));
        assert_eq!(table.source("MISSING"), Err(Unnamed::NotAVariable));
        let digest: [u8; 32] = Sha256::digest(b"ct").into();
        assert_eq!(table.settings(&digest).map(|c| c.name.as_str()), Some("SECRET"));
        assert_eq!(format!("{:?}", table.source("SECRET").unwrap()), "EnvCiphertext(2 bytes)");
    }
}
