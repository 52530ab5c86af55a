//! Host-side bindings of `wit/keyward.wit`: every `bindgen!` of the host is here.

wasmtime::component::bindgen!({
    world: "secret-handler",
    path: "../wit",
    // `decrypt` awaits the key service, and traps when the guest is over its decrypt quota.
    imports: { default: async | trappable },
    exports: { default: async },
    with: { "keyward:lambda/keys.key": crate::capability::keys::KeyHandle },
});

pub(crate) use self::exports::keyward::lambda::handler::Context as HandlerContext;
pub(crate) use self::keyward::lambda::{keys, kms};

/// The name of the export a guest must provide.
pub(crate) const HANDLER_EXPORT: &str = "keyward:lambda/handler@0.1.0";

/// `wit/http`'s `http-handler` world resolves (its WASI packages and keyward's found in `wit/http/deps`), and is
/// `wasi:http/proxy` with keyward's `secrets`: checked by the compiler, on bindings made of it for the tests only.
#[cfg(test)]
#[allow(dead_code, missing_docs)]
mod http_handler_world {
    wasmtime::component::bindgen!({ world: "keyward:http/http-handler", path: "../wit/http" });

    const EXPORTS_INCOMING_HANDLER: fn(&HttpHandler) -> &exports::wasi::http::incoming_handler::Guest =
        HttpHandler::wasi_http_incoming_handler;
    const IMPORTS_KMS: Option<&dyn keyward::lambda::kms::Host> = None;
    const IMPORTS_OUTGOING_HANDLER: Option<&dyn wasi::http::outgoing_handler::Host> = None;
}
