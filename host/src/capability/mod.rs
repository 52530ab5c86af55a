//! What a guest can reach, one home per capability, each shaped as a Spin factor is: its settings (parsed beside
//! their struct, checked once), its shared state (built once per host), its per-instance state (built for each
//! invocation's store, from the shared state), its `add_to_linker`, and unit tests that need no wasm.
//!
//! - [`env`]: the guest's environment (`wasi:cli/environment`).
//! - [`kms`]: `keyward:lambda/kms`, plaintext handed to the guest.
//! - [`keys`]: `keyward:lambda/keys`, secrets used in the host through handles.
//! - [`http`]: `wasi:http/outgoing-handler`, requests under the egress policy, with secrets the host injects.
//!
//! The secret capabilities (and injection) fetch through the one [`SecretGate`] and count against the invocation's one
//! [`Session`] of secret uses. A new capability adds a module here, a field to [`Capabilities`] and to
//! [`Instance`], and its line in [`GRANTED`], the one import table: the list links each granted interface (and
//! nothing else: no sockets), checks every component's imports at load, and words the refusal;
//! docs/guests.md's list is tested against it.
//!
//! Every WASI interface is granted empty: no preopened directories, no environment beyond what is configured, no
//! stdin, stdout and stderr captured by the host.

pub mod env;
pub mod http;
pub mod keys;
pub mod kms;

use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::{HasData, Linker, ResourceTable};
use wasmtime_wasi::cli::{WasiCli, WasiCliView as _};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView as _};
use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView as _};
use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, io, random};
use wasmtime_wasi::random::WasiRandom;

use crate::sandbox::GuestState;
use crate::secrets::{Backends, CheckedSecrets, DecryptRecord, SecretGate, Session};
use env::GuestEnv;
use http::{CheckedHttp, OutboundRecord};
use keys::{KeyOperationRecord, KeysSettings};

/// Every capability's shared state: built once per host, from its checked settings.
#[derive(Debug)]
pub(crate) struct Capabilities {
    /// The guest's environment.
    pub(crate) env: GuestEnv,
    /// Where every secret a guest asks for is fetched: policy, cache, audit.
    pub(crate) secrets: Arc<SecretGate>,
    keys: KeysSettings,
    http: Arc<http::Outbound>,
}

impl Capabilities {
    /// The shared state of each capability, fetching secrets from `backend`. (`kms` has none of its own: its
    /// one setting decides at load whether a component may import it.)
    pub(crate) fn new(
        env: GuestEnv,
        secrets: CheckedSecrets,
        keys: KeysSettings,
        http: CheckedHttp,
        backends: Backends,
    ) -> Self {
        let secrets = Arc::new(SecretGate::new(backends, secrets));
        Self { env, secrets, keys, http: Arc::new(http::Outbound::new(http)) }
    }

    /// Each capability's state for one invocation's store.
    pub(crate) fn instance(&self) -> Instance {
        let secrets = self.secrets.session();
        Instance {
            http: self.http.instance(secrets.clone()),
            secrets,
            kms: kms::Instance::default(),
            keys: keys::Instance::new(self.keys),
        }
    }
}

/// Every capability's state in one store: made with the instance (maybe ahead of its invocation), started when the
/// invocation starts, finished when it ends.
#[derive(Debug)]
pub(crate) struct Instance {
    secrets: Session,
    kms: kms::Instance,
    keys: keys::Instance,
    http: http::Instance,
}

/// What an invocation's capabilities kept of it.
#[derive(Debug)]
pub(crate) struct Finished {
    /// Every decrypt (and key opening), in order.
    pub(crate) decrypts: Vec<DecryptRecord>,
    /// Every key operation, in order.
    pub(crate) key_operations: Vec<KeyOperationRecord>,
    /// The plaintexts handed to the guest: masked out of its output and error, zeroized when dropped.
    pub(crate) handed_out: kms::HandedOutAll,
    /// Every outgoing request, in order.
    pub(crate) outbound: Vec<OutboundRecord>,
}

impl Instance {
    /// The invocation starts: the guest may ask for secrets, which must come by `deadline` (as must any host-side
    /// work it asks for).
    pub(crate) fn start(&mut self, deadline: Instant) {
        self.secrets.start(deadline);
    }

    /// What wasi:http's host functions reach: for the host to hand an HTTP component its request.
    pub(crate) fn http_view<'a>(&'a mut self, table: &'a mut ResourceTable) -> wasmtime_wasi_http::WasiHttpCtxView<'a> {
        self.http.view(table)
    }

    /// The invocation's records, and what must outlive its response, taken out.
    pub(crate) fn finish(&mut self) -> Finished {
        Finished {
            decrypts: self.secrets.finish(),
            key_operations: self.keys.finish(),
            handed_out: self.kms.finish(),
            outbound: self.http.finish(),
        }
    }
}

