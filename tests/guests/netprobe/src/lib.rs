//! A test guest that wants the network: it imports `wasi:sockets`, which keyward does not grant, so no host may
//! load it.

#[allow(unsafe_code)] // wit-bindgen's generated ABI glue
mod bindings {
    wit_bindgen::generate!({
        world: "secret-handler",
        path: "../../../wit",
    });

    use super::NetProbe;
    export!(NetProbe);
}

use bindings::exports::keyward::lambda::handler::{Context, Guest};

struct NetProbe;

impl Guest for NetProbe {
    fn handle(_event: String, _ctx: Context) -> Result<String, String> {
        let network = wasip2::sockets::instance_network::instance_network();
        let socket =
            wasip2::sockets::tcp_create_socket::create_tcp_socket(wasip2::sockets::network::IpAddressFamily::Ipv4)
                .map_err(|e| format!("no socket: {e:?}"))?;
        drop((network, socket));
        Ok("{\"connected\":true}".into())
    }
}
