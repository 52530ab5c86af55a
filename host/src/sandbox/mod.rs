//! The sandbox: a wasmtime engine, one pre-linked guest component, and a fresh instance per invocation with WASI
//! granting nothing, bounded memory and time, and the host's capabilities ([`crate::capability`]).

pub(crate) mod budget;
mod component;
mod digest;
mod engine;
pub mod limits;
mod output;

use std::cell::LazyCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Engine, Store, Trap, UpdateDeadline};
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use budget::Budget;
pub(crate) use component::ComponentSource;
use component::GuestPre;
use component::error_line;
#[cfg(feature = "compiler")]
pub(crate) use component::read as read_component;
pub use component::{LoadError, World};
pub use digest::ComponentDigest;
use engine::EpochTicker;
#[cfg(feature = "compiler")]
pub use engine::{CompileTarget, Cpu};
#[cfg(feature = "cli")]
pub use limits::LimitFlags;
use limits::StoreLimiter;
pub use limits::{LAMBDA_PAYLOAD_LIMIT, LimitExceeded, Limits};
use output::GuestOutput;

use wasmtime_wasi_http::p2::bindings::Proxy;

use crate::bindings::{HandlerContext, SecretHandler};
use crate::capability::http::OutboundRecord;
use crate::capability::keys::KeyOperationRecord;
use crate::capability::kms::GuestPlaintext;
use crate::capability::{self, Capabilities};
use crate::error::InvokeError;
use crate::incoming::{self, Answer, Failure};
use crate::secrets::{BeforeInvocation, DecryptRecord};

/// What a store holds for one invocation: WASI's context and resource table, the memory limiter, the time, and
/// every capability's state (made from the host's [`Capabilities`]).
pub(crate) struct GuestState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    limiter: StoreLimiter,
    pub(crate) caps: capability::Instance,
    /// The time the guest runs in: its instantiation's until the invocation starts ([`GuestState::start`]).
    budget: Budget,
}

impl GuestState {
    /// The invocation starts: from now on the guest, the key service and host-side work run in its time, and the
    /// guest may ask for secrets.
    fn start(&mut self, budget: Budget) {
        self.budget = budget;
        self.caps.start(budget.kms_deadline());
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// What one guest run needs from the host.
#[derive(Debug)]
pub(crate) struct RunRequest<'a> {
    pub(crate) input: Input<'a>,
    pub(crate) context: HandlerContext,
    pub(crate) budget: Budget,
}

/// What the guest is given: the event, for a guest of keyward's handler world; a request (an event's, or one the
/// local server received), for an HTTP component.
#[derive(Debug)]
pub(crate) enum Input<'a> {
    Event(&'a str),
    Http(Box<http::Request<bytes::Bytes>>),
}

/// What the guest answered: its response JSON (checked to be JSON, within the response limit), or its HTTP
/// response (its body within the limit).
#[derive(Debug)]
pub(crate) enum Output {
    Json(String),
    Http(Answer),
}

/// A guest instance of either world.
enum Guest {
    Handler(SecretHandler),
    Http(Proxy),
}

/// A guest instance no invocation has run in yet, with its slot of the pool: made ahead of its invocation in
/// Lambda mode (before the next is asked for), or by the invocation itself.
pub(crate) struct FreshInstance {
    store: Store<GuestState>,
    guest: Guest,
    permit: tokio::sync::OwnedSemaphorePermit,
    output: [GuestOutput; 2],
    /// How long it took to make.
    instantiate: Duration,
}

impl std::fmt::Debug for FreshInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FreshInstance").field("instantiate", &self.instantiate).finish_non_exhaustive()
    }
}

/// What one guest run gave: the checked response or why there is none, every decrypt, key operation and outgoing
/// request the guest asked for (also when it failed), the instance to tear down, and where the time went.
pub(crate) struct Run {
    pub(crate) result: Result<Output, InvokeError>,
    pub(crate) decrypts: Vec<DecryptRecord>,
    pub(crate) key_operations: Vec<KeyOperationRecord>,
    pub(crate) outbound: Vec<OutboundRecord>,
    pub(crate) instance: UsedInstance,
    /// From a free instance to the guest's instance, ready.
    pub(crate) instantiate: Duration,
    /// The guest's `handle` call.
    pub(crate) guest: Duration,
    /// When the guest returned (or failed): the response path starts here.
    pub(crate) returned: Instant,
}

