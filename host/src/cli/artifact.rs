//! `compile` and `package`: the deployable forms of a guest.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use keyward::{CompileTarget, Cpu};

/// Compile a component ahead of time (a `.cwasm`), so a cold start skips compilation.
#[derive(Debug, clap::Args)]
pub(crate) struct Compile {
    /// The guest component (.wasm).
    #[arg(value_name = "COMPONENT")]
    component: PathBuf,
    /// Where to write the compiled component.
    #[arg(short, long, value_name = "FILE")]
    out: PathBuf,
    #[command(flatten)]
    target: Target,
}

/// Where the compiled code is to run.
#[derive(Debug, clap::Args)]
struct Target {
    /// The architecture it will run on. Default: this machine's.
    #[arg(long, value_name = "TRIPLE", value_parser = ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"])]
    target: Option<String>,
    /// The CPU features it may use: `baseline`, what every machine Lambda runs functions on has (x86-64-v2;
    /// Armv8 with LSE), or `native`, everything this machine has (for running it here only).
    #[arg(long, value_enum, default_value = "baseline")]
    cpu: CpuArg,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum CpuArg {
    Baseline,
    Native,
}

impl Target {
    fn compile_target(&self) -> anyhow::Result<CompileTarget> {
        let cpu = match self.cpu {
            CpuArg::Baseline => Cpu::Baseline,
            CpuArg::Native => Cpu::Native,
        };
        anyhow::ensure!(
            cpu == Cpu::Baseline || self.target.is_none(),
            "--cpu native means this machine's features, for running here: it goes without --target"
        );
        Ok(CompileTarget { triple: self.target.clone(), cpu })
    }
}

impl Compile {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        let compiled = compile(&self.component, &self.target.compile_target()?)?;
        std::fs::write(&self.out, &compiled).with_context(|| format!("cannot write {}", self.out.display()))?;
        println!("compiled {} to {} ({} bytes)", self.component.display(), self.out.display(), compiled.len());
        Ok(())
    }
}

fn compile(component: &Path, target: &CompileTarget) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(component).with_context(|| format!("cannot read component {}", component.display()))?;
    Ok(keyward::precompile(&bytes, target)?)
}

/// Make a Lambda deployment zip (for the provided.al2023 runtime): `bootstrap` (this binary, or --bootstrap) and
/// `handler.cwasm`.
#[derive(Debug, clap::Args)]
pub(crate) struct Package {
    /// The guest component (.wasm).
    #[arg(long, value_name = "FILE")]
    component: PathBuf,
    /// Where to write the zip.
    #[arg(short, long, value_name = "FILE")]
    out: PathBuf,
    #[command(flatten)]
    target: Target,
    /// The keyward binary to ship as `bootstrap`. Default: this one (which must then match --target).
    #[arg(long, value_name = "FILE")]
    bootstrap: Option<PathBuf>,
}

impl Package {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        let host_triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
        let bootstrap = match &self.bootstrap {
            Some(path) => path.clone(),
            None => {
                if let Some(target) = self.target.target.as_deref().filter(|t| *t != host_triple) {
                    anyhow::bail!(
                        "this keyward runs on {host_triple}, not {target}: pass --bootstrap with a keyward built \
                         for {target}"
                    );
                }
                std::env::current_exe().context("cannot find this keyward binary")?
            }
        };
        let bootstrap_bytes =
            std::fs::read(&bootstrap).with_context(|| format!("cannot read bootstrap {}", bootstrap.display()))?;
        let triple = self.target.target.as_deref().unwrap_or(&host_triple);
        check_bootstrap(&bootstrap_bytes, triple).with_context(|| format!("bootstrap {}", bootstrap.display()))?;
        let compile_target = self.target.compile_target()?;
        if compile_target.cpu == Cpu::Native {
            eprintln!(
                "warning: --cpu native: the package runs only where the CPU has every feature this one has; a Lambda \
                 machine without one refuses it at init"
            );
        }
        let cwasm = compile(&self.component, &compile_target)?;
        write_zip(&self.out, &[("bootstrap", &bootstrap_bytes, 0o755), ("handler.cwasm", &cwasm, 0o644)])
            .with_context(|| format!("cannot write {}", self.out.display()))?;
        println!(
            "packaged {} ({} bytes): bootstrap, handler.cwasm",
            self.out.display(),
            std::fs::metadata(&self.out)?.len()
        );
        Ok(())
    }
}

/// Checks that `bytes` are a Linux executable for `triple`'s architecture, as Lambda's `provided.al2023` runtime
/// runs `bootstrap`: a wrong one would deploy, then fail every init with an exec format error.
///
/// # Errors
/// What it is instead, and what to pass.
fn check_bootstrap(bytes: &[u8], triple: &str) -> anyhow::Result<()> {
    use object::{Architecture, Object as _, ObjectKind};
    let fix = format!("pass --bootstrap with a keyward built for {triple}");
    let file = object::File::parse(bytes).map_err(|_| anyhow::anyhow!("is not an ELF executable: {fix}"))?;
    let architecture = match file.architecture() {
        Architecture::X86_64 => "x86_64",
        Architecture::Aarch64 => "aarch64",
        _ => "another architecture",
    };
    anyhow::ensure!(triple.starts_with(architecture), "is built for {architecture}, not {triple}: {fix}");
    anyhow::ensure!(
        matches!(file.kind(), ObjectKind::Executable | ObjectKind::Dynamic),
        "is not an executable (an object file?): {fix}"
    );
    Ok(())
}

fn write_zip(path: &Path, files: &[(&str, &[u8], u32)]) -> anyhow::Result<()> {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path)?);
    for (name, bytes, mode) in files {
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(*mode);
        zip.start_file(*name, options)?;
        zip.write_all(bytes)?;
    }
    zip.finish()?;
    Ok(())
}
