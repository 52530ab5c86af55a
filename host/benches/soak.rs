//! Soak: many invocations mixing good and hostile guests, in process (10,000) and through cargo-lambda's emulator
//! (2,000), with moto as KMS. Prints the unexpected failures (outcomes other than the one each event must have)
//! and memory: the resident set after the first 1,000 invocations and after all of them. `cargo xtask bench`.
//!
//! A bench binary, not a test: it prints figures and asserts nothing about them.

#![allow(clippy::unwrap_used, missing_debug_implementations)]

#[path = "../../tests/integration/servers.rs"]
#[allow(dead_code)]
mod servers;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward::aws::AwsKms;
use keyward::secrets::CacheSettings;
use keyward::{EncryptionContext, Host, HostSettings, InvocationContext, Limits, SecretsSettings};
use serde_json::{Value, json};
use servers::*;

const IN_PROCESS: usize = 10_000;
const THROUGH_EMULATOR: usize = 2_000;
const CHECKPOINT: usize = 1_000;

/// An event and the outcome it must have: `None` for a response, else the `errorType`.
fn mix(ciphertext: &str) -> Vec<(Value, Option<&'static str>)> {
    let decrypt = json!({"action": "decrypt", "ciphertext": ciphertext, "context": {}});
    let mut events = vec![(json!({"action": "context"}), None), (decrypt.clone(), None)];
    // Good invocations are half of the mix; the other half cycles through hostile ones.
    let hostile = [
        (json!({"action": "trap"}), Some("GuestTrap")),
        (json!({"action": "alloc", "mb": 1000}), Some("GuestLimitExceeded")),
        (json!({"action": "recurse", "depth": 100_000_000u64}), Some("GuestTrap")),
        (
            json!({"action": "decrypt", "ciphertext": ciphertext, "context": {}, "times": 100}),
            Some("GuestLimitExceeded"),
        ),
        (json!({"action": "decrypt", "ciphertext": ciphertext, "context": {"function": "evil"}}), Some("GuestError")),
        (json!({"action": "fail-big", "bytes": 1 << 20}), Some("GuestError")),
        (json!({"action": "random", "bytes": 60 << 20}), Some("GuestLimitExceeded")),
        (json!({"action": "handles", "count": 20_000}), Some("GuestLimitExceeded")),
        (json!({"action": "not-json"}), Some("GuestInvalidResponse")),
        (json!({"action": "leak-forms", "ciphertext": ciphertext}), Some("GuestError")),
        (json!({"action": "loop"}), Some("GuestTimeout")),
    ];
    for (i, case) in hostile.into_iter().enumerate() {
        events.push(case);
        events.push(if i % 2 == 0 { (json!({"action": "context"}), None) } else { (decrypt.clone(), None) });
    }
    events
}

fn rss_kib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

struct Soak {
    unexpected: usize,
    at_checkpoint: u64,
    at_end: u64,
    elapsed: Duration,
}

impl Soak {
    fn print(&self, what: &str, count: usize) {
        let ratio = self.at_end as f64 / self.at_checkpoint as f64;
        println!(
            "{what:<28} {count:>6} {:>10} {:>14} {:>12} {:>8.3} {:>9.1} s",
            self.unexpected,
            self.at_checkpoint,
            self.at_end,
            ratio,
            self.elapsed.as_secs_f64()
        );
    }
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let probe = root.join("target/wasm32-wasip2/release/probe.wasm");
    assert!(probe.exists(), "{} is missing: run `cargo xtask bench`", probe.display());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let moto = start_moto();
    let kms = aws_sdk_kms::Client::new(&moto_sdk_config(&moto));
    let key = runtime.block_on(create_key(&kms));
    let secret = b"soak-s3cret-value\nsecond line of it";
    let ciphertext = runtime.block_on(encrypt(&kms, &key, secret, &[("function", "soak")]));
    let ciphertext = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, ciphertext);
    let events = mix(&ciphertext);

    println!(
        "{:<28} {:>6} {:>10} {:>14} {:>12} {:>8} {:>11}",
        "soak", "calls", "unexpected", "RSS@1000 KiB", "RSS end KiB", "ratio", "time"
    );

    let config = HostSettings {
        limits: Limits::default().with_memory_mb(32).with_timeout_ms(50),
        secrets: SecretsSettings {
            stamped_context: EncryptionContext::from_pairs([("function", "soak")]).unwrap(),
            max_decrypt_calls: 4,
            cache: CacheSettings { ttl: Duration::from_secs(300), ..CacheSettings::default() },
            ..SecretsSettings::default()
        },
        ..HostSettings::default()
    };
    let backend = Arc::new(AwsKms::from_sdk_config(&moto_sdk_config(&moto), vec![key.clone()]));
    let host = Host::from_file(&probe, backend, config).unwrap();
    let started = Instant::now();
    let mut soak = Soak { unexpected: 0, at_checkpoint: 0, at_end: 0, elapsed: Duration::ZERO };
    runtime.block_on(async {
        for i in 0..IN_PROCESS {
            let (event, expected) = &events[i % events.len()];
            let invocation = host.invoke(event.to_string(), InvocationContext::local("arn:soak")).await;
            let got = invocation.result.as_ref().err().map(|e| e.error_type());
            soak.unexpected += usize::from(got != *expected);
            if i + 1 == CHECKPOINT {
                soak.at_checkpoint = rss_kib("self");
            }
        }
    });
    soak.at_end = rss_kib("self");
    soak.elapsed = started.elapsed();
    soak.print("in process (probe, moto)", IN_PROCESS);

    let dir = std::env::temp_dir().join(format!("keyward-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let emulator = start_emulator(&dir, &["soak"]);
    let mut function =
        bootstrap_command(Path::new(env!("CARGO_BIN_EXE_keyward")), &emulator.runtime_api("soak"), "soak")
            .env("RUST_LOG", "error")
            .envs([
                ("KEYWARD_COMPONENT", probe.display().to_string()),
                ("KEYWARD_KMS_KEY_ID", key.clone()),
                ("KEYWARD_KMS_ENDPOINT", moto.url()),
                ("KEYWARD_KMS_CONTEXT", "function=soak".to_string()),
                ("KEYWARD_MEMORY_MB", "32".to_string()),
                ("KEYWARD_TIMEOUT_MS", "50".to_string()),
                ("KEYWARD_MAX_DECRYPT_CALLS", "4".to_string()),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
    let pid = function.id().to_string();
    let path = "/2015-03-31/functions/soak/invocations";
    let started = Instant::now();
    let mut soak = Soak { unexpected: 0, at_checkpoint: 0, at_end: 0, elapsed: Duration::ZERO };
    for i in 0..THROUGH_EMULATOR {
        let (event, expected) = &events[i % events.len()];
        let (status, head, body) =
            http(emulator.port, "POST", path, &[], event.to_string().as_bytes(), Duration::from_secs(30)).unwrap();
        let got = if status >= 400 || head.to_ascii_lowercase().contains("x-amz-function-error") {
            let error: Value = serde_json::from_slice(&body).unwrap_or_default();
            Some(error["errorType"].as_str().unwrap_or("?").to_string())
        } else {
            None
        };
        soak.unexpected += usize::from(got.as_deref() != *expected);
        if i + 1 == CHECKPOINT {
            soak.at_checkpoint = rss_kib(&pid);
        }
    }
    soak.at_end = rss_kib(&pid);
    soak.elapsed = started.elapsed();
    soak.print("Lambda mode (emulator, moto)", THROUGH_EMULATOR);
    let _ = function.kill();
    let _ = function.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
