//! A Lambda HTTP event to the request an HTTP component handles: API Gateway REST (payload 1.0), HTTP API (2.0),
//! Function URL (2.0) and ALB events, told apart by their fields as lambda_http 0.17 tells them
//! (aws-lambda-rust-runtime `lambda-http/src/request.rs`), and mapped as it maps them but for the differences
//! docs/http.md lists: the path as the service sent it (no `/{stage}` prefix), a v1 request's every multi-value
//! header kept, an ALB query string kept as the client encoded it, cookies joined with `"; "` (RFC 6265 §5.4), and
//! the Lambda Web Adapter's context headers.
//!
//! The event's structs are keyward's own, of the fields it reads: lambda_http's conversion panics on input it cannot
//! map (a bad base64 body, an unparsable URI), so only `aws_lambda_events`' structs could be reused, and they would
//! fail a whole event on one header value `http` refuses, with a serde message quoting it.

use base64::Engine as _;
use bytes::Bytes;
use http::header::{COOKIE, HOST, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Uri};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::Shape;

/// The request an HTTP event carries, ready to hand to the component.
#[derive(Debug)]
pub(crate) struct EventRequest {
    /// The request (an absolute URI: scheme, authority, path and query), its body whole.
    pub(crate) request: http::Request<Bytes>,
    /// How the response must be shaped.
    pub(crate) shape: Shape,
}

/// What the host adds to every request, besides the event's own.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LambdaContext<'a> {
    /// The invocation's request id: `x-amzn-request-id`.
    pub(crate) request_id: &'a str,
}

/// Why an event is not a request the component can be given. Messages name the field, never its value: an event
/// may hold anything a client sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EventError {
    /// None of the shapes' fields are there.
    #[error(
        "is not an HTTP request from API Gateway (REST or HTTP API), a Function URL or an ALB (it has none of \
         `requestContext.http.method`, `httpMethod` and `requestContext.elb`), and this function's component is an \
         HTTP handler (it exports wasi:http/incoming-handler): send it such an event, or run a component of \
         keyward's handler world"
    )]
    NotHttp,
    /// A WebSocket event.
    #[error(
        "is an API Gateway WebSocket event, which is not an HTTP request: an HTTP component (wasi:http/incoming-handler) \
         cannot answer it; run a component of keyward's handler world for WebSocket routes"
    )]
    WebSocket,
    /// A field of the wrong type.
    #[error("has a field of the wrong type for an HTTP event{within}, at line {line} column {column}")]
    Field {
        /// Where the position counts from: the event, or its `requestContext`.
        within: &'static str,
        /// Where.
        line: usize,
        /// Where.
        column: usize,
    },
    /// Something the request cannot hold.
    #[error("is a {shape} event, and {problem}")]
    Invalid {
        /// The shape it was read as.
        shape: &'static str,
        /// What is wrong, naming the field.
        problem: String,
    },
}

/// The fields of the four shapes keyward reads; every other field is ignored.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Event {
    http_method: Option<String>,
    path: Option<String>,
    raw_path: Option<String>,
    raw_query_string: Option<String>,
    headers: Option<Ordered<Option<String>>>,
    multi_value_headers: Option<Ordered<Option<Vec<String>>>>,
    query_string_parameters: Option<Ordered<Option<String>>>,
    multi_value_query_string_parameters: Option<Ordered<Option<Vec<String>>>>,
    cookies: Option<Vec<String>>,
    body: Option<String>,
    is_base64_encoded: Option<bool>,
    request_context: Option<Box<RawValue>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RequestContext {
    http_method: Option<String>,
    http: Option<HttpContext>,
    elb: Option<serde::de::IgnoredAny>,
    connection_id: Option<serde::de::IgnoredAny>,
    domain_name: Option<String>,
    identity: Option<Identity>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct HttpContext {
    method: Option<String>,
    source_ip: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Identity {
    source_ip: Option<String>,
}

/// A JSON object's members in the event's order (a header's or a query parameter's order can matter to the
/// component; the event is checked before to hold no key twice).
struct Ordered<T>(Vec<(String, T)>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Ordered<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Members<T> {
            type Value = Ordered<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry()? {
                    members.push(member);
                }
                Ok(Ordered(members))
            }
        }
        deserializer.deserialize_map(Members(std::marker::PhantomData))
    }
}

