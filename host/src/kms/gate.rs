//! The host's policy in front of a backend: size limits, context stamping, and one audit line per call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{KmsBackend, KmsError, Plaintext};
use crate::context::EncryptionContext;

/// Largest ciphertext a guest may hand over (AWS KMS's own ciphertexts are at most 6 KiB).
pub const MAX_CIPHERTEXT_BYTES: usize = 64 * 1024;

/// What the host remembers of one decrypt: enough to audit and to assert on, never the plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecryptRecord {
    /// First 8 bytes of the ciphertext's SHA-256, in hex: names a ciphertext without revealing anything.
    pub ciphertext_id: String,
    /// The context the decrypt ran under (guest pairs plus stamped pairs); `None` if the guest's was refused.
    pub context: Option<EncryptionContext>,
    /// The key that opened the ciphertext, when it opened.
    pub key_id: Option<String>,
    /// `Ok` or the error's WIT kind.
    pub outcome: Result<(), KmsError>,
    /// Time spent in the backend.
    pub latency: Duration,
}

/// Applies the host's decrypt policy, then asks the backend.
#[derive(Debug, Clone)]
pub struct KmsGate {
    backend: Arc<dyn KmsBackend>,
    stamped: EncryptionContext,
}

impl KmsGate {
    /// A gate stamping `stamped` onto every request it passes to `backend`.
    pub fn new(backend: Arc<dyn KmsBackend>, stamped: EncryptionContext) -> Self {
        Self { backend, stamped }
    }

    /// The pairs stamped onto every request.
    pub fn stamped(&self) -> &EncryptionContext {
        &self.stamped
    }

    /// Decrypts for a guest: checks sizes, merges the stamped context (a contradiction is `denied`), calls the
    /// backend, and writes one audit line. Returns the outcome and its record.
    pub async fn decrypt(
        &self,
        ciphertext: &[u8],
        guest_context: Vec<(String, String)>,
    ) -> (Result<Plaintext, KmsError>, DecryptRecord) {
        let ciphertext_id = Sha256::digest(ciphertext)[..8].iter().map(|b| format!("{b:02x}")).collect::<String>();
        let context = EncryptionContext::from_pairs(guest_context)
            .and_then(|guest| guest.stamped_with(&self.stamped))
            .map_err(|e| KmsError::Denied(e.to_string()));
        let started = Instant::now();
        let result = match &context {
            _ if ciphertext.len() > MAX_CIPHERTEXT_BYTES => Err(KmsError::InvalidCiphertext(format!(
                "ciphertext is {} bytes; the limit is {MAX_CIPHERTEXT_BYTES}",
                ciphertext.len()
            ))),
            Err(e) => Err(e.clone()),
            Ok(context) => self.backend.decrypt(ciphertext, context).await,
        };
        let record = DecryptRecord {
            ciphertext_id,
            context: context.ok(),
            key_id: result.as_ref().ok().map(|d| d.key_id.clone()),
            outcome: result.as_ref().map(|_| ()).map_err(Clone::clone),
            latency: started.elapsed(),
        };
        audit(&record);
        (result.map(|d| d.plaintext), record)
    }
}

/// One line per decrypt on the `keyward::audit` target, inside the invocation's span (which carries the request
/// id). Context values are logged (they are not secret, and an operator needs them to match a key policy);
/// plaintext never is.
fn audit(record: &DecryptRecord) {
    let context = record.context.as_ref().map(ToString::to_string).unwrap_or_default();
    let key_id = record.key_id.as_deref().unwrap_or("-");
    let latency_us = u64::try_from(record.latency.as_micros()).unwrap_or(u64::MAX);
    match &record.outcome {
        Ok(()) => tracing::info!(
            target: "keyward::audit", ciphertext_id = %record.ciphertext_id, key_id, context, latency_us,
            outcome = "ok", "kms decrypt"
        ),
        Err(e) => tracing::warn!(
            target: "keyward::audit", ciphertext_id = %record.ciphertext_id, key_id, context, latency_us,
            outcome = e.kind(), error = %e, "kms decrypt"
        ),
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;
    use crate::kms::LocalKey;

    fn gate(stamped: &[(&str, &str)]) -> (Arc<LocalKey>, KmsGate) {
        let key = Arc::new(LocalKey::generate().unwrap());
        let stamped = EncryptionContext::from_pairs(stamped.iter().copied()).unwrap();
        (key.clone(), KmsGate::new(key, stamped))
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[tokio::test]
    async fn stamped_pairs_are_merged_into_the_guest_request() {
        let (key, gate) = gate(&[("function", "hello")]);
        let full = EncryptionContext::from_pairs([("function", "hello"), ("purpose", "db")]).unwrap();
        let ct = key.encrypt(b"pw", &full).unwrap();
        let (result, record) = gate.decrypt(&ct, pairs(&[("purpose", "db")])).await;
        assert_eq!(result.unwrap().expose_secret(), b"pw");
        assert_eq!(record.context, Some(full));
        assert_eq!(record.key_id, Some(format!("local:{}", key.id())));
    }

    #[tokio::test]
    async fn contradicting_a_stamp_is_denied_before_the_backend() {
        let (key, gate) = gate(&[("function", "hello")]);
        let ct = key.encrypt(b"pw", &EncryptionContext::from_pairs([("function", "evil")]).unwrap()).unwrap();
        let (result, record) = gate.decrypt(&ct, pairs(&[("function", "evil")])).await;
        assert!(matches!(result, Err(KmsError::Denied(ref m)) if m.contains("stamped")), "{result:?}");
        assert_eq!(record.context, None);
    }

    #[tokio::test]
    async fn oversized_ciphertexts_are_refused() {
        let (_, gate) = gate(&[]);
        let (result, _) = gate.decrypt(&vec![0u8; MAX_CIPHERTEXT_BYTES + 1], vec![]).await;
        assert!(matches!(result, Err(KmsError::InvalidCiphertext(ref m)) if m.contains("limit")), "{result:?}");
    }
}
