//! The event mapping on captured events of each service (tests/fixtures/http-events, from aws-lambda-rust-runtime's
//! test data) and on events no service sends.

use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::*;

const LAMBDA: LambdaContext<'static> = LambdaContext { request_id: "8476a536-e9f4-11e8-9739-2dfe598c3fcd" };

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../../../tests/fixtures/http-events/", $name, ".json"))
    };
}

fn parsed(event: &str) -> EventRequest {
    crate::error::check_event(event.as_bytes()).unwrap();
    parse(event, LAMBDA).unwrap()
}

fn refusal(event: &Value) -> String {
    parse(&event.to_string(), LAMBDA).unwrap_err().to_string()
}

fn header<'a>(request: &'a EventRequest, name: &str) -> Vec<&'a str> {
    request.request.headers().get_all(name).iter().map(|v| v.to_str().unwrap()).collect()
}

#[test]
fn a_rest_api_event_is_its_request() {
    let request = parsed(fixture!("apigw_proxy_request"));
    assert_eq!(request.shape, Shape::RestApi);
    assert_eq!(request.request.method(), "GET");
    // The path as API Gateway sent it: lambda_http would make it /test/hello (the stage).
    assert_eq!(request.request.uri(), "https://wt6mne2s9k.execute-api.us-west-2.amazonaws.com/hello?name=me");
    assert_eq!(header(&request, "x-forwarded-for"), ["192.168.100.1, 192.168.1.1"]);
    assert_eq!(header(&request, "x-amzn-request-id"), [LAMBDA.request_id]);
    let context: Value = serde_json::from_str(header(&request, "x-amzn-request-context")[0]).unwrap();
    assert_eq!(context["requestId"], "41b45ea3-70b5-11e6-b7bd-69b5aaebc7d9");
    assert_eq!(context["identity"]["sourceIp"], "192.168.100.1");
    assert!(request.request.body().is_empty());
}

#[test]
fn a_rest_api_event_keeps_every_value_of_its_multi_value_headers_and_parameters() {
    let request = parsed(fixture!("apigw_multi_value_proxy_request"));
    assert_eq!(request.request.method(), "POST");
    let query = request.request.uri().query().unwrap();
    assert_eq!(query, "name=me&multiValueName=you&multiValueName=me", "multiValueQueryStringParameters, in order");
    assert!(request.request.body().ends_with(b"\"a\": 1\r\n}"), "the body as sent");
    // Headers `headers` has that `multiValueHeaders` lacks are kept too.
    let multi: Value = serde_json::from_str(fixture!("apigw_multi_value_proxy_request")).unwrap();
    for (name, values) in multi["multiValueHeaders"].as_object().unwrap() {
        let values: Vec<&str> = values.as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(header(&request, name), values, "{name}");
    }
}

#[test]
fn a_decoded_path_and_parameters_are_encoded_again() {
    let request = parsed(fixture!("apigw_request_path_with_space"));
    assert_eq!(request.request.uri().path(), "/my/path-with%20space");
    let event = json!({
        "httpMethod": "GET", "path": "/a b/ü?#", "requestContext": {"httpMethod": "GET"},
        "multiValueQueryStringParameters": {"q": ["a b&c=d", "é"], "empty": [""]},
    });
    let request = parse(&event.to_string(), LAMBDA).unwrap();
    assert_eq!(request.request.uri(), "https://localhost/a%20b/%C3%BC%3F%23?empty=&q=a+b%26c%3Dd&q=%C3%A9");
}

#[test]
fn an_http_api_event_is_its_request_with_cookies_joined() {
    let request = parsed(fixture!("apigw_v2_proxy_request"));
    assert_eq!(request.shape, Shape::HttpApi);
    assert_eq!(request.request.method(), "POST");
    assert_eq!(
        request.request.uri(),
        "https://id.execute-api.us-east-1.amazonaws.com/my/path?parameter1=value1&parameter1=value2&parameter2=value",
        "the host from requestContext.domainName when there is no Host header, the raw query as sent"
    );
    assert_eq!(header(&request, "cookie"), ["cookie1=value1; cookie2=value2"]);
    assert_eq!(header(&request, "header1"), ["value1"]);
    assert_eq!(header(&request, "x-forwarded-for"), ["IP"], "requestContext.http.sourceIp, as no header had it");
    assert_eq!(request.request.body().as_ref(), b"Hello from Lambda");

    let minimal = parsed(fixture!("apigw_v2_proxy_request_minimal"));
    assert_eq!(minimal.request.uri(), "https://xxx.execute-api.us-east-1.amazonaws.com/");
}

