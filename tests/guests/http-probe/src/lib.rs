//! A test guest of the HTTP world (`wasi:http/proxy` plus keyward's `secrets`): what it does is its path's.
//!
//! - `/echo`: the request as it arrived, as JSON (method, scheme, authority, path and query, headers in order, the
//!   body in base64).
//! - `/reflect`: status 201, the request's body and content type back, two `Set-Cookie`s and a header given twice.
//! - `/secret?NAME`: a prefix of the SHA-256 of the secret `NAME` (`kms.secret`), or its error.
//! - `/huge?BYTES`: a body of that many bytes, streamed.
//! - `/silent`: returns without setting its response. `/unfinished`: sets it, never finishes its body.
//! - `/trap-after`: sets its response, writes some of it, then traps. `/error-code`: answers with an error code.
//! - `/spin`: loops until the host stops it.

use base64::Engine as _;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use wasip2::http::types::{
    ErrorCode, Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam, Scheme,
};
use wasip2::io::streams::{OutputStream, StreamError};

#[allow(unsafe_code)] // wit-bindgen's generated ABI glue
mod keyward {
    wit_bindgen::generate!({ world: "secrets", path: "../../../wit" });
}

struct Probe;

impl wasip2::exports::http::incoming_handler::Guest for Probe {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path_with_query = request.path_with_query().unwrap_or_default();
        let (path, query) = path_with_query.split_once('?').unwrap_or((&path_with_query, ""));
        match path {
            "/echo" => {
                let headers: Vec<(String, String)> = request
                    .headers()
                    .entries()
                    .into_iter()
                    .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
                    .collect();
                let answer = json!({
                    "method": method(&request.method()),
                    "scheme": request.scheme().map(|s| scheme(&s)),
                    "authority": request.authority(),
                    "path_with_query": path_with_query,
                    "headers": headers,
                    "body_base64": base64::engine::general_purpose::STANDARD.encode(read_body(request)),
                });
                answer_with(response_out, 200, &[("content-type", b"application/json")], answer.to_string().as_bytes());
            }
            "/reflect" => {
                let content_type = request.headers().get("content-type").into_iter().next().unwrap_or_default();
                let body = read_body(request);
                let headers: [(&str, &[u8]); 5] = [
                    ("content-type", &content_type),
                    ("set-cookie", b"a=1; Path=/"),
                    ("set-cookie", b"b=2; HttpOnly"),
                    ("x-twice", b"one"),
                    ("x-twice", b"two"),
                ];
                answer_with(response_out, 201, &headers, &body);
            }
            "/secret" => {
                let body = match keyward::keyward::lambda::kms::secret(query) {
                    Ok(secret) => json!({ "sha256_prefix": hex(&Sha256::digest(&secret)[..4]) }),
                    Err(e) => json!({ "error": format!("{e:?}") }),
                };
                answer_with(response_out, 200, &[("content-type", b"application/json")], body.to_string().as_bytes());
            }
            "/huge" => {
                let bytes: usize = query.parse().unwrap_or(0);
                let (outgoing, stream) = start(response_out, 200, &[("content-type", b"application/octet-stream")]);
                let chunk = [b'x'; 4096];
                let mut left = bytes;
                while left > 0 {
                    let n = left.min(chunk.len());
                    if write(&stream, &chunk[..n]).is_err() {
                        return;
                    }
                    left -= n;
                }
                drop(stream);
                let _ = OutgoingBody::finish(outgoing, None);
            }
            "/silent" => drop(response_out),
            "/unfinished" => {
                let (outgoing, stream) = start(response_out, 200, &[]);
                let _ = write(&stream, b"half of it");
                // Leaked: the body is neither finished nor dropped before the handler returns.
                std::mem::forget((stream, outgoing));
            }
            "/trap-after" => {
                let (_outgoing, stream) = start(response_out, 200, &[]);
                let _ = write(&stream, b"some of it");
                // A panic is a trap in wasm32-wasip2 (`unreachable`, after the message on stderr).
                panic!("the probe traps after answering");
            }
            "/error-code" => ResponseOutparam::set(response_out, Err(ErrorCode::InternalError(Some("probe".into())))),
            "/spin" => loop {
                std::hint::black_box(());
            },
            _ => answer_with(response_out, 404, &[], b"no such probe\n"),
        }
    }
}

/// Sets the response (status and headers) and opens its body.
fn start(response_out: ResponseOutparam, status: u16, headers: &[(&str, &[u8])]) -> (OutgoingBody, OutputStream) {
    let list: Vec<(String, Vec<u8>)> = headers.iter().map(|(n, v)| (n.to_string(), v.to_vec())).collect();
    let response = OutgoingResponse::new(Fields::from_list(&list).expect("valid headers"));
    response.set_status_code(status).expect("a valid status");
    let outgoing = response.body().expect("the body is taken once");
    ResponseOutparam::set(response_out, Ok(response));
    let stream = outgoing.write().expect("the stream is taken once");
    (outgoing, stream)
}

/// A whole response.
fn answer_with(response_out: ResponseOutparam, status: u16, headers: &[(&str, &[u8])], body: &[u8]) {
    let (outgoing, stream) = start(response_out, status, headers);
    if write(&stream, body).is_ok() {
        drop(stream);
        let _ = OutgoingBody::finish(outgoing, None);
    }
}

/// Writes all of `bytes`, as much at a time as the stream takes.
fn write(stream: &OutputStream, mut bytes: &[u8]) -> Result<(), StreamError> {
    while !bytes.is_empty() {
        let n = bytes.len().min(4096);
        stream.blocking_write_and_flush(&bytes[..n])?;
        bytes = &bytes[n..];
    }
    Ok(())
}

/// The request's body, whole.
fn read_body(request: IncomingRequest) -> Vec<u8> {
    let Ok(body) = request.consume() else { return Vec::new() };
    let Ok(stream) = body.stream() else { return Vec::new() };
    let mut bytes = Vec::new();
    // Read to the end (or to a broken stream: what arrived is what there is).
    while let Ok(chunk) = stream.blocking_read(64 * 1024) {
        bytes.extend(chunk);
    }
    bytes
}

fn method(method: &Method) -> String {
    match method {
        Method::Get => "GET".into(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Connect => "CONNECT".into(),
        Method::Options => "OPTIONS".into(),
        Method::Trace => "TRACE".into(),
        Method::Patch => "PATCH".into(),
        Method::Other(other) => other.clone(),
    }
}

fn scheme(scheme: &Scheme) -> String {
    match scheme {
        Scheme::Http => "http".into(),
        Scheme::Https => "https".into(),
        Scheme::Other(other) => other.clone(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

wasip2::http::proxy::export!(Probe);
