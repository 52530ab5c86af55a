//! How an invocation fails, and how any failure is put into words: one line, bounded, never a `Debug` dump.

use crate::mask::Masker;
use crate::sandbox::LimitExceeded;

/// Most bytes of a message keyward passes on from elsewhere (a guest's error, a trap, a key service's answer).
/// Longer ones are cut at a character boundary and marked, so a function error always fits Lambda's limits and a
/// log line stays bounded.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024;

/// Why an invocation failed. Messages never contain plaintext: a guest's own error message is passed on with the
/// secrets it was handed masked, and cut to [`MAX_MESSAGE_BYTES`].
///
/// Each kind has a stable name, [`InvokeError::error_type`]: the Lambda `errorType`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvokeError {
    /// The guest's handler returned `err`.
    #[error("guest returned an error: {0}")]
    Guest(String),
    /// The guest trapped (a panic, an `unreachable`, a stack overflow, ...).
    #[error("guest trapped: {0}")]
    Trap(String),
    /// The guest called `exit`.
    #[error("guest exited with status {0} instead of returning a response")]
    Exit(i32),
    /// The guest hit one of its limits.
    #[error(transparent)]
    Limit(#[from] LimitExceeded),
    /// The guest's response is not JSON.
    #[error("guest response is not valid JSON (error at line {line}, column {column})")]
    InvalidResponse {
        /// Where parsing failed.
        line: usize,
        /// Where parsing failed.
        column: usize,
    },
    /// The event is not UTF-8 JSON, or too large; the guest was not run. The message says where, never what.
    #[error("the event {0}")]
    InvalidEvent(String),
    /// The invocation's deadline had passed before the guest could start.
    #[error("the invocation's deadline had passed before the guest started")]
    DeadlineExceeded,
    /// The Lambda Runtime API handed over an invocation keyward cannot run as given (a malformed header).
    #[error("invalid invocation: {0}")]
    InvalidInvocation(String),
    /// The guest could not be instantiated.
    #[error("cannot instantiate guest: {0}")]
    Instantiate(String),
    /// Every instance of the pool stayed busy until the invocation's time ran out; the guest was not run.
    #[error(
        "every one of the host's {instances} guest instances stayed busy until this invocation's time ran out: send fewer invocations at once, or raise the host's max_instances"
    )]
    Busy {
        /// The pool's size ([`Limits::max_instances`](crate::Limits::max_instances)).
        instances: u32,
    },
}

impl InvokeError {
    /// A stable name for the kind of failure (the Lambda `errorType`). docs/lambda.md lists them all.
    pub fn error_type(&self) -> &'static str {
        match self {
            InvokeError::Guest(_) => "GuestError",
            InvokeError::Trap(_) | InvokeError::Exit(_) => "GuestTrap",
            InvokeError::Limit(LimitExceeded::Time { .. }) => "GuestTimeout",
            InvokeError::Limit(_) => "GuestLimitExceeded",
            InvokeError::InvalidResponse { .. } => "GuestInvalidResponse",
            InvokeError::InvalidEvent(_) => "InvalidEvent",
            InvokeError::DeadlineExceeded => "DeadlineExceeded",
            InvokeError::InvalidInvocation(_) => "InvalidInvocation",
            InvokeError::Instantiate(_) => "HostError",
            InvokeError::Busy { .. } => "HostBusy",
        }
    }

    /// Every `errorType` an invocation can fail with.
    pub const ERROR_TYPES: &[&str] = &[
        "GuestError",
        "GuestTrap",
        "GuestTimeout",
        "GuestLimitExceeded",
        "GuestInvalidResponse",
        "InvalidEvent",
        "DeadlineExceeded",
        "InvalidInvocation",
        "HostError",
        "HostBusy",
    ];

    /// The same error with the text it carries from a guest masked with `masker`, made one line, and cut to
    /// [`MAX_MESSAGE_BYTES`]. The cut is made in the text as the guest wrote it, after a look far enough past it
    /// that a secret straddling it is masked whole; the host never copies more of a long message than that.
    pub(crate) fn scrubbed(self, masker: &Masker) -> Self {
        let tidy = |text: String| {
            let seen = &text.as_bytes()[..text.len().min(MAX_MESSAGE_BYTES + masker.longest_form())];
            let shown = one_line(&String::from_utf8_lossy(&masker.bytes_within(seen, MAX_MESSAGE_BYTES)));
            if text.len() > MAX_MESSAGE_BYTES {
                format!("{shown}… [cut: {} bytes in all]", text.len())
            } else {
                shown
            }
        };
        match self {
            InvokeError::Guest(text) => InvokeError::Guest(tidy(text)),
            InvokeError::Trap(text) => InvokeError::Trap(tidy(text)),
            InvokeError::Instantiate(text) => InvokeError::Instantiate(tidy(text)),
            other => other,
        }
    }
}