/// One interface a guest may import.
pub(crate) struct Grant {
    /// `namespace:package/interface`; a component may import any version the linker's semver matching accepts.
    pub(crate) name: &'static str,
    link: fn(&mut Linker<GuestState>) -> wasmtime::Result<()>,
}

/// The store's resource table, for the `wasi:io` interfaces.
struct Table;

impl HasData for Table {
    type Data<'a> = &'a mut ResourceTable;
}

fn table(state: &mut GuestState) -> &mut ResourceTable {
    &mut state.table
}

fn rng(state: &mut GuestState) -> &mut wasmtime_wasi::random::WasiRandomCtx {
    state.wasi.random()
}

/// What guests may import. A Rust `wasm32-wasip2` guest imports most of these through `std` whether it uses them
/// or not (filesystem among them: with no directories granted, every path fails).
pub(crate) const GRANTED: &[Grant] = &[
    Grant {
        name: "keyward:lambda/keys",
        link: |l| {
            keys::add_to_linker(l, |s: &mut GuestState| {
                keys::View::of(&mut s.caps.keys, &mut s.caps.secrets, &mut s.table)
            })
        },
    },
    Grant {
        name: PLAINTEXT,
        link: |l| kms::add_to_linker(l, |s: &mut GuestState| kms::View::of(&mut s.caps.kms, &mut s.caps.secrets)),
    },
    Grant { name: "wasi:cli/environment", link: |l| cli::environment::add_to_linker::<_, WasiCli>(l, GuestState::cli) },
    Grant { name: "wasi:cli/exit", link: |l| cli::exit::add_to_linker::<_, WasiCli>(l, GuestState::cli) },
    Grant { name: "wasi:cli/stdin", link: |l| cli::stdin::add_to_linker::<_, WasiCli>(l, GuestState::cli) },
    Grant { name: "wasi:cli/stdout", link: |l| cli::stdout::add_to_linker::<_, WasiCli>(l, GuestState::cli) },
    Grant { name: "wasi:cli/stderr", link: |l| cli::stderr::add_to_linker::<_, WasiCli>(l, GuestState::cli) },
    Grant {
        name: "wasi:cli/terminal-input",
        link: |l| cli::terminal_input::add_to_linker::<_, WasiCli>(l, GuestState::cli),
    },
    Grant {
        name: "wasi:cli/terminal-output",
        link: |l| cli::terminal_output::add_to_linker::<_, WasiCli>(l, GuestState::cli),
    },
    Grant {
        name: "wasi:cli/terminal-stdin",
        link: |l| cli::terminal_stdin::add_to_linker::<_, WasiCli>(l, GuestState::cli),
    },
    Grant {
        name: "wasi:cli/terminal-stdout",
        link: |l| cli::terminal_stdout::add_to_linker::<_, WasiCli>(l, GuestState::cli),
    },
    Grant {
        name: "wasi:cli/terminal-stderr",
        link: |l| cli::terminal_stderr::add_to_linker::<_, WasiCli>(l, GuestState::cli),
    },
    Grant {
        name: "wasi:clocks/monotonic-clock",
        link: |l| clocks::monotonic_clock::add_to_linker::<_, WasiClocks>(l, GuestState::clocks),
    },
    Grant {
        name: "wasi:clocks/wall-clock",
        link: |l| clocks::wall_clock::add_to_linker::<_, WasiClocks>(l, GuestState::clocks),
    },
    Grant {
        name: "wasi:filesystem/preopens",
        link: |l| filesystem::preopens::add_to_linker::<_, WasiFilesystem>(l, GuestState::filesystem),
    },
    Grant {
        name: "wasi:filesystem/types",
        link: |l| filesystem::types::add_to_linker::<_, WasiFilesystem>(l, GuestState::filesystem),
    },
    Grant {
        name: "wasi:http/outgoing-handler",
        link: |l| http::add_outgoing_handler(l, |s: &mut GuestState| s.caps.http.view(&mut s.table)),
    },
    Grant {
        name: "wasi:http/types",
        link: |l| http::add_types(l, |s: &mut GuestState| s.caps.http.view(&mut s.table)),
    },
    Grant { name: "wasi:io/error", link: |l| io::error::add_to_linker::<_, Table>(l, table) },
    Grant { name: "wasi:io/poll", link: |l| io::poll::add_to_linker::<_, Table>(l, table) },
    Grant { name: "wasi:io/streams", link: |l| io::streams::add_to_linker::<_, Table>(l, table) },
    Grant { name: "wasi:random/insecure", link: |l| random::insecure::add_to_linker::<_, WasiRandom>(l, rng) },
    Grant {
        name: "wasi:random/insecure-seed",
        link: |l| random::insecure_seed::add_to_linker::<_, WasiRandom>(l, rng),
    },
    Grant { name: "wasi:random/random", link: |l| random::random::add_to_linker::<_, WasiRandom>(l, rng) },
];

