//! keyward's client of the Lambda Runtime API (<https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html>):
//! fetch the next invocation, post its response or its error, report an init error.
//!
//! Why not `lambda_runtime::run`: lambda_runtime 1.5 builds each invocation's `Context` in `process_invocation`,
//! before any handler or tower layer runs, and from there a missing `Lambda-Runtime-Deadline-Ms` or request-id
//! header panics (`expect`), while a client context or Cognito identity that does not deserialize into its types
//! (a number in `custom`, text that is not JSON), or a header that is not visible ASCII, returns an error out of
//! `Runtime::run`, which ends the process. Nothing outside the crate can intercept that, and any caller with
//! `lambda:InvokeFunction` chooses the client context. So keyward drives the same wire format over the same HTTP
//! client (`lambda_runtime_api_client`), reads only the headers it uses, and turns whatever else arrives into a
//! function error for that one invocation.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use http_body_util::{BodyExt as _, Limited};
use lambda_runtime_api_client::body::Body;
use lambda_runtime_api_client::{PooledClient, build_request};

use super::diagnostic::Diagnostic;
use crate::error::{InvokeError, bounded, one_line, root_cause};
use crate::sandbox::LAMBDA_PAYLOAD_LIMIT;

const REQUEST_ID: &str = "lambda-runtime-aws-request-id";
const DEADLINE_MS: &str = "lambda-runtime-deadline-ms";
const FUNCTION_ARN: &str = "lambda-runtime-invoked-function-arn";
/// Sent by newer Runtime APIs and echoed on the response, so a late answer to a timed-out invocation is refused.
const INVOCATION_ID: &str = "lambda-runtime-invocation-id";
const ERROR_TYPE: &str = "lambda-runtime-function-error-type";
const API_VERSION: &str = "/2018-06-01/runtime";
/// How long a response, error or init error may take to be accepted.
const POST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why talking to the Runtime API failed (not an invocation's failure: that is an [`InvokeError`]).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeApiError {
    /// `AWS_LAMBDA_RUNTIME_API` is missing or unusable.
    #[error("{0}")]
    Config(String),
    /// The request did not get an answer that could be read.
    #[error("the request to the Lambda Runtime API at {endpoint} ({path}) failed: {cause}")]
    Transport {
        /// The Runtime API's address.
        endpoint: String,
        /// The path asked for.
        path: String,
        /// The root cause, one line.
        cause: String,
    },
    /// The Runtime API answered with an error status.
    #[error("the Lambda Runtime API answered {path} with HTTP {status}{body}")]
    Status {
        /// The path asked for.
        path: String,
        /// The status.
        status: u16,
        /// The start of what it said, if anything.
        body: String,
    },
    /// One of the concurrent invocation loops stopped (a bug: it panicked).
    #[error("an invocation loop stopped: {0}")]
    LoopStopped(String),
}

/// One invocation as the Runtime API handed it over: what keyward uses of its headers, and its event.
#[derive(Debug)]
pub(crate) struct NextInvocation {
    /// `Lambda-Runtime-Aws-Request-Id`: where the outcome is posted.
    pub(crate) request_id: String,
    invocation_id: Option<HeaderValue>,
    /// `Lambda-Runtime-Invoked-Function-Arn`, or empty.
    pub(crate) function_arn: String,
    /// `Lambda-Runtime-Deadline-Ms` as a time; `None` when missing or unreadable (the configured timeout applies).
    pub(crate) deadline: Option<SystemTime>,
    /// The event's bytes, or why they could not be read.
    pub(crate) event: Result<Bytes, InvokeError>,
}

/// What a poll of `/next` gave.
#[derive(Debug)]
pub(crate) enum Next {
    /// An invocation to serve.
    Invocation(NextInvocation),
    /// An invocation that cannot be answered (no usable request id): skipped, with the reason.
    Unanswerable(String),
}

/// A client of the Runtime API at `AWS_LAMBDA_RUNTIME_API`.
#[derive(Debug)]
pub(crate) struct RuntimeApi {
    client: PooledClient,
    endpoint: String,
}

impl RuntimeApi {
    /// A client of the Runtime API at `address` (`host:port`, as Lambda sets `AWS_LAMBDA_RUNTIME_API`, or a URL
    /// with a base path, as some emulators do).
    ///
    /// # Errors
    /// [`RuntimeApiError::Config`] when the address is missing or not a usable `host:port`.
    pub(crate) fn new(address: Option<&str>) -> Result<Self, RuntimeApiError> {
        let address = address.map(str::trim).filter(|a| !a.is_empty()).ok_or_else(|| {
            RuntimeApiError::Config(
                "AWS_LAMBDA_RUNTIME_API is not set: `keyward lambda` runs under Lambda or a Runtime API emulator"
                    .into(),
            )
        })?;
        let url = if address.contains("://") { address.to_string() } else { format!("http://{address}") };
        // Checked here, so the client's own `expect`s on the base URI can never fire.
        let uri = crate::address::parse_url(&url, &["http"]).ok_or_else(|| {
            RuntimeApiError::Config(format!(
                "AWS_LAMBDA_RUNTIME_API={:?} is not a host:port of the Lambda Runtime API",
                bounded(address, 128)
            ))
        })?;
        Ok(Self { client: PooledClient::builder().with_endpoint(uri).build(), endpoint: address.to_string() })
    }

