//! A received report as we store it: the RFC 8460 §4.4 facts of a report
//! another provider sent, limited to the policies about our domains and
//! bounded in every dimension, so that one stored value stays within
//! [`portcullis_store::MAX_VALUE`] whatever the sender wrote.

use std::net::IpAddr;

use mail_auth::report::tlsrpt::{FailureDetails, Policy, TlsReport};
use portcullis_types::Domain;
use serde::{Deserialize, Serialize};

use super::Channel;

/// Longest organisation, contact, report-id, host name or detail kept
/// (longer ones are cut at a character boundary).
const MAX_TEXT: usize = 255;
/// Most policies of one report kept (after those about other domains are
/// left out).
pub const MAX_POLICIES: usize = 100;
/// Most `policy-string` lines and `mx-host` entries kept per policy.
const MAX_LINES: usize = 20;
/// Most failure-detail rows kept per policy (their counts are in the
/// policy's `failed` and in the metrics whatever is kept).
pub const MAX_FAILURE_DETAILS: usize = 20;
/// The size the stored JSON is trimmed to (details first): well under
/// `MAX_VALUE`, so the summary and sled's own overhead fit beside it.
pub const RECORD_BUDGET: usize = 48 * 1024;

/// One stored report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedReport {
    /// Our id: stable for a (organisation, report-id), so a report sent
    /// again is stored once.
    pub id: String,
    /// When we took it, Unix seconds.
    pub received_at: u64,
    /// How it came.
    pub channel: Channel,
    /// `organization-name` (empty when the sender left it out).
    pub organization: String,
    /// `contact-info` (empty when left out).
    pub contact: String,
    /// `report-id` (empty when left out).
    pub report_id: String,
    /// `date-range` start, Unix seconds (0 when unreadable).
    pub start: i64,
    /// `date-range` end, Unix seconds (0 when unreadable).
    pub end: i64,
    /// The policies about our domains.
    pub policies: Vec<ReceivedPolicy>,
    /// Policies about domains that are not ours, left out.
    pub other_policies: u64,
    /// True when rows, lines or policies were left out to stay within the
    /// bounds; the counts are always whole.
    pub truncated: bool,
}

/// One `policies` entry about one of our domains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedPolicy {
    /// `policy-type`: `sts`, `tlsa`, `no-policy-found` or `other`.
    pub policy_type: String,
    /// `policy-domain`, canonical.
    pub policy_domain: String,
    /// `policy-string` lines (at most 20).
    pub policy_string: Vec<String>,
    /// `mx-host` entries (at most 20).
    pub mx_host: Vec<String>,
    /// `total-successful-session-count`.
    pub successful: u64,
    /// `total-failure-session-count`.
    pub failed: u64,
    /// `failure-details` (at most [`MAX_FAILURE_DETAILS`]).
    pub failure_details: Vec<ReceivedFailure>,
}

/// One `failure-details` row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedFailure {
    /// `result-type` (RFC 8460 §4.3; `other` for a type we do not know).
    pub result_type: String,
    /// `failed-session-count`.
    pub count: u64,
    /// `sending-mta-ip`.
    pub sending_mta_ip: Option<IpAddr>,
    /// `receiving-mx-hostname`.
    pub receiving_mx_hostname: Option<String>,
    /// `receiving-mx-helo`.
    pub receiving_mx_helo: Option<String>,
    /// `receiving-ip`.
    pub receiving_ip: Option<IpAddr>,
    /// `additional-information`.
    pub additional_information: Option<String>,
    /// `failure-reason-code`.
    pub failure_reason_code: Option<String>,
}

/// The metric rows of one report: (policy domain, result type, failed
/// sessions), from every row the sender wrote (before any is left out).
pub(super) type FailureCounts = Vec<(String, String, u64)>;

/// Cuts `s` to at most `max` bytes at a character boundary.
pub(super) fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// The RFC 8460 §4.3 name of a result type (`other` for one mail-auth does
/// not know).
pub(super) fn result_type_name<T: Serialize>(t: &T) -> String {
    match serde_json::to_value(t) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "other".to_owned(),
    }
}

fn cut_opt(s: &Option<String>) -> Option<String> {
    s.as_deref().map(|s| cut(s, MAX_TEXT))
}

fn lines(v: &[String]) -> Vec<String> {
    v.iter().take(MAX_LINES).map(|l| cut(l, MAX_TEXT)).collect()
}

fn failure(d: &FailureDetails) -> ReceivedFailure {
    ReceivedFailure {
        result_type: result_type_name(&d.result_type),
        count: u64::from(d.failed_session_count),
        sending_mta_ip: d.sending_mta_ip,
        receiving_mx_hostname: cut_opt(&d.receiving_mx_hostname),
        receiving_mx_helo: cut_opt(&d.receiving_mx_helo),
        receiving_ip: d.receiving_ip,
        additional_information: cut_opt(&d.additional_information),
        failure_reason_code: cut_opt(&d.failure_reason_code),
    }
}

