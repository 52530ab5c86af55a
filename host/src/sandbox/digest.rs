//! Which build of a guest this is: the SHA-256 of the component as written (the `.wasm`), the same for every
//! `.cwasm` compiled from it, whatever the target. Computed from a `.wasm`; a `.cwasm` carries it in a record of
//! keyward's after wasmtime's own bytes, written by [`precompile`](super::precompile).
//!
//! What is and is not verified: a `.wasm`'s digest is computed from the very bytes the host runs. A `.cwasm`'s
//! record is an assertion by whoever compiled it (the host has no compiler to check it against the code): it is
//! checked to be well-formed, and a `.cwasm` without one cannot be bound. A `.cwasm` is trusted as the `bootstrap`
//! beside it is; against a swapped package, sign it (Lambda code signing checks the whole zip before it runs).

use std::fmt;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::Path;

use sha2::{Digest as _, Sha256};
use wasmtime::{Engine, Precompiled};

use super::LoadError;
use super::component::{ComponentSource, check_header, is_precompiled};

/// The record's end: its length (u32, little-endian), then this magic. ELF readers, wasmtime's among them, find
/// everything through the headers and ignore bytes after the section table.
const MAGIC: &[u8; 8] = b"KWDIGST1";
/// `sha256:` and 64 hex digits.
const RECORD_LEN: usize = 7 + 64;
const TRAILER_LEN: usize = RECORD_LEN + 4 + MAGIC.len();

/// A component's digest, `sha256:<64 lowercase hex digits>` as it is stamped
/// ([`COMPONENT_KEY`](crate::context::COMPONENT_KEY)`=sha256:…`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ComponentDigest(String);

impl ComponentDigest {
    /// The digest of a component's bytes, as written (`.wasm`), unchecked.
    pub fn of_wasm(component: &[u8]) -> Self {
        Self(format!("sha256:{}", crate::secrets::hex(&Sha256::digest(component))))
    }

    /// The digest `component` (a `.wasm`, or a `.cwasm` with its record) is a build of.
    ///
    /// # Errors
    /// [`LoadError::Io`] when the file cannot be read; [`LoadError::NotWasm`] and its kin for a file that is
    /// neither a component nor a `.cwasm`; [`LoadError::Digest`] for a `.cwasm` without a well-formed record.
    pub fn of_file(path: &Path) -> Result<Self, LoadError> {
        Self::of(ComponentSource::File(path))
    }

    pub(crate) fn of(source: ComponentSource<'_>) -> Result<Self, LoadError> {
        match source {
            ComponentSource::Bytes(bytes) if is_precompiled(bytes) => {
                wasmtimes(Engine::detect_precompiled(bytes))?;
                recorded(bytes)
            }
            ComponentSource::Bytes(bytes) => check_header(bytes).map(|()| Self::of_wasm(bytes)),
            ComponentSource::File(path) => {
                let io = |error| LoadError::Io { path: path.into(), error };
                let mut file = std::fs::File::open(path).map_err(io)?;
                let mut head = [0u8; 4];
                let precompiled = file.read_exact(&mut head).is_ok() && is_precompiled(&head);
                if !precompiled {
                    return Self::of(ComponentSource::Bytes(&super::component::read(path)?));
                }
                // An ELF file wasmtime cannot parse is not its.
                wasmtimes(Engine::detect_precompiled_file(path).ok().flatten())?;
                let mut tail = vec![0u8; TRAILER_LEN];
                let len = file.seek(SeekFrom::End(0)).map_err(io)?;
                if len < TRAILER_LEN as u64 {
                    return Err(LoadError::Digest(NO_RECORD.into()));
                }
                file.seek(SeekFrom::End(-(TRAILER_LEN as i64))).and_then(|_| file.read_exact(&mut tail)).map_err(io)?;
                recorded(&tail)
            }
        }
    }

