//! The TLS-RPT facts of a delivery's policy (RFC 8460 §4.4 `policy`
//! object): made by the policy engine (MTA-STS today, DANE later), carried
//! by delivery in every session result, counted by TLS-RPT. They live here,
//! beside [`TlsResultType`], so that neither the policy crate nor the
//! TLS-RPT crate depends on the other.

use portcullis_types::Domain;

use crate::TlsResultType;

/// RFC 8460 §4.4 `policy-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportPolicyType {
    /// `sts`: an MTA-STS policy applied (or was published but failed).
    Sts,
    /// `no-policy-found`.
    NoPolicyFound,
}

impl ReportPolicyType {
    /// The string as written in a report.
    pub fn as_str(self) -> &'static str {
        match self {
            ReportPolicyType::Sts => "sts",
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
