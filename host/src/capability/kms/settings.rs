//! The `kms` capability's settings: whether a guest may be handed plaintext at all.

use crate::settings::{Env, SettingError};

/// Every setting of the `kms` capability. How many secrets a guest may ask for is the secrets' own
/// ([`SecretsSettings::max_decrypt_calls`](crate::secrets::SecretsSettings::max_decrypt_calls)): `kms` and `keys`
/// share it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KmsSettings {
    /// Whether a guest may import `keyward:lambda/kms`.
    pub guest_plaintext: GuestPlaintext,
}

/// Whether guests may import `keyward:lambda/kms`, the plaintext capability.
///
/// [`Deny`](Self::Deny) lets an operator guarantee that no plaintext enters the sandbox: only components whose
/// imports are those of the `sealed-handler` world load (secrets used through `keys` handles, which never return
/// key bytes); a component importing `kms` is refused at load, naming the import. Parsed from `allow` or `deny`
/// (any case).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GuestPlaintext {
    /// Guests may decrypt (`kms.decrypt`) and use handles.
    #[default]
    Allow,
    /// Guests may use handles only.
    Deny,
}

impl std::str::FromStr for GuestPlaintext {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "allow" => Ok(Self::Allow),
            "deny" => Ok(Self::Deny),
            _ => Err(format!("{:?} is neither allow nor deny", value.trim())),
        }
    }
}

impl KmsSettings {
    /// Reads the settings from Lambda mode's variables.
    ///
    /// # Errors
    /// A value that is not a setting's, naming its variable.
    pub(crate) fn from_env(env: &Env<'_>) -> Result<Self, SettingError> {
        Ok(Self { guest_plaintext: env.parsed("KEYWARD_GUEST_PLAINTEXT", GuestPlaintext::default())? })
    }
}

/// `keyward invoke`'s flags for the `kms` capability.
#[cfg(feature = "cli")]
#[derive(Debug, clap::Args)]
pub struct KmsFlags {
    /// `deny` refuses a component that imports kms (plaintext): the guest may use secrets through key handles only.
    #[arg(long, value_name = "allow|deny", default_value = "allow")]
    guest_plaintext: GuestPlaintext,
}

#[cfg(feature = "cli")]
impl From<KmsFlags> for KmsSettings {
    fn from(flags: KmsFlags) -> Self {
        Self { guest_plaintext: flags.guest_plaintext }
    }
}
