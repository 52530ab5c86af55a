//! Keys that stay in the host: a decrypted secret read as an HMAC secret or a private key, and the operations a
//! guest may ask of it through the `keys` import (HMAC, signatures, JWTs). No operation returns key material.
//!
//! Every primitive is ring's (constant-time, already in the tree through rustls); private keys are read with
//! rustls-pki-types (PEM) and, for SEC1 EC keys, wrapped into PKCS#8 with RustCrypto's `pkcs8`, since ring reads
//! PKCS#8 (and PKCS#1 for RSA) only. keyward's own copies of key bytes (the plaintext, DER) are zeroized when
//! dropped; ring's parsed key pairs hold the key in memory ring does not clear on drop.

use std::fmt;

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair};
use ring::{hmac, rand};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject as _;
use zeroize::{Zeroize as _, Zeroizing};

/// HMAC (RFC 2104) with a SHA-2 hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HmacAlgorithm {
    /// HMAC-SHA-256: 32 bytes.
    Sha256,
    /// HMAC-SHA-384: 48 bytes.
    Sha384,
    /// HMAC-SHA-512: 64 bytes.
    Sha512,
}

/// Signature algorithms, each for one kind of private key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureAlgorithm {
    /// Ed25519 (RFC 8032): 64 bytes.
    Ed25519,
    /// ECDSA on P-256 with SHA-256, as r ‖ s (64 bytes, JWS ES256's form).
    EcdsaP256Sha256,
    /// ECDSA on P-256 with SHA-256, ASN.1 DER (X.509's and OpenSSL's form).
    EcdsaP256Sha256Der,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RsaPkcs1Sha256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RsaPkcs1Sha384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RsaPkcs1Sha512,
    /// RSASSA-PSS with SHA-256 (MGF1-SHA-256, 32-byte salt).
    RsaPssSha256,
    /// RSASSA-PSS with SHA-384.
    RsaPssSha384,
    /// RSASSA-PSS with SHA-512.
    RsaPssSha512,
}

/// JWS algorithms (RFC 7518 §3.1; EdDSA with Ed25519 per RFC 8037).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlgorithm {
    /// HMAC-SHA-256.
    Hs256,
    /// HMAC-SHA-384.
    Hs384,
    /// HMAC-SHA-512.
    Hs512,
    /// ECDSA P-256 SHA-256.
    Es256,
    /// RSASSA-PKCS1-v1_5 SHA-256.
    Rs256,
    /// RSASSA-PKCS1-v1_5 SHA-384.
    Rs384,
    /// RSASSA-PKCS1-v1_5 SHA-512.
    Rs512,
    /// RSASSA-PSS SHA-256.
    Ps256,
    /// RSASSA-PSS SHA-384.
    Ps384,
    /// RSASSA-PSS SHA-512.
    Ps512,
    /// Ed25519.
    EdDsa,
}

impl HmacAlgorithm {
    /// The name the WIT gives it (`sha256`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
        }
    }
}

impl SignatureAlgorithm {
    /// The name the WIT gives it (`ecdsa-p256-sha256`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Ed25519 => "ed25519",
            Self::EcdsaP256Sha256 => "ecdsa-p256-sha256",
            Self::EcdsaP256Sha256Der => "ecdsa-p256-sha256-der",
            Self::RsaPkcs1Sha256 => "rsa-pkcs1-sha256",
            Self::RsaPkcs1Sha384 => "rsa-pkcs1-sha384",
            Self::RsaPkcs1Sha512 => "rsa-pkcs1-sha512",
            Self::RsaPssSha256 => "rsa-pss-sha256",
            Self::RsaPssSha384 => "rsa-pss-sha384",
            Self::RsaPssSha512 => "rsa-pss-sha512",
        }
    }
}

impl JwtAlgorithm {
    /// The name the JOSE header's `alg` gives it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hs256 => "HS256",
            Self::Hs384 => "HS384",
            Self::Hs512 => "HS512",
            Self::Es256 => "ES256",
            Self::Rs256 => "RS256",
            Self::Rs384 => "RS384",
            Self::Rs512 => "RS512",
            Self::Ps256 => "PS256",
            Self::Ps384 => "PS384",
            Self::Ps512 => "PS512",
            Self::EdDsa => "EdDSA",
        }
    }
}

