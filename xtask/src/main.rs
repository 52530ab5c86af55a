//! keyward's task runner (`cargo xtask <task>`): builds guests for wasm32-wasip2 and runs the demo, the tests and
//! the benchmark. Installs the wasm target when it is missing. Standard library only, so it builds in a second.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

/// Guest components, by package name: the examples users run and the test guests the host's tests load.
const GUESTS: &[&str] = &["hello", "signer", "jwt", "api-client", "http-hello", "probe", "netprobe", "http-probe"];
/// JavaScript guests: one npm project, its sources, and the components its build.mjs makes (with componentize-js,
/// from npm) into the same folder as the Rust ones.
const JS_GUESTS: (&str, &[&str], &[&str]) =
    ("guest/examples/js", &["hello.js", "signer.js", "api-client.js"], &["hello-js", "signer-js", "api-client-js"]);
/// Guests that only exist as components: nothing of theirs to test natively.
const WASM_ONLY: &[&str] = &["probe", "netprobe", "http-probe"];
const WASM_TARGET: &str = "wasm32-wasip2";
const DEMO_SECRET: &str = "correct-horse-battery-staple";
/// What the tests run besides cargo: moto's KMS API, cargo-lambda's Runtime API emulator (a prebuilt binary in
/// its PyPI package), and cfn-lint for the SAM template.
const PYTHON_TOOLS: &[&str] = &["moto[server]==5.2.5", "cargo-lambda==1.9.2", "cfn-lint==1.58.0"];

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  demo           build the host and the hello guest (Rust only), make a local key, encrypt a demo secret,
                 and run the guest once through the host
  test [ARGS]    install what the tests need (wasm32-wasip2 target; moto and cargo-lambda from PyPI),
                 build the guests and the Lambda bootstrap, run every test (ARGS go to cargo test)
  build-guests   build every guest component: Rust for wasm32-wasip2, JavaScript with componentize-js
  bootstrap [--target TRIPLE]
                 build the Lambda bootstrap `keyward package` ships (runtime only: no compiler, no CLI) into
                 target/[TRIPLE/]lambda/bootstrap
  bench          keyward against a native Rust Lambda doing the same work, in one table: cold start, warm
                 invoke and memory through the Runtime API emulator, binary size, in-process phases
  soak           10,000 good and hostile invocations in process and 2,000 as a Lambda: unexpected outcomes
                 and memory growth";

type Result<T = ()> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo(),
        Some("test") => test(&args[1..]),
        Some("build-guests") => build_guests(),
        Some("bootstrap") => match &args[1..] {
            [] => build_bootstrap(None).map(|path| println!("{}", rel(&path))),
            [flag, triple] if flag == "--target" => {
                build_bootstrap(Some(triple)).map(|path| println!("{}", rel(&path)))
            }
            _ => Err(USAGE.to_string()),
        },
        Some("bench") => bench(),
        Some("soak") => soak(),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

fn run(cmd: &mut Command) -> Result {
    let status = cmd.status().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("{cmd:?} failed ({status})")) }
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.stderr(Stdio::inherit()).output().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?} failed ({})", out.status));
    }
    String::from_utf8(out.stdout).map_err(|_| format!("{cmd:?} printed non-UTF-8"))
}

fn step(what: &str) {
    eprintln!("==> {what}");
}

/// Installs the wasm32-wasip2 standard library through rustup when it is missing.
fn ensure_wasm_target() -> Result {
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))
        .map_err(|e| format!("{e}; keyward's guests need rustup to install the {WASM_TARGET} target"))?;
    if !installed.lines().any(|line| line.trim() == WASM_TARGET) {
        step(&format!("installing the {WASM_TARGET} target"));
        run(Command::new("rustup").args(["target", "add", WASM_TARGET]))?;
    }
    Ok(())
}

fn build_guests() -> Result {
    build_rust_guests(GUESTS)?;
    build_js_guests()
}

