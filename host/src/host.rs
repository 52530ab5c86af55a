//! The host: one guest component, a key service behind the host's policy, and the configuration every invocation
//! of the guest runs under.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::Instrument as _;

use crate::bindings::HandlerContext;
use crate::context::EncryptionContext;
use crate::kms::{DecryptRecord, KmsBackend, KmsGate};
use crate::sandbox::{InvokeError, LimitExceeded, Limits, LoadError, RunRequest, Sandbox};

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
#[derive(Debug, Clone, Default)]
pub struct HostConfig {
    /// Limits of every invocation.
    pub limits: Limits,
    /// The guest's whole environment: nothing else of the host's environment reaches it.
    pub guest_env: Vec<(String, String)>,
    /// Pairs merged into every decrypt the guest makes.
    pub stamped_context: EncryptionContext,
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
        Ok(())
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
        let sandbox = Sandbox::new(component, config.limits)?;
        Ok(Self { sandbox, gate: KmsGate::new(kms, config.stamped_context), guest_env: config.guest_env })
    }

    /// Like [`Host::new`], reading the component from a file.
    ///
    /// # Errors
    /// As [`Host::new`], and [`LoadError::Io`] when the file cannot be read.
    pub fn from_file(path: &Path, kms: Arc<dyn KmsBackend>, config: HostConfig) -> Result<Self, HostError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Io { path: path.into(), source })?;
        Self::new(&bytes, kms, config)
    }

    /// The limits every invocation runs under.
    pub fn limits(&self) -> &Limits {
        self.sandbox.limits()
    }

    /// Runs the guest's handler on `event` (JSON) in a fresh instance.
    pub async fn invoke(&self, event: &str, ctx: InvocationContext) -> Invocation {
        let span = tracing::info_span!("invoke", request_id = %ctx.request_id);
        async move {
            let started = Instant::now();
            let now = SystemTime::now();
            let mut timeout = self.limits().timeout;
            if let Some(deadline) = ctx.deadline {
                timeout = timeout.min(deadline.duration_since(now).unwrap_or_default());
            }
            if timeout.is_zero() {
                let result = Err(LimitExceeded::Time { limit_ms: 0 }.into());
                return Invocation { result, decrypts: Vec::new(), elapsed: started.elapsed() };
            }
            let deadline_ms = (now + timeout).duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
            let request = RunRequest {
                event,
                context: HandlerContext {
                    request_id: ctx.request_id,
                    function_arn: ctx.function_arn,
                    deadline_ms: u64::try_from(deadline_ms).unwrap_or(u64::MAX),
                },
                env: &self.guest_env,
                gate: self.gate.clone(),
                timeout,
            };
            let (result, decrypts) = self.sandbox.run(request).await;
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
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}