impl<T> Ordered<T> {
    fn iter(&self) -> impl Iterator<Item = (&str, &T)> {
        self.0.iter().map(|(name, value)| (name.as_str(), value))
    }
}

/// Characters a query may not hold as they are (RFC 3986 §3.4).
const QUERY: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\\')
    .add(b'^')
    .add(b'|');
/// Characters a path may not hold as they are (RFC 3986 §3.3: `pchar` and `/`), a query's and `?`; API Gateway and
/// Function URLs send the path decoded, so a space or a `?` in it is encoded again. A `%` is left: the path may be
/// encoded already.
const PATH: &AsciiSet = &QUERY.add(b'?');

/// Reads `event` (JSON, checked by [`check_event`](crate::error::check_event)) as an HTTP request.
///
/// # Errors
/// [`EventError`] naming what is missing or wrong.
pub(crate) fn parse(event: &str, lambda: LambdaContext<'_>) -> Result<EventRequest, EventError> {
    // serde's messages can quote the value; only the position is given.
    let wrong_type = |within: &'static str| {
        move |e: serde_json::Error| EventError::Field { within, line: e.line(), column: e.column() }
    };
    let event: Event = serde_json::from_str(event).map_err(wrong_type(""))?;
    let context_json = event.request_context.as_deref().map(RawValue::get);
    let context: RequestContext = match context_json {
        Some(json) => serde_json::from_str(json).map_err(wrong_type(" (counted within its `requestContext`)"))?,
        None => RequestContext::default(),
    };
    let (shape, method) = if context.elb.is_some() {
        (Shape::Alb { multi_value: event.multi_value_headers.is_some() }, event.http_method.clone())
    } else if let Some(http) = &context.http {
        (Shape::HttpApi, http.method.clone())
    } else if context.connection_id.is_some() {
        return Err(EventError::WebSocket);
    } else if event.http_method.is_some() || context.http_method.is_some() {
        (Shape::RestApi, event.http_method.clone().or(context.http_method.clone()))
    } else {
        return Err(EventError::NotHttp);
    };
    let invalid = |problem: String| EventError::Invalid { shape: shape.name(), problem };
    let method = method.ok_or_else(|| invalid("it has no HTTP method".into()))?;
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| invalid("its HTTP method is not an HTTP token (RFC 9110 §9.1)".into()))?;

    let mut headers = headers(&event, shape).map_err(invalid)?;
    let authority = headers
        .get(HOST)
        .and_then(|host| host.to_str().ok())
        .or(context.domain_name.as_deref())
        .unwrap_or("localhost")
        .to_string();
    if authority.parse::<http::uri::Authority>().map_or(true, |parsed| parsed.as_str() != authority) {
        return Err(invalid("its Host header (or requestContext.domainName) is not a host and port".into()));
    }
    let scheme = match headers.get("x-forwarded-proto").map(HeaderValue::as_bytes) {
        Some(b"http") => "http",
        _ => "https",
    };
    let path = match shape {
        Shape::HttpApi => event.raw_path.as_deref(),
        Shape::RestApi | Shape::Alb { .. } => event.path.as_deref(),
    };
    let path = path.unwrap_or("/");
    let slash = if path.starts_with('/') { "" } else { "/" };
    let query = query(&event, shape);
    let query = if query.is_empty() { String::new() } else { format!("?{query}") };
    let uri = format!("{scheme}://{authority}{slash}{}{query}", utf8_percent_encode(path, PATH));
    let uri: Uri = uri.parse().map_err(|_| {
        invalid("its path, query or Host header cannot make a URI (RFC 3986): an invalid `%` escape or host".into())
    })?;

    let source_ip = context.http.and_then(|http| http.source_ip).or(context.identity.and_then(|id| id.source_ip));
    add_context_headers(&mut headers, lambda, context_json, source_ip.as_deref()).map_err(invalid)?;

    let body = match (event.body, event.is_base64_encoded.unwrap_or(false)) {
        (None, _) => Bytes::new(),
        (Some(body), false) => Bytes::from(body),
        (Some(body), true) => base64::engine::general_purpose::STANDARD
            .decode(body.trim_end())
            .map(Bytes::from)
            .map_err(|_| invalid("its `body` is marked `isBase64Encoded` but is not base64".into()))?,
    };

    let mut request = http::Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    Ok(EventRequest { request, shape })
}

