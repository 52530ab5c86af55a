//! Deployment artifacts: compiled components, the Lambda zip, the SAM template (checked by cfn-lint) and the
//! Serverless Framework config.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// A template or config file as JSON, read by Python (cfn-lint's decoder understands `!GetAtt` and friends).
fn load_yaml(path: &Path, cloudformation: bool) -> serde_json::Value {
    let script = if cloudformation {
        "import json,sys; from cfnlint.decode import decode; t, m = decode(sys.argv[1]); assert not m, m; print(json.dumps(t, default=str))"
    } else {
        "import json,sys,yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))"
    };
    let out = Command::new("python3").args(["-c", script]).arg(path).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn cfn_lint_accepts_the_sam_template() {
    let template = repo("deploy/template.yaml");
    let out = Command::new("cfn-lint").arg(&template).output().expect("cfn-lint runs (installed by cargo xtask test)");
    assert!(out.status.success(), "cfn-lint: {}{}", stdout(&out), stderr(&out));

    let t = load_yaml(&template, true);
    let function = &t["Resources"]["Function"]["Properties"];
    assert_eq!(function["Runtime"], "provided.al2023");
    assert_eq!(function["Handler"], "bootstrap");
    assert!(function["KmsKeyArn"].is_object(), "the function's environment is encrypted with the key");
    let env = &function["Environment"]["Variables"];
    assert_eq!(env["KEYWARD_GUEST_ENV"], "PASSWORD");
    assert!(env["KEYWARD_KMS_KEY_ID"].is_object());
    let statements = function["Policies"][0]["Statement"].as_array().unwrap();
    assert_eq!(statements.len(), 1, "the role may do one thing");
    assert_eq!(statements[0]["Action"], "kms:Decrypt");
    assert!(statements[0]["Resource"].is_object(), "only on the function's key");
    let condition = &statements[0]["Condition"]["StringEquals"]["kms:EncryptionContext:function"];
    assert!(condition.is_object(), "bound to the stamped context: {condition}");
}

#[test]
fn the_serverless_config_ports_the_classic_pattern() {
    let config = load_yaml(&repo("deploy/serverless.yml"), false);
    assert_eq!(config["provider"]["runtime"], "provided.al2023");
    let statement = &config["provider"]["iam"]["role"]["statements"][0];
    assert_eq!(statement["Action"], "kms:Decrypt");
    assert!(statement["Condition"]["StringEquals"]["kms:EncryptionContext:function"].is_string());
    let hello = &config["functions"]["hello"];
    assert_eq!(hello["handler"], "bootstrap");
    assert_eq!(hello["environment"]["KEYWARD_GUEST_ENV"], "PASSWORD");
    assert!(hello["environment"]["KEYWARD_KMS_CONTEXT"].as_str().unwrap().starts_with("function="));
}

#[test]
fn compiled_components_run_and_foreign_ones_are_refused() {
    let (dir, key) = dir_with_key("compile");
    let hello = guest("hello");
    let cwasm = dir.path("hello.cwasm");
    let out = keyward(&["compile", hello.to_str().unwrap(), "-o", &cwasm]);
    assert!(out.status.success(), "{}", stderr(&out));

    let ciphertext = stdout(&keyward(&["encrypt", "--key", &key, "--plaintext", "pw-1234"])).trim().to_string();
    let env = format!("PASSWORD={ciphertext}");
    let out = keyward(&["invoke", &cwasm, "--key", &key, "--env", &env, "--memory-mb", "32"]);
    assert!(out.status.success(), "a .cwasm runs, under other limits than it was compiled with: {}", stderr(&out));
    assert!(stdout(&out).contains(&fingerprint(b"pw-1234")));

    let arm = dir.path("hello-arm.cwasm");
    let out = keyward(&["compile", hello.to_str().unwrap(), "-o", &arm, "--target", "aarch64-unknown-linux-gnu"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut truncated = std::fs::read(&cwasm).unwrap();
    truncated.truncate(truncated.len() / 2);
    let truncated_path = dir.path("truncated.cwasm");
    std::fs::write(&truncated_path, truncated).unwrap();
    for (what, path) in [("another target", &arm), ("a truncated file", &truncated_path)] {
        let out = keyward(&["invoke", path, "--key", &key]);
        assert_eq!(out.status.code(), Some(2), "{what}: {}", stderr(&out));
        assert!(stderr(&out).contains("cannot load the precompiled component"), "{what}: {}", stderr(&out));
        assert_eq!(stderr(&out).lines().count(), 1, "{what}: {}", stderr(&out));
    }

    let module = dir.path("core.wasm");
    std::fs::write(&module, wat::parse_str("(module)").unwrap()).unwrap();
    let out = keyward(&["compile", &module, "-o", &dir.path("core.cwasm")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("core WebAssembly module"), "{}", stderr(&out));
}

#[test]
fn the_package_holds_an_executable_bootstrap_and_the_compiled_handler() {
    let dir = TempDir::new("package");
    let zip_path = dir.path("function.zip");
    let hello = guest("hello");
    let out = keyward(&["package", "--component", hello.to_str().unwrap(), "-o", &zip_path]);
    assert!(out.status.success(), "{}", stderr(&out));

    let mut archive = zip::ZipArchive::new(std::fs::File::open(&zip_path).unwrap()).unwrap();
    let mut names: Vec<String> = archive.file_names().map(|name| name.unwrap().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["bootstrap", "handler.cwasm"]);
    let mut bootstrap = archive.by_name("bootstrap").unwrap();
    assert_eq!(bootstrap.unix_mode().map(|m| m & 0o777), Some(0o755));
    let mut bytes = Vec::new();
    bootstrap.read_to_end(&mut bytes).unwrap();
    assert_eq!(bytes, std::fs::read(env!("CARGO_BIN_EXE_keyward")).unwrap(), "bootstrap is this keyward");

    let out = keyward(&[
        "package",
        "--component",
        hello.to_str().unwrap(),
        "-o",
        &zip_path,
        "--target",
        "aarch64-unknown-linux-gnu",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--bootstrap"), "{}", stderr(&out));
}
