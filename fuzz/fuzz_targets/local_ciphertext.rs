//! The local ciphertext parser: any bytes, under any context, are refused cleanly (never a panic), and only a
//! ciphertext this key made opens.
#![no_main]

use keyward::{EncryptionContext, KmsError, LocalKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (Vec<u8>, Vec<(String, String)>)| {
    let (ciphertext, pairs) = input;
    let Ok(context) = EncryptionContext::from_pairs(pairs) else { return };
    let key = LocalKey::from_bytes(&[7; 32]);
    match key.decrypt(&ciphertext, &context) {
        Err(KmsError::InvalidCiphertext(message)) => assert!(!message.is_empty()),
        Err(other) => panic!("only invalid-ciphertext is possible: {other}"),
        Ok(_) => {
            // Forging a ciphertext that authenticates would be a break of AES-GCM.
            panic!("a ciphertext the key did not make opened");
        }
    }
});
