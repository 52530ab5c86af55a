//! Lambda mode: the `keyward` binary as the function's `bootstrap`. Configuration comes from the function's
//! environment; each event runs the guest once; a guest failure is a function error, never a crash.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `KEYWARD_COMPONENT` | the guest (`.cwasm` or `.wasm`) | `$LAMBDA_TASK_ROOT/handler.cwasm`, then `handler.wasm` |
//! | `KEYWARD_GUEST_ENV` | names of env vars handed to the guest (`A,B`) | none |
//! | `KEYWARD_KMS_KEY_ID` | allowed KMS keys (`id,arn,alias/name`) | required |
//! | `KEYWARD_KMS_ENDPOINT` | KMS endpoint override | the regional endpoint |
//! | `KEYWARD_KMS_CONTEXT` | stamped encryption context (`K=V,K=V`) | none |
//! | `KEYWARD_CACHE_TTL_SECS` | plaintext cache TTL, 0 disables | 300 |
//! | `KEYWARD_PREFETCH` | guest env vars decrypted during init (`A,B`) | none |
//! | `KEYWARD_TIMEOUT_MS`, `KEYWARD_MEMORY_MB`, `KEYWARD_MAX_DECRYPT_CALLS`, `KEYWARD_MAX_RESPONSE_BYTES` | limits | as the CLI |

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use serde_json::value::RawValue;

use crate::context::Pair;
use crate::kms::cache::DEFAULT_TTL;
use crate::kms::{AwsKms, AwsKmsConfig};
use crate::{EncryptionContext, Host, HostConfig, InvocationContext, Limits};

/// Everything Lambda mode reads from the environment, checked.
#[derive(Debug, Clone)]
pub struct LambdaConfig {
    /// The guest component.
    pub component: PathBuf,
    /// The host configuration (limits, guest env, stamped context, cache).
    pub host: HostConfig,
    /// The KMS backend's settings.
    pub kms: AwsKmsConfig,
    /// Guest env vars to decrypt during init.
    pub prefetch: Vec<String>,
}

/// A configuration problem, naming the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl LambdaConfig {
    /// Reads the configuration through `var` (the process environment in production).
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first variable that is missing or malformed.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let list = |name: &str| -> Vec<String> {
            var(name)
                .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect())
                .unwrap_or_default()
        };
        let number = |name: &str, default: u64| -> Result<u64, ConfigError> {
            match var(name) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse()
                    .map_err(|_| ConfigError(format!("{name}={v:?} is not a non-negative whole number"))),
            }
        };
        let small = |name: &str, default: u64| -> Result<u32, ConfigError> {
            u32::try_from(number(name, default)?).map_err(|_| ConfigError(format!("{name} is too large")))
        };

        let component = match var("KEYWARD_COMPONENT") {
            Some(path) => PathBuf::from(path),
            None => {
                let root = PathBuf::from(var("LAMBDA_TASK_ROOT").unwrap_or_else(|| ".".into()));
                let cwasm = root.join("handler.cwasm");
                if cwasm.exists() { cwasm } else { root.join("handler.wasm") }
            }
        };

        let mut guest_env = Vec::new();
        for name in list("KEYWARD_GUEST_ENV") {
            let value =
                var(&name).ok_or_else(|| ConfigError(format!("KEYWARD_GUEST_ENV names {name}, which is not set")))?;
            guest_env.push((name, value));
        }
        let pairs = list("KEYWARD_KMS_CONTEXT")
            .into_iter()
            .map(|p| p.parse::<Pair>().map(Into::into))
            .collect::<Result<Vec<(String, String)>, _>>()
            .map_err(|e| ConfigError(format!("KEYWARD_KMS_CONTEXT: {e}")))?;
        let stamped_context =
            EncryptionContext::from_pairs(pairs).map_err(|e| ConfigError(format!("KEYWARD_KMS_CONTEXT: {e}")))?;

        let limits = Limits {
            max_decrypt_calls: small("KEYWARD_MAX_DECRYPT_CALLS", u64::from(Limits::default().max_decrypt_calls))?,
            max_response_bytes: usize::try_from(number(
                "KEYWARD_MAX_RESPONSE_BYTES",
                Limits::default().max_response_bytes as u64,
            )?)
            .map_err(|_| ConfigError("KEYWARD_MAX_RESPONSE_BYTES is too large".into()))?,
            // Lambda runs one invocation at a time per process.
            max_instances: 1,
            ..Limits::default()
                .with_memory_mb(small("KEYWARD_MEMORY_MB", u64::from(crate::sandbox::limits::DEFAULT_MEMORY_MB))?)
                .with_timeout_ms(number("KEYWARD_TIMEOUT_MS", crate::sandbox::limits::DEFAULT_TIMEOUT_MS)?)
        };
        limits.validate().map_err(|e| ConfigError(format!("limits: {e}")))?;

        let cache_ttl = Duration::from_secs(number("KEYWARD_CACHE_TTL_SECS", DEFAULT_TTL.as_secs())?);
        let prefetch = list("KEYWARD_PREFETCH");
        if !prefetch.is_empty() && cache_ttl.is_zero() {
            return Err(ConfigError("KEYWARD_PREFETCH needs the cache, but KEYWARD_CACHE_TTL_SECS is 0".into()));
        }
        if let Some(name) = prefetch.iter().find(|name| !guest_env.iter().any(|(n, _)| n == *name)) {
            return Err(ConfigError(format!("KEYWARD_PREFETCH names {name}, which is not in KEYWARD_GUEST_ENV")));
        }

        let key_ids = list("KEYWARD_KMS_KEY_ID");
        if key_ids.is_empty() {
            return Err(ConfigError("KEYWARD_KMS_KEY_ID is not set: name the KMS key (id, ARN or alias)".into()));
        }
        Ok(Self {
            component,
            host: HostConfig { limits, guest_env, stamped_context, cache_ttl, ..HostConfig::default() },
            kms: AwsKmsConfig { key_ids, endpoint: var("KEYWARD_KMS_ENDPOINT").filter(|e| !e.is_empty()) },
            prefetch,
        })
    }
}