/// Why an operation on a key failed. Messages never quote key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key cannot do this (wrong kind of key, unreadable key material).
    #[error("{0}")]
    Unsupported(String),
    /// The input is refused (a JWT header or claims that are not a JSON object, a contradicting `alg`).
    #[error("{0}")]
    InvalidInput(String),
}

/// A decrypted secret, read once when opened: a private key if it is one (PEM; or DER, raw or base64, in PKCS#8,
/// PKCS#1 or SEC1), else an HMAC secret of its bytes as they are.
pub struct Key {
    kind: Kind,
}

enum Kind {
    Hmac(Zeroizing<Vec<u8>>),
    Ed25519(Ed25519KeyPair),
    /// The same key twice: ring fixes the signature's encoding when the key pair is made.
    EcdsaP256 {
        fixed: Box<EcdsaKeyPair>,
        der: Box<EcdsaKeyPair>,
    },
    Rsa(RsaKeyPair),
    /// Looks like a private key (PEM) but cannot be read as one: every operation says why.
    Unreadable(String),
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.kind_name())
    }
}

impl Key {
    /// Reads `plaintext` (not kept: what is needed of it is copied, and that copy zeroized on drop).
    pub fn from_plaintext(plaintext: &[u8]) -> Self {
        Self { kind: read(plaintext) }
    }

    /// What the key is, for messages and the audit line: `hmac-secret`, `ed25519`, `ecdsa-p256`, `rsa-2048`, ….
    pub fn kind_name(&self) -> String {
        match &self.kind {
            Kind::Hmac(_) => "hmac-secret".into(),
            Kind::Ed25519(_) => "ed25519".into(),
            Kind::EcdsaP256 { .. } => "ecdsa-p256".into(),
            Kind::Rsa(key) => format!("rsa-{}", key.public().modulus_len() * 8),
            Kind::Unreadable(_) => "unreadable".into(),
        }
    }

    /// The HMAC of `message`.
    ///
    /// # Errors
    /// [`KeyError::Unsupported`] when the secret is a private key.
    pub fn hmac(&self, algorithm: HmacAlgorithm, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let Kind::Hmac(secret) = &self.kind else {
            return Err(self.not_for("HMAC", "a secret that is not a private key"));
        };
        let algorithm = match algorithm {
            HmacAlgorithm::Sha256 => hmac::HMAC_SHA256,
            HmacAlgorithm::Sha384 => hmac::HMAC_SHA384,
            HmacAlgorithm::Sha512 => hmac::HMAC_SHA512,
        };
        Ok(hmac::sign(&hmac::Key::new(algorithm, secret), message).as_ref().to_vec())
    }

