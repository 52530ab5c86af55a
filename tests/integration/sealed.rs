//! Sealed files (`KEYWARD_SOURCE_<NAME>=sealed:<path>`): secrets too large for an environment variable, sealed by
//! `keyward seal` under the local key or KMS (moto's), shipped by `keyward package --sealed`, opened by the host
//! with one decrypt of their data key, bound to the function they were sealed for.

use std::path::Path;
use std::time::Duration;

use keyward::secrets::{CacheSettings, CacheUse, SecretSource};
use keyward::{Host, HostSettings, SecretsSettings};
use serde_json::{Value, json};

use crate::lambda::Function;
use crate::servers::*;
use crate::support::*;

/// A PEM bundle of about 200 KB: an ed25519 private key, then a certificate chain (the test CA's certificates,
/// over and over), as a TLS client's key and chain would be kept.
fn chain_pem(dir: &Path) -> Vec<u8> {
    let (ca, server, _) = crate::origin::test_ca(dir);
    let (ca, server) = (std::fs::read(ca).unwrap(), std::fs::read(server).unwrap());
    let key =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/capability/keys/key/fixtures/ed25519.pkcs8.pem"))
            .unwrap();
    let mut pem = key;
    while pem.len() < 200 * 1024 {
        pem.extend_from_slice(&server);
        pem.extend_from_slice(&ca);
    }
    pem
}

/// `keyward seal` of `file` with the local key `key`, under `context`, into `out`.
fn seal(file: &str, key: &str, context: &[&str], out: &str) {
    let mut args = vec!["seal", file, "--key", key, "-o", out];
    for pair in context {
        args.extend(["--context", pair]);
    }
    let sealed = keyward(&args);
    assert!(sealed.status.success(), "{}", stderr(&sealed));
    assert!(stdout(&sealed).contains(&format!("into {out} under local key")), "{}", stdout(&sealed));
}

fn sealed_host(guest_name: &str, key_file: &str, sealed: &str, function: &str) -> Result<Host, keyward::HostError> {
    let key = std::sync::Arc::new(keyward::LocalKey::load(Path::new(key_file)).unwrap());
    let secrets = SecretsSettings {
        sources: vec![("SIGNING_KEY".into(), SecretSource::Sealed(sealed.into()))],
        stamped_context: context(&[("function", function)]),
        cache: CacheSettings { ttl: Duration::from_secs(60), ..CacheSettings::default() },
        ..SecretsSettings::default()
    };
    Host::from_file(&guest(guest_name), key, HostSettings { secrets, ..HostSettings::default() })
}

fn sign_event(body: &str) -> Value {
    json!({
        "version": "2.0", "rawPath": "/sign", "rawQueryString": "", "headers": {},
        "requestContext": {"http": {"method": "POST", "path": "/sign", "sourceIp": "127.0.0.1"}, "timeEpoch": 0},
        "body": body, "isBase64Encoded": false
    })
}

