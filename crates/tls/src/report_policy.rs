//! The TLS-RPT facts of a delivery's policy (RFC 8460 §4.4 `policy`
//! object): made by the policy engine (MTA-STS) or by delivery (DANE), carried
//! by delivery in every session result, counted by TLS-RPT. They live here,
//! beside [`TlsResultType`], so that neither the policy crate nor the
//! TLS-RPT crate depends on the other.

use portcullis_types::{Domain, Tlsa};

use crate::TlsResultType;

/// RFC 8460 §4.4 `policy-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportPolicyType {
    /// `sts`: an MTA-STS policy applied (or was published but failed).
    Sts,
    /// `tlsa`: DANE TLSA records applied (RFC 8460 §4.4, RFC 7672).
    Tlsa,
    /// `no-policy-found`.
    NoPolicyFound,
}

impl ReportPolicyType {
    /// The string as written in a report.
    pub fn as_str(self) -> &'static str {
        match self {
            ReportPolicyType::Sts => "sts",
            ReportPolicyType::Tlsa => "tlsa",
            ReportPolicyType::NoPolicyFound => "no-policy-found",
        }
    }
}

/// The TLS-RPT facts of a lookup (RFC 8460 §4.4 `policy` object), plus the
/// policy-level failure to record, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportPolicy {
    /// `policy-type`.
    pub policy_type: ReportPolicyType,
    /// `policy-domain`.
    pub policy_domain: Domain,
    /// `policy-string`: the policy's lines (empty without a policy).
    pub policy_string: Vec<String>,
    /// `mx-host`: the policy's MX patterns.
    pub mx_host: Vec<String>,
    /// A failure to fetch or validate the policy (`sts-policy-fetch-error`,
    /// `sts-policy-invalid`, `sts-webpki-invalid`), to be recorded once per
    /// delivery attempt in addition to the session's own result.
    pub failure: Option<TlsResultType>,
}

/// The most TLSA records a `tlsa` policy-string lists.
pub const MAX_TLSA_STRINGS: usize = 16;

impl ReportPolicy {
    /// The `tlsa` policy of one MX host (RFC 8460 §4.4): the TLSA records
    /// in presentation form as the policy-string, `domain` as the
    /// policy-domain, and no policy-level failure. At most
    /// [`MAX_TLSA_STRINGS`] records are kept: the RRset is the recipient's
    /// and every distinct policy is a stored aggregate.
    pub fn tlsa(domain: &Domain, records: &[Tlsa]) -> ReportPolicy {
        ReportPolicy {
            policy_type: ReportPolicyType::Tlsa,
            policy_domain: domain.clone(),
            policy_string: records
                .iter()
                .take(MAX_TLSA_STRINGS)
                .map(ToString::to_string)
                .collect(),
            mx_host: Vec::new(),
            failure: None,
        }
    }

    /// How the policy treats a TLS failure, for the downgrade counter:
    /// `enforce` (DANE, MTA-STS `enforce`), `testing`, or `unknown` (an
    /// MTA-STS policy that could not be fetched), `none` without a policy.
    /// Read from the policy lines the engine wrote, never from a peer.
    pub fn mode(&self) -> &'static str {
        match self.policy_type {
            ReportPolicyType::Tlsa => "enforce",
            ReportPolicyType::NoPolicyFound => "none",
            ReportPolicyType::Sts => {
                let mode = self
                    .policy_string
                    .iter()
                    .find_map(|l| l.strip_prefix("mode:").map(str::trim));
                match mode {
                    Some("enforce") => "enforce",
                    Some("testing") => "testing",
                    Some("none") => "none",
                    _ => "unknown",
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tlsa_policy_lists_the_records_and_enforces() {
        let domain = Domain::parse("example.test").unwrap();
        let record = Tlsa {
            usage: 3,
            selector: 1,
            matching: 1,
            data: vec![0xab; 32],
        };
        let p = ReportPolicy::tlsa(&domain, std::slice::from_ref(&record));
        assert_eq!(p.policy_type.as_str(), "tlsa");
        assert_eq!(p.policy_string, vec![format!("3 1 1 {}", "ab".repeat(32))]);
        assert_eq!(p.mode(), "enforce");
    }

    #[test]
    fn sts_mode_comes_from_the_policy_lines() {
        let domain = Domain::parse("example.test").unwrap();
        let sts = |lines: &[&str]| ReportPolicy {
            policy_type: ReportPolicyType::Sts,
            policy_domain: domain.clone(),
            policy_string: lines.iter().map(|l| l.to_string()).collect(),
            mx_host: Vec::new(),
            failure: None,
        };
        assert_eq!(sts(&["version: STSv1", "mode: testing"]).mode(), "testing");
        assert_eq!(sts(&["version: STSv1", "mode: enforce"]).mode(), "enforce");
        assert_eq!(sts(&[]).mode(), "unknown");
    }
}
