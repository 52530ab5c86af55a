//! A host's settings: one struct per capability, each parsed beside its own definition (from the `KEYWARD_*`
//! variables in Lambda mode, from its flags on the command line), all checked once, when the host is built.
//!
//! A setting has one name, its variable (`KEYWARD_TIMEOUT_MS`); one the command line takes too has the flag of the
//! same name (`--timeout-ms`). Every error names the setting where it is found, in one shape: `SETTING: what is
//! wrong`. `docs/settings.md` lists every variable; a test holds it to what the parsers read.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::num::{IntErrorKind, ParseIntError};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use crate::capability::Capabilities;
use crate::capability::env::{self, GuestEnv};
use crate::capability::http::{Bound, CheckedHttp, HttpSettings};
use crate::capability::keys::KeysSettings;
use crate::capability::kms::{GuestPlaintext, KmsSettings};
use crate::sandbox::Limits;
use crate::secrets::{Backends, CheckedSecrets, SecretsSettings};

/// A setting that cannot work, naming it: `SETTING: what is wrong`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {reason}")]
pub struct SettingError {
    /// The setting: its variable (`KEYWARD_MEMORY_MB`), its flag for one only the command line has, or its field
    /// for one only the library has (`Limits::max_instances`).
    pub setting: String,
    /// What is wrong, and where there is one, the fix.
    pub reason: String,
}

impl SettingError {
    pub(crate) fn new(setting: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { setting: setting.into(), reason: reason.into() }
    }
}

/// Every setting of a host: its limits, the guest's environment, and each capability's own. `Default` is a
/// library host's (Lambda mode's differ only where docs/settings.md says).
#[derive(Debug, Clone, Default)]
pub struct HostSettings {
    /// Limits of every invocation.
    pub limits: Limits,
    /// The guest's whole environment: nothing else of the host's environment reaches it.
    pub guest_env: Vec<(String, String)>,
    /// Where secrets come from, and how they are fetched, cached and counted.
    pub secrets: SecretsSettings,
    /// The `kms` capability (plaintext handed to the guest).
    pub kms: KmsSettings,
    /// The `keys` capability (secrets used in the host, never handed over).
    pub keys: KeysSettings,
    /// Outgoing HTTP: the origins allowed (none by default), the secrets injected, the bounds.
    pub http: HttpSettings,
}

impl HostSettings {
    /// Every setting from `env`, each by its own parser: the Lambda mode of a function whose guest is `component`
    /// (for `{component}` in a context).
    ///
    /// # Errors
    /// The first [`SettingError`], naming its variable.
    pub(crate) fn from_env(env: &Env<'_>, component: &Path) -> Result<Self, SettingError> {
        let guest_env = env::from_env(env)?;
        let names = guest_env.iter().map(|(name, _)| name.as_str());
        let secrets = SecretsSettings::from_env(env, names, component)?;
        // A secret the host injects may live in a guest env var or elsewhere.
        let secret_names = guest_env.iter().map(|(name, _)| name).chain(secrets.sources.iter().map(|(name, _)| name));
        Ok(Self {
            limits: Limits::from_env(env)?,
            kms: KmsSettings::from_env(env)?,
            keys: KeysSettings::from_env(env)?,
            http: HttpSettings::from_env(env, secret_names.map(String::as_str))?,
            secrets,
            guest_env,
        })
    }

    /// Checks every setting, once: what a host is built from.
    ///
    /// # Errors
    /// The first [`SettingError`].
    pub(crate) fn checked(self) -> Result<Checked, SettingError> {
        self.limits.check()?;
        let env = env::check(self.guest_env)?;
        let mut secrets = self.secrets.check(&env)?;
        let http = check_http(self.http, &mut secrets)?;
        Ok(Checked { limits: self.limits, env, secrets, kms: self.kms, keys: self.keys, http })
    }

    /// Checks every setting, as building a host does, without building one.
    ///
    /// # Errors
    /// The first [`SettingError`].
    pub fn check(&self) -> Result<(), SettingError> {
        self.clone().checked().map(drop)
    }
}

/// Settings that passed [`HostSettings::check`]: each capability's shared state is built from its part.
#[derive(Debug)]
pub(crate) struct Checked {
    pub(crate) limits: Limits,
    pub(crate) env: GuestEnv,
    pub(crate) secrets: CheckedSecrets,
    pub(crate) kms: KmsSettings,
    pub(crate) keys: KeysSettings,
    pub(crate) http: CheckedHttp,
}

