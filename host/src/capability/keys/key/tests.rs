//! Known vectors (RFC 4231, RFC 8032) and signatures made by OpenSSL from the fixture keys (`fixtures/`, test keys
//! made with `openssl genpkey`/`ecparam` for these tests only), and verification with ring's public-key side.

use base64::Engine as _;
use ring::signature::{self, UnparsedPublicKey};
use rustls_pki_types::pem::PemObject as _;

use super::*;

const MESSAGE: &[u8] = b"keyward test vector";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/capability/keys/key/fixtures").join(name))
        .unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn hmac_matches_rfc_4231() {
    // RFC 4231 test case 1.
    let key = Key::from_plaintext(&[0x0b; 20]);
    assert_eq!(key.kind_name(), "hmac-secret");
    let data = b"Hi There";
    let cases = [
        (HmacAlgorithm::Sha256, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
        (
            HmacAlgorithm::Sha384,
            "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59cfaea9ea9076ede7f4af152e8b2fa9cb6",
        ),
        (
            HmacAlgorithm::Sha512,
            "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cdedaa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854",
        ),
    ];
    for (algorithm, expected) in cases {
        assert_eq!(hex(&key.hmac(algorithm, data).unwrap()), expected, "{algorithm:?}");
    }
}

/// A secret shorter than 16 bytes (test case 2's "Jefe", a password) is not opened as an HMAC key: a guest would get
/// MACs to test guesses against offline.
#[test]
fn short_secrets_are_not_hmac_keys() {
    for secret in [&b""[..], b"Jefe", b"hunter2", &[7; MIN_HMAC_SECRET_BYTES - 1], b"hunter2hunter2!\n"] {
        let error = Key::from_plaintext(secret).hmac(HmacAlgorithm::Sha256, b"x").unwrap_err().to_string();
        // The same words whatever the length: the refusal does not tell the guest how long the secret is.
        assert_eq!(
            error,
            "the secret is no private key, and shorter than an HMAC key may be (16 bytes at least, RFC 2104 §3): a \
             short secret, such as a password, is not opened as a key"
        );
    }
    assert_eq!(Key::from_plaintext(&[7; MIN_HMAC_SECRET_BYTES]).kind_name(), "hmac-secret");
}

#[test]
fn ed25519_matches_rfc_8032() {
    // RFC 8032 §7.1 test 1, the seed in a PKCS#8 v1 wrapper (RFC 8410 §7).
    let seed = unhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
    let der = [unhex("302e020100300506032b657004220420"), seed].concat();
    let key = Key::from_plaintext(&der);
    assert_eq!(key.kind_name(), "ed25519");
    // A DER key whose last byte is a tab, with the newline a shell adds: only the newline comes off.
    let ends_in_tab = [unhex("302e020100300506032b657004220420"), [7; 31].to_vec(), vec![b'\t', b'\n']].concat();
    assert_eq!(Key::from_plaintext(&ends_in_tab).kind_name(), "ed25519");
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
    // One line of base64 of the DER, however short; a byte-order mark before the PEM; DER with a shell's newline.
    let b64 = base64::engine::general_purpose::STANDARD.encode(fixture("ed25519.pkcs8.der"));
    let with_bom = [&b"\xef\xbb\xbf"[..], &fixture("ed25519.pkcs8.pem")].concat();
    let with_newline = [&fixture("ed25519.pkcs8.der")[..], b"\r\n"].concat();
    // PEM after a line that is not UTF-8 (a pkcs12 friendly name in Latin-1).
    let after_latin1 = [&b"friendlyName: caf\xe9\n"[..], &fixture("ed25519.pkcs8.pem")].concat();
    for form in [b64.into_bytes(), with_bom, with_newline, after_latin1] {
        assert_eq!(Key::from_plaintext(&form).sign(SignatureAlgorithm::Ed25519, MESSAGE).unwrap(), ed_sig);
    }

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
    let hmac = Key::from_plaintext(b"webhook-s3cret-of-some-length");
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
    let der = |pem: &[u8]| PrivateKeyDer::from_pem_slice(pem).unwrap().secret_der().to_vec();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes).into_bytes();
    let p384 = der(&fixture("p384.sec1.pem"));
    let rsa1024 = der(&fixture("rsa1024.pkcs8.pem"));
    // openssl pkcs12's output: attributes before the PEM.
    let with_bag =
        [&b"Bag Attributes\n    localKeyID: 01 \nKey Attributes: <No Attributes>\n"[..], &fixture("p384.sec1.pem")]
            .concat();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("P-384 PEM", fixture("p384.sec1.pem"), "an EC private key on P-384, which is not supported"),
        ("P-384 DER", p384.clone(), "an EC private key on P-384"),
        ("P-384 DER in base64", b64(&p384), "an EC private key on P-384"),
        ("P-384 PEM after bag attributes", with_bag, "an EC private key on P-384"),
        (
            "RSA 1024 PEM",
            fixture("rsa1024.pkcs8.pem"),
            "an RSA private key that cannot be used (smaller than 2048 bits)",
        ),
        ("RSA 1024 DER in base64", b64(&rsa1024), "smaller than 2048 bits"),
        ("P-256 without its public key", fixture("p256.nopub.sec1.pem"), "it must carry its public key"),
        (
            "encrypted PEM",
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n".to_vec(),
            "openssl pkcs8 -topk8 -nocrypt",
        ),
        (
            "OpenSSH",
            b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbg==\n-----END OPENSSH PRIVATE KEY-----\n".to_vec(),
            "ssh-keygen -p -m PKCS8",
        ),
        (
            "a certificate",
            b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".to_vec(),
            "holds no private key",
        ),
        ("truncated PEM", fixture("rsa2048.pkcs8.pem")[..600].to_vec(), "holds no private key"),
        (
            "two keys in one PEM",
            [fixture("ed25519.pkcs8.pem"), fixture("p256.pkcs8.pem")].concat(),
            "the secret is PEM with 2 private keys: keep the one to sign with",
        ),
        ("truncated DER", fixture("ed25519.pkcs8.der")[..40].to_vec(), "a DER private key, cut short"),
        (
            "UTF-16 PEM",
            fixture("ed25519.pkcs8.pem").iter().flat_map(|b| [*b, 0]).collect(),
            "a PEM file in UTF-16: store it as ASCII",
        ),
        ("truncated RSA DER", der(&fixture("rsa2048.pkcs8.pem"))[..600].to_vec(), "a DER private key, cut short"),
    ];
    for (case, secret, says) in &cases {
        let key = Key::from_plaintext(secret);
        assert_eq!(key.kind_name(), "unreadable", "{case}");
        let error = key.hmac(HmacAlgorithm::Sha256, MESSAGE).unwrap_err().to_string();
        assert!(error.contains(says), "{case}: {error}");
    }
    // Every operation says the same.
    for (_, secret, _) in &cases {
        let key = Key::from_plaintext(secret);
        let error = key.hmac(HmacAlgorithm::Sha256, MESSAGE).unwrap_err();
        assert_eq!(key.sign(SignatureAlgorithm::Ed25519, MESSAGE).unwrap_err(), error);
        assert_eq!(key.public_key().unwrap_err(), error);
    }
}

