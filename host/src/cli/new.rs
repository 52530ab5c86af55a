//! `keyward new`: scaffolds a guest crate that builds, and whose test passes, out of the box.

use std::path::PathBuf;

use anyhow::Context as _;

/// Where this keyward's sources were built from: the scaffold depends on the SDK and stub host there.
const SOURCE_ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const REPOSITORY: &str = env!("CARGO_PKG_REPOSITORY");

/// Create a guest crate: a handler on the guest SDK, a README, and a test running it in the stub host.
#[derive(Debug, clap::Args)]
pub(crate) struct New {
    /// Where to create the crate; its last part names it, as with `cargo new`.
    #[arg(value_name = "PATH")]
    path: PathBuf,
    /// The crate's name, if not the directory's.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// The guest's language: Rust (on the guest SDK) or JavaScript (with componentize-js).
    #[arg(long, value_name = "LANG", default_value = "rust", value_parser = ["rust", "js"])]
    lang: String,
    /// A keyward source checkout to depend on (default: the one this keyward was built from, if it is still
    /// there; else the git repository).
    #[arg(long, value_name = "DIR")]
    keyward_src: Option<PathBuf>,
}

impl New {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        let from_dir = self.path.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = self.name.clone().or(from_dir).unwrap_or_default();
        let valid = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
            && name.starts_with(|c: char| c.is_ascii_lowercase());
        anyhow::ensure!(
            valid,
            "{name:?} is not a usable crate name: use lowercase letters, digits, `-` and `_`, starting with a letter \
             (or name the crate with --name)"
        );
        let crate_name = name.replace('-', "_");
        anyhow::ensure!(
            !RESERVED.contains(&crate_name.as_str()),
            "{name:?} is not a usable crate name: it is a Rust keyword or the name of a built-in crate, which cargo \
             refuses (name the crate with --name)"
        );
        let dir = self.path.clone();
        anyhow::ensure!(!dir.exists(), "{} already exists", dir.display());
        let files = if self.lang == "js" { js_files(&name) } else { self.rust_files(&name)? };
        for (path, text) in files {
            let path = dir.join(path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
            }
            std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        }
        let next = if self.lang == "js" { "npm install && npm test" } else { "cargo test" };
        println!("created guest {name} in {}; next: cd {} && {next}", dir.display(), dir.display());
        Ok(())
    }

    fn rust_files(&self, name: &str) -> anyhow::Result<Vec<(&'static str, String)>> {
        let source = self.keyward_src.clone().or_else(|| {
            let root = PathBuf::from(SOURCE_ROOT);
            root.join("guest/sdk/Cargo.toml").exists().then_some(root)
        });
        let deps = match &source {
            Some(root) => {
                let root = root.canonicalize().with_context(|| format!("cannot find {}", root.display()))?;
                anyhow::ensure!(
                    root.join("guest/sdk/Cargo.toml").exists(),
                    "{} is not a keyward checkout (no guest/sdk)",
                    root.display()
                );
                Deps::Path(root)
            }
            None => Deps::Git(REPOSITORY.to_string()),
        };
        Ok(files(name, &deps))
    }
}

/// Names cargo refuses for a package (as of cargo 1.85, `cargo new`'s checks): Rust's keywords, reserved ones
/// included, and the built-in crates.
const RESERVED: &[&str] = &[
    "abstract", "alloc", "as", "async", "await", "become", "box", "break", "const", "continue", "core", "crate", "do",
    "dyn", "else", "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl", "in", "let", "loop", "macro",
    "match", "mod", "move", "mut", "override", "priv", "proc_macro", "pub", "ref", "return", "self", "static", "std",
    "struct", "super", "test", "trait", "true", "try", "type", "typeof", "unsafe", "unsized", "use", "virtual",
    "where", "while", "yield",
];

enum Deps {
    Path(PathBuf),
    Git(String),
}

impl Deps {
    fn spec(&self, subdir: &str, package: &str) -> String {
        match self {
            Deps::Path(root) => format!("{{ path = {:?} }}", root.join(subdir).display().to_string()),
            Deps::Git(url) => format!("{{ git = {url:?}, package = {package:?} }}"),
        }
    }
}

fn files(name: &str, deps: &Deps) -> Vec<(&'static str, String)> {
    let crate_name = name.replace('-', "_");
    vec![
        ("Cargo.toml", cargo_toml(name, deps)),
        ("src/lib.rs", LIB_RS.to_string()),
        ("tests/stub_host.rs", TEST_RS.replace("{name}", name).replace("{crate_name}", &crate_name)),
        ("README.md", README_MD.replace("{name}", name).replace("{crate_name}", &crate_name)),
        (".gitignore", "/target\n".to_string()),
    ]
}

fn cargo_toml(name: &str, deps: &Deps) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
keyward-guest = {sdk}
serde_json = "1"

[dev-dependencies]
keyward = {host}

# A crate of its own, not part of an enclosing workspace.
[workspace]

