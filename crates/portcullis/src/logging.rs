//! tracing setup: human-readable lines by default, JSON on request; the
//! filter from `RUST_LOG` when set, else `[log] level`.

use portcullis_config::LogFormat;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber (stderr).
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        // Colour only on a terminal: escape codes in the journal or a file
        // break `grep user=alice`.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
