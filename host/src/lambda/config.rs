//! Lambda mode's configuration: the function's environment, read once by each capability's own parser
//! ([`HostSettings`], [`AwsSettings`], [`AwsKmsSettings`]), with the facts only Lambda gives (where the package is,
//! how many invocations run at once). Every `KEYWARD_*` variable is someone's setting: any other fails init.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::aws::{AwsKmsSettings, AwsSettings};
use crate::secrets::settings::PER_SECRET;
use crate::settings::{Env, HostSettings, SettingError};

/// Everything Lambda mode reads from the environment.
#[derive(Debug, Clone)]
pub struct LambdaConfig {
    /// The guest component.
    pub component: PathBuf,
    /// The host's settings; the host checks them when it is built.
    pub host: HostSettings,
    /// What every AWS client shares.
    pub aws: AwsSettings,
    /// The KMS backend's settings.
    pub kms: AwsKmsSettings,
    /// Invocations served at once (`AWS_LAMBDA_MAX_CONCURRENCY`, which Lambda Managed Instances sets; else 1), each
    /// in an instance of its own: the instance pool holds as many.
    pub concurrency: u32,
}

/// Most invocations one process serves at once.
pub const MAX_CONCURRENCY: u32 = 1024;

/// The prefix of every setting's variable.
const PREFIX: &str = "KEYWARD_";

