//! keyward against a native Rust Lambda doing the same work, in one table: `cargo xtask bench`, which builds the
//! guests, the runtime-only `bootstrap` and the native function (`benches/native-hello`, both in the `lambda`
//! profile) first.
//!
//! Through cargo-lambda's Runtime API emulator, with moto as KMS, for the native function, keyward with the hello
//! guest and keyward with the JavaScript hello guest (both precompiled, as `keyward package` ships them):
//! - cold start: from spawning the process to its first response, as it is and less the KMS call itself (the
//!   median of Decrypt calls from a fresh client, timed between the cold starts), so that moto's speed does not count;
//! - warm invoke: the round trip of one invocation through the emulator, over 10,000 invocations;
//! - the resident set after those 10,000 invocations, and the size of the stripped binary;
//! - outgoing HTTP: a warm invocation making one HTTPS request to a local server (keyward's probe guest against the
//!   native function sending the same request with hyper and rustls, both pooling), the cold start of hello with
//!   egress configured against without, and the host's memory while a guest streams a 200 MiB body.
//!
//! In process, per guest: where an invocation's time goes (instantiate, guest, response path) and the teardown of
//! its instance; Lambda mode instantiates before it asks for the invocation, and tears down after the response.
//!
//! A bench binary, not a test: it prints figures and asserts nothing about them.

#![allow(clippy::unwrap_used, missing_debug_implementations)]

#[path = "../../tests/integration/origin.rs"]
#[allow(dead_code)]
mod origin;
#[path = "../../tests/integration/servers.rs"]
#[allow(dead_code)]
mod servers;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kms::primitives::Blob;
use base64::Engine as _;
use keyward::{EncryptionContext, Host, HostSettings, InvocationContext, LocalKey, SecretsSettings};
use serde_json::json;
use servers::*;

const COLD_RUNS: usize = 20;
const WARM_RUNS: usize = 10_000;
const IN_PROCESS_RUNS: usize = 1_000;