/// Builds the host: configuration, KMS client, component, prefetched secrets.
///
/// # Errors
/// One line naming what is wrong.
pub async fn init(config: LambdaConfig) -> Result<Host, String> {
    let kms = AwsKms::from_env(config.kms).await?;
    let host = Host::from_file(&config.component, Arc::new(kms), config.host).map_err(|e| e.to_string())?;
    host.prefetch(&config.prefetch).await.map_err(|e| e.to_string())?;
    Ok(host)
}

/// Runs as the Lambda `bootstrap` until the runtime stops. A failed init is reported to the Runtime API's
/// init-error endpoint, then returned.
///
/// # Errors
/// The init error, or the runtime's.
pub async fn run() -> Result<(), lambda_runtime::Error> {
    let started = std::time::Instant::now();
    let config = LambdaConfig::from_vars(|name| std::env::var(name).ok());
    let component = config.as_ref().map(|c| c.component.display().to_string()).unwrap_or_default();
    let host = match config {
        Ok(config) => init(config).await,
        Err(e) => Err(e.to_string()),
    };
    let host = match host {
        Ok(host) => Arc::new(host),
        Err(message) => {
            tracing::error!(error = %message, "init failed");
            report_init_error(&message).await;
            return Err(message.into());
        }
    };
    tracing::info!(init_ms = started.elapsed().as_millis(), component, "keyward ready");
    lambda_runtime::run(service_fn(move |event| handle(host.clone(), event))).await
}

async fn handle(host: Arc<Host>, event: LambdaEvent<Box<RawValue>>) -> Result<Box<RawValue>, Diagnostic> {
    let ctx = InvocationContext {
        request_id: event.context.request_id.clone(),
        function_arn: event.context.invoked_function_arn.clone(),
        deadline: Some(deadline(event.context.deadline, SystemTime::now())),
    };
    let invocation = host.invoke(event.payload.get(), ctx).await;
    match invocation.result {
        // Already checked to be JSON by the host.
        Ok(response) => RawValue::from_string(response).map_err(|e| Diagnostic {
            error_type: "GuestInvalidResponse".into(),
            error_message: format!("guest response is not valid JSON: line {}, column {}", e.line(), e.column()),
        }),
        Err(e) => Err(Diagnostic { error_type: e.error_type().into(), error_message: e.to_string() }),
    }
}

/// Lambda's deadline is milliseconds since the Unix epoch. Some Runtime API emulators (cargo-lambda's) send the
/// time left instead; a value too small to be a timestamp of this century is read that way.
fn deadline(deadline_ms: u64, now: SystemTime) -> SystemTime {
    const YEAR_2001_MS: u64 = 1_000_000_000_000;
    if deadline_ms < YEAR_2001_MS {
        now + Duration::from_millis(deadline_ms)
    } else {
        UNIX_EPOCH + Duration::from_millis(deadline_ms)
    }
}

