//! The crate's single error type.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while loading, generating or reloading TLS
/// material. Every variant that concerns a file names that file, so that an
/// operator can act on the message alone.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read (missing, unreadable, a directory, ...).
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file that could not be read.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },

    /// A file or directory could not be written or created.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file or directory that could not be written.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },

    /// A file is not valid PEM (a section is malformed or truncated).
    #[error("{} is not valid PEM: {detail}", path.display())]
    BadPem {
        /// The offending file.
        path: PathBuf,
        /// What the PEM parser reported.
        detail: String,
    },

    /// A file that should hold a certificate chain holds no `CERTIFICATE` section.
    #[error("{} contains no PEM certificate", path.display())]
    NoCertificate {
        /// The offending file.
        path: PathBuf,
    },

    /// A certificate could not be parsed as X.509.
    #[error("{}: certificate is not valid X.509: {detail}", path.display())]
    BadCertificate {
        /// The file the certificate came from.
        path: PathBuf,
        /// What the X.509 parser reported.
        detail: String,
    },

    /// A file that should hold a private key holds no PKCS#8, PKCS#1 or SEC1 key.
    #[error("{} contains no PEM private key (PKCS#8, PKCS#1 or SEC1)", path.display())]
    NoPrivateKey {
        /// The offending file.
        path: PathBuf,
    },

    /// The private key was found but cannot be used (unsupported algorithm, corrupt).
    #[error("{}: unusable private key: {source}", path.display())]
    BadPrivateKey {
        /// The file the key came from.
        path: PathBuf,
        /// What rustls reported.
        #[source]
        source: rustls::Error,
    },

    /// The private key does not belong to the leaf certificate.
    #[error(
        "private key {} does not match certificate {}",
        key.display(),
        cert.display()
    )]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },

    /// A trust anchor could not be added to a root store.
    #[error("{}: unusable trust anchor: {source}", path.display())]
    BadTrustAnchor {
        /// The file the anchor came from.
        path: PathBuf,
        /// What rustls/webpki reported.
        #[source]
        source: rustls::Error,
    },

    /// Generating the self-signed development certificate failed.
    #[error("cannot generate a self-signed certificate for {hostname:?}: {source}")]
    Generate {
        /// The hostname the certificate was for.
        hostname: String,
        /// What rcgen reported.
        #[source]
        source: rcgen::Error,
    },

    /// rustls refused to build a configuration.
    #[error("cannot build the TLS configuration: {source}")]
    Config {
        /// What rustls reported.
        #[source]
        source: rustls::Error,
    },

    /// A certificate verifier could not be built (for instance: no trust anchors).
    #[error("cannot build the certificate verifier: {detail}")]
    Verifier {
        /// What rustls reported.
        detail: String,
    },
}
