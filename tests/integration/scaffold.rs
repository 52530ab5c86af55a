//! `keyward new`: a freshly scaffolded guest builds, and its own stub-host test passes.

use std::path::PathBuf;
use std::process::Command;

use crate::support::*;

#[test]
fn a_new_guest_builds_and_its_test_passes() {
    let dir = TempDir::new("scaffold");
    // A path, as `cargo new` takes one: the crate is named after its last part.
    let out = keyward_cmd(&["new", "guests/my-guest"]).current_dir(&dir.0).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let project = dir.0.join("guests/my-guest");
    assert!(std::fs::read_to_string(project.join("Cargo.toml")).unwrap().contains("name = \"my-guest\""));
    for file in ["Cargo.toml", "src/lib.rs", "tests/stub_host.rs", "README.md"] {
        assert!(project.join(file).exists(), "{file} is missing");
    }

    let out = cargo_test(&project);
    assert!(stdout(&out).contains("test answers_a_function_url_request ... ok"), "{}", stdout(&out));

    let again = keyward_cmd(&["new", "guests/my-guest"]).current_dir(&dir.0).output().unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(stderr(&again).contains("already exists"));
    for bad_name in ["My Guest", "fn", "self", "test", "std", "proc-macro"] {
        let bad = keyward_cmd(&["new", bad_name]).current_dir(&dir.0).output().unwrap();
        assert_eq!(bad.status.code(), Some(2), "{bad_name}");
        assert!(stderr(&bad).contains("not a usable crate name"), "{bad_name}: {}", stderr(&bad));
        assert!(!dir.0.join(bad_name).exists(), "{bad_name}: nothing is created");
    }
    let named = keyward_cmd(&["new", "Odd Dir", "--name", "odd-dir"]).current_dir(&dir.0).output().unwrap();
    assert!(named.status.success(), "{}", stderr(&named));
    assert!(std::fs::read_to_string(dir.0.join("Odd Dir/Cargo.toml")).unwrap().contains("name = \"odd-dir\""));
}

/// `keyward new --lang js`: a componentize-js project whose `npm test` builds the component and runs it in the
/// keyward host.
#[test]
fn a_new_javascript_guest_builds_and_its_test_passes() {
    let dir = TempDir::new("scaffold-js");
    let out = keyward_cmd(&["new", "my-js", "--lang", "js"]).current_dir(&dir.0).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let project = dir.0.join("my-js");
    let npm = |args: &[&str]| {
        Command::new("npm")
            .args(args)
            .current_dir(&project)
            .env("KEYWARD", env!("CARGO_BIN_EXE_keyward"))
            .output()
            .unwrap()
    };
    let install = npm(&["install", "--no-audit", "--no-fund"]);
    assert!(install.status.success(), "npm install: {}", stderr(&install));
    let test = npm(&["test"]);
    assert!(test.status.success(), "npm test:\n{}\n{}", stdout(&test), stderr(&test));
    assert!(stdout(&test).contains("# pass 1"), "{}", stdout(&test));
}

/// `keyward new --world http`: a wasi:http handler whose test sends it a request in the stub host; JavaScript is
/// refused with the way to build one.
#[test]
fn a_new_http_guest_builds_and_its_test_passes() {
    let dir = TempDir::new("scaffold-http");
    let out = keyward_cmd(&["new", "my-http", "--world", "http"]).current_dir(&dir.0).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cargo_test(&dir.0.join("my-http"));
    assert!(stdout(&out).contains("test answers_a_request ... ok"), "{}", stdout(&out));

    let js =
        keyward_cmd(&["new", "my-js-http", "--world", "http", "--lang", "js"]).current_dir(&dir.0).output().unwrap();
    assert_eq!(js.status.code(), Some(2));
    assert!(stderr(&js).contains("keyward new scaffolds HTTP handlers in Rust only"), "{}", stderr(&js));
    assert!(!dir.0.join("my-js-http").exists());
}

/// `cargo test --release` in a scaffolded crate, which must pass: with this workspace's lockfile and target
/// directory, so that the keyward it depends on is not built again.
fn cargo_test(project: &std::path::Path) -> std::process::Output {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::copy(workspace.join("Cargo.lock"), project.join("Cargo.lock")).unwrap();
    let out = Command::new(env!("CARGO"))
        .args(["test", "--release"])
        .current_dir(project)
        .env("CARGO_TARGET_DIR", workspace.join("target"))
        .output()
        .unwrap();
    assert!(out.status.success(), "the scaffold's test failed:\n{}\n{}", stdout(&out), stderr(&out));
    out
}
