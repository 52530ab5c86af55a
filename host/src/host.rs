//! The host: one guest component, each capability's shared state, and the settings every invocation of the guest
//! runs under. Built from settings checked once ([`HostSettings`]) by the same steps, whether by the command line,
//! the stub host or Lambda mode (which overlaps loading the component with reaching the key service).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tracing::Instrument as _;

use crate::bindings::HandlerContext;
use crate::capability::Capabilities;
use crate::capability::http::OutboundRecord;
use crate::capability::keys::KeyOperationRecord;
use crate::error::{InvokeError, check_event};
use crate::incoming::{self, Answer, EventRequest, LambdaContext, Shape};
use crate::sandbox::budget::Budget;
use crate::sandbox::{
    ComponentSource, FreshInstance, Input, Limits, LoadError, Output, Run, RunRequest, Sandbox, UsedInstance, World,
    check_response_size,
};
use crate::secrets::PrefetchError;
use crate::secrets::{Backends, DecryptRecord};
use crate::settings::{HostSettings, SettingError};

/// Most time an instance made ahead of its invocation may take ([`Host::instance`]), or the time limit if less: a
/// guest whose start takes longer is instantiated by each invocation, in its own time, rather than delaying every
/// poll.
const AHEAD_OF_TIME: Duration = Duration::from_millis(100);

