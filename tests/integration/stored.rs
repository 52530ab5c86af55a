//! Secrets kept by a service (`KEYWARD_SOURCE_<NAME>`): Secrets Manager and SSM Parameter Store, on moto's server,
//! reached by the real AWS SDK clients. The guest asks by name (`kms.secret`, `keys.open-env`, injection into its
//! requests) and never learns where a secret lives.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_secretsmanager::primitives::Blob;
use keyward::aws::AwsSecretStore;
use keyward::secrets::{CacheSettings, CacheUse, SecretSource};
use keyward::{Backends, Host, HostSettings, SecretsSettings};
use serde_json::{Value, json};

use crate::origin::Origin;
use crate::servers::*;
use crate::support::*;

const DB_PASSWORD: &str = "s3cret-db-password";
const TOKEN: &str = "s3cret-ssm-token-value";

fn sources(pairs: &[(&str, &str)]) -> Vec<(String, SecretSource)> {
    pairs.iter().map(|(name, source)| (name.to_string(), source.parse().unwrap())).collect()
}

/// A host over the probe guest with `sources`, fetching them from moto; a cache of `ttl` when not zero.
fn stored_host(moto: &Server, sources: Vec<(String, SecretSource)>, ttl: Duration, http: HttpSettingsOf) -> Host {
    let secrets = SecretsSettings {
        sources,
        cache: CacheSettings { ttl, ..CacheSettings::default() },
        ..SecretsSettings::default()
    };
    let store = Arc::new(AwsSecretStore::from_sdk_config(&moto_sdk_config(moto)));
    let backends = Backends::from(new_key()).with_store(store);
    let settings = HostSettings { secrets, http: http.unwrap_or_default(), ..HostSettings::default() };
    Host::from_file(&guest("probe"), backends, settings).unwrap()
}

type HttpSettingsOf = Option<keyward::capability::http::HttpSettings>;

/// The probe's answer for each name: the SHA-256 prefix of its value, or the host's error.
async fn secrets(host: &Host, names: &[&str]) -> (Vec<Value>, keyward::Invocation) {
    let invocation = invoke(host, json!({ "action": "secret", "names": names })).await;
    (response(&invocation)["secrets"].as_array().unwrap().clone(), invocation)
}

fn prefix(answer: &Value) -> &str {
    answer["sha256_prefix"].as_str().unwrap_or_else(|| panic!("expected a secret, got {answer}"))
}

fn error(answer: &Value) -> &str {
    answer["error"].as_str().unwrap_or_else(|| panic!("expected an error, got {answer}"))
}

async fn put_parameter(ssm: &aws_sdk_ssm::Client, name: &str, value: &str, secure: bool) -> i64 {
    use aws_sdk_ssm::types::ParameterType;
    let kind = if secure { ParameterType::SecureString } else { ParameterType::String };
    let put = ssm.put_parameter().name(name).value(value).r#type(kind).overwrite(true).send().await.unwrap();
    put.version()
}

