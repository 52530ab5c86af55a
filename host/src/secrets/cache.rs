//! The plaintext cache: one KMS call serves many invocations. It owns its rules, behind one call,
//! [`PlaintextCache::get_or_fetch`]: the gate asks it for a secret and says how to fetch one it lacks.
//!
//! Entries are keyed by a digest of the ciphertext and the effective encryption context, and are of two kinds:
//! - a **plaintext**, served for the TTL; past it, for a bounded grace window more, but only while the key service
//!   is unavailable (serve stale on outage, never on refusal: the gate drops it when KMS refuses);
//! - a **refusal** (`invalid-ciphertext`), answered from memory for the TTL, so a bad ciphertext does not cost a
//!   KMS call per invocation. `denied` is never cached: permissions get fixed.
//!
//! Both kinds are bounded in number, each on its own (so refusals, which a guest can make up at will, never evict
//! a plaintext), and every plaintext is zeroized when it is dropped.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use secrecy::ExposeSecret as _;
use sha2::{Digest, Sha256};

use super::{Decrypted, KmsError, Plaintext};
use crate::context::EncryptionContext;
use crate::mask;

/// Longest the key service is given to refresh a stale plaintext before the stale one is served: an outage must
/// not eat the invocation's time.
pub const STALE_REFRESH_BUDGET: Duration = Duration::from_secs(1);

/// After a failed refresh of a stale plaintext, how long it is served without asking the key service again: an
/// outage costs one slow KMS attempt per interval, not one per invocation, and adds no load to a throttled key.
pub const STALE_RETRY_INTERVAL: Duration = Duration::from_secs(5);

/// What an entry is found by: a digest of what was asked for ([`CacheKey::of_ciphertext`]), never the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey([u8; 32]);

impl CacheKey {
    /// SHA-256 over the ciphertext and the canonical context, each length-prefixed: the cache never holds
    /// ciphertexts, and two requests share an entry only if both match.
    pub(crate) fn of_ciphertext(ciphertext: &[u8], context: &EncryptionContext) -> Self {
        let mut hasher = Sha256::new();
        hasher.update((ciphertext.len() as u64).to_be_bytes());
        hasher.update(ciphertext);
        hasher.update(context.canonical_bytes());
        Self(hasher.finalize().into())
    }
}

impl CacheKey {
    /// SHA-256 over a stored secret's source (`secretsmanager:prod/db#password`), apart from every ciphertext's.
    pub(crate) fn of_source(source: &str) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"source\0");
        hasher.update(source.as_bytes());
        Self(hasher.finalize().into())
    }
}

/// What the plaintext cache did for one decrypt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    /// No cache is configured, or the request was refused before reaching it.
    Off,
    /// Served from the cache (a plaintext, or a remembered `invalid-ciphertext`): no call to the key service.
    Hit,
    /// Not in the cache: the key service was called.
    Miss,
    /// The key service was unavailable, and the last plaintext was served past its TTL, within the grace window.
    Stale,
}

impl CacheUse {
    /// The audit line's word for it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CacheUse::Off => "off",
            CacheUse::Hit => "hit",
            CacheUse::Miss => "miss",
            CacheUse::Stale => "stale",
        }
    }
}

/// What one pass through the cache (and the key service behind it) gave.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) result: Result<Decrypted, KmsError>,
    pub(crate) cache: CacheUse,
    /// When a stale plaintext was served: why the key service could not refresh it.
    pub(crate) stale_because: Option<KmsError>,
}

impl Answer {
    pub(crate) fn new(result: Result<Decrypted, KmsError>, cache: CacheUse) -> Self {
        Self { result, cache, stale_because: None }
    }

    fn stale(decrypted: Decrypted, why: KmsError) -> Self {
        Self { result: Ok(decrypted), cache: CacheUse::Stale, stale_because: Some(why) }
    }
}

struct Stored {
    plaintext: Plaintext,
    /// Keeps the plaintext in the set every host log line is masked with, while it is cached.
    _held: mask::Held,
    key_id: String,
    stored: Instant,
    /// Set when a refresh failed: until then, the stale plaintext is served without a refresh.
    retry_after: Option<Instant>,
}

struct Refusal {
    error: KmsError,
    stored: Instant,
}

#[derive(Default)]
struct Entries {
    plaintexts: HashMap<CacheKey, Stored>,
    refusals: HashMap<CacheKey, Refusal>,
}

