//! Outgoing HTTP through a real component (the probe's `fetch`) to origin servers of the suite's own: the egress
//! policy (default deny, origins, every SSRF form), credentials injected on the way out and masked on the way back,
//! redirects, the bounds, TLS, and the connection pool across invocations.

use keyward::capability::http::{HttpSettings, OutboundRecord};
use keyward::{EncryptionContext, HostSettings, Invocation};
use serde_json::{Value, json};

use crate::origin::{Origin, raw_server, reset_server, test_ca};
use crate::support::*;

const SECRET: &[u8] = b"sk_live_51Hx9Fq2eZvKYlo2C";

/// A host running the probe with these outgoing-HTTP settings, and `TOKEN` holding [`SECRET`]'s ciphertext.
fn host_for(http: HttpSettings) -> keyward::Host {
    let key = new_key();
    let token = key.encrypt(SECRET, &EncryptionContext::new()).unwrap();
    let settings = HostSettings { guest_env: vec![("TOKEN".into(), b64(&token))], http, ..HostSettings::default() };
    host_with("probe", &key, settings)
}

fn allowing(origins: &[&str]) -> HttpSettings {
    HttpSettings { allow: origins.iter().map(|o| o.parse().unwrap()).collect(), ..HttpSettings::default() }
}

fn injecting(mut http: HttpSettings, spec: &str) -> HttpSettings {
    http.inject.push(("TOKEN".into(), spec.parse().unwrap()));
    http
}

/// Sends `requests` (each a URL, or a full request object) and returns each answer.
async fn fetch(host: &keyward::Host, requests: Vec<Value>) -> (Vec<Value>, Invocation) {
    let requests: Vec<Value> =
        requests.into_iter().map(|r| if r.is_string() { json!({ "url": r }) } else { r }).collect();
    let invocation = invoke(host, json!({ "action": "fetch", "requests": requests })).await;
    let answers = response(&invocation)["responses"].as_array().unwrap().clone();
    (answers, invocation)
}

fn error(answer: &Value) -> &str {
    answer["error"].as_str().unwrap_or_else(|| panic!("expected an error, got {answer}"))
}

/// The error's message, in words: never a Debug dump.
fn message(answer: &Value) -> &str {
    let message = answer["message"].as_str().unwrap_or_else(|| panic!("expected an error, got {answer}"));
    assert!(!message.contains("::") && !message.contains("Some("), "a Debug dump: {message}");
    message
}

#[tokio::test]
async fn nothing_is_reachable_by_default() {
    let origin = Origin::http();
    let host = host_for(HttpSettings::default());
    let (answers, invocation) = fetch(&host, vec![json!(origin.url("/"))]).await;
    assert_eq!(error(&answers[0]), "HttpRequestDenied");
    assert_eq!(origin.connections(), 0, "nothing reached the server");
    let record = &invocation.outbound[0];
    assert_eq!(record.origin, origin.origin());
    assert_eq!(record.refused_by.as_deref(), Some("no origin is allowed (KEYWARD_ALLOW_OUTBOUND is empty)"));
}

#[tokio::test]
async fn an_allowed_origin_is_reached_and_audited_others_are_not() {
    let (allowed, other) = (Origin::http(), Origin::http());
    let host = host_for(allowing(&[&allowed.origin()]));
    let (answers, invocation) =
        fetch(&host, vec![json!(allowed.url("/v1/charges?secret=no")), json!(other.url("/"))]).await;
    assert_eq!(answers[0]["status"], 200);
    assert_eq!(answers[0]["body"], "hello");
    assert_eq!(error(&answers[1]), "HttpRequestDenied");
    assert_eq!(other.connections(), 0);
    let record = &invocation.outbound[0];
    let expected = OutboundRecord {
        method: "GET".into(),
        origin: allowed.origin(),
        path: "/v1/charges".into(),
        status: Some(200),
        bytes: 5,
        latency: record.latency,
        injected: vec![],
        outcome: Ok(()),
        refused_by: None,
    };
    assert_eq!(record, &expected, "the path without its query");
    assert_eq!(allowed.seen()[0].target, "/v1/charges?secret=no", "the origin got the query");
    assert_eq!(invocation.outbound[1].refused_by.as_deref(), Some("not an origin KEYWARD_ALLOW_OUTBOUND allows"));
}