async fn report_init_error(message: &str) {
    let Ok(client) = lambda_runtime_api_client::Client::builder().build() else { return };
    let body = serde_json::json!({ "errorType": "Runtime.InitError", "errorMessage": message }).to_string();
    let request = lambda_runtime_api_client::build_request()
        .method(http::Method::POST)
        .uri("/2018-06-01/runtime/init/error")
        .header("lambda-runtime-function-error-type", "Runtime.InitError")
        .body(lambda_runtime_api_client::body::Body::from(body));
    if let Ok(request) = request
        && let Err(e) = client.call(request).await
    {
        tracing::warn!(error = %e, "cannot report the init error to the Runtime API");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<LambdaConfig, ConfigError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        LambdaConfig::from_vars(|name| vars.get(name).cloned())
    }

    #[test]
    fn deadlines_are_timestamps_or_time_left() {
        let now = UNIX_EPOCH + Duration::from_millis(1_795_944_012_668);
        assert_eq!(deadline(1_795_944_015_668, now), now + Duration::from_secs(3));
        assert_eq!(deadline(600_000, now), now + Duration::from_secs(600));
    }

    #[test]
    fn reads_a_full_configuration() {
        let c = config(&[
            ("KEYWARD_COMPONENT", "/opt/h.wasm"),
            ("KEYWARD_GUEST_ENV", "PASSWORD, GREETING"),
            ("PASSWORD", "Y3Q="),
            ("GREETING", "hi"),
            ("AWS_SECRET_ACCESS_KEY", "never"),
            ("KEYWARD_KMS_KEY_ID", "alias/a,arn:aws:kms:us-east-1:1:key/k"),
            ("KEYWARD_KMS_ENDPOINT", "http://127.0.0.1:5000"),
            ("KEYWARD_KMS_CONTEXT", "function=hello,stage=prod"),
            ("KEYWARD_CACHE_TTL_SECS", "0"),
            ("KEYWARD_TIMEOUT_MS", "1500"),
            ("KEYWARD_MEMORY_MB", "32"),
        ])
        .unwrap();
        assert_eq!(c.component, PathBuf::from("/opt/h.wasm"));
        assert_eq!(c.host.guest_env, vec![("PASSWORD".into(), "Y3Q=".into()), ("GREETING".into(), "hi".into())]);
        assert_eq!(c.kms.key_ids, vec!["alias/a", "arn:aws:kms:us-east-1:1:key/k"]);
        assert_eq!(c.kms.endpoint.as_deref(), Some("http://127.0.0.1:5000"));
        assert_eq!(c.host.stamped_context.to_string(), "function=hello,stage=prod");
        assert_eq!(c.host.cache_ttl, Duration::ZERO);
        assert_eq!(c.host.limits.timeout, Duration::from_millis(1500));
        assert_eq!(c.host.limits.memory_bytes, 32 << 20);
    }

    #[test]
    fn defaults_follow_the_lambda_layout() {
        let c = config(&[("KEYWARD_KMS_KEY_ID", "k"), ("LAMBDA_TASK_ROOT", "/var/task")]).unwrap();
        assert_eq!(c.component, PathBuf::from("/var/task/handler.wasm"));
        assert_eq!(c.host.cache_ttl, DEFAULT_TTL);
        assert!(c.host.guest_env.is_empty() && c.prefetch.is_empty());
    }

    #[test]
    fn each_mistake_names_its_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[], "KEYWARD_KMS_KEY_ID is not set"),
            (&[("KEYWARD_KMS_KEY_ID", "k"), ("KEYWARD_GUEST_ENV", "PASSWORD")], "names PASSWORD, which is not set"),
            (&[("KEYWARD_KMS_KEY_ID", "k"), ("KEYWARD_KMS_CONTEXT", "novalue")], "KEYWARD_KMS_CONTEXT"),
            (&[("KEYWARD_KMS_KEY_ID", "k"), ("KEYWARD_TIMEOUT_MS", "soon")], "KEYWARD_TIMEOUT_MS"),
            (&[("KEYWARD_KMS_KEY_ID", "k"), ("KEYWARD_MEMORY_MB", "0")], "memory limit"),
            (&[("KEYWARD_KMS_KEY_ID", "k"), ("KEYWARD_PREFETCH", "PASSWORD")], "not in KEYWARD_GUEST_ENV"),
            (
                &[
                    ("KEYWARD_KMS_KEY_ID", "k"),
                    ("KEYWARD_GUEST_ENV", "P"),
                    ("P", "x"),
                    ("KEYWARD_PREFETCH", "P"),
                    ("KEYWARD_CACHE_TTL_SECS", "0"),
                ],
                "needs the cache",
            ),
        ];
        for (vars, expected) in cases {
            let err = config(vars).unwrap_err().to_string();
            assert!(err.contains(expected), "{vars:?}: expected {expected:?} in {err:?}");
        }
    }
}
