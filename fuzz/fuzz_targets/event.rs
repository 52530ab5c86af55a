//! The event path's check: any bytes either pass as UTF-8 JSON that serde's `Value` reads too, or are refused with
//! a message that never quotes them.
#![no_main]

use keyward::error::check_event;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|event: &[u8]| {
    match check_event(event) {
        // What the host passes on, every guest language reads: serde_json's `Value` among them.
        Ok(text) => assert!(serde_json::from_str::<serde_json::Value>(text).is_ok(), "{text:?}"),
        Err(error) => {
            assert_eq!(error.error_type(), "InvalidEvent");
            // The message is one of a few templates: it cannot quote the event.
            let message = error.to_string();
            let known = ["the event is not usable: it is ", "the event is not valid JSON ("];
            assert!(known.iter().any(|k| message.starts_with(k)), "{message}");
            assert!(!message.contains('\n'));
        }
    }
});
