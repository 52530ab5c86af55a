use std::io::Read as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use keyward::aws::{AwsSecretStore, AwsSettings};
use keyward::capability::http::HttpFlags;
use keyward::capability::kms::KmsFlags;
use keyward::context::Pair;
use keyward::sandbox::LimitFlags;
use keyward::secrets::settings::SecretFlags;
use keyward::{Backends, Host, HostSettings, InvocationContext, InvokeError, LocalKey, SettingError};

use super::Failed;

/// Run a guest component once on an event, decrypting with a local key; prints the response JSON.
#[derive(Debug, clap::Args)]
pub(crate) struct Invoke {
    #[command(flatten)]
    guest: GuestArgs,
    /// The event JSON: a file, or `-` for stdin. Default: `{}`.
    #[arg(long, value_name = "FILE|-")]
    event: Option<PathBuf>,
    /// The function ARN the guest is told. Default: a local ARN named after the component file.
    #[arg(long, value_name = "ARN")]
    function_arn: Option<String>,
}

/// The guest and its sandbox, as `invoke` and `serve` run it: the component, its key, its environment, and the
/// host's settings.
#[derive(Debug, clap::Args)]
pub(crate) struct GuestArgs {
    /// The guest component (.wasm, or a .cwasm made by `keyward compile`).
    #[arg(value_name = "COMPONENT")]
    pub(crate) component: PathBuf,
    /// The local key file the guest's ciphertexts were made with.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// An environment variable the guest sees (repeatable); it sees no others.
    #[arg(long = "env", value_name = "NAME=VALUE")]
    env: Vec<Pair>,
    #[command(flatten)]
    secrets: SecretFlags,
    #[command(flatten)]
    limits: LimitFlags,
    #[command(flatten)]
    kms: KmsFlags,
    #[command(flatten)]
    http: HttpFlags,
}

impl GuestArgs {
    /// The local function ARN the guest is told, named after the component file.
    pub(crate) fn function_arn(&self) -> String {
        let name = self.component.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        format!("arn:aws:lambda:local:000000000000:function:{name}")
    }

    /// The host of these arguments: the component loaded, secrets opened with the key file (and, for secrets kept
    /// by a service, the environment's AWS credentials, region and endpoints).
    pub(crate) async fn host(self) -> anyhow::Result<Host> {
        let key = LocalKey::load(&self.key)?;
        let settings = HostSettings {
            limits: self.limits.into(),
            guest_env: self.env.into_iter().map(Into::into).collect(),
            secrets: self.secrets.settings(&self.component).map_err(in_flag_terms)?,
            kms: self.kms.into(),
            http: self.http.into(),
            ..HostSettings::default()
        };
        let mut backends = Backends::from(Arc::new(key));
        if settings.secrets.sources.iter().any(|(_, source)| source.needs_store()) {
            let sdk_config = AwsSettings::from_process_env().shell_sdk_config().await?;
            backends = backends.with_store(Arc::new(AwsSecretStore::from_sdk_config(&sdk_config)));
        }
        Host::from_file(&self.component, backends, settings).map_err(|e| match e {
            keyward::HostError::Load(load) => super::naming(&self.component, load),
            keyward::HostError::Setting(setting) => in_flag_terms(setting).into(),
            other => other.into(),
        })
    }
}

impl Invoke {
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        let event = self.read_event()?;
        let arn = self.function_arn.clone().unwrap_or_else(|| self.guest.function_arn());
        let host = self.guest.host().await?;
        let invocation = host.invoke(&event, InvocationContext::local(arn)).await;
        let response = invocation.result.map_err(|e| match e {
            // Unusable input, like a bad argument (exit 2); every other failure is the guest's outcome (exit 1).
            InvokeError::InvalidEvent(_) => anyhow::Error::from(e),
            e => Failed(e.into()).into(),
        })?;
        println!("{response}");
        Ok(())
    }

    /// The event's bytes; the host checks that they are JSON.
    fn read_event(&self) -> anyhow::Result<Vec<u8>> {
        match &self.event {
            None => Ok(b"{}".to_vec()),
            Some(path) if path.as_os_str() == "-" => {
                let mut buf = Vec::new();
                std::io::stdin().read_to_end(&mut buf).context("cannot read the event from stdin")?;
                Ok(buf)
            }
            Some(path) => std::fs::read(path).with_context(|| format!("cannot read event {}", path.display())),
        }
    }
}

/// Lambda mode's variables and the flags that set the same settings here: the host's setting errors name the
/// variables, and a user of `keyward invoke` gave flags. A prefix (ending in `_`) is followed by a name.
const FLAGS: [(&str, &str); 12] = [
    ("KEYWARD_SOURCE_", "--source "),
    ("KEYWARD_INJECT_", "--inject "),
    ("KEYWARD_GUEST_ENV", "--env"),
    ("KEYWARD_KMS_CONTEXT", "--context"),
    ("KEYWARD_MAX_DECRYPT_CALLS", "--max-decrypt-calls"),
    ("KEYWARD_GUEST_PLAINTEXT", "--guest-plaintext"),
    ("KEYWARD_ALLOW_OUTBOUND", "--allow-outbound"),
    ("KEYWARD_MAX_OUTBOUND_REQUESTS", "--max-outbound-requests"),
    ("KEYWARD_OUTBOUND_CA_BUNDLE", "--outbound-ca-bundle"),
    ("KEYWARD_TIMEOUT_MS", "--timeout-ms"),
    ("KEYWARD_MEMORY_MB", "--memory-mb"),
    ("KEYWARD_MAX_OUTPUT_BYTES", "--max-output-bytes"),
];

/// A setting error in the words of `keyward invoke`'s flags.
fn in_flag_terms(error: SettingError) -> SettingError {
    let words = |text: String| FLAGS.iter().fold(text, |text, (variable, flag)| text.replace(variable, flag));
    SettingError { setting: words(error.setting), reason: words(error.reason) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_errors_name_the_flags() {
        let error = SettingError {
            setting: "KEYWARD_SOURCE_DB".into(),
            reason: "DB is a guest env var (KEYWARD_GUEST_ENV) too; KEYWARD_KMS_CONTEXT".into(),
        };
        assert_eq!(in_flag_terms(error).to_string(), "--source DB: DB is a guest env var (--env) too; --context");
    }
}
