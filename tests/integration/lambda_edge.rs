//! The Lambda edge: the real `keyward` binary as `bootstrap`, fed by the suite's own Runtime API server with what
//! real callers, SDKs and emulators send (odd client contexts, missing or past deadlines, bodies that are not
//! JSON), and by moto behind a fault proxy (unreachable, silent, throttling, refusing). After each case the process
//! is still running and answers the next invocation. One test per row of the issue that asked for this.

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

/// The probe guest as a function with a 5 s timeout, polling a Runtime API server of its own. No KMS is reachable.
struct ProbeFunction {
    api: RuntimeApiServer,
    function: Function,
    _dir: TempDir,
}

impl ProbeFunction {
    fn start(tag: &str) -> Self {
        Self::start_with(tag, guest("probe"), 5000)
    }

    /// `component` as a function with a `timeout_ms` time limit.
    fn start_with(tag: &str, component: std::path::PathBuf, timeout_ms: u64) -> Self {
        let dir = TempDir::new(tag);
        let api = RuntimeApiServer::start();
        let env = [
            ("KEYWARD_COMPONENT", component.display().to_string()),
            ("KEYWARD_KMS_KEY_ID", "alias/unused".to_string()),
            ("KEYWARD_KMS_ENDPOINT", format!("http://127.0.0.1:{}", free_port())),
            ("KEYWARD_TIMEOUT_MS", timeout_ms.to_string()),
        ];
        let function = Function::start(&api.address(tag), &dir, tag, &env);
        Self { api, function, _dir: dir }
    }

    fn invoke(&self, invocation: Invocation) -> Outcome {
        self.api.invoke(&self.function.name, invocation)
    }

    /// The process is still running and answers a plain invocation.
    fn assert_serves_next(&mut self, case: &str) {
        assert!(self.function.is_alive(), "{case}: the process ended; log: {}", self.function.log_text());
        let outcome = self.invoke(context());
        let Outcome::Response(_) = outcome else { panic!("{case}: the next invocation failed: {outcome:?}") };
    }
}

/// An invocation asking the probe for what it was told of its invocation.
fn context() -> Invocation {
    Invocation::json(&json!({"action": "context"}))
}

fn assert_one_bounded_line(message: &str, case: &str) {
    assert!(!message.contains('\n'), "{case}: {message}");
    assert!(message.len() < 600, "{case}: {} bytes: {message}", message.len());
    for dump in ["DispatchFailure", "ConnectorError", "SdkError", "{ ", "source:"] {
        assert!(!message.contains(dump), "{case}: a Debug dump in {message}");
    }
}

/// Headers keyward does not use are never read: the invocation is served, whatever they hold.
fn assert_served_despite(tag: &str, cases: &[(&str, &str, &[u8])]) {
    let mut probe = ProbeFunction::start(tag);
    for (case, header, value) in cases {
        let response = probe.invoke(context().header(header, value)).response();
        assert!(response["request_id"].as_str().is_some_and(|id| id.starts_with("edge-")), "{case}: {response}");
        probe.assert_serves_next(case);
    }
}

#[test]
fn row1_a_client_context_with_a_number_in_custom_is_served() {
    let value: &[u8] = br#"{"client":{"installation_id":"i","app_title":"t"},"custom":{"n":1},"env":{}}"#;
    assert_served_despite("edge-row1", &[("a number in custom", "Lambda-Runtime-Client-Context", value)]);
}

