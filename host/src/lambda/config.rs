//! Lambda mode's configuration: the `KEYWARD_*` variables of the function's environment, checked once.

use std::path::PathBuf;
use std::time::Duration;

use crate::context::Pair;
use crate::kms::AwsKmsConfig;
use crate::kms::cache::{DEFAULT_STALE, DEFAULT_TTL};
use crate::sandbox::limits::{DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_MS};
use crate::{EncryptionContext, HostConfig, Limits};

/// Lambda's limit on a synchronous invocation's response, and keyward's on its event: 6 MiB.
pub const LAMBDA_PAYLOAD_LIMIT: usize = 6 * 1024 * 1024;

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
pub struct ConfigError(pub(crate) String);

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
                .with_memory_mb(small("KEYWARD_MEMORY_MB", u64::from(DEFAULT_MEMORY_MB))?)
                .with_timeout_ms(number("KEYWARD_TIMEOUT_MS", DEFAULT_TIMEOUT_MS)?)
        };
        limits.validate().map_err(|e| ConfigError(format!("limits: {e}")))?;
        if limits.max_response_bytes > LAMBDA_PAYLOAD_LIMIT {
            return Err(ConfigError(format!(
                "KEYWARD_MAX_RESPONSE_BYTES={} is over Lambda's response limit of {LAMBDA_PAYLOAD_LIMIT} bytes",
                limits.max_response_bytes
            )));
        }

        let cache_ttl = Duration::from_secs(number("KEYWARD_CACHE_TTL_SECS", DEFAULT_TTL.as_secs())?);
        let cache_stale = Duration::from_secs(number("KEYWARD_CACHE_STALE_SECS", DEFAULT_STALE.as_secs())?);
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
            host: HostConfig { limits, guest_env, stamped_context, cache_ttl, cache_stale, ..HostConfig::default() },
            kms: AwsKmsConfig { key_ids, endpoint: var("KEYWARD_KMS_ENDPOINT").filter(|e| !e.is_empty()) },
            prefetch,
        })
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
            ("KEYWARD_CACHE_STALE_SECS", "60"),
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
        assert_eq!(c.host.cache_stale, Duration::from_secs(60));
        assert_eq!(c.host.limits.timeout, Duration::from_millis(1500));
        assert_eq!(c.host.limits.memory_bytes, 32 << 20);
    }

    #[test]
    fn defaults_follow_the_lambda_layout() {
        let c = config(&[("KEYWARD_KMS_KEY_ID", "k"), ("LAMBDA_TASK_ROOT", "/var/task")]).unwrap();
        assert_eq!(c.component, PathBuf::from("/var/task/handler.wasm"));
        assert_eq!(c.host.cache_ttl, DEFAULT_TTL);
        assert_eq!(c.host.cache_stale, DEFAULT_STALE);
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
            (&[("KEYWARD_KMS_KEY_ID", "k"), ("KEYWARD_MAX_RESPONSE_BYTES", "7000000")], "Lambda's response limit"),
            (&[("KEYWARD_KMS_KEY_ID", "k"), ("KEYWARD_CACHE_STALE_SECS", "-1")], "KEYWARD_CACHE_STALE_SECS"),
            (&[("KEYWARD_KMS_KEY_ID", "k"), ("KEYWARD_TIMEOUT_MS", "18446744073709551615")], "timeout must be 1 to"),
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

    /// The README's variable table and the parser name the same variables.
    #[test]
    fn the_readme_documents_every_variable_read() {
        let readme = include_str!("../../../README.md");
        let section = &readme[readme.find("| variable | meaning | default |").unwrap()..];
        let table = section.lines().take_while(|line| line.starts_with('|'));
        let mut documented: Vec<String> = table
            .filter_map(|row| row.split('`').nth(1))
            .filter(|name| name.starts_with("KEYWARD_"))
            .map(String::from)
            .collect();
        documented.sort();

        let read = std::sync::Mutex::new(Vec::new());
        let vars: HashMap<&str, &str> =
            [("KEYWARD_KMS_KEY_ID", "k"), ("KEYWARD_GUEST_ENV", "P"), ("P", "x"), ("KEYWARD_PREFETCH", "P")]
                .into_iter()
                .collect();
        LambdaConfig::from_vars(|name| {
            read.lock().unwrap().push(name.to_string());
            vars.get(name).map(|v| v.to_string())
        })
        .unwrap();
        let mut read: Vec<String> =
            read.into_inner().unwrap().into_iter().filter(|n| n.starts_with("KEYWARD_")).collect();
        read.sort();
        read.dedup();
        assert_eq!(documented, read, "README table (left) vs variables read (right)");
    }
}
