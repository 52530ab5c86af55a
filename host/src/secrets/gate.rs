//! The host's policy in front of the key service, built once per host: size limits, context stamping and
//! per-secret settings, then the plaintext cache's one call, the deadline, and one audit line per decrypt.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use secrecy::ExposeSecret as _;
use sha2::{Digest, Sha256};
use tracing::Instrument as _;

use super::cache::{Answer, CacheKey, CacheUse, PlaintextCache};
use super::sealed::{self, Sealed, SealedError};
use super::session::Session;
use super::settings::CheckedSecrets;
use super::source::{InjectedInto, ParameterId, SecretSource, SecretTable, Unnamed, User};
use super::store::{Fetched, MAX_PARAMETERS_PER_CALL, SecretStore, json_value};
use super::{Backends, DecryptRequest, Decrypted, KmsBackend, KmsError, Plaintext, hex};
use crate::context::{COMPONENT_KEY, EncryptionContext};
use crate::logging::AUDIT_TARGET;

/// Most time prefetching may take at init, for all secrets together (Lambda gives init 10 s in all).
pub const PREFETCH_BUDGET: Duration = Duration::from_secs(3);

/// The warning when the key service is unavailable at init.
const PREFETCH_SKIPPED: &str =
    "prefetch skipped: their service is unavailable; invocations will fetch these themselves";

/// What the host remembers of one decrypt: enough to audit and to assert on, never the plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecryptRecord {
    /// First 8 bytes of the ciphertext's SHA-256, in hex: names a ciphertext without revealing anything (for a
    /// stored secret, of its source).
    pub ciphertext_id: String,
    /// The guest env var the ciphertext was configured under, when it has settings of its own; the name of a stored
    /// secret.
    pub secret: Option<String>,
    /// For a stored secret: where it lives (`secretsmanager:prod/db#password`), as its `KEYWARD_SOURCE_<NAME>`
    /// says; `None` for a ciphertext.
    pub source: Option<String>,
    /// For a stored secret: the version its service answered with (Secrets Manager's version id, SSM's version).
    pub version_id: Option<String>,
    /// The context the decrypt ran under (guest pairs plus stamped pairs); `None` if the guest's was refused.
    pub context: Option<EncryptionContext>,
    /// The key that opened the ciphertext, when it opened.
    pub key_id: Option<String>,
    /// `Ok` or the error's WIT kind.
    pub outcome: Result<(), KmsError>,
    /// Whether the plaintext cache answered.
    pub cache: CacheUse,
    /// When a stale plaintext was served ([`CacheUse::Stale`]): why the key service could not refresh it.
    pub stale_because: Option<KmsError>,
    /// Time spent in the cache and the backend.
    pub latency: Duration,
}

/// Why the secrets named for prefetching could not be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot prefetch {name}: {reason}")]
pub struct PrefetchError {
    /// The guest env var.
    pub name: String,
    /// Why: bad base64, or the key service's refusal.
    pub reason: String,
}

/// Applies the host's policy to every secret a guest asks for, then asks the cache, then the backend. Built once
/// per host from the checked [`SecretsSettings`](super::SecretsSettings); clones share the cache.
#[derive(Debug, Clone)]
pub(crate) struct SecretGate {
    backend: Arc<dyn KmsBackend>,
    store: Option<Arc<dyn SecretStore>>,
    /// The version each stored secret was last fetched at, by source: a change is audited.
    versions: Arc<Mutex<HashMap<String, String>>>,
    stamped: EncryptionContext,
    cache: Option<Arc<PlaintextCache>>,
    table: Arc<SecretTable>,
    max_ciphertext_bytes: usize,
    max_decrypt_calls: u32,
    prefetch: Arc<[String]>,
}

impl SecretGate {
    /// The gate of checked settings, asking `backends`.
    pub(crate) fn new(backends: impl Into<Backends>, checked: CheckedSecrets) -> Self {
        let CheckedSecrets { settings, table } = checked;
        let cache = &settings.cache;
        let Backends { kms: backend, store } = backends.into();
        Self {
            backend,
            store,
            versions: Arc::default(),
            cache: (!cache.ttl.is_zero())
                .then(|| Arc::new(PlaintextCache::new(cache.ttl, cache.stale, cache.max_entries))),
            stamped: settings.stamped_context,
            table: Arc::new(table),
            max_ciphertext_bytes: settings.max_ciphertext_bytes,
            max_decrypt_calls: settings.max_decrypt_calls,
            prefetch: settings.prefetch.into(),
        }
    }

    /// One invocation's use of the gate, under its quota of secrets.
    pub(crate) fn session(self: &Arc<Self>) -> Session {
        Session::new(self.clone())
    }

    /// Secrets one invocation may ask for.
    pub(crate) fn max_decrypt_calls(&self) -> u32 {
        self.max_decrypt_calls
    }

    /// Where the secret `name` lives.
    pub(crate) fn source(&self, name: &str) -> Result<&SecretSource, Unnamed> {
        self.table.source(name)
    }