/// The failed sessions of `p` by result type: each row's count, and what
/// the summary counts beyond the rows as `unspecified` (a sender may leave
/// rows out; the alert still needs the total).
fn failure_counts(domain: &str, p: &Policy, out: &mut FailureCounts) {
    let mut in_rows: u64 = 0;
    for d in &p.failure_details {
        let n = u64::from(d.failed_session_count);
        in_rows = in_rows.saturating_add(n);
        if n > 0 {
            out.push((domain.to_owned(), result_type_name(&d.result_type), n));
        }
    }
    let total = u64::from(p.summary.total_failure);
    if total > in_rows {
        out.push((domain.to_owned(), "unspecified".to_owned(), total - in_rows));
    }
}

/// The policy domain of `p` when it is one of `ours`.
fn our_domain(p: &Policy, ours: &[Domain]) -> Option<Domain> {
    let d = Domain::parse(p.policy.policy_domain.trim()).ok()?;
    ours.contains(&d).then_some(d)
}

/// `report` as stored, with its metric rows; `None` when no policy is
/// about one of `ours`. `id`, `received_at` and `channel` are the
/// caller's.
pub(super) fn from_report(
    report: &TlsReport,
    ours: &[Domain],
    id: String,
    received_at: u64,
    channel: Channel,
) -> Option<(ReceivedReport, FailureCounts)> {
    let mut policies = Vec::new();
    let mut counts = FailureCounts::new();
    let mut other_policies = 0u64;
    let mut truncated = false;
    for p in &report.policies {
        let Some(domain) = our_domain(p, ours) else {
            other_policies += 1;
            continue;
        };
        failure_counts(domain.as_str(), p, &mut counts);
        if policies.len() >= MAX_POLICIES {
            truncated = true;
            continue;
        }
        let details = &p.failure_details;
        truncated |= details.len() > MAX_FAILURE_DETAILS
            || p.policy.policy_string.len() > MAX_LINES
            || p.policy.mx_host.len() > MAX_LINES;
        policies.push(ReceivedPolicy {
            policy_type: result_type_name(&p.policy.policy_type),
            policy_domain: domain.as_str().to_owned(),
            policy_string: lines(&p.policy.policy_string),
            mx_host: lines(&p.policy.mx_host),
            successful: u64::from(p.summary.total_success),
            failed: u64::from(p.summary.total_failure),
            failure_details: details
                .iter()
                .take(MAX_FAILURE_DETAILS)
                .map(failure)
                .collect(),
        });
    }
    if policies.is_empty() {
        return None;
    }
    let mut stored = ReceivedReport {
        id,
        received_at,
        channel,
        organization: cut(report.organization_name.as_deref().unwrap_or(""), MAX_TEXT),
        contact: cut(report.contact_info.as_deref().unwrap_or(""), MAX_TEXT),
        report_id: cut(&report.report_id, MAX_TEXT),
        start: report.date_range.start_datetime.to_timestamp(),
        end: report.date_range.end_datetime.to_timestamp(),
        policies,
        other_policies,
        truncated,
    };
    stored.fit(RECORD_BUDGET);
    Some((stored, counts))
}

impl ReceivedReport {
    /// Sessions that negotiated TLS, over every stored policy.
    pub fn successful(&self) -> u64 {
        self.policies.iter().map(|p| p.successful).sum()
    }

    /// Failed sessions, over every stored policy.
    pub fn failed(&self) -> u64 {
        self.policies.iter().map(|p| p.failed).sum()
    }

    /// The distinct policy domains, in the report's order.
    pub fn domains(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for p in &self.policies {
            if !out.contains(&p.policy_domain) {
                out.push(p.policy_domain.clone());
            }
        }
        out
    }

    fn encoded_len(&self) -> usize {
        serde_json::to_vec(self)
            .map(|v| v.len())
            .unwrap_or(usize::MAX)
    }

    /// Leaves out detail until the JSON is at most `budget` bytes: failure
    /// rows (from the policy with most), then policy strings and MX lists,
    /// then whole policies from the end. Counts of the policies kept stay.
    pub(super) fn fit(&mut self, budget: usize) {
        while self.encoded_len() > budget {
            self.truncated = true;
            let most = self
                .policies
                .iter_mut()
                .max_by_key(|p| p.failure_details.len())
                .filter(|p| !p.failure_details.is_empty());
            if let Some(p) = most {
                // A quarter at a time: a few passes, not one per row.
                let keep = p.failure_details.len() - p.failure_details.len().div_ceil(4);
                p.failure_details.truncate(keep);
                continue;
            }
            let texts = self
                .policies
                .iter_mut()
                .rev()
                .find(|p| !p.policy_string.is_empty() || !p.mx_host.is_empty());
            if let Some(p) = texts {
                p.policy_string.clear();
                p.mx_host.clear();
                continue;
            }
            if self.policies.pop().is_none() {
                return;
            }
        }
    }
}
