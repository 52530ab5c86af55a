//! AWS Systems Manager Parameter Store's GetParameters (with decryption: SecureString and String alike), up to ten
//! parameters a call, its errors mapped onto the gate's three kinds.

use aws_sdk_ssm::config::http::HttpResponse;
use aws_sdk_ssm::error::{ProvideErrorMetadata as _, SdkError};
use aws_sdk_ssm::operation::get_parameters::GetParametersError;
use aws_sdk_ssm::types::Parameter;

use super::{plaintext_of, transport_error};
use crate::error::clean;
use crate::secrets::KmsError;
use crate::secrets::source::ParameterId;
use crate::secrets::store::Fetched;

/// Largest parameter value Parameter Store keeps (an advanced parameter's; a standard one's is 4 KB).
pub(crate) const MAX_PARAMETER_BYTES: usize = 8192;

/// Fetches `parameters` (at most ten) with one GetParameters call with `client` (at `endpoint`, for messages):
/// one answer per parameter, in order. A name asked for twice (two versions of one parameter) goes in a call of
/// its own, so that each answer is matched to its request by name alone: SSM answers in no set order, and not
/// every SSM-compatible server says which label an answer is for.
pub(crate) async fn get_parameters(
    client: &aws_sdk_ssm::Client,
    endpoint: &str,
    parameters: &[&ParameterId],
) -> Vec<Result<Fetched, KmsError>> {
    let mut answers: Vec<Option<Result<Fetched, KmsError>>> = parameters.iter().map(|_| None).collect();
    let mut left: Vec<usize> = (0..parameters.len()).collect();
    while !left.is_empty() {
        let mut round = Vec::new();
        left.retain(|&i| {
            let fresh = round.iter().all(|&j: &usize| parameters[j].name != parameters[i].name);
            if fresh {
                round.push(i);
            }
            !fresh
        });
        let asked: Vec<&ParameterId> = round.iter().map(|&i| parameters[i]).collect();
        for (i, answer) in round.into_iter().zip(call(client, endpoint, &asked).await) {
            answers[i] = Some(answer);
        }
    }
    answers.into_iter().map(|a| a.unwrap_or_else(|| Err(KmsError::Unavailable("SSM gave no answer".into())))).collect()
}

/// One GetParameters call for `parameters`, each name once.
async fn call(
    client: &aws_sdk_ssm::Client,
    endpoint: &str,
    parameters: &[&ParameterId],
) -> Vec<Result<Fetched, KmsError>> {
    let names: Vec<String> = parameters.iter().map(|p| p.request_name()).collect();
    let sent = client.get_parameters().set_names(Some(names.clone())).with_decryption(true).send().await;
    let mut output = match sent {
        Ok(output) => output,
        Err(e) => {
            let error = error(&e, endpoint, &names.join(", "));
            return parameters.iter().map(|_| Err(error.clone())).collect();
        }
    };
    let mut found = output.parameters.take().unwrap_or_default();
    let invalid = output.invalid_parameters.take().unwrap_or_default();
    let answered = parameters
        .iter()
        .zip(&names)
        .map(|(parameter, name)| match found.iter().position(|p| answers(p, parameter)) {
            Some(at) => fetched(found.swap_remove(at), name, endpoint),
            None if invalid.contains(name) => Err(KmsError::Denied(format!(
                "SSM parameter {name} was not found: check the name (and the version or label), and that it is in \
                 the function's region"
            ))),
            None => Err(KmsError::Unavailable(format!(
                "SSM at {endpoint} answered GetParameters without parameter {name}; the answer was not used"
            ))),
        })
        .collect();
    // Values SSM sent that match no request are wiped, not just dropped.
    for mut unasked in found {
        if let Some(value) = unasked.value.take() {
            drop(zeroize::Zeroizing::new(value));
        }
    }
    answered
}

/// Whether `answered` is the parameter asked for: by name or ARN, and by the label or version named, where the
/// answer says (SSM's `Selector`, or a `Version` that is not the one named).
fn answers(answered: &Parameter, asked: &ParameterId) -> bool {
    let named = answered.name.as_deref() == Some(&asked.name) || answered.arn.as_deref() == Some(&asked.name);
    named
        && match (&asked.selector, answered.selector.as_deref().and_then(|s| s.strip_prefix(':'))) {
            (None, _) => true,
            (Some(asked), Some(said)) => said == asked || answered.version.to_string() == *asked,
            (Some(asked), None) if asked.bytes().all(|b| b.is_ascii_digit()) => answered.version.to_string() == *asked,
            (Some(_), None) => true,
        }
}

