//! The clients of the services that keep secrets ([`SecretStore`]): Secrets Manager and SSM, made from the SDK
//! configuration every client of keyward's shares, and only for a host that has secrets there.

use async_trait::async_trait;

use super::{secretsmanager, ssm};
use crate::secrets::KmsError;
use crate::secrets::source::{ParameterId, SecretId};
use crate::secrets::store::{Fetched, MAX_PARAMETERS_PER_CALL, SecretStore};

/// Secrets Manager and SSM Parameter Store, through AWS's SDK. Endpoints follow the SDK's variables:
/// `AWS_ENDPOINT_URL_SECRETS_MANAGER`, `AWS_ENDPOINT_URL_SSM`, then `AWS_ENDPOINT_URL`.
#[derive(Debug, Clone)]
pub struct AwsSecretStore {
    secrets_manager: aws_sdk_secretsmanager::Client,
    ssm: aws_sdk_ssm::Client,
    /// Where each client's requests go, for messages.
    secrets_manager_endpoint: String,
    ssm_endpoint: String,
}

impl AwsSecretStore {
    /// Both clients, from an SDK configuration ([`AwsSettings::sdk_config`](super::AwsSettings::sdk_config), or a
    /// test's).
    pub fn from_sdk_config(sdk_config: &aws_config::SdkConfig) -> Self {
        let secrets_manager = aws_sdk_secretsmanager::Client::new(sdk_config);
        let ssm = aws_sdk_ssm::Client::new(sdk_config);
        Self {
            secrets_manager,
            ssm,
            secrets_manager_endpoint: super::endpoint_of(sdk_config, "SECRETS_MANAGER", "Secrets Manager"),
            ssm_endpoint: super::endpoint_of(sdk_config, "SSM", "SSM"),
        }
    }
}

#[async_trait]
impl SecretStore for AwsSecretStore {
    async fn get_secret_value(&self, secret: &SecretId) -> Result<Fetched, KmsError> {
        secretsmanager::get_secret_value(&self.secrets_manager, &self.secrets_manager_endpoint, secret).await
    }

    async fn get_parameters(&self, parameters: &[&ParameterId]) -> Vec<Result<Fetched, KmsError>> {
        debug_assert!(parameters.len() <= MAX_PARAMETERS_PER_CALL);
        ssm::get_parameters(&self.ssm, &self.ssm_endpoint, parameters).await
    }
}