#[tokio::test]
async fn every_source_form_is_served_by_name() {
    let moto = start_moto();
    let config = moto_sdk_config(&moto);
    let (sm, ssm) = (aws_sdk_secretsmanager::Client::new(&config), aws_sdk_ssm::Client::new(&config));
    let db = json!({ "username": "app", "password": DB_PASSWORD, "port": 5432 }).to_string();
    let created = sm.create_secret().name("prod/db").secret_string(&db).send().await.unwrap();
    let db_arn = created.arn().unwrap().to_string();
    let first = sm.create_secret().name("plain").secret_string("first-value").send().await.unwrap();
    let first_version = first.version_id().unwrap().to_string();
    sm.put_secret_value().secret_id("plain").secret_string("second-value").send().await.unwrap();
    sm.create_secret().name("binary").secret_binary(Blob::new(vec![0u8, 159, 146, 150])).send().await.unwrap();
    put_parameter(&ssm, "/app/token", TOKEN, true).await;
    put_parameter(&ssm, "/app/url", "https://v1.example", false).await;
    put_parameter(&ssm, "/app/url", "https://v2.example", false).await;
    ssm.label_parameter_version().name("/app/url").parameter_version(1).labels("old").send().await.unwrap();

    let host = stored_host(
        &moto,
        sources(&[
            ("DB_PASSWORD", "secretsmanager:prod/db#password"),
            ("DB_PORT", "secretsmanager:prod/db#port"),
            ("DB_BY_ARN", &format!("secretsmanager:{db_arn}#username")),
            ("PLAIN", "secretsmanager:plain"),
            ("PLAIN_PREVIOUS", "secretsmanager:plain@AWSPREVIOUS"),
            ("PLAIN_FIRST", &format!("secretsmanager:plain@{first_version}")),
            ("BINARY", "secretsmanager:binary"),
            ("TOKEN", "ssm:/app/token"),
            ("URL", "ssm:/app/url"),
            ("URL_V1", "ssm:/app/url:1"),
            ("URL_OLD", "ssm:/app/url:old"),
            ("MISSING", "secretsmanager:no/such/secret"),
            ("NO_KEY", "secretsmanager:prod/db#pass"),
            ("NOT_JSON", "secretsmanager:plain#password"),
            ("NO_PARAMETER", "ssm:/app/none"),
        ]),
        Duration::ZERO,
        None,
    );
    let names = [
        "DB_PASSWORD",
        "DB_PORT",
        "DB_BY_ARN",
        "PLAIN",
        "PLAIN_PREVIOUS",
        "PLAIN_FIRST",
        "BINARY",
        "TOKEN",
        "URL",
        "URL_V1",
        "URL_OLD",
    ];
    let (answers, invocation) = secrets(&host, &names).await;
    let expected: [&[u8]; 11] = [
        DB_PASSWORD.as_bytes(),
        b"5432",
        b"app",
        b"second-value",
        b"first-value",
        b"first-value",
        &[0, 159, 146, 150],
        TOKEN.as_bytes(),
        b"https://v2.example",
        b"https://v1.example",
        b"https://v1.example",
    ];
    for ((name, answer), value) in names.iter().zip(&answers).zip(expected) {
        assert_eq!(prefix(answer), fingerprint(value), "{name}: {answer}");
    }
    let record = &invocation.decrypts[0];
    assert_eq!(record.secret.as_deref(), Some("DB_PASSWORD"));
    assert_eq!(record.source.as_deref(), Some("secretsmanager:prod/db#password"));
    assert!(record.version_id.as_ref().is_some_and(|v| v.len() == 36), "{record:?}");
    assert_eq!(invocation.decrypts[9].version_id.as_deref(), Some("1"), "SSM's version");
    assert_eq!(invocation.decrypts[8].version_id.as_deref(), Some("2"));

    let (answers, _) = secrets(&host, &["MISSING", "NO_KEY", "NOT_JSON", "NO_PARAMETER", "UNKNOWN"]).await;
    let errors: Vec<&str> = answers.iter().map(error).collect();
    assert!(errors[0].starts_with("kms denied: secret no/such/secret was not found"), "{}", errors[0]);
    assert_eq!(errors[1], r#"kms invalid-ciphertext: NO_KEY's JSON value has no key "pass" (it has 3 other keys)"#);
    assert!(errors[2].contains("not a JSON object, so it has no key \"password\""), "{}", errors[2]);
    assert!(errors[3].starts_with("kms denied: SSM parameter /app/none was not found"), "{}", errors[3]);
    assert!(errors[4].contains("\"UNKNOWN\" is not one of the guest's secrets"), "{}", errors[4]);
    for error in &errors {
        assert!(!error.contains(DB_PASSWORD) && !error.contains("second-value"), "{error}");
    }

    // A key handle opens a stored secret by name too, and its HMAC is of the value.
    let invocation =
        invoke(&host, json!({ "action": "key", "env": "DB_PASSWORD", "ops": [{ "op": "hmac", "message": "m" }] }))
            .await;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, DB_PASSWORD.as_bytes());
    let expected = b64(ring::hmac::sign(&key, b"m").as_ref());
    assert_eq!(response(&invocation)["outputs"][0]["ok"], expected, "{:?}", invocation.result);
}

