//! The hello guest's work as a native Rust Lambda, for `cargo xtask bench` to compare keyward with: at init,
//! decrypt `PASSWORD` (base64 KMS ciphertext, encryption context `function=hello`) with KMS once; per event,
//! answer with the secret's SHA-256 prefix, as `guest/examples/hello` does. Written the usual way: `lambda_runtime`,
//! aws-config's defaults (`AWS_ENDPOINT_URL_KMS` points it at a test KMS), the same HTTP client as keyward's.
//!
//! With `FETCH_URL` set (and `FETCH_CA`, a PEM file of the authority its server's certificate is from), each event
//! also sends one GET there, as keyward's outgoing HTTP does: hyper's pooled client over rustls (ring), HTTP/1.1 or
//! HTTP/2 by ALPN, answering the status.

use aws_sdk_kms::primitives::Blob;
use base64::Engine as _;
use http_body_util::BodyExt as _;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Empty<bytes::Bytes>,
>;

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
    let fetch = match std::env::var("FETCH_URL") {
        Ok(url) => Some((url.parse::<http::Uri>()?, client(&std::env::var("FETCH_CA")?)?)),
        Err(_) => None,
    };
    let fetch = &fetch;
    lambda_runtime::run(service_fn(move |_: LambdaEvent<Value>| async move {
        let mut body = json!({ "message": "hello", "secret_sha256_prefix": prefix });
        if let Some((url, client)) = fetch {
            let response = client.get(url.clone()).await?;
            body["status"] = response.status().as_u16().into();
            response.into_body().collect().await?;
        }
        Ok::<_, Error>(json!({
            "statusCode": 200,
            "headers": { "Content-Type": "application/json" },
            "body": body.to_string(),
        }))
    }))
    .await
}

/// A pooled HTTPS client trusting Mozilla's roots and the authority in `ca`.
fn client(ca: &str) -> Result<Client, Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().cloned());
    for cert in CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    let tls =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build();
    Ok(hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(https))
}