#[test]
fn row2_client_contexts_and_identities_that_are_not_json_are_served() {
    assert_served_despite(
        "edge-row2",
        &[
            ("a client context that is not JSON", "Lambda-Runtime-Client-Context", b"not json at all"),
            ("a truncated Cognito identity", "Lambda-Runtime-Cognito-Identity", br#"{"x":"#),
            ("a client context of bytes", "Lambda-Runtime-Client-Context", b"\xff\xfe{"),
            ("an ARN of bytes", "Lambda-Runtime-Invoked-Function-Arn", b"arn:\xff"),
        ],
    );
}

#[test]
fn row3_a_missing_deadline_means_the_configured_timeout() {
    let mut probe = ProbeFunction::start("edge-row3");
    for (case, invocation) in [
        ("no deadline header", context().without("Lambda-Runtime-Deadline-Ms")),
        ("a deadline that is not a number", context().header("Lambda-Runtime-Deadline-Ms", "soon")),
    ] {
        let before = now_ms();
        let response = probe.invoke(invocation).response();
        let deadline = response["deadline_ms"].as_u64().unwrap();
        assert!((before + 4_000..=now_ms() + 5_000).contains(&deadline), "{case}: {deadline} vs {before}");
        probe.assert_serves_next(case);
    }
}

#[test]
fn row4_a_deadline_already_passed_is_reported_as_such() {
    let mut probe = ProbeFunction::start("edge-row4");
    for (case, deadline) in [("deadline 0", "0".to_string()), ("a deadline in the past", (now_ms() - 1000).to_string())]
    {
        let (error_type, message) = probe.invoke(context().header("Lambda-Runtime-Deadline-Ms", deadline)).error();
        assert_eq!(error_type, "DeadlineExceeded", "{case}");
        assert_eq!(message, "the invocation's deadline had passed before the guest started", "{case}");
        probe.assert_serves_next(case);
    }
}

#[test]
fn row5_events_that_are_not_utf8_json_are_invalid_events() {
    let mut probe = ProbeFunction::start("edge-row5");
    let too_big = format!("{{\"pad\":\"{}\"}}", "x".repeat(7 << 20));
    for (case, body, expected) in [
        ("an event that is not JSON", b"{not json".to_vec(), "key must be a string at line 1 column 2"),
        ("an event that is not UTF-8", b"{\"a\":\"\xff\xfe\"}".to_vec(), "not UTF-8 (invalid byte at offset 6)"),
        ("an event over Lambda's limit", too_big.into_bytes(), "larger than Lambda's limit"),
    ] {
        let (error_type, message) = probe.invoke(Invocation::new(body)).error();
        assert_eq!(error_type, "InvalidEvent", "{case}");
        assert!(message.contains(expected) && !message.contains("not json"), "{case}: {message}");
        probe.assert_serves_next(case);
    }
}

#[test]
fn row9_a_7_mib_guest_error_is_cut_and_no_log_line_carries_it() {
    let mut probe = ProbeFunction::start("edge-row9");
    let (error_type, message) =
        probe.invoke(Invocation::json(&json!({"action": "fail-big", "bytes": 7 << 20}))).error();
    assert_eq!(error_type, "GuestError");
    assert!(message.len() <= keyward::error::MAX_MESSAGE_BYTES + 100, "{} bytes", message.len());
    // The probe repeats a 24-byte line past the size asked for.
    let whole = (7 << 20) / 24 * 24 + 24;
    assert!(message.ends_with(&format!("[cut: {whole} bytes in all]")), "{}", &message[message.len() - 60..]);
    assert!(!message.contains('\n'));
    probe.assert_serves_next("a 7 MiB guest error");
    assert!(probe.function.settled_log().lines().all(|line| line.len() < 32 * 1024), "a log line is over 32 KiB");
}

/// An invocation without a usable request id cannot be answered: skipped with one line, and the next is served.
#[test]
fn an_invocation_without_a_request_id_is_skipped() {
    let mut probe = ProbeFunction::start("edge-no-id");
    probe.api.enqueue(&probe.function.name, context().without("Lambda-Runtime-Aws-Request-Id"));
    probe.api.enqueue(&probe.function.name, context().header("Lambda-Runtime-Aws-Request-Id", "../../next"));
    probe.assert_serves_next("no request id");
    let log = probe.function.log_text();
    assert!(
        log.contains("skipped an invocation that cannot be answered: it has no Lambda-Runtime-Aws-Request-Id"),
        "{log}"
    );
    assert!(log.contains("cannot be part of a URL path"), "{log}");
}

/// An invocation asking the probe how many invocations its instance has served.
fn count() -> Invocation {
    Invocation::json(&json!({"action": "count"}))
}

/// Lambda mode makes each invocation's instance before it asks for the invocation: however long that instance
/// waits, the invocation's time starts with the invocation (for a guest in a host call and for one computing),
/// and no instance serves two invocations, not even one left over by an event that was refused.
#[test]
fn an_instance_made_ahead_runs_in_its_invocations_time_and_serves_it_alone() {
    let probe = ProbeFunction::start_with("edge-ahead", guest("probe"), 1000);
    let served = |outcome: Outcome| outcome.response()["served"].clone();
    assert_eq!(served(probe.invoke(count())), 1);

    // Each instance below waited longer than the whole time limit before its invocation came.
    std::thread::sleep(Duration::from_millis(1500));
    let asked_at = now_ms();
    let slept = probe.invoke(Invocation::json(&json!({"action": "sleep", "ms": 600}))).response();
    assert_eq!(slept["slept_ms"], 600, "{slept}");
    let deadline_ms = slept["deadline_ms"].as_u64().unwrap();
    assert!(deadline_ms >= asked_at + 900, "the deadline was set {} ms after asking", deadline_ms - asked_at);

    std::thread::sleep(Duration::from_millis(1500));
    let started = std::time::Instant::now();
    let (error_type, _) = probe.invoke(Invocation::json(&json!({"action": "loop"}))).error();
    assert_eq!(error_type, "GuestTimeout");
    assert!(started.elapsed() >= Duration::from_millis(900), "stopped after {:?}", started.elapsed());

    let (error_type, _) = probe.invoke(Invocation::new("not json")).error();
    assert_eq!(error_type, "InvalidEvent");
    assert_eq!(served(probe.invoke(count())), 1, "the instance the refused event left is still fresh");
    assert_eq!(served(probe.invoke(count())), 1);
}

/// The invocation's log lines (here, the guest's output) are written once its response is accepted, not before:
/// the caller does not wait for the log. Whatever is held is written as soon as the invocation waits: a line (here,
/// a decrypt's audit line) never waits longer than that, whether or not the invocation ends.
#[test]
fn an_invocations_log_is_written_after_its_response_or_when_it_waits() {
    let probe = ProbeFunction::start("edge-log-after");
    probe.api.hold_acknowledgements(true);
    let printed = probe.invoke(Invocation::json(&json!({"action": "print", "lines": 1}))).response();
    assert_eq!(printed["printed"], 1);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!probe.function.log_text().contains("probe stdout line 0"), "{}", probe.function.log_text());
    probe.api.hold_acknowledgements(false);
    probe.function.log_when(|log| log.contains("probe stdout line 0"));

    // KMS is unreachable here: the decrypt is refused, then the guest sleeps; its audit line is in the log while
    // the invocation still runs.
    let decrypt = json!({"action": "decrypt", "ciphertext": "AQIDBAUGBwgJCgsMDQ4PEA==", "then_sleep_ms": 1500});
    let invocation = Invocation::json(&decrypt);
    let id = invocation.request_id().unwrap();
    probe.api.enqueue(&probe.function.name, invocation);
    let log = probe
        .function
        .log_when(|log| log.lines().any(|l| l.contains("kms decrypt") && l.contains("outcome=\"unavailable\"")));
    assert!(probe.api.outcome(&id, Duration::ZERO).is_none(), "the invocation had ended: {log}");
    let Some(Outcome::Error { body, .. }) = probe.api.outcome(&id, Duration::from_secs(30)) else { panic!("no error") };
    assert!(body["errorMessage"].as_str().unwrap().contains("kms unavailable"), "{body}");
}