/// The request's headers: v1 and ALB events' `multiValueHeaders` (all of them) and then the names only `headers`
/// has; v2 events' `headers` (API Gateway joins repeated ones with commas) and `cookies` as one `cookie` header.
fn headers(event: &Event, shape: Shape) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    let add = |map: &mut HeaderMap, name: &str, value: &str| -> Result<(), String> {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| "a header name in it is not an HTTP token (RFC 9110 §5.1)".to_string())?;
        let value = HeaderValue::from_bytes(value.as_bytes())
            .map_err(|_| format!("its header `{name}` has a value with a line break or a control character"))?;
        map.append(name, value);
        Ok(())
    };
    if shape != Shape::HttpApi
        && let Some(multi) = &event.multi_value_headers
    {
        for (name, values) in multi.iter() {
            for value in values.iter().flatten() {
                add(&mut map, name, value)?;
            }
        }
    }
    if let Some(single) = &event.headers {
        let had: Vec<HeaderName> = map.keys().cloned().collect();
        for (name, value) in single.iter() {
            let Some(value) = value else { continue };
            if !had.iter().any(|known| known.as_str().eq_ignore_ascii_case(name)) {
                add(&mut map, name, value)?;
            }
        }
    }
    if let Some(cookies) = &event.cookies
        && !cookies.is_empty()
    {
        map.remove(COOKIE);
        add(&mut map, COOKIE.as_str(), &cookies.join("; "))?;
    }
    Ok(map)
}

/// The query string: v2's `rawQueryString` as sent; v1's parameters (decoded by API Gateway) encoded again, the
/// multi-value ones when there are; an ALB's as the client encoded them (ALB passes them on undecoded).
fn query(event: &Event, shape: Shape) -> String {
    let pairs = || -> Vec<(&str, &str)> {
        match (&event.multi_value_query_string_parameters, &event.query_string_parameters) {
            (Some(multi), _) if !multi.0.is_empty() => multi
                .iter()
                .flat_map(|(name, values)| values.iter().flatten().map(move |value| (name, value.as_str())))
                .collect(),
            (_, Some(single)) => single.iter().filter_map(|(name, value)| Some((name, value.as_deref()?))).collect(),
            _ => Vec::new(),
        }
    };
    match shape {
        Shape::HttpApi => utf8_percent_encode(event.raw_query_string.as_deref().unwrap_or(""), QUERY).to_string(),
        Shape::RestApi => form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs()).finish(),
        Shape::Alb { .. } => {
            let joined: Vec<String> = pairs().iter().map(|(name, value)| format!("{name}={value}")).collect();
            utf8_percent_encode(&joined.join("&"), QUERY).to_string()
        }
    }
}

/// The headers the host sets on every request (replacing any the client sent): as the AWS Lambda Web Adapter does,
/// the invocation's request id and the event's request context (compact JSON); and `x-forwarded-for` with the
/// client's address when the service did not send it.
fn add_context_headers(
    headers: &mut HeaderMap,
    lambda: LambdaContext<'_>,
    context: Option<&str>,
    source_ip: Option<&str>,
) -> Result<(), String> {
    let value = |text: &str, what: &str| {
        HeaderValue::from_bytes(text.as_bytes())
            .map_err(|_| format!("its {what} cannot be a header value (a control character)"))
    };
    headers.insert("x-amzn-request-id", value(lambda.request_id, "request id")?);
    if let Some(context) = context {
        // Compact: a pretty-printed event's line breaks cannot be in a header.
        let compact: serde_json::Value =
            serde_json::from_str(context).map_err(|_| "its `requestContext` is not JSON".to_string())?;
        headers.insert("x-amzn-request-context", value(&compact.to_string(), "requestContext")?);
    }
    if let Some(ip) = source_ip
        && !headers.contains_key("x-forwarded-for")
    {
        headers.insert("x-forwarded-for", value(ip, "source IP")?);
    }
    Ok(())
}
