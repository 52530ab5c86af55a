//! Masking: the net under careless code. A guest that prints its secret, or puts it in its error, in any of the
//! forms careless programs produce, does not put it in the host's log or in the function error.
//!
//! For each plaintext (at least [`MIN_MASKED_LEN`] bytes), these forms are replaced by `[REDACTED]`:
//! - the bytes as they are, with surrounding whitespace trimmed (ASCII or Unicode), and as lossy UTF-8;
//! - each of those JSON-escaped (as `serde_json` and `JSON.stringify` write it; with non-ASCII as `\u00e4`, as
//!   Python writes it; with `<`, `>`, `&` as `\u003c`, as Go writes it; and escaped twice, as JSON inside JSON) and
//!   Rust-escaped (`{:?}`);
//! - base64 (standard and URL-safe, with and without padding) and hex (lower and upper case) of the secret and of
//!   its trimmed form;
//! - each line of a multi-line secret (a PEM key), if the line has at least [`MIN_MASKED_LINE_LEN`] bytes.
//!
//! A secret that is not UTF-8 (a DER key, random bytes) is text only by accident: of its text forms only the lossy
//! UTF-8 and its JSON escape (`serde_json`'s) are masked, not the other escapes of it, which are several times its
//! size each and would make its matcher that much larger.
//!
//! Overlapping matches (two secrets that share bytes, printed joined) are masked as one.
//!
//! A guest that means to leak can always encode its way around this (reverse the bytes, XOR them): masking is a
//! net for mistakes. What keeps secrets in is isolation and credentials.
//!
//! Two places use it: each invocation masks its guest's stdout, stderr and error message with the plaintexts that
//! invocation was handed, and the host's log writer ([`crate::logging::MaskingWriter`]) masks every log line with
//! every plaintext the process holds at the time ([`held_masker`]: in the cache, or handed to a running
//! invocation), whatever wrote the line.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError, RwLock};

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Shorter plaintexts are not masked: a 1–3 byte "secret" would mask ordinary text everywhere.
pub const MIN_MASKED_LEN: usize = 4;
/// Shorter lines of a multi-line secret are not masked on their own (a PEM's lines are 64 characters).
pub const MIN_MASKED_LINE_LEN: usize = 8;
/// What a masked form is replaced by.
pub const MASK: &str = "[REDACTED]";

/// Every form of `secret` that is masked (see the module docs), each at least [`MIN_MASKED_LEN`] bytes, without
/// repeats.
fn forms(secret: &[u8]) -> Vec<Zeroizing<Vec<u8>>> {
    if secret.len() < MIN_MASKED_LEN {
        return Vec::new();
    }
    let mut forms: Vec<Zeroizing<Vec<u8>>> = Vec::new();
    let mut push = |form: Vec<u8>| forms.push(Zeroizing::new(form));
    let lossy = Zeroizing::new(String::from_utf8_lossy(secret).into_owned());
    if std::str::from_utf8(secret).is_ok() {
        for text in [lossy.as_str(), lossy.trim_ascii(), lossy.trim()] {
            push(text.as_bytes().to_vec());
            let json = json_escaped(text, false, false);
            push(json_escaped(&json, false, false).into_bytes());
            push(json.into_bytes());
            push(json_escaped(text, true, false).into_bytes());
            push(json_escaped(text, false, true).into_bytes());
            let debug = format!("{text:?}");
            push(debug.as_bytes()[1..debug.len() - 1].to_vec());
        }
    } else {
        push(lossy.as_bytes().to_vec());
        push(json_escaped(&lossy, false, false).into_bytes());
    }
    for bytes in [secret, secret.trim_ascii()] {
        push(bytes.to_vec());
        for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
            push(engine.encode(bytes).into_bytes());
        }
        let hex = Zeroizing::new(crate::secrets::hex(bytes));
        push(hex.to_ascii_uppercase().into_bytes());
        push(hex.as_bytes().to_vec());
    }
    for line in secret.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() >= MIN_MASKED_LINE_LEN && line.len() < secret.len() {
            push(line.to_vec());
        }
    }
    forms.retain(|form| form.len() >= MIN_MASKED_LEN);
    forms.sort_by(|a, b| a.as_slice().cmp(b.as_slice()));
    forms.dedup_by(|a, b| a.as_slice() == b.as_slice());
    forms
}

