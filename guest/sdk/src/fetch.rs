//! Outgoing HTTP requests from a handler, blocking, over the standard `wasi:http/outgoing-handler` import.
//!
//! The host checks every request against its egress policy (`KEYWARD_ALLOW_OUTBOUND`; by default nothing is
//! allowed) and may add a credential on the way out (`KEYWARD_INJECT_<NAME>`) that this guest never sees: send
//! the request without it, and the host sets the header for that origin only.
//!
//! ```no_run
//! let response = keyward_guest::fetch::Request::post("https://api.example.com/charges")
//!     .header("content-type", "application/json")
//!     .body(br#"{"amount":100}"#.to_vec())
//!     .send()?;
//! assert_eq!(response.status, 200);
//! # Ok::<(), keyward_guest::fetch::FetchError>(())
//! ```
//!
//! Any other `wasi:http` client works the same way (`wstd`, `waki`, the `wasip2` bindings this wraps).

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, HeaderError, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use wasip2::io::streams::StreamError;

/// Bytes written or read per stream call.
const CHUNK: usize = 64 * 1024;

/// A request to send.
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    url: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

/// A response, its body read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Every header, in order, names lower-cased.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body's bytes.
    pub body: Vec<u8>,
}

/// Why a request got no response: [`code`](FetchError::code) names the kind, for a program to match on (the
/// `wasi:http` error code the host gave, `HttpRequestDenied` when the egress policy refused it, its rule in the
/// host's log; or one of this client's: `InvalidUrl`, `HeaderRefused`, `BodyFailed`, `Misused`), and the
/// [message](FetchError::message) says it in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchError {
    code: String,
    message: String,
}

impl FetchError {
    fn new(code: &str, message: impl Into<String>) -> Self {
        Self { code: code.into(), message: message.into() }
    }

    /// The kind: `HttpRequestDenied`, `DestinationIpProhibited`, `ConnectionRefused`, `HttpResponseTimeout`,
    /// `InternalError` (a limit of the host's: the message names its setting), `InvalidUrl`, ...
    pub fn code(&self) -> &str {
        &self.code
    }

    /// What happened, in words.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The error a [`BodyReader`]'s read returned.
    fn from_io(error: std::io::Error) -> Self {
        let text = error.to_string();
        match error.into_inner().map(|inner| inner.downcast::<Self>()) {
            Some(Ok(fetch)) => *fetch,
            _ => Self::new("BodyFailed", text),
        }
    }
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the request failed: {}", self.message)
    }
}

impl std::error::Error for FetchError {}

impl From<ErrorCode> for FetchError {
    fn from(code: ErrorCode) -> Self {
        let debug = format!("{code:?}");
        let debug = debug.strip_prefix("ErrorCode::").unwrap_or(&debug);
        let name = debug.split('(').next().unwrap_or(debug).to_string();
        let message = match code {
            ErrorCode::DnsError(payload) => format!("DNS error: {}", payload.rcode.as_deref().unwrap_or("no answer")),
            ErrorCode::TlsAlertReceived(payload) => {
                format!("TLS alert received: {}", payload.alert_message.as_deref().unwrap_or("no message"))
            }
            ErrorCode::HttpRequestBodySize(Some(n)) | ErrorCode::HttpResponseBodySize(Some(n)) => {
                format!("{name}: {n} bytes")
            }
            ErrorCode::HttpResponseContentCoding(Some(coding))
            | ErrorCode::HttpResponseTransferCoding(Some(coding)) => {
                format!("{name}: {coding}")
            }
            ErrorCode::InternalError(Some(message)) => message,
            _ => name.clone(),
        };
        Self { code: name, message }
    }
}

impl Request {
    /// A request of `method` (`GET`, `POST`, any token) to `url` (`https://host[:port]/path?query`).
    pub fn new(method: &str, url: &str) -> Self {
        let method = match method {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "CONNECT" => Method::Connect,
            "OPTIONS" => Method::Options,
            "TRACE" => Method::Trace,
            "PATCH" => Method::Patch,
            other => Method::Other(other.to_string()),
        };
        Self { method, url: url.to_string(), headers: Vec::new(), body: Vec::new() }
    }

    /// A `GET` request.
    pub fn get(url: &str) -> Self {
        Self::new("GET", url)
    }

    /// A `POST` request.
    pub fn post(url: &str) -> Self {
        Self::new("POST", url)
    }