/// Why a host could not be built.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A setting cannot work: the error names it.
    #[error(transparent)]
    Setting(#[from] SettingError),
    /// The component cannot be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A secret named for prefetching could not be fetched.
    #[error(transparent)]
    Prefetch(#[from] PrefetchError),
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

/// The outcome of one invocation, with what the host saw of it: `T` is the response JSON for a Lambda event
/// ([`Host::invoke`]), the HTTP response for a request ([`Host::handle_request`]).
#[derive(Debug)]
pub struct Invocation<T = String> {
    /// The response, or why there is none.
    pub result: Result<T, InvokeError>,
    /// For an HTTP component that failed on an HTTP request (an event's, or the local server's): the
    /// `500 Internal Server Error` answer to send instead, shaped for the event's service (Lambda mode sends it
    /// rather than a function error, for which API Gateway, a Function URL and an ALB answer a bare 502). Its body
    /// is one line naming the error type and the request id; the error is in the log. `None` otherwise.
    pub failure_answer: Option<T>,
    /// Every decrypt the guest asked for, in order (opening a key handle is one).
    pub decrypts: Vec<DecryptRecord>,
    /// Every operation the guest asked of a key handle, in order.
    pub key_operations: Vec<KeyOperationRecord>,
    /// Every request the guest sent (or was refused), in order.
    pub outbound: Vec<OutboundRecord>,
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

/// Runs one guest component: a fresh sandboxed instance per invocation, with the host's capabilities.
#[derive(Debug)]
pub struct Host {
    sandbox: Sandbox,
    caps: Capabilities,
}

impl Host {
    /// Builds a host for a component's bytes, fetching secrets from `backends`: a key service (`Arc::new(key)`),
    /// or [`Backends`] with a store for secrets kept by a service.
    ///
    /// # Errors
    /// [`HostError::Setting`] naming a setting that cannot work (a stored secret without a store among them),
    /// [`HostError::Load`] for a component that cannot run here.
    pub fn new(component: &[u8], backends: impl Into<Backends>, settings: HostSettings) -> Result<Self, HostError> {
        Self::build(ComponentSource::Bytes(component), backends.into(), settings, None)
    }

    /// [`Host::new`], with outgoing requests going to `router` instead of the network: the stub host's.
    #[cfg(feature = "compiler")]
    pub(crate) fn routed(
        component: &[u8],
        backends: Backends,
        settings: HostSettings,
        router: Arc<dyn crate::capability::http::Router>,
    ) -> Result<Self, HostError> {
        Self::build(ComponentSource::Bytes(component), backends, settings, Some(router))
    }

    /// Like [`Host::new`], reading the component from a file.
    ///
    /// # Errors
    /// As [`Host::new`], and [`LoadError::Io`] when the file cannot be read. A precompiled component is mapped
    /// into memory, not read.
    pub fn from_file(path: &Path, backends: impl Into<Backends>, settings: HostSettings) -> Result<Self, HostError> {
        Self::build(ComponentSource::File(path), backends.into(), settings, None)
    }

    /// The settings checked (once), the component loaded, each capability's shared state made. Lambda mode does
    /// the same steps, loading the component while it reaches the key service.
    fn build(
        component: ComponentSource<'_>,
        backends: Backends,
        settings: HostSettings,
        router: Option<Arc<dyn crate::capability::http::Router>>,
    ) -> Result<Self, HostError> {
        let mut checked = settings.checked()?;
        if backends.store.is_none() {
            checked.secrets.needs_no_store()?;
        }
        checked.secrets.check_sealed_for(backends.kms.is_local_key())?;
        checked.http.router = router;
        let (limits, plaintext) = checked.sandbox();
        let sandbox = Sandbox::new(component, limits, plaintext)?;
        Ok(Self::assemble(sandbox, checked.capabilities(backends)))
    }

    /// A host of its parts.
    pub(crate) fn assemble(sandbox: Sandbox, caps: Capabilities) -> Self {
        Self { sandbox, caps }
    }

    /// Fetches the secrets named for prefetching ([`SecretsSettings::prefetch`](crate::SecretsSettings::prefetch))
    /// now, so that the guest's first decrypts of them are cache hits. Prefetching is an optimisation: when the key
    /// service is `unavailable` (or slower than [`PREFETCH_BUDGET`](crate::secrets::PREFETCH_BUDGET) for all of
    /// them), the rest are skipped with one warning line, and the first invocations fetch them.
    ///
    /// # Errors
    /// [`HostError::Prefetch`] naming the variable whose value is not base64, or that the key service refused.
    pub async fn prefetch(&self) -> Result<(), HostError> {
        Ok(self.caps.secrets.prefetch().await?)
    }

    /// The world of the component this host runs: keyward's handler, or the HTTP world.
    pub fn world(&self) -> World {
        self.sandbox.world()
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
        self.sandbox.instance(&self.caps, budget).await.ok()
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
        let request_id = ctx.request_id.clone();
        let prepared = self.prepare(event, ctx);
        let shape = prepared.as_ref().ok().and_then(|(_, shape)| *shape);
        let limits = self.limits();
        let json = |output| match (output, shape) {
            (Output::Json(json), _) => Ok(json),
            (Output::Http(answer), Some(shape)) => {
                let json = incoming::to_json(shape, answer.status, &answer.headers, &answer.body);
                check_response_size(json.len(), limits).map(|()| json)
            }
            (Output::Http(_), None) => Err(InvokeError::Instantiate("an HTTP response to no HTTP event".into())),
        };
        let failure = |error: &InvokeError| Some(incoming::failure(shape?, error.error_type(), &request_id));
        self.run(fresh, prepared.map(|(request, _)| request), &request_id, json, failure).await
    }

    /// Runs an HTTP component on `request` (an absolute URI: scheme, authority, path and query; the body whole) in
    /// a fresh instance, as [`Host::invoke`] runs it on a Lambda HTTP event's request: the local server's way in.
    /// A failure's [`Invocation::failure_answer`] is the `500` to send instead.
    ///
    /// A component of keyward's handler world fails with [`InvokeError::InvalidEvent`], and a deadline already past
    /// with [`InvokeError::DeadlineExceeded`], without running.
    pub async fn handle_request(
        &self,
        request: http::Request<Bytes>,
        ctx: InvocationContext,
    ) -> Invocation<http::Response<Bytes>> {
        let request_id = ctx.request_id.clone();
        let prepared = match self.sandbox.world() {
            World::Http => self.run_request(Input::Http(Box::new(request)), ctx),
            World::Handler => Err(InvokeError::InvalidEvent(
                "this component is of keyward's handler world, which takes Lambda events, not HTTP requests: \
                 export wasi:http/incoming-handler to be served over HTTP"
                    .into(),
            )),
        };
        let response = |output| match output {
            Output::Http(Answer { status, headers, body }) => {
                let mut response = http::Response::new(body);
                *response.status_mut() = status;
                *response.headers_mut() = headers;
                Ok(response)
            }
            Output::Json(_) => Err(InvokeError::Instantiate("a JSON response to an HTTP request".into())),
        };
        let failure = |error: &InvokeError| Some(incoming::failure_response(error.error_type(), &request_id));
        self.run(&mut None, prepared, &request_id, response, failure).await
    }

    /// Runs a prepared request (or reports why it was refused) in `fresh`'s instance or a new one; the guest's
    /// output becomes the invocation's `T` by `convert`, and a failure's answer, if there is one, by `failure`.
    async fn run<'a, T>(
        &self,
        fresh: &mut Option<FreshInstance>,
        prepared: Result<RunRequest<'a>, InvokeError>,
        request_id: &str,
        convert: impl FnOnce(Output) -> Result<T, InvokeError>,
        failure: impl FnOnce(&InvokeError) -> Option<T>,
    ) -> Invocation<T> {
        let span = tracing::info_span!("invoke", request_id = %request_id);
        async move {
            let started = Instant::now();
            let run = match prepared {
                Ok(request) => match fresh.take() {
                    Some(fresh) => self.sandbox.run_in(fresh, request).await,
                    None => self.sandbox.run(&self.caps, request).await,
                },
                Err(e) => Run::refused(e),
            };
            let result = run.result.and_then(convert);
            let elapsed = started.elapsed();
            match &result {
                Ok(_) => tracing::debug!(elapsed_ms = elapsed.as_millis(), "invocation succeeded"),
                Err(e) => tracing::warn!(elapsed_ms = elapsed.as_millis(), error_type = e.error_type(), error = %e, "invocation failed"),
            }
            let failure_answer = result.as_ref().err().and_then(failure);
            let phases = Phases { instantiate: run.instantiate, guest: run.guest, response: run.returned.elapsed() };
            Invocation {
                result,
                failure_answer,
                decrypts: run.decrypts,
                key_operations: run.key_operations,
                outbound: run.outbound,
                elapsed: started.elapsed(),
                phases,
                instance: run.instance,
            }
        }
        .instrument(span)
        .await
    }

    /// Checks the event (for an HTTP component: reads its request, and the shape its response takes) and works
    /// out the invocation's time.
    fn prepare<'a>(
        &self,
        event: &'a [u8],
        ctx: InvocationContext,
    ) -> Result<(RunRequest<'a>, Option<Shape>), InvokeError> {
        let event = check_event(event)?;
        match self.sandbox.world() {
            World::Handler => Ok((self.run_request(Input::Event(event), ctx)?, None)),
            World::Http => {
                let lambda = LambdaContext { request_id: &ctx.request_id };
                let EventRequest { request, shape } =
                    incoming::parse(event, lambda).map_err(|e| InvokeError::InvalidEvent(e.to_string()))?;
                Ok((self.run_request(Input::Http(Box::new(request)), ctx)?, Some(shape)))
            }
        }
    }

    /// The run of `input` in the invocation's time.
    fn run_request<'a>(&self, input: Input<'a>, ctx: InvocationContext) -> Result<RunRequest<'a>, InvokeError> {
        let budget = Budget::new(self.limits().timeout, ctx.deadline)?;
        Ok(RunRequest {
            input,
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
    let h = crate::secrets::hex(&b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}
