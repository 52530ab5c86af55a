//! `keyward new`: scaffolds a guest crate that builds, and whose test passes, out of the box.

use std::path::PathBuf;

use anyhow::Context as _;

/// Where this keyward's sources were built from: the scaffold depends on the SDK and stub host there.
const SOURCE_ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const REPOSITORY: &str = env!("CARGO_PKG_REPOSITORY");

/// Create a guest crate: a handler on the guest SDK, a README, and a test running it in the stub host.
#[derive(Debug, clap::Args)]
pub(crate) struct New {
    /// Where to create the crate; its last part names it, as with `cargo new`.
    #[arg(value_name = "PATH")]
    path: PathBuf,
    /// The crate's name, if not the directory's.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// The guest's language.
    #[arg(long, value_enum, default_value = "rust")]
    lang: Lang,
    /// The guest's world: keyward's Lambda handler, or an HTTP handler (wasi:http/incoming-handler, as for
    /// `wasmtime serve` and Spin).
    #[arg(long, value_enum, default_value = "handler")]
    world: WorldArg,
    /// A keyward source checkout to depend on (default: the one this keyward was built from, if it is still
    /// there; else the git repository).
    #[arg(long, value_name = "DIR")]
    keyward_src: Option<PathBuf>,
}

/// A world `keyward new` scaffolds a guest of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum WorldArg {
    /// keyward's `handler`: a Lambda event in, the response JSON out.
    Handler,
    /// `wasi:http/proxy`: an HTTP request in, its response out.
    Http,
}

/// A guest language `keyward new` scaffolds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Lang {
    /// Rust, on the guest SDK.
    Rust,
    /// JavaScript, with componentize-js.
    Js,
}

impl New {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        let from_dir = self.path.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = self.name.clone().or(from_dir).unwrap_or_default();
        let valid = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
            && name.starts_with(|c: char| c.is_ascii_lowercase());
        anyhow::ensure!(
            valid,
            "{name:?} is not a usable crate name: use lowercase letters, digits, `-` and `_`, starting with a letter \
             (or name the crate with --name)"
        );
        let crate_name = name.replace('-', "_");
        anyhow::ensure!(
            !RESERVED.contains(&crate_name.as_str()),
            "{name:?} is not a usable crate name: it is a Rust keyword or the name of a built-in crate, which cargo \
             refuses (name the crate with --name)"
        );
        let dir = self.path.clone();
        anyhow::ensure!(!dir.exists(), "{} already exists", dir.display());
        let files = match (self.lang, self.world) {
            (Lang::Rust, world) => self.rust_files(&name, world)?,
            (Lang::Js, WorldArg::Handler) => js_files(&name),
            (Lang::Js, WorldArg::Http) => anyhow::bail!(
                "keyward new scaffolds HTTP handlers in Rust only (--lang rust); a JavaScript HTTP handler is \
                 componentize-js's `fetch` event handler, built for the wasi:http/proxy world, and runs as it is"
            ),
        };
        for (path, text) in files {
            let path = dir.join(path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
            }
            std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        }
        let next = match self.lang {
            Lang::Rust => "cargo test",
            Lang::Js => "npm install && npm test",
        };
        println!("created guest {name} in {}; next: cd {} && {next}", dir.display(), dir.display());
        Ok(())
    }

    fn rust_files(&self, name: &str, world: WorldArg) -> anyhow::Result<Vec<(&'static str, String)>> {
        let source = self.keyward_src.clone().or_else(|| {
            let root = PathBuf::from(SOURCE_ROOT);
            root.join("guest/sdk/Cargo.toml").exists().then_some(root)
        });
        let deps = match &source {
            Some(root) => {
                let root = root.canonicalize().with_context(|| format!("cannot find {}", root.display()))?;
                anyhow::ensure!(
                    root.join("guest/sdk/Cargo.toml").exists(),
                    "{} is not a keyward checkout (no guest/sdk)",
                    root.display()
                );
                Deps::Path(root)
            }
            None => Deps::Git(REPOSITORY.to_string()),
        };
        let templates = match world {
            WorldArg::Handler => RUST_TEMPLATES,
            WorldArg::Http => RUST_HTTP_TEMPLATES,
        };
        Ok(files(templates, name, &deps))
    }
}

/// Names cargo refuses for a package (as of cargo 1.85, `cargo new`'s checks): Rust's keywords, reserved ones
/// included, and the built-in crates.
const RESERVED: &[&str] = &[
    "abstract",
    "alloc",
    "as",
    "async",
    "await",
    "become",
    "box",
    "break",
    "const",
    "continue",
    "core",
    "crate",
    "do",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "final",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "macro",
    "match",
    "mod",
    "move",
    "mut",
    "override",
    "priv",
    "proc_macro",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "std",
    "struct",
    "super",
    "test",
    "trait",
    "true",
    "try",
    "type",
    "typeof",
    "unsafe",
    "unsized",
    "use",
    "virtual",
    "where",
    "while",
    "yield",
];

