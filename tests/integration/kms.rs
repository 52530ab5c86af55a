//! Decrypts through the guest: wrong keys, wrong and stamped contexts, tampered ciphertexts.

use keyward::{HostSettings, InvokeError, KmsError};
use serde_json::json;

use crate::support::*;

/// Asks the probe guest to decrypt `ciphertext` with `guest_context`, returning its error message if it failed.
async fn probe_decrypt(
    host: &keyward::Host,
    ciphertext: &[u8],
    guest_context: serde_json::Value,
) -> Result<String, String> {
    let event = json!({"action": "decrypt", "ciphertext": b64(ciphertext), "context": guest_context});
    match invoke(host, event).await.result {
        Ok(response) => Ok(serde_json::from_str::<serde_json::Value>(&response).unwrap()["sha256_prefix"]
            .as_str()
            .unwrap()
            .to_string()),
        Err(InvokeError::Guest(message)) => Err(message),
        Err(other) => panic!("expected the guest to handle the kms error, got {other}"),
    }
}

#[tokio::test]
async fn a_ciphertext_of_another_key_is_invalid_and_names_both_keys() {
    let (host_key, host) = host("probe", HostSettings::default());
    let other_key = new_key();
    let ciphertext = other_key.encrypt(b"s3cret-value", &context(&[])).unwrap();
    let message = probe_decrypt(&host, &ciphertext, json!({})).await.unwrap_err();
    assert!(message.starts_with("kms invalid-ciphertext:"), "{message}");
    assert!(message.contains(&other_key.id()) && message.contains(&host_key.id()), "{message}");
    assert!(!message.contains("s3cret"));
}

#[tokio::test]
async fn the_context_must_match_the_ciphertext() {
    let (key, host) = host("probe", HostSettings::default());
    let ciphertext = key.encrypt(b"s3cret-value", &context(&[("purpose", "db")])).unwrap();
    assert_eq!(probe_decrypt(&host, &ciphertext, json!({"purpose": "db"})).await, Ok(fingerprint(b"s3cret-value")));
    for wrong in [json!({}), json!({"purpose": "cache"}), json!({"purpose": "db", "extra": "1"})] {
        let message = probe_decrypt(&host, &ciphertext, wrong).await.unwrap_err();
        assert!(message.starts_with("kms invalid-ciphertext: authentication failed"), "{message}");
    }
}

#[tokio::test]
async fn stamped_pairs_bind_ciphertexts_to_the_function() {
    let key = new_key();
    let stamped = HostSettings { secrets: stamping(&[("function", "hello")]), ..HostSettings::default() };
    let host = host_with("probe", &key, stamped);

    // Made for this function: opens with an empty guest context, since the host adds the stamp.
    let mine = key.encrypt(b"mine", &context(&[("function", "hello")])).unwrap();
    assert_eq!(probe_decrypt(&host, &mine, json!({})).await, Ok(fingerprint(b"mine")));
    // Guest pairs are merged with the stamp.
    let scoped = key.encrypt(b"scoped", &context(&[("function", "hello"), ("purpose", "db")])).unwrap();
    assert_eq!(probe_decrypt(&host, &scoped, json!({"purpose": "db"})).await, Ok(fingerprint(b"scoped")));

    // Made for another function: the guest cannot claim to be it.
    let theirs = key.encrypt(b"theirs", &context(&[("function", "billing")])).unwrap();
    let message = probe_decrypt(&host, &theirs, json!({"function": "billing"})).await.unwrap_err();
    assert!(message.starts_with("kms denied:") && message.contains("stamped"), "{message}");
    // Nor open it by staying silent: the stamp is added and authentication fails.
    let message = probe_decrypt(&host, &theirs, json!({})).await.unwrap_err();
    assert!(message.starts_with("kms invalid-ciphertext:"), "{message}");

    let invocation =
        invoke(&host, json!({"action": "decrypt", "ciphertext": b64(&theirs), "context": {"function": "billing"}}))
            .await;
    assert!(matches!(&invocation.decrypts[0].outcome, Err(KmsError::Denied(_))));
}

#[tokio::test]
async fn tampered_and_truncated_ciphertexts_are_refused() {
    let (key, host) = host("probe", HostSettings::default());
    let ciphertext = key.encrypt(b"s3cret-value", &context(&[])).unwrap();
    let last = ciphertext.len() - 1;
    for (what, bad) in [
        ("flipped body byte", {
            let mut c = ciphertext.clone();
            c[30] ^= 0x01;
            c
        }),
        ("flipped tag byte", {
            let mut c = ciphertext.clone();
            c[last] ^= 0x80;
            c
        }),
        ("flipped key id", {
            let mut c = ciphertext.clone();
            c[5] ^= 0x01;
            c
        }),
        ("truncated", ciphertext[..20].to_vec()),
        ("tag cut off", ciphertext[..last].to_vec()),
        ("empty", Vec::new()),
        ("garbage", b"definitely not a ciphertext, but long enough to pass the length check".to_vec()),
    ] {
        let message = probe_decrypt(&host, &bad, json!({})).await.unwrap_err();
        assert!(message.starts_with("kms invalid-ciphertext:"), "{what}: {message}");
        assert!(!message.contains("s3cret"), "{what}: {message}");
    }
}
