//! AWS clients: what every one of keyward's shares (the function role's credentials and region as Lambda gives them,
//! or the shell's default chain on the command line; the HTTPS client and its trust roots, retries and timeouts),
//! and the one client of each service:
//! [`kms`], and the services that keep secrets ([`store`]: [`secretsmanager`], [`ssm`]).

pub mod kms;
mod secretsmanager;
mod ssm;
pub mod store;

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};

pub use kms::{AwsKms, AwsKmsSettings, DataKey, check_key_id};
pub use store::AwsSecretStore;

use crate::error::{bounded, root_cause};
use crate::secrets::KmsError;
use crate::settings::Env;

/// Attempts per call (the SDK's standard retry with backoff); the invocation's deadline bounds them all.
pub(crate) const MAX_ATTEMPTS: u32 = 3;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
pub(crate) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// What every AWS client of a host shares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsSettings {
    /// A PEM file of the certificate authorities to trust instead of the built-in ones (`AWS_CA_BUNDLE`, as the AWS
    /// CLI reads it).
    pub ca_bundle: Option<PathBuf>,
}

impl AwsSettings {
    /// Reads the settings from the function's environment.
    pub(crate) fn from_env(env: &Env<'_>) -> Self {
        Self { ca_bundle: env.get("AWS_CA_BUNDLE").filter(|p| !p.is_empty()).map(Into::into) }
    }

    /// Reads the settings from this process's environment, as the AWS CLI does (a command's).
    pub fn from_process_env() -> Self {
        let vars = std::env::vars().collect();
        Self::from_env(&Env::new(&vars))
    }

    /// Lambda mode's SDK configuration, made of what Lambda gives a function, in its environment: the region
    /// (`AWS_REGION`), the role's credentials (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`; or,
    /// where Lambda serves them from a container endpoint, as SnapStart does, `AWS_CONTAINER_CREDENTIALS_FULL_URI`),
    /// the endpoints (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_<SERVICE>`, unless `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS`
    /// is true) and `AWS_USE_FIPS_ENDPOINT`, `AWS_USE_DUALSTACK_ENDPOINT`; keyward's HTTPS client, retries and
    /// timeouts. A client may set its own endpoint (`KEYWARD_KMS_ENDPOINT`).
    ///
    /// Not `aws_config::defaults`: its profile files, SSO, web identity (STS) and instance metadata have no use
    /// in a function, and cost the bootstrap a quarter of a megabyte. [`AwsSettings::shell_sdk_config`] is the
    /// command line's, with the whole default chain.
    ///
    /// # Errors
    /// An [`AwsError`] when `LOG_SENSITIVE_BODIES` is on, the CA bundle is unusable, or no usable region is
    /// configured.
    pub async fn sdk_config(&self) -> Result<aws_config::SdkConfig, AwsError> {
        use aws_config::meta::credentials::CredentialsProviderChain;
        refuse_sensitive_logging(|name| std::env::var(name).ok())?;
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let region = var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")).ok_or(AwsError::NoRegion)?;
        let http_client = https_client_trusting(self.ca_bundle.as_deref())?;
        let provider_config =
            aws_config::provider_config::ProviderConfig::without_region().with_http_client(http_client.clone());
        let credentials = CredentialsProviderChain::first_try(
            "Environment",
            aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
        )
        .or_else(
            "EcsContainer",
            aws_config::ecs::EcsCredentialsProvider::builder().configure(&provider_config).build(),
        );
        let is_true = |name: &str| var(name).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let ignore_endpoints = is_true("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS");
        let builder = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(region))
            .credentials_provider(aws_sdk_kms::config::SharedCredentialsProvider::new(credentials))
            .http_client(http_client)
            .use_fips(is_true("AWS_USE_FIPS_ENDPOINT"))
            .use_dual_stack(is_true("AWS_USE_DUALSTACK_ENDPOINT"))
            .service_config(EndpointVariables { ignore: ignore_endpoints });
        let builder = match var("AWS_ENDPOINT_URL").filter(|_| !ignore_endpoints) {
            Some(url) => builder.endpoint_url(url),
            None => builder,
        };
        checked_region(with_retries(builder).build())
    }

    /// The command line's SDK configuration: the AWS CLI's default chains of credentials and region (profiles,
    /// SSO, web identity, instance metadata), and, as for [`AwsSettings::sdk_config`], keyward's HTTPS client,
    /// retries and timeouts.
    ///
    /// # Errors
    /// As [`AwsSettings::sdk_config`].
    #[cfg(feature = "cli")]
    pub async fn shell_sdk_config(&self) -> Result<aws_config::SdkConfig, AwsError> {
        refuse_sensitive_logging(|name| std::env::var(name).ok())?;
        let loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(https_client_trusting(self.ca_bundle.as_deref())?)
            .retry_config(retry_config())
            .timeout_config(timeout_config());
        checked_region(loader.load().await)
    }
}

