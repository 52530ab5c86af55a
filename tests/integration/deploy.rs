//! Deployment artifacts: compiled components, the Lambda zip, the SAM template (checked by cfn-lint) and the
//! Serverless Framework config.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

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

/// One request to KMS, as IAM sees it: the action, the key, and the condition keys it carries.
struct Request {
    what: &'static str,
    action: &'static str,
    resource: &'static str,
    context: &'static [(&'static str, &'static str)],
    allowed: bool,
}

/// The requests both configs must allow (Lambda's decrypt of the environment it encrypted with the function's key,
/// keyward's decrypt of a secret) and refuse, for the function `keyward-hello` in us-east-1 of account 111122223333.
const REQUESTS: &[Request] = &[
    Request {
        action: "kms:Decrypt",
        what: "keyward decrypts a secret bound to the function",
        resource: "KEY_ARN",
        context: &[("kms:EncryptionContext:function", "keyward-hello")],
        allowed: true,
    },
    Request {
        action: "kms:Decrypt",
        what: "Lambda decrypts the function's environment",
        resource: "KEY_ARN",
        context: &[
            ("kms:ViaService", "lambda.us-east-1.amazonaws.com"),
            (
                "kms:EncryptionContext:aws:lambda:FunctionArn",
                "arn:aws:lambda:us-east-1:111122223333:function:keyward-hello",
            ),
        ],
        allowed: true,
    },
    Request {
        action: "kms:Decrypt",
        what: "a secret bound to another function",
        resource: "KEY_ARN",
        context: &[("kms:EncryptionContext:function", "billing")],
        allowed: false,
    },
    Request {
        action: "kms:Decrypt",
        what: "the role decrypting the environment itself, not through Lambda",
        resource: "KEY_ARN",
        context: &[(
            "kms:EncryptionContext:aws:lambda:FunctionArn",
            "arn:aws:lambda:us-east-1:111122223333:function:keyward-hello",
        )],
        allowed: false,
    },
    Request {
        action: "kms:Decrypt",
        what: "another function's environment through Lambda",
        resource: "KEY_ARN",
        context: &[
            ("kms:ViaService", "lambda.us-east-1.amazonaws.com"),
            ("kms:EncryptionContext:aws:lambda:FunctionArn", "arn:aws:lambda:us-east-1:111122223333:function:billing"),
        ],
        allowed: false,
    },
    Request {
        action: "kms:Decrypt",
        what: "another key",
        resource: "OTHER_KEY_ARN",
        context: &[("kms:EncryptionContext:function", "keyward-hello")],
        allowed: false,
    },
];

/// What the SAM template's role must allow and refuse when a Secrets Manager secret and an SSM parameter are named
/// (`DatabaseSecretArn`, `ConfigParameterName`): those two, read through their services, and nothing else.
const STORED_REQUESTS: &[Request] = &[
    Request {
        action: "secretsmanager:GetSecretValue",
        what: "the named secret",
        resource: DB_SECRET,
        context: &[],
        allowed: true,
    },
    Request {
        action: "secretsmanager:GetSecretValue",
        what: "another secret",
        resource: "arn:aws:secretsmanager:us-east-1:111122223333:secret:other-XyZ123",
        context: &[],
        allowed: false,
    },
    Request {
        action: "ssm:GetParameters",
        what: "the named parameter",
        resource: PARAMETER,
        context: &[],
        allowed: true,
    },
    Request {
        action: "ssm:GetParameters",
        what: "another parameter",
        resource: "arn:aws:ssm:us-east-1:111122223333:parameter/app/other",
        context: &[],
        allowed: false,
    },
    Request {
        action: "kms:Decrypt",
        what: "Secrets Manager decrypts the named secret",
        resource: "KEY_ARN",
        context: &[
            ("kms:ViaService", "secretsmanager.us-east-1.amazonaws.com"),
            ("kms:EncryptionContext:SecretARN", DB_SECRET),
        ],
        allowed: true,
    },
    Request {
        action: "kms:Decrypt",
        what: "Secrets Manager decrypts another secret under the key",
        resource: "KEY_ARN",
        context: &[
            ("kms:ViaService", "secretsmanager.us-east-1.amazonaws.com"),
            ("kms:EncryptionContext:SecretARN", "arn:aws:secretsmanager:us-east-1:111122223333:secret:other-XyZ123"),
        ],
        allowed: false,
    },
    Request {
        action: "kms:Decrypt",
        what: "SSM decrypts the named parameter",
        resource: "KEY_ARN",
        context: &[
            ("kms:ViaService", "ssm.us-east-1.amazonaws.com"),
            ("kms:EncryptionContext:PARAMETER_ARN", PARAMETER),
        ],
        allowed: true,
    },
    Request {
        action: "kms:Decrypt",
        what: "the role decrypting the secret's ciphertext itself",
        resource: "KEY_ARN",
        context: &[("kms:EncryptionContext:SecretARN", DB_SECRET)],
        allowed: false,
    },
];

