use std::path::PathBuf;

use anyhow::Context as _;
use keyward::LocalKey;

/// Create a local 256-bit key file (for development and tests, without AWS).
#[derive(Debug, clap::Args)]
pub(crate) struct Keygen {
    /// Where to write the key; an existing file is never overwritten.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

impl Keygen {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        let key = LocalKey::generate_file(&self.out).context("keygen")?;
        println!("created local key {} in {}", key.id(), self.out.display());
        Ok(())
    }
}
