//! Write keyward guests in plain Rust.
//!
//! A guest is a Lambda handler compiled to a WebAssembly component (`wasm32-wasip2`). It has no network, no files
//! and no credentials; its one way to a secret is the host's `kms` import, which this crate wraps:
//!
//! ```ignore
//! use keyward_guest::{Context, Error, Handler, secret};
//! use keyward_guest::http::{FunctionUrlRequest, FunctionUrlResponse};
//!
//! struct Hello;
//!
//! impl Handler for Hello {
//!     type Event = FunctionUrlRequest;
//!     type Response = FunctionUrlResponse;
//!
//!     fn handle(request: FunctionUrlRequest, _ctx: &Context) -> Result<FunctionUrlResponse, Error> {
//!         let password = secret("PASSWORD")?; // wherever the host keeps it; a zeroized secret out
//!         Ok(keyward_guest::http::json_response(200, &serde_json::json!({ "len": password.expose().len() })))
//!     }
//! }
//!
//! keyward_guest::export!(Hello);
//! ```
//!
//! Test a built guest natively with `keyward::testing::StubHost` (the same sandbox as production, with an
//! ephemeral local key).
#![warn(missing_docs)]

use std::fmt;

use zeroize::Zeroizing;

/// The wit-bindgen bindings of `wit/keyward.wit`. Handlers need not touch them: see [`Handler`] and [`export!`].
#[doc(hidden)]
#[allow(unsafe_code, missing_docs, missing_debug_implementations)] // wit-bindgen's generated ABI glue
pub mod bindings {
    wit_bindgen::generate!({
        world: "secret-handler",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "__export_secret_handler",
        default_bindings_module: "keyward_guest::bindings",
    });
}

pub mod fetch;
pub mod http;

/// Facts about the invocation: request id, function ARN, deadline (ms since the Unix epoch).
pub use bindings::exports::keyward::lambda::handler::Context;

/// A decrypted secret. Zeroized when dropped; its `Debug` shows nothing of it, and it has no `Display`.
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// The secret's bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The secret as UTF-8 text.
    ///
    /// # Errors
    /// When the secret is not UTF-8 (the message does not quote it).
    pub fn expose_str(&self) -> Result<&str, Error> {
        std::str::from_utf8(&self.0).map_err(|e| Error::new(format!("the secret is not UTF-8 text ({e})")))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

/// Why the host refused to decrypt. Messages are the host's, for operators; they never hold plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KmsError {
    /// A policy refused the request (a stamped context contradicted, a key not allowed, access denied).
    Denied(String),
    /// The ciphertext cannot be opened: malformed, tampered with, another key's or another context's.
    InvalidCiphertext(String),
    /// The key service failed or did not answer in time; a retry may work.
    Unavailable(String),
}

impl fmt::Display for KmsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KmsError::Denied(msg) => write!(f, "kms denied: {msg}"),
            KmsError::InvalidCiphertext(msg) => write!(f, "kms invalid-ciphertext: {msg}"),
            KmsError::Unavailable(msg) => write!(f, "kms unavailable: {msg}"),
        }
    }
}

impl std::error::Error for KmsError {}

impl From<bindings::keyward::lambda::kms::Error> for KmsError {
    fn from(error: bindings::keyward::lambda::kms::Error) -> Self {
        use bindings::keyward::lambda::kms::Error;
        match error {
            Error::Denied(msg) => KmsError::Denied(msg),
            Error::InvalidCiphertext(msg) => KmsError::InvalidCiphertext(msg),
            Error::Unavailable(msg) => KmsError::Unavailable(msg),
        }
    }
}

/// Decrypts `ciphertext` (raw bytes) bound to `context`, through the host. The host adds its stamped pairs.
///
/// # Errors
/// The host's [`KmsError`].
pub fn decrypt(ciphertext: &[u8], context: &[(&str, &str)]) -> Result<Secret, KmsError> {
    use bindings::keyward::lambda::kms;
    let context: Vec<(String, String)> = context.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Ok(Secret(Zeroizing::new(kms::decrypt(ciphertext, &context)?)))
}

