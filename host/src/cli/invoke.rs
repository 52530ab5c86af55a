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
use keyward::{Backends, Host, HostSettings, InvocationContext, InvokeError, LocalKey};

use super::Failed;

/// Run a guest component once on an event, decrypting with a local key; prints the response JSON.
#[derive(Debug, clap::Args)]
pub(crate) struct Invoke {
    /// The guest component (.wasm, or a .cwasm made by `keyward compile`).
    #[arg(value_name = "COMPONENT")]
    component: PathBuf,
    /// The local key file the guest's ciphertexts were made with.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// An environment variable the guest sees (repeatable); it sees no others.
    #[arg(long = "env", value_name = "NAME=VALUE")]
    env: Vec<Pair>,
    #[command(flatten)]
    secrets: SecretFlags,
    /// The event JSON: a file, or `-` for stdin. Default: `{}`.
    #[arg(long, value_name = "FILE|-")]
    event: Option<PathBuf>,
    #[command(flatten)]
    limits: LimitFlags,
    #[command(flatten)]
    kms: KmsFlags,
    #[command(flatten)]
    http: HttpFlags,
    /// The function ARN the guest is told. Default: a local ARN named after the component file.
    #[arg(long, value_name = "ARN")]
    function_arn: Option<String>,
}

impl Invoke {
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        let event = self.read_event()?;
        let key = LocalKey::load(&self.key)?;
        let settings = HostSettings {
            limits: self.limits.into(),
            guest_env: self.env.into_iter().map(Into::into).collect(),
            secrets: self.secrets.settings(&self.component)?,
            kms: self.kms.into(),
            http: self.http.into(),
            ..HostSettings::default()
        };
        let mut backends = Backends::from(Arc::new(key));
        // Secrets kept by a service are fetched with the environment's AWS credentials, region and endpoints.
        if settings.secrets.sources.iter().any(|(_, source)| source.needs_store()) {
            let sdk_config = AwsSettings::from_process_env().shell_sdk_config().await?;
            backends = backends.with_store(Arc::new(AwsSecretStore::from_sdk_config(&sdk_config)));
        }
        let host = Host::from_file(&self.component, backends, settings).map_err(|e| match e {
            keyward::HostError::Load(load) => super::naming(&self.component, load),
            other => other.into(),
        })?;
        let arn = self.function_arn.unwrap_or_else(|| {
            let name = self.component.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            format!("arn:aws:lambda:local:000000000000:function:{name}")
        });
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
