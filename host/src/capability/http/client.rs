//! The connections outgoing requests go over: resolved once and checked ([`policy::internal_range`]), TLS with
//! Mozilla's roots (and a private CA if configured), HTTP/1.1 or HTTP/2 as ALPN decides, pooled per origin across
//! invocations (a warm request reuses the last one's connection: no handshake).
//!
//! wasmtime-wasi-http's own sender (`default_send_request`) resolves the name itself and connects to whatever it
//! resolves to, with its own roots and a connection per request; keyward sends through this client instead, from
//! its [`WasiHttpHooks::send_request`](wasmtime_wasi_http::WasiHttpHooks::send_request).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::Client as Pool;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::CertificateDer;
use tokio::net::TcpStream;
use wasmtime_wasi_http::WasiBody;

use super::policy;
use super::settings::Host;

/// How long a TCP connection may take to open (less if the invocation has less time left).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an idle pooled connection is kept: long enough for the next warm invocation.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per origin.
const IDLE_PER_ORIGIN: usize = 8;

/// Why a connection was not made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    /// The name resolved to an address a name may not reach.
    #[error("{host} resolved to {ip}, which is {range}: a name may not reach it (allow the address itself to)")]
    Prohibited { host: String, ip: std::net::IpAddr, range: &'static str },
    /// The name did not resolve.
    #[error("{host} did not resolve: {reason}")]
    Dns { host: String, reason: String },
    /// No address accepted the connection in time.
    #[error("connecting to {host} timed out")]
    Timeout { host: String },
    /// No address accepted the connection.
    #[error("connecting to {host} failed: {reason}")]
    Refused { host: String, reason: String },
}

/// The pooled client, shared by every invocation of a host.
#[derive(Clone)]
pub(crate) struct Client {
    pool: Pool<hyper_rustls::HttpsConnector<Guarded>, WasiBody>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// A client trusting Mozilla's roots and `extra_roots`.
    ///
    /// # Errors
    /// rustls's, if ring's provider lacks its default protocol versions (it has them).
    pub(crate) fn new(extra_roots: &[CertificateDer<'static>]) -> Result<Self, rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().cloned());
        roots.add_parsable_certificates(extra_roots.iter().cloned());
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(Guarded);
        let pool = Pool::builder(TokioExecutor::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_max_idle_per_host(IDLE_PER_ORIGIN)
            .build(connector);
        Ok(Self { pool })
    }

    /// Sends `request` (absolute URI, checked by the policy) over a pooled or new connection.
    pub(crate) fn send(&self, request: http::Request<WasiBody>) -> hyper_util::client::legacy::ResponseFuture {
        self.pool.request(request)
    }
}

/// Opens TCP connections to checked addresses only.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Guarded;

impl tower_service::Service<Uri> for Guarded {
    type Response = TokioIo<TcpStream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(connect(uri))
    }
}

/// Resolves the URI's host once (an IP literal is not resolved: the policy allowed that address by name), checks
/// every address, and connects to the checked ones in turn.
async fn connect(uri: Uri) -> Result<TokioIo<TcpStream>, ConnectError> {
    let shown = uri.host().unwrap_or_default().to_string();
    let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("http") { 80 } else { 443 });
    let host = Host::parse(&shown).map_err(|reason| ConnectError::Dns { host: shown.clone(), reason })?;
    let addresses: Vec<SocketAddr> = match &host {
        Host::Ip(ip) => vec![SocketAddr::new(*ip, port)],
        Host::Name(name) => {
            let resolved = tokio::net::lookup_host((name.as_str(), port))
                .await
                .map_err(|e| ConnectError::Dns { host: shown.clone(), reason: e.to_string() })?;
            let resolved: Vec<SocketAddr> = resolved.collect();
            // One internal address among public ones refuses them all: the name is not what the allow list meant.
            if let Some((ip, range)) = resolved.iter().find_map(|a| Some((a.ip(), policy::internal_range(a.ip())?))) {
                return Err(ConnectError::Prohibited { host: shown, ip, range });
            }
            if resolved.is_empty() {
                return Err(ConnectError::Dns { host: shown, reason: "no address".into() });
            }
            resolved
        }
    };
    let mut last = None;
    for address in addresses {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => {
                // Requests are small writes answered at once: Nagle's delay would add to every one.
                let _ = stream.set_nodelay(true);
                return Ok(TokioIo::new(stream));
            }
            Ok(Err(e)) => last = Some(ConnectError::Refused { host: shown.clone(), reason: e.to_string() }),
            Err(_) => last = Some(ConnectError::Timeout { host: shown.clone() }),
        }
    }
    Err(last.unwrap_or(ConnectError::Dns { host: shown, reason: "no address".into() }))
}
