//! The `keyward:lambda/keys` import: secrets a guest uses without holding them. Opening a handle fetches the
//! secret through the invocation's [`Session`] (the gate, cache, quota and audit of every secret) and keeps the
//! plaintext here, read as a [`Key`];
//! each operation runs in the host, counted against the invocation's quota, bounded in input and time, and audited
//! in one line (handle, key, operation, input length: never the input or the key). Handles live in the store's
//! resource table and die with the invocation.

pub mod key;
mod settings;

use secrecy::ExposeSecret as _;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

pub use key::{Key, KeyError};
pub use settings::KeysSettings;

use crate::bindings::keys::{self, Error, HmacAlgorithm, JwtAlgorithm, SignatureAlgorithm};
use crate::logging::AUDIT_TARGET;
use crate::mask;
use crate::sandbox::LimitExceeded;
use crate::secrets::source::Unnamed;
use crate::secrets::{KmsError, Session, User};
use key as key_ops;

/// A key handle's host side: the key, which KMS key opened it, and its plaintext kept in the log mask.
pub struct KeyHandle {
    key: Key,
    key_id: String,
    _held: mask::Held,
}

impl std::fmt::Debug for KeyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyHandle").field("key", &self.key).field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

/// One operation a guest asked of a key handle, as audited: never its input or the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOperationRecord {
    /// The handle, numbered within the invocation.
    pub handle: u32,
    /// The KMS key that decrypted the handle's secret (`-` when the backend does not say).
    pub key_id: String,
    /// `hmac sha256`, `sign ed25519`, `public-key`, `sign-jwt ES256`: the WIT's names.
    pub operation: String,
    /// The input's length in bytes (a JWT's header and claims together).
    pub input_len: usize,
    /// `Ok`, or the refusal as the guest got it: `key <kind>: <message>` (`key unsupported: ...`).
    pub outcome: Result<(), String>,
}

/// The capability's state in one store: its settings and the records of the operations asked for, whose count is
/// the quota's. The handles themselves live in the store's resource table, and die with it.
#[derive(Debug)]
pub(crate) struct Instance {
    settings: KeysSettings,
    records: Vec<KeyOperationRecord>,
}

impl Instance {
    pub(crate) fn new(settings: KeysSettings) -> Self {
        Self { settings, records: Vec::new() }
    }

    /// The invocation's records, taken when it ends.
    pub(crate) fn finish(&mut self) -> Vec<KeyOperationRecord> {
        std::mem::take(&mut self.records)
    }
}

/// What the import's calls reach: this capability's state, the invocation's secrets, the store's table.
pub(crate) struct View<'a> {
    keys: &'a mut Instance,
    secrets: &'a mut Session,
    table: &'a mut ResourceTable,
}

impl<'a> View<'a> {
    pub(crate) fn of(keys: &'a mut Instance, secrets: &'a mut Session, table: &'a mut ResourceTable) -> Self {
        Self { keys, secrets, table }
    }
}

struct Keys;

impl HasData for Keys {
    type Data<'a> = View<'a>;
}

/// Adds `keyward:lambda/keys` to `linker`, served from the [`View`] `get` makes of each store's state.
pub(crate) fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> View<'_>,
) -> wasmtime::Result<()> {
    keys::add_to_linker::<T, Keys>(linker, get)
}

impl View<'_> {
    /// Keeps a fetched secret as a handle.
    fn keep(
        &mut self,
        fetched: Result<crate::secrets::Opened, KmsError>,
    ) -> wasmtime::Result<Result<Resource<KeyHandle>, Error>> {
        let (plaintext, key_id) = match fetched {
            Ok(opened) => opened,
            Err(e) => return Ok(Err(from_kms(e))),
        };
        let bytes = plaintext.expose_secret();
        let handle = KeyHandle {
            key: Key::from_plaintext(bytes),
            key_id: key_id.unwrap_or_else(|| "-".into()),
            _held: mask::hold(bytes),
        };
        let kind = handle.key.kind_name();
        let resource = self.table.push(handle)?;
        tracing::info!(target: AUDIT_TARGET, handle = resource.rep(), kind, "key opened");
        Ok(Ok(resource))
    }

    /// Runs one operation on a handle: counted (one over the quota traps), the input bounded, the time checked,
    /// audited.
    fn operate<T>(
        &mut self,
        handle: &Resource<KeyHandle>,
        operation: &str,
        input_len: usize,
        run: impl FnOnce(&Key) -> Result<T, KeyError>,
    ) -> wasmtime::Result<Result<T, Error>> {
        let KeysSettings { max_operations: limit, max_input_bytes: max_input } = self.keys.settings;
        if self.keys.records.len() >= limit as usize {
            return Err(wasmtime::Error::new(LimitExceeded::KeyOperations { limit }));
        }
        let entry = self.table.get(handle)?;
        let (key_id, rep) = (entry.key_id.clone(), handle.rep());
        // Host-side work the guest asks for must not run past the invocation's time (the epoch deadline cannot
        // stop the host): an operation asked for after it is refused.
        let outcome = if self.secrets.deadline().is_none_or(|deadline| std::time::Instant::now() >= deadline) {
            Err(Error::Unavailable("the invocation's time is up".into()))
        } else if input_len > max_input {
            Err(Error::InvalidInput(format!(
                "the input is {input_len} bytes; a key operation takes at most {max_input}"
            )))
        } else {
            run(&entry.key).map_err(|e| match e {
                KeyError::Unsupported(m) => Error::Unsupported(m),
                KeyError::InvalidInput(m) => Error::InvalidInput(m),
            })
        };
        let refusal = outcome.as_ref().err().map(|e| format!("key {}: {}", error_kind(e), error_message(e)));
        match &refusal {
            None => {
                tracing::info!(target: AUDIT_TARGET, handle = rep, key_id, operation, input_len, outcome = "ok", "key operation")
            }
            Some(error) => {
                tracing::warn!(target: AUDIT_TARGET, handle = rep, key_id, operation, input_len, outcome = "refused", error, "key operation")
            }
        }
        let outcome_record = refusal.map_or(Ok(()), Err);
        let record =
            KeyOperationRecord { handle: rep, key_id, operation: operation.into(), input_len, outcome: outcome_record };
        self.keys.records.push(record);
        Ok(outcome)
    }
}