/// The endpoint variables, as the SDK's clients ask for them: `AWS_ENDPOINT_URL_<SERVICE>` (the service id in upper
/// case, spaces as `_`: `AWS_ENDPOINT_URL_SECRETS_MANAGER`), else `AWS_ENDPOINT_URL`. The environment half of
/// aws-config's service configuration (`EnvServiceConfig`; a function has no profile).
#[derive(Debug)]
struct EndpointVariables {
    /// `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS`.
    ignore: bool,
}

impl EndpointVariables {
    fn lookup(
        &self,
        key: &aws_types::service_config::ServiceConfigKey<'_>,
        var: impl Fn(&str) -> Option<String>,
    ) -> Option<String> {
        if self.ignore && key.env() == "AWS_ENDPOINT_URL" {
            return None;
        }
        let service = key.service_id().to_uppercase().replace(' ', "_");
        let var = |name: &str| var(name).filter(|value| !value.trim().is_empty());
        var(&format!("{}_{service}", key.env())).or_else(|| var(key.env()))
    }
}

impl aws_types::service_config::LoadServiceConfig for EndpointVariables {
    fn load_config(&self, key: aws_types::service_config::ServiceConfigKey<'_>) -> Option<String> {
        self.lookup(&key, |name| std::env::var(name).ok())
    }
}

fn retry_config() -> aws_config::retry::RetryConfig {
    aws_config::retry::RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS)
}

fn timeout_config() -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .build()
}

fn with_retries(builder: aws_types::sdk_config::Builder) -> aws_types::sdk_config::Builder {
    builder.retry_config(retry_config()).timeout_config(timeout_config())
}

/// `sdk_config`, if its region is a region's name.
fn checked_region(sdk_config: aws_config::SdkConfig) -> Result<aws_config::SdkConfig, AwsError> {
    match sdk_config.region() {
        None => Err(AwsError::NoRegion),
        Some(region) if !crate::address::is_region(region.as_ref()) => {
            Err(AwsError::Region(bounded(region.as_ref(), 64)))
        }
        Some(_) => Ok(sdk_config),
    }
}

