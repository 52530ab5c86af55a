//! The guest's environment (`wasi:cli/environment`): the variables an operator names (`KEYWARD_GUEST_ENV`, or
//! `--env` on the command line), and nothing else of the host's. Variables that hold AWS credentials are refused
//! even when named.

use std::sync::Arc;

use crate::settings::{Env, SettingError};

/// Environment variables that hold AWS credentials: never handed to a guest, whatever the settings say.
pub const CREDENTIAL_ENV_VARS: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
];

/// The setting, as Lambda mode reads it: the names of the variables the guest gets.
const GUEST_ENV: &str = "KEYWARD_GUEST_ENV";

/// The guest's environment, checked; every instance shares it.
pub(crate) type GuestEnv = Arc<[(String, String)]>;

/// The variables `KEYWARD_GUEST_ENV` names, with their values.
///
/// # Errors
/// A name whose variable is not set.
pub(crate) fn from_env(env: &Env<'_>) -> Result<Vec<(String, String)>, SettingError> {
    let named = |name: String| match env.get(&name) {
        Some(value) => Ok((name, value)),
        None => Err(SettingError::new(GUEST_ENV, format!("names {name}, which is not set"))),
    };
    env.list(GUEST_ENV).into_iter().map(named).collect()
}

/// Checks the guest's environment: names that can be variables, each given once, none of them AWS credentials.
///
/// # Errors
/// The first name that is not a variable's, is given twice, or holds credentials.
pub(crate) fn check(vars: Vec<(String, String)>) -> Result<GuestEnv, SettingError> {
    for (i, (name, _)) in vars.iter().enumerate() {
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(SettingError::new(GUEST_ENV, format!("{name:?} is not a valid variable name")));
        }
        // Two values under one name: the guest reads one, and the host would fetch and configure a secret by the
        // other.
        if vars[..i].iter().any(|(seen, _)| seen == name) {
            return Err(SettingError::new(GUEST_ENV, format!("names {name:?} twice: give each variable once")));
        }
        if CREDENTIAL_ENV_VARS.contains(&name.as_str()) {
            return Err(SettingError::new(GUEST_ENV, format!("{name} holds AWS credentials; guests never get them")));
        }
    }
    Ok(vars.into())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn credentials_and_non_names_are_refused() {
        assert_eq!(check(vars(&[("A", "1"), ("B", "")])).unwrap().len(), 2);
        let refused = |name: &str| check(vars(&[("A", "1"), (name, "x")])).unwrap_err().to_string();
        assert_eq!(
            refused("AWS_SESSION_TOKEN"),
            "KEYWARD_GUEST_ENV: AWS_SESSION_TOKEN holds AWS credentials; guests never get them"
        );
        for bad in ["", "A=B", "A\0"] {
            assert!(refused(bad).ends_with("is not a valid variable name"), "{bad:?}");
        }
        assert_eq!(refused("A"), "KEYWARD_GUEST_ENV: names \"A\" twice: give each variable once");
    }

    #[test]
    fn reads_the_named_variables_only() {
        let all: HashMap<String, String> = [("KEYWARD_GUEST_ENV", "A, B"), ("A", "1"), ("B", "2"), ("C", "3")]
            .map(|(k, v)| (k.into(), v.into()))
            .into();
        assert_eq!(from_env(&Env::new(&all)).unwrap(), vars(&[("A", "1"), ("B", "2")]));
        let missing: HashMap<String, String> = [("KEYWARD_GUEST_ENV".into(), "A".into())].into();
        assert_eq!(
            from_env(&Env::new(&missing)).unwrap_err().to_string(),
            "KEYWARD_GUEST_ENV: names A, which is not set"
        );
    }
}
