//! The sealed-file reader: any bytes parse or are refused cleanly (never a panic), with a message that does not
//! quote them; what parses opens under no data key but the one it was sealed with.
#![no_main]

use keyward::secrets::sealed::{Sealed, SealedError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    match Sealed::parse(bytes) {
        Ok(sealed) => {
            assert!(!sealed.encrypted_data_key().is_empty());
            // Forging a body that authenticates would be a break of AES-GCM.
            assert_eq!(sealed.open(&[7; 32]).unwrap_err(), SealedError::Tampered);
        }
        Err(error) => assert!(!error.to_string().contains('\n')),
    }
});