    /// `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ComponentDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether an ELF file is wasmtime's precompiled component (its header says so): anything else holds no digest
/// worth reading, whatever bytes end it.
fn wasmtimes(detected: Option<Precompiled>) -> Result<(), LoadError> {
    match detected {
        Some(Precompiled::Component) => Ok(()),
        _ => Err(LoadError::Digest(
            "this ELF file is not a component precompiled by wasmtime: compile the .wasm with `keyward compile`".into(),
        )),
    }
}

const NO_RECORD: &str = "the precompiled component records no component digest (made by another tool or an older \
                         keyward, or cut short): compile the .wasm again with `keyward compile`";

/// Appends `digest`'s record to wasmtime's `.cwasm` bytes.
#[cfg(any(feature = "compiler", test))]
pub(crate) fn append_record(cwasm: &mut Vec<u8>, digest: &ComponentDigest) {
    cwasm.extend_from_slice(digest.0.as_bytes());
    cwasm.extend_from_slice(&(RECORD_LEN as u32).to_le_bytes());
    cwasm.extend_from_slice(MAGIC);
}

/// wasmtime's bytes of a `.cwasm`, without keyward's record (for deserializing from memory).
pub(crate) fn without_record(cwasm: &[u8]) -> &[u8] {
    match recorded(cwasm) {
        Ok(_) => &cwasm[..cwasm.len() - TRAILER_LEN],
        Err(_) => cwasm,
    }
}

/// The digest recorded at the end of `bytes`.
fn recorded(bytes: &[u8]) -> Result<ComponentDigest, LoadError> {
    let Some(trailer) = bytes.len().checked_sub(TRAILER_LEN).map(|start| &bytes[start..]) else {
        return Err(LoadError::Digest(NO_RECORD.into()));
    };
    let (record, end) = trailer.split_at(RECORD_LEN);
    if &end[4..] != MAGIC {
        return Err(LoadError::Digest(NO_RECORD.into()));
    }
    let well_formed = u32::from_le_bytes([end[0], end[1], end[2], end[3]]) as usize == RECORD_LEN
        && record.starts_with(b"sha256:")
        && record[7..].iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !well_formed {
        return Err(LoadError::Digest(
            "the precompiled component's digest record is malformed (the file was changed after `keyward \
             compile`): compile the .wasm again"
                .into(),
        ));
    }
    // Checked: ASCII.
    Ok(ComponentDigest(String::from_utf8_lossy(record).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stands for wasmtime's bytes: the record's handling does not read them (real `.cwasm` files, and ELF files
    /// that are not wasmtime's, are tested through `keyward digest` in the integration tests).
    const ELF: &[u8] = b"\x7fELF and the rest of wasmtime's bytes";

    #[test]
    fn a_record_round_trips_and_comes_off_for_wasmtime() {
        let digest = ComponentDigest::of_wasm(b"\0asm\x0d\0\x01\0");
        assert!(digest.as_str().starts_with("sha256:") && digest.as_str().len() == 71, "{digest}");
        let mut cwasm = ELF.to_vec();
        append_record(&mut cwasm, &digest);
        assert_eq!(recorded(&cwasm).unwrap(), digest);
        assert_eq!(without_record(&cwasm), ELF);
        assert_eq!(without_record(ELF), ELF);
    }

    #[test]
    fn only_a_component_has_a_digest() {
        for (bytes, says) in [
            (&b"#!/bin/sh\necho hi\n"[..], "not a WebAssembly file"),
            (b"", "not a WebAssembly file"),
            (b"\0asm\x01\0\0\0", "core WebAssembly module, not a component"),
            (ELF, "this ELF file is not a component precompiled by wasmtime"),
        ] {
            let error = ComponentDigest::of(ComponentSource::Bytes(bytes)).unwrap_err().to_string();
            assert!(error.contains(says), "{error}");
        }
    }

    #[test]
    fn a_cwasm_without_a_sound_record_has_no_digest() {
        let digest = ComponentDigest::of_wasm(b"x");
        let mut upper = ELF.to_vec();
        append_record(&mut upper, &ComponentDigest(digest.0.to_uppercase().replace("SHA256", "sha256")));
        let mut wrong_length = ELF.to_vec();
        append_record(&mut wrong_length, &digest);
        let at = wrong_length.len() - 12;
        wrong_length[at] = 70;
        for (case, bytes, says) in [
            ("none", ELF.to_vec(), "records no component digest"),
            ("too short", b"\x7fELF".to_vec(), "records no component digest"),
            ("hex in upper case", upper, "malformed"),
            ("a wrong length", wrong_length, "malformed"),
        ] {
            let error = recorded(&bytes).unwrap_err().to_string();
            assert!(error.contains(says), "{case}: {error}");
        }
    }
}
