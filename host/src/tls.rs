//! Trust roots from a PEM file (a private CA): read once, every certificate checked before a client uses it,
//! for AWS's clients (`AWS_CA_BUNDLE`) and outgoing HTTP (`KEYWARD_OUTBOUND_CA_BUNDLE`) alike.

use std::path::Path;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

/// Most bytes of a CA bundle (the system's whole bundle is about 200 KiB).
const MAX_CA_BUNDLE_BYTES: u64 = 1 << 20;

/// The certificates of a CA bundle, and its PEM text.
///
/// # Errors
/// Why the file cannot be trusted, in words: it cannot be read, holds no certificate, or holds one that is not
/// valid PEM or cannot be a trust root (rustls's reason).
pub(crate) fn read_ca_bundle(path: &Path) -> Result<(Vec<u8>, Vec<CertificateDer<'static>>), String> {
    let pem = crate::text::read_bounded(path, MAX_CA_BUNDLE_BYTES).map_err(|e| e.to_string())?;
    // A client may panic on a certificate it cannot parse: every one is checked here first.
    let mut roots = rustls::RootCertStore::empty();
    let mut certificates = Vec::new();
    for (i, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let cert = cert.map_err(|_| format!("certificate {} is not valid PEM", i + 1))?;
        roots.add(cert.clone()).map_err(|e| format!("certificate {} cannot be a trust root ({e})", i + 1))?;
        certificates.push(cert);
    }
    if certificates.is_empty() {
        return Err("it holds no certificate".into());
    }
    Ok((pem, certificates))
}
