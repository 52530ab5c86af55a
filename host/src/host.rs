//! The host: one guest component, a key service behind the host's policy, and the configuration every invocation
//! of the guest runs under.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::Instrument as _;

use crate::bindings::HandlerContext;
use crate::context::EncryptionContext;
use crate::error::{InvokeError, check_event};
use crate::kms::secrets::{ASYMMETRIC_ALGORITHMS, SecretTable};
use crate::kms::{DecryptRecord, KmsBackend, KmsError, KmsGate, PlaintextCache, SecretSettings, cache};
use crate::sandbox::budget::Budget;
use crate::sandbox::{Limits, LoadError, RunRequest, Sandbox, read_component};

/// Most time prefetching may take at init, for all secrets together (Lambda gives init 10 s in all).
pub const PREFETCH_BUDGET: Duration = Duration::from_secs(3);

/// Environment variables that hold AWS credentials: never handed to a guest, whatever the configuration says.
pub const CREDENTIAL_ENV_VARS: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
];

/// How a [`Host`] runs its guest.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Limits of every invocation.
    pub limits: Limits,
    /// The guest's whole environment: nothing else of the host's environment reaches it.
    pub guest_env: Vec<(String, String)>,
    /// Pairs merged into every decrypt the guest makes.
    pub stamped_context: EncryptionContext,
    /// How long a decrypted secret is served from the cache; zero (the default) disables the cache.
    pub cache_ttl: Duration,
    /// How long past its TTL a cached secret is still served while the key service is unavailable (never when it
    /// refuses); zero serves nothing stale. Default: [`cache::DEFAULT_STALE`].
    pub cache_stale: Duration,
    /// Most secrets the cache holds.
    pub cache_max_entries: usize,
    /// Settings of their own for the ciphertexts in some guest env vars (by name): keys, stamped context,
    /// algorithm. A setting follows the ciphertext's bytes, however the guest hands them over.
    pub secrets: Vec<(String, SecretSettings)>,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            guest_env: Vec::new(),
            stamped_context: EncryptionContext::new(),
            cache_ttl: Duration::ZERO,
            cache_stale: cache::DEFAULT_STALE,
            cache_max_entries: cache::DEFAULT_MAX_ENTRIES,
            secrets: Vec::new(),
        }
    }
}

