//! Sealed files: secrets too large for an environment variable or for KMS Encrypt's 4 KB (a certificate chain, a
//! service account's JSON), shipped in the function's package and opened by the host with one decrypt of their
//! data key (`KEYWARD_SOURCE_<NAME>=sealed:<path>`).
//!
//! Envelope encryption: `keyward seal` asks the key service for a fresh 256-bit data key (KMS GenerateDataKey, or
//! the local key), encrypts the file under it with AES-256-GCM, and stores the data key only as the key service's
//! ciphertext of it, bound to the encryption context the host stamps (`function={function_name}`,
//! `component={component}`): a sealed file copied into another function does not open there.
//!
//! The AWS Encryption SDK's message format was the first choice; its Rust implementation (`aws-esdk`) is
//! generated from Dafny and brings aws-lc and clients keyward does not use, several megabytes for a reader of one
//! message type. This is the minimal format of keyward's own, version 1 (all of it authenticated; numbers are
//! big-endian):
//!
//! ```text
//! offset  size   field
//! 0       4      magic "kwsf"
//! 4       1      version (1)
//! 5       1      suite (1: AES-256-GCM, 96-bit nonce, 128-bit tag, the data key used as it is)
//! 6       2      n, the length of the encrypted data key (1 to 6144, KMS's largest ciphertext blob)
//! 8       n      the encrypted data key: the key service's ciphertext of the 32-byte data key
//! 8+n     12     nonce (random; a data key seals one file, once)
//! 20+n    m+16   AES-256-GCM ciphertext and tag of the file's m bytes (at most 1 MiB); associated data: bytes 0..20+n
//! ```
//!
//! The encryption context is not stored: the host knows the one it stamps, and the key service checks it when it
//! decrypts the data key. Parsing is fuzzed (the tests below): no input panics, and no altered byte opens.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use std::path::Path;

use zeroize::Zeroizing;

use super::Plaintext;

const MAGIC: &[u8; 4] = b"kwsf";
const VERSION: u8 = 1;
const SUITE_AES_256_GCM: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// The length of a data key, in bytes (AES-256).
pub const DATA_KEY_LEN: usize = 32;
/// The longest encrypted data key, in bytes: KMS's largest `CiphertextBlob`.
pub const MAX_ENCRYPTED_DATA_KEY_LEN: usize = 6144;
/// The most a sealed file holds, in bytes: 1 MiB.
pub const MAX_SEALED_PLAINTEXT: usize = 1 << 20;
/// The longest a sealed file can be, in bytes: the largest header and the largest body.
pub const MAX_SEALED_FILE_LEN: usize = 8 + MAX_ENCRYPTED_DATA_KEY_LEN + NONCE_LEN + MAX_SEALED_PLAINTEXT + TAG_LEN;

/// Why bytes are not a sealed file, or do not open. Messages describe the structure, never the content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealedError {
    /// Not a sealed file at all.
    #[error("not a keyward sealed file (it does not begin with \"kwsf\"): seal it with `keyward seal`")]
    NotSealed,
    /// A version or suite this host does not know.
    #[error(
        "sealed file version {version}, suite {suite} is not one this host reads (version 1, suite 1): a newer keyward \
         wrote it, or it is damaged (seal it again)"
    )]
    Unsupported {
        /// The version byte.
        version: u8,
        /// The suite byte.
        suite: u8,
    },
    /// Shorter than its header says, or longer than a sealed file can be.
    #[error("malformed sealed file: {0}")]
    Malformed(String),
    /// The plaintext is over [`MAX_SEALED_PLAINTEXT`].
    #[error("{0} bytes is too much to seal: a sealed file holds at most 1 MiB ({MAX_SEALED_PLAINTEXT} bytes)")]
    TooLarge(usize),
    /// The data key the key service returned is not 32 bytes.
    #[error("the data key is {0} bytes, not 32: the encrypted data key is not one `keyward seal` made")]
    DataKey(usize),
    /// Authentication failed.
    #[error("altered after sealing (authentication failed): seal it again")]
    Tampered,
    /// The OS random source failed.
    #[error("the system random source failed: {0}")]
    Random(String),
    /// The file could not be read (or is larger than a sealed file can be).
    #[error("sealed file {0}")]
    Io(String),
}