#[tokio::test]
async fn an_injected_secret_reaches_its_origin_and_never_the_guest() {
    let echo = Origin::http();
    let host = host_for(injecting(
        allowing(&[&echo.origin()]),
        &format!("{} Authorization: Bearer {{secret}}", echo.origin()),
    ));
    let secret = std::str::from_utf8(SECRET).unwrap();
    // The guest sets its own Authorization: replaced, never joined.
    let request = json!({ "url": echo.url("/headers"), "headers": [["authorization", "Bearer guest-made"]] });
    let (answers, invocation) = fetch(&host, vec![request, json!(echo.url("/drip-headers"))]).await;
    let seen = echo.seen();
    assert_eq!(seen[0].values("authorization"), vec![format!("Bearer {secret}")]);
    for answer in &answers {
        let body = answer["body"].as_str().unwrap();
        assert!(!body.contains(secret) && !body.contains("sk_live"), "echoed to the guest: {body}");
        assert!(body.contains("[REDACTED]"), "{body}");
    }
    assert_eq!(invocation.outbound[0].injected, vec!["TOKEN".to_string()]);
    let headers = answers[0]["headers"].as_array().unwrap();
    assert!(!headers.iter().any(|h| h[0] == "content-length"), "the length of a masked body is not the server's");
    assert_eq!(invocation.decrypts.len(), 1, "one fetch of the secret per invocation, however many requests");
    assert!(!response(&invocation).to_string().contains(secret));
}

#[tokio::test]
async fn basic_auth_is_injected_and_its_base64_masked() {
    let echo = Origin::http();
    let host = host_for(injecting(
        allowing(&[&echo.origin()]),
        &format!("{} Authorization: Basic {{basic:svc}}", echo.origin()),
    ));
    let (answers, _) = fetch(&host, vec![json!(echo.url("/headers"))]).await;
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode([b"svc:".as_slice(), SECRET].concat());
    assert_eq!(echo.seen()[0].values("authorization"), vec![format!("Basic {basic}")]);
    let body = answers[0]["body"].as_str().unwrap();
    assert!(!body.contains(&basic), "{body}");
    assert!(body.contains("[REDACTED]"), "{body}");
}

#[tokio::test]
async fn an_injected_secret_goes_to_its_origin_only_and_follows_no_redirect() {
    let (bound, other) = (Origin::http(), Origin::http());
    let http = allowing(&[&bound.origin(), &other.origin()]);
    let host = host_for(injecting(http, &format!("{} X-Api-Key: {{secret}}", bound.origin())));
    let to_other = bound.url(&format!("/redirect?to={}", other.url("/headers")));
    let (answers, _) = fetch(&host, vec![json!(to_other), json!(other.url("/headers"))]).await;
    assert_eq!(answers[0]["status"], 302, "the host follows no redirect");
    assert_eq!(answers[1]["status"], 200);
    assert_eq!(bound.seen()[0].values("x-api-key").len(), 1);
    assert!(other.seen()[0].values("x-api-key").is_empty(), "the other origin never sees it");
}

#[tokio::test]
async fn the_guest_is_denied_an_injected_secret() {
    let echo = Origin::http();
    let key = new_key();
    let token = key.encrypt(SECRET, &EncryptionContext::new()).unwrap();
    let mut http = allowing(&[&echo.origin()]);
    http.inject.push(("TOKEN".into(), format!("{} Authorization: Bearer {{secret}}", echo.origin()).parse().unwrap()));
    let settings = HostSettings { guest_env: vec![("TOKEN".into(), b64(&token))], http, ..HostSettings::default() };
    let host = host_with("probe", &key, settings);
    for event in [
        json!({ "action": "decrypt", "ciphertext": b64(&token) }),
        json!({ "action": "key", "env": "TOKEN", "ops": [{ "op": "hmac", "alg": "sha256", "message": "x" }] }),
    ] {
        let invocation = invoke(&host, event).await;
        let answer = match &invocation.result {
            Ok(response) => response.clone(),
            Err(e) => e.to_string(),
        };
        assert!(answer.contains("TOKEN is injected by the host into requests to"), "{answer}");
        assert!(!answer.contains("sk_live"), "{answer}");
    }
}

