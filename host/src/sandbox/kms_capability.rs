//! The `keyward:lambda/kms` import: the guest's only way to plaintext. Counts calls against the invocation's
//! quota, passes each through the host's [`KmsGate`], and keeps a record of each for the caller.

use std::sync::Arc;
use std::time::Instant;

use secrecy::ExposeSecret;
use wasmtime::StoreContextMut;
use wasmtime::component::Linker;
use zeroize::Zeroize as _;

use super::GuestState;
use super::limits::LimitExceeded;
use crate::bindings::kms;
use crate::kms::{DecryptRecord, KmsError, KmsGate, Plaintext};
use crate::mask::{self, Masker};

/// The interface's name in the WIT package.
const INTERFACE: &str = "keyward:lambda/kms@0.1.0";

/// A plaintext handed to the guest. wasmtime lowers it into the guest's memory from a clone of this `Arc` and drops
/// that clone after the copy; this last one is zeroized when the instance is torn down. Until then it also keeps the
/// plaintext in the set every host log line is masked with.
#[derive(Debug)]
struct HandedOut {
    bytes: Arc<[u8]>,
    _held: mask::Held,
}

impl Drop for HandedOut {
    fn drop(&mut self) {
        zeroize_if_last(&mut self.bytes);
    }
}

/// Every plaintext one invocation was handed.
#[derive(Debug)]
pub(crate) struct HandedOutAll(Vec<HandedOut>);

impl HandedOutAll {
    /// A masker for them (built only when there is something to mask: it costs more than the invocation).
    pub(crate) fn masker(&self) -> Masker {
        Masker::new(self.0.iter().map(|h| &h.bytes[..]))
    }
}

/// Zeroizes the bytes if no other reference to them is left; returns whether it did.
fn zeroize_if_last(bytes: &mut Arc<[u8]>) -> bool {
    Arc::get_mut(bytes).map(|b| b.zeroize()).is_some()
}

/// A guest's call for a secret before its invocation started: the guest's fault, a trap.
#[derive(Debug, thiserror::Error)]
#[error(
    "the guest asked for a secret before its invocation started (in a start function): secrets are handed out only \
     while the guest handles an invocation"
)]
pub(crate) struct BeforeInvocation;

/// Per-invocation state of the capability.
#[derive(Debug)]
pub(crate) struct KmsCapability {
    gate: KmsGate,
    /// When the key service must have answered, leaving the guest time to handle an `unavailable`; `None` until the
    /// invocation starts ([`KmsCapability::start`]).
    deadline: Option<Instant>,
    max_calls: u32,
    records: Vec<DecryptRecord>,
    handed_out: Vec<HandedOut>,
}

impl KmsCapability {
    /// The capability of one invocation, asking `gate` (whose policy gives the call quota) once the invocation
    /// starts. Until then (a start function of the guest's, run as its instance is made, maybe ahead of the
    /// invocation) a call traps: secrets are handed out only within an invocation, audited with its request id.
    pub(crate) fn new(gate: KmsGate) -> Self {
        let max_calls = gate.max_decrypt_calls();
        Self { gate, deadline: None, max_calls, records: Vec::new(), handed_out: Vec::new() }
    }

    /// The invocation starts: the guest may ask, and the key service must have answered by `deadline`.
    pub(crate) fn start(&mut self, deadline: Instant) {
        self.deadline = Some(deadline);
    }

    /// The record of every decrypt, and the plaintexts handed to the guest (zeroized when dropped), taken out.
    pub(crate) fn finish(&mut self) -> (Vec<DecryptRecord>, HandedOutAll) {
        (std::mem::take(&mut self.records), HandedOutAll(std::mem::take(&mut self.handed_out)))
    }

    /// Decrypts through the gate within the invocation's quota (one more call traps), recorded: the plaintext and
    /// the key that opened it. The `kms` import hands it to the guest; the `keys` import keeps it.
    pub(super) async fn decrypt_for_host(
        &mut self,
        ciphertext: &[u8],
        encryption_context: Vec<(String, String)>,
    ) -> wasmtime::Result<Result<(Plaintext, Option<String>), KmsError>> {
        let Some(deadline) = self.deadline else {
            return Err(wasmtime::Error::new(BeforeInvocation));
        };
        if self.records.len() >= self.max_calls as usize {
            // A trap, not a `denied`: a guest looping on decrypt must not get to carry on.
            return Err(wasmtime::Error::new(LimitExceeded::DecryptCalls { limit: self.max_calls }));
        }
        let (result, record) = self.gate.decrypt(ciphertext, encryption_context, Some(deadline)).await;
        let key_id = record.key_id.clone();
        self.records.push(record);
        Ok(result.map(|plaintext| (plaintext, key_id)))
    }

    /// The policy's settings (quotas of the `keys` import, the guest's env).
    pub(super) fn gate(&self) -> &KmsGate {
        &self.gate
    }

