//! `tlsrpt list|show|send`: the reports per day and domain, one report as
//! an operator reads it, and what a send pass did.

use super::text::{escape_terminal, fields};
use crate::dates::format_time;
use portcullis_admin::{TlsrptEntry, TlsrptOutcome, TlsrptSendResult, render_table};
use serde_json::Value;

/// A string field of the report JSON, made safe for the terminal (policy
/// strings and host names come from other people's DNS and servers); `-`
/// when absent.
fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => escape_terminal(s),
        Some(Value::Null) | None => "-".into(),
        Some(other) => escape_terminal(&other.to_string()),
    }
}

/// `tlsrpt show` without `--json`: the RFC 8460 report (as it is, or would
/// be, sent) as the reporter, the period, and per policy its counts and a
/// table of failures. `--json` prints the report itself.
pub fn show(report: &Value) -> String {
    let range = report.get("date-range").unwrap_or(&Value::Null);
    let mut out = fields(&[
        vec!["report".into(), text(report, "report-id")],
        vec![
            "from".into(),
            format!(
                "{} <{}>",
                text(report, "organization-name"),
                text(report, "contact-info")
            ),
        ],
        vec![
            "period".into(),
            format!(
                "{} to {}",
                text(range, "start-datetime"),
                text(range, "end-datetime")
            ),
        ],
    ]);
    let policies = report.get("policies").and_then(Value::as_array);
    for p in policies.into_iter().flatten() {
        out.push_str("\n\n");
        out.push_str(&policy(p));
    }
    out
}

/// One policy of a report: what it was, its session counts, its failures.
fn policy(p: &Value) -> String {
    let desc = p.get("policy").unwrap_or(&Value::Null);
    let summary = p.get("summary").unwrap_or(&Value::Null);
    let count = |key: &str| summary.get(key).and_then(Value::as_u64).unwrap_or(0);
    let mut lines = vec![format!(
        "policy {} for {}",
        text(desc, "policy-type"),
        text(desc, "policy-domain")
    )];
    if let Some(strings) = desc.get("policy-string").and_then(Value::as_array) {
        for s in strings.iter().filter_map(Value::as_str) {
            lines.push(format!("  | {}", escape_terminal(s)));
        }
    }
    lines.push(format!(
        "  sessions: {} successful, {} failed",
        count("total-successful-session-count"),
        count("total-failure-session-count")
    ));
    let failures = p.get("failure-details").and_then(Value::as_array);
    let rows: Vec<Vec<String>> = failures
        .into_iter()
        .flatten()
        .map(|f| {
            vec![
                text(f, "result-type"),
                text(f, "receiving-mx-hostname"),
                text(f, "receiving-ip"),
                f.get("failed-session-count")
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
                    .to_string(),
                text(f, "failure-reason-code"),
            ]
        })
        .collect();
    if !rows.is_empty() {
        let table = render_table(
            &[
                "RESULT",
                "RECEIVING-MX",
                "RECEIVING-IP",
                "SESSIONS",
                "REASON",
            ],
            &rows,
        );
        lines.extend(table.trim_end().lines().map(|l| format!("  {l}")));
    }
    lines.join("\n")
}

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