impl keys::Host for View<'_> {}

impl keys::HostKey for View<'_> {
    async fn open(
        &mut self,
        ciphertext: Vec<u8>,
        encryption_context: Vec<(String, String)>,
    ) -> wasmtime::Result<Result<Resource<KeyHandle>, Error>> {
        let fetched = self.secrets.decrypt(&ciphertext, encryption_context).await?;
        self.keep(fetched)
    }

    async fn open_env(&mut self, name: String) -> wasmtime::Result<Result<Resource<KeyHandle>, Error>> {
        let source = match self.secrets.source(&name) {
            Ok(source) => source,
            Err(unnamed @ Unnamed::NotAVariable) => return Ok(Err(Error::InvalidInput(unnamed.message(&name)))),
            Err(unnamed @ Unnamed::NotASecret(_)) => return Ok(Err(Error::InvalidCiphertext(unnamed.message(&name)))),
        };
        let fetched = self.secrets.fetch(&name, &source, User::Guest).await?;
        self.keep(fetched)
    }

    async fn hmac(
        &mut self,
        key: Resource<KeyHandle>,
        algorithm: HmacAlgorithm,
        message: Vec<u8>,
    ) -> wasmtime::Result<Result<Vec<u8>, Error>> {
        let algorithm = match algorithm {
            HmacAlgorithm::Sha256 => key_ops::HmacAlgorithm::Sha256,
            HmacAlgorithm::Sha384 => key_ops::HmacAlgorithm::Sha384,
            HmacAlgorithm::Sha512 => key_ops::HmacAlgorithm::Sha512,
        };
        self.operate(&key, &format!("hmac {}", algorithm.name()), message.len(), |k| k.hmac(algorithm, &message))
    }

    async fn sign(
        &mut self,
        key: Resource<KeyHandle>,
        algorithm: SignatureAlgorithm,
        message: Vec<u8>,
    ) -> wasmtime::Result<Result<Vec<u8>, Error>> {
        use key_ops::SignatureAlgorithm as A;
        let algorithm = match algorithm {
            SignatureAlgorithm::Ed25519 => A::Ed25519,
            SignatureAlgorithm::EcdsaP256Sha256 => A::EcdsaP256Sha256,
            SignatureAlgorithm::EcdsaP256Sha256Der => A::EcdsaP256Sha256Der,
            SignatureAlgorithm::RsaPkcs1Sha256 => A::RsaPkcs1Sha256,
            SignatureAlgorithm::RsaPkcs1Sha384 => A::RsaPkcs1Sha384,
            SignatureAlgorithm::RsaPkcs1Sha512 => A::RsaPkcs1Sha512,
            SignatureAlgorithm::RsaPssSha256 => A::RsaPssSha256,
            SignatureAlgorithm::RsaPssSha384 => A::RsaPssSha384,
            SignatureAlgorithm::RsaPssSha512 => A::RsaPssSha512,
        };
        self.operate(&key, &format!("sign {}", algorithm.name()), message.len(), |k| k.sign(algorithm, &message))
    }

    async fn public_key(&mut self, key: Resource<KeyHandle>) -> wasmtime::Result<Result<Vec<u8>, Error>> {
        self.operate(&key, "public-key", 0, Key::public_key)
    }

    async fn sign_jwt(
        &mut self,
        key: Resource<KeyHandle>,
        algorithm: JwtAlgorithm,
        header: String,
        claims: String,
    ) -> wasmtime::Result<Result<String, Error>> {
        use key_ops::JwtAlgorithm as J;
        let algorithm = match algorithm {
            JwtAlgorithm::Hs256 => J::Hs256,
            JwtAlgorithm::Hs384 => J::Hs384,
            JwtAlgorithm::Hs512 => J::Hs512,
            JwtAlgorithm::Es256 => J::Es256,
            JwtAlgorithm::Rs256 => J::Rs256,
            JwtAlgorithm::Rs384 => J::Rs384,
            JwtAlgorithm::Rs512 => J::Rs512,
            JwtAlgorithm::Ps256 => J::Ps256,
            JwtAlgorithm::Ps384 => J::Ps384,
            JwtAlgorithm::Ps512 => J::Ps512,
            JwtAlgorithm::Eddsa => J::EdDsa,
        };
        let operation = format!("sign-jwt {}", algorithm.name());
        self.operate(&key, &operation, header.len() + claims.len(), |k| k.sign_jwt(algorithm, &header, &claims))
    }

    async fn drop(&mut self, key: Resource<KeyHandle>) -> wasmtime::Result<()> {
        self.table.delete(key)?;
        Ok(())
    }
}