    /// Fetches the secret `name` from where it lives (`source`) for `user`, as [`SecretGate::decrypt`] does a
    /// guest's ciphertext.
    pub(crate) async fn fetch(
        &self,
        name: &str,
        source: &SecretSource,
        deadline: Option<Instant>,
        user: User,
    ) -> (Result<Plaintext, KmsError>, DecryptRecord) {
        match source {
            SecretSource::EnvCiphertext(blob) => self.decrypt_for(blob, Vec::new(), deadline, user).await,
            SecretSource::SecretsManager(id) => {
                let fetch = |deadline| async move {
                    let store = self.store.as_ref().ok_or_else(no_store)?;
                    within(deadline, "Secrets Manager", store.get_secret_value(id)).await
                };
                self.fetch_stored((name, source), deadline, user, Instant::now(), fetch).await
            }
            SecretSource::Parameter(id) => {
                let fetch = |deadline| async move {
                    let answer = self.get_parameters(&[id], deadline).await.pop();
                    answer.unwrap_or_else(|| Err(KmsError::Unavailable("SSM gave no answer".into())))
                };
                self.fetch_stored((name, source), deadline, user, Instant::now(), fetch).await
            }
            SecretSource::Sealed(path) => {
                let fetch = |deadline| self.open_sealed(path, deadline, user);
                self.fetch_stored((name, source), deadline, user, Instant::now(), fetch).await
            }
        }
    }

    /// The sealed file at `path`, opened: its data key is a ciphertext like any other (the stamped context, its
    /// name's settings, the cache, a `kms decrypt` audit line), then the file under it. Its version is the file's
    /// digest, so a new file is audited as a new version.
    async fn open_sealed(&self, path: &Path, deadline: Option<Instant>, user: User) -> Result<Fetched, KmsError> {
        // Every error names the file: a guest knows its secret by name, and the name's source is the host's.
        let shown = format!("sealed file {}", path.display());
        let invalid = |e: SealedError| KmsError::InvalidCiphertext(e.to_string()).about(&shown);
        // Read on the runtime's thread: a file of the package, at most 1 MiB, read once per TTL. Its errors name it.
        let bytes = sealed::read_file(path).map_err(|e| KmsError::Unavailable(e.to_string()))?;
        let file = Sealed::parse(&bytes).map_err(invalid)?;
        let data_key = file.encrypted_data_key();
        if self.table.sealed_key(path) != Some(&Sha256::digest(data_key).into()) {
            let why = "it is not the one the host read at start: restart the host to use the new one";
            return Err(KmsError::InvalidCiphertext(why.into()).about(&shown));
        }
        let data_key = self.decrypt_for(data_key, Vec::new(), deadline, user).await.0;
        let data_key = data_key.map_err(|e| e.about(format!("{shown}: its data key")))?;
        let value = file.open(data_key.expose_secret()).map_err(invalid)?;
        Ok(Fetched { value, version_id: format!("sha256:{}", hex(&Sha256::digest(&bytes)[..8])) })
    }

    /// One GetParameters call for `ids` (at most ten), given until `deadline`: one answer each.
    async fn get_parameters(&self, ids: &[&ParameterId], deadline: Option<Instant>) -> Vec<Result<Fetched, KmsError>> {
        let Some(store) = &self.store else { return ids.iter().map(|_| Err(no_store())).collect() };
        match within(deadline, "SSM", async { Ok(store.get_parameters(ids).await) }).await {
            Ok(answers) if answers.len() == ids.len() => answers,
            Ok(answers) => {
                let why = format!("the store answered {} of {} parameters; none was used", answers.len(), ids.len());
                ids.iter().map(|_| Err(KmsError::Unavailable(why.clone()))).collect()
            }
            Err(late) => ids.iter().map(|_| Err(late.clone())).collect(),
        }
    }

    /// A stored secret through the cache: `fetch` asks its service (given the time it may take); the JSON key is
    /// taken out before the value is cached; one audit line, and one more when the version changed.
    async fn fetch_stored<F, Fut>(
        &self,
        (name, source): (&str, &SecretSource),
        deadline: Option<Instant>,
        user: User,
        started: Instant,
        fetch: F,
    ) -> (Result<Plaintext, KmsError>, DecryptRecord)
    where
        F: FnOnce(Option<Instant>) -> Fut,
        Fut: Future<Output = Result<Fetched, KmsError>>,
    {
        let shown = source.to_string();
        let key = CacheKey::of_source(&shown);
        let json_key = match source {
            SecretSource::SecretsManager(id) => id.json_key.as_deref(),
            _ => None,
        };
        let fetch = |deadline| async move {
            let fetched = fetch(deadline).await?;
            let plaintext = match json_key {
                Some(json_key) => json_value(&fetched.value, json_key, name)?,
                None => fetched.value,
            };
            Ok(Decrypted { plaintext, key_id: fetched.version_id })
        };
        let answer = match self.table.injected_into(source) {
            Some(injected) if user == User::Guest => {
                Answer::new(Err(injected_denial(Some(name), injected)), CacheUse::Off)
            }
            _ => match &self.cache {
                Some(cache) => cache.get_or_fetch(key, deadline, fetch).await,
                None => Answer::new(fetch(deadline).await, CacheUse::Off),
            },
        };
        let version_id = answer.result.as_ref().ok().map(|d| d.key_id.clone());
        if let (Some(version), CacheUse::Miss | CacheUse::Off) = (&version_id, answer.cache) {
            let before =
                self.versions.lock().unwrap_or_else(PoisonError::into_inner).insert(shown.clone(), version.clone());
            if let Some(before) = before.filter(|before| before != version) {
                tracing::info!(target: AUDIT_TARGET, secret = name, source = %shown, from = %before, to = %version, "secret version changed");
            }
        }
        let record = DecryptRecord {
            ciphertext_id: hex(&Sha256::digest(shown.as_bytes())[..8]),
            secret: Some(name.to_string()),
            source: Some(shown),
            version_id,
            context: None,
            key_id: None,
            outcome: answer.result.as_ref().map(|_| ()).map_err(Clone::clone),
            cache: answer.cache,
            stale_because: answer.stale_because,
            latency: started.elapsed(),
        };
        audit(&record);
        (answer.result.map(|d| d.plaintext), record)
    }