    /// The signature of `message`.
    ///
    /// # Errors
    /// [`KeyError::Unsupported`] when the key is not of `algorithm`'s kind.
    pub fn sign(&self, algorithm: SignatureAlgorithm, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        use SignatureAlgorithm as A;
        let rng = SystemRandom::new();
        let failed = |_| KeyError::Unsupported("the signature could not be made".into());
        match (&self.kind, algorithm) {
            (Kind::Ed25519(key), A::Ed25519) => Ok(key.sign(message).as_ref().to_vec()),
            (Kind::EcdsaP256 { fixed, .. }, A::EcdsaP256Sha256) => {
                Ok(fixed.sign(&rng, message).map_err(failed)?.as_ref().to_vec())
            }
            (Kind::EcdsaP256 { der, .. }, A::EcdsaP256Sha256Der) => {
                Ok(der.sign(&rng, message).map_err(failed)?.as_ref().to_vec())
            }
            (Kind::Rsa(key), rsa) => {
                let padding: &'static dyn signature::RsaEncoding = match rsa {
                    A::RsaPkcs1Sha256 => &signature::RSA_PKCS1_SHA256,
                    A::RsaPkcs1Sha384 => &signature::RSA_PKCS1_SHA384,
                    A::RsaPkcs1Sha512 => &signature::RSA_PKCS1_SHA512,
                    A::RsaPssSha256 => &signature::RSA_PSS_SHA256,
                    A::RsaPssSha384 => &signature::RSA_PSS_SHA384,
                    A::RsaPssSha512 => &signature::RSA_PSS_SHA512,
                    other => return Err(self.not_for(&format!("signing ({})", other.name()), key_kind_for(other))),
                };
                let mut signature = vec![0; key.public().modulus_len()];
                key.sign(padding, &rng, message, &mut signature).map_err(failed)?;
                Ok(signature)
            }
            (_, algorithm) => Err(self.not_for(&format!("signing ({})", algorithm.name()), key_kind_for(algorithm))),
        }
    }

    /// The public key: Ed25519 32 bytes, P-256 an uncompressed point (65 bytes), RSA a DER RSAPublicKey.
    ///
    /// # Errors
    /// [`KeyError::Unsupported`] for an HMAC secret (it has none) or unreadable key material.
    pub fn public_key(&self) -> Result<Vec<u8>, KeyError> {
        match &self.kind {
            Kind::Ed25519(key) => Ok(key.public_key().as_ref().to_vec()),
            Kind::EcdsaP256 { fixed, .. } => Ok(fixed.public_key().as_ref().to_vec()),
            Kind::Rsa(key) => Ok(key.public_key().as_ref().to_vec()),
            _ => Err(self.not_for("a public key", "a private key")),
        }
    }

    /// A compact JWS: `header` (a JSON object, or empty for `{}`) gets `alg` (and `typ: JWT` when absent);
    /// `claims` (a JSON object) is signed as given.
    ///
    /// # Errors
    /// [`KeyError::InvalidInput`] for a header or claims that are not a JSON object, or a header whose `alg`
    /// names another algorithm; [`KeyError::Unsupported`] when the key is not of `algorithm`'s kind.
    pub fn sign_jwt(&self, algorithm: JwtAlgorithm, header: &str, claims: &str) -> Result<String, KeyError> {
        use JwtAlgorithm as J;
        // serde_json's messages quote the input, which may be large and is logged: only the kind and the place.
        let invalid = |what: &str, e: serde_json::Error| {
            let problem = match e.classify() {
                serde_json::error::Category::Data if e.to_string().starts_with(DUPLICATE_MEMBER) => {
                    "an object with a member name given twice (RFC 7519 §4 wants them unique)".to_string()
                }
                serde_json::error::Category::Data => "JSON, but not an object".to_string(),
                _ => format!("not JSON (line {}, column {})", e.line(), e.column()),
            };
            KeyError::InvalidInput(format!("the JWT {what} must be a JSON object, and it is {problem}"))
        };
        let mut header = if header.trim().is_empty() {
            serde_json::Map::new()
        } else {
            serde_json::from_str::<UniqueObject>(header).map_err(|e| invalid("header", e))?.0
        };
        match header.get("alg") {
            Some(serde_json::Value::String(alg)) if alg == algorithm.name() => {}
            None => {}
            // Not quoted: the guest's value may be large, and the message is logged.
            Some(_) => {
                return Err(KeyError::InvalidInput(format!(
                    "the JWT header's alg is not {}, the algorithm asked for: leave alg out, the host sets it",
                    algorithm.name()
                )));
            }
        }
        header.insert("alg".into(), algorithm.name().into());
        header.entry("typ").or_insert_with(|| "JWT".into());
        serde_json::from_str::<UniqueObject>(claims).map_err(|e| invalid("claims", e))?;
        // RFC 7518 §3.2: an HS key MUST be at least as long as the hash's output.
        let hmac_key_needed = match algorithm {
            J::Hs256 => 32,
            J::Hs384 => 48,
            J::Hs512 => 64,
            _ => 0,
        };
        if let Kind::Hmac(secret) = &self.kind
            && secret.len() < hmac_key_needed
        {
            return Err(KeyError::Unsupported(format!(
                "{} needs a secret of at least {hmac_key_needed} bytes (RFC 7518 §3.2), and this one is shorter",
                algorithm.name(),
            )));
        }
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = serde_json::to_vec(&header).map_err(|e| invalid("header", e))?;
        let signing_input = format!("{}.{}", b64.encode(header), b64.encode(claims));
        let message = signing_input.as_bytes();
        let signature = match algorithm {
            J::Hs256 => self.hmac(HmacAlgorithm::Sha256, message),
            J::Hs384 => self.hmac(HmacAlgorithm::Sha384, message),
            J::Hs512 => self.hmac(HmacAlgorithm::Sha512, message),
            J::Es256 => self.sign(SignatureAlgorithm::EcdsaP256Sha256, message),
            J::Rs256 => self.sign(SignatureAlgorithm::RsaPkcs1Sha256, message),
            J::Rs384 => self.sign(SignatureAlgorithm::RsaPkcs1Sha384, message),
            J::Rs512 => self.sign(SignatureAlgorithm::RsaPkcs1Sha512, message),
            J::Ps256 => self.sign(SignatureAlgorithm::RsaPssSha256, message),
            J::Ps384 => self.sign(SignatureAlgorithm::RsaPssSha384, message),
            J::Ps512 => self.sign(SignatureAlgorithm::RsaPssSha512, message),
            J::EdDsa => self.sign(SignatureAlgorithm::Ed25519, message),
        }?;
        Ok(format!("{signing_input}.{}", b64.encode(signature)))
    }

    fn not_for(&self, operation: &str, needs: &str) -> KeyError {
        match &self.kind {
            Kind::Unreadable(why) => KeyError::Unsupported(why.clone()),
            _ => KeyError::Unsupported(format!("{operation} needs {needs}, and this secret is {}", self.described())),
        }
    }

    fn described(&self) -> String {
        match &self.kind {
            Kind::Hmac(_) => "an HMAC secret (not a private key)".into(),
            _ => format!("a private key ({})", self.kind_name()),
        }
    }
}

