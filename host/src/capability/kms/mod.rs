//! The `keyward:lambda/kms` import: the guest's only way to plaintext. Each call counts against the invocation's
//! [`Session`] of secrets and passes through the host's gate; the plaintexts handed out are kept here, masked out of
//! the guest's output until the invocation ends, then zeroized.

mod settings;

use std::sync::Arc;

use secrecy::ExposeSecret;
use wasmtime::StoreContextMut;
use wasmtime::component::Linker;
use zeroize::Zeroize as _;

pub use settings::GuestPlaintext;
#[cfg(feature = "cli")]
pub use settings::KmsFlags;
pub use settings::KmsSettings;

use crate::bindings::kms;
use crate::mask::{self, Masker};
use crate::secrets::{KmsError, Opened, Session, Unnamed, User};

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

/// The capability's state in one store: the plaintexts handed out.
#[derive(Debug, Default)]
pub(crate) struct Instance {
    handed_out: Vec<HandedOut>,
}

impl Instance {
    /// The plaintexts handed to the guest (zeroized when dropped), taken out.
    pub(crate) fn finish(&mut self) -> HandedOutAll {
        HandedOutAll(std::mem::take(&mut self.handed_out))
    }
}

/// What the import's calls reach: this capability's state and the invocation's secrets.
#[derive(Debug)]
pub(crate) struct View<'a> {
    kms: &'a mut Instance,
    secrets: &'a mut Session,
}

impl<'a> View<'a> {
    pub(crate) fn of(kms: &'a mut Instance, secrets: &'a mut Session) -> Self {
        Self { kms, secrets }
    }

    async fn decrypt(
        &mut self,
        ciphertext: Vec<u8>,
        encryption_context: Vec<(String, String)>,
    ) -> wasmtime::Result<Result<Arc<[u8]>, kms::Error>> {
        let fetched = self.secrets.decrypt(&ciphertext, encryption_context).await?;
        Ok(self.hand_out(fetched))
    }

    async fn secret(&mut self, name: String) -> wasmtime::Result<Result<Arc<[u8]>, kms::Error>> {
        let source = match self.secrets.source(&name) {
            Ok(source) => source,
            Err(unnamed @ Unnamed::NotAVariable) => return Ok(Err(kms::Error::Denied(unnamed.message(&name)))),
            Err(unnamed @ Unnamed::NotASecret(_)) => {
                return Ok(Err(kms::Error::InvalidCiphertext(unnamed.message(&name))));
            }
        };
        let fetched = self.secrets.fetch(&name, &source, User::Guest).await?;
        Ok(self.hand_out(fetched))
    }

    /// Keeps what is handed to the guest (masked, then zeroized at the end), or turns the refusal into the WIT's.
    fn hand_out(&mut self, fetched: Result<Opened, KmsError>) -> Result<Arc<[u8]>, kms::Error> {
        let (plaintext, _) = fetched.map_err(to_wit)?;
        let bytes: Arc<[u8]> = Arc::from(plaintext.expose_secret());
        let held = mask::hold(&bytes);
        self.kms.handed_out.push(HandedOut { bytes: bytes.clone(), _held: held });
        Ok(bytes)
    }
}

/// Adds `keyward:lambda/kms` to `linker`, served from the [`View`] `get` makes of each store's state.
///
/// Wired by hand rather than through bindgen's `add_to_linker`: bindgen's `decrypt` returns a `Vec<u8>` that
/// wasmtime drops, unzeroized, after copying it into the guest. Returning an `Arc<[u8]>` (which wasmtime lowers
/// the same way) leaves the host's last copy with keyward, which zeroizes it.
pub(crate) fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> View<'_>,
) -> wasmtime::Result<()> {
    let mut instance = linker.instance(INTERFACE)?;
    instance.func_wrap_async(
        "decrypt",
        move |mut store: StoreContextMut<'_, T>, (ciphertext, context): (Vec<u8>, Vec<(String, String)>)| {
            Box::new(async move { Ok((get(store.data_mut()).decrypt(ciphertext, context).await?,)) })
        },
    )?;
    instance.func_wrap_async("secret", move |mut store: StoreContextMut<'_, T>, (name,): (String,)| {
        Box::new(async move { Ok((get(store.data_mut()).secret(name).await?,)) })
    })
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
    use std::time::{Duration, Instant};

    use super::*;
    use crate::EncryptionContext;
    use crate::sandbox::LimitExceeded;
    use crate::secrets::{LocalKey, SecretGate, SecretsSettings};

    /// The capability on its own, as a guest's calls reach it (no component, no store): the gate's policy decides,
    /// the quota traps, every call is recorded, and what was handed out is masked until the invocation ends.
    #[tokio::test]
    async fn serves_a_guest_under_the_policy_and_the_quota() {
        let key = LocalKey::generate().unwrap();
        let stamped = EncryptionContext::from_pairs([("function", "hello")]).unwrap();
        let ciphertext = key.encrypt(b"s3cret-capability", &stamped).unwrap();
        let settings = SecretsSettings { stamped_context: stamped, max_decrypt_calls: 3, ..SecretsSettings::default() };
        let gate = Arc::new(SecretGate::new(Arc::new(key), settings.check(&Vec::new().into()).unwrap()));
        let (mut instance, mut secrets) = (Instance::default(), gate.session());
        let mut kms = View::of(&mut instance, &mut secrets);
        let pairs = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];

        // Before the invocation starts (a start function): a trap, and nothing asked of the key service.
        let early = kms.decrypt(ciphertext.clone(), Vec::new()).await.unwrap_err().to_string();
        assert!(early.contains("before its invocation started"), "{early}");
        kms.secrets.start(Instant::now() + Duration::from_secs(5));

        let plaintext = kms.decrypt(ciphertext.clone(), Vec::new()).await.unwrap().unwrap();
        assert_eq!(&plaintext[..], b"s3cret-capability");
        let denied = kms.decrypt(ciphertext.clone(), pairs("function", "billing")).await.unwrap();
        assert!(matches!(&denied, Err(kms::Error::Denied(m)) if m.contains("stamped")), "{denied:?}");
        let invalid = kms.decrypt(b"not a ciphertext".to_vec(), Vec::new()).await.unwrap();
        assert!(matches!(invalid, Err(kms::Error::InvalidCiphertext(_))), "{invalid:?}");
        let trap = kms.decrypt(ciphertext, Vec::new()).await.unwrap_err();
        assert_eq!(trap.downcast_ref::<LimitExceeded>(), Some(&LimitExceeded::DecryptCalls { limit: 3 }));

        drop(plaintext);
        let (records, handed_out) = (secrets.finish(), instance.finish());
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
