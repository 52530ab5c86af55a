//! Where secrets live, and which settings each one is fetched with.
//!
//! A guest names a secret (`PASSWORD`), or hands over a ciphertext. A name's [`SecretSource`] is a value, made
//! once when the settings are checked: today an env var's KMS ciphertext, and each new place a secret can live is
//! one more variant, fetched in one place ([`SecretGate::fetch`](super::SecretGate::fetch)).
//!
//! Per-secret settings (which keys may open it, which encryption context it carries) let ciphertexts made in
//! different ways live side by side in one function: the Lambda console's helpers stamp
//! `LambdaFunctionName=<function>`, the CLI stamps nothing. A setting is bound to the ciphertext itself (its
//! bytes), not to the name the guest uses: whatever way a guest hands the host that ciphertext, it gets that
//! ciphertext's settings, and no other ciphertext gets them. A guest therefore cannot apply one secret's context to
//! another.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::settings::{SOURCE, SecretSettings};
use crate::settings::SettingError;

/// Where a named secret's value comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A KMS ciphertext blob: the base64 value of the guest env var that names the secret (the default).
    EnvCiphertext(Vec<u8>),
    /// A secret in AWS Secrets Manager (`KEYWARD_SOURCE_<NAME>=secretsmanager:...`).
    SecretsManager(SecretId),
    /// A parameter in AWS Systems Manager Parameter Store (`KEYWARD_SOURCE_<NAME>=ssm:...`).
    Parameter(ParameterId),
    /// A sealed file ([`super::sealed`]) at this path (`KEYWARD_SOURCE_<NAME>=sealed:...`): in Lambda mode,
    /// relative to the package (`LAMBDA_TASK_ROOT`); on the command line, to the working directory.
    Sealed(PathBuf),
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::EnvCiphertext(blob) => write!(f, "EnvCiphertext({} bytes)", blob.len()),
            Self::SecretsManager(_) | Self::Parameter(_) | Self::Sealed(_) => write!(f, "{self}"),
        }
    }
}

/// The source as `KEYWARD_SOURCE_<NAME>` gives it (`env` for an env ciphertext): what the audit line shows. It
/// names where a secret lives, never its value.
impl std::fmt::Display for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::EnvCiphertext(_) => f.write_str("env"),
            Self::SecretsManager(SecretId { id, json_key, version }) => {
                write!(f, "{SECRETS_MANAGER}{id}")?;
                if let Some(key) = json_key {
                    write!(f, "#{key}")?;
                }
                match version {
                    None => Ok(()),
                    Some(SecretVersion::Stage(stage)) => write!(f, "@{stage}"),
                    Some(SecretVersion::Id(id)) => write!(f, "@{id}"),
                }
            }
            Self::Parameter(ParameterId { name, selector }) => {
                write!(f, "{PARAMETER}{name}")?;
                selector.as_ref().map_or(Ok(()), |selector| write!(f, ":{selector}"))
            }
            Self::Sealed(path) => write!(f, "{SEALED}{}", path.display()),
        }
    }
}

impl SecretSource {
    /// Whether fetching it needs a [`SecretStore`](super::SecretStore): Secrets Manager's and SSM's do; an env
    /// ciphertext and a sealed file need only the key service.
    pub fn needs_store(&self) -> bool {
        matches!(self, Self::SecretsManager(_) | Self::Parameter(_))
    }