/// A used guest instance, torn down (its memory and tables given back to the pool, its slot to the next
/// invocation, the plaintexts it was handed zeroized) when dropped. Lambda mode drops it after sending the
/// response: resetting a guest's memory is work the caller need not wait for.
pub struct UsedInstance {
    _store: Option<Store<GuestState>>,
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
    _handed_out: Option<capability::kms::HandedOutAll>,
}

impl std::fmt::Debug for UsedInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsedInstance").finish_non_exhaustive()
    }
}

impl Run {
    /// A run that never had an instance.
    pub(crate) fn refused(error: InvokeError) -> Self {
        let instance = UsedInstance { _store: None, _permit: None, _handed_out: None };
        let zero = Duration::ZERO;
        Self {
            result: Err(error),
            decrypts: Vec::new(),
            key_operations: Vec::new(),
            outbound: Vec::new(),
            instance,
            instantiate: zero,
            guest: zero,
            returned: Instant::now(),
        }
    }
}

/// A compiled, linked guest, ready to be instantiated once per invocation.
pub(crate) struct Sandbox {
    engine: Engine,
    pre: GuestPre,
    limits: Limits,
    /// One permit per instance the pool holds ([`Limits::max_instances`]): a run waits for one, within its own
    /// time, rather than failing to instantiate when more invocations arrive at once than the pool holds. A permit
    /// goes back when its instance is torn down, which may be after the run ([`UsedInstance`]).
    instances: Arc<tokio::sync::Semaphore>,
    _ticker: EpochTicker,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Builds an engine for `limits`, then checks, compiles (or loads precompiled) and links `component`.
    pub(crate) fn new(
        component: ComponentSource<'_>,
        limits: Limits,
        plaintext: GuestPlaintext,
    ) -> Result<Self, LoadError> {
        let (engine, pre) = load(component, &limits, plaintext)?;
        let ticker = EpochTicker::start(engine.clone()).map_err(|e| LoadError::Engine(e.to_string()))?;
        let instances = Arc::new(tokio::sync::Semaphore::new(limits.max_instances as usize));
        Ok(Self { engine, pre, limits, instances, _ticker: ticker })
    }

    /// The limits guests run under.
    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The world of the guest.
    pub(crate) fn world(&self) -> World {
        self.pre.world()
    }

    /// Runs the guest's handler once in a fresh instance, made once one of the pool's slots is free.
    ///
    /// An invocation whose time runs out while every instance is busy fails with [`InvokeError::Busy`].
    pub(crate) async fn run(&self, caps: &Capabilities, request: RunRequest<'_>) -> Run {
        match self.instance(caps, request.budget).await {
            Ok(fresh) => self.run_in(fresh, request).await,
            Err(failed) => failed,
        }
    }

