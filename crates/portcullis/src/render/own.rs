//! `policy own`: per domain, one row per check (ok, GAP or TEMPFAIL and
//! the detail), then the records to publish, the policy file to serve and
//! the diff of what is served; last, every gap named.

use super::text::escape_terminal;
use portcullis_admin::{OwnCheck, OwnDomain, PolicyOwn, render_table};

/// The human layout of a `policy own` answer.
pub fn checked(own: &PolicyOwn) -> String {
    let mut out: Vec<String> = own.domains.iter().map(domain).collect();
    let gaps: Vec<String> = own
        .domains
        .iter()
        .flat_map(|d| {
            d.checks
                .iter()
                .filter(|c| !c.ok)
                .map(move |c| format!("{}: {}", d.domain, label(c)))
        })
        .collect();
    out.push(match gaps.is_empty() {
        true => "every check passed".to_owned(),
        false => format!(
            "{} gap{}: {}",
            gaps.len(),
            if gaps.len() == 1 { "" } else { "s" },
            escape_terminal(&gaps.join("; "))
        ),
    });
    out.join("\n")
}

/// The check's name with its host.
fn label(c: &OwnCheck) -> String {
    match &c.host {
        Some(h) => format!("{} {h}", c.name),
        None => c.name.clone(),
    }
}

fn status(c: &OwnCheck) -> &'static str {
    match (c.ok, c.outcome.as_str()) {
        (true, _) => "ok",
        (false, "temporary") => "TEMPFAIL",
        (false, _) => "GAP",
    }
}

/// One domain: its table, then what to publish.
fn domain(d: &OwnDomain) -> String {
    let rows: Vec<Vec<String>> = d
        .checks
        .iter()
        .map(|c| vec![label(c), status(c).to_owned(), c.detail.clone()])
        .collect();
    let mut out = format!("{}\n", escape_terminal(&d.domain));
    out.push_str(&render_table(&["CHECK", "STATUS", "DETAIL"], &rows));
    if !d.records_to_publish.is_empty() {
        out.push_str("\nDNS records to publish:\n");
        for r in &d.records_to_publish {
            out.push_str(&format!("  {}\n", escape_terminal(r)));
        }
    }
    if let Some(text) = &d.policy_file {
        out.push_str(&format!(
            "\nhttps://mta-sts.{}/.well-known/mta-sts.txt must serve (text/plain):\n",
            escape_terminal(&d.domain)
        ));
        for line in text.lines() {
            out.push_str(&format!("  {}\n", escape_terminal(line)));
        }
    }
    for c in d.checks.iter().filter(|c| c.diff.is_some()) {
        if let Some(diff) = &c.diff {
            out.push_str(&format!(
                "\n{} (- served, + ours):\n",
                escape_terminal(&label(c))
            ));
            for line in diff.lines() {
                out.push_str(&format!("  {}\n", escape_terminal(line)));
            }
        }
    }
    out
}