    /// The secret a stored source names, however it is spelled: `secretsmanager:<name>` for a Secrets Manager
    /// secret (by name or ARN, the ARN's random suffix dropped; any JSON key or version), `ssm:<name>` for a
    /// parameter (by name or ARN; any version or label), and SSM's references to Secrets Manager
    /// (`/aws/reference/secretsmanager/<name>`) as the secret they name, `sealed:<path>` for a sealed file. `None`
    /// for an env ciphertext.
    ///
    /// Two sources of one identity hold the same secret, or versions of it: what is true of one (the host injects
    /// it) is true of both. A name that merely ends like a suffix (`db-abcdef`) is taken for the same secret as
    /// `db`: a refusal too many, never one too few.
    pub(crate) fn identity(&self) -> Option<String> {
        let secret = |id: &str| {
            let name = id.split_once(":secret:").map_or(id, |(_, name)| name);
            let unsuffixed = name
                .rsplit_once('-')
                .filter(|(_, suffix)| suffix.len() == 6 && suffix.chars().all(|c| c.is_ascii_alphanumeric()));
            format!("{SECRETS_MANAGER}{}", unsuffixed.map_or(name, |(name, _)| name))
        };
        match self {
            Self::EnvCiphertext(_) => None,
            Self::SecretsManager(id) => Some(secret(&id.id)),
            Self::Parameter(ParameterId { name, .. }) => {
                let name = name.split_once(":parameter").map_or(name.as_str(), |(_, name)| name);
                match name.strip_prefix("/aws/reference/secretsmanager/") {
                    Some(id) => Some(secret(id)),
                    None => Some(format!("{PARAMETER}{name}")),
                }
            }
            Self::Sealed(path) => Some(format!("{SEALED}{}", path.display())),
        }
    }
}

const SECRETS_MANAGER: &str = "secretsmanager:";
const PARAMETER: &str = "ssm:";
const SEALED: &str = "sealed:";

/// A Secrets Manager secret, as GetSecretValue asks for it, and the key of its JSON value to take, if one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretId {
    /// The secret's name or ARN (`SecretId`).
    pub id: String,
    /// The key whose value is the secret, when the secret's value is a JSON object (`password` of
    /// `{"username":..,"password":..}`); `None`: the whole value.
    pub json_key: Option<String>,
    /// The version; `None`: the one labelled `AWSCURRENT`.
    pub version: Option<SecretVersion>,
}

/// Which version of a Secrets Manager secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SecretVersion {
    /// A staging label (`AWSCURRENT`, `AWSPREVIOUS`, `AWSPENDING` or one of the team's): `VersionStage`.
    Stage(String),
    /// A version id (a UUID): `VersionId`.
    Id(String),
}

/// An SSM parameter, as GetParameters asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ParameterId {
    /// The parameter's name (`/prod/db/password`) or ARN.
    pub name: String,
    /// A version number or a label (`3`, `prod`); `None`: the latest version.
    pub selector: Option<String>,
}

impl ParameterId {
    /// The name as GetParameters takes it: `name`, `name:version` or `name:label`.
    pub fn request_name(&self) -> String {
        match &self.selector {
            None => self.name.clone(),
            Some(selector) => format!("{}:{selector}", self.name),
        }
    }
}

impl std::str::FromStr for SecretSource {
    type Err = String;