    /// A fresh instance of the guest, made within `budget` (a start function the guest has runs in it): the wait
    /// for a free slot of the pool, then the instantiation.
    ///
    /// # Errors
    /// The failed run: [`InvokeError::Busy`] when no slot came free in time, else the instantiation's error, with
    /// whatever the guest did meanwhile.
    pub(crate) async fn instance(&self, caps: &Capabilities, budget: Budget) -> Result<FreshInstance, Run> {
        let deadline = tokio::time::Instant::from_std(budget.outer_deadline());
        // The semaphore is never closed, so the only failure is the time running out.
        let Ok(Ok(permit)) = tokio::time::timeout_at(deadline, self.instances.clone().acquire_owned()).await else {
            return Err(Run::refused(InvokeError::Busy { instances: self.limits.max_instances }));
        };
        let started = Instant::now();
        let output = ["stdout", "stderr"].map(|name| GuestOutput::new(name, self.limits.max_output_bytes));
        // What the host allocates for the guest in one call is bounded by the guest's own memory limit: the
        // bytes wasi:random makes, and the data the guest passes in (wasmtime's "hostcall fuel", 128 MiB by default).
        let wasi = WasiCtxBuilder::new()
            .envs(&caps.env)
            .stdout(output[0].clone())
            .stderr(output[1].clone())
            .max_random_size(self.limits.memory_bytes.min(MAX_RANDOM_BYTES) as u64)
            .build();
        let state = GuestState {
            wasi,
            table: ResourceTable::new(),
            limiter: StoreLimiter::new(self.limits.memory_bytes),
            caps: caps.instance(),
            budget,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        store.set_hostcall_fuel(self.limits.memory_bytes);
        store.set_max_component_handles(MAX_HANDLES);
        // At every epoch tick a computing guest yields to the other invocations of the thread (with several at
        // once, a guest in a loop must not hold a thread until its time is up), and past its time it is stopped;
        // the outer timeout stops one that waits too long in a host call. Both report the same limit.
        store.epoch_deadline_callback(|store| {
            let budget = store.data().budget;
            if Instant::now() >= budget.guest_deadline() {
                return Err(wasmtime::Error::new(budget.exceeded()));
            }
            Ok(UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now())))
        });
        store.set_epoch_deadline(1);
        let instantiate = async {
            match &self.pre {
                GuestPre::Handler(pre) => pre.instantiate_async(&mut store).await.map(Guest::Handler),
                GuestPre::Http(pre) => pre.instantiate_async(&mut store).await.map(Guest::Http),
            }
        };
        let instantiated = tokio::time::timeout_at(deadline, instantiate).await;
        let time_limit = budget.exceeded();
        match instantiated.unwrap_or_else(|_| Err(wasmtime::Error::new(time_limit.clone()))) {
            Ok(guest) => Ok(FreshInstance { store, guest, permit, output, instantiate: started.elapsed() }),
            Err(e) => {
                let error = self.instantiate_error(&e, &time_limit);
                let returned = Instant::now();
                Err(self.finish(store, permit, &output, Err(error), [returned - started, Duration::ZERO], returned))
            }
        }
    }

    /// Runs the guest's handler once in `fresh`, in the invocation's time.
    pub(crate) async fn run_in(&self, fresh: FreshInstance, request: RunRequest<'_>) -> Run {
        let FreshInstance { mut store, guest, permit, output, instantiate } = fresh;
        let budget = request.budget;
        store.data_mut().start(budget);
        // Counted from now: an instance made ahead of its invocation would otherwise yield at once.
        store.set_epoch_deadline(1);
        let time_limit = budget.exceeded();
        let started = Instant::now();
        let call = async {
            match (&guest, request.input) {
                (Guest::Handler(guest), Input::Event(event)) => {
                    let returned = guest
                        .keyward_lambda_handler()
                        .call_handle(&mut store, event, &request.context)
                        .await
                        .map_err(|e| self.trap_error(&e, &time_limit))?;
                    returned.map_err(InvokeError::Guest).and_then(|response| self.check_response(response))
                }
                (Guest::Http(proxy), Input::Http(request)) => {
                    let limit = self.limits.max_response_bytes;
                    let answer = incoming::handle(&mut store, proxy, *request, limit).await;
                    answer.map(Output::Http).map_err(|failure| self.http_failure(failure, &time_limit))
                }
                _ => Err(InvokeError::Instantiate("the input does not match the guest's world".into())),
            }
        };
        let deadline = tokio::time::Instant::from_std(budget.outer_deadline());
        let called = tokio::time::timeout_at(deadline, call).await.unwrap_or(Err(InvokeError::Limit(time_limit)));
        let returned = Instant::now();
        self.finish(store, permit, &output, called, [instantiate, returned - started], returned)
    }

    /// The run's end, whatever it was: the records of what the guest did, its output masked into the log, its
    /// outcome masked, and the instance to tear down.
    fn finish(
        &self,
        mut store: Store<GuestState>,
        permit: tokio::sync::OwnedSemaphorePermit,
        output: &[GuestOutput; 2],
        outcome: Result<Output, InvokeError>,
        [instantiate, guest]: [Duration; 2],
        returned: Instant,
    ) -> Run {
        let capability::Finished { decrypts, key_operations, handed_out, outbound } = store.data_mut().caps.finish();
        let masker = LazyCell::new(|| handed_out.masker());
        for stream in output {
            stream.flush_to_log(&masker);
        }
        Run {
            result: outcome.map_err(|e| e.scrubbed(&masker)),
            decrypts,
            key_operations,
            outbound,
            instance: UsedInstance { _store: Some(store), _permit: Some(permit), _handed_out: Some(handed_out) },
            instantiate,
            guest,
            returned,
        }
    }

    /// A handler-world guest's response: within the response limit, and JSON.
    fn check_response(&self, response: String) -> Result<Output, InvokeError> {
        check_response_size(response.len(), &self.limits)?;
        // Only the position is reported: serde's messages can quote the input, which may hold a secret.
        serde_json::from_str::<serde::de::IgnoredAny>(&response)
            .map_err(|e| InvokeError::InvalidResponse { line: e.line(), column: e.column() })?;
        Ok(Output::Json(response))
    }
}