[profile.release]
codegen-units = 16
incremental = false
debug = false
strip = true

[profile.release.package.{name}]
opt-level = "s"
codegen-units = 1
"#,
        sdk = deps.spec("guest/sdk", "keyward-guest"),
        host = deps.spec("host", "keyward"),
    )
}

/// keyward's WIT, as this keyward was built with it.
const KEYWARD_WIT: &str = include_str!("../../../wit/keyward.wit");
/// keyward's base64 policy in JavaScript: the one copy, built into keyward and written into each scaffold.
const JS_BASE64: &str = include_str!("../../../guest/base64/base64.js");
const JS_WORLD_WIT: &str = include_str!("../../../guest/examples/hello-js/wit/world.wit");
const JS_ENVIRONMENT_WIT: &str = include_str!("../../../guest/examples/hello-js/wit/deps/cli/environment.wit");

fn js_files(name: &str) -> Vec<(&'static str, String)> {
    vec![
        ("package.json", JS_PACKAGE_JSON.replace("{name}", name)),
        ("handler.js", JS_HANDLER.to_string()),
        ("build.mjs", JS_BUILD.replace("{name}", name)),
        ("base64.js", JS_BASE64.to_string()),
        ("test.mjs", JS_TEST.replace("{name}", name)),
        ("wit/world.wit", JS_WORLD_WIT.to_string()),
        ("wit/deps/cli/environment.wit", JS_ENVIRONMENT_WIT.to_string()),
        ("wit/deps/keyward/keyward.wit", KEYWARD_WIT.to_string()),
        ("README.md", JS_README.replace("{name}", name)),
        (".gitignore", "node_modules/\n*.wasm\nkeyward-test/\n".to_string()),
    ]
}

const JS_PACKAGE_JSON: &str = r#"{
  "name": "{name}",
  "private": true,
  "type": "module",
  "scripts": {
    "build": "node build.mjs",
    "test": "node --test test.mjs"
  },
  "devDependencies": {
    "@bytecodealliance/componentize-js": "0.23.0",
    "@bytecodealliance/preview2-shim": "0.25.0"
  }
}
"#;

const JS_HANDLER: &str = r#"// A keyward guest in JavaScript: a Lambda handler that runs sandboxed, and reaches its secret only through the host.
import { decrypt } from 'keyward:lambda/kms@0.1.0';
import { getEnvironment } from 'wasi:cli/environment@0.2.3';

/** Decrypts the base64 KMS ciphertext in env var `variable`; throws the function error on failure. */
function secretFromEnv(variable) {
  const encoded = new Map(getEnvironment()).get(variable);
  if (encoded === undefined) throw `env var ${variable} is not set`;
  let ciphertext;
  try {
    ciphertext = decodeBase64(encoded); // from base64.js: keyward's base64 policy, as the Rust SDK reads it
  } catch (e) {
    throw `env var ${variable} is not base64: ${e}`;
  }
  try {
    return decrypt(ciphertext, []);
  } catch (e) {
    const err = e.payload ?? e;
    throw `kms ${err.tag}: ${err.val}`;
  }
}

export const handler = {
  // `event` is the Lambda event JSON; return the response JSON, or throw a string for a function error.
  handle(event, ctx) {
    const request = JSON.parse(event);
    const password = secretFromEnv('PASSWORD');
    const body = JSON.stringify({ path: request.rawPath ?? '', request_id: ctx.requestId, secret_bytes: password.length });
    password.fill(0);
    return JSON.stringify({ statusCode: 200, headers: { 'content-type': 'application/json' }, body });
  },
};
"#;

const JS_BUILD: &str = r#"// Builds {name}.wasm: a component of the world in wit/ (keyward's, plus the environment).
import { componentize } from '@bytecodealliance/componentize-js';
import { readFile, writeFile } from 'node:fs/promises';

// keyward's base64 policy (base64.js, `decodeBase64`) goes in front of the handler.
const source = (await readFile('base64.js', 'utf8')) + (await readFile('handler.js', 'utf8'));
const { component } = await componentize(source, {
  sourceName: 'handler.js',
  witPath: 'wit',
  worldName: 'secret-handler-js',
  disableFeatures: ['random', 'stdio', 'clocks', 'http', 'fetch-event'],
});
await writeFile('{name}.wasm', component);
console.log(`wrote {name}.wasm (${component.length} bytes)`);
"#;

const JS_TEST: &str = r#"// Builds the component, then runs it in the keyward host with a throwaway local key (no AWS).
// The host binary: $KEYWARD, or `keyward` on PATH.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';

const keyward = process.env.KEYWARD ?? 'keyward';
const run = (...args) => execFileSync(keyward, args, { encoding: 'utf8' });