    /// Parses `secretsmanager:<name or ARN>[#<json key>][@<stage or version id>]`,
    /// `ssm:<name or ARN>[:<version or label>]` or `sealed:<path>`. A Secrets Manager name may hold `@`: the text
    /// after the last `@` (unless a `#` follows it) is the version, so such a name is given with one
    /// (`secretsmanager:me@example.com@AWSCURRENT`, `secretsmanager:me@example.com#password`).
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        // Quoted back in errors only in part: a value may be long.
        let shown = crate::error::bounded(text, 160);
        if let Some(spec) = text.strip_prefix(SECRETS_MANAGER) {
            // A version comes last: an `@` before a `#` is the name's.
            let (rest, version) = match spec.rsplit_once('@') {
                Some((rest, version)) if !version.contains('#') => (rest, Some(version)),
                _ => (spec, None),
            };
            let (id, json_key) = match rest.split_once('#') {
                Some((id, key)) => (id, Some(key)),
                None => (rest, None),
            };
            if id.is_empty() {
                return Err(format!("{shown:?} names no secret: give secretsmanager:<name or ARN>"));
            }
            if id.starts_with("arn:") && !is_arn(id, "secretsmanager", ":secret:") {
                return Err(format!(
                    "{shown:?} is not a Secrets Manager secret ARN: one reads \
                     arn:<partition>:secretsmanager:<region>:<account>:secret:<name>"
                ));
            }
            // `name@AWSPREVIOUS#key` reads as the secret `name@AWSPREVIOUS`: the key comes first.
            if json_key.is_some() && ["@AWSCURRENT", "@AWSPREVIOUS", "@AWSPENDING"].iter().any(|s| id.ends_with(s)) {
                return Err(format!(
                    "{shown:?}: write the JSON key before the stage (secretsmanager:<name>#<key>@<stage>)"
                ));
            }
            // Secrets Manager's own limits: a name or ARN of at most 2048 characters, these characters only.
            if id.len() > 2048 || !id.chars().all(|c| c.is_ascii_alphanumeric() || "/_+=.@-:".contains(c)) {
                return Err(format!(
                    "{:?} is not a Secrets Manager secret name or ARN (letters, digits and /_+=.@-, at most 2048)",
                    crate::error::bounded(id, 160)
                ));
            }
            if json_key.is_some_and(str::is_empty) {
                return Err(format!("{shown:?} has an empty JSON key after #: name the key, or drop the #"));
            }
            let version = match version {
                None => None,
                Some("") => return Err(format!("{shown:?} has nothing after @: name a staging label or version id")),
                Some(v) if is_uuid(v) => Some(SecretVersion::Id(v.to_string())),
                // `me@example.com` would be secret `me` at stage `example.com`: a name holding `@` is the likelier.
                Some(v) if v.contains('.') => {
                    return Err(format!(
                        "{shown:?} would read as staging label {:?}, and keyward reads no `.` in a label, so that a \
                         name holding `@` is not misread: end such a name with its version \
                         (secretsmanager:{}@AWSCURRENT)",
                        crate::error::bounded(v, 160),
                        crate::error::bounded(spec, 160),
                    ));
                }
                Some(v) if v.len() <= 256 && v.chars().all(|c| c.is_ascii_graphic()) => {
                    Some(SecretVersion::Stage(v.to_string()))
                }
                Some(v) => {
                    return Err(format!("{:?} is not a staging label or version id", crate::error::bounded(v, 160)));
                }
            };
            let json_key = json_key.map(String::from);
            return Ok(Self::SecretsManager(SecretId { id: id.to_string(), json_key, version }));
        }
        if let Some(rest) = text.strip_prefix(PARAMETER) {
            // An ARN's own colons come before `parameter/`; a selector's after it.
            let (head, tail) = match rest.find(":parameter/") {
                Some(at)
                    if rest.starts_with("arn:") && is_arn(&rest[..at + ":parameter/".len()], "ssm", ":parameter/") =>
                {
                    rest.split_at(at + ":parameter/".len())
                }
                _ if rest.starts_with("arn:") => {
                    return Err(format!(
                        "{shown:?} is not an SSM parameter ARN: one reads \
                         arn:<partition>:ssm:<region>:<account>:parameter/<name>"
                    ));
                }
                _ => ("", rest),
            };
            let (name, selector) = match tail.split_once(':') {
                Some((name, selector)) => (format!("{head}{name}"), Some(selector.to_string())),
                None => (format!("{head}{tail}"), None),
            };
            if tail.split(':').next().is_none_or(str::is_empty) {
                return Err(format!("{shown:?} names no parameter: give ssm:<name or ARN>"));
            }
            // Parameter Store's own limits: a name of at most 2048 characters, these characters only.
            if name.len() > 2048 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "/_.-:".contains(c)) {
                return Err(format!(
                    "{:?} is not an SSM parameter name (letters, digits and /_.-, at most 2048)",
                    crate::error::bounded(&name, 160)
                ));
            }
            if name.contains("//") {
                return Err(format!("{shown:?}: a parameter name has no empty level (`//`)"));
            }
            if let Some(selector) = &selector {
                check_parameter_selector(selector).map_err(|why| format!("{shown:?}: {why}"))?;
            }
            return Ok(Self::Parameter(ParameterId { name, selector }));
        }
        if let Some(path) = text.strip_prefix(SEALED) {
            if path.is_empty() {
                return Err(format!("{shown:?} names no file: give sealed:<path of a file keyward seal made>"));
            }
            return Ok(Self::Sealed(PathBuf::from(path)));
        }
        // Not quoted back: with none of the prefixes, it may be a secret pasted instead of where it lives.
        Err("it is not a secret source (not shown, in case it is a secret): give secretsmanager:<name or ARN>\
             [#<json key>][@<stage or version id>], ssm:<parameter name>[:<version or label>] or sealed:<path>"
            .into())
    }
}