/// Checks outgoing HTTP's settings, binds each injected secret to its origin, and reads the extra roots.
fn check_http(settings: HttpSettings, secrets: &mut CheckedSecrets) -> Result<CheckedHttp, SettingError> {
    settings.check()?;
    let mut bound = Vec::new();
    for (name, injection) in &settings.inject {
        let source = secrets
            .inject(name, &injection.origin.to_string())
            .map_err(|why| SettingError::new(format!("{}{name}", crate::capability::http::INJECT), why))?;
        bound.push(Bound { name: name.clone(), injection: injection.clone(), source });
    }
    let extra_roots = match &settings.ca_bundle {
        None => Vec::new(),
        Some(path) => {
            crate::tls::read_ca_bundle(path)
                .map_err(|why| SettingError::new("KEYWARD_OUTBOUND_CA_BUNDLE", format!("{}: {why}", path.display())))?
                .1
        }
    };
    Ok(CheckedHttp { settings, bound, extra_roots, router: None })
}

impl Checked {
    /// What the sandbox is built with: the limits, and whether guests may import the plaintext capability.
    pub(crate) fn sandbox(&self) -> (Limits, GuestPlaintext) {
        (self.limits.clone(), self.kms.guest_plaintext)
    }

    /// Each capability's shared state, fetching secrets from `backends`.
    pub(crate) fn capabilities(self, backends: Backends) -> Capabilities {
        Capabilities::new(self.env, self.secrets, self.keys, self.http, backends)
    }
}

/// The variables of an environment, read one setting at a time. It remembers which were read, so that a
/// `KEYWARD_*` variable nobody reads (a typo) can be named.
#[derive(Debug)]
pub(crate) struct Env<'a> {
    all: &'a HashMap<String, String>,
    read: RefCell<BTreeSet<String>>,
}

impl<'a> Env<'a> {
    pub(crate) fn new(all: &'a HashMap<String, String>) -> Self {
        Self { all, read: RefCell::default() }
    }

    /// The variable's value, if set.
    pub(crate) fn get(&self, name: &str) -> Option<String> {
        self.read.borrow_mut().insert(name.to_string());
        self.all.get(name).cloned()
    }

    /// A comma-separated list, items trimmed, empty ones dropped; empty if unset.
    pub(crate) fn list(&self, name: &str) -> Vec<String> {
        self.get(name)
            .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect())
            .unwrap_or_default()
    }

    /// A whole number of the type's range, or `default` if unset.
    pub(crate) fn number<T: FromStr<Err = ParseIntError>>(&self, name: &str, default: T) -> Result<T, SettingError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.trim().parse().map_err(|e: ParseIntError| match e.kind() {
                IntErrorKind::PosOverflow => SettingError::new(name, format!("{v:?} is too large")),
                _ => SettingError::new(name, format!("{v:?} is not a non-negative whole number")),
            }),
        }
    }

    /// A number of seconds.
    pub(crate) fn seconds(&self, name: &str, default: Duration) -> Result<Duration, SettingError> {
        self.number(name, default.as_secs()).map(Duration::from_secs)
    }

    /// A value of a type that parses itself (trimmed), or `default` if unset.
    pub(crate) fn parsed<T: FromStr<Err = String>>(&self, name: &str, default: T) -> Result<T, SettingError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.trim().parse().map_err(|e| SettingError::new(name, e)),
        }
    }

    /// Every variable whose name is `prefix` and more, as (the rest of the name, the value), in order of name;
    /// each counts as read.
    pub(crate) fn prefixed(&self, prefix: &str) -> Vec<(String, String)> {
        let mut found: Vec<(String, String)> = self
            .all
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.to_string(), v.clone())))
            .filter(|(rest, _)| !rest.is_empty())
            .collect();
        found.sort();
        let mut read = self.read.borrow_mut();
        read.extend(found.iter().map(|(rest, _)| format!("{prefix}{rest}")));
        found
    }

    /// Every variable asked for so far, set or not.
    #[cfg(test)]
    pub(crate) fn read(&self) -> BTreeSet<String> {
        self.read.borrow().clone()
    }

    /// The variables whose names begin with `prefix` that nobody asked for, in order.
    pub(crate) fn unread(&self, prefix: &str) -> Vec<&'a str> {
        let read = self.read.borrow();
        let mut unread: Vec<&str> =
            self.all.keys().filter(|k| k.starts_with(prefix) && !read.contains(*k)).map(String::as_str).collect();
        unread.sort_unstable();
        unread
    }
}
