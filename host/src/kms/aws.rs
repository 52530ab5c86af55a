//! AWS KMS as a backend: the function role's credentials (the default chain), key pinning, and KMS's errors mapped
//! onto the three kinds a guest sees, with messages that tell an operator what to fix.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_kms::error::{ProvideErrorMetadata as _, SdkError};
use aws_sdk_kms::operation::decrypt::DecryptError;
use aws_sdk_kms::primitives::Blob;
use aws_smithy_http_client::tls;

use super::{Decrypted, KmsBackend, KmsError, Plaintext};
use crate::context::EncryptionContext;
use crate::error::{bounded, one_line, root_cause};

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
}

/// Decrypts with AWS KMS, passing `KeyId` so KMS itself refuses ciphertexts of keys that are not allowed.
#[derive(Debug, Clone)]
pub struct AwsKms {
    client: aws_sdk_kms::Client,
    key_ids: Vec<String>,
    /// Where requests go, for messages: the endpoint override, or the regional endpoint.
    endpoint: String,
}

impl AwsKms {
    /// A client from the default credential chain and region (on Lambda: the function's role and region).
    ///
    /// # Errors
    /// A message when no key is given.
    pub async fn from_env(config: AwsKmsConfig) -> Result<Self, String> {
        if config.key_ids.is_empty() {
            return Err("no KMS key is allowed: set KEYWARD_KMS_KEY_ID to the key (id, ARN or alias)".into());
        }
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(https_client())
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                    .build(),
            );
        if let Some(endpoint) = &config.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        Ok(Self::from_sdk_config(&loader.load().await, config.key_ids))
    }

    /// A client from an SDK configuration the caller built (credentials, region, endpoint, HTTP client).
    pub fn from_sdk_config(sdk_config: &aws_config::SdkConfig, key_ids: Vec<String>) -> Self {
        let endpoint = match (sdk_config.endpoint_url(), sdk_config.region()) {
            (Some(url), _) => url.to_string(),
            (None, Some(region)) => format!("the KMS endpoint of {region}"),
            (None, None) => "KMS (no region is configured: set AWS_REGION)".to_string(),
        };
        Self { client: aws_sdk_kms::Client::new(sdk_config), key_ids, endpoint }
    }

    /// The allowed keys.
    pub fn key_ids(&self) -> &[String] {
        &self.key_ids
    }

    async fn decrypt_with(
        &self,
        key_id: &str,
        ciphertext: &[u8],
        context: &EncryptionContext,
    ) -> Result<Decrypted, SdkError<DecryptError, aws_sdk_kms::config::http::HttpResponse>> {
        let pairs = context.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let output = self
            .client
            .decrypt()
            .key_id(key_id)
            .ciphertext_blob(Blob::new(ciphertext))
            .set_encryption_context(Some(pairs))
            .send()
            .await?;
        let plaintext = Plaintext::from(output.plaintext.map(Blob::into_inner).unwrap_or_default());
        Ok(Decrypted { plaintext, key_id: output.key_id.unwrap_or_else(|| key_id.to_string()) })
    }
}

#[async_trait]
impl KmsBackend for AwsKms {
    async fn decrypt(&self, ciphertext: &[u8], context: &EncryptionContext) -> Result<Decrypted, KmsError> {
        let mut last = None;
        for key_id in &self.key_ids {
            match self.decrypt_with(key_id, ciphertext, context).await {
                Ok(decrypted) if key_matches(key_id, &decrypted.key_id) => return Ok(decrypted),
                Ok(decrypted) => {
                    // KMS answered for another key than the one asked for: never hand that plaintext on.
                    return Err(KmsError::Denied(format!(
                        "KMS decrypted with key {}, which is not the allowed key {key_id}",
                        decrypted.key_id
                    )));
                }
                // A ciphertext of another key: try the next allowed key, if any.
                Err(e) if is_other_key(&e) => last = Some((key_id, e)),
                Err(e) => return Err(self.map_error(&e, key_id, context)),
            }
        }
        Err(match last {
            Some((key_id, e)) if self.key_ids.len() == 1 => self.map_error(&e, key_id, context),
            _ => KmsError::Denied(format!(
                "the ciphertext was not made under any allowed key ({}), or the role may not use them",
                self.key_ids.join(", ")
            )),
        })
    }
}

/// The HTTP client of every AWS call: hyper with rustls on *ring* (HTTP is allowed too, for test endpoints).
pub fn https_client() -> aws_sdk_kms::config::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
        .build_https()
}

/// Whether KMS refused because the ciphertext belongs to another key. Real KMS says IncorrectKeyException; some
/// KMS-compatible servers say AccessDeniedException.
fn is_other_key(error: &SdkError<DecryptError, aws_sdk_kms::config::http::HttpResponse>) -> bool {
    matches!(error.as_service_error(), Some(DecryptError::IncorrectKeyException(_)))
        || error.as_service_error().and_then(|e| e.code()) == Some("AccessDeniedException")
}

/// Whether the key KMS used (an ARN) is the allowed one. Aliases cannot be compared locally; for those, the
/// `KeyId` passed to Decrypt is what KMS enforces.
fn key_matches(allowed: &str, used_arn: &str) -> bool {
    if allowed.starts_with("alias/") || allowed.contains(":alias/") {
        return true;
    }
    used_arn == allowed || used_arn.rsplit_once("key/").is_some_and(|(_, id)| id == allowed)
}

impl AwsKms {
    /// One line for an operator: what failed, where (endpoint, key id), and the root cause; never an SDK `Debug`
    /// dump.
    fn map_error(
        &self,
        error: &SdkError<DecryptError, aws_sdk_kms::config::http::HttpResponse>,
        key_id: &str,
        context: &EncryptionContext,
    ) -> KmsError {
        let endpoint = &self.endpoint;
        let service = match error {
            SdkError::ServiceError(service) => service.err(),
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
        let detail = service.message().map(|m| format!(" (KMS: {})", bounded(&one_line(m), 512))).unwrap_or_default();
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
            DecryptError::InvalidKeyUsageException(_) => {
                KmsError::Denied(format!("KMS key {key_id} is not an ENCRYPT_DECRYPT key{detail}"))
            }
            DecryptError::InvalidGrantTokenException(_) => KmsError::Denied(format!("invalid grant token{detail}")),
            DecryptError::KeyUnavailableException(_)
            | DecryptError::DependencyTimeoutException(_)
            | DecryptError::KmsInternalException(_) => {
                KmsError::Unavailable(format!("KMS failed for key {key_id}{detail}"))
            }
            other => match other.code() {
                Some("AccessDeniedException") => KmsError::Denied(format!(
                    "the function's role may not decrypt with key {key_id} under encryption context keys [{keys}]: \
                     check the key policy and the role's kms:Decrypt permission and kms:EncryptionContext \
                     conditions{detail}"
                )),
                Some(code @ ("ThrottlingException" | "LimitExceededException")) => {
                    KmsError::Unavailable(format!("KMS throttled the request ({code}) for key {key_id}"))
                }
                Some(code) => KmsError::Unavailable(format!("KMS error {code} for key {key_id}{detail}")),
                None => KmsError::Unavailable(format!("KMS failed for key {key_id}{detail}")),
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
    }
}
