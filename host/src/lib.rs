//! keyward's host library: runs a Lambda handler written as a WebAssembly component in a sandbox whose only ways
//! to a secret are the host's capabilities, served under the host's policy.
//!
//! ```text
//! event JSON ─► Host::invoke ─► fresh instance ─► guest handle(event, ctx)
//!                                                   │ kms.decrypt, keys.open ...   (capability/)
//!                                                   ▼
//!                              SecretGate: stamped context, per-secret settings, audit   (secrets/)
//!                                                   ▼
//!                              PlaintextCache::get_or_fetch ─► KmsBackend: AWS KMS (aws/) | LocalKey | stub
//! ```
//!
//! [`HostSettings`] holds every setting, one struct per capability, each parsed beside its struct and checked once
//! when the [`Host`] is built. The CLI (`keyward`) and the Lambda runtime are thin shells around it.
#![warn(missing_docs)]

mod address;
pub mod aws;
mod bindings;
pub mod capability;
pub mod context;
pub mod error;
mod host;
mod incoming;
pub mod lambda;
pub mod logging;
pub mod mask;
pub mod sandbox;
pub mod secrets;
pub mod settings;
#[cfg(feature = "compiler")]
pub mod testing;
pub mod text;
mod tls;

pub use capability::env::CREDENTIAL_ENV_VARS;
pub use capability::keys::{KeyOperationRecord, KeysSettings};
pub use capability::kms::{GuestPlaintext, KmsSettings};
pub use context::EncryptionContext;
pub use error::InvokeError;
pub use host::{Host, HostError, Invocation, InvocationContext, Phases};
#[cfg(feature = "compiler")]
pub use sandbox::{CompileTarget, Cpu, precompile};
pub use sandbox::{ComponentDigest, LimitExceeded, Limits, LoadError, UsedInstance};
pub use secrets::{Backends, KmsBackend, KmsError, LocalKey, SecretsSettings};
pub use settings::{HostSettings, SettingError};

#[cfg(test)]
mod tests {
    /// docs/layout.md's map names every source file of the host (a module added without a line there fails).
    #[test]
    fn the_layout_names_every_module() {
        let layout = include_str!("../../docs/layout.md");
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut unnamed = Vec::new();
        let dirs = ["sandbox", "secrets", "aws", "capability", "capability/kms", "capability/keys", "incoming"];
        for dir in std::iter::once(src.clone()).chain(dirs.map(|d| src.join(d))) {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let name = entry.unwrap().file_name().into_string().unwrap();
                let obvious = ["lib.rs", "main.rs", "mod.rs", "bindings.rs"].contains(&name.as_str());
                if name.ends_with(".rs") && !obvious && !layout.contains(&name) {
                    unnamed.push(name);
                }
            }
        }
        for dir in ["src/sandbox/", "src/secrets/", "src/aws/", "src/capability/", "src/lambda/", "src/cli/"] {
            if !layout.contains(dir) {
                unnamed.push(dir.to_string());
            }
        }
        assert!(unnamed.is_empty(), "docs/layout.md does not name {unnamed:?}");
    }
}
