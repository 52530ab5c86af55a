//! A TCP proxy in front of moto that can make the key service fail the ways real ones do: refuse connections,
//! accept and never answer, or answer every request with KMS's throttling error. It forwards bytes untouched
//! otherwise: the KMS in these tests is still moto.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the proxy treats connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward to the upstream server.
    None,
    /// Nothing listens: connections are refused.
    Refuse,
    /// Connections are accepted and requests read, but nothing is ever answered.
    Blackhole,
    /// Every request is answered with KMS's `ThrottlingException` (HTTP 400), as KMS does over its request quota.
    Throttle,
}

struct Shared {
    fault: Mutex<Fault>,
    open: Mutex<Vec<TcpStream>>,
    stop: AtomicBool,
}

/// The proxy; stopped on drop.
pub struct FaultProxy {
    pub port: u16,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// A proxy to `127.0.0.1:upstream`, starting with `fault`.
    pub fn start(upstream: u16, fault: Fault) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // Polled, so that a switch of fault applies to the next connection accepted.
        listener.set_nonblocking(true).unwrap();
        let shared =
            Arc::new(Shared { fault: Mutex::new(fault), open: Mutex::default(), stop: AtomicBool::new(false) });
        let worker = shared.clone();
        std::thread::spawn(move || accept_loop(Some(listener), port, upstream, &worker));
        Self { port, shared }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Switches to `fault`, closing every open connection, so that pooled connections do not carry on as before.
    pub fn set(&self, fault: Fault) {
        *self.shared.fault.lock().unwrap() = fault;
        for stream in self.shared.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.set(Fault::Refuse);
    }
}

fn accept_loop(mut listener: Option<TcpListener>, port: u16, upstream: u16, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::Relaxed) {
        let fault = *shared.fault.lock().unwrap();
        match (fault, &listener) {
            (Fault::Refuse, Some(_)) => listener = None,
            (Fault::Refuse, None) => std::thread::sleep(Duration::from_millis(5)),
            (_, None) => {
                // std sets SO_REUSEADDR, so the port can be bound again at once.
                listener = TcpListener::bind(("127.0.0.1", port)).ok();
                if let Some(l) = &listener {
                    l.set_nonblocking(true).unwrap();
                }
            }
            (_, Some(l)) => match l.accept() {
                Ok((client, _)) => {
                    client.set_nonblocking(false).unwrap();
                    let shared = shared.clone();
                    std::thread::spawn(move || handle(client, fault, upstream, &shared));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            },
        }
    }
}

fn track(shared: &Shared, stream: &TcpStream) {
    if let Ok(clone) = stream.try_clone() {
        shared.open.lock().unwrap().push(clone);
    }
}

fn handle(client: TcpStream, fault: Fault, upstream: u16, shared: &Shared) {
    track(shared, &client);
    match fault {
        Fault::None => {
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else { return };
            track(shared, &server);
            let (mut client_in, mut server_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let forward = std::thread::spawn(move || {
                let _ = std::io::copy(&mut client_in, &mut server_out);
                let _ = server_out.shutdown(Shutdown::Write);
            });
            let (mut server_in, mut client_out) = (server, client);
            let _ = std::io::copy(&mut server_in, &mut client_out);
            let _ = client_out.shutdown(Shutdown::Both);
            let _ = forward.join();
        }
        Fault::Blackhole => {
            let mut sink = client;
            let _ = std::io::copy(&mut sink, &mut std::io::sink());
        }
        Fault::Throttle => {
            const BODY: &str = r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;
            let mut reader = BufReader::new(client.try_clone().unwrap());
            let mut writer = client;
            while let Some(length) = read_request_head(&mut reader) {
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    return;
                }
                let response = format!(
                    "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.1\r\n\
                     x-amzn-RequestId: 00000000-0000-0000-0000-000000000000\r\nContent-Length: {}\r\n\r\n{BODY}",
                    BODY.len()
                );
                if writer.write_all(response.as_bytes()).is_err() {
                    return;
                }
            }
        }
        Fault::Refuse => {}
    }
}

/// Reads a request's head; returns its Content-Length (0 without one), or `None` at the end of the connection.
fn read_request_head(reader: &mut BufReader<TcpStream>) -> Option<usize> {
    let mut length = 0;
    let mut first = true;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line.trim_end().is_empty() {
            if first {
                continue;
            }
            return Some(length);
        }
        first = false;
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
    }
}
