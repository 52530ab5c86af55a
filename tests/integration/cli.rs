//! The `keyward` binary's contract: exit codes, one clear line per error, and no plaintext in anything it prints.

use crate::support::*;

/// Runs `keyward invoke` on a component file holding `bytes`; returns (exit code, stderr).
fn invoke_bytes(bytes: &[u8]) -> (i32, String) {
    let (dir, key) = dir_with_key("bad-component");
    let component = dir.path("guest.wasm");
    std::fs::write(&component, bytes).unwrap();
    let out = keyward(&["invoke", &component, "--key", &key]);
    (out.status.code().unwrap(), stderr(&out))
}

fn assert_one_line(stderr: &str) {
    assert_eq!(stderr.lines().count(), 1, "expected one line, got: {stderr}");
    assert!(stderr.starts_with("keyward: error: "), "{stderr}");
}

#[test]
fn bad_component_files_get_one_clear_line_and_exit_code_2() {
    let wat = |text: &str| wat::parse_str(text).expect("valid WAT");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("a text file", b"#!/bin/sh\necho hello\n".to_vec(), "not a WebAssembly file"),
        ("an empty file", Vec::new(), "not a WebAssembly file"),
        ("a core module", wat("(module (func (export \"handle\")))"), "core WebAssembly module, not a component"),
        ("a corrupt component", b"\0asm\x0d\0\x01\0\xff\xff\xff".to_vec(), "invalid component"),
        (
            "a component of another world",
            wat("(component)"),
            "exports neither `keyward:lambda/handler@0.1.0` (keyward's handler world) nor `wasi:http/incoming-handler@0.2.x`",
        ),
        (
            "a component importing sockets",
            wat(r#"(component (import "wasi:sockets/tcp@0.2.0" (instance)))"#),
            "imports `wasi:sockets/tcp@0.2.0`, which keyward does not grant",
        ),
        (
            "a component importing an HTTP server's interface",
            wat(r#"(component (import "wasi:http/incoming-handler@0.2.0" (instance)))"#),
            "imports `wasi:http/incoming-handler@0.2.0`, which keyward does not grant",
        ),
        (
            "a handler of the wrong shape",
            wat(r#"(component
                (core module $m (func (export "f")))
                (core instance $i (instantiate $m))
                (func $f (canon lift (core func $i "f")))
                (instance $h (export "handle" (func $f)))
                (export "keyward:lambda/handler@0.1.0" (instance $h)))"#),
            "is of no world keyward runs: its `handle` does not have the signature",
        ),
        (
            "an HTTP handler of the wrong shape",
            wat(r#"(component
                (core module $m (func (export "f")))
                (core instance $i (instantiate $m))
                (func $f (canon lift (core func $i "f")))
                (instance $h (export "handle" (func $f)))
                (export "wasi:http/incoming-handler@0.2.0" (instance $h)))"#),
            "is of no world keyward runs: its `wasi:http/incoming-handler@0.2.0` has no function `handle(request: incoming-request, response-out: response-outparam)`",
        ),
    ];
    for (what, bytes, expected) in cases {
        let (code, stderr) = invoke_bytes(&bytes);
        assert_eq!(code, 2, "{what}: {stderr}");
        assert_one_line(&stderr);
        assert!(stderr.contains(expected), "{what}: expected {expected:?} in {stderr}");
    }
}

/// `--guest-plaintext deny` refuses a guest that decrypts, as `KEYWARD_GUEST_PLAINTEXT=deny` does on Lambda.
#[test]
fn a_guest_that_decrypts_is_refused_when_plaintext_is_denied() {
    let (_dir, key) = dir_with_key("sealed");
    let out = keyward(&["invoke", guest("hello").to_str().unwrap(), "--key", &key, "--guest-plaintext", "deny"]);
    assert_eq!(out.status.code(), Some(2));
    assert_one_line(&stderr(&out));
    assert!(stderr(&out).contains("imports `keyward:lambda/kms@0.1.0`, and this host denies guests plaintext"));
}

#[test]
fn a_missing_component_or_key_is_named() {
    let (dir, key) = dir_with_key("missing");
    let out = keyward(&["invoke", &dir.path("nope.wasm"), "--key", &key]);
    assert_eq!(out.status.code(), Some(2));
    assert_one_line(&stderr(&out));
    assert!(stderr(&out).contains("nope.wasm"), "{}", stderr(&out));

    let hello = guest("hello");
    let out = keyward(&["invoke", hello.to_str().unwrap(), "--key", &dir.path("no.key")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no.key"), "{}", stderr(&out));

    let out = keyward(&["keygen", "--out", &key]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
}

#[test]
fn bad_arguments_are_refused_with_exit_code_2() {
    let (dir, key) = dir_with_key("args");
    let hello = guest("hello");
    let hello = hello.to_str().unwrap();
    let event = dir.path("event.json");
    std::fs::write(&event, "{not json").unwrap();
    let bytes = dir.path("bytes.json");
    std::fs::write(&bytes, b"{\"a\":\"\xff\"}").unwrap();
    let probe = guest("probe");
    let probe = probe.to_str().unwrap();
    for (args, expected) in [
        (
            vec!["invoke", hello, "--key", &key, "--event", &event],
            "the event is not valid JSON (key must be a string at line 1 column 2)",
        ),
        (vec!["invoke", hello, "--key", &key, "--event", &bytes], "not UTF-8 (invalid byte at offset 6)"),
        (vec!["invoke", hello, "--key", &key, "--context", "novalue"], "KEY=VALUE"),
        (vec!["invoke", hello, "--key", &key, "--memory-mb", "0"], "memory-mb"),
        (
            vec!["invoke", probe, "--key", &key, "--memory-mb", "1"],
            "the component's memory starts at 1.1 MiB, more than the memory limit: raise the limit",
        ),
        (vec!["invoke", hello, "--key", &key, "--env", "AWS_SESSION_TOKEN=x"], "AWS credentials"),
        // The host's settings errors name the flags that were given, not Lambda mode's variables.
        (
            vec!["invoke", hello, "--key", &key, "--env", "DB=Y3Q=", "--source", "DB=sealed:db.sealed"],
            "keyward: error: --source DB: DB is a guest env var (--env) too",
        ),
        (vec!["invoke", hello, "--key", &key, "--source", "DB=ssm:/db:0"], "--source DB: \"ssm:/db:0\": after the"),
        // A secret pasted where its source or its {secret} placeholder goes is not echoed back.
        (vec!["invoke", hello, "--key", &key, "--source", "DB=s3cr3t-XYZ"], "it is not a secret source (not shown"),
        (
            vec![
                "invoke",
                hello,
                "--key",
                &key,
                "--inject",
                "API=https://api.example.com Authorization: Bearer s3cr3t-XYZ",
            ],
            "a value of --inject is refused: the template must hold {secret} or {basic:USER} once",
        ),
        (vec!["decrypt", "--key", &key, "%%%"], "not base64"),
        (vec!["lambda"], "AWS_LAMBDA_RUNTIME_API is not set"),
    ] {
        let out = keyward(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(expected), "{args:?}: expected {expected:?} in {}", stderr(&out));
        assert!(!stderr(&out).contains("s3cr3t-XYZ"), "{args:?}: the secret is echoed: {}", stderr(&out));
    }
}

/// Guest failures exit 1 with one line; nothing the binary prints, even at debug level, holds the plaintext.
#[test]
fn guest_failures_exit_1_and_plaintext_is_never_printed() {
    const SECRET: &str = "pl41ntext-that-must-not-leak";
    let (dir, key) = dir_with_key("leak");
    let ciphertext =
        stdout(&keyward(&["encrypt", "--key", &key, "--context", "function=hello", "--plaintext", SECRET]))
            .trim()
            .to_string();
    let password = format!("PASSWORD={ciphertext}");
    let hello = guest("hello");
    let hello = hello.to_str().unwrap();

    let ok = keyward(&["-vv", "invoke", hello, "--key", &key, "--env", &password, "--context", "function=hello"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(stderr(&ok).contains("kms decrypt"), "the audit line is logged at -vv: {}", stderr(&ok));
    let wrong = keyward(&["-vv", "invoke", hello, "--key", &key, "--env", &password, "--context", "function=other"]);
    assert_eq!(wrong.status.code(), Some(1));
    for out in [&ok, &wrong] {
        assert!(!stdout(out).contains(SECRET) && !stderr(out).contains(SECRET));
    }

    let quiet = keyward(&["invoke", hello, "--key", &key, "--env", &password, "--context", "function=other"]);
    assert_eq!(quiet.status.code(), Some(1));
    assert_one_line(&stderr(&quiet));
    assert!(stderr(&quiet).contains("kms invalid-ciphertext"), "{}", stderr(&quiet));

    let probe = guest("probe");
    let event = dir.path("loop.json");
    std::fs::write(&event, r#"{"action":"loop"}"#).unwrap();
    let timeout =
        keyward(&["invoke", probe.to_str().unwrap(), "--key", &key, "--event", &event, "--timeout-ms", "100"]);
    assert_eq!(timeout.status.code(), Some(1));
    assert_eq!(stderr(&timeout), "keyward: error: guest exceeded its time limit of 100 ms\n");
}

/// Guest output reaches the host log (at -v), tagged with the request id, and is bounded.
#[test]
fn guest_output_is_logged_and_bounded() {
    let (dir, key) = dir_with_key("print");
    let probe = guest("probe");
    let event = dir.path("print.json");
    std::fs::write(&event, r#"{"action":"print","lines":20000}"#).unwrap();
    let out = keyward(&["-v", "invoke", probe.to_str().unwrap(), "--key", &key, "--event", &event]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = stderr(&out);
    let first = log.lines().find(|l| l.contains("probe stdout line 0")).expect("guest stdout is logged");
    assert!(first.contains("request_id="), "{first}");
    assert!(log.contains("probe stderr line 0"));
    assert!(!log.contains("probe stdout line 19999"), "output past the limit is dropped");
    assert!(log.contains("guest output over the limit was dropped"));

    // The bound is a setting (KEYWARD_MAX_OUTPUT_BYTES in Lambda mode), up to 1 MiB.
    let probe = probe.to_str().unwrap();
    let bounded = keyward(&["-v", "invoke", probe, "--key", &key, "--event", &event, "--max-output-bytes", "100"]);
    assert!(bounded.status.success(), "{}", stderr(&bounded));
    let log = stderr(&bounded);
    assert!(log.contains("probe stdout line 0") && !log.contains("probe stdout line 9"), "{log}");
    assert!(log.contains("limit=100"), "{log}");
    let over = keyward(&["invoke", probe, "--key", &key, "--event", &event, "--max-output-bytes", "1048577"]);
    assert_eq!(over.status.code(), Some(2));
    let refusal = stderr(&over);
    assert!(refusal.contains("--max-output-bytes") && refusal.contains("0..=1048576"), "{refusal}");
}

/// A guest that prints its secret or puts it in its error does not get it into the host's log or error line.
#[test]
fn secrets_a_guest_leaks_are_masked_in_logs_and_errors() {
    const SECRET: &str = "s3cret-the-guest-prints";
    let (dir, key) = dir_with_key("leak-guest");
    let ciphertext = stdout(&keyward(&["encrypt", "--key", &key, "--plaintext", SECRET])).trim().to_string();
    let event = dir.path("leak.json");
    std::fs::write(&event, serde_json::json!({"action": "leak", "ciphertext": ciphertext}).to_string()).unwrap();
    let probe = guest("probe");
    let out = keyward(&["-v", "invoke", probe.to_str().unwrap(), "--key", &key, "--event", &event]);
    assert_eq!(out.status.code(), Some(1));
    let log = stderr(&out);
    assert!(!log.contains(SECRET), "{log}");
    assert!(log.contains("the secret is [REDACTED]"), "{log}");
    assert!(log.contains("debug: secret=[REDACTED]"), "{log}");
    assert!(log.ends_with("keyward: error: guest returned an error: could not use secret [REDACTED]\n"), "{log}");
}

/// Files saved by Windows editors: a UTF-8 byte-order mark is skipped in event and key files; UTF-16 is named.
#[test]
fn byte_order_marks_are_skipped_and_utf16_is_named() {
    let (dir, key) = dir_with_key("bom");
    let key_with_bom = dir.path("bom.key");
    std::fs::write(&key_with_bom, [b"\xef\xbb\xbf".as_slice(), &std::fs::read(&key).unwrap()].concat()).unwrap();
    let ciphertext = stdout(&keyward(&["encrypt", "--key", &key, "--plaintext", "bom-s3cret"])).trim().to_string();
    let event = dir.path("event.json");
    std::fs::write(&event, b"\xef\xbb\xbf{\"rawPath\":\"/\"}").unwrap();
    let hello = guest("hello");
    let password = format!("PASSWORD={ciphertext}");
    let out =
        keyward(&["invoke", hello.to_str().unwrap(), "--key", &key_with_bom, "--env", &password, "--event", &event]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&fingerprint(b"bom-s3cret")));

    let utf16 = dir.path("utf16.json");
    let text: Vec<u8> = "{}".encode_utf16().flat_map(u16::to_le_bytes).collect();
    std::fs::write(&utf16, [b"\xff\xfe".as_slice(), &text].concat()).unwrap();
    let out = keyward(&["invoke", hello.to_str().unwrap(), "--key", &key, "--event", &utf16]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("it is UTF-16, not UTF-8: save it as UTF-8"), "{}", stderr(&out));
    std::fs::write(&key_with_bom, [b"\xff\xfe".as_slice(), &std::fs::read(&key).unwrap()].concat()).unwrap();
    let out = keyward(&["invoke", hello.to_str().unwrap(), "--key", &key_with_bom]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("UTF-16"), "{}", stderr(&out));
}

/// `--bind-component`: a ciphertext bound to one build of the guest opens for that build, as `.wasm` or as the
/// `.cwasm` compiled from it, and for no other build; the refusal says why. `keyward digest` names the build.
#[test]
fn a_secret_bound_to_a_build_opens_only_for_that_build() {
    let (dir, key) = dir_with_key("bound");
    let hello = guest("hello").to_str().unwrap().to_string();
    let cwasm = dir.path("hello.cwasm");
    assert!(keyward(&["compile", &hello, "-o", &cwasm]).status.success());
    let rebuilt = dir.path("rebuilt.wasm");
    std::fs::write(&rebuilt, [std::fs::read(&hello).unwrap(), custom_section("note", b"rebuilt")].concat()).unwrap();

    let digest = |component: &str| stdout(&keyward(&["digest", component])).trim().to_string();
    assert!(digest(&hello).starts_with("sha256:") && digest(&hello).len() == 71, "{}", digest(&hello));
    assert_eq!(digest(&cwasm), digest(&hello), "a .cwasm carries its .wasm's digest");
    let arm = dir.path("hello-arm64.cwasm");
    let compiled = keyward(&["compile", &hello, "-o", &arm, "--target", "aarch64-unknown-linux-gnu"]);
    assert!(compiled.status.success(), "{}", stderr(&compiled));
    assert_eq!(digest(&arm), digest(&hello), "the same for every target");
    assert_ne!(digest(&rebuilt), digest(&hello));

    let encrypted = keyward(&["encrypt", "--key", &key, "--bind-component", &hello, "--plaintext", "bound-s3cret"]);
    assert!(encrypted.status.success(), "{}", stderr(&encrypted));
    let password = format!("PASSWORD={}", stdout(&encrypted).trim());
    let run = |component: &str| keyward(&["invoke", component, "--key", &key, "--env", &password, "--bind-component"]);
    for component in [&hello, &cwasm] {
        let out = run(component);
        assert!(out.status.success(), "{component}: {}", stderr(&out));
        assert!(stdout(&out).contains(&fingerprint(b"bound-s3cret")));
    }
    let out = run(&rebuilt);
    assert_eq!(out.status.code(), Some(1));
    assert_one_line(&stderr(&out));
    let expected = format!("this host binds secrets to the build of its guest (component={})", digest(&rebuilt));
    assert!(stderr(&out).contains(&expected), "{}", stderr(&out));
    assert!(!stderr(&out).contains("bound-s3cret"));

    // The same, checked without a guest; and a .cwasm whose record is gone cannot be bound.
    let ciphertext = stdout(&encrypted).trim().to_string();
    let decrypted = keyward(&["decrypt", "--key", &key, "--bind-component", &cwasm, &ciphertext]);
    assert_eq!(decrypted.stdout, b"bound-s3cret");
    let bare = dir.path("bare.cwasm");
    let bytes = std::fs::read(&cwasm).unwrap();
    std::fs::write(&bare, &bytes[..bytes.len() - 83]).unwrap();
    let out = keyward(&["digest", &bare]);
    assert_eq!(out.status.code(), Some(2));
    assert_one_line(&stderr(&out));
    assert!(stderr(&out).contains("records no component digest"), "{}", stderr(&out));
    // Another ELF file with a record appended holds no digest either.
    let other_elf = dir.path("other.cwasm");
    std::fs::write(&other_elf, [&b"\x7fELF\x02\x01\x01\0"[..], &[0; 56], &bytes[bytes.len() - 83..]].concat()).unwrap();
    let out = keyward(&["digest", &other_elf]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("is not a component precompiled by wasmtime"), "{}", stderr(&out));
}

/// clap's refusals are one line like every other error; a secret given with `--plaintext` that begins with `-` (a
/// PEM key does) is taken as the secret, never echoed back as an unexpected argument.
#[test]
fn bad_arguments_get_one_line_and_a_dash_secret_is_a_secret() {
    let (_dir, key) = dir_with_key("args");
    for (args, says) in [
        (&["invoke", "x.wasm"][..], "the following required arguments were not provided: --key <FILE>"),
        (&["invoke", "x.wasm", "--key", "k", "--context", "noequals"], "is not of the form KEY=VALUE"),
        (&["invoke", "x.wasm", "--key", "k", "--timeout-ms", "0"], "invalid value '0' for '--timeout-ms <N>'"),
        (&["frob"], "unrecognized subcommand 'frob'"),
    ] {
        let out = keyward(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_one_line(&stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
    let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA-s3cret\n-----END PRIVATE KEY-----\n";
    // Forgetting --plaintext: the stray secret is not echoed.
    for args in [&["encrypt", "--key", &key, pem][..], &["encrypt", "--key", &key, "--", "hunter2-s3cret"]] {
        let out = keyward(args);
        assert_eq!(out.status.code(), Some(2));
        assert_one_line(&stderr(&out));
        assert!(stderr(&out).contains("an unexpected argument (not shown"), "{}", stderr(&out));
        assert!(!stderr(&out).contains("s3cret"), "{}", stderr(&out));
    }
    let out = keyward(&["invoke", "x.wasm", "--key", &key, "--env", "PASSWORD hunter2-s3cret"]);
    assert_eq!(out.status.code(), Some(2));
    assert_one_line(&stderr(&out));
    assert!(stderr(&out).contains("a value of --env is not of the form NAME=VALUE"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("s3cret"), "{}", stderr(&out));
    let out = keyward(&["invoke", "x.wasm", "--key", &key, "--bogus"]);
    assert!(stderr(&out).contains("unexpected argument '--bogus' found"), "{}", stderr(&out));
    let encrypted = keyward(&["encrypt", "--key", &key, "--plaintext", pem]);
    assert!(encrypted.status.success(), "{}", stderr(&encrypted));
    let decrypted = keyward(&["decrypt", "--key", &key, stdout(&encrypted).trim()]);
    assert_eq!(decrypted.stdout, pem.as_bytes());
    assert!(keyward(&["--help"]).status.success());
}