/// A sealed file's parts, borrowed from its bytes.
#[derive(Debug, Clone, Copy)]
pub struct Sealed<'a> {
    header: &'a [u8],
    encrypted_data_key: &'a [u8],
    nonce: &'a [u8],
    body: &'a [u8],
}

impl<'a> Sealed<'a> {
    /// The parts of `bytes`, checked for shape (not yet for authenticity: that is [`Sealed::open`]).
    ///
    /// # Errors
    /// [`SealedError::NotSealed`], [`SealedError::Unsupported`] or [`SealedError::Malformed`].
    pub fn parse(bytes: &'a [u8]) -> Result<Self, SealedError> {
        if !bytes.starts_with(MAGIC) {
            return Err(SealedError::NotSealed);
        }
        if bytes.len() > MAX_SEALED_FILE_LEN {
            return Err(SealedError::Malformed(format!(
                "{} bytes is longer than a sealed file can be ({MAX_SEALED_FILE_LEN})",
                bytes.len()
            )));
        }
        let [version, suite, high, low] = match bytes.get(4..8) {
            Some(&[version, suite, high, low]) => [version, suite, high, low],
            _ => return Err(SealedError::Malformed("cut short in its header".into())),
        };
        if (version, suite) != (VERSION, SUITE_AES_256_GCM) {
            return Err(SealedError::Unsupported { version, suite });
        }
        let key_len = usize::from(u16::from_be_bytes([high, low]));
        if !(1..=MAX_ENCRYPTED_DATA_KEY_LEN).contains(&key_len) {
            return Err(SealedError::Malformed(format!(
                "an encrypted data key of {key_len} bytes (1 to {MAX_ENCRYPTED_DATA_KEY_LEN})"
            )));
        }
        let header_len = 8 + key_len + NONCE_LEN;
        if bytes.len() < header_len + TAG_LEN {
            return Err(SealedError::Malformed(format!(
                "{} bytes, shorter than its header and tag ({})",
                bytes.len(),
                header_len + TAG_LEN
            )));
        }
        let (header, body) = bytes.split_at(header_len);
        Ok(Self { header, encrypted_data_key: &header[8..8 + key_len], nonce: &header[8 + key_len..], body })
    }

    /// The key service's ciphertext of the data key: what the host asks the key service to decrypt.
    pub fn encrypted_data_key(&self) -> &'a [u8] {
        self.encrypted_data_key
    }

    /// The file, opened with `data_key` (the key service's plaintext of [`Sealed::encrypted_data_key`]).
    ///
    /// # Errors
    /// [`SealedError::DataKey`] for a data key that is not 32 bytes, [`SealedError::Tampered`] if any byte of the
    /// file was altered (or the data key is another file's).
    pub fn open(&self, data_key: &[u8]) -> Result<Plaintext, SealedError> {
        let cipher = cipher(data_key)?;
        let payload = Payload { msg: self.body, aad: self.header };
        let plaintext = cipher.decrypt(Nonce::from_slice(self.nonce), payload).map_err(|_| SealedError::Tampered)?;
        Ok(Plaintext::from(plaintext))
    }
}

