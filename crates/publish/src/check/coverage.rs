//! `mx covered`: every MX host of the domain matches the `mx` patterns of
//! the policy we serve (RFC 8461 §4.1). A host that does not is one that
//! senders enforcing the policy refuse to deliver to: a frequent mistake
//! after adding an MX host and forgetting the policy.

use super::Check;
use crate::policy::OwnPolicy;
use portcullis_dns::{DnsError, Mx};
use portcullis_policy::{Mode, Policy};
use portcullis_types::Domain;

/// The check's name.
pub const NAME: &str = "mx covered";

/// Judges the MX lookup of `domain` against `ours`, naming each host the
/// policy does not cover.
pub fn judge(domain: &Domain, mx: &Result<Vec<Mx>, DnsError>, ours: &OwnPolicy) -> Check {
    let records = match mx {
        Ok(records) => records,
        Err(e) if e.is_temporary() => {
            return Check::temporary(
                NAME,
                format!(
                    "temporary DNS failure looking up the MX records of {domain}: {e}; try again"
                ),
            );
        }
        Err(e) => {
            return Check::gap(
                NAME,
                format!(
                    "{domain} has no MX records ({e}): publish MX records naming the hosts the policy lists"
                ),
            );
        }
    };
    if records.iter().any(Mx::is_null) {
        return Check::gap(
            NAME,
            format!(
                "{domain} publishes a null MX (RFC 7505): it accepts no mail, so a policy for it protects nothing"
            ),
        );
    }
    let Ok(policy) = Policy::parse(&ours.text) else {
        return Check::gap(
            NAME,
            "the policy we serve does not parse (a bug: please report it)",
        );
    };
    let hosts: Vec<&str> = records.iter().map(|m| m.exchange.as_str()).collect();
    if policy.mode == Mode::None {
        return Check::ok(
            NAME,
            format!(
                "mode none: senders do not match MX hosts ({})",
                hosts.join(", ")
            ),
        );
    }
    let uncovered: Vec<&str> = hosts
        .iter()
        .copied()
        .filter(|h| !policy.matches_mx(h))
        .collect();
    let patterns: Vec<String> = policy.mx.iter().map(ToString::to_string).collect();
    if uncovered.is_empty() {
        return Check::ok(
            NAME,
            format!(
                "every MX host ({}) matches mx: {}",
                hosts.join(", "),
                patterns.join(", ")
            ),
        );
    }
    let names = uncovered.join(", ");
    Check::gap(
        NAME,
        format!(
            "MX host{} {names} not covered by the policy's mx ({}): senders enforcing it will not deliver there; add {} to [publish] mx (or remove the MX record)",
            if uncovered.len() == 1 { "" } else { "s" },
            patterns.join(", "),
            if uncovered.len() == 1 { "it" } else { "them" },
        ),
    )
}