const DB_SECRET: &str = "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-AbCdEf";
const PARAMETER: &str = "arn:aws:ssm:us-east-1:111122223333:parameter/app/config";

/// A policy value with the config's references filled in: CloudFormation's `Ref`, `Fn::GetAtt` and `Fn::Sub`, and
/// the Serverless Framework's `${...}` variables.
fn resolve(value: &serde_json::Value) -> String {
    let names = [
        ("SecretsKey.Arn", "KEY_ARN"),
        ("FunctionName", "keyward-hello"),
        ("AWS::Region", "us-east-1"),
        ("AWS::Partition", "aws"),
        ("AWS::AccountId", "111122223333"),
        ("param:kmsKeyArn", "KEY_ARN"),
        ("self:service", "keyward"),
        ("sls:stage", "dev"),
        ("aws:region", "us-east-1"),
        ("aws:accountId", "111122223333"),
        ("DatabaseSecretArn", DB_SECRET),
        ("ConfigParameterName", "/app/config"),
        ("param:databaseSecretArn", DB_SECRET),
        ("param:configParameterName", "/app/config"),
    ];
    let lookup = |name: &str| names.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string());
    let substitute = |text: &str| {
        let mut out = text.to_string();
        for (name, value) in names {
            out = out.replace(&format!("${{{name}}}"), value);
        }
        // The Serverless config's function is `${self:service}-${sls:stage}-hello`: keyward-dev-hello.
        out.replace("keyward-dev-hello", "keyward-hello")
    };
    match value {
        serde_json::Value::String(text) => substitute(text),
        serde_json::Value::Object(map) => match map.iter().next() {
            Some((key, serde_json::Value::String(name))) if key == "Ref" => lookup(name).unwrap_or_default(),
            Some((key, serde_json::Value::Array(parts))) if key == "Fn::GetAtt" => {
                let name = parts.iter().filter_map(|p| p.as_str()).collect::<Vec<_>>().join(".");
                lookup(&name).unwrap_or_default()
            }
            Some((key, serde_json::Value::String(text))) if key == "Fn::Sub" => substitute(text),
            _ => format!("unresolved {value}"),
        },
        other => format!("unresolved {other}"),
    }
}

/// Whether one of the Allow statements allows `request` (IAM's evaluation for what these configs use: no Deny,
/// `StringEquals` conditions, every key required).
fn allows(statements: &[serde_json::Value], request: &Request) -> bool {
    // A statement under a condition (`Fn::If [condition, statement, AWS::NoValue]`) counts as its condition holds:
    // the configuration that names what the statement is for.
    let configured = statements.iter().map(|statement| match statement.get("Fn::If") {
        Some(branches) => &branches[1],
        None => statement,
    });
    configured.into_iter().any(|statement| {
        assert_eq!(statement["Effect"], "Allow", "the configs grant, they never deny: {statement}");
        let listed = |v: &serde_json::Value| match v {
            serde_json::Value::Array(items) => items.iter().map(resolve).collect(),
            one => vec![resolve(one)],
        };
        let action_ok = listed(&statement["Action"]).iter().any(|a| a == request.action || a == "kms:*");
        let resource_ok = listed(&statement["Resource"]).iter().any(|r| r == request.resource || r == "*");
        let conditions = statement["Condition"].as_object().cloned().unwrap_or_default();
        let conditions_ok = conditions.iter().all(|(operator, keys)| {
            assert_eq!(operator, "StringEquals", "only StringEquals is evaluated here");
            keys.as_object().unwrap().iter().all(|(key, wanted)| {
                let given = request.context.iter().find(|(k, _)| k == key).map(|(_, v)| *v);
                given.is_some_and(|given| listed(wanted).iter().any(|w| w == given))
            })
        });
        action_ok && resource_ok && conditions_ok
    })
}

