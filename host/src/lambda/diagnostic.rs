//! The one mapping from a failure to what Lambda reports: an `errorType` from keyward's documented list and a
//! one-line, bounded message.

use crate::error::InvokeError;

/// A function error or init error as the Runtime API takes it: `{"errorType": ..., "errorMessage": ...}`
/// (<https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html#runtimes-api-invokeerror>; the same shape as
/// lambda_runtime's `Diagnostic`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// A stable name for the kind of failure: one of [`InvokeError::ERROR_TYPES`], or `Runtime.InitError`.
    pub error_type: String,
    /// What happened, in one line; never plaintext.
    pub error_message: String,
}

impl Diagnostic {
    /// The `errorType` of a failed init.
    pub const INIT_ERROR: &str = "Runtime.InitError";

    /// A failed init, with its message.
    pub fn init_error(message: &str) -> Self {
        // As the process prints it: one line (a path or a variable's value may hold a line break).
        Self { error_type: Self::INIT_ERROR.into(), error_message: crate::error::one_line(message) }
    }

    /// The JSON body posted to the Runtime API.
    pub fn to_json(&self) -> String {
        serde_json::json!({ "errorType": self.error_type, "errorMessage": self.error_message }).to_string()
    }
}

impl From<&InvokeError> for Diagnostic {
    fn from(error: &InvokeError) -> Self {
        Self { error_type: error.error_type().into(), error_message: error.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_init_error_is_one_line() {
        let message = Diagnostic::init_error("cannot read component /tmp/a\nb.cwasm: No such file").error_message;
        assert_eq!(message.lines().count(), 1, "{message}");
    }

    #[test]
    fn the_body_has_lambdas_field_names() {
        let body = Diagnostic::from(&InvokeError::DeadlineExceeded).to_json();
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["errorType"], "DeadlineExceeded");
        assert_eq!(parsed["errorMessage"], "the invocation's deadline had passed before the guest started");
    }
}