fn key_kind_for(algorithm: SignatureAlgorithm) -> &'static str {
    use SignatureAlgorithm as A;
    match algorithm {
        A::Ed25519 => "an Ed25519 private key",
        A::EcdsaP256Sha256 | A::EcdsaP256Sha256Der => "an ECDSA P-256 private key",
        _ => "an RSA private key",
    }
}

const SUPPORTED: &str = "Ed25519, ECDSA P-256 and RSA (2048 to 8192 bits) keys are supported";

const DUPLICATE_MEMBER: &str = "a member name is given twice";

/// A JSON object whose member names are unique (serde_json's `Map` keeps the last of a repeated name, and a JWT signed
/// with one would read differently to different parsers; RFC 7519 §4).
struct UniqueObject(serde_json::Map<String, serde_json::Value>);

impl<'de> serde::Deserialize<'de> for UniqueObject {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = UniqueObject;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut members: A) -> Result<UniqueObject, A::Error> {
                let mut object = serde_json::Map::new();
                while let Some(name) = members.next_key::<String>()? {
                    if object.contains_key(&name) {
                        return Err(serde::de::Error::custom(DUPLICATE_MEMBER));
                    }
                    object.insert(name, members.next_value()?);
                }
                Ok(UniqueObject(object))
            }
        }
        deserializer.deserialize_map(Members)
    }
}

/// Shortest secret taken as an HMAC key. RFC 2104 §3 strongly discourages keys shorter than the hash's output; a
/// shorter secret (a password, a PIN) would hand a guest MACs to test guesses against offline, so it is refused.
pub const MIN_HMAC_SECRET_BYTES: usize = 16;

/// Reads a plaintext as a private key if it is one (PEM; DER, raw or as one line of base64), else as an HMAC secret.
/// Whatever has the shape of a key and cannot be used as one is [`Kind::Unreadable`], never an HMAC secret.
fn read(plaintext: &[u8]) -> Kind {
    let plaintext = plaintext.strip_prefix("\u{feff}".as_bytes()).unwrap_or(plaintext);
    // PEM is found by its bytes: lines before it (a pkcs12 friendly name in Latin-1) need not be UTF-8.
    if contains(plaintext, b"-----BEGIN ") {
        return read_pem(plaintext);
    }
    if contains(plaintext, b"-\0-\0-\0-\0-\0B\0E\0G\0I\0N\0") {
        return Kind::Unreadable("the secret is a PEM file in UTF-16: store it as ASCII (UTF-8)".into());
    }
    // DER as it is (or with the one newline a shell adds), or the base64 of it without PEM's lines.
    let text = std::str::from_utf8(plaintext).map(str::trim).ok();
    let decoded = text.and_then(|t| keyward_base64::decode(t).ok()).map(Zeroizing::new);
    let without_newline = plaintext.strip_suffix(b"\n").map(|p| p.strip_suffix(b"\r").unwrap_or(p));
    for der in [Some(plaintext), without_newline, decoded.as_ref().map(|d| d.as_slice())].into_iter().flatten() {
        match der_shape(der) {
            DerShape::Whole => return read_der(der),
            DerShape::CutShort => {
                return Kind::Unreadable(
                    "the secret is the start of a DER private key, cut short: store the whole key".into(),
                );
            }
            DerShape::Other => {}
        }
    }
    // A newline or spaces around it do not make a short secret long.
    if plaintext.trim_ascii().len() < MIN_HMAC_SECRET_BYTES {
        return Kind::Unreadable(format!(
            "the secret is no private key, and shorter than an HMAC key may be ({MIN_HMAC_SECRET_BYTES} bytes at least, \
             RFC 2104 §3): a short secret, such as a password, is not opened as a key"
        ));
    }
    Kind::Hmac(Zeroizing::new(plaintext.to_vec()))
}

