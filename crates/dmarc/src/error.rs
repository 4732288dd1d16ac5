//! What can go wrong recording and sending reports.

use portcullis_store::StoreError;

/// An error of the DMARC report machinery.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DmarcError {
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A stored value could not be read back.
    #[error("corrupt entry {key}: {reason}")]
    Corrupt {
        /// The key, printable.
        key: String,
        /// Why.
        reason: String,
    },
    /// The report could not be built.
    #[error("building the report: {0}")]
    Build(String),
    /// The cluster's database could not answer (cluster mode): nothing is
    /// sent until it does.
    #[error("cluster database: {0}")]
    Shared(String),
    /// The report could not be signed.
    #[error("signing the report: {0}")]
    Sign(#[from] portcullis_auth::SignerError),
}

impl DmarcError {
    pub(crate) fn corrupt(key: &[u8], reason: impl std::fmt::Display) -> DmarcError {
        DmarcError::Corrupt {
            key: String::from_utf8_lossy(key).escape_debug().to_string(),
            reason: reason.to_string(),
        }
    }
}

impl From<sled::Error> for DmarcError {
    fn from(e: sled::Error) -> DmarcError {
        DmarcError::Store(StoreError::from(e))
    }
}
