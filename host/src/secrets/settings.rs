//! Every setting of secrets, in one place: the struct, its defaults (the `Default` impls, one block each), the
//! parser of its `KEYWARD_*` variables and of its command-line flags, and the one check, which turns the settings
//! into the [`SecretTable`] the gate is built from.
//!
//! The cache is off by default for a library host (a process that runs a guest once gains nothing from it); Lambda
//! mode turns it on ([`CacheSettings::LAMBDA_TTL`]), since one warm environment serves many invocations.

use std::cell::OnceCell;
use std::path::Path;
use std::time::Duration;

use super::source::{SecretSource, SecretTable, Unnamed};
use crate::capability::env::GuestEnv;
use crate::context::{EncryptionContext, Pair};
use crate::sandbox::ComponentDigest;
use crate::settings::{Env, SettingError};

/// Every setting of secrets (see the module docs for the defaults and where each is set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretsSettings {
    /// Pairs merged into every decrypt a guest makes; a guest that gives a stamped key another value is `denied`.
    pub stamped_context: EncryptionContext,
    /// Settings of their own for the ciphertexts in some guest env vars (by name): keys, stamped context,
    /// algorithm. A setting follows the ciphertext's bytes, however the guest hands them over.
    pub secrets: Vec<(String, SecretSettings)>,
    /// Secrets one invocation may ask for (each `kms.decrypt`, and each key handle opened); one more traps.
    pub max_decrypt_calls: u32,
    /// Largest ciphertext a guest may hand over (AWS KMS's own are at most 6 KiB).
    pub max_ciphertext_bytes: usize,
    /// The plaintext cache.
    pub cache: CacheSettings,
    /// Guest env vars whose ciphertexts are decrypted, and stored secrets fetched, when the host starts, so that
    /// first invocations hit the cache.
    pub prefetch: Vec<String>,
    /// Secrets kept elsewhere than in a guest env var, by the name the guest knows them by
    /// (`KEYWARD_SOURCE_<NAME>`): Secrets Manager's secrets and SSM's parameters.
    pub sources: Vec<(String, SecretSource)>,
}

impl Default for SecretsSettings {
    fn default() -> Self {
        Self {
            stamped_context: EncryptionContext::new(),
            secrets: Vec::new(),
            max_decrypt_calls: 32,
            max_ciphertext_bytes: 64 * 1024,
            cache: CacheSettings::default(),
            prefetch: Vec::new(),
            sources: Vec::new(),
        }
    }
}

/// How one configured secret is decrypted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretSettings {
    /// Keys allowed to open it (ids, ARNs or aliases); empty: the backend's keys.
    pub key_ids: Vec<String>,
    /// Pairs stamped onto its decrypts instead of the host-wide stamp; `None`: the host-wide stamp.
    pub stamped_context: Option<EncryptionContext>,
    /// For a secret under an asymmetric KMS key: the encryption algorithm (one of [`ASYMMETRIC_ALGORITHMS`]). KMS
    /// takes no encryption context for those, so none is stamped and a guest may give none.
    pub algorithm: Option<String>,
}

/// The encryption algorithms of asymmetric KMS keys that can decrypt (KMS's `EncryptionAlgorithmSpec`, less the
/// symmetric default).
pub const ASYMMETRIC_ALGORITHMS: &[&str] = &["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256", "SM2PKE"];

/// How the plaintext cache serves repeats (`secrets/cache.rs` says how, in full).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    /// How long a decrypted secret is served; zero disables the cache.
    pub ttl: Duration,
    /// How long past its TTL a secret is still served while the key service is unavailable (never when it refuses);
    /// zero serves nothing stale.
    pub stale: Duration,
    /// Most plaintexts held (a quarter as many remembered refusals are held besides).
    pub max_entries: usize,
}

impl CacheSettings {
    /// The TTL Lambda mode defaults to.
    pub const LAMBDA_TTL: Duration = Duration::from_secs(300);
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self { ttl: Duration::ZERO, stale: Duration::from_secs(3600), max_entries: 256 }
    }
}

