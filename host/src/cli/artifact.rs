//! `compile`, `digest` and `package`: the deployable forms of a guest, and which build they are.

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
        refuse_overwriting_input(&self.component, &self.out)?;
        refuse_overwriting_other(&self.out, "precompiled component (.cwasm)", b"\x7fELF")?;
        let compiled = compile(&self.component, &self.target.compile_target()?)?;
        write_whole(&self.out, &compiled)?;
        println!("compiled {} to {} ({} bytes)", self.component.display(), self.out.display(), compiled.len());
        Ok(())
    }
}

fn compile(component: &Path, target: &CompileTarget) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(component).with_context(|| format!("cannot read component {}", component.display()))?;
    keyward::precompile(&bytes, target).map_err(|e| super::naming(component, e))
}

/// Print the digest of a guest's build, `sha256:<hex>`: of the `.wasm` as written, or the one a `.cwasm` records.
/// Bind a KMS ciphertext to it with `aws kms encrypt --encryption-context component=<digest>`.
#[derive(Debug, clap::Args)]
pub(crate) struct Digest {
    /// The guest component (.wasm, or a .cwasm made by keyward).
    #[arg(value_name = "COMPONENT")]
    component: PathBuf,
}

impl Digest {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        println!("{}", super::crypt::digest_of(&self.component)?);
        Ok(())
    }
}

/// Make a Lambda deployment zip (for the provided.al2023 runtime): `bootstrap` and `handler.cwasm`.
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
    /// The Lambda bootstrap to ship. Default: the runtime-only one `cargo xtask bootstrap [--target TRIPLE]`
    /// builds, found next to this keyward or in its cargo target folder (target/[TRIPLE/]lambda/bootstrap).
    #[arg(long, value_name = "FILE")]
    bootstrap: Option<PathBuf>,
    /// Ships the sealed files under DIR (`keyward seal`'s; any other file is refused) at `sealed/<path under DIR>`
    /// in the package, where KEYWARD_SOURCE_<NAME>=sealed:sealed/<path under DIR> finds them.
    #[arg(long, value_name = "DIR")]
    sealed: Option<PathBuf>,
}

impl Package {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        let host_triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
        let triple = self.target.target.as_deref().unwrap_or(&host_triple);
        let bootstrap = match &self.bootstrap {
            Some(path) => path.clone(),
            None => built_bootstrap(triple, triple == host_triple)?,
        };
        refuse_overwriting_input(&self.component, &self.out)?;
        refuse_overwriting_input(&bootstrap, &self.out)?;
        refuse_overwriting_other(&self.out, "zip", b"PK\x03\x04")?;
        if let Some(dir) = &self.sealed {
            let parent = match self.out.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent,
                _ => Path::new("."),
            };
            let inside = matches!((parent.canonicalize(), dir.canonicalize()), (Ok(p), Ok(d)) if p.starts_with(&d));
            anyhow::ensure!(
                !inside,
                "-o {} is inside --sealed {}, whose every file is shipped: write the zip elsewhere",
                self.out.display(),
                dir.display()
            );
        }
        let bootstrap_bytes =
            std::fs::read(&bootstrap).with_context(|| format!("cannot read bootstrap {}", bootstrap.display()))?;
        check_bootstrap(&bootstrap_bytes, triple).with_context(|| format!("bootstrap {}", bootstrap.display()))?;
        let compile_target = self.target.compile_target()?;
        if compile_target.cpu == Cpu::Native {
            eprintln!(
                "warning: --cpu native: the package runs only where the CPU has every feature this one has; a Lambda \
                 machine without one refuses it at init"
            );
        }
        let sealed = match &self.sealed {
            Some(dir) => sealed_files(dir)?,
            None => Vec::new(),
        };
        let cwasm = compile(&self.component, &compile_target)?;
        let mut files = vec![("bootstrap".to_string(), bootstrap_bytes, 0o755), ("handler.cwasm".into(), cwasm, 0o644)];
        files.extend(sealed.into_iter().map(|(name, bytes)| (name, bytes, 0o644)));
        let zip = zip_of(&files).context("cannot make the zip")?;
        write_whole(&self.out, &zip)?;
        let names = files.iter().map(|(name, ..)| name.as_str()).collect::<Vec<_>>().join(", ");
        println!("packaged {} ({} bytes): {names}", self.out.display(), std::fs::metadata(&self.out)?.len());
        Ok(())
    }
}

