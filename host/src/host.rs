//! The host: one guest component, a key service behind the host's policy, and the configuration every invocation
//! of the guest runs under.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::Instrument as _;

use crate::bindings::HandlerContext;
use crate::error::{InvokeError, check_event};
use crate::kms::{DecryptRecord, KmsBackend, KmsError, KmsGate, KmsPolicy, PolicyError};
use crate::sandbox::KeyOperationRecord;
use crate::sandbox::budget::Budget;
use crate::sandbox::{
    ComponentSource, FreshInstance, InvalidLimits, Limits, LoadError, Run, RunRequest, Sandbox, UsedInstance,
};

/// Most time prefetching may take at init, for all secrets together (Lambda gives init 10 s in all).
pub const PREFETCH_BUDGET: Duration = Duration::from_secs(3);

/// Most time an instance made ahead of its invocation may take ([`Host::instance`]), or the time limit if less: a
/// guest whose start takes longer is instantiated by each invocation, in its own time, rather than delaying every
/// poll.
const AHEAD_OF_TIME: Duration = Duration::from_millis(100);

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

/// How a [`Host`] runs its guest: limits, the guest's environment, and the `kms` capability's policy.
#[derive(Debug, Clone, Default)]
pub struct HostConfig {
    /// Limits of every invocation.
    pub limits: Limits,
    /// The guest's whole environment: nothing else of the host's environment reaches it.
    pub guest_env: Vec<(String, String)>,
    /// Every setting of the `kms` capability.
    pub kms: KmsPolicy,
}

impl HostConfig {
    /// Checks the whole configuration, as [`Host::new`] does, without building a host: for parsers that want to
    /// word the errors in their own terms.
    ///
    /// # Errors
    /// As [`Host::new`]'s configuration errors.
    pub fn check(&self) -> Result<(), HostError> {
        self.validate()?;
        self.kms.check(&self.guest_env)?;
        Ok(())
    }

    pub(crate) fn validate(&self) -> Result<(), HostError> {
        self.limits.validate()?;
        for (name, _) in &self.guest_env {
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(HostError::GuestEnv(format!("guest env var name {name:?} is not a valid name")));
            }
            if CREDENTIAL_ENV_VARS.contains(&name.as_str()) {
                return Err(HostError::GuestEnv(format!(
                    "guest env var {name} holds AWS credentials; guests never get them"
                )));
            }
        }
        Ok(())
    }
}

