//! Builds the component, then runs it in keyward's stub host (the production sandbox, an ephemeral key).

use std::path::PathBuf;
use std::process::Command;

use keyward::testing::StubHost;
use serde_json::json;

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
fn answers_a_function_url_request() {
    let host = StubHost::load(component()).unwrap().secret("PASSWORD", "hunter2").context("function", "{name}");
    let event = json!({
        "rawPath": "/hello",
        "requestContext": { "http": { "method": "GET" }, "timeEpoch": 0 },
        "isBase64Encoded": false
    });
    let response = host.invoke(event).unwrap();
    assert_eq!(response["statusCode"], 200);
    let body: serde_json::Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["path"], "/hello");
    assert_eq!(body["secret_bytes"], 7);
    assert_eq!(host.decrypt_calls().len(), 1);
}