#[test]
fn a_function_url_event_is_read_as_payload_2() {
    let request = parsed(fixture!("lambda_function_url_request"));
    assert_eq!(request.shape, Shape::HttpApi);
    assert_eq!(request.request.uri().authority().unwrap(), "id.lambda-url.eu-west-2.on.aws");
    assert_eq!(header(&request, "cookie"), ["test=hi"], "the cookies replace the cookie header, not join it");
}

#[test]
fn an_alb_event_keeps_its_query_as_the_client_encoded_it() {
    let request = parsed(fixture!("alb_request_encoded_query_parameters"));
    assert_eq!(request.shape, Shape::Alb { multi_value: false });
    assert_eq!(request.request.uri(), "https://lambda-846800462-us-east-2.elb.amazonaws.com/?myKey=%3FshowAll%3Dtrue");
    assert_eq!(request.request.body().as_ref(), b"request_body");

    let multi = parsed(fixture!("alb_multi_value_request"));
    assert_eq!(multi.shape, Shape::Alb { multi_value: true });
    assert_eq!(multi.request.uri().query(), Some("myKey=val1&myKey=val2&myOtherKey=val3&myOtherKey=val4"));
    assert_eq!(header(&multi, "cookie"), ["name1=value1", "name2=value2"]);

    // A health check: no host, an empty body.
    let check = parsed(fixture!("alb_no_host"));
    assert_eq!(check.request.uri(), "https://localhost/v1/health/");
}

#[test]
fn a_base64_body_is_decoded() {
    let event = json!({
        "rawPath": "/", "requestContext": {"http": {"method": "PUT"}},
        "body": "AAEC/w==", "isBase64Encoded": true,
    });
    assert_eq!(parse(&event.to_string(), LAMBDA).unwrap().request.body().as_ref(), [0, 1, 2, 255]);
}

#[test]
fn the_hosts_headers_replace_a_clients() {
    let event = json!({
        "rawPath": "/", "requestContext": {"http": {"method": "GET", "sourceIp": "203.0.113.9"}},
        "headers": {"x-amzn-request-id": "forged", "x-forwarded-for": "198.51.100.1"},
    });
    let request = parse(&event.to_string(), LAMBDA).unwrap();
    assert_eq!(header(&request, "x-amzn-request-id"), [LAMBDA.request_id]);
    assert_eq!(header(&request, "x-forwarded-for"), ["198.51.100.1"], "the service's own is kept");
}

#[test]
fn events_that_are_no_request_are_refused_without_quoting_them() {
    let secretish = "s3cr3t-value-7f3a";
    let cases = [
        (json!({"name": secretish}), "is not an HTTP request from API Gateway"),
        (serde_json::from_str(fixture!("example-apigw-websocket-request")).unwrap(), "WebSocket event"),
        (json!({"httpMethod": "GE T", "path": "/", "requestContext": {"httpMethod": "GET"}}), "not an HTTP token"),
        (json!({"requestContext": {"http": {}}, "rawPath": "/"}), "it has no HTTP method"),
        (
            json!({"rawPath": "/", "requestContext": {"http": {"method": "GET"}}, "body": secretish, "isBase64Encoded": true}),
            "`body` is marked `isBase64Encoded` but is not base64",
        ),
        (
            json!({"rawPath": "/", "requestContext": {"http": {"method": "GET"}}, "headers": {"x-a": format!("{secretish}\r\nx-b: 1")}}),
            "header `x-a` has a value with a line break",
        ),
        (
            json!({"rawPath": "/", "requestContext": {"http": {"method": "GET"}}, "headers": {format!("{secretish} x"): "1"}}),
            "a header name in it is not an HTTP token",
        ),
        (
            json!({"rawPath": "/", "requestContext": {"http": {"method": "GET"}}, "headers": {"host": format!("{secretish}/x")}}),
            "is not a host and port",
        ),
        (
            json!({"rawPath": "/", "requestContext": {"http": {"method": "GET"}}, "isBase64Encoded": secretish}),
            "wrong type",
        ),
        (
            json!({"rawPath": "/", "requestContext": {"http": {"method": secretish.len()}}}),
            "within its `requestContext`",
        ),
    ];
    for (event, expected) in cases {
        let message = refusal(&event);
        assert!(message.contains(expected), "{message}");
        assert!(!message.contains(secretish), "{message}");
        assert!(!message.contains('\n'), "{message}");
    }
}