/// The WIT case of a refusal, as the guest SDK names it.
fn error_kind(error: &Error) -> &'static str {
    match error {
        Error::Denied(_) => "denied",
        Error::InvalidCiphertext(_) => "invalid-ciphertext",
        Error::Unavailable(_) => "unavailable",
        Error::Unsupported(_) => "unsupported",
        Error::InvalidInput(_) => "invalid-input",
    }
}

fn error_message(error: &Error) -> &str {
    match error {
        Error::Denied(m)
        | Error::InvalidCiphertext(m)
        | Error::Unavailable(m)
        | Error::Unsupported(m)
        | Error::InvalidInput(m) => m,
    }
}

fn from_kms(error: KmsError) -> Error {
    match error {
        KmsError::Denied(m) => Error::Denied(m),
        KmsError::InvalidCiphertext(m) => Error::InvalidCiphertext(m),
        KmsError::Unavailable(m) => Error::Unavailable(m),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use base64::Engine as _;
    use keys::HostKey as _;

    use super::*;
    use crate::EncryptionContext;
    use crate::secrets::{LocalKey, SecretGate, SecretsSettings};

    /// The capability on its own, as a guest's calls reach it (no component, no store): handles opened by name or
    /// ciphertext through the invocation's session (whose quota `kms.decrypt` shares), the operation quota, the
    /// input bound, and a record of each operation that never holds its input.
    #[tokio::test]
    async fn serves_handles_under_the_quotas_and_bounds() {
        let key = Arc::new(LocalKey::generate().unwrap());
        let ciphertext = key.encrypt(b"an-hmac-secret-of-sixteen-bytes+", &EncryptionContext::new()).unwrap();
        let encoded = base64::engine::general_purpose::STANDARD.encode(&ciphertext);
        let env = vec![("MAC_KEY".to_string(), encoded), ("PLAIN".to_string(), "not base64!".to_string())];
        let settings = SecretsSettings { max_decrypt_calls: 2, ..SecretsSettings::default() };
        let gate = Arc::new(SecretGate::new(key, settings.check(&env.into()).unwrap()));
        let mut session = gate.session();
        let mut instance = Instance::new(KeysSettings { max_operations: 2, max_input_bytes: 8 });
        let mut table = ResourceTable::new();
        session.start(Instant::now() + Duration::from_secs(5));
        let mut view = View::of(&mut instance, &mut session, &mut table);

        let missing = view.open_env("NOPE".into()).await.unwrap().unwrap_err();
        assert!(
            matches!(&missing, Error::InvalidInput(m) if m.contains("not one of the guest's secrets")),
            "{missing:?}"
        );
        let plain = view.open_env("PLAIN".into()).await.unwrap().unwrap_err();
        assert!(
            matches!(&plain, Error::InvalidCiphertext(m) if m.starts_with("env var PLAIN is not base64")),
            "{plain:?}"
        );
        let rep = view.open_env("MAC_KEY".into()).await.unwrap().unwrap().rep();
        let handle = || Resource::<KeyHandle>::new_borrow(rep);

        let mac = view.hmac(handle(), HmacAlgorithm::Sha256, b"12345678".to_vec()).await.unwrap().unwrap();
        assert_eq!(mac.len(), 32);
        let long = view.hmac(handle(), HmacAlgorithm::Sha256, vec![0; 9]).await.unwrap().unwrap_err();
        assert!(
            matches!(&long, Error::InvalidInput(m) if m == "the input is 9 bytes; a key operation takes at most 8")
        );
        let over = view.hmac(handle(), HmacAlgorithm::Sha256, Vec::new()).await.unwrap_err();
        assert_eq!(over.downcast_ref::<LimitExceeded>(), Some(&LimitExceeded::KeyOperations { limit: 2 }));

        // Names that are no secret cost no quota; the opening above did, and one more by ciphertext takes the last.
        assert!(view.open(ciphertext.clone(), Vec::new()).await.unwrap().is_ok());
        let over = view.open(ciphertext, Vec::new()).await.unwrap_err();
        assert_eq!(over.downcast_ref::<LimitExceeded>(), Some(&LimitExceeded::DecryptCalls { limit: 2 }));

        let records = instance.finish();
        let seen: Vec<_> = records.iter().map(|r| (r.operation.as_str(), r.input_len, r.outcome.is_ok())).collect();
        assert_eq!(seen, [("hmac sha256", 8, true), ("hmac sha256", 9, false)]);
        assert_eq!(session.finish().len(), 2);
    }
}
