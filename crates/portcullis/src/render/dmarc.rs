//! `dmarc list|send`: the aggregates not yet reported, and what a send
//! pass did. Domains and destinations come from other people's DNS:
//! escaped before they reach the terminal.

use super::text::escape_terminal;
use portcullis_admin::{DmarcEntry, DmarcSendResult, render_table};

/// `dmarc list` without `--json`: one row per (day, domain).
pub fn list(entries: &[DmarcEntry]) -> String {
    if entries.is_empty() {
        return "no DMARC aggregates waiting: nothing recorded since the last reports".into();
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.day.clone(),
                escape_terminal(&e.domain),
                e.rows.to_string(),
                e.messages.to_string(),
                escape_terminal(&e.rua.join(", ")),
                e.state.clone(),
            ]
        })
        .collect();
    render_table(
        &["DAY", "DOMAIN", "ROWS", "MESSAGES", "RUA", "STATE"],
        &rows,
    )
}

/// `dmarc send` without `--json`: one line per destination acted on.
pub fn sent(r: &DmarcSendResult) -> String {
    if r.outcomes.is_empty() {
        return "nothing to send: no DMARC report of a finished UTC day is waiting".into();
    }
    r.outcomes
        .iter()
        .map(|o| {
            let to = escape_terminal(o.to.as_deref().unwrap_or("-"));
            let detail = escape_terminal(o.detail.as_deref().unwrap_or_default());
            let domain = escape_terminal(&o.domain);
            match o.outcome.as_str() {
                "sent" => format!("{} {domain}: sent to {to} ({detail})", o.day),
                "skipped" => format!("{} {domain}: not sent to {to}: {detail}", o.day),
                "gave-up" => format!("{} {domain}: gave up: {detail}", o.day),
                _ => format!(
                    "{} {domain}: not sent yet: {detail}; tried again later",
                    o.day
                ),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}