/// A guest whose start function traps or never returns fails each invocation, in the invocation's time, and the
/// process serves on: the instance made ahead of the invocation, which fails (or is given up after 100 ms), is
/// not its answer, and after that one attempt no invocation waits for another.
#[test]
fn a_guest_whose_start_fails_fails_each_invocation_in_its_time() {
    let dir = TempDir::new("edge-start");
    for (name, error_type) in [("start-trap", "GuestTrap"), ("start-loop", "GuestTimeout")] {
        let wat = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../tests/guests/wat/{name}.wat"));
        let component = dir.0.join(format!("{name}.wasm"));
        std::fs::write(&component, wat::parse_file(&wat).unwrap()).unwrap();
        let mut probe = ProbeFunction::start_with(&format!("edge-{name}"), component, 1000);
        for _ in 0..2 {
            let started = std::time::Instant::now();
            let (got, message) = probe.invoke(Invocation::json(&json!({}))).error();
            assert_eq!(got, error_type, "{name}: {message}");
            assert!(started.elapsed() < Duration::from_millis(2500), "{name}: {:?}", started.elapsed());
        }
        assert!(probe.function.is_alive(), "{name}: {}", probe.function.log_text());
        let log = probe.function.settled_log();
        assert_eq!(log.matches("could not be made ahead of its invocation").count(), 1, "{name}: {log}");
    }
}

