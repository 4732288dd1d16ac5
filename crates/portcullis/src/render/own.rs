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

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, host: Option<&str>, outcome: &str, detail: &str) -> OwnCheck {
        OwnCheck {
            name: name.into(),
            host: host.map(Into::into),
            ok: outcome == "ok",
            outcome: outcome.into(),
            detail: detail.into(),
            diff: None,
        }
    }

    /// One row per check with its status word, the records and policy file
    /// indented, every gap named on the last line, and remote text (a
    /// served policy line) unable to drive the terminal.
    #[test]
    fn the_layout_names_every_gap_and_escapes_remote_text() {
        let mut served = check("policy served", None, "gap", "serves another policy");
        served.diff = Some("-mode: \x1b[2Jtesting\n+mode: enforce".into());
        let own = PolicyOwn {
            domains: vec![OwnDomain {
                domain: "a.test".into(),
                checks: vec![
                    check("mta-sts record", None, "gap", "missing"),
                    served,
                    check("mx certificate", Some("mx1.a.test"), "ok", "valid"),
                    check("tls-rpt record", None, "temporary", "temporary DNS failure"),
                ],
                records_to_publish: vec!["_mta-sts.a.test. IN TXT \"v=STSv1; id=1\"".into()],
                policy_file: Some("version: STSv1\nmode: enforce\n".into()),
            }],
        };
        let text = checked(&own);
        let row = |start: &str| {
            text.lines()
                .find(|l| l.starts_with(start))
                .unwrap_or_else(|| panic!("no {start:?} row in {text}"))
                .to_owned()
        };
        assert!(row("mta-sts record").contains("GAP"), "{text}");
        assert!(row("mx certificate mx1.a.test").contains(" ok "), "{text}");
        assert!(row("tls-rpt record").contains("TEMPFAIL"), "{text}");
        assert!(
            text.contains("\n  _mta-sts.a.test. IN TXT \"v=STSv1; id=1\"\n"),
            "{text}"
        );
        assert!(text.contains("\n  mode: enforce\n"), "{text}");
        assert!(text.contains("-mode: \\x1b[2Jtesting"), "{text}");
        assert!(!text.contains('\x1b'), "{text}");
        assert!(
            text.ends_with(
                "3 gaps: a.test: mta-sts record; a.test: policy served; a.test: tls-rpt record"
            ),
            "{text}"
        );
    }
}