/// Why an AWS client cannot be built. Each message names the variable that sets what is wrong, in the shape of
/// every setting's error ([`SettingError`](crate::SettingError)): `VARIABLE: what is wrong`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AwsError {
    /// No key is allowed.
    #[error("KEYWARD_KMS_KEY_ID: not set: name the KMS key (id, ARN or alias)")]
    NoKey,
    /// `LOG_SENSITIVE_BODIES=true` is set.
    #[error(
        "LOG_SENSITIVE_BODIES: true would make the AWS SDK log KMS's answers, decrypted secrets among them: unset it"
    )]
    SensitiveLogging,
    /// The endpoint override is not an http(s) URL.
    #[error("KEYWARD_KMS_ENDPOINT: {0:?} is not an http(s) URL such as https://kms.eu-west-1.amazonaws.com")]
    Endpoint(String),
    /// The endpoint override holds a user name or password, which would be logged with every KMS error.
    #[error(
        "KEYWARD_KMS_ENDPOINT: holds a user name or password (user:password@host): KMS requests are signed with the \
         function's credentials; give the URL without them"
    )]
    EndpointCredentials,
    /// The CA bundle cannot be used.
    #[error("AWS_CA_BUNDLE: {path}: {reason}; it must be a PEM file of CA certificates")]
    CaBundle {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No region is configured.
    #[error("AWS_REGION: not set, and no region is configured otherwise: set it (Lambda sets it for every function)")]
    NoRegion,
    /// The region is not a region name.
    #[error("AWS_REGION: {0:?} is not a region name such as eu-west-1")]
    Region(String),
    /// A key is named in a form KMS does not take.
    #[error("{variable}: {reason}")]
    KeyId {
        /// The variable that names the key.
        variable: String,
        /// What is wrong.
        reason: String,
    },
    /// A key named by ARN is in another region than the one KMS is called in.
    #[error(
        "{variable}: names a key in {key_region} ({key_id}), but KMS is called in {region}: a KMS key is used in its \
         own region; name a key of {region}, or a multi-Region key's replica there (same mrk- id, {region} in the ARN)"
    )]
    KeyInAnotherRegion {
        /// The variable that names the key.
        variable: String,
        /// The key's ARN.
        key_id: String,
        /// The key's region.
        key_region: String,
        /// The region KMS is called in.
        region: String,
    },
}

/// The error of a call that got no service error back (a timeout, no connection, an unreadable response), in one
/// line: `service` at `endpoint` and what was asked for (`about`), and the root cause; never an SDK `Debug` dump.
/// A retry may work: `unavailable`.
pub(crate) fn transport_error<E, R>(
    error: &aws_sdk_kms::error::SdkError<E, R>,
    service: &str,
    endpoint: &str,
    about: &str,
) -> KmsError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    use aws_sdk_kms::error::SdkError;
    KmsError::Unavailable(match error {
        SdkError::TimeoutError(_) => format!(
            "{service} at {endpoint} did not answer in time ({about}; {MAX_ATTEMPTS} attempts of at most {} ms)",
            ATTEMPT_TIMEOUT.as_millis()
        ),
        SdkError::DispatchFailure(failure) => {
            let what = match failure.as_connector_error() {
                Some(c) if c.is_timeout() => "timed out",
                _ => "failed",
            };
            format!("cannot reach {service} at {endpoint} ({about}): the connection {what}: {}", root_cause(error))
        }
        SdkError::ResponseError(_) => {
            format!("{service} at {endpoint} sent a response keyward cannot read ({about}): {}", root_cause(error))
        }
        other => format!("{service} request failed ({about}): {}", root_cause(other)),
    })
}

/// Where a client of `service` sends its requests, for messages: the SDK's endpoint variables
/// (`AWS_ENDPOINT_URL_<SERVICE>`, then `AWS_ENDPOINT_URL`), or the configuration's, or the regional endpoint.
pub(crate) fn endpoint_of(sdk_config: &aws_config::SdkConfig, variable: &str, service: &str) -> String {
    let set = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if let Some(url) = set(&format!("AWS_ENDPOINT_URL_{variable}")).or_else(|| set("AWS_ENDPOINT_URL")) {
        return url;
    }
    match (sdk_config.endpoint_url(), sdk_config.region()) {
        (Some(url), _) => url.to_string(),
        (None, Some(region)) => format!("the {service} endpoint of {region}"),
        (None, None) => format!("{service} (no region is configured)"),
    }
}

/// A value an SDK answered with, as a [`Plaintext`]: copied whole (no reallocation leaves a copy behind), the
/// SDK's buffer zeroized.
pub(crate) fn plaintext_of(bytes: Vec<u8>) -> crate::secrets::Plaintext {
    let bytes = zeroize::Zeroizing::new(bytes);
    crate::secrets::Plaintext::from(bytes.to_vec())
}