/// A 200 KB key and certificate chain, sealed for one function: the Rust and the JavaScript signers open it as a key
/// handle and sign alike, with one decrypt for many uses; another function's host, an altered file and a file that
/// is not sealed are refused, each saying why.
#[tokio::test]
async fn a_sealed_chain_is_a_key_handle_for_the_rust_and_javascript_signers() {
    let (dir, key) = dir_with_key("sealed-chain");
    let pem = chain_pem(&dir.0);
    assert!(pem.len() > 200 * 1024, "{}", pem.len());
    let (plain, sealed) = (dir.path("chain.pem"), dir.path("sealed/chain.pem.sealed"));
    std::fs::write(&plain, &pem).unwrap();
    seal(&plain, &key, &["function=signer"], &sealed);
    let file = std::fs::read(&sealed).unwrap();
    assert!(file.starts_with(b"kwsf\x01\x01"));
    assert!(!file.windows(11).any(|w| w == b"-----BEGIN "), "the sealed file holds plaintext");

    let mut signatures = Vec::new();
    for signer in ["signer", "signer-js"] {
        let host = sealed_host(signer, &key, &sealed, "signer").unwrap();
        let mut records = Vec::new();
        for _ in 0..3 {
            let invocation = invoke(&host, sign_event("pay 10 EUR")).await;
            let body: Value = serde_json::from_str(response(&invocation)["body"].as_str().unwrap()).unwrap();
            let public = keyward_base64::decode(body["public_key"].as_str().unwrap()).unwrap();
            let signature = keyward_base64::decode(body["signature"].as_str().unwrap()).unwrap();
            ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &public)
                .verify(b"pay 10 EUR", &signature)
                .expect("the signature verifies with the sealed key's public key");
            signatures.push(signature);
            records.extend(invocation.decrypts);
        }
        let uses: Vec<CacheUse> = records.iter().map(|r| r.cache).collect();
        assert_eq!(uses, [CacheUse::Miss, CacheUse::Hit, CacheUse::Hit], "{signer}: one open, then the cache");
        let record = &records[0];
        assert_eq!(record.source.as_deref(), Some(format!("sealed:{sealed}").as_str()));
        assert!(record.version_id.as_deref().is_some_and(|v| v.starts_with("sha256:")), "{record:?}");
    }
    assert!(signatures.windows(2).all(|w| w[0] == w[1]), "Ed25519 is deterministic: both signers sign alike");

    // Copied to another function: its host stamps another context, under which the data key does not open.
    let moved = sealed_host("signer", &key, &sealed, "another-function").unwrap();
    let error = invoke(&moved, sign_event("x")).await.result.unwrap_err().to_string();
    let data_key = format!("invalid-ciphertext: sealed file {sealed}: its data key: ");
    assert!(error.contains(&data_key) && error.contains("authentication failed"), "{error}");
    // Altered after sealing: refused when opened, naming the fault.
    let mut altered = file.clone();
    *altered.last_mut().unwrap() ^= 1;
    std::fs::write(&sealed, &altered).unwrap();
    let host = sealed_host("signer", &key, &sealed, "signer").unwrap();
    let error = invoke(&host, sign_event("x")).await.result.unwrap_err().to_string();
    let altered = format!("sealed file {sealed}: altered after sealing (authentication failed): seal it again");
    assert!(error.contains(&altered), "{error}");
    // Not a sealed file at all (the plaintext, by mistake): the host is not built, and says so without the content.
    let error = sealed_host("signer", &key, &plain, "signer").unwrap_err().to_string();
    assert!(error.contains(&format!("KEYWARD_SOURCE_SIGNING_KEY: {plain}: not a keyward sealed file")), "{error}");
    assert!(!error.contains("BEGIN"), "{error}");
    let error = sealed_host("signer", &key, &dir.path("missing.sealed"), "signer").unwrap_err().to_string();
    assert!(error.contains("missing.sealed") && error.contains("No such file"), "{error}");
}

/// A sealed file as one sealed with KMS looks to `keyward package` (its data key a blob that is no local key's
/// ciphertext): package checks the shape and the key's kind, not that KMS opens it.
fn kms_sealed_copy() -> Vec<u8> {
    keyward::secrets::sealed::seal(b"config", &[7; 32], b"\x01\x02\x02\x00 a KMS ciphertext blob").unwrap()
}