/// Where `cargo xtask bootstrap [--target TRIPLE]` puts the runtime-only bootstrap for `triple`, as seen from this
/// keyward: beside it (an install), or in the cargo target folder it was built in.
///
/// # Errors
/// When there is none, naming the command that builds it.
fn built_bootstrap(triple: &str, is_host: bool) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this keyward binary")?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let mut candidates = Vec::new();
    if is_host {
        candidates.extend([dir.join("bootstrap"), dir.join("../lambda/bootstrap")]);
    }
    candidates.push(dir.join("..").join(triple).join("lambda/bootstrap"));
    let flag = if is_host { String::new() } else { format!(" --target {triple}") };
    candidates.into_iter().find(|path| path.is_file()).with_context(|| {
        format!(
            "no Lambda bootstrap for {triple} next to this keyward: build it with `cargo xtask bootstrap{flag}`, or \
             pass --bootstrap FILE"
        )
    })
}

/// Checks that `bytes` are a Linux executable for `triple`'s architecture, as Lambda's `provided.al2023` runtime
/// runs `bootstrap`: a wrong one would deploy, then fail every init with an exec format error.
///
/// # Errors
/// What it is instead, and what to pass.
fn check_bootstrap(bytes: &[u8], triple: &str) -> anyhow::Result<()> {
    use object::elf;
    use object::read::elf::{Dyn as _, FileHeader as _, ProgramHeader as _};
    let fix = format!("pass --bootstrap with one built for {triple} (`cargo xtask bootstrap --target {triple}`)");
    let not_elf = || anyhow::anyhow!("is not a 64-bit Linux ELF executable: {fix}");
    let header = elf::FileHeader64::<object::Endianness>::parse(bytes).map_err(|_| not_elf())?;
    let endian = header.endian().map_err(|_| not_elf())?;
    let architecture = match header.e_machine(endian) {
        elf::EM_X86_64 => "x86_64",
        elf::EM_AARCH64 => "aarch64",
        _ => "another architecture",
    };
    anyhow::ensure!(triple.starts_with(architecture), "is built for {architecture}, not {triple}: {fix}");
    anyhow::ensure!(
        matches!(header.e_ident().os_abi, elf::ELFOSABI_SYSV | elf::ELFOSABI_GNU),
        "is built for another operating system than Linux (ELF OS/ABI {}): {fix}",
        header.e_ident().os_abi
    );
    let segments = header.program_headers(endian, bytes).map_err(|_| not_elf())?;
    // A position-independent executable and a shared library are both ET_DYN; the executable names its program
    // interpreter, or (static-pie) is marked PIE in its dynamic section.
    let pie = segments.iter().any(|segment| {
        segment.p_type(endian) == elf::PT_INTERP
            || segment.dynamic(endian, bytes).ok().flatten().is_some_and(|entries| {
                entries.iter().any(|entry| {
                    entry.d_tag(endian) == elf::DT_FLAGS_1 && entry.d_val(endian) & u64::from(elf::DF_1_PIE) != 0
                })
            })
    });
    let executable = match header.e_type(endian) {
        elf::ET_EXEC => true,
        elf::ET_DYN => pie,
        _ => false,
    };
    anyhow::ensure!(executable, "is not an executable (a shared library or an object file?): {fix}");
    Ok(())
}

