//! jwt in the stub host: `cargo xtask build-guests`, then `cargo test -p jwt`.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use base64::Engine as _;
use keyward::testing::StubHost;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _};
use serde_json::{Value, json};

const COMPONENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../target/wasm32-wasip2/release/jwt.wasm");

/// A Function URL event with a JSON body, as Lambda sends it.
fn request(body: &str) -> Value {
    json!({
        "version": "2.0", "rawPath": "/token", "rawQueryString": "", "headers": {"content-type": "application/json"},
        "requestContext": {"http": {"method": "POST", "path": "/token", "sourceIp": "127.0.0.1"}, "timeEpoch": 0},
        "body": body, "isBase64Encoded": false
    })
}

/// A fresh P-256 key: its PKCS#8 DER (the secret) and its public key.
fn p256_key() -> (Vec<u8>, Vec<u8>) {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    (pkcs8.as_ref().to_vec(), pair.public_key().as_ref().to_vec())
}

fn part(jwt: &str, index: usize) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(jwt.split('.').nth(index).unwrap()).unwrap()
}

#[test]
fn mints_a_token_that_verifies_with_the_public_key() {
    let (secret, public) = p256_key();
    let host =
        StubHost::load(COMPONENT).unwrap().secret("JWT_SIGNING_KEY", &secret).env("JWT_KEY_ID", "k1").deny_plaintext();
    let response = host.invoke(request(r#"{"sub": "alice"}"#)).unwrap();
    assert_eq!(response["statusCode"], 200, "{response}");
    let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    let token = body["token"].as_str().unwrap();

    let header: Value = serde_json::from_slice(&part(token, 0)).unwrap();
    assert_eq!(header, json!({"alg": "ES256", "typ": "JWT", "kid": "k1"}));
    let claims: Value = serde_json::from_slice(&part(token, 1)).unwrap();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 300);
    assert_eq!(body["expires_at"], claims["exp"]);
    let signing_input = &token[..token.rfind('.').unwrap()];
    signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &public)
        .verify(signing_input.as_bytes(), &part(token, 2))
        .expect("the token verifies with the key's public key");

    let operations = host.key_operations();
    assert_eq!(operations.len(), 1);
    assert_eq!((operations[0].operation.as_str(), operations[0].outcome.clone()), ("sign-jwt ES256", Ok(())));
}

#[test]
fn a_bad_request_or_the_wrong_key_is_refused_clearly() {
    let (secret, _) = p256_key();
    let host = StubHost::load(COMPONENT).unwrap().secret("JWT_SIGNING_KEY", &secret);
    for body in ["", "{}", r#"{"sub": ""}"#, "[1]"] {
        let response = host.invoke(request(body)).unwrap();
        assert_eq!(response["statusCode"], 400, "{body}: {response}");
    }
    assert!(host.key_operations().is_empty(), "nothing is signed for a bad request");

    let host = StubHost::load(COMPONENT).unwrap().secret("JWT_SIGNING_KEY", "an-hmac-s3cret-of-some-length");
    let error = host.invoke(request(r#"{"sub": "alice"}"#)).unwrap_err().to_string();
    assert!(error.contains("key unsupported: signing (ecdsa-p256-sha256) needs an ECDSA P-256 private key"), "{error}");
    assert!(!error.contains("an-hmac-s3cret-of-some-length"), "{error}");
}
