//! `serve`: an HTTP component on a local address, as `wasmtime serve` and `spin up` serve one, for a browser or
//! curl: every request in a fresh instance, under the sandbox, limits and secrets `keyward invoke` gives it.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use keyward::{Host, InvocationContext};

use super::invoke::GuestArgs;

/// Serve an HTTP component (one exporting wasi:http/incoming-handler) on a local address until Ctrl-C: each request
/// in a fresh instance, with the same sandbox, limits and secrets as `keyward invoke`.
#[derive(Debug, clap::Args)]
pub(crate) struct Serve {
    #[command(flatten)]
    guest: GuestArgs,
    /// The address to listen on (a port of 0 picks a free one; the address served is printed).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
}

/// The largest request body taken: Lambda's, for a synchronous invocation's payload (6 MB).
const MAX_REQUEST_BODY: usize = 6 * 1024 * 1024;

impl Serve {
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        let component = self.guest.component.display().to_string();
        let function_arn = self.guest.function_arn();
        let host = Arc::new(self.guest.host().await?);
        anyhow::ensure!(
            host.world() == keyward::sandbox::World::Http,
            "{component} is of keyward's handler world, which takes Lambda events: `keyward serve` serves components \
             exporting wasi:http/incoming-handler (run this one with `keyward invoke`)"
        );
        let listener = tokio::net::TcpListener::bind(self.listen)
            .await
            .with_context(|| format!("cannot listen on {}", self.listen))?;
        let address = listener.local_addr().context("cannot read the address listened on")?;
        // stdout, as `wasmtime serve` says where it serves: a script may read the port picked for `:0`.
        println!("serving {component} on http://{address}/ (Ctrl-C stops)");
        // Each connection is watched: at Ctrl-C, idle ones close, and busy ones once their response is out.
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let stop = tokio::signal::ctrl_c();
        let mut stop = std::pin::pin!(stop);
        loop {
            let (stream, _) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    // A connection that failed before it was accepted (reset, out of descriptors): the next one, after
                    // a pause, so that a lasting failure does not spin.
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot accept a connection");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = &mut stop => break,
            };
            let (host, function_arn) = (host.clone(), function_arn.clone());
            let service = hyper::service::service_fn(move |request| {
                let (host, function_arn) = (host.clone(), function_arn.clone());
                async move { Ok::<_, std::convert::Infallible>(answer(&host, request, function_arn).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "connection ended");
                }
            });
        }
        // New connections are not taken; requests in flight finish, each within its time limit.
        drop(listener);
        let limit = host.limits().timeout + std::time::Duration::from_secs(1);
        let _ = tokio::time::timeout(limit, graceful.shutdown()).await;
        Ok(())
    }
}

/// The component's response to one request, or the `500` of its failure (its error on stderr).
async fn answer(host: &Host, request: http::Request<Incoming>, function_arn: String) -> http::Response<Full<Bytes>> {
    let (mut parts, body) = request.into_parts();
    let body = match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            let why = format!("the request body is over {MAX_REQUEST_BODY} bytes (Lambda's payload limit), or broke\n");
            return plain(http::StatusCode::PAYLOAD_TOO_LARGE, why);
        }
    };
    // The request as the component sees it behind Lambda's services: an absolute URI (http, the Host header's
    // authority).
    let authority = parts.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let shown = format!("{} {}", parts.method, path.chars().take(200).collect::<String>());
    parts.uri = match format!("http://{authority}{path}").parse() {
        Ok(uri) => uri,
        Err(_) => return plain(http::StatusCode::BAD_REQUEST, "the Host header is not a host and port\n".into()),
    };
    let request = http::Request::from_parts(parts, body);
    let invocation = host.handle_request(request, InvocationContext::local(function_arn)).await;
    match (invocation.result, invocation.failure_answer) {
        (Ok(response), _) => response.map(Full::new),
        // The caller gets the 500 (error type and request id); the terminal gets the error, masked as every log is.
        (Err(e), answer) => {
            eprintln!("keyward: {shown}: {} ({})", keyward::error::one_line(&e.to_string()), e.error_type());
            match answer {
                Some(answer) => answer.map(Full::new),
                None => plain(http::StatusCode::INTERNAL_SERVER_ERROR, format!("{}\n", e.error_type())),
            }
        }
    }
}

/// A plain-text answer of the server's own.
fn plain(status: http::StatusCode, text: String) -> http::Response<Full<Bytes>> {
    let mut response = http::Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}
