//! The classic secret handler, as a keyward guest.
//!
//! It reads the KMS ciphertext from the `PASSWORD` environment variable (base64), asks the host to decrypt it,
//! and answers with a fingerprint of the secret — never the secret itself.

use keyward_guest::{Context, Error, Handler, secret};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

struct Hello;

impl Handler for Hello {
    // Any JSON event: hello does not read it.
    type Event = Value;
    type Response = Value;

    fn handle(_event: Value, _ctx: &Context) -> Result<Value, Error> {
        let password = secret("PASSWORD")?;
        let fingerprint = Sha256::digest(password.expose());
        let prefix: String = fingerprint[..4].iter().map(|b| format!("{b:02x}")).collect();
        let body = json!({ "message": "hello", "secret_sha256_prefix": prefix });
        Ok(json!({
            "statusCode": 200,
            "headers": { "Content-Type": "application/json" },
            "body": body.to_string(),
        }))
    }
}

keyward_guest::export!(Hello);
