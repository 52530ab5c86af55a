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
