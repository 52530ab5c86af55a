//! The hello guest end to end: the classic handler's behaviour, through the library and through the binary.

use keyward::{HostConfig, InvokeError, KmsError};
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn decrypts_its_secret_and_answers_with_a_fingerprint() {
    let key = new_key();
    let ciphertext = key.encrypt(b"hunter2", &context(&[("function", "hello")])).unwrap();
    let config = HostConfig {
        guest_env: vec![("PASSWORD".into(), b64(&ciphertext))],
        stamped_context: context(&[("function", "hello")]),
        ..HostConfig::default()
    };
    let host = host_with("hello", &key, config);

    let invocation = invoke(&host, json!({"rawPath": "/"})).await;
    let response = response(&invocation);
    assert_eq!(response["statusCode"], 200);
    assert_eq!(response["headers"]["Content-Type"], "application/json");
    let body: serde_json::Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(body, json!({"message": "hello", "secret_sha256_prefix": fingerprint(b"hunter2")}));
    assert!(!invocation.result.as_ref().unwrap().contains("hunter2"));

    assert_eq!(invocation.decrypts.len(), 1);
    let record = &invocation.decrypts[0];
    assert_eq!(record.outcome, Ok(()));
    assert_eq!(record.context, Some(context(&[("function", "hello")])));
    assert_eq!(record.key_id.as_deref(), Some(format!("local:{}", key.id()).as_str()));
}

#[tokio::test]
async fn reports_a_missing_or_malformed_password_as_a_guest_error() {
    let (_, host) = host("hello", HostConfig::default());
    let err = invoke(&host, json!({})).await.result.unwrap_err();
    assert_eq!(err.to_string(), "guest returned an error: env var PASSWORD is not set");

    let config = HostConfig { guest_env: vec![("PASSWORD".into(), "not base64!".into())], ..HostConfig::default() };
    let (_, host) = crate::support::host("hello", config);
    let err = invoke(&host, json!({})).await.result.unwrap_err();
    assert!(err.to_string().contains("PASSWORD is not base64"), "{err}");
}

/// The README's flow, with the real binary: keygen, encrypt, invoke.
#[test]
fn the_cli_runs_the_readme_flow() {
    let dir = TempDir::new("hello-cli");
    let key = dir.path("local.key");
    let made = keyward(&["keygen", "--out", &key]);
    assert!(made.status.success(), "{}", stderr(&made));
    assert!(stdout(&made).starts_with("created local key "));

    let mut encrypt = keyward_cmd(&["encrypt", "--key", &key, "--context", "function=hello"]);
    let encrypted = {
        use std::io::Write as _;
        let mut child =
            encrypt.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(b"correct horse battery staple").unwrap();
        child.wait_with_output().unwrap()
    };
    assert!(encrypted.status.success());
    let ciphertext = stdout(&encrypted).trim().to_string();

    let decrypted = keyward(&["decrypt", "--key", &key, "--context", "function=hello", &ciphertext]);
    assert_eq!(decrypted.stdout, b"correct horse battery staple");

    let hello = guest("hello");
    let password = format!("PASSWORD={ciphertext}");
    let out =
        keyward(&["invoke", hello.to_str().unwrap(), "--key", &key, "--env", &password, "--context", "function=hello"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    let response: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let body: serde_json::Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["secret_sha256_prefix"], fingerprint(b"correct horse battery staple"));
}

/// The JavaScript hello (componentize-js, same WIT) answers byte for byte as the Rust one, and reports the same
/// errors.
#[test]
fn the_javascript_hello_behaves_like_the_rust_one() {
    use keyward::testing::{StubError, StubHost};

    // Loading compiles the component (seconds for the JavaScript engine); the builder keeps what was compiled.
    let bare = StubHost::load(guest("hello-js")).unwrap();
    match bare.invoke(json!({})) {
        Err(StubError::Invoke(InvokeError::Guest(message))) => assert_eq!(message, "env var PASSWORD is not set"),
        other => panic!("expected a guest error, got {other:?}"),
    }
    let js = bare.secret("PASSWORD", "hunter2").context("function", "hello");
    let rust = StubHost::load(guest("hello")).unwrap().secret("PASSWORD", "hunter2").context("function", "hello");
    let run = |host: &StubHost| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(host.invoke_raw(r#"{"rawPath":"/"}"#)).unwrap().result
    };
    assert_eq!(run(&js), run(&rust));
    assert!(run(&js).unwrap().contains(&fingerprint(b"hunter2")));
    assert_eq!(js.decrypt_calls().len(), 2);
    assert_eq!(js.decrypt_calls()[0].context, Some(context(&[("function", "hello")])));

    for error in [
        KmsError::Denied("policy".into()),
        KmsError::InvalidCiphertext("bad".into()),
        KmsError::Unavailable("later".into()),
    ] {
        js.fail_next_decrypt(error.clone());
        rust.fail_next_decrypt(error);
        assert_eq!(run(&js), run(&rust));
    }
}