fn response(shape: Shape, headers: &[(&str, &str)], body: &[u8]) -> Value {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
    }
    serde_json::from_str(&to_json(shape, StatusCode::CREATED, &map, body)).unwrap()
}

const HEADERS: &[(&str, &str)] = &[
    ("content-type", "application/json; charset=utf-8"),
    ("set-cookie", "a=1; Secure"),
    ("set-cookie", "b=2"),
    ("vary", "accept"),
    ("vary", "origin"),
];

#[test]
fn a_rest_api_response_has_every_header_in_multi_value_headers() {
    let answer = response(Shape::RestApi, HEADERS, b"{}");
    assert_eq!(
        answer,
        json!({
            "statusCode": 201, "headers": {}, "body": "{}", "isBase64Encoded": false,
            "multiValueHeaders": {
                "content-type": ["application/json; charset=utf-8"], "set-cookie": ["a=1; Secure", "b=2"],
                "vary": ["accept", "origin"],
            },
        })
    );
}

#[test]
fn an_http_api_response_has_its_cookies_apart_and_repeated_headers_joined() {
    let answer = response(Shape::HttpApi, HEADERS, b"{}");
    assert_eq!(
        answer,
        json!({
            "statusCode": 201, "body": "{}", "isBase64Encoded": false, "cookies": ["a=1; Secure", "b=2"],
            "headers": {"content-type": "application/json; charset=utf-8", "vary": "accept, origin"},
        })
    );
}

#[test]
fn an_alb_response_uses_the_header_map_its_target_group_reads() {
    let multi = response(Shape::Alb { multi_value: true }, HEADERS, b"");
    assert_eq!(multi["statusDescription"], "201 Created");
    assert_eq!(multi["multiValueHeaders"]["set-cookie"], json!(["a=1; Secure", "b=2"]));
    assert!(multi.get("headers").is_none() && multi.get("body").is_none(), "{multi}");

    let single = response(Shape::Alb { multi_value: false }, HEADERS, b"");
    assert_eq!(single["headers"]["vary"], "accept, origin");
    assert_eq!(single["headers"]["set-cookie"], "b=2", "one value per header: the last cookie");
    assert!(single.get("multiValueHeaders").is_none(), "{single}");
}

#[test]
fn a_body_is_text_only_when_its_type_says_so_and_it_is_utf8() {
    let text = |headers: &[(&str, &str)], body: &[u8]| {
        let answer = response(Shape::HttpApi, headers, body);
        (answer["isBase64Encoded"].as_bool().unwrap(), answer["body"].as_str().unwrap().to_string())
    };
    assert_eq!(text(&[], b"hi"), (false, "hi".into()), "no content type: text");
    for kind in ["text/html", "application/json", "application/vnd.api+json", "image/svg+xml", "APPLICATION/XML"] {
        assert_eq!(text(&[("content-type", kind)], b"hi"), (false, "hi".into()), "{kind}");
    }
    assert_eq!(text(&[("content-type", "image/png")], b"hi"), (true, "aGk=".into()));
    assert_eq!(text(&[("content-type", "text/plain"), ("content-encoding", "gzip")], b"hi"), (true, "aGk=".into()));
    assert_eq!(text(&[("content-type", "text/plain")], &[0xff, 0xfe]), (true, "//4=".into()), "not UTF-8: base64");
}