/// Why a host could not be built.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The limits are out of range.
    #[error("invalid limits: {0}")]
    Limits(#[from] InvalidLimits),
    /// The guest's environment is unusable.
    #[error("invalid host configuration: {0}")]
    GuestEnv(String),
    /// The `kms` policy cannot work with this guest.
    #[error("invalid host configuration: {0}")]
    Policy(#[from] PolicyError),
    /// The component cannot be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A secret named for prefetching could not be decrypted.
    #[error("cannot prefetch {name}: {reason}")]
    Prefetch {
        /// The guest env var.
        name: String,
        /// Why: bad base64, or the key service's refusal.
        reason: String,
    },
}

/// [`Host::prefetch`], for the parts of a host: decrypts the `names` guest variables' ciphertexts through `gate`.
pub(crate) async fn prefetch(gate: &KmsGate, names: &[String]) -> Result<(), HostError> {
    if names.is_empty() {
        return Ok(());
    }
    let deadline = Instant::now() + PREFETCH_BUDGET;
    let span = tracing::info_span!("prefetch");
    async {
        // The policy was checked: every name is a guest env var.
        let values = names.iter().filter_map(|name| Some((name, gate.guest_var(name)?)));
        for (i, (name, value)) in values.enumerate() {
            let fail = |reason: String| HostError::Prefetch { name: name.clone(), reason };
            let ciphertext =
                keyward_base64::decode(value).map_err(|e| fail(format!("its value is not base64: {e}")))?;
            match gate.decrypt(&ciphertext, Vec::new(), Some(deadline)).await.0 {
                Ok(_) => {}
                Err(KmsError::Unavailable(reason)) => {
                    let skipped = names[i..].join(", ");
                    tracing::warn!(
                        skipped,
                        reason,
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
    /// Every decrypt the guest asked for, in order (opening a key handle is one).
    pub decrypts: Vec<DecryptRecord>,
    /// Every operation the guest asked of a key handle, in order.
    pub key_operations: Vec<KeyOperationRecord>,
    /// Wall time from the event's arrival to the response.
    pub elapsed: Duration,
    /// Where that time went.
    pub phases: Phases,
    /// The guest's instance, torn down when dropped: after the response is sent, in Lambda mode.
    pub instance: UsedInstance,
}

/// Where an invocation's time went, in wall time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Phases {
    /// From a free slot of the pool to the guest's instance, ready to be called (in Lambda mode, made before the
    /// invocation was asked for: then not part of [`Invocation::elapsed`]).
    pub instantiate: Duration,
    /// The guest's `handle` call, its decrypts included.
    pub guest: Duration,
    /// From the guest's return to the [`Invocation`]: the response's checks, the guest's output to the log,
    /// masking, the invocation's log line.
    pub response: Duration,
}

/// Runs one guest component: a fresh sandboxed instance per invocation, with only the `kms` capability.
#[derive(Debug)]
pub struct Host {
    sandbox: Sandbox,
    gate: KmsGate,
    prefetch: Vec<String>,
}

impl Host {
    /// Builds a host for a component's bytes, decrypting through `kms`.
    ///
    /// # Errors
    /// [`HostError::Limits`], [`HostError::GuestEnv`] or [`HostError::Policy`] for unusable configuration,
    /// [`HostError::Load`] for a component that cannot run here.
    pub fn new(component: &[u8], kms: Arc<dyn KmsBackend>, config: HostConfig) -> Result<Self, HostError> {
        Self::build(ComponentSource::Bytes(component), kms, config)
    }

    fn build(component: ComponentSource<'_>, kms: Arc<dyn KmsBackend>, config: HostConfig) -> Result<Self, HostError> {
        config.validate()?;
        let gate = KmsGate::new(kms, &config.kms, &config.guest_env)?;
        let sandbox = Sandbox::new(component, config.limits.clone(), config.kms.guest_plaintext)?;
        Ok(Self::from_parts(sandbox, gate, config))
    }

    /// A host of parts built apart (Lambda's init builds them at once), `config` validated and the gate made from
    /// its policy.
    pub(crate) fn from_parts(sandbox: Sandbox, gate: KmsGate, config: HostConfig) -> Self {
        Self { sandbox, gate, prefetch: config.kms.prefetch }
    }

    /// Decrypts the ciphertexts (base64) of the policy's [`prefetch`](KmsPolicy::prefetch) variables now, with the
    /// stamped context alone, so that the guest's first decrypts of them are cache hits.
    ///
    /// Prefetching is an optimisation: when the key service is `unavailable` (unreachable, throttling, or slower
    /// than [`PREFETCH_BUDGET`] for all of them), the rest are skipped with one warning line, and the first
    /// invocations decrypt them. A refusal is a configuration mistake and fails.
    ///
    /// # Errors
    /// [`HostError::Prefetch`] naming the variable whose value is not base64, or that the key service refused
    /// (`denied`, `invalid-ciphertext`).
    pub async fn prefetch(&self) -> Result<(), HostError> {
        prefetch(&self.gate, &self.prefetch).await
    }

    /// Like [`Host::new`], reading the component from a file.
    ///
    /// # Errors
    /// As [`Host::new`], and [`LoadError::Io`] when the file cannot be read. A precompiled component is mapped
    /// into memory, not read.
    pub fn from_file(path: &Path, kms: Arc<dyn KmsBackend>, config: HostConfig) -> Result<Self, HostError> {
        Self::build(ComponentSource::File(path), kms, config)
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
        self.invoke_in(&mut None, event.as_ref(), ctx).await
    }

    /// A fresh instance of the guest, made ahead of the invocation it is for (Lambda mode makes the next one before
    /// it asks for the invocation), within [`Host::ahead_of_time`]; `None` when it cannot be made in that time (the
    /// invocation then makes its own, in its own time, and reports why it cannot).
    pub(crate) async fn instance(&self) -> Option<FreshInstance> {
        let budget = Budget::new(self.ahead_of_time(), None).ok()?;
        self.sandbox.instance(&self.gate, budget).await.ok()
    }

    /// The most time an instance made ahead of its invocation may take: 100 ms, or the time limit if less.
    pub(crate) fn ahead_of_time(&self) -> Duration {
        self.limits().timeout.min(AHEAD_OF_TIME)
    }

    /// [`Host::invoke`], in the instance `fresh` holds if it holds one (taken only when the guest runs: the
    /// instance of an event refused is left for the next), else in one made now.
    pub(crate) async fn invoke_in(
        &self,
        fresh: &mut Option<FreshInstance>,
        event: &[u8],
        ctx: InvocationContext,
    ) -> Invocation {
        let span = tracing::info_span!("invoke", request_id = %ctx.request_id);
        async move {
            let started = Instant::now();
            let run = match self.prepare(event, ctx) {
                Ok(request) => match fresh.take() {
                    Some(fresh) => self.sandbox.run_in(fresh, request).await,
                    None => self.sandbox.run(&self.gate, request).await,
                },
                Err(e) => Run::refused(e),
            };
            let elapsed = started.elapsed();
            match &run.result {
                Ok(response) => tracing::debug!(elapsed_ms = elapsed.as_millis(), response_bytes = response.len(), "invocation succeeded"),
                Err(e) => tracing::warn!(elapsed_ms = elapsed.as_millis(), error_type = e.error_type(), error = %e, "invocation failed"),
            }
            let phases = Phases { instantiate: run.instantiate, guest: run.guest, response: run.returned.elapsed() };
            Invocation {
                result: run.result,
                decrypts: run.decrypts,
                key_operations: run.key_operations,
                elapsed: started.elapsed(),
                phases,
                instance: run.instance,
            }
        }
        .instrument(span)
        .await
    }

    /// Checks the event and works out the invocation's time.
    fn prepare<'a>(&self, event: &'a [u8], ctx: InvocationContext) -> Result<RunRequest<'a>, InvokeError> {
        let event = check_event(event)?;
        let budget = Budget::new(self.limits().timeout, ctx.deadline)?;
        Ok(RunRequest {
            event,
            context: HandlerContext {
                request_id: ctx.request_id,
                function_arn: ctx.function_arn,
                deadline_ms: budget.deadline_ms(),
            },
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
