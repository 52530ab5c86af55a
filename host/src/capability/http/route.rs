//! Routes of a test's, in place of the network: the stub host answers a guest's checked requests with canned
//! responses, forwards them to a local server, or fails them, and records each as it was sent (an injected value
//! shown as its secret's name). Requests reach a router only after the egress policy and injection, as they would
//! the network.

use bytes::Bytes;

/// A request as the guest's host sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The absolute URL, query included.
    pub url: String,
    /// Every header, in order; an injected one's value is its template with the secret's name in place of the
    /// secret (`Bearer {API_KEY}`, `Basic {basic:svc:API_KEY}`).
    pub headers: Vec<(String, String)>,
    /// The body's bytes.
    pub body: Vec<u8>,
}

impl SentRequest {
    /// Every value of header `name` (any case).
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }
}

/// What becomes of a routed request.
#[derive(Debug, Clone)]
pub enum Routed {
    /// This response, as if the origin had sent it (masked and bounded as one would be).
    Respond(http::Response<Bytes>),
    /// Send it to this origin instead (`http://127.0.0.1:8080`): a local server.
    Forward(http::Uri),
    /// Fail it as the network would.
    Fail(RoutedFault),
}

/// A failure of the network, for a guest's error paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoutedFault {
    /// Nothing listens: `connection-refused`.
    Refused,
    /// The connection did not open in time: `connection-timeout`.
    Timeout,
    /// The server's certificate is not trusted: `TLS-certificate-error`.
    Tls,
    /// The server reset the connection: `connection-terminated`.
    Reset,
}

/// Decides what becomes of each checked request.
pub trait Router: Send + Sync + std::fmt::Debug {
    /// What becomes of `request`.
    fn route(&self, request: SentRequest) -> Routed;
}
