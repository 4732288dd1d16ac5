//! Discovery: the `_mta-sts.<domain>` TXT record (RFC 8461 §3.1).
//!
//! The record is parsed with mail-auth's `_mta-sts` parser
//! ([`mail_auth::mta_sts::MtaSts`]) and then held to the ABNF of §3.1, which
//! mail-auth does not check: the record must *begin* with `v=STSv1` (mail-auth
//! accepts the version tag anywhere) and the `id` must be 1 to 32 letters or
//! digits (mail-auth accepts any text).

use std::fmt;

use mail_auth::common::parse::TxtRecordParser;
use mail_auth::mta_sts::MtaSts;
use portcullis_dns::{DnsError, Resolver};
use portcullis_types::Domain;

/// A valid `_mta-sts` TXT record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StsRecord {
    /// The policy id (`id=`, 1 to 32 letters and digits): a changed id means
    /// a changed policy (§3.1).
    pub id: String,
}

/// Why a domain has no MTA-STS policy as far as DNS is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NoPolicyReason {
    /// No TXT record at `_mta-sts.<domain>` begins with `v=STSv1` (or the
    /// name does not exist).
    NoRecord,
    /// More than one record begins with `v=STSv1`: §3.1 says to treat the
    /// domain as having no policy.
    MultipleRecords(usize),
    /// The one `v=STSv1` record is not syntactically valid (§3.1).
    InvalidRecord(String),
}

impl fmt::Display for NoPolicyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoPolicyReason::NoRecord => f.write_str("no v=STSv1 TXT record"),
            NoPolicyReason::MultipleRecords(n) => write!(f, "{n} v=STSv1 TXT records"),
            NoPolicyReason::InvalidRecord(why) => write!(f, "invalid v=STSv1 TXT record: {why}"),
        }
    }
}

/// The outcome of the TXT lookup: a record, no policy (and why), or a
/// temporary DNS failure that says nothing either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordLookup {
    /// Exactly one valid `v=STSv1` record.
    Found(StsRecord),
    /// DNS positively says there is no usable record.
    NoPolicy(NoPolicyReason),
    /// The lookup failed for now; a cached policy stays in force (§5.1).
    Temporary(DnsError),
}

/// The TXT name of `domain`'s record: `_mta-sts.<domain>`.
pub fn record_name(domain: &Domain) -> String {
    format!("_mta-sts.{}", domain.as_str())
}

/// Looks up and selects `domain`'s `_mta-sts` record through `resolver`
/// (RFC 8461 §3.1): records not beginning with `v=STSv1` are ignored, zero or
/// more than one remaining record means no policy, and a temporary DNS failure
/// is kept apart. CNAMEs are followed by the resolver.
pub async fn lookup_record<R: Resolver>(resolver: &R, domain: &Domain) -> RecordLookup {
    match resolver.txt(&record_name(domain)).await {
        Ok(records) => select_record(&records),
        Err(e) if e.is_temporary() => RecordLookup::Temporary(e),
        // NXDOMAIN, no TXT records, or a name that cannot be looked up.
        Err(_) => RecordLookup::NoPolicy(NoPolicyReason::NoRecord),
    }
}

/// Selects the one `v=STSv1` record among the TXT strings of
/// `_mta-sts.<domain>` (§3.1).
pub fn select_record(records: &[String]) -> RecordLookup {
    let sts: Vec<&String> = records.iter().filter(|r| is_sts_record(r)).collect();
    match sts.as_slice() {
        [] => RecordLookup::NoPolicy(NoPolicyReason::NoRecord),
        [one] => match StsRecord::parse(one) {
            Ok(record) => RecordLookup::Found(record),
            Err(why) => RecordLookup::NoPolicy(NoPolicyReason::InvalidRecord(why)),
        },
        many => RecordLookup::NoPolicy(NoPolicyReason::MultipleRecords(many.len())),
    }
}

/// §3.1: "records that do not begin with `v=STSv1;` are discarded". A record
/// that is exactly `v=STSv1` (or continues with white space) is kept here so
/// that it is reported as invalid rather than silently absent.
fn is_sts_record(record: &str) -> bool {
    record
        .strip_prefix("v=STSv1")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([';', ' ', '\t']))
}