/// The secret named `name`, from wherever the host keeps it: the env var `name`'s base64 KMS ciphertext (as the
/// classic pattern keeps it; decrypted with no encryption context of the guest's, the host adds its stamped pairs),
/// or a secret the host fetches from Secrets Manager or SSM Parameter Store (`KEYWARD_SOURCE_<NAME>`). The guest
/// needs no ARN, and holds no credential.
///
/// # Errors
/// The host's [`KmsError`]: `denied` for a name that is no secret of this function.
pub fn secret(name: &str) -> Result<Secret, KmsError> {
    use bindings::keyward::lambda::kms;
    Ok(Secret(Zeroizing::new(kms::secret(name)?)))
}

/// [`secret`], under the name it had when a secret could only live in an env var.
///
/// # Errors
/// As [`secret`].
pub fn secret_from_env(name: &str) -> Result<Secret, Error> {
    Ok(secret(name)?)
}

/// Algorithms of [`Key`]'s operations, as the WIT names them.
pub use bindings::keyward::lambda::keys::{HmacAlgorithm, JwtAlgorithm, SignatureAlgorithm};

/// A secret the host keeps: the guest asks for MACs, signatures and JWTs made with it, and never holds its bytes.
/// The handle is given back when dropped, and dies with the invocation in any case.
#[derive(Debug)]
pub struct Key(bindings::keyward::lambda::keys::Key);

/// Opens the secret named `name`, wherever the host keeps it (as [`secret`] finds it), as a [`Key`]:
/// `keyward_guest::key("SIGNING_KEY")?.sign(SignatureAlgorithm::Ed25519, body)`.
///
/// # Errors
/// The host's [`KeyError`]: the name is no secret of the guest's, or the host refused to fetch it.
pub fn key(name: &str) -> Result<Key, KeyError> {
    Ok(Key(bindings::keyward::lambda::keys::Key::open_env(name)?))
}

impl Key {
    /// Opens `ciphertext` (raw bytes) bound to `context`; the host adds its stamped pairs.
    ///
    /// # Errors
    /// The host's [`KeyError`].
    pub fn open(ciphertext: &[u8], context: &[(&str, &str)]) -> Result<Self, KeyError> {
        let context: Vec<(String, String)> = context.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Ok(Self(bindings::keyward::lambda::keys::Key::open(ciphertext, &context)?))
    }

    /// The HMAC of `message` (the secret's bytes as the key).
    ///
    /// # Errors
    /// [`KeyError::Unsupported`] when the secret is a private key; [`KeyError::InvalidInput`] when `message` is
    /// larger than the host allows.
    pub fn hmac(&self, algorithm: HmacAlgorithm, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        Ok(self.0.hmac(algorithm, message)?)
    }

    /// HMAC-SHA-256 of `message`: 32 bytes.
    ///
    /// # Errors
    /// As [`Key::hmac`].
    pub fn hmac_sha256(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.hmac(HmacAlgorithm::Sha256, message)
    }

    /// The signature of `message` with this private key.
    ///
    /// # Errors
    /// [`KeyError::Unsupported`] when the key is not of `algorithm`'s kind (or is no private key).
    pub fn sign(&self, algorithm: SignatureAlgorithm, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        Ok(self.0.sign(algorithm, message)?)
    }

    /// The public key: Ed25519 32 bytes, P-256 an uncompressed point (65 bytes), RSA a DER RSAPublicKey.
    ///
    /// # Errors
    /// [`KeyError::Unsupported`] for a secret that is no private key.
    pub fn public_key(&self) -> Result<Vec<u8>, KeyError> {
        Ok(self.0.public_key()?)
    }

    /// A compact JWS of `claims` (a JSON object) with `header`'s fields (`kid`, say; `alg` and `typ` are set by
    /// the host): `header.claims.signature`.
    ///
    /// # Errors
    /// [`KeyError::InvalidInput`] when either is not a JSON object; [`KeyError::Unsupported`] when the key is not
    /// of `algorithm`'s kind.
    pub fn sign_jwt(
        &self,
        algorithm: JwtAlgorithm,
        header: &serde_json::Value,
        claims: &impl serde::Serialize,
    ) -> Result<String, KeyError> {
        let claims = serde_json::to_string(claims).map_err(|e| KeyError::InvalidInput(format!("claims: {e}")))?;
        let header = if header.is_null() { String::new() } else { header.to_string() };
        Ok(self.0.sign_jwt(algorithm, &header, &claims)?)
    }
}

