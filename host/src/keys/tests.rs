//! Known vectors (RFC 4231, RFC 8032) and signatures made by OpenSSL from the fixture keys (`fixtures/`, test keys
//! made with `openssl genpkey`/`ecparam` for these tests only), and verification with ring's public-key side.

use base64::Engine as _;
use ring::signature::{self, UnparsedPublicKey};
use rustls_pki_types::pem::PemObject as _;

use super::*;

const MESSAGE: &[u8] = b"keyward test vector";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/keys/fixtures").join(name)).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn hmac_matches_rfc_4231() {
    // RFC 4231 test case 2.
    let key = Key::from_plaintext(b"Jefe");
    assert_eq!(key.kind_name(), "hmac-secret");
    let data = b"what do ya want for nothing?";
    let cases = [
        (HmacAlgorithm::Sha256, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
        (
            HmacAlgorithm::Sha384,
            "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e8e2240ca5e69e2c78b3239ecfab21649",
        ),
        (
            HmacAlgorithm::Sha512,
            "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
        ),
    ];
    for (algorithm, expected) in cases {
        assert_eq!(hex(&key.hmac(algorithm, data).unwrap()), expected, "{algorithm:?}");
    }
}

#[test]
fn ed25519_matches_rfc_8032() {
    // RFC 8032 §7.1 test 1, the seed in a PKCS#8 v1 wrapper (RFC 8410 §7).
    let seed = unhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
    let der = [unhex("302e020100300506032b657004220420"), seed].concat();
    let key = Key::from_plaintext(&der);
    assert_eq!(key.kind_name(), "ed25519");
    assert_eq!(hex(&key.public_key().unwrap()), "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
    assert_eq!(
        hex(&key.sign(SignatureAlgorithm::Ed25519, b"").unwrap()),
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    );
}

#[test]
fn signatures_match_openssl_in_every_key_form() {
    // Ed25519 and RSA PKCS#1 v1.5 are deterministic: the same bytes as `openssl pkeyutl`/`dgst -sign`.
    let ed_sig = fixture("ed25519.sig");
    for form in [fixture("ed25519.pkcs8.pem"), fixture("ed25519.pkcs8.der")] {
        assert_eq!(Key::from_plaintext(&form).sign(SignatureAlgorithm::Ed25519, MESSAGE).unwrap(), ed_sig);
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(fixture("ed25519.pkcs8.der"));
    // Too short to be taken for base64 DER (under 64 characters): it is an HMAC secret.
    assert_eq!(Key::from_plaintext(b64.as_bytes()).kind_name(), "hmac-secret");

    let rsa_sig = fixture("rsa2048.pkcs1-sha256.sig");
    let pkcs8 = fixture("rsa2048.pkcs8.pem");
    let pkcs8_der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(&pkcs8).unwrap();
    let bare_base64 = base64::engine::general_purpose::STANDARD.encode(pkcs8_der.secret_pkcs8_der());
    let forms =
        [pkcs8.clone(), fixture("rsa2048.pkcs1.pem"), pkcs8_der.secret_pkcs8_der().to_vec(), bare_base64.into()];
    for form in forms {
        let key = Key::from_plaintext(&form);
        assert_eq!(key.kind_name(), "rsa-2048");
        assert_eq!(key.sign(SignatureAlgorithm::RsaPkcs1Sha256, MESSAGE).unwrap(), rsa_sig);
    }
}

#[test]
fn randomised_signatures_verify_with_the_public_key() {
    let rsa = Key::from_plaintext(&fixture("rsa2048.pkcs8.pem"));
    let rsa_public = rsa.public_key().unwrap();
    let rsa_cases: [(SignatureAlgorithm, &'static dyn signature::VerificationAlgorithm); 5] = [
        (SignatureAlgorithm::RsaPkcs1Sha384, &signature::RSA_PKCS1_2048_8192_SHA384),
        (SignatureAlgorithm::RsaPkcs1Sha512, &signature::RSA_PKCS1_2048_8192_SHA512),
        (SignatureAlgorithm::RsaPssSha256, &signature::RSA_PSS_2048_8192_SHA256),
        (SignatureAlgorithm::RsaPssSha384, &signature::RSA_PSS_2048_8192_SHA384),
        (SignatureAlgorithm::RsaPssSha512, &signature::RSA_PSS_2048_8192_SHA512),
    ];
    for (algorithm, verification) in rsa_cases {
        let sig = rsa.sign(algorithm, MESSAGE).unwrap();
        UnparsedPublicKey::new(verification, &rsa_public).verify(MESSAGE, &sig).unwrap();
    }
    for form in ["p256.sec1.pem", "p256.pkcs8.pem"] {
        let ec = Key::from_plaintext(&fixture(form));
        assert_eq!(ec.kind_name(), "ecdsa-p256", "{form}");
        let public = ec.public_key().unwrap();
        assert_eq!(public.len(), 65);
        let fixed = ec.sign(SignatureAlgorithm::EcdsaP256Sha256, MESSAGE).unwrap();
        assert_eq!(fixed.len(), 64);
        UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &public).verify(MESSAGE, &fixed).unwrap();
        let der = ec.sign(SignatureAlgorithm::EcdsaP256Sha256Der, MESSAGE).unwrap();
        UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, &public).verify(MESSAGE, &der).unwrap();
    }
}

#[test]
fn a_key_refuses_what_its_kind_cannot_do_without_quoting_itself() {
    let hmac = Key::from_plaintext(b"webhook-s3cret");
    let rsa = Key::from_plaintext(&fixture("rsa2048.pkcs1.pem"));
    let ed = Key::from_plaintext(&fixture("ed25519.pkcs8.pem"));
    let refusals = [
        hmac.sign(SignatureAlgorithm::Ed25519, MESSAGE).unwrap_err(),
        hmac.public_key().unwrap_err(),
        rsa.hmac(HmacAlgorithm::Sha256, MESSAGE).unwrap_err(),
        rsa.sign(SignatureAlgorithm::Ed25519, MESSAGE).unwrap_err(),
        rsa.sign(SignatureAlgorithm::EcdsaP256Sha256, MESSAGE).unwrap_err(),
        ed.sign(SignatureAlgorithm::RsaPssSha256, MESSAGE).unwrap_err(),
    ];
    for refusal in &refusals {
        assert!(matches!(refusal, KeyError::Unsupported(_)), "{refusal:?}");
        assert!(!refusal.to_string().contains("webhook-s3cret") && !refusal.to_string().contains("MII"), "{refusal}");
    }
    assert!(refusals[2].to_string().contains("this secret is a private key (rsa-2048)"), "{}", refusals[2]);
    assert!(refusals[0].to_string().contains("an HMAC secret"), "{}", refusals[0]);
    assert_eq!(format!("{hmac:?}"), "Key(hmac-secret)");
}

#[test]
fn unreadable_key_material_says_what_it_is_and_is_never_an_hmac_secret() {
    let p384 = Key::from_plaintext(&fixture("p384.sec1.pem"));
    let encrypted =
        Key::from_plaintext(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n");
    let certificate = Key::from_plaintext(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
    let truncated = Key::from_plaintext(&fixture("rsa2048.pkcs8.pem")[..600]);
    for (key, says) in [
        (&p384, "only P-256 keys"),
        (&encrypted, "openssl pkcs8 -topk8 -nocrypt"),
        (&certificate, "holds no private key"),
        (&truncated, "holds no private key"),
    ] {
        assert_eq!(key.kind_name(), "unreadable");
        let error = key.hmac(HmacAlgorithm::Sha256, MESSAGE).unwrap_err().to_string();
        assert!(error.contains(says), "{error}");
        assert_eq!(key.sign(SignatureAlgorithm::Ed25519, MESSAGE).unwrap_err().to_string(), error);
    }
}

#[test]
fn jwts_carry_the_algorithm_and_verify() {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts = |jwt: &str| -> Vec<Vec<u8>> { jwt.split('.').map(|p| b64.decode(p).unwrap()).collect() };

    let hmac = Key::from_plaintext(b"jwt-s3cret");
    let jwt = hmac.sign_jwt(JwtAlgorithm::Hs256, r#"{"kid":"k1"}"#, r#"{"sub":"42","exp":1}"#).unwrap();
    let [header, claims, sig] = <[Vec<u8>; 3]>::try_from(parts(&jwt)).unwrap();
    let header: serde_json::Value = serde_json::from_slice(&header).unwrap();
    assert_eq!(header, serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": "k1"}));
    assert_eq!(claims, br#"{"sub":"42","exp":1}"#, "claims are signed as given");
    let signing_input = &jwt[..jwt.rfind('.').unwrap()];
    assert_eq!(sig, hmac.hmac(HmacAlgorithm::Sha256, signing_input.as_bytes()).unwrap());

    let ec = Key::from_plaintext(&fixture("p256.pkcs8.pem"));
    let jwt = ec.sign_jwt(JwtAlgorithm::Es256, "", r#"{"sub":"42"}"#).unwrap();
    let signing_input = &jwt[..jwt.rfind('.').unwrap()];
    UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, ec.public_key().unwrap())
        .verify(signing_input.as_bytes(), &parts(&jwt)[2])
        .unwrap();
    let ed = Key::from_plaintext(&fixture("ed25519.pkcs8.pem"));
    let jwt = ed.sign_jwt(JwtAlgorithm::EdDsa, r#"{"alg":"EdDSA"}"#, "{}").unwrap();
    let signing_input = &jwt[..jwt.rfind('.').unwrap()];
    UnparsedPublicKey::new(&signature::ED25519, ed.public_key().unwrap())
        .verify(signing_input.as_bytes(), &parts(&jwt)[2])
        .unwrap();
    let rsa = Key::from_plaintext(&fixture("rsa2048.pkcs1.pem"));
    for (algorithm, verification) in [
        (JwtAlgorithm::Rs256, &signature::RSA_PKCS1_2048_8192_SHA256),
        (JwtAlgorithm::Ps512, &signature::RSA_PSS_2048_8192_SHA512),
    ] {
        let jwt = rsa.sign_jwt(algorithm, "{}", "{}").unwrap();
        let signing_input = &jwt[..jwt.rfind('.').unwrap()];
        UnparsedPublicKey::new(verification, rsa.public_key().unwrap())
            .verify(signing_input.as_bytes(), &parts(&jwt)[2])
            .unwrap();
    }

    for (header, claims, says) in [
        (r#"{"alg":"none"}"#, "{}", "alg is not HS256, the algorithm asked for"),
        (r#"{"alg":{"k":"a-long-value"}}"#, "{}", "alg is not HS256, the algorithm asked for"),
        ("[1]", "{}", "header must be a JSON object"),
        ("{}", "not json", "claims must be a JSON object"),
        ("{}", "[]", "claims must be a JSON object"),
    ] {
        let error = hmac.sign_jwt(JwtAlgorithm::Hs256, header, claims).unwrap_err();
        assert!(matches!(&error, KeyError::InvalidInput(m) if m.contains(says)), "{error:?}");
    }
    assert!(matches!(hmac.sign_jwt(JwtAlgorithm::Rs256, "", "{}"), Err(KeyError::Unsupported(_))));
}