fn assert_policy(config: &str, statements: &[serde_json::Value], requests: &[Request]) {
    for request in requests {
        assert_eq!(allows(statements, request), request.allowed, "{config}: {}", request.what);
    }
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
    assert_eq!(env["KEYWARD_GUEST_ENV"]["Fn::If"], json!(["InjectsApiKey", "PASSWORD,API_KEY", "PASSWORD"]));
    // Outgoing HTTP is off unless ApiOrigin names one, and the API key is injected only with both.
    assert_eq!(env["KEYWARD_ALLOW_OUTBOUND"]["Fn::If"][0], "CallsApi");
    assert_eq!(env["KEYWARD_INJECT_API_KEY"]["Fn::If"][0], "InjectsApiKey");
    assert_eq!(env["KEYWARD_INJECT_API_KEY"]["Fn::If"][1]["Fn::Sub"], "${ApiOrigin} Authorization: Bearer {secret}");
    assert!(env["KEYWARD_KMS_KEY_ID"].is_object());
    // The first deploy, before any ciphertext exists, must start: the prefetch is set only with a ciphertext.
    assert_eq!(env["KEYWARD_PREFETCH"]["Fn::If"][0], "HasPassword", "{}", env["KEYWARD_PREFETCH"]);
    // BindToBuild stamps the guest's build besides the function.
    let context = &env["KEYWARD_KMS_CONTEXT"]["Fn::If"];
    assert_eq!(context[0], "BindsBuild", "{}", env["KEYWARD_KMS_CONTEXT"]);
    assert_eq!(
        (&context[1], &context[2]),
        (&"function={function_name},component={component}".into(), &"function={function_name}".into())
    );
    let key = &t["Resources"]["SecretsKey"];
    assert_eq!(key["DeletionPolicy"], "Retain", "deleting the stack must not delete the key");
    assert_eq!(key["UpdateReplacePolicy"], "Retain", "replacing the key must not delete the old one");
    assert_eq!(function["FunctionUrlConfig"]["AuthType"], "AWS_IAM");
    let statements = function["Policies"][0]["Statement"].as_array().unwrap();
    assert_policy("the SAM template", statements, REQUESTS);
    assert_policy("the SAM template, reading stored secrets", statements, STORED_REQUESTS);
    for (variable, source) in [
        ("KEYWARD_SOURCE_DB_PASSWORD", "secretsmanager:${DatabaseSecretArn}#password"),
        ("KEYWARD_SOURCE_CONFIG", "ssm:${ConfigParameterName}"),
    ] {
        assert_eq!(env[variable]["Fn::If"][1]["Fn::Sub"], source, "{variable}");
        let filled = resolve(&env[variable]["Fn::If"][1]);
        assert!(filled.parse::<keyward::secrets::SecretSource>().is_ok(), "{variable}: {filled}");
    }
}

#[test]
fn the_serverless_config_ports_the_classic_pattern() {
    let config = load_yaml(&repo("deploy/serverless.yml"), false);
    assert_eq!(config["provider"]["runtime"], "provided.al2023");
    assert!(config["provider"]["kmsKeyArn"].is_string(), "the environment is encrypted with the key");
    assert_policy(
        "the Serverless config",
        config["provider"]["iam"]["role"]["statements"].as_array().unwrap(),
        REQUESTS,
    );
    let hello = &config["functions"]["hello"];
    assert_eq!(hello["handler"], "bootstrap");
    assert_eq!(hello["environment"]["KEYWARD_GUEST_ENV"], "PASSWORD");
    assert_eq!(hello["environment"]["KEYWARD_KMS_CONTEXT"], "function={function_name}");
    assert_eq!(hello["url"]["authorizer"], "aws_iam", "the function URL is IAM-authenticated, not public");
}