/// Checks what follows a parameter's name, as Parameter Store has it: a version (a number from 1) or a label (at
/// most 100 letters, digits, `.`, `-` and `_`, not starting with a digit, `aws` or `ssm`).
fn check_parameter_selector(selector: &str) -> Result<(), String> {
    const ONE: &str = "after the name's `:` comes one version number (from 1) or label";
    if selector.is_empty() || selector.contains(':') {
        return Err(ONE.into());
    }
    let digits = selector.strip_prefix('-').unwrap_or(selector);
    if digits.chars().all(|c| c.is_ascii_digit()) {
        // Parameter Store keeps at most 100 versions of a parameter; a u64 holds any it numbers them by.
        let first =
            selector.strip_prefix('-').is_none() && !selector.starts_with('0') && selector.parse::<u64>().is_ok();
        return if first { Ok(()) } else { Err(format!("{ONE}; versions count from 1, and {selector} is none")) };
    }
    let reserved = ["aws", "ssm"].iter().any(|p| selector.get(..3).is_some_and(|head| head.eq_ignore_ascii_case(p)));
    if selector.len() > 100
        || selector.starts_with(|c: char| c.is_ascii_digit())
        || reserved
        || !selector.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(format!(
            "{ONE}; a label is at most 100 letters, digits, `.`, `-` and `_`, not starting with a digit, aws or ssm"
        ));
    }
    Ok(())
}

/// Whether `arn` begins as an ARN of `service` whose resource part starts with `resource` does:
/// `arn:<partition>:<service>:<region>:<account><resource>`, region and account not empty.
fn is_arn(arn: &str, service: &str, resource: &str) -> bool {
    let Some(at) = arn.find(resource) else { return false };
    let parts: Vec<&str> = arn[..at].split(':').collect();
    matches!(parts.as_slice(), ["arn", partition, s, region, account]
        if !partition.is_empty() && *s == service && !region.is_empty() && !account.is_empty())
}

/// Whether `text` is a UUID (8-4-4-4-12 hex digits), the shape of a Secrets Manager version id.
fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The settings of one ciphertext, found by its bytes.
#[derive(Debug, Clone)]
pub(crate) struct Configured {
    /// The guest env var it came from, for the audit line.
    pub(crate) name: String,
    pub(crate) settings: SecretSettings,
    /// Where the host injects it into requests, if it does: such a secret is the host's alone, never handed to
    /// the guest.
    pub(crate) injected_into: Option<InjectedInto>,
}

/// A secret the host injects into requests: the name its injection gives it (another name may hold the same
/// secret) and the origin it goes to (`https://api.example.com`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InjectedInto {
    pub(crate) name: String,
    pub(crate) origin: String,
}

/// Who a secret is fetched for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum User {
    /// The guest: `kms.decrypt`, `keys.open`, and the fetches by name behind them.
    Guest,
    /// The host itself: prefetching, and injecting a secret into outgoing requests.
    Host,
}

/// Why a name is not a secret the host can fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unnamed {
    /// No guest env var has that name.
    NotAVariable,
    /// The variable holds no secret: its value is not base64 (the decoder's reason, which gives a position).
    NotASecret(String),
}

impl Unnamed {
    /// Why the guest's `name` is no secret, in words for the guest's error (its name quoted only in part: it may
    /// be of any length).
    pub(crate) fn message(&self, name: &str) -> String {
        let name = crate::error::bounded(name, 64);
        match self {
            Self::NotAVariable => format!(
                "{name:?} is not one of the guest's secrets: not a guest env var (KEYWARD_GUEST_ENV; keyward invoke \
                 --env), and no source names it (KEYWARD_SOURCE_<NAME>; --source)"
            ),
            Self::NotASecret(why) => format!("env var {name} is not base64: {why}"),
        }
    }
}

