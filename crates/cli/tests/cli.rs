//! The `berth` binary as a user starts it. Cargo builds the binary for
//! these tests with the test build's features, and the conformance suite
//! runs that same build (scripts/test.sh), so CI compiles it once.

use std::process::Command;

fn berth() -> Command {
    Command::new(env!("CARGO_BIN_EXE_berth"))
}

#[test]
fn version_names_the_release() {
    let out = berth().arg("--version").output().expect("berth runs");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("berth {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn a_store_it_cannot_use_is_refused_naming_the_flag() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = berth()
        .args(["server", "--listen", "127.0.0.1:0", "--store", "bogus://x"])
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("berth runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unsupported --store \"bogus://x\""), "{err}");
}
