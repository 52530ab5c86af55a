//! The plaintext cache: one KMS call serves many invocations. Keyed by a digest of the ciphertext and the
//! effective encryption context; entries live for a TTL, the number of entries is bounded, and every plaintext
//! is zeroized when its entry is evicted or expires.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use secrecy::ExposeSecret as _;
use sha2::{Digest, Sha256};

use super::Plaintext;
use crate::context::EncryptionContext;

/// Default time an entry is served: `KEYWARD_CACHE_TTL_SECS`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// Default number of entries kept.
pub const DEFAULT_MAX_ENTRIES: usize = 256;

type CacheKey = [u8; 32];

struct Entry {
    plaintext: Plaintext,
    key_id: String,
    stored: Instant,
}

/// A bounded TTL cache of plaintexts.
pub struct PlaintextCache {
    ttl: Duration,
    max_entries: usize,
    entries: Mutex<HashMap<CacheKey, Entry>>,
}

impl std::fmt::Debug for PlaintextCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlaintextCache").field("ttl", &self.ttl).field("max_entries", &self.max_entries).finish()
    }
}

impl PlaintextCache {
    /// A cache serving entries for `ttl`, holding at most `max_entries` (at least one).
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        Self { ttl, max_entries: max_entries.max(1), entries: Mutex::default() }
    }

    /// The plaintext and key id stored for this ciphertext and context, if younger than the TTL.
    pub fn get(&self, ciphertext: &[u8], context: &EncryptionContext) -> Option<(Plaintext, String)> {
        let key = cache_key(ciphertext, context);
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        match entries.get(&key) {
            Some(entry) if entry.stored.elapsed() < self.ttl => {
                Some((Plaintext::from(entry.plaintext.expose_secret().to_vec()), entry.key_id.clone()))
            }
            Some(_) => {
                entries.remove(&key); // expired: dropped, and so zeroized
                None
            }
            None => None,
        }
    }

    /// Stores a plaintext, evicting expired entries and then the oldest ones to stay within bounds.
    pub fn insert(&self, ciphertext: &[u8], context: &EncryptionContext, plaintext: &Plaintext, key_id: &str) {
        let key = cache_key(ciphertext, context);
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.max_entries && !entries.contains_key(&key) {
            entries.retain(|_, entry| entry.stored.elapsed() < self.ttl);
            while entries.len() >= self.max_entries {
                let Some(oldest) = entries.iter().min_by_key(|(_, entry)| entry.stored).map(|(k, _)| *k) else {
                    break;
                };
                entries.remove(&oldest);
            }
        }
        let entry = Entry {
            plaintext: Plaintext::from(plaintext.expose_secret().to_vec()),
            key_id: key_id.to_string(),
            stored: Instant::now(),
        };
        entries.insert(key, entry);
    }

    /// Number of entries held (expired ones included until they are evicted).
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// SHA-256 over the ciphertext and the canonical context, each length-prefixed: the cache never holds
/// ciphertexts, and two requests share an entry only if both match.
fn cache_key(ciphertext: &[u8], context: &EncryptionContext) -> CacheKey {
    let mut hasher = Sha256::new();
    hasher.update((ciphertext.len() as u64).to_be_bytes());
    hasher.update(ciphertext);
    hasher.update(context.canonical_bytes());
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(pairs: &[(&str, &str)]) -> EncryptionContext {
        EncryptionContext::from_pairs(pairs.iter().copied()).unwrap()
    }

    fn secret(s: &str) -> Plaintext {
        Plaintext::from(s.as_bytes().to_vec())
    }

    #[test]
    fn hits_only_for_the_same_ciphertext_and_context() {
        let cache = PlaintextCache::new(DEFAULT_TTL, 8);
        cache.insert(b"ct", &ctx(&[("a", "1")]), &secret("pw"), "key-1");
        let (plaintext, key_id) = cache.get(b"ct", &ctx(&[("a", "1")])).unwrap();
        assert_eq!(plaintext.expose_secret(), b"pw");
        assert_eq!(key_id, "key-1");
        assert!(cache.get(b"ct", &ctx(&[("a", "2")])).is_none());
        assert!(cache.get(b"ct", &ctx(&[])).is_none());
        assert!(cache.get(b"other", &ctx(&[("a", "1")])).is_none());
    }

    #[test]
    fn entries_expire() {
        let cache = PlaintextCache::new(Duration::from_millis(30), 8);
        cache.insert(b"ct", &ctx(&[]), &secret("pw"), "k");
        assert!(cache.get(b"ct", &ctx(&[])).is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert!(cache.get(b"ct", &ctx(&[])).is_none());
        assert!(cache.is_empty(), "an expired entry is dropped when found");
    }

    #[test]
    fn the_oldest_entry_is_evicted_when_full() {
        let cache = PlaintextCache::new(DEFAULT_TTL, 2);
        for ct in [b"c1", b"c2", b"c3"] {
            cache.insert(ct, &ctx(&[]), &secret("pw"), "k");
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(cache.len(), 2);
        assert!(cache.get(b"c1", &ctx(&[])).is_none());
        assert!(cache.get(b"c2", &ctx(&[])).is_some() && cache.get(b"c3", &ctx(&[])).is_some());
    }
}