/// The per-secret variables, each followed by the name of a guest env var.
pub(crate) const SECRET_CONTEXT: &str = "KEYWARD_SECRET_CONTEXT_";
pub(crate) const SECRET_KEY: &str = "KEYWARD_SECRET_KEY_";
pub(crate) const SECRET_ALGORITHM: &str = "KEYWARD_SECRET_ALGORITHM_";
/// The variables that say where a secret lives, each followed by the name the guest knows it by.
pub(crate) const SOURCE: &str = "KEYWARD_SOURCE_";
/// Every per-secret prefix.
pub(crate) const PER_SECRET: [&str; 3] = [SECRET_CONTEXT, SECRET_KEY, SECRET_ALGORITHM];

impl SecretSettings {
    /// The variable that sets these settings of the secret `name` (the first of them that is set), for errors.
    pub(crate) fn variable(&self, name: &str) -> String {
        let prefix = if self.stamped_context.is_some() {
            SECRET_CONTEXT
        } else if !self.key_ids.is_empty() {
            SECRET_KEY
        } else if self.algorithm.is_some() {
            SECRET_ALGORITHM
        } else {
            SECRET_CONTEXT
        };
        format!("{prefix}{name}")
    }
}

const STAMPED_CONTEXT: &str = "KEYWARD_KMS_CONTEXT";
const CACHE_TTL: &str = "KEYWARD_CACHE_TTL_SECS";
const CACHE_MAX_ENTRIES: &str = "KEYWARD_CACHE_MAX_ENTRIES";
const PREFETCH: &str = "KEYWARD_PREFETCH";

/// Values a stamped encryption context may take from Lambda's own environment, as `{placeholder}`: the console's
/// encryption helpers bind ciphertexts to `LambdaFunctionName=<the function's name>`.
const PLACEHOLDERS: &[(&str, &str)] = &[("{function_name}", "AWS_LAMBDA_FUNCTION_NAME"), ("{region}", "AWS_REGION")];
/// The placeholder for the guest component's digest (`sha256:<hex>`): `component={component}` binds ciphertexts
/// to one build of the guest.
const COMPONENT_PLACEHOLDER: &str = "{component}";

