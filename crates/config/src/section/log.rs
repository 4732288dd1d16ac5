//! `[log]`: log format and filter.

use crate::check::Checker;
use serde::Deserialize;

/// `[log]`: logging.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFile {
    /// `format`: `text` (default) or `json`.
    pub format: Option<String>,
    /// `level`: a tracing filter, e.g. `"info"` or `"portcullis=debug"`.
    pub level: Option<String>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The checked `[log]` section. Its values sit at the top of
/// [`crate::Config`] (`log_format`, `log_level`).
pub(crate) struct Log {
    /// `format`.
    pub format: LogFormat,
    /// `level` (default `info`).
    pub level: String,
}

/// `[log]`.
pub(crate) fn build(f: LogFile, c: &mut Checker) -> Log {
    Log {
        format: c.one_of(
            "log.format",
            f.format.as_deref(),
            [("text", LogFormat::Text), ("json", LogFormat::Json)],
        ),
        level: f.level.unwrap_or_else(|| "info".into()),
    }
}