/// moto with a key, a ciphertext under the context `function=edge` (as the functions stamp) and one under another
/// context; functions poll a Runtime API server of the fixture's.
struct Kms {
    moto: Server,
    client: aws_sdk_kms::Client,
    key: String,
    good: String,
    wrong_context: String,
    api: RuntimeApiServer,
    dir: TempDir,
}

impl Kms {
    async fn start(tag: &str) -> Self {
        let moto = start_moto();
        let client = aws_sdk_kms::Client::new(&moto_sdk_config(&moto));
        let key = create_key(&client).await;
        let good = b64(&encrypt(&client, &key, SECRET, &[("function", "edge")]).await);
        let wrong_context = b64(&encrypt(&client, &key, SECRET, &[("function", "other")]).await);
        Self { moto, client, key, good, wrong_context, api: RuntimeApiServer::start(), dir: TempDir::new(tag) }
    }

    /// The hello guest as the function `name`, decrypting `password` through `endpoint` with `key`.
    fn hello(&self, name: &str, password: &str, endpoint: &str, key: &str, extra: &[(&'static str, &str)]) -> Function {
        let mut env = vec![
            ("KEYWARD_COMPONENT", guest("hello").display().to_string()),
            ("KEYWARD_GUEST_ENV", "PASSWORD".to_string()),
            ("PASSWORD", password.to_string()),
            ("KEYWARD_KMS_KEY_ID", key.to_string()),
            ("KEYWARD_KMS_ENDPOINT", endpoint.to_string()),
            ("KEYWARD_KMS_CONTEXT", "function=edge".to_string()),
        ];
        env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        Function::start(&self.api.address(name), &self.dir, name, &env)
    }

    fn invoke(&self, function: &Function) -> Outcome {
        self.api.invoke(&function.name, Invocation::json(&json!({"rawPath": "/"})))
    }

    /// The function is still running and answers with the secret's fingerprint.
    fn assert_serves(&self, function: &mut Function) {
        assert!(function.is_alive(), "{} ended: {}", function.name, function.log_text());
        let response = self.invoke(function).response();
        let body: serde_json::Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["secret_sha256_prefix"], fingerprint(SECRET), "{}", function.log_text());
    }

    fn assert_no_plaintext_logged(&self, functions: &[&Function]) {
        let secret = std::str::from_utf8(SECRET).unwrap();
        for function in functions {
            assert!(!function.settled_log().contains(secret), "{} logged the secret", function.name);
        }
    }
}

/// Prefetch while KMS refuses connections, and while it throttles: one warning, init succeeds, and invocations
/// decrypt once KMS is back. A refusal at init is a configuration mistake: init fails, naming the variable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row6_prefetch_survives_an_unavailable_kms_and_fails_on_a_refusal() {
    let kms = Kms::start("edge-row6").await;
    let down = FaultProxy::start(kms.moto.port, Fault::Refuse);
    let throttled = FaultProxy::start(kms.moto.port, Fault::Throttle);
    // Time for the SDK's three attempts with backoff, so the message is KMS's answer, not the deadline's.
    let prefetch = [("KEYWARD_PREFETCH", "PASSWORD"), ("KEYWARD_TIMEOUT_MS", "10000")];
    let mut unreachable = kms.hello("prefetch-down", &kms.good, &down.url(), &kms.key, &prefetch);
    let mut throttling = kms.hello("prefetch-throttled", &kms.good, &throttled.url(), &kms.key, &prefetch);
    let mut refused = kms.hello("prefetch-refused", &kms.wrong_context, &kms.moto.url(), &kms.key, &prefetch);
    // An empty ciphertext (the SAM template's default before the secret is set) is no ciphertext at all.
    let mut empty = kms.hello("prefetch-empty", "", &kms.moto.url(), &kms.key, &prefetch);

