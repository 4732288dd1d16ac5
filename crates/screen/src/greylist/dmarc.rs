//! Whether a domain publishes DMARC `p=reject` (RFC 7489 §6.3, §6.6.3):
//! the one fact greylisting takes from DMARC, so its parser is this small
//! and strict. Only the domain's own `_dmarc` record counts (no
//! organizational-domain fallback: a subdomain without a record is simply
//! not known to reject, which costs it only the shortcut).

use crate::ScreenDns;

/// True when `records` (the TXT records of `_dmarc.<domain>`) hold exactly
/// one DMARC record and its policy is `reject`. RFC 7489 §6.6.3: several
/// DMARC records mean none applies.
pub(crate) fn rejects(records: &[String]) -> bool {
    let mut dmarc = records.iter().filter_map(|r| tags(r));
    match (dmarc.next(), dmarc.next()) {
        (Some(tags), None) => tags
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("p") && v.eq_ignore_ascii_case("reject")),
        _ => false,
    }
}

/// The tags of a DMARC record; `None` unless it starts with `v=DMARC1`
/// (RFC 7489 §6.4: the version tag first, its value exact).
fn tags(record: &str) -> Option<Vec<(&str, &str)>> {
    let tags: Vec<(&str, &str)> = record
        .split(';')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            let (k, v) = t.split_once('=').unwrap_or((t, ""));
            (k.trim(), v.trim())
        })
        .collect();
    match tags.first() {
        Some(&("v", "DMARC1")) => Some(tags),
        _ => None,
    }
}

/// Looks up `_dmarc.<domain>`: true only when it positively says
/// `p=reject`. No DNS, a failure or no record: false (not known, no
/// shortcut), logged at debug.
pub(crate) async fn domain_rejects(dns: Option<&dyn ScreenDns>, domain: &str) -> bool {
    let Some(dns) = dns else {
        return false;
    };
    let name = format!("_dmarc.{domain}");
    match dns.txt(&name).await {
        Ok(records) => rejects(&records),
        Err(e) => {
            tracing::debug!(%domain, error = %e, "greylist: no DMARC policy known");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn case(records: &[&str], expect: bool) {
        let records: Vec<String> = records.iter().map(|s| s.to_string()).collect();
        assert_eq!(rejects(&records), expect, "{records:?}");
    }

    #[test]
    fn only_one_record_with_policy_reject_counts() {
        case(&["v=DMARC1; p=reject"], true);
        case(&["v=DMARC1;p=REJECT;rua=mailto:d@x.test"], true);
        case(&["v=spf1 -all", "v=DMARC1; p=reject; pct=100"], true);
        case(&["v=DMARC1; p=quarantine"], false);
        case(&["v=DMARC1; p=none; sp=reject"], false);
        case(&["v=DMARC1"], false);
        case(&["p=reject; v=DMARC1"], false);
        case(&["v=dmarc1; p=reject"], false);
        case(&["v=DMARC1; p=reject", "v=DMARC1; p=reject"], false);
        case(&[], false);
    }
}
