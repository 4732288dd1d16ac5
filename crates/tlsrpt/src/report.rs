//! The report itself (RFC 8460 §4): the JSON of §4.4 for one policy domain
//! and one UTC day, built on mail-auth's
//! [`TlsReport`](mail_auth::report::tlsrpt::TlsReport) types, and its gzip
//! form (§5.1: reports are sent gzip-compressed as
//! `application/tlsrpt+gzip`).
//!
//! mail-auth writes an absent optional field as `null` (e.g.
//! `"sending-mta-ip": null`, `"failure-reason-code": null`); §4.4 has no
//! nulls (a field is present with a value or absent), so [`ReportJson`]
//! drops them, and drops `policy-string` / `mx-host` when there is no
//! policy (`no-policy-found`).

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use mail_auth::report::tlsrpt::{
    DateRange, FailureDetails, Policy, PolicyDetails, PolicyType, ResultType, Summary, TlsReport,
};
use rand::Rng;
use serde_json::Value;

use crate::{Day, DayAggregate, TlsRptError};

/// Who the report is from (`[tlsrpt]` settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportInfo {
    /// `organization-name`.
    pub organization: String,
    /// `contact-info` (an email address or URI).
    pub contact: String,
    /// The submitter domain (the report-id's right-hand side, §5.3
    /// `TLS-Report-Submitter`).
    pub submitter: String,
}

impl ReportInfo {
    /// A fresh unique report-id for (`day`, `domain`):
    /// `<day>.<domain>.<random>@<submitter>` (RFC 8460 §4.4 "report-id": a
    /// unique identifier; the form of an RFC 5322 Message-ID's `id-left@
    /// id-right`).
    pub fn new_report_id(&self, day: Day, domain: &str) -> String {
        let random: u64 = rand::rng().random();
        format!("{day}.{domain}.{random:016x}@{}", self.submitter)
    }
}

/// A report ready to send: the mail-auth value and its RFC 8460 JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportJson {
    /// The report as mail-auth's type (counts saturate at `u32::MAX`).
    pub report: TlsReport,
    /// The JSON exactly as sent.
    pub json: Value,
}

impl ReportJson {
    /// The JSON text as sent.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising a Value cannot fail.
        serde_json::to_vec(&self.json).unwrap_or_default()
    }

    /// The gzip-compressed JSON (RFC 8460 §5.1).
    pub fn to_gzip(&self) -> Result<Vec<u8>, TlsRptError> {
        gzip(&self.to_bytes())
    }

    /// The report-id.
    pub fn report_id(&self) -> &str {
        &self.report.report_id
    }
}

/// gzip-compresses `data`.
pub fn gzip(data: &[u8]) -> Result<Vec<u8>, TlsRptError> {
    let mut e = GzEncoder::new(
        Vec::with_capacity(data.len() / 4 + 64),
        Compression::default(),
    );
    e.write_all(data)
        .and_then(|()| e.finish())
        .map_err(|err| TlsRptError::Build(format!("gzip: {err}")))
}

/// Builds the RFC 8460 §4.4 report for `domain` on `day` from its
/// aggregates (one `policies[]` entry per policy seen that day).
pub fn build_report(
    info: &ReportInfo,
    day: Day,
    domain: &str,
    report_id: &str,
    aggregates: &[DayAggregate],
) -> Result<ReportJson, TlsRptError> {
    if aggregates.is_empty() {
        return Err(TlsRptError::NoData {
            domain: domain.to_owned(),
            day: day.to_string(),
        });
    }
    let report = TlsReport {
        organization_name: Some(info.organization.clone()),
        date_range: DateRange::from_timestamps(day.start_timestamp(), day.end_timestamp()),
        contact_info: Some(info.contact.clone()),
        report_id: report_id.to_owned(),
        policies: aggregates.iter().map(policy).collect(),
    };
    let mut json = serde_json::to_value(&report).map_err(|e| TlsRptError::Build(e.to_string()))?;
    tidy(&mut json);
    Ok(ReportJson { report, json })
}

/// One `policies[]` entry.
fn policy(agg: &DayAggregate) -> Policy {
    let policy_type = match agg.policy.policy_type.as_str() {
        "sts" => PolicyType::Sts,
        "tlsa" => PolicyType::Tlsa,
        "no-policy-found" => PolicyType::NoPolicyFound,
        _ => PolicyType::Other,
    };
    let failure_details = agg
        .failures
        .iter()
        .map(|(key, count)| FailureDetails {
            result_type: result_type(&key.result_type),
            sending_mta_ip: key.sending_mta_ip,
            receiving_mx_hostname: key.receiving_mx_hostname.clone(),
            receiving_mx_helo: key.receiving_mx_helo.clone(),
            receiving_ip: key.receiving_ip,
            failed_session_count: saturate(*count),
            additional_information: key.additional_information.clone(),
            failure_reason_code: key.failure_reason_code.clone(),
        })
        .collect();
    Policy {
        policy: PolicyDetails {
            policy_type,
            policy_string: agg.policy.policy_string.clone(),
            policy_domain: agg.policy.policy_domain.clone(),
            mx_host: agg.policy.mx_host.clone(),
        },
        summary: Summary {
            total_success: saturate(agg.successful),
            total_failure: saturate(agg.failed()),
        },
        failure_details,
    }
}

/// mail-auth's result type for a §4.3 string.
fn result_type(s: &str) -> ResultType {
    serde_json::from_value(Value::String(s.to_owned())).unwrap_or(ResultType::Other)
}

fn saturate(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Drops nulls everywhere, and empty `policy-string`, `mx-host` and
/// `failure-details` arrays (optional in §4.4; absent when there is nothing
/// to say).
fn tidy(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|k, v| {
                !(v.is_null()
                    || (matches!(k.as_str(), "policy-string" | "mx-host" | "failure-details")
                        && v.as_array().is_some_and(Vec::is_empty)))
            });
            map.values_mut().for_each(tidy);
        }
        Value::Array(items) => items.iter_mut().for_each(tidy),
        _ => {}
    }
}