/// Rotation is picked up when the TTL ends; a deleted secret is refused and no longer served from the cache; in
/// an outage the last value is served past its TTL.
#[tokio::test]
async fn rotation_deletion_and_outage() {
    let mut moto = start_moto();
    let config = moto_sdk_config(&moto);
    let sm = aws_sdk_secretsmanager::Client::new(&config);
    sm.create_secret().name("rotating").secret_string("value-one").send().await.unwrap();
    sm.create_secret().name("doomed").secret_string("value-doomed").send().await.unwrap();
    let ttl = Duration::from_millis(500);
    let host = stored_host(
        &moto,
        sources(&[("ROTATING", "secretsmanager:rotating"), ("DOOMED", "secretsmanager:doomed")]),
        ttl,
        None,
    );
    let (answers, first) = secrets(&host, &["ROTATING", "DOOMED"]).await;
    assert_eq!(prefix(&answers[0]), fingerprint(b"value-one"));
    let (answers, cached) = secrets(&host, &["ROTATING"]).await;
    assert_eq!((prefix(&answers[0]), cached.decrypts[0].cache), (fingerprint(b"value-one").as_str(), CacheUse::Hit));

    sm.put_secret_value().secret_id("rotating").secret_string("value-two").send().await.unwrap();
    sm.delete_secret().secret_id("doomed").force_delete_without_recovery(true).send().await.unwrap();
    let (answers, _) = secrets(&host, &["ROTATING"]).await;
    assert_eq!(prefix(&answers[0]), fingerprint(b"value-one"), "within the TTL, the cached value");
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    let (answers, rotated) = secrets(&host, &["ROTATING", "DOOMED", "DOOMED"]).await;
    assert_eq!(prefix(&answers[0]), fingerprint(b"value-two"), "the new version once the TTL ends");
    assert_ne!(rotated.decrypts[0].version_id, first.decrypts[0].version_id);
    assert!(error(&answers[1]).starts_with("kms denied: secret doomed was not found"), "{}", answers[1]);
    assert!(error(&answers[2]).starts_with("kms denied"), "the refusal dropped the cached value: {}", answers[2]);
    assert_eq!(rotated.decrypts[2].cache, CacheUse::Miss, "asked again, not served stale");

    // Secrets Manager goes away: the last value is served past its TTL, and said to be stale.
    moto.stop();
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    let (answers, outage) = secrets(&host, &["ROTATING"]).await;
    assert_eq!(prefix(&answers[0]), fingerprint(b"value-two"));
    assert_eq!(outage.decrypts[0].cache, CacheUse::Stale);
    let why = outage.decrypts[0].stale_because.as_ref().unwrap().to_string();
    assert!(why.starts_with("unavailable:") && why.contains("Secrets Manager"), "{why}");
}

/// Eleven parameters at init: two GetParameters calls, then every read is a cache hit.
#[tokio::test]
async fn prefetch_batches_parameters_ten_to_a_call() {
    let moto = start_moto();
    let ssm = aws_sdk_ssm::Client::new(&moto_sdk_config(&moto));
    let names: Vec<String> = (0..11).map(|i| format!("P{i}")).collect();
    for i in 0..11 {
        put_parameter(&ssm, &format!("/batch/p{i}"), &format!("value-{i}"), i % 2 == 0).await;
    }
    let mut secrets_settings = SecretsSettings {
        sources: names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), format!("ssm:/batch/p{i}").parse().unwrap()))
            .collect(),
        prefetch: names.clone(),
        cache: CacheSettings { ttl: Duration::from_secs(300), ..CacheSettings::default() },
        ..SecretsSettings::default()
    };
    secrets_settings.max_decrypt_calls = 11;
    let store = Arc::new(AwsSecretStore::from_sdk_config(&moto_sdk_config(&moto)));
    let settings = HostSettings { secrets: secrets_settings, ..HostSettings::default() };
    let host = Host::from_file(&guest("probe"), Backends::from(new_key()).with_store(store), settings).unwrap();
    recorder_start(&moto);
    host.prefetch().await.unwrap();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let (answers, invocation) = secrets(&host, &names).await;
    assert_eq!(recorder_calls(&moto, "AmazonSSM.GetParameters"), 2, "eleven parameters, ten to a call");
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(prefix(answer), fingerprint(format!("value-{i}").as_bytes()));
    }
    assert!(invocation.decrypts.iter().all(|r| r.cache == CacheUse::Hit), "{:?}", invocation.decrypts);
}

