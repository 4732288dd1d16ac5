//! RSA keys made by the `openssl` command (ring cannot generate them), as
//! the README tells operators to make DKIM keys.

use std::path::Path;
use std::process::Command;

/// Runs `command`; returns its stdout, panics naming `what` with its stderr
/// when it fails.
fn run(command: &mut Command, what: &str) -> Vec<u8> {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("run {what} (is openssl installed?): {e}"));
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Writes a 2048-bit RSA private key (PEM) to `path` with `openssl genpkey`
/// and returns the `p=` value of its DKIM record: the base64 of the DER
/// SubjectPublicKeyInfo, derived with `openssl pkey -pubout | base64`.
pub fn dkim_rsa_key(path: &Path) -> String {
    run(
        Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
            ])
            .arg(path),
        "openssl genpkey",
    );
    let public = run(
        Command::new("sh")
            .arg("-c")
            .arg("openssl pkey -in \"$1\" -pubout -outform DER | base64 -w0")
            .arg("sh")
            .arg(path),
        "openssl pkey",
    );
    String::from_utf8(public)
        .expect("base64 is ASCII")
        .trim()
        .to_owned()
}

/// The private key in the PEM file `path` as PKCS#8 DER (whatever format
/// the openssl version writes by default), by `openssl pkcs8`.
pub fn pkcs8_der(path: &Path) -> Vec<u8> {
    run(
        Command::new("openssl")
            .args(["pkcs8", "-topk8", "-nocrypt", "-outform", "DER", "-in"])
            .arg(path),
        "openssl pkcs8",
    )
}