    /// Adds a header (repeatable: values of one name are sent in order).
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers.push((name.to_string(), value.as_ref().to_vec()));
        self
    }

    /// The body to send.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sends the request and reads the response whole.
    ///
    /// # Errors
    /// A [`FetchError`]: the URL is not `http(s)://authority/path`, a header is refused (a forbidden name such as
    /// `host`, or a line break in a value), or the host's error for the request or its response body.
    pub fn send(self) -> Result<Response, FetchError> {
        let mut streaming = self.send_streaming()?;
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut streaming.body, &mut body).map_err(FetchError::from_io)?;
        Ok(Response { status: streaming.status, headers: std::mem::take(&mut streaming.headers), body })
    }

    /// Sends the request and returns the response with its body still to read, as a [`std::io::Read`]: for a body
    /// too large to hold.
    ///
    /// # Errors
    /// As [`Request::send`], but for the body's own errors, which its reads return.
    pub fn send_streaming(self) -> Result<StreamingResponse, FetchError> {
        let (scheme, rest) = match self.url.split_once("://") {
            Some(("https", rest)) => (Scheme::Https, rest),
            Some(("http", rest)) => (Scheme::Http, rest),
            Some((other, rest)) => (Scheme::Other(other.to_string()), rest),
            None => return Err(FetchError::new("InvalidUrl", format!("{:?} is not an http(s) URL", self.url))),
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        let fields = Fields::new();
        for (name, value) in &self.headers {
            fields.append(name, value).map_err(|e| {
                let why = match e {
                    HeaderError::Forbidden => "a guest may not set it (the host does)",
                    HeaderError::Immutable => "the headers can no longer change",
                    HeaderError::InvalidSyntax => "it is not a valid header name and value (no line breaks)",
                };
                FetchError::new("HeaderRefused", format!("header {name:?} refused: {why}"))
            })?;
        }
        let request = OutgoingRequest::new(fields);
        let invalid = |what: &str| FetchError::new("InvalidUrl", format!("{what} of {:?} refused", self.url));
        request.set_method(&self.method).map_err(|()| invalid("the method"))?;
        request.set_scheme(Some(&scheme)).map_err(|()| invalid("the scheme"))?;
        request.set_authority(Some(authority)).map_err(|()| invalid("the authority"))?;
        request.set_path_with_query(Some(&path)).map_err(|()| invalid("the path"))?;
        let body = request.body().map_err(|()| invalid("the body"))?;
        // An empty body is finished before the request is sent, so that it leaves whole at once (HTTP/2 sends no
        // separate end of stream, the server waits for nothing); a body with bytes streams as it is written.
        let body = match self.body.is_empty() {
            true => {
                OutgoingBody::finish(body, None)?;
                None
            }
            false => Some(body),
        };
        let pending = outgoing_handler::handle(request, None)?;
        if let Err(write) = body.map_or(Ok(()), |body| write_body(body, &self.body)) {
            // A refused request closes its body's stream: its response says why.
            pending.subscribe().block();
            return Err(match pending.get() {
                Some(Ok(Err(code))) => code.into(),
                _ => write,
            });
        }
        pending.subscribe().block();
        let response = match pending.get() {
            Some(Ok(Ok(response))) => response,
            Some(Ok(Err(code))) => return Err(code.into()),
            Some(Err(())) | None => return Err(FetchError::new("Misused", "the response was already taken")),
        };
        let status = response.status();
        let headers = response.headers().entries();
        let incoming = response.consume().map_err(|()| FetchError::new("Misused", "the body was already taken"))?;
        let stream =
            incoming.stream().map_err(|()| FetchError::new("Misused", "the response body was already taken"))?;
        let body = BodyReader { stream: Some(stream), body: Some(incoming), _response: response };
        Ok(StreamingResponse { status, headers, body })
    }
}

/// A response whose body is read as it comes.
#[derive(Debug)]
pub struct StreamingResponse {
    /// The status code.
    pub status: u16,
    /// Every header, in order, names lower-cased.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body, read as it comes (`read` returns 0 at its end).
    pub body: BodyReader,
}

/// A response body as a [`std::io::Read`]; an error of the host's (a limit, a timeout) is a read's error.
#[derive(Debug)]
pub struct BodyReader {
    // Dropped in this order: a WASI child resource before its parent.
    stream: Option<wasip2::io::streams::InputStream>,
    body: Option<IncomingBody>,
    _response: wasip2::http::types::IncomingResponse,
}

impl std::io::Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some(stream) = &self.stream else { return Ok(0) };
        match stream.blocking_read(buf.len().min(CHUNK) as u64) {
            Ok(chunk) => {
                buf[..chunk.len()].copy_from_slice(&chunk);
                Ok(chunk.len())
            }
            Err(StreamError::Closed) => {
                self.stream = None;
                if let Some(body) = self.body.take() {
                    IncomingBody::finish(body);
                }
                Ok(0)
            }
            Err(e) => Err(std::io::Error::other(stream_error(e))),
        }
    }
}

fn write_body(body: OutgoingBody, bytes: &[u8]) -> Result<(), FetchError> {
    {
        let stream = body.write().map_err(|()| FetchError::new("Misused", "the request body was already taken"))?;
        for chunk in bytes.chunks(CHUNK) {
            stream.blocking_write_and_flush(chunk).map_err(stream_error)?;
        }
    }
    OutgoingBody::finish(body, None)?;
    Ok(())
}

/// A stream's failure: the HTTP error behind it when there is one.
fn stream_error(error: StreamError) -> FetchError {
    match error {
        StreamError::Closed => FetchError::new("BodyFailed", "the stream closed early"),
        StreamError::LastOperationFailed(e) => match wasip2::http::types::http_error_code(&e) {
            Some(code) => code.into(),
            // wasmtime-wasi-http 48 hands a failed body's error over as text only.
            None => FetchError::new("BodyFailed", e.to_debug_string()),
        },
    }
}

impl Response {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
    }

    /// The body as text (bytes that are not UTF-8 as `\u{FFFD}`).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}
