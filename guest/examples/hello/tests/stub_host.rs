//! hello in the stub host: `cargo xtask build-guests`, then `cargo test -p hello`.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use keyward::InvokeError;
use keyward::KmsError;
use keyward::testing::{StubError, StubHost};
use serde_json::json;

/// What the host answers a guest asking for a secret it does not have.
const MISSING: &str = "kms denied: \"PASSWORD\" is not one of the guest's secrets: not a guest env var (KEYWARD_GUEST_ENV; keyward invoke --env), and no source names it (KEYWARD_SOURCE_<NAME>; --source)";

const COMPONENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../target/wasm32-wasip2/release/hello.wasm");

fn host() -> StubHost {
    StubHost::load(COMPONENT).expect("build the guest first: cargo xtask build-guests")
}

#[test]
fn greets_with_a_fingerprint_of_the_secret() {
    let host = host().secret("PASSWORD", "hunter2").context("function", "hello");
    let resp = host.invoke(json!({"rawPath": "/"})).unwrap();
    assert_eq!(resp["statusCode"], 200);
    assert_eq!(resp["headers"]["Content-Type"], "application/json");
    let body: serde_json::Value = serde_json::from_str(resp["body"].as_str().unwrap()).unwrap();
    // printf hunter2 | sha256sum
    assert_eq!(body, json!({"message": "hello", "secret_sha256_prefix": "f52fbd32"}));
    let calls = host.decrypt_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].context.as_ref().unwrap().to_string(), "function=hello");
}

/// The response bytes are exactly those of the hello guest before it moved onto the SDK.
#[test]
fn the_response_is_byte_for_byte_the_classic_one() {
    let host = host().secret("PASSWORD", "hunter2");
    let invocation = futures_block_on(host.invoke_raw("{}")).unwrap();
    assert_eq!(
        invocation.result.unwrap(),
        r#"{"body":"{\"message\":\"hello\",\"secret_sha256_prefix\":\"f52fbd32\"}","headers":{"Content-Type":"application/json"},"statusCode":200}"#
    );
}

#[test]
fn each_kms_error_kind_reaches_the_caller_by_name() {
    let host = host().secret("PASSWORD", "hunter2");
    for (error, expected) in [
        (KmsError::Denied("key policy".into()), "kms denied: key policy"),
        (KmsError::InvalidCiphertext("tampered".into()), "kms invalid-ciphertext: tampered"),
        (KmsError::Unavailable("throttled".into()), "kms unavailable: throttled"),
    ] {
        host.fail_next_decrypt(error);
        match host.invoke(json!({})) {
            Err(StubError::Invoke(InvokeError::Guest(message))) => assert_eq!(message, expected),
            other => panic!("expected a guest error, got {other:?}"),
        }
    }
    assert!(host.invoke(json!({})).is_ok(), "faults apply to one decrypt each");
}

#[test]
fn a_slow_kms_is_a_timeout_or_unavailable_not_a_hang() {
    let host = host().secret("PASSWORD", "hunter2").limits(keyward::Limits::default().with_timeout_ms(300));
    host.delay_next_decrypt(std::time::Duration::from_secs(5));
    let started = std::time::Instant::now();
    let result = host.invoke(json!({}));
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    match result {
        Err(StubError::Invoke(InvokeError::Guest(message))) => {
            assert!(message.starts_with("kms unavailable"), "{message}")
        }
        other => panic!("expected kms unavailable, got {other:?}"),
    }
}

#[test]
fn a_missing_secret_is_named() {
    match host().invoke(json!({})) {
        Err(StubError::Invoke(InvokeError::Guest(message))) => assert_eq!(message, MISSING),
        other => panic!("expected a guest error, got {other:?}"),
    }
}

fn futures_block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
}
