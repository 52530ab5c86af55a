//! A signing service that never holds its private key: the PEM (PKCS#8) ed25519 key arrives as a KMS ciphertext in
//! `SIGNING_KEY`, and the host keeps it. The guest holds a handle; each request's body is signed by the host and
//! the signature returned with the public key.

use base64::Engine as _;
use keyward_guest::http::{FunctionUrlRequest, FunctionUrlResponse, body_bytes, json_response};
use keyward_guest::{Context, Error, Handler, KeyError, SignatureAlgorithm};
use serde_json::json;

struct Signer;

impl Handler for Signer {
    type Event = FunctionUrlRequest;
    type Response = FunctionUrlResponse;

    fn handle(request: FunctionUrlRequest, _ctx: &Context) -> Result<FunctionUrlResponse, Error> {
        let key = keyward_guest::key("SIGNING_KEY")?;
        let body = body_bytes(&request)?;
        let signature = key.sign(SignatureAlgorithm::Ed25519, &body).map_err(|e| match e {
            KeyError::Unsupported(why) => Error::new(format!("SIGNING_KEY is not an ed25519 private key: {why}")),
            other => other.into(),
        })?;
        let b64 = base64::engine::general_purpose::STANDARD;
        Ok(json_response(
            200,
            &json!({
                "algorithm": "ed25519",
                "signature": b64.encode(signature),
                "public_key": b64.encode(key.public_key()?),
            }),
        ))
    }
}

keyward_guest::export!(Signer);
