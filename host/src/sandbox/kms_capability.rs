//! The `keyward:lambda/kms` import: the guest's only way to plaintext. Counts calls against the invocation's
//! quota, passes each through the host's [`KmsGate`], and keeps a record of each for the caller.

use std::time::Instant;

use secrecy::ExposeSecret;
use wasmtime::component::{HasSelf, Linker};

use super::GuestState;
use super::limits::LimitExceeded;
use crate::bindings::kms;
use crate::kms::{DecryptRecord, KmsError, KmsGate, Plaintext};

/// Per-invocation state of the capability.
#[derive(Debug)]
pub(crate) struct KmsCapability {
    gate: KmsGate,
    /// When the key service must have answered, leaving the guest time to handle an `unavailable`.
    deadline: Instant,
    max_calls: u32,
    records: Vec<DecryptRecord>,
    /// What was handed out, kept (zeroized on drop) until the invocation's output has been redacted.
    handed_out: Vec<Plaintext>,
}

impl KmsCapability {
    pub(crate) fn new(gate: KmsGate, deadline: Instant, max_calls: u32) -> Self {
        Self { gate, deadline, max_calls, records: Vec::new(), handed_out: Vec::new() }
    }

    /// The record of every decrypt, and every plaintext handed to the guest.
    pub(crate) fn finish(self) -> (Vec<DecryptRecord>, Vec<Plaintext>) {
        (self.records, self.handed_out)
    }
}

/// Adds `keyward:lambda/kms` to `linker`, served from each store's [`KmsCapability`].
pub(crate) fn add_to_linker(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    kms::add_to_linker::<GuestState, HasSelf<KmsCapability>>(linker, |state| &mut state.kms)
}

impl kms::Host for KmsCapability {
    async fn decrypt(
        &mut self,
        ciphertext: Vec<u8>,
        encryption_context: Vec<(String, String)>,
    ) -> wasmtime::Result<Result<Vec<u8>, kms::Error>> {
        if self.records.len() >= self.max_calls as usize {
            // A trap, not a `denied`: a guest looping on decrypt must not get to carry on.
            return Err(wasmtime::Error::new(LimitExceeded::DecryptCalls { limit: self.max_calls }));
        }
        let (result, record) = self.gate.decrypt(&ciphertext, encryption_context, Some(self.deadline)).await;
        self.records.push(record);
        Ok(match result {
            Ok(plaintext) => {
                // The guest's copy is its own; the host keeps its `Plaintext` only to redact logs.
                let copy = plaintext.expose_secret().to_vec();
                self.handed_out.push(plaintext);
                Ok(copy)
            }
            Err(e) => Err(to_wit(e)),
        })
    }
}

fn to_wit(error: KmsError) -> kms::Error {
    match error {
        KmsError::Denied(msg) => kms::Error::Denied(msg),
        KmsError::InvalidCiphertext(msg) => kms::Error::InvalidCiphertext(msg),
        KmsError::Unavailable(msg) => kms::Error::Unavailable(msg),
    }
}