/// The command line: `keyward seal` and its refusals, `keyward invoke --source NAME=sealed:FILE`, and
/// `keyward package --sealed DIR` shipping sealed files only.
#[test]
fn keyward_seals_invokes_and_packages_sealed_files() {
    let (dir, key) = dir_with_key("sealed-cli");
    let secret = "a-s3cret-too-big-for-an-env-var\n".repeat(300);
    let (plain, sealed) = (dir.path("config.json"), dir.path("config.json.sealed"));
    std::fs::write(&plain, &secret).unwrap();
    // The default output is FILE.sealed; stdin needs -o.
    let made = keyward(&["seal", &plain, "--key", &key, "--context", "function=probe"]);
    assert!(made.status.success(), "{}", stderr(&made));
    assert!(Path::new(&sealed).exists());
    let piped = keyward_cmd(&["seal", "-", "--key", &key]).stdin(std::process::Stdio::null()).output().unwrap();
    assert_eq!(piped.status.code(), Some(2));
    assert!(stderr(&piped).contains("sealing stdin needs -o FILE"), "{}", stderr(&piped));
    let other_key = dir.path("other.key");
    assert!(keyward(&["keygen", "--out", &other_key]).status.success());
    let fifo = dir.path("fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let refusals: [(&[&str], &str); 12] = [
        // Another key file given as -o: it is no sealed file, so it is not replaced.
        (&["seal", &plain, "--key", &key, "-o", &other_key], "exists and is not a sealed file: refusing to replace it"),
        (&["seal", &plain, "--key", &key, "--context", "a=b,c=d"], "a pair with a comma or a brace cannot be stamped"),
        (&["seal", &plain, "--key-id", "alias/a b"], "it is not one KMS key id, key ARN or alias"),
        (&["seal", &plain, "--key-id", "arn:aws:s3:::bucket"], "it is not a KMS key ARN"),
        (
            &["seal", &plain],
            "the following required arguments were not provided: <--key <FILE>|--key-id <KEY>>; see `keyward seal --help`",
        ),
        (&["seal", &plain, "--key-id", ""], "'--key-id <KEY>'"),
        // A placeholder is the host's to fill in: sealed under it literally, the file would open nowhere.
        (
            &["seal", &plain, "--key", &key, "--context", "function={function_name}"],
            "--context: function: {function_name} is a placeholder the host fills in, not a value; write in its place \
             the value of AWS_LAMBDA_FUNCTION_NAME on the function",
        ),
        (
            &["seal", &plain, "--key", &key, "--context", "c={component}"],
            "bind the build with --bind-component instead",
        ),
        (&["seal", &plain, "--key", &key, "-o", &plain], "is an input"),
        // Sealing over the key file would lose every file sealed under it.
        (&["seal", &plain, "--key", &key, "-o", &key], "is an input"),
        (&["seal", &dir.path("nope"), "--key", &key], "cannot read"),
        (&["seal", &plain, "--key", &key, "--context", "=v"], "--context"),
    ];
    for (args, expected) in refusals {
        let out = keyward(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(expected), "{args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));
    }
    assert!(keyward::LocalKey::load(Path::new(&other_key)).is_ok(), "the key file refused as -o is intact");
    // A FIFO is no sealed file: refused, not waited on.
    let out = keyward(&[
        "invoke",
        &guest("probe").display().to_string(),
        "--key",
        &key,
        "--source",
        &format!("F=sealed:{fifo}"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("is not a regular file"), "{}", stderr(&out));
    let big = dir.path("big");
    std::fs::write(&big, vec![b'x'; (1 << 20) + 1]).unwrap();
    let out = keyward(&["seal", &big, "--key", &key]);
    assert!(stderr(&out).contains("is over 1 MiB: a sealed file holds at most 1048576 bytes"), "{}", stderr(&out));

    let event = dir.path("event.json");
    std::fs::write(&event, json!({ "action": "secret", "names": ["CONFIG"] }).to_string()).unwrap();
    let probe = guest("probe").display().to_string();
    let source = format!("CONFIG=sealed:{sealed}");
    let run = |context: &str| {
        keyward(&["invoke", &probe, "--key", &key, "--source", &source, "--context", context, "--event", &event])
    };
    let out = run("function=probe");
    assert!(out.status.success(), "{}", stderr(&out));
    let answer: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(answer["secrets"][0]["sha256_prefix"], fingerprint(secret.as_bytes()));
    let out = run("function=other");
    let answer: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let error = answer["secrets"][0]["error"].as_str().unwrap();
    assert!(error.starts_with(&format!("kms invalid-ciphertext: sealed file {sealed}: its data key: ")), "{error}");

    // Packaging ships the sealed files, and refuses a folder with a plaintext in it.
    let folder = dir.0.join("secrets");
    std::fs::create_dir_all(folder.join("tls")).unwrap();
    std::fs::copy(&sealed, folder.join("tls/config.json.sealed")).unwrap();
    let zip_path = dir.path("fn.zip");
    let bootstrap = lambda_bootstrap().display().to_string();
    let package = |folder: &Path| {
        let folder = folder.display().to_string();
        keyward(&["package", "--component", &probe, "-o", &zip_path, "--bootstrap", &bootstrap, "--sealed", &folder])
    };
    // Sealed with the local key: it would never open on Lambda, so it is not shipped.
    let out = package(&folder);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("config.json.sealed was sealed with a local key"), "{}", stderr(&out));
    std::fs::remove_file(folder.join("tls/config.json.sealed")).unwrap();
    std::fs::write(folder.join("tls/config.json.sealed"), kms_sealed_copy()).unwrap();
    let out = package(&folder);
    assert!(out.status.success(), "{}", stderr(&out));
    // The zip goes elsewhere than the folder whose every file ships.
    let inside = folder.join("fn.zip").display().to_string();
    let folder_arg = folder.display().to_string();
    let out =
        keyward(&["package", "--component", &probe, "-o", &inside, "--bootstrap", &bootstrap, "--sealed", &folder_arg]);
    assert!(stderr(&out).contains("is inside --sealed"), "{}", stderr(&out));
    // -o onto a key file is refused.
    let out = keyward(&["package", "--component", &probe, "-o", &other_key, "--bootstrap", &bootstrap]);
    assert!(stderr(&out).contains("exists and is not a zip: refusing to replace it"), "{}", stderr(&out));
    let mut archive = zip::ZipArchive::new(std::fs::File::open(&zip_path).unwrap()).unwrap();
    let mut shipped = Vec::new();
    std::io::Read::read_to_end(&mut archive.by_name("sealed/tls/config.json.sealed").unwrap(), &mut shipped).unwrap();
    assert_eq!(shipped, std::fs::read(folder.join("tls/config.json.sealed")).unwrap());
    // A link to a folder is not followed (it could lead back into the folder), and says so.
    std::os::unix::fs::symlink(folder.join("tls"), folder.join("linked")).unwrap();
    let out = package(&folder);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("linked is a link to a folder: --sealed does not follow links"), "{}", stderr(&out));
    std::fs::remove_file(folder.join("linked")).unwrap();
    std::fs::copy(&plain, folder.join("tls/config.json")).unwrap();
    let out = package(&folder);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("config.json: not a keyward sealed file"), "{}", stderr(&out));
    assert!(stderr(&out).contains("--sealed ships only sealed files, never a plaintext"), "{}", stderr(&out));
}