/// The event checked to be JSON text, as the guest's `handle` receives it: UTF-8 (a leading byte-order mark is
/// skipped), and JSON that every guest language reads alike (RFC 8259 §4, §8.2, §6 leave these to the reader):
/// no escaped lone surrogate (JavaScript would take it, Rust's serde would not), no object with a key twice
/// (readers disagree on which value wins), no number beyond a double's range (`1e400`).
///
/// One difference is left to the guest, since refusing it would refuse valid events: an integer beyond 2^53 is
/// exact in a Rust guest (`u64`/`i64`) and rounded by JavaScript's `JSON.parse`; send such ids as strings.
///
/// # Errors
/// [`InvokeError::InvalidEvent`] naming the problem and where; never quoting the bytes, since an event may hold
/// anything.
pub fn check_event(event: &[u8]) -> Result<&str, InvokeError> {
    let text = crate::text::utf8(event).map_err(|e| InvokeError::InvalidEvent(format!("is not usable: {e}")))?;
    serde_json::from_str::<AnyJson>(text).map_err(|e| {
        // serde_json's syntax errors name the problem and never quote the input; its words for a lone surrogate
        // ("unexpected end of hex escape", "lone leading surrogate") are put plainly.
        let at = format!("at line {} column {}", e.line(), e.column());
        let message = e.to_string();
        let problem = match e.classify() {
            _ if message.contains("surrogate") || message.contains("end of hex escape") => {
                format!("an escaped lone UTF-16 surrogate (\\uD800 to \\uDFFF without its pair) {at}")
            }
            // Syntax and end-of-input errors, and the duplicate key above (a data error): serde_json's message,
            // with its position.
            serde_json::error::Category::Syntax
            | serde_json::error::Category::Eof
            | serde_json::error::Category::Data => message,
            _ => at,
        };
        InvokeError::InvalidEvent(format!("is not valid JSON ({})", one_line(&problem)))
    })?;
    Ok(text)
}

/// Any JSON value, read all the way down: strings are decoded (so escapes are checked) and numbers parsed, but
/// nothing is kept.
struct AnyJson;

impl<'de> serde::Deserialize<'de> for AnyJson {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(AnyJson)
    }
}