/// `text` as it stands between the quotes of a JSON string: as `serde_json` writes it, or with every non-ASCII
/// character as `\uXXXX` (Python's `ensure_ascii`), or with `<`, `>`, `&`, U+2028 and U+2029 as `\uXXXX` (Go).
fn json_escaped(text: &str, ascii_only: bool, html_safe: bool) -> String {
    let plain = serde_json::to_string(text).unwrap_or_default();
    let plain = &plain[1..plain.len() - 1];
    if !ascii_only && !html_safe {
        return plain.to_string();
    }
    let mut out = String::with_capacity(plain.len());
    for c in plain.chars() {
        let escape =
            (ascii_only && !c.is_ascii()) || (html_safe && matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}'));
        if escape {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Masks every form of a set of secrets in text.
///
/// The matcher (aho-corasick) keeps its own copy of the forms, which is freed but not zeroized when the masker is
/// dropped; the forms keyward builds to make it are zeroized.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    /// `None` without secrets. `Err` if the matcher could not be built: then everything is withheld.
    matcher: Option<Result<AhoCorasick, ()>>,
    /// Bytes of the longest form.
    longest: usize,
}

impl Masker {
    /// A masker for `secrets` (plaintexts).
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut patterns: Vec<Zeroizing<Vec<u8>>> = secrets.into_iter().flat_map(forms).collect();
        if patterns.is_empty() {
            return Self::default();
        }
        patterns.sort_by(|a, b| a.as_slice().cmp(b.as_slice()));
        patterns.dedup_by(|a, b| a.as_slice() == b.as_slice());
        let longest = patterns.iter().map(|p| p.len()).max().unwrap_or(0);
        // Every match, overlapping ones too: their spans are merged, so secrets sharing bytes are masked as one.
        // A contiguous NFA, not the DFA aho-corasick would pick for few patterns: a DFA's size grows with the forms'
        // bytes times their byte classes, ~50 KB per byte of a binary secret (200 MB for a 4 KiB key), where the
        // NFA's stays a few bytes per byte of form.
        let built = AhoCorasick::builder()
            .kind(Some(AhoCorasickKind::ContiguousNFA))
            .match_kind(MatchKind::Standard)
            .build(patterns.iter().map(|p| p.as_slice()))
            .map_err(|_| ());
        Self { matcher: Some(built), longest }
    }

    /// Heap bytes the matcher holds.
    pub fn memory_usage(&self) -> usize {
        match &self.matcher {
            Some(Ok(matcher)) => matcher.memory_usage(),
            _ => 0,
        }
    }

    /// Whether there is anything to mask.
    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    /// Bytes of the longest form masked: a form that starts within a window is seen whole only if the input
    /// reaches this far past the window's end.
    pub fn longest_form(&self) -> usize {
        self.longest
    }

    /// Whether `input` holds a form of a secret (or could not be checked: then it is treated as holding one).
    pub fn finds(&self, input: &[u8]) -> bool {
        match &self.matcher {
            None => false,
            Some(Ok(matcher)) => matcher.is_match(input),
            Some(Err(())) => true,
        }
    }

    /// `input` with every form of every secret replaced by [`MASK`].
    pub fn bytes<'b>(&self, input: &'b [u8]) -> Cow<'b, [u8]> {
        self.bytes_within(input, input.len())
    }

    /// The first `window` bytes of `input`, masked: a form that starts within the window is masked whole even
    /// where it runs past its end (`input` should hold [`Masker::longest_form`] bytes more than the window, where
    /// it has them), and nothing past the window is shown.
    pub fn bytes_within<'b>(&self, input: &'b [u8], window: usize) -> Cow<'b, [u8]> {
        self.mask_within(input, window).0
    }

    /// [`Masker::bytes_within`], how far into `input` it went (the window's end, or past it to the end of a form
    /// that started within the window), and where the last masked run starts if it runs past the window.
    fn mask_within<'b>(&self, input: &'b [u8], window: usize) -> (Cow<'b, [u8]>, usize, Option<usize>) {
        let window = window.min(input.len());
        let shown = &input[..window];
        let matcher = match &self.matcher {
            None => return (Cow::Borrowed(shown), window, None),
            Some(Ok(matcher)) => matcher,
            // Fail closed: nothing is shown that could not be checked.
            Some(Err(())) => return (Cow::Borrowed(WITHHELD), input.len(), None),
        };
        let mut found: Vec<(usize, usize)> =
            matcher.find_overlapping_iter(input).filter(|m| m.start() < window).map(|m| (m.start(), m.end())).collect();
        if found.is_empty() {
            return (Cow::Borrowed(shown), window, None);
        }
        found.sort_unstable();
        let mut spans: Vec<(usize, usize)> = Vec::with_capacity(found.len());
        for (start, end) in found {
            match spans.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => spans.push((start, end)),
            }
        }
        let crossing = spans.last().filter(|(_, end)| *end > window).map(|(start, _)| *start);
        let mut out = Vec::with_capacity(shown.len());
        let mut at = 0;
        for (start, end) in spans {
            out.extend_from_slice(&input[at..start]);
            out.extend_from_slice(MASK.as_bytes());
            at = end;
        }
        if at < window {
            out.extend_from_slice(&input[at..window]);
        }
        (Cow::Owned(out), at.max(window), crossing)
    }

    /// As [`Masker::bytes`], for text (bytes that are not UTF-8 are shown as `\u{FFFD}`).
    pub fn text(&self, input: &str) -> String {
        String::from_utf8_lossy(&self.bytes(input.as_bytes())).into_owned()
    }
}