/// Seals `plaintext` under `data_key`, storing `encrypted_data_key` (the key service's ciphertext of `data_key`)
/// in the header: the bytes of a sealed file.
///
/// # Errors
/// [`SealedError::TooLarge`] over 1 MiB, [`SealedError::Malformed`] for an encrypted data key of the wrong size,
/// [`SealedError::DataKey`], or [`SealedError::Random`] if no nonce can be made.
pub fn seal(plaintext: &[u8], data_key: &[u8], encrypted_data_key: &[u8]) -> Result<Vec<u8>, SealedError> {
    if plaintext.len() > MAX_SEALED_PLAINTEXT {
        return Err(SealedError::TooLarge(plaintext.len()));
    }
    let key_len = u16::try_from(encrypted_data_key.len())
        .ok()
        .filter(|len| (1..=MAX_ENCRYPTED_DATA_KEY_LEN).contains(&usize::from(*len)))
        .ok_or_else(|| {
            SealedError::Malformed(format!("an encrypted data key of {} bytes", encrypted_data_key.len()))
        })?;
    let cipher = cipher(data_key)?;
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| SealedError::Random(e.to_string()))?;
    let mut out = Vec::with_capacity(8 + encrypted_data_key.len() + NONCE_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[VERSION, SUITE_AES_256_GCM]);
    out.extend_from_slice(&key_len.to_be_bytes());
    out.extend_from_slice(encrypted_data_key);
    out.extend_from_slice(&nonce);
    let body = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad: &out })
        .map_err(|_| SealedError::TooLarge(plaintext.len()))?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// A new random data key, for sealing with the local key (KMS makes its own).
///
/// # Errors
/// [`SealedError::Random`] if the OS random source fails.
pub fn random_data_key() -> Result<Zeroizing<[u8; DATA_KEY_LEN]>, SealedError> {
    let mut key = Zeroizing::new([0u8; DATA_KEY_LEN]);
    getrandom::fill(key.as_mut()).map_err(|e| SealedError::Random(e.to_string()))?;
    Ok(key)
}

/// The bytes of the sealed file at `path`, refused unread if it is longer than a sealed file can be.
///
/// # Errors
/// [`SealedError::Io`], naming the file and what the OS said.
pub fn read_file(path: &Path) -> Result<Vec<u8>, SealedError> {
    let shown = path.display();
    let io = |e: std::io::Error| SealedError::Io(format!("{shown}: {e}"));
    // Checked before opening: opening a FIFO waits for a writer, forever.
    if !std::fs::metadata(path).map_err(io)?.is_file() {
        return Err(SealedError::Io(format!(
            "{shown} is not a regular file: a sealed file is one `keyward seal` wrote"
        )));
    }
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len > MAX_SEALED_FILE_LEN as u64 {
        return Err(SealedError::Io(format!(
            "{shown} is {len} bytes, longer than a sealed file can be ({MAX_SEALED_FILE_LEN}): seal at most 1 MiB"
        )));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_SEALED_FILE_LEN as u64 + 1), &mut bytes)
        .map_err(io)?;
    Ok(bytes)
}

