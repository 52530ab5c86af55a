//! The real `keyward` binary as a Lambda `bootstrap`, driven by cargo-lambda's Runtime API emulator, decrypting
//! with moto's KMS API.

use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Child;
use std::time::Duration;

use serde_json::json;

use crate::servers::*;
use crate::support::*;

/// One function: a `keyward` process polling a Runtime API as `name`, its stdout and stderr kept in a file.
pub struct Function {
    pub child: Child,
    pub name: String,
    log: std::path::PathBuf,
}

impl Function {
    pub fn start(runtime_api: &str, dir: &TempDir, name: &str, env: &[(&str, String)]) -> Self {
        Self::start_program(Path::new(env!("CARGO_BIN_EXE_keyward")), runtime_api, dir, name, env)
    }

    pub fn start_program(program: &Path, runtime_api: &str, dir: &TempDir, name: &str, env: &[(&str, String)]) -> Self {
        let log = dir.0.join(format!("{name}.log"));
        let mut cmd = bootstrap_command(program, runtime_api, name);
        cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .process_group(0);
        Self { child: cmd.spawn().unwrap(), name: name.to_string(), log }
    }

    /// Invokes through the emulator; `Ok(response)` or `Err(error JSON)` for a function error.
    pub fn invoke(&self, emulator: &Server, event: &serde_json::Value) -> Result<serde_json::Value, serde_json::Value> {
        let path = format!("/2015-03-31/functions/{}/invocations", self.name);
        let (status, head, body) = http(
            emulator.port,
            "POST",
            &path,
            &[("Content-Type", "application/json")],
            event.to_string().as_bytes(),
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("invoking {}: {e}; log: {}", self.name, self.log_text()));
        let body: serde_json::Value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| panic!("non-JSON from {}: {status} {}", self.name, String::from_utf8_lossy(&body)));
        let is_error = status >= 400 || head.to_ascii_lowercase().contains("x-amz-function-error");
        if is_error { Err(body) } else { Ok(body) }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log once `ready` holds for it, waiting up to 30 s: an invocation's lines are written just after its
    /// outcome is accepted, so a test that has the outcome may not have them yet.
    pub fn log_when(&self, ready: impl Fn(&str) -> bool) -> String {
        let until = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.log_text();
            if ready(&log) {
                return log;
            }
            assert!(std::time::Instant::now() < until, "{}: the log never got there: {log}", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The log once it has stopped growing for 200 ms (within 10 s): everything the invocations so far wrote, for
    /// checking what is not in it.
    pub fn settled_log(&self) -> String {
        let until = std::time::Instant::now() + Duration::from_secs(10);
        let mut log = self.log_text();
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let now = self.log_text();
            if now == log || std::time::Instant::now() >= until {
                return now;
            }
            log = now;
        }
    }

    /// Whether the process is still running.
    pub fn is_alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Function {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hello_fingerprint(response: &serde_json::Value) -> String {
    let body: serde_json::Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    body["secret_sha256_prefix"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_runs_as_a_lambda_with_aws_kms() {
    const SECRET: &[u8] = b"lambda-s3cret-value";
    let dir = TempDir::new("lambda");
    let mut moto = start_moto();
    let kms = aws_sdk_kms::Client::new(&moto_sdk_config(&moto));
    let key = create_key(&kms).await;
    let other_key = create_key(&kms).await;
    let stamped = [("function", "hello")];
    let good = b64(&encrypt(&kms, &key, SECRET, &stamped).await);
    let wrong_context = b64(&encrypt(&kms, &key, SECRET, &[("function", "billing")]).await);
    let wrong_key = b64(&encrypt(&kms, &other_key, SECRET, &stamped).await);

    let names = ["hello", "hello-nocache", "wrong-context", "wrong-key", "probe"];
    let emulator = start_emulator(&dir.0, &names);
    let hello = guest("hello").display().to_string();
    let env = |password: &str, ttl: &str| {
        vec![
            ("KEYWARD_COMPONENT", hello.clone()),
            ("KEYWARD_GUEST_ENV", "PASSWORD".to_string()),
            ("PASSWORD", password.to_string()),
            ("KEYWARD_KMS_KEY_ID", key.clone()),
            ("KEYWARD_KMS_ENDPOINT", moto.url()),
            ("KEYWARD_KMS_CONTEXT", "function=hello".to_string()),
            ("KEYWARD_CACHE_TTL_SECS", ttl.to_string()),
        ]
    };

    // 100 invocations, one Decrypt: the cache serves the other 99.
    recorder_start(&moto);
    let function = Function::start(&emulator.runtime_api("hello"), &dir, "hello", &env(&good, "300"));
    for i in 0..100 {
        let response = function
            .invoke(&emulator, &json!({"rawPath": "/", "n": i}))
            .unwrap_or_else(|e| panic!("invocation {i} failed: {e}; log: {}", function.log_text()));
        assert_eq!(response["statusCode"], 200);
        assert_eq!(hello_fingerprint(&response), fingerprint(SECRET));
    }
    assert_eq!(recorder_decrypts(&moto), 1, "100 invocations made exactly one Decrypt");

    // Wrong context and wrong key: function errors, and no plaintext anywhere.
    let wrong = [("wrong-context", &wrong_context, "kms invalid-ciphertext"), ("wrong-key", &wrong_key, "kms denied")];
    let mut failed = Vec::new();
    for (name, password, expected) in wrong {
        let function = Function::start(&emulator.runtime_api(name), &dir, name, &env(password, "300"));
        let error = function.invoke(&emulator, &json!({})).unwrap_err();
        assert_eq!(error["errorType"], "GuestError", "{name}: {error}");
        assert!(error["errorMessage"].as_str().unwrap().contains(expected), "{name}: {error}");
        failed.push(function);
    }

    // KMS goes away: the cached secret is still served; without a cache the error says `unavailable`.
    let nocache = Function::start(&emulator.runtime_api("hello-nocache"), &dir, "hello-nocache", &env(&good, "0"));
    assert_eq!(hello_fingerprint(&nocache.invoke(&emulator, &json!({})).unwrap()), fingerprint(SECRET));
    moto.stop();
    let cached = function.invoke(&emulator, &json!({})).expect("served from the cache while KMS is down");
    assert_eq!(hello_fingerprint(&cached), fingerprint(SECRET));
    let error = nocache.invoke(&emulator, &json!({})).unwrap_err();
    assert!(error["errorMessage"].as_str().unwrap().contains("kms unavailable"), "{error}");

    // A guest trap fails one invocation; the next succeeds.
    let probe_env = vec![
        ("KEYWARD_COMPONENT", guest("probe").display().to_string()),
        ("KEYWARD_KMS_KEY_ID", key.clone()),
        ("KEYWARD_KMS_ENDPOINT", moto.url()),
    ];
    let probe = Function::start(&emulator.runtime_api("probe"), &dir, "probe", &probe_env);
    let trap = probe.invoke(&emulator, &json!({"action": "trap"})).unwrap_err();
    assert_eq!(trap["errorType"], "GuestTrap", "{trap}");
    let next = probe.invoke(&emulator, &json!({"action": "context"})).unwrap();
    assert!(next["request_id"].as_str().is_some_and(|id| !id.is_empty()), "{next}");
    assert!(next["function_arn"].as_str().is_some_and(|arn| !arn.is_empty()), "{next}");
    // The function's credentials and the rest of its environment stay with the host.
    let seen = probe.invoke(&emulator, &json!({"action": "env"})).unwrap();
    assert_eq!(seen["env"], json!({}), "{seen}");

    // Nothing any function logged holds the plaintext.
    for f in [&function, &nocache, &probe].into_iter().chain(failed.iter()) {
        let log = f.settled_log();
        assert!(!log.contains(std::str::from_utf8(SECRET).unwrap()), "{} logged the secret: {log}", f.name);
    }
    function.log_when(|log| log.contains("kms decrypt"));
}

#[test]
fn a_misconfigured_function_fails_init_with_one_clear_line() {
    let dir = TempDir::new("lambda-init");
    let emulator = start_emulator(&dir.0, &["misconfigured", "sealed"]);
    let env = [("KEYWARD_COMPONENT", guest("hello").display().to_string())];
    let mut function = Function::start(&emulator.runtime_api("misconfigured"), &dir, "misconfigured", &env);
    let status = function.child.wait().unwrap();
    assert!(!status.success());
    let log = function.log_text();
    assert!(log.contains("KEYWARD_KMS_KEY_ID: not set: name the KMS key"), "{log}");

    // An operator who denies guests plaintext: hello decrypts, so it does not start.
    let env = [
        ("KEYWARD_COMPONENT", guest("hello").display().to_string()),
        ("KEYWARD_KMS_KEY_ID", "alias/k".to_string()),
        ("KEYWARD_KMS_ENDPOINT", "http://127.0.0.1:9".to_string()),
        ("KEYWARD_GUEST_PLAINTEXT", "deny".to_string()),
    ];
    let mut function = Function::start(&emulator.runtime_api("sealed"), &dir, "sealed", &env);
    assert!(!function.child.wait().unwrap().success());
    let log = function.log_text();
    assert!(
        log.contains("component imports `keyward:lambda/kms@0.1.0`, and this host denies guests plaintext"),
        "{log}"
    );
}

/// The bootstrap takes no arguments: a person who runs it with some is told where the command line is.
#[test]
fn the_bootstrap_refuses_arguments() {
    let out = std::process::Command::new(lambda_bootstrap()).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("takes no arguments") && err.lines().count() == 1, "{err}");
}

/// The bootstrap a package ships has no compiler: given a `.wasm`, init fails saying what to ship instead.
#[test]
fn the_runtime_only_bootstrap_asks_for_a_precompiled_component() {
    let dir = TempDir::new("lambda-wasm");
    let emulator = start_emulator(&dir.0, &["uncompiled"]);
    let env = [
        ("KEYWARD_COMPONENT", guest("hello").display().to_string()),
        ("KEYWARD_KMS_KEY_ID", "alias/k".to_string()),
        ("KEYWARD_KMS_ENDPOINT", "http://127.0.0.1:9".to_string()),
    ];
    let mut function =
        Function::start_program(&lambda_bootstrap(), &emulator.runtime_api("uncompiled"), &dir, "uncompiled", &env);
    let status = function.child.wait().unwrap();
    assert_eq!(status.code(), Some(2));
    let log = function.log_text();
    assert!(
        log.contains(
            "this bootstrap runs only precompiled components (.cwasm), and this is a .wasm: package the \
             function with `keyward package`"
        ),
        "{log}"
    );
}

/// The deployment zip, unpacked as Lambda would into a task root, runs: `bootstrap` finds `handler.cwasm` there.
/// Its secret is bound to the build of the guest (`component={component}`): the package of another build fails
/// closed, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_packaged_function_runs_from_its_task_root() {
    let dir = TempDir::new("lambda-package");
    let package = |component: &str, name: &str| {
        let zip_path = dir.path(&format!("{name}.zip"));
        let out = keyward(&["package", "--component", component, "-o", &zip_path]);
        assert!(out.status.success(), "{}", stderr(&out));
        let task_root = dir.0.join(name);
        zip::ZipArchive::new(std::fs::File::open(&zip_path).unwrap()).unwrap().extract(&task_root).unwrap();
        task_root
    };
    let task_root = package(guest("hello").to_str().unwrap(), "task");
    let digest = stdout(&keyward(&["digest", guest("hello").to_str().unwrap()])).trim().to_string();
    assert_eq!(digest, keyward::ComponentDigest::of_file(&guest("hello")).unwrap().to_string());
    // What the package carries is the .wasm's digest.
    assert_eq!(stdout(&keyward(&["digest", task_root.join("handler.cwasm").to_str().unwrap()])).trim(), digest);

    let moto = start_moto();
    let kms = aws_sdk_kms::Client::new(&moto_sdk_config(&moto));
    let key = create_key(&kms).await;
    let bound = [("function", "packaged"), ("component", digest.as_str())];
    let password = b64(&encrypt(&kms, &key, b"packaged-s3cret", &bound).await);
    let emulator = start_emulator(&dir.0, &["packaged", "rebuilt"]);
    let config = |task_root: &std::path::Path, prefetch: &str| {
        [
            ("LAMBDA_TASK_ROOT", task_root.display().to_string()),
            ("KEYWARD_GUEST_ENV", "PASSWORD".to_string()),
            ("PASSWORD", password.clone()),
            ("KEYWARD_PREFETCH", prefetch.to_string()),
            ("KEYWARD_KMS_KEY_ID", key.clone()),
            ("KEYWARD_KMS_ENDPOINT", moto.url()),
            ("KEYWARD_KMS_CONTEXT", "function=packaged,component={component}".to_string()),
        ]
    };
    let env = config(&task_root, "PASSWORD");
    let function = Function::start_program(
        &task_root.join("bootstrap"),
        &emulator.runtime_api("packaged"),
        &dir,
        "packaged",
        &env,
    );
    let response =
        function.invoke(&emulator, &json!({})).unwrap_or_else(|e| panic!("{e}; log: {}", function.log_text()));
    assert_eq!(hello_fingerprint(&response), fingerprint(b"packaged-s3cret"));
    let log = function.log_when(|log| log.matches("kms decrypt").count() >= 2);
    let ready =
        |l: &str| l.contains("keyward ready") && l.contains("handler.cwasm") && l.contains("keyward:lambda/handler@");
    assert!(log.lines().any(ready), "{log}");
    let audit: Vec<&str> = log.lines().filter(|l| l.contains("kms decrypt")).collect();
    assert_eq!(audit.len(), 2, "one prefetch (miss), one invocation (hit): {log}");
    assert!(audit[0].contains("cache=\"miss\"") && audit[1].contains("cache=\"hit\""), "{log}");

    // Another build of the guest (the same code, one custom section more) with the same configuration, less the
    // prefetch (which would fail init, saying the same): the secret does not open, and the error says why.
    let rebuilt = dir.path("rebuilt.wasm");
    std::fs::write(&rebuilt, [std::fs::read(guest("hello")).unwrap(), custom_section("note", b"rebuilt")].concat())
        .unwrap();
    let rebuilt_root = package(rebuilt.as_str(), "rebuilt");
    let other = Function::start_program(
        &rebuilt_root.join("bootstrap"),
        &emulator.runtime_api("rebuilt"),
        &dir,
        "rebuilt",
        &config(&rebuilt_root, ""),
    );
    let error = other.invoke(&emulator, &json!({})).unwrap_err();
    let message = error["errorMessage"].as_str().unwrap();
    assert!(message.starts_with("guest returned an error: kms invalid-ciphertext: "), "{error}");
    assert!(message.contains("the ciphertext was made for another build"), "{error}");
    assert!(!other.log_text().contains("packaged-s3cret"));
}

/// KMS over HTTPS: the function trusts the authorities of `AWS_CA_BUNDLE` (a private CA, an inspecting proxy),
/// and, without it, only its built-in roots: a certificate no public authority issued fails the call, not init.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_over_https_trusts_the_ca_bundle_and_otherwise_the_built_in_roots() {
    let dir = TempDir::new("lambda-tls");
    let (moto, ca) = start_moto_tls(&dir.0);
    let endpoint = format!("https://127.0.0.1:{}", moto.port);
    let sdk = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(&endpoint)
        .credentials_provider(aws_sdk_kms::config::SharedCredentialsProvider::new(
            aws_sdk_kms::config::Credentials::new("testing", "testing", None, None, "tests"),
        ))
        .http_client(keyward::aws::https_client_trusting(Some(&ca)).unwrap())
        .build();
    let kms = aws_sdk_kms::Client::new(&sdk);
    let key = create_key(&kms).await;
    let password = b64(&encrypt(&kms, &key, b"tls-s3cret", &[("function", "tls")]).await);
    let names = ["trusting", "untrusting", "badbundle"];
    let emulator = start_emulator(&dir.0, &names);
    let env = |bundle: Option<String>| {
        let mut env = vec![
            ("KEYWARD_COMPONENT", guest("hello").display().to_string()),
            ("KEYWARD_GUEST_ENV", "PASSWORD".to_string()),
            ("PASSWORD", password.clone()),
            ("KEYWARD_KMS_KEY_ID", key.clone()),
            ("KEYWARD_KMS_ENDPOINT", endpoint.clone()),
            ("KEYWARD_KMS_CONTEXT", "function=tls".to_string()),
        ];
        env.extend(bundle.map(|path| ("AWS_CA_BUNDLE", path)));
        env
    };

    let trusting =
        Function::start(&emulator.runtime_api("trusting"), &dir, "trusting", &env(Some(ca.display().to_string())));
    let response = trusting.invoke(&emulator, &json!({})).unwrap_or_else(|e| panic!("{e}; {}", trusting.log_text()));
    assert_eq!(hello_fingerprint(&response), fingerprint(b"tls-s3cret"));

    let untrusting = Function::start(&emulator.runtime_api("untrusting"), &dir, "untrusting", &env(None));
    let error = untrusting.invoke(&emulator, &json!({})).unwrap_err();
    let message = error["errorMessage"].as_str().unwrap();
    assert!(message.contains("kms unavailable") && message.contains("certificate"), "{message}");

    let not_pem = dir.path("not.pem");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    let mut bad = Function::start(&emulator.runtime_api("badbundle"), &dir, "badbundle", &env(Some(not_pem.clone())));
    assert!(!bad.child.wait().unwrap().success());
    let log = bad.log_text();
    assert!(log.contains(&format!("AWS_CA_BUNDLE: {not_pem}: it holds no certificate")), "{log}");
}

/// Where Lambda serves the role's credentials from a container endpoint (SnapStart does, with no credentials in the
/// environment), the host asks it, with its authorization token, and signs KMS calls with what it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_from_the_container_endpoint_are_used() {
    use std::io::{Read as _, Write as _};
    let dir = TempDir::new("lambda-container-credentials");
    let moto = start_moto();
    let kms = aws_sdk_kms::Client::new(&moto_sdk_config(&moto));
    let key = create_key(&kms).await;
    let password = b64(&encrypt(&kms, &key, b"snapstart-s3cret", &[]).await);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = asked.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut request = [0u8; 4096];
            let n = stream.read(&mut request).unwrap_or(0);
            seen.lock().unwrap().push(String::from_utf8_lossy(&request[..n]).into_owned());
            let body = json!({
                "AccessKeyId": "ASIACONTAINER", "SecretAccessKey": "container-secret", "Token": "container-token",
                "Expiration": "2099-01-01T00:00:00Z"
            })
            .to_string();
            let head =
                format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", body.len());
            let _ = stream.write_all(format!("{head}{body}").as_bytes());
        }
    });
    let emulator = start_emulator(&dir.0, &["snapstart"]);
    let env = vec![
        ("KEYWARD_COMPONENT", guest("hello").display().to_string()),
        ("KEYWARD_GUEST_ENV", "PASSWORD".to_string()),
        ("PASSWORD", password),
        ("KEYWARD_KMS_KEY_ID", key),
        ("AWS_ENDPOINT_URL_KMS", moto.url()),
        // No credentials in the environment (blank is unset, as the SDK reads it).
        ("AWS_ACCESS_KEY_ID", String::new()),
        ("AWS_SECRET_ACCESS_KEY", String::new()),
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", format!("http://127.0.0.1:{port}/2016-11-01/credential-provider/")),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "container-auth-token".to_string()),
    ];
    let function = Function::start(&emulator.runtime_api("snapstart"), &dir, "snapstart", &env);
    let response = function.invoke(&emulator, &json!({})).unwrap_or_else(|e| panic!("{e}: {}", function.log_text()));
    assert_eq!(hello_fingerprint(&response), fingerprint(b"snapstart-s3cret"));
    let asked = asked.lock().unwrap();
    assert!(!asked.is_empty(), "the credentials endpoint was not asked");
    assert!(asked[0].starts_with("GET /2016-11-01/credential-provider/ "), "{}", asked[0]);
    assert!(asked[0].to_ascii_lowercase().contains("authorization: container-auth-token"), "{}", asked[0]);
}