test('answers a function URL request with the secret decrypted by the host', () => {
  execFileSync('node', ['build.mjs'], { stdio: 'inherit' });
  rmSync('keyward-test', { recursive: true, force: true });
  mkdirSync('keyward-test');
  run('keygen', '--out', 'keyward-test/local.key');
  const ciphertext = run('encrypt', '--key', 'keyward-test/local.key', '--context', 'function={name}', '--plaintext', 'hunter2').trim();
  writeFileSync('keyward-test/event.json', JSON.stringify({ rawPath: '/hello' }));
  const response = JSON.parse(run('invoke', '{name}.wasm', '--key', 'keyward-test/local.key', '--env', `PASSWORD=${ciphertext}`,
    '--context', 'function={name}', '--event', 'keyward-test/event.json'));
  assert.equal(response.statusCode, 200);
  const body = JSON.parse(response.body);
  assert.equal(body.path, '/hello');
  assert.equal(body.secret_bytes, 7);
  rmSync('keyward-test', { recursive: true, force: true });
});
"#;

const JS_README: &str = r#"# {name}

A keyward guest in JavaScript, built with componentize-js: a Lambda handler compiled to a WebAssembly component and
run by the keyward host in a sandbox with no network, no files and no credentials. Its secret (`PASSWORD`, a base64
KMS ciphertext) is decrypted by the host, through the `kms.decrypt` import.

```sh
npm install
npm test                # builds {name}.wasm and runs it in the keyward host with a throwaway local key
keyward compile {name}.wasm -o handler.cwasm   # compiling a JS component takes seconds: do it before deploying
```
"#;

const LIB_RS: &str = r#"//! A keyward guest: a Lambda handler that runs sandboxed, and reaches its secret only through the host.

use keyward_guest::http::{FunctionUrlRequest, FunctionUrlResponse, json_response};
use keyward_guest::{Context, Error, Handler, secret_from_env};
use serde_json::json;

struct Guest;

impl Handler for Guest {
    type Event = FunctionUrlRequest;
    type Response = FunctionUrlResponse;

    fn handle(request: FunctionUrlRequest, ctx: &Context) -> Result<FunctionUrlResponse, Error> {
        // PASSWORD holds a base64 KMS ciphertext; the host decrypts it under its policy.
        let password = secret_from_env("PASSWORD")?;
        let path = request.raw_path.unwrap_or_default();
        Ok(json_response(
            200,
            &json!({ "path": path, "request_id": ctx.request_id, "secret_bytes": password.expose().len() }),
        ))
    }
}

keyward_guest::export!(Guest);
"#;

const TEST_RS: &str = r#"//! Builds the component, then runs it in keyward's stub host (the production sandbox, an ephemeral key).

use std::path::PathBuf;
use std::process::Command;

use keyward::testing::StubHost;
use serde_json::json;

fn component() -> PathBuf {
    let dir = env!("CARGO_MANIFEST_DIR");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--target", "wasm32-wasip2", "--lib"])
        .current_dir(dir)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the component failed (is the target installed? rustup target add wasm32-wasip2)");
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(dir).join("target"));
    target.join("wasm32-wasip2/release/{crate_name}.wasm")
}

#[test]
fn answers_a_function_url_request() {
    let host = StubHost::load(component()).unwrap().secret("PASSWORD", "hunter2").context("function", "{name}");
    let event = json!({
        "rawPath": "/hello",
        "requestContext": { "http": { "method": "GET" }, "timeEpoch": 0 },
        "isBase64Encoded": false
    });
    let response = host.invoke(event).unwrap();
    assert_eq!(response["statusCode"], 200);
    let body: serde_json::Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["path"], "/hello");
    assert_eq!(body["secret_bytes"], 7);
    assert_eq!(host.decrypt_calls().len(), 1);
}
"#;

const README_MD: &str = r#"# {name}

A keyward guest: a Lambda handler compiled to a WebAssembly component, run by the keyward host in a sandbox with
no network, no files and no credentials. Its secret (`PASSWORD`, a base64 KMS ciphertext) is decrypted by the host.

```sh
rustup target add wasm32-wasip2            # once
cargo test                                 # builds the component and runs it in the stub host
cargo build --release --target wasm32-wasip2 --lib
keyward package --component target/wasm32-wasip2/release/{crate_name}.wasm -o function.zip
```

Edit `src/lib.rs`: `Handler::Event` and `Handler::Response` are any serde types (`keyward_guest::http` has the
function URL and API Gateway shapes; `serde_json::Value` takes any event).
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_point_at_the_checkout_or_the_repository() {
        let path = Deps::Path(PathBuf::from("/src/keyward"));
        assert_eq!(path.spec("guest/sdk", "keyward-guest"), r#"{ path = "/src/keyward/guest/sdk" }"#);
        let git = Deps::Git("https://example.org/keyward".into());
        assert_eq!(git.spec("host", "keyward"), r#"{ git = "https://example.org/keyward", package = "keyward" }"#);
    }

    #[test]
    fn every_placeholder_is_filled() {
        for (path, text) in files("my-guest", &Deps::Path(PathBuf::from("/k"))).into_iter().chain(js_files("my-guest"))
        {
            assert!(!text.contains("{name}") && !text.contains("{crate_name}"), "{path}");
        }
    }
}
