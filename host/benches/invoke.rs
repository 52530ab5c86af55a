//! Per-invocation cost of the hello guest: `cargo xtask bench` (which builds the guest first).
//!
//! Prints the time to load the component (engine, compile, link) and the distribution of per-invocation wall
//! time (fresh instance, one local-key decrypt, response checks). A bench binary, not a test: no thresholds.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use keyward::{EncryptionContext, Host, HostConfig, InvocationContext, LocalKey};

const LOADS: usize = 5;
const WARMUP: usize = 20;
const INVOCATIONS: usize = 1000;

fn main() {
    let wasm = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip2/release/hello.wasm");
    let bytes = std::fs::read(&wasm).unwrap_or_else(|e| panic!("{}: {e}; run `cargo xtask bench`", wasm.display()));
    let key = Arc::new(LocalKey::generate().expect("key"));
    let context = EncryptionContext::from_pairs([("function", "hello")]).expect("context");
    let ciphertext = key.encrypt(b"hunter2", &context).expect("encrypt");
    let config = HostConfig {
        guest_env: vec![("PASSWORD".into(), base64::engine::general_purpose::STANDARD.encode(ciphertext))],
        stamped_context: context,
        ..HostConfig::default()
    };

    let mut loads = Vec::new();
    let mut host = None;
    for _ in 0..LOADS {
        let started = Instant::now();
        host = Some(Host::new(&bytes, key.clone(), config.clone()).expect("host loads hello.wasm"));
        loads.push(started.elapsed());
    }
    let host = host.expect("loaded");

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let mut times = Vec::with_capacity(INVOCATIONS);
    runtime.block_on(async {
        for i in 0..WARMUP + INVOCATIONS {
            let started = Instant::now();
            let invocation = host.invoke(r#"{"rawPath":"/"}"#, InvocationContext::local("arn:bench")).await;
            let elapsed = started.elapsed();
            invocation.result.expect("hello succeeds");
            if i >= WARMUP {
                times.push(elapsed);
            }
        }
    });

    println!("hello.wasm: {} bytes", bytes.len());
    println!("load (engine + compile + link), {LOADS} runs: median {}", fmt(median(&mut loads)));
    times.sort();
    let pct = |p: usize| times[(times.len() * p / 100).min(times.len() - 1)];
    println!(
        "invoke (fresh instance + 1 decrypt), {INVOCATIONS} runs: median {}, p90 {}, p99 {}, min {}, max {}",
        fmt(pct(50)),
        fmt(pct(90)),
        fmt(pct(99)),
        fmt(times[0]),
        fmt(times[times.len() - 1])
    );
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn fmt(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}