/// Every secret of a host: the source of each name, and the settings of each ciphertext by the SHA-256 of its
/// bytes.
#[derive(Debug, Clone, Default)]
pub(crate) struct SecretTable {
    sources: HashMap<String, Result<SecretSource, String>>,
    settings: HashMap<[u8; 32], Configured>,
    /// The stored secrets (Secrets Manager's, SSM's) the host injects into requests, by the secret itself
    /// ([`SecretSource::identity`]), each with its origin: the same secret under another name, spelled another way
    /// (an ARN, a version, a label, another JSON key), is the host's alone too.
    injected: HashMap<String, InjectedInto>,
    /// The SHA-256 of each sealed file's encrypted data key, by the file's path, as read when the table was made:
    /// the data key is a ciphertext with settings of its own (its name's), found by these bytes.
    sealed: HashMap<PathBuf, [u8; 32]>,
    /// Each sealed source's name, and whether its data key is a local key's ciphertext (else KMS's).
    sealed_with: Vec<(String, bool)>,
}

impl SecretTable {
    /// The table of a guest env `guest_env` (a variable holding base64 is a KMS ciphertext; any other is plain
    /// configuration) with `secrets`' settings, and of the secrets stored elsewhere, `stored`.
    ///
    /// # Errors
    /// A secret with settings whose value is not base64, or one ciphertext under two names with different settings:
    /// the ciphertext cannot follow both, and picking one would silently drop the other's stamp or keys. A stored
    /// secret's name that is a guest env var too: the guest would read one and the host fetch the other. A sealed
    /// file that cannot be read, or is not one.
    pub(crate) fn new(
        guest_env: &[(String, String)],
        secrets: &[(String, SecretSettings)],
        stored: &[(String, SecretSource)],
    ) -> Result<Self, SettingError> {
        let mut table = Self::default();
        let mut encrypted_data_keys = Vec::new();
        for (name, value) in guest_env {
            let source = keyward_base64::decode(value).map(SecretSource::EnvCiphertext).map_err(|e| e.to_string());
            table.sources.insert(name.clone(), source);
        }
        for (i, (name, source)) in stored.iter().enumerate() {
            if stored[..i].iter().any(|(other, _)| other == name) {
                let reason = format!("{name} is given a source twice: give it one");
                return Err(SettingError::new(format!("{SOURCE}{name}"), reason));
            }
            if table.sources.insert(name.clone(), Ok(source.clone())).is_some() {
                let reason = format!(
                    "{name} is a guest env var (KEYWARD_GUEST_ENV) too: a secret lives in one place; drop one of them"
                );
                return Err(SettingError::new(format!("{SOURCE}{name}"), reason));
            }
            if let SecretSource::Sealed(path) = source {
                // Read now, so that a file missing from the package, or not sealed, fails init rather than the
                // first invocation.
                let key = super::sealed::read_file(path)
                    .and_then(|bytes| Ok(super::sealed::Sealed::parse(&bytes)?.encrypted_data_key().to_vec()))
                    .map_err(|e| match e {
                        // A read error names the file already.
                        super::sealed::SealedError::Io(_) => {
                            SettingError::new(format!("{SOURCE}{name}"), e.to_string())
                        }
                        e => SettingError::new(format!("{SOURCE}{name}"), format!("{}: {e}", path.display())),
                    })?;
                table.sealed.insert(path.clone(), Sha256::digest(&key).into());
                table.sealed_with.push((name.clone(), super::LocalKey::is_ciphertext(&key)));
                encrypted_data_keys.push((name, key));
            }
        }
        let configured = secrets.iter().map(|(name, settings)| (name, settings.clone(), true));
        // A variable without settings of its own that holds a configured ciphertext would be decrypted with that
        // ciphertext's settings, not the defaults it was given.
        let unconfigured = guest_env
            .iter()
            .map(|(name, _)| name)
            .chain(encrypted_data_keys.iter().map(|(name, _)| *name))
            .filter(|name| !secrets.iter().any(|(n, _)| n == *name))
            .map(|name| (name, SecretSettings::default(), false));
        for (name, settings, explicit) in configured.chain(unconfigured) {
            let blob = match table.sources.get(name) {
                Some(Ok(SecretSource::EnvCiphertext(blob))) => blob.clone(),
                // Every sealed source's data key was read above.
                Some(Ok(SecretSource::Sealed(_))) => match encrypted_data_keys.iter().find(|(n, _)| *n == name) {
                    Some((_, key)) => key.clone(),
                    None => continue,
                },
                Some(Err(reason)) if explicit => {
                    let reason =
                        format!("{name}'s value is not base64 ({reason}), so it cannot have settings of its own");
                    return Err(SettingError::new(settings.variable(name), reason));
                }
                // Plain configuration (or, checked before, a name that is no guest variable).
                _ => continue,
            };
            table.insert(&blob, name, settings).map_err(|other| {
                let reason = format!(
                    "secrets {other} and {name} hold the same ciphertext with different settings: give them the same \
                     settings, or keep one"
                );
                SettingError::new("KEYWARD_GUEST_ENV", reason)
            })?;
        }
        Ok(table)
    }

