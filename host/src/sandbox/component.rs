//! Loading a guest: from bytes to a checked, pre-linked component, or one clear error naming what is wrong.

use std::path::Path;

use wasmtime::Engine;
use wasmtime::component::types::{self, ComponentItem};
use wasmtime::component::{Component, Linker, Type};

use super::GuestState;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::bindings::{HANDLER_EXPORT, SecretHandlerPre};
use crate::capability::kms::GuestPlaintext;

/// Why a component cannot be run. Each message names the problem and, where there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read component {path}: {error}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// What the OS said (in the message, not as a `source`, so it is printed once).
        error: std::io::Error,
    },
    /// The bytes are not WebAssembly at all.
    #[error("not a WebAssembly file: it does not start with the \\0asm magic bytes")]
    NotWasm,
    /// A core module where a component is needed.
    #[error(
        "this is a core WebAssembly module, not a component: build the guest for the wasm32-wasip2 target \
         (or wrap the module with `wasm-tools component new`)"
    )]
    CoreModule,
    /// A WebAssembly binary of a version or layer this host does not know.
    #[error("unsupported WebAssembly binary (version/layer bytes {0:02x?}); keyward runs components")]
    UnknownVersion([u8; 4]),
    /// The component failed validation or compilation.
    #[error("invalid component: {0}")]
    Invalid(String),
    /// The component imports an interface keyward does not grant.
    #[error(
        "component imports `{0}`, which keyward does not grant; guests may import only {list} (WASI 0.2.x, \
         keyward:lambda 0.1.x)",
        list = crate::capability::granted_list()
    )]
    ForbiddenImport(String),
    /// The component imports the plaintext capability, and the host denies guests plaintext.
    #[error(
        "component imports `{0}`, and this host denies guests plaintext (KEYWARD_GUEST_PLAINTEXT=deny, or \
         --guest-plaintext deny): use secrets through key handles (`keyward:lambda/keys`, the sealed-handler world) \
         instead of kms.decrypt, or allow plaintext"
    )]
    PlaintextDenied(String),
    /// The component does not export the handler, or exports it with another shape.
    #[error("component is of no world keyward runs: {0}")]
    WrongWorld(String),
    /// A precompiled component (`.cwasm`) this host cannot load.
    #[error(
        "cannot load the precompiled component: {0}; compile it again with this keyward (`keyward compile`), \
         for this machine's target"
    )]
    Precompiled(String),
    /// The component's digest is needed (to bind secrets to it) and cannot be known.
    #[error("cannot bind secrets to this component: {0}")]
    Digest(String),
    /// The component's memory starts larger than the memory limit.
    #[error(
        "the component's memory starts at {:.1} MiB, more than the memory limit: raise the limit \
         (KEYWARD_MEMORY_MB, or --memory-mb)",
        *needed_bytes as f64 / f64::from(1 << 20)
    )]
    MemoryLimit {
        /// The memory's initial size.
        needed_bytes: u64,
    },
    /// A `.wasm` given to a host built without the compiler (the Lambda `bootstrap` of a package).
    #[error(
        "this bootstrap runs only precompiled components (.cwasm), and this is a .wasm: package the function with \
         `keyward package`, or compile the component with `keyward compile`"
    )]
    NeedsCompiler,
    /// The engine could not be set up.
    #[error("cannot set up the WebAssembly engine: {0}")]
    Engine(String),
}

/// Most bytes of a component file read into memory (a JavaScript component is ~10 MB; `/dev/zero` never ends).
const MAX_COMPONENT_BYTES: u64 = 256 << 20;

/// Reads a component file.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, LoadError> {
    crate::text::read_bounded(path, MAX_COMPONENT_BYTES).map_err(|error| LoadError::Io { path: path.into(), error })
}