/// Why the host refused to open a secret or to use it. Messages are the host's; they never hold key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// As [`KmsError::Denied`].
    Denied(String),
    /// As [`KmsError::InvalidCiphertext`].
    InvalidCiphertext(String),
    /// As [`KmsError::Unavailable`].
    Unavailable(String),
    /// The secret cannot do this (wrong kind of key, unreadable key material).
    Unsupported(String),
    /// The input was refused (too large; a JWT header or claims that are not a JSON object).
    InvalidInput(String),
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Denied(msg) => write!(f, "key denied: {msg}"),
            KeyError::InvalidCiphertext(msg) => write!(f, "key invalid-ciphertext: {msg}"),
            KeyError::Unavailable(msg) => write!(f, "key unavailable: {msg}"),
            KeyError::Unsupported(msg) => write!(f, "key unsupported: {msg}"),
            KeyError::InvalidInput(msg) => write!(f, "key invalid-input: {msg}"),
        }
    }
}

impl std::error::Error for KeyError {}

impl From<bindings::keyward::lambda::keys::Error> for KeyError {
    fn from(error: bindings::keyward::lambda::keys::Error) -> Self {
        use bindings::keyward::lambda::keys::Error;
        match error {
            Error::Denied(msg) => KeyError::Denied(msg),
            Error::InvalidCiphertext(msg) => KeyError::InvalidCiphertext(msg),
            Error::Unavailable(msg) => KeyError::Unavailable(msg),
            Error::Unsupported(msg) => KeyError::Unsupported(msg),
            Error::InvalidInput(msg) => KeyError::InvalidInput(msg),
        }
    }
}

impl From<KeyError> for Error {
    fn from(e: KeyError) -> Self {
        Self(e.to_string())
    }
}

/// A handler's error: its message becomes the function error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl Error {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<KmsError> for Error {
    fn from(e: KmsError) -> Self {
        Self(e.to_string())
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Self(format!("JSON: {e}"))
    }
}

/// A Lambda handler. `Event` and `Response` are any serde types: the request and response shapes of
/// [`http`], or `serde_json::Value` for raw JSON from any other source.
pub trait Handler {
    /// What the handler receives, deserialized from the event JSON.
    type Event: serde::de::DeserializeOwned;
    /// What the handler returns, serialized to the response JSON.
    type Response: serde::Serialize;

    /// Handles one event.
    ///
    /// # Errors
    /// Any [`Error`]; its message becomes the function error.
    fn handle(event: Self::Event, ctx: &Context) -> Result<Self::Response, Error>;
}

/// Runs a [`Handler`] on one event: the glue [`export!`] expands to.
#[doc(hidden)]
pub fn __handle<H: Handler>(event: String, ctx: Context) -> Result<String, String> {
    let event: H::Event = serde_json::from_str(&event)
        .map_err(|e| format!("the event does not have the shape the handler expects: {e}"))?;
    let response = H::handle(event, &ctx).map_err(|e| e.to_string())?;
    serde_json::to_string(&response).map_err(|e| format!("cannot serialize the response: {e}"))
}

/// Exports a [`Handler`] as the component's `keyward:lambda/handler`.
#[macro_export]
macro_rules! export {
    ($handler:ty) => {
        struct __KeywardGuest;

        impl $crate::bindings::exports::keyward::lambda::handler::Guest for __KeywardGuest {
            fn handle(event: String, ctx: $crate::Context) -> Result<String, String> {
                $crate::__handle::<$handler>(event, ctx)
            }
        }

        $crate::bindings::__export_secret_handler!(__KeywardGuest with_types_in $crate::bindings);
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_shows_nothing_of_itself() {
        let secret = Secret(Zeroizing::new(b"hunter2".to_vec()));
        assert_eq!(format!("{secret:?}"), "Secret([REDACTED])");
        assert_eq!(secret.expose_str().unwrap(), "hunter2");
        let binary = Secret(Zeroizing::new(vec![0xff, 0xfe]));
        assert!(!binary.expose_str().unwrap_err().to_string().contains('\u{fffd}'));
    }

    #[test]
    fn kms_errors_read_as_the_wit_kind() {
        assert_eq!(Error::from(KmsError::Denied("no".into())).to_string(), "kms denied: no");
        assert_eq!(KmsError::InvalidCiphertext("bad".into()).to_string(), "kms invalid-ciphertext: bad");
        assert_eq!(KmsError::Unavailable("later".into()).to_string(), "kms unavailable: later");
    }
}
