//! An HTTP handler as `wasmtime serve` and Spin run it: it exports `wasi:http/incoming-handler` with the standard
//! `wasip2` bindings and no keyward SDK. keyward runs it as a Lambda function behind a Function URL, API Gateway or
//! an ALB; it answers every request with a greeting, and proof that it read its secret `PASSWORD` through keyward's
//! `kms.secret` (a prefix of its SHA-256, never the secret).

use std::io::Write as _;

use sha2::{Digest as _, Sha256};
use wasip2::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

#[allow(unsafe_code)] // wit-bindgen's generated ABI glue
mod keyward {
    wit_bindgen::generate!({ world: "secrets", path: "../../../wit" });
}

use keyward::keyward::lambda::kms;

struct Hello;

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let (status, body) = match kms::secret("PASSWORD") {
            Ok(secret) => {
                let digest = Sha256::digest(&secret);
                let prefix: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
                (200, format!("{{\"greeting\":\"hello from {}\",\"secret_sha256_prefix\":\"{prefix}\"}}", json(&path)))
            }
            // The error is the host's words, which never hold a secret.
            Err(e) => {
                let (kind, why) = match e {
                    kms::Error::Denied(why) => ("denied", why),
                    kms::Error::InvalidCiphertext(why) => ("invalid-ciphertext", why),
                    kms::Error::Unavailable(why) => ("unavailable", why),
                };
                (500, format!("{{\"error\":\"{kind}: {}\"}}", json(&why)))
            }
        };
        let headers = Fields::from_list(&[("content-type".into(), b"application/json".to_vec())])
            .expect("content-type is a valid header");
        let response = OutgoingResponse::new(headers);
        response.set_status_code(status).expect("200 and 500 are valid statuses");
        let outgoing = response.body().expect("the body is taken once");
        ResponseOutparam::set(response_out, Ok(response));
        let mut stream = outgoing.write().expect("the stream is taken once");
        // A failed write means the host stopped reading (the invocation ended): nothing is left to do.
        let written = stream.write_all(body.as_bytes()).and_then(|()| std::io::Write::flush(&mut stream));
        drop(stream);
        if written.is_ok() {
            let _ = OutgoingBody::finish(outgoing, None);
        }
    }
}

/// `text` escaped for a JSON string.
fn json(text: &str) -> String {
    text.chars()
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c if c.is_control() => format!("\\u{:04x}", c as u32).chars().collect(),
            c => vec![c],
        })
        .collect()
}

wasip2::http::proxy::export!(Hello);