fn fetched(mut parameter: Parameter, name: &str, endpoint: &str) -> Result<Fetched, KmsError> {
    let Some(value) = parameter.value.take() else {
        return Err(KmsError::Unavailable(format!(
            "SSM at {endpoint} answered for parameter {name} without a value; the answer was not used"
        )));
    };
    let len = value.len();
    let value = plaintext_of(value.into_bytes());
    if len > MAX_PARAMETER_BYTES {
        return Err(KmsError::InvalidCiphertext(format!(
            "parameter {name} is {len} bytes, over Parameter Store's {MAX_PARAMETER_BYTES}; the answer was not used"
        )));
    }
    Ok(Fetched { value, version_id: parameter.version.to_string() })
}

/// One line for an operator: what failed for which parameters, and how to fix it.
fn error(error: &SdkError<GetParametersError, HttpResponse>, endpoint: &str, names: &str) -> KmsError {
    let (service, status) = match error {
        SdkError::ServiceError(service) => (service.err(), service.raw().status().as_u16()),
        other => return transport_error(other, "SSM", endpoint, &format!("parameters {names}")),
    };
    let detail = service.message().map(|m| format!(" (SSM: {})", clean(m, 512))).unwrap_or_default();
    match service {
        GetParametersError::InvalidKeyId(_) => KmsError::Denied(format!(
            "SSM could not decrypt parameters {names} with their KMS key: the function's role needs kms:Decrypt on \
             it{detail}"
        )),
        GetParametersError::InternalServerError(_) => {
            KmsError::Unavailable(format!("SSM failed for parameters {names} (HTTP {status}){detail}"))
        }
        other => match other.code().map(|code| clean(code, 128)).as_deref() {
            Some("AccessDeniedException") => KmsError::Denied(format!(
                "the function's role may not read parameters {names}: it needs ssm:GetParameters on them (and \
                 kms:Decrypt on the key of a SecureString){detail}"
            )),
            Some("ValidationException") => {
                KmsError::Denied(format!("SSM refused the request for parameters {names} as malformed{detail}"))
            }
            code => super::service_error("SSM", endpoint, &format!("parameters {names}"), (code, status), &detail),
        },
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_ssm::error::ErrorMetadata;

    use super::*;

    #[test]
    fn an_answer_is_matched_by_name_or_arn_and_by_label_or_version() {
        let answered = Parameter::builder()
            .name("/prod/db")
            .arn("arn:aws:ssm:eu-west-1:123456789012:parameter/prod/db")
            .version(3)
            .selector(":live")
            .build();
        let asked = |name: &str, selector: Option<&str>| ParameterId {
            name: name.into(),
            selector: selector.map(String::from),
        };
        assert!(answers(&answered, &asked("/prod/db", None)));
        assert!(answers(&answered, &asked("/prod/db", Some("live"))));
        assert!(answers(&answered, &asked("/prod/db", Some("3"))));
        assert!(answers(&answered, &asked("arn:aws:ssm:eu-west-1:123456789012:parameter/prod/db", None)));
        assert!(!answers(&answered, &asked("/prod/db", Some("4"))));
        assert!(!answers(&answered, &asked("/prod/other", None)));
    }

    #[test]
    fn every_error_lands_in_its_kind() {
        let generic =
            |code: &str| GetParametersError::generic(ErrorMetadata::builder().code(code).message("m").build());
        let status = |s: u16| aws_smithy_runtime_api::http::StatusCode::try_from(s).unwrap();
        for (e, code, kind) in [
            (generic("AccessDeniedException"), 400, "denied"),
            (generic("ThrottlingException"), 400, "unavailable"),
            (generic("UnrecognizedClientException"), 400, "denied"),
            (
                GetParametersError::InvalidKeyId(aws_sdk_ssm::types::error::InvalidKeyId::builder().build()),
                400,
                "denied",
            ),
            (
                GetParametersError::InternalServerError(
                    aws_sdk_ssm::types::error::InternalServerError::builder().build(),
                ),
                500,
                "unavailable",
            ),
        ] {
            let raw = HttpResponse::new(status(code), aws_smithy_types::body::SdkBody::empty());
            let mapped = error(&SdkError::service_error(e, raw), "http://ssm", "/a, /b");
            assert_eq!(mapped.kind(), kind, "{mapped}");
            assert!(mapped.to_string().contains("/a, /b"), "{mapped}");
        }
    }
}
