//! The password used, never held: a handler that charges a card through a payment API whose key it never sees.
//!
//! The function is configured with the key's KMS ciphertext in `API_KEY` and
//! `KEYWARD_INJECT_API_KEY=https://api.example.com Authorization: Bearer {secret}`: the host adds the header to
//! requests to that origin only. The guest asks for no secret; `kms.decrypt` on `API_KEY` would be denied. To try it
//! against a local server:
//!
//! ```sh
//! keyward invoke target/wasm32-wasip2/release/api_client.wasm --key k.key --event charge.json \
//!     --env API_URL=http://127.0.0.1:8080 --env API_KEY=$(keyward encrypt --key k.key --plaintext sk_test_123) \
//!     --allow-outbound http://127.0.0.1:8080 --inject 'API_KEY=http://127.0.0.1:8080 Authorization: Bearer {secret}'
//! ```

use keyward_guest::fetch::Request;
use keyward_guest::{Context, Error, Handler};
use serde::Deserialize;
use serde_json::{Value, json};

/// Where the API lives unless the guest env var `API_URL` says (the function's `KEYWARD_ALLOW_OUTBOUND` must allow
/// it, and its `KEYWARD_INJECT_API_KEY` name it).
const API: &str = "https://api.example.com";

/// The event: what to charge.
#[derive(Deserialize)]
struct Charge {
    amount: u64,
    currency: String,
}

struct ApiClient;

impl Handler for ApiClient {
    type Event = Charge;
    type Response = Value;

    fn handle(charge: Charge, ctx: &Context) -> Result<Value, Error> {
        let body = json!({ "amount": charge.amount, "currency": charge.currency }).to_string();
        let api = std::env::var("API_URL").unwrap_or_else(|_| API.to_string());
        let response = Request::post(&format!("{api}/v1/charges"))
            .header("content-type", "application/json")
            // Retried charges are charged once: the API keys them by the invocation.
            .header("idempotency-key", &ctx.request_id)
            .body(body)
            .send()
            .map_err(|e| Error::new(format!("payment API unreachable: {e}")))?;
        if response.status != 200 {
            return Err(Error::new(format!("payment API answered {}: {}", response.status, response.text())));
        }
        let answer: Value = serde_json::from_slice(&response.body)
            .map_err(|e| Error::new(format!("payment API answered non-JSON: {e}")))?;
        Ok(json!({ "charge": answer["id"], "status": answer["status"] }))
    }
}

keyward_guest::export!(ApiClient);
