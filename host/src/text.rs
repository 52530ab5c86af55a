//! Text keyward reads from files and callers (events, key files): UTF-8, with a leading UTF-8 byte-order mark (as
//! Windows editors write) skipped, and UTF-16 named as such rather than reported as a bad byte.

/// A file's bytes, refused when there are more than `max` (`/dev/zero` would never end).
///
/// # Errors
/// The OS's error, or one saying the file is larger than `max`.
pub(crate) fn read_bounded(path: &std::path::Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        let size = if max >= 1 << 20 { format!("{} MiB", max >> 20) } else { format!("{} KiB", max >> 10) };
        return Err(std::io::Error::other(format!("it is larger than {size}")));
    }
    Ok(bytes)
}

/// Why bytes are not UTF-8 text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// The bytes start with a UTF-16 byte-order mark, or look like UTF-16 (NUL bytes between ASCII ones).
    #[error("it is UTF-16, not UTF-8: save it as UTF-8")]
    Utf16,
    /// A byte sequence that is not UTF-8.
    #[error("it is not UTF-8 (invalid byte at offset {0})")]
    NotUtf8(usize),
}

const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";

/// `bytes` as UTF-8 text, without a leading byte-order mark.
///
/// # Errors
/// [`TextError::Utf16`] for UTF-16 (with or without its byte-order mark), [`TextError::NotUtf8`] otherwise, with
/// the offset of the first bad byte in `bytes`.
pub fn utf8(bytes: &[u8]) -> Result<&str, TextError> {
    if bytes.starts_with(b"\xff\xfe") || bytes.starts_with(b"\xfe\xff") || looks_like_utf16(bytes) {
        return Err(TextError::Utf16);
    }
    let (skipped, rest) = match bytes.strip_prefix(UTF8_BOM) {
        Some(rest) => (UTF8_BOM.len(), rest),
        None => (0, bytes),
    };
    std::str::from_utf8(rest).map_err(|e| TextError::NotUtf8(skipped + e.valid_up_to()))
}

/// ASCII text in UTF-16 has a NUL byte beside every character.
fn looks_like_utf16(bytes: &[u8]) -> bool {
    bytes.len() >= 4
        && ((bytes[1] == 0 && bytes[3] == 0 && bytes[0] != 0) || (bytes[0] == 0 && bytes[2] == 0 && bytes[1] != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bom_is_skipped_and_utf16_named() {
        assert_eq!(utf8(b"\xef\xbb\xbf{\"a\":1}"), Ok("{\"a\":1}"));
        assert_eq!(utf8(b"{}"), Ok("{}"));
        assert_eq!(utf8(b"\xff\xfe{\0}\0"), Err(TextError::Utf16));
        assert_eq!(utf8(b"{\0\"\0a\0"), Err(TextError::Utf16), "UTF-16LE without a BOM");
        assert_eq!(utf8(b"\xef\xbb\xbf{\xff}"), Err(TextError::NotUtf8(4)), "offsets count the BOM");
    }
}