impl SecretsSettings {
    /// Reads the settings from Lambda mode's variables, with per-secret settings for the guest env vars `names`;
    /// `{component}` in a context is `component`'s digest. Defaults are [`SecretsSettings::default`]'s, but for the
    /// cache, on ([`CacheSettings::LAMBDA_TTL`]).
    ///
    /// # Errors
    /// The first [`SettingError`], naming its variable.
    pub(crate) fn from_env<'n>(
        env: &Env<'_>,
        names: impl Iterator<Item = &'n str>,
        component: &Path,
    ) -> Result<Self, SettingError> {
        let contexts = Contexts { env, component, digest: OnceCell::new() };
        let mut secrets = Vec::new();
        for name in names {
            let settings = SecretSettings {
                key_ids: env.list(&format!("{SECRET_KEY}{name}")),
                stamped_context: contexts.read(&format!("{SECRET_CONTEXT}{name}"))?,
                algorithm: env.get(&format!("{SECRET_ALGORITHM}{name}")).map(|a| a.trim().to_string()),
            };
            if settings != SecretSettings::default() {
                secrets.push((name.to_string(), settings));
            }
        }
        let d = Self::default();
        Ok(Self {
            stamped_context: contexts.read(STAMPED_CONTEXT)?.unwrap_or_default(),
            secrets,
            max_decrypt_calls: env.number("KEYWARD_MAX_DECRYPT_CALLS", d.max_decrypt_calls)?,
            cache: CacheSettings {
                ttl: env.seconds(CACHE_TTL, CacheSettings::LAMBDA_TTL)?,
                stale: env.seconds("KEYWARD_CACHE_STALE_SECS", d.cache.stale)?,
                max_entries: env.number(CACHE_MAX_ENTRIES, d.cache.max_entries)?,
            },
            prefetch: env.list(PREFETCH),
            sources: sources(env)?,
            ..d
        })
    }

    /// Checks the settings against the guest's environment, once, and makes the table of its secrets: where each
    /// named secret lives, and the settings of each configured ciphertext.
    ///
    /// # Errors
    /// The first [`SettingError`].
    pub(crate) fn check(self, guest_env: &GuestEnv) -> Result<CheckedSecrets, SettingError> {
        if self.cache.max_entries == 0 {
            return Err(SettingError::new(CACHE_MAX_ENTRIES, "the cache must hold at least one entry"));
        }
        if !self.prefetch.is_empty() && self.cache.ttl.is_zero() {
            return Err(SettingError::new(PREFETCH, format!("prefetching needs the cache, but {CACHE_TTL} is 0")));
        }
        let is_guest_var = |name: &String| guest_env.iter().any(|(n, _)| n == name);
        let is_stored = |name: &String| self.sources.iter().any(|(n, _)| n == name);
        if let Some(name) = self.prefetch.iter().find(|name| !is_guest_var(name) && !is_stored(name)) {
            return Err(SettingError::new(
                PREFETCH,
                format!("names {name}, which is not in KEYWARD_GUEST_ENV and has no {SOURCE}{name}"),
            ));
        }
        for (name, _) in &self.sources {
            if !is_name(name) {
                let reason = "a source's name is the one the guest asks for: letters, digits and _, not beginning \
                              with a digit";
                return Err(SettingError::new(format!("{SOURCE}{name}"), reason));
            }
        }
        for (name, settings) in &self.secrets {
            let source = self.sources.iter().find(|(n, _)| n == name).map(|(_, source)| source);
            if let Some(kept) = source.filter(|source| source.needs_store()) {
                let reason = format!(
                    "{name} is kept by a service ({kept}), which decrypts it itself: per-secret keys, contexts and \
                     algorithms are for ciphertexts (guest env vars, sealed files)"
                );
                return Err(SettingError::new(settings.variable(name), reason));
            }
            if !is_guest_var(name) && source.is_none() {
                let reason = format!("{name} has settings of its own, but is not in KEYWARD_GUEST_ENV");
                return Err(SettingError::new(settings.variable(name), reason));
            }
            if let Some(algorithm) = &settings.algorithm {
                if !ASYMMETRIC_ALGORITHMS.contains(&algorithm.as_str()) {
                    let known = ASYMMETRIC_ALGORITHMS.join(", ");
                    let reason = format!("{algorithm:?} is not an asymmetric KMS encryption algorithm ({known})");
                    return Err(SettingError::new(format!("{SECRET_ALGORITHM}{name}"), reason));
                }
                if settings.stamped_context.as_ref().is_some_and(|c| !c.is_empty()) {
                    let reason = format!(
                        "an asymmetric KMS key takes no encryption context, and {algorithm} is an asymmetric \
                         algorithm: give it no context"
                    );
                    return Err(SettingError::new(format!("{SECRET_CONTEXT}{name}"), reason));
                }
            }
        }
        let table = SecretTable::new(guest_env, &self.secrets, &self.sources)?;
        for name in &self.prefetch {
            if let Err(Unnamed::NotASecret(why)) = table.source(name) {
                let reason = format!("names {name}, whose value is not base64: {why}");
                return Err(SettingError::new(PREFETCH, reason));
            }
        }
        Ok(CheckedSecrets { settings: self, table })
    }
}

/// The secrets kept elsewhere, from `KEYWARD_SOURCE_<NAME>` variables. A sealed file's relative path is its path
/// in the package, which Lambda unpacks at `LAMBDA_TASK_ROOT`.
fn sources(env: &Env<'_>) -> Result<Vec<(String, SecretSource)>, SettingError> {
    let root = env.get("LAMBDA_TASK_ROOT").map(std::path::PathBuf::from);
    env.prefixed(SOURCE)
        .into_iter()
        .map(|(name, value)| {
            let source = match value.parse().map_err(|e| SettingError::new(format!("{SOURCE}{name}"), e))? {
                SecretSource::Sealed(path) if path.is_relative() => {
                    SecretSource::Sealed(root.as_ref().map_or(path.clone(), |root| root.join(&path)))
                }
                source => source,
            };
            Ok((name, source))
        })
        .collect()
}

/// Whether `name` can name a secret: as an environment variable's name can be.
fn is_name(name: &str) -> bool {
    name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.chars().next().is_some_and(|c| !c.is_ascii_digit())
}

/// Settings that passed [`SecretsSettings::check`], with the table made of them.
#[derive(Debug)]
pub(crate) struct CheckedSecrets {
    pub(crate) settings: SecretsSettings,
    pub(crate) table: SecretTable,
}

impl CheckedSecrets {
    /// Whether a host without a secret store can serve these secrets.
    ///
    /// # Errors
    /// The first stored secret's variable.
    pub(crate) fn needs_no_store(&self) -> Result<(), SettingError> {
        match self.settings.sources.iter().find(|(_, source)| source.needs_store()) {
            None => Ok(()),
            Some((name, _)) => Err(SettingError::new(
                format!("{SOURCE}{name}"),
                "this host has no secret store to fetch it from (Secrets Manager, SSM): build it with one",
            )),
        }
    }

