//! Key handles through a real component: a hostile guest trying to get key bytes out of every operation gets
//! signatures and MACs only; the handle's quotas and input bound hold; refusals are clear and quote no key.

use keyward::{HostSettings, InvokeError, KeysSettings, LimitExceeded, SecretsSettings};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject as _;
use serde_json::{Value, json};

use crate::support::*;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/capability/keys/key/fixtures").join(name))
        .unwrap()
}

/// Every 12-byte window of `secret` that is in none of `public` (an RSA key's DER holds its modulus too, and its PEM
/// text the modulus in base64, as the public key's answer has it).
fn secret_windows(secret: &[u8], public: &[&[u8]]) -> Vec<Vec<u8>> {
    secret.windows(12).filter(|w| !public.iter().any(|p| p.windows(12).any(|p| p == *w))).map(<[u8]>::to_vec).collect()
}

fn outputs(value: &Value) -> Vec<Value> {
    value["outputs"].as_array().unwrap().clone()
}

#[tokio::test]
async fn no_operation_gives_a_guest_the_key() {
    let hostile_ops = json!([
        {"op": "hmac", "message": "x"},
        {"op": "hmac", "bytes": 0},
        {"op": "public-key"},
        {"op": "sign", "alg": "ed25519", "message": "x"},
        {"op": "sign", "alg": "es256", "message": ""},
        {"op": "sign", "alg": "rs256", "bytes": 4096},
        {"op": "sign", "alg": "ps256", "message": "x"},
        {"op": "jwt", "alg": "hs256", "message": "{}", "header": "{\"alg\":\"none\"}"},
        {"op": "jwt", "alg": "hs256", "message": "{}", "header": "{\"jwk\":{\"d\":\"?\"},\"kid\":\"../../key\"}"},
        {"op": "jwt", "alg": "eddsa", "message": "{\"sub\":1}"},
        {"op": "jwt", "alg": "rs256", "message": "not json"},
    ]);
    let secrets = [
        ("HMAC", b"an-hmac-s3cret-of-thirty-two-bytes".to_vec()),
        ("ED", fixture("ed25519.pkcs8.pem")),
        ("RSA", fixture("rsa2048.pkcs1.pem")),
        ("EC", fixture("p256.sec1.pem")),
    ];
    let (key, host) = host("probe", HostSettings::default());
    let empty = keyward::EncryptionContext::new();
    for (name, plaintext) in &secrets {
        let ciphertext = key.encrypt(plaintext, &empty).unwrap();
        let event = json!({"action": "key", "ciphertext": b64(&ciphertext), "ops": hostile_ops});
        let invocation = invoke(&host, event).await;
        let text = invocation.result.as_ref().unwrap_or_else(|e| panic!("{name}: {e}")).clone();
        let answer: Value = serde_json::from_str(&text).unwrap();
        let mut produced: Vec<Vec<u8>> = vec![text.clone().into_bytes()];
        let (mut public, mut public_text) = (Vec::new(), String::new());
        let (mut ok, mut refused) = (0, 0);
        for (op, output) in hostile_ops.as_array().unwrap().iter().zip(outputs(&answer)) {
            match (output.get("ok").and_then(Value::as_str), output.get("error").and_then(Value::as_str)) {
                (Some(out), _) => {
                    ok += 1;
                    let bytes = keyward_base64::decode(out).unwrap_or_else(|_| out.as_bytes().to_vec());
                    if op["op"] == "public-key" {
                        public = bytes.clone();
                        public_text = out.to_owned();
                    }
                    // A JWT's parts, decoded.
                    produced.extend(out.split('.').filter_map(|part| keyward_base64::decode(part).ok()));
                    produced.push(bytes);
                }
                (None, Some(error)) => {
                    refused += 1;
                    assert!(
                        error.starts_with("key unsupported:") || error.starts_with("key invalid-input:"),
                        "{name} {op}: {error}"
                    );
                }
                _ => panic!("{name} {op}: {output}"),
            }
        }
        assert!(ok >= 2 && refused >= 2, "{name}: {ok} answered, {refused} refused: {answer}");
        // The key's bytes in every form the secret took: its PEM text and, for a private key, the DER inside.
        let der = PrivateKeyDer::from_pem_slice(plaintext).map(|d| d.secret_der().to_vec()).unwrap_or_default();
        let public: [&[u8]; 2] = [&public, public_text.as_bytes()];
        let mut windows = secret_windows(plaintext, &public);
        windows.extend(secret_windows(&der, &public));
        for out in &produced {
            for window in &windows {
                assert!(
                    !out.windows(window.len()).any(|w| w == window.as_slice()),
                    "{name}: key bytes in {:?}",
                    String::from_utf8_lossy(out)
                );
            }
        }
        assert!(!text.contains("PRIVATE KEY") && !text.contains("s3cret"), "{name}: {text}");
    }
    // The host serves the next invocation as before.
    assert!(invoke(&host, json!({"action": "context"})).await.result.is_ok());
}

