//! The Lambda edge: the real `keyward` binary as `bootstrap`, fed by the suite's own Runtime API server with what
//! real callers, SDKs and emulators send (odd client contexts, missing or past deadlines, bodies that are not
//! JSON), and by moto behind a fault proxy (unreachable, silent, throttling, refusing). After each case the process
//! is still running and answers the next invocation.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::fault_proxy::{Fault, FaultProxy};
use crate::lambda::Function;
use crate::runtime_api_server::{Invocation, Outcome, RuntimeApiServer};
use crate::servers::*;
use crate::support::*;

const SECRET: &[u8] = b"edge-s3cret-value";

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// The function is still running and answers a plain invocation.
fn assert_serves_next(api: &RuntimeApiServer, function: &mut Function, case: &str) {
    assert!(function.is_alive(), "{case}: the process ended; log: {}", function.log_text());
    let outcome = api.invoke(&function.name, Invocation::json(&json!({"action": "context"})));
    let Outcome::Response(_) = outcome else { panic!("{case}: the next invocation failed: {outcome:?}") };
}

fn assert_one_bounded_line(message: &str, case: &str) {
    assert!(!message.contains('\n'), "{case}: {message}");
    assert!(message.len() < 600, "{case}: {} bytes: {message}", message.len());
    for dump in ["DispatchFailure", "ConnectorError", "SdkError", "{ ", "source:"] {
        assert!(!message.contains(dump), "{case}: a Debug dump in {message}");
    }
}

