use std::io::Read as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use keyward::context::Pair;
use keyward::sandbox::limits::{DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_MS, MAX_MEMORY_MB, MAX_TIMEOUT_MS};
use keyward::{GuestPlaintext, Host, HostConfig, InvocationContext, InvokeError, KmsPolicy, Limits, LocalKey};

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
    /// An encryption context pair stamped onto every decrypt the guest makes (repeatable).
    #[arg(long = "context", value_name = "K=V")]
    context: Vec<Pair>,
    /// Stamps this component's digest too (`component=sha256:<digest>`), as `component={component}` in
    /// KEYWARD_KMS_CONTEXT does on Lambda: only ciphertexts bound to this build decrypt.
    #[arg(long)]
    bind_component: bool,
    /// The event JSON: a file, or `-` for stdin. Default: `{}`.
    #[arg(long, value_name = "FILE|-")]
    event: Option<PathBuf>,
    /// Wall-clock limit of the invocation.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_MS))]
    timeout_ms: u64,
    /// Memory limit of the guest.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MEMORY_MB,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_MEMORY_MB)))]
    memory_mb: u32,
    /// Most kms.decrypt calls the guest may make.
    #[arg(long, value_name = "N", default_value_t = KmsPolicy::default().max_decrypt_calls)]
    max_decrypt_calls: u32,
    /// `deny` refuses a component that imports kms (plaintext): the guest may use secrets through key handles only.
    #[arg(long, value_name = "allow|deny", default_value = "allow")]
    guest_plaintext: GuestPlaintext,
    /// The function ARN the guest is told. Default: a local ARN named after the component file.
    #[arg(long, value_name = "ARN")]
    function_arn: Option<String>,
}

impl Invoke {
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        let event = self.read_event()?;
        let key = LocalKey::load(&self.key)?;
        let bind = self.bind_component;
        let config = HostConfig {
            limits: Limits::default().with_memory_mb(self.memory_mb).with_timeout_ms(self.timeout_ms),
            guest_env: self.env.into_iter().map(Into::into).collect(),
            kms: KmsPolicy {
                stamped_context: super::crypt::context_of(self.context, bind.then_some(self.component.as_path()))?,
                max_decrypt_calls: self.max_decrypt_calls,
                guest_plaintext: self.guest_plaintext,
                ..KmsPolicy::default()
            },
        };
        let host = Host::from_file(&self.component, Arc::new(key), config).map_err(|e| match e {
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