/// A stored secret injected into requests: sent to its origin, denied to the guest under any of its names.
#[tokio::test]
async fn a_stored_secret_is_injected_and_never_handed_to_the_guest() {
    let moto = start_moto();
    let ssm = aws_sdk_ssm::Client::new(&moto_sdk_config(&moto));
    put_parameter(&ssm, "/api/key", TOKEN, true).await;
    let echo = Origin::http();
    let http = keyward::capability::http::HttpSettings {
        allow: vec![echo.origin().parse().unwrap()],
        inject: vec![(
            "API_KEY".into(),
            format!("{} Authorization: Bearer {{secret}}", echo.origin()).parse().unwrap(),
        )],
        ..Default::default()
    };
    let host = stored_host(
        &moto,
        sources(&[("API_KEY", "ssm:/api/key"), ("SAME_KEY", "ssm:/api/key")]),
        Duration::ZERO,
        Some(http),
    );
    let invocation = invoke(&host, json!({ "action": "fetch", "requests": [{ "url": echo.url("/headers") }] })).await;
    assert_eq!(echo.seen()[0].values("authorization"), vec![format!("Bearer {TOKEN}")]);
    assert!(!response(&invocation).to_string().contains(TOKEN));
    let (answers, _) = secrets(&host, &["API_KEY", "SAME_KEY"]).await;
    for answer in &answers {
        assert!(error(answer).contains("injected by the host into requests to"), "{answer}");
    }
}