    /// Fetches the secrets named for prefetching ([`SecretsSettings::prefetch`](super::SecretsSettings::prefetch))
    /// now, so that the guest's first uses of them are cache hits: ciphertexts with the stamped context alone, SSM
    /// parameters ten to a GetParameters call, Secrets Manager's secrets all at once.
    ///
    /// Prefetching is an optimisation: when a service is `unavailable` (unreachable, throttling, or slower than
    /// [`PREFETCH_BUDGET`] for all of them), what is left is skipped with one warning line, and the first
    /// invocations fetch it. A refusal is a configuration mistake and fails.
    ///
    /// # Errors
    /// A [`PrefetchError`] naming the variable whose value is not base64, or that its service refused (`denied`,
    /// `invalid-ciphertext`).
    pub async fn prefetch(&self) -> Result<(), PrefetchError> {
        if self.prefetch.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + PREFETCH_BUDGET;
        async {
            // The settings were checked: every name holds a secret.
            let named = self.prefetch.iter().filter_map(|name| Some((name.as_str(), self.source(name).ok()?)));
            let mut parameters: Vec<(&str, &SecretSource, &ParameterId)> = Vec::new();
            type Outcomes<'a> = Vec<(&'a str, Result<(), KmsError>)>;
            let mut fetches: Vec<Pin<Box<dyn Future<Output = Outcomes<'_>> + Send + '_>>> = Vec::new();
            for (name, source) in named {
                match source {
                    SecretSource::Parameter(id) => parameters.push((name, source, id)),
                    _ => fetches.push(Box::pin(async move {
                        vec![(name, self.fetch(name, source, Some(deadline), User::Host).await.0.map(drop))]
                    })),
                }
            }
            // Ten parameters to a call; each answer then goes through the cache as if it had been fetched alone.
            for batch in parameters.chunks(MAX_PARAMETERS_PER_CALL) {
                fetches.push(Box::pin(async move {
                    let ids: Vec<&ParameterId> = batch.iter().map(|&(_, _, id)| id).collect();
                    let started = Instant::now();
                    let answers = self.get_parameters(&ids, Some(deadline)).await;
                    let mut outcomes = Vec::new();
                    for (&(name, source, _), answer) in batch.iter().zip(answers) {
                        let fetch = |_| std::future::ready(answer);
                        let named = (name, source);
                        let (result, _) = self.fetch_stored(named, Some(deadline), User::Host, started, fetch).await;
                        outcomes.push((name, result.map(drop)));
                    }
                    outcomes
                }));
            }
            let mut skipped = Vec::new();
            for (name, outcome) in futures_util::future::join_all(fetches).await.into_iter().flatten() {
                match outcome {
                    Ok(()) => {}
                    Err(KmsError::Unavailable(reason)) => skipped.push((name, reason)),
                    Err(refused) => return Err(PrefetchError { name: name.to_string(), reason: refused.to_string() }),
                }
            }
            if let Some((_, reason)) = skipped.first() {
                let names = skipped.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", ");
                tracing::warn!(skipped = names, reason, "{PREFETCH_SKIPPED}");
            }
            Ok(())
        }
        .instrument(tracing::info_span!("prefetch"))
        .await
    }

    /// Decrypts for a guest: checks sizes, merges the stamped context (a contradiction is `denied`), answers from
    /// the cache or calls the backend (giving up at `deadline` with `unavailable`), and writes one audit line.
    /// Returns the outcome and its record.
    ///
    /// With a cache, its rules apply ([`PlaintextCache::get_or_fetch`]): an `invalid-ciphertext` answer is
    /// remembered for the TTL; a plaintext past its TTL is served (and audited as stale) only when the backend is
    /// `unavailable`, and dropped when it refuses.
    pub async fn decrypt(
        &self,
        ciphertext: &[u8],
        guest_context: Vec<(String, String)>,
        deadline: Option<Instant>,
    ) -> (Result<Plaintext, KmsError>, DecryptRecord) {
        self.decrypt_for(ciphertext, guest_context, deadline, User::Guest).await
    }

    /// [`SecretGate::decrypt`] for `user`: a secret the host injects into requests is `denied` to the guest.
    async fn decrypt_for(
        &self,
        ciphertext: &[u8],
        guest_context: Vec<(String, String)>,
        deadline: Option<Instant>,
        user: User,
    ) -> (Result<Plaintext, KmsError>, DecryptRecord) {
        let digest: [u8; 32] = Sha256::digest(ciphertext).into();
        let ciphertext_id = hex(&digest[..8]);
        let configured = self.table.settings(&digest);
        let settings = configured.map(|c| &c.settings);
        let stamped = settings.and_then(|s| s.stamped_context.as_ref()).unwrap_or(&self.stamped);
        let injected = configured.filter(|_| user == User::Guest).and_then(|c| c.injected_into.as_ref());
        let context = match (injected, settings.and_then(|s| s.algorithm.as_ref())) {
            // The guest must not hold what the host injects: it could send it anywhere its code (or a dependency)
            // chooses, where the host sends it only to its origin.
            (Some(injected), _) => Err(injected_denial(None, injected)),
            // KMS takes no context for an asymmetric key: none is stamped, and a guest may give none.
            (None, Some(_)) if !guest_context.is_empty() => Err(KmsError::Denied(
                "this secret is under an asymmetric KMS key, which takes no encryption context".into(),
            )),
            (None, Some(_)) => Ok(EncryptionContext::new()),
            // The build pair is the host's alone: a guest naming a build (the digest is public) must not open a
            // secret bound to it on a host that does not stamp one.
            (None, None)
                if guest_context.iter().any(|(key, _)| key == COMPONENT_KEY)
                    && stamped.iter().all(|(key, _)| key != COMPONENT_KEY) =>
            {
                Err(KmsError::Denied(format!(
                    "the encryption context key {COMPONENT_KEY:?} is the host's to stamp (component={{component}}), \
                     and a guest may not give it"
                )))
            }
            (None, None) => EncryptionContext::from_pairs(guest_context)
                .and_then(|guest| guest.stamped_with(stamped))
                .map_err(|e| KmsError::Denied(e.to_string())),
        };
        let started = Instant::now();
        let answer = match &context {
            _ if ciphertext.len() > self.max_ciphertext_bytes => Answer::new(
                Err(KmsError::InvalidCiphertext(format!(
                    "ciphertext is {} bytes; the limit is {}",
                    ciphertext.len(),
                    self.max_ciphertext_bytes
                ))),
                CacheUse::Off,
            ),
            Err(e) => Answer::new(Err(e.clone()), CacheUse::Off),
            Ok(context) => {
                let request = DecryptRequest {
                    ciphertext,
                    context,
                    key_ids: settings.filter(|s| !s.key_ids.is_empty()).map(|s| s.key_ids.as_slice()),
                    algorithm: settings.and_then(|s| s.algorithm.as_deref()),
                };
                let fetch = |deadline| self.call_backend(request, deadline);
                match &self.cache {
                    Some(cache) => {
                        cache.get_or_fetch(CacheKey::of_ciphertext(ciphertext, context), deadline, fetch).await
                    }
                    None => Answer::new(fetch(deadline).await, CacheUse::Off),
                }
            }
        };
        // Only the key service's refusals can come of a ciphertext made for another build.
        let answer = match context {
            Ok(_) => Answer { result: answer.result.map_err(|e| bound_to_build(e, stamped)), ..answer },
            Err(_) => answer,
        };
        let record = DecryptRecord {
            ciphertext_id,
            secret: configured.map(|c| c.name.clone()),
            source: None,
            version_id: None,
            context: context.ok(),
            key_id: answer.result.as_ref().ok().map(|d| d.key_id.clone()),
            outcome: answer.result.as_ref().map(|_| ()).map_err(Clone::clone),
            cache: answer.cache,
            stale_because: answer.stale_because,
            latency: started.elapsed(),
        };
        audit(&record);
        (answer.result.map(|d| d.plaintext), record)
    }

    async fn call_backend(
        &self,
        request: DecryptRequest<'_>,
        deadline: Option<Instant>,
    ) -> Result<Decrypted, KmsError> {
        within(deadline, "the key service", self.backend.decrypt(request)).await
    }
}