    for function in [&unreachable, &throttling] {
        let log = function.log_when(|log| log.contains("keyward ready"));
        let warnings: Vec<&str> = log.lines().filter(|l| l.contains("prefetch skipped")).collect();
        assert_eq!(warnings.len(), 1, "{}: {log}", function.name);
        assert!(warnings[0].contains("PASSWORD"), "{}", warnings[0]);
        assert_one_bounded_line(warnings[0], &function.name);
        assert!(kms.api.init_error(&function.name, Duration::ZERO).is_none());
    }
    let (error_type, message) = kms.invoke(&throttling).error();
    assert_eq!(error_type, "GuestError");
    assert!(message.contains("kms unavailable") && message.contains("ThrottlingException"), "{message}");
    assert_one_bounded_line(&message, "throttled");
    down.set(Fault::None);
    throttled.set(Fault::None);
    kms.assert_serves(&mut unreachable);
    kms.assert_serves(&mut throttling);

    let init_error = kms.api.init_error("prefetch-refused", Duration::from_secs(30)).expect("an init error");
    assert_eq!(init_error["errorType"], "Runtime.InitError");
    let message = init_error["errorMessage"].as_str().unwrap();
    assert!(message.contains("cannot prefetch PASSWORD") && message.contains("invalid-ciphertext"), "{message}");
    assert!(!refused.child.wait().unwrap().success());
    let init_error = kms.api.init_error("prefetch-empty", Duration::from_secs(30)).expect("an init error");
    let message = init_error["errorMessage"].as_str().unwrap();
    assert!(message.contains("cannot prefetch PASSWORD: invalid-ciphertext: the ciphertext is 0 bytes"), "{message}");
    assert!(!empty.child.wait().unwrap().success());
    kms.assert_no_plaintext_logged(&[&unreachable, &throttling, &refused]);
}

/// Without a cache, an unreachable or silent KMS fails the invocation in one short line naming the endpoint and
/// the cause; once KMS answers, so does the function.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row7_a_kms_network_failure_is_one_short_line() {
    let kms = Kms::start("edge-row7").await;
    let silent = FaultProxy::start(kms.moto.port, Fault::Blackhole);
    let nothing_listens = format!("http://127.0.0.1:{}", free_port());
    let patient = [("KEYWARD_CACHE_TTL_SECS", "0"), ("KEYWARD_TIMEOUT_MS", "10000")];
    let hurried = [("KEYWARD_CACHE_TTL_SECS", "0"), ("KEYWARD_TIMEOUT_MS", "1500")];
    let mut unreachable = kms.hello("unreachable", &kms.good, &nothing_listens, &kms.key, &patient);
    let mut unanswered = kms.hello("unanswered", &kms.good, &silent.url(), &kms.key, &hurried);

    let (_, message) = kms.invoke(&unreachable).error();
    assert!(
        message.contains("kms unavailable: cannot reach KMS at") && message.contains(&nothing_listens),
        "{message}"
    );
    assert!(message.to_lowercase().contains("connection refused"), "{message}");
    assert_one_bounded_line(&message, "unreachable");
    let (_, message) = kms.invoke(&unanswered).error();
    assert!(message.contains("kms unavailable") && message.contains("did not answer"), "{message}");
    assert_one_bounded_line(&message, "unanswered");

    assert!(unreachable.is_alive() && matches!(kms.invoke(&unreachable), Outcome::Error { .. }));
    silent.set(Fault::None);
    kms.assert_serves(&mut unanswered);
}

