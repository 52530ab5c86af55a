//! Real servers the tests start and stop: moto's KMS-compatible server and cargo-lambda's Runtime API emulator,
//! both on 127.0.0.1, each in its own process group so that stopping one stops any wrapper process too.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_kms::primitives::Blob;

/// A free port on 127.0.0.1 (the OS picks it; the listener is closed before the server binds it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child process in its own process group, stopped (the whole group) on drop, with its working directory
/// removed then.
pub struct Server {
    child: Child,
    pub port: u16,
    workdir: Option<PathBuf>,
}

impl Server {
    fn spawn(mut cmd: Command, port: u16, what: &str, workdir: Option<PathBuf>) -> Self {
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e} (run `cargo xtask test`, which installs it)"));
        let server = Self { child, port, workdir };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let started = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(60), "{what} did not listen on port {port} within 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// Stops the server and everything it started.
    pub fn stop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", "--", &format!("-{}", self.child.id())]).status();
        let started = Instant::now();
        while self.child.try_wait().ok().flatten().is_none() {
            if started.elapsed() > Duration::from_secs(5) {
                let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.child.id())]).status();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = &self.workdir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// moto's server: a KMS API to call with the real SDK.
pub fn start_moto() -> Server {
    start_moto_with(&[])
}

/// moto's server over HTTPS with a certificate for 127.0.0.1 issued by a certificate authority of its own, made
/// for it (with Python's `cryptography`, which moto is built on); returns the server and the authority's PEM file.
/// Its URL is `https://127.0.0.1:PORT`.
pub fn start_moto_tls(dir: &Path) -> (Server, PathBuf) {
    let (ca, cert, key) = (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"));
    make_certificates(&ca, &cert, &key);
    let server = start_moto_with(&["--ssl".as_ref(), "-c".as_ref(), cert.as_os_str(), "-k".as_ref(), key.as_os_str()]);
    (server, ca)
}

/// Makes the test CA's certificate, and a server certificate and key for 127.0.0.1 it issued, at the three paths.
pub fn make_certificates(ca: &Path, cert: &Path, key: &Path) {
    let made = Command::new("python3").arg("-c").arg(MAKE_CERTIFICATES).args([ca, cert, key]).status().unwrap();
    assert!(made.success(), "cannot make test certificates (Python's cryptography, installed with moto)");
}

/// Writes a CA certificate, and a server certificate and key for 127.0.0.1 it issued, to argv[1..4].
const MAKE_CERTIFICATES: &str = r#"
import datetime, ipaddress, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
now = datetime.datetime.now(datetime.timezone.utc)
def name(cn): return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
ca = (x509.CertificateBuilder().subject_name(name("keyward test CA")).issuer_name(name("keyward test CA"))
      .public_key(ca_key.public_key()).serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
      .not_valid_after(now + datetime.timedelta(days=1))
      .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
      .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
      .sign(ca_key, hashes.SHA256()))
cert = (x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(2).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256()))
open(sys.argv[1], "wb").write(ca.public_bytes(serialization.Encoding.PEM))
open(sys.argv[2], "wb").write(cert.public_bytes(serialization.Encoding.PEM))
open(sys.argv[3], "wb").write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
"#;

fn start_moto_with(args: &[&std::ffi::OsStr]) -> Server {
    let port = free_port();
    // The recorder writes its file into the working directory: one directory per server.
    let workdir = std::env::temp_dir().join(format!("keyward-moto-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&workdir).unwrap();
    let mut cmd = Command::new("moto_server");
    cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .current_dir(&workdir)
        .env("MOTO_RECORDER_FILEPATH", workdir.join("moto_recording"));
    Server::spawn(cmd, port, "moto_server", Some(workdir))
}

/// cargo-lambda's Runtime API emulator, serving the function `names` (declared as bins in a scratch Cargo.toml;
/// nothing is built).
pub fn start_emulator(dir: &Path, names: &[&str]) -> Server {
    let bins: String = names.iter().map(|name| format!("[[bin]]\nname = \"{name}\"\npath = \"main.rs\"\n\n")).collect();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!("[package]\nname = \"keyward-emulated\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n{bins}"),
    )
    .unwrap();
    std::fs::write(dir.join("main.rs"), "fn main() {}\n").unwrap();
    let port = free_port();
    let mut cmd = Command::new("cargo-lambda");
    cmd.args(["lambda", "watch", "--only-lambda-apis", "-A", "127.0.0.1", "-P", &port.to_string()]).current_dir(dir);
    Server::spawn(cmd, port, "cargo-lambda", None)
}

impl Server {
    /// `AWS_LAMBDA_RUNTIME_API` of the function `name`, when this server is cargo-lambda's emulator.
    pub fn runtime_api(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/.rt/{name}", self.port)
    }
}

/// `program` started as Lambda starts `bootstrap` for the function `name` polling `runtime_api`: a clean
/// environment (nothing of the caller's, such as a developer's AWS profile, leaks in) with the Runtime API, the
/// variables Lambda sets, a region and moto's test credentials.
pub fn bootstrap_command(program: &Path, runtime_api: &str, name: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", runtime_api)
        .env("AWS_LAMBDA_FUNCTION_NAME", name)
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .stdin(Stdio::null());
    cmd
}

/// A minimal HTTP/1.1 exchange (the tests need no client library): returns status, headers and body.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<(u16, String, Vec<u8>), String> {
    let mut stream =
        TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), timeout).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).and_then(|()| stream.write_all(body)).map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(|e| format!("reading the response: {e}"))?;
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no header end in the response")?;
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or("no status in the response")?;
    let mut body = response[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    Ok((status, head, body))
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..line_end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[line_end + 2..line_end + 2 + size]);
        data = &data[line_end + 2 + size + 2..];
    }
    out
}

