//! AWS KMS as a backend: the function role's credentials (the default chain), key pinning, and KMS's errors mapped
//! onto the three kinds a guest sees, with messages that tell an operator what to fix.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_kms::config::http::HttpResponse;
use aws_sdk_kms::error::{ProvideErrorMetadata as _, SdkError};
use aws_sdk_kms::operation::decrypt::{DecryptError, DecryptOutput};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::EncryptionAlgorithmSpec;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

use super::{DecryptRequest, Decrypted, KmsBackend, KmsError, Plaintext};
use crate::context::EncryptionContext;
use crate::error::{bounded, clean, root_cause};

/// Largest ciphertext KMS takes (the `CiphertextBlob` length limit of Decrypt).
const MAX_KMS_CIPHERTEXT_BYTES: usize = 6144;
/// Attempts per Decrypt (the SDK's standard retry with backoff); the invocation's deadline bounds them all.
const MAX_ATTEMPTS: u32 = 3;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// Settings of the AWS KMS backend.
#[derive(Debug, Clone, Default)]
pub struct AwsKmsConfig {
    /// Keys allowed to decrypt: key ids, key ARNs, alias names or alias ARNs. At least one.
    pub key_ids: Vec<String>,
    /// An endpoint to use instead of the regional KMS endpoint (a VPC endpoint, or a test server).
    pub endpoint: Option<String>,
    /// A PEM file of the certificate authorities to trust instead of the built-in ones (`AWS_CA_BUNDLE`).
    pub ca_bundle: Option<std::path::PathBuf>,
}

