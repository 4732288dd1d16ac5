//! `policy ...`: the cache and pins as tables and detail pages.

use super::text::{escape_terminal, fields, format_age, format_expiry};
use crate::dates::{format_rfc3339, format_time};
use portcullis_admin::{
    ExplainHost, ExplainPlan, PolicyEntry, PolicyExplain, PolicyRefresh, PolicyShow, render_table,
};

/// `policy list`: one row per cached policy or pin.
pub fn list(entries: &[PolicyEntry]) -> String {
    if entries.is_empty() {
        return "no MTA-STS policies cached or pinned".into();
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.domain.clone(),
                e.mode.clone(),
                e.id.clone(),
                e.mx.join(","),
                if e.pinned {
                    "-".into()
                } else {
                    format_age(e.max_age)
                },
                format_time(e.fetched_at),
                format_expiry(e.expires_at),
                e.last_error.clone().unwrap_or_default(),
                entry_note(e),
            ]
        })
        .collect();
    render_table(
        &[
            "DOMAIN",
            "MODE",
            "ID",
            "MX",
            "MAX_AGE",
            "FETCHED",
            "EXPIRES",
            "LAST_ERROR",
            "NOTE",
        ],
        &rows,
    )
    .trim_end()
    .to_string()
}

/// The NOTE column: pins, expiry, and cache entries a pin overrides.
fn entry_note(e: &PolicyEntry) -> String {
    if e.pinned {
        format!(
            "{}: {}",
            e.source,
            e.pin_reason.as_deref().unwrap_or_default()
        )
    } else if e.expired {
        "expired: no longer in force".into()
    } else if !e.in_force {
        "overridden by a pin".into()
    } else {
        String::new()
    }
}

/// `policy show`: the pin (which wins), then the cached policy.
pub fn show(show: &PolicyShow) -> String {
    let mut parts = Vec::new();
    if let Some(pin) = &show.pin {
        parts.push(detail(pin));
    }
    if let Some(cached) = &show.cached {
        parts.push(detail(cached));
    }
    parts.join("\n\n")
}

/// One policy of `policy show`: every field and the policy text.
fn detail(e: &PolicyEntry) -> String {
    let mut rows = vec![
        vec!["domain".into(), e.domain.clone()],
        vec!["source".into(), e.source.clone()],
        vec![
            "in force".into(),
            if e.in_force { "yes" } else { "no" }.into(),
        ],
        vec!["mode".into(), e.mode.clone()],
        vec!["id".into(), e.id.clone()],
        vec!["mx".into(), mx_list(e)],
    ];
    if !e.pinned {
        rows.push(vec![
            "max_age".into(),
            format!("{} ({})", e.max_age, format_age(e.max_age)),
        ]);
    }
    rows.extend([
        vec![
            if e.pinned { "set" } else { "fetched" }.into(),
            format_rfc3339(e.fetched_at),
        ],
        vec![
            "expires".into(),
            match e.expires_at {
                Some(t) => format!(
                    "{}{}",
                    format_rfc3339(t),
                    if e.expired { " (expired)" } else { "" }
                ),
                None => "never (as long as the file exists)".into(),
            },
        ],
    ]);
    if let Some(t) = e.last_checked {
        rows.push(vec!["last checked".into(), format_rfc3339(t)]);
    }
    rows.push(vec![
        "last error".into(),
        e.last_error.clone().unwrap_or_else(|| "-".into()),
    ]);
    if let Some(r) = &e.pin_reason {
        rows.push(vec!["pin reason".into(), r.clone()]);
    }
    if let Some(f) = &e.pin_file {
        rows.push(vec!["pin file".into(), f.clone()]);
    }
    let text: Vec<String> = e.text.lines().map(|l| format!("  {l}")).collect();
    format!("{}\npolicy:\n{}", fields(&rows), text.join("\n"))
}

/// The MX patterns, or `(none)`.
fn mx_list(e: &PolicyEntry) -> String {
    if e.mx.is_empty() {
        "(none)".into()
    } else {
        e.mx.join(", ")
    }
}

/// `policy fetch`: the policy now cached, and its text.
pub fn fetched(e: &PolicyEntry) -> String {
    let mut out = format!(
        "fetched {}: mode {}, id {}, mx {}, max_age {}, expires {}",
        e.domain,
        e.mode,
        e.id,
        e.mx.join(", "),
        format_age(e.max_age),
        format_expiry(e.expires_at)
    );
    if !e.in_force {
        out.push_str("\nnote: an active pin overrides this policy (see `policy show`)");
    }
    out.push_str("\n\n");
    out.push_str(e.text.trim_end());
    out
}

/// `policy pin`: the pin now in force.
pub fn pinned(e: &PolicyEntry) -> String {
    format!(
        "pinned {}: mode {}, mx {}, until {} UTC, reason: {}",
        e.domain,
        e.mode,
        mx_list(e),
        format_expiry(e.pin_until),
        e.pin_reason.as_deref().unwrap_or_default()
    )
}

/// `policy refresh`: one line (plus the diff) per domain.
pub fn refreshed(items: &[PolicyRefresh]) -> String {
    if items.is_empty() {
        return "no unexpired cached policies to refresh".into();
    }
    items
        .iter()
        .map(refresh_line)
        .collect::<Vec<_>>()
        .join("\n")
}