/// `keyward invoke --source`, with the environment's AWS endpoint, credentials and region.
#[tokio::test]
async fn keyward_invoke_reads_a_source_from_the_environment() {
    let moto = start_moto();
    let sm = aws_sdk_secretsmanager::Client::new(&moto_sdk_config(&moto));
    let db = json!({ "password": DB_PASSWORD }).to_string();
    sm.create_secret().name("cli/db").secret_string(&db).send().await.unwrap();
    let (dir, key) = dir_with_key("stored-cli");
    let event = dir.path("event.json");
    std::fs::write(&event, json!({ "action": "secret", "names": ["DB"] }).to_string()).unwrap();
    let probe = guest("probe").display().to_string();
    let output = keyward_cmd(&["invoke", &probe, "--key", &key, "--source", "DB=secretsmanager:cli/db#password"])
        .args(["--event", &event])
        .env("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto.url())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let answer: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(prefix(&answer["secrets"][0]), fingerprint(DB_PASSWORD.as_bytes()));
    assert!(!stderr(&output).contains(DB_PASSWORD));

    let bad = keyward(&["invoke", &probe, "--key", &key, "--source", "DB=vault:db"]);
    assert_eq!(bad.status.code(), Some(2));
    let line = stderr(&bad);
    assert!(line.contains("--source DB: it is not a secret source (not shown"), "{line}");
    assert!(!line.contains("vault:db"), "an unknown source may be a pasted secret: {line}");
    assert_eq!(line.trim().lines().count(), 1, "{line}");
}

/// The Lambda bootstrap under the Runtime API emulator: stored secrets prefetched at init, served by name, rotated
/// when the TTL ends (audited), and no value in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lambda_reads_stored_secrets_and_audits_their_versions() {
    let dir = TempDir::new("stored-lambda");
    let moto = start_moto();
    let config = moto_sdk_config(&moto);
    let (sm, ssm) = (aws_sdk_secretsmanager::Client::new(&config), aws_sdk_ssm::Client::new(&config));
    let key = create_key(&aws_sdk_kms::Client::new(&config)).await;
    sm.create_secret()
        .name("lambda/db")
        .secret_string(json!({ "password": DB_PASSWORD }).to_string())
        .send()
        .await
        .unwrap();
    put_parameter(&ssm, "/lambda/token", TOKEN, true).await;
    let emulator = start_emulator(&dir.0, &["stored"]);
    let env = vec![
        ("KEYWARD_COMPONENT", guest("probe").display().to_string()),
        ("KEYWARD_KMS_KEY_ID", key),
        ("KEYWARD_KMS_ENDPOINT", moto.url()),
        ("KEYWARD_SOURCE_DB", "secretsmanager:lambda/db#password".to_string()),
        ("KEYWARD_SOURCE_TOKEN", "ssm:/lambda/token".to_string()),
        ("KEYWARD_PREFETCH", "DB,TOKEN".to_string()),
        ("KEYWARD_CACHE_TTL_SECS", "1".to_string()),
        // Each service's own endpoint variable, as the SDK names them.
        ("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto.url()),
        ("AWS_ENDPOINT_URL_SSM", moto.url()),
    ];
    let function = crate::lambda::Function::start(&emulator.runtime_api("stored"), &dir, "stored", &env);
    let event = json!({ "action": "secret", "names": ["DB", "TOKEN"] });
    let answer = function.invoke(&emulator, &event).unwrap_or_else(|e| panic!("{e}: {}", function.log_text()));
    assert_eq!(prefix(&answer["secrets"][0]), fingerprint(DB_PASSWORD.as_bytes()));
    assert_eq!(prefix(&answer["secrets"][1]), fingerprint(TOKEN.as_bytes()));

    sm.put_secret_value()
        .secret_id("lambda/db")
        .secret_string(json!({ "password": "rotated-pw" }).to_string())
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let answer = function.invoke(&emulator, &event).unwrap();
    assert_eq!(prefix(&answer["secrets"][0]), fingerprint(b"rotated-pw"));
    let log = function.log_when(|log| log.contains("secret version changed"));
    let fetches: Vec<&str> = log.lines().filter(|l| l.contains("secret fetch")).collect();
    assert!(
        fetches.iter().any(|l| l.contains("secretsmanager:lambda/db#password") && l.contains("version_id")),
        "{log}"
    );
    assert!(fetches.iter().any(|l| l.contains("ssm:/lambda/token") && l.contains("cache=\"hit\"")), "{log}");
    let log = function.settled_log();
    for value in [DB_PASSWORD, TOKEN, "rotated-pw"] {
        assert!(!log.contains(value), "the log holds a value: {log}");
    }
}

/// The Rust and the JavaScript hello read `PASSWORD` by name (`secret`) from Secrets Manager as they read an env
/// ciphertext: the same answer, the same refusal when the secret is gone.
#[tokio::test]
async fn the_rust_and_javascript_hellos_read_a_stored_secret_alike() {
    let moto = start_moto();
    let sm = aws_sdk_secretsmanager::Client::new(&moto_sdk_config(&moto));
    let value = json!({ "username": "app", "password": DB_PASSWORD }).to_string();
    sm.create_secret().name("hello/db").secret_string(&value).send().await.unwrap();
    let host = |name: &str| {
        let secrets = SecretsSettings {
            sources: sources(&[("PASSWORD", "secretsmanager:hello/db#password")]),
            ..Default::default()
        };
        let store = Arc::new(AwsSecretStore::from_sdk_config(&moto_sdk_config(&moto)));
        let settings = HostSettings { secrets, ..HostSettings::default() };
        Host::from_file(&guest(name), Backends::from(new_key()).with_store(store), settings).unwrap()
    };
    let (rust, js) = (host("hello"), host("hello-js"));
    async fn answer(host: &Host) -> Result<String, String> {
        invoke(host, json!({ "rawPath": "/" })).await.result.map_err(|e| e.to_string())
    }
    let from_rust = answer(&rust).await;
    assert_eq!(from_rust, answer(&js).await);
    assert!(from_rust.unwrap().contains(&fingerprint(DB_PASSWORD.as_bytes())));
    sm.delete_secret().secret_id("hello/db").force_delete_without_recovery(true).send().await.unwrap();
    let refused = answer(&rust).await;
    assert_eq!(refused, answer(&js).await);
    assert!(refused.unwrap_err().contains("kms denied"), "gone: denied, as the guest SDK words it");
}
