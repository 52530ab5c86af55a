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
pub mod kms;
pub mod lambda;
pub mod mask;
pub mod sandbox;
pub mod testing;
pub mod text;

pub use context::EncryptionContext;
pub use error::InvokeError;
pub use host::{CREDENTIAL_ENV_VARS, Host, HostConfig, HostError, Invocation, InvocationContext};
pub use kms::{KmsBackend, KmsError, KmsPolicy, LocalKey};
pub use sandbox::{CompileTarget, Cpu, InvalidLimits, LimitExceeded, Limits, LoadError, precompile};