/// One line (plus the diff) of `policy refresh`.
fn refresh_line(r: &PolicyRefresh) -> String {
    match (r.outcome.as_str(), &r.policy) {
        ("failed", _) | (_, None) => format!(
            "{}: failed: {}{} (the cached policy stays in force until it expires)",
            r.domain,
            r.result_type
                .as_deref()
                .map(|t| format!("{t}: "))
                .unwrap_or_default(),
            r.error.as_deref().unwrap_or("unknown error")
        ),
        (outcome, Some(p)) => {
            let mut line = format!(
                "{}: {outcome} (mode {}, id {}, expires {})",
                r.domain,
                p.mode,
                p.id,
                format_expiry(p.expires_at)
            );
            if let Some(diff) = r.diff.as_deref().filter(|d| !d.is_empty()) {
                for l in diff.lines() {
                    line.push_str("\n    ");
                    line.push_str(l);
                }
            }
            line
        }
    }
}

/// `policy explain`: the policy, the plan, then one row per mail host.
pub fn explain(x: &PolicyExplain) -> String {
    let mut out = match &x.policy {
        Some(p) => format!(
            "{}: MTA-STS mode {} ({}, id {}, expires {}), mx {}\n",
            x.domain,
            p.mode,
            p.source,
            p.id,
            format_expiry(p.expires_at),
            p.mx.join(", ")
        ),
        None => format!("{}: no MTA-STS policy in force\n", x.domain),
    };
    out.push_str(&plan_line(&x.plan, &x.mx_hosts));
    if !x.mx_hosts.is_empty() {
        let rows: Vec<Vec<String>> = x.mx_hosts.iter().map(explain_row).collect();
        out.push_str(&render_table(
            &[
                "HOST",
                "PREF",
                "ADDRESSES",
                "ALLOWED",
                "TLS REQUIRED",
                "RULE",
                "DNSSEC",
                "WHY",
            ],
            &rows,
        ));
        out.push_str(&tlsa_lines(&x.mx_hosts));
    }
    if !x.note.is_empty() {
        out.push_str(&x.note);
    }
    out.trim_end().to_string()
}

/// What delivery does now, in one line.
fn plan_line(plan: &ExplainPlan, hosts: &[ExplainHost]) -> String {
    let why = escape_terminal(plan.reason.as_deref().unwrap_or_default());
    let line = match plan.decision.as_str() {
        "try" => {
            let tried: Vec<&str> = hosts
                .iter()
                .filter(|h| h.contacted)
                .map(|h| h.name.as_str())
                .collect();
            format!("tries {}", escape_terminal(&tried.join(", then ")))
        }
        "fail" => format!(
            "fails with {}: {why}",
            plan.status.as_deref().unwrap_or("5.0.0")
        ),
        "defer" => format!("deferred: {why}"),
        other => escape_terminal(other),
    };
    format!("delivery (MTA-STS {}): {line}\n", plan.mta_sts)
}

/// One mail host of `policy explain`.
fn explain_row(h: &ExplainHost) -> Vec<String> {
    let mut why = match h.preference {
        Some(p) => format!("{} {p}", h.source),
        None => h.source.clone(),
    };
    match &h.matched_pattern {
        Some(pattern) => why.push_str(&format!(", listed as {pattern}")),
        None if !h.allowed_by_policy => why.push_str(", not listed in the policy"),
        None => {}
    }
    if !h.myself.is_empty() {
        why.push_str(&format!(", {} is this server", h.myself.join(", ")));
    }
    vec![
        h.name.clone(),
        h.preference.map(|p| p.to_string()).unwrap_or_default(),
        if h.addrs.is_empty() {
            h.error.clone().unwrap_or_else(|| "-".into())
        } else {
            h.addrs.join(", ")
        },
        if h.allowed_by_policy { "yes" } else { "no" }.into(),
        h.tls_required.clone(),
        h.rule.clone(),
        h.dnssec.clone(),
        why,
    ]
}

/// The TLSA records of each host that has some, one line each.
fn tlsa_lines(hosts: &[ExplainHost]) -> String {
    let mut out = String::new();
    for h in hosts {
        for record in &h.tlsa {
            out.push_str(&escape_terminal(&format!(
                "TLSA _{}._tcp.{}: {record}",
                h.port, h.name
            )));
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explain_shows_rule_dnssec_and_tlsa_per_host() {
        let host = |name: &str, rule: &str, dnssec: &str, tlsa: Vec<String>| ExplainHost {
            name: name.into(),
            preference: Some(10),
            port: 25,
            addrs: vec!["192.0.2.1".into()],
            error: None,
            allowed_by_policy: true,
            tls_required: "opportunistic".into(),
            source: "mx".into(),
            matched_pattern: None,
            contacted: true,
            myself: Vec::new(),
            rule: rule.into(),
            dnssec: dnssec.into(),
            tlsa,
        };
        let x = PolicyExplain {
            domain: "example.test".into(),
            policy: None,
            mx_hosts: vec![
                host(
                    "mx1.example.test",
                    "DANE",
                    "secure",
                    vec!["3 1 1 abab".into()],
                ),
                host("mx2.example.test", "none", "insecure", Vec::new()),
            ],
            note: String::new(),
            plan: ExplainPlan {
                decision: "try".into(),
                status: None,
                reason: None,
                mta_sts: "none".into(),
            },
        };
        let out = explain(&x);
        assert!(out.contains("RULE") && out.contains("DNSSEC"), "{out}");
        let row = |name: &str| out.lines().find(|l| l.starts_with(name)).unwrap_or("");
        assert!(row("mx1.example.test").contains("DANE"), "{out}");
        assert!(row("mx1.example.test").contains("secure"), "{out}");
        assert!(row("mx2.example.test").contains("insecure"), "{out}");
        assert!(
            out.contains("TLSA _25._tcp.mx1.example.test: 3 1 1 abab"),
            "{out}"
        );
        assert!(!out.contains("TLSA _25._tcp.mx2"), "{out}");
    }
}