impl LambdaConfig {
    /// Reads the configuration from `vars` (the process environment in production).
    ///
    /// # Errors
    /// A [`SettingError`] naming the first variable that is missing or malformed, or a `KEYWARD_*` variable that is
    /// not a setting (a typo, or per-secret settings of a variable the guest does not get). Whether the settings
    /// work together is checked when the host is built.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, SettingError> {
        // Environment variable names are case-sensitive: `keyward_timeout_ms` would be silently ignored.
        if let Some(miscased) =
            vars.keys().filter(|k| k.to_ascii_uppercase().starts_with(PREFIX) && !k.starts_with(PREFIX)).min()
        {
            // A per-secret setting keeps its variable's name as it is; any other setting is upper case throughout.
            let upper = miscased.to_ascii_uppercase();
            let fixed = match PER_SECRET.iter().find(|p| upper.starts_with(**p)) {
                Some(prefix) => format!("{prefix}{}", &miscased[prefix.len()..]),
                None => upper,
            };
            let reason = format!(
                "not a keyward setting: keyward's variables begin with upper-case {PREFIX} (did you mean {fixed}?)"
            );
            return Err(SettingError::new(miscased.as_str(), reason));
        }
        let env = Env::new(vars);
        let config = Self::read(&env)?;
        if let Some(unknown) = env.unread(PREFIX).first() {
            let hint = if PER_SECRET.iter().any(|p| unknown.starts_with(p)) {
                "per-secret settings name a variable listed in KEYWARD_GUEST_ENV"
            } else {
                "see docs/settings.md for every KEYWARD_ variable"
            };
            return Err(SettingError::new(*unknown, format!("not a keyward setting: {hint}")));
        }
        Ok(config)
    }

    /// Every setting, each by its own parser; the defaults are those of each settings struct, but for the cache,
    /// on in Lambda mode.
    fn read(env: &Env<'_>) -> Result<Self, SettingError> {
        let component = match env.get("KEYWARD_COMPONENT") {
            Some(path) => PathBuf::from(path),
            None => {
                let root = PathBuf::from(env.get("LAMBDA_TASK_ROOT").unwrap_or_else(|| ".".into()));
                let cwasm = root.join("handler.cwasm");
                if cwasm.exists() { cwasm } else { root.join("handler.wasm") }
            }
        };
        let mut host = HostSettings::from_env(env, &component)?;
        let concurrency = env.number("AWS_LAMBDA_MAX_CONCURRENCY", 1)?;
        if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
            let reason =
                format!("{concurrency} is out of range: keyward serves 1 to {MAX_CONCURRENCY} invocations at once");
            return Err(SettingError::new("AWS_LAMBDA_MAX_CONCURRENCY", reason));
        }
        host.limits.max_instances = concurrency;
        Ok(Self { component, host, aws: AwsSettings::from_env(env), kms: AwsKmsSettings::from_env(env)?, concurrency })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::capability::kms::GuestPlaintext;
    use crate::secrets::{CacheSettings, SecretSettings};
    use crate::{ComponentDigest, EncryptionContext, Limits};

    fn config(vars: &[(&str, &str)]) -> Result<LambdaConfig, SettingError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        LambdaConfig::from_vars(&vars)
    }

    /// The configuration, its settings checked as init checks them.
    fn checked(vars: &[(&str, &str)]) -> Result<LambdaConfig, SettingError> {
        config(vars).and_then(|c| c.host.check().map(|()| c))
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
            ("KEYWARD_MAX_OUTPUT_BYTES", "100"),
        ])
        .unwrap();
        assert_eq!(c.component, PathBuf::from("/opt/h.wasm"));
        assert_eq!(c.host.guest_env, vec![("PASSWORD".into(), "Y3Q=".into()), ("GREETING".into(), "hi".into())]);
        assert_eq!(c.kms.key_ids, vec!["alias/a", "arn:aws:kms:us-east-1:1:key/k"]);
        assert_eq!(c.kms.endpoint.as_deref(), Some("http://127.0.0.1:5000"));
        assert_eq!(c.host.secrets.stamped_context.to_string(), "function=hello,stage=prod");
        assert_eq!(c.host.secrets.cache.ttl, Duration::ZERO);
        assert_eq!(c.host.secrets.cache.stale, Duration::from_secs(60));
        assert_eq!(c.host.limits.timeout, Duration::from_millis(1500));
        assert_eq!(c.host.limits.memory_bytes, 32 << 20);
        assert_eq!((c.host.keys.max_operations, c.host.keys.max_input_bytes), (8, 4096));
        assert_eq!(c.host.limits.max_output_bytes, 100);
        assert_eq!(c.host.kms.guest_plaintext, GuestPlaintext::Deny);
    }

    #[test]
    fn defaults_follow_the_lambda_layout() {
        let c = config(&[("KEYWARD_KMS_KEY_ID", "k"), ("LAMBDA_TASK_ROOT", "/var/task")]).unwrap();
        assert_eq!(c.component, PathBuf::from("/var/task/handler.wasm"));
        assert_eq!(c.host.secrets.cache, CacheSettings { ttl: CacheSettings::LAMBDA_TTL, ..CacheSettings::default() });
        assert_eq!(c.host.limits, Limits::default().one_at_a_time());
        assert!(c.host.guest_env.is_empty() && c.host.secrets.prefetch.is_empty());
    }

    #[test]
    fn each_mistake_names_its_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[], "KEYWARD_KMS_KEY_ID: not set"),
            (&[("KEYWARD_KMS_KEY_ID", "k"), ("KEYWARD_GUEST_ENV", "PASSWORD")], "names PASSWORD, which is not set"),
            (&[("KEYWARD_KMS_KEY_ID", "k"), ("KEYWARD_KMS_CONTEXT", "novalue")], "KEYWARD_KMS_CONTEXT"),
            (&[("KEYWARD_KMS_KEY_ID", "k"), ("KEYWARD_TIMEOUT_MS", "soon")], "KEYWARD_TIMEOUT_MS"),
            (&[("KEYWARD_KMS_KEY_ID", "k"), ("KEYWARD_MEMORY_MB", "0")], "KEYWARD_MEMORY_MB: must be 1 to 4096 MiB"),
            (&[("KEYWARD_KMS_KEY_ID", "k"), ("KEYWARD_MAX_RESPONSE_BYTES", "7000000")], "Lambda's response limit"),
            (&[("KEYWARD_KMS_KEY_ID", "k"), ("KEYWARD_CACHE_STALE_SECS", "-1")], "KEYWARD_CACHE_STALE_SECS"),
            (
                &[("KEYWARD_KMS_KEY_ID", "k"), ("KEYWARD_TIMEOUT_MS", "18446744073709551615")],
                "KEYWARD_TIMEOUT_MS: must be 1 to",
            ),
            (
                &[("KEYWARD_KMS_KEY_ID", "k"), ("KEYWARD_MAX_OUTPUT_BYTES", "2000000")],
                "KEYWARD_MAX_OUTPUT_BYTES: must be 0 to 1048576 bytes",
            ),
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
            let err = checked(vars).unwrap_err().to_string();
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
        assert_eq!(c.host.secrets.stamped_context.to_string(), "function=billing");
        let settings: HashMap<&str, &SecretSettings> =
            c.host.secrets.secrets.iter().map(|(n, s)| (n.as_str(), s)).collect();
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
        assert_eq!(with(&wasm).unwrap().host.secrets.stamped_context.to_string(), format!("component={expected}"));
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
            (&[("KEYWARD_KMS_KEY_ID", "k"), ("KEYWARD_CACHE_TTL", "60")], "KEYWARD_CACHE_TTL: not a keyward setting"),
            (
                &[("keyward_kms_key_id", "k")],
                "keyward_kms_key_id: not a keyward setting: keyward's variables begin with upper-case KEYWARD_ (did you mean KEYWARD_KMS_KEY_ID?)",
            ),
            (
                &[("KEYWARD_KMS_KEY_ID", "k"), ("keyward_secret_context_db_password", "")],
                "(did you mean KEYWARD_SECRET_CONTEXT_db_password?)",
            ),
            (
                &[("KEYWARD_KMS_KEY_ID", "k"), ("Keyward_TIMEOUT_MS", "5")],
                "Keyward_TIMEOUT_MS: not a keyward setting: keyward's variables begin with upper-case KEYWARD_ (did you mean KEYWARD_TIMEOUT_MS?)",
            ),
            (
                &[("KEYWARD_KMS_KEY_ID", "k"), ("KEYWARD_SECRET_CONTEXT_PASSWORD", "a=b")],
                "KEYWARD_SECRET_CONTEXT_PASSWORD: not a keyward setting: per-secret settings name a variable listed",
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
                "KEYWARD_TIMEOUT_MS: \"99999999999999999999999\" is too large",
            ),
            (
                &[("KEYWARD_KMS_KEY_ID", "k"), ("KEYWARD_MAX_RESPONSE_BYTES", "0")],
                "KEYWARD_MAX_RESPONSE_BYTES: must be 1 to 6291456 bytes (Lambda's response limit), not 0",
            ),
            (
                &[("KEYWARD_KMS_KEY_ID", "k"), ("KEYWARD_MEMORY_MB", "5000")],
                "KEYWARD_MEMORY_MB: must be 1 to 4096 MiB, not 5000 MiB",
            ),
        ];
        for (vars, expected) in cases {
            let err = checked(vars).unwrap_err().to_string();
            assert!(err.contains(expected), "{vars:?}: expected {expected:?} in {err:?}");
        }
    }

    /// docs/settings.md's table and the parsers name the same variables.
    #[test]
    fn the_docs_document_every_variable_read() {
        let docs = include_str!("../../../docs/settings.md");
        let section = &docs[docs.find("| variable | meaning | default |").unwrap()..];
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
            ("KEYWARD_ALLOW_OUTBOUND", "https://api.example.com"),
            ("KEYWARD_SOURCE_P", "ssm:/p"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let env = Env::new(&all);
        LambdaConfig::read(&env).unwrap();
        let read: Vec<String> = env.read().into_iter().filter(|n| n.starts_with("KEYWARD_")).collect();
        assert_eq!(documented, read, "docs/settings.md's table (left) vs variables read (right)");
    }
}
