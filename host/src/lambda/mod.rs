//! Lambda mode: the `keyward` binary as the function's `bootstrap`. Configuration comes from the function's
//! environment; each event runs the guest once; every failure of an invocation (the guest's, the caller's event, an
//! odd header, a key service outage) is a function error for that invocation, never the end of the process.
//!
//! The `KEYWARD_*` variables and their defaults are listed once, in docs/settings.md; a test holds that table and
//! the parsers [`LambdaConfig::from_vars`] calls to each other.

mod config;
mod diagnostic;
mod runtime_api;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub use crate::sandbox::LAMBDA_PAYLOAD_LIMIT;
pub use config::{LambdaConfig, MAX_CONCURRENCY};
pub use diagnostic::Diagnostic;
pub use runtime_api::RuntimeApiError;
use runtime_api::{Next, NextInvocation, RuntimeApi};

use crate::InvokeError;
use crate::aws::{AwsError, AwsKms, AwsSecretStore};
use crate::host::{Host, HostError, Invocation, InvocationContext};
use crate::logging;
use crate::sandbox::{ComponentSource, FreshInstance, LoadError, Sandbox};
use crate::secrets::Backends;
use crate::settings::SettingError;

/// Consecutive failed polls of the Runtime API after which it is taken to be gone (about 11 s of retries).
const MAX_POLL_FAILURES: u32 = 10;
/// The first pause after a failed poll; it doubles with each failure, up to 2 s.
const POLL_BACKOFF: Duration = Duration::from_millis(100);

/// Why Lambda mode stopped.
#[derive(Debug, thiserror::Error)]
pub enum LambdaError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] SettingError),
    /// The KMS client could not be built (key, endpoint, region).
    #[error(transparent)]
    Kms(#[from] AwsError),
    /// The host could not be built (component, prefetch).
    #[error(transparent)]
    Host(#[from] HostError),
    /// The Runtime API is missing or gone.
    #[error(transparent)]
    RuntimeApi(#[from] RuntimeApiError),
}

/// The `bootstrap` process, logging already set up: reads the configuration from the environment, runs [`run`]
/// on an async runtime (one thread, or as many as the machine has for concurrent invocations), then prints its
/// error in one line. Exit code 0 when the Runtime API went away after serving, 2 when init or the Runtime API
/// failed.
pub fn main() -> std::process::ExitCode {
    // Variables that are not UTF-8 cannot be settings or guest variables; they are left out.
    let vars = std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect();
    let config = LambdaConfig::from_vars(&vars);
    let runtime = match config.as_ref().map_or(1, |c| c.concurrency) {
        1 => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        _ => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
    };
    let result = match runtime {
        Ok(runtime) => runtime.block_on(run(config)).map_err(|e| e.to_string()),
        Err(e) => Err(format!("cannot start the async runtime: {e}")),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyward: error: {}", crate::error::one_line(&e));
            std::process::ExitCode::from(2)
        }
    }
}

/// Builds the host as [`Host::new`] does (settings checked once, the component loaded, each capability's shared
/// state made), and prefetches secrets. The component loads on a blocking thread while the KMS client is made and
/// the secrets are prefetched (network round trips, mostly waiting).
///
/// # Errors
/// A [`LambdaError`] naming what is wrong: the settings' or the KMS client's error first, then the component's,
/// then the prefetch's.
pub async fn init(config: LambdaConfig) -> Result<Host, LambdaError> {
    let LambdaConfig { component, host, aws, kms, .. } = config;
    let checked = host.checked()?;
    let (limits, plaintext) = checked.sandbox();
    let loading =
        tokio::task::spawn_blocking(move || Sandbox::new(ComponentSource::File(&component), limits, plaintext));
    let sdk_config = aws.sdk_config().await?;
    let kms = AwsKms::new(&sdk_config, kms)?;
    kms.check_secret_keys(&checked.secrets.settings.secrets)?;
    checked.secrets.check_sealed_for(false)?;
    let mut backends = Backends::from(Arc::new(kms));
    // Only a function with secrets kept by a service pays for those clients.
    if checked.secrets.settings.sources.iter().any(|(_, source)| source.needs_store()) {
        backends = backends.with_store(Arc::new(AwsSecretStore::from_sdk_config(&sdk_config)));
    }
    let caps = checked.capabilities(backends);
    let prefetched = caps.secrets.prefetch().await;
    let sandbox = loading.await.map_err(|e| LoadError::Engine(format!("the component loader stopped: {e}")));
    let sandbox = sandbox.and_then(|loaded| loaded).map_err(HostError::from)?;
    prefetched.map_err(HostError::from)?;
    Ok(Host::assemble(sandbox, caps))
}

/// Runs as the Lambda `bootstrap` with `config` (read by [`LambdaConfig::from_vars`]): builds the host, then serves
/// invocations until the Runtime API goes away. A failed init is reported to the Runtime API's init-error endpoint,
/// then returned.
///
/// # Errors
/// The init error, or the Runtime API's when it is missing or has stopped answering.
pub async fn run(config: Result<LambdaConfig, SettingError>) -> Result<(), LambdaError> {
    let started = Instant::now();
    let api = RuntimeApi::new(std::env::var("AWS_LAMBDA_RUNTIME_API").ok().as_deref())?;
    let component = config.as_ref().map(|c| c.component.display().to_string()).unwrap_or_default();
    let concurrency = config.as_ref().map_or(1, |c| c.concurrency);
    let host = match config {
        Ok(config) => init(config).await,
        Err(e) => Err(e.into()),
    };
    let host = match host {
        Ok(host) => host,
        // The caller prints the error once; here it is only reported to the Runtime API.
        Err(e) => {
            if let Err(report) = api.init_error(&Diagnostic::init_error(&e.to_string())).await {
                tracing::warn!(error = %report, "cannot report the init error to the Runtime API");
            }
            return Err(e);
        }
    };
    let world = host.world().export();
    tracing::info!(init_ms = started.elapsed().as_millis(), component, world, concurrency, "keyward ready");
    if concurrency == 1 {
        return Ok(serve(&api, &host, &AtomicBool::new(false)).await?);
    }
    // Lambda Managed Instances: as many polling loops as invocations may run at once, each with its own instance.
    let (api, host, told) = (Arc::new(api), Arc::new(host), Arc::new(AtomicBool::new(false)));
    let mut loops = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (api, host, told) = (api.clone(), host.clone(), told.clone());
        loops.spawn(async move { serve(&api, &host, &told).await });
    }
    // Every loop ends the same way, when the Runtime API has gone: the first to end ends the process.
    match loops.join_next().await {
        Some(Ok(ended)) => Ok(ended?),
        Some(Err(stopped)) => Err(RuntimeApiError::LoopStopped(stopped.to_string()).into()),
        None => Ok(()),
    }
}

