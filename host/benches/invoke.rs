//! Per-example figures, in process: `cargo xtask bench` (which builds the guests first).
//!
//! For each example guest (Rust and JavaScript): component size, load time from `.wasm` (engine, compile, link)
//! and from `.cwasm` (deserialize, link), and per-invocation wall time (fresh instance, its decrypts, response
//! checks). A bench binary, not a test: it prints figures and asserts nothing about them.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use keyward::{EncryptionContext, Host, HostConfig, InvocationContext, KmsPolicy, LocalKey};

const INVOCATIONS: usize = 300;
const WARMUP: usize = 10;

struct Case {
    guest: &'static str,
    language: &'static str,
    secret_var: &'static str,
    secret: Vec<u8>,
    event: String,
}

fn main() {
    let pem = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]).to_pkcs8_pem(LineEnding::LF).unwrap();
    let url_event = serde_json::json!({
        "rawPath": "/sign", "body": "pay 10 EUR to alice", "isBase64Encoded": false,
        "requestContext": {"http": {"method": "POST"}, "timeEpoch": 0}
    })
    .to_string();
    let cases = [
        Case {
            guest: "hello",
            language: "Rust",
            secret_var: "PASSWORD",
            secret: b"hunter2".to_vec(),
            event: "{}".into(),
        },
        Case {
            guest: "signer",
            language: "Rust",
            secret_var: "SIGNING_KEY",
            secret: pem.as_bytes().to_vec(),
            event: url_event,
        },
        Case {
            guest: "hello-js",
            language: "JavaScript",
            secret_var: "PASSWORD",
            secret: b"hunter2".to_vec(),
            event: "{}".into(),
        },
    ];
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip2/release");
    println!(
        "{:<10} {:<11} {:>10} {:>12} {:>12} {:>14} {:>10} {:>10}",
        "guest", "language", "size", "load .wasm", "load .cwasm", "invoke median", "p90", "p99"
    );
    for case in cases {
        let wasm = std::fs::read(dir.join(format!("{}.wasm", case.guest)))
            .unwrap_or_else(|e| panic!("{}.wasm: {e}; run `cargo xtask bench`", case.guest));
        let key = Arc::new(LocalKey::generate().unwrap());
        let context = EncryptionContext::from_pairs([("function", case.guest)]).unwrap();
        let ciphertext = key.encrypt(&case.secret, &context).unwrap();
        let config = HostConfig {
            guest_env: vec![(case.secret_var.into(), base64::engine::general_purpose::STANDARD.encode(ciphertext))],
            kms: KmsPolicy { stamped_context: context, ..KmsPolicy::default() },
            ..HostConfig::default()
        };

        let started = Instant::now();
        drop(Host::new(&wasm, key.clone(), config.clone()).unwrap());
        let load_wasm = started.elapsed();
        let cwasm = keyward::precompile(&wasm, &Default::default()).unwrap();
        let started = Instant::now();
        let host = Host::new(&cwasm, key.clone(), config).unwrap();
        let load_cwasm = started.elapsed();

        let mut times = Vec::with_capacity(INVOCATIONS);
        runtime.block_on(async {
            for i in 0..WARMUP + INVOCATIONS {
                let started = Instant::now();
                let invocation = host.invoke(&case.event, InvocationContext::local("arn:bench")).await;
                let elapsed = started.elapsed();
                invocation.result.unwrap_or_else(|e| panic!("{}: {e}", case.guest));
                if i >= WARMUP {
                    times.push(elapsed);
                }
            }
        });
        times.sort();
        let pct = |p: usize| times[(times.len() * p / 100).min(times.len() - 1)];
        println!(
            "{:<10} {:<11} {:>8} kB {:>12} {:>12} {:>14} {:>10} {:>10}",
            case.guest,
            case.language,
            wasm.len() / 1000,
            fmt(load_wasm),
            fmt(load_cwasm),
            fmt(pct(50)),
            fmt(pct(90)),
            fmt(pct(99))
        );
    }
    masking_cost();
}

/// What masking costs: an invocation's guest output (64 KiB, as much as the host keeps of a stream) checked for ten
/// secrets, with none of them in it and with each printed in it twice.
fn masking_cost() {
    const ROUNDS: u32 = 200;
    let secrets: Vec<Vec<u8>> =
        (0..10).map(|i| format!("s3cret-number-{i}-of-ten\nwith a second line").into_bytes()).collect();
    let started = Instant::now();
    for _ in 0..ROUNDS {
        std::hint::black_box(keyward::mask::Masker::new(secrets.iter().map(Vec::as_slice)));
    }
    let build = started.elapsed() / ROUNDS;
    let masker = keyward::mask::Masker::new(secrets.iter().map(Vec::as_slice));
    let clean: Vec<u8> = b"an ordinary line of guest output, nothing secret in it at all\n"
        .iter()
        .copied()
        .cycle()
        .take(64 * 1024)
        .collect();
    let mut leaky = clean.clone();
    for (i, secret) in secrets.iter().enumerate() {
        for copy in 0..2 {
            let at = (i * 2 + copy) * 3000;
            leaky[at..at + secret.len()].copy_from_slice(secret);
        }
    }
    let time = |input: &[u8]| {
        let started = Instant::now();
        for _ in 0..ROUNDS {
            std::hint::black_box(masker.bytes(input));
        }
        started.elapsed() / ROUNDS
    };
    println!(
        "masking 10 secrets in 64 KiB of guest output: build {}, scan with no secret {}, with 20 secrets {}",
        fmt(build),
        fmt(time(&clean)),
        fmt(time(&leaky))
    );
}

fn fmt(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{:.1} µs", d.as_secs_f64() * 1e6)
    } else {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    }
}
