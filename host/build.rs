//! Picks the trust roots of keyward's HTTPS calls to AWS out of Mozilla's set (webpki-root-certs): the roots of
//! Amazon Trust Services, which issues the certificates of AWS's service endpoints (KMS's among them), and the
//! Starfield root that cross-signs them. Written as PEM, which the HTTP client takes, into `$OUT_DIR/aws-roots.pem`.
//! Trusting five roots rather than 118 is less to trust, and ~1 ms less of a cold start (parsing them).

use std::fmt::Write as _;

use base64::Engine as _;

/// The subjects' common names, as they appear in the certificates.
const ROOTS: &[&str] = &[
    "Amazon Root CA 1",
    "Amazon Root CA 2",
    "Amazon Root CA 3",
    "Amazon Root CA 4",
    "Starfield Services Root Certificate Authority - G2",
];

fn main() {
    let mut pem = String::new();
    let mut found = Vec::new();
    for cert in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
        let der = cert.as_ref();
        let Some(name) = ROOTS.iter().find(|name| der.windows(name.len()).any(|w| w == name.as_bytes())) else {
            continue;
        };
        found.push(*name);
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        let encoded = base64::engine::general_purpose::STANDARD.encode(der);
        for line in encoded.as_bytes().chunks(64) {
            let _ = writeln!(pem, "{}", String::from_utf8_lossy(line));
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    found.sort_unstable();
    assert_eq!(found, ROOTS, "webpki-root-certs no longer holds exactly the AWS roots keyward trusts");
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("aws-roots.pem"), pem).expect("OUT_DIR is writable");
    println!("cargo::rerun-if-changed=build.rs");
}