/// The first bytes of a file (fewer if it is shorter), enough to tell a `.cwasm` from a `.wasm`.
fn head(path: &Path) -> Result<Vec<u8>, LoadError> {
    use std::io::Read as _;
    let mut head = Vec::with_capacity(8);
    std::fs::File::open(path)
        .and_then(|file| file.take(8).read_to_end(&mut head))
        .map_err(|error| LoadError::Io { path: path.into(), error })?;
    Ok(head)
}

/// Where a component comes from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ComponentSource<'a> {
    /// Its bytes, `.wasm` or `.cwasm`.
    Bytes(&'a [u8]),
    /// A file: a `.cwasm` is mapped into memory, not read (the code pages are the file's, loaded as they are
    /// first run), a `.wasm` read.
    File(&'a Path),
}

/// Checks and compiles (or loads precompiled) a component, then links it against everything the host provides.
pub(crate) fn load(
    engine: &Engine,
    linker: &Linker<GuestState>,
    source: ComponentSource<'_>,
    plaintext: GuestPlaintext,
) -> Result<GuestPre, LoadError> {
    let component = match source {
        ComponentSource::Bytes(bytes) if is_precompiled(bytes) => {
            // SAFETY: see `deserialize_file` below; these bytes are the file's.
            #[allow(unsafe_code)]
            let component = unsafe { Component::deserialize(engine, super::digest::without_record(bytes)) };
            component.map_err(|e| load_error(&e, LoadError::Precompiled))?
        }
        ComponentSource::Bytes(bytes) => {
            check_header(bytes)?;
            compile(engine, bytes)?
        }
        ComponentSource::File(path) if is_precompiled(&head(path)?) => {
            // SAFETY: `deserialize_file` trusts that the file is wasmtime's own output, and that it does not
            // change while mapped. It checks what can be checked — the wasmtime version, the target and the engine
            // settings recorded in the file — and refuses a file made by another version, for another machine or
            // with other settings. keyward loads only the `.cwasm` of the deployment package (made by
            // `keyward compile`/`package`), which is as trusted as the binary itself and, on Lambda, read-only.
            // keyward's digest record after wasmtime's bytes is mapped too, and ignored: wasmtime reads the ELF
            // through its headers, and nothing points past the section table (tested: every `.cwasm` has one).
            #[allow(unsafe_code)]
            let component = unsafe { Component::deserialize_file(engine, path) };
            component.map_err(|e| load_error(&e, LoadError::Precompiled))?
        }
        ComponentSource::File(path) => return load(engine, linker, ComponentSource::Bytes(&read(path)?), plaintext),
    };
    let ty = component.component_type();
    for (name, _) in ty.imports(engine) {
        if !crate::capability::is_granted(name) {
            return Err(LoadError::ForbiddenImport(name.to_string()));
        }
        if plaintext == GuestPlaintext::Deny && crate::capability::is_plaintext(name) {
            return Err(LoadError::PlaintextDenied(name.to_string()));
        }
    }
    let world = world(engine, &ty).map_err(LoadError::WrongWorld)?;
    let wrong_world = |e: wasmtime::Error| LoadError::WrongWorld(error_line(&e));
    let pre = linker.instantiate_pre(&component).map_err(wrong_world)?;
    Ok(match world {
        World::Handler => GuestPre::Handler(SecretHandlerPre::new(pre).map_err(wrong_world)?),
        World::Http => GuestPre::Http(ProxyPre::new(pre).map_err(wrong_world)?),
    })
}

/// The two worlds a component may be of, told apart by their exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    /// keyward's own (`keyward:lambda/handler`): the event JSON in, the response JSON out.
    Handler,
    /// The Wasm ecosystem's HTTP world (`wasi:http/incoming-handler` 0.2.x): an HTTP event's request in, its
    /// response out.
    Http,
}

impl World {
    /// The export that makes a component of this world, for the log line that says which it runs.
    pub fn export(self) -> &'static str {
        match self {
            World::Handler => HANDLER_EXPORT,
            World::Http => "wasi:http/incoming-handler@0.2",
        }
    }
}

