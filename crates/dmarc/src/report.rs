//! The report (RFC 7489 §7.2.1, Appendix C) built with mail-auth's DMARC
//! report types and XML writer, and its gzip body.
//!
//! mail-auth 0.13 writes the format of the DMARC aggregate reporting
//! revision (namespace `urn:ietf:params:xml:ns:dmarc-2.0`, `testing`), which
//! no longer has RFC 7489's `pct`; receivers of RFC 7489 reports expect
//! it in `policy_published`, so it is added there (the element order of
//! `policy_published` is free: the schema's `xs:all`).

use std::io::Write;

use mail_auth::report::{
    ActionDisposition, Alignment, AuthResult as ReportAuthResult, DKIMAuthResult, Disposition,
    DkimResult, DmarcResult, Identifier, PolicyEvaluated, PolicyOverride, PolicyOverrideReason,
    PolicyPublished, Record, Report, ReportMetadata, Row, SPFAuthResult, SPFDomainScope, SpfResult,
};
use portcullis_tlsrpt::Day;

use crate::{DmarcError, Published, RowFacts};

/// Who makes the report (Appendix C `report_metadata`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportInfo {
    /// `org_name`.
    pub organization: String,
    /// `email`: an address to contact us.
    pub contact: String,
    /// The domain of the report generator: the `Submitter` of the subject
    /// and the `receiver` of the file name (the From address's domain).
    pub submitter: String,
}

fn disposition(s: &str) -> Disposition {
    match s {
        "quarantine" => Disposition::Quarantine,
        "reject" => Disposition::Reject,
        _ => Disposition::None,
    }
}

fn action(s: &str) -> ActionDisposition {
    match s {
        "quarantine" => ActionDisposition::Quarantine,
        "reject" => ActionDisposition::Reject,
        _ => ActionDisposition::None,
    }
}

fn dkim_result(s: &str) -> DkimResult {
    match s {
        "pass" => DkimResult::Pass,
        "fail" => DkimResult::Fail,
        "policy" => DkimResult::Policy,
        "neutral" => DkimResult::Neutral,
        "temperror" => DkimResult::TempError,
        "permerror" => DkimResult::PermError,
        _ => DkimResult::None,
    }
}

fn spf_result(s: &str) -> SpfResult {
    match s {
        "pass" => SpfResult::Pass,
        "fail" => SpfResult::Fail,
        "softfail" => SpfResult::SoftFail,
        "neutral" => SpfResult::Neutral,
        "temperror" => SpfResult::TempError,
        "permerror" => SpfResult::PermError,
        _ => SpfResult::None,
    }
}

fn pass_fail(pass: bool) -> DmarcResult {
    if pass {
        DmarcResult::Pass
    } else {
        DmarcResult::Fail
    }
}

fn alignment(strict: bool) -> Alignment {
    if strict {
        Alignment::Strict
    } else {
        Alignment::Relaxed
    }
}

/// The report of `domain` for `day`, from its rows (each with its count).
pub fn build_report(
    info: &ReportInfo,
    day: Day,
    domain: &str,
    report_id: &str,
    published: &Published,
    rows: &[(RowFacts, u64)],
) -> Report {
    let mut report = Report {
        version: 1.0,
        report_metadata: ReportMetadata {
            org_name: info.organization.clone(),
            email: info.contact.clone(),
            extra_contact_info: None,
            report_id: report_id.to_owned(),
            date_range: mail_auth::report::DateRange {
                begin: u64::try_from(day.start_timestamp()).unwrap_or(0),
                end: u64::try_from(day.end_timestamp()).unwrap_or(0),
            },
            error: Vec::new(),
            generator: None,
        },
        policy_published: PolicyPublished {
            domain: domain.to_owned(),
            version_published: None,
            adkim: alignment(published.adkim_strict),
            aspf: alignment(published.aspf_strict),
            p: disposition(&published.p),
            sp: disposition(&published.sp),
            np: Disposition::Unspecified,
            testing: false,
            discovery_method: Default::default(),
            fo: None,
        },
        record: Vec::new(),
        extensions: Vec::new(),
    };
    for (row, count) in rows {
        let mut reason = Vec::new();
        if row.local_policy {
            reason.push(PolicyOverrideReason {
                type_: PolicyOverride::LocalPolicy,
                comment: None,
            });
        }
        report.record.push(Record {
            row: Row {
                source_ip: Some(row.source_ip),
                count: u32::try_from(*count).unwrap_or(u32::MAX),
                policy_evaluated: PolicyEvaluated {
                    disposition: action(&row.disposition),
                    dkim: pass_fail(row.dkim_aligned),
                    spf: pass_fail(row.spf_aligned),
                    reason,
                },
            },
            identifiers: Identifier {
                envelope_to: None,
                envelope_from: row.envelope_from.clone(),
                header_from: domain.to_owned(),
            },
            auth_results: ReportAuthResult {
                dkim: row
                    .dkim
                    .iter()
                    .map(|d| DKIMAuthResult {
                        domain: d.domain.clone(),
                        selector: d.selector.clone(),
                        result: dkim_result(&d.result),
                        human_result: None,
                    })
                    .collect(),
                spf: vec![SPFAuthResult {
                    domain: row.spf.domain.clone(),
                    // mail-auth leaves a `helo` scope out of the XML; the
                    // result is reported, without a scope.
                    scope: if row.spf.helo {
                        SPFDomainScope::Unspecified
                    } else {
                        SPFDomainScope::MailFrom
                    },
                    result: spf_result(&row.spf.result),
                    human_result: None,
                }],
            },
            extensions: Vec::new(),
        });
    }
    report
}

/// The XML of `report` with RFC 7489's `pct` in `policy_published`.
pub fn report_xml(report: &Report, pct: u8) -> String {
    let xml = report.to_xml();
    let end = "\t</policy_published>";
    match xml.find(end) {
        Some(at) => format!("{}\t\t<pct>{pct}</pct>\n{}", &xml[..at], &xml[at..]),
        None => xml,
    }
}

/// `bytes` gzipped (the attachment, RFC 7489 §7.2.1.1).
pub fn gzip(bytes: &[u8]) -> Result<Vec<u8>, DmarcError> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes)
        .map_err(|e| DmarcError::Build(format!("gzip: {e}")))?;
    e.finish()
        .map_err(|e| DmarcError::Build(format!("gzip: {e}")))
}