/// One line per decrypt on the `keyward::audit` target, inside the invocation's span (which carries the request
/// id). Context values are logged (they are not secret, and an operator needs them to match a key policy);
/// plaintext never is.
fn audit(record: &DecryptRecord) {
    if let Some(source) = &record.source {
        return audit_stored(record, source);
    }
    let context = record.context.as_ref().map(ToString::to_string).unwrap_or_default();
    let key_id = record.key_id.as_deref().unwrap_or("-");
    let secret = record.secret.as_deref().unwrap_or("-");
    let latency_us = u64::try_from(record.latency.as_micros()).unwrap_or(u64::MAX);
    let cache = record.cache.as_str();
    match (&record.outcome, &record.stale_because) {
        (Ok(()), Some(why)) => tracing::warn!(
            target: AUDIT_TARGET, ciphertext_id = %record.ciphertext_id, secret, key_id, context, cache, latency_us,
            outcome = "ok", stale_because = %why, "kms decrypt: the key service is unavailable; served the last plaintext past its TTL"
        ),
        (Ok(()), None) => tracing::info!(
            target: AUDIT_TARGET, ciphertext_id = %record.ciphertext_id, secret, key_id, context, cache, latency_us,
            outcome = "ok", "kms decrypt"
        ),
        (Err(e), _) => tracing::warn!(
            target: AUDIT_TARGET, ciphertext_id = %record.ciphertext_id, secret, key_id, context, cache, latency_us,
            outcome = e.kind(), error = %e, "kms decrypt"
        ),
    }
}

/// One line per fetch of a stored secret: its name, source and version, never its value.
fn audit_stored(record: &DecryptRecord, source: &str) {
    let secret = record.secret.as_deref().unwrap_or("-");
    let version_id = record.version_id.as_deref().unwrap_or("-");
    let latency_us = u64::try_from(record.latency.as_micros()).unwrap_or(u64::MAX);
    let cache = record.cache.as_str();
    match (&record.outcome, &record.stale_because) {
        (Ok(()), Some(why)) => tracing::warn!(
            target: AUDIT_TARGET, secret, source, version_id, cache, latency_us, outcome = "ok", stale_because = %why,
            "secret fetch: its service is unavailable; served the last value past its TTL"
        ),
        (Ok(()), None) => tracing::info!(
            target: AUDIT_TARGET, secret, source, version_id, cache, latency_us, outcome = "ok", "secret fetch"
        ),
        (Err(e), _) => tracing::warn!(
            target: AUDIT_TARGET, secret, source, version_id, cache, latency_us, outcome = e.kind(), error = %e,
            "secret fetch"
        ),
    }
}