/// What the cache holds for one ciphertext and context.
#[derive(Debug)]
enum Lookup {
    /// A plaintext within its TTL.
    Fresh(Decrypted),
    /// The key service called this ciphertext invalid, within the TTL.
    Refused(KmsError),
    /// A plaintext past its TTL, within the grace window: to be served only if the key service is unavailable.
    Stale {
        /// The last plaintext.
        decrypted: Decrypted,
        /// False while a recent refresh failed: serve it without asking the key service.
        refresh: bool,
    },
    /// Nothing usable.
    Miss,
}

/// A bounded TTL cache of plaintexts and refusals.
pub(crate) struct PlaintextCache {
    ttl: Duration,
    stale: Duration,
    max_entries: usize,
    entries: Mutex<Entries>,
    /// The misses being answered, by key: one call per secret at a time ([`PlaintextCache::turn`]).
    flights: Mutex<HashMap<CacheKey, Arc<tokio::sync::Mutex<()>>>>,
}

/// The turn of one invocation to ask the key service for a missed secret. Dropping it lets the next in line go;
/// the next finds this one's answer in the cache, if it was one to keep.
#[derive(Debug)]
struct Turn<'a> {
    cache: &'a PlaintextCache,
    key: CacheKey,
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        // The last in line takes the flight's entry with it (no one else holds it: only the map and this turn's
        // guard do); one who comes later starts a new flight.
        let mut flights = self.cache.flights.lock().unwrap_or_else(PoisonError::into_inner);
        if flights.get(&self.key).is_some_and(|flight| Arc::strong_count(flight) == 2) {
            flights.remove(&self.key);
        }
    }
}

impl std::fmt::Debug for PlaintextCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlaintextCache")
            .field("ttl", &self.ttl)
            .field("stale", &self.stale)
            .field("max_entries", &self.max_entries)
            .finish()
    }
}

impl PlaintextCache {
    /// A cache whose entries are fresh for `ttl`, whose plaintexts may be served `stale` longer during an outage,
    /// holding at most `max_entries` plaintexts (at least one) and a quarter as many refusals.
    pub fn new(ttl: Duration, stale: Duration, max_entries: usize) -> Self {
        Self { ttl, stale, max_entries: max_entries.max(1), entries: Mutex::default(), flights: Mutex::default() }
    }

