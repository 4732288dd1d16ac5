//! TLS reports that other providers send about *our* domains (RFC 8460
//! §5, the receiving side): taken in by HTTPS POST at `/tlsrpt` on the
//! `mta-sts` listener, or by mail to a `[publish] tlsrpt_rua` `mailto:`
//! address, then parsed, stored with the reporting organisation, and
//! counted.

/// How a report reached us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// POSTed to `/tlsrpt` on an `mta-sts` listener.
    Https,
    /// Mailed to a `[publish] tlsrpt_rua` address.
    Mail,
}

/// Why a report was not taken.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The body is not a report: not JSON (after gzip), not RFC 8460's
    /// shape, over the size cap, or about none of our domains. The sender
    /// gets a permanent refusal (HTTP 400/413, or the mail is dropped with
    /// a log line).
    #[error("not a usable TLS report: {0}")]
    Invalid(String),
    /// The store failed; the sender should try again later (HTTP 503).
    #[error("could not store the report: {0}")]
    Store(String),
}

/// Where received reports go. One implementation stores them in sled
/// (`tlsrpt.received`); the HTTPS listener and the mail intake both call
/// it, so a report is parsed, bounded and stored the same way whichever
/// way it came.
pub trait ReportIntake: Send + Sync {
    /// Takes one report body, gzip-compressed or plain JSON, at most
    /// [`MAX_REPORT_BYTES`] as received (and at most that once
    /// decompressed). Returns the id it is stored under.
    fn take(&self, body: &[u8], channel: Channel) -> Result<String, IntakeError>;
}

/// The largest report body taken, compressed or not (1 MiB): RFC 8460
/// reports are small; a larger one is refused, not truncated.
pub const MAX_REPORT_BYTES: usize = 1024 * 1024;