    /// Adds a ciphertext's settings; an error names the other secret holding it with other settings.
    fn insert(&mut self, ciphertext: &[u8], name: &str, mut settings: SecretSettings) -> Result<(), String> {
        // Keys are a set: the same keys listed in another order, or twice, are the same settings.
        settings.key_ids.sort();
        settings.key_ids.dedup();
        match self.settings.entry(Sha256::digest(ciphertext).into()) {
            Entry::Occupied(held) if held.get().settings != settings => Err(held.get().name.clone()),
            Entry::Occupied(_) => Ok(()),
            Entry::Vacant(slot) => {
                slot.insert(Configured { name: name.to_string(), settings, injected_into: None });
                Ok(())
            }
        }
    }

    /// Binds the secret `name` to injection into requests to `origin`: from now on its ciphertext is the host's
    /// alone. Returns where it lives.
    ///
    /// # Errors
    /// Why `name` is no secret ([`Unnamed`]), in words.
    pub(crate) fn inject(&mut self, name: &str, origin: &str) -> Result<SecretSource, String> {
        let source = match self.source(name) {
            Ok(source) => source.clone(),
            Err(Unnamed::NotAVariable) => {
                return Err(format!("{name} is not in KEYWARD_GUEST_ENV, and has no {SOURCE}{name}"));
            }
            Err(Unnamed::NotASecret(why)) => return Err(format!("{name}'s value is not base64 ({why})")),
        };
        let injected = InjectedInto { name: name.to_string(), origin: origin.to_string() };
        match &source {
            SecretSource::EnvCiphertext(blob) => {
                let digest: [u8; 32] = Sha256::digest(blob).into();
                // Every base64 guest variable has settings (its own, or the defaults) once the table is built.
                if let Some(configured) = self.settings.get_mut(&digest) {
                    configured.injected_into = Some(injected.clone());
                }
            }
            stored => {
                if let Some(identity) = stored.identity() {
                    self.injected.insert(identity, injected.clone());
                }
                // A sealed file's data key is a ciphertext the guest could hand to `kms.decrypt` (it may carry a
                // copy of the file): that ciphertext is the host's alone too.
                if let SecretSource::Sealed(path) = stored
                    && let Some(configured) = self.sealed.get(path).and_then(|digest| self.settings.get_mut(digest))
                {
                    configured.injected_into = Some(injected.clone());
                }
            }
        }
        Ok(source)
    }

    /// Where the stored secret `source` is injected, if the host injects it.
    pub(crate) fn injected_into(&self, source: &SecretSource) -> Option<&InjectedInto> {
        self.injected.get(&source.identity()?)
    }

    /// Each sealed source's name, and whether it was sealed with a local key (else with KMS).
    pub(crate) fn sealed_with(&self) -> impl Iterator<Item = (&str, bool)> {
        self.sealed_with.iter().map(|(name, local)| (name.as_str(), *local))
    }

    /// The SHA-256 of the encrypted data key the sealed file at `path` held when the table was made.
    pub(crate) fn sealed_key(&self, path: &std::path::Path) -> Option<&[u8; 32]> {
        self.sealed.get(path)
    }

    /// The settings of the ciphertext whose SHA-256 is `digest`, if it has any.
    pub(crate) fn settings(&self, digest: &[u8; 32]) -> Option<&Configured> {
        self.settings.get(digest)
    }

