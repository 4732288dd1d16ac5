//! Where a report may go (RFC 7489 §7.1): the `mailto:` URIs of the
//! record's `rua`, each checked before anything is sent. A destination
//! outside the policy domain must agree to receive its reports with a
//! `<policy domain>._report._dmarc.<destination domain>` TXT record that
//! begins with `v=DMARC1`; without it the report does not go there.
//!
//! The organisational domain needs the public suffix list, which we do not
//! carry: a destination counts as inside only when its domain is the
//! policy domain or under it, so every other one is checked (the safe
//! side: a check too many, never a report to a domain that did not ask).

use portcullis_dns::{DnsError, Resolver};

/// What the check of one destination found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    /// Inside the policy domain: no check needed.
    Internal,
    /// Outside, and its domain publishes the authorisation.
    Authorized,
    /// Outside, and its domain does not agree (the reason).
    NotAuthorized(String),
    /// The lookup failed for now: try again later.
    Temporary(DnsError),
}

/// The address of a `mailto:` URI (its `?` query dropped, RFC 6068
/// percent-escapes of `!` and `,` undone); `None` for other schemes or
/// something that is not `local@domain`.
pub fn mailto_address(uri: &str) -> Option<String> {
    let rest = uri.trim();
    let rest = rest
        .get(..7)
        .filter(|s| s.eq_ignore_ascii_case("mailto:"))
        .map(|_| &rest[7..])?;
    let address = rest.split('?').next().unwrap_or_default();
    let address = address
        .replace("%21", "!")
        .replace("%2C", ",")
        .replace("%2c", ",");
    let (local, domain) = address.rsplit_once('@')?;
    if local.is_empty()
        || domain.is_empty()
        || address.contains(|c: char| c.is_whitespace() || c == '<' || c == '>')
    {
        return None;
    }
    Some(address)
}

/// The TXT name a destination domain publishes to receive the policy
/// domain's reports (RFC 7489 §7.1).
pub fn report_record_name(policy_domain: &str, destination_domain: &str) -> String {
    format!("{policy_domain}._report._dmarc.{destination_domain}")
}

/// Checks that reports of `policy_domain` may go to `address`.
pub async fn authorize<R: Resolver>(
    resolver: &R,
    policy_domain: &str,
    address: &str,
) -> Authorization {
    let policy = policy_domain.trim_end_matches('.').to_ascii_lowercase();
    let dest = address
        .rsplit_once('@')
        .map(|(_, d)| d)
        .unwrap_or_default()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    if dest == policy || dest.ends_with(&format!(".{policy}")) {
        return Authorization::Internal;
    }
    let name = report_record_name(&policy, &dest);
    match resolver.txt(&name).await {
        Ok(records) => {
            // RFC 7489 §7.1: a record that does not start with v=DMARC1
            // is no authorisation.
            if records.iter().any(|r| is_dmarc1(r)) {
                Authorization::Authorized
            } else {
                Authorization::NotAuthorized(format!("{name} has no v=DMARC1 record"))
            }
        }
        Err(e) if e.is_temporary() => Authorization::Temporary(e),
        Err(e) => Authorization::NotAuthorized(format!("{name}: {e}")),
    }
}

/// The record begins with `v=DMARC1`, followed by nothing or by `;`
/// (not `v=DMARC10`).
fn is_dmarc1(record: &str) -> bool {
    let r = record.trim_start();
    r.get(..8)
        .is_some_and(|v| v.eq_ignore_ascii_case("v=DMARC1"))
        && {
            let rest = r[8..].trim_start();
            rest.is_empty() || rest.starts_with(';')
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_v_dmarc1_authorizes() {
        assert!(is_dmarc1("v=DMARC1"));
        assert!(is_dmarc1(" v=DMARC1; rua=mailto:x@y"));
        assert!(!is_dmarc1("v=DMARC10"));
        assert!(!is_dmarc1("v=spf1 -all"));
    }

    #[test]
    fn mailto_uris_become_addresses() {
        assert_eq!(
            mailto_address("mailto:d@r.test").as_deref(),
            Some("d@r.test")
        );
        assert_eq!(
            mailto_address("MAILTO:d@r.test?subject=x").as_deref(),
            Some("d@r.test")
        );
        assert_eq!(mailto_address("https://r.test/"), None);
        assert_eq!(mailto_address("mailto:nobody"), None);
        assert_eq!(mailto_address("mailto:a b@r.test"), None);
    }
}
