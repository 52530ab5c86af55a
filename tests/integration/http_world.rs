//! The HTTP world: a wasi:http component (tests/guests/http-probe) run by the real `keyward` binary as a Lambda
//! under cargo-lambda's emulator, on captured events of every shape (tests/fixtures/http-events), decrypting with
//! moto's KMS; and served by `keyward serve` to a real HTTP client.

use std::io::BufRead as _;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::lambda::Function;
use crate::servers::*;
use crate::support::*;

const SECRET: &[u8] = b"http-w0rld-s3cret";

/// A captured event of tests/fixtures/http-events, its path set to `path` (and its query left as captured).
fn event(fixture: &str, path: &str) -> Value {
    let file = format!("{}/../tests/fixtures/http-events/{fixture}", env!("CARGO_MANIFEST_DIR"));
    let mut event: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    if event["requestContext"]["http"].is_object() {
        event["rawPath"] = json!(path);
        event["requestContext"]["http"]["path"] = json!(path);
    } else {
        event["path"] = json!(path);
    }
    event
}

/// The body of a Lambda HTTP answer, decoded.
fn body(answer: &Value) -> Vec<u8> {
    let text = answer["body"].as_str().unwrap_or_default();
    if answer["isBase64Encoded"] == json!(true) {
        base64::engine::general_purpose::STANDARD.decode(text).unwrap()
    } else {
        text.as_bytes().to_vec()
    }
}

