//! The hello guest end to end: the classic handler's behaviour, through the library and through the binary.

use keyward::secrets::CacheSettings;
use keyward::{HostSettings, InvokeError, KmsError, SecretsSettings};
use serde_json::json;

use crate::support::*;

/// What the host answers a guest asking for a secret it does not have.
const MISSING: &str = "kms denied: \"PASSWORD\" is not one of the guest's secrets: not a guest env var (KEYWARD_GUEST_ENV; keyward invoke --env), and no source names it (KEYWARD_SOURCE_<NAME>; --source)";

#[tokio::test]
async fn decrypts_its_secret_and_answers_with_a_fingerprint() {
    let key = new_key();
    let ciphertext = key.encrypt(b"hunter2", &context(&[("function", "hello")])).unwrap();
    let config = HostSettings {
        guest_env: vec![("PASSWORD".into(), b64(&ciphertext))],
        secrets: stamping(&[("function", "hello")]),
        ..HostSettings::default()
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
    let (_, host) = host("hello", HostSettings::default());
    let err = invoke(&host, json!({})).await.result.unwrap_err();
    assert_eq!(err.to_string(), format!("guest returned an error: {MISSING}"));

    let config = HostSettings { guest_env: vec![("PASSWORD".into(), "not base64!".into())], ..HostSettings::default() };
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
        Err(StubError::Invoke(InvokeError::Guest(message))) => assert_eq!(message, MISSING),
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

/// One base64 policy: the Rust and the JavaScript hello, and the host's prefetch, read a ciphertext in every form the
/// classic Node.js handler took (`Buffer.from(value, 'base64')`), and refuse the rest in the same words.
#[tokio::test]
async fn both_guests_and_the_host_read_base64_alike() {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

    let key = new_key();
    let bytes = key.encrypt(b"hunter2", &context(&[])).unwrap();
    let standard = b64(&bytes);
    let wrap = |text: &str, width: usize, newline: &str| -> String {
        text.as_bytes()
            .chunks(width)
            .map(|line| String::from_utf8_lossy(line).into_owned())
            .collect::<Vec<_>>()
            .join(newline)
    };
    let with_at = |text: &str, at: usize, insert: &str| format!("{}{insert}{}", &text[..at], &text[at..]);
    let cases: Vec<(&str, String, Result<(), &str>)> = vec![
        ("standard", standard.clone(), Ok(())),
        ("without padding", STANDARD_NO_PAD.encode(&bytes), Ok(())),
        ("URL-safe", URL_SAFE.encode(&bytes), Ok(())),
        ("URL-safe without padding", URL_SAFE_NO_PAD.encode(&bytes), Ok(())),
        ("wrapped at 76 columns, as `base64` prints", wrap(&standard, 76, "\n"), Ok(())),
        ("wrapped at 64 with CRLF", wrap(&standard, 64, "\r\n"), Ok(())),
        ("surrounded by whitespace", format!(" \n{standard}\n\t"), Ok(())),
        ("a character of neither alphabet", with_at(&standard, 5, "%"), Err("invalid character '%' at offset 5")),
        ("padding in the middle", with_at(&standard, 8, "=="), Err("misplaced '=' at offset 9")),
        ("padding then a space in the middle", with_at(&standard, 8, "= "), Err("misplaced '=' at offset 8")),
        ("after a byte-order mark", format!("\u{feff}{standard}"), Ok(())),
        ("a control character", with_at(&standard, 3, "\u{1}"), Err("invalid byte 0x01 at offset 3")),
        ("a quote", with_at(&standard, 2, "'"), Err("invalid character ''' at offset 2")),
        (
            "one character too many",
            format!("{}A", STANDARD_NO_PAD.encode(&bytes[..3])),
            Err("a single character at offset 4"),
        ),
    ];
    let compiled: Vec<(&str, Vec<u8>)> = ["hello", "hello-js"]
        .into_iter()
        .map(|name| (name, keyward::precompile(&std::fs::read(guest(name)).unwrap(), &Default::default()).unwrap()))
        .collect();
    for (case, password, expected) in &cases {
        let prefetching = SecretsSettings {
            cache: CacheSettings { ttl: std::time::Duration::from_secs(60), ..CacheSettings::default() },
            prefetch: vec!["PASSWORD".into()],
            ..SecretsSettings::default()
        };
        let config = HostSettings { guest_env: vec![("PASSWORD".into(), password.clone())], ..HostSettings::default() };
        let with_prefetch = HostSettings { secrets: prefetching, ..config.clone() };
        for (name, cwasm) in &compiled {
            let host = keyward::Host::new(cwasm, key.clone(), config.clone()).unwrap();
            let result = invoke(&host, json!({})).await.result;
            let prefetching = keyward::Host::new(cwasm, key.clone(), with_prefetch.clone());
            match expected {
                Ok(()) => {
                    assert!(
                        result.as_ref().is_ok_and(|r| r.contains(&fingerprint(b"hunter2"))),
                        "{name}, {case}: {result:?}"
                    );
                    assert!(prefetching.unwrap().prefetch().await.is_ok(), "prefetch, {case}");
                }
                Err(reason) => {
                    let message = format!(
                        "guest returned an error: kms invalid-ciphertext: env var PASSWORD is not base64: {reason}"
                    );
                    assert!(
                        matches!(&result, Err(e) if e.to_string().starts_with(&message)),
                        "{name}, {case}: {result:?}"
                    );
                    // A variable named for prefetching that holds no secret is a setting that cannot work.
                    let refused = prefetching.unwrap_err().to_string();
                    let expected = format!("KEYWARD_PREFETCH: names PASSWORD, whose value is not base64: {reason}");
                    assert!(refused.starts_with(&expected), "prefetch, {case}: {refused}");
                }
            }
        }
    }
}
