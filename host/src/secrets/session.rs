//! One invocation's use of the gate, shared by the `kms` and `keys` capabilities: the secrets it may ask for (one
//! quota for decrypts and key handles opened), the deadline they must come by, and the record of each.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use super::source::{SecretSource, Unnamed, User};
use super::{DecryptRecord, KmsError, Plaintext, SecretGate};
use crate::sandbox::LimitExceeded;

/// A guest's call for a secret before its invocation started: the guest's fault, a trap.
#[derive(Debug, thiserror::Error)]
#[error(
    "the guest asked for a secret before its invocation started (in a start function): secrets are handed out only \
     while the guest handles an invocation"
)]
pub(crate) struct BeforeInvocation;

/// A secret fetched for the invocation: the plaintext, and the key that opened it (for the audit of its use).
pub(crate) type Opened = (Plaintext, Option<String>);

/// One invocation's secrets. Until it starts ([`Session::start`]: a start function of the guest's runs as its
/// instance is made, maybe ahead of the invocation) a call traps: secrets are handed out only within an
/// invocation, audited with its request id.
///
/// Clones share the invocation's ledger (its deadline, quota and records): the `kms` and `keys` imports use it from
/// the store, and outgoing HTTP from the tasks that send its requests, which outlive a borrow of the store.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    gate: Arc<SecretGate>,
    ledger: Arc<Mutex<Ledger>>,
}

#[derive(Debug, Default)]
struct Ledger {
    /// When the key service must have answered, leaving the guest time to handle an `unavailable`; `None` until the
    /// invocation starts.
    deadline: Option<Instant>,
    /// Secrets asked for and admitted under the quota; each is recorded once it is answered.
    admitted: u32,
    records: Vec<DecryptRecord>,
}

impl Session {
    pub(crate) fn new(gate: Arc<SecretGate>) -> Self {
        Self { gate, ledger: Arc::default() }
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The invocation starts: the guest may ask, and the key service must have answered by `deadline`.
    pub(crate) fn start(&self, deadline: Instant) {
        self.ledger().deadline = Some(deadline);
    }

    /// When the key service, and any host-side work a guest asks for, must be done; `None` before the invocation.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.ledger().deadline
    }

    /// The record of every secret asked for, taken out.
    pub(crate) fn finish(&self) -> Vec<DecryptRecord> {
        std::mem::take(&mut self.ledger().records)
    }

    /// Where the secret `name` lives.
    pub(crate) fn source(&self, name: &str) -> Result<SecretSource, Unnamed> {
        self.gate.source(name).cloned()
    }

    /// Decrypts a ciphertext the guest handed over, under `encryption_context` and the gate's policy.
    ///
    /// # Errors
    /// A trap: before the invocation, or over the quota (a guest looping on secrets must not get to carry on).
    pub(crate) async fn decrypt(
        &self,
        ciphertext: &[u8],
        encryption_context: Vec<(String, String)>,
    ) -> wasmtime::Result<Result<Opened, KmsError>> {
        let deadline = self.admit()?;
        let (result, record) = self.gate.decrypt(ciphertext, encryption_context, Some(deadline)).await;
        Ok(self.record(result, record))
    }

    /// Fetches the secret `name` from where it lives (`source`), for `user`.
    ///
    /// # Errors
    /// As [`Session::decrypt`].
    pub(crate) async fn fetch(
        &self,
        name: &str,
        source: &SecretSource,
        user: User,
    ) -> wasmtime::Result<Result<Opened, KmsError>> {
        let deadline = self.admit()?;
        let (result, record) = self.gate.fetch(name, source, Some(deadline), user).await;
        Ok(self.record(result, record))
    }

    /// The deadline of one more secret, if the invocation has started and has quota left.
    fn admit(&self) -> wasmtime::Result<Instant> {
        let mut ledger = self.ledger();
        let Some(deadline) = ledger.deadline else {
            return Err(wasmtime::Error::new(BeforeInvocation));
        };
        let limit = self.gate.max_decrypt_calls();
        if ledger.admitted >= limit {
            return Err(wasmtime::Error::new(LimitExceeded::DecryptCalls { limit }));
        }
        ledger.admitted += 1;
        Ok(deadline)
    }

    fn record(&self, result: Result<Plaintext, KmsError>, record: DecryptRecord) -> Result<Opened, KmsError> {
        let key_id = record.key_id.clone();
        self.ledger().records.push(record);
        result.map(|plaintext| (plaintext, key_id))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use base64::Engine as _;
    use secrecy::ExposeSecret as _;

    use super::*;
    use crate::EncryptionContext;
    use crate::secrets::{LocalKey, SecretsSettings};

    /// The quota counts decrypts and named fetches together; a refused name costs nothing; nothing before the
    /// invocation starts.
    #[tokio::test]
    async fn one_quota_for_every_secret_asked_for() {
        let key = Arc::new(LocalKey::generate().unwrap());
        let ciphertext = key.encrypt(b"s3cret-session", &EncryptionContext::new()).unwrap();
        let env = vec![
            ("SECRET".to_string(), base64::engine::general_purpose::STANDARD.encode(&ciphertext)),
            ("PLAIN".into(), "hi!".into()),
        ];
        let settings = SecretsSettings { max_decrypt_calls: 2, ..SecretsSettings::default() };
        let gate = Arc::new(SecretGate::new(key, settings.check(&env.into()).unwrap()));
        let session = gate.session();

        let early = session.decrypt(&ciphertext, Vec::new()).await.unwrap_err();
        assert!(early.downcast_ref::<BeforeInvocation>().is_some(), "{early}");
        session.start(Instant::now() + Duration::from_secs(5));

        assert_eq!(
            session.source("PLAIN").unwrap_err(),
            Unnamed::NotASecret("invalid character '!' at offset 2".into())
        );
        assert_eq!(session.source("NONE").unwrap_err(), Unnamed::NotAVariable);
        let source = session.source("SECRET").unwrap();
        let (plaintext, _) = session.fetch("SECRET", &source, User::Guest).await.unwrap().unwrap();
        assert_eq!(plaintext.expose_secret(), b"s3cret-session");
        assert!(session.decrypt(&ciphertext, Vec::new()).await.unwrap().is_ok());
        let over = session.fetch("SECRET", &source, User::Guest).await.unwrap_err();
        assert_eq!(over.downcast_ref::<LimitExceeded>(), Some(&LimitExceeded::DecryptCalls { limit: 2 }));
        assert_eq!(session.finish().len(), 2, "the trapped call is not recorded");
    }
}
