//! The wasmtime engine keyward runs guests on, and the thread that drives its epoch (the guest clock).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::limits::{Limits, MAX_TABLE_ELEMENTS};

/// How often the epoch advances: the resolution of guest timeouts.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Wasm stack a guest may use.
const MAX_WASM_STACK: usize = 1 << 20;
/// Core instances, memories and tables one component may have. A Rust `wasm32-wasip2` component has a handful of
/// core instances (its module and the canonical-ABI shims), one memory and a couple of tables; a componentize-py
/// (CPython) component has 38 core instances.
const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 64;
const MAX_MEMORIES_PER_COMPONENT: u32 = 4;
const MAX_TABLES_PER_COMPONENT: u32 = 16;
/// Bytes of each linear memory kept resident between instances, reset in place (see [`config`]).
const KEEP_RESIDENT: usize = 16 << 20;
/// Bytes of each table kept resident between instances.
const TABLE_KEEP_RESIDENT: usize = 64 << 10;

/// The CPU features compiled code may use.
#[cfg(feature = "compiler")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cpu {
    /// What every machine Lambda runs functions on has, for the target's architecture: on x86_64, the
    /// `x86-64-v2` level (SSE3 to SSE4.2, POPCNT, CMPXCHG16B: every Intel Xeon since Nehalem and every AMD EPYC);
    /// on aarch64, Armv8 with LSE atomics (every Graviton, from Graviton2). Lambda promises no CPU model, so a
    /// deployment artifact must not assume more.
    #[default]
    Baseline,
    /// Everything this machine has: for artifacts that run where they are built.
    Native,
}

/// Where compiled code is to run: a target triple (default: this machine's architecture) and its CPU features.
#[cfg(feature = "compiler")]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompileTarget {
    /// A triple such as `aarch64-unknown-linux-gnu`; `None` for this machine's.
    pub triple: Option<String>,
    /// The CPU features the code may use.
    pub cpu: Cpu,
}

#[cfg(feature = "compiler")]
impl CompileTarget {
    /// The cranelift presets of the baseline, for a triple's architecture.
    fn baseline_flags(triple: &str) -> &'static [&'static str] {
        if triple.starts_with("x86_64") {
            &["x86-64-v2"]
        } else if triple.starts_with("aarch64") {
            &["has_lse"]
        } else {
            &[]
        }
    }
}

/// An engine for the component model with async host calls, epoch interruption, and a pooling allocator sized
/// for `limits.max_instances` guests at once (its defaults reserve room for a thousand). Without the `compiler`
/// feature, it loads only precompiled components.
pub(crate) fn build(limits: &Limits) -> wasmtime::Result<Engine> {
    Engine::new(&config(limits))
}

/// An engine that compiles for `target` (`keyward compile`) rather than for this machine as it is; its code loads
/// into a [`build`] engine on any machine that has the target's features, since none of the settings that shape
/// compiled code depend on `limits`.
#[cfg(feature = "compiler")]
pub(crate) fn build_for(limits: &Limits, target: &CompileTarget) -> wasmtime::Result<Engine> {
    Engine::new(&config_for(limits, target)?)
}

/// The configuration [`build`] makes its engine from.
fn config(limits: &Limits) -> Config {
    let instances = limits.max_instances;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(instances)
        .total_core_instances(instances * MAX_CORE_INSTANCES_PER_COMPONENT)
        .total_memories(instances * MAX_MEMORIES_PER_COMPONENT)
        .total_tables(instances * MAX_TABLES_PER_COMPONENT)
        .total_stacks(instances)
        .max_core_instances_per_component(MAX_CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MAX_MEMORIES_PER_COMPONENT)
        .max_tables_per_component(MAX_TABLES_PER_COMPONENT)
        .max_memory_size(limits.memory_bytes)
        .table_elements(MAX_TABLE_ELEMENTS);
    // Fresh memory made cheap: a used instance's memory is reset to its image in place and stays resident, rather
    // than unmapped and faulted in again by the next invocation (a third of a warm JavaScript invocation went to
    // those faults). Where the kernel has PAGEMAP_SCAN (Linux 6.7+), only the pages the guest dirtied are reset;
    // elsewhere the first KEEP_RESIDENT bytes are, with memset. `cargo xtask bench`, in process: hello 37 -> 18 µs,
    // hello-js 1.06 -> 0.69 ms per invocation with teardown; without PAGEMAP_SCAN, 32 µs and 0.93 ms.
    pool.linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(TABLE_KEEP_RESIDENT)
        .pagemap_scan(wasmtime::Enabled::Auto);

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .max_wasm_stack(MAX_WASM_STACK)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

/// The configuration [`build_for`] makes its engine from.
#[cfg(feature = "compiler")]
fn config_for(limits: &Limits, target: &CompileTarget) -> wasmtime::Result<Config> {
    let mut config = config(limits);
    match target {
        CompileTarget { triple: None, cpu: Cpu::Native } => {}
        CompileTarget { triple, cpu } => {
            let host = target_lexicon::HOST.to_string();
            let triple = triple.as_deref().unwrap_or(&host);
            // An explicit target: wasmtime infers no CPU features, and takes only those given here.
            config.target(triple)?;
            if *cpu == Cpu::Baseline {
                for flag in CompileTarget::baseline_flags(triple) {
                    // SAFETY: these flags only name CPU features the code may use; wasmtime checks, when it loads
                    // the code, that the machine has every feature enabled, and refuses the code otherwise.
                    #[allow(unsafe_code)]
                    unsafe {
                        config.cranelift_flag_enable(flag);
                    }
                }
            }
        }
    }
    Ok(config)
}

/// Advances an engine's epoch every [`EPOCH_TICK`] until dropped.
#[derive(Debug)]
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub(crate) fn start(engine: Engine) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new().name("keyward-epoch".into()).spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })?;
        Ok(Self { stop, thread: Some(thread) })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// An engine for this machine's architecture as if its CPU had only the baseline's features.
#[cfg(test)]
pub(crate) fn on_a_baseline_machine(limits: &Limits) -> Engine {
    fn baseline_only(feature: &str) -> Option<bool> {
        let baseline = ["sse3", "ssse3", "sse4.1", "sse4.2", "popcnt", "cmpxchg16b", "lse"];
        Some(baseline.contains(&feature))
    }
    #[allow(clippy::unwrap_used)]
    // Its own compiler must not assume more than the machine has either: wasmtime checks that too.
    let mut config = config_for(limits, &CompileTarget::default()).unwrap();
    // SAFETY: the engine only loads code (in tests), and refuses what needs a feature reported missing.
    #[allow(unsafe_code)]
    unsafe {
        config.detect_host_feature(baseline_only);
    }
    #[allow(clippy::unwrap_used)]
    Engine::new(&config).unwrap()
}
