//! Recipient verification: files of valid addresses per accepted domain
//! (reloaded when they change), and RCPT probes of the domain's route
//! behind a cache in the state store.
//!
//! SKELETON: being filled in.

use crate::BoxFuture;
use portcullis_types::Address;

/// What a domain's route said about a recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAnswer {
    /// 250/251 to `RCPT TO`.
    Exists,
    /// 5xx to `RCPT TO`: the user does not exist there (the route's text).
    Unknown {
        /// The route's reply, for the log.
        reply: String,
    },
    /// The recipient's domain has no route: not verified.
    NoRoute,
    /// The route could not say: down, a timeout, a 4xx.
    Unreachable {
        /// Why, for the log.
        reason: String,
    },
}

/// Asks a domain's route whether a recipient exists (`MAIL FROM:<>`,
/// `RCPT TO:<recipient>`, `RSET`), on pooled connections, a few at once
/// per route. Implemented by `portcullis-delivery`.
pub trait RecipientProbe: Send + Sync + 'static {
    /// The route's answer for `recipient`.
    fn probe<'a>(&'a self, recipient: &'a Address) -> BoxFuture<'a, ProbeAnswer>;
}

/// A recipients file that could not be loaded.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{path}:{line}: {message}")]
pub struct FileError {
    /// The file.
    pub path: String,
    /// Its line (0: the file as a whole).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}
