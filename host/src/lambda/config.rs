//! Lambda mode's configuration: the `KEYWARD_*` variables of the function's environment, checked once.

use std::cell::{OnceCell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::context::Pair;
use crate::kms::PolicyError;
use crate::kms::{AwsKmsConfig, CacheSettings, KmsPolicy, SecretSettings};
use crate::{ComponentDigest, EncryptionContext, HostConfig, HostError, InvalidLimits, Limits};

/// Lambda's limit on a synchronous invocation's response, and keyward's on its event: 6 MiB.
pub const LAMBDA_PAYLOAD_LIMIT: usize = 6 * 1024 * 1024;

/// Everything Lambda mode reads from the environment.
#[derive(Debug, Clone)]
pub struct LambdaConfig {
    /// The guest component.
    pub component: PathBuf,
    /// The host configuration: limits, guest env, `kms` policy. The host checks it when it is built.
    pub host: HostConfig,
    /// The KMS backend's settings.
    pub kms: AwsKmsConfig,
    /// Invocations served at once (`AWS_LAMBDA_MAX_CONCURRENCY`, which Lambda Managed Instances sets; else 1), each
    /// in an instance of its own: the instance pool holds as many.
    pub concurrency: u32,
}

/// Most invocations one process serves at once.
pub const MAX_CONCURRENCY: u32 = 1024;

/// A configuration problem, naming the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub(crate) String);

/// Values a stamped encryption context may take from Lambda's own environment, as `{placeholder}`: the console's
/// encryption helpers bind ciphertexts to `LambdaFunctionName=<the function's name>`.
const PLACEHOLDERS: &[(&str, &str)] = &[("{function_name}", "AWS_LAMBDA_FUNCTION_NAME"), ("{region}", "AWS_REGION")];
/// The placeholder for the guest component's digest (`sha256:<hex>`): `component={component}` binds ciphertexts
/// to one build of the guest.
const COMPONENT_PLACEHOLDER: &str = "{component}";

/// The per-secret variables, each followed by the name of a guest env var.
const SECRET_CONTEXT: &str = "KEYWARD_SECRET_CONTEXT_";
const SECRET_KEY: &str = "KEYWARD_SECRET_KEY_";
const SECRET_ALGORITHM: &str = "KEYWARD_SECRET_ALGORITHM_";

/// The environment, read one variable at a time; remembers which were asked for, so that a `KEYWARD_*` variable
/// nobody reads (a typo) can be named.
struct Vars<'a> {
    all: &'a HashMap<String, String>,
    read: RefCell<BTreeSet<String>>,
    /// The component's digest, once a context asks for it.
    digest: OnceCell<Result<String, String>>,
}