/// How far bytes have the shape every private key form shares (PKCS#8, PKCS#1, SEC1): a DER SEQUENCE beginning
/// with the version, INTEGER 0 or 1. A random HMAC secret begins so by chance once in ~16 million.
enum DerShape {
    /// One such SEQUENCE, the whole of the bytes.
    Whole,
    /// The start of one, longer than the bytes.
    CutShort,
    /// Anything else.
    Other,
}

fn der_shape(der: &[u8]) -> DerShape {
    let (length, header) = match der {
        [0x30, short, ..] if *short < 0x80 => (usize::from(*short), 2),
        [0x30, 0x81, length, ..] => (usize::from(*length), 3),
        [0x30, 0x82, high, low, ..] => (usize::from(*high) << 8 | usize::from(*low), 4),
        _ => return DerShape::Other,
    };
    if !matches!(der.get(header..header + 3), Some([0x02, 0x01, 0x00 | 0x01])) {
        return DerShape::Other;
    }
    match (header + length).cmp(&der.len()) {
        std::cmp::Ordering::Equal => DerShape::Whole,
        std::cmp::Ordering::Greater => DerShape::CutShort,
        std::cmp::Ordering::Less => DerShape::Other,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

fn read_pem(pem: &[u8]) -> Kind {
    if contains(pem, b"-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        return Kind::Unreadable(
            "the secret is an encrypted (password-protected) private key: KMS already protects it, so store it \
             unencrypted (`openssl pkcs8 -topk8 -nocrypt`)"
                .into(),
        );
    }
    if contains(pem, b"-----BEGIN OPENSSH PRIVATE KEY-----") {
        return Kind::Unreadable(format!(
            "the secret is an OpenSSH private key: store it as PKCS#8 PEM (`ssh-keygen -p -m PKCS8 -f <file>`); \
             {SUPPORTED}"
        ));
    }
    // A bundle of keys is ambiguous: which one the guest signs with must not depend on their order.
    let keys = PrivateKeyDer::pem_slice_iter(pem).filter(Result::is_ok).count();
    if keys > 1 {
        return Kind::Unreadable(format!("the secret is PEM with {keys} private keys: keep the one to sign with"));
    }
    match PrivateKeyDer::from_pem_slice(pem) {
        Ok(mut der) => {
            let kind = from_der(&der).unwrap_or_else(Kind::Unreadable);
            der.zeroize();
            kind
        }
        Err(_) => Kind::Unreadable(format!(
            "the secret is PEM but holds no private key that can be read (PRIVATE KEY, RSA PRIVATE KEY or EC \
             PRIVATE KEY); {SUPPORTED}"
        )),
    }
}

/// A DER key in any of the three forms, or why it cannot be used.
fn read_der(der: &[u8]) -> Kind {
    let forms = [
        PrivateKeyDer::Pkcs8(der.to_vec().into()),
        PrivateKeyDer::Pkcs1(der.to_vec().into()),
        PrivateKeyDer::Sec1(der.to_vec().into()),
    ];
    let mut found = None;
    for mut form in forms {
        if found.is_none()
            && let Ok(kind) = from_der(&form)
        {
            found = Some(kind);
        }
        form.zeroize();
    }
    found.unwrap_or_else(|| Kind::Unreadable(why_unusable(der)))
}

fn from_der(der: &PrivateKeyDer<'_>) -> Result<Kind, String> {
    let rng = rand::SystemRandom::new();
    match der {
        PrivateKeyDer::Pkcs8(pkcs8) => {
            from_pkcs8(pkcs8.secret_pkcs8_der(), &rng).ok_or_else(|| why_unusable(pkcs8.secret_pkcs8_der()))
        }
        PrivateKeyDer::Pkcs1(pkcs1) => RsaKeyPair::from_der(pkcs1.secret_pkcs1_der()).map(Kind::Rsa).map_err(|e| {
            format!("the secret is an RSA private key that cannot be used ({}); {SUPPORTED}", rsa_reason(&e))
        }),
        PrivateKeyDer::Sec1(sec1) => sec1_to_pkcs8(sec1.secret_sec1_der())
            .and_then(|pkcs8| ecdsa_p256(&pkcs8, &rng))
            .ok_or_else(|| why_unusable(sec1.secret_sec1_der())),
        _ => Err(format!("the secret is a private key of a form that cannot be read; {SUPPORTED}")),
    }
}

fn from_pkcs8(pkcs8: &[u8], rng: &SystemRandom) -> Option<Kind> {
    if let Ok(key) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8) {
        return Some(Kind::Ed25519(key));
    }
    ecdsa_p256(pkcs8, rng).or_else(|| RsaKeyPair::from_pkcs8(pkcs8).ok().map(Kind::Rsa))
}