enum Deps {
    Path(PathBuf),
    Git(String),
}

impl Deps {
    fn spec(&self, subdir: &str, package: &str) -> String {
        match self {
            Deps::Path(root) => format!("{{ path = {:?} }}", root.join(subdir).display().to_string()),
            Deps::Git(url) => format!("{{ git = {url:?}, package = {package:?} }}"),
        }
    }
}

/// A file of a scaffold: where it goes, and its text with `{placeholders}`.
type Template = (&'static str, &'static str);

/// The scaffold's files, in `templates/<lang>/` (the Rust crate's manifest as `Cargo.toml.in`, so that cargo does
/// not take the folder for a package; dotfiles without their dot, so that they do not act here).
macro_rules! template {
    ($to:literal, $from:literal) => {
        ($to, include_str!(concat!("templates/", $from)))
    };
}

const RUST_TEMPLATES: &[Template] = &[
    template!("Cargo.toml", "rust/Cargo.toml.in"),
    template!("src/lib.rs", "rust/src/lib.rs"),
    template!("tests/stub_host.rs", "rust/tests/stub_host.rs"),
    template!("README.md", "rust/README.md"),
    template!(".gitignore", "rust/gitignore"),
];

const RUST_HTTP_TEMPLATES: &[Template] = &[
    template!("Cargo.toml", "rust-http/Cargo.toml.in"),
    template!("src/lib.rs", "rust-http/src/lib.rs"),
    template!("tests/stub_host.rs", "rust-http/tests/stub_host.rs"),
    template!("README.md", "rust-http/README.md"),
    template!(".gitignore", "rust/gitignore"),
];

const JS_TEMPLATES: &[Template] = &[
    template!("package.json", "js/package.json"),
    template!("handler.js", "js/handler.js"),
    template!("build.mjs", "js/build.mjs"),
    template!("test.mjs", "js/test.mjs"),
    template!("README.md", "js/README.md"),
    template!(".gitignore", "js/gitignore"),
    // keyward's own files, as this keyward was built with them: its guest rules in JavaScript (the one copy, built
    // into keyward and written into each scaffold) and the world componentize-js builds against.
    ("keyward.js", include_str!("../../../guest/js/keyward.js")),
    ("wit/world.wit", include_str!("../../../guest/examples/js/wit/world.wit")),
    ("wit/deps/cli/environment.wit", include_str!("../../../guest/examples/js/wit/deps/cli/environment.wit")),
    ("wit/deps/keyward/keyward.wit", include_str!("../../../wit/keyward.wit")),
];

/// `templates` with every `{key}` of `values` filled in.
fn fill(templates: &[Template], values: &[(&str, &str)]) -> Vec<(&'static str, String)> {
    let fill_one = |text: &str| values.iter().fold(text.to_string(), |t, (k, v)| t.replace(&format!("{{{k}}}"), v));
    templates.iter().map(|(path, text)| (*path, fill_one(text))).collect()
}

fn files(templates: &[Template], name: &str, deps: &Deps) -> Vec<(&'static str, String)> {
    let crate_name = name.replace('-', "_");
    let keyward_guest = deps.spec("guest/sdk", "keyward-guest");
    let keyward = deps.spec("host", "keyward");
    fill(
        templates,
        &[("name", name), ("crate_name", &crate_name), ("keyward_guest", &keyward_guest), ("keyward", &keyward)],
    )
}

fn js_files(name: &str) -> Vec<(&'static str, String)> {
    fill(JS_TEMPLATES, &[("name", name)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_point_at_the_checkout_or_the_repository() {
        let path = Deps::Path(PathBuf::from("/src/keyward"));
        assert_eq!(path.spec("guest/sdk", "keyward-guest"), r#"{ path = "/src/keyward/guest/sdk" }"#);
        let git = Deps::Git("https://example.org/keyward".into());
        assert_eq!(git.spec("host", "keyward"), r#"{ git = "https://example.org/keyward", package = "keyward" }"#);
    }

    #[test]
    fn every_placeholder_is_filled() {
        let deps = Deps::Path(PathBuf::from("/k"));
        let rust = [RUST_TEMPLATES, RUST_HTTP_TEMPLATES].into_iter().flat_map(|t| files(t, "my-guest", &deps));
        for (path, text) in rust.chain(js_files("my-guest")) {
            for key in ["name", "crate_name", "keyward_guest", "keyward"] {
                assert!(!text.contains(&format!("{{{key}}}")), "{path}: {{{key}}} is left");
            }
        }
    }
}
