//! The bodies of `tlsrpt received list` and `tlsrpt received show`: the
//! TLS reports other providers sent about our domains (RFC 8460).
//!
//! These mirror the tlsrpt crate's stored report field for field, as the
//! other answers mirror their crate's types: this crate carries the
//! operator's view and decides nothing. Times are Unix seconds.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// One line of `tlsrpt received list`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ReceivedEntry {
    /// Our id of the report (for `show`).
    pub id: String,
    /// When we received it.
    pub received_at: u64,
    /// The reporting organisation (empty when it left it out).
    pub organization: String,
    /// Our policy domains it is about.
    pub domains: Vec<String>,
    /// The start of the period it covers.
    pub start: i64,
    /// The end of the period it covers.
    pub end: i64,
    /// Sessions that negotiated TLS.
    pub successful: u64,
    /// Failed sessions.
    pub failed: u64,
}

/// `tlsrpt received show`: everything stored of one report.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ReceivedShow {
    /// Our id.
    pub id: String,
    /// When we received it.
    pub received_at: u64,
    /// `https` or `mail`.
    pub channel: String,
    /// `organization-name`.
    pub organization: String,
    /// `contact-info`.
    pub contact: String,
    /// `report-id`.
    pub report_id: String,
    /// The start of the period it covers.
    pub start: i64,
    /// The end of the period it covers.
    pub end: i64,
    /// The policies about our domains.
    pub policies: Vec<ReceivedPolicyShow>,
    /// Policies about domains that are not ours, not stored.
    pub other_policies: u64,
    /// True when rows or lines were left out to stay within the store's
    /// bounds (the counts are whole).
    pub truncated: bool,
}

/// One policy of a received report.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ReceivedPolicyShow {
    /// `sts`, `tlsa`, `no-policy-found` or `other`.
    pub policy_type: String,
    /// Our policy domain.
    pub policy_domain: String,
    /// The policy as the reporter saw it.
    pub policy_string: Vec<String>,
    /// The MX patterns as the reporter saw them.
    pub mx_host: Vec<String>,
    /// Sessions that negotiated TLS.
    pub successful: u64,
    /// Failed sessions.
    pub failed: u64,
    /// The failure rows.
    pub failure_details: Vec<ReceivedFailureShow>,
}

/// One failure row of a received report.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ReceivedFailureShow {
    /// RFC 8460 §4.3 result type.
    pub result_type: String,
    /// Failed sessions of this row.
    pub count: u64,
    /// The reporter's sending MTA.
    pub sending_mta_ip: Option<IpAddr>,
    /// Our MX as the reporter named it.
    pub receiving_mx_hostname: Option<String>,
    /// Our MX's HELO as the reporter saw it.
    pub receiving_mx_helo: Option<String>,
    /// Our MX's address.
    pub receiving_ip: Option<IpAddr>,
    /// Free text from the reporter.
    pub additional_information: Option<String>,
    /// The reporter's failure code.
    pub failure_reason_code: Option<String>,
}