/// What is shown of input a masker that could not be built cannot check.
const WITHHELD: &[u8] = b"[output withheld: it could not be checked for secrets]";

/// Masks a stream (a response body) chunk by chunk, holding back the last [`Masker::longest_form`] bytes less one
/// of what it was given, so that a form split across chunks is masked whole. What it holds is bounded by that.
#[derive(Debug)]
pub struct MaskStream {
    masker: Arc<Masker>,
    held: Vec<u8>,
}

impl MaskStream {
    /// A stream masked with `masker`.
    pub fn new(masker: Arc<Masker>) -> Self {
        Self { masker, held: Vec::new() }
    }

    /// What can be shown of the stream once `chunk` is added, masked (maybe nothing yet).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.held.extend_from_slice(chunk);
        let window = self.held.len().saturating_sub(self.masker.longest_form().saturating_sub(1));
        self.take(window)
    }

    /// The rest of the stream, masked: what was held back.
    pub fn finish(&mut self) -> Vec<u8> {
        self.take(self.held.len())
    }

    fn take(&mut self, window: usize) -> Vec<u8> {
        if window == 0 {
            return Vec::new();
        }
        let (shown, consumed, crossing) = self.masker.mask_within(&self.held, window);
        // A masked run that ends past the window may be followed by a form overlapping it whose end has not come
        // yet: hold the run back whole, to be masked with it (up to a bound, past which the run is shown masked).
        let bound = 4 * self.masker.longest_form().max(1024);
        if let Some(start) = crossing.filter(|&start| window < self.held.len() && self.held.len() - start <= bound) {
            let shown = self.masker.mask_within(&self.held, start).0.into_owned();
            self.held.drain(..start);
            return shown;
        }
        let shown = shown.into_owned();
        self.held.drain(..consumed);
        shown
    }
}

/// The plaintexts the process holds now (each with a count of holders), and a masker built from them when a log
/// line next needs one.
#[derive(Default)]
struct HeldSet {
    secrets: Mutex<HashMap<[u8; 32], HeldSecret>>,
    /// `None` when the set changed since the masker was built.
    masker: RwLock<Option<Arc<Masker>>>,
}

struct HeldSecret {
    bytes: Zeroizing<Vec<u8>>,
    holders: usize,
}

static HELD: LazyLock<HeldSet> = LazyLock::new(HeldSet::default);

/// Keeps a plaintext in the set every host log line is masked with ([`held_masker`]), until dropped.
#[derive(Debug)]
pub struct Held {
    digest: Option<[u8; 32]>,
}

/// Adds `secret` to the set every host log line is masked with; it leaves the set when the returned guard is
/// dropped (and every other guard of the same secret is).
pub fn hold(secret: &[u8]) -> Held {
    if secret.len() < MIN_MASKED_LEN {
        return Held { digest: None };
    }
    let digest: [u8; 32] = Sha256::digest(secret).into();
    let mut secrets = HELD.secrets.lock().unwrap_or_else(PoisonError::into_inner);
    let entry =
        secrets.entry(digest).or_insert_with(|| HeldSecret { bytes: Zeroizing::new(secret.to_vec()), holders: 0 });
    entry.holders += 1;
    if entry.holders == 1 {
        *HELD.masker.write().unwrap_or_else(PoisonError::into_inner) = None;
    }
    Held { digest: Some(digest) }
}

