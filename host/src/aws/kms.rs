//! AWS KMS as a backend: key pinning, and KMS's errors mapped onto the three kinds a guest sees, with messages that
//! tell an operator what to fix. The client is made as every AWS client of keyward's is ([`AwsSettings`]).

use async_trait::async_trait;
use aws_sdk_kms::config::http::HttpResponse;
use aws_sdk_kms::error::{ProvideErrorMetadata as _, SdkError};
use aws_sdk_kms::operation::decrypt::{DecryptError, DecryptOutput};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::EncryptionAlgorithmSpec;
use zeroize::Zeroizing;

use super::{AwsError, AwsSettings};
use crate::context::EncryptionContext;
use crate::error::{bounded, clean};
use crate::secrets::settings::SECRET_KEY;
use crate::secrets::{DecryptRequest, Decrypted, KmsBackend, KmsError, Plaintext, SecretSettings};
use crate::settings::{Env, SettingError};

/// Largest ciphertext KMS takes (the `CiphertextBlob` length limit of Decrypt).
const MAX_KMS_CIPHERTEXT_BYTES: usize = 6144;

/// Settings of the AWS KMS backend.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsKmsSettings {
    /// Keys allowed to decrypt: key ids, key ARNs, alias names or alias ARNs. At least one.
    pub key_ids: Vec<String>,
    /// An endpoint to use instead of the regional KMS endpoint (a VPC endpoint, or a test server).
    pub endpoint: Option<String>,
}

const KEY_ID: &str = "KEYWARD_KMS_KEY_ID";

impl AwsKmsSettings {
    /// Reads the settings from Lambda mode's variables, where a key is required.
    ///
    /// # Errors
    /// `KEYWARD_KMS_KEY_ID` unset.
    pub(crate) fn from_env(env: &Env<'_>) -> Result<Self, SettingError> {
        let settings = Self {
            key_ids: env.list(KEY_ID),
            endpoint: env.get("KEYWARD_KMS_ENDPOINT").map(|e| e.trim().to_string()).filter(|e| !e.is_empty()),
        };
        if settings.key_ids.is_empty() {
            return Err(SettingError::new(KEY_ID, "not set: name the KMS key (id, ARN or alias)"));
        }
        Ok(settings)
    }
}

impl AwsKmsSettings {
    /// A key is named, and the endpoint, if any, is an http(s) URL without credentials.
    fn check(&self) -> Result<(), AwsError> {
        if self.key_ids.is_empty() {
            return Err(AwsError::NoKey);
        }
        check_key_ids(KEY_ID, &self.key_ids)?;
        if let Some(endpoint) = &self.endpoint {
            if crate::address::has_user_info(endpoint) {
                return Err(AwsError::EndpointCredentials);
            }
            if crate::address::parse_url(endpoint, &["http", "https"]).is_none() {
                return Err(AwsError::Endpoint(bounded(endpoint, 128)));
            }
        }
        Ok(())
    }
}

/// Checks a KMS key as KMS takes a `KeyId`: a key id, a key ARN, `alias/NAME` or an alias ARN. Not blank; at most
/// 2048 visible ASCII characters (KMS's limit), no comma (a list's); an ARN of KMS, with a region and an account,
/// for a key or an alias with a name.
///
/// # Errors
/// Why it is none of them, in words that do not quote it.
pub fn check_key_id(key_id: &str) -> Result<(), String> {
    if key_id.trim().is_empty() {
        return Err("it is empty: name the KMS key (an id, a key ARN, alias/NAME or an alias ARN)".into());
    }
    if key_id.len() > 2048 || !key_id.chars().all(|c| c.is_ascii_graphic()) || key_id.contains(',') {
        return Err("it is not one KMS key id, key ARN or alias (at most 2048 characters, no spaces or commas)".into());
    }
    let arn_ok = |arn: &str| {
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        matches!(parts.as_slice(), ["arn", partition, "kms", region, account, resource]
            if !partition.is_empty() && !region.is_empty() && !account.is_empty()
                && resource.strip_prefix("key/").or(resource.strip_prefix("alias/")).is_some_and(|r| !r.is_empty()))
    };
    if (key_id.starts_with("arn:") && !arn_ok(key_id)) || key_id == "alias/" {
        return Err(
            "it is not a KMS key ARN (arn:<partition>:kms:<region>:<account>:key/<id>), alias ARN or alias/NAME".into(),
        );
    }
    Ok(())
}

/// [`check_key_id`] for each key `variable` names.
fn check_key_ids(variable: &str, key_ids: &[String]) -> Result<(), AwsError> {
    for key_id in key_ids {
        check_key_id(key_id).map_err(|reason| AwsError::KeyId { variable: variable.to_string(), reason })?;
    }
    Ok(())
}