impl StsRecord {
    /// Parses one TXT string as an `_mta-sts` record (RFC 8461 §3.1):
    /// `v=STSv1` first, then `id=` 1 to 32 letters and digits; other fields
    /// are extensions and ignored.
    pub fn parse(record: &str) -> Result<StsRecord, String> {
        if !is_sts_record(record) {
            return Err("does not begin with v=STSv1".to_owned());
        }
        let parsed = MtaSts::parse(record.as_bytes())
            .map_err(|e| format!("not a valid MTA-STS record ({e})"))?;
        let id = parsed.id;
        if id.is_empty() || id.len() > 32 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(format!("id {id:?} is not 1 to 32 letters and digits"));
        }
        Ok(StsRecord { id })
    }
}

#[cfg(test)]
mod tests {
    use portcullis_dns::MemoryResolver;

    use super::*;

    fn found(id: &str) -> RecordLookup {
        RecordLookup::Found(StsRecord { id: id.to_owned() })
    }

    #[track_caller]
    fn select(records: &[&str], want: RecordLookup) {
        let records: Vec<String> = records.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(select_record(&records), want, "{records:?}");
    }

    #[test]
    fn one_valid_record() {
        select(&["v=STSv1; id=20160831085700Z;"], found("20160831085700Z"));
    }

    #[test]
    fn no_trailing_semicolon() {
        select(&["v=STSv1; id=abc123"], found("abc123"));
    }

    #[test]
    fn no_space_after_semicolon() {
        select(&["v=STSv1;id=abc123"], found("abc123"));
    }

    #[test]
    fn extension_fields_are_ignored() {
        select(&["v=STSv1; id=abc; ext=value"], found("abc"));
    }

    #[test]
    fn other_txt_records_are_ignored() {
        select(
            &["v=spf1 -all", "google-site-verification=x", "v=STSv1; id=1"],
            found("1"),
        );
    }

    #[test]
    fn no_sts_record_is_no_policy() {
        select(
            &["v=spf1 -all"],
            RecordLookup::NoPolicy(NoPolicyReason::NoRecord),
        );
    }

    /// §3.1: "If the number of resulting records is not one … senders MUST
    /// assume the recipient domain does not have an available MTA-STS
    /// Policy."
    #[test]
    fn two_sts_records_are_no_policy() {
        select(
            &["v=STSv1; id=1", "v=STSv1; id=2"],
            RecordLookup::NoPolicy(NoPolicyReason::MultipleRecords(2)),
        );
    }

    #[test]
    fn version_not_first_is_discarded() {
        select(
            &["id=1; v=STSv1"],
            RecordLookup::NoPolicy(NoPolicyReason::NoRecord),
        );
    }

    #[test]
    fn version_is_case_sensitive() {
        select(
            &["v=stsv1; id=1"],
            RecordLookup::NoPolicy(NoPolicyReason::NoRecord),
        );
    }

    #[test]
    fn other_version_is_discarded() {
        select(
            &["v=STSv12; id=1"],
            RecordLookup::NoPolicy(NoPolicyReason::NoRecord),
        );
    }

    #[track_caller]
    fn invalid(record: &str) {
        let got = select_record(&[record.to_owned()]);
        assert!(
            matches!(
                got,
                RecordLookup::NoPolicy(NoPolicyReason::InvalidRecord(_))
            ),
            "{record:?} gave {got:?}"
        );
    }

    #[test]
    fn missing_id_is_invalid() {
        invalid("v=STSv1;");
        invalid("v=STSv1");
    }

    #[test]
    fn id_too_long_is_invalid() {
        invalid(&format!("v=STSv1; id={}", "a".repeat(33)));
    }

    #[test]
    fn id_with_punctuation_is_invalid() {
        invalid("v=STSv1; id=2019-04-29");
        invalid("v=STSv1; id=");
    }

    #[test]
    fn id_of_32_characters_is_valid() {
        let id = "A1".repeat(16);
        select(&[&format!("v=STSv1; id={id}")], found(&id));
    }

    fn domain() -> Domain {
        Domain::parse("example.test").unwrap()
    }

    #[tokio::test]
    async fn lookup_through_the_resolver() {
        let r = MemoryResolver::new().txt("_mta-sts.example.test", "v=STSv1; id=7");
        assert_eq!(lookup_record(&r, &domain()).await, found("7"));
    }

    #[tokio::test]
    async fn nxdomain_is_no_policy() {
        let r = MemoryResolver::new();
        assert_eq!(
            lookup_record(&r, &domain()).await,
            RecordLookup::NoPolicy(NoPolicyReason::NoRecord)
        );
    }

    #[tokio::test]
    async fn temporary_failure_is_kept_apart() {
        let r = MemoryResolver::new().temp_fail("_mta-sts.example.test");
        assert!(matches!(
            lookup_record(&r, &domain()).await,
            RecordLookup::Temporary(e) if e.is_temporary()
        ));
    }
}
