//! keyward's integration tests: real components (built by `cargo xtask build-guests`), real crypto, the real
//! `keyward` binary. One test binary, one module per area.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod aws_kms;
mod cli;
mod deploy;
mod fault_proxy;
mod hello;
mod hostile;
mod http_world;
mod keys;
mod kms;
mod lambda;
mod lambda_edge;
mod origin;
mod outbound;
mod runtime_api_server;
mod sandbox;
mod scaffold;
mod sealed;
mod servers;
mod stored;
mod support;