/// Fetches invocations one after another and answers each with a response or a function error. Returns only
/// when the Runtime API cannot be reached any more. `told` is whether a loop has said that instances cannot be made
/// ahead (once for all loops).
async fn serve(api: &RuntimeApi, host: &Host, told: &AtomicBool) -> Result<(), RuntimeApiError> {
    let mut failures = 0;
    let (mut fresh, mut ahead) = (None, true);
    loop {
        // The next invocation's instance is made before it is asked for, not while: Lambda may freeze the process
        // as soon as `/next` is called, and work left for then would be done at that invocation's expense. The pool
        // holds one instance per loop (`max_instances` is the concurrency), so this one keeps no other waiting.
        // A guest whose instance cannot be made so (its start fails, or is slow) would make every invocation wait
        // for the attempt: after one, invocations make their own until one does so in time.
        if ahead && fresh.is_none() {
            fresh = host.instance().await;
            ahead = fresh.is_some();
            if !ahead && !told.swap(true, Ordering::Relaxed) {
                tracing::info!(
                    "the guest's instance could not be made ahead of its invocation (its start failed or took over \
                     {} ms): invocations make their own",
                    host.ahead_of_time().as_millis()
                );
            }
        }
        let invocation = match api.next().await {
            Ok(Next::Invocation(invocation)) => invocation,
            Ok(Next::Unanswerable(why)) => {
                tracing::error!("skipped an invocation that cannot be answered: {why}");
                tokio::time::sleep(POLL_BACKOFF).await;
                continue;
            }
            Err(e) => {
                failures += 1;
                if failures >= MAX_POLL_FAILURES {
                    return Err(e);
                }
                let pause = POLL_BACKOFF.saturating_mul(1 << (failures - 1).min(5)).min(Duration::from_secs(2));
                tracing::warn!(error = %e, retry_in_ms = pause.as_millis(), "cannot fetch the next invocation");
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        failures = 0;
        // The invocation's log records wait until its outcome is out: the caller need not wait for the log.
        let makes_its_own = fresh.is_none();
        let (ran, log) = logging::hold_back(handle(host, &mut fresh, &invocation)).await;
        // One that made its own instance, in time, and ran (a start slowed once by a busy machine, say): the next
        // is made ahead again.
        if let (true, Ok(ran)) = (makes_its_own, &ran) {
            ahead = ran.result.is_ok() && ran.phases.instantiate < host.ahead_of_time();
        }
        let (result, failure_answer, instance) = match ran {
            Ok(ran) => (ran.result, ran.failure_answer, Some(ran.instance)),
            Err(e) => (Err(e), None, None),
        };
        let delivered = match (result, failure_answer) {
            (Ok(response), _) => api.respond(&invocation, response).await,
            // An HTTP component's failure is answered with a 500 (its error and error type are in the log).
            (Err(_), Some(answer)) => api.respond(&invocation, answer).await,
            (Err(e), None) => api.fail(&invocation, &Diagnostic::from(&e)).await,
        };
        log.write();
        // The response is out: now the instance is torn down (its memory given back, its pool slot freed). On
        // another thread it would cost more than it saves: unmapping interrupts this thread (TLB shootdown) anyway.
        drop(instance);
        if let Err(e) = delivered {
            tracing::error!(request_id = %invocation.request_id, error = %e, "cannot deliver the invocation's outcome");
        }
    }
}

/// Runs the invocation's event, in `fresh`'s instance if it holds one, or tells why it cannot run (its event could
/// not be read).
async fn handle(
    host: &Host,
    fresh: &mut Option<FreshInstance>,
    invocation: &NextInvocation,
) -> Result<Invocation, InvokeError> {
    let event = match &invocation.event {
        Ok(event) => event,
        Err(e) => {
            tracing::warn!(request_id = %invocation.request_id, error_type = e.error_type(), error = %e, "invocation failed");
            return Err(e.clone());
        }
    };
    let ctx = InvocationContext {
        request_id: invocation.request_id.clone(),
        function_arn: invocation.function_arn.clone(),
        deadline: invocation.deadline,
    };
    Ok(host.invoke_in(fresh, event, ctx).await)
}