    /// Where the secret `name` lives.
    pub(crate) fn source(&self, name: &str) -> Result<&SecretSource, Unnamed> {
        match self.sources.get(name) {
            None => Err(Unnamed::NotAVariable),
            Some(Err(reason)) => Err(Unnamed::NotASecret(reason.clone())),
            Some(Ok(source)) => Ok(source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_a_ciphertext_plain_configuration_or_nothing() {
        let env = [("SECRET".to_string(), "Y3Q=".to_string()), ("PLAIN".to_string(), "not base64!".to_string())];
        let table = SecretTable::new(&env, &[], &[]).unwrap();
        assert_eq!(table.source("SECRET"), Ok(&SecretSource::EnvCiphertext(b"ct".to_vec())));
        assert!(matches!(table.source("PLAIN"), Err(Unnamed::NotASecret(why)) if why.contains("invalid character")));
        assert_eq!(table.source("MISSING"), Err(Unnamed::NotAVariable));
        let digest: [u8; 32] = Sha256::digest(b"ct").into();
        assert_eq!(table.settings(&digest).map(|c| c.name.as_str()), Some("SECRET"));
        assert_eq!(format!("{:?}", table.source("SECRET").unwrap()), "EnvCiphertext(2 bytes)");
    }

    #[test]
    fn every_source_form_parses_and_shows_as_written() {
        let id = "0123abcd-0123-4567-89ab-0123456789ab";
        let arn = format!("secretsmanager:arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf@{id}");
        let cases: Vec<(&str, SecretSource)> = vec![
            (
                "secretsmanager:prod/db",
                SecretSource::SecretsManager(SecretId { id: "prod/db".into(), json_key: None, version: None }),
            ),
            (
                "secretsmanager:prod/db#password@AWSPREVIOUS",
                SecretSource::SecretsManager(SecretId {
                    id: "prod/db".into(),
                    json_key: Some("password".into()),
                    version: Some(SecretVersion::Stage("AWSPREVIOUS".into())),
                }),
            ),
            (
                &arn,
                SecretSource::SecretsManager(SecretId {
                    id: "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf".into(),
                    json_key: None,
                    version: Some(SecretVersion::Id(id.into())),
                }),
            ),
            (
                "secretsmanager:me@example.com#password",
                SecretSource::SecretsManager(SecretId {
                    id: "me@example.com".into(),
                    json_key: Some("password".into()),
                    version: None,
                }),
            ),
            (
                "secretsmanager:me@example.com@AWSCURRENT",
                SecretSource::SecretsManager(SecretId {
                    id: "me@example.com".into(),
                    json_key: None,
                    version: Some(SecretVersion::Stage("AWSCURRENT".into())),
                }),
            ),
            ("ssm:/prod/db", SecretSource::Parameter(ParameterId { name: "/prod/db".into(), selector: None })),
            (
                "ssm:/prod/db:3",
                SecretSource::Parameter(ParameterId { name: "/prod/db".into(), selector: Some("3".into()) }),
            ),
            (
                "ssm:arn:aws:ssm:eu-west-1:123456789012:parameter/prod/db:live",
                SecretSource::Parameter(ParameterId {
                    name: "arn:aws:ssm:eu-west-1:123456789012:parameter/prod/db".into(),
                    selector: Some("live".into()),
                }),
            ),
            ("sealed:sealed/chain.pem.sealed", SecretSource::Sealed("sealed/chain.pem.sealed".into())),
            ("sealed:/opt/tls/key.sealed", SecretSource::Sealed("/opt/tls/key.sealed".into())),
        ];
        for (text, source) in cases {
            assert_eq!(text.parse::<SecretSource>().as_ref(), Ok(&source), "{text}");
            assert_eq!(source.to_string(), text);
        }
        assert_eq!(SecretSource::EnvCiphertext(vec![1]).to_string(), "env");
    }

    #[test]
    fn a_malformed_source_is_refused_saying_what_a_source_is() {
        for (text, says) in [
            ("vault:db", "it is not a secret source (not shown, in case it is a secret): give secretsmanager:"),
            ("secretsmanager:", "names no secret"),
            ("secretsmanager:#key", "names no secret"),
            ("secretsmanager:db#", "empty JSON key"),
            ("secretsmanager:db@", "nothing after @"),
            ("secretsmanager:db name", "is not a Secrets Manager secret name or ARN"),
            ("ssm:", "names no parameter"),
            ("ssm:/a:", "one version number (from 1) or label"),
            ("ssm:/a:1:2", "one version number (from 1) or label"),
            ("ssm:/a b", "is not an SSM parameter name"),
            ("ssm:/a:0", "versions count from 1, and 0 is none"),
            ("ssm:/a:-1", "versions count from 1, and -1 is none"),
            ("ssm:/a:1x", "a label is at most 100 letters"),
            ("ssm:/a:AWSlive", "not starting with a digit, aws or ssm"),
            ("ssm:/a//b", "no empty level"),
            ("ssm:/a:99999999999999999999", "versions count from 1"),
            ("ssm:arn:aws:kms:us-east-1:123456789012:parameter/x", "is not an SSM parameter ARN"),
            ("ssm:arn:aws:ssm:::parameter/x", "is not an SSM parameter ARN"),
            ("secretsmanager:arn:", "is not a Secrets Manager secret ARN"),
            (
                "secretsmanager:arn:aws:secretsmanager:us-east-1:123456789012:prod/db",
                "is not a Secrets Manager secret ARN",
            ),
            ("secretsmanager:prod/db@AWSPREVIOUS#password", "write the JSON key before the stage"),
            (
                "ssm:arn:aws:ssm:eu-west-1:123456789012:db",
                "one reads arn:<partition>:ssm:<region>:<account>:parameter/",
            ),
            (
                "secretsmanager:me@example.com",
                "end such a name with its version (secretsmanager:me@example.com@AWSCURRENT)",
            ),
            ("sealed:", "names no file: give sealed:<path"),
        ] {
            let error = text.parse::<SecretSource>().unwrap_err();
            assert!(error.contains(says), "{text}: {error}");
        }
    }

    #[test]
    fn a_stored_secret_may_not_share_its_name_with_a_guest_variable() {
        let env = [("DB".to_string(), "Y3Q=".to_string())];
        let stored = [("DB".to_string(), "ssm:/db".parse().unwrap())];
        let error = SecretTable::new(&env, &[], &stored).unwrap_err().to_string();
        assert!(error.starts_with("KEYWARD_SOURCE_DB: DB is a guest env var (KEYWARD_GUEST_ENV) too"), "{error}");
        let twice = [stored[0].clone(), stored[0].clone()];
        let error = SecretTable::new(&[], &[], &twice).unwrap_err().to_string();
        assert_eq!(error, "KEYWARD_SOURCE_DB: DB is given a source twice: give it one");
        let mut table = SecretTable::new(&[], &[], &stored).unwrap();
        let source = table.inject("DB", "https://api.example.com").unwrap();
        assert_eq!(table.injected_into(&source).map(|i| i.origin.as_str()), Some("https://api.example.com"));
        // The same parameter spelled another way is injected too.
        for other in ["ssm:/db:3", "ssm:/db:live", "ssm:arn:aws:ssm:eu-west-1:123456789012:parameter/db"] {
            let other: SecretSource = other.parse().unwrap();
            assert!(table.injected_into(&other).is_some(), "{other}");
        }
        assert!(table.injected_into(&"ssm:/db2".parse().unwrap()).is_none());
    }

    #[test]
    fn a_secret_has_one_identity_however_it_is_spelled() {
        let identity = |text: &str| text.parse::<SecretSource>().unwrap().identity().unwrap();
        let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db-AbCdEf";
        for same in [
            "secretsmanager:prod/db".to_string(),
            "secretsmanager:prod/db#password@AWSPREVIOUS".to_string(),
            format!("secretsmanager:{arn}"),
            format!("secretsmanager:{arn}#user"),
            "ssm:/aws/reference/secretsmanager/prod/db".to_string(),
        ] {
            assert_eq!(identity(&same), "secretsmanager:prod/db", "{same}");
        }
        assert_eq!(identity("ssm:arn:aws:ssm:eu-west-1:123456789012:parameter/app/key:2"), "ssm:/app/key");
        assert_ne!(identity("secretsmanager:prod/db2"), identity("secretsmanager:prod/db"));
    }
}