/// Why an [`AwsKms`] client cannot be built. The messages name Lambda mode's variables, which is where these settings
/// come from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AwsKmsError {
    /// No key is allowed.
    #[error("no KMS key is allowed: set KEYWARD_KMS_KEY_ID to the key (id, ARN or alias)")]
    NoKey,
    /// `LOG_SENSITIVE_BODIES=true` is set.
    #[error(
        "LOG_SENSITIVE_BODIES=true would make the AWS SDK log KMS's answers, decrypted secrets among them: unset it"
    )]
    SensitiveLogging,
    /// The endpoint override is not an http(s) URL.
    #[error("KEYWARD_KMS_ENDPOINT={0:?} is not an http(s) URL such as https://kms.eu-west-1.amazonaws.com")]
    Endpoint(String),
    /// The endpoint override holds a user name or password, which would be logged with every KMS error.
    #[error(
        "KEYWARD_KMS_ENDPOINT holds a user name or password (user:password@host): KMS requests are signed with the \
         function's credentials; give the URL without them"
    )]
    EndpointCredentials,
    /// The CA bundle cannot be used.
    #[error("AWS_CA_BUNDLE={path}: {reason}; it must be a PEM file of CA certificates")]
    CaBundle {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No region is configured.
    #[error("no AWS region is configured: set AWS_REGION (Lambda sets it for every function)")]
    NoRegion,
    /// The region is not a region name.
    #[error("AWS_REGION={0:?} is not a region name such as eu-west-1")]
    Region(String),
    /// A key named by ARN is in another region than the one KMS is called in.
    #[error(
        "{variable} names a key in {key_region} ({key_id}), but KMS is called in {region}: a KMS key is used in its \
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

/// Decrypts with AWS KMS, passing `KeyId` so KMS itself refuses ciphertexts of keys that are not allowed.
#[derive(Debug, Clone)]
pub struct AwsKms {
    client: aws_sdk_kms::Client,
    key_ids: Vec<String>,
    /// Where requests go, for messages: the endpoint override, or the regional endpoint.
    endpoint: String,
    /// The region requests are signed for.
    region: Option<String>,
}

impl AwsKms {
    /// A client from the default credential chain and region (on Lambda: the function's role and region).
    ///
    /// # Errors
    /// An [`AwsKmsError`] when no key is given, `LOG_SENSITIVE_BODIES` is on, the endpoint is not an http(s) URL,
    /// no usable region is configured, or a key's ARN names another region.
    pub async fn from_env(config: AwsKmsConfig) -> Result<Self, AwsKmsError> {
        if config.key_ids.is_empty() {
            return Err(AwsKmsError::NoKey);
        }
        refuse_sensitive_logging(|name| std::env::var(name).ok())?;
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(https_client_trusting(config.ca_bundle.as_deref())?)
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                    .build(),
            );
        if let Some(endpoint) = &config.endpoint {
            if crate::address::has_user_info(endpoint) {
                return Err(AwsKmsError::EndpointCredentials);
            }
            if crate::address::parse_url(endpoint, &["http", "https"]).is_none() {
                return Err(AwsKmsError::Endpoint(bounded(endpoint, 128)));
            }
            loader = loader.endpoint_url(endpoint);
        }
        let sdk_config = loader.load().await;
        match sdk_config.region() {
            None => return Err(AwsKmsError::NoRegion),
            Some(region) if !crate::address::is_region(region.as_ref()) => {
                return Err(AwsKmsError::Region(bounded(region.as_ref(), 64)));
            }
            Some(_) => {}
        }
        let kms = Self::from_sdk_config(&sdk_config, config.key_ids);
        kms.check_key_regions("KEYWARD_KMS_KEY_ID", &kms.key_ids)?;
        Ok(kms)
    }

    /// A client from an SDK configuration the caller built (credentials, region, endpoint, HTTP client).
    pub fn from_sdk_config(sdk_config: &aws_config::SdkConfig, key_ids: Vec<String>) -> Self {
        let endpoint = match (sdk_config.endpoint_url(), sdk_config.region()) {
            (Some(url), _) => url.to_string(),
            (None, Some(region)) => format!("the KMS endpoint of {region}"),
            (None, None) => "KMS (no region is configured)".to_string(),
        };
        let region = sdk_config.region().map(|r| r.as_ref().to_string());
        Self { client: aws_sdk_kms::Client::new(sdk_config), key_ids, endpoint, region }
    }

    /// Checks that every key named by ARN in `key_ids` (from the variable `variable`) is in the region KMS is called
    /// in: a key is used in its own region only, so another region's ARN would fail every decrypt as "not found".
    ///
    /// # Errors
    /// [`AwsKmsError::KeyInAnotherRegion`], naming the variable, both regions and the fix.
    pub fn check_key_regions(&self, variable: &str, key_ids: &[String]) -> Result<(), AwsKmsError> {
        let Some(region) = &self.region else { return Ok(()) };
        for key_id in key_ids {
            let Some(key_region) = key_id.strip_prefix("arn:").and_then(|arn| arn.split(':').nth(2)) else { continue };
            if key_region != region {
                return Err(AwsKmsError::KeyInAnotherRegion {
                    variable: variable.to_string(),
                    key_id: key_id.clone(),
                    key_region: key_region.to_string(),
                    region: region.clone(),
                });
            }
        }
        Ok(())
    }

    /// The allowed keys.
    pub fn key_ids(&self) -> &[String] {
        &self.key_ids
    }

    async fn decrypt_with(
        &self,
        key_id: &str,
        request: &DecryptRequest<'_>,
    ) -> Result<DecryptOutput, SdkError<DecryptError, HttpResponse>> {
        let pairs = request.context.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.client
            .decrypt()
            .key_id(key_id)
            .ciphertext_blob(Blob::new(request.ciphertext))
            // An asymmetric key takes an algorithm, and no context (the gate gives it none).
            .set_encryption_context((!request.context.is_empty()).then_some(pairs))
            .set_encryption_algorithm(request.algorithm.map(EncryptionAlgorithmSpec::from))
            .send()
            .await
    }

    /// KMS's answer, checked: a plaintext, and the ARN of the key that opened it, which must be the one asked for.
    fn opened(&self, key_id: &str, output: DecryptOutput) -> Result<Decrypted, KmsError> {
        let (Some(plaintext), Some(used)) = (output.plaintext, output.key_id.filter(|id| is_key_arn(id))) else {
            return Err(KmsError::Unavailable(format!(
                "KMS at {} answered without a plaintext or a key ARN (key {key_id}); the answer was not used",
                self.endpoint
            )));
        };
        if plaintext.as_ref().is_empty() {
            return Err(KmsError::Unavailable(format!(
                "KMS at {} answered with an empty plaintext (key {key_id}); the answer was not used",
                self.endpoint
            )));
        }
        if !key_matches(key_id, &used) {
            // KMS answered for another key than the one asked for: never hand that plaintext on.
            return Err(KmsError::Denied(format!(
                "KMS decrypted with key {used}, which is not the allowed key {key_id}"
            )));
        }
        Ok(Decrypted { plaintext: Plaintext::from(plaintext.into_inner()), key_id: used })
    }
}

