//! Shared helpers: where the guests are, hosts over a fresh local key, running the `keyward` binary.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;

use base64::Engine as _;
use keyward::{EncryptionContext, Host, HostSettings, Invocation, InvocationContext, LocalKey, SecretsSettings};
use sha2::{Digest, Sha256};

/// A guest component built for wasm32-wasip2 by `cargo xtask build-guests`.
pub fn guest(name: &str) -> PathBuf {
    let dir = std::env::var_os("KEYWARD_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip2/release"));
    let path = dir.join(format!("{name}.wasm"));
    assert!(path.exists(), "{} is missing: build the guests first with `cargo xtask build-guests`", path.display());
    path
}

/// The runtime-only Lambda bootstrap `keyward package` ships, built by `cargo xtask bootstrap` (which
/// `cargo xtask test` runs first) beside the `keyward` binary's cargo target folder.
pub fn lambda_bootstrap() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_keyward")).with_file_name("../lambda/bootstrap");
    assert!(path.exists(), "{} is missing: build it first with `cargo xtask bootstrap`", path.display());
    path
}

pub fn context(pairs: &[(&str, &str)]) -> EncryptionContext {
    EncryptionContext::from_pairs(pairs.iter().copied()).expect("valid context")
}

/// The default `kms` policy, stamping `pairs`.
pub fn stamping(pairs: &[(&str, &str)]) -> SecretsSettings {
    SecretsSettings { stamped_context: context(pairs), ..SecretsSettings::default() }
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The first 8 hex digits of SHA-256, as the guests report a secret.
pub fn fingerprint(secret: &[u8]) -> String {
    Sha256::digest(secret)[..4].iter().map(|b| format!("{b:02x}")).collect()
}

pub fn new_key() -> Arc<LocalKey> {
    Arc::new(LocalKey::generate().expect("random key"))
}

/// A host over the guest `name`, decrypting with `key`.
pub fn host_with(name: &str, key: &Arc<LocalKey>, config: HostSettings) -> Host {
    Host::from_file(&guest(name), key.clone(), config).expect("host loads the guest")
}

/// A host over the guest `name` with a fresh local key.
pub fn host(name: &str, config: HostSettings) -> (Arc<LocalKey>, Host) {
    let key = new_key();
    let host = host_with(name, &key, config);
    (key, host)
}

pub async fn invoke(host: &Host, event: serde_json::Value) -> Invocation {
    host.invoke(&event.to_string(), InvocationContext::local("arn:aws:lambda:local:0:function:test")).await
}

/// The response of a successful invocation, parsed.
pub fn response(invocation: &Invocation) -> serde_json::Value {
    let text = invocation.result.as_ref().unwrap_or_else(|e| panic!("invocation failed: {e}"));
    serde_json::from_str(text).expect("response is JSON")
}

pub fn keyward(args: &[&str]) -> Output {
    keyward_cmd(args).output().expect("keyward runs")
}

pub fn keyward_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyward"));
    cmd.args(args).env_remove("RUST_LOG");
    cmd
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A scratch directory holding a fresh local key file; returns the directory and the key's path.
pub fn dir_with_key(tag: &str) -> (TempDir, String) {
    let dir = TempDir::new(tag);
    let key = dir.path("k");
    let made = keyward(&["keygen", "--out", &key]);
    assert!(made.status.success(), "{}", stderr(&made));
    (dir, key)
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).expect("random");
        let name = format!("keyward-{tag}-{}", random.iter().map(|b| format!("{b:02x}")).collect::<String>());
        let dir = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }

    pub fn path(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A WebAssembly custom section `name` holding `payload` (both short): appended to a component, it makes another
/// build of the same code.
pub fn custom_section(name: &str, payload: &[u8]) -> Vec<u8> {
    let body = [&[name.len() as u8], name.as_bytes(), payload].concat();
    assert!(body.len() < 128, "one LEB128 byte of size");
    [&[0, body.len() as u8], body.as_slice()].concat()
}