/// Why a private key in DER cannot be used, from the algorithm or curve it names (its OID, found in its bytes).
fn why_unusable(der: &[u8]) -> String {
    let names = |oid: &[u8]| der.windows(oid.len()).any(|w| w == oid);
    let what = if names(&[0x2b, 0x81, 0x04, 0x00, 0x22]) {
        "an EC private key on P-384, which is not supported".into()
    } else if names(&[0x2b, 0x81, 0x04, 0x00, 0x23]) {
        "an EC private key on P-521, which is not supported".into()
    } else if names(&[0x2b, 0x81, 0x04, 0x00, 0x0a]) {
        "an EC private key on secp256k1, which is not supported".into()
    } else if names(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]) {
        "a P-256 private key that cannot be used: it must carry its public key (`openssl ec` without -no_public)".into()
    } else if names(&[0x2b, 0x65, 0x71]) {
        "an Ed448 private key, which is not supported".into()
    } else if names(&[0x2b, 0x65, 0x6e]) || names(&[0x2b, 0x65, 0x6f]) {
        "an X25519 or X448 key, which signs nothing".into()
    } else if names(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01]) {
        let reason = RsaKeyPair::from_pkcs8(der).err().map_or_else(|| "malformed".into(), |e| rsa_reason(&e));
        format!("an RSA private key that cannot be used ({reason})")
    } else {
        "DER that is not a private key that can be read".into()
    };
    format!("the secret is {what}; {SUPPORTED}")
}

/// ring's reason for refusing an RSA key, in words.
fn rsa_reason(error: &ring::error::KeyRejected) -> String {
    match error.to_string().as_str() {
        "TooSmall" => "smaller than 2048 bits".into(),
        "TooLarge" => "larger than 8192 bits".into(),
        other => format!("ring: {other}"),
    }
}

fn ecdsa_p256(pkcs8: &[u8], rng: &SystemRandom) -> Option<Kind> {
    let fixed = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, rng).ok()?;
    let der = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8, rng).ok()?;
    Some(Kind::EcdsaP256 { fixed: Box::new(fixed), der: Box::new(der) })
}

/// A SEC1 `ECPrivateKey` as the PKCS#8 `PrivateKeyInfo` ring reads (RFC 5915 §2 in RFC 5208 §5), claiming P-256:
/// ring checks the curve against the key's own parameters and its length.
fn sec1_to_pkcs8(sec1: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    use pkcs8::der::Encode as _;
    const EC_PUBLIC_KEY: pkcs8::ObjectIdentifier = pkcs8::ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
    const P256: pkcs8::ObjectIdentifier = pkcs8::ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
    let info = pkcs8::PrivateKeyInfo {
        algorithm: pkcs8::AlgorithmIdentifierRef { oid: EC_PUBLIC_KEY, parameters: Some((&P256).into()) },
        private_key: sec1,
        public_key: None,
    };
    info.to_der().ok().map(Zeroizing::new)
}

#[cfg(test)]
mod tests;
