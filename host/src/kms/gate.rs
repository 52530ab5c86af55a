//! The host's policy in front of a backend: size limits, context stamping, the plaintext cache, the deadline,
//! and one audit line per call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::cache::PlaintextCache;
use super::{Decrypted, KmsBackend, KmsError, Plaintext, hex};
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
    /// Whether the plaintext cache answered.
    pub cache: CacheUse,
    /// Time spent in the cache and the backend.
    pub latency: Duration,
}

/// What the plaintext cache did for one decrypt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    /// No cache is configured, or the request was refused before reaching it.
    Off,
    /// Served from the cache: no call to the key service.
    Hit,
    /// Not in the cache: the key service was called.
    Miss,
}

impl CacheUse {
    fn as_str(self) -> &'static str {
        match self {
            CacheUse::Off => "off",
            CacheUse::Hit => "hit",
            CacheUse::Miss => "miss",
        }
    }
}

/// Applies the host's decrypt policy, then asks the cache, then the backend.
#[derive(Debug, Clone)]
pub struct KmsGate {
    backend: Arc<dyn KmsBackend>,
    stamped: EncryptionContext,
    cache: Option<Arc<PlaintextCache>>,
}

impl KmsGate {
    /// A gate stamping `stamped` onto every request it passes to `backend`, without a cache.
    pub fn new(backend: Arc<dyn KmsBackend>, stamped: EncryptionContext) -> Self {
        Self { backend, stamped, cache: None }
    }

