//! A small Lambda Runtime API server of the test suite's own, speaking the real wire format
//! (<https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html>), for what no emulator sends: any header
//! bytes, no request id, no deadline, bodies that are not JSON. Each function polls under its own base path
//! (`AWS_LAMBDA_RUNTIME_API=http://127.0.0.1:PORT/NAME`, as cargo-lambda does), so several can share one server.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One invocation to hand out: its headers (raw bytes, sent as given) and its body.
#[derive(Debug, Clone)]
pub struct Invocation {
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Invocation {
    /// An invocation with the headers Lambda always sends: a fresh request id, a deadline 30 s away, an ARN.
    pub fn new(body: impl Into<Vec<u8>>) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let id = format!("edge-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let deadline = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64 + 30_000;
        Self { headers: Vec::new(), body: body.into() }
            .header("Lambda-Runtime-Aws-Request-Id", id)
            .header("Lambda-Runtime-Deadline-Ms", deadline.to_string())
            .header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:edge")
    }

    /// The JSON event `event`.
    pub fn json(event: &serde_json::Value) -> Self {
        Self::new(event.to_string())
    }

    /// Sets header `name` to `value` (any bytes), replacing it if present.
    pub fn header(self, name: &str, value: impl AsRef<[u8]>) -> Self {
        let mut this = self.without(name);
        this.headers.push((name.to_string(), value.as_ref().to_vec()));
        this
    }

    /// Leaves header `name` out.
    pub fn without(mut self, name: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    /// The request id it carries, if any.
    pub fn request_id(&self) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("Lambda-Runtime-Aws-Request-Id"))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// What a function posted for an invocation.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// `POST /invocation/{id}/response`: the body.
    Response(Vec<u8>),
    /// `POST /invocation/{id}/error`: the `Lambda-Runtime-Function-Error-Type` header and the JSON body.
    Error { error_type_header: Option<String>, body: serde_json::Value },
}

impl Outcome {
    /// The response as JSON, or a panic naming the error.
    pub fn response(&self) -> serde_json::Value {
        match self {
            Outcome::Response(body) => serde_json::from_slice(body).expect("the response is JSON"),
            Outcome::Error { body, .. } => panic!("expected a response, got the function error {body}"),
        }
    }

    /// The error's `errorType` and `errorMessage`, after checking the header agrees with the body.
    pub fn error(&self) -> (String, String) {
        match self {
            Outcome::Error { error_type_header, body } => {
                let error_type = body["errorType"].as_str().expect("errorType").to_string();
                assert_eq!(error_type_header.as_deref(), Some(error_type.as_str()), "header and body agree");
                (error_type, body["errorMessage"].as_str().expect("errorMessage").to_string())
            }
            Outcome::Response(body) => panic!("expected an error, got the response {}", String::from_utf8_lossy(body)),
        }
    }
}

#[derive(Default)]
struct State {
    queues: HashMap<String, VecDeque<Invocation>>,
    outcomes: HashMap<String, Outcome>,
    init_errors: HashMap<String, serde_json::Value>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    stop: AtomicBool,
    /// While set, a posted response or error is recorded at once but acknowledged only once it is cleared.
    hold_acknowledgements: AtomicBool,
}

/// The server; stopped on drop.
pub struct RuntimeApiServer {
    port: u16,
    shared: Arc<Shared>,
}

impl RuntimeApiServer {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            hold_acknowledgements: AtomicBool::new(false),
        });
        let accepting = shared.clone();
        std::thread::spawn(move || {
            while !accepting.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let shared = accepting.clone();
                        std::thread::spawn(move || serve_connection(stream, &shared));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self { port, shared }
    }

    /// `AWS_LAMBDA_RUNTIME_API` for the function `name`.
    pub fn address(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    /// Queues `invocation` for the function `name`.
    pub fn enqueue(&self, name: &str, invocation: Invocation) {
        let mut state = self.shared.state.lock().unwrap();
        state.queues.entry(name.to_string()).or_default().push_back(invocation);
        self.shared.changed.notify_all();
    }

    /// Queues `invocation` and waits (up to 30 s) for what the function posts for it.
    pub fn invoke(&self, name: &str, invocation: Invocation) -> Outcome {
        let id = invocation.request_id().expect("invoke needs a request id; use enqueue for invocations without");
        self.enqueue(name, invocation);
        self.outcome(&id, Duration::from_secs(30))
            .unwrap_or_else(|| panic!("function {name} posted nothing for {id} within 30 s"))
    }

    /// While `hold` is set, responses and errors are recorded as they are posted, but the function's request
    /// is answered only once it is cleared (to see what a function does before its outcome is acknowledged).
    pub fn hold_acknowledgements(&self, hold: bool) {
        self.shared.hold_acknowledgements.store(hold, Ordering::Relaxed);
    }

    /// What was posted for the request id, waiting up to `timeout`.
    pub fn outcome(&self, request_id: &str, timeout: Duration) -> Option<Outcome> {
        self.wait(timeout, |state| state.outcomes.get(request_id).cloned())
    }

    /// The init error the function `name` posted, waiting up to `timeout`.
    pub fn init_error(&self, name: &str, timeout: Duration) -> Option<serde_json::Value> {
        self.wait(timeout, |state| state.init_errors.get(name).cloned())
    }

    fn wait<T>(&self, timeout: Duration, found: impl Fn(&State) -> Option<T>) -> Option<T> {
        let until = Instant::now() + timeout;
        let mut state = self.shared.state.lock().unwrap();
        loop {
            if let Some(value) = found(&state) {
                return Some(value);
            }
            let left = until.checked_duration_since(Instant::now())?;
            state = self.shared.changed.wait_timeout(state, left).unwrap().0;
        }
    }
}

impl Drop for RuntimeApiServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.changed.notify_all();
    }
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Serves one keep-alive connection until the client closes it.
fn serve_connection(stream: TcpStream, shared: &Shared) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    while let Some(request) = read_request(&mut reader) {
        let Some(response) = route(&request, shared) else { return };
        if writer.write_all(&response).is_err() {
            return;
        }
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let mut request = Request { method, path, headers, body: Vec::new() };
    if let Some(length) = request.header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        request.body = vec![0; length];
        reader.read_exact(&mut request.body).ok()?;
    } else if request.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let size = usize::from_str_radix(size.trim(), 16).ok()?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).ok()?;
            if size == 0 {
                break;
            }
            request.body.extend_from_slice(&chunk[..size]);
        }
    }
    Some(request)
}