/// The Serverless config of a function reading a Secrets Manager secret, an SSM parameter and a sealed file: least
/// privilege for each, and sources that parse once its parameters are filled in.
#[test]
fn the_serverless_config_reads_stored_and_sealed_secrets_with_least_privilege() {
    let config = load_yaml(&repo("deploy/serverless.stored.yml"), false);
    let statements = config["provider"]["iam"]["role"]["statements"].as_array().unwrap();
    assert_policy("the stored-secrets Serverless config", statements, REQUESTS);
    assert_policy("the stored-secrets Serverless config", statements, STORED_REQUESTS);
    let env = config["functions"]["hello"]["environment"].as_object().unwrap();
    let sources: Vec<(&String, String)> =
        env.iter().filter(|(k, _)| k.starts_with("KEYWARD_SOURCE_")).map(|(k, v)| (k, resolve(v))).collect();
    assert_eq!(sources.len(), 3, "{sources:?}");
    for (variable, source) in &sources {
        assert!(source.parse::<keyward::secrets::SecretSource>().is_ok(), "{variable}: {source}");
    }
    assert_eq!(env["KEYWARD_SOURCE_DB_PASSWORD"], "secretsmanager:${param:databaseSecretArn}#password");
    assert_eq!(env["KEYWARD_KMS_CONTEXT"], "function={function_name}");
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
    assert_eq!(bytes, std::fs::read(lambda_bootstrap()).unwrap(), "bootstrap is the runtime-only one");

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
    let err = stderr(&out);
    assert!(
        err.contains("cargo xtask bootstrap --target aarch64-unknown-linux-gnu") && err.contains("--bootstrap"),
        "{err}"
    );

    // A bootstrap Lambda could not run is refused at packaging, not at the function's first init.
    let this = env!("CARGO_BIN_EXE_keyward");
    let readme = repo("README.md");
    let host_arch = std::env::consts::ARCH;
    let other = if host_arch == "x86_64" { "aarch64-unknown-linux-gnu" } else { "x86_64-unknown-linux-gnu" };
    let foreign = ["--target", other, "--bootstrap", this];
    // Other kinds of file: a Mach-O header for x86_64, this keyward marked as a FreeBSD binary, a shared library.
    let macho = dir.path("macho");
    std::fs::write(
        &macho,
        [&[0xcf, 0xfa, 0xed, 0xfe, 0x07, 0, 0, 0x01, 3, 0, 0, 0, 2, 0, 0, 0][..], &[0; 16]].concat(),
    )
    .unwrap();
    let freebsd = dir.path("freebsd");
    let mut bytes = std::fs::read(this).unwrap();
    bytes[7] = 9; // EI_OSABI: FreeBSD
    std::fs::write(&freebsd, bytes).unwrap();
    let deps = PathBuf::from(this).with_file_name("deps");
    let library = std::fs::read_dir(deps)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.extension().is_some_and(|e| e == "so"))
        .expect("a proc-macro library among the build's deps");
    let file = |path: &str| ["--bootstrap".to_string(), path.to_string()];
    for (args, problem) in [
        (foreign.map(String::from).to_vec(), format!("is built for {host_arch}, not {other}")),
        (file(readme.to_str().unwrap()).to_vec(), "is not a 64-bit Linux ELF executable".to_string()),
        (file(&macho).to_vec(), "is not a 64-bit Linux ELF executable".to_string()),
        (file(&freebsd).to_vec(), "is built for another operating system than Linux".to_string()),
        (file(library.to_str().unwrap()).to_vec(), "is not an executable (a shared library".to_string()),
    ] {
        let mut all = vec!["package", "--component", hello.to_str().unwrap(), "-o", &zip_path];
        all.extend(args.iter().map(String::as_str));
        let out = keyward(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        assert!(err.contains(problem.as_str()) && err.contains("pass --bootstrap with one built for"), "{err}");
    }
    // Output is written whole or not at all, into a folder made for it; never over the component itself.
    let full = keyward(&["package", "--component", hello.to_str().unwrap(), "-o", "/dev/full"]);
    assert_eq!(full.status.code(), Some(2));
    let err = stderr(&full);
    assert!(err.lines().count() == 1 && err.contains("No space left on device") && !err.contains("Os {"), "{err}");
    assert!(!std::fs::metadata("/dev/full").unwrap().is_file(), "the device is written to, not replaced");
    let nested = dir.path("new/folder/function.zip");
    assert!(keyward(&["package", "--component", hello.to_str().unwrap(), "-o", &nested]).status.success());
    let copy = dir.path("hello.wasm");
    std::fs::copy(&hello, &copy).unwrap();
    let over = keyward(&["compile", &copy, "-o", &copy]);
    assert_eq!(over.status.code(), Some(2));
    assert!(stderr(&over).contains("is an input"), "{}", stderr(&over));
    let bootstrap = dir.path("bootstrap");
    std::fs::copy(lambda_bootstrap(), &bootstrap).unwrap();
    let over =
        keyward(&["package", "--component", hello.to_str().unwrap(), "-o", &bootstrap, "--bootstrap", &bootstrap]);
    assert_eq!(over.status.code(), Some(2));
    assert!(stderr(&over).contains("is an input"), "{}", stderr(&over));
    assert_eq!(std::fs::read(&bootstrap).unwrap(), std::fs::read(lambda_bootstrap()).unwrap());
    assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(&hello).unwrap());
    let native = keyward(&["package", "--component", hello.to_str().unwrap(), "-o", &zip_path, "--cpu", "native"]);
    assert!(native.status.success(), "{}", stderr(&native));
    assert!(stderr(&native).contains("warning: --cpu native"), "{}", stderr(&native));
}
