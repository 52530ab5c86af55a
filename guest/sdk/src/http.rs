//! Request and response shapes of HTTP events: Lambda function URLs and API Gateway HTTP APIs (payload 2.0),
//! from `aws_lambda_events`.

pub use aws_lambda_events::event::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
pub use aws_lambda_events::event::lambda_function_urls::{
    LambdaFunctionUrlRequest as FunctionUrlRequest, LambdaFunctionUrlResponse as FunctionUrlResponse,
};
use aws_lambda_events::http::{HeaderMap, HeaderValue, header};

/// A response with a JSON body and `Content-Type: application/json`.
pub fn json_response(status: i64, body: &impl serde::Serialize) -> FunctionUrlResponse {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // The event types are `#[non_exhaustive]`: built from `Default`.
    let mut response = FunctionUrlResponse::default();
    response.status_code = status;
    response.headers = headers;
    response.body = Some(serde_json::to_string(body).unwrap_or_default());
    response
}

/// The request body's bytes, decoded from base64 when the event says it is.
///
/// # Errors
/// A base64 body that does not decode.
pub fn body_bytes(request: &FunctionUrlRequest) -> Result<Vec<u8>, crate::Error> {
    let body = request.body.as_deref().unwrap_or("");
    if request.is_base64_encoded {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|e| crate::Error::new(format!("the request body is not valid base64: {e}")))
    } else {
        Ok(body.as_bytes().to_vec())
    }
}