/// A service error that no case of the operation's own names (`code` is the error code, if any): refused
/// credentials and a 401/403 are `denied`; throttling, any other code and a bare HTTP error are `unavailable`.
/// `about` names what was asked for (`secret prod/db`); `detail` is the service's message, ready to append.
pub(crate) fn service_error(
    service: &str,
    endpoint: &str,
    about: &str,
    (code, status): (Option<&str>, u16),
    detail: &str,
) -> KmsError {
    match code {
        Some(code) if is_credentials_error(code) => KmsError::Denied(format!(
            "{service} at {endpoint} did not accept the function's credentials ({code}) for {about}{detail}"
        )),
        Some(code @ ("ThrottlingException" | "LimitExceededException" | "RequestLimitExceeded" | "TooManyUpdates")) => {
            KmsError::Unavailable(format!("{service} throttled the request ({code}) for {about}"))
        }
        Some(code) => KmsError::Unavailable(format!("{service} error {code} (HTTP {status}) for {about}{detail}")),
        None if matches!(status, 401 | 403) => KmsError::Denied(format!(
            "{service} at {endpoint} refused the request for {about} with HTTP {status}{detail}"
        )),
        // A success whose body the SDK could not read as the operation's answer: a proxy's page, another service.
        None if (200..300).contains(&status) => KmsError::Unavailable(format!(
            "{service} at {endpoint} answered HTTP {status} with a body that is no {service} answer ({about}): \
             check that the endpoint is {service}'s"
        )),
        None => KmsError::Unavailable(format!(
            "{service} at {endpoint} answered HTTP {status} without an error code ({about}){detail}"
        )),
    }
}

/// Whether an AWS error code says the request's credentials were not accepted (unknown, expired, badly signed):
/// the same codes from every AWS service.
pub(crate) fn is_credentials_error(code: &str) -> bool {
    matches!(
        code,
        "UnrecognizedClientException"
            | "InvalidClientTokenId"
            | "InvalidSignatureException"
            | "IncompleteSignatureException"
            | "MissingAuthenticationTokenException"
            | "ExpiredTokenException"
    )
}

/// The AWS SDK logs the bodies of responses marked sensitive (Decrypt's, with the plaintext) at TRACE when
/// `LOG_SENSITIVE_BODIES=true` (aws-smithy-runtime's `log_response_body`); keyward refuses to run so.
fn refuse_sensitive_logging(var: impl Fn(&str) -> Option<String>) -> Result<(), AwsError> {
    match var("LOG_SENSITIVE_BODIES") {
        Some(value) if value.trim().eq_ignore_ascii_case("true") => Err(AwsError::SensitiveLogging),
        _ => Ok(()),
    }
}

/// The HTTP client of every AWS call: hyper with rustls on *ring* (HTTP is allowed too, for test endpoints),
/// trusting the built-in roots.
pub fn https_client() -> aws_sdk_kms::config::SharedHttpClient {
    client_with(TrustStore::empty().with_native_roots(false).with_pem_certificate(built_in_roots().as_bytes()))
}

/// [`https_client`], trusting the certificate authorities of a PEM file instead when one is given (`AWS_CA_BUNDLE`,
/// as the AWS CLI reads it: a private CA, or a TLS-inspecting proxy in front of a VPC endpoint).
///
/// # Errors
/// [`AwsError::CaBundle`] when the file cannot be read, holds no certificate, or holds one that is not a
/// usable CA certificate.
pub fn https_client_trusting(ca_bundle: Option<&Path>) -> Result<aws_sdk_kms::config::SharedHttpClient, AwsError> {
    let Some(path) = ca_bundle else { return Ok(https_client()) };
    let fail = |reason: String| AwsError::CaBundle { path: bounded(&path.display().to_string(), 256), reason };
    let (pem, _) = crate::tls::read_ca_bundle(path).map_err(fail)?;
    Ok(client_with(TrustStore::empty().with_native_roots(false).with_pem_certificate(pem)))
}

