//! Scrubs the secrets an invocation was handed out of what the host logs or reports for it: the guest's
//! stdout/stderr and its error message. A guest that prints its secret by mistake does not put it in the log.

use secrecy::ExposeSecret as _;

use crate::kms::Plaintext;

/// Shorter plaintexts are not masked: a 1–3 byte "secret" would mask ordinary text everywhere.
pub(crate) const MIN_REDACTED_LEN: usize = 4;
const MASK: &[u8] = b"[REDACTED]";

/// Masks every occurrence of any of the given plaintexts.
pub(crate) struct Redactor<'a> {
    /// Longest first, so a secret that contains another is masked whole.
    secrets: Vec<&'a [u8]>,
}

impl<'a> Redactor<'a> {
    pub(crate) fn new(plaintexts: &'a [Plaintext]) -> Self {
        let mut secrets: Vec<&[u8]> =
            plaintexts.iter().map(|p| p.expose_secret()).filter(|s| s.len() >= MIN_REDACTED_LEN).collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Self { secrets }
    }

    pub(crate) fn bytes(&self, input: &[u8]) -> Vec<u8> {
        if self.secrets.is_empty() {
            return input.to_vec();
        }
        let mut out = Vec::with_capacity(input.len());
        let mut i = 0;
        while i < input.len() {
            match self.secrets.iter().find(|s| input[i..].starts_with(s)) {
                Some(secret) => {
                    out.extend_from_slice(MASK);
                    i += secret.len();
                }
                None => {
                    out.push(input[i]);
                    i += 1;
                }
            }
        }
        out
    }

    pub(crate) fn text(&self, input: &str) -> String {
        String::from_utf8_lossy(&self.bytes(input.as_bytes())).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plaintexts(secrets: &[&str]) -> Vec<Plaintext> {
        secrets.iter().map(|s| Plaintext::from(s.as_bytes().to_vec())).collect()
    }

    #[test]
    fn masks_every_occurrence_longest_first() {
        let secrets = plaintexts(&["hunter2", "hunter2-admin", "pw"]);
        let redactor = Redactor::new(&secrets);
        assert_eq!(redactor.text("a hunter2 b hunter2-admin c pw"), "a [REDACTED] b [REDACTED] c pw");
        assert_eq!(redactor.text("hunter2hunter2"), "[REDACTED][REDACTED]");
    }

    #[test]
    fn leaves_text_alone_without_secrets() {
        assert_eq!(Redactor::new(&[]).text("nothing to hide"), "nothing to hide");
    }
}
