//! The `keys` capability's settings: how much host-side work one invocation may ask of its key handles.

use crate::settings::{Env, SettingError};

/// Every setting of the `keys` capability. Opening a handle is a secret asked for, counted in
/// [`SecretsSettings::max_decrypt_calls`](crate::secrets::SecretsSettings::max_decrypt_calls).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeysSettings {
    /// Operations (HMAC, signature, JWT, public key) on key handles one invocation may ask for; one more traps.
    pub max_operations: u32,
    /// Largest input of one key operation (a message, or a JWT's header and claims together), in bytes.
    pub max_input_bytes: usize,
}

impl Default for KeysSettings {
    fn default() -> Self {
        Self { max_operations: 256, max_input_bytes: 1 << 20 }
    }
}

impl KeysSettings {
    /// Reads the settings from Lambda mode's variables.
    ///
    /// # Errors
    /// A value that is not a whole number of the setting's range, naming its variable.
    pub(crate) fn from_env(env: &Env<'_>) -> Result<Self, SettingError> {
        let d = Self::default();
        Ok(Self {
            max_operations: env.number("KEYWARD_MAX_KEY_OPERATIONS", d.max_operations)?,
            max_input_bytes: env.number("KEYWARD_MAX_KEY_INPUT_BYTES", d.max_input_bytes)?,
        })
    }
}