/// `call`, given until `deadline`: past it, `unavailable`, naming `service`.
async fn within<T>(
    deadline: Option<Instant>,
    service: &str,
    call: impl Future<Output = Result<T, KmsError>>,
) -> Result<T, KmsError> {
    let Some(deadline) = deadline else { return call.await };
    let allowed = deadline.saturating_duration_since(Instant::now());
    tokio::time::timeout_at(deadline.into(), call).await.unwrap_or_else(|_| {
        Err(KmsError::Unavailable(format!("{service} did not answer in the {} ms it was given", allowed.as_millis())))
    })
}

/// The refusal of a stored secret on a host built without a store (a library host's choice).
fn no_store() -> KmsError {
    KmsError::Denied("this host was built without a secret store (Secrets Manager, SSM) to fetch it from".into())
}

/// The refusal of a secret the host injects, to the guest.
/// The guest's denial of a secret the host injects; `asked` is the name the guest asked by, when it asked by name
/// (not by a ciphertext), which may be another name for the injected secret.
fn injected_denial(asked: Option<&str>, injected: &InjectedInto) -> KmsError {
    let InjectedInto { name, origin } = injected;
    let which = match asked {
        Some(asked) if asked != name => format!("{asked} is the secret {name}, which"),
        _ => name.clone(),
    };
    KmsError::Denied(format!(
        "{which} is injected by the host into requests to {origin}, so it is never handed to the guest: send the \
         request, and the host adds it"
    ))
}