#[async_trait]
impl KmsBackend for AwsKms {
    async fn decrypt(&self, request: DecryptRequest<'_>) -> Result<Decrypted, KmsError> {
        let (ciphertext, context) = (request.ciphertext, request.context);
        // KMS would answer these with a ValidationException; saying so here saves the call and names the problem.
        if ciphertext.is_empty() || ciphertext.len() > MAX_KMS_CIPHERTEXT_BYTES {
            return Err(KmsError::InvalidCiphertext(format!(
                "the ciphertext is {} bytes; a KMS ciphertext is 1 to {MAX_KMS_CIPHERTEXT_BYTES} bytes",
                ciphertext.len()
            )));
        }
        let key_ids = request.key_ids.unwrap_or(&self.key_ids);
        let mut last = None;
        let mut all_incorrect_key = true;
        for key_id in key_ids {
            match self.decrypt_with(key_id, &request).await {
                Ok(output) => return self.opened(key_id, output),
                // A ciphertext of another key: try the next allowed key, if any.
                Err(e) if is_other_key(&e) => {
                    all_incorrect_key &= matches!(e.as_service_error(), Some(DecryptError::IncorrectKeyException(_)));
                    last = Some((key_id, e));
                }
                Err(e) => return Err(self.map_error(&e, key_id, context)),
            }
        }
        let allowed = key_ids.join(", ");
        Err(match last {
            Some((key_id, e)) if key_ids.len() == 1 => self.map_error(&e, key_id, context),
            // Every allowed key said the ciphertext is another key's: a fact about the ciphertext.
            _ if all_incorrect_key => {
                KmsError::InvalidCiphertext(format!("the ciphertext was not made under any allowed key ({allowed})"))
            }
            _ => KmsError::Denied(format!(
                "the ciphertext was not made under any allowed key ({allowed}), or the role may not use them"
            )),
        })
    }
}