#[test]
fn no_runtime_api_input_ends_the_process() {
    let dir = TempDir::new("edge");
    let api = RuntimeApiServer::start();
    let env = [
        ("KEYWARD_COMPONENT", guest("probe").display().to_string()),
        ("KEYWARD_KMS_KEY_ID", "alias/unused".to_string()),
        ("KEYWARD_KMS_ENDPOINT", format!("http://127.0.0.1:{}", free_port())),
        ("KEYWARD_TIMEOUT_MS", "5000".to_string()),
    ];
    let mut function = Function::start(&api.address("probe"), &dir, "probe", &env);
    let context = || Invocation::json(&json!({"action": "context"}));

    // Headers keyward does not use are not read at all: the invocation is served.
    let served: &[(&str, Invocation)] = &[
        (
            "a number in the client context's custom",
            context().header(
                "Lambda-Runtime-Client-Context",
                r#"{"client":{"installation_id":"i","app_title":"t"},"custom":{"n":1},"env":{}}"#,
            ),
        ),
        ("a client context that is not JSON", context().header("Lambda-Runtime-Client-Context", "not json at all")),
        ("a truncated Cognito identity", context().header("Lambda-Runtime-Cognito-Identity", r#"{"x":"#)),
        ("a client context of bytes", context().header("Lambda-Runtime-Client-Context", b"\xff\xfe{")),
        ("an ARN of bytes", context().header("Lambda-Runtime-Invoked-Function-Arn", b"arn:\xff")),
    ];
    for (case, invocation) in served {
        let response = api.invoke("probe", invocation.clone()).response();
        assert!(response["request_id"].as_str().is_some_and(|id| id.starts_with("edge-")), "{case}: {response}");
        assert_serves_next(&api, &mut function, case);
    }

    // No deadline, or one that is not a number: the configured timeout (5 s) applies.
    for (case, invocation) in [
        ("no deadline header", context().without("Lambda-Runtime-Deadline-Ms")),
        ("a deadline that is not a number", context().header("Lambda-Runtime-Deadline-Ms", "soon")),
    ] {
        let before = now_ms();
        let response = api.invoke("probe", invocation).response();
        let deadline = response["deadline_ms"].as_u64().unwrap();
        assert!((before + 4_000..=now_ms() + 5_000).contains(&deadline), "{case}: {deadline} vs {before}");
        assert_serves_next(&api, &mut function, case);
    }

    // A deadline already past: the guest never starts, and the message says so.
    for (case, deadline) in [("deadline 0", "0".to_string()), ("a deadline in the past", (now_ms() - 1000).to_string())]
    {
        let (error_type, message) =
            api.invoke("probe", context().header("Lambda-Runtime-Deadline-Ms", deadline)).error();
        assert_eq!(error_type, "DeadlineExceeded", "{case}");
        assert_eq!(message, "the invocation's deadline had passed before the guest started", "{case}");
        assert_serves_next(&api, &mut function, case);
    }

    // Events that are not UTF-8 JSON: a documented error type, a position, never the bytes.
    let too_big = format!("{{\"pad\":\"{}\"}}", "x".repeat(7 << 20));
    for (case, body, expected) in [
        ("an event that is not JSON", b"{not json".to_vec(), "line 1, column 2"),
        ("an event that is not UTF-8", b"{\"a\":\"\xff\xfe\"}".to_vec(), "not UTF-8 (invalid byte at offset 6)"),
        ("an event over Lambda's limit", too_big.into_bytes(), "larger than Lambda's limit"),
    ] {
        let (error_type, message) = api.invoke("probe", Invocation::new(body)).error();
        assert_eq!(error_type, "InvalidEvent", "{case}");
        assert!(message.contains(expected) && !message.contains("not json"), "{case}: {message}");
        assert_serves_next(&api, &mut function, case);
    }

    // A guest error of 7 MiB: cut and marked, and no log line carries it whole.
    let (error_type, message) =
        api.invoke("probe", Invocation::json(&json!({"action": "fail-big", "bytes": 7 << 20}))).error();
    assert_eq!(error_type, "GuestError");
    assert!(message.len() <= keyward::error::MAX_MESSAGE_BYTES + 100, "{} bytes", message.len());
    assert!(
        message.ends_with(&format!("[cut: {} bytes in all]", 7 * 1024 * 1024 / 24 * 24 + 24)),
        "{}",
        &message[message.len() - 60..]
    );
    assert_one_line(&message);
    assert_serves_next(&api, &mut function, "a 7 MiB guest error");

    // An invocation without a request id cannot be answered: skipped with one line, and the next is served.
    api.enqueue("probe", context().without("Lambda-Runtime-Aws-Request-Id"));
    assert_serves_next(&api, &mut function, "no request id");
    let log = function.log_text();
    assert!(
        log.contains("skipped an invocation that cannot be answered: it has no Lambda-Runtime-Aws-Request-Id"),
        "{log}"
    );
    assert!(log.lines().all(|line| line.len() < 32 * 1024), "a log line is over 32 KiB");
}

fn assert_one_line(message: &str) {
    assert!(!message.contains('\n'), "{message}");
}

/// What a hello function needs besides its endpoint and ciphertext.
fn hello_env(
    password: String,
    endpoint: String,
    key: &str,
    extra: &[(&'static str, &str)],
) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("KEYWARD_COMPONENT", guest("hello").display().to_string()),
        ("KEYWARD_GUEST_ENV", "PASSWORD".to_string()),
        ("PASSWORD", password),
        ("KEYWARD_KMS_KEY_ID", key.to_string()),
        ("KEYWARD_KMS_ENDPOINT", endpoint),
        ("KEYWARD_KMS_CONTEXT", "function=edge".to_string()),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    env
}

fn fingerprint_of(outcome: &Outcome) -> String {
    let body: serde_json::Value = serde_json::from_str(outcome.response()["body"].as_str().unwrap()).unwrap();
    body["secret_sha256_prefix"].as_str().unwrap().to_string()
}

fn hello(api: &RuntimeApiServer, function: &Function) -> Outcome {
    api.invoke(&function.name, Invocation::json(&json!({"rawPath": "/"})))
}

/// Waits until the function's log has a line containing `text`.
fn wait_for_log(function: &Function, text: &str) -> String {
    let until = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let log = function.log_text();
        if log.contains(text) {
            return log;
        }
        assert!(std::time::Instant::now() < until, "{}: no {text:?} in: {log}", function.name);
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_outages_are_survived_and_refusals_are_not_served_stale() {
    let dir = TempDir::new("edge-kms");
    let moto = start_moto();
    let kms = aws_sdk_kms::Client::new(&moto_sdk_config(&moto));
    let key = create_key(&kms).await;
    kms.create_alias().alias_name("alias/edge-revoked").target_key_id(&key).send().await.unwrap();
    let good = b64(&encrypt(&kms, &key, SECRET, &[("function", "edge")]).await);
    let wrong_context = b64(&encrypt(&kms, &key, SECRET, &[("function", "other")]).await);
    let api = RuntimeApiServer::start();
    let fast_ttl = [("KEYWARD_CACHE_TTL_SECS", "1"), ("KEYWARD_CACHE_STALE_SECS", "60")];
    let prefetch = [("KEYWARD_PREFETCH", "PASSWORD")];

    // Prefetch while KMS refuses connections, and while it throttles: one warning, init succeeds, and the first
    // invocation decrypts once KMS is back.
    let down = FaultProxy::start(moto.port, Fault::Refuse);
    let throttled = FaultProxy::start(moto.port, Fault::Throttle);
    let mut prefetch_down = Function::start(
        &api.address("prefetch-down"),
        &dir,
        "prefetch-down",
        &hello_env(good.clone(), down.url(), &key, &prefetch),
    );
    // Time for the SDK's three attempts with backoff, so the message is KMS's answer, not the deadline's.
    let patient = [("KEYWARD_PREFETCH", "PASSWORD"), ("KEYWARD_TIMEOUT_MS", "10000")];
    let mut prefetch_throttled = Function::start(
        &api.address("prefetch-throttled"),
        &dir,
        "prefetch-throttled",
        &hello_env(good.clone(), throttled.url(), &key, &patient),
    );
    // A refusal at init is a configuration mistake: init fails, naming the variable.
    let mut prefetch_refused = Function::start(
        &api.address("prefetch-refused"),
        &dir,
        "prefetch-refused",
        &hello_env(wrong_context.clone(), moto.url(), &key, &prefetch),
    );
    for function in [&prefetch_down, &prefetch_throttled] {
        let log = wait_for_log(function, "keyward ready");
        let warnings: Vec<&str> = log.lines().filter(|l| l.contains("prefetch skipped")).collect();
        assert_eq!(warnings.len(), 1, "{}: {log}", function.name);
        assert!(warnings[0].contains("PASSWORD"), "{}", warnings[0]);
        assert_one_bounded_line(warnings[0], &function.name);
    }
    assert!(api.init_error("prefetch-down", Duration::ZERO).is_none());
    let (error_type, message) = hello(&api, &prefetch_throttled).error();
    assert_eq!(error_type, "GuestError");
    assert!(message.contains("kms unavailable") && message.contains("ThrottlingException"), "{message}");
    assert_one_bounded_line(&message, "throttled");
    down.set(Fault::None);
    throttled.set(Fault::None);
    assert_serves_next_hello(&api, &mut prefetch_down);
    assert_serves_next_hello(&api, &mut prefetch_throttled);

    let init_error = api.init_error("prefetch-refused", Duration::from_secs(30)).expect("an init error");
    assert_eq!(init_error["errorType"], "Runtime.InitError");
    let message = init_error["errorMessage"].as_str().unwrap();
    assert!(message.contains("cannot prefetch PASSWORD") && message.contains("invalid-ciphertext"), "{message}");
    let status = prefetch_refused.child.wait().unwrap();
    assert!(!status.success());

    // Without a cache, an unreachable or silent KMS fails the invocation in one short line naming the cause.
    let silent = FaultProxy::start(moto.port, Fault::Blackhole);
    let refused_port = format!("http://127.0.0.1:{}", free_port());
    let mut unreachable = Function::start(
        &api.address("unreachable"),
        &dir,
        "unreachable",
        &hello_env(
            good.clone(),
            refused_port.clone(),
            &key,
            &[("KEYWARD_CACHE_TTL_SECS", "0"), ("KEYWARD_TIMEOUT_MS", "10000")],
        ),
    );
    let mut unanswered = Function::start(
        &api.address("unanswered"),
        &dir,
        "unanswered",
        &hello_env(
            good.clone(),
            silent.url(),
            &key,
            &[("KEYWARD_CACHE_TTL_SECS", "0"), ("KEYWARD_TIMEOUT_MS", "1500")],
        ),
    );
    let (_, message) = hello(&api, &unreachable).error();
    assert!(message.contains("kms unavailable: cannot reach KMS at") && message.contains(&refused_port), "{message}");
    assert!(message.to_lowercase().contains("connection refused"), "{message}");
    assert_one_bounded_line(&message, "unreachable");
    let (_, message) = hello(&api, &unanswered).error();
    assert!(message.contains("kms unavailable") && message.contains("did not answer"), "{message}");
    assert_one_bounded_line(&message, "unanswered");
    assert!(unreachable.is_alive() && matches!(hello(&api, &unreachable), Outcome::Error { .. }));
    silent.set(Fault::None);
    assert_serves_next_hello(&api, &mut unanswered);

    // A ciphertext KMS calls invalid (here: made under another context) is asked about once, then answered from
    // memory. (Real KMS calls a ciphertext base64-encoded twice invalid too; moto 5.2.5 says AccessDenied, which is
    // never cached.)
    let invalid =
        Function::start(&api.address("invalid"), &dir, "invalid", &hello_env(wrong_context, moto.url(), &key, &[]));
    wait_for_log(&invalid, "keyward ready");
    recorder_start(&moto);
    for _ in 0..3 {
        let (error_type, message) = hello(&api, &invalid).error();
        assert_eq!(error_type, "GuestError");
        assert!(message.contains("kms invalid-ciphertext"), "{message}");
    }
    assert_eq!(recorder_decrypts(&moto), 1, "three invocations, one Decrypt");
    let log = invalid.log_text();
    assert_eq!(log.matches("cache=\"hit\"").count(), 2, "{log}");

    // Past its TTL, a cached secret is served while KMS is unavailable (and the audit line says so) ...
    let outage_proxy = FaultProxy::start(moto.port, Fault::None);
    let outage = Function::start(
        &api.address("outage"),
        &dir,
        "outage",
        &hello_env(good.clone(), outage_proxy.url(), &key, &fast_ttl),
    );
    // ... but never once KMS refuses: here the key the function names (an alias) is gone.
    let revoked = Function::start(
        &api.address("revoked"),
        &dir,
        "revoked",
        &hello_env(good.clone(), moto.url(), "alias/edge-revoked", &fast_ttl),
    );
    assert_eq!(fingerprint_of(&hello(&api, &outage)), fingerprint(SECRET));
    assert_eq!(fingerprint_of(&hello(&api, &revoked)), fingerprint(SECRET));
    std::thread::sleep(Duration::from_millis(1200));
    outage_proxy.set(Fault::Refuse);
    kms.delete_alias().alias_name("alias/edge-revoked").send().await.unwrap();
    for _ in 0..2 {
        assert_eq!(fingerprint_of(&hello(&api, &outage)), fingerprint(SECRET), "{}", outage.log_text());
    }
    let log = outage.log_text();
    let stale: Vec<&str> = log.lines().filter(|l| l.contains("cache=\"stale\"")).collect();
    assert_eq!(stale.len(), 2, "{log}");
    assert!(stale.iter().all(|l| l.contains("served the last plaintext past its TTL")), "{log}");
    assert!(stale[0].contains("stale_because") && stale[1].contains("the last refresh failed"), "{log}");
    let (_, message) = hello(&api, &revoked).error();
    assert!(message.contains("kms denied") && message.contains("alias/edge-revoked"), "{message}");

    // No plaintext in anything any function wrote.
    let secret = std::str::from_utf8(SECRET).unwrap();
    for function in
        [&prefetch_down, &prefetch_throttled, &prefetch_refused, &unreachable, &unanswered, &invalid, &outage, &revoked]
    {
        assert!(!function.log_text().contains(secret), "{} logged the secret", function.name);
    }
}

/// The function is still running, and once KMS answers, so does it.
fn assert_serves_next_hello(api: &RuntimeApiServer, function: &mut Function) {
    assert!(function.is_alive(), "{} ended: {}", function.name, function.log_text());
    assert_eq!(fingerprint_of(&hello(api, function)), fingerprint(SECRET), "{}", function.log_text());
}
