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

/// An engine for the component model with async host calls, epoch interruption, and a pooling allocator sized
/// for `limits.max_instances` guests at once (its defaults reserve room for a thousand). With a `target` triple,
/// the engine only compiles, for that target (`keyward compile`); code it makes loads into a host engine, since
/// none of the settings here that shape compiled code depend on `limits`.
pub(crate) fn build(limits: &Limits, target: Option<&str>) -> wasmtime::Result<Engine> {
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

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .max_wasm_stack(MAX_WASM_STACK)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    if let Some(triple) = target {
        config.target(triple)?;
    }
    Engine::new(&config)
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
