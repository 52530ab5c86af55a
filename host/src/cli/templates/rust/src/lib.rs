//! A keyward guest: a Lambda handler that runs sandboxed, and reaches its secret only through the host.

use keyward_guest::http::{FunctionUrlRequest, FunctionUrlResponse, json_response};
use keyward_guest::{Context, Error, Handler, secret_from_env};
use serde_json::json;

struct Guest;

impl Handler for Guest {
    type Event = FunctionUrlRequest;
    type Response = FunctionUrlResponse;

    fn handle(request: FunctionUrlRequest, ctx: &Context) -> Result<FunctionUrlResponse, Error> {
        // PASSWORD holds a base64 KMS ciphertext; the host decrypts it under its policy.
        let password = secret_from_env("PASSWORD")?;
        let path = request.raw_path.unwrap_or_default();
        Ok(json_response(
            200,
            &json!({ "path": path, "request_id": ctx.request_id, "secret_bytes": password.expose().len() }),
        ))
    }
}

keyward_guest::export!(Guest);