/// A function as Lambda would run it: a program and its environment, and the event it is invoked with and a part
/// of its answer.
struct Function {
    name: &'static str,
    program: PathBuf,
    env: Vec<(&'static str, String)>,
    event: String,
    answer: &'static str,
}

/// What one function measured through the emulator.
struct Measured {
    cold: Vec<Duration>,
    warm: Vec<Duration>,
    rss_kib: u64,
    size: u64,
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let built = |var: &str| {
        let path =
            PathBuf::from(std::env::var_os(var).unwrap_or_else(|| panic!("{var} is not set: run `cargo xtask bench`")));
        assert!(path.exists(), "{} is missing: run `cargo xtask bench`", path.display());
        path
    };
    let bootstrap = built("KEYWARD_BENCH_BOOTSTRAP");
    let native = built("KEYWARD_BENCH_NATIVE");
    let dir = std::env::temp_dir().join(format!("keyward-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cwasm = |guest: &str| {
        compile_file(
            &root.join(format!("target/wasm32-wasip2/release/{guest}.wasm")),
            &dir.join(format!("{guest}.cwasm")),
        )
    };
    let hello = cwasm("hello");
    let hello_js = cwasm("hello-js");
    let http_hello = cwasm("http_hello");
    let probe = cwasm("probe");

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let moto = start_moto();
    let kms = aws_sdk_kms::Client::new(&moto_sdk_config(&moto));
    let key = runtime.block_on(create_key(&kms));
    let ciphertext = runtime.block_on(encrypt(&kms, &key, b"bench-secret", &[("function", "hello")]));
    let password = base64::engine::general_purpose::STANDARD.encode(&ciphertext);
    let api_key = runtime.block_on(encrypt(&kms, &key, b"bench-api-key", &[("function", "hello")]));
    let api_key = base64::engine::general_purpose::STANDARD.encode(&api_key);
    // The KMS call each cold start makes, timed between the cold starts: moto's speed drifts within a run.
    let mut kms_calls = Vec::new();
    let mut kms_call = || {
        let call = runtime.block_on(kms_call(&moto, &ciphertext));
        kms_calls.push(call);
    };

    let keyward = |name, component: &Path| Function {
        name,
        program: bootstrap.clone(),
        env: vec![
            ("KEYWARD_COMPONENT", component.display().to_string()),
            ("KEYWARD_GUEST_ENV", "PASSWORD".into()),
            ("PASSWORD", password.clone()),
            ("KEYWARD_PREFETCH", "PASSWORD".into()),
            ("KEYWARD_KMS_KEY_ID", key.clone()),
            ("KEYWARD_KMS_ENDPOINT", moto.url()),
            ("KEYWARD_KMS_CONTEXT", "function=hello".into()),
        ],
        event: "{}".into(),
        answer: "secret_sha256_prefix",
    };
    let native_function = |name| Function {
        name,
        program: native.clone(),
        env: vec![("PASSWORD", password.clone()), ("AWS_ENDPOINT_URL_KMS", moto.url())],
        event: "{}".into(),
        answer: "secret_sha256_prefix",
    };
    // One HTTPS request per invocation, to a local server with a certificate of the test CA's.
    let api = origin::Origin::https(&dir);
    let (ca, _, _) = origin::test_ca(&dir);
    let mut native_fetch = native_function("native-fetch");
    native_fetch.env.extend([("FETCH_URL", api.url("/")), ("FETCH_CA", ca.display().to_string())]);
    native_fetch.answer = r#"\"status\":200"#;
    let mut keyward_fetch = keyward("keyward-fetch", &probe);
    keyward_fetch
        .env
        .extend([("KEYWARD_ALLOW_OUTBOUND", api.origin()), ("KEYWARD_OUTBOUND_CA_BUNDLE", ca.display().to_string())]);
    keyward_fetch.event = json!({ "action": "fetch", "requests": [{ "url": api.url("/") }] }).to_string();
    keyward_fetch.answer = r#""status":200"#;
    // hello, with an origin allowed and a secret injected into it: what configuring egress costs a cold start.
    let mut keyward_egress = keyward("keyward-egress", &hello);
    keyward_egress.env.retain(|(name, _)| *name != "KEYWARD_GUEST_ENV");
    keyward_egress.env.extend([
        ("KEYWARD_GUEST_ENV", "PASSWORD,API_KEY".into()),
        ("API_KEY", api_key),
        ("KEYWARD_ALLOW_OUTBOUND", api.origin()),
        ("KEYWARD_INJECT_API_KEY", format!("{} Authorization: Bearer {{secret}}", api.origin())),
    ]);
    // The probe reading three Secrets Manager secrets by name: prefetched at init (three calls at once), or fetched
    // one by one by the first invocation.
    let sm = aws_sdk_secretsmanager::Client::new(&moto_sdk_config(&moto));
    for name in STORED {
        runtime.block_on(sm.create_secret().name(format!("bench/{name}")).secret_string("bench-value").send()).unwrap();
    }
    let stored = |name, prefetch: bool| {
        let mut function = keyward(name, &probe);
        function.env.retain(|(name, _)| !matches!(*name, "KEYWARD_PREFETCH" | "KEYWARD_GUEST_ENV" | "PASSWORD"));
        function.env.push(("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto.url()));
        for name in STORED {
            function.env.push((name_source(name), format!("secretsmanager:bench/{name}")));
        }
        if prefetch {
            function.env.push(("KEYWARD_PREFETCH", STORED.join(",")));
        }
        function.event = json!({ "action": "secret", "names": STORED }).to_string();
        function.answer = "sha256_prefix";
        function
    };
    let mut functions = vec![
        native_function("native"),
        keyward("keyward", &hello),
        keyward("keyward-js", &hello_js),
        native_fetch,
        keyward_fetch,
        keyward_egress,
        stored("keyward-sm-prefetched", true),
        stored("keyward-sm-one-by-one", false),
    ];
    // Another build of the bootstrap (an earlier commit's, say) running hello beside this one: a change's cost
    // measured in one run, on one machine. An earlier host may not link today's hello (a guest built on a newer SDK
    // imports more): KEYWARD_BENCH_BASELINE_COMPONENT names the hello.wasm of that commit.
    let baseline = std::env::var_os("KEYWARD_BENCH_BASELINE").map(PathBuf::from);
    if let Some(program) = &baseline {
        let component = match std::env::var_os("KEYWARD_BENCH_BASELINE_COMPONENT") {
            Some(wasm) => compile_file(Path::new(&wasm), &dir.join("baseline-hello.cwasm")),
            None => hello.clone(),
        };
        functions.push(Function { program: program.clone(), ..keyward("baseline", &component) });
    }
    let names: Vec<String> = functions
        .iter()
        .flat_map(|f| (0..COLD_RUNS).map(move |i| format!("{}-cold-{i}", f.name)).chain([format!("{}-warm", f.name)]))
        .collect();
    let emulator = start_emulator(&dir, &names.iter().map(String::as_str).collect::<Vec<_>>());
    let mut measured = measure(&emulator, &functions, &mut kms_call).into_iter();
    let mut next = || measured.next().unwrap();
    let (native, keyward, keyward_js, native_fetch, keyward_fetch, keyward_egress) =
        (next(), next(), next(), next(), next(), next());
    let (sm_prefetched, sm_one_by_one) = (next(), next());
    let baseline = baseline.map(|_| next());
    let kms_call = median(&mut kms_calls);
    let less_kms = |times: &[Duration]| times.iter().map(|t| t.saturating_sub(kms_call)).collect::<Vec<_>>();
    let (native_cold, keyward_cold, js_cold, egress_cold) =
        (less_kms(&native.cold), less_kms(&keyward.cold), less_kms(&keyward_js.cold), less_kms(&keyward_egress.cold));
    // http-hello does hello's work (its secret through kms, a SHA-256, a JSON body) in the HTTP world, handed a
    // Function URL event.
    let function_url = json!({
        "version": "2.0", "rawPath": "/", "rawQueryString": "", "headers": {"host": "x.lambda-url.us-east-1.on.aws"},
        "requestContext": {"http": {"method": "GET", "path": "/", "sourceIp": "127.0.0.1"}, "requestId": "r"},
        "isBase64Encoded": false
    })
    .to_string();
    let in_process =
        [("hello", &hello, "{}"), ("hello-js", &hello_js, "{}"), ("http-hello", &http_hello, function_url.as_str())]
            .map(|(guest, cwasm, event)| (guest, phases(&runtime, cwasm, event)));

    let mut table = Table::default();
    table.pair("cold start, spawn to first response, median", &native.cold, &keyward.cold, 50, "", |_, _| true);
    table.pair(
        "cold start, less the KMS call, median",
        &native_cold,
        &keyward_cold,
        50,
        "≤ 5 ms, ≤ 1.5×",
        |n, k| k <= 5.0 && k <= 1.5 * n,
    );
    table.pair("cold start, less the KMS call, p99", &native_cold, &keyward_cold, 99, "", |_, _| true);
    table.pair("warm invoke through the emulator, median", &native.warm, &keyward.warm, 50, "≤ 1.1×", |n, k| {
        k <= 1.1 * n
    });
    table.pair("warm invoke through the emulator, p99", &native.warm, &keyward.warm, 99, "", |_, _| true);
    table.pair(
        "warm invoke with one HTTPS request (pooled), median",
        &native_fetch.warm,
        &keyward_fetch.warm,
        50,
        "≤ 1.15×",
        |n, k| k <= 1.15 * n,
    );
    table.pair(
        "warm invoke with one HTTPS request (pooled), p99",
        &native_fetch.warm,
        &keyward_fetch.warm,
        99,
        "",
        |_, _| true,
    );
    let (without, with) = (percentile(&keyward_cold, 50), percentile(&egress_cold, 50));
    table.row(
        "keyward cold start, less KMS, median: without egress (left), with an origin and an injection (right)",
        fmt(without),
        fmt(with),
        "≤ +1.5 ms",
        ms(with) <= ms(without) + 1.5,
    );
    if let Some(baseline) = &baseline {
        let (cold, warm) = (less_kms(&baseline.cold), &baseline.warm);
        table.pair(
            "KEYWARD_BENCH_BASELINE (left) vs this bootstrap: cold start, less KMS, median",
            &cold,
            &keyward_cold,
            50,
            "±5%",
            |b, k| (k - b).abs() <= 0.05 * b,
        );
        table.pair(
            "KEYWARD_BENCH_BASELINE (left) vs this bootstrap: warm invoke, median",
            warm,
            &keyward.warm,
            50,
            "",
            |_, _| true,
        );
        table.row(
            "KEYWARD_BENCH_BASELINE (left) vs this bootstrap: size",
            mib(baseline.size),
            mib(keyward.size),
            "",
            true,
        );
    }
    table.pair(
        "3 Secrets Manager secrets, cold start to first response, median: fetched one by one (left), prefetched",
        &sm_one_by_one.cold,
        &sm_prefetched.cold,
        50,
        "prefetched faster",
        |one_by_one, prefetched| prefetched < one_by_one,
    );
    let (env_read, stored_read) = warm_reads(&runtime, &probe, &moto, &key, &ciphertext);
    table.pair(
        "warm read from the cache, in process, median: env ciphertext (left), Secrets Manager secret",
        &env_read,
        &stored_read,
        50,
        "±5%",
        |env, stored| (stored - env).abs() <= 0.05 * env,
    );
    let (calls, took) = prefetch_parameters(&runtime, &probe, &moto, &key);
    table.row(
        "prefetch of 25 SSM parameters: GetParameters calls (left), time (right)",
        calls.to_string(),
        fmt(took),
        "3 calls",
        calls == 3,
    );
    let (before, peak) = streamed_memory(&runtime, &probe);
    table.row(
        "host RSS while a guest streams a 200 MiB body (64 MiB guest): before (left), peak (right)",
        mib(before),
        mib(peak),
        "≤ +80 MiB",
        peak <= before + (80 << 20),
    );
    table.row("RSS after 10,000 invocations", mib(native.rss_kib << 10), mib(keyward.rss_kib << 10), "≤ 16 MB", {
        keyward.rss_kib << 10 <= 16_000_000
    });
    table.row("bootstrap, stripped", mib(native.size), mib(keyward.size), "≤ 8 MB", keyward.size <= 8_000_000);
    table.pair("JS hello: cold start, less the KMS call, median", &native_cold, &js_cold, 50, "≤ 25 ms", |_, k| {
        k <= 25.0
    });
    table.pair("JS hello: warm invoke, median", &native.warm, &keyward_js.warm, 50, "", |_, _| true);
    table.row(
        "JS hello: RSS after 10,000 invocations",
        mib(native.rss_kib << 10),
        mib(keyward_js.rss_kib << 10),
        "≤ 40 MB",
        keyward_js.rss_kib << 10 <= 40_000_000,
    );
    // A warm invocation's whole cost in process (instance, handle, response path) in either world.
    let total = |phases: &[Vec<Duration>; 4]| -> Vec<Duration> {
        (0..phases[0].len()).map(|i| phases[0][i] + phases[1][i] + phases[2][i]).collect()
    };
    table.pair(
        "warm invocation in process, median: hello (left), http-hello (the HTTP world, a Function URL event)",
        &total(&in_process[0].1),
        &total(&in_process[2].1),
        50,
        "≤ 1.1×",
        |handler, http| http <= 1.1 * handler,
    );
    for (guest, phases) in in_process {
        let [instantiate, guest_call, response, teardown] = phases;
        table.host(&format!("{guest} in process: instantiate, before the invocation"), &instantiate, "", true);
        table.host(&format!("{guest} in process: guest's handle"), &guest_call, "", true);
        let target = if guest == "hello" { "≤ 15 µs" } else { "" };
        table.host(&format!("{guest} in process: response path"), &response, target, {
            guest != "hello" || percentile(&response, 50) <= Duration::from_micros(15)
        });
        table.host(&format!("{guest} in process: teardown, after the response"), &teardown, "", true);
    }
    for (figure, times) in key_operation_costs(&runtime, &probe) {
        table.host(&figure, &times, "", true);
    }
    let [build, clean, leaky, build_binary] = masking_cost();
    table.host("masking 10 secrets: build the masker", &build, "", true);
    table.host("masking a 4 KiB binary secret: build the masker", &build_binary, "", true);
    table.host("masking 10 secrets: scan 64 KiB of output, none in it", &clean, "", true);
    table.host("masking 10 secrets: scan 64 KiB of output, 20 in it", &leaky, "", true);
    println!(
        "KMS call subtracted from cold starts: {} (median Decrypt from a fresh client, between them)",
        fmt(kms_call)
    );
    table.print();
    drop(emulator);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `keyward compile` of `wasm` into `cwasm`.
fn compile_file(wasm: &Path, cwasm: &Path) -> PathBuf {
    let compiled = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["compile", wasm.to_str().unwrap(), "-o", cwasm.to_str().unwrap()])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(compiled.success(), "cannot compile {}: run `cargo xtask bench`", wasm.display());
    cwasm.to_path_buf()
}

/// The names of the Secrets Manager secrets the stored-secret functions read.
const STORED: [&str; 3] = ["DB_PASSWORD", "API_TOKEN", "SIGNING_SECRET"];

/// `KEYWARD_SOURCE_<name>`, as a `'static` variable name for a [`Function`]'s environment.
fn name_source(name: &str) -> &'static str {
    Box::leak(format!("KEYWARD_SOURCE_{name}").into_boxed_str())
}

/// A host over the probe with moto as KMS and as the secret store, of `settings`.
fn moto_host(probe: &Path, moto: &Server, key: &str, settings: HostSettings) -> Host {
    let sdk_config = moto_sdk_config(moto);
    let kms = keyward::aws::AwsKms::from_sdk_config(&sdk_config, vec![key.to_string()]);
    let store = Arc::new(keyward::aws::AwsSecretStore::from_sdk_config(&sdk_config));
    let backends = keyward::Backends::from(Arc::new(kms)).with_store(store);
    Host::from_file(probe, backends, settings).unwrap()
}

/// Invocations of the probe reading one secret by name from a warm cache: an env var's KMS ciphertext, against a
/// Secrets Manager secret (both fetched from moto once, before timing).
fn warm_reads(
    runtime: &tokio::runtime::Runtime,
    probe: &Path,
    moto: &Server,
    key: &str,
    ciphertext: &[u8],
) -> (Vec<Duration>, Vec<Duration>) {
    let secrets = SecretsSettings {
        stamped_context: EncryptionContext::from_pairs([("function", "hello")]).unwrap(),
        sources: vec![("STORED".into(), "secretsmanager:bench/DB_PASSWORD".parse().unwrap())],
        prefetch: vec!["PASSWORD".into(), "STORED".into()],
        cache: keyward::secrets::CacheSettings { ttl: Duration::from_secs(3600), ..Default::default() },
        ..SecretsSettings::default()
    };
    let guest_env = vec![("PASSWORD".into(), base64::engine::general_purpose::STANDARD.encode(ciphertext))];
    let host = moto_host(probe, moto, key, HostSettings { guest_env, secrets, ..HostSettings::default() });
    runtime.block_on(host.prefetch()).unwrap();
    let time = |name: &str| {
        let event = json!({ "action": "secret", "names": [name] }).to_string();
        (0..IN_PROCESS_RUNS)
            .map(|_| {
                let started = Instant::now();
                let invocation = runtime.block_on(host.invoke(&event, InvocationContext::local("arn:bench")));
                let elapsed = started.elapsed();
                assert!(invocation.result.unwrap().contains("sha256_prefix"));
                elapsed
            })
            .collect::<Vec<_>>()
    };
    // Interleaved rounds, so that a drift of the machine's speed falls on both.
    let (mut env, mut stored) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        env.extend(time("PASSWORD"));
        stored.extend(time("STORED"));
    }
    (env, stored)
}

/// Prefetching 25 SSM parameters at init: how many GetParameters calls moto saw, and how long it took.
fn prefetch_parameters(runtime: &tokio::runtime::Runtime, probe: &Path, moto: &Server, key: &str) -> (usize, Duration) {
    let ssm = aws_sdk_ssm::Client::new(&moto_sdk_config(moto));
    let names: Vec<String> = (0..25).map(|i| format!("P{i:02}")).collect();
    for name in &names {
        let put = ssm.put_parameter().name(format!("/bench/{name}")).value("bench-value").overwrite(true);
        runtime.block_on(put.r#type(aws_sdk_ssm::types::ParameterType::SecureString).send()).unwrap();
    }
    let secrets = SecretsSettings {
        sources: names.iter().map(|n| (n.clone(), format!("ssm:/bench/{n}").parse().unwrap())).collect(),
        prefetch: names.clone(),
        cache: keyward::secrets::CacheSettings { ttl: Duration::from_secs(3600), ..Default::default() },
        ..SecretsSettings::default()
    };
    let host = moto_host(probe, moto, key, HostSettings { secrets, ..HostSettings::default() });
    recorder_start(moto);
    let started = Instant::now();
    runtime.block_on(host.prefetch()).unwrap();
    let took = started.elapsed();
    (recorder_calls(moto, "AmazonSSM.GetParameters"), took)
}

/// A Decrypt call from a fresh client (its own connection), timed from send to answer.
async fn kms_call(moto: &Server, ciphertext: &[u8]) -> Duration {
    let kms = aws_sdk_kms::Client::new(&moto_sdk_config(moto));
    let call = kms.decrypt().ciphertext_blob(Blob::new(ciphertext)).encryption_context("function", "hello");
    let started = Instant::now();
    call.send().await.unwrap();
    started.elapsed()
}

/// Cold starts, then warm invocations of one process of each function, and its resident set after them, and the
/// binary's size. The functions take turns, run by run and invocation by invocation, so that whatever else the
/// machine does weighs on each alike.
fn measure(emulator: &Server, functions: &[Function], kms_call: &mut dyn FnMut()) -> Vec<Measured> {
    let mut cold: Vec<Vec<Duration>> = functions.iter().map(|_| Vec::new()).collect();
    for i in 0..COLD_RUNS {
        kms_call();
        for (function, times) in functions.iter().zip(&mut cold) {
            let name = format!("{}-cold-{i}", function.name);
            let started = Instant::now();
            let mut process = spawn(emulator, &name, function);
            invoke(emulator, &name, function);
            times.push(started.elapsed());
            let _ = process.kill();
            let _ = process.wait();
        }
    }
    let mut processes: Vec<_> = functions
        .iter()
        .map(|function| {
            let name = format!("{}-warm", function.name);
            let process = spawn(emulator, &name, function);
            invoke(emulator, &name, function);
            (name, process)
        })
        .collect();
    let mut warm: Vec<Vec<Duration>> = functions.iter().map(|_| Vec::new()).collect();
    for _ in 0..WARM_RUNS {
        for (((name, _), times), function) in processes.iter().zip(&mut warm).zip(functions) {
            let started = Instant::now();
            invoke(emulator, name, function);
            times.push(started.elapsed());
        }
    }
    processes
        .iter_mut()
        .zip(cold.into_iter().zip(warm))
        .zip(functions)
        .map(|(((_, process), (cold, warm)), function)| {
            let rss_kib = rss_kib(process.id());
            let _ = process.kill();
            let _ = process.wait();
            Measured { cold, warm, rss_kib, size: std::fs::metadata(&function.program).unwrap().len() }
        })
        .collect()
}

fn spawn(emulator: &Server, name: &str, function: &Function) -> std::process::Child {
    bootstrap_command(&function.program, &emulator.runtime_api(name), name)
        .envs(function.env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn invoke(emulator: &Server, name: &str, function: &Function) {
    let path = format!("/2015-03-31/functions/{name}/invocations");
    let event = function.event.as_bytes();
    let (status, _, body) = http(emulator.port, "POST", &path, &[], event, Duration::from_secs(30)).unwrap();
    let body = String::from_utf8_lossy(&body);
    assert!(status == 200 && body.contains(function.answer), "{name}: {status} {body}");
}

/// The bench process's resident set before a guest streams a 200 MiB body through the host (reading and dropping
/// it), and its peak meanwhile: the host holds a frame at a time, the guest its 64 MiB at most.
fn streamed_memory(runtime: &tokio::runtime::Runtime, probe: &Path) -> (u64, u64) {
    let server = origin::Origin::http();
    let http = keyward::capability::http::HttpSettings {
        allow: vec![server.origin().parse().unwrap()],
        max_response_bytes: 256 << 20,
        ..Default::default()
    };
    let limits = keyward::Limits { timeout: Duration::from_secs(60), ..keyward::Limits::default() };
    let host = Host::from_file(
        probe,
        Arc::new(LocalKey::generate().unwrap()),
        HostSettings { http, limits, ..HostSettings::default() },
    )
    .unwrap();
    let event = json!({ "action": "fetch", "requests": [{ "url": server.url("/huge?mb=200"), "discard": true }] });
    let warm = json!({ "action": "fetch", "requests": [{ "url": server.url("/huge?mb=1"), "discard": true }] });
    runtime.block_on(host.invoke(warm.to_string(), InvocationContext::local("arn:bench"))).result.unwrap();
    let before = status_kib("VmRSS") << 10;
    // Linux: 5 resets the peak resident set to the current one.
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let invocation = runtime.block_on(host.invoke(event.to_string(), InvocationContext::local("arn:bench")));
    assert!(invocation.result.unwrap().contains(&(200u64 << 20).to_string()), "the whole body streamed");
    (before, status_kib("VmHWM") << 10)
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// In process, with a local key: each invocation's instantiate, guest and response-path time, and the teardown
/// of its instance (timed apart, as Lambda mode does it after the response).
fn phases(runtime: &tokio::runtime::Runtime, cwasm: &Path, event: &str) -> [Vec<Duration>; 4] {
    let key = Arc::new(LocalKey::generate().unwrap());
    let context = EncryptionContext::from_pairs([("function", "hello")]).unwrap();
    let ciphertext = key.encrypt(b"bench-secret", &context).unwrap();
    let config = HostSettings {
        guest_env: vec![("PASSWORD".into(), base64::engine::general_purpose::STANDARD.encode(ciphertext))],
        secrets: SecretsSettings { stamped_context: context, ..SecretsSettings::default() },
        ..HostSettings::default()
    };
    let host = Host::from_file(cwasm, key, config).unwrap();
    let mut phases: [Vec<Duration>; 4] = Default::default();
    runtime.block_on(async {
        for i in 0..IN_PROCESS_RUNS + 10 {
            let invocation = host.invoke(event, InvocationContext::local("arn:bench")).await;
            invocation.result.as_ref().unwrap();
            let started = Instant::now();
            drop(invocation.instance);
            let teardown = started.elapsed();
            // The first ten warm the cache and the pool.
            if i >= 10 {
                let p = invocation.phases;
                for (all, one) in phases.iter_mut().zip([p.instantiate, p.guest, p.response, teardown]) {
                    all.push(one);
                }
            }
        }
    });
    phases
}

/// What one operation on a key handle costs, next to the guest doing the same itself with its own copy of the key
/// (RustCrypto in wasm, as the signer example did before handles): the guest's `handle` call with 100 operations,
/// less the median of the same call with none, over 100. The key is opened (a cached decrypt, the key read) in both.
fn key_operation_costs(runtime: &tokio::runtime::Runtime, probe: &Path) -> Vec<(String, Vec<Duration>)> {
    const OPS: u32 = 100;
    let key = Arc::new(LocalKey::generate().unwrap());
    let rng = ring::rand::SystemRandom::new();
    let seed: [u8; 32] = ring::rand::generate(&rng).unwrap().expose();
    let hmac_secret: [u8; 32] = ring::rand::generate(&rng).unwrap().expose();
    // PKCS#8 v1 of an Ed25519 seed (RFC 8410): a fixed 16-byte prefix, then the seed.
    let ed25519_pkcs8 = [&hex_bytes("302e020100300506032b657004220420")[..], &seed].concat();
    let host = Host::from_file(probe, key.clone(), HostSettings::default()).unwrap();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let guest_time = |event: serde_json::Value| {
        runtime.block_on(async {
            let invocation = host.invoke(event.to_string(), InvocationContext::local("arn:bench")).await;
            invocation.result.as_ref().unwrap();
            invocation.phases.guest
        })
    };
    let per_operation = |event: &dyn Fn(u32) -> serde_json::Value| {
        for _ in 0..10 {
            guest_time(event(OPS));
        }
        let mut none: Vec<Duration> = (0..50).map(|_| guest_time(event(0))).collect();
        let none = median(&mut none);
        (0..50).map(|_| guest_time(event(OPS)).saturating_sub(none) / OPS).collect::<Vec<_>>()
    };
    let mut rows = Vec::new();
    for (name, op, secret, guest_key) in [
        ("HMAC-SHA-256 of 1 KiB", json!({"op": "hmac", "bytes": 1024}), &hmac_secret[..], &hmac_secret),
        ("Ed25519 signature of 1 KiB", json!({"op": "sign", "alg": "ed25519", "bytes": 1024}), &ed25519_pkcs8, &seed),
    ] {
        let ciphertext = b64(&key.encrypt(secret, &EncryptionContext::new()).unwrap());
        let ops = |n: u32| if n == 0 { json!([]) } else { json!([op]) };
        let handle = |n: u32| json!({"action": "key", "ciphertext": ciphertext, "ops": ops(n), "times": n.max(1)});
        let guest_op = if op["op"] == "hmac" { "hmac" } else { "ed25519" };
        let in_guest =
            |n: u32| json!({"action": "crypto", "op": guest_op, "key": b64(guest_key), "bytes": 1024, "times": n});
        rows.push((format!("{name}: through a key handle, per operation"), per_operation(&handle)));
        rows.push((format!("{name}: in the guest, with the key, per operation"), per_operation(&in_guest)));
    }
    rows
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
}

/// What masking costs: an invocation's guest output (64 KiB, as much as the host keeps of a stream) checked for ten
/// secrets, with none of them in it and with each printed in it twice; and building the masker.
fn masking_cost() -> [Vec<Duration>; 4] {
    const ROUNDS: usize = 200;
    let secrets: Vec<Vec<u8>> =
        (0..10).map(|i| format!("s3cret-number-{i}-of-ten\nwith a second line").into_bytes()).collect();
    let timed = |f: &dyn Fn()| {
        (0..ROUNDS)
            .map(|_| {
                let started = Instant::now();
                f();
                started.elapsed()
            })
            .collect()
    };
    let build = timed(&|| drop(std::hint::black_box(keyward::mask::Masker::new(secrets.iter().map(Vec::as_slice)))));
    let masker = keyward::mask::Masker::new(secrets.iter().map(Vec::as_slice));
    let line = b"an ordinary line of guest output, nothing secret in it at all\n";
    let clean: Vec<u8> = line.iter().copied().cycle().take(64 * 1024).collect();
    let mut leaky = clean.clone();
    for (i, secret) in secrets.iter().enumerate() {
        for copy in 0..2 {
            let at = (i * 2 + copy) * 3000;
            leaky[at..at + secret.len()].copy_from_slice(secret);
        }
    }
    let scan = |input: &[u8]| timed(&|| drop(std::hint::black_box(masker.bytes(input))));
    // A binary secret, as large as KMS decrypts (a DER key is one): its forms are many and bytes of every value.
    let rng = ring::rand::SystemRandom::new();
    let binary: [u8; 4096] = ring::rand::generate(&rng).unwrap().expose();
    let build_binary = timed(&|| drop(std::hint::black_box(keyward::mask::Masker::new([&binary[..]]))));
    [build, scan(&clean), scan(&leaky), build_binary]
}

fn percentile(times: &[Duration], p: usize) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn median(times: &mut [Duration]) -> Duration {
    percentile(times, 50)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn fmt(d: Duration) -> String {
    if d < Duration::from_millis(1) { format!("{:.1} µs", d.as_secs_f64() * 1e6) } else { format!("{:.2} ms", ms(d)) }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// The one table: figure, native, keyward, keyward/native, target, met.
#[derive(Default)]
struct Table {
    rows: Vec<[String; 6]>,
}

impl Table {
    fn row(&mut self, figure: &str, native: String, keyward: String, target: &str, met: bool) {
        let mark = if target.is_empty() {
            ""
        } else if met {
            "yes"
        } else {
            "NO"
        };
        self.rows.push([figure.into(), native, keyward, String::new(), target.into(), mark.into()]);
    }

    /// A percentile of native and keyward times, their ratio, and whether `met(native_ms, keyward_ms)`.
    fn pair(
        &mut self,
        figure: &str,
        native: &[Duration],
        keyward: &[Duration],
        p: usize,
        target: &str,
        met: impl Fn(f64, f64) -> bool,
    ) {
        let (n, k) = (percentile(native, p), percentile(keyward, p));
        self.row(figure, fmt(n), fmt(k), target, met(ms(n), ms(k)));
        self.rows.last_mut().unwrap()[3] = format!("{:.2}×", ms(k) / ms(n));
    }

    /// A keyward-only figure: median and p99.
    fn host(&mut self, figure: &str, times: &[Duration], target: &str, met: bool) {
        let keyward = format!("{} (p99 {})", fmt(percentile(times, 50)), fmt(percentile(times, 99)));
        self.row(figure, "-".into(), keyward, target, met);
    }

    fn print(&self) {
        let header = ["figure", "native", "keyward", "ratio", "target", "met"].map(String::from);
        let rows: Vec<&[String; 6]> = std::iter::once(&header).chain(&self.rows).collect();
        let width = |i: usize| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0);
        let widths: Vec<usize> = (0..6).map(width).collect();
        let line = |cells: Vec<String>| println!("| {} |", cells.join(" | "));
        for (i, row) in rows.into_iter().enumerate() {
            line(row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect());
            if i == 0 {
                line(widths.iter().map(|w| "-".repeat(*w)).collect());
            }
        }
    }
}
