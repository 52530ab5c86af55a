//! keyward's integration tests: real components (built by `cargo xtask build-guests`), real crypto, the real
//! `keyward` binary. One test binary, one module per area.

mod cli;
mod hello;
mod kms;
mod sandbox;
mod support;
