//! An HTTP component's response to the answer its event's service expects, as lambda_http 0.17 shapes it
//! (aws-lambda-rust-runtime `lambda-http/src/response.rs`), but for the differences docs/http.md lists: a v2
//! response's repeated headers joined with commas (lambda_http keeps the first), an ALB response in the one header
//! map its target group reads, and a body that is not UTF-8 sent as base64 whatever its content type (lambda_http
//! decodes it lossily).

use base64::Engine as _;
use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE, SET_COOKIE};
use http::{HeaderMap, HeaderName, StatusCode};
use serde_json::{Map, Value, json};

use super::Shape;

/// Content types whose body is sent as text (when it is UTF-8): lambda_http's list, from MDN's common types and
/// the YAML media type draft.
const TEXT_PREFIXES: [&str; 5] =
    ["text/", "application/json", "application/javascript", "application/xml", "application/yaml"];
/// Structured-syntax suffixes (RFC 6839) of text types.
const TEXT_SUFFIXES: [&str; 3] = ["+xml", "+yaml", "+json"];

/// The response JSON for `shape`: status, headers and the body, as text or base64 (`isBase64Encoded`).
pub(crate) fn to_json(shape: Shape, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> String {
    let (body, base64) = match (is_text(headers), std::str::from_utf8(body)) {
        (true, Ok(text)) => (text.to_string(), false),
        _ => (base64::engine::general_purpose::STANDARD.encode(body), true),
    };
    let mut response = Map::new();
    response.insert("statusCode".into(), json!(status.as_u16()));
    match shape {
        Shape::RestApi => {
            // Both maps are merged by API Gateway: headers given in both would be sent twice.
            response.insert("headers".into(), json!({}));
            response.insert("multiValueHeaders".into(), Value::Object(multi_value(headers)));
        }
        Shape::HttpApi => {
            let cookies: Vec<String> = headers.get_all(SET_COOKIE).iter().map(text).collect();
            response.insert("headers".into(), Value::Object(joined(headers, |name| name != SET_COOKIE)));
            if !cookies.is_empty() {
                response.insert("cookies".into(), json!(cookies));
            }
        }
        Shape::Alb { multi_value: multi } => {
            let reason = status.canonical_reason().unwrap_or_default();
            response.insert("statusDescription".into(), json!(format!("{} {reason}", status.as_u16())));
            if multi {
                response.insert("multiValueHeaders".into(), Value::Object(multi_value(headers)));
            } else {
                // One value per name: repeated headers are joined, but Set-Cookie values cannot be.
                let mut single = joined(headers, |name| name != SET_COOKIE);
                let cookies = headers.get_all(SET_COOKIE);
                if let Some(last) = cookies.iter().next_back() {
                    single.insert(SET_COOKIE.as_str().into(), json!(text(last)));
                }
                if cookies.iter().count() > 1 {
                    tracing::warn!(
                        "the ALB target group takes one value per header, so only the last Set-Cookie is sent: turn \
                         on multi-value headers for the target group to send them all"
                    );
                }
                response.insert("headers".into(), Value::Object(single));
            }
        }
    }
    if !body.is_empty() {
        response.insert("body".into(), json!(body));
    }
    response.insert("isBase64Encoded".into(), json!(base64));
    Value::Object(response).to_string()
}

/// The answer to an HTTP event whose component failed: `500 Internal Server Error`, its body one line naming the
/// error type and the request id. The error itself goes to the log only: it is for the function's team, and may
/// hold what the guest set (an `error-code`'s text).
pub(crate) fn failure(shape: Shape, error_type: &str, request_id: &str) -> String {
    let response = failure_response(error_type, request_id);
    to_json(shape, response.status(), response.headers(), response.body())
}

/// [`failure`]'s answer as an HTTP response, for the local server.
pub(crate) fn failure_response(error_type: &str, request_id: &str) -> http::Response<Bytes> {
    let body = format!("Internal Server Error: the function failed ({error_type}); request id {request_id}\n");
    let mut response = http::Response::new(Bytes::from(body));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response.headers_mut().insert(CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// Whether the body is text by its headers: not content-encoded, and of no content type or a text one.
fn is_text(headers: &HeaderMap) -> bool {
    if headers.contains_key(CONTENT_ENCODING) {
        return false;
    }
    let Some(content_type) = headers.get(CONTENT_TYPE) else { return true };
    let essence = text(content_type);
    let essence = essence.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    TEXT_PREFIXES.iter().any(|prefix| essence.starts_with(prefix))
        || TEXT_SUFFIXES.iter().any(|suffix| essence.ends_with(suffix))
}

/// A header value as JSON text: a value with bytes past ASCII (obs-text) is read as UTF-8, lossily.
fn text(value: &http::HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes()).into_owned()
}

/// Every header with all its values.
fn multi_value(headers: &HeaderMap) -> Map<String, Value> {
    headers.keys().map(|name| (name.to_string(), json!(values(headers, name)))).collect()
}

/// Repeated headers joined with `", "` (RFC 9110 §5.3), but for those `keep` leaves out.
fn joined(headers: &HeaderMap, keep: impl Fn(&HeaderName) -> bool) -> Map<String, Value> {
    headers
        .keys()
        .filter(|name| keep(name))
        .map(|name| (name.to_string(), json!(values(headers, name).join(", "))))
        .collect()
}

fn values(headers: &HeaderMap, name: &HeaderName) -> Vec<String> {
    headers.get_all(name).iter().map(text).collect()
}