impl Vars<'_> {
    fn get(&self, name: &str) -> Option<String> {
        self.read.borrow_mut().insert(name.to_string());
        self.all.get(name).cloned()
    }

    fn list(&self, name: &str) -> Vec<String> {
        self.get(name)
            .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect())
            .unwrap_or_default()
    }

    fn number(&self, name: &str, default: u64) -> Result<u64, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.trim().parse().map_err(|e: std::num::ParseIntError| match e.kind() {
                std::num::IntErrorKind::PosOverflow => ConfigError(format!("{name}={v:?} is too large")),
                _ => ConfigError(format!("{name}={v:?} is not a non-negative whole number")),
            }),
        }
    }

    fn small(&self, name: &str, default: u64) -> Result<u32, ConfigError> {
        u32::try_from(self.number(name, default)?).map_err(|_| ConfigError(format!("{name} is too large")))
    }

    fn size(&self, name: &str, default: usize) -> Result<usize, ConfigError> {
        usize::try_from(self.number(name, default as u64)?).map_err(|_| ConfigError(format!("{name} is too large")))
    }

    fn seconds(&self, name: &str, default: Duration) -> Result<Duration, ConfigError> {
        self.number(name, default.as_secs()).map(Duration::from_secs)
    }

    /// An encryption context `K=V,K=V`, its values' `{placeholders}` filled in (`{component}` with `component`'s
    /// digest); `None` if the variable is unset.
    fn context(&self, name: &str, component: &Path) -> Result<Option<EncryptionContext>, ConfigError> {
        if self.get(name).is_none() {
            return Ok(None);
        }
        let fail = |e: String| ConfigError(format!("{name}: {e}"));
        let mut pairs = Vec::new();
        for item in self.list(name) {
            let Pair(key, value) = item.parse::<Pair>().map_err(|e| fail(e.to_string()))?;
            // Items are trimmed; so are their keys and values, around the `=`.
            let (key, mut value) = (key.trim().to_string(), value.trim().to_string());
            if key.is_empty() {
                return Err(fail(format!("{item:?} is not of the form KEY=VALUE with a non-empty KEY")));
            }
            if key.contains(['{', '}']) {
                return Err(fail(format!("the key {key:?} holds a brace: placeholders go in values")));
            }
            for (placeholder, var) in PLACEHOLDERS {
                if value.contains(placeholder) {
                    let fact =
                        self.get(var).ok_or_else(|| fail(format!("{placeholder} needs {var}, which is not set")))?;
                    value = value.replace(placeholder, &fact);
                }
            }
            if value.contains(COMPONENT_PLACEHOLDER) {
                let digest =
                    self.component_digest(component).map_err(|e| fail(format!("{COMPONENT_PLACEHOLDER}: {e}")))?;
                value = value.replace(COMPONENT_PLACEHOLDER, &digest);
            }
            if let Some(open) = value.find(['{', '}']) {
                let unknown = value[open..].split_inclusive('}').next().unwrap_or_default();
                let known: Vec<&str> = PLACEHOLDERS.iter().map(|(p, _)| *p).chain([COMPONENT_PLACEHOLDER]).collect();
                return Err(fail(format!("{unknown} is not a placeholder ({})", known.join(", "))));
            }
            pairs.push((key, value));
        }
        EncryptionContext::from_pairs(pairs).map(Some).map_err(|e| fail(e.to_string()))
    }

    /// The component's digest, worked out once (a `.cwasm` carries it; a `.wasm` is hashed).
    fn component_digest(&self, path: &Path) -> Result<String, String> {
        let digest = self
            .digest
            .get_or_init(|| ComponentDigest::of_file(path).map(|d| d.to_string()).map_err(|e| e.to_string()));
        digest.clone()
    }
}