    /// Waits for this invocation's turn to ask the key service for a secret the cache missed: invocations that
    /// miss the same secret at once take turns, so the first one's answer is the rest's cache hit (a single KMS
    /// call, where each would otherwise make its own).
    async fn turn(&self, key: CacheKey) -> Turn<'_> {
        let flight = {
            let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
            // Entries no one holds any more (everyone in line gave up waiting) go.
            flights.retain(|_, flight| Arc::strong_count(flight) > 1);
            flights.entry(key).or_default().clone()
        };
        Turn { cache: self, key, _turn: flight.lock_owned().await }
    }

    /// The plaintext for `key`, under the cache's rules; `fetch` asks the key service, given the time it may take
    /// (`deadline`, or less when a stale plaintext is at hand).
    ///
    /// - A plaintext within its TTL, or a remembered `invalid-ciphertext`, is the answer ([`CacheUse::Hit`]).
    /// - Misses of one key at once take turns (single flight): the first fetches, the rest find its answer. One
    ///   whose `deadline` passes while it waits gives up, `unavailable` (or with the stale plaintext).
    /// - A plaintext past its TTL, within the grace window, is served ([`CacheUse::Stale`]) only when the fetch is
    ///   `unavailable` (it is given [`STALE_REFRESH_BUDGET`] at most, and after a failure is not tried again for
    ///   [`STALE_RETRY_INTERVAL`]); a refusal drops it.
    /// - A fetched plaintext is kept; an `invalid-ciphertext` is remembered for the TTL; `denied` is not kept.
    pub(crate) async fn get_or_fetch<F, Fut>(&self, key: CacheKey, deadline: Option<Instant>, fetch: F) -> Answer
    where
        F: FnOnce(Option<Instant>) -> Fut,
        Fut: Future<Output = Result<Decrypted, KmsError>>,
    {
        // What is held settles the answer, or leaves the key service to ask (with a stale value at hand).
        let settled = |lookup| match lookup {
            Lookup::Fresh(decrypted) => Ok(Answer::new(Ok(decrypted), CacheUse::Hit)),
            Lookup::Refused(error) => Ok(Answer::new(Err(error), CacheUse::Hit)),
            Lookup::Stale { decrypted, refresh: false } => {
                let why = format!("the last refresh failed less than {} s ago", STALE_RETRY_INTERVAL.as_secs());
                Ok(Answer::stale(decrypted, KmsError::Unavailable(why)))
            }
            Lookup::Stale { decrypted, refresh: true } => Err(Some(decrypted)),
            Lookup::Miss => Err(None),
        };
        let stale_before = match settled(self.lookup(key)) {
            Ok(answer) => return answer,
            Err(stale) => stale,
        };
        // With a stale value at hand, the key service gets little time: the stale value is served instead.
        let deadline = match stale_before {
            Some(_) => {
                let budget = Instant::now() + STALE_REFRESH_BUDGET;
                Some(deadline.map_or(budget, |d| d.min(budget)))
            }
            None => deadline,
        };
        let waited_in_vain = |stale: Option<Decrypted>, why: &str| {
            let why = KmsError::Unavailable(why.into());
            match stale {
                Some(stale) => Answer::stale(stale, why),
                None => Answer::new(Err(why), CacheUse::Miss),
            }
        };
        let turn = self.turn(key);
        let _turn = match deadline {
            None => turn.await,
            Some(deadline) => match tokio::time::timeout_at(deadline.into(), turn).await {
                Ok(turn) => turn,
                Err(_) => {
                    let why = "another invocation's decrypt of this secret did not finish in this one's time";
                    return waited_in_vain(stale_before, why);
                }
            },
        };
        // The one before in line may have answered.
        let stale = match settled(self.lookup(key)) {
            Ok(answer) => return answer,
            Err(stale) => stale,
        };
        // A turn that came at the deadline leaves no time to ask.
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return waited_in_vain(stale, "the time for this decrypt ran out before the key service could be asked");
        }
        match (fetch(deadline).await, stale) {
            (Ok(decrypted), _) => {
                self.insert(key, &decrypted);
                Answer::new(Ok(decrypted), CacheUse::Miss)
            }
            (Err(error @ KmsError::Unavailable(_)), Some(stale)) => {
                self.refresh_failed(key);
                Answer::stale(stale, error)
            }
            (Err(error), _) => {
                self.forget(key);
                self.insert_refusal(key, &error);
                Answer::new(Err(error), CacheUse::Miss)
            }
        }
    }

    fn max_refusals(&self) -> usize {
        (self.max_entries / 4).max(1)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What is held for this ciphertext and context. Entries found past their use are dropped (and zeroized).
    fn lookup(&self, key: CacheKey) -> Lookup {
        let mut entries = self.lock();
        if let Some(refusal) = entries.refusals.get(&key) {
            if refusal.stored.elapsed() < self.ttl {
                return Lookup::Refused(refusal.error.clone());
            }
            entries.refusals.remove(&key);
        }
        let Some(stored) = entries.plaintexts.get(&key) else { return Lookup::Miss };
        let age = stored.stored.elapsed();
        let decrypted = || Decrypted {
            plaintext: Plaintext::from(stored.plaintext.expose_secret().to_vec()),
            key_id: stored.key_id.clone(),
        };
        if age < self.ttl {
            Lookup::Fresh(decrypted())
        } else if age < self.ttl.saturating_add(self.stale) {
            let refresh = stored.retry_after.is_none_or(|at| Instant::now() >= at);
            Lookup::Stale { decrypted: decrypted(), refresh }
        } else {
            entries.plaintexts.remove(&key);
            Lookup::Miss
        }
    }

    /// Stores a plaintext (ending any refusal of the same request), evicting what is past its use and then the
    /// oldest plaintexts to stay within bounds.
    fn insert(&self, key: CacheKey, decrypted: &Decrypted) {
        let lifetime = self.ttl.saturating_add(self.stale);
        let mut entries = self.lock();
        entries.refusals.remove(&key);
        make_room(&mut entries.plaintexts, key, self.max_entries, |s| s.stored, lifetime);
        let stored = Stored {
            plaintext: Plaintext::from(decrypted.plaintext.expose_secret().to_vec()),
            _held: mask::hold(decrypted.plaintext.expose_secret()),
            key_id: decrypted.key_id.clone(),
            stored: Instant::now(),
            retry_after: None,
        };
        entries.plaintexts.insert(key, stored);
    }

    /// Remembers that the key service called this ciphertext invalid (ending any plaintext of the same request).
    /// Other errors are not stored.
    fn insert_refusal(&self, key: CacheKey, error: &KmsError) {
        if !matches!(error, KmsError::InvalidCiphertext(_)) {
            return;
        }
        let mut entries = self.lock();
        entries.plaintexts.remove(&key);
        make_room(&mut entries.refusals, key, self.max_refusals(), |r| r.stored, self.ttl);
        entries.refusals.insert(key, Refusal { error: error.clone(), stored: Instant::now() });
    }

    /// Drops whatever is held for this ciphertext and context (the key service refused it).
    fn forget(&self, key: CacheKey) {
        let mut entries = self.lock();
        entries.plaintexts.remove(&key);
        entries.refusals.remove(&key);
    }

    /// Notes that refreshing this stale plaintext failed: it is served without a refresh for
    /// [`STALE_RETRY_INTERVAL`].
    fn refresh_failed(&self, key: CacheKey) {
        if let Some(stored) = self.lock().plaintexts.get_mut(&key) {
            stored.retry_after = Some(Instant::now() + STALE_RETRY_INTERVAL);
        }
    }

    /// Number of entries held, plaintexts and refusals (those past their use included until they are evicted).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        let entries = self.lock();
        entries.plaintexts.len() + entries.refusals.len()
    }

    /// Whether the cache holds nothing.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Makes room for `key` in `map`: drops entries older than `lifetime`, then the oldest, until it fits in `max`.
