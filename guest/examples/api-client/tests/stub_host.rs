//! api-client in the stub host: `cargo xtask build-guests`, then `cargo test -p api-client`.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use keyward::testing::{OutboundFault, Route, StubError, StubHost};
use serde_json::json;

const COMPONENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../target/wasm32-wasip2/release/api_client.wasm");
const KEY: &str = "sk_test_4eC39HqLyjWDarjtT1zdp7dc";

/// The function's settings: the API allowed, its key injected.
fn host() -> StubHost {
    StubHost::load(COMPONENT)
        .expect("build the guest first: cargo xtask build-guests")
        .secret("API_KEY", KEY)
        .allow_outbound("https://api.example.com")
        .inject("API_KEY", "https://api.example.com Authorization: Bearer {secret}")
}

#[test]
fn charges_with_a_key_it_never_holds() {
    let host = host().route(
        "https://api.example.com/v1/charges",
        Route::respond(200, r#"{"id":"ch_1","status":"succeeded"}"#).header("content-type", "application/json"),
    );
    let response = host.invoke(json!({ "amount": 100, "currency": "eur" })).unwrap();
    assert_eq!(response, json!({ "charge": "ch_1", "status": "succeeded" }));
    let sent = host.sent_requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].method, "POST");
    assert_eq!(sent[0].url, "https://api.example.com/v1/charges");
    assert_eq!(sent[0].header_values("authorization"), ["Bearer {API_KEY}"], "injected, shown by name");
    assert_eq!(sent[0].body, br#"{"amount":100,"currency":"eur"}"#);
    assert_eq!(host.decrypt_calls().len(), 1, "the host fetched the key once, for the header");
}

#[test]
fn an_api_that_echoes_the_key_hands_the_guest_a_mask() {
    let echo = format!(r#"{{"id":"ch_2","status":"Bearer {KEY}"}}"#);
    let host = host().route("https://api.example.com/", Route::respond(200, echo));
    let response = host.invoke(json!({ "amount": 1, "currency": "eur" })).unwrap();
    assert_eq!(response["status"], "[REDACTED]");
}

#[test]
fn an_unreachable_api_is_a_clear_error() {
    let host = host().route("https://api.example.com/", Route::fail(OutboundFault::Refused));
    let error = host.invoke(json!({ "amount": 1, "currency": "eur" })).unwrap_err();
    assert!(matches!(error, StubError::Invoke(_)));
    assert_eq!(
        error.to_string(),
        "guest returned an error: payment API unreachable: the request failed: ConnectionRefused"
    );
}