/// A ciphertext KMS calls invalid (here: made under another context) is asked about once, then answered from
/// memory. (Real KMS calls a ciphertext base64-encoded twice invalid too; moto 5.2.5 answers AccessDenied, which is
/// never cached.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row8_an_invalid_ciphertext_is_sent_to_kms_once() {
    let kms = Kms::start("edge-row8").await;
    let invalid = kms.hello("invalid", &kms.wrong_context, &kms.moto.url(), &kms.key, &[]);
    invalid.log_when(|log| log.contains("keyward ready"));
    recorder_start(&kms.moto);
    for _ in 0..3 {
        let (error_type, message) = kms.invoke(&invalid).error();
        assert_eq!(error_type, "GuestError");
        assert!(message.contains("kms invalid-ciphertext"), "{message}");
    }
    assert_eq!(recorder_decrypts(&kms.moto), 1, "three invocations, one Decrypt");
    let log = invalid.log_when(|log| log.matches("cache=\"hit\"").count() >= 2);
    assert_eq!(log.matches("cache=\"hit\"").count(), 2, "{log}");
}

/// Past its TTL, a cached secret is served while KMS is unavailable (and the audit line says so), but never once KMS
/// refuses. moto 5.2.5's Decrypt ignores DisableKey, so the refusal here is the alias the function names being
/// deleted (`NotFoundException`, mapped to `denied` like `DisabledException`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row10_a_cached_secret_is_served_stale_on_outage_never_on_refusal() {
    let kms = Kms::start("edge-row10").await;
    kms.client.create_alias().alias_name("alias/edge-revoked").target_key_id(&kms.key).send().await.unwrap();
    let proxy = FaultProxy::start(kms.moto.port, Fault::None);
    let fast_ttl = [("KEYWARD_CACHE_TTL_SECS", "1"), ("KEYWARD_CACHE_STALE_SECS", "60")];
    let mut outage = kms.hello("outage", &kms.good, &proxy.url(), &kms.key, &fast_ttl);
    let mut revoked = kms.hello("revoked", &kms.good, &kms.moto.url(), "alias/edge-revoked", &fast_ttl);
    kms.assert_serves(&mut outage);
    kms.assert_serves(&mut revoked);

    std::thread::sleep(Duration::from_millis(1200));
    proxy.set(Fault::Refuse);
    kms.client.delete_alias().alias_name("alias/edge-revoked").send().await.unwrap();
    kms.assert_serves(&mut outage);
    kms.assert_serves(&mut outage);
    let log = outage.log_when(|log| log.matches("cache=\"stale\"").count() >= 2);
    let stale: Vec<&str> = log.lines().filter(|l| l.contains("cache=\"stale\"")).collect();
    assert_eq!(stale.len(), 2, "{log}");
    assert!(stale.iter().all(|l| l.contains("served the last plaintext past its TTL")), "{log}");
    assert!(stale[0].contains("stale_because") && stale[1].contains("the last refresh failed"), "{log}");

    let (_, message) = kms.invoke(&revoked).error();
    assert!(message.contains("kms denied") && message.contains("alias/edge-revoked"), "{message}");
    kms.assert_no_plaintext_logged(&[&outage, &revoked]);
}