impl Drop for Held {
    fn drop(&mut self) {
        let Some(digest) = self.digest else { return };
        let mut secrets = HELD.secrets.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = secrets.get_mut(&digest) {
            entry.holders -= 1;
            if entry.holders == 0 {
                secrets.remove(&digest);
                *HELD.masker.write().unwrap_or_else(PoisonError::into_inner) = None;
            }
        }
    }
}

/// A masker for every plaintext the process holds now.
pub fn held_masker() -> Arc<Masker> {
    if let Some(masker) = HELD.masker.read().unwrap_or_else(PoisonError::into_inner).as_ref() {
        return masker.clone();
    }
    let secrets = HELD.secrets.lock().unwrap_or_else(PoisonError::into_inner);
    let masker = Arc::new(Masker::new(secrets.values().map(|held| held.bytes.as_slice())));
    *HELD.masker.write().unwrap_or_else(PoisonError::into_inner) = Some(masker.clone());
    masker
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "pa\"ss\\word-123\nline2-of-the-secret";

    /// How careless programs print a secret.
    fn careless_forms(secret: &str) -> Vec<String> {
        let bytes = secret.as_bytes();
        let mut printed = vec![
            secret.to_string(),
            format!("{secret:?}"),
            serde_json::json!({ "password": secret }).to_string(),
            STANDARD.encode(bytes),
            STANDARD_NO_PAD.encode(bytes),
            URL_SAFE.encode(bytes),
            URL_SAFE_NO_PAD.encode(bytes),
            crate::secrets::hex(bytes),
            crate::secrets::hex(bytes).to_uppercase(),
            format!("failed with {secret:?}"),
        ];
        printed.extend(secret.lines().map(|line| format!("> {line}")));
        printed
    }

    #[test]
    fn every_careless_form_is_masked() {
        let masker = Masker::new([SECRET.as_bytes()]);
        for printed in careless_forms(SECRET) {
            let masked = masker.text(&format!("log: {printed} end"));
            assert!(masked.contains(MASK), "{printed:?} -> {masked:?}");
            for piece in ["ss\\", "word-123", "line2-of", &STANDARD_NO_PAD.encode(SECRET)[..12]] {
                assert!(!masked.contains(piece), "{printed:?} -> {masked:?} still holds {piece:?}");
            }
        }
    }

    #[test]
    fn escapes_other_languages_write_are_masked() {
        let masker = Masker::new(["kä<y>&\"pw\n".as_bytes()]);
        for printed in [
            r#"python: k\u00e4<y>&\"pw\n"#,
            r#"go: kä\u003cy\u003e\u0026\"pw\n"#,
            r#"nested: kä<y>&\\\"pw\\n"#,
            r#"trimmed: kä<y>&\"pw"#,
            "unicode-trimmed: \u{a0}kä<y>&\"pw\u{a0}",
        ] {
            let masked = masker.text(printed);
            assert!(masked.ends_with(MASK) || masked.contains(&format!("{MASK}\u{a0}")), "{printed} -> {masked}");
        }
    }

    #[test]
    fn overlapping_secrets_are_masked_as_one() {
        let masker = Masker::new([b"token-ABCDEF".as_slice(), b"ABCDEF-key-123456"]);
        assert_eq!(masker.text("joined: token-ABCDEF-key-123456."), "joined: [REDACTED].");
        let masker = Masker::new([b"abcd".as_slice(), b"bcdefghijklmn"]);
        assert_eq!(masker.text("abcdefghijklmn"), "[REDACTED]");
    }

    /// A binary secret (a DER key, random bytes) makes many byte classes: the matcher's memory must still grow only
    /// with the forms' bytes (a DFA took ~200 MB for a 4 KiB one, enough to end a 128 MB Lambda).
    #[test]
    fn a_binary_secret_costs_memory_in_proportion_to_its_size() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let secret: Vec<u8> = (0..4096)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let masker = Masker::new([secret.as_slice()]);
        assert!(masker.memory_usage() < 2 << 20, "{} bytes", masker.memory_usage());
        let printed = format!("key: {}", base64::engine::general_purpose::STANDARD.encode(&secret));
        assert_eq!(masker.text(&printed), format!("key: {MASK}"));
    }

    /// A form split anywhere across chunks is masked as if the stream were one piece.
    #[test]
    fn streams_are_masked_across_chunk_boundaries() {
        let masker = Arc::new(Masker::new([b"sk_live_0123456789".as_slice()]));
        let body =
            b"{\"headers\":{\"Authorization\":\"Bearer sk_live_0123456789\",\"b64\":\"c2tfbGl2ZV8wMTIzNDU2Nzg5\"}}";
        let whole = masker.bytes(body).into_owned();
        assert!(!String::from_utf8_lossy(&whole).contains("sk_live"), "{}", String::from_utf8_lossy(&whole));
        for size in [1, 2, 3, 7, 13, 64] {
            let mut stream = MaskStream::new(masker.clone());
            let mut out = Vec::new();
            for chunk in body.chunks(size) {
                out.extend(stream.push(chunk));
                assert!(stream.held.len() <= 4 * 1024, "holds a bounded tail");
            }
            out.extend(stream.finish());
            assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&whole), "chunks of {size}");
        }
    }

    /// Two secrets printed overlapping, the second's end in a later chunk, are masked as one, as whole text is.
    #[test]
    fn overlapping_secrets_split_across_chunks_are_masked_as_one() {
        let masker = Arc::new(Masker::new([b"tok-1234-XYZW".as_slice(), b"XYZW-5678-end"]));
        let body = b"before tok-1234-XYZW-5678-end after";
        let whole = masker.bytes(body).into_owned();
        assert_eq!(String::from_utf8_lossy(&whole), "before [REDACTED] after");
        for split in 1..body.len() {
            let mut stream = MaskStream::new(masker.clone());
            let mut out = stream.push(&body[..split]);
            out.extend(stream.push(&body[split..]));
            out.extend(stream.finish());
            assert_eq!(String::from_utf8_lossy(&out), "before [REDACTED] after", "split at {split}");
        }
    }

    #[test]
    fn trimmed_and_lossy_secrets_are_masked() {
        let masker = Masker::new([b"hunter2-admin\n".as_slice(), b"hunter2\xffTOPSECRET".as_slice()]);
        assert_eq!(masker.text("[hunter2-admin]"), "[[REDACTED]]");
        assert_eq!(masker.text("x hunter2\u{fffd}TOPSECRET y"), "x [REDACTED] y");
    }

    #[test]
    fn longest_first_and_short_secrets_are_left_alone() {
        let masker = Masker::new([b"hunter2".as_slice(), b"hunter2-admin", b"pw"]);
        assert_eq!(masker.text("a hunter2 b hunter2-admin c pw"), "a [REDACTED] b [REDACTED] c pw");
        assert_eq!(masker.text("hunter2hunter2"), "[REDACTED]", "matches that touch are masked as one");
        assert!(Masker::new([b"pw".as_slice()]).is_empty());
        assert_eq!(Masker::default().text("nothing to hide"), "nothing to hide");
    }

    #[test]
    fn held_secrets_mask_log_lines_until_released() {
        let secret = b"held-s3cret-for-the-log-writer";
        let text = "line with held-s3cret-for-the-log-writer";
        let first = hold(secret);
        let second = hold(secret);
        assert_eq!(held_masker().text(text), "line with [REDACTED]");
        drop(first);
        assert_eq!(held_masker().text(text), "line with [REDACTED]", "still held by the second guard");
        drop(second);
        assert_eq!(held_masker().text(text), text);
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Any secret (4 bytes or more), printed in any of the careless forms amid any text, is masked.
            #[test]
            fn any_secret_in_any_form_is_masked(
                secret in "[ -~\n]{4,40}",
                before in "[ -~]{0,20}",
                after in "[ -~]{0,20}",
                form in any::<prop::sample::Index>(),
            ) {
                let forms = careless_forms(&secret);
                let printed = &forms[form.index(forms.len())];
                let masked = Masker::new([secret.as_bytes()]).text(&format!("{before}{printed}{after}"));
                // The secret itself may be written within the text around it by chance; the form must be gone.
                prop_assume!(!before.contains(secret.trim()) && !after.contains(secret.trim()));
                prop_assume!(!MASK.contains(secret.trim()));
                prop_assert!(!masked.contains(secret.as_str()), "{printed:?} -> {masked:?}");
                for line in secret.lines().filter(|l| l.len() >= MIN_MASKED_LINE_LEN) {
                    prop_assert!(!masked.contains(line), "{printed:?} -> {masked:?} still holds the line {line:?}");
                }
            }
        }
    }
}