#[tokio::test]
async fn every_ssrf_form_is_refused() {
    let origin = Origin::http();
    let port = origin.port;
    // The IP literal is allowed (and localhost by name), so that only the form of each request is what refuses it.
    let allowed = [format!("http://127.0.0.1:{port}"), format!("http://localhost:{port}")];
    let host = host_for(allowing(&allowed.iter().map(String::as_str).collect::<Vec<_>>()));
    let requests = vec![
        json!(format!("http://localhost:{port}/")),
        json!(format!("http://2130706433:{port}/")),
        json!(format!("http://0x7f.1:{port}/")),
        json!(format!("http://127.1:{port}/")),
        json!(format!("http://[::ffff:127.0.0.1]:{port}/")),
        json!("http://169.254.169.254/latest/meta-data/"),
        json!({ "method": "CONNECT", "url": format!("http://127.0.0.1:{port}/") }),
        json!({ "url": format!("http://127.0.0.1:{port}/"), "headers": [["host", "169.254.169.254"]] }),
        json!({ "url": format!("http://127.0.0.1:{port}/"), "headers": [["x-a", "b\r\nhost: evil"]] }),
    ];
    let (answers, _) = fetch(&host, requests).await;
    let errors: Vec<&str> = answers.iter().map(error).collect();
    assert_eq!(errors[0], "DestinationIpProhibited", "an allowed name resolving to loopback");
    for (i, odd) in ["2130706433", "0x7f.1", "127.1"].iter().enumerate() {
        assert_eq!(errors[1 + i], "HttpRequestUriInvalid", "{odd}");
    }
    assert_eq!(errors[4], "HttpRequestDenied", "a mapped address is not the allowed literal");
    assert_eq!(errors[5], "HttpRequestDenied", "the metadata service, unless an entry names its address");
    assert_eq!(errors[6], "HttpRequestDenied", "CONNECT");
    assert_eq!(errors[7], "HeaderRefused", "a guest may not set Host");
    assert!(message(&answers[7]).contains("a guest may not set it"), "{}", answers[7]);
    assert_eq!(errors[8], "HeaderRefused", "no CR/LF in a value");
    assert!(message(&answers[8]).contains("no line breaks"), "{}", answers[8]);
    assert_eq!(origin.connections(), 0, "none of them reached the server");
}

/// A response the masker cannot read as sent is refused, not passed on: the host asks for no compression on a
/// request carrying a secret, and fails a compressed answer; a header named after the secret is dropped.
#[tokio::test]
async fn what_the_masker_cannot_see_does_not_reach_the_guest() {
    let origin = Origin::http();
    let host =
        host_for(injecting(allowing(&[&origin.origin()]), &format!("{} X-Api-Key: {{secret}}", origin.origin())));
    let gzip =
        json!({ "url": origin.url("/gzip"), "headers": [["accept-encoding", "gzip, br"], ["range", "bytes=0-3"]] });
    let (answers, _) = fetch(&host, vec![gzip, json!(origin.url("/name-echo"))]).await;
    assert_eq!(origin.seen()[0].values("accept-encoding"), vec!["identity"]);
    assert!(origin.seen()[0].values("range").is_empty());
    assert_eq!(error(&answers[0]), "HttpResponseContentCoding");
    assert_eq!(message(&answers[0]), "HttpResponseContentCoding: gzip");
    let names: Vec<&str> = answers[1]["headers"].as_array().unwrap().iter().map(|h| h[0].as_str().unwrap()).collect();
    assert!(!names.iter().any(|n| n.contains("sk_live")), "{names:?}");
    assert!(origin.seen()[1].values("x-api-key")[0].starts_with("sk_live"), "the origin did get it");
}