/// Per-secret settings: a console-made ciphertext (context `LambdaFunctionName=<function>`), a CLI-made one (no
/// context) and one under an asymmetric key, side by side in one function, decrypted by a guest that passes no
/// context; a guest cannot bend one secret's settings. A key of another region fails init, naming both regions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_cli_and_asymmetric_ciphertexts_live_side_by_side() {
    let kms = Kms::start("edge-secrets").await;
    let rsa = kms
        .client
        .create_key()
        .key_spec(aws_sdk_kms::types::KeySpec::Rsa2048)
        .key_usage(aws_sdk_kms::types::KeyUsageType::EncryptDecrypt)
        .send()
        .await
        .unwrap();
    let rsa = rsa.key_metadata().unwrap().arn().unwrap().to_string();
    let console = b64(&encrypt(&kms.client, &kms.key, b"console-s3cret", &[("LambdaFunctionName", "secrets")]).await);
    let cli = b64(&encrypt(&kms.client, &kms.key, b"cli-s3cret", &[]).await);
    let asymmetric = b64(&encrypt(&kms.client, &rsa, b"rsa-s3cret", &[]).await);
    let env = vec![
        ("KEYWARD_COMPONENT", guest("probe").display().to_string()),
        ("KEYWARD_GUEST_ENV", "CONSOLE,CLI,RSA".to_string()),
        ("CONSOLE", console.clone()),
        ("CLI", cli.clone()),
        ("RSA", asymmetric.clone()),
        ("KEYWARD_KMS_KEY_ID", kms.key.clone()),
        ("KEYWARD_KMS_ENDPOINT", kms.moto.url()),
        ("KEYWARD_KMS_CONTEXT", "function={function_name}".to_string()),
        ("KEYWARD_SECRET_CONTEXT_CONSOLE", "LambdaFunctionName={function_name}".to_string()),
        ("KEYWARD_SECRET_CONTEXT_CLI", String::new()),
        ("KEYWARD_SECRET_KEY_RSA", rsa.clone()),
        ("KEYWARD_SECRET_ALGORITHM_RSA", "RSAES_OAEP_SHA_256".to_string()),
    ];
    let function = Function::start(&kms.api.address("secrets"), &kms.dir, "secrets", &env);
    let decrypt = |ciphertext: &str, context: serde_json::Value| {
        kms.api.invoke(
            "secrets",
            Invocation::json(&json!({"action": "decrypt", "ciphertext": ciphertext, "context": context})),
        )
    };
    recorder_start(&kms.moto);
    for (ciphertext, secret) in [(&console, "console-s3cret"), (&cli, "cli-s3cret"), (&asymmetric, "rsa-s3cret")] {
        let response = decrypt(ciphertext, json!({})).response();
        assert_eq!(response["sha256_prefix"], fingerprint(secret.as_bytes()), "{}", function.log_text());
    }
    let bodies = recorder_decrypt_bodies(&kms.moto);
    assert_eq!(bodies[0]["EncryptionContext"], json!({"LambdaFunctionName": "secrets"}), "the console's context");
    assert!(bodies[1].get("EncryptionContext").is_none(), "the CLI-made one carries none: {}", bodies[1]);
    assert_eq!(bodies[2]["EncryptionAlgorithm"], "RSAES_OAEP_SHA_256");
    assert_eq!(bodies[2]["KeyId"], rsa);
    assert!(bodies[2].get("EncryptionContext").is_none(), "an asymmetric key takes no context: {}", bodies[2]);

    // The settings follow the ciphertext: a guest can neither contradict a secret's stamp nor give an asymmetric
    // secret a context; an unconfigured ciphertext gets the function-wide stamp.
    let (_, message) = decrypt(&console, json!({"LambdaFunctionName": "other"})).error();
    assert!(message.contains("kms denied") && message.contains("stamped"), "{message}");
    let (_, message) = decrypt(&asymmetric, json!({"a": "b"})).error();
    assert!(message.contains("kms denied: this secret is under an asymmetric KMS key"), "{message}");
    let stamped = b64(&encrypt(&kms.client, &kms.key, b"fn-s3cret", &[("function", "secrets")]).await);
    assert_eq!(decrypt(&stamped, json!({})).response()["sha256_prefix"], fingerprint(b"fn-s3cret"));
    let log = function.log_when(|log| log.contains("CONSOLE"));
    assert!(
        log.contains("secret=\"CONSOLE\"") || log.contains("secret=CONSOLE"),
        "the audit line names the secret: {log}"
    );

    // A key ARN of another region fails init, naming both regions.
    let elsewhere = kms.key.replace("us-east-1", "eu-west-1");
    let env = [
        ("KEYWARD_COMPONENT", guest("probe").display().to_string()),
        ("KEYWARD_KMS_KEY_ID", elsewhere),
        ("KEYWARD_KMS_ENDPOINT", kms.moto.url()),
    ];
    let mut misplaced = Function::start(&kms.api.address("misplaced"), &kms.dir, "misplaced", &env);
    let init_error = kms.api.init_error("misplaced", Duration::from_secs(30)).expect("an init error");
    let message = init_error["errorMessage"].as_str().unwrap();
    assert!(message.contains("names a key in eu-west-1") && message.contains("called in us-east-1"), "{message}");
    assert!(!misplaced.child.wait().unwrap().success());
}

