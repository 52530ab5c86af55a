//! A test guest that does what its event asks, good or hostile, so the host's sandbox and limits can be tested.
//!
//! The event is `{"action": NAME, ...}`; see `handle` for the actions and their arguments.

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

#[allow(unsafe_code)] // wit-bindgen's generated ABI glue
mod bindings {
    wit_bindgen::generate!({
        world: "secret-handler",
        path: "../../../wit",
        // The SDK's kms bindings, so that its errors read as every Rust guest's do.
        with: {
            "keyward:lambda/kms@0.1.0": keyward_guest::bindings::keyward::lambda::kms,
            "keyward:lambda/keys@0.1.0": keyward_guest::bindings::keyward::lambda::keys,
        },
        generate_all,
    });

    use super::Probe;
    export!(Probe);
}

use bindings::exports::keyward::lambda::handler::{Context, Guest};
use keyward_guest::bindings::keyward::lambda::kms;

struct Probe;

/// One request of the `fetch` action, and what came of it.
fn fetch(request: &Value) -> Value {
    let text = |name: &str| request.get(name).and_then(Value::as_str).unwrap_or_default();
    let mut outgoing =
        keyward_guest::fetch::Request::new(request.get("method").and_then(Value::as_str).unwrap_or("GET"), text("url"));
    for pair in request.get("headers").and_then(Value::as_array).into_iter().flatten() {
        let (name, value) = (pair[0].as_str().unwrap_or_default(), pair[1].as_str().unwrap_or_default());
        outgoing = outgoing.header(name, value);
    }
    // Read and drop the body as it comes, counting its bytes: for a body larger than the guest's memory.
    if request.get("discard").and_then(Value::as_bool).unwrap_or(false) {
        return match outgoing.body(text("body")).send_streaming() {
            Ok(mut response) => match std::io::copy(&mut response.body, &mut std::io::sink()) {
                Ok(bytes) => json!({ "status": response.status, "bytes": bytes }),
                Err(e) => json!({ "error": "BodyFailed", "message": e.to_string() }),
            },
            Err(e) => json!({ "error": e.code(), "message": e.message() }),
        };
    }
    match outgoing.body(text("body")).send() {
        Ok(response) => {
            let headers: Vec<Value> =
                response.headers.iter().map(|(name, value)| json!([name, String::from_utf8_lossy(value)])).collect();
            json!({ "status": response.status, "headers": headers, "body": response.text() })
        }
        Err(e) => json!({ "error": e.code(), "message": e.message() }),
    }
}

