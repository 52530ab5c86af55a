//! signer in the stub host: `cargo xtask build-guests`, then `cargo test -p signer`.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use base64::Engine as _;
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::{Signature, SigningKey, Verifier as _};
use keyward::testing::{StubError, StubHost};
use keyward::{InvokeError, KmsError};
use serde_json::json;

const COMPONENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../target/wasm32-wasip2/release/signer.wasm");

/// A Function URL event, as Lambda sends it.
fn request(body: &str, base64: bool) -> serde_json::Value {
    json!({
        "version": "2.0",
        "rawPath": "/sign",
        "rawQueryString": "",
        "headers": {"content-type": "text/plain"},
        "requestContext": {
            "accountId": "123456789012",
            "requestId": "req-1",
            "http": {"method": "POST", "path": "/sign", "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "test"},
            "timeEpoch": 0
        },
        "body": body,
        "isBase64Encoded": base64
    })
}

fn signed(host: &StubHost, event: serde_json::Value) -> (Vec<u8>, serde_json::Value) {
    let resp = host.invoke(event).unwrap();
    assert_eq!(resp["statusCode"], 200);
    assert_eq!(resp["headers"]["content-type"], "application/json");
    let body: serde_json::Value = serde_json::from_str(resp["body"].as_str().unwrap()).unwrap();
    let signature = base64::engine::general_purpose::STANDARD.decode(body["signature"].as_str().unwrap()).unwrap();
    (signature, body)
}

#[test]
fn signs_the_body_with_the_decrypted_key() {
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();
    // The signer never decrypts: it runs on a host that denies guests plaintext.
    let host = StubHost::load(COMPONENT)
        .unwrap()
        .secret("SIGNING_KEY", pem.as_bytes())
        .context("function", "signer")
        .deny_plaintext();

    let (signature, body) = signed(&host, request("pay 10 EUR to alice", false));
    let signature = Signature::from_slice(&signature).unwrap();
    key.verifying_key().verify(b"pay 10 EUR to alice", &signature).expect("the signature verifies");
    assert_eq!(body["algorithm"], "ed25519");
    assert!(!body.to_string().contains("PRIVATE KEY"));
    let public_key = base64::engine::general_purpose::STANDARD.decode(body["public_key"].as_str().unwrap()).unwrap();
    assert_eq!(public_key, key.verifying_key().to_bytes());

    // A base64 body is signed as its bytes.
    let raw = [0u8, 159, 146, 150];
    let (signature, _) = signed(&host, request(&base64::engine::general_purpose::STANDARD.encode(raw), true));
    key.verifying_key().verify(&raw, &Signature::from_slice(&signature).unwrap()).unwrap();
    assert_eq!(host.decrypt_calls().len(), 2, "one handle opened per invocation");
    let operations: Vec<(String, usize)> =
        host.key_operations().into_iter().map(|op| (op.operation, op.input_len)).collect();
    let expected = [("sign ed25519", 19), ("public-key", 0), ("sign ed25519", 4), ("public-key", 0)];
    assert_eq!(operations, expected.map(|(op, len)| (op.to_string(), len)));
}

#[test]
fn a_key_service_outage_is_the_functions_error() {
    let host = StubHost::load(COMPONENT).unwrap().secret("SIGNING_KEY", "x");
    host.fail_next_decrypt(KmsError::Unavailable("throttled".into()));
    match host.invoke(request("x", false)) {
        Err(StubError::Invoke(InvokeError::Guest(message))) => assert_eq!(message, "key unavailable: throttled"),
        other => panic!("expected a guest error, got {other:?}"),
    }
    assert!(host.key_operations().is_empty(), "no handle, no operation");
}

#[test]
fn a_secret_that_is_not_a_key_is_refused_without_echoing_it() {
    let host = StubHost::load(COMPONENT).unwrap().secret("SIGNING_KEY", "not-a-pem-s3cret-of-some-length");
    match host.invoke(request("x", false)) {
        Err(StubError::Invoke(InvokeError::Guest(message))) => {
            assert!(
                message.contains(
                    "SIGNING_KEY is not an ed25519 private key: signing (ed25519) needs an Ed25519 private key"
                ),
                "{message}"
            );
            assert!(!message.contains("not-a-pem-s3cret-of-some-length"));
        }
        other => panic!("expected a guest error, got {other:?}"),
    }
}

#[test]
fn an_event_of_another_shape_is_a_clear_error() {
    let host = StubHost::load(COMPONENT).unwrap().secret("SIGNING_KEY", "x");
    match host.invoke(json!({"Records": []})) {
        Err(StubError::Invoke(InvokeError::Guest(message))) => {
            assert!(message.starts_with("the event does not have the shape the handler expects"), "{message}")
        }
        other => panic!("expected a guest error, got {other:?}"),
    }
}
