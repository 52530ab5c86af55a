//! Encryption contexts: the key/value pairs a ciphertext is bound to.
//!
//! KMS (and keyward's local key) authenticate the context as associated data, so a ciphertext made for one
//! context does not open under another. The host *stamps* pairs of its own onto every decrypt a guest makes, which
//! lets a key policy bind ciphertexts to one function.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Most pairs one context may hold (KMS's own limit is on total size; this keeps guests from flooding the host).
pub const MAX_PAIRS: usize = 64;
/// Most bytes all keys and values of one context may hold together (the KMS limit).
pub const MAX_TOTAL_BYTES: usize = 8192;

/// Why a context was refused. Messages name keys, never values: values may be identifying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    /// The same key was given twice.
    #[error("encryption context key {0:?} is given more than once")]
    DuplicateKey(String),
    /// A guest pair contradicts a pair the host stamps.
    #[error("encryption context key {0:?} is stamped by the host; a guest may not give it another value")]
    ContradictsStamp(String),
    /// A `K=V` argument without `=`, or with an empty key.
    #[error("{0:?} is not of the form KEY=VALUE with a non-empty KEY")]
    Malformed(String),
    /// Too many pairs, or too many bytes.
    #[error(
        "encryption context is too large: at least {pairs} pairs, {bytes} bytes (limits: {MAX_PAIRS} pairs, {MAX_TOTAL_BYTES} bytes)"
    )]
    TooLarge {
        /// Pairs counted when a limit was passed (counting stops there).
        pairs: usize,
        /// Bytes of their keys and values.
        bytes: usize,
    },
}

/// The encryption context key a guest's build is stamped under, `component=sha256:<digest>`, which a KMS key policy
/// can require (`kms:EncryptionContext:component`).
pub const COMPONENT_KEY: &str = "component";

/// An encryption context, kept ordered by key so its canonical encoding is independent of the order of the pairs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EncryptionContext(BTreeMap<String, String>);

impl EncryptionContext {
    /// The empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a context from pairs, refusing duplicate keys and oversized contexts.
    ///
    /// # Errors
    /// [`ContextError::DuplicateKey`] or [`ContextError::TooLarge`].
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, ContextError> {
        let mut map = BTreeMap::new();
        for (k, v) in pairs {
            let k = k.into();
            if map.contains_key(&k) {
                return Err(ContextError::DuplicateKey(k));
            }
            map.insert(k, v.into());
            check_size(&map)?;
        }
        Ok(Self(map))
    }

    /// The context a decrypt runs under: this (guest-given) context with the host's `stamped` pairs added.
    ///
    /// # Errors
    /// [`ContextError::ContradictsStamp`] when this context gives a stamped key another value.
    pub fn stamped_with(&self, stamped: &EncryptionContext) -> Result<Self, ContextError> {
        let mut merged = self.0.clone();
        for (k, v) in &stamped.0 {
            match merged.get(k) {
                Some(given) if given != v => return Err(ContextError::ContradictsStamp(k.clone())),
                Some(_) => {}
                None => {
                    merged.insert(k.clone(), v.clone());
                }
            }
        }
        check_size(&merged)?;
        Ok(Self(merged))
    }

    /// The pairs, ordered by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The keys, ordered.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// An unambiguous byte encoding, used as associated data: the pair count, then each key and value
    /// length-prefixed, in key order.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.0.iter().map(|(k, v)| 8 + k.len() + v.len()).sum::<usize>());
        out.extend_from_slice(&len_u32(self.0.len()).to_be_bytes());
        for (k, v) in &self.0 {
            for part in [k, v] {
                out.extend_from_slice(&len_u32(part.len()).to_be_bytes());
                out.extend_from_slice(part.as_bytes());
            }
        }
        out
    }
}

fn len_u32(n: usize) -> u32 {
    // Contexts are capped far below u32::MAX by `check_size`.
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn check_size(map: &BTreeMap<String, String>) -> Result<(), ContextError> {
    let bytes: usize = map.iter().map(|(k, v)| k.len() + v.len()).sum();
    if map.len() > MAX_PAIRS || bytes > MAX_TOTAL_BYTES {
        return Err(ContextError::TooLarge { pairs: map.len(), bytes });
    }
    Ok(())
}

impl fmt::Display for EncryptionContext {
    /// `k=v,k=v` in key order. Context values are not secret (KMS logs them in CloudTrail too).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

/// One `KEY=VALUE` pair, as given on a command line (`--context`, `--env`). The value may contain `=`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pair(pub String, pub String);

impl FromStr for Pair {
    type Err = ContextError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok(Pair(k.to_string(), v.to_string())),
            _ => Err(ContextError::Malformed(s.to_string())),
        }
    }
}