/// Lambda Managed Instances: with `AWS_LAMBDA_MAX_CONCURRENCY=4`, four invocations whose guests each wait 1 s run
/// at once (about 1 s in all, not 4), each in its own instance with its own deadline; a fifth waits for a free one.
#[test]
fn managed_instances_serve_invocations_at_once_each_with_its_own_deadline() {
    let dir = TempDir::new("concurrent");
    let api = RuntimeApiServer::start();
    let env = [
        ("KEYWARD_COMPONENT", guest("probe").display().to_string()),
        ("KEYWARD_KMS_KEY_ID", "alias/unused".to_string()),
        ("KEYWARD_KMS_ENDPOINT", format!("http://127.0.0.1:{}", free_port())),
        ("AWS_LAMBDA_MAX_CONCURRENCY", "4".to_string()),
        ("KEYWARD_TIMEOUT_MS", "60000".to_string()),
    ];
    let function = Function::start(&api.address("concurrent"), &dir, "concurrent", &env);
    api.invoke("concurrent", context()).response();

    // Sooner than the timeout: each guest's deadline is its invocation's.
    let base = now_ms() + 20_000;
    let sleeps: Vec<Invocation> = (0..5u64)
        .map(|i| {
            Invocation::json(&json!({"action": "sleep", "ms": 1000}))
                .header("Lambda-Runtime-Deadline-Ms", (base + i * 1000).to_string())
        })
        .collect();
    let ids: Vec<String> = sleeps.iter().map(|i| i.request_id().unwrap()).collect();
    let started = std::time::Instant::now();
    for invocation in sleeps {
        api.enqueue("concurrent", invocation);
    }
    let mut finished = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let outcome = api.outcome(id, Duration::from_secs(30)).unwrap_or_else(|| panic!("{}", function.log_text()));
        let response = outcome.response();
        assert_eq!(response["deadline_ms"], base + i as u64 * 1000, "each sees its own deadline: {response}");
        finished.push(started.elapsed());
    }
    finished.sort();
    // Four at once, then the fifth in a freed instance: about 1 s and 2 s, where one at a time would take 4 s and 5 s.
    assert!(finished[3] < Duration::from_millis(2500), "the first four took {:?}", finished[3]);
    assert!(finished[4] >= Duration::from_millis(1900), "the fifth waited for an instance: {:?}", finished[4]);
    let log = function.log_text();
    assert!(log.contains("concurrency=4"), "{log}");

    // Guests in a loop, one per thread of the runtime and more, do not hold up an invocation that arrives after them:
    // a computing guest yields at every epoch tick.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get() as u64);
    let loops: Vec<Invocation> = (0..threads.min(3))
        .map(|_| {
            Invocation::json(&json!({"action": "loop"}))
                .header("Lambda-Runtime-Deadline-Ms", (now_ms() + 2000).to_string())
        })
        .collect();
    let loop_ids: Vec<String> = loops.iter().map(|i| i.request_id().unwrap()).collect();
    for invocation in loops {
        api.enqueue("concurrent", invocation);
    }
    std::thread::sleep(Duration::from_millis(300));
    let quick = context().header("Lambda-Runtime-Deadline-Ms", (now_ms() + 1000).to_string());
    let asked = std::time::Instant::now();
    let response = api.invoke("concurrent", quick).response();
    assert!(response["request_id"].is_string(), "{response}");
    assert!(asked.elapsed() < Duration::from_millis(900), "answered after {:?}", asked.elapsed());
    for id in loop_ids {
        let Some(Outcome::Error { body, .. }) = api.outcome(&id, Duration::from_secs(30)) else { panic!("{id}") };
        assert_eq!(body["errorType"], "GuestTimeout", "{body}");
    }
}
