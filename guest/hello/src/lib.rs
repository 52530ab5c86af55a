//! The classic secret handler, as a keyward guest.
//!
//! It reads the KMS ciphertext from the `PASSWORD` environment variable (base64), asks the host to decrypt it
//! through the `kms` capability, and answers with a fingerprint of the secret — never the secret itself.

use base64::Engine as _;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

#[allow(unsafe_code)] // wit-bindgen's generated ABI glue
mod bindings {
    wit_bindgen::generate!({
        world: "secret-handler",
        path: "../../wit",
    });

    use super::Hello;
    export!(Hello);
}

use bindings::exports::keyward::lambda::handler::{Context, Guest};
use bindings::keyward::lambda::kms;

struct Hello;

impl Guest for Hello {
    fn handle(_event: String, _ctx: Context) -> Result<String, String> {
        let encoded = std::env::var("PASSWORD").map_err(|_| "env var PASSWORD is not set".to_string())?;
        let ciphertext = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| format!("env var PASSWORD is not base64: {e}"))?;
        let plaintext = Zeroizing::new(kms::decrypt(&ciphertext, &[]).map_err(describe)?);
        let fingerprint = Sha256::digest(plaintext.as_slice());

        let body = serde_json::json!({
            "message": "hello",
            "secret_sha256_prefix": hex_prefix(&fingerprint, 4),
        });
        let response = serde_json::json!({
            "statusCode": 200,
            "headers": { "Content-Type": "application/json" },
            "body": body.to_string(),
        });
        Ok(response.to_string())
    }
}

/// Names the kind of KMS error, so the function error tells an operator where to look.
fn describe(error: kms::Error) -> String {
    match error {
        kms::Error::Denied(msg) => format!("kms denied: {msg}"),
        kms::Error::InvalidCiphertext(msg) => format!("kms invalid-ciphertext: {msg}"),
        kms::Error::Unavailable(msg) => format!("kms unavailable: {msg}"),
    }
}

fn hex_prefix(bytes: &[u8], n: usize) -> String {
    bytes[..n].iter().map(|b| format!("{b:02x}")).collect()
}
