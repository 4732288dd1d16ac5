//! `tlsrpt list|send`: the reports per day and domain, and what a send
//! pass did.

use crate::dates::format_time;
use portcullis_admin::{TlsrptEntry, TlsrptOutcome, TlsrptSendResult, render_table};

/// `tlsrpt list`: one row per (day, policy domain).
pub fn list(entries: &[TlsrptEntry]) -> String {
    if entries.is_empty() {
        return "no TLS-RPT data: no outbound sessions recorded".into();
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.day.clone(),
                e.domain.clone(),
                e.successful.to_string(),
                e.failed.to_string(),
                if e.destinations.is_empty() {
                    "-".into()
                } else {
                    e.destinations.join(", ")
                },
                e.state.clone(),
                e.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    render_table(
        &[
            "DAY",
            "DOMAIN",
            "OK",
            "FAILED",
            "DESTINATIONS",
            "STATE",
            "LAST_ERROR",
        ],
        &rows,
    )
    .trim_end()
    .to_string()
}

/// `tlsrpt send`: one line per outcome, or why nothing went out.
pub fn sent(r: &TlsrptSendResult) -> String {
    let mut lines: Vec<String> = r.outcomes.iter().map(outcome_line).collect();
    if lines.is_empty() {
        lines.push("nothing to send: no report of a finished UTC day is due".into());
    }
    if r.collecting > 0 {
        lines.push(format!(
            "{} report(s) of today are still being collected; they are sent after 00:00 UTC, within [tlsrpt] send_window",
            r.collecting
        ));
    }
    lines.join("\n")
}

fn outcome_line(o: &TlsrptOutcome) -> String {
    let target = o
        .destination
        .clone()
        .unwrap_or_else(|| format!("_smtp._tls.{}", o.domain));
    let detail = o.detail.as_deref().unwrap_or_default();
    match o.outcome.as_str() {
        "sent" => format!("{} {}: sent to {target} ({detail})", o.day, o.domain),
        "retry" => format!(
            "{} {}: {target}: {detail}; next attempt {} UTC",
            o.day,
            o.domain,
            o.next_try.map(format_time).unwrap_or_else(|| "-".into())
        ),
        "gave-up" => format!("{} {}: {target}: gave up: {detail}", o.day, o.domain),
        "no-destination" => format!(
            "{} {}: no report destination ({detail}); nothing sent",
            o.day, o.domain
        ),
        other => format!("{} {}: {target}: {other}: {detail}", o.day, o.domain),
    }
}