/// A response of `size` bytes is within the response limit, or a [`LimitExceeded::ResponseSize`].
pub(crate) fn check_response_size(size: usize, limits: &Limits) -> Result<(), InvokeError> {
    let limit = limits.max_response_bytes;
    if size > limit {
        return Err(LimitExceeded::ResponseSize { size, limit }.into());
    }
    Ok(())
}

/// Builds an engine for `limits` and checks, compiles (or loads precompiled) and links `component` in it.
fn load(
    component: ComponentSource<'_>,
    limits: &Limits,
    plaintext: GuestPlaintext,
) -> Result<(Engine, GuestPre), LoadError> {
    let engine_error = |e: wasmtime::Error| LoadError::Engine(error_line(&e));
    let engine = engine::build(limits).map_err(engine_error)?;
    let mut linker = Linker::new(&engine);
    capability::add_to_linker(&mut linker).map_err(engine_error)?;
    let pre = component::load(&engine, &linker, component, plaintext)?;
    Ok((engine, pre))
}

/// Compiles a component ahead of time (a `.cwasm`) for `target` (by default: this machine's architecture, with
/// only the [baseline](Cpu::Baseline) CPU features, so that the artifact runs on any machine Lambda uses), after
/// every check a host makes when loading it. The `.cwasm` records the component's [digest](ComponentDigest).
///
/// # Errors
/// The [`LoadError`] the component would have at load, or [`LoadError::Engine`] for an unknown target.
#[cfg(feature = "compiler")]
pub fn precompile(component: &[u8], target: &CompileTarget) -> Result<Vec<u8>, LoadError> {
    if component::is_precompiled(component) {
        return Err(LoadError::Invalid("this is already a precompiled component; compile the .wasm".into()));
    }
    let limits = Limits::default();
    // Compiled for any host: one that denies guests plaintext refuses a component importing kms when it loads it.
    let (_, pre) = load(ComponentSource::Bytes(component), &limits, GuestPlaintext::Allow)?;
    let compiled = match target {
        // Loading compiled it for this machine as it is already.
        CompileTarget { triple: None, cpu: Cpu::Native } => pre.component().serialize(),
        target => engine::build_for(&limits, target)
            .map_err(|e| LoadError::Engine(error_line(&e)))?
            .precompile_component(component),
    };
    let mut compiled = compiled.map_err(|e| LoadError::Invalid(error_line(&e)))?;
    digest::append_record(&mut compiled, &ComponentDigest::of_wasm(component));
    Ok(compiled)
}

/// Most bytes one `wasi:random` call makes (less if the memory limit is less): the host fills them in one go,
/// where the time limit cannot stop it.
const MAX_RANDOM_BYTES: usize = 1 << 20;

/// Resource handles (WASI streams, pollables, ...) a guest may hold at once; each is host memory.
const MAX_HANDLES: usize = 10_000;

impl Sandbox {
    /// Names the limit behind a trap when there is one, else what happened, in one line; the whole error, with
    /// its wasm backtrace, is logged at debug level.
    fn trap_error(&self, error: &wasmtime::Error, time_limit: &LimitExceeded) -> InvokeError {
        tracing::debug!(error = %crate::error::one_line(&format!("{error:?}")), "guest trap in full");
        if let Some(limit) = error.downcast_ref::<LimitExceeded>() {
            return limit.clone().into();
        }
        if let Some(exit) = error.downcast_ref::<I32Exit>() {
            return InvokeError::Exit(exit.0);
        }
        if let Some(early) = error.downcast_ref::<BeforeInvocation>() {
            return InvokeError::Trap(early.to_string());
        }
        if let Some(limit) = self.host_limit(error) {
            return limit.into();
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => time_limit.clone().into(),
            Some(trap) => InvokeError::Trap(describe_trap(*trap)),
            None => InvokeError::Trap(error.root_cause().to_string()),
        }
    }