/// A linked component, ready to be instantiated, of either world.
pub(crate) enum GuestPre {
    Handler(SecretHandlerPre<GuestState>),
    Http(ProxyPre<GuestState>),
}

impl GuestPre {
    pub(crate) fn world(&self) -> World {
        match self {
            GuestPre::Handler(_) => World::Handler,
            GuestPre::Http(_) => World::Http,
        }
    }

    /// The compiled component.
    #[cfg(feature = "compiler")]
    pub(crate) fn component(&self) -> &Component {
        match self {
            GuestPre::Handler(pre) => pre.instance_pre().component(),
            GuestPre::Http(pre) => pre.instance_pre().component(),
        }
    }
}

/// The export of the HTTP world, in any 0.2 version.
const HTTP_EXPORT: &str = "wasi:http/incoming-handler@0.2.";

/// Which world the component's exports make it: keyward's handler (its `handle` checked against the WIT signature
/// now, so a mismatch is a load error rather than a failure of every invocation), or the HTTP world.
fn world(engine: &Engine, ty: &types::Component) -> Result<World, String> {
    let exports: Vec<&str> = ty.exports(engine).map(|(name, _)| name).collect();
    let http = exports.iter().any(|name| name.starts_with(HTTP_EXPORT));
    match (exports.contains(&HANDLER_EXPORT), http) {
        (true, true) => Err(format!(
            "it exports both `{HANDLER_EXPORT}` and `wasi:http/incoming-handler`; keyward runs a component of one \
             world, so export only one"
        )),
        (true, false) => check_handler(engine, ty).map(|()| World::Handler),
        (false, true) => check_http(engine, ty).map(|()| World::Http),
        (false, false) => {
            let found: Vec<String> = exports.iter().map(|name| format!("`{name}`")).collect();
            let found = if found.is_empty() { "none".to_string() } else { found.join(", ") };
            Err(format!(
                "it exports neither `{HANDLER_EXPORT}` (keyward's handler world) nor `wasi:http/incoming-handler@0.2.x` \
                 (the HTTP world); its exports: {found}"
            ))
        }
    }
}

#[cfg(feature = "compiler")]
fn compile(engine: &Engine, bytes: &[u8]) -> Result<Component, LoadError> {
    Component::from_binary(engine, bytes).map_err(|e| load_error(&e, LoadError::Invalid))
}

#[cfg(not(feature = "compiler"))]
fn compile(_: &Engine, _: &[u8]) -> Result<Component, LoadError> {
    Err(LoadError::NeedsCompiler)
}

/// A load error in keyward's words: wasmtime refuses a component whose memory starts larger than the pool's
/// slots (the memory limit) as not fitting "pooling allocator requirements"; anything else is `otherwise`.
fn load_error(error: &wasmtime::Error, otherwise: fn(String) -> LoadError) -> LoadError {
    let line = error_line(error);
    let needed = line.split("memory has a minimum byte size of ").nth(1).and_then(|rest| {
        let digits = rest.split(|c: char| !c.is_ascii_digit()).next()?;
        digits.parse().ok()
    });
    match needed {
        Some(needed_bytes) => LoadError::MemoryLimit { needed_bytes },
        None => otherwise(line),
    }
}