    /// Whether the key service opens every sealed file: a local key opens only files sealed with a local key
    /// (`keyward seal --key`), KMS only files sealed with KMS (`--key-id`); found at start, not at first use.
    ///
    /// # Errors
    /// The first sealed source of the other kind, naming its variable.
    pub(crate) fn check_sealed_for(&self, local_key: bool) -> Result<(), SettingError> {
        let Some((name, sealed_locally)) = self.table.sealed_with().find(|(_, local)| *local != local_key) else {
            return Ok(());
        };
        let reason = if sealed_locally {
            "the file was sealed with a local key (keyward seal --key), which only keyward invoke opens: seal it with \
             --key-id KEY for KMS"
        } else {
            "the file was sealed with a KMS data key (keyward seal --key-id), which a local key cannot open: seal a \
             copy with --key FILE to run it locally"
        };
        Err(SettingError::new(format!("{SOURCE}{name}"), reason))
    }

    /// Binds the secret `name` to injection into requests to `origin`: its ciphertext is the host's alone from
    /// now on (`kms.decrypt` and `keys` on it are `denied`). Returns where it lives.
    ///
    /// # Errors
    /// Why `name` holds no secret, in words.
    pub(crate) fn inject(&mut self, name: &str, origin: &str) -> Result<super::SecretSource, String> {
        self.table.inject(name, origin)
    }
}

/// Reads encryption contexts `K=V,K=V` from variables, their values' `{placeholders}` filled in.
struct Contexts<'e, 'a> {
    env: &'e Env<'a>,
    component: &'e Path,
    /// The component's digest, worked out once, when a context first asks for it.
    digest: OnceCell<Result<String, String>>,
}

