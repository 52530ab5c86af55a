//! `encrypt` and `decrypt` with the local key, for operators preparing and checking ciphertexts.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use base64::Engine as _;
use keyward::context::Pair;
use keyward::{ComponentDigest, EncryptionContext, LocalKey};
use secrecy::ExposeSecret as _;
use zeroize::Zeroizing;

use super::Failed;

/// Encrypt a secret with a local key; prints the ciphertext in base64.
#[derive(Debug, clap::Args)]
pub(crate) struct Encrypt {
    /// The local key file.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// An encryption context pair the ciphertext is bound to (repeatable).
    #[arg(long = "context", value_name = "K=V")]
    context: Vec<Pair>,
    /// Binds the ciphertext to this build of the guest (`.wasm`, or a `.cwasm` of keyward's): adds
    /// `component=sha256:<digest>` to the context, as a host stamping `component={component}` asks for it.
    #[arg(long, value_name = "COMPONENT")]
    bind_component: Option<PathBuf>,
    /// The secret. Without it, the secret is read from stdin, byte for byte (prefer stdin: arguments show in
    /// process lists and shell history). It may begin with `-` (a PEM key does).
    #[arg(long, value_name = "TEXT", allow_hyphen_values = true)]
    plaintext: Option<String>,
}

impl Encrypt {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        let key = LocalKey::load(&self.key)?;
        let context = context_of(self.context, self.bind_component.as_deref())?;
        let plaintext = Zeroizing::new(match self.plaintext {
            Some(text) => text.into_bytes(),
            None => {
                let mut buf = Vec::new();
                std::io::stdin().read_to_end(&mut buf).context("cannot read the secret from stdin")?;
                buf
            }
        });
        let ciphertext = key.encrypt(&plaintext, &context)?;
        println!("{}", base64::engine::general_purpose::STANDARD.encode(ciphertext));
        Ok(())
    }
}

/// Decrypt a base64 ciphertext with a local key; prints the plaintext, byte for byte.
#[derive(Debug, clap::Args)]
pub(crate) struct Decrypt {
    /// The local key file.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// An encryption context pair the ciphertext is bound to (repeatable).
    #[arg(long = "context", value_name = "K=V")]
    context: Vec<Pair>,
    /// The build of the guest the ciphertext is bound to (see `encrypt --bind-component`).
    #[arg(long, value_name = "COMPONENT")]
    bind_component: Option<PathBuf>,
    /// The ciphertext, in base64.
    #[arg(value_name = "CIPHERTEXT_B64")]
    ciphertext: String,
}

impl Decrypt {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        let key = LocalKey::load(&self.key)?;
        let context = context_of(self.context, self.bind_component.as_deref())?;
        let ciphertext = keyward_base64::decode(&self.ciphertext)
            .map_err(|e| anyhow::anyhow!("CIPHERTEXT_B64 is not base64: {e}"))?;
        let plaintext = key.decrypt(&ciphertext, &context).map_err(|e| Failed(e.into()))?;
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(plaintext.expose_secret()).and_then(|()| stdout.flush()).context("cannot write to stdout")?;
        Ok(())
    }
}

/// The `--context` pairs, and with `--bind-component` the component's digest.
fn context_of(pairs: Vec<Pair>, bind_component: Option<&Path>) -> anyhow::Result<EncryptionContext> {
    Ok(keyward::secrets::settings::stamped_context(pairs, bind_component)?)
}

/// A component's digest; an error names the file.
pub(super) fn digest_of(component: &Path) -> anyhow::Result<ComponentDigest> {
    ComponentDigest::of_file(component).map_err(|e| super::naming(component, e))
}
