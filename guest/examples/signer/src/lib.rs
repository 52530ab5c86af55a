//! A signing service whose private key never leaves the sandbox unencrypted: the PEM (PKCS#8) ed25519 key arrives
//! as a KMS ciphertext in `SIGNING_KEY`; each request's body is signed and the signature returned.

use base64::Engine as _;
use ed25519_dalek::pkcs8::DecodePrivateKey as _;
use ed25519_dalek::{Signer as _, SigningKey};
use keyward_guest::http::{FunctionUrlRequest, FunctionUrlResponse, body_bytes, json_response};
use keyward_guest::{Context, Error, Handler, secret_from_env};
use serde_json::json;

struct Signer;

impl Handler for Signer {
    type Event = FunctionUrlRequest;
    type Response = FunctionUrlResponse;

    fn handle(request: FunctionUrlRequest, _ctx: &Context) -> Result<FunctionUrlResponse, Error> {
        let pem = secret_from_env("SIGNING_KEY")?;
        // SigningKey zeroizes itself on drop; the error message does not quote the key.
        let key = SigningKey::from_pkcs8_pem(pem.expose_str()?)
            .map_err(|_| Error::new("SIGNING_KEY does not hold a PEM (PKCS#8) ed25519 private key"))?;
        let body = body_bytes(&request)?;
        let signature = key.sign(&body);
        let b64 = base64::engine::general_purpose::STANDARD;
        Ok(json_response(
            200,
            &json!({
                "algorithm": "ed25519",
                "signature": b64.encode(signature.to_bytes()),
                "public_key": b64.encode(key.verifying_key().to_bytes()),
            }),
        ))
    }
}

keyward_guest::export!(Signer);