    /// When the key service, and any host-side work a guest asks for, must be done; `None` before the invocation.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    async fn decrypt(
        &mut self,
        ciphertext: Vec<u8>,
        encryption_context: Vec<(String, String)>,
    ) -> wasmtime::Result<Result<Arc<[u8]>, kms::Error>> {
        Ok(match self.decrypt_for_host(&ciphertext, encryption_context).await? {
            Ok((plaintext, _)) => {
                let bytes: Arc<[u8]> = Arc::from(plaintext.expose_secret());
                let held = mask::hold(&bytes);
                self.handed_out.push(HandedOut { bytes: bytes.clone(), _held: held });
                Ok(bytes)
            }
            Err(e) => Err(to_wit(e)),
        })
    }
}

/// Adds `keyward:lambda/kms` to `linker`, served from each store's [`KmsCapability`].
///
/// Wired by hand rather than through bindgen's `add_to_linker`: bindgen's `decrypt` returns a `Vec<u8>` that
/// wasmtime drops, unzeroized, after copying it into the guest. Returning an `Arc<[u8]>` (which wasmtime lowers
/// the same way) leaves the host's last copy with keyward, which zeroizes it.
pub(crate) fn add_to_linker(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    linker.instance(INTERFACE)?.func_wrap_async(
        "decrypt",
        |mut store: StoreContextMut<'_, GuestState>, (ciphertext, context): (Vec<u8>, Vec<(String, String)>)| {
            Box::new(async move { Ok((store.data_mut().kms.decrypt(ciphertext, context).await?,)) })
        },
    )
}

fn to_wit(error: KmsError) -> kms::Error {
    match error {
        KmsError::Denied(msg) => kms::Error::Denied(msg),
        KmsError::InvalidCiphertext(msg) => kms::Error::InvalidCiphertext(msg),
        KmsError::Unavailable(msg) => kms::Error::Unavailable(msg),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::EncryptionContext;
    use crate::kms::{KmsPolicy, LocalKey};

    /// The capability on its own, as a guest's calls reach it (no component, no store): the gate's policy decides,
    /// the quota traps, every call is recorded, and what was handed out is masked until the invocation ends.
    #[tokio::test]
    async fn serves_a_guest_under_the_policy_and_the_quota() {
        let key = LocalKey::generate().unwrap();
        let stamped = EncryptionContext::from_pairs([("function", "hello")]).unwrap();
        let ciphertext = key.encrypt(b"s3cret-capability", &stamped).unwrap();
        let policy = KmsPolicy { stamped_context: stamped, max_decrypt_calls: 3, ..KmsPolicy::default() };
        let gate = KmsGate::new(Arc::new(key), &policy, &[]).unwrap();
        let mut kms = KmsCapability::new(gate);
        let pairs = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];

        // Before the invocation starts (a start function): a trap, and nothing asked of the key service.
        let early = kms.decrypt(ciphertext.clone(), Vec::new()).await.unwrap_err().to_string();
        assert!(early.contains("before its invocation started"), "{early}");
        kms.start(Instant::now() + Duration::from_secs(5));

        let plaintext = kms.decrypt(ciphertext.clone(), Vec::new()).await.unwrap().unwrap();
        assert_eq!(&plaintext[..], b"s3cret-capability");
        let denied = kms.decrypt(ciphertext.clone(), pairs("function", "billing")).await.unwrap();
        assert!(matches!(&denied, Err(kms::Error::Denied(m)) if m.contains("stamped")), "{denied:?}");
        let invalid = kms.decrypt(b"not a ciphertext".to_vec(), Vec::new()).await.unwrap();
        assert!(matches!(invalid, Err(kms::Error::InvalidCiphertext(_))), "{invalid:?}");
        let trap = kms.decrypt(ciphertext, Vec::new()).await.unwrap_err();
        assert_eq!(trap.downcast_ref::<LimitExceeded>(), Some(&LimitExceeded::DecryptCalls { limit: 3 }));

        drop(plaintext);
        let (records, handed_out) = kms.finish();
        let outcomes: Vec<_> = records.iter().map(|r| r.outcome.clone().map_err(|e| e.kind())).collect();
        assert_eq!(outcomes, [Ok(()), Err("denied"), Err("invalid-ciphertext")], "the trapped call is not recorded");
        assert_eq!(handed_out.masker().text("got s3cret-capability"), "got [REDACTED]");
        assert_eq!(mask::held_masker().text("s3cret-capability"), "[REDACTED]", "held for the host's logs");
        drop(handed_out);
        assert_eq!(mask::held_masker().text("s3cret-capability"), "s3cret-capability", "released at the end");
    }

    #[test]
    fn the_last_copy_is_zeroized_and_a_shared_one_is_not_touched() {
        let mut bytes: Arc<[u8]> = Arc::from(&b"s3cret"[..]);
        let lowered = bytes.clone();
        assert!(!zeroize_if_last(&mut bytes), "another copy is alive");
        assert_eq!(&lowered[..], b"s3cret");
        drop(lowered);
        assert!(zeroize_if_last(&mut bytes));
        assert_eq!(&bytes[..], &[0u8; 6]);
    }
}