/// Sealed with a KMS data key (moto's GenerateDataKey), packaged, and run by the packaged bootstrap under the
/// Runtime API emulator from its task root: opened for the function it was sealed for (one Decrypt, audited), and
/// refused by the same package deployed under another function name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lambda_opens_its_sealed_file_and_another_function_cannot() {
    let dir = TempDir::new("sealed-lambda");
    let moto = start_moto();
    let key = create_key(&aws_sdk_kms::Client::new(&moto_sdk_config(&moto))).await;
    let pem = chain_pem(&dir.0);
    let plain = dir.path("chain.pem");
    std::fs::write(&plain, &pem).unwrap();
    std::fs::create_dir_all(dir.0.join("sealed")).unwrap();
    let sealed = dir.path("sealed/chain.pem.sealed");
    let out = keyward_cmd(&["seal", &plain, "--key-id", &key, "--context", "function=sealed-fn", "-o", &sealed])
        .env("KEYWARD_KMS_ENDPOINT", moto.url())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("under KMS key arn:aws:kms:us-east-1:"), "{}", stdout(&out));
    let zip_path = dir.path("fn.zip");
    let (probe, bootstrap) = (guest("probe").display().to_string(), lambda_bootstrap().display().to_string());
    let folder = dir.path("sealed");
    let out =
        keyward(&["package", "--component", &probe, "-o", &zip_path, "--bootstrap", &bootstrap, "--sealed", &folder]);
    assert!(out.status.success(), "{}", stderr(&out));
    let task_root = dir.0.join("task");
    zip::ZipArchive::new(std::fs::File::open(&zip_path).unwrap()).unwrap().extract(&task_root).unwrap();

    let emulator = start_emulator(&dir.0, &["sealed-fn", "moved-fn"]);
    let env = [
        ("LAMBDA_TASK_ROOT", task_root.display().to_string()),
        ("KEYWARD_SOURCE_CHAIN", "sealed:sealed/chain.pem.sealed".to_string()),
        ("KEYWARD_KMS_KEY_ID", key),
        ("KEYWARD_KMS_ENDPOINT", moto.url()),
        ("KEYWARD_KMS_CONTEXT", "function={function_name}".to_string()),
    ];
    let event = json!({ "action": "secret", "names": ["CHAIN"] });
    let start = |name: &str| {
        Function::start_program(&task_root.join("bootstrap"), &emulator.runtime_api(name), &dir, name, &env)
    };
    let function = start("sealed-fn");
    recorder_start(&moto);
    for _ in 0..2 {
        let answer = function.invoke(&emulator, &event).unwrap_or_else(|e| panic!("{e}: {}", function.log_text()));
        assert_eq!(answer["secrets"][0]["sha256_prefix"], fingerprint(&pem), "{answer}");
    }
    assert_eq!(recorder_decrypts(&moto), 1, "one Decrypt of the data key, then the cache");
    let log = function.log_when(|log| log.matches("secret fetch").count() >= 2);
    let fetch = log.lines().find(|l| l.contains("secret fetch")).unwrap();
    assert!(fetch.contains("sealed/chain.pem.sealed") && fetch.contains("version_id=\"sha256:"), "{log}");
    let decrypt = log.lines().find(|l| l.contains("kms decrypt")).unwrap();
    assert!(decrypt.contains("secret=\"CHAIN\"") && decrypt.contains("function=sealed-fn"), "{log}");

    let moved = start("moved-fn");
    let answer = moved.invoke(&emulator, &event).unwrap_or_else(|e| panic!("{e}: {}", moved.log_text()));
    let error = answer["secrets"][0]["error"].as_str().unwrap();
    let refused = "sealed/chain.pem.sealed: its data key: KMS refused the ciphertext";
    assert!(error.starts_with("kms invalid-ciphertext: sealed file ") && error.contains(refused), "{error}");
    for log in [function.settled_log(), moved.settled_log()] {
        assert!(!log.contains("BEGIN CERTIFICATE") && !log.contains("PRIVATE KEY"), "the log holds the file: {log}");
    }
}
