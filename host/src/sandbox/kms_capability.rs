//! The `keyward:lambda/kms` import: the guest's only way to plaintext. Counts calls against the invocation's
//! quota, passes each through the host's [`KmsGate`], and keeps a record of each for the caller.

use secrecy::ExposeSecret;
use wasmtime::component::{HasSelf, Linker};

use super::GuestState;
use super::limits::LimitExceeded;
use crate::bindings::kms;
use crate::kms::{DecryptRecord, KmsError, KmsGate};

/// Per-invocation state of the capability.
#[derive(Debug)]
pub(crate) struct KmsCapability {
    gate: KmsGate,
    max_calls: u32,
    records: Vec<DecryptRecord>,
}

impl KmsCapability {
    pub(crate) fn new(gate: KmsGate, max_calls: u32) -> Self {
        Self { gate, max_calls, records: Vec::new() }
    }

    pub(crate) fn into_records(self) -> Vec<DecryptRecord> {
        self.records
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
        let (result, record) = self.gate.decrypt(&ciphertext, encryption_context).await;
        self.records.push(record);
        // The guest's copy is its own; the host's `Plaintext` is zeroized when dropped here.
        Ok(result.map(|plaintext| plaintext.expose_secret().to_vec()).map_err(to_wit))
    }
}

fn to_wit(error: KmsError) -> kms::Error {
    match error {
        KmsError::Denied(msg) => kms::Error::Denied(msg),
        KmsError::InvalidCiphertext(msg) => kms::Error::InvalidCiphertext(msg),
        KmsError::Unavailable(msg) => kms::Error::Unavailable(msg),
    }
}