/// The response bytes for one request; `None` to close the connection (the server is stopping).
fn route(request: &Request, shared: &Shared) -> Option<Vec<u8>> {
    let (function, rest) = request.path.split_once("/2018-06-01/runtime/")?;
    let function = function.trim_matches('/').to_string();
    let accepted = || {
        b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{\"status\":\"OK\"}\n"
            .to_vec()
    };
    match (request.method.as_str(), rest) {
        ("GET", "invocation/next") => {
            let mut state = shared.state.lock().unwrap();
            let invocation = loop {
                if shared.stop.load(Ordering::Relaxed) {
                    return None;
                }
                if let Some(invocation) = state.queues.get_mut(&function).and_then(VecDeque::pop_front) {
                    break invocation;
                }
                state = shared.changed.wait_timeout(state, Duration::from_millis(200)).unwrap().0;
            };
            drop(state);
            let mut response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
                invocation.body.len()
            )
            .into_bytes();
            for (name, value) in &invocation.headers {
                response.extend_from_slice(name.as_bytes());
                response.extend_from_slice(b": ");
                response.extend_from_slice(value);
                response.extend_from_slice(b"\r\n");
            }
            response.extend_from_slice(b"\r\n");
            response.extend_from_slice(&invocation.body);
            Some(response)
        }
        ("POST", "init/error") => {
            let body = serde_json::from_slice(&request.body).unwrap_or(serde_json::Value::Null);
            shared.state.lock().unwrap().init_errors.insert(function, body);
            shared.changed.notify_all();
            Some(accepted())
        }
        ("POST", rest) => {
            let (id, kind) = rest.strip_prefix("invocation/")?.rsplit_once('/')?;
            let outcome = match kind {
                "response" => Outcome::Response(request.body.clone()),
                "error" => Outcome::Error {
                    error_type_header: request.header("lambda-runtime-function-error-type").map(String::from),
                    body: serde_json::from_slice(&request.body).unwrap_or(serde_json::Value::Null),
                },
                _ => return Some(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec()),
            };
            shared.state.lock().unwrap().outcomes.insert(id.to_string(), outcome);
            shared.changed.notify_all();
            while shared.hold_acknowledgements.load(Ordering::Relaxed) && !shared.stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
            }
            Some(accepted())
        }
        _ => Some(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec()),
    }
}