/// An SDK configuration for moto: its endpoint, a fixed region, test credentials.
pub fn moto_sdk_config(moto: &Server) -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(moto.url())
        .credentials_provider(aws_sdk_kms::config::SharedCredentialsProvider::new(
            aws_sdk_kms::config::Credentials::new("testing", "testing", None, None, "tests"),
        ))
        .http_client(keyward::aws::https_client())
        .build()
}

/// Creates a symmetric key in moto; returns its ARN.
pub async fn create_key(kms: &aws_sdk_kms::Client) -> String {
    let key = kms.create_key().send().await.unwrap();
    key.key_metadata().unwrap().arn().unwrap().to_string()
}

/// Encrypts with the real SDK under `key` and `context`.
pub async fn encrypt(kms: &aws_sdk_kms::Client, key: &str, plaintext: &[u8], context: &[(&str, &str)]) -> Vec<u8> {
    let pairs = context.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let out = kms
        .encrypt()
        .key_id(key)
        .plaintext(Blob::new(plaintext))
        .set_encryption_context(Some(pairs))
        .send()
        .await
        .unwrap();
    out.ciphertext_blob().unwrap().as_ref().to_vec()
}

/// moto's call recorder: which KMS operations were made between `start` and `decrypts`.
pub fn recorder_start(moto: &Server) {
    for path in ["/moto-api/recorder/reset-recording", "/moto-api/recorder/start-recording"] {
        let (status, _, _) = http(moto.port, "POST", path, &[], b"", Duration::from_secs(10)).unwrap();
        assert_eq!(status, 200, "{path}");
    }
}

/// Stops recording and counts the Decrypt calls recorded.
pub fn recorder_decrypts(moto: &Server) -> usize {
    recorder_decrypt_bodies(moto).len()
}

/// Stops recording and returns the body of every Decrypt call recorded (KMS's JSON request).
pub fn recorder_decrypt_bodies(moto: &Server) -> Vec<serde_json::Value> {
    recorder_bodies(moto, "TrentService.Decrypt")
}

/// Stops recording and counts the calls of `target` (an `X-Amz-Target`: `AmazonSSM.GetParameters`) recorded.
pub fn recorder_calls(moto: &Server, target: &str) -> usize {
    recorder_bodies(moto, target).len()
}

/// Stops recording and returns the body of every call of `target` recorded (the service's JSON request).
pub fn recorder_bodies(moto: &Server, target: &str) -> Vec<serde_json::Value> {
    let (status, _, _) =
        http(moto.port, "POST", "/moto-api/recorder/stop-recording", &[], b"", Duration::from_secs(10)).unwrap();
    assert_eq!(status, 200);
    let (status, _, body) =
        http(moto.port, "GET", "/moto-api/recorder/download-recording", &[], b"", Duration::from_secs(10)).unwrap();
    assert_eq!(status, 200);
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|line| !line.trim().is_empty())
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|entry| {
            entry["headers"]
                .as_object()
                .is_some_and(|h| h.iter().any(|(k, v)| k.eq_ignore_ascii_case("x-amz-target") && v == target))
        })
        .map(|entry| {
            let body = entry["body"].as_str().unwrap_or("{}");
            let body = match entry["body_encoded"].as_bool() {
                Some(true) => {
                    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, body).unwrap_or_default()
                }
                _ => body.as_bytes().to_vec(),
            };
            serde_json::from_slice(&body).unwrap_or_default()
        })
        .collect()
}