impl Contexts<'_, '_> {
    /// The context in `name`; `None` if the variable is unset.
    fn read(&self, name: &str) -> Result<Option<EncryptionContext>, SettingError> {
        if self.env.get(name).is_none() {
            return Ok(None);
        }
        let fail = |e: String| SettingError::new(name, e);
        let mut pairs = Vec::new();
        for item in self.env.list(name) {
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
                    let fact = self
                        .env
                        .get(var)
                        .ok_or_else(|| fail(format!("{placeholder} needs {var}, which is not set")))?;
                    value = value.replace(placeholder, &fact);
                }
            }
            if value.contains(COMPONENT_PLACEHOLDER) {
                let digest = self.digest.get_or_init(|| {
                    ComponentDigest::of_file(self.component).map(|d| d.to_string()).map_err(|e| e.to_string())
                });
                let digest = digest.clone().map_err(|e| fail(format!("{COMPONENT_PLACEHOLDER}: {e}")))?;
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
}

/// The `--context K=V` pairs of a command, and with `--bind-component` the component's digest: the context a
/// command encrypts or decrypts under, or `keyward invoke` stamps.
///
/// # Errors
/// Pairs that are not a context, both flags giving the component pair, or a component whose digest cannot be known.
#[cfg(feature = "cli")]
pub fn stamped_context(pairs: Vec<Pair>, bind_component: Option<&Path>) -> Result<EncryptionContext, SettingError> {
    use crate::context::COMPONENT_KEY;
    let mut pairs: Vec<(String, String)> = pairs.into_iter().map(Into::into).collect();
    // A placeholder is the host's to fill in; left literal, the context matches no function's and nothing opens.
    let placeholders = PLACEHOLDERS.iter().map(|(p, var)| (*p, *var)).chain([(COMPONENT_PLACEHOLDER, "")]);
    for (placeholder, var) in placeholders {
        if let Some((key, _)) =
            pairs.iter().find(|(key, value)| key.contains(placeholder) || value.contains(placeholder))
        {
            let instead = match var {
                "" => "bind the build with --bind-component instead".to_string(),
                var => format!("write in its place the value of {var} on the function"),
            };
            let reason = format!("{key}: {placeholder} is a placeholder the host fills in, not a value; {instead}");
            return Err(SettingError::new("--context", reason));
        }
    }
    if let Some(component) = bind_component {
        if pairs.iter().any(|(key, _)| key == COMPONENT_KEY) {
            let reason = format!("--context {COMPONENT_KEY}=... gives the {COMPONENT_KEY} pair too: use one");
            return Err(SettingError::new("--bind-component", reason));
        }
        let digest = ComponentDigest::of_file(component).map_err(|e| match e {
            crate::LoadError::Io { .. } => SettingError::new("--bind-component", e.to_string()),
            e => SettingError::new("--bind-component", format!("{}: {e}", component.display())),
        })?;
        pairs.push((COMPONENT_KEY.into(), digest.to_string()));
    }
    EncryptionContext::from_pairs(pairs).map_err(|e| SettingError::new("--context", e.to_string()))
}

/// [`stamped_context`], for the context a host stamps (`keyward seal`'s, `keyward invoke`'s): KEYWARD_KMS_CONTEXT
/// splits its pairs at commas and reads `{...}` as a placeholder, so a pair with either could never be stamped on
/// Lambda, and a file sealed under it would open only locally.
///
/// # Errors
/// As [`stamped_context`]; then the first pair with a comma or a brace.
#[cfg(feature = "cli")]
pub fn stampable_context(pairs: Vec<Pair>, bind_component: Option<&Path>) -> Result<EncryptionContext, SettingError> {
    // Placeholders are named first (their message says what to write instead), then what no host can stamp.
    let context = stamped_context(pairs.clone(), bind_component)?;
    check_stampable(&pairs)?;
    Ok(context)
}

/// The first pair with a comma or a brace, refused.
#[cfg(feature = "cli")]
fn check_stampable(pairs: &[Pair]) -> Result<(), SettingError> {
    match pairs.iter().find(|Pair(key, value)| key.contains(['{', '}', ',']) || value.contains(['{', '}', ','])) {
        None => Ok(()),
        Some(Pair(key, _)) => Err(SettingError::new(
            "--context",
            format!(
                "{key}: a pair with a comma or a brace cannot be stamped on Lambda (the stamped context's variable is \
                 split at commas, and {{...}} in it is a placeholder): leave them out"
            ),
        )),
    }
}

/// `keyward invoke`'s flags for secrets.
#[cfg(feature = "cli")]
#[derive(Debug, clap::Args)]
pub struct SecretFlags {
    /// An encryption context pair stamped onto every decrypt the guest makes (repeatable).
    #[arg(long = "context", value_name = "K=V")]
    context: Vec<Pair>,
    /// Stamps this component's digest too (`component=sha256:<digest>`), as `component={component}` in
    /// KEYWARD_KMS_CONTEXT does on Lambda: only ciphertexts bound to this build decrypt.
    #[arg(long)]
    bind_component: bool,
    /// Most secrets the guest may ask for per invocation (kms.decrypt calls and key handles opened).
    #[arg(long, value_name = "N", default_value_t = SecretsSettings::default().max_decrypt_calls)]
    max_decrypt_calls: u32,
    /// Where the secret NAME lives, as KEYWARD_SOURCE_<NAME> says it (repeatable):
    /// `secretsmanager:<name or ARN>[#<json key>][@<stage or version id>]`, `ssm:<name>[:<version or label>]`, or
    /// `sealed:<file>` (a file made by `keyward seal --key`, opened with --key). Fetched with the AWS credentials
    /// and region of the environment (AWS_ENDPOINT_URL_SECRETS_MANAGER,
    /// AWS_ENDPOINT_URL_SSM and AWS_ENDPOINT_URL are followed).
    #[arg(long = "source", value_name = "NAME=SOURCE")]
    sources: Vec<Pair>,
}

#[cfg(feature = "cli")]
impl SecretFlags {
    /// The settings these flags give, for a guest `component`.
    ///
    /// # Errors
    /// As [`stamped_context`].
    pub fn settings(self, component: &Path) -> Result<SecretsSettings, SettingError> {
        let sources = self.sources.into_iter().map(|Pair(name, source)| {
            let source = source.parse().map_err(|e| SettingError::new(format!("--source {name}"), e))?;
            Ok((name, source))
        });
        Ok(SecretsSettings {
            stamped_context: stampable_context(self.context, self.bind_component.then_some(component))?,
            max_decrypt_calls: self.max_decrypt_calls,
            sources: sources.collect::<Result<_, SettingError>>()?,
            ..SecretsSettings::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> GuestEnv {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>().into()
    }

    #[test]
    fn each_mistake_is_named() {
        let guest = env(&[("P", "Y3Q="), ("NOT_B64", "%%"), ("P_AGAIN", "Y3Q=")]);
        let cached = CacheSettings { ttl: Duration::from_secs(60), ..CacheSettings::default() };
        let secret = |settings: SecretSettings| SecretsSettings {
            secrets: vec![("P".into(), settings)],
            ..SecretsSettings::default()
        };
        let cases = [
            (
                SecretsSettings { prefetch: vec!["P".into()], ..SecretsSettings::default() },
                "KEYWARD_PREFETCH: prefetching needs the cache, but KEYWARD_CACHE_TTL_SECS is 0",
            ),
            (
                SecretsSettings { prefetch: vec!["Q".into()], cache: cached, ..SecretsSettings::default() },
                "KEYWARD_PREFETCH: names Q, which is not in KEYWARD_GUEST_ENV",
            ),
            (
                SecretsSettings {
                    secrets: vec![("Q".into(), SecretSettings::default())],
                    ..SecretsSettings::default()
                },
                "KEYWARD_SECRET_CONTEXT_Q: Q has settings of its own, but is not in KEYWARD_GUEST_ENV",
            ),
            (
                secret(SecretSettings { algorithm: Some("RSA".into()), ..SecretSettings::default() }),
                "KEYWARD_SECRET_ALGORITHM_P: \"RSA\" is not an asymmetric KMS encryption algorithm (RSAES_OAEP_SHA_1, \
                 RSAES_OAEP_SHA_256, SM2PKE)",
            ),
            (
                secret(SecretSettings {
                    algorithm: Some("RSAES_OAEP_SHA_256".into()),
                    stamped_context: Some(EncryptionContext::from_pairs([("a", "b")]).unwrap()),
                    ..SecretSettings::default()
                }),
                "KEYWARD_SECRET_CONTEXT_P: an asymmetric KMS key takes no encryption context",
            ),
            (
                SecretsSettings {
                    secrets: vec![("NOT_B64".into(), SecretSettings::default())],
                    ..SecretsSettings::default()
                },
                "KEYWARD_SECRET_CONTEXT_NOT_B64: NOT_B64's value is not base64 (invalid character '%' at offset 0), \
                 so it cannot have settings of its own",
            ),
            (
                SecretsSettings {
                    secrets: vec![
                        ("P".into(), SecretSettings::default()),
                        (
                            "P_AGAIN".into(),
                            SecretSettings { key_ids: vec!["alias/other".into()], ..SecretSettings::default() },
                        ),
                    ],
                    ..SecretsSettings::default()
                },
                "KEYWARD_GUEST_ENV: secrets P and P_AGAIN hold the same ciphertext with different settings",
            ),
            (
                // P_AGAIN has no settings of its own: it would be decrypted with P's, not the defaults.
                secret(SecretSettings { key_ids: vec!["alias/other".into()], ..SecretSettings::default() }),
                "KEYWARD_GUEST_ENV: secrets P and P_AGAIN hold the same ciphertext with different settings",
            ),
            (
                SecretsSettings { prefetch: vec!["NOT_B64".into()], cache: cached, ..SecretsSettings::default() },
                "KEYWARD_PREFETCH: names NOT_B64, whose value is not base64: invalid character '%' at offset 0",
            ),
            (
                SecretsSettings { cache: CacheSettings { max_entries: 0, ..cached }, ..SecretsSettings::default() },
                "KEYWARD_CACHE_MAX_ENTRIES: the cache must hold at least one entry",
            ),
        ];
        for (settings, expected) in cases {
            let error = settings.check(&guest).unwrap_err().to_string();
            assert!(error.starts_with(expected), "expected {expected:?}, got {error:?}");
        }
        assert!(SecretsSettings::default().check(&guest).is_ok());
        let same = SecretsSettings {
            secrets: vec![("P".into(), SecretSettings::default()), ("P_AGAIN".into(), SecretSettings::default())],
            ..SecretsSettings::default()
        };
        assert!(same.check(&guest).is_ok(), "one ciphertext under two names with the same settings is fine");
        let keys = |keys: &[&str]| SecretSettings {
            key_ids: keys.iter().map(|k| k.to_string()).collect(),
            ..SecretSettings::default()
        };
        let same_keys = SecretsSettings {
            secrets: vec![("P".into(), keys(&["a", "b"])), ("P_AGAIN".into(), keys(&["b", "a", "b"]))],
            ..SecretsSettings::default()
        };
        assert!(same_keys.check(&guest).is_ok(), "the same keys in another order are the same settings");
    }
}