/// The AWS SDK logs the bodies of responses marked sensitive (Decrypt's, with the plaintext) at TRACE when
/// `LOG_SENSITIVE_BODIES=true` (aws-smithy-runtime's `log_response_body`); keyward refuses to run so.
fn refuse_sensitive_logging(var: impl Fn(&str) -> Option<String>) -> Result<(), AwsKmsError> {
    match var("LOG_SENSITIVE_BODIES") {
        Some(value) if value.trim().eq_ignore_ascii_case("true") => Err(AwsKmsError::SensitiveLogging),
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
/// [`AwsKmsError::CaBundle`] when the file cannot be read, holds no certificate, or holds one that is not a
/// usable CA certificate.
pub fn https_client_trusting(ca_bundle: Option<&Path>) -> Result<aws_sdk_kms::config::SharedHttpClient, AwsKmsError> {
    let Some(path) = ca_bundle else { return Ok(https_client()) };
    let fail = |reason: String| AwsKmsError::CaBundle { path: bounded(&path.display().to_string(), 256), reason };
    let pem = crate::text::read_bounded(path, MAX_CA_BUNDLE_BYTES).map_err(|e| fail(e.to_string()))?;
    // The HTTP client panics on a certificate it cannot parse: every one is checked here first.
    let mut roots = rustls::RootCertStore::empty();
    for (i, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let cert = cert.map_err(|_| fail(format!("certificate {} is not valid PEM", i + 1)))?;
        roots.add(cert).map_err(|e| fail(format!("certificate {} cannot be a trust root ({e})", i + 1)))?;
    }
    if roots.is_empty() {
        return Err(fail("it holds no certificate".into()));
    }
    Ok(client_with(TrustStore::empty().with_native_roots(false).with_pem_certificate(pem)))
}

/// Most bytes of a CA bundle (the system's whole bundle is about 200 KiB).
const MAX_CA_BUNDLE_BYTES: u64 = 1 << 20;

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

/// Whether KMS refused because the ciphertext belongs to another key. Real KMS says IncorrectKeyException; some
/// KMS-compatible servers say AccessDeniedException.
fn is_other_key(error: &SdkError<DecryptError, HttpResponse>) -> bool {
    matches!(error.as_service_error(), Some(DecryptError::IncorrectKeyException(_)))
        || error.as_service_error().and_then(|e| e.code()) == Some("AccessDeniedException")
}

/// Whether the key KMS used (an ARN) is the allowed one. Aliases cannot be compared locally; for those, the
/// `KeyId` passed to Decrypt is what KMS enforces.
fn key_matches(allowed: &str, used_arn: &str) -> bool {
    if allowed.starts_with("alias/") || allowed.contains(":alias/") {
        return true;
    }
    used_arn == allowed || used_arn.split(':').nth(5).and_then(|r| r.strip_prefix("key/")) == Some(allowed)
}

/// Whether KMS's `KeyId` is a key ARN, `arn:PARTITION:kms:REGION:ACCOUNT:key/ID`, of visible ASCII only: what
/// KMS returns, and nothing that could break a log line.
fn is_key_arn(id: &str) -> bool {
    let parts: Vec<&str> = id.split(':').collect();
    id.len() <= 256
        && id.bytes().all(|b| b.is_ascii_graphic())
        && matches!(parts.as_slice(), ["arn", _, "kms", _, _, key] if key.strip_prefix("key/").is_some_and(|k| !k.is_empty() && !k.contains('/')))
}

impl AwsKms {
    /// One line for an operator: what failed, where (endpoint, key id), and the root cause; never an SDK `Debug`
    /// dump.
    fn map_error(
        &self,
        error: &SdkError<DecryptError, HttpResponse>,
        key_id: &str,
        context: &EncryptionContext,
    ) -> KmsError {
        let endpoint = &self.endpoint;
        let (service, status) = match error {
            SdkError::ServiceError(service) => (service.err(), service.raw().status().as_u16()),
            SdkError::TimeoutError(_) => {
                return KmsError::Unavailable(format!(
                    "KMS at {endpoint} did not answer in time (key {key_id}; {MAX_ATTEMPTS} attempts of at most {} ms)",
                    ATTEMPT_TIMEOUT.as_millis()
                ));
            }
            SdkError::DispatchFailure(failure) => {
                let what = match failure.as_connector_error() {
                    Some(c) if c.is_timeout() => "timed out",
                    _ => "failed",
                };
                return KmsError::Unavailable(format!(
                    "cannot reach KMS at {endpoint} (key {key_id}): the connection {what}: {}",
                    root_cause(error)
                ));
            }
            SdkError::ResponseError(response) => {
                return KmsError::Unavailable(format!(
                    "KMS at {endpoint} sent a response keyward cannot read (key {key_id}; HTTP {}): {}",
                    response.raw().status().as_u16(),
                    root_cause(error)
                ));
            }
            other => {
                return KmsError::Unavailable(format!("KMS request failed (key {key_id}): {}", root_cause(other)));
            }
        };
        let keys = context.keys().collect::<Vec<_>>().join(", ");
        let detail = service.message().map(|m| format!(" (KMS: {})", clean(m, 512))).unwrap_or_default();
        match service {
            DecryptError::InvalidCiphertextException(_) => KmsError::InvalidCiphertext(format!(
                "KMS refused the ciphertext: it is malformed, or bound to another encryption context than the one \
                 given (context keys: [{keys}]){detail}"
            )),
            DecryptError::IncorrectKeyException(_) => KmsError::InvalidCiphertext(format!(
                "the ciphertext was not made under the allowed key {key_id}{detail}"
            )),
            DecryptError::DisabledException(_) => KmsError::Denied(format!("KMS key {key_id} is disabled{detail}")),
            DecryptError::NotFoundException(_) => KmsError::Denied(format!("KMS key {key_id} was not found{detail}")),
            DecryptError::KmsInvalidStateException(_) => {
                KmsError::Denied(format!("KMS key {key_id} is not in a usable state{detail}"))
            }
            DecryptError::InvalidKeyUsageException(_) => KmsError::Denied(format!(
                "KMS key {key_id} cannot decrypt this way: a SIGN_VERIFY key never can, and an asymmetric \
                 ENCRYPT_DECRYPT key needs its algorithm (KEYWARD_SECRET_ALGORITHM_<NAME>) and no encryption \
                 context{detail}"
            )),
            DecryptError::InvalidGrantTokenException(_) => KmsError::Denied(format!("invalid grant token{detail}")),
            DecryptError::KeyUnavailableException(_)
            | DecryptError::DependencyTimeoutException(_)
            | DecryptError::KmsInternalException(_) => {
                KmsError::Unavailable(format!("KMS failed for key {key_id} (HTTP {status}){detail}"))
            }
            other => match other.code().map(|code| clean(code, 128)).as_deref() {
                Some("AccessDeniedException") => KmsError::Denied(format!(
                    "the function's role may not decrypt with key {key_id} under encryption context keys [{keys}]: \
                     check the key policy and the role's kms:Decrypt permission and kms:EncryptionContext \
                     conditions{detail}"
                )),
                Some(
                    code @ ("UnrecognizedClientException"
                    | "InvalidClientTokenId"
                    | "InvalidSignatureException"
                    | "IncompleteSignatureException"
                    | "MissingAuthenticationTokenException"
                    | "ExpiredTokenException"),
                ) => KmsError::Denied(format!(
                    "KMS at {endpoint} did not accept the function's credentials ({code}) for key {key_id}{detail}"
                )),
                Some("ValidationException") => KmsError::InvalidCiphertext(format!(
                    "KMS refused the request as malformed (ValidationException) for key {key_id}{detail}"
                )),
                Some(code @ ("ThrottlingException" | "LimitExceededException")) => {
                    KmsError::Unavailable(format!("KMS throttled the request ({code}) for key {key_id}"))
                }
                Some(code) => {
                    KmsError::Unavailable(format!("KMS error {code} (HTTP {status}) for key {key_id}{detail}"))
                }
                None if matches!(status, 401 | 403) => KmsError::Denied(format!(
                    "KMS at {endpoint} refused the request with HTTP {status} and no error code (key {key_id}){detail}"
                )),
                None => KmsError::Unavailable(format!(
                    "KMS at {endpoint} answered HTTP {status} without an error code (key {key_id}){detail}"
                )),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_keys_match_by_arn_or_id() {
        let arn = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        assert!(key_matches(arn, arn));
        assert!(key_matches("1234abcd-12ab-34cd-56ef-1234567890ab", arn));
        assert!(key_matches("alias/my-function", arn));
        assert!(!key_matches("ffffffff-12ab-34cd-56ef-1234567890ab", arn));
        assert!(!key_matches("arn:aws:kms:eu-west-1:123456789012:key/other", arn));
        let tail = "arn:aws:kms:eu-west-1:123456789012:key/x/key/1234abcd-12ab-34cd-56ef-1234567890ab";
        assert!(!key_matches("1234abcd-12ab-34cd-56ef-1234567890ab", tail), "only the ARN's resource counts");
        assert!(!is_key_arn(tail));
        assert!(is_key_arn(arn));
        assert!(!is_key_arn("arn:aws:kms:us-east-1:1:key/other\nFORGED line"));
    }

    fn service_error(error: DecryptError, status: u16) -> SdkError<DecryptError, HttpResponse> {
        let status = aws_smithy_runtime_api::http::StatusCode::try_from(status).unwrap();
        SdkError::service_error(error, HttpResponse::new(status, aws_smithy_types::body::SdkBody::empty()))
    }

    /// Every error KMS's Decrypt documents, and the common ones every AWS API may send, land in the WIT kind that
    /// tells the guest what to do: `invalid-ciphertext` (the ciphertext will never open here), `denied` (a policy or
    /// the credentials refuse; may be fixed), `unavailable` (try again later).
    #[test]
    fn every_kms_error_code_lands_in_its_kind() {
        use aws_sdk_kms::error::ErrorMetadata;
        use aws_sdk_kms::types::error as kms;
        let sdk = aws_config::SdkConfig::builder().region(aws_config::Region::new("eu-west-1")).build();
        let backend = AwsKms::from_sdk_config(&sdk, vec!["k".into()]);
        let generic = |code: &str| DecryptError::generic(ErrorMetadata::builder().code(code).message("m").build());
        let cases: Vec<(&str, DecryptError, u16, &str)> = vec![
            (
                "InvalidCiphertext",
                DecryptError::InvalidCiphertextException(kms::InvalidCiphertextException::builder().build()),
                400,
                "invalid-ciphertext",
            ),
            (
                "IncorrectKey",
                DecryptError::IncorrectKeyException(kms::IncorrectKeyException::builder().build()),
                400,
                "invalid-ciphertext",
            ),
            ("Validation", generic("ValidationException"), 400, "invalid-ciphertext"),
            ("Disabled", DecryptError::DisabledException(kms::DisabledException::builder().build()), 400, "denied"),
            ("NotFound", DecryptError::NotFoundException(kms::NotFoundException::builder().build()), 400, "denied"),
            (
                "KMSInvalidState",
                DecryptError::KmsInvalidStateException(kms::KmsInvalidStateException::builder().build()),
                400,
                "denied",
            ),
            (
                "InvalidKeyUsage",
                DecryptError::InvalidKeyUsageException(kms::InvalidKeyUsageException::builder().build()),
                400,
                "denied",
            ),
            (
                "InvalidGrantToken",
                DecryptError::InvalidGrantTokenException(kms::InvalidGrantTokenException::builder().build()),
                400,
                "denied",
            ),
            ("AccessDenied", generic("AccessDeniedException"), 400, "denied"),
            ("UnrecognizedClient", generic("UnrecognizedClientException"), 400, "denied"),
            ("InvalidSignature", generic("InvalidSignatureException"), 400, "denied"),
            ("ExpiredToken", generic("ExpiredTokenException"), 400, "denied"),
            (
                "KeyUnavailable",
                DecryptError::KeyUnavailableException(kms::KeyUnavailableException::builder().build()),
                500,
                "unavailable",
            ),
            (
                "DependencyTimeout",
                DecryptError::DependencyTimeoutException(kms::DependencyTimeoutException::builder().build()),
                500,
                "unavailable",
            ),
            (
                "KMSInternal",
                DecryptError::KmsInternalException(kms::KmsInternalException::builder().build()),
                500,
                "unavailable",
            ),
            ("Throttling", generic("ThrottlingException"), 400, "unavailable"),
            ("an unknown code", generic("SomethingNewException"), 400, "unavailable"),
            ("no code at all", DecryptError::generic(ErrorMetadata::builder().build()), 503, "unavailable"),
        ];
        let context = EncryptionContext::from_pairs([("function", "f")]).unwrap();
        for (case, error, status, kind) in cases {
            let mapped = backend.map_error(&service_error(error, status), "k", &context);
            assert_eq!(mapped.kind(), kind, "{case}: {mapped}");
            assert!(!mapped.to_string().contains('\n'), "{case}: {mapped}");
        }
        let no_code = backend.map_error(
            &service_error(DecryptError::generic(ErrorMetadata::builder().build()), 503),
            "k",
            &context,
        );
        assert!(no_code.to_string().contains("HTTP 503"), "{no_code}");
    }

    /// A success that is not one (no plaintext, no key id, an empty plaintext, another key) is never handed on.
    #[test]
    fn malformed_answers_are_not_used() {
        let sdk = aws_config::SdkConfig::builder().region(aws_config::Region::new("eu-west-1")).build();
        let backend = AwsKms::from_sdk_config(&sdk, vec!["k1".into()]);
        let arn = "arn:aws:kms:eu-west-1:1:key/k1";
        let answer = |plaintext: Option<&[u8]>, key: Option<&str>| {
            let output =
                DecryptOutput::builder().set_plaintext(plaintext.map(Blob::new)).set_key_id(key.map(String::from));
            backend.opened("k1", output.build())
        };
        assert!(answer(Some(b"pw"), Some(arn)).is_ok());
        assert!(matches!(answer(None, Some(arn)), Err(KmsError::Unavailable(_))));
        assert!(matches!(answer(Some(b"pw"), None), Err(KmsError::Unavailable(_))));
        assert!(matches!(answer(Some(b""), Some(arn)), Err(KmsError::Unavailable(_))));
        assert!(matches!(answer(Some(b"pw"), Some("arn:aws:kms:eu-west-1:1:key/k2")), Err(KmsError::Denied(_))));
    }

    #[tokio::test]
    async fn an_endpoint_that_is_not_a_url_is_refused_at_init() {
        let config = |endpoint: &str| AwsKmsConfig {
            key_ids: vec!["k".into()],
            endpoint: Some(endpoint.into()),
            ca_bundle: None,
        };
        for endpoint in ["not a url", "kms.eu-west-1.amazonaws.com", "ftp://host"] {
            let err = AwsKms::from_env(config(endpoint)).await.unwrap_err().to_string();
            assert!(err.contains("KEYWARD_KMS_ENDPOINT") && err.contains("not an http(s) URL"), "{endpoint}: {err}");
        }
        // A password in the URL would be in every KMS error: refused, and not repeated.
        let err = AwsKms::from_env(config("http://admin:s3cretpw@127.0.0.1:1")).await.unwrap_err().to_string();
        assert!(err.contains("holds a user name or password") && !err.contains("s3cretpw"), "{err}");
    }

    #[test]
    fn every_built_in_root_is_a_usable_trust_anchor() {
        let mut roots = rustls::RootCertStore::empty();
        let pem = built_in_roots().as_bytes();
        let (added, refused) = roots.add_parsable_certificates(CertificateDer::pem_slice_iter(pem).map(Result::unwrap));
        assert_eq!((added, refused), (5, 0));
    }

    #[test]
    fn sdk_logging_of_sensitive_bodies_is_refused() {
        assert!(
            refuse_sensitive_logging(|_| Some("TRUE".into())).unwrap_err().to_string().contains("LOG_SENSITIVE_BODIES")
        );
        assert!(refuse_sensitive_logging(|_| Some("false".into())).is_ok());
        assert!(refuse_sensitive_logging(|_| None).is_ok());
    }

    #[test]
    fn keys_of_another_region_are_named() {
        let sdk = aws_config::SdkConfig::builder().region(aws_config::Region::new("eu-west-1")).build();
        let kms = AwsKms::from_sdk_config(&sdk, vec![]);
        let here = "arn:aws:kms:eu-west-1:123456789012:key/mrk-1234abcd12ab34cd56ef1234567890ab".to_string();
        let there = here.replace("eu-west-1", "us-east-1");
        assert!(kms.check_key_regions("KEYWARD_KMS_KEY_ID", &[here.clone(), "alias/x".into(), "1234".into()]).is_ok());
        let err = kms.check_key_regions("KEYWARD_KMS_KEY_ID", &[here, there]).unwrap_err().to_string();
        assert!(
            err.starts_with("KEYWARD_KMS_KEY_ID names a key in us-east-1") && err.contains("called in eu-west-1"),
            "{err}"
        );
    }
}
