//! Errors of TLS reporting (STYLE 11: one enum, structured, classified).

use portcullis_auth::SignerError;
use portcullis_store::StoreError;

/// Errors from recording, building or sending TLS reports (RFC 8460).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TlsRptError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored aggregate or sending state could not be decoded.
    #[error("corrupt TLS-RPT record {key:?}: {reason}")]
    Corrupt {
        /// The key of the record.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The DKIM key of report mail cannot be used, or signing failed.
    #[error("TLS-RPT: {0}")]
    Signer(#[from] SignerError),
    /// A setting needed to send reports is missing or invalid.
    #[error("TLS-RPT setting {key}: {reason}")]
    Setting {
        /// The `[tlsrpt]` key.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Building the report (JSON, gzip, MIME) failed.
    #[error("building the TLS report failed: {0}")]
    Build(String),
    /// No aggregates exist for this (day, domain): nothing to report.
    #[error("no TLS-RPT data for {domain} on {day}")]
    NoData {
        /// The policy domain.
        domain: String,
        /// The UTC day.
        day: String,
    },
    /// A domain given by an operator is not a valid domain name.
    #[error("{0:?} is not a domain name")]
    InvalidDomain(String),
    /// Cluster mode: the shared store (the cluster's database) could not
    /// answer; nothing is sent, the counts stay local.
    #[error("TLS-RPT: cluster database: {0}")]
    Shared(String),
    /// Cluster mode: another node took the report over (this node's lease
    /// lapsed); this node stops sending it.
    #[error("TLS-RPT: the report for {domain} on {day} is held by another node now")]
    ClaimLost {
        /// The policy domain.
        domain: String,
        /// The UTC day.
        day: String,
    },
    /// The HTTPS client could not be set up.
    #[error("TLS-RPT HTTPS client setup failed: {0}")]
    HttpSetup(String),
}

impl TlsRptError {
    /// A [`TlsRptError::Corrupt`] for `key`.
    pub(crate) fn corrupt(key: &[u8], reason: impl ToString) -> TlsRptError {
        TlsRptError::Corrupt {
            key: String::from_utf8_lossy(key).replace('\0', "|"),
            reason: reason.to_string(),
        }
    }
}
