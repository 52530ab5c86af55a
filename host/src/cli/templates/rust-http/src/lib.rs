//! A keyward HTTP handler: a wasi:http component (as `wasmtime serve` and Spin run them) that keyward runs as a
//! Lambda function behind a Function URL, API Gateway or an ALB, sandboxed; it reaches its secret only through
//! the host.

use std::io::Write as _;

use serde_json::json;
use wasip2::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct Handler;

impl wasip2::exports::http::incoming_handler::Guest for Handler {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        // PASSWORD is fetched and decrypted by the host under its policy; the guest holds it only here.
        let (status, body) = match keyward_guest::secret("PASSWORD") {
            Ok(password) => (200, json!({ "path": path, "secret_bytes": password.expose().len() })),
            Err(e) => (500, json!({ "error": e.to_string() })),
        };
        let body = body.to_string();
        let headers = Fields::from_list(&[("content-type".into(), b"application/json".to_vec())]).unwrap();
        let response = OutgoingResponse::new(headers);
        response.set_status_code(status).unwrap();
        let outgoing = response.body().unwrap();
        ResponseOutparam::set(response_out, Ok(response));
        let mut stream = outgoing.write().unwrap();
        if stream.write_all(body.as_bytes()).and_then(|()| std::io::Write::flush(&mut stream)).is_ok() {
            drop(stream);
            let _ = OutgoingBody::finish(outgoing, None);
        }
    }
}

wasip2::http::proxy::export!(Handler);