/// Builds the named Rust guests for wasm32-wasip2.
fn build_rust_guests(guests: &[&str]) -> Result {
    ensure_wasm_target()?;
    step(&format!("building guests for {WASM_TARGET}: {}", guests.join(", ")));
    let mut cmd = cargo();
    cmd.args(["build", "--release", "--target", WASM_TARGET]);
    for guest in guests {
        cmd.args(["--package", guest]);
    }
    run(&mut cmd)
}

/// Builds the JavaScript guests unless each component is newer than every source.
fn build_js_guests() -> Result {
    let (dir, scripts, names) = JS_GUESTS;
    let dir = root().join(dir);
    let sources: Vec<PathBuf> = ["build.mjs", "package-lock.json", "wit/world.wit", "../../js/keyward.js"]
        .iter()
        .chain(scripts)
        .map(|f| dir.join(f))
        .chain([root().join("wit/keyward.wit")])
        .collect();
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let oldest_built = names.iter().map(|name| modified(&guest_path(name))).min().flatten();
    if let Some(built) = oldest_built
        && sources.iter().all(|s| modified(s).is_some_and(|m| m < built))
    {
        return Ok(());
    }
    let names = names.join(", ");
    let npm_error = |e: String| format!("{e}; JavaScript guests need Node.js 20 or newer with npm");
    if !dir.join("node_modules").exists() {
        step(&format!("installing componentize-js for {names}"));
        run(Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(&dir)).map_err(npm_error)?;
    }
    step(&format!("building {names} with componentize-js"));
    run(Command::new("node").arg("build.mjs").current_dir(&dir)).map_err(npm_error)
}

fn guest_path(name: &str) -> PathBuf {
    root().join("target").join(WASM_TARGET).join("release").join(format!("{name}.wasm"))
}

fn demo() -> Result {
    // Only what the demo runs: no JavaScript guest, so no Node.js needed.
    build_rust_guests(&["hello"])?;
    step("building the host");
    run(cargo().args(["build", "--release", "--package", "keyward"]))?;
    let keyward = root().join("target/release/keyward");
    let dir = root().join("target/demo");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let key = dir.join("local.key");
    let _ = std::fs::remove_file(&key);

    step("creating a local key");
    run(Command::new(&keyward).arg("keygen").arg("--out").arg(&key))?;

    step("encrypting the demo secret (DEMO_SECRET in xtask/src/main.rs), bound to the context function=hello");
    let mut encrypt = Command::new(&keyward)
        .args(["encrypt", "--context", "function=hello", "--key"])
        .arg(&key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run keyward encrypt: {e}"))?;
    {
        use std::io::Write as _;
        let mut stdin = encrypt.stdin.take().ok_or("no stdin for keyward encrypt")?;
        stdin.write_all(DEMO_SECRET.as_bytes()).map_err(|e| format!("cannot write the secret: {e}"))?;
    }
    let encrypted = encrypt.wait_with_output().map_err(|e| format!("keyward encrypt: {e}"))?;
    if !encrypted.status.success() {
        return Err("keyward encrypt failed".into());
    }
    let ciphertext = String::from_utf8_lossy(&encrypted.stdout).trim().to_string();
    eprintln!("    PASSWORD={ciphertext}");

    let event = dir.join("event.json");
    std::fs::write(&event, r#"{"rawPath":"/","requestContext":{"http":{"method":"GET"}}}"#)
        .map_err(|e| format!("cannot write {}: {e}", event.display()))?;
    step("invoking the hello guest through the host (it sees only PASSWORD, and decrypts through kms.decrypt)");
    let hello = guest_path("hello");
    eprintln!(
        "    keyward invoke {} --key {} --env PASSWORD=... --context function=hello --event {}",
        rel(&hello),
        rel(&key),
        rel(&event)
    );
    run(Command::new(&keyward)
        .arg("invoke")
        .arg(&hello)
        .arg("--key")
        .arg(&key)
        .arg("--env")
        .arg(format!("PASSWORD={ciphertext}"))
        .args(["--context", "function=hello", "--event"])
        .arg(&event))?;
    eprintln!("==> done: the response carries the first 8 hex digits of the secret's SHA-256, never the secret");
    Ok(())
}

fn rel(path: &Path) -> String {
    path.strip_prefix(root()).unwrap_or(path).display().to_string()
}

/// Installs the tests' Python tools with pip; returns the directory their commands are in.
fn install_python_tools() -> Result<PathBuf> {
    step(&format!("installing test tools: {}", PYTHON_TOOLS.join(", ")));
    run(Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
        .args(PYTHON_TOOLS))
    .map_err(|e| format!("{e}; the tests need Python 3 with pip"))?;
    let scripts =
        output(Command::new("python3").args(["-c", "import sysconfig; print(sysconfig.get_path('scripts'))"]))?;
    Ok(PathBuf::from(scripts.trim()))
}

/// `PATH` with `dir` first.
fn path_with(dir: &Path) -> Result<std::ffi::OsString> {
    let rest = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&rest)))
        .map_err(|e| format!("cannot extend PATH: {e}"))
}