/// The plaintext capability: a host that denies guests plaintext refuses a component importing it, at load.
const PLAINTEXT: &str = "keyward:lambda/kms";

/// Links every granted interface, and nothing else.
pub(crate) fn add_to_linker(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    GRANTED.iter().try_for_each(|grant| (grant.link)(linker))
}

/// Whether an import is the plaintext capability (`keyward:lambda/kms@0.1.0`), in any version.
pub(crate) fn is_plaintext(import: &str) -> bool {
    import.split_once('@').map_or(import, |(name, _)| name) == PLAINTEXT
}

/// The versions granted: the WASI 0.2 releases wasmtime-wasi links (by semver, any 0.2.x), and keyward's own 0.1.
const VERSIONS: &[(&str, &str)] = &[("wasi:", "0.2."), ("keyward:", "0.1.")];

/// Whether an import (`wasi:cli/stdout@0.2.3`) is granted: a granted interface, in a granted version.
pub(crate) fn is_granted(import: &str) -> bool {
    let Some((name, version)) = import.split_once('@') else { return false };
    let version_ok = VERSIONS.iter().any(|(package, v)| name.starts_with(package) && version.starts_with(v));
    version_ok && GRANTED.iter().any(|grant| grant.name == name)
}

/// The granted interfaces for a message: `keyward:lambda/kms, wasi:cli/{environment, exit, ...}, ...`.
pub(crate) fn granted_list() -> String {
    let mut packages: Vec<(&str, Vec<&str>)> = Vec::new();
    for grant in GRANTED {
        let (package, interface) = grant.name.split_once('/').unwrap_or((grant.name, ""));
        match packages.iter_mut().find(|(p, _)| *p == package) {
            Some((_, interfaces)) => interfaces.push(interface),
            None => packages.push((package, vec![interface])),
        }
    }
    let groups: Vec<String> = packages
        .into_iter()
        .map(|(package, interfaces)| match interfaces.as_slice() {
            [one] => format!("{package}/{one}"),
            many => format!("{package}/{{{}}}", many.join(", ")),
        })
        .collect();
    groups.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_granted_interfaces_in_granted_versions_pass() {
        assert!(is_granted("wasi:cli/stdout@0.2.3"));
        assert!(is_granted("wasi:cli/stdout@0.2.12"));
        assert!(is_granted("keyward:lambda/kms@0.1.0"));
        assert!(is_granted("wasi:http/outgoing-handler@0.2.0"));
        let refused = [
            "wasi:sockets/tcp@0.2.0",
            "wasi:http/incoming-handler@0.2.0",
            "wasi:cli/run@0.2.0",
            "x",
            "wasi:cli/environment@0.3.0",
            "wasi:cli/environment",
            "keyward:lambda/kms@0.2.0",
        ];
        for refused in refused {
            assert!(!is_granted(refused), "{refused}");
        }
    }

    #[test]
    fn the_plaintext_capability_is_kms_in_any_version() {
        for plaintext in ["keyward:lambda/kms@0.1.0", "keyward:lambda/kms@0.1.9", "keyward:lambda/kms"] {
            assert!(is_plaintext(plaintext), "{plaintext}");
        }
        for other in ["keyward:lambda/keys@0.1.0", "keyward:lambda/kmsx@0.1.0", "other:lambda/kms@0.1.0"] {
            assert!(!is_plaintext(other), "{other}");
        }
    }

    #[test]
    fn the_list_names_every_grant_by_package() {
        let list = granted_list();
        assert!(list.starts_with("keyward:lambda/{keys, kms}, wasi:cli/{environment, exit, stdin"), "{list}");
        assert!(list.contains("wasi:io/{error, poll, streams}"), "{list}");
    }

    /// docs/guests.md's list of what guests may import is this list.
    #[test]
    fn the_docs_list_every_grant() {
        let readme = include_str!("../../../docs/guests.md");
        let start = readme.find("Guests may import exactly these interfaces").expect("docs/guests.md's import list");
        let section = &readme[start..];
        let end = section.find("\n\n").unwrap_or(section.len());
        let mut listed: Vec<&str> = section[..end].split('`').skip(1).step_by(2).collect();
        listed.sort();
        let mut granted: Vec<&str> = GRANTED.iter().map(|g| g.name).collect();
        granted.sort();
        assert_eq!(listed, granted);
    }
}
