//! The binary itself, as `cargo test` builds it. Having an integration test
//! here is also what makes `cargo test --workspace` build
//! `target/<profile>/portcullis`, which the end-to-end tests in `tests/e2e`
//! run.

use std::process::Command;

fn portcullis() -> Command {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
}

/// `config check` with no file checks the built-in development defaults of
/// DESIGN.md and prints them.
#[test]
fn config_check_without_a_file_prints_the_development_defaults() {
    let out = portcullis().args(["config", "check"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("127.0.0.1:2525 (smtp)"), "{text}");
    assert!(
        text.contains("relay.accepted_domains       localhost"),
        "{text}"
    );
}

/// Every subcommand of the contract exists (clap rejects unknown ones with
/// exit code 2, and `--help` of a known one exits 0).
#[test]
fn every_contract_subcommand_exists() {
    for args in [
        &["serve", "--help"][..],
        &["config", "check", "--help"],
        &["status", "--help"],
        &["policy", "list", "--help"],
        &["policy", "pin", "--help"],
        &["policy", "own", "--help"],
        &["queue", "retry", "--help"],
        &["tlsrpt", "show", "--help"],
    ] {
        let out = portcullis().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = portcullis().arg("no-such-command").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
