//! http-hello in the stub host, sent requests as a browser would send them: `cargo xtask build-guests`, then
//! `cargo test -p http-hello`.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use keyward::testing::StubHost;

const COMPONENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../target/wasm32-wasip2/release/http_hello.wasm");

#[test]
fn greets_with_a_fingerprint_of_its_secret() {
    let host = StubHost::load(COMPONENT).expect("build the guest first: cargo xtask build-guests");
    let host = host.secret("PASSWORD", "hunter2");
    let request = http::Request::get("/greet?lang=en").body(Vec::new()).unwrap();
    let response = host.request(request).unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    // printf hunter2 | sha256sum
    let body = std::str::from_utf8(response.body()).unwrap();
    assert_eq!(body, r#"{"greeting":"hello from /greet?lang=en","secret_sha256_prefix":"f52fbd32"}"#);
    assert_eq!(host.decrypt_calls().len(), 1);
}

#[test]
fn a_missing_secret_is_a_500_naming_it() {
    let host = StubHost::load(COMPONENT).unwrap();
    let response = host.request(http::Request::get("/").body(Vec::new()).unwrap()).unwrap();
    assert_eq!(response.status(), 500);
    let body = std::str::from_utf8(response.body()).unwrap();
    assert!(body.starts_with(r#"{"error":"denied: \"PASSWORD\" is not one of the guest's secrets"#), "{body}");
}
