//! The sandbox: what a guest can see, and every limit it cannot escape. After each fault the same host must
//! serve the next invocation.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keyward::{HostError, HostSettings, InvocationContext, InvokeError, LimitExceeded, Limits, SecretsSettings};
use serde_json::json;

use crate::support::*;

/// The host still works: the probe answers a plain request.
async fn assert_serves_next(host: &keyward::Host) {
    let invocation = invoke(host, json!({"action": "context"})).await;
    assert!(invocation.result.is_ok(), "the host did not recover: {:?}", invocation.result);
}

#[tokio::test]
async fn the_guest_sees_only_the_env_it_is_given_and_no_files() {
    let config = HostSettings {
        guest_env: vec![("GREETING".into(), "hi".into()), ("MODE".into(), "test".into())],
        ..HostSettings::default()
    };
    let (_, host) = host("probe", config);
    let seen = response(&invoke(&host, json!({"action": "env"})).await);
    assert_eq!(seen["env"], json!({"GREETING": "hi", "MODE": "test"}));
    assert_eq!(seen["args"], json!([]));

    for path in ["/etc/passwd", "/proc/self/environ", "relative.txt"] {
        let read = response(&invoke(&host, json!({"action": "read-file", "path": path})).await);
        assert!(read.get("error").is_some(), "guest read {path}: {read}");
    }
}

#[test]
fn credentials_cannot_be_configured_into_a_guest() {
    let config =
        HostSettings { guest_env: vec![("AWS_SECRET_ACCESS_KEY".into(), "x".into())], ..HostSettings::default() };
    let err = keyward::Host::from_file(&guest("probe"), new_key(), config).unwrap_err();
    assert!(matches!(err, HostError::Setting(ref e) if e.reason.contains("AWS_SECRET_ACCESS_KEY")), "{err}");
}