#[tokio::test]
async fn handles_are_bounded_like_decrypts() {
    let kms = SecretsSettings { max_decrypt_calls: 1, ..SecretsSettings::default() };
    let keys = KeysSettings { max_operations: 3, max_input_bytes: 1024 };
    let (key, host) = host("probe", HostSettings { secrets: kms, keys, ..HostSettings::default() });
    let ciphertext =
        b64(&key.encrypt(b"an-hmac-s3cret-of-sixteen-bytes-or-more", &keyward::EncryptionContext::new()).unwrap());

    let over_size = json!({"action": "key", "ciphertext": ciphertext, "ops": [{"op": "hmac", "bytes": 1025}, {"op": "hmac", "bytes": 1024}]});
    let invocation = invoke(&host, over_size).await;
    let outs = outputs(&response(&invocation));
    let refusal = "key invalid-input: the input is 1025 bytes; a key operation takes at most 1024";
    assert_eq!(outs[0]["error"], refusal);
    assert_eq!(keyward_base64::decode(outs[1]["ok"].as_str().unwrap()).unwrap().len(), 32);
    // Both are recorded, as audited: the operation and the input's length, never the input.
    let records: Vec<_> =
        invocation.key_operations.iter().map(|r| (r.operation.as_str(), r.input_len, r.outcome.clone())).collect();
    assert_eq!(records, [("hmac sha256", 1025, Err(refusal.to_string())), ("hmac sha256", 1024, Ok(()))]);
    assert_eq!(invocation.key_operations[0].handle, invocation.key_operations[1].handle);

    let flood = json!({"action": "key", "ciphertext": ciphertext, "ops": [{"op": "hmac", "message": "x"}], "times": 4});
    let invocation = invoke(&host, flood).await;
    assert!(
        matches!(invocation.result, Err(InvokeError::Limit(LimitExceeded::KeyOperations { limit: 3 }))),
        "{:?}",
        invocation.result
    );
    assert_eq!(
        invocation.result.unwrap_err().to_string(),
        "guest exceeded its limit of 3 key operations per invocation"
    );
    // Opening is a decrypt: a second open in one invocation is over a quota of one.
    let two_opens = json!({"action": "key", "ciphertext": ciphertext, "ops": [], "reopen": 1});
    let invocation = invoke(&host, two_opens).await;
    assert!(
        matches!(invocation.result, Err(InvokeError::Limit(LimitExceeded::DecryptCalls { limit: 1 }))),
        "{:?}",
        invocation.result
    );
    assert_eq!(invocation.decrypts.len(), 1, "the refused open is not a decrypt");
}

#[tokio::test]
async fn opening_by_name_takes_only_the_guests_own_variables() {
    let (key, _) = host("probe", HostSettings::default());
    let ciphertext = b64(&key.encrypt(b"a-named-s3cret-of-some-length", &keyward::EncryptionContext::new()).unwrap());
    let config = HostSettings {
        guest_env: vec![("SIGNING".into(), ciphertext), ("PLAIN".into(), "not base64!".into())],
        ..HostSettings::default()
    };
    let host = host_with("probe", &key, config);
    let ops = json!([{"op": "hmac", "message": "m"}]);
    let named = response(&invoke(&host, json!({"action": "key", "env": "SIGNING", "ops": ops})).await);
    assert!(outputs(&named)[0]["ok"].is_string(), "{named}");
    for (name, says) in [
        ("HOME", "key invalid-input: \"HOME\" is not one of the guest's secrets"),
        ("PLAIN", "key invalid-ciphertext: env var PLAIN is not base64"),
    ] {
        let invocation = invoke(&host, json!({"action": "key", "env": name, "ops": ops})).await;
        let error = invocation.result.unwrap_err().to_string();
        assert!(error.contains(says), "{name}: {error}");
    }
    // A name of any length is quoted only in part.
    let long = "N".repeat(100_000);
    let error = invoke(&host, json!({"action": "key", "env": long, "ops": ops})).await.result.unwrap_err().to_string();
    assert!(error.len() < 300 && error.contains("[cut: 100000 bytes in all]"), "{error}");
}