/// Checks the exported `handle` against the WIT signature.
fn check_handler(engine: &Engine, ty: &types::Component) -> Result<(), String> {
    let Some((_, handler)) = ty.exports(engine).find(|(name, _)| *name == HANDLER_EXPORT) else {
        return Err(format!("it does not export `{HANDLER_EXPORT}`"));
    };
    let ComponentItem::ComponentInstance(handler) = handler.ty else {
        return Err(format!("its export `{HANDLER_EXPORT}` is not an interface instance"));
    };
    let handle = handler.exports(engine).find(|(name, _)| *name == "handle").map(|(_, export)| export.ty);
    let Some(ComponentItem::ComponentFunc(handle)) = handle else {
        return Err(format!("its `{HANDLER_EXPORT}` has no function `handle`"));
    };
    let params: Vec<Type> = handle.params().map(|(_, ty)| ty).collect();
    let results: Vec<Type> = handle.results().collect();
    let context_ok = |ty: &Type| match ty {
        Type::Record(record) => {
            let fields: Vec<(&str, Type)> = record.fields().map(|f| (f.name, f.ty)).collect();
            fields == [("request-id", Type::String), ("function-arn", Type::String), ("deadline-ms", Type::U64)]
        }
        _ => false,
    };
    let result_ok =
        |ty: &Type| matches!(ty, Type::Result(r) if r.ok() == Some(Type::String) && r.err() == Some(Type::String));
    let shape_ok = matches!(params.as_slice(), [Type::String, context] if context_ok(context))
        && matches!(results.as_slice(), [result] if result_ok(result));
    if !shape_ok {
        return Err(
            "its `handle` does not have the signature `func(event: string, ctx: context) -> result<string, string>` \
             of keyward:lambda@0.1.0 (was it built against another version of wit/keyward.wit?)"
                .into(),
        );
    }
    Ok(())
}

/// Checks the exported `wasi:http/incoming-handler`'s `handle`: two owned handles (the request and the response
/// outparam) in, nothing out. wasmtime's bindings check the resource types only at instantiation, so without this a
/// mismatch would fail every invocation instead of the load.
fn check_http(engine: &Engine, ty: &types::Component) -> Result<(), String> {
    let Some((name, export)) = ty.exports(engine).find(|(name, _)| name.starts_with(HTTP_EXPORT)) else {
        return Err("it does not export `wasi:http/incoming-handler`".into());
    };
    let ComponentItem::ComponentInstance(handler) = export.ty else {
        return Err(format!("its export `{name}` is not an interface instance"));
    };
    let handle = handler.exports(engine).find(|(name, _)| *name == "handle").map(|(_, export)| export.ty);
    let shape_ok = match handle {
        Some(ComponentItem::ComponentFunc(handle)) => {
            let params: Vec<Type> = handle.params().map(|(_, ty)| ty).collect();
            matches!(params.as_slice(), [Type::Own(_), Type::Own(_)]) && handle.results().next().is_none()
        }
        _ => false,
    };
    if !shape_ok {
        return Err(format!(
            "its `{name}` has no function `handle(request: incoming-request, response-out: response-outparam)` \
             (was it built against another version of wasi:http?)"
        ));
    }
    Ok(())
}

/// A `.cwasm` is an ELF file made by wasmtime.
pub(crate) fn is_precompiled(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x7fELF")
}

/// Checks that `bytes` start as a component does (not a core module, not something else).
pub(crate) fn check_header(bytes: &[u8]) -> Result<(), LoadError> {
    const MAGIC: &[u8; 4] = b"\0asm";
    const CORE_MODULE: [u8; 4] = [1, 0, 0, 0];
    const COMPONENT: [u8; 4] = [0x0d, 0, 1, 0];
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err(LoadError::NotWasm);
    }
    match [bytes[4], bytes[5], bytes[6], bytes[7]] {
        COMPONENT => Ok(()),
        CORE_MODULE => Err(LoadError::CoreModule),
        other => Err(LoadError::UnknownVersion(other)),
    }
}

/// A wasmtime error and its causes on one line.
pub(crate) fn error_line(error: &wasmtime::Error) -> String {
    crate::error::one_line(&error.chain().map(ToString::to_string).collect::<Vec<_>>().join(": "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_told_apart() {
        assert!(matches!(check_header(b""), Err(LoadError::NotWasm)));
        assert!(matches!(check_header(b"#!/bin/sh\necho hi\n"), Err(LoadError::NotWasm)));
        assert!(matches!(check_header(b"\0asm\x01\0\0\0"), Err(LoadError::CoreModule)));
        assert!(matches!(check_header(b"\0asm\x0d\0\x01\0"), Ok(())));
        assert!(matches!(check_header(b"\0asm\x02\0\0\0"), Err(LoadError::UnknownVersion(_))));
    }
}