fn cipher(data_key: &[u8]) -> Result<Aes256Gcm, SealedError> {
    if data_key.len() != DATA_KEY_LEN {
        return Err(SealedError::DataKey(data_key.len()));
    }
    Ok(Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(data_key)))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use secrecy::ExposeSecret as _;

    use super::*;

    const DATA_KEY: [u8; 32] = [7; 32];
    const EDK: &[u8] = b"the key service's ciphertext of the data key";

    #[test]
    fn a_sealed_file_opens_with_its_data_key_and_shows_its_parts() {
        let file = seal(b"-----BEGIN CERTIFICATE-----", &DATA_KEY, EDK).unwrap();
        assert_eq!(&file[..8], b"kwsf\x01\x01\x00\x2c");
        let sealed = Sealed::parse(&file).unwrap();
        assert_eq!(sealed.encrypted_data_key(), EDK);
        assert_eq!(sealed.open(&DATA_KEY).unwrap().expose_secret(), b"-----BEGIN CERTIFICATE-----");
        assert_eq!(Sealed::parse(&file).unwrap().open(&[8; 32]).unwrap_err(), SealedError::Tampered);
        assert_eq!(sealed.open(&[7; 16]).unwrap_err(), SealedError::DataKey(16));
        // Empty and largest files seal; one byte more does not.
        let empty = seal(b"", &DATA_KEY, EDK).unwrap();
        assert!(Sealed::parse(&empty).unwrap().open(&DATA_KEY).unwrap().expose_secret().is_empty());
        let largest = vec![b'x'; MAX_SEALED_PLAINTEXT];
        let file = seal(&largest, &DATA_KEY, &[1; MAX_ENCRYPTED_DATA_KEY_LEN]).unwrap();
        assert_eq!(file.len(), MAX_SEALED_FILE_LEN);
        assert_eq!(Sealed::parse(&file).unwrap().open(&DATA_KEY).unwrap().expose_secret().len(), largest.len());
        let over = vec![b'x'; MAX_SEALED_PLAINTEXT + 1];
        assert_eq!(seal(&over, &DATA_KEY, EDK).unwrap_err(), SealedError::TooLarge(MAX_SEALED_PLAINTEXT + 1));
        assert!(matches!(seal(b"x", &DATA_KEY, b""), Err(SealedError::Malformed(_))));
        assert!(matches!(seal(b"x", &DATA_KEY, &[1; MAX_ENCRYPTED_DATA_KEY_LEN + 1]), Err(SealedError::Malformed(_))));
    }

    #[test]
    fn each_malformation_is_named() {
        let file = seal(b"secret", &DATA_KEY, EDK).unwrap();
        assert_eq!(Sealed::parse(b"kwl\x01").unwrap_err(), SealedError::NotSealed);
        assert_eq!(Sealed::parse(b"").unwrap_err(), SealedError::NotSealed);
        let mut newer = file.clone();
        newer[4] = 2;
        assert_eq!(
            Sealed::parse(&newer).unwrap_err().to_string(),
            "sealed file version 2, suite 1 is not one this host reads (version 1, suite 1): a newer keyward wrote it, or \
             it is damaged (seal it again)"
        );
        let cases: [(&[u8], &str); 4] = [
            (b"kwsf\x01", "malformed sealed file: cut short in its header"),
            (b"kwsf\x01\x01\x00\x00", "malformed sealed file: an encrypted data key of 0 bytes (1 to 6144)"),
            (b"kwsf\x01\x01\x18\x01", "malformed sealed file: an encrypted data key of 6145 bytes (1 to 6144)"),
            (&file[..79], "malformed sealed file: 79 bytes, shorter than its header and tag (80)"),
        ];
        for (bytes, expected) in cases {
            assert_eq!(Sealed::parse(bytes).unwrap_err().to_string(), expected);
        }
        let mut long = b"kwsf".to_vec();
        long.resize(MAX_SEALED_FILE_LEN + 1, 0);
        assert!(Sealed::parse(&long).unwrap_err().to_string().contains("longer than a sealed file can be"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Fuzzing the reader: any bytes (most beginning with the magic, so that the header's fields are
        /// reached) parse or are refused, without a panic; what parses does not open with a wrong key.
        #[test]
        fn any_bytes_parse_or_are_refused(tail in proptest::collection::vec(any::<u8>(), 0..200), magic in any::<bool>()) {
            let bytes = if magic { [MAGIC.as_slice(), &tail].concat() } else { tail };
            if let Ok(sealed) = Sealed::parse(&bytes) {
                prop_assert_eq!(sealed.open(&DATA_KEY).unwrap_err(), SealedError::Tampered);
            }
        }

        /// No altered byte, truncation or extension of a sealed file opens.
        #[test]
        fn no_altered_file_opens(
            plaintext in proptest::collection::vec(any::<u8>(), 0..300),
            at in any::<prop::sample::Index>(),
            flip in 1u8..=255,
            cut in any::<prop::sample::Index>(),
        ) {
            let file = seal(&plaintext, &DATA_KEY, EDK).unwrap();
            let opened = Sealed::parse(&file).unwrap().open(&DATA_KEY).unwrap();
            prop_assert_eq!(opened.expose_secret(), plaintext.as_slice());
            let mut altered = file.clone();
            altered[at.index(file.len())] ^= flip;
            let opens = |bytes: &[u8]| Sealed::parse(bytes).and_then(|s| s.open(&DATA_KEY)).is_ok();
            prop_assert!(!opens(&altered));
            prop_assert!(!opens(&file[..cut.index(file.len())]));
            prop_assert!(!opens(&[file.as_slice(), b"x"].concat()));
        }
    }
}
