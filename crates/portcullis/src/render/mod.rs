//! The human layouts of the admin commands: one typed [`Answer`] in, the
//! text an operator reads out (`--json` prints the answer itself instead).
//!
//! Everything shown here may contain what a sender or a remote server
//! wrote (addresses, replies, headers): tables turn control characters
//! into spaces and free text goes through [`escape_terminal`], so nothing
//! can drive the operator's terminal.

mod policy;
mod queue;
mod tlsrpt;

use portcullis_admin::{Answer, StatusReport, render_table};

/// The human layout of `answer`.
pub fn human(answer: &Answer) -> String {
    match answer {
        Answer::Status(s) => status(s),
        Answer::QueueList(entries) => queue::list(entries),
        Answer::QueueShow(detail) => queue::show(detail),
        Answer::QueueRetry(r) => queue::retried(r),
        Answer::QueueDelete(d) => queue::deleted(d),
        Answer::PolicyList(entries) => policy::list(entries),
        Answer::PolicyShow(show) => policy::show(show),
        Answer::PolicyFetch(entry) => policy::fetched(entry),
        Answer::PolicyRefresh(items) => policy::refreshed(items),
        Answer::PolicyEvict(e) => format!("evicted the cached MTA-STS policy of {}", e.evicted),
        Answer::PolicyExplain(x) => policy::explain(x),
        Answer::PolicyPin(entry) => policy::pinned(entry),
        Answer::PolicyUnpin(u) => format!("removed the operator pin of {}", u.unpinned),
        Answer::TlsrptList(entries) => tlsrpt::list(entries),
        // The report is the content: shown as it is (or would be) sent.
        Answer::TlsrptShow(report) => serde_json::to_string_pretty(report).unwrap_or_default(),
        Answer::TlsrptSend(result) => tlsrpt::sent(result),
    }
}

/// `status`: one field per line, then one line per listener.
fn status(s: &StatusReport) -> String {
    let mut rows = vec![
        vec!["version".into(), s.version.clone()],
        vec!["hostname".into(), s.hostname.clone()],
        vec!["uptime".into(), format!("{}s", s.uptime_secs)],
        vec!["open sessions".into(), s.open_sessions.to_string()],
        vec!["queue size".into(), s.queue_size.to_string()],
        vec!["data dir".into(), s.data_dir.clone()],
    ];
    for l in &s.listeners {
        rows.push(vec![
            "listener".into(),
            format!("{} ({})", l.address, l.role),
        ]);
    }
    fields(&rows)
}

/// Rows of (name, value) as aligned lines without a header.
fn fields(rows: &[Vec<String>]) -> String {
    render_table(&["", ""], rows)
        .lines()
        .skip(1)
        .collect::<Vec<_>>()
        .join("\n")
}

fn format_age(secs: u64) -> String {
    portcullis_config::format_duration(std::time::Duration::from_secs(secs))
}

fn format_expiry(t: Option<u64>) -> String {
    t.map(crate::dates::format_time)
        .unwrap_or_else(|| "never".into())
}

/// `text` with every control character a terminal could act on written
/// as `\xHH` (C0 but tab and line feed, DEL, C1): what a sender or a
/// remote server wrote can be shown to the operator but can never move the
/// cursor, change the title or colours, or hide a line (ECMA-48 escape and
/// control sequences all start with such a character).
fn escape_terminal(text: &str) -> String {
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
