//! Origin servers of the suite's own for outgoing HTTP, on 127.0.0.1, plain or TLS (a certificate for 127.0.0.1
//! from the suite's test CA), HTTP/1.1 and HTTP/2: friendly and hostile routes, counting connections and
//! recording every request as it arrived.
//!
//! Routes: `/headers` echoes the request's headers as JSON (httpbin's); `/drip-headers` echoes them a few bytes per
//! frame (a secret split across frames); `/gzip` answers compressed, whatever was asked; `/name-echo` echoes the
//! request's header values as response header names; `/redirect?to=URL` answers 302; `/slow?ms=N` answers after N ms;
//! `/drip?ms=N` sends its body a byte every N ms; `/huge?mb=N` streams N MiB; anything else answers `hello`.
//! [`reset_server`] accepts connections and resets them; [`raw_server`] answers with bytes of the test's.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A request as the origin saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The path and query.
    pub target: String,
    /// `HTTP/1.1`, `HTTP/2.0`.
    pub version: String,
    /// Every header, in order, names lower-cased.
    pub headers: Vec<(String, String)>,
}

impl Seen {
    /// Every value of header `name`.
    pub fn values(&self, name: &str) -> Vec<String> {
        self.headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.clone()).collect()
    }
}

#[derive(Default)]
struct Shared {
    connections: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
}

/// A running origin; stopped when dropped.
pub struct Origin {
    pub port: u16,
    tls: bool,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Origin {
    /// A plain-HTTP origin.
    pub fn http() -> Self {
        Self::start(None)
    }

    /// An HTTPS origin with a certificate for 127.0.0.1 from the test CA in `dir` (see [`test_ca`]).
    pub fn https(dir: &Path) -> Self {
        let (_, cert, key) = test_ca(dir);
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(cert).unwrap().map(Result::unwrap).collect();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Self::start(Some(Arc::new(config)))
    }

    fn start(tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared::default());
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let is_tls = tls.is_some();
        let serving = shared.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            runtime.block_on(serve(listener, tls, serving, stopped));
        });
        Self { port, tls: is_tls, shared, stop: Some(stop), thread: Some(thread) }
    }

    /// Its origin, `http://127.0.0.1:PORT` or `https://...`.
    pub fn origin(&self) -> String {
        format!("{}://127.0.0.1:{}", if self.tls { "https" } else { "http" }, self.port)
    }

    /// The URL of `path` on it.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    shared: Arc<Shared>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => continue },
            _ = &mut stopped => return,
        };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        let (shared, acceptor) = (shared.clone(), acceptor.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| route(request, shared.clone()));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            match acceptor {
                None => {
                    let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                }
                Some(acceptor) => {
                    // A client that does not trust the test CA ends the handshake: nothing to serve.
                    if let Ok(stream) = acceptor.accept(stream).await {
                        let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                    }
                }
            }
        });
    }
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn text(status: u16, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder().status(status).body(Full::new(body.into()).boxed()).unwrap()
}

/// A body of `chunks`, one frame each, `every` apart.
fn dripped(chunks: Vec<Bytes>, every: Duration) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    tokio::spawn(async move {
        for chunk in chunks {
            if tx.send(chunk).await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
    });
    Dripped(rx).boxed()
}

/// The frames a channel receives.
struct Dripped(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for Dripped {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

async fn route(request: Request<Incoming>, shared: Arc<Shared>) -> Result<Response<Body>, Infallible> {
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let path = request.uri().path().to_string();
    let query: HashMap<String, String> = request
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let target = request.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
    let version = format!("{:?}", request.version());
    shared.seen.lock().unwrap().push(Seen { target, version, headers: headers.clone() });
    let number = |name: &str| query.get(name).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let echo = || {
        let map: serde_json::Map<String, serde_json::Value> =
            headers.iter().map(|(n, v)| (n.clone(), serde_json::Value::String(v.clone()))).collect();
        serde_json::json!({ "headers": map }).to_string()
    };
    let _ = request.into_body().collect().await;
    Ok(match path.as_str() {
        "/headers" => text(200, echo()),
        "/drip-headers" => {
            let body = echo().into_bytes();
            let chunks = body.chunks(3).map(Bytes::copy_from_slice).collect();
            Response::builder().body(dripped(chunks, Duration::from_millis(1))).unwrap()
        }
        // Compressed whatever the request asked for.
        "/gzip" => Response::builder()
            .header("content-encoding", "gzip")
            .body(Full::new(Bytes::from_static(b"\x1f\x8b not really")).boxed())
            .unwrap(),
        // Each request header's value that can be a header name comes back as one.
        "/name-echo" => {
            let mut response = Response::builder();
            for (_, value) in &headers {
                if let Ok(name) = hyper::header::HeaderName::from_bytes(format!("x-echo-{value}").as_bytes()) {
                    response = response.header(name, "1");
                }
            }
            response.body(Full::new(Bytes::from_static(b"named")).boxed()).unwrap()
        }
        "/redirect" => Response::builder()
            .status(302)
            .header("location", query.get("to").cloned().unwrap_or_default())
            .body(Full::new(Bytes::new()).boxed())
            .unwrap(),
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(number("ms"))).await;
            text(200, "slow")
        }
        "/drip" => {
            let chunks = (0..1000).map(|_| Bytes::from_static(b"x")).collect();
            Response::builder().body(dripped(chunks, Duration::from_millis(number("ms")))).unwrap()
        }
        "/huge" => {
            let chunk = Bytes::from(vec![b'h'; 1 << 20]);
            let chunks = (0..number("mb")).map(|_| chunk.clone()).collect();
            Response::builder().body(dripped(chunks, Duration::ZERO)).unwrap()
        }
        _ => text(200, "hello"),
    })
}

/// A server that accepts every connection, reads a little, and resets it; returns its port. It runs until the
/// test process ends.
pub fn reset_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = std::io::Read::read(&mut &stream, &mut buf);
            let socket = socket2::SockRef::from(&stream);
            // Linger zero: closing sends a reset, not a clean end.
            let _ = socket.set_linger(Some(Duration::ZERO));
        }
    });
    port
}

/// A server that answers every connection with `response`, as bytes (headers no well-behaved server sends);
/// returns its port. It runs until the test process ends.
pub fn raw_server(response: &'static [u8]) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = std::io::Read::read(&mut stream, &mut buf);
            let _ = std::io::Write::write_all(&mut stream, response);
        }
    });
    port
}

/// The test CA's certificate, and a server certificate and key for 127.0.0.1 it issued, made in `dir` once.
pub fn test_ca(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let files = (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"));
    if !files.0.exists() {
        crate::servers::make_certificates(&files.0, &files.1, &files.2);
    }
    files
}