/// `KEYWARD_GUEST_PLAINTEXT=deny`: a component that imports `kms` does not load; one that uses handles only runs,
/// and signs with a key it never holds.
#[tokio::test]
async fn a_host_denying_plaintext_runs_only_sealed_components() {
    let key = new_key();
    let deny = || HostSettings {
        kms: keyward::KmsSettings { guest_plaintext: keyward::GuestPlaintext::Deny },
        ..HostSettings::default()
    };
    for guest_name in ["probe", "hello"] {
        let error = keyward::Host::from_file(&guest(guest_name), key.clone(), deny()).unwrap_err().to_string();
        assert!(
            error.starts_with("component imports `keyward:lambda/kms@0.1.0`, and this host denies guests plaintext"),
            "{guest_name}: {error}"
        );
        assert_eq!(error.lines().count(), 1, "{error}");
    }

    let pem = fixture("ed25519.pkcs8.pem");
    let ciphertext = b64(&key.encrypt(&pem, &keyward::EncryptionContext::new()).unwrap());
    let config = HostSettings { guest_env: vec![("SIGNING_KEY".into(), ciphertext)], ..deny() };
    let host = host_with("signer", &key, config);
    let event = json!({
        "version": "2.0", "rawPath": "/sign", "rawQueryString": "", "headers": {},
        "requestContext": {"http": {"method": "POST", "path": "/sign", "sourceIp": "127.0.0.1"}, "timeEpoch": 0},
        "body": "pay 10 EUR", "isBase64Encoded": false
    });
    let answer = response(&invoke(&host, event).await);
    let body: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    let public = keyward_base64::decode(body["public_key"].as_str().unwrap()).unwrap();
    let signature = keyward_base64::decode(body["signature"].as_str().unwrap()).unwrap();
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &public)
        .verify(b"pay 10 EUR", &signature)
        .expect("the host's signature verifies with the public key it gave");
}

/// The JavaScript signer (componentize-js, the sealed world) answers as the Rust one, byte for byte, on a host that
/// denies plaintext: the same signature (Ed25519 is deterministic), the same public key, the same refusals.
#[test]
fn the_javascript_signer_answers_as_the_rust_one() {
    use keyward::testing::StubHost;

    let event = |body: &str, base64: bool| {
        json!({
            "version": "2.0", "rawPath": "/sign", "rawQueryString": "", "headers": {},
            "requestContext": {"http": {"method": "POST", "path": "/sign", "sourceIp": "127.0.0.1"}, "timeEpoch": 0},
            "body": body, "isBase64Encoded": base64
        })
    };
    let run = |host: &StubHost, event: &Value| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let result = runtime.block_on(host.invoke_raw(&event.to_string())).unwrap().result;
        // Compared as JSON: the two serialize their response's keys in their own order.
        result.map(|text| serde_json::from_str::<Value>(&text).unwrap()).map_err(|e| e.to_string())
    };
    let load =
        |name: &str, secret: &[u8]| StubHost::load(guest(name)).unwrap().secret("SIGNING_KEY", secret).deny_plaintext();
    let pem = fixture("ed25519.pkcs8.pem");
    let (js, rust) = (load("signer-js", &pem), load("signer", &pem));
    for event in [event("pay 10 EUR to alice", false), event("AJ+Slg==", true), event("", false)] {
        let answer = run(&js, &event);
        assert_eq!(answer, run(&rust, &event), "{event}");
        let body: Value = serde_json::from_str(answer.unwrap()["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["signature"].as_str().unwrap().len(), 88, "{body}");
    }
    // A KMS outage while opening the key, and a secret that is not an ed25519 key: the same errors.
    js.fail_next_decrypt(keyward::KmsError::Unavailable("throttled".into()));
    rust.fail_next_decrypt(keyward::KmsError::Unavailable("throttled".into()));
    let outage = run(&js, &event("x", false));
    assert_eq!(outage, run(&rust, &event("x", false)));
    assert_eq!(outage.unwrap_err(), "guest returned an error: key unavailable: throttled");
    let (js, rust) = (
        js.secret("SIGNING_KEY", b"an-hmac-s3cret-of-some-length"),
        rust.secret("SIGNING_KEY", b"an-hmac-s3cret-of-some-length"),
    );
    let refused = run(&js, &event("x", false));
    assert_eq!(refused, run(&rust, &event("x", false)));
    assert!(refused.unwrap_err().contains("SIGNING_KEY is not an ed25519 private key: signing (ed25519) needs"));
    // The same operations asked of the host (each stub has its own key, hence its own key id).
    let asked = |host: &StubHost| {
        host.key_operations().into_iter().map(|r| (r.operation, r.input_len, r.outcome)).collect::<Vec<_>>()
    };
    assert_eq!(asked(&js), asked(&rust));
}
