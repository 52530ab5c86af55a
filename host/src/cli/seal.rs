//! `seal`: a file too large for an environment variable, encrypted for the host to open
//! (`KEYWARD_SOURCE_<NAME>=sealed:<path>`; the format is `keyward::secrets::sealed`'s).

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use keyward::aws::{AwsKms, AwsKmsSettings, AwsSettings};
use keyward::context::Pair;
use keyward::secrets::sealed::{self, MAX_SEALED_PLAINTEXT};
use keyward::{EncryptionContext, LocalKey};
use zeroize::Zeroizing;

use super::Failed;
use super::artifact::{refuse_overwriting_input, refuse_overwriting_other, write_whole};

/// Seal a file (a certificate chain, a service account's JSON; at most 1 MiB) under a fresh data key from the local
/// key or KMS, bound to an encryption context; the host opens it with one decrypt.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("sealing key").required(true).args(["key", "key_id"])))]
pub(crate) struct Seal {
    /// The file to seal, or `-` for stdin.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Seal with this local key file (the one `keyward invoke --key` opens with).
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Seal with this KMS key (id, ARN or alias): the data key comes from GenerateDataKey, with the AWS credentials
    /// and region of the environment (KEYWARD_KMS_ENDPOINT, AWS_ENDPOINT_URL_KMS and AWS_ENDPOINT_URL are followed).
    #[arg(long, value_name = "KEY", value_parser = |id: &str| keyward::aws::check_key_id(id).map(|()| id.to_string()))]
    key_id: Option<String>,
    /// An encryption context pair the file is bound to (repeatable): the pairs the host stamps
    /// (KEYWARD_KMS_CONTEXT, with its placeholders filled in, e.g. `function=<function name>`).
    #[arg(long = "context", value_name = "K=V")]
    context: Vec<Pair>,
    /// Binds the file to this build of the guest (`component=sha256:<digest>`), as for `keyward encrypt`.
    #[arg(long, value_name = "COMPONENT")]
    bind_component: Option<PathBuf>,
    /// Where to write the sealed file. Default: FILE with `.sealed` added (required when FILE is `-`).
    #[arg(short, long, value_name = "FILE")]
    out: Option<PathBuf>,
}

impl Seal {
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        let stdin = self.file.as_os_str() == "-";
        let out = match (&self.out, stdin) {
            (Some(out), _) => out.clone(),
            (None, true) => anyhow::bail!("sealing stdin needs -o FILE: name the sealed file to write"),
            (None, false) => {
                let mut name = self.file.clone().into_os_string();
                name.push(".sealed");
                PathBuf::from(name)
            }
        };
        // The key file and the bound component are inputs too: sealing over the key would lose every file it sealed.
        let inputs = [(!stdin).then_some(&self.file), self.key.as_ref(), self.bind_component.as_ref()];
        for input in inputs.into_iter().flatten() {
            refuse_overwriting_input(input, &out)?;
        }
        refuse_overwriting_other(&out, "sealed file", b"kwsf")?;
        let plaintext = read_plaintext(&self.file, stdin)?;
        let context = keyward::secrets::settings::stampable_context(self.context, self.bind_component.as_deref())?;
        let (bytes, key) = match (&self.key, &self.key_id) {
            (Some(key), _) => {
                let key = LocalKey::load(key)?;
                let data_key = sealed::random_data_key()?;
                let encrypted = key.encrypt(data_key.as_slice(), &context)?;
                (sealed::seal(&plaintext, data_key.as_slice(), &encrypted)?, format!("local key {}", key.id()))
            }
            (None, Some(key_id)) => seal_with_kms(&plaintext, key_id, &context).await?,
            (None, None) => anyhow::bail!("seal needs --key FILE or --key-id KEY: name the key to seal with"),
        };
        write_whole(&out, &bytes)?;
        println!(
            "sealed {} ({} bytes) into {} under {key}; the host reads it with KEYWARD_SOURCE_<NAME>=sealed:<its path>",
            if stdin { "stdin".into() } else { self.file.display().to_string() },
            plaintext.len(),
            out.display()
        );
        Ok(())
    }
}

/// The file's bytes, refused past 1 MiB before more is read.
fn read_plaintext(file: &Path, stdin: bool) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let mut bytes = Zeroizing::new(Vec::new());
    let limit = MAX_SEALED_PLAINTEXT as u64 + 1;
    let read = if stdin {
        std::io::stdin().lock().take(limit).read_to_end(&mut bytes).context("cannot read stdin")
    } else {
        let opened = std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
        opened.take(limit).read_to_end(&mut bytes).with_context(|| format!("cannot read {}", file.display()))
    };
    read?;
    anyhow::ensure!(
        bytes.len() <= MAX_SEALED_PLAINTEXT,
        "{} is over 1 MiB: a sealed file holds at most {MAX_SEALED_PLAINTEXT} bytes (split it, or keep it in S3 \
         under its own encryption)",
        if stdin { "stdin".into() } else { file.display().to_string() }
    );
    Ok(bytes)
}

/// Seals under a data key of KMS's; returns the file and the key's ARN, for the message.
async fn seal_with_kms(
    plaintext: &[u8],
    key_id: &str,
    context: &EncryptionContext,
) -> anyhow::Result<(Vec<u8>, String)> {
    let endpoint = std::env::var("KEYWARD_KMS_ENDPOINT").ok().filter(|e| !e.trim().is_empty());
    let settings = AwsKmsSettings { key_ids: vec![key_id.to_string()], endpoint };
    let sdk_config = AwsSettings::from_process_env().shell_sdk_config().await?;
    // AwsKms names its setting as Lambda mode does; here it is a flag.
    let kms = AwsKms::new(&sdk_config, settings)
        .map_err(|e| anyhow::anyhow!(e.to_string().replace("KEYWARD_KMS_KEY_ID", "--key-id")))?;
    let data_key = kms.generate_data_key(key_id, context).await.map_err(|e| Failed(e.into()))?;
    let bytes = sealed::seal(plaintext, &data_key.plaintext, &data_key.ciphertext)?;
    Ok((bytes, format!("KMS key {}", data_key.key_arn)))
}
