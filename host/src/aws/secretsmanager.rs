//! AWS Secrets Manager's GetSecretValue, its errors mapped onto the gate's three kinds with messages that tell an
//! operator what to fix.

use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata as _, SdkError};
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;

use super::{plaintext_of, transport_error};
use crate::error::clean;
use crate::secrets::source::{SecretId, SecretVersion};
use crate::secrets::store::Fetched;
use crate::secrets::{KmsError, Plaintext};

/// Largest secret value Secrets Manager keeps (its `SecretString` and `SecretBinary` quota).
pub(crate) const MAX_SECRET_BYTES: usize = 65_536;

/// Fetches `secret` with `client` (at `endpoint`, for messages): the version asked for, or `AWSCURRENT`.
pub(crate) async fn get_secret_value(
    client: &aws_sdk_secretsmanager::Client,
    endpoint: &str,
    secret: &SecretId,
) -> Result<Fetched, KmsError> {
    let (version_id, version_stage) = match &secret.version {
        None => (None, None),
        Some(SecretVersion::Id(id)) => (Some(id.clone()), None),
        Some(SecretVersion::Stage(stage)) => (None, Some(stage.clone())),
    };
    let id = &secret.id;
    let mut output = client
        .get_secret_value()
        .secret_id(id)
        .set_version_id(version_id)
        .set_version_stage(version_stage)
        .send()
        .await
        .map_err(|e| error(&e, endpoint, secret))?;
    let value = match (output.secret_string.take(), output.secret_binary.take()) {
        (Some(text), _) => plaintext_of(text.into_bytes()),
        (None, Some(blob)) => plaintext_of(blob.into_inner()),
        (None, None) => {
            return Err(KmsError::Unavailable(format!(
                "Secrets Manager at {endpoint} answered for secret {id} without a SecretString or SecretBinary"
            )));
        }
    };
    let Some(version_id) = output.version_id.take().filter(|v| is_printable(v)) else {
        return Err(KmsError::Unavailable(format!(
            "Secrets Manager at {endpoint} answered for secret {id} without a version id; the answer was not used"
        )));
    };
    check_size(&value, id)?;
    Ok(Fetched { value, version_id })
}

/// A value over the service's quota cannot have come from it: not one to hand on.
fn check_size(value: &Plaintext, id: &str) -> Result<(), KmsError> {
    use secrecy::ExposeSecret as _;
    let len = value.expose_secret().len();
    if len > MAX_SECRET_BYTES {
        return Err(KmsError::InvalidCiphertext(format!(
            "secret {id} is {len} bytes, over Secrets Manager's {MAX_SECRET_BYTES}; the answer was not used"
        )));
    }
    Ok(())
}

/// Whether an identifier from the service can go into a log line as it is.
pub(crate) fn is_printable(text: &str) -> bool {
    !text.is_empty() && text.len() <= 256 && text.bytes().all(|b| b.is_ascii_graphic())
}

/// One line for an operator: what failed for which secret, and how to fix it; never an SDK `Debug` dump.
fn error(error: &SdkError<GetSecretValueError, HttpResponse>, endpoint: &str, secret: &SecretId) -> KmsError {
    let id = &secret.id;
    let version = match &secret.version {
        None => String::new(),
        Some(SecretVersion::Id(v)) => format!(" version {v}"),
        Some(SecretVersion::Stage(s)) => format!(" (stage {s})"),
    };
    let (service, status) = match error {
        SdkError::ServiceError(service) => (service.err(), service.raw().status().as_u16()),
        other => return transport_error(other, "Secrets Manager", endpoint, &format!("secret {id}")),
    };
    let detail = service.message().map(|m| format!(" (Secrets Manager: {})", clean(m, 512))).unwrap_or_default();
    match service {
        GetSecretValueError::ResourceNotFoundException(_) => KmsError::Denied(format!(
            "secret {id}{version} was not found: check the name or ARN (and the version or stage), and that it is in \
             the function's region{detail}"
        )),
        GetSecretValueError::DecryptionFailure(_) => KmsError::Denied(format!(
            "Secrets Manager could not decrypt secret {id} with its KMS key: the function's role needs kms:Decrypt \
             on that key (with kms:ViaService secretsmanager){detail}"
        )),
        GetSecretValueError::InvalidRequestException(_) => KmsError::Denied(format!(
            "Secrets Manager refused to read secret {id} (deleted, or scheduled to be){detail}"
        )),
        GetSecretValueError::InvalidParameterException(_) => {
            KmsError::Denied(format!("Secrets Manager refused the request for secret {id}{version}{detail}"))
        }
        GetSecretValueError::InternalServiceError(_) => {
            KmsError::Unavailable(format!("Secrets Manager failed for secret {id} (HTTP {status}){detail}"))
        }
        other => match other.code().map(|code| clean(code, 128)).as_deref() {
            Some("AccessDeniedException") => KmsError::Denied(format!(
                "the function's role may not read secret {id}: it needs secretsmanager:GetSecretValue on its \
                 ARN{detail}"
            )),
            code => super::service_error("Secrets Manager", endpoint, &format!("secret {id}"), (code, status), &detail),
        },
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_secretsmanager::error::ErrorMetadata;
    use aws_sdk_secretsmanager::types::error as sm;

    use super::*;

    fn service_error(error: GetSecretValueError, status: u16) -> SdkError<GetSecretValueError, HttpResponse> {
        let status = aws_smithy_runtime_api::http::StatusCode::try_from(status).unwrap();
        SdkError::service_error(error, HttpResponse::new(status, aws_smithy_types::body::SdkBody::empty()))
    }

    /// Every error GetSecretValue documents, and the common ones, land in the kind that tells the guest what to do.
    #[test]
    fn every_error_lands_in_its_kind() {
        let generic =
            |code: &str| GetSecretValueError::generic(ErrorMetadata::builder().code(code).message("m").build());
        let cases: Vec<(GetSecretValueError, u16, &str, &str)> = vec![
            (
                GetSecretValueError::ResourceNotFoundException(sm::ResourceNotFoundException::builder().build()),
                400,
                "denied",
                "was not found",
            ),
            (
                GetSecretValueError::DecryptionFailure(sm::DecryptionFailure::builder().build()),
                400,
                "denied",
                "kms:Decrypt",
            ),
            (
                GetSecretValueError::InvalidRequestException(sm::InvalidRequestException::builder().build()),
                400,
                "denied",
                "deleted",
            ),
            (
                GetSecretValueError::InternalServiceError(sm::InternalServiceError::builder().build()),
                500,
                "unavailable",
                "HTTP 500",
            ),
            (generic("AccessDeniedException"), 400, "denied", "secretsmanager:GetSecretValue"),
            (generic("ExpiredTokenException"), 400, "denied", "credentials"),
            (generic("ThrottlingException"), 400, "unavailable", "throttled"),
            (generic("SomethingNew"), 400, "unavailable", "SomethingNew"),
        ];
        let secret = SecretId { id: "prod/db".into(), json_key: None, version: None };
        for (e, status, kind, says) in cases {
            let mapped = error(&service_error(e, status), "http://sm", &secret);
            assert_eq!(mapped.kind(), kind, "{mapped}");
            assert!(mapped.to_string().contains(says) && mapped.to_string().contains("prod/db"), "{mapped}");
        }
    }
}
