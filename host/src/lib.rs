//! keyward's host library: runs a Lambda handler written as a WebAssembly component in a sandbox whose only way
//! to a secret is the `kms.decrypt` capability, served under the host's policy.
//!
//! ```text
//! event JSON ─► Host::invoke ─► fresh instance ─► guest handle(event, ctx)
//!                                                   │ kms.decrypt(ciphertext, context)
//!                                                   ▼
//!                              KmsGate: stamped context, size limits, audit
//!                                                   ▼
//!                              KmsBackend: LocalKey (AES-256-GCM) | AWS KMS | stub
//! ```
//!
//! The CLI (`keyward`) and the Lambda runtime are thin shells around [`Host`].
#![warn(missing_docs)]

mod address;
mod bindings;
pub mod context;
pub mod error;
mod host;
pub mod keys;
pub mod kms;
pub mod lambda;
pub mod logging;
pub mod mask;
pub mod sandbox;
#[cfg(feature = "compiler")]
pub mod testing;
pub mod text;

pub use context::EncryptionContext;
pub use error::InvokeError;
pub use host::{CREDENTIAL_ENV_VARS, Host, HostConfig, HostError, Invocation, InvocationContext, Phases};
pub use kms::{GuestPlaintext, KmsBackend, KmsError, KmsPolicy, LocalKey};
#[cfg(feature = "compiler")]
pub use sandbox::{CompileTarget, Cpu, precompile};
pub use sandbox::{ComponentDigest, InvalidLimits, KeyOperationRecord, LimitExceeded, Limits, LoadError, UsedInstance};

#[cfg(test)]
mod tests {
    /// The README's module map names every source file of the host (a module added without a line there fails).
    #[test]
    fn the_readme_layout_names_every_module() {
        let readme = include_str!("../../README.md");
        let layout = &readme[readme.find("## Layout").unwrap()..readme.find("## Testing").unwrap()];
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut unnamed = Vec::new();
        for dir in [src.clone(), src.join("sandbox"), src.join("kms")] {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let name = entry.unwrap().file_name().into_string().unwrap();
                let obvious = ["lib.rs", "main.rs", "mod.rs", "bindings.rs"].contains(&name.as_str());
                if name.ends_with(".rs") && !obvious && !layout.contains(&name) {
                    unnamed.push(name);
                }
            }
        }
        for dir in ["src/sandbox/", "src/kms/", "src/lambda/", "src/cli/"] {
            if !layout.contains(dir) {
                unnamed.push(dir.to_string());
            }
        }
        assert!(unnamed.is_empty(), "the README's Layout does not name {unnamed:?}");
    }
}