/// The files under `dir`, each checked to be a sealed file, by their names in the package (`sealed/<path under
/// dir>`, in `/`-separated form), sorted: a plaintext left in the folder must not ship.
///
/// # Errors
/// A file that cannot be read or is not a sealed file, naming it; a folder with none.
fn sealed_files(dir: &Path) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    fn walk(dir: &Path, under: &str, out: &mut Vec<(String, Vec<u8>)>) -> anyhow::Result<()> {
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("cannot read --sealed folder {}", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot read --sealed folder {}", dir.display()))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let name = if under.is_empty() { name } else { format!("{under}/{name}") };
            // A folder is walked, a link to one is not (it could lead back here); a link to a file is read.
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&path, &name, out)?;
                continue;
            }
            anyhow::ensure!(
                !path.is_dir(),
                "{} is a link to a folder: --sealed does not follow links to folders (one could lead back into \
                 --sealed); put the folder itself there",
                path.display()
            );
            // A name is a path in the zip and in KEYWARD_SOURCE_<NAME>: a control character (a line break) in it would
            // break both, and every line keyward prints.
            anyhow::ensure!(
                !name.chars().any(char::is_control),
                "{:?} has a control character in its name: rename it (it is a path in the package)",
                path.display().to_string()
            );
            let bytes = keyward::secrets::sealed::read_file(&path)?;
            let sealed = keyward::secrets::sealed::Sealed::parse(&bytes).map_err(|e| {
                anyhow::anyhow!("{}: {e}; --sealed ships only sealed files, never a plaintext", path.display())
            })?;
            anyhow::ensure!(
                !keyward::LocalKey::is_ciphertext(sealed.encrypted_data_key()),
                "{} was sealed with a local key (keyward seal --key), which only keyward invoke opens: seal it with \
                 --key-id KEY for the function's KMS key",
                path.display()
            );
            out.push((format!("sealed/{name}"), bytes));
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, "", &mut files)?;
    anyhow::ensure!(
        !files.is_empty(),
        "--sealed folder {} holds no files: seal some with `keyward seal`",
        dir.display()
    );
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(files)
}

/// A zip of `files` (name, bytes, unix mode), made in memory: a failed write leaves no half-made archive.
fn zip_of(files: &[(String, Vec<u8>, u32)]) -> zip::result::ZipResult<Vec<u8>> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes, mode) in files {
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(*mode);
        zip.start_file(name.as_str(), options)?;
        zip.write_all(bytes)?;
    }
    Ok(zip.finish()?.into_inner())
}

/// Writes `bytes` to `path` whole or not at all: into a temporary file beside it, renamed over it once complete
/// (so a full disk or a size limit never leaves a truncated `.cwasm` or zip). Creates the folder, as cargo does.
/// A path that exists and is not a regular file is written to in place.
pub(super) fn write_whole(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let fail = || format!("cannot write {}", path.display());
    if path.metadata().is_ok_and(|m| !m.is_file()) {
        // A device or a pipe (`-o /dev/stdout`): written to, never replaced.
        return std::fs::write(path, bytes).with_context(fail);
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(fail)?;
    let name = path.file_name().with_context(|| format!("{} is not a file name", path.display()))?;
    let temporary = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let written = std::fs::write(&temporary, bytes).and_then(|()| std::fs::rename(&temporary, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written.with_context(fail)
}

/// Refuses to replace an existing file `out` that is not of the kind written there (`magic` starts such files): a
/// key file or a sealed file given as `-o` by mistake would be lost. An empty file may be replaced.
///
/// # Errors
/// `out` exists, is not empty and does not start with `magic`.
pub(super) fn refuse_overwriting_other(out: &Path, kind: &str, magic: &[u8]) -> anyhow::Result<()> {
    // Only a regular file holds something to lose (a device such as /dev/null or /dev/full is written as asked).
    if !std::fs::metadata(out).is_ok_and(|m| m.is_file()) {
        return Ok(());
    }
    let Ok(mut file) = std::fs::File::open(out) else { return Ok(()) };
    let mut head = vec![0; magic.len()];
    let read = std::io::Read::read(&mut file, &mut head).unwrap_or(0);
    anyhow::ensure!(
        read == 0 || head[..read] == magic[..read],
        "-o {} exists and is not a {kind}: refusing to replace it (a key file, say, would be lost); remove it first or \
         write elsewhere",
        out.display()
    );
    Ok(())
}

/// Refuses `-o` naming an input (the component, the bootstrap), which the output would replace.
pub(super) fn refuse_overwriting_input(input: &Path, out: &Path) -> anyhow::Result<()> {
    let same = matches!((input.canonicalize(), out.canonicalize()), (Ok(a), Ok(b)) if a == b);
    anyhow::ensure!(!same, "-o {} is an input ({}): write the output to another file", out.display(), input.display());
    Ok(())
}