fn test(args: &[String]) -> Result {
    let scripts = install_python_tools()?;
    build_guests()?;
    // The bootstrap `keyward package` ships, which the Lambda tests run.
    build_bootstrap(None)?;
    step("running every test");
    let mut cmd = cargo();
    cmd.env("PATH", path_with(&scripts)?);
    cmd.args(["test", "--release", "--workspace", "--exclude", "xtask", "--exclude", "native-hello"])
        .args(WASM_ONLY.iter().flat_map(|g| ["--exclude", g]))
        .args(args)
        .stdout(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    // Echo cargo's report while adding up its per-binary "test result" lines into one closing line.
    let (mut passed, mut failed) = (0u64, 0u64);
    let stdout = child.stdout.take().ok_or("no stdout from cargo test")?;
    for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
        let line = line.map_err(|e| format!("reading cargo test output: {e}"))?;
        println!("{line}");
        if let Some(counts) = line.strip_prefix("test result: ") {
            passed += count(counts, "passed");
            failed += count(counts, "failed");
        }
    }
    let status = child.wait().map_err(|e| format!("cargo test: {e}"))?;
    println!("\nkeyward: {passed} passed, {failed} failed");
    if status.success() { Ok(()) } else { Err(format!("cargo test failed ({status})")) }
}

/// The number before `label` in a libtest summary such as `ok. 18 passed; 0 failed; 0 ignored`.
fn count(summary: &str, label: &str) -> u64 {
    summary
        .split(';')
        .find_map(|part| part.trim().trim_start_matches("ok. ").trim_start_matches("FAILED. ").strip_suffix(label))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Builds the runtime-only Lambda bootstrap (`host/src/bin/bootstrap.rs`: no default features, so no compiler and
/// no CLI) in the `lambda` profile, for `triple` or this machine; returns its path.
fn build_bootstrap(triple: Option<&str>) -> Result<PathBuf> {
    step("building the Lambda bootstrap (runtime only, lambda profile)");
    let mut cmd = cargo();
    cmd.args(["build", "--package", "keyward", "--bin", "bootstrap", "--no-default-features"]).args([
        "--features",
        "bootstrap",
        "--profile",
        "lambda",
    ]);
    if let Some(triple) = triple {
        cmd.args(["--target", triple]);
    }
    run(&mut cmd)?;
    Ok(root().join("target").join(triple.unwrap_or("")).join("lambda/bootstrap"))
}

fn bench() -> Result {
    let scripts = install_python_tools()?;
    build_guests()?;
    let bootstrap = build_bootstrap(None)?;
    step("building the native function the bench compares with (lambda profile)");
    run(cargo().args(["build", "--package", "native-hello", "--profile", "lambda"]))?;
    step("benchmarking keyward against a native Lambda");
    run(cargo()
        .env("PATH", path_with(&scripts)?)
        .env("KEYWARD_BENCH_BOOTSTRAP", bootstrap)
        .env("KEYWARD_BENCH_NATIVE", root().join("target/lambda/native-hello"))
        .args(["bench", "--package", "keyward", "--bench", "lambda"]))
}

fn soak() -> Result {
    let scripts = install_python_tools()?;
    build_guests()?;
    step("soak: good and hostile invocations, in process and as a Lambda");
    run(cargo().env("PATH", path_with(&scripts)?).args(["bench", "--package", "keyward", "--bench", "soak"]))
}
