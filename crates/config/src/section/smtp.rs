//! `[smtp]`: protocol policy of the SMTP sessions.

use crate::check::Checker;
use serde::Deserialize;

/// `[smtp]`: protocol policy.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpFile {
    /// `bare_newline`: `reject` (550 5.5.2, default) or `normalize` (to CRLF)
    /// for a bare LF or bare CR inside message data.
    pub bare_newline: Option<String>,
    /// `banner`: text after the hostname in the 220 greeting.
    pub banner: Option<String>,
}

/// What to do with a bare LF or bare CR inside message data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BareNewline {
    /// Refuse the message with 550 5.5.2 (after reading it to its end).
    Reject,
    /// Turn each bare LF or CR into CRLF.
    Normalize,
}

/// The checked `[smtp]` section. Its values sit at the top of
/// [`crate::Config`] (`bare_newline`, `banner`), where the session code
/// has always read them.
pub(crate) struct Smtp {
    /// `bare_newline`.
    pub bare_newline: BareNewline,
    /// `banner` (default `ESMTP Portcullis`).
    pub banner: String,
}

/// `[smtp]`.
pub(crate) fn build(f: SmtpFile, c: &mut Checker) -> Smtp {
    Smtp {
        bare_newline: c.one_of(
            "smtp.bare_newline",
            f.bare_newline.as_deref(),
            [
                ("reject", BareNewline::Reject),
                ("normalize", BareNewline::Normalize),
            ],
        ),
        banner: f.banner.unwrap_or_else(|| "ESMTP Portcullis".into()),
    }
}