/// Encodings hidden in a second header line, or in the transfer coding, fail as plainly stated ones do.
#[tokio::test]
async fn every_coding_of_a_response_to_a_secret_is_checked() {
    let twice = raw_server(
        b"HTTP/1.1 200 OK\r\ncontent-encoding: identity\r\ncontent-encoding: gzip\r\ncontent-length: 2\r\n\r\nhi",
    );
    let transfer = raw_server(b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n");
    let origins = [format!("http://127.0.0.1:{twice}"), format!("http://127.0.0.1:{transfer}")];
    let key = new_key();
    let mut http = allowing(&origins.iter().map(String::as_str).collect::<Vec<_>>());
    let mut guest_env = Vec::new();
    for (i, origin) in origins.iter().enumerate() {
        let name = format!("TOKEN{i}");
        guest_env.push((name.clone(), b64(&key.encrypt(SECRET, &EncryptionContext::new()).unwrap())));
        http.inject.push((name, format!("{origin} X-Key: {{secret}}").parse().unwrap()));
    }
    let host = host_with("probe", &key, HostSettings { guest_env, http, ..HostSettings::default() });
    let (answers, _) = fetch(&host, vec![json!(format!("{}/", origins[0])), json!(format!("{}/", origins[1]))]).await;
    assert_eq!(message(&answers[0]), "HttpResponseContentCoding: gzip");
    assert_eq!(message(&answers[1]), "HttpResponseTransferCoding: gzip");
}

/// A refused request with a body reads as refused (the client's write fails first), and a scheme other than http
/// and https is refused with an audit line too.
#[tokio::test]
async fn refusals_read_as_refusals_whatever_the_request() {
    let host = host_for(HttpSettings::default());
    let post = json!({ "method": "POST", "url": "https://api.example.com/v1", "body": "amount=100" });
    let (answers, invocation) = fetch(&host, vec![post, json!("ftp://files.example.com/x")]).await;
    assert_eq!(error(&answers[0]), "HttpRequestDenied");
    assert_eq!(error(&answers[1]), "HttpRequestUriInvalid");
    assert_eq!(invocation.outbound[1].origin, "ftp://files.example.com");
    assert_eq!(invocation.outbound[1].refused_by.as_deref(), Some("the scheme is neither http nor https"));
}

/// The audit never names an authority's user part, and refused requests count against the quota, each past it
/// unrecorded: a guest looping on refusals costs the host one record per allowed request.
#[tokio::test]
async fn refusals_are_bounded_and_credentials_in_the_authority_never_audited() {
    let origin = Origin::http();
    let mut http = allowing(&[&origin.origin()]);
    http.max_requests = 3;
    let host = host_for(http);
    let with_user = format!("http://svc:p4ssw0rd@127.0.0.1:{}/", origin.port);
    let mut requests = vec![json!(with_user)];
    requests.extend((0..50).map(|_| json!("https://denied.example/")));
    let (answers, invocation) = fetch(&host, requests).await;
    assert_eq!(answers.len(), 51);
    assert_eq!(invocation.outbound.len(), 4, "{:?}", invocation.outbound);
    assert!(format!("{:?}", invocation.outbound).find("p4ssw0rd").is_none());
    assert_eq!(invocation.outbound[0].origin, format!("http://127.0.0.1:{}", origin.port));
    assert!(message(&answers[50]).starts_with("KEYWARD_MAX_OUTBOUND_REQUESTS: "), "{}", answers[50]);
}

#[tokio::test]
async fn the_request_quota_holds() {
    let origin = Origin::http();
    let mut http = allowing(&[&origin.origin()]);
    http.max_requests = 3;
    let host = host_for(http);
    let (answers, invocation) = fetch(&host, vec![json!(origin.url("/")); 4]).await;
    assert!(answers[..3].iter().all(|a| a["status"] == 200));
    assert_eq!(error(&answers[3]), "InternalError");
    assert!(message(&answers[3]).starts_with("KEYWARD_MAX_OUTBOUND_REQUESTS: "), "{}", answers[3]);
    assert_eq!(origin.seen().len(), 3);
    assert_eq!(invocation.outbound.len(), 4);
}

#[tokio::test]
async fn slow_huge_and_resetting_servers_each_get_their_error() {
    let origin = Origin::http();
    let reset = reset_server();
    let mut http = allowing(&[&origin.origin(), &format!("http://127.0.0.1:{reset}")]);
    http.max_response_bytes = 4 << 20;
    let host = host_for(http);
    let (answers, invocation) = fetch(
        &host,
        vec![
            json!(origin.url("/huge?mb=200")),
            json!(format!("http://127.0.0.1:{reset}/")),
            json!(origin.url("/slow?ms=60000")),
        ],
    )
    .await;
    // wasmtime-wasi-http 48 hands a body's error to the guest as text, not as an error code.
    assert_eq!(error(&answers[0]), "BodyFailed");
    assert_eq!(message(&answers[0]), "HTTP response body size exceeds limit: 4194304 bytes");
    assert!(
        invocation.outbound[0].bytes <= (4 << 20) + (1 << 20),
        "stopped at the limit: {:?}",
        invocation.outbound[0]
    );
    let reset_error = error(&answers[1]);
    assert!(
        ["ConnectionTerminated", "HttpResponseIncomplete", "HttpProtocolError"].contains(&reset_error),
        "{reset_error}"
    );
    assert_eq!(error(&answers[2]), "HttpResponseTimeout", "cut at the invocation's deadline");
    assert!(invocation.elapsed < std::time::Duration::from_secs(4), "{:?}", invocation.elapsed);
}

/// A body larger than the guest's whole memory streams through it: the host holds a frame at a time, the guest
/// reads and drops.
#[tokio::test]
async fn a_body_larger_than_the_guest_streams_through() {
    let origin = Origin::http();
    let mut http = allowing(&[&origin.origin()]);
    http.max_response_bytes = 200 << 20;
    let key = new_key();
    let limits = keyward::Limits { timeout: std::time::Duration::from_secs(30), ..keyward::Limits::default() };
    let host = host_with("probe", &key, HostSettings { http, limits, ..HostSettings::default() });
    let request = json!({ "url": origin.url("/huge?mb=100"), "discard": true });
    let (answers, invocation) = fetch(&host, vec![request]).await;
    assert_eq!(answers[0]["bytes"], 100 << 20, "{}", answers[0]);
    assert_eq!(invocation.outbound[0].bytes, 100 << 20);
    assert!(keyward::Limits::default().memory_bytes < 100 << 20, "more than the guest could hold");
}

#[tokio::test]
async fn https_needs_a_trusted_ca_and_reuses_its_connection_across_invocations() {
    let dir = TempDir::new("outbound-tls");
    let origin = Origin::https(&dir.0);
    let untrusting = host_for(allowing(&[&origin.origin()]));
    let (answers, _) = fetch(&untrusting, vec![json!(origin.url("/"))]).await;
    assert_eq!(error(&answers[0]), "TlsCertificateError");

    let (ca, _, _) = test_ca(&dir.0);
    let mut http = allowing(&[&origin.origin()]);
    http.ca_bundle = Some(ca);
    let trusting = host_for(http);
    let before = origin.connections();
    for _ in 0..2 {
        let (answers, _) = fetch(&trusting, vec![json!(origin.url("/"))]).await;
        assert_eq!(answers[0]["status"], 200, "{}", answers[0]);
    }
    assert_eq!(origin.connections() - before, 1, "the second invocation reused the first one's connection");
    assert!(origin.seen().iter().all(|seen| seen.version == "HTTP/2.0"), "HTTP/2 by ALPN: {:?}", origin.seen());
}

/// The Lambda side, in the runtime-only bootstrap with the probe precompiled (as `keyward package` ships them): the
/// function's variables configure egress and injection; a warm invocation reuses the last one's connection; the
/// audit lines name the injected secret, never its value; a misconfigured injection fails init with one line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lambda_injects_from_kms_and_keeps_its_connection_warm() {
    use crate::lambda::Function;
    use crate::servers::{create_key, encrypt, moto_sdk_config, start_emulator, start_moto};

    let dir = TempDir::new("lambda-outbound");
    let moto = start_moto();
    let kms = aws_sdk_kms::Client::new(&moto_sdk_config(&moto));
    let key = create_key(&kms).await;
    let token = b64(&encrypt(&kms, &key, SECRET, &[("function", "api")]).await);
    let echo = Origin::http();
    let emulator = start_emulator(&dir.0, &["api", "misrouted"]);
    let cwasm = dir.path("probe.cwasm");
    let compiled = keyward(&["compile", guest("probe").to_str().unwrap(), "-o", &cwasm]);
    assert!(compiled.status.success(), "{}", stderr(&compiled));
    let env = |inject: String| {
        vec![
            ("KEYWARD_COMPONENT", cwasm.clone()),
            ("KEYWARD_GUEST_ENV", "TOKEN".to_string()),
            ("TOKEN", token.clone()),
            ("KEYWARD_KMS_KEY_ID", key.clone()),
            ("KEYWARD_KMS_ENDPOINT", moto.url()),
            ("KEYWARD_KMS_CONTEXT", "function=api".to_string()),
            ("KEYWARD_ALLOW_OUTBOUND", echo.origin()),
            ("KEYWARD_INJECT_TOKEN", inject),
        ]
    };
    let inject = format!("{} Authorization: Bearer {{secret}}", echo.origin());
    let function =
        Function::start_program(&lambda_bootstrap(), &emulator.runtime_api("api"), &dir, "api", &env(inject));
    let event = json!({ "action": "fetch", "requests": [{ "url": echo.url("/headers") }] });
    for _ in 0..2 {
        let response = function.invoke(&emulator, &event).unwrap_or_else(|e| panic!("{e}; {}", function.log_text()));
        let body = response["responses"][0]["body"].as_str().unwrap();
        assert!(body.contains("\"authorization\":\"[REDACTED]\""), "the header value as sent, masked: {body}");
    }
    let secret = std::str::from_utf8(SECRET).unwrap();
    assert!(echo.seen().iter().all(|seen| seen.values("authorization") == vec![format!("Bearer {secret}")]));
    assert_eq!(echo.connections(), 1, "the warm invocation reused the connection");
    let log = function.log_when(|log| log.matches("outbound request").count() >= 2);
    assert!(log.contains("injected=\"TOKEN\""), "{log}");
    assert!(!log.contains(secret), "{log}");

    // An injection into an origin the function may not reach does not start.
    let misrouted_env = env("https://evil.example X-Key: {secret}".into());
    let mut misrouted = Function::start_program(
        &lambda_bootstrap(),
        &emulator.runtime_api("misrouted"),
        &dir,
        "misrouted",
        &misrouted_env,
    );
    assert!(!misrouted.child.wait().unwrap().success());
    let log = misrouted.log_text();
    assert!(
        log.contains("KEYWARD_INJECT_TOKEN: injects into requests to https://evil.example, which KEYWARD_ALLOW_OUTBOUND does not allow"),
        "{log}"
    );
}

