//! The event path's check: any bytes either pass as UTF-8 JSON or are refused with a message that never quotes
//! them.
#![no_main]

use keyward::error::check_event;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|event: &[u8]| {
    match check_event(event) {
        // Grammatical JSON: serde_json's `Value` takes it, unless it holds what JSON's grammar allows and a Rust
        // value cannot (a number too large for an f64, an escaped lone surrogate).
        Ok(text) => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(_) => {}
            Err(e) => assert!(
                ["number out of range", "surrogate", "hex escape"].iter().any(|m| e.to_string().contains(m)),
                "{e}"
            ),
        },
        Err(error) => {
            assert_eq!(error.error_type(), "InvalidEvent");
            // The message is a template and numbers: it cannot quote the event.
            let message = error.to_string();
            let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
            let known =
                ["the event is not UTF-8 (invalid byte at offset ", "the event is not valid JSON (error at line "];
            let rest = known.iter().find_map(|k| message.strip_prefix(k));
            assert!(rest.is_some(), "{message}");
            let rest = rest.unwrap_or_default();
            let fits = match rest.split_once(", column ") {
                Some((line, column)) => digits(line) && column.strip_suffix(')').is_some_and(digits),
                None => rest.strip_suffix(')').is_some_and(digits),
            };
            assert!(fits, "{message}");
        }
    }
});
