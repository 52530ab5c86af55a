//! Masking: for any secret of 4 bytes or more, printed as it is amid any bytes, the output no longer holds it.
#![no_main]

use keyward::mask::{MASK, Masker};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (Vec<u8>, Vec<u8>, Vec<u8>)| {
    let (secret, before, after) = input;
    if secret.len() < 4 || secret.trim_ascii().len() < 4 {
        return;
    }
    let masker = Masker::new([secret.as_slice()]);
    let printed = [before.as_slice(), &secret, &after].concat();
    let masked = masker.bytes(&printed);
    let holds = |haystack: &[u8], needle: &[u8]| haystack.windows(needle.len()).any(|w| w == needle);
    // Where the text around it, or the mask itself, holds the secret by chance, there is nothing to check.
    if holds(&before, secret.trim_ascii())
        || holds(&after, secret.trim_ascii())
        || holds(MASK.as_bytes(), secret.trim_ascii())
    {
        return;
    }
    assert!(!holds(&masked, &secret), "{printed:?} -> {masked:?}");
});