    /// The same gate, serving repeated requests from `cache`.
    pub fn with_cache(mut self, cache: Arc<PlaintextCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Whether repeated requests are served from a cache.
    pub fn has_cache(&self) -> bool {
        self.cache.is_some()
    }

    /// The pairs stamped onto every request.
    pub fn stamped(&self) -> &EncryptionContext {
        &self.stamped
    }

    /// Decrypts for a guest: checks sizes, merges the stamped context (a contradiction is `denied`), answers from
    /// the cache or calls the backend (giving up at `deadline` with `unavailable`), and writes one audit line.
    /// Returns the outcome and its record.
    pub async fn decrypt(
        &self,
        ciphertext: &[u8],
        guest_context: Vec<(String, String)>,
        deadline: Option<Instant>,
    ) -> (Result<Plaintext, KmsError>, DecryptRecord) {
        let ciphertext_id = hex(&Sha256::digest(ciphertext)[..8]);
        let context = EncryptionContext::from_pairs(guest_context)
            .and_then(|guest| guest.stamped_with(&self.stamped))
            .map_err(|e| KmsError::Denied(e.to_string()));
        let started = Instant::now();
        let mut cache = CacheUse::Off;
        let result = match &context {
            _ if ciphertext.len() > MAX_CIPHERTEXT_BYTES => Err(KmsError::InvalidCiphertext(format!(
                "ciphertext is {} bytes; the limit is {MAX_CIPHERTEXT_BYTES}",
                ciphertext.len()
            ))),
            Err(e) => Err(e.clone()),
            Ok(context) => match self.cache.as_deref().map(|c| (c, c.get(ciphertext, context))) {
                Some((_, Some((plaintext, key_id)))) => {
                    cache = CacheUse::Hit;
                    Ok(Decrypted { plaintext, key_id })
                }
                Some((store, None)) => {
                    cache = CacheUse::Miss;
                    let result = self.call_backend(ciphertext, context, deadline).await;
                    if let Ok(decrypted) = &result {
                        store.insert(ciphertext, context, &decrypted.plaintext, &decrypted.key_id);
                    }
                    result
                }
                None => self.call_backend(ciphertext, context, deadline).await,
            },
        };
        let record = DecryptRecord {
            ciphertext_id,
            context: context.ok(),
            key_id: result.as_ref().ok().map(|d| d.key_id.clone()),
            outcome: result.as_ref().map(|_| ()).map_err(Clone::clone),
            cache,
            latency: started.elapsed(),
        };
        audit(&record);
        (result.map(|d| d.plaintext), record)
    }

    async fn call_backend(
        &self,
        ciphertext: &[u8],
        context: &EncryptionContext,
        deadline: Option<Instant>,
    ) -> Result<Decrypted, KmsError> {
        let call = self.backend.decrypt(ciphertext, context);
        match deadline {
            None => call.await,
            Some(deadline) => tokio::time::timeout_at(deadline.into(), call).await.unwrap_or_else(|_| {
                Err(KmsError::Unavailable("the key service did not answer before the invocation's deadline".into()))
            }),
        }
    }
}

/// One line per decrypt on the `keyward::audit` target, inside the invocation's span (which carries the request
/// id). Context values are logged (they are not secret, and an operator needs them to match a key policy);
/// plaintext never is.
fn audit(record: &DecryptRecord) {
    let context = record.context.as_ref().map(ToString::to_string).unwrap_or_default();
    let key_id = record.key_id.as_deref().unwrap_or("-");
    let latency_us = u64::try_from(record.latency.as_micros()).unwrap_or(u64::MAX);
    let cache = record.cache.as_str();
    match &record.outcome {
        Ok(()) => tracing::info!(
            target: "keyward::audit", ciphertext_id = %record.ciphertext_id, key_id, context, cache, latency_us,
            outcome = "ok", "kms decrypt"
        ),
        Err(e) => tracing::warn!(
            target: "keyward::audit", ciphertext_id = %record.ciphertext_id, key_id, context, cache, latency_us,
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
        let (result, record) = gate.decrypt(&ct, pairs(&[("purpose", "db")]), None).await;
        assert_eq!(result.unwrap().expose_secret(), b"pw");
        assert_eq!(record.context, Some(full));
        assert_eq!(record.key_id, Some(format!("local:{}", key.id())));
    }

    #[tokio::test]
    async fn contradicting_a_stamp_is_denied_before_the_backend() {
        let (key, gate) = gate(&[("function", "hello")]);
        let ct = key.encrypt(b"pw", &EncryptionContext::from_pairs([("function", "evil")]).unwrap()).unwrap();
        let (result, record) = gate.decrypt(&ct, pairs(&[("function", "evil")]), None).await;
        assert!(matches!(result, Err(KmsError::Denied(ref m)) if m.contains("stamped")), "{result:?}");
        assert_eq!(record.context, None);
    }

    #[tokio::test]
    async fn oversized_ciphertexts_are_refused() {
        let (_, gate) = gate(&[]);
        let (result, _) = gate.decrypt(&vec![0u8; MAX_CIPHERTEXT_BYTES + 1], vec![], None).await;
        assert!(matches!(result, Err(KmsError::InvalidCiphertext(ref m)) if m.contains("limit")), "{result:?}");
    }

    /// A backend that counts calls and can be made slow or failing.
    #[derive(Debug, Default)]
    struct Scripted {
        calls: std::sync::atomic::AtomicUsize,
        delay: Duration,
        fail: std::sync::atomic::AtomicBool,
    }

    #[async_trait::async_trait]
    impl KmsBackend for Scripted {
        async fn decrypt(&self, _: &[u8], _: &EncryptionContext) -> Result<Decrypted, KmsError> {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(KmsError::Unavailable("scripted outage".into()));
            }
            Ok(Decrypted { plaintext: Plaintext::from(b"pw".to_vec()), key_id: "scripted".into() })
        }
    }

    #[tokio::test]
    async fn the_cache_serves_repeats_and_outlives_an_outage() {
        let backend = Arc::new(Scripted::default());
        let cache = Arc::new(PlaintextCache::new(Duration::from_secs(60), 8));
        let gate = KmsGate::new(backend.clone(), EncryptionContext::new()).with_cache(cache);
        let (first, record) = gate.decrypt(b"ct", vec![], None).await;
        assert!(first.is_ok());
        assert_eq!(record.cache, CacheUse::Miss);
        backend.fail.store(true, std::sync::atomic::Ordering::SeqCst);
        for _ in 0..5 {
            let (again, record) = gate.decrypt(b"ct", vec![], None).await;
            assert_eq!(again.unwrap().expose_secret(), b"pw");
            assert_eq!(record.cache, CacheUse::Hit);
        }
        assert_eq!(backend.calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Another context is another entry: the outage shows.
        let (other, record) = gate.decrypt(b"ct", pairs(&[("a", "b")]), None).await;
        assert!(matches!(other, Err(KmsError::Unavailable(_))));
        assert_eq!(record.cache, CacheUse::Miss);
    }

    #[tokio::test]
    async fn a_slow_backend_is_abandoned_at_the_deadline() {
        let backend = Arc::new(Scripted { delay: Duration::from_secs(5), ..Scripted::default() });
        let gate = KmsGate::new(backend, EncryptionContext::new());
        let started = Instant::now();
        let (result, _) = gate.decrypt(b"ct", vec![], Some(Instant::now() + Duration::from_millis(50))).await;
        assert!(matches!(result, Err(KmsError::Unavailable(ref m)) if m.contains("deadline")), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
