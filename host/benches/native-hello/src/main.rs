//! The hello guest's work as a native Rust Lambda, for `cargo xtask bench` to compare keyward with: at init,
//! decrypt `PASSWORD` (base64 KMS ciphertext, encryption context `function=hello`) with KMS once; per event,
//! answer with the secret's SHA-256 prefix, as `guest/examples/hello` does. Written the usual way: `lambda_runtime`,
//! aws-config's defaults (`AWS_ENDPOINT_URL_KMS` points it at a test KMS), the same HTTP client as keyward's.

use aws_sdk_kms::primitives::Blob;
use base64::Engine as _;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http).load().await;
    let kms = aws_sdk_kms::Client::new(&config);
    let ciphertext = base64::engine::general_purpose::STANDARD.decode(std::env::var("PASSWORD")?)?;
    let decrypted =
        kms.decrypt().ciphertext_blob(Blob::new(ciphertext)).encryption_context("function", "hello").send().await?;
    let plaintext = decrypted.plaintext().ok_or("KMS returned no plaintext")?;
    let prefix: String = Sha256::digest(plaintext.as_ref())[..4].iter().map(|b| format!("{b:02x}")).collect();
    let prefix = &prefix;
    lambda_runtime::run(service_fn(move |_: LambdaEvent<Value>| async move {
        let body = json!({ "message": "hello", "secret_sha256_prefix": prefix });
        Ok::<_, Error>(json!({
            "statusCode": 200,
            "headers": { "Content-Type": "application/json" },
            "body": body.to_string(),
        }))
    }))
    .await
}