#[test]
fn jwts_carry_the_algorithm_and_verify() {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts = |jwt: &str| -> Vec<Vec<u8>> { jwt.split('.').map(|p| b64.decode(p).unwrap()).collect() };

    let hmac = Key::from_plaintext(b"a-jwt-s3cret-of-thirty-two-bytes");
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
        ("{}", "[]", "claims must be a JSON object, and it is JSON, but not an object"),
        ("{}", "{\"a\":", "claims must be a JSON object, and it is not JSON (line 1, column 5)"),
        (
            "{}",
            r#"{"sub":"x","sub":"admin"}"#,
            "claims must be a JSON object, and it is an object with a member name given twice",
        ),
        (
            r#"{"kid":"a","kid":"b"}"#,
            "{}",
            "header must be a JSON object, and it is an object with a member name given twice",
        ),
    ] {
        let error = hmac.sign_jwt(JwtAlgorithm::Hs256, header, claims).unwrap_err();
        assert!(matches!(&error, KeyError::InvalidInput(m) if m.contains(says)), "{error:?}");
    }
    // The guest's input is never quoted: it may be large, and refusals are logged.
    let large = format!("\"{}\"", "A".repeat(20_000));
    for (header, claims) in [(large.as_str(), "{}"), ("{}", large.as_str())] {
        let error = hmac.sign_jwt(JwtAlgorithm::Hs256, header, claims).unwrap_err().to_string();
        assert!(error.len() < 120 && !error.contains("AAAA"), "{error}");
    }
    // RFC 7518 §3.2: an HS key is at least as long as the hash.
    let error = hmac.sign_jwt(JwtAlgorithm::Hs512, "", "{}").unwrap_err().to_string();
    assert_eq!(error, "HS512 needs a secret of at least 64 bytes (RFC 7518 §3.2), and this one is shorter");
    assert!(matches!(hmac.sign_jwt(JwtAlgorithm::Rs256, "", "{}"), Err(KeyError::Unsupported(_))));
}