/// `keyward invoke` takes the same settings as flags.
#[test]
fn invoke_takes_the_egress_and_injection_flags() {
    let (dir, key) = dir_with_key("outbound-cli");
    let echo = Origin::http();
    let token = keyward::LocalKey::load(std::path::Path::new(&key))
        .unwrap()
        .encrypt(SECRET, &EncryptionContext::new())
        .unwrap();
    let event = dir.0.join("event.json");
    std::fs::write(&event, json!({ "action": "fetch", "requests": [{ "url": echo.url("/headers") }] }).to_string())
        .unwrap();
    let probe = guest("probe").display().to_string();
    let base = ["invoke", &probe, "--key", &key, "--event", event.to_str().unwrap()];
    let denied = keyward(&base);
    assert!(stdout(&denied).contains("HttpRequestDenied"), "{}", stderr(&denied));

    let env = format!("TOKEN={}", b64(&token));
    let inject = format!("TOKEN={} X-Api-Key: {{secret}}", echo.origin());
    let origin = echo.origin();
    let args = [&base[..], &["--env", &env, "--allow-outbound", &origin, "--inject", &inject]].concat();
    let sent = keyward(&args);
    assert!(sent.status.success(), "{}", stderr(&sent));
    assert!(stdout(&sent).contains("[REDACTED]"), "{}", stdout(&sent));
    assert_eq!(echo.seen()[0].values("x-api-key"), vec![std::str::from_utf8(SECRET).unwrap().to_string()]);

    let bad = keyward(&[&base[..], &["--allow-outbound", "ftp://x"]].concat());
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("the scheme \"ftp\" is neither http nor https"), "{}", stderr(&bad));
}