    /// Waits for the next invocation (`GET /invocation/next`).
    ///
    /// # Errors
    /// [`RuntimeApiError`] when the Runtime API cannot be reached or answers with an error status.
    pub(crate) async fn next(&self) -> Result<Next, RuntimeApiError> {
        let path = format!("{API_VERSION}/invocation/next");
        let response = self.send(Method::GET, &path, Vec::new(), Body::empty()).await?;
        let (parts, body) = response.into_parts();
        let request_id = match parts.headers.get(REQUEST_ID).map(HeaderValue::to_str) {
            Some(Ok(id)) if is_path_safe(id) => id.to_string(),
            Some(Ok(id)) => {
                return Ok(Next::Unanswerable(format!(
                    "its request id {:?} cannot be part of a URL path",
                    bounded(id, 64)
                )));
            }
            Some(Err(_)) => return Ok(Next::Unanswerable("its request id is not visible ASCII".into())),
            None => return Ok(Next::Unanswerable("it has no Lambda-Runtime-Aws-Request-Id header".into())),
        };
        let event = match Limited::new(body, LAMBDA_PAYLOAD_LIMIT).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                Err(InvokeError::InvalidEvent(format!("is larger than Lambda's limit of {LAMBDA_PAYLOAD_LIMIT} bytes")))
            }
            Err(e) => Err(InvokeError::InvalidInvocation(format!(
                "the event could not be read from the Runtime API: {}",
                root_cause(e.as_ref())
            ))),
        };
        Ok(Next::Invocation(NextInvocation {
            request_id,
            invocation_id: parts.headers.get(INVOCATION_ID).cloned(),
            function_arn: text_header(&parts.headers, FUNCTION_ARN).unwrap_or_default(),
            deadline: deadline_header(&parts.headers, SystemTime::now()),
            event,
        }))
    }

    /// Posts the invocation's response (`POST /invocation/{id}/response`).
    ///
    /// # Errors
    /// [`RuntimeApiError`] when the Runtime API cannot be reached or refuses the response (HTTP 413: too large).
    pub(crate) async fn respond(&self, invocation: &NextInvocation, response: String) -> Result<(), RuntimeApiError> {
        let path = format!("{API_VERSION}/invocation/{}/response", invocation.request_id);
        let headers = invocation.invocation_id.iter().map(|id| (INVOCATION_ID, id.clone())).collect();
        self.send(Method::POST, &path, headers, Body::from(response)).await.map(drop)
    }

    /// Posts the invocation's error (`POST /invocation/{id}/error`), its `errorType` also in the
    /// `Lambda-Runtime-Function-Error-Type` header.
    ///
    /// # Errors
    /// [`RuntimeApiError`] when the Runtime API cannot be reached or refuses the error.
    pub(crate) async fn fail(&self, invocation: &NextInvocation, error: &Diagnostic) -> Result<(), RuntimeApiError> {
        let path = format!("{API_VERSION}/invocation/{}/error", invocation.request_id);
        let mut headers = vec![(ERROR_TYPE, error_type_header(error))];
        headers.extend(invocation.invocation_id.iter().map(|id| (INVOCATION_ID, id.clone())));
        self.send(Method::POST, &path, headers, Body::from(error.to_json())).await.map(drop)
    }

    /// Reports a failed init (`POST /init/error`); Lambda then fails the invocation that was waiting with
    /// `Runtime.InitError` and the message.
    ///
    /// # Errors
    /// [`RuntimeApiError`] when the Runtime API cannot be reached or refuses the report.
    pub(crate) async fn init_error(&self, error: &Diagnostic) -> Result<(), RuntimeApiError> {
        let path = format!("{API_VERSION}/init/error");
        let headers = vec![(ERROR_TYPE, error_type_header(error))];
        self.send(Method::POST, &path, headers, Body::from(error.to_json())).await.map(drop)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: Vec<(&'static str, HeaderValue)>,
        body: Body,
    ) -> Result<http::Response<hyper::body::Incoming>, RuntimeApiError> {
        let method_is_get = method == Method::GET;
        let mut request = build_request().method(method).uri(path);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request.body(body).map_err(|e| self.transport(path, &e))?;
        let call = self.client.call(request);
        // `/next` waits for an invocation as long as it takes; every other request is answered at once by Lambda,
        // and one that is not (some emulators hold an init error) must not hold the process forever.
        let response = if method_is_get {
            call.await
        } else {
            tokio::time::timeout(POST_TIMEOUT, call)
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {} s", POST_TIMEOUT.as_secs()).into()))
        };
        let response = response.map_err(|e| self.transport(path, e.as_ref()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        // RAPID explains refusals in a small JSON body; a little of it helps, all of it is never needed.
        let said = Limited::new(response.into_body(), 1024).collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let said = String::from_utf8_lossy(&said);
        let body = if said.trim().is_empty() { String::new() } else { format!(": {}", bounded(&one_line(&said), 256)) };
        Err(RuntimeApiError::Status { path: path.to_string(), status: status.as_u16(), body })
    }

    fn transport(&self, path: &str, error: &(dyn std::error::Error + 'static)) -> RuntimeApiError {
        RuntimeApiError::Transport { endpoint: self.endpoint.clone(), path: path.to_string(), cause: root_cause(error) }
    }
}

/// A request id goes into the response's URL path and into every log line of the invocation: it must be short,
/// hold a letter or digit (so it is not `.` or `..`), and nothing a path would read differently. Lambda's are UUIDs.
fn is_path_safe(id: &str) -> bool {
    id.len() <= 128
        && id.bytes().any(|b| b.is_ascii_alphanumeric())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:~".contains(&b))
}

fn text_header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(String::from)
}

fn error_type_header(error: &Diagnostic) -> HeaderValue {
    // Error types are keyward's own names, plain ASCII; the fallback only keeps this total.
    HeaderValue::from_str(&error.error_type).unwrap_or(HeaderValue::from_static("Unhandled"))
}

/// The invocation's deadline. Lambda sends milliseconds since the Unix epoch; some Runtime API emulators
/// (cargo-lambda's) send the time left instead: a value too small to be a timestamp of this century is read that
/// way. A missing or unreadable header gives `None` (logged): the configured timeout applies.
fn deadline_header(headers: &HeaderMap, now: SystemTime) -> Option<SystemTime> {
    const YEAR_2001_MS: u64 = 1_000_000_000_000;
    let Some(value) = headers.get(DEADLINE_MS) else {
        tracing::debug!("the invocation has no Lambda-Runtime-Deadline-Ms header; the configured timeout applies");
        return None;
    };
    let Some(ms) = value.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()) else {
        let shown = one_line(&String::from_utf8_lossy(value.as_bytes()));
        tracing::warn!(
            header = %bounded(&shown, 64),
            "the invocation's Lambda-Runtime-Deadline-Ms is not a whole number of milliseconds; the configured timeout applies"
        );
        return None;
    };
    if ms < YEAR_2001_MS {
        now.checked_add(Duration::from_millis(ms))
    } else {
        UNIX_EPOCH.checked_add(Duration::from_millis(ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &[u8])]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (http::HeaderName::from_static(k), HeaderValue::from_bytes(v).unwrap())).collect()
    }

    #[test]
    fn deadlines_are_timestamps_or_time_left_and_missing_ones_are_none() {
        let now = UNIX_EPOCH + Duration::from_millis(1_795_944_012_668);
        let at = |v: &[u8]| deadline_header(&headers(&[(DEADLINE_MS, v)]), now);
        assert_eq!(at(b"1795944015668"), Some(now + Duration::from_secs(3)));
        assert_eq!(at(b"600000"), Some(now + Duration::from_secs(600)));
        assert_eq!(at(b"0"), Some(now));
        assert_eq!(at(b"soon"), None);
        assert_eq!(at(b"-5"), None);
        assert_eq!(at(b"\xff"), None);
        assert!(at(b"18446744073709551615").is_some(), "no overflow");
        assert_eq!(deadline_header(&HeaderMap::new(), now), None);
    }

    #[test]
    fn request_ids_must_fit_in_a_path() {
        assert!(is_path_safe("8476a536-e9f4-11e8-9739-2dfe598c3fcd"));
        let long = "a".repeat(129);
        for bad in ["", ".", "..", "../next", "a b", "a?b", "a#b", "a%2f", &long] {
            assert!(!is_path_safe(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_runtime_api_address_is_checked() {
        assert!(RuntimeApi::new(Some("127.0.0.1:9001")).is_ok());
        assert!(RuntimeApi::new(Some("http://127.0.0.1:9001/.rt/fn")).is_ok());
        assert!(RuntimeApi::new(Some("[::1]:9001")).is_ok());
        assert!(RuntimeApi::new(Some("localhost")).is_ok());
        for bad in [None, Some(""), Some("https://example.com"), Some("not a host"), Some("127.0.0.1:99999")] {
            let err = RuntimeApi::new(bad).unwrap_err().to_string();
            assert!(err.contains("AWS_LAMBDA_RUNTIME_API"), "{bad:?}: {err}");
        }
    }
}