    /// Why an HTTP component gave no response, in keyward's words.
    fn http_failure(&self, failure: Failure, time_limit: &LimitExceeded) -> InvokeError {
        match failure {
            Failure::Trap(error) => self.trap_error(&error, time_limit),
            Failure::NoResponse { body_started: false } => {
                InvokeError::Guest("its wasi:http handler returned without setting its response-outparam".into())
            }
            Failure::NoResponse { body_started: true } => InvokeError::Guest(
                "its wasi:http handler returned without finishing its response body (outgoing-body.finish)".into(),
            ),
            Failure::ErrorCode(code) => {
                InvokeError::Guest(format!("its wasi:http handler set its response-outparam to the error {code:?}"))
            }
            Failure::Body => InvokeError::Guest("its wasi:http handler aborted its response body".into()),
            Failure::TooLarge { limit } => LimitExceeded::HttpBodySize { limit }.into(),
        }
    }

    /// A trap while instantiating (in the guest's start function, or its call for a secret there) is the guest's;
    /// anything else (no instance slot free, say) is the host's.
    fn instantiate_error(&self, error: &wasmtime::Error, time_limit: &LimitExceeded) -> InvokeError {
        let guests = error.downcast_ref::<Trap>().is_some() || error.downcast_ref::<BeforeInvocation>().is_some();
        match self.trap_error(error, time_limit) {
            InvokeError::Trap(_) if !guests => InvokeError::Instantiate(error.root_cause().to_string()),
            known => known,
        }
    }

    /// The limits wasmtime and wasmtime-wasi enforce for keyward (set in [`Sandbox::run`]) report themselves only in
    /// words; these are theirs (wasmtime 48), and the sandbox tests fail if they change.
    fn host_limit(&self, error: &wasmtime::Error) -> Option<LimitExceeded> {
        error.chain().find_map(|cause| {
            let text = cause.to_string();
            if text.contains("fuel allocated for hostcalls has been exhausted") {
                return Some(LimitExceeded::HostCallData { limit: self.limits.memory_bytes });
            }
            if text.contains("store handle limit exceeded") {
                return Some(LimitExceeded::Handles { limit: MAX_HANDLES });
            }
            let (requested, limit) = text.strip_prefix("requested len ")?.split_once(" exceeds limit ")?;
            Some(LimitExceeded::RandomBytes { requested: requested.parse().ok()?, limit: limit.parse().ok()? })
        })
    }
}

/// What a trap means, for the person reading the function error.
fn describe_trap(trap: Trap) -> String {
    match trap {
        Trap::UnreachableCodeReached => {
            "unreachable executed (a Rust guest panics this way; its message is on the guest's stderr)".into()
        }
        Trap::StackOverflow => "stack overflow: the guest's calls nested deeper than the wasm stack allows".into(),
        Trap::MemoryOutOfBounds => {
            "out-of-bounds memory access (also how a guest's own stack overflow in linear memory ends)".into()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use wasmtime::component::Component;

    use super::*;

    /// A component of the keyward world (hand-written WebAssembly text).
    const GUEST: &str = include_str!("../../../tests/guests/wat/start-trap.wat");

    /// Loads `cwasm` into `engine`, as a host does.
    fn loads(engine: &Engine, cwasm: &[u8]) -> Result<(), String> {
        // SAFETY: the bytes were made by `precompile` in this test, with this wasmtime.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(engine, cwasm) };
        component.map(drop).map_err(|e| error_line(&e))
    }

    /// A default artifact loads on a machine that has only the baseline; one with this machine's features may not.
    #[test]
    fn default_artifacts_load_where_only_the_baseline_is() {
        let component = wat::parse_str(GUEST).unwrap();
        let limits = Limits::default();
        let baseline_machine = engine::on_a_baseline_machine(&limits);
        let portable = precompile(&component, &CompileTarget::default()).unwrap();
        assert_eq!(loads(&baseline_machine, &portable), Ok(()));
        assert_eq!(loads(&engine::build(&limits).unwrap(), &portable), Ok(()), "and on this machine");

        let native = precompile(&component, &CompileTarget { triple: None, cpu: Cpu::Native }).unwrap();
        // This machine (where the suite runs: x86_64 with AVX2 and more, or a Graviton) has more than the baseline.
        let refusal = loads(&baseline_machine, &native).unwrap_err();
        assert!(refusal.contains("not available on the host"), "{refusal}");
    }
}
