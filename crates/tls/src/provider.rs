//! The one crypto provider and protocol set every configuration is built with.

use std::sync::Arc;

use rustls::SupportedProtocolVersion;
use rustls::crypto::CryptoProvider;

/// The protocol versions Portcullis speaks: TLS 1.3 and TLS 1.2, nothing older.
pub static PROTOCOL_VERSIONS: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The ring crypto provider, chosen explicitly (never the process default).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// SHA-256 of `data`, computed with the provider's hash (no extra crate).
pub(crate) fn sha256(data: &[u8]) -> Vec<u8> {
    use rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256;
    match TLS13_AES_128_GCM_SHA256.tls13() {
        Some(suite) => suite.common.hash_provider.hash(data).as_ref().to_vec(),
        None => Vec::new(),
    }
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}
