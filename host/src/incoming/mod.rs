//! The HTTP world: a component exporting `wasi:http/incoming-handler` (0.2.x), as Spin, `wasmtime serve`,
//! componentize-js and componentize-py write them, run as a Lambda function behind API Gateway (REST or HTTP API),
//! a Function URL or an ALB. The event becomes the request the component handles ([`request`]), and its response
//! the answer the event's service expects ([`response`]).

mod handler;
mod request;
mod response;

pub(crate) use handler::{Answer, Failure, handle};
pub(crate) use request::{EventRequest, LambdaContext, parse};
pub(crate) use response::{failure, failure_response, to_json};

/// Which service sent an HTTP event: the response is shaped for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// API Gateway REST API, payload format 1.0 (also an HTTP API route set to 1.0).
    RestApi,
    /// API Gateway HTTP API, payload format 2.0, and Lambda Function URLs (the same format).
    HttpApi,
    /// An Application Load Balancer, with its target group's multi-value headers on or off.
    Alb {
        /// Whether the target group sends (and reads) `multiValueHeaders`.
        multi_value: bool,
    },
}

impl Shape {
    /// Its name in messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Shape::RestApi => "API Gateway REST API (payload 1.0)",
            Shape::HttpApi => "HTTP API or Function URL (payload 2.0)",
            Shape::Alb { .. } => "ALB",
        }
    }
}

#[cfg(test)]
mod tests;