impl LambdaConfig {
    /// Reads the configuration from `vars` (the process environment in production).
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first variable that is missing or malformed, or a `KEYWARD_*` variable that is
    /// not a setting (a typo, or per-secret settings of a variable the guest does not get).
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        // Environment variable names are case-sensitive: `keyward_timeout_ms` would be silently ignored.
        if let Some(miscased) =
            vars.keys().filter(|k| k.to_ascii_uppercase().starts_with("KEYWARD_") && !k.starts_with("KEYWARD_")).min()
        {
            // A per-secret setting keeps its variable's name as it is; any other setting is upper case throughout.
            let upper = miscased.to_ascii_uppercase();
            let fixed = match [SECRET_CONTEXT, SECRET_KEY, SECRET_ALGORITHM].iter().find(|p| upper.starts_with(**p)) {
                Some(prefix) => format!("{prefix}{}", &miscased[prefix.len()..]),
                None => upper,
            };
            return Err(ConfigError(format!(
                "{miscased} is not a keyward setting: keyward's variables begin with upper-case KEYWARD_ (did you mean {fixed}?)"
            )));
        }
        let vars = Vars { all: vars, read: RefCell::default(), digest: OnceCell::new() };
        let config = Self::read(&vars)?;
        config.host.check().map_err(name_the_variable)?;
        let read = vars.read.borrow();
        let unknown = vars.all.keys().filter(|k| k.starts_with("KEYWARD_") && !read.contains(*k)).min();
        if let Some(unknown) = unknown {
            let hint = if [SECRET_CONTEXT, SECRET_KEY, SECRET_ALGORITHM].iter().any(|p| unknown.starts_with(p)) {
                "per-secret settings name a variable listed in KEYWARD_GUEST_ENV"
            } else {
                "see the README's table of KEYWARD_ variables"
            };
            return Err(ConfigError(format!("{unknown} is not a keyward setting: {hint}")));
        }
        Ok(config)
    }

    /// The settings, one line each: the `KEYWARD_*` variables parsed into the host's limits and `kms` policy. The
    /// defaults are those of [`Limits`] and [`KmsPolicy`], but for the cache, on in Lambda mode.
    fn read(vars: &Vars<'_>) -> Result<Self, ConfigError> {
        let component = match vars.get("KEYWARD_COMPONENT") {
            Some(path) => PathBuf::from(path),
            None => {
                let root = PathBuf::from(vars.get("LAMBDA_TASK_ROOT").unwrap_or_else(|| ".".into()));
                let cwasm = root.join("handler.cwasm");
                if cwasm.exists() { cwasm } else { root.join("handler.wasm") }
            }
        };

        let mut guest_env = Vec::new();
        let mut secrets = Vec::new();
        for name in vars.list("KEYWARD_GUEST_ENV") {
            let value = vars
                .get(&name)
                .ok_or_else(|| ConfigError(format!("KEYWARD_GUEST_ENV names {name}, which is not set")))?;
            let settings = SecretSettings {
                key_ids: vars.list(&format!("{SECRET_KEY}{name}")),
                stamped_context: vars.context(&format!("{SECRET_CONTEXT}{name}"), &component)?,
                algorithm: vars.get(&format!("{SECRET_ALGORITHM}{name}")).map(|a| a.trim().to_string()),
            };
            if settings != SecretSettings::default() {
                secrets.push((name.clone(), settings));
            }
            guest_env.push((name, value));
        }

        let concurrency = vars.small("AWS_LAMBDA_MAX_CONCURRENCY", 1)?;
        if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
            return Err(ConfigError(format!(
                "AWS_LAMBDA_MAX_CONCURRENCY={concurrency} is out of range: keyward serves 1 to {MAX_CONCURRENCY} \
                 invocations at once"
            )));
        }
        let (limits, kms) = (Limits::default(), KmsPolicy::default());
        let limits = Limits {
            memory_bytes: mb(vars.small("KEYWARD_MEMORY_MB", (limits.memory_bytes >> 20) as u64)?),
            timeout: Duration::from_millis(vars.number("KEYWARD_TIMEOUT_MS", limits.timeout.as_millis() as u64)?),
            max_response_bytes: vars.size("KEYWARD_MAX_RESPONSE_BYTES", limits.max_response_bytes)?,
            max_instances: concurrency,
            ..limits
        };
        let policy = KmsPolicy {
            stamped_context: vars.context("KEYWARD_KMS_CONTEXT", &component)?.unwrap_or_default(),
            secrets,
            max_decrypt_calls: vars.small("KEYWARD_MAX_DECRYPT_CALLS", u64::from(kms.max_decrypt_calls))?,
            cache: CacheSettings {
                ttl: vars.seconds("KEYWARD_CACHE_TTL_SECS", CacheSettings::LAMBDA_TTL)?,
                stale: vars.seconds("KEYWARD_CACHE_STALE_SECS", kms.cache.stale)?,
                max_entries: vars.size("KEYWARD_CACHE_MAX_ENTRIES", kms.cache.max_entries)?,
            },
            prefetch: vars.list("KEYWARD_PREFETCH"),
            max_key_operations: vars.small("KEYWARD_MAX_KEY_OPERATIONS", u64::from(kms.max_key_operations))?,
            max_key_input_bytes: vars.size("KEYWARD_MAX_KEY_INPUT_BYTES", kms.max_key_input_bytes)?,
            guest_plaintext: match vars.get("KEYWARD_GUEST_PLAINTEXT") {
                Some(value) => value.parse().map_err(|e| ConfigError(format!("KEYWARD_GUEST_PLAINTEXT: {e}")))?,
                None => kms.guest_plaintext,
            },
            ..kms
        };
        let aws = AwsKmsConfig {
            key_ids: vars.list("KEYWARD_KMS_KEY_ID"),
            endpoint: vars.get("KEYWARD_KMS_ENDPOINT").map(|e| e.trim().to_string()).filter(|e| !e.is_empty()),
            ca_bundle: vars.get("AWS_CA_BUNDLE").filter(|p| !p.is_empty()).map(Into::into),
        };

        // What the library's own checks cannot know: Lambda's limits, and that Lambda mode decrypts with KMS.
        if limits.max_response_bytes > LAMBDA_PAYLOAD_LIMIT {
            return Err(ConfigError(format!(
                "KEYWARD_MAX_RESPONSE_BYTES={} is over Lambda's response limit of {LAMBDA_PAYLOAD_LIMIT} bytes",
                limits.max_response_bytes
            )));
        }
        if aws.key_ids.is_empty() {
            return Err(ConfigError("KEYWARD_KMS_KEY_ID is not set: name the KMS key (id, ARN or alias)".into()));
        }
        Ok(Self { component, host: HostConfig { limits, guest_env, kms: policy }, kms: aws, concurrency })
    }
}