impl<'de> serde::de::Visitor<'de> for AnyJson {
    type Value = AnyJson;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self, E> {
        Ok(AnyJson)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self, E> {
        Ok(AnyJson)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self, E> {
        Ok(AnyJson)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self, E> {
        Ok(AnyJson)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self, E> {
        Ok(AnyJson)
    }

    fn visit_unit<E>(self) -> Result<Self, E> {
        Ok(AnyJson)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<AnyJson>()?.is_some() {}
        Ok(AnyJson)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self, A::Error> {
        // JSON's grammar allows a key twice, but readers disagree on which value wins (serde's derives refuse it,
        // JSON.parse keeps the last, some keep the first): a guest and a proxy in front of it could read two
        // different events. The key is not quoted: it is the caller's bytes.
        let mut keys = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !keys.insert(key) {
                return Err(serde::de::Error::custom("an object has the same key twice"));
            }
            map.next_value::<AnyJson>()?;
        }
        Ok(AnyJson)
    }
}

/// `text` with what could break a log line or disguise it turned into spaces: control characters (C0 and C1, line
/// breaks among them), Unicode's line and paragraph separators, and the bidirectional overrides and isolates that
/// can make a line read otherwise than it is.
pub fn one_line(text: &str) -> String {
    let breaks = |c: char| {
        c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    text.chars().map(|c| if breaks(c) { ' ' } else { c }).collect()
}

/// Text from outside keyward (a key service's answer, a header) made fit for a message: one line, at most `max`
/// bytes.
pub(crate) fn clean(text: &str, max: usize) -> String {
    bounded(&one_line(text), max)
}

/// `text` cut to at most `max` bytes (at a character boundary), marked with how long it was.
pub(crate) fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [cut: {} bytes in all]", &text[..end], text.len())
}

/// The innermost cause of an error, in one bounded line: what an operator needs ("Connection refused (os error
/// 111)"), without the wrappers' `Debug` dumps.
pub(crate) fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    clean(&cause.to_string(), 512)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_leaves_no_breaks_or_direction_tricks() {
        assert_eq!(one_line("a\nb\r\tc\u{85}d\u{9b}e"), "a b  c d e");
        assert_eq!(one_line("x\u{2028}y\u{2029}z\u{202e}w\u{2066}v"), "x y z w v");
        assert_eq!(one_line("é 中 😀"), "é 中 😀");
    }

    #[test]
    fn long_text_is_cut_at_a_character_and_marked() {
        assert_eq!(bounded("short", 10), "short");
        let cut = bounded(&"é".repeat(10), 5);
        assert_eq!(cut, "éé… [cut: 20 bytes in all]");
    }

    #[test]
    fn scrubbing_masks_a_secret_straddling_the_cut() {
        let secret = "s3cret-value";
        let masker = Masker::new([secret.as_bytes()]);
        let message = format!("{}{secret}{}", "x".repeat(MAX_MESSAGE_BYTES - 4), "y".repeat(1 << 20));
        let error = InvokeError::Guest(message).scrubbed(&masker);
        let InvokeError::Guest(text) = error else { panic!() };
        assert!(!text.contains("s3cr"), "{}", &text[text.len() - 80..]);
        assert!(text.ends_with(&format!("x[REDACTED]… [cut: {} bytes in all]", MAX_MESSAGE_BYTES + 8 + (1 << 20))));
        assert!(text.len() < MAX_MESSAGE_BYTES + 64);
    }

    #[test]
    fn events_must_be_utf8_json_and_errors_never_quote_them() {
        assert_eq!(check_event(br#"{"a":1}"#), Ok(r#"{"a":1}"#));
        let not_json = check_event(b"{not json").unwrap_err();
        assert_eq!(not_json.error_type(), "InvalidEvent");
        assert!(!not_json.to_string().contains("not json"), "{not_json}");
        let not_utf8 = check_event(b"{\"a\":\"\xff\xfe\"}").unwrap_err();
        assert_eq!(not_utf8.to_string(), "the event is not usable: it is not UTF-8 (invalid byte at offset 6)");
        assert_eq!(not_json.to_string(), "the event is not valid JSON (key must be a string at line 1 column 2)");
        assert_eq!(check_event(b"\xef\xbb\xbf{}"), Ok("{}"), "a byte-order mark is skipped");
        let utf16 = check_event(b"\xff\xfe{\0}\0").unwrap_err();
        assert_eq!(utf16.to_string(), "the event is not usable: it is UTF-16, not UTF-8: save it as UTF-8");
    }

    /// JSON that Rust's serde refuses and JavaScript takes is refused before any guest sees it, naming the problem.
    #[test]
    fn events_every_guest_reads_alike() {
        for (event, problem) in [
            (
                r#"{"name":"\ud83d"}"#,
                "an escaped lone UTF-16 surrogate (\\uD800 to \\uDFFF without its pair) at line 1",
            ),
            (r#"["\udc00x"]"#, "an escaped lone UTF-16 surrogate"),
            (r#"["\ud83dx"]"#, "an escaped lone UTF-16 surrogate"),
            (r#"{"n":1e999}"#, "number out of range at line 1 column 10"),
            (r#"{"role":"user","role":"admin"}"#, "an object has the same key twice at line 1 column 21"),
            (r#"[{"a":{"k":1,"k":1}}]"#, "an object has the same key twice"),
        ] {
            let error = check_event(event.as_bytes()).unwrap_err().to_string();
            assert!(error.starts_with("the event is not valid JSON (") && error.contains(problem), "{event}: {error}");
        }
        let valid = r#"{"pair":"\ud83d\ude00","big":1e300,"max":1.7976931348623157e308,"deep":[[[{"pair":1}]]]}"#;
        assert!(check_event(valid.as_bytes()).is_ok(), "{:?}", check_event(valid.as_bytes()));
        let error = check_event(br#"{"role":"s3cret","role":"x"}"#).unwrap_err().to_string();
        assert!(!error.contains("role") && !error.contains("s3cret"), "the duplicate key is not quoted: {error}");
    }

    #[test]
    fn every_error_type_is_listed() {
        let all = [
            InvokeError::Guest(String::new()),
            InvokeError::Trap(String::new()),
            InvokeError::Exit(1),
            InvokeError::Limit(LimitExceeded::Time { limit_ms: 1 }),
            InvokeError::Limit(LimitExceeded::DecryptCalls { limit: 1 }),
            InvokeError::InvalidResponse { line: 1, column: 1 },
            InvokeError::InvalidEvent(String::new()),
            InvokeError::DeadlineExceeded,
            InvokeError::InvalidInvocation(String::new()),
            InvokeError::Instantiate(String::new()),
            InvokeError::Busy { instances: 1 },
        ];
        for error in all {
            assert!(InvokeError::ERROR_TYPES.contains(&error.error_type()), "{error:?}");
        }
    }

    /// docs/lambda.md's `errorType` table lists exactly the types an invocation can fail with.
    #[test]
    fn the_docs_list_every_error_type() {
        let docs = include_str!("../../docs/lambda.md");
        let section = &docs[docs.find("| `errorType` | when |").unwrap()..];
        let table = section.lines().skip(2).take_while(|line| line.starts_with('|'));
        let listed: Vec<&str> = table.filter_map(|row| row.split('`').nth(1)).collect();
        assert_eq!(listed, InvokeError::ERROR_TYPES);
    }

    #[test]
    fn the_root_cause_is_the_innermost_error() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused\n(os error 111)");
        #[derive(Debug, thiserror::Error)]
        #[error("dispatch failure")]
        struct Wrapper(#[source] std::io::Error);
        assert_eq!(root_cause(&Wrapper(io)), "Connection refused (os error 111)");
    }
}