fn make_room<V>(
    map: &mut HashMap<CacheKey, V>,
    key: CacheKey,
    max: usize,
    stored: impl Fn(&V) -> Instant,
    lifetime: Duration,
) {
    if map.len() < max || map.contains_key(&key) {
        return;
    }
    map.retain(|_, v| stored(v).elapsed() < lifetime);
    while map.len() >= max {
        let Some(oldest) = map.iter().min_by_key(|(_, v)| stored(v)).map(|(k, _)| *k) else { break };
        map.remove(&oldest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(300);
    const STALE: Duration = Duration::from_secs(3600);

    fn key(ciphertext: &[u8], context: &EncryptionContext) -> CacheKey {
        CacheKey::of_ciphertext(ciphertext, context)
    }

    fn ctx(pairs: &[(&str, &str)]) -> EncryptionContext {
        EncryptionContext::from_pairs(pairs.iter().copied()).unwrap()
    }

    fn secret(s: &str, key_id: &str) -> Decrypted {
        Decrypted { plaintext: Plaintext::from(s.as_bytes().to_vec()), key_id: key_id.into() }
    }

    fn fresh(lookup: Lookup) -> Option<(Vec<u8>, String)> {
        match lookup {
            Lookup::Fresh(d) => Some((d.plaintext.expose_secret().to_vec(), d.key_id)),
            _ => None,
        }
    }

    #[test]
    fn hits_only_for_the_same_ciphertext_and_context() {
        let cache = PlaintextCache::new(TTL, STALE, 8);
        cache.insert(key(b"ct", &ctx(&[("a", "1")])), &secret("pw", "key-1"));
        assert_eq!(fresh(cache.lookup(key(b"ct", &ctx(&[("a", "1")])))), Some((b"pw".to_vec(), "key-1".into())));
        assert!(matches!(cache.lookup(key(b"ct", &ctx(&[("a", "2")]))), Lookup::Miss));
        assert!(matches!(cache.lookup(key(b"ct", &ctx(&[]))), Lookup::Miss));
        assert!(matches!(cache.lookup(key(b"other", &ctx(&[("a", "1")]))), Lookup::Miss));
    }

    #[test]
    fn plaintexts_go_stale_then_expire() {
        let cache = PlaintextCache::new(Duration::from_millis(30), Duration::from_millis(60), 8);
        cache.insert(key(b"ct", &ctx(&[])), &secret("pw", "k"));
        assert!(matches!(cache.lookup(key(b"ct", &ctx(&[]))), Lookup::Fresh(_)));
        std::thread::sleep(Duration::from_millis(40));
        assert!(matches!(cache.lookup(key(b"ct", &ctx(&[]))), Lookup::Stale { refresh: true, .. }));
        cache.refresh_failed(key(b"ct", &ctx(&[])));
        assert!(matches!(cache.lookup(key(b"ct", &ctx(&[]))), Lookup::Stale { refresh: false, .. }));
        std::thread::sleep(Duration::from_millis(60));
        assert!(matches!(cache.lookup(key(b"ct", &ctx(&[]))), Lookup::Miss));
        assert!(cache.is_empty(), "an expired entry is dropped when found");
    }

    #[test]
    fn the_largest_settings_do_not_overflow() {
        let cache = PlaintextCache::new(Duration::from_secs(u64::MAX), Duration::from_secs(u64::MAX), 1);
        cache.insert(key(b"ct", &ctx(&[])), &secret("pw", "k"));
        cache.insert(key(b"other", &ctx(&[])), &secret("pw", "k"));
        assert!(matches!(cache.lookup(key(b"other", &ctx(&[]))), Lookup::Fresh(_)));
    }

    #[test]
    fn without_a_grace_window_nothing_is_stale() {
        let cache = PlaintextCache::new(Duration::from_millis(20), Duration::ZERO, 8);
        cache.insert(key(b"ct", &ctx(&[])), &secret("pw", "k"));
        std::thread::sleep(Duration::from_millis(30));
        assert!(matches!(cache.lookup(key(b"ct", &ctx(&[]))), Lookup::Miss));
    }

    #[test]
    fn refusals_of_invalid_ciphertexts_are_remembered_for_the_ttl_and_others_not_at_all() {
        let cache = PlaintextCache::new(Duration::from_millis(30), STALE, 8);
        cache.insert_refusal(key(b"bad", &ctx(&[])), &KmsError::InvalidCiphertext("no".into()));
        cache.insert_refusal(key(b"denied", &ctx(&[])), &KmsError::Denied("no".into()));
        cache.insert_refusal(key(b"down", &ctx(&[])), &KmsError::Unavailable("no".into()));
        assert!(matches!(cache.lookup(key(b"bad", &ctx(&[]))), Lookup::Refused(KmsError::InvalidCiphertext(_))));
        assert!(matches!(cache.lookup(key(b"denied", &ctx(&[]))), Lookup::Miss));
        assert!(matches!(cache.lookup(key(b"down", &ctx(&[]))), Lookup::Miss));
        std::thread::sleep(Duration::from_millis(40));
        assert!(matches!(cache.lookup(key(b"bad", &ctx(&[]))), Lookup::Miss));
    }

    #[test]
    fn a_refusal_ends_a_stale_plaintext_and_forget_ends_both() {
        let cache = PlaintextCache::new(TTL, STALE, 8);
        cache.insert(key(b"ct", &ctx(&[])), &secret("pw", "k"));
        cache.insert_refusal(key(b"ct", &ctx(&[])), &KmsError::InvalidCiphertext("rotated away".into()));
        assert!(matches!(cache.lookup(key(b"ct", &ctx(&[]))), Lookup::Refused(_)));
        cache.insert(key(b"ct", &ctx(&[])), &secret("pw", "k"));
        cache.forget(key(b"ct", &ctx(&[])));
        assert!(cache.is_empty());
    }

    #[test]
    fn the_oldest_plaintext_is_evicted_when_full() {
        let cache = PlaintextCache::new(TTL, STALE, 2);
        for ct in [b"c1", b"c2", b"c3"] {
            cache.insert(key(ct, &ctx(&[])), &secret("pw", "k"));
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(cache.len(), 2);
        assert!(matches!(cache.lookup(key(b"c1", &ctx(&[]))), Lookup::Miss));
        assert!(
            fresh(cache.lookup(key(b"c2", &ctx(&[])))).is_some()
                && fresh(cache.lookup(key(b"c3", &ctx(&[])))).is_some()
        );
    }

    #[test]
    fn made_up_ciphertexts_never_evict_a_plaintext() {
        let cache = PlaintextCache::new(TTL, STALE, 8);
        cache.insert(key(b"real", &ctx(&[])), &secret("pw", "k"));
        for i in 0..1000u32 {
            cache.insert_refusal(key(&i.to_be_bytes(), &ctx(&[])), &KmsError::InvalidCiphertext("garbage".into()));
        }
        assert!(fresh(cache.lookup(key(b"real", &ctx(&[])))).is_some());
        assert_eq!(cache.len(), 1 + 2, "refusals are bounded at a quarter of the plaintexts");
    }
}