/// The host's own words for a configuration it refuses, with the variable that set it.
fn name_the_variable(error: HostError) -> ConfigError {
    let message = match &error {
        HostError::Limits(limit @ InvalidLimits::Memory { .. }) => format!("KEYWARD_MEMORY_MB: {limit}"),
        HostError::Limits(limit @ InvalidLimits::Timeout { .. }) => format!("KEYWARD_TIMEOUT_MS: {limit}"),
        HostError::Limits(limit @ InvalidLimits::NoResponse) => format!("KEYWARD_MAX_RESPONSE_BYTES: {limit}"),
        HostError::Policy(PolicyError::PrefetchWithoutCache) => {
            "KEYWARD_PREFETCH needs the cache, but KEYWARD_CACHE_TTL_SECS is 0".to_string()
        }
        HostError::Policy(PolicyError::NotAGuestVariable { name, .. }) => {
            format!("KEYWARD_PREFETCH names {name}, which is not in KEYWARD_GUEST_ENV")
        }
        HostError::Policy(PolicyError::EmptyCache) => format!("KEYWARD_CACHE_MAX_ENTRIES: {error}"),
        HostError::Policy(PolicyError::UnknownAlgorithm { name, .. }) => format!("{SECRET_ALGORITHM}{name}: {error}"),
        HostError::Policy(PolicyError::ContextForAsymmetricKey { name, .. }) => {
            format!("{SECRET_CONTEXT}{name}: {error}")
        }
        _ => error.to_string(),
    };
    ConfigError(message)
}

