//! `[tls]`: the server certificate and the extra trust anchors.

use crate::check::Checker;
use serde::Deserialize;
use std::path::PathBuf;

/// `[tls]`: the server certificate and extra trust anchors.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    /// `certificate`: PEM certificate chain; absent: a self-signed one is made.
    pub certificate: Option<String>,
    /// `private_key`: PEM private key matching `certificate`.
    pub private_key: Option<String>,
    /// `extra_roots`: PEM files with extra trust anchors for outbound TLS.
    #[serde(default)]
    pub extra_roots: Vec<String>,
}

/// The server certificate source and outbound trust anchors.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Tls {
    /// Certificate chain and key files; `None` (neither key written) means
    /// a self-signed pair generated into the data directory, a different
    /// runtime path rather than a default file name.
    pub files: Option<(PathBuf, PathBuf)>,
    /// Extra trust anchors for outbound TLS.
    pub extra_roots: Vec<PathBuf>,
}

/// `[tls]`: the certificate and key come as a pair or not at all.
pub(crate) fn build(f: TlsFile, c: &mut Checker) -> Tls {
    Tls {
        files: match (f.certificate, f.private_key) {
            (Some(cert), Some(key)) => Some((cert.into(), key.into())),
            (None, None) => None,
            (Some(_), None) => {
                c.fail(
                    "tls.private_key",
                    "tls.certificate is set but tls.private_key is not",
                );
                None
            }
            (None, Some(_)) => {
                c.fail(
                    "tls.certificate",
                    "tls.private_key is set but tls.certificate is not",
                );
                None
            }
        },
        extra_roots: f.extra_roots.into_iter().map(PathBuf::from).collect(),
    }
}