/// Host env vars (credentials among them) never reach the guest, through the real binary.
#[test]
fn host_environment_never_reaches_the_guest() {
    let (dir, key) = dir_with_key("env");
    let probe = guest("probe");
    let event = dir.path("event.json");
    std::fs::write(&event, r#"{"action":"env"}"#).unwrap();
    let out = keyward_cmd(&["invoke", probe.to_str().unwrap(), "--key", &key, "--event", &event, "--env", "ONLY=this"])
        .env("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
        .env("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
        .env("AWS_SESSION_TOKEN", "token")
        .env("HOME", "/root")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let seen: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(seen["env"], json!({"ONLY": "this"}));
    assert!(!stdout(&out).contains("EXAMPLE"));
}

#[tokio::test]
async fn the_guest_is_told_its_invocation() {
    let (_, host) =
        host("probe", HostSettings { limits: Limits::default().with_timeout_ms(5_000), ..HostSettings::default() });
    let ctx = InvocationContext {
        request_id: "req-42".into(),
        function_arn: "arn:aws:lambda:eu-west-1:123456789012:function:probe".into(),
        deadline: None,
    };
    let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    let seen: serde_json::Value =
        serde_json::from_str(&host.invoke(r#"{"action":"context"}"#, ctx).await.result.unwrap()).unwrap();
    assert_eq!(seen["request_id"], "req-42");
    assert_eq!(seen["function_arn"], "arn:aws:lambda:eu-west-1:123456789012:function:probe");
    let deadline = seen["deadline_ms"].as_u64().unwrap();
    assert!((before + 4_900..=before + 5_500).contains(&deadline), "deadline {deadline} vs now {before}");
}

#[tokio::test]
async fn an_endless_loop_is_stopped_at_the_deadline_and_the_host_carries_on() {
    let (_, host) =
        host("probe", HostSettings { limits: Limits::default().with_timeout_ms(200), ..HostSettings::default() });
    let started = Instant::now();
    let invocation = invoke(&host, json!({"action": "loop"})).await;
    let elapsed = started.elapsed();
    assert_eq!(invocation.result, Err(InvokeError::Limit(LimitExceeded::Time { limit_ms: 200 })));
    assert_eq!(invocation.result.unwrap_err().to_string(), "guest exceeded its time limit of 200 ms");
    // Generous bound: what matters is that it stops at all, and not much later than asked.
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    assert_serves_next(&host).await;
}

#[tokio::test]
async fn the_caller_deadline_shortens_the_time_limit() {
    let (_, host) = host("probe", HostSettings::default());
    let ctx = InvocationContext {
        deadline: Some(SystemTime::now() + Duration::from_millis(150)),
        ..InvocationContext::local("arn")
    };
    let invocation = host.invoke(r#"{"action":"loop"}"#, ctx).await;
    assert!(matches!(invocation.result, Err(InvokeError::Limit(LimitExceeded::Time { limit_ms })) if limit_ms <= 150));
    let past = InvocationContext {
        deadline: Some(SystemTime::now() - Duration::from_secs(1)),
        ..InvocationContext::local("arn")
    };
    let late = host.invoke("{}", past).await.result.unwrap_err();
    assert_eq!(late, InvokeError::DeadlineExceeded);
    assert_eq!(late.to_string(), "the invocation's deadline had passed before the guest started");
}

#[tokio::test]
async fn a_trap_fails_only_its_invocation() {
    let (_, host) = host("probe", HostSettings::default());
    let invocation = invoke(&host, json!({"action": "trap"})).await;
    let Err(InvokeError::Trap(message)) = &invocation.result else {
        panic!("expected a trap: {:?}", invocation.result)
    };
    assert!(message.contains("unreachable"), "{message}");
    assert_serves_next(&host).await;

    // WASI 0.2's `exit` carries only success or failure, so the probe's `exit(3)` arrives as status 1.
    let exit = invoke(&host, json!({"action": "exit"})).await;
    assert_eq!(exit.result, Err(InvokeError::Exit(1)));
    assert_serves_next(&host).await;
}

#[tokio::test]
async fn memory_is_capped() {
    let (_, host) =
        host("probe", HostSettings { limits: Limits::default().with_memory_mb(16), ..HostSettings::default() });
    let fits = response(&invoke(&host, json!({"action": "alloc", "mb": 4})).await);
    assert_eq!(fits["allocated_mb"], 4);
    let invocation = invoke(&host, json!({"action": "alloc", "mb": 64})).await;
    let Err(InvokeError::Limit(LimitExceeded::Memory { limit_mb, requested_mb })) = invocation.result else {
        panic!("expected the memory limit: {:?}", invocation.result)
    };
    assert_eq!(limit_mb, 16);
    assert!(requested_mb > 16);
    assert_serves_next(&host).await;
}

#[tokio::test]
async fn decrypt_calls_are_capped_per_invocation() {
    let kms = SecretsSettings { max_decrypt_calls: 3, ..SecretsSettings::default() };
    let (key, host) = host("probe", HostSettings { secrets: kms, ..HostSettings::default() });
    let ciphertext = b64(&key.encrypt(b"pw", &context(&[])).unwrap());
    let ok = invoke(&host, json!({"action": "decrypt", "ciphertext": ciphertext, "times": 3})).await;
    assert_eq!(response(&ok)["sha256_prefix"], fingerprint(b"pw"));
    assert_eq!(ok.decrypts.len(), 3);

    let over = invoke(&host, json!({"action": "decrypt", "ciphertext": ciphertext, "times": 4})).await;
    assert_eq!(over.result, Err(InvokeError::Limit(LimitExceeded::DecryptCalls { limit: 3 })));
    assert_eq!(over.decrypts.len(), 3, "the fourth call never reached the key");
    // The quota is per invocation.
    let again = invoke(&host, json!({"action": "decrypt", "ciphertext": ciphertext, "times": 3})).await;
    assert!(again.result.is_ok());
}

#[tokio::test]
async fn responses_are_capped_and_must_be_json() {
    let limits = Limits { max_response_bytes: 1000, ..Limits::default() };
    let (_, host) = host("probe", HostSettings { limits, ..HostSettings::default() });
    assert!(invoke(&host, json!({"action": "big", "bytes": 900})).await.result.is_ok());
    let big = invoke(&host, json!({"action": "big", "bytes": 5000})).await;
    assert_eq!(big.result, Err(InvokeError::Limit(LimitExceeded::ResponseSize { size: 5002, limit: 1000 })));

    let bad = invoke(&host, json!({"action": "not-json"})).await;
    assert!(matches!(bad.result, Err(InvokeError::InvalidResponse { line: 1, .. })), "{:?}", bad.result);
    assert_serves_next(&host).await;
}

#[tokio::test]
async fn guest_errors_pass_through() {
    let (_, host) = host("probe", HostSettings::default());
    let invocation = invoke(&host, json!({"action": "fail", "message": "bad request: no id"})).await;
    assert_eq!(invocation.result, Err(InvokeError::Guest("bad request: no id".into())));
    assert_eq!(invocation.result.unwrap_err().error_type(), "GuestError");
}

/// Instances run side by side on a multi-threaded runtime, each with its own store and quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_invocations_each_get_their_own_instance() {
    let (key, host) = host("probe", HostSettings::default());
    let host = std::sync::Arc::new(host);
    let ciphertext = b64(&key.encrypt(b"pw", &context(&[])).unwrap());
    let event = json!({"action": "decrypt", "ciphertext": ciphertext});
    let tasks: Vec<_> = (0..host.limits().max_instances)
        .map(|_| {
            let (host, event) = (host.clone(), event.clone());
            tokio::spawn(async move { invoke(&host, event).await })
        })
        .collect();
    for task in tasks {
        let invocation = task.await.unwrap();
        assert_eq!(response(&invocation)["sha256_prefix"], fingerprint(b"pw"));
        assert_eq!(invocation.decrypts.len(), 1);
    }
}

/// More invocations at once than the pool has instances wait for one within their own time, and fail as
/// `HostBusy` (without running the guest) when none frees up in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocations_beyond_the_pool_wait_for_an_instance_within_their_time() {
    let limits = Limits { max_instances: 1, timeout: Duration::from_secs(2), ..Limits::default() };
    let (_, host) = host("probe", HostSettings { limits, ..HostSettings::default() });
    let host = std::sync::Arc::new(host);
    // Each task gives its instance back as it ends (an `Invocation` holds it until dropped): the order they take
    // the instance in is not the order the test reads their outcomes in.
    let sleep = |ms: u64| {
        let host = host.clone();
        tokio::spawn(async move { invoke(&host, json!({"action": "sleep", "ms": ms})).await.result })
    };
    let slept = |result: Result<String, InvokeError>| {
        let response: serde_json::Value = serde_json::from_str(&result.expect("the sleep ran")).unwrap();
        response["slept_ms"].clone()
    };
    // Three at once, one instance: they run one after the other, each inside its 2 s.
    let tasks: Vec<_> = (0..3).map(|_| sleep(300)).collect();
    for task in tasks {
        assert_eq!(slept(task.await.unwrap()), 300);
    }
    // One holds the instance past the other's whole time (a 150 ms deadline).
    let holder = sleep(1500);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ctx = InvocationContext {
        deadline: Some(SystemTime::now() + Duration::from_millis(150)),
        ..InvocationContext::local("arn")
    };
    let waited = host.invoke(json!({"action": "sleep", "ms": 1}).to_string(), ctx).await;
    assert_eq!(waited.result, Err(InvokeError::Busy { instances: 1 }));
    assert_eq!(waited.result.unwrap_err().error_type(), "HostBusy");
    assert!(waited.elapsed < Duration::from_millis(1000), "it gave up at its deadline: {:?}", waited.elapsed);
    assert_eq!(slept(holder.await.unwrap()), 1500);
}

/// A component from `tests/guests/wat/` (hand-written WebAssembly text, for what no compiler emits on request).
fn wat_guest(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../tests/guests/wat/{name}.wat"));
    wat::parse_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test]
async fn the_memory_limit_is_on_all_of_a_guests_memories_together() {
    let host = keyward::Host::new(&wat_guest("many-memories"), new_key(), HostSettings::default()).unwrap();
    let invocation = invoke(&host, json!({})).await;
    let Err(InvokeError::Limit(LimitExceeded::Memory { limit_mb: 64, requested_mb })) = invocation.result else {
        panic!("expected the memory limit: {:?}", invocation.result)
    };
    assert!(requested_mb > 64, "{requested_mb}");
}

/// Secrets are handed out only while the guest handles an invocation (a start function may run ahead of it, in
/// Lambda mode): one asked for at instantiation is the guest's trap, and nothing is asked of the key service.
#[tokio::test]
async fn a_start_function_asking_for_a_secret_traps() {
    let host = keyward::Host::new(&wat_guest("start-decrypt"), new_key(), HostSettings::default()).unwrap();
    let invocation = invoke(&host, json!({})).await;
    let result = invocation.result;
    assert!(
        matches!(result, Err(InvokeError::Trap(ref m)) if m.contains("asked for a secret before its invocation started")),
        "{result:?}"
    );
    assert_eq!(result.unwrap_err().error_type(), "GuestTrap");
    assert!(invocation.decrypts.is_empty());
}

#[tokio::test]
async fn a_trap_in_the_start_function_is_the_guests() {
    let host = keyward::Host::new(&wat_guest("start-trap"), new_key(), HostSettings::default()).unwrap();
    let result = invoke(&host, json!({})).await.result;
    assert!(matches!(result, Err(InvokeError::Trap(ref m)) if m.contains("unreachable executed")), "{result:?}");
    assert_eq!(result.unwrap_err().error_type(), "GuestTrap");
}
