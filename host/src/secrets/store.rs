//! Secrets kept by a service rather than carried as ciphertexts: Secrets Manager's secrets and SSM's parameters.
//! The service decrypts them (with KMS, under its own encryption context) for the function's role; the host asks
//! for them by where they live ([`SecretId`], [`ParameterId`]), never the guest.
//!
//! [`SecretStore`] is the seam: AWS's clients ([`crate::aws::AwsSecretStore`]) or a test stub. The gate owns the
//! rest (policy, cache, audit), and takes a JSON secret's key out here ([`json_value`]), so that only the value a
//! function uses is cached and handed on.

use async_trait::async_trait;
use secrecy::ExposeSecret as _;
use zeroize::{Zeroize as _, Zeroizing};

use super::source::{ParameterId, SecretId};
use super::{KmsError, Plaintext};

/// Most names one GetParameters call takes (SSM's limit).
pub const MAX_PARAMETERS_PER_CALL: usize = 10;

/// A stored secret's value, as its service answered it.
#[derive(Debug)]
pub struct Fetched {
    /// The value: a Secrets Manager secret's `SecretString` (its UTF-8 bytes) or `SecretBinary`, a parameter's
    /// `Value`.
    pub value: Plaintext,
    /// The version the service answered with: Secrets Manager's `VersionId`, SSM's `Version` (a number).
    pub version_id: String,
}

/// A service that keeps secrets: Secrets Manager and SSM Parameter Store, or a test stub.
///
/// Errors are of the gate's three kinds: `denied` (access refused, the secret or parameter does not exist, its KMS
/// key refused the service), `unavailable` (throttled, unreachable, a server error: a retry may work), and
/// `invalid-ciphertext` (a value the host cannot use). Messages name what was asked for, never a value.
#[async_trait]
pub trait SecretStore: Send + Sync + std::fmt::Debug {
    /// Secrets Manager's GetSecretValue of `secret` (its JSON key is the gate's to take).
    ///
    /// # Errors
    /// A [`KmsError`] of the kind that matches the failure.
    async fn get_secret_value(&self, secret: &SecretId) -> Result<Fetched, KmsError>;

    /// SSM's GetParameters of up to [`MAX_PARAMETERS_PER_CALL`] parameters, with decryption: one call, one answer
    /// per parameter, in order (a parameter SSM does not have is `denied`).
    async fn get_parameters(&self, parameters: &[&ParameterId]) -> Vec<Result<Fetched, KmsError>>;
}

/// The value under `key` of a secret whose value is a JSON object: a string's text, or any other value's JSON
/// text. The error names the key, never the value (nor serde's message, which may quote it).
///
/// # Errors
/// `invalid-ciphertext`: the value is not a JSON object, or has no such key.
pub(crate) fn json_value(value: &Plaintext, key: &str, secret: &str) -> Result<Plaintext, KmsError> {
    let mut parsed: serde_json::Value = match serde_json::from_slice(value.expose_secret()) {
        Ok(parsed) => parsed,
        Err(_) => serde_json::Value::Null,
    };
    let taken = match &parsed {
        serde_json::Value::Object(object) => match object.get(key) {
            // The other keys are the secret's too: counted, never named.
            None => Err(KmsError::InvalidCiphertext(format!(
                "{secret}'s JSON value has no key {key:?} (it has {} other keys)",
                object.len()
            ))),
            Some(serde_json::Value::String(text)) => Ok(Plaintext::from(text.as_bytes().to_vec())),
            Some(other) => Ok(Plaintext::from(Zeroizing::new(other.to_string()).as_bytes().to_vec())),
        },
        _ => Err(KmsError::InvalidCiphertext(format!(
            "{secret}'s value is not a JSON object, so it has no key {key:?}: drop #{key} to use the whole value"
        ))),
    };
    // The parsed copy holds every value of the secret: its strings are wiped before it goes.
    scrub(&mut parsed);
    taken
}

/// Zeroizes every string in `value`.
fn scrub(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(text) => text.zeroize(),
        serde_json::Value::Array(items) => items.iter_mut().for_each(scrub),
        serde_json::Value::Object(object) => object.values_mut().for_each(scrub),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_key_takes_its_value_and_a_mistake_names_the_key_only() {
        let secret = Plaintext::from(br#"{"username":"app","password":"s3cret-json","port":5432}"#.to_vec());
        assert_eq!(json_value(&secret, "password", "DB").unwrap().expose_secret(), b"s3cret-json");
        assert_eq!(json_value(&secret, "port", "DB").unwrap().expose_secret(), b"5432");
        let missing = json_value(&secret, "pass", "DB").unwrap_err().to_string();
        assert_eq!(missing, r#"invalid-ciphertext: DB's JSON value has no key "pass" (it has 3 other keys)"#);
        let not_json = json_value(&Plaintext::from(b"s3cret-plain".to_vec()), "password", "DB").unwrap_err();
        assert!(!not_json.to_string().contains("s3cret"), "{not_json}");
        assert!(not_json.to_string().contains("not a JSON object"), "{not_json}");
        let array = json_value(&Plaintext::from(br#"["s3cret-array"]"#.to_vec()), "0", "DB").unwrap_err();
        assert!(!array.to_string().contains("s3cret"), "{array}");
    }
}
