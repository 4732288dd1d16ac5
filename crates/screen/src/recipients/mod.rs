//! Recipient verification: files of valid addresses per accepted domain
//! (re-read when they change on disk, `files.rs`; one file parsed strictly,
//! `list.rs`), and RCPT probes of the domain's route behind a cache in the
//! state store (`verifier.rs`). The probe itself is `portcullis-delivery`'s
//! `RouteProbe`, behind the [`RecipientProbe`] trait.
//!
//! Threat model: the recipient is the sender's bytes. It is only ever
//! compared (files), used as a cache key (folded, bounded by the address
//! parser) or sent as one `RCPT TO` to our own route; a probe that cannot
//! answer is never cached and never refuses mail by itself
//! (`[recipients] unreachable` decides).

mod files;
mod list;
mod verifier;

#[cfg(test)]
mod tests;

pub use files::{RECHECK, RecipientFiles};
pub use list::{AddressList, MAX_FILE_BYTES, MAX_LINE_BYTES, fold_local};
pub use verifier::RecipientVerifier;

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

/// Whether a recipient exists, as far as the screen can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Known {
    /// It exists (its domain's file lists it, or its route said so).
    Exists,
    /// It does not: 550 5.1.1.
    Unknown,
    /// Its domain is not verified (no file, no probe, no route).
    Unverified,
    /// The route could not say (`[recipients] unreachable` decides).
    Unreachable(String),
}