impl From<Pair> for (String, String) {
    fn from(Pair(k, v): Pair) -> Self {
        (k, v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(pairs: &[(&str, &str)]) -> EncryptionContext {
        EncryptionContext::from_pairs(pairs.iter().copied()).expect("valid context")
    }

    #[test]
    fn canonical_bytes_ignore_pair_order() {
        assert_eq!(ctx(&[("a", "1"), ("b", "2")]).canonical_bytes(), ctx(&[("b", "2"), ("a", "1")]).canonical_bytes());
    }

    #[test]
    fn canonical_bytes_are_unambiguous() {
        // Without length prefixes "ab"+"c" and "a"+"bc" would encode alike.
        assert_ne!(ctx(&[("ab", "c")]).canonical_bytes(), ctx(&[("a", "bc")]).canonical_bytes());
        assert_ne!(ctx(&[]).canonical_bytes(), ctx(&[("", "")]).canonical_bytes());
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let err = EncryptionContext::from_pairs([("k", "1"), ("k", "2")]).unwrap_err();
        assert_eq!(err, ContextError::DuplicateKey("k".into()));
    }

    #[test]
    fn stamping_adds_pairs_and_refuses_contradictions() {
        let stamped = ctx(&[("function", "hello")]);
        assert_eq!(ctx(&[("a", "1")]).stamped_with(&stamped).unwrap(), ctx(&[("a", "1"), ("function", "hello")]));
        assert_eq!(ctx(&[("function", "hello")]).stamped_with(&stamped).unwrap(), stamped);
        let err = ctx(&[("function", "evil-fn")]).stamped_with(&stamped).unwrap_err();
        assert_eq!(err, ContextError::ContradictsStamp("function".into()));
        assert!(!err.to_string().contains("evil-fn"), "message names the key, not the value");
    }

    #[test]
    fn oversized_contexts_are_refused() {
        let many = (0..=MAX_PAIRS).map(|i| (format!("k{i}"), String::new()));
        assert!(matches!(EncryptionContext::from_pairs(many), Err(ContextError::TooLarge { .. })));
        let big = [("k", "v".repeat(MAX_TOTAL_BYTES))];
        assert!(matches!(EncryptionContext::from_pairs(big), Err(ContextError::TooLarge { .. })));
    }

    #[test]
    fn pairs_parse_from_command_lines() {
        assert_eq!("a=b=c".parse::<Pair>().unwrap(), Pair("a".into(), "b=c".into()));
        assert_eq!("a=".parse::<Pair>().unwrap(), Pair("a".into(), String::new()));
        assert!("=b".parse::<Pair>().is_err());
        assert!("ab".parse::<Pair>().is_err());
    }

    mod properties {
        use std::collections::BTreeMap;

        use proptest::prelude::*;

        use super::*;

        fn pairs() -> impl Strategy<Value = BTreeMap<String, String>> {
            proptest::collection::btree_map("[a-c]{1,2}", "[x-z]{0,2}", 0..6)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Stamping keeps every guest pair and every stamped pair, or refuses a guest value that contradicts a
            /// stamp; it never lets a guest value replace a stamped one.
            #[test]
            fn stamps_always_win(guest in pairs(), stamp in pairs()) {
                let stamped = EncryptionContext::from_pairs(stamp.clone()).unwrap();
                let merged = EncryptionContext::from_pairs(guest.clone()).unwrap().stamped_with(&stamped);
                let contradiction = guest.iter().find(|(k, v)| stamp.get(*k).is_some_and(|s| s != *v));
                match (merged, contradiction) {
                    (Err(ContextError::ContradictsStamp(key)), Some((k, _))) => prop_assert_eq!(&key, k),
                    (Ok(merged), None) => {
                        let merged: BTreeMap<&str, &str> = merged.iter().collect();
                        for (k, v) in stamp.iter().chain(guest.iter()) {
                            prop_assert_eq!(merged.get(k.as_str()), Some(&v.as_str()));
                        }
                        prop_assert_eq!(merged.len(), stamp.keys().chain(guest.keys()).collect::<std::collections::BTreeSet<_>>().len());
                    }
                    (other, c) => prop_assert!(false, "{other:?} with contradiction {c:?}"),
                }
            }

            /// Two contexts share canonical bytes only if they are the same context.
            #[test]
            fn canonical_bytes_tell_contexts_apart(a in pairs(), b in pairs()) {
                let (a, b) = (EncryptionContext::from_pairs(a).unwrap(), EncryptionContext::from_pairs(b).unwrap());
                prop_assert_eq!(a.canonical_bytes() == b.canonical_bytes(), a == b);
            }
        }
    }
}