fn mb(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX).saturating_mul(1 << 20)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::kms::GuestPlaintext;

    fn config(vars: &[(&str, &str)]) -> Result<LambdaConfig, ConfigError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        LambdaConfig::from_vars(&vars)
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
            ("KEYWARD_KMS_ENDPOINT", " http://127.0.0.1:5000 "),
            ("KEYWARD_KMS_CONTEXT", "function=hello,stage=prod"),
            ("KEYWARD_CACHE_TTL_SECS", "0"),
            ("KEYWARD_CACHE_STALE_SECS", "60"),
            ("KEYWARD_TIMEOUT_MS", "1500"),
            ("KEYWARD_MEMORY_MB", "32"),
            ("KEYWARD_MAX_KEY_OPERATIONS", "8"),
            ("KEYWARD_MAX_KEY_INPUT_BYTES", "4096"),
            ("KEYWARD_GUEST_PLAINTEXT", " Deny "),
        ])
        .unwrap();
        assert_eq!(c.component, PathBuf::from("/opt/h.wasm"));
        assert_eq!(c.host.guest_env, vec![("PASSWORD".into(), "Y3Q=".into()), ("GREETING".into(), "hi".into())]);
        assert_eq!(c.kms.key_ids, vec!["alias/a", "arn:aws:kms:us-east-1:1:key/k"]);
        assert_eq!(c.kms.endpoint.as_deref(), Some("http://127.0.0.1:5000"));
        assert_eq!(c.host.kms.stamped_context.to_string(), "function=hello,stage=prod");
        assert_eq!(c.host.kms.cache.ttl, Duration::ZERO);
        assert_eq!(c.host.kms.cache.stale, Duration::from_secs(60));
        assert_eq!(c.host.limits.timeout, Duration::from_millis(1500));
        assert_eq!(c.host.limits.memory_bytes, 32 << 20);
        assert_eq!((c.host.kms.max_key_operations, c.host.kms.max_key_input_bytes), (8, 4096));
        assert_eq!(c.host.kms.guest_plaintext, GuestPlaintext::Deny);
    }

    #[test]
    fn defaults_follow_the_lambda_layout() {
        let c = config(&[("KEYWARD_KMS_KEY_ID", "k"), ("LAMBDA_TASK_ROOT", "/var/task")]).unwrap();
        assert_eq!(c.component, PathBuf::from("/var/task/handler.wasm"));
        assert_eq!(c.host.kms.cache, CacheSettings { ttl: CacheSettings::LAMBDA_TTL, ..CacheSettings::default() });
        assert_eq!(c.host.limits, Limits::default().one_at_a_time());
        assert!(c.host.guest_env.is_empty() && c.host.kms.prefetch.is_empty());
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
                &[("KEYWARD_KMS_KEY_ID", "k"), ("KEYWARD_GUEST_PLAINTEXT", "no")],
                "KEYWARD_GUEST_PLAINTEXT: \"no\" is neither allow nor deny",
            ),
            (&[("KEYWARD_KMS_KEY_ID", "k"), ("KEYWARD_MAX_KEY_OPERATIONS", "many")], "KEYWARD_MAX_KEY_OPERATIONS"),
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
            (
                &[
                    ("KEYWARD_KMS_KEY_ID", "k"),
                    ("KEYWARD_GUEST_ENV", "A,B"),
                    ("A", "Y3Q="),
                    ("B", "Y3Q="),
                    ("KEYWARD_SECRET_CONTEXT_A", "x=1"),
                    ("KEYWARD_SECRET_CONTEXT_B", "x=2"),
                ],
                "secrets A and B hold the same ciphertext with different settings",
            ),
        ];
        for (vars, expected) in cases {
            let err = config(vars).unwrap_err().to_string();
            assert!(err.contains(expected), "{vars:?}: expected {expected:?} in {err:?}");
        }
    }

    #[test]
    fn reads_per_secret_settings_with_lambdas_facts() {
        let c = config(&[
            ("KEYWARD_KMS_KEY_ID", "k"),
            // Spaces around the `=` are not part of the key or the value.
            ("KEYWARD_KMS_CONTEXT", " function = {function_name} "),
            ("AWS_LAMBDA_FUNCTION_NAME", "billing"),
            ("AWS_REGION", "eu-west-1"),
            ("KEYWARD_GUEST_ENV", "CONSOLE,CLI,RSA,PLAIN"),
            ("CONSOLE", "Y3Q="),
            ("CLI", "Y2xp"),
            ("RSA", "cnNh"),
            ("PLAIN", "hi"),
            ("KEYWARD_SECRET_CONTEXT_CONSOLE", "LambdaFunctionName={function_name},where={region}"),
            ("KEYWARD_SECRET_CONTEXT_CLI", ""),
            ("KEYWARD_SECRET_KEY_RSA", "alias/rsa"),
            ("KEYWARD_SECRET_ALGORITHM_RSA", "RSAES_OAEP_SHA_256"),
        ])
        .unwrap();
        assert_eq!(c.host.kms.stamped_context.to_string(), "function=billing");
        let settings: HashMap<&str, &SecretSettings> =
            c.host.kms.secrets.iter().map(|(n, s)| (n.as_str(), s)).collect();
        assert_eq!(settings.len(), 3, "PLAIN has no settings of its own");
        let console = settings["CONSOLE"].stamped_context.as_ref().unwrap().to_string();
        assert_eq!(console, "LambdaFunctionName=billing,where=eu-west-1");
        assert_eq!(settings["CLI"].stamped_context, Some(EncryptionContext::new()));
        assert_eq!(settings["RSA"].key_ids, vec!["alias/rsa"]);
        assert_eq!(settings["RSA"].algorithm.as_deref(), Some("RSAES_OAEP_SHA_256"));
        assert_eq!(settings["RSA"].stamped_context, None);
    }

    /// `{component}` is the guest's digest: a `.wasm`'s SHA-256, or the record a `.cwasm` carries; a component
    /// whose digest cannot be known fails init.
    #[test]
    fn component_binds_the_context_to_the_build() {
        let dir = std::env::temp_dir().join(format!("keyward-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (wasm, bare_cwasm) = (dir.join("h.wasm"), dir.join("h.cwasm"));
        std::fs::write(&wasm, b"\0asm\x0d\0\x01\0").unwrap();
        std::fs::write(&bare_cwasm, b"\x7fELF, without keyward's record").unwrap();
        let with = |component: &Path| {
            config(&[
                ("KEYWARD_KMS_KEY_ID", "k"),
                ("KEYWARD_COMPONENT", component.to_str().unwrap()),
                ("KEYWARD_KMS_CONTEXT", "component={component}"),
            ])
        };
        let expected = ComponentDigest::of_wasm(b"\0asm\x0d\0\x01\0");
        assert_eq!(with(&wasm).unwrap().host.kms.stamped_context.to_string(), format!("component={expected}"));
        let error = with(&bare_cwasm).unwrap_err().to_string();
        assert!(
            error.starts_with(
                "KEYWARD_KMS_CONTEXT: {component}: cannot bind secrets to this component: this ELF file is not a \
                 component precompiled by wasmtime"
            ),
            "{error}"
        );
        let error = with(&dir.join("missing.cwasm")).unwrap_err().to_string();
        assert!(error.contains("cannot read component") && error.contains("missing.cwasm"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_keyward_variable_that_is_not_a_setting_fails_init() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("KEYWARD_KMS_KEY_ID", "k"), ("KEYWARD_CACHE_TTL", "60")], "KEYWARD_CACHE_TTL is not a keyward setting"),
            (
                &[("keyward_kms_key_id", "k")],
                "keyward_kms_key_id is not a keyward setting: keyward's variables begin with upper-case KEYWARD_ (did you mean KEYWARD_KMS_KEY_ID?)",
            ),
            (
                &[("KEYWARD_KMS_KEY_ID", "k"), ("keyward_secret_context_db_password", "")],
                "(did you mean KEYWARD_SECRET_CONTEXT_db_password?)",
            ),
            (
                &[("KEYWARD_KMS_KEY_ID", "k"), ("Keyward_TIMEOUT_MS", "5")],
                "Keyward_TIMEOUT_MS is not a keyward setting: keyward's variables begin with upper-case KEYWARD_ (did you mean KEYWARD_TIMEOUT_MS?)",
            ),
            (
                &[("KEYWARD_KMS_KEY_ID", "k"), ("KEYWARD_SECRET_CONTEXT_PASSWORD", "a=b")],
                "KEYWARD_SECRET_CONTEXT_PASSWORD is not a keyward setting: per-secret settings name a variable listed",
            ),
            (
                &[("KEYWARD_KMS_KEY_ID", "k"), ("KEYWARD_KMS_CONTEXT", "f={function}")],
                "KEYWARD_KMS_CONTEXT: {function} is not a placeholder ({function_name}, {region}, {component})",
            ),
            (
                &[("KEYWARD_KMS_KEY_ID", "k"), ("KEYWARD_KMS_CONTEXT", "f={function_name}")],
                "KEYWARD_KMS_CONTEXT: {function_name} needs AWS_LAMBDA_FUNCTION_NAME, which is not set",
            ),
            (
                &[("KEYWARD_KMS_KEY_ID", "k"), ("KEYWARD_KMS_CONTEXT", "f={function_name")],
                "KEYWARD_KMS_CONTEXT: {function_name is not a placeholder ({function_name}, {region}, {component})",
            ),
            (&[("KEYWARD_KMS_KEY_ID", "k"), ("KEYWARD_KMS_CONTEXT", " = x")], "KEYWARD_KMS_CONTEXT: \"= x\" is not of"),
            (
                &[("KEYWARD_KMS_KEY_ID", "k"), ("KEYWARD_KMS_CONTEXT", "{function_name}=x")],
                "KEYWARD_KMS_CONTEXT: the key \"{function_name}\" holds a brace: placeholders go in values",
            ),
            (
                &[("KEYWARD_KMS_KEY_ID", "k"), ("KEYWARD_TIMEOUT_MS", "99999999999999999999999")],
                "KEYWARD_TIMEOUT_MS=\"99999999999999999999999\" is too large",
            ),
            (
                &[("KEYWARD_KMS_KEY_ID", "k"), ("KEYWARD_MAX_RESPONSE_BYTES", "0")],
                "KEYWARD_MAX_RESPONSE_BYTES: the response limit must be at least 1 byte",
            ),
            (
                &[("KEYWARD_KMS_KEY_ID", "k"), ("KEYWARD_MEMORY_MB", "5000")],
                "KEYWARD_MEMORY_MB: memory limit must be 1 to 4096 MiB, not 5000 MiB",
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
            .map(|name| name.replace("<NAME>", "P"))
            .collect();
        documented.sort();

        let all: HashMap<String, String> = [
            ("KEYWARD_KMS_KEY_ID", "k"),
            ("KEYWARD_GUEST_ENV", "P"),
            ("P", "x"),
            ("KEYWARD_PREFETCH", "P"),
            ("KEYWARD_KMS_CONTEXT", "a=b"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let vars = Vars { all: &all, read: RefCell::default(), digest: OnceCell::new() };
        LambdaConfig::read(&vars).unwrap();
        let read: Vec<String> = vars.read.into_inner().into_iter().filter(|n| n.starts_with("KEYWARD_")).collect();
        assert_eq!(documented, read, "README table (left) vs variables read (right)");
    }
}
