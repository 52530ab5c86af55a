//! Lambda figures through cargo-lambda's Runtime API emulator, with moto as KMS: `cargo xtask bench`.
//!
//! - cold start: from spawning `bootstrap` to the first response, with the guest as `.wasm` and as `.cwasm`;
//! - warm invoke: round trip of one invocation through the emulator (secret served from the cache).
//!
//! A bench binary, not a test: it prints figures and asserts nothing about them.

#![allow(clippy::unwrap_used, missing_debug_implementations)]

#[path = "../../tests/integration/servers.rs"]
#[allow(dead_code)]
mod servers;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use servers::*;

const COLD_RUNS: usize = 10;
const WARM_RUNS: usize = 200;

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let wasm = root.join("target/wasm32-wasip2/release/hello.wasm");
    assert!(wasm.exists(), "{} is missing: run `cargo xtask bench`", wasm.display());
    let dir = std::env::temp_dir().join(format!("keyward-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cwasm = dir.join("hello.cwasm");
    let compiled = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["compile", wasm.to_str().unwrap(), "-o", cwasm.to_str().unwrap()])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(compiled.success());

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let moto = start_moto();
    let kms = aws_sdk_kms::Client::new(&moto_sdk_config(&moto));
    let key = runtime.block_on(create_key(&kms));
    let ciphertext = runtime.block_on(encrypt(&kms, &key, b"bench-secret", &[("function", "hello")]));
    let password = base64::engine::general_purpose::STANDARD.encode(ciphertext);

    let mut names: Vec<String> = (0..COLD_RUNS).flat_map(|i| [format!("wasm-{i}"), format!("cwasm-{i}")]).collect();
    names.push("warm".into());
    let emulator = start_emulator(&dir, &names.iter().map(String::as_str).collect::<Vec<_>>());
    let env = |component: &Path| {
        vec![
            ("KEYWARD_COMPONENT", component.display().to_string()),
            ("KEYWARD_GUEST_ENV", "PASSWORD".to_string()),
            ("PASSWORD", password.clone()),
            ("KEYWARD_PREFETCH", "PASSWORD".to_string()),
            ("KEYWARD_KMS_KEY_ID", key.clone()),
            ("KEYWARD_KMS_ENDPOINT", moto.url()),
            ("KEYWARD_KMS_CONTEXT", "function=hello".to_string()),
        ]
    };

    for (kind, component) in [("wasm", &wasm), ("cwasm", &cwasm)] {
        let mut times = Vec::new();
        for i in 0..COLD_RUNS {
            let name = format!("{kind}-{i}");
            let started = Instant::now();
            let mut function = spawn(&emulator, &name, &env(component));
            invoke(&emulator, &name);
            times.push(started.elapsed());
            let _ = function.kill();
            let _ = function.wait();
        }
        println!("cold start, .{kind} ({COLD_RUNS} runs, spawn to first response): {}", summary(&mut times));
    }

    let mut function = spawn(&emulator, "warm", &env(&cwasm));
    invoke(&emulator, "warm");
    let mut times = Vec::new();
    for _ in 0..WARM_RUNS {
        let started = Instant::now();
        invoke(&emulator, "warm");
        times.push(started.elapsed());
    }
    println!("warm invoke through the emulator ({WARM_RUNS} runs): {}", summary(&mut times));
    let _ = function.kill();
    let _ = function.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

fn spawn(emulator: &Server, name: &str, env: &[(&str, String)]) -> std::process::Child {
    bootstrap_command(Path::new(env!("CARGO_BIN_EXE_keyward")), &emulator.runtime_api(name), name)
        .env("RUST_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

fn invoke(emulator: &Server, name: &str) {
    let path = format!("/2015-03-31/functions/{name}/invocations");
    let (status, _, body) = http(emulator.port, "POST", &path, &[], b"{}", Duration::from_secs(30)).unwrap();
    let body = String::from_utf8_lossy(&body);
    assert!(status == 200 && body.contains("statusCode"), "{name}: {status} {body}");
}

fn summary(times: &mut [Duration]) -> String {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let pct = |p: usize| times[(times.len() * p / 100).min(times.len() - 1)];
    format!(
        "median {:.1} ms, p90 {:.1} ms, min {:.1} ms, max {:.1} ms",
        ms(pct(50)),
        ms(pct(90)),
        ms(times[0]),
        ms(times[times.len() - 1])
    )
}
