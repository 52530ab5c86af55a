//! The one base64 policy of keyward: how a ciphertext kept in an env var is read, by the guest SDK, the host
//! (prefetch, per-secret settings, `keyward decrypt`) and the JavaScript guests (which carry the same rules in
//! JavaScript, tested against the same cases).
//!
//! It accepts what the classic pattern's Node.js handlers accepted with `Buffer.from(value, 'base64')`, so a
//! ciphertext that worked there works here: ASCII whitespace anywhere (line breaks of a wrapped value, spaces) is
//! ignored, and so is a leading byte-order mark (JavaScript runtimes drop it before a guest sees the value); the
//! standard (`+/`) and URL-safe (`-_`) alphabets are both read; padding is optional. Anything else is refused,
//! naming the byte offset (in the value without its byte-order mark): a character of neither alphabet, `=` before
//! the end, more than two `=`, and a single character left over at the end (it cannot encode a byte; Node drops
//! it silently).
#![warn(missing_docs)]

use base64::Engine as _;
use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Why a value is not base64, and where (a byte offset into the value as given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Byte offset of the offending character.
    pub offset: usize,
    /// What is wrong there.
    pub reason: Reason,
}

/// What is wrong at a [`DecodeError`]'s offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A byte that is in neither alphabet (the byte, if it is ASCII).
    InvalidCharacter(Option<char>),
    /// `=` where padding cannot be: before the end, or a third one.
    MisplacedPadding,
    /// One character left over at the end: six bits cannot make a byte.
    DanglingCharacter,
}

impl std::fmt::Display for DecodeError {
    /// The words are the same in the JavaScript guests' decoder (`guest/js/keyward.js`): a printable ASCII character is
    /// quoted as it is, any other byte given in hex.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let offset = self.offset;
        match self.reason {
            Reason::InvalidCharacter(Some(c)) if c.is_ascii_graphic() => {
                write!(f, "invalid character '{c}' at offset {offset}")
            }
            Reason::InvalidCharacter(Some(c)) => write!(f, "invalid byte 0x{:02x} at offset {offset}", c as u8),
            Reason::InvalidCharacter(None) => write!(f, "invalid non-ASCII byte at offset {offset}"),
            Reason::MisplacedPadding => write!(f, "misplaced '=' at offset {offset}"),
            Reason::DanglingCharacter => {
                write!(f, "a single character at offset {offset} ends the value, which cannot encode a byte")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes `text` under keyward's policy (see the crate docs).
///
/// # Errors
/// A [`DecodeError`] naming the first offending byte's offset.
pub fn decode(text: &str) -> Result<Vec<u8>, DecodeError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut symbols = Vec::with_capacity(text.len());
    let mut last_offset = 0;
    let mut padding = 0;
    let mut last_padding = 0;
    for (offset, byte) in text.bytes().enumerate() {
        if byte.is_ascii_whitespace() || byte == 0x0b {
            continue;
        }
        if byte == b'=' {
            padding += 1;
            if padding > 2 || symbols.is_empty() {
                return Err(DecodeError { offset, reason: Reason::MisplacedPadding });
            }
            last_padding = offset;
            continue;
        }
        if padding > 0 {
            return Err(DecodeError { offset: last_padding, reason: Reason::MisplacedPadding });
        }
        let symbol = match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'+' | b'/' => byte,
            b'-' => b'+',
            b'_' => b'/',
            _ => {
                let shown = byte.is_ascii().then_some(byte as char);
                return Err(DecodeError { offset, reason: Reason::InvalidCharacter(shown) });
            }
        };
        symbols.push(symbol);
        last_offset = offset;
    }
    if symbols.len() % 4 == 1 {
        return Err(DecodeError { offset: last_offset, reason: Reason::DanglingCharacter });
    }
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::RequireNone)
            .with_decode_allow_trailing_bits(true),
    );
    // Every symbol was checked above; the engine only assembles the bytes.
    LENIENT.decode(&symbols).map_err(|_| DecodeError { offset: last_offset, reason: Reason::DanglingCharacter })
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

    use super::*;

    const BYTES: &[u8] = &[0xfb, 0xff, 0xbf, 0x00, 0x10, 0x83, 0x10, 0x51, 0x87, 0x20, 0x92, 0x8b, 0x30];

    #[test]
    fn every_form_the_classic_handler_took_decodes() {
        let standard = STANDARD.encode(BYTES);
        let wrapped: String = standard.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c) + "\n").collect();
        for text in [
            standard.clone(),
            STANDARD_NO_PAD.encode(BYTES),
            URL_SAFE.encode(BYTES),
            URL_SAFE_NO_PAD.encode(BYTES),
            wrapped,
            standard.replace('\n', "\r\n"),
            format!("  \t{standard}\n"),
            format!("{}\r\n{}", &standard[..8], &standard[8..]),
        ] {
            assert_eq!(decode(&text).as_deref(), Ok(BYTES), "{text:?}");
        }
        assert_eq!(decode("").as_deref(), Ok(&[][..]));
        assert_eq!(decode(&format!("\u{feff}{standard}")).as_deref(), Ok(BYTES), "a leading byte-order mark");
        // Mixed alphabets, as Node reads them.
        assert_eq!(decode("-/+_"), decode("+/+/"));
    }

    #[test]
    fn the_rest_is_refused_naming_the_offset() {
        let cases = [
            ("QUJD%RA==", "invalid character '%' at offset 4"),
            ("QUJDRA==QQ", "misplaced '=' at offset 7"),
            ("QQ== QQ", "misplaced '=' at offset 3"),
            ("QUJD\u{1}", "invalid byte 0x01 at offset 4"),
            ("QUJD'", "invalid character ''' at offset 4"),
            ("\u{feff}QU%JD", "invalid character '%' at offset 2"),
            ("QUJDRA===", "misplaced '=' at offset 8"),
            ("=QUJD", "misplaced '=' at offset 0"),
            ("QUJDR", "a single character at offset 4 ends the value, which cannot encode a byte"),
            ("QUJD\u{e9}A==", "invalid non-ASCII byte at offset 4"),
            ("QU.JD", "invalid character '.' at offset 2"),
        ];
        for (text, expected) in cases {
            assert_eq!(decode(text).unwrap_err().to_string(), expected, "{text:?}");
        }
    }
}
