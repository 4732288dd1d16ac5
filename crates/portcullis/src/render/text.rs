//! The pieces every layout is made of: aligned fields, times and ages, and
//! text made safe for the operator's terminal.

use portcullis_admin::render_table;

/// Rows of (name, value) as aligned lines without a header.
pub(super) fn fields(rows: &[Vec<String>]) -> String {
    render_table(&["", ""], rows)
        .lines()
        .skip(1)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Seconds as a config duration (`5m`, `7d`).
pub(super) fn format_age(secs: u64) -> String {
    portcullis_config::format_duration(std::time::Duration::from_secs(secs))
}

/// A time for tables, or `never`.
pub(super) fn format_expiry(t: Option<u64>) -> String {
    t.map(crate::dates::format_time)
        .unwrap_or_else(|| "never".into())
}

/// `text` with every control character a terminal could act on written
/// as `\xHH` (C0 but tab and line feed, DEL, C1): what a sender or a
/// remote server wrote can be shown to the operator but can never move the
/// cursor, change the title or colours, or hide a line (ECMA-48 escape and
/// control sequences all start with such a character).
pub(super) fn escape_terminal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let code = u32::from(c);
        let control = (code < 0x20 && c != '\t' && c != '\n') || (0x7f..=0x9f).contains(&code);
        if control {
            out.push_str(&format!("\\x{code:02x}"));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_escaping_neutralises_every_control_character() {
        #[track_caller]
        fn case(input: &str, want: &str) {
            assert_eq!(escape_terminal(input), want, "{input:?}");
        }
        case("Subject: plain text", "Subject: plain text");
        case("a\tb\nc", "a\tb\nc");
        case("\x1b[2J\x1b]0;owned\x07", "\\x1b[2J\\x1b]0;owned\\x07");
        case("bare\rCR", "bare\\x0dCR");
        case("nul\0 del\x7f", "nul\\x00 del\\x7f");
        case("c1 \u{9b}31m \u{85}", "c1 \\x9b31m \\x85");
        case("Grüße ✓ \u{a0}", "Grüße ✓ \u{a0}");
        for c in (0u32..0x20).chain(0x7f..0xa0).filter_map(char::from_u32) {
            let out = escape_terminal(&c.to_string());
            if c == '\t' || c == '\n' {
                assert_eq!(out, c.to_string());
            } else {
                assert!(out.chars().all(|o| !o.is_control()), "{c:?} -> {out:?}");
            }
        }
    }
}
