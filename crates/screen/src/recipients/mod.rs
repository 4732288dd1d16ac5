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

/// The recipients files of one configuration, each re-read when it
/// changes on disk (a broken new version keeps the old one in force and
/// is logged).
pub struct RecipientFiles {
    _todo: (),
}

impl RecipientFiles {
    /// Reads every file of `[recipients] files`.
    pub fn load(
        files: &std::collections::BTreeMap<portcullis_types::Domain, std::path::PathBuf>,
    ) -> Result<RecipientFiles, FileError> {
        let _ = files;
        Ok(RecipientFiles { _todo: () })
    }
}

/// Answers "does this recipient exist?": from its domain's file, else
/// (with `verify = "route"`) from the cache or a probe of its route.
/// Shared across reloads; counts answers by source and outcome.
pub struct RecipientVerifier {
    _todo: (),
}

impl RecipientVerifier {
    /// A verifier caching probe answers in `store`, probing with `probe`
    /// (absent: `verify = "route"` verifies nothing), expiry on `clock`.
    pub fn new(
        store: std::sync::Arc<dyn crate::state::ScreenStore>,
        probe: Option<std::sync::Arc<dyn RecipientProbe>>,
        clock: std::sync::Arc<dyn portcullis_types::Clock>,
    ) -> RecipientVerifier {
        let _ = (store, probe, clock);
        RecipientVerifier { _todo: () }
    }

    /// Whether `recipient` exists under `settings` and `files`.
    pub async fn check(
        &self,
        settings: &portcullis_config::Recipients,
        files: &RecipientFiles,
        recipient: &Address,
    ) -> Known {
        let _ = (settings, files, recipient);
        Known::Unverified
    }

    /// `portcullis_recipient_checks_total{source,outcome}` and friends.
    pub fn render_metrics(&self, w: &mut portcullis_metrics::MetricsWriter) {
        let _ = w;
    }
}