/// A ciphertext the key service refuses under a context stamped with the guest's build (`component=sha256:…`) may
/// have been made for another build (`invalid-ciphertext`), or a key policy may require another (`denied`): the
/// refusal says so, with the build this host runs.
fn bound_to_build(error: KmsError, stamped: &EncryptionContext) -> KmsError {
    let Some((key, digest)) = stamped.iter().find(|(key, value)| *key == COMPONENT_KEY && value.starts_with("sha256:"))
    else {
        return error;
    };
    let hint = |message: String| {
        format!(
            "{message}; this host binds secrets to the build of its guest ({key}={digest}): if the rest of the \
             context is right, the ciphertext was made for another build (or the key policy requires another), so \
             encrypt it again for this one"
        )
    };
    match error {
        KmsError::InvalidCiphertext(message) => KmsError::InvalidCiphertext(hint(message)),
        KmsError::Denied(message) => KmsError::Denied(hint(message)),
        unavailable => unavailable,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use secrecy::ExposeSecret;

    use super::*;
    use crate::secrets::cache::STALE_REFRESH_BUDGET;
    use crate::secrets::{CacheSettings, LocalKey, SecretsSettings};

    /// The gate of `settings` over `backend`, for a guest with no env vars.
    fn gate_of(backend: Arc<dyn KmsBackend>, settings: SecretsSettings) -> SecretGate {
        SecretGate::new(backend, settings.check(&Vec::new().into()).unwrap())
    }

    fn gate(stamped: &[(&str, &str)]) -> (Arc<LocalKey>, SecretGate) {
        let key = Arc::new(LocalKey::generate().unwrap());
        let stamped_context = EncryptionContext::from_pairs(stamped.iter().copied()).unwrap();
        (key.clone(), gate_of(key, SecretsSettings { stamped_context, ..SecretsSettings::default() }))
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// A sealed file of `plaintext` whose data key `key` encrypted under `context`, written to a fresh path.
    fn sealed_file(key: &LocalKey, plaintext: &[u8], context: &EncryptionContext) -> std::path::PathBuf {
        let data_key = sealed::random_data_key().unwrap();
        let encrypted = key.encrypt(data_key.as_slice(), context).unwrap();
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).unwrap();
        let path = std::env::temp_dir().join(format!("keyward-gate-{}.sealed", hex(&random)));
        std::fs::write(&path, sealed::seal(plaintext, data_key.as_slice(), &encrypted).unwrap()).unwrap();
        path
    }

    #[tokio::test]
    async fn a_sealed_file_opens_under_its_own_settings_once_and_is_the_hosts_when_injected() {
        let key = Arc::new(LocalKey::generate().unwrap());
        let own = EncryptionContext::from_pairs([("function", "certs")]).unwrap();
        let path = sealed_file(&key, b"-----BEGIN CERTIFICATE-----", &own);
        let settings = SecretsSettings {
            stamped_context: EncryptionContext::from_pairs([("function", "other")]).unwrap(),
            sources: vec![("CERT".into(), SecretSource::Sealed(path.clone()))],
            secrets: vec![(
                "CERT".into(),
                crate::secrets::SecretSettings { stamped_context: Some(own), ..Default::default() },
            )],
            cache: CacheSettings { ttl: Duration::from_secs(60), ..CacheSettings::default() },
            ..SecretsSettings::default()
        };
        let checked = || settings.clone().check(&Vec::new().into()).unwrap();
        let gate = SecretGate::new(key.clone(), checked());
        let before_replacing = SecretGate::new(key.clone(), checked());
        let source = gate.source("CERT").unwrap().clone();
        for expected in [CacheUse::Miss, CacheUse::Hit] {
            let (result, record) = gate.fetch("CERT", &source, None, User::Guest).await;
            assert_eq!(result.unwrap().expose_secret(), b"-----BEGIN CERTIFICATE-----");
            assert_eq!(record.cache, expected);
            assert!(record.version_id.as_deref().is_some_and(|v| v.starts_with("sha256:")), "{record:?}");
        }
        // The data key is a ciphertext with CERT's settings: a guest carrying a copy of the file could ask for it,
        // until the host injects CERT; then neither is the guest's.
        let bytes = std::fs::read(&path).unwrap();
        let data_key = Sealed::parse(&bytes).unwrap().encrypted_data_key().to_vec();
        assert_eq!(gate.decrypt(&data_key, Vec::new(), None).await.0.unwrap().expose_secret().len(), 32);
        let mut injected = checked();
        injected.inject("CERT", "https://api.example.com").unwrap();
        let gate = SecretGate::new(key.clone(), injected);
        let (result, _) = gate.decrypt(&data_key, Vec::new(), None).await;
        assert!(matches!(result, Err(KmsError::Denied(ref m)) if m.contains("injected by the host")), "{result:?}");
        let (result, _) = gate.fetch("CERT", &source, None, User::Guest).await;
        assert!(matches!(result, Err(KmsError::Denied(ref m)) if m.contains("injected by the host")), "{result:?}");
        assert!(gate.fetch("CERT", &source, None, User::Host).await.0.is_ok());
        // Replaced after the host started: refused, not opened under defaults.
        let replaced = sealed_file(&key, b"other", &EncryptionContext::new());
        std::fs::rename(&replaced, &path).unwrap();
        let (result, _) = before_replacing.fetch("CERT", &source, None, User::Host).await;
        let _ = std::fs::remove_file(&path);
        assert!(
            matches!(result, Err(KmsError::InvalidCiphertext(ref m)) if m.contains("not the one the host read at start")),
            "{result:?}"
        );
    }

    /// A file sealed with a local key is refused by a host on KMS at start (and one sealed with KMS by a local key's):
    /// it would fail every invocation.
    #[test]
    fn a_sealed_file_of_the_other_key_service_is_refused_at_start() {
        let key = Arc::new(LocalKey::generate().unwrap());
        let path = sealed_file(&key, b"x", &EncryptionContext::new());
        let settings = SecretsSettings {
            sources: vec![("CERT".into(), SecretSource::Sealed(path.clone()))],
            ..SecretsSettings::default()
        };
        let checked = settings.check(&Vec::new().into()).unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(checked.check_sealed_for(true).is_ok());
        let error = checked.check_sealed_for(false).unwrap_err().to_string();
        assert!(error.starts_with("KEYWARD_SOURCE_CERT: the file was sealed with a local key"), "{error}");
    }

    /// Two names for one sealed file, its path spelled two ways, one of them injected: the guest is denied the
    /// other too, and told which injected secret it is.
    #[tokio::test]
    async fn a_second_name_for_an_injected_sealed_file_is_denied_naming_the_injected_one() {
        let key = Arc::new(LocalKey::generate().unwrap());
        let context = EncryptionContext::from_pairs([("function", "f")]).unwrap();
        let path = sealed_file(&key, b"token", &context);
        let respelled = path.parent().unwrap().join(".").join(path.file_name().unwrap());
        let settings = SecretsSettings {
            stamped_context: context,
            sources: vec![
                ("PASSWORD".into(), SecretSource::Sealed(path.clone())),
                ("TOKEN".into(), SecretSource::Sealed(respelled)),
            ],
            ..SecretsSettings::default()
        };
        let mut checked = settings.check(&Vec::new().into()).unwrap();
        checked.inject("TOKEN", "https://api.example.com").unwrap();
        let gate = SecretGate::new(key, checked);
        let source = gate.source("PASSWORD").unwrap().clone();
        let (result, _) = gate.fetch("PASSWORD", &source, None, User::Guest).await;
        let _ = std::fs::remove_file(&path);
        let Err(KmsError::Denied(message)) = result else { panic!("{result:?}") };
        assert!(
            message.contains("TOKEN is injected by the host into requests to https://api.example.com"),
            "{message}"
        );
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

    /// A ciphertext of another build of the guest fails closed, and the refusal says which build this host runs.
    #[tokio::test]
    async fn a_ciphertext_of_another_build_is_refused_naming_the_build() {
        let (this, other) = (format!("sha256:{}", "a".repeat(64)), format!("sha256:{}", "b".repeat(64)));
        let (key, gate) = gate(&[("component", &this)]);
        let ct = key.encrypt(b"pw", &EncryptionContext::from_pairs([("component", other.as_str())]).unwrap()).unwrap();
        let (result, _) = gate.decrypt(&ct, vec![], None).await;
        let Err(KmsError::InvalidCiphertext(message)) = result else { panic!("{result:?}") };
        assert!(
            message.contains(&format!("this host binds secrets to the build of its guest ({COMPONENT_KEY}={this})")),
            "{message}"
        );
        assert!(message.ends_with("the ciphertext was made for another build (or the key policy requires another), so encrypt it again for this one"), "{message}");
        let bound =
            key.encrypt(b"pw", &EncryptionContext::from_pairs([("component", this.as_str())]).unwrap()).unwrap();
        assert_eq!(gate.decrypt(&bound, vec![], None).await.0.unwrap().expose_secret(), b"pw");
        // Without a build stamped, an invalid ciphertext is only that; and a guest cannot name a build itself.
        let (_, unbound) = super::tests::gate(&[]);
        let (result, _) = unbound.decrypt(&ct, vec![], None).await;
        assert!(matches!(result, Err(KmsError::InvalidCiphertext(ref m)) if !m.contains("build")), "{result:?}");
        let (result, record) = unbound.decrypt(&bound, pairs(&[("component", &this)]), None).await;
        assert!(matches!(result, Err(KmsError::Denied(ref m)) if m.contains("is the host's to stamp")), "{result:?}");
        assert_eq!(record.context, None, "refused before the key service");
        // Where the host stamps it, the guest may repeat it.
        assert!(gate.decrypt(&bound, pairs(&[("component", &this)]), None).await.0.is_ok());
    }

    #[tokio::test]
    async fn oversized_ciphertexts_are_refused() {
        let (_, gate) = gate(&[]);
        let too_long = vec![0u8; SecretsSettings::default().max_ciphertext_bytes + 1];
        let (result, _) = gate.decrypt(&too_long, vec![], None).await;
        assert!(matches!(result, Err(KmsError::InvalidCiphertext(ref m)) if m.contains("limit")), "{result:?}");
    }

    /// A backend that counts calls and can be made slow or failing.
    #[derive(Debug, Default)]
    struct Scripted {
        calls: AtomicUsize,
        delay: Duration,
        fail: Mutex<Option<KmsError>>,
    }

    impl Scripted {
        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }

        fn fail_with(&self, error: Option<KmsError>) {
            *self.fail.lock().unwrap() = error;
        }
    }

    #[async_trait::async_trait]
    impl KmsBackend for Scripted {
        async fn decrypt(&self, _: DecryptRequest<'_>) -> Result<Decrypted, KmsError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            if let Some(error) = self.fail.lock().unwrap().clone() {
                return Err(error);
            }
            Ok(Decrypted { plaintext: Plaintext::from(b"pw".to_vec()), key_id: "scripted".into() })
        }
    }

    fn cached_gate(backend: &Arc<Scripted>, ttl: Duration, stale: Duration) -> SecretGate {
        let cache = CacheSettings { ttl, stale, max_entries: 8 };
        gate_of(backend.clone(), SecretsSettings { cache, ..SecretsSettings::default() })
    }

    #[tokio::test]
    async fn the_cache_serves_repeats_and_outlives_an_outage() {
        let backend = Arc::new(Scripted::default());
        let gate = cached_gate(&backend, Duration::from_secs(60), Duration::ZERO);
        let (first, record) = gate.decrypt(b"ct", vec![], None).await;
        assert!(first.is_ok());
        assert_eq!(record.cache, CacheUse::Miss);
        backend.fail_with(Some(KmsError::Unavailable("scripted outage".into())));
        for _ in 0..5 {
            let (again, record) = gate.decrypt(b"ct", vec![], None).await;
            assert_eq!(again.unwrap().expose_secret(), b"pw");
            assert_eq!(record.cache, CacheUse::Hit);
        }
        assert_eq!(backend.calls(), 1);
        // Another context is another entry: the outage shows.
        let (other, record) = gate.decrypt(b"ct", pairs(&[("a", "b")]), None).await;
        assert!(matches!(other, Err(KmsError::Unavailable(_))));
        assert_eq!(record.cache, CacheUse::Miss);
    }

    /// Invocations that miss one secret at once make one call; the others wait for its answer, within their time.
    #[tokio::test]
    async fn concurrent_misses_of_one_secret_make_one_call() {
        let backend = Arc::new(Scripted { delay: Duration::from_millis(200), ..Scripted::default() });
        let gate = cached_gate(&backend, Duration::from_secs(60), Duration::ZERO);
        let soon = Some(Instant::now() + Duration::from_secs(5));
        let ((a, ra), (b, rb), (c, rc), (d, rd)) = tokio::join!(
            gate.decrypt(b"ct", vec![], soon),
            gate.decrypt(b"ct", vec![], soon),
            gate.decrypt(b"ct", vec![], soon),
            gate.decrypt(b"other", vec![], soon),
        );
        assert!(a.is_ok() && b.is_ok() && c.is_ok() && d.is_ok());
        let mut uses = [ra.cache, rb.cache, rc.cache];
        uses.sort_by_key(|u| *u != CacheUse::Miss);
        assert_eq!(uses, [CacheUse::Miss, CacheUse::Hit, CacheUse::Hit]);
        assert_eq!((rd.cache, backend.calls()), (CacheUse::Miss, 2), "one call per secret");

        // One that cannot wait for the call in flight gives up at its own deadline.
        let (first, late) = tokio::join!(
            gate.decrypt(b"third", vec![], soon),
            gate.decrypt(b"third", vec![], Some(Instant::now() + Duration::from_millis(50))),
        );
        assert!(first.0.is_ok());
        assert!(matches!(late.0, Err(KmsError::Unavailable(ref m)) if m.contains("did not finish")), "{:?}", late.0);
    }

    /// With a stale value at hand, one that waits for another's refresh gets the stale value when its own time runs
    /// out first, as the refreshing one does when the refresh takes too long.
    #[tokio::test]
    async fn concurrent_stale_reads_wait_for_one_refresh_then_serve_stale() {
        let gate = cached_gate(&Arc::new(Scripted::default()), Duration::from_millis(20), Duration::from_secs(60));
        assert!(gate.decrypt(b"ct", vec![], None).await.0.is_ok());
        tokio::time::sleep(Duration::from_millis(30)).await;
        let backend = Arc::new(Scripted { delay: Duration::from_secs(5), ..Scripted::default() });
        let gate = SecretGate { backend: backend.clone(), ..gate };
        let started = Instant::now();
        let soon = Some(Instant::now() + Duration::from_millis(300));
        let ((a, ra), (b, rb)) = tokio::join!(gate.decrypt(b"ct", vec![], None), gate.decrypt(b"ct", vec![], soon));
        assert_eq!((a.unwrap().expose_secret(), b.unwrap().expose_secret()), (&b"pw"[..], &b"pw"[..]));
        assert_eq!((ra.cache, rb.cache), (CacheUse::Stale, CacheUse::Stale));
        assert_eq!(backend.calls(), 1, "one refresh");
        assert!(started.elapsed() < STALE_REFRESH_BUDGET * 2, "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_slow_backend_is_abandoned_at_the_deadline() {
        let backend = Arc::new(Scripted { delay: Duration::from_secs(5), ..Scripted::default() });
        let gate = gate_of(backend, SecretsSettings::default());
        let started = Instant::now();
        let (result, _) = gate.decrypt(b"ct", vec![], Some(Instant::now() + Duration::from_millis(50))).await;
        assert!(matches!(result, Err(KmsError::Unavailable(ref m)) if m.contains("did not answer")), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn an_invalid_ciphertext_is_answered_from_memory_and_denied_is_asked_again() {
        let backend = Arc::new(Scripted::default());
        let gate = cached_gate(&backend, Duration::from_secs(60), Duration::ZERO);
        backend.fail_with(Some(KmsError::InvalidCiphertext("encoded twice?".into())));
        for expected_cache in [CacheUse::Miss, CacheUse::Hit, CacheUse::Hit] {
            let (result, record) = gate.decrypt(b"bad", vec![], None).await;
            assert!(matches!(result, Err(KmsError::InvalidCiphertext(_))), "{result:?}");
            assert_eq!(record.cache, expected_cache);
        }
        assert_eq!(backend.calls(), 1);

        backend.fail_with(Some(KmsError::Denied("no permission yet".into())));
        for _ in 0..2 {
            let (result, record) = gate.decrypt(b"not-yet", vec![], None).await;
            assert!(matches!(result, Err(KmsError::Denied(_))));
            assert_eq!(record.cache, CacheUse::Miss);
        }
        assert_eq!(backend.calls(), 3, "access denied is asked again: permissions get fixed");
    }

    #[tokio::test]
    async fn past_its_ttl_a_plaintext_is_served_on_outage_and_dropped_on_refusal() {
        let backend = Arc::new(Scripted::default());
        let gate = cached_gate(&backend, Duration::from_millis(20), Duration::from_secs(60));
        assert!(gate.decrypt(b"ct", vec![], None).await.0.is_ok());
        tokio::time::sleep(Duration::from_millis(30)).await;

        // Outage: the stale plaintext, audited as such; then no KMS call for the retry interval.
        backend.fail_with(Some(KmsError::Unavailable("connection refused".into())));
        let (result, record) = gate.decrypt(b"ct", vec![], None).await;
        assert_eq!(result.unwrap().expose_secret(), b"pw");
        assert_eq!(record.cache, CacheUse::Stale);
        assert!(matches!(record.stale_because, Some(KmsError::Unavailable(ref m)) if m.contains("refused")));
        let (again, record) = gate.decrypt(b"ct", vec![], None).await;
        assert!(again.is_ok());
        assert_eq!(record.cache, CacheUse::Stale);
        assert_eq!(backend.calls(), 2, "a failed refresh is not retried at once");

        // Refusal: never stale.
        let gate = cached_gate(&backend, Duration::from_millis(20), Duration::from_secs(60));
        backend.fail_with(None);
        assert!(gate.decrypt(b"ct", vec![], None).await.0.is_ok());
        tokio::time::sleep(Duration::from_millis(30)).await;
        backend.fail_with(Some(KmsError::Denied("key disabled".into())));
        let (result, record) = gate.decrypt(b"ct", vec![], None).await;
        assert!(matches!(result, Err(KmsError::Denied(_))), "{result:?}");
        assert_eq!(record.stale_because, None);
        backend.fail_with(Some(KmsError::Unavailable("down now".into())));
        let (result, _) = gate.decrypt(b"ct", vec![], None).await;
        assert!(matches!(result, Err(KmsError::Unavailable(_))), "the refused plaintext is gone: {result:?}");
    }

    #[tokio::test]
    async fn a_slow_refresh_gives_up_early_when_a_stale_plaintext_is_at_hand() {
        let backend = Arc::new(Scripted::default());
        let gate = cached_gate(&backend, Duration::from_millis(20), Duration::from_secs(60));
        assert!(gate.decrypt(b"ct", vec![], None).await.0.is_ok());
        tokio::time::sleep(Duration::from_millis(30)).await;
        let slow = Arc::new(Scripted { delay: Duration::from_secs(30), ..Scripted::default() });
        let gate = SecretGate { backend: slow, ..gate };
        let started = Instant::now();
        let (result, record) = gate.decrypt(b"ct", vec![], Some(Instant::now() + Duration::from_secs(20))).await;
        assert!(result.is_ok());
        assert_eq!(record.cache, CacheUse::Stale);
        assert!(started.elapsed() < STALE_REFRESH_BUDGET + Duration::from_millis(500), "{:?}", started.elapsed());
    }
}