/// A data key from [`AwsKms::generate_data_key`]. `Debug` shows the key ARN only.
pub struct DataKey {
    /// The key, 32 bytes; zeroized on drop.
    pub plaintext: Zeroizing<Vec<u8>>,
    /// KMS's ciphertext of it (`CiphertextBlob`).
    pub ciphertext: Vec<u8>,
    /// The ARN of the key it is under.
    pub key_arn: String,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey").field("key_arn", &self.key_arn).finish_non_exhaustive()
    }
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
    /// A client as every AWS client of keyward's is made ([`AwsSettings::sdk_config`]), for `settings`' keys and
    /// endpoint.
    ///
    /// # Errors
    /// An [`AwsError`] when no key is given, a key is in a form KMS does not take, the endpoint is not an http(s)
    /// URL, a key's ARN names another region, or the shared configuration fails.
    pub async fn from_env(aws: &AwsSettings, settings: AwsKmsSettings) -> Result<Self, AwsError> {
        // Checked before the configuration is loaded: a bad key or endpoint is named even where no region is set.
        settings.check()?;
        Self::checked(&aws.sdk_config().await?, settings)
    }

    /// A client of an SDK configuration, for `settings`' keys, and its endpoint instead of the configuration's.
    ///
    /// # Errors
    /// As [`AwsKms::from_env`], but for the shared configuration.
    pub fn new(sdk_config: &aws_config::SdkConfig, settings: AwsKmsSettings) -> Result<Self, AwsError> {
        settings.check()?;
        Self::checked(sdk_config, settings)
    }

    /// [`AwsKms::new`] of settings already checked.
    fn checked(sdk_config: &aws_config::SdkConfig, settings: AwsKmsSettings) -> Result<Self, AwsError> {
        let mut config = aws_sdk_kms::config::Builder::from(sdk_config);
        if let Some(endpoint) = &settings.endpoint {
            config = config.endpoint_url(endpoint);
        }
        let kms = Self::of_config(config.build(), sdk_config, settings.key_ids, settings.endpoint);
        kms.check_key_regions(KEY_ID, &kms.key_ids)?;
        Ok(kms)
    }

    /// Checks, as for [`AwsKms::from_env`]'s own keys, the keys each secret allows (`KEYWARD_SECRET_KEY_<NAME>`).
    ///
    /// # Errors
    /// [`AwsError::KeyId`] or [`AwsError::KeyInAnotherRegion`], naming the secret's variable.
    pub fn check_secret_keys(&self, secrets: &[(String, SecretSettings)]) -> Result<(), AwsError> {
        for (name, settings) in secrets {
            let variable = format!("{SECRET_KEY}{name}");
            check_key_ids(&variable, &settings.key_ids)?;
            self.check_key_regions(&variable, &settings.key_ids)?;
        }
        Ok(())
    }

    /// A client from an SDK configuration the caller built (credentials, region, endpoint, HTTP client).
    pub fn from_sdk_config(sdk_config: &aws_config::SdkConfig, key_ids: Vec<String>) -> Self {
        Self::of_config(aws_sdk_kms::Config::from(sdk_config), sdk_config, key_ids, None)
    }

    /// A client of `config`; `endpoint` is the override it was given, if any (for messages).
    fn of_config(
        config: aws_sdk_kms::Config,
        sdk_config: &aws_config::SdkConfig,
        key_ids: Vec<String>,
        endpoint: Option<String>,
    ) -> Self {
        let endpoint = endpoint.unwrap_or_else(|| super::endpoint_of(sdk_config, "KMS", "KMS"));
        let region = sdk_config.region().map(|r| r.as_ref().to_string());
        Self { client: aws_sdk_kms::Client::from_conf(config), key_ids, endpoint, region }
    }

    /// Checks that every key named by ARN in `key_ids` (from the variable `variable`) is in the region KMS is called
    /// in: a key is used in its own region only, so another region's ARN would fail every decrypt as "not found".
    ///
    /// # Errors
    /// [`AwsError::KeyInAnotherRegion`], naming the variable, both regions and the fix.
    pub fn check_key_regions(&self, variable: &str, key_ids: &[String]) -> Result<(), AwsError> {
        let Some(region) = &self.region else { return Ok(()) };
        for key_id in key_ids {
            let Some(key_region) = key_id.strip_prefix("arn:").and_then(|arn| arn.split(':').nth(2)) else { continue };
            if key_region != region {
                return Err(AwsError::KeyInAnotherRegion {
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

    /// A new 256-bit data key from KMS GenerateDataKey (`KeySpec` `AES_256`) under `key_id` and `context`: its
    /// plaintext, to seal a file with, and KMS's ciphertext of it, to store beside the file
    /// ([`crate::secrets::sealed`]), with the ARN of the key.
    ///
    /// # Errors
    /// A [`KmsError`]: `denied` (the key or the caller's permissions), `unavailable`, or an answer without a
    /// 32-byte plaintext and a ciphertext.
    pub async fn generate_data_key(&self, key_id: &str, context: &EncryptionContext) -> Result<DataKey, KmsError> {
        let pairs = context.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let answer = self
            .client
            .generate_data_key()
            .key_id(key_id)
            .key_spec(aws_sdk_kms::types::DataKeySpec::Aes256)
            .set_encryption_context((!context.is_empty()).then_some(pairs))
            .send()
            .await;
        let endpoint = &self.endpoint;
        let output = answer.map_err(|error| match &error {
            SdkError::ServiceError(service) => {
                let status = service.raw().status().as_u16();
                let detail = service.err().message().map(|m| format!(" (KMS: {})", clean(m, 512))).unwrap_or_default();
                match service.err().code().map(|code| clean(code, 128)).as_deref() {
                    Some(
                        code @ ("NotFoundException"
                        | "DisabledException"
                        | "KMSInvalidStateException"
                        | "InvalidKeyUsageException"),
                    ) => KmsError::Denied(format!("KMS cannot make a data key under key {key_id} ({code}){detail}")),
                    Some("AccessDeniedException") => KmsError::Denied(format!(
                        "you may not make data keys with key {key_id}: the key policy or your role needs \
                         kms:GenerateDataKey{detail}"
                    )),
                    code => super::service_error("KMS", endpoint, &format!("key {key_id}"), (code, status), &detail),
                }
            }
            other => super::transport_error(other, "KMS", endpoint, &format!("key {key_id}")),
        })?;
        match (output.plaintext, output.ciphertext_blob, output.key_id) {
            (Some(plaintext), Some(ciphertext), Some(key_arn)) if plaintext.as_ref().len() == 32 => Ok(DataKey {
                plaintext: Zeroizing::new(plaintext.into_inner()),
                ciphertext: ciphertext.into_inner(),
                key_arn: clean(&key_arn, 256),
            }),
            _ => Err(KmsError::Unavailable(format!(
                "KMS at {endpoint} answered GenerateDataKey without a 32-byte plaintext, a ciphertext and a key ARN \
                 (key {key_id})"
            ))),
        }
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
            other => return super::transport_error(other, "KMS", endpoint, &format!("key {key_id}")),
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
                Some(code) if super::is_credentials_error(code) => KmsError::Denied(format!(
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
                None if (200..300).contains(&status) => KmsError::Unavailable(format!(
                    "KMS at {endpoint} answered HTTP {status} with a body that is no KMS answer (key {key_id}): \
                     check that the endpoint is KMS's"
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
        let no_answer = backend.map_error(
            &service_error(DecryptError::generic(ErrorMetadata::builder().build()), 200),
            "k",
            &context,
        );
        assert!(no_answer.to_string().contains("answered HTTP 200 with a body that is no KMS answer"), "{no_answer}");
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
        let config = |endpoint: &str| AwsKmsSettings { key_ids: vec!["k".into()], endpoint: Some(endpoint.into()) };
        let aws = AwsSettings::default();
        for endpoint in ["not a url", "kms.eu-west-1.amazonaws.com", "ftp://host"] {
            let err = AwsKms::from_env(&aws, config(endpoint)).await.unwrap_err().to_string();
            assert!(err.contains("KEYWARD_KMS_ENDPOINT") && err.contains("not an http(s) URL"), "{endpoint}: {err}");
        }
        // A password in the URL would be in every KMS error: refused, and not repeated.
        let err = AwsKms::from_env(&aws, config("http://admin:s3cretpw@127.0.0.1:1")).await.unwrap_err().to_string();
        assert!(err.contains("holds a user name or password") && !err.contains("s3cretpw"), "{err}");
    }

    /// Every way a key is named, Lambda mode's variables and `seal --key-id` alike: KMS's forms taken, others refused
    /// before any call, without quoting them.
    #[test]
    fn keys_are_named_in_a_form_kms_takes() {
        for good in ["1234abcd-12ab-34cd-56ef-1234567890ab", "mrk-1234", "alias/app", "arn:aws:kms:us-east-1:1:key/k"] {
            assert_eq!(check_key_id(good), Ok(()), "{good}");
        }
        assert_eq!(check_key_id("arn:aws-cn:kms:cn-north-1:123456789012:alias/app"), Ok(()));
        for bad in
            ["", " ", "alias/a b", "a,b", "alias/", "arn:aws:s3:::bucket", "arn:aws:kms::1:key/k", "arn:aws:kms:r:1:x"]
        {
            assert!(check_key_id(bad).is_err(), "{bad:?}");
        }
        let settings =
            AwsKmsSettings { key_ids: vec!["alias/app".into(), "arn:aws:s3:::bucket".into()], endpoint: None };
        let error = settings.check().unwrap_err().to_string();
        assert!(error.starts_with("KEYWARD_KMS_KEY_ID: it is not a KMS key ARN"), "{error}");
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
            err.starts_with("KEYWARD_KMS_KEY_ID: names a key in us-east-1") && err.contains("called in eu-west-1"),
            "{err}"
        );
    }
}