impl Guest for Probe {
    fn handle(event: String, ctx: Context) -> Result<String, String> {
        let event: Value = serde_json::from_str(&event).map_err(|e| format!("event is not JSON: {e}"))?;
        let arg = |name: &str| event.get(name).cloned().unwrap_or(Value::Null);
        let number = |name: &str| arg(name).as_u64().unwrap_or(0);
        match arg("action").as_str().unwrap_or("") {
            // Everything the guest can see of its environment.
            "env" => {
                let vars: serde_json::Map<String, Value> =
                    std::env::vars().map(|(k, v)| (k, Value::String(v))).collect();
                let args: Vec<String> = std::env::args().collect();
                let cwd = std::env::current_dir().map(|p| p.display().to_string()).unwrap_or_default();
                Ok(json!({ "env": vars, "args": args, "cwd": cwd }).to_string())
            }
            "context" => Ok(json!({
                "request_id": ctx.request_id,
                "function_arn": ctx.function_arn,
                "deadline_ms": ctx.deadline_ms,
            })
            .to_string()),
            // Try the filesystem: there are no preopens, so every path must fail.
            "read-file" => {
                let path = arg("path").as_str().unwrap_or("/etc/passwd").to_string();
                match std::fs::read(&path) {
                    Ok(bytes) => Ok(json!({ "read": bytes.len() }).to_string()),
                    Err(e) => Ok(json!({ "error": e.to_string() }).to_string()),
                }
            }
            // Decrypt `ciphertext` (base64) with `context` (object), `times` times (default 1), then wait
            // `then_sleep_ms` (default 0) whatever the outcome.
            "decrypt" => {
                let ciphertext = base64::engine::general_purpose::STANDARD
                    .decode(arg("ciphertext").as_str().unwrap_or(""))
                    .map_err(|e| format!("ciphertext is not base64: {e}"))?;
                let context: Vec<(String, String)> = arg("context")
                    .as_object()
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect())
                    .unwrap_or_default();
                let decrypted = (0..number("times").max(1)).try_fold(String::new(), |_, _| {
                    let plaintext = Zeroizing::new(kms::decrypt(&ciphertext, &context).map_err(describe)?);
                    Ok::<_, String>(
                        Sha256::digest(plaintext.as_slice())[..4].iter().map(|b| format!("{b:02x}")).collect(),
                    )
                });
                std::thread::sleep(std::time::Duration::from_millis(number("then_sleep_ms")));
                Ok(json!({ "sha256_prefix": decrypted? }).to_string())
            }
            // Asks for each secret of `names` by name (`kms.secret`): its SHA-256 prefix, or the host's error.
            "secret" => {
                let answers: Vec<Value> = arg("names")
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|name| match kms::secret(name.as_str().unwrap_or("")) {
                        Ok(plaintext) => {
                            let plaintext = Zeroizing::new(plaintext);
                            let prefix: String =
                                Sha256::digest(plaintext.as_slice())[..4].iter().map(|b| format!("{b:02x}")).collect();
                            json!({ "sha256_prefix": prefix })
                        }
                        Err(e) => json!({ "error": describe(e) }),
                    })
                    .collect();
                Ok(json!({ "secrets": answers }).to_string())
            }
            // Opens `ciphertext` (base64) as a key handle (or the env var `env`; `reopen` times more), then runs
            // each of `ops` on it,
            // `times` times over: `{"op": "hmac" | "sign" | "public-key" | "jwt", "alg": ..., "message": text,
            // "bytes": n (a message of n zero bytes instead)}`. Answers each op's output (base64) or error.
            "key" => {
                use keyward_guest::bindings::keyward::lambda::keys::{
                    HmacAlgorithm, JwtAlgorithm, Key, SignatureAlgorithm,
                };
                let open = || match arg("env").as_str() {
                    Some(name) => Key::open_env(name).map_err(|e| keyward_guest::KeyError::from(e).to_string()),
                    None => {
                        let ciphertext = base64::engine::general_purpose::STANDARD
                            .decode(arg("ciphertext").as_str().unwrap_or(""))
                            .map_err(|e| format!("ciphertext is not base64: {e}"))?;
                        Key::open(&ciphertext, &[]).map_err(|e| keyward_guest::KeyError::from(e).to_string())
                    }
                };
                let key = open()?;
                for _ in 0..number("reopen") {
                    drop(open()?);
                }
                let b64 = base64::engine::general_purpose::STANDARD;
                let mut outputs = Vec::new();
                for _ in 0..number("times").max(1) {
                    for op in arg("ops").as_array().cloned().unwrap_or_default() {
                        let message = match op.get("bytes").and_then(Value::as_u64) {
                            Some(n) => vec![0u8; n as usize],
                            None => op.get("message").and_then(Value::as_str).unwrap_or("").as_bytes().to_vec(),
                        };
                        let alg = op.get("alg").and_then(Value::as_str).unwrap_or("");
                        let output = match op.get("op").and_then(Value::as_str).unwrap_or("") {
                            "hmac" => key.hmac(HmacAlgorithm::Sha256, &message).map(|b| b64.encode(b)),
                            "public-key" => key.public_key().map(|b| b64.encode(b)),
                            "sign" => {
                                let alg = match alg {
                                    "ed25519" => SignatureAlgorithm::Ed25519,
                                    "es256" => SignatureAlgorithm::EcdsaP256Sha256,
                                    "rs256" => SignatureAlgorithm::RsaPkcs1Sha256,
                                    _ => SignatureAlgorithm::RsaPssSha256,
                                };
                                key.sign(alg, &message).map(|b| b64.encode(b))
                            }
                            _ => {
                                let alg = match alg {
                                    "hs256" => JwtAlgorithm::Hs256,
                                    "eddsa" => JwtAlgorithm::Eddsa,
                                    _ => JwtAlgorithm::Rs256,
                                };
                                let header = op.get("header").and_then(Value::as_str).unwrap_or("");
                                key.sign_jwt(alg, header, &String::from_utf8_lossy(&message))
                            }
                        };
                        outputs.push(match output {
                            Ok(out) => json!({ "ok": out }),
                            Err(e) => json!({ "error": keyward_guest::KeyError::from(e).to_string() }),
                        });
                    }
                }
                Ok(json!({ "outputs": outputs }).to_string())
            }
            // What a key handle saves the guest from doing itself, for the bench: `op` ("hmac" or "ed25519") over
            // `bytes` zero bytes, `times` times, in the guest, with `key` (base64: the HMAC key, or the 32-byte
            // Ed25519 seed) as a guest that holds its key would. Answers the last output (base64).
            "crypto" => {
                use ed25519_dalek::Signer as _;
                use hmac::Mac as _;
                let key = base64::engine::general_purpose::STANDARD
                    .decode(arg("key").as_str().unwrap_or(""))
                    .map_err(|e| format!("key is not base64: {e}"))?;
                let message = vec![0u8; number("bytes") as usize];
                let mut last = Vec::new();
                // Keys read once, as a handle reads its key once when opened.
                let hmac_key = hmac::Hmac::<Sha256>::new_from_slice(&key).map_err(|e| e.to_string())?;
                let seed: [u8; 32] = key.as_slice().try_into().unwrap_or([0; 32]);
                let signing_key = ed25519_dalek::SigningKey::from_bytes(&seed);
                for _ in 0..number("times") {
                    last = match arg("op").as_str().unwrap_or("") {
                        "hmac" => {
                            let mut mac = hmac_key.clone();
                            mac.update(&message);
                            mac.finalize().into_bytes().to_vec()
                        }
                        _ => signing_key.sign(&message).to_bytes().to_vec(),
                    };
                }
                Ok(json!({ "last": base64::engine::general_purpose::STANDARD.encode(last) }).to_string())
            }
            // A careless guest: decrypts `ciphertext`, prints the secret, and fails with it in the message.
            "leak" => {
                let ciphertext = base64::engine::general_purpose::STANDARD
                    .decode(arg("ciphertext").as_str().unwrap_or(""))
                    .map_err(|e| format!("ciphertext is not base64: {e}"))?;
                let plaintext = kms::decrypt(&ciphertext, &[]).map_err(describe)?;
                let secret = String::from_utf8_lossy(&plaintext);
                println!("the secret is {secret}");
                eprintln!("debug: secret={secret}");
                Err(format!("could not use secret {secret}"))
            }
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            // How many invocations this instance has served, this one included: 1 in a fresh instance.
            "count" => {
                static SERVED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let served = SERVED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                Ok(json!({ "served": served }).to_string())
            }
            // Send `requests` (each `{method, url, headers: [[name, value]], body, discard}`) in turn; answer each
            // one's status, headers and body (text; with `discard`, the body's length only), or its error.
            "fetch" => {
                let requests = arg("requests").as_array().cloned().unwrap_or_default();
                let answers: Vec<Value> = requests.iter().map(fetch).collect();
                Ok(json!({ "responses": answers }).to_string())
            }
            "trap" => panic!("probe asked to trap"),
            "exit" => std::process::exit(3),
            // Allocate and touch `mb` megabytes.
            "alloc" => {
                let mut blocks = Vec::new();
                for _ in 0..number("mb") {
                    blocks.push(vec![1u8; 1 << 20]);
                }
                Ok(json!({ "allocated_mb": blocks.len() }).to_string())
            }
            // A JSON string response of about `bytes` bytes.
            "big" => Ok(Value::String("x".repeat(number("bytes") as usize)).to_string()),
            "not-json" => Ok("this is not json".to_string()),
            "fail" => Err(arg("message").as_str().unwrap_or("probe failed").to_string()),
            // An error message of `bytes` bytes, several lines.
            "fail-big" => Err("probe failed on purpose\n".repeat(number("bytes") as usize / 24 + 1)),
            // Write `lines` lines to stdout and stderr.
            "print" => {
                for i in 0..number("lines") {
                    println!("probe stdout line {i}");
                    eprintln!("probe stderr line {i}");
                }
                Ok(json!({ "printed": number("lines") }).to_string())
            }
            // Ask the host for `bytes` random bytes in one call.
            "random" => {
                Ok(json!({ "random": wasip2::random::random::get_random_bytes(number("bytes")).len() }).to_string())
            }
            // Recurse `depth` calls deep with small frames: the engine's wasm stack runs out.
            "recurse" => Ok(json!({ "depth": recurse(number("depth")) }).to_string()),
            // Recurse with 8 KiB frames in linear memory: the guest's own (shadow) stack runs out.
            "recurse-frames" => Ok(json!({ "depth": recurse_frames(number("depth")) }).to_string()),
            // Block in a host call (a clock wait) for `ms` milliseconds.
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_millis(number("ms")));
                Ok(json!({ "slept_ms": number("ms"), "deadline_ms": ctx.deadline_ms }).to_string())
            }
            // Hold `count` host resources (clock pollables) at once.
            "handles" => {
                let pollables: Vec<_> = (0..number("count"))
                    .map(|_| wasip2::clocks::monotonic_clock::subscribe_duration(1_000_000_000))
                    .collect();
                Ok(json!({ "handles": pollables.len() }).to_string())
            }
            // Bytes that are not UTF-8 on stdout and stderr, then a good response.
            "not-utf8-output" => {
                use std::io::Write as _;
                std::io::stdout().write_all(b"bytes \xff\xfe on stdout\n").map_err(|e| e.to_string())?;
                std::io::stderr().write_all(b"bytes \xc3\x28 on stderr\n").map_err(|e| e.to_string())?;
                Ok(json!({ "printed": true }).to_string())
            }
            // A careless guest printing its secret the ways careless code does, then failing with it.
            "leak-forms" => {
                let ciphertext = base64::engine::general_purpose::STANDARD
                    .decode(arg("ciphertext").as_str().unwrap_or(""))
                    .map_err(|e| format!("ciphertext is not base64: {e}"))?;
                let plaintext = kms::decrypt(&ciphertext, &[]).map_err(describe)?;
                let secret = String::from_utf8_lossy(&plaintext).into_owned();
                eprintln!("debug: {secret:?}");
                println!("{}", json!({ "level": "debug", "secret": secret }));
                println!("b64 {}", base64::engine::general_purpose::STANDARD.encode(&plaintext));
                println!("b64url {}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&plaintext));
                println!("hex {}", plaintext.iter().map(|b| format!("{b:02x}")).collect::<String>());
                for line in secret.lines() {
                    println!("line: {line}");
                }
                Err(format!("failed with {secret:?}"))
            }
            other => Err(format!("unknown action {other:?}")),
        }
    }
}

/// The error as a guest on the SDK words it (`kms <kind>: <message>`).
fn describe(error: kms::Error) -> String {
    keyward_guest::KmsError::from(error).to_string()
}

#[inline(never)]
fn recurse(depth: u64) -> u64 {
    if depth == 0 {
        return 0;
    }
    let below = recurse(std::hint::black_box(depth - 1));
    std::hint::black_box(below) + 1
}

#[inline(never)]
fn recurse_frames(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth as u8; 8192]);
    if depth == 0 {
        return u64::from(frame[0]);
    }
    let below = recurse_frames(std::hint::black_box(depth - 1));
    std::hint::black_box(below) + u64::from(std::hint::black_box(&frame)[8191] & 1)
}