/// The stub host's routes: applied after the policy and injection, the longest prefix first; a local server, each
/// fault, and the network for what no route matches.
#[tokio::test]
async fn the_stub_host_routes_after_the_policy() {
    use keyward::testing::{OutboundFault, Route, StubHost};

    let local = Origin::http();
    let real = Origin::http();
    let host = StubHost::load(guest("probe"))
        .unwrap()
        .secret("TOKEN", SECRET)
        .allow_outbound("https://api.example.com")
        .allow_outbound(real.origin())
        .inject("TOKEN", "https://api.example.com X-Api-Key: {secret}")
        .route("https://api.example.com/", Route::forward(&local.origin()))
        .route("https://api.example.com/refused", Route::fail(OutboundFault::Refused))
        .route("https://api.example.com/timeout", Route::fail(OutboundFault::Timeout))
        .route("https://api.example.com/tls", Route::fail(OutboundFault::Tls))
        .route("https://api.example.com/reset", Route::fail(OutboundFault::Reset))
        .route("https://denied.example.com/", Route::respond(200, "never"));
    let urls =
        ["/headers", "/refused", "/timeout", "/tls", "/reset"].map(|p| json!(format!("https://api.example.com{p}")));
    let mut requests = urls.to_vec();
    requests.push(json!("https://denied.example.com/"));
    requests.push(json!(real.url("/")));
    let event =
        json!({ "action": "fetch", "requests": requests.into_iter().map(|u| json!({ "url": u })).collect::<Vec<_>>() });
    let answers = host.invoke_async(event).await.unwrap()["responses"].as_array().unwrap().clone();
    assert_eq!(answers[0]["status"], 200, "forwarded to the local server");
    assert!(answers[0]["body"].as_str().unwrap().contains("[REDACTED]"));
    assert_eq!(local.seen()[0].values("x-api-key"), vec![std::str::from_utf8(SECRET).unwrap()]);
    let errors: Vec<&str> = answers[1..5].iter().map(error).collect();
    assert_eq!(errors, ["ConnectionRefused", "ConnectionTimeout", "TlsCertificateError", "ConnectionTerminated"]);
    assert_eq!(error(&answers[5]), "HttpRequestDenied", "the policy comes first");
    assert_eq!(answers[6]["body"], "hello", "an unrouted request goes to the network");
    let sent = host.sent_requests();
    assert_eq!(sent.len(), 6, "the denied request was never sent");
    assert_eq!(sent[0].header_values("x-api-key"), ["{TOKEN}"]);
    assert!(sent.iter().all(|s| !format!("{s:?}").contains("sk_live")));
}

