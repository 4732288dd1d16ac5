//! tracing setup: human-readable lines by default, JSON on request; the
//! filter from `RUST_LOG` when set, else `[log] level`.
//!
//! Threat: log injection. Field values carry bytes a client chose (user
//! names, HELO names, addresses, remote replies). A CR or LF in them would
//! let a client start a line of its own ("... INFO user=root login ok"),
//! and ESC sequences would drive the terminal of an operator reading the
//! log. JSON lines are safe by construction (serde escapes every control
//! character); text lines go through [`EscapingFields`], which escapes
//! every control character in every field, the message included, so one
//! event is always exactly one line.

use portcullis_config::LogFormat;
use std::fmt;
use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::fmt::{FormatFields, MakeWriter};

/// Installs the global subscriber (stderr).
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only on a terminal: escape codes in the journal or a file
    // break `grep user=alice`.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = match format {
        LogFormat::Json => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_target(false)
            .with_ansi(false)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Text => {
            tracing::subscriber::set_global_default(text_subscriber(filter, std::io::stderr, ansi))
                .map_err(Into::into)
        }
    };
}

/// The text-format subscriber: one line per event, control characters in
/// fields escaped ([`EscapingFields`]).
fn text_subscriber<W>(filter: EnvFilter, writer: W, ansi: bool) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false)
        .with_ansi(ansi)
        .fmt_fields(EscapingFields)
        .finish()
}

/// Formats fields as tracing's default text formatter does, then escapes
/// every control character (C0 including CR and LF, DEL, C1) as `\r`, `\n`,
/// `\t`, `\x1b` or `\u{85}`, so no value can end the line or reach the
/// terminal as a control sequence.
pub struct EscapingFields;

impl<'writer> FormatFields<'writer> for EscapingFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut plain = String::new();
        DefaultFields::new().format_fields(Writer::new(&mut plain), fields)?;
        write_escaped(&mut writer, &plain)
    }
}

/// Writes `s` with every control character escaped.
fn write_escaped(out: &mut impl fmt::Write, s: &str) -> fmt::Result {
    for ch in s.chars() {
        match ch {
            '\r' => out.write_str("\\r")?,
            '\n' => out.write_str("\\n")?,
            '\t' => out.write_str("\\t")?,
            c if (c as u32) < 0x20 || c as u32 == 0x7f => write!(out, "\\x{:02x}", c as u32)?,
            c if (0x80..=0x9f).contains(&(c as u32)) => write!(out, "\\u{{{:x}}}", c as u32)?,
            c => out.write_char(c)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer that keeps everything written, for reading back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    fn text_of(captured: &Captured) -> String {
        String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn hostile_field_values_stay_on_one_line() {
        let captured = Captured::default();
        let subscriber = text_subscriber(EnvFilter::new("info"), captured.clone(), false);
        let forged = "alice\r\n2026-12-05T00:00:00Z  INFO user=root authenticated";
        let helo = "evil\x1b[2J\x1b]0;owned\x07\u{85}\x7f";
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("session", helo = %helo);
            let _g = span.enter();
            tracing::info!(user = %forged, reply = ?forged, "auth failed for {}", forged);
        });
        let text = text_of(&captured);
        assert_eq!(
            text.matches('\n').count(),
            1,
            "one event, one line: {text:?}"
        );
        assert!(text.ends_with('\n'));
        assert!(!text.contains('\r') && !text.contains('\x1b') && !text.contains('\x07'));
        assert!(!text.contains('\u{85}') && !text.contains('\x7f'));
        assert!(text.contains(r"alice\r\n2026-12-05T00:00:00Z"), "{text}");
        assert!(
            text.contains(r"evil\x1b[2J\x1b]0;owned\x07\u{85}\x7f"),
            "{text}"
        );
    }

    #[test]
    fn ordinary_lines_are_unchanged() {
        let captured = Captured::default();
        let subscriber = text_subscriber(EnvFilter::new("info"), captured.clone(), false);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(user = "alice", size = 12, "message accepted");
        });
        let text = text_of(&captured);
        assert!(
            text.contains("message accepted user=\"alice\" size=12\n"),
            "{text}"
        );
    }

    #[test]
    fn escaping_table() {
        for (input, want) in [
            ("plain ascii", "plain ascii"),
            ("tab\tcr\rlf\n", r"tab\tcr\rlf\n"),
            ("\x00\x1f\x7f", r"\x00\x1f\x7f"),
            ("\u{80}\u{9f}", r"\u{80}\u{9f}"),
            ("ünïcödé ok", "ünïcödé ok"),
        ] {
            let mut out = String::new();
            write_escaped(&mut out, input).unwrap();
            assert_eq!(out, want, "{input:?}");
        }
    }
}