fn body_json(answer: &Value) -> Value {
    serde_json::from_slice(&body(answer)).unwrap_or_else(|_| panic!("not JSON: {answer}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_component_answers_every_event_shape_under_the_emulator() {
    let dir = TempDir::new("http-world");
    let moto = start_moto();
    let kms = aws_sdk_kms::Client::new(&moto_sdk_config(&moto));
    let key = create_key(&kms).await;
    let password = b64(&encrypt(&kms, &key, SECRET, &[("function", "http")]).await);
    let emulator = start_emulator(&dir.0, &["http"]);
    let env = vec![
        ("KEYWARD_COMPONENT", guest("http_probe").display().to_string()),
        ("KEYWARD_GUEST_ENV", "PASSWORD".to_string()),
        ("PASSWORD", password),
        ("KEYWARD_KMS_KEY_ID", key.clone()),
        ("KEYWARD_KMS_ENDPOINT", moto.url()),
        ("KEYWARD_KMS_CONTEXT", "function={function_name}".to_string()),
        ("KEYWARD_MAX_RESPONSE_BYTES", "1000000".to_string()),
        ("KEYWARD_TIMEOUT_MS", "2000".to_string()),
    ];
    let function = Function::start(&emulator.runtime_api("http"), &dir, "http", &env);
    let invoke = |event: &Value| {
        function.invoke(&emulator, event).unwrap_or_else(|e| panic!("{e}; log: {}", function.log_text()))
    };

    // Every shape: the request as the component got it.
    let shapes = [
        ("apigw_proxy_request.json", "GET"),
        ("apigw_multi_value_proxy_request.json", "POST"),
        ("apigw_v2_proxy_request.json", "POST"),
        ("apigw_v2_proxy_request_minimal.json", "GET"),
        ("lambda_function_url_request.json", "GET"),
        ("alb_request.json", "GET"),
        ("alb_multi_value_request.json", "GET"),
    ];
    for (fixture, method) in shapes {
        let answer = invoke(&event(fixture, "/echo"));
        assert_eq!(answer["statusCode"], 200, "{fixture}: {answer}");
        let echo = body_json(&answer);
        assert_eq!(echo["method"], method, "{fixture}: {echo}");
        assert!(echo["path_with_query"].as_str().unwrap().starts_with("/echo"), "{fixture}: {echo}");
        let headers = echo["headers"].as_array().unwrap();
        let has = |name: &str| headers.iter().any(|h| h[0] == name);
        assert!(has("x-amzn-request-id") && has("x-amzn-request-context"), "{fixture}: {echo}");
    }
    // The query and the cookies of a Function URL event, as its client sent them.
    let echo = body_json(&invoke(&event("lambda_function_url_request.json", "/echo")));
    let captured = event("lambda_function_url_request.json", "/echo");
    assert_eq!(echo["path_with_query"], format!("/echo?{}", captured["rawQueryString"].as_str().unwrap()));
    let cookie = echo["headers"].as_array().unwrap().iter().find(|h| h[0] == "cookie").unwrap()[1].clone();
    assert_eq!(
        cookie,
        captured["cookies"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect::<Vec<_>>().join("; ")
    );

    // A binary body both ways, Set-Cookie twice and a repeated header, in each shape's answer.
    let png: Vec<u8> = (0..=255u8).collect();
    let reflect = |fixture: &str| {
        let mut event = event(fixture, "/reflect");
        event["body"] = json!(base64::engine::general_purpose::STANDARD.encode(&png));
        event["isBase64Encoded"] = json!(true);
        // The captured content type, in any case, replaced in both maps.
        for map in ["headers", "multiValueHeaders"] {
            if let Some(map) = event[map].as_object_mut() {
                map.retain(|name, _| !["content-type", "content-length"].iter().any(|h| name.eq_ignore_ascii_case(h)));
            }
        }
        match event["multiValueHeaders"].as_object_mut() {
            Some(multi) => multi.insert("content-type".into(), json!(["image/png"])),
            None => event["headers"].as_object_mut().unwrap().insert("content-type".into(), json!("image/png")),
        };
        invoke(&event)
    };
    let v2 = reflect("apigw_v2_proxy_request_minimal.json");
    assert_eq!((v2["statusCode"].clone(), v2["isBase64Encoded"].clone()), (json!(201), json!(true)), "{v2}");
    assert_eq!(body(&v2), png);
    assert_eq!(v2["cookies"], json!(["a=1; Path=/", "b=2; HttpOnly"]), "{v2}");
    assert_eq!(v2["headers"]["x-twice"], "one, two", "{v2}");
    let rest = reflect("apigw_proxy_request.json");
    assert_eq!(body(&rest), png);
    assert_eq!(rest["multiValueHeaders"]["set-cookie"], json!(["a=1; Path=/", "b=2; HttpOnly"]), "{rest}");
    assert_eq!(rest["multiValueHeaders"]["x-twice"], json!(["one", "two"]), "{rest}");
    let alb = reflect("alb_request.json");
    assert_eq!(alb["statusDescription"], "201 Created", "{alb}");
    assert_eq!(alb["headers"]["set-cookie"], "b=2; HttpOnly", "one value per header: the last Set-Cookie");
    let alb_multi = reflect("alb_multi_value_request.json");
    assert_eq!(alb_multi["multiValueHeaders"]["set-cookie"], json!(["a=1; Path=/", "b=2; HttpOnly"]), "{alb_multi}");

    // The secret, through the host's kms and its stamped context.
    let mut secret = event("apigw_v2_proxy_request_minimal.json", "/secret");
    secret["rawQueryString"] = json!("PASSWORD");
    assert_eq!(body_json(&invoke(&secret))["sha256_prefix"], fingerprint(SECRET));

    // Handlers that never answer, answer and trap, stream past the limit, or run out of time: a 500 each, of one
    // line naming the error type, the error and its type in the log; the function goes on serving.
    let failures = [
        ("/silent", "GuestError", "returned without setting its response-outparam"),
        ("/unfinished", "GuestError", "without finishing its response body"),
        ("/trap-after", "GuestTrap", "unreachable"),
        ("/error-code", "GuestError", "set its response-outparam to the error"),
        ("/huge", "GuestLimitExceeded", "1000000"),
        ("/spin", "GuestTimeout", "2000 ms"),
    ];
    for (path, error_type, logged) in failures {
        let mut event = event("apigw_v2_proxy_request_minimal.json", path);
        event["rawQueryString"] = json!("2000000");
        let answer = invoke(&event);
        assert_eq!(answer["statusCode"], 500, "{path}: {answer}");
        let text = String::from_utf8(body(&answer)).unwrap();
        assert!(
            text.starts_with(&format!("Internal Server Error: the function failed ({error_type}); request id ")),
            "{path}: {text}"
        );
        assert_eq!(text.lines().count(), 1, "{path}: {text}");
        let log = function.log_when(|log| log.lines().any(|l| l.contains("invocation failed") && l.contains(logged)));
        let line = log.lines().find(|l| l.contains("invocation failed") && l.contains(logged)).unwrap();
        assert!(line.contains(&format!("error_type=\"{error_type}\"")), "{path}: {line}");
    }
    assert_eq!(invoke(&event("alb_request.json", "/echo"))["statusCode"], 200, "the host stays up");

    // An event that is no HTTP request is a function error, naming what it looked for.
    let error = function.invoke(&emulator, &json!({"action": "hello"})).unwrap_err();
    assert_eq!(error["errorType"], "InvalidEvent", "{error}");
    assert!(error["errorMessage"].as_str().unwrap().contains("requestContext.http.method"), "{error}");

    let log = function.settled_log();
    assert!(log.contains("world=\"wasi:http/incoming-handler@0.2\""), "{log}");
    assert!(!log.contains(std::str::from_utf8(SECRET).unwrap()), "the log holds the secret: {log}");
}

/// `keyward serve`: a real HTTP client's requests answered by the component, with its secrets and the same
/// failures' 500s; Ctrl-C stops it cleanly.
#[test]
fn keyward_serve_answers_a_real_client_and_stops_on_ctrl_c() {
    let (dir, key) = dir_with_key("http-serve");
    let ciphertext = stdout(&keyward(&["encrypt", "--key", &key, "--plaintext", "served-s3cret"])).trim().to_string();
    let probe = guest("http_probe").display().to_string();
    let password = format!("PASSWORD={ciphertext}");
    let mut server = keyward_cmd(&["serve", &probe, "--key", &key, "--env", &password, "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(dir.path("serve.log")).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(server.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let address =
        line.split("http://").nth(1).and_then(|rest| rest.split('/').next()).unwrap_or_else(|| panic!("{line}"));
    let port: u16 = address.rsplit(':').next().unwrap().parse().unwrap();
    let get = |path: &str| http(port, "GET", path, &[], b"", Duration::from_secs(10)).unwrap();

    let (status, _, body) = get("/secret?PASSWORD");
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["sha256_prefix"], fingerprint(b"served-s3cret"));
    let (status, _, body) =
        http(port, "POST", "/echo?a=1", &[("X-Thing", "yes")], b"payload", Duration::from_secs(10)).unwrap();
    assert_eq!(status, 200);
    let echo: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((echo["method"].clone(), echo["path_with_query"].clone()), (json!("POST"), json!("/echo?a=1")));
    assert_eq!(echo["authority"], format!("127.0.0.1:{port}"));
    assert_eq!(echo["body_base64"], b64(b"payload"));
    let (status, head, body) = get("/reflect");
    assert_eq!(status, 201);
    assert_eq!(head.to_ascii_lowercase().matches("set-cookie:").count(), 2, "{head}");
    assert!(body.is_empty());
    let (status, _, body) = get("/silent");
    assert_eq!(status, 500);
    assert!(String::from_utf8_lossy(&body).starts_with("Internal Server Error: the function failed (GuestError)"));

    // Ctrl-C: the server stops, exit code 0.
    let pid = server.id().to_string();
    assert!(std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let status = server.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", std::fs::read_to_string(dir.path("serve.log")).unwrap());
    let log = std::fs::read_to_string(dir.path("serve.log")).unwrap();
    let failed = "GET /silent: guest returned an error: its wasi:http handler returned without setting its \
                  response-outparam (GuestError)";
    assert!(log.contains(failed), "{log}");
    assert!(!log.contains("served-s3cret"), "{log}");
}
