//! The AWS KMS backend against moto's KMS API, through the real SDK: decrypts, key pinning, context, error
//! mapping, and the plaintext cache (counted with moto's recorder).

use std::sync::Arc;
use std::time::Duration;

use keyward::aws::AwsKms;
use keyward::secrets::CacheSettings;
use keyward::{Host, HostSettings, InvokeError, SecretsSettings};
use serde_json::json;

use crate::servers::*;
use crate::support::*;

struct Fixture {
    moto: Server,
    kms: aws_sdk_kms::Client,
    key: String,
}

async fn fixture() -> Fixture {
    let moto = start_moto();
    let kms = aws_sdk_kms::Client::new(&moto_sdk_config(&moto));
    let key = create_key(&kms).await;
    Fixture { moto, kms, key }
}

fn probe_host(f: &Fixture, keys: &[&str], config: HostSettings) -> Host {
    let backend = AwsKms::from_sdk_config(&moto_sdk_config(&f.moto), keys.iter().map(|k| k.to_string()).collect());
    Host::from_file(&guest("probe"), Arc::new(backend), config).unwrap()
}

fn decrypt_event(ciphertext: &[u8], context: serde_json::Value) -> serde_json::Value {
    json!({"action": "decrypt", "ciphertext": b64(ciphertext), "context": context})
}

fn guest_error(invocation: &keyward::Invocation) -> String {
    match &invocation.result {
        Err(InvokeError::Guest(message)) => message.clone(),
        other => panic!("expected a guest error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decrypts_with_the_allowed_key_and_context() {
    let f = fixture().await;
    let ciphertext = encrypt(&f.kms, &f.key, b"aws-s3cret", &[("function", "probe"), ("purpose", "db")]).await;
    let config = HostSettings { secrets: stamping(&[("function", "probe")]), ..HostSettings::default() };
    let host = probe_host(&f, &[&f.key], config);

    let ok = invoke(&host, decrypt_event(&ciphertext, json!({"purpose": "db"}))).await;
    assert_eq!(response(&ok)["sha256_prefix"], fingerprint(b"aws-s3cret"));
    assert_eq!(ok.decrypts[0].key_id.as_deref(), Some(f.key.as_str()));

    let wrong = invoke(&host, decrypt_event(&ciphertext, json!({"purpose": "cache"}))).await;
    let message = guest_error(&wrong);
    assert!(message.starts_with("kms invalid-ciphertext:") && message.contains("purpose"), "{message}");
    assert!(!message.contains("aws-s3cret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ciphertexts_of_other_keys_are_refused() {
    let f = fixture().await;
    let other_key = create_key(&f.kms).await;
    let theirs = encrypt(&f.kms, &other_key, b"their-s3cret", &[]).await;
    let host = probe_host(&f, &[&f.key], HostSettings::default());
    let message = guest_error(&invoke(&host, decrypt_event(&theirs, json!({}))).await);
    assert!(message.starts_with("kms denied:") || message.starts_with("kms invalid-ciphertext:"), "{message}");
    assert!(message.contains(&f.key), "the message names the allowed key: {message}");
    assert!(!message.contains("their-s3cret"));

    // With both keys allowed, the second is tried.
    let host = probe_host(&f, &[&f.key, &other_key], HostSettings::default());
    let ok = invoke(&host, decrypt_event(&theirs, json!({}))).await;
    assert_eq!(response(&ok)["sha256_prefix"], fingerprint(b"their-s3cret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_saves_kms_calls_and_outlives_an_outage() {
    let mut f = fixture().await;
    let ciphertext = encrypt(&f.kms, &f.key, b"cached-s3cret", &[]).await;
    let kms = SecretsSettings {
        cache: CacheSettings { ttl: Duration::from_secs(300), ..CacheSettings::default() },
        ..SecretsSettings::default()
    };
    let config = HostSettings { secrets: kms, ..HostSettings::default() };
    let host = probe_host(&f, &[&f.key], config);
    let uncached = probe_host(&f, &[&f.key], HostSettings::default());

    recorder_start(&f.moto);
    for _ in 0..10 {
        let invocation = invoke(&host, decrypt_event(&ciphertext, json!({}))).await;
        assert_eq!(response(&invocation)["sha256_prefix"], fingerprint(b"cached-s3cret"));
    }
    assert_eq!(recorder_decrypts(&f.moto), 1, "ten invocations, one Decrypt");

    f.moto.stop();
    let invocation = invoke(&host, decrypt_event(&ciphertext, json!({}))).await;
    assert_eq!(response(&invocation)["sha256_prefix"], fingerprint(b"cached-s3cret"), "served from the cache");
    let message = guest_error(&invoke(&uncached, decrypt_event(&ciphertext, json!({}))).await);
    assert!(message.starts_with("kms unavailable:"), "{message}");
}