impl HostConfig {
    fn validate(&self) -> Result<(), HostError> {
        self.limits.validate().map_err(HostError::Config)?;
        for (name, _) in &self.guest_env {
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(HostError::Config(format!("guest env var name {name:?} is not a valid name")));
            }
            if CREDENTIAL_ENV_VARS.contains(&name.as_str()) {
                return Err(HostError::Config(format!(
                    "guest env var {name} holds AWS credentials; guests never get them"
                )));
            }
        }
        for (name, settings) in &self.secrets {
            if let Some(algorithm) = &settings.algorithm {
                if !ASYMMETRIC_ALGORITHMS.contains(&algorithm.as_str()) {
                    return Err(HostError::Config(format!(
                        "secret {name}: {algorithm:?} is not an asymmetric KMS encryption algorithm ({})",
                        ASYMMETRIC_ALGORITHMS.join(", ")
                    )));
                }
                if settings.stamped_context.as_ref().is_some_and(|c| !c.is_empty()) {
                    return Err(HostError::Config(format!(
                        "secret {name}: an asymmetric KMS key takes no encryption context, and {algorithm} is an \
                         asymmetric algorithm: give it no context"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The ciphertexts of the configured secrets, with their settings.
    fn secret_table(&self) -> Result<SecretTable, HostError> {
        let mut table = SecretTable::default();
        for (name, settings) in &self.secrets {
            let value = self.guest_env.iter().find(|(n, _)| n == name).map(|(_, v)| v).ok_or_else(|| {
                HostError::Config(format!("secret {name} has settings, but is not one of the guest's env vars"))
            })?;
            let ciphertext = keyward_base64::decode(value)
                .map_err(|e| HostError::Config(format!("secret {name}: its value is not base64: {e}")))?;
            table.insert(&ciphertext, name, settings.clone());
        }
        Ok(table)
    }
}

/// Why a host could not be built.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The configuration is unusable.
    #[error("invalid host configuration: {0}")]
    Config(String),
    /// The component cannot be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A secret named for prefetching could not be decrypted.
    #[error("cannot prefetch {name}: {reason}")]
    Prefetch {
        /// The guest env var.
        name: String,
        /// Why: a missing variable, bad base64, or the key service's error.
        reason: String,
    },
}

/// Facts about one invocation, given to the guest.
#[derive(Debug, Clone)]
pub struct InvocationContext {
    /// The request id (Lambda's, or a random one).
    pub request_id: String,
    /// The function's ARN.
    pub function_arn: String,
    /// When the caller gives up; the guest's time limit is the earlier of this and [`Limits::timeout`].
    pub deadline: Option<SystemTime>,
}

impl InvocationContext {
    /// A context for a local run: a random request id and no deadline of its own.
    pub fn local(function_arn: impl Into<String>) -> Self {
        Self { request_id: random_request_id(), function_arn: function_arn.into(), deadline: None }
    }
}

/// The outcome of one invocation, with what the host saw of it.
#[derive(Debug)]
pub struct Invocation {
    /// The response JSON, or why there is none.
    pub result: Result<String, InvokeError>,
    /// Every decrypt the guest asked for, in order.
    pub decrypts: Vec<DecryptRecord>,
    /// Wall time from instantiation to response.
    pub elapsed: Duration,
}

/// Runs one guest component: a fresh sandboxed instance per invocation, with only the `kms` capability.
#[derive(Debug)]
pub struct Host {
    sandbox: Sandbox,
    gate: KmsGate,
    guest_env: Vec<(String, String)>,
}

impl Host {
    /// Builds a host for a component's bytes, decrypting through `kms`.
    ///
    /// # Errors
    /// [`HostError::Config`] for unusable configuration, [`HostError::Load`] for a component that cannot run here.
    pub fn new(component: &[u8], kms: Arc<dyn KmsBackend>, config: HostConfig) -> Result<Self, HostError> {
        config.validate()?;
        let secrets = config.secret_table()?;
        let sandbox = Sandbox::new(component, config.limits)?;
        let mut gate = KmsGate::new(kms, config.stamped_context).with_secrets(secrets);
        if !config.cache_ttl.is_zero() {
            gate = gate.with_cache(Arc::new(PlaintextCache::new(
                config.cache_ttl,
                config.cache_stale,
                config.cache_max_entries,
            )));
        }
        Ok(Self { sandbox, gate, guest_env: config.guest_env })
    }

    /// Decrypts the ciphertexts (base64) in these guest env vars now, with the stamped context alone, so that
    /// the guest's first decrypts of them are cache hits. Needs the cache.
    ///
    /// Prefetching is an optimisation: when the key service is `unavailable` (unreachable, throttling, or slower
    /// than [`PREFETCH_BUDGET`] for all of them), the rest are skipped with one warning line, and the first
    /// invocations decrypt them. A refusal is a configuration mistake and fails.
    ///
    /// # Errors
    /// [`HostError::Config`] without a cache; [`HostError::Prefetch`] naming the variable that is missing, not
    /// base64, or refused by the key service (`denied`, `invalid-ciphertext`).
    pub async fn prefetch(&self, names: &[String]) -> Result<(), HostError> {
        if names.is_empty() {
            return Ok(());
        }
        if !self.gate.has_cache() {
            return Err(HostError::Config("prefetching needs the plaintext cache, which is disabled".into()));
        }
        let deadline = Instant::now() + PREFETCH_BUDGET;
        let span = tracing::info_span!("prefetch");
        async {
            for (i, name) in names.iter().enumerate() {
                let fail = |reason: String| HostError::Prefetch { name: name.clone(), reason };
                let value = self
                    .guest_env
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v)
                    .ok_or_else(|| fail("it is not one of the guest's env vars".into()))?;
                let ciphertext =
                    keyward_base64::decode(value).map_err(|e| fail(format!("its value is not base64: {e}")))?;
                match self.gate.decrypt(&ciphertext, Vec::new(), Some(deadline)).await.0 {
                    Ok(_) => {}
                    Err(KmsError::Unavailable(reason)) => {
                        let skipped = names[i..].join(", ");
                        tracing::warn!(
                            skipped, reason,
                            "prefetch skipped: the key service is unavailable; invocations will decrypt these themselves"
                        );
                        break;
                    }
                    Err(refused) => return Err(fail(refused.to_string())),
                }
            }
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// Like [`Host::new`], reading the component from a file.
    ///
    /// # Errors
    /// As [`Host::new`], and [`LoadError::Io`] when the file cannot be read.
    pub fn from_file(path: &Path, kms: Arc<dyn KmsBackend>, config: HostConfig) -> Result<Self, HostError> {
        Self::new(&read_component(path)?, kms, config)
    }

    /// The limits every invocation runs under.
    pub fn limits(&self) -> &Limits {
        self.sandbox.limits()
    }

    /// Runs the guest's handler on `event` (UTF-8 JSON) in a fresh instance.
    ///
    /// An event that is not UTF-8 JSON fails with [`InvokeError::InvalidEvent`], and a deadline already past with
    /// [`InvokeError::DeadlineExceeded`], without running the guest.
    pub async fn invoke(&self, event: impl AsRef<[u8]>, ctx: InvocationContext) -> Invocation {
        let span = tracing::info_span!("invoke", request_id = %ctx.request_id);
        async move {
            let started = Instant::now();
            let (result, decrypts) = match self.prepare(event.as_ref(), ctx) {
                Ok(request) => self.sandbox.run(request).await,
                Err(e) => (Err(e), Vec::new()),
            };
            let elapsed = started.elapsed();
            match &result {
                Ok(response) => tracing::info!(elapsed_ms = elapsed.as_millis(), response_bytes = response.len(), "invocation succeeded"),
                Err(e) => tracing::warn!(elapsed_ms = elapsed.as_millis(), error_type = e.error_type(), error = %e, "invocation failed"),
            }
            Invocation { result, decrypts, elapsed }
        }
        .instrument(span)
        .await
    }

    /// Checks the event and works out the invocation's time.
    fn prepare<'a>(&'a self, event: &'a [u8], ctx: InvocationContext) -> Result<RunRequest<'a>, InvokeError> {
        let event = check_event(event)?;
        let budget = Budget::new(self.limits().timeout, ctx.deadline)?;
        Ok(RunRequest {
            event,
            context: HandlerContext {
                request_id: ctx.request_id,
                function_arn: ctx.function_arn,
                deadline_ms: budget.deadline_ms(),
            },
            env: &self.guest_env,
            gate: self.gate.clone(),
            budget,
        })
    }
}

/// A random UUID-shaped id (version 4).
fn random_request_id() -> String {
    let mut b = [0u8; 16];
    // An id, not a secret: if the OS random source fails, the clock's nanoseconds still tell runs apart.
    if getrandom::fill(&mut b).is_err() {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
        b = nanos.to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = crate::kms::hex(&b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}