fn client_with(trust_store: TrustStore) -> aws_sdk_kms::config::SharedHttpClient {
    // `build` cannot fail in aws-smithy-http-client 1.5 (it only moves its fields); were it to, the default
    // context (the system's roots) still verifies every certificate.
    let tls = TlsContext::builder().with_trust_store(trust_store).build().unwrap_or_default();
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
        .tls_context(tls)
        .build_https()
}

/// The roots of AWS's endpoint certificates (Amazon Trust Services' four, and the Starfield root that cross-signs
/// them), picked out of Mozilla's set at build time (`build.rs`), as PEM. No certificate file is read at start: the
/// system's store (a bundle and a folder of ~290 files on Lambda's images) took 4–7 ms of a cold start to load, and
/// Mozilla's whole set (118 roots, parsed once per connector) made aws-config and the KMS client 1.1 ms slower to
/// build than these five.
fn built_in_roots() -> &'static str {
    include_str!(concat!(env!("OUT_DIR"), "/aws-roots.pem"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn endpoint_variables_are_read_as_the_sdk_reads_them() {
        let vars = |name: &str| match name {
            "AWS_ENDPOINT_URL_SECRETS_MANAGER" => Some("http://127.0.0.1:1".to_string()),
            "AWS_ENDPOINT_URL_SSM" => Some(" ".to_string()),
            "AWS_ENDPOINT_URL" => Some("http://127.0.0.1:2".to_string()),
            _ => None,
        };
        let key = |service| {
            aws_types::service_config::ServiceConfigKey::builder()
                .service_id(service)
                .env("AWS_ENDPOINT_URL")
                .profile("endpoint_url")
                .build()
                .unwrap()
        };
        let read = EndpointVariables { ignore: false };
        assert_eq!(read.lookup(&key("Secrets Manager"), vars).as_deref(), Some("http://127.0.0.1:1"));
        // A blank service variable is unset; the global one applies.
        assert_eq!(read.lookup(&key("SSM"), vars).as_deref(), Some("http://127.0.0.1:2"));
        assert_eq!(read.lookup(&key("KMS"), vars).as_deref(), Some("http://127.0.0.1:2"));
        let ignoring = EndpointVariables { ignore: true };
        assert_eq!(ignoring.lookup(&key("Secrets Manager"), vars), None);
    }

    use super::*;

    #[test]
    fn every_built_in_root_is_a_usable_trust_anchor() {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject as _;

        let mut roots = rustls::RootCertStore::empty();
        let pem = built_in_roots().as_bytes();
        let (added, refused) = roots.add_parsable_certificates(CertificateDer::pem_slice_iter(pem).map(Result::unwrap));
        assert_eq!((added, refused), (5, 0));
    }

    /// A body the SDK could not read as the answer comes with a success status and no code: it is not read as an
    /// error without a code.
    #[test]
    fn a_success_that_is_no_answer_says_so() {
        let error = service_error("SSM", "http://127.0.0.1:1", "parameter /db", (None, 200), "");
        assert_eq!(
            error.to_string(),
            "unavailable: SSM at http://127.0.0.1:1 answered HTTP 200 with a body that is no SSM answer (parameter \
             /db): check that the endpoint is SSM's"
        );
    }

    #[test]
    fn sdk_logging_of_sensitive_bodies_is_refused() {
        assert!(
            refuse_sensitive_logging(|_| Some("TRUE".into())).unwrap_err().to_string().contains("LOG_SENSITIVE_BODIES")
        );
        assert!(refuse_sensitive_logging(|_| Some("false".into())).is_ok());
        assert!(refuse_sensitive_logging(|_| None).is_ok());
    }
}
