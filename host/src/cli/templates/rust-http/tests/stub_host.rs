//! Builds the component, then sends it a request in keyward's stub host (the production sandbox, an ephemeral key).

use std::path::PathBuf;
use std::process::Command;

use keyward::testing::StubHost;

fn component() -> PathBuf {
    let dir = env!("CARGO_MANIFEST_DIR");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--target", "wasm32-wasip2", "--lib"])
        .current_dir(dir)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the component failed (is the target installed? rustup target add wasm32-wasip2)");
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(dir).join("target"));
    target.join("wasm32-wasip2/release/{crate_name}.wasm")
}

#[test]
fn answers_a_request() {
    let host = StubHost::load(component()).unwrap().secret("PASSWORD", "hunter2").context("function", "{name}");
    let response = host.request(http::Request::get("/hello").body(Vec::new()).unwrap()).unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(std::str::from_utf8(response.body()).unwrap(), r#"{"path":"/hello","secret_bytes":7}"#);
    assert_eq!(host.decrypt_calls().len(), 1);
}