/// The JavaScript api-client (componentize-js's `fetch`, over wasi:http) and the Rust one answer alike, on a host
/// that denies guests plaintext: injection needs no `kms` import. Each request is as the other's.
#[test]
fn the_javascript_and_rust_api_clients_fetch_alike_in_the_sealed_world() {
    use keyward::testing::{OutboundFault, Route, StubHost};

    let load = |name: &str| {
        StubHost::load(guest(name))
            .unwrap()
            .secret("API_KEY", SECRET)
            .deny_plaintext()
            .allow_outbound("https://api.example.com")
            .inject("API_KEY", "https://api.example.com Authorization: Bearer {secret}")
            .route(
                "https://api.example.com/v1/charges",
                Route::respond(200, r#"{"id":"ch_1","status":"sk_live_51Hx9Fq2eZvKYlo2C"}"#),
            )
    };
    let run = |host: &StubHost| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let result = runtime.block_on(host.invoke_raw(r#"{"amount":100,"currency":"eur"}"#)).unwrap().result;
        result.map(|text| serde_json::from_str::<Value>(&text).unwrap()).map_err(|e| e.to_string())
    };
    let (js, rust) = (load("api-client-js"), load("api_client"));
    let answer = run(&js);
    assert_eq!(answer, run(&rust));
    assert_eq!(answer.unwrap(), json!({ "charge": "ch_1", "status": "[REDACTED]" }), "the echoed key masked");
    let (js_sent, rust_sent) = (js.sent_requests(), rust.sent_requests());
    assert_eq!(js_sent[0].method, "POST");
    assert_eq!(js_sent[0].header_values("authorization"), ["Bearer {API_KEY}"]);
    assert_eq!(js_sent[0].header_values("authorization"), rust_sent[0].header_values("authorization"));
    assert_eq!(js_sent[0].body, rust_sent[0].body);
    assert_eq!(js_sent[0].header_values("content-type"), ["application/json"]);

    let js = js.route("https://api.example.com/v1/charges", Route::fail(OutboundFault::Refused));
    let error = run(&js).unwrap_err();
    assert!(error.starts_with("guest returned an error: payment API unreachable: "), "{error}");
}
