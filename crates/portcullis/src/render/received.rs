//! `tlsrpt received list|show`: the reports other providers sent about our
//! domains. Everything in them was written by the reporter, so tables
//! blank control characters and free text is escaped.

use super::text::{escape_terminal, fields};
use crate::dates::format_time;
use portcullis_admin::{ReceivedEntry, ReceivedPolicyShow, ReceivedShow, render_table};

/// A report's period start or end (a reporter may send nonsense: before
/// 1970 is shown as the epoch).
fn time(t: i64) -> String {
    format_time(u64::try_from(t).unwrap_or(0))
}

/// An organisation, `-` when the reporter left it out.
fn org(o: &str) -> String {
    if o.is_empty() { "-".into() } else { o.into() }
}

/// `tlsrpt received list`: one row per report, newest received first.
pub fn list(entries: &[ReceivedEntry]) -> String {
    if entries.is_empty() {
        return "no TLS reports received".into();
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.id.clone(),
                format_time(e.received_at),
                org(&e.organization),
                e.domains.join(","),
                format!("{} to {}", time(e.start), time(e.end)),
                e.successful.to_string(),
                e.failed.to_string(),
            ]
        })
        .collect();
    render_table(
        &[
            "ID", "RECEIVED", "FROM", "DOMAINS", "PERIOD", "OK", "FAILED",
        ],
        &rows,
    )
    .trim_end()
    .to_owned()
}

/// `tlsrpt received show`: who sent it and when, the period, then per
/// policy its counts and a table of failures.
pub fn show(r: &ReceivedShow) -> String {
    let mut rows = vec![
        vec!["id".into(), r.id.clone()],
        vec![
            "received".into(),
            format!("{} by {}", format_time(r.received_at), r.channel),
        ],
        vec![
            "from".into(),
            escape_terminal(&format!("{} <{}>", org(&r.organization), r.contact)),
        ],
        vec!["report-id".into(), escape_terminal(&r.report_id)],
        vec![
            "period".into(),
            format!("{} to {}", time(r.start), time(r.end)),
        ],
    ];
    if r.other_policies > 0 {
        rows.push(vec![
            "not ours".into(),
            format!(
                "{} policies about other domains, not kept",
                r.other_policies
            ),
        ]);
    }
    if r.truncated {
        rows.push(vec![
            "truncated".into(),
            "some rows or lines were left out to bound the store; counts are whole".into(),
        ]);
    }
    let mut out = fields(&rows);
    for p in &r.policies {
        out.push_str("\n\n");
        out.push_str(&policy(p));
    }
    out
}

/// One policy: what the reporter saw, its counts, its failures.
fn policy(p: &ReceivedPolicyShow) -> String {
    let mut lines = vec![format!(
        "policy {} for {}",
        escape_terminal(&p.policy_type),
        escape_terminal(&p.policy_domain)
    )];
    for s in &p.policy_string {
        lines.push(format!("  | {}", escape_terminal(s)));
    }
    if !p.mx_host.is_empty() {
        lines.push(format!(
            "  mx-host: {}",
            escape_terminal(&p.mx_host.join(", "))
        ));
    }
    lines.push(format!(
        "  sessions: {} successful, {} failed",
        p.successful, p.failed
    ));
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let rows: Vec<Vec<String>> = p
        .failure_details
        .iter()
        .map(|f| {
            vec![
                f.result_type.clone(),
                f.count.to_string(),
                dash(f.sending_mta_ip.map(|i| i.to_string())),
                dash(f.receiving_mx_hostname.clone()),
                dash(f.receiving_ip.map(|i| i.to_string())),
                dash(f.failure_reason_code.clone()),
                dash(f.additional_information.clone()),
            ]
        })
        .collect();
    if !rows.is_empty() {
        let table = render_table(
            &[
                "RESULT",
                "SESSIONS",
                "SENDING-IP",
                "RECEIVING-MX",
                "RECEIVING-IP",
                "CODE",
                "INFORMATION",
            ],
            &rows,
        );
        lines.extend(table.trim_end().lines().map(|l| format!("  {l}")));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_admin::ReceivedFailureShow;

    fn report() -> ReceivedShow {
        ReceivedShow {
            id: "3f9c0a51d2e47b6a8c10".into(),
            received_at: 1_796_450_000,
            channel: "mail".into(),
            // A reporter-written name trying to drive the terminal.
            organization: "Evil\x1b[2JCorp".into(),
            contact: "tlsrpt@evil.example".into(),
            report_id: "r1\x07@evil.example".into(),
            start: 1_796_342_400,
            end: 1_796_428_799,
            policies: vec![ReceivedPolicyShow {
                policy_type: "sts".into(),
                policy_domain: "example.test".into(),
                policy_string: vec!["mode: enforce\x1b]0;title\x07".into()],
                mx_host: vec!["mx.example.test".into()],
                successful: 120,
                failed: 7,
                failure_details: vec![ReceivedFailureShow {
                    result_type: "certificate-expired".into(),
                    count: 5,
                    sending_mta_ip: Some("203.0.113.9".parse().unwrap()),
                    receiving_mx_hostname: Some("mx.example.test".into()),
                    receiving_mx_helo: None,
                    receiving_ip: None,
                    additional_information: Some("line\rover".into()),
                    failure_reason_code: None,
                }],
            }],
            other_policies: 1,
            truncated: false,
        }
    }

    #[test]
    fn show_lays_out_the_report_and_escapes_what_the_reporter_wrote() {
        let out = show(&report());
        for needle in [
            "3f9c0a51d2e47b6a8c10",
            "2026-12-05",
            "by mail",
            "Evil\\x1b[2JCorp <tlsrpt@evil.example>",
            "r1\\x07@evil.example",
            "2026-12-04 00:00 to 2026-12-04 23:59",
            "1 policies about other domains",
            "policy sts for example.test",
            "  | mode: enforce\\x1b]0;title\\x07",
            "sessions: 120 successful, 7 failed",
            "certificate-expired",
            "203.0.113.9",
        ] {
            assert!(out.contains(needle), "{needle:?} not in\n{out}");
        }
        assert!(
            !out.chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t'),
            "{out:?}"
        );
    }

    #[test]
    fn list_has_a_row_per_report_and_says_when_there_is_none() {
        assert_eq!(list(&[]), "no TLS reports received");
        let r = report();
        let entry = ReceivedEntry {
            id: r.id,
            received_at: r.received_at,
            organization: String::new(),
            domains: vec!["example.test".into(), "other.test".into()],
            start: r.start,
            end: r.end,
            successful: 120,
            failed: 7,
        };
        let out = list(&[entry]);
        let row = out.lines().nth(1).unwrap();
        for needle in [
            "3f9c0a51d2e47b6a8c10",
            " - ",
            "example.test,other.test",
            "120",
            "7",
        ] {
            assert!(row.contains(needle), "{needle:?} not in {row:?}");
        }
    }
}
