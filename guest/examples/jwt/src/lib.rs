//! A token service that never holds its signing key: an ECDSA P-256 private key (PEM or DER; PKCS#8 or SEC1)
//! arrives as a KMS ciphertext in `JWT_SIGNING_KEY` and stays in the host. Each request's JSON body names a subject;
//! the guest mints an ES256 JWT for it, valid for five minutes, with the key id of `JWT_KEY_ID` in its header.

use std::time::{SystemTime, UNIX_EPOCH};

use keyward_guest::http::{FunctionUrlRequest, FunctionUrlResponse, body_bytes, json_response};
use keyward_guest::{Context, Error, Handler, JwtAlgorithm};
use serde_json::json;

/// How long a token is valid, in seconds.
const LIFETIME_SECS: u64 = 300;

#[derive(serde::Deserialize)]
struct TokenRequest {
    sub: String,
}

struct Minter;

impl Handler for Minter {
    type Event = FunctionUrlRequest;
    type Response = FunctionUrlResponse;

    fn handle(request: FunctionUrlRequest, _ctx: &Context) -> Result<FunctionUrlResponse, Error> {
        let body = body_bytes(&request)?;
        let sub = match serde_json::from_slice::<TokenRequest>(&body) {
            Ok(TokenRequest { sub }) if !sub.is_empty() && sub.len() <= 256 => sub,
            _ => {
                return Ok(json_response(
                    400,
                    &json!({"error": "the body must be {\"sub\": \"<1 to 256 characters>\"}"}),
                ));
            }
        };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|_| Error::new("the clock is before 1970"))?;
        let (iat, exp) = (now.as_secs(), now.as_secs() + LIFETIME_SECS);
        let kid = std::env::var("JWT_KEY_ID").unwrap_or_else(|_| "default".into());
        let key = keyward_guest::key("JWT_SIGNING_KEY")?;
        let token =
            key.sign_jwt(JwtAlgorithm::Es256, &json!({"kid": kid}), &json!({"sub": sub, "iat": iat, "exp": exp}))?;
        Ok(json_response(200, &json!({"token": token, "expires_at": exp})))
    }
}

keyward_guest::export!(Minter);
